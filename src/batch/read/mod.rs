//! Reading a batch's output back: which files or table to read
//! ([`ResultReader`](open::ResultReader), `open.rs`), the stream of typed
//! rows and their totals (`stream.rs`), and the join of rows to the staged
//! inputs — every key once, missing rows reported (`join.rs`).

pub(crate) mod join;
pub(crate) mod open;
pub(crate) mod stream;
