//! Policies: how calls are retried ([`RetryPolicy`]) and how often a job is
//! looked at ([`PollPolicy`], [`Poller`]), on one shared backoff schedule.

pub(crate) mod backoff;
pub(crate) mod poll;
pub(crate) mod retry;

pub(crate) use backoff::Backoff;
pub use poll::{estimate_remaining, PollPolicy, Poller};
pub use retry::RetryPolicy;
