//! The data plane: prompts in, matched answers out.

mod join;
mod read;
mod reader;
mod results;

pub use join::Inputs;
pub use read::ResultReader;
pub use reader::{local_output_files, read_local_files, ReadOptions, ResultStream, Totals};
pub use results::{Answer, Blocked, FinishReason, Missing, Outcome, ResultRow, RowError, Usage};

// TEMP: replaced by the key and request modules at merge.
/// The label that mirrors a row's key.
pub const KEY_LABEL: &str = "vertex_batch_key";
pub(crate) mod key {
    pub(crate) fn decode_exact(_v: &str) -> Option<String> {
        None
    }
    pub(crate) fn hashed_label(_k: &str) -> Option<String> {
        None
    }
}
pub(crate) fn parse_response(
    json: &str,
) -> crate::Result<crate::proto::aiplatform::GenerateContentResponse> {
    serde_json::from_str(json).map_err(|e| crate::Error::validation("response", e.to_string()))
}
