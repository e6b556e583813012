//! A hook for tests: with `VERTEX_BATCH_TEST_PAUSE_AT=POINT` in its
//! environment the process stops the first time it reaches POINT — it
//! prints `vertex-batch: paused at POINT` on stderr — and stays stopped
//! until it is killed, a line arrives on its stdin (it carries on; the end
//! of stdin does not count) or Ctrl-C (it carries on and meets the Ctrl-C
//! there). So a test can kill `run`, interrupt it or change the world
//! around it at an exact step instead of at a guessed time. Never set it
//! otherwise.
//!
//! The points: `staged:N` (input part N uploaded), `manifest` (the
//! manifest written), `claimed:R:N` (part N of round R claimed, its job
//! not yet created), `submitted:R:N` (that part's job known), `following`
//! (the first progress update while following), `writing` (the first
//! RESULTS line written, the file not yet in place).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    thread::Thread,
};

use vertex_batch::batch::BatchEvent;

/// The variable that names the point.
const VAR: &str = "VERTEX_BATCH_TEST_PAUSE_AT";

/// Whether the point was reached already (it stops only once).
static REACHED: AtomicBool = AtomicBool::new(false);
/// Whether the pause is over (or over before it began).
static RELEASED: AtomicBool = AtomicBool::new(false);
/// The thread stopped at the point.
static PAUSED: Mutex<Option<Thread>> = Mutex::new(None);

/// Stops here, the first time, when `point` is the one named.
pub fn at(point: &str) {
    if std::env::var_os(VAR).is_none_or(|p| p != point) || REACHED.swap(true, Ordering::SeqCst) {
        return;
    }
    *PAUSED.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
    eprintln!("vertex-batch: paused at {point}");
    std::thread::spawn(|| {
        let mut line = String::new();
        if matches!(std::io::stdin().read_line(&mut line), Ok(n) if n > 0) {
            release();
        }
    });
    while !RELEASED.load(Ordering::SeqCst) {
        std::thread::park();
    }
    *PAUSED.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Ends the pause (if any, or the one to come).
pub fn release() {
    RELEASED.store(true, Ordering::SeqCst);
    if let Some(t) = PAUSED.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        t.unpark();
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
