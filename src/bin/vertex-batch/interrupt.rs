//! Ctrl-C (SIGINT), handled from the start of the commands that change
//! things (`run`, `submit`, `results`, `watch`).
//!
//! The first Ctrl-C is recorded: the command stops at a safe point, cleans
//! up and says what it left (exit 130) — unless [`stop_at_once`] was
//! called, and then it ends the process at once. Any further Ctrl-C ends
//! the process at once (exit 130). Ending at once still removes the
//! temporary files registered with [`remove_on_exit`].

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
};

use tokio::sync::watch;

use crate::{
    exit::INTERRUPTED,
    fail::{CliError, CliResult},
};

/// Whether the next Ctrl-C ends the process at once.
static AT_ONCE: AtomicBool = AtomicBool::new(false);

/// Temporary files to remove when the process ends at once.
static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A Ctrl-C seen (or not yet) by the handler [`install`] started.
#[derive(Clone)]
pub struct Interrupt {
    seen: watch::Receiver<bool>,
}

/// Installs the handler: from here on Ctrl-C no longer kills the process.
/// The signal is taken over before this returns, so a Ctrl-C an instant
/// later is already handled.
pub fn install() -> CliResult<Interrupt> {
    let (tx, seen) = watch::channel(false);
    #[cfg(unix)]
    let mut signals = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::other(format!("cannot handle Ctrl-C: {e}")))?;
    tokio::spawn(async move {
        loop {
            #[cfg(unix)]
            if signals.recv().await.is_none() {
                return;
            }
            #[cfg(not(unix))]
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            if *tx.borrow() {
                stop_now("interrupted again: stopping now");
            }
            if AT_ONCE.load(Ordering::SeqCst) {
                stop_now("interrupted: stopping now");
            }
            tx.send_replace(true);
            // A test's pause point carries on, and meets the Ctrl-C there.
            crate::pause::release();
        }
    });
    Ok(Interrupt { seen })
}

impl Interrupt {
    /// Whether Ctrl-C was pressed.
    pub fn seen(&self) -> bool {
        *self.seen.borrow()
    }

    /// Resolves once Ctrl-C was pressed (at once if it was already).
    pub async fn wait(&self) {
        let mut seen = self.seen.clone();
        if seen.wait_for(|s| *s).await.is_err() {
            // The handler is gone (no signal stream): no Ctrl-C will come.
            std::future::pending::<()>().await;
        }
    }
}

/// From here on the next Ctrl-C ends the process at once (where nothing
/// is left to stop cleanly: reading results, cancelling jobs).
pub fn stop_at_once() {
    AT_ONCE.store(true, Ordering::SeqCst);
}

/// Removes `path` if the process ends at once on a Ctrl-C.
pub fn remove_on_exit(path: &Path) {
    TEMPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.to_owned());
}

/// No longer removes `path` on a Ctrl-C (it was moved into place, kept, or
/// removed).
pub fn forget(path: &Path) {
    TEMPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| p != path);
}

/// Removes the registered temporary files, says `why` and exits 130.
fn stop_now(why: &str) -> ! {
    for p in TEMPS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = std::fs::remove_file(p);
    }
    eprintln!("{why}");
    std::process::exit(i32::from(INTERRUPTED));
}
