//! The data plane: prompts in, matched answers out.
//!
//! * [`request`]: typed requests ([`request::Prompt`]) and lenient
//!   decoding of the requests and responses a job writes.
//! * [`key`]: row keys and their mirror in the request's labels.
//! * [`input`]: the batch input writer (JSONL, split over the service's
//!   limits) and readers of local prompt files.
//! * [`ResultReader`]: a job's output read back as typed [`ResultRow`]s
//!   (succeeded, failed, blocked, missing), de-duplicated and joined to the
//!   inputs, with [`Totals`].

mod batch;
pub mod budget;
pub mod chat;
mod claim;
pub mod embed;
mod fingerprint;
pub mod input;
mod join;
pub mod key;
pub mod live;
pub(crate) mod read;
mod reader;
pub mod request;
pub(crate) mod results;
mod staging;

pub use batch::{Batch, BatchEvent, BatchProgress, BatchSpec, MAX_BATCH_KEY_LEN};
pub use claim::DEFAULT_CLAIM_LEASE;
pub use join::Inputs;
pub use key::KEY_LABEL;
pub use live::{Live, LiveEvent, LiveOptions, LiveProgress, PartProgress};
pub use read::ResultReader;
pub use reader::{local_output_files, read_local_files, ReadOptions, ResultStream, Totals};
pub use request::{parse_request, parse_response, Prompt};
pub use results::{
    parse_output_line, Answer, Blocked, Embedding, FinishReason, Missing, Outcome, ResultRow,
    RowError, Usage,
};
pub use staging::{Backend, StagingClient};
