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
//! * **A holder that died on this machine** (the claim names this boot
//!   of this machine and a process id no process has any more, Linux) is
//!   taken over at once: a re-run after a kill does not wait out the
//!   lease.
//! * **A holder whose create fails** marks its claim released (a
//!   generation-matched write), so the next attempt takes it at once.
//! * **After every create** the request key is reconciled among the jobs
//!   writing to the part's output (a job carrying the key that writes
//!   elsewhere belongs to another batch: an error, never cancelled): if
//!   more than one carries it, the oldest wins and the others are
//!   cancelled. Storage that ignores
//!   preconditions (fake-gcs-server accepts `ifGenerationMatch` on uploads
//!   whatever the object's generation) therefore still ends with one live
//!   job per part, and every process follows that one.
//!
//! The lease ([`BatchSpec::claim_lease`](crate::batch::BatchSpec::claim_lease),
//! default [`DEFAULT_CLAIM_LEASE`]) bounds how long a part can wait for a
//! holder that died between its claim and its create; it should exceed the
//! time one create (with its retries) can take. A holder slower than its
//! lease can make a second job, which the reconcile then cancels.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{
    client::Client,
    error::{Error, Result},
    job::Job,
    spec::JobSpec,
};

use crate::batch::stage::{Area, Version};

/// How long a claim holds before another process may take it over.
///
/// ```
/// use std::time::Duration;
/// use vertex_batch::batch::DEFAULT_CLAIM_LEASE;
///
/// assert_eq!(DEFAULT_CLAIM_LEASE, Duration::from_secs(300));
/// ```
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(300);

/// What a claim object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimRecord {
    /// The claiming process's random id (one per process).
    holder: String,
    /// The claiming process's id (for a person reading the claim).
    pid: u32,
    /// When it claimed, in milliseconds since the Unix epoch.
    claimed_at_ms: u64,
    /// Its lease, in milliseconds.
    lease_ms: u64,
    /// Given up by its holder (its create failed): anyone may take it now.
    #[serde(default)]
    released: bool,
    /// The holder machine's boot (Linux: `/proc/sys/kernel/random/boot_id`),
    /// so a waiter on the same machine, same boot, can tell that the
    /// holder's process is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot: Option<String>,
    /// Random per claim: two claims are never the same bytes (a repeated
    /// create-only write is judged by its content).
    #[serde(default)]
    nonce: u64,
}

impl ClaimRecord {
    fn new(lease: Duration) -> Self {
        ClaimRecord {
            holder: holder().to_owned(),
            pid: std::process::id(),
            claimed_at_ms: unix_ms(SystemTime::now()),
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
            released: false,
            boot: boot_id().map(str::to_owned),
            nonce: fastrand::u64(..),
        }
    }

    /// Whether the holder's process is known to be gone: it ran on this
    /// machine in this boot, is not this process, and no process has its
    /// id any more. (Elsewhere, or when this cannot be told, only the
    /// lease ends the claim.)
    fn holder_gone(&self) -> bool {
        let here = boot_id();
        here.is_some()
            && self.boot.as_deref() == here
            && self.pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// Whether the lease ran out by the holder's own clock.
    fn expired(&self, now: SystemTime) -> bool {
        unix_ms(now) >= self.claimed_at_ms.saturating_add(self.lease_ms)
    }
}

/// This machine's boot id (Linux), read once.
fn boot_id() -> Option<&'static str> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// This process's holder id in the claims it writes.
fn holder() -> &'static str {
    static HOLDER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOLDER.get_or_init(|| format!("h{:016x}", fastrand::u64(..)))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What happened on the way to a part's job, for
/// [`BatchSpec::on_event`](crate::batch::BatchSpec::on_event).
pub(crate) enum Step {
    /// This process claimed the part and is about to create its job.
    Claimed,
    /// Another process holds the part's claim; this one waits.
    Waiting,
    /// The claim's lease ran out and this process took it over.
    TookOver,
}

/// One part's submission: its job spec (carrying the part's request key),
/// its claim object and lease, and what the error names.
pub(crate) struct PartClaim<'a> {
    /// The part's job spec, its request key set.
    pub(crate) spec: &'a JobSpec,
    /// The part's request key.
    pub(crate) key: &'a str,
    /// The part's output prefix: a job carrying `key` that writes
    /// elsewhere belongs to another batch (another staging location with
    /// the same request key).
    pub(crate) output: &'a str,
    /// The claim document (`claims/rR-pNNNNN.json`).
    pub(crate) claim: &'a str,
    /// How long a claim holds.
    pub(crate) lease: Duration,
    /// The batch's request key, as its user gave it (for errors).
    pub(crate) batch_key: &'a str,
}

/// The output prefix a job was asked to write to.
fn requested_output(job: &Job) -> Option<&str> {
    use crate::proto::aiplatform::batch_prediction_job::output_config::Destination;
    match job.proto().output_config.as_ref()?.destination.as_ref()? {
        Destination::GcsDestination(d) => Some(d.output_uri_prefix.as_str()),
        Destination::BigqueryDestination(d) => Some(d.output_uri.as_str()),
        _ => None,
    }
}

/// Whether `job` was made for the part writing to `output` (a job carrying
/// the part's key but writing elsewhere belongs to another batch).
pub(crate) fn writes_to(job: &Job, output: &str) -> bool {
    requested_output(job).map(|o| o.trim_end_matches('/')) == Some(output.trim_end_matches('/'))
}

/// The part's job as every process sees it now: the oldest of the jobs
/// carrying `key` and writing to `output` (the others that still run are
/// cancelled). `None` when there is none.
pub(crate) async fn settled_job(client: &Client, key: &str, output: &str) -> Result<Option<Job>> {
    let ours = |j: &Job| writes_to(j, output);
    Ok(client.reconcile_by(key, &ours).await?.ours)
}

/// The part's one job: the one that already carries its request key and
/// writes to its output, or the one this process creates after claiming
/// the part — or, when another process holds the claim, the one that
/// process creates.
pub(crate) async fn submit_once(
    client: &Client,
    area: &Area,
    part: PartClaim<'_>,
    mut step: impl FnMut(Step),
) -> Result<Job> {
    let PartClaim {
        spec,
        key,
        output,
        claim,
        lease,
        batch_key,
    } = part;
    let ours = |j: &Job| writes_to(j, output);
    // The claim generation seen and since when (this process's clock).
    let mut seen: Option<(Option<Version>, Instant)> = None;
    let mut pause = Duration::from_millis(250);
    let mut announced = false;
    loop {
        let found = client.reconcile_by(key, &ours).await?;
        if let Some(job) = found.ours {
            return Ok(job);
        }
        if let Some(other) = found.other {
            return Err(Error::validation(
                "request_key",
                format!(
                    "request key {batch_key:?} is taken: job {} carries its part key {key:?} and \
                     writes to {}, not to this batch's {output} — another batch, staged \
                     elsewhere, has the same key. A request key names one batch per project \
                     and location: give this batch a key of its own",
                    other.name(),
                    requested_output(&other).unwrap_or("another output"),
                ),
            ));
        }
        let record = serde_json::to_vec(&ClaimRecord::new(lease))
            .map_err(|e| Error::config(format!("writing a claim: {e}")))?;
        if let Some(version) = area.create_doc(claim, record.clone()).await? {
            step(Step::Claimed);
            return create_or_release(client, area, spec, &ours, claim, version).await;
        }
        let Some(version) = area.doc_version(claim).await? else {
            // Released by deletion since: claim again, after a pause.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            continue;
        };
        let held = read_claim(area, claim).await;
        let now = Instant::now();
        let since = match &seen {
            Some((g, t)) if *g == version => *t,
            _ => {
                seen = Some((version.clone(), now));
                now
            }
        };
        let expired = held
            .as_ref()
            .is_some_and(|h| h.released || h.holder_gone() || h.expired(SystemTime::now()))
            || now.duration_since(since) >= lease;
        if expired {
            let taken = match &version {
                Some(v) => area.replace_doc(claim, record, v).await?,
                // A backend that reports no version cannot take a
                // precondition: overwrite, and let the reconcile settle it.
                None => area.put_doc(claim, record).await.ok(),
            };
            if let Some(taken) = taken {
                tracing::warn!(
                    claim = %area.doc_name(claim),
                    holder = held.as_ref().map(|h| h.holder.as_str()),
                    "a claim's lease ran out (or its holder gave it up) without its job; taking it over"
                );
                step(Step::TookOver);
                return create_or_release(client, area, spec, &ours, claim, taken).await;
            }
            // Another waiter took it first: follow that one.
            tokio::time::sleep(pause).await;
            continue;
        }
        if !announced {
            tracing::info!(
                claim = %area.doc_name(claim),
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

/// Creates the part's job under the claim this process holds (at
/// `generation`); when the create fails, marks the claim released, so the
/// next attempt (here or elsewhere) takes it at once instead of waiting
/// out the lease.
async fn create_or_release(
    client: &Client,
    area: &Area,
    spec: &JobSpec,
    ours: &(dyn Fn(&Job) -> bool + Send + Sync),
    claim: &str,
    version: Option<Version>,
) -> Result<Job> {
    let err = match client.submit_as(spec, ours).await {
        Ok(job) => return Ok(job),
        Err(e) => e,
    };
    if crate::client::is_ambiguous(&err) {
        // The job may exist and not be listed yet: the claim stays, and
        // its lease (or this machine's dead-process check) ends it.
        return Err(err);
    }
    let released = ClaimRecord {
        released: true,
        ..ClaimRecord::new(Duration::ZERO)
    };
    let released = match (serde_json::to_vec(&released), version) {
        (Ok(bytes), Some(v)) => area
            .replace_doc(claim, bytes, &v)
            .await
            .map(|r| r.is_some()),
        // No version to match: leave the claim to its lease.
        _ => Ok(false),
    };
    let at = area.doc_name(claim);
    match released {
        Ok(true) => tracing::info!(claim = %at, "the create failed; claim released"),
        Ok(false) => {}
        Err(e) => tracing::warn!(claim = %at, error = %e, "could not release a claim"),
    }
    Err(err)
}

/// The claim's record; `None` when it cannot be read (then only the
/// waiter's own clock ends its lease).
async fn read_claim(area: &Area, claim: &str) -> Option<ClaimRecord> {
    let (bytes, _) = area.read_doc(claim).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_expires_at_its_lease_by_its_own_clock() {
        let c = ClaimRecord::new(Duration::from_secs(10));
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
