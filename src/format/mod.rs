//! The formats: what a batch's lines hold, per model family, and what its
//! output lines read back as. Nothing here does I/O beyond local files.
//!
//! * Requests: [`Prompt`] (Gemini), [`Embed`] (Gemini and text
//!   embeddings), [`Chat`] (Claude and the open models' chat completions),
//!   or raw JSON; [`parse_request`] / [`parse_response`] decode them
//!   leniently.
//! * Keys: every row's key ([`check_key`]), its mirror in a Gemini
//!   request's labels ([`KEY_LABEL`]), and the hash the label holds when a
//!   key is too long for it.
//! * Input: [`InputEncoder`] writes batch lines in the family's shape,
//!   split over the service's limits ([`InputLimits`]); readers of local
//!   prompt files ([`read_text_prompts`], [`read_input_lines`]).
//! * Results: one output line read as a [`ResultRow`] ([`parse_output_line`]),
//!   whatever the family: an [`Outcome`] (succeeded, failed, blocked,
//!   missing) with the [`Answer`]'s text or [`Embedding`], its
//!   [`FinishReason`] and [`Usage`].
//!
//! Reading a whole job's output, matched to its inputs, is the trip's
//! last step: [`crate::batch::ResultReader`].

pub(crate) mod chat;
pub(crate) mod embed;
pub(crate) mod fingerprint;
pub(crate) mod gemini;
pub(crate) mod input;
pub(crate) mod key;
pub(crate) mod results;

pub use chat::{Chat, Role, DEFAULT_CLAUDE_MAX_TOKENS};
pub use embed::Embed;
pub use gemini::{
    parse_request, parse_request_value, parse_response, parse_response_value, response_text, Prompt,
};
pub use input::{
    read_input_lines, read_text_prompts, read_text_prompts_as, write_input_files, BatchRequest,
    InputEncoder, InputLimits, InputLine, PartStats, TextShape, SERVICE_MAX_BYTES_PER_FILE,
    SERVICE_MAX_ROWS_PER_JOB,
};
pub use key::{
    check_key, decode_key_label, key_hash, key_label_value, KeyHash, KeyLabel, KEY_LABEL,
    MAX_EXACT_KEY_BYTES, MAX_KEY_BYTES, MAX_LABEL_VALUE_CHARS,
};
pub use results::{
    parse_output_line, Answer, Blocked, Embedding, FinishReason, Missing, Outcome, ResultRow,
    RowError, Usage,
};
