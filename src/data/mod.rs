//! The data plane: prompts in, matched answers out.
//!
//! * [`request`]: typed requests ([`Prompt`](request::Prompt)) and lenient
//!   decoding of the requests and responses a job writes.
//! * [`key`]: row keys and their mirror in the request's labels.
//! * [`input`]: the batch input writer (JSONL, split over the service's
//!   limits) and readers of local prompt files.

pub mod input;
pub mod key;
pub mod request;
