//! A hook for crash tests: with `VERTEX_BATCH_TEST_PAUSE_AT=POINT` in its
//! environment the process stops at POINT — it prints
//! `vertex-batch: paused at POINT` on stderr and waits until it is killed —
//! so a test can SIGKILL `run` at an exact step instead of at a guessed
//! time. Never set it otherwise.
//!
//! The points: `staged:N` (input part N uploaded), `manifest` (the
//! manifest written), `claimed:R:N` (part N of round R claimed, its job
//! not yet created), `submitted:R:N` (that part's job known), `following`
//! (the first progress update while following), `writing` (the first
//! RESULTS line written, the file not yet in place).

use vertex_batch::data::BatchEvent;

/// The variable that names the point.
const VAR: &str = "VERTEX_BATCH_TEST_PAUSE_AT";

/// Stops here (forever) when `point` is the one named.
pub fn at(point: &str) {
    if std::env::var_os(VAR).is_some_and(|p| p == point) {
        eprintln!("vertex-batch: paused at {point}");
        loop {
            std::thread::park();
        }
    }
}

/// The point a batch step is.
pub fn point(e: &BatchEvent) -> Option<String> {
    Some(match e {
        BatchEvent::Staged { part, .. } => format!("staged:{part}"),
        BatchEvent::ManifestWritten => "manifest".to_owned(),
        BatchEvent::Claimed { round, part } => format!("claimed:{round}:{part}"),
        BatchEvent::Submitted { round, part, .. } => format!("submitted:{round}:{part}"),
        _ => return None,
    })
}
