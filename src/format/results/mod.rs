//! One row of a batch job's output, classified: [`ResultRow`] and its
//! [`Outcome`].
//!
//! A Gemini batch output line looks like
//!
//! ```json
//! {"key": "q1", "status": "", "processed_time": "2024-11-13T14:04:28.376+00:00",
//!  "request": {…}, "response": {"candidates": [{"content": {"role": "model",
//!  "parts": [{"text": "…"}]}, "finishReason": "STOP"}], "usageMetadata": {…}}}
//! ```
//!
//! Reading it is lenient where the service is loose and strict where a row
//! could otherwise be lost:
//!
//! * fields this crate does not know are skipped, `null` means absent, and
//!   the response is kept as raw JSON: the typed
//!   [`GenerateContentResponse`](crate::proto::aiplatform::GenerateContentResponse)
//!   is one call away ([`Answer::response`]);
//! * a line that is not a JSON object, or whose `key`, `status` or `response`
//!   has the wrong type, is an [`Error::Output`](crate::error::Error::Output) naming
//!   its file and line — never a panic, never a silently dropped row;
//! * the key comes from the top-level `key` field, or, when a pipeline
//!   dropped it, from the label [`KEY_LABEL`](crate::format::KEY_LABEL) that the
//!   input writer mirrors into `request.labels`.

mod json;
mod parse;
#[cfg(test)]
mod tests;
mod types;

pub(crate) use json::opt_str;
#[cfg(feature = "emulator")]
pub(crate) use json::MaybeBorrowed;
pub use parse::parse_output_line;
pub(crate) use parse::{parse_line, plain_key, ParsedLine};
pub use types::{
    Answer, Blocked, Embedding, FinishReason, Missing, Outcome, ResultRow, RowError, Usage,
};
