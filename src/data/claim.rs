//! One submitter per part, across processes and machines: claims in the
//! staging area, then reconciling by request key.
//!
//! Listing jobs by request key and then creating one is not atomic: two
//! processes starting one batch at once (two machines, two cron runs) both
//! list nothing and both create. So before a part's job is created, the
//! process claims the part with a create-only object,
//! `STAGING/KEY/claims/rR-pNNNNN.json` (Cloud Storage's
//! `ifGenerationMatch=0`: of several writers exactly one succeeds).
//!
//! * **The winner** submits the part's job ([`Client::submit`] with the
//!   part's request key).
//! * **The others** wait for that job to appear and follow it.
//! * **A claim whose holder died** (it claimed and never created the job)
//!   is taken over once its lease has run out — by the claim's own clock
//!   (`claimed_at` + `lease`), or after the waiter has seen the same claim
//!   unchanged for a whole lease (so a skewed clock cannot stall it for
//!   longer) — with a generation-matched overwrite: of several waiters at
//!   most one takes it.
//! * **After every create** the request key is reconciled
//!   ([`Client::reconcile_request_key`]): if more than one job carries it,
//!   the oldest wins and the others are cancelled. Storage that ignores
//!   preconditions (fake-gcs-server accepts `ifGenerationMatch` on uploads
//!   whatever the object's generation) therefore still ends with one live
//!   job per part, and every process follows that one.
//!
//! The lease ([`BatchSpec::claim_lease`](super::BatchSpec::claim_lease),
//! default [`DEFAULT_CLAIM_LEASE`]) bounds how long a part can wait for a
//! holder that died between its claim and its create; it should exceed the
//! time one create (with its retries) can take. A holder slower than its
//! lease can make a second job, which the reconcile then cancels.

use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{
    client::Client,
    error::{Error, Result},
    job::Job,
    spec::JobSpec,
    storage::Storage,
    uri::GcsUri,
};

/// How long a claim holds before another process may take it over.
///
/// ```
/// use std::time::Duration;
/// use vertex_batch::data::DEFAULT_CLAIM_LEASE;
///
/// assert_eq!(DEFAULT_CLAIM_LEASE, Duration::from_secs(300));
/// ```
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(300);

/// What a claim object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimRecord {
    /// A random id of the claiming process.
    holder: String,
    /// The claiming process's id (for a person reading the claim).
    pid: u32,
    /// When it claimed, in milliseconds since the Unix epoch.
    claimed_at_ms: u64,
    /// Its lease, in milliseconds.
    lease_ms: u64,
}

impl ClaimRecord {
    fn new(holder: &str, lease: Duration) -> Self {
        ClaimRecord {
            holder: holder.to_owned(),
            pid: std::process::id(),
            claimed_at_ms: unix_ms(SystemTime::now()),
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Whether the lease ran out by the holder's own clock.
    fn expired(&self, now: SystemTime) -> bool {
        unix_ms(now) >= self.claimed_at_ms.saturating_add(self.lease_ms)
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What happened on the way to a part's job, for
/// [`BatchSpec::on_event`](super::BatchSpec::on_event).
pub(crate) enum Step {
    /// This process claimed the part and is about to create its job.
    Claimed,
    /// Another process holds the part's claim; this one waits.
    Waiting,
    /// The claim's lease ran out and this process took it over.
    TookOver,
}

/// The part's one job: the one that already carries `spec`'s request key
/// (`key`), or the one this process creates after claiming `claim` — or,
/// when another process holds the claim, the one that process creates.
pub(crate) async fn submit_once(
    client: &Client,
    storage: &Storage,
    spec: &JobSpec,
    key: &str,
    claim: &GcsUri,
    lease: Duration,
    mut step: impl FnMut(Step),
) -> Result<Job> {
    let me = format!("h{:016x}", fastrand::u64(..));
    // The claim generation seen and since when (this process's clock).
    let mut seen: Option<(Option<u64>, Instant)> = None;
    let mut pause = Duration::from_millis(250);
    let mut announced = false;
    loop {
        if let Some(job) = client.reconcile_request_key(key).await? {
            return Ok(job);
        }
        let record = serde_json::to_vec(&ClaimRecord::new(&me, lease))
            .map_err(|e| Error::config(format!("writing a claim: {e}")))?;
        if storage.create_bytes(claim, record.clone()).await?.is_some() {
            step(Step::Claimed);
            return client.submit(spec).await;
        }
        let Some(info) = storage.metadata(claim).await? else {
            continue; // released or deleted since: claim again
        };
        let held = read_claim(storage, claim).await;
        let now = Instant::now();
        let since = match seen {
            Some((g, t)) if g == info.generation() => t,
            _ => {
                seen = Some((info.generation(), now));
                now
            }
        };
        let expired = held.as_ref().is_some_and(|h| h.expired(SystemTime::now()))
            || now.duration_since(since) >= lease;
        if expired {
            let taken = match info.generation() {
                Some(g) => storage.replace_bytes(claim, record, g).await?.is_some(),
                // A backend that reports no generation cannot take a
                // precondition: overwrite, and let the reconcile settle it.
                None => storage.upload_bytes(claim, record).await.is_ok(),
            };
            if taken {
                tracing::warn!(
                    claim = %claim,
                    holder = held.as_ref().map(|h| h.holder.as_str()),
                    "a claim's lease ran out without its job; taking it over"
                );
                step(Step::TookOver);
                return client.submit(spec).await;
            }
            continue; // another waiter took it first: follow that one
        }
        if !announced {
            tracing::info!(
                claim = %claim,
                holder = held.as_ref().map(|h| h.holder.as_str()),
                pid = held.as_ref().map(|h| h.pid),
                "another process is submitting this part; waiting for its job"
            );
            step(Step::Waiting);
            announced = true;
        }
        let left = lease.saturating_sub(now.duration_since(since));
        tokio::time::sleep(pause.min(left).max(Duration::from_millis(10))).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// The claim's record; `None` when it cannot be read (then only the
/// waiter's own clock ends its lease).
async fn read_claim(storage: &Storage, claim: &GcsUri) -> Option<ClaimRecord> {
    let stream = storage.read(claim, None).await.ok()?;
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.ok()?;
    serde_json::from_slice(&chunks.concat()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_expires_at_its_lease_by_its_own_clock() {
        let c = ClaimRecord::new("h1", Duration::from_secs(10));
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(c.claimed_at_ms);
        assert!(!c.expired(at + Duration::from_secs(9)));
        assert!(c.expired(at + Duration::from_secs(10)));
        // A lease too long to add never overflows into the past.
        let forever = ClaimRecord {
            lease_ms: u64::MAX,
            ..c
        };
        assert!(!forever.expired(at + Duration::from_secs(1 << 40)));
    }
}
