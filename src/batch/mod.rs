//! The trip: prompts in, matched answers out — [`BatchSpec`],
//! [`Client::start_batch`](crate::Client::start_batch), [`Batch`] and [`Client::run_batch`](crate::Client::run_batch).
//!
//! # What happens
//!
//! 1. **Stage.** The job template is checked first (a template with an
//!    input or output of its own is refused: each part gets its own). The
//!    prompts stream through the [`InputEncoder`](crate::format::InputEncoder) into
//!    resumable uploads under `STAGING/KEY/input/ATTEMPT/part-NNNNN.jsonl`
//!    (`ATTEMPT` is random: two processes staging one key at once never
//!    write each other's files), one part per job when the input is over
//!    the service's limits (200,000 rows, 1 GB a file). Then
//!    `STAGING/KEY/manifest.json` (create-only) records the parts,
//!    the location, the template's fingerprint and a SHA-256 of the staged
//!    prompts — the truth every later step and every re-run starts from.
//! 2. **Submit.** One job per part, each with its own request key
//!    (`KEY-r0-pN`), claimed first (below), so each part has at most one
//!    live job.
//! 3. **Watch.** [`Batch::progress`] follows every job under one budget of
//!    Get calls ([`Client::watch_many`](crate::Client::watch_many)).
//! 4. **Read.** [`Batch::results`] reads every job's output directory joined
//!    to the staged inputs: every prompt's key comes back exactly once.
//! 5. **Retry.** [`Batch::retry_failed`] stages the failed and missing rows
//!    (byte-exact from the inputs) as a follow-up round and submits it;
//!    results then merge, latest outcome per key.
//!
//! # Resuming
//!
//! Everything lives under `STAGING/KEY/` and every job carries a request
//! key derived from `KEY`. Run [`Client::start_batch`](crate::Client::start_batch) again with the same
//! [`BatchSpec::request_key`] after a crash and it finds the manifest (no
//! second upload) and the jobs already submitted (no second job); if they
//! have ended, their results are read as they are. [`Client::resume_batch`](crate::Client::resume_batch)
//! does the same without the prompts.
//!
//! A re-run is checked against the manifest before anything is submitted,
//! with errors that name the batch's key and say how to resume:
//!
//! * other prompts (a digest of the staged lines differs) are refused —
//!   new prompts need a new key;
//! * another job template is refused: the fingerprint covers what the
//!   caller set (model, parameters, labels, display name, service account,
//!   encryption key, [`JobSpec::with_proto`](crate::JobSpec::with_proto) changes), not what the crate
//!   made up (the default display name carries the time, so a re-run
//!   without one is the same spec);
//! * a client for another project or location is refused (its jobs would
//!   not be found there).
//!
//! # One job per part, across processes and machines
//!
//! What the request key guarantees, for every process (on any machine)
//! that runs the batch with the same key, staging location and prompts:
//!
//! * **One live job per part.** Before a part's job is created, the part
//!   is claimed with a create-only object `STAGING/KEY/claims/rR-pNNNNN.json`;
//!   the winner creates the job, the others wait for it and follow it. A
//!   claim whose holder died before creating its job is taken over after
//!   its lease ([`BatchSpec::claim_lease`], default
//!   [`DEFAULT_CLAIM_LEASE`]) with a
//!   generation-matched write; a holder whose create fails gives its claim
//!   up at once. After every create the part's key is reconciled: should
//!   two jobs writing to the part's output carry it anyway (storage that
//!   ignores preconditions, a holder slower than its lease), the oldest
//!   wins and the others are cancelled.
//! * **Every process reads the same answers**: all follow the oldest job
//!   of each part, and read its output joined to the one staged input.
//! * **Exactly one line per prompt** in [`Batch::results`], whatever the
//!   output holds (duplicates dropped, missing rows reported missing).
//! * **Crash-safe at any point.** The manifest is written only after every
//!   part is staged, and a follow-up round is recorded in it before its
//!   jobs are submitted; a process killed anywhere leaves a state the next
//!   run with the key finishes, without a second upload of a staged batch
//!   or a second job for a part.
//!
//! What it does not guarantee:
//!
//! * A cancelled duplicate may have run some rows before its cancel
//!   landed; those rows are billed (the service bills completed rows).
//! * Storage that ignores preconditions (fake-gcs-server) lets two
//!   processes both claim a part, so both create a job and the reconcile
//!   cancels one: one job stays live, but two were created.
//! * Two processes calling [`Batch::retry_failed`] at once on storage
//!   without preconditions may both record a follow-up round; the rounds
//!   are the same rows under the same keys, so still one job per part.
//! * A waiter whose clock runs ahead of the holder's may take a claim
//!   over before its lease ran out by the holder's clock; the second job
//!   it makes is cancelled by the reconcile.
//! * Staged files of a process killed while staging stay under
//!   `STAGING/KEY/input/ATTEMPT/` (no manifest names them) until deleted.
//! * Nothing stops a caller from deleting `STAGING/KEY/` or a job: the key
//!   then starts over (or finds nothing to follow).
//!
//! A request key names one batch per project and location: the parts'
//! jobs carry `KEY-rR-pN` whatever the staging location. Only a job that
//! writes to the part's own output counts as the part's; a batch staged
//! elsewhere under a key already in use is refused when it would submit,
//! and the other batch's jobs are never cancelled.
//!
//! # Where each step lives
//!
//! The file of each step, here and in the modules below, is written down
//! once, in the repository's `docs/ARCHITECTURE.md`.

pub(crate) mod budget;
pub(crate) mod claim;
pub(crate) mod follow;
pub(crate) mod live;
pub(crate) mod manifest;
pub(crate) mod read;
pub(crate) mod retry;
pub(crate) mod spec;
pub(crate) mod stage;
pub(crate) mod start;
pub(crate) mod submit;

pub use budget::{estimate, Estimate};
pub use claim::DEFAULT_CLAIM_LEASE;
pub use follow::{Batch, BatchProgress};
pub use live::{JobOutput, Live, LiveEvent, LiveOptions, LiveProgress, PartProgress};
pub use read::join::Inputs;
pub use read::open::ResultReader;
pub use read::stream::{local_output_files, read_local_files, ReadOptions, ResultStream, Totals};
pub use spec::{BatchEvent, BatchSpec, MAX_BATCH_KEY_LEN};
pub use stage::{Backend, StagingClient};
