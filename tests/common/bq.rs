//! bqemulator (a BigQuery emulator: DuckDB behind the BigQuery REST API) as
//! a child process on loopback. `scripts/test.sh` installs it into `.venv/`
//! and sets `BQEMULATOR_BIN` and `BQEMULATOR_HOME` (a HOME holding the
//! DuckDB extensions it needs offline); without it the tests that need it
//! fail (they never skip).

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// The variables naming the binary and its HOME.
pub const BIN_ENV: &str = "BQEMULATOR_BIN";
pub const HOME_ENV: &str = "BQEMULATOR_HOME";

fn installed(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default));
    assert!(
        p.exists(),
        "bqemulator is not installed ({} missing): run scripts/test.sh (it installs it into \
         .venv/), or set {BIN_ENV} and {HOME_ENV}",
        p.display()
    );
    p
}

/// A running bqemulator (in memory); killed on drop.
pub struct BqEmulator {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `http://127.0.0.1:PORT` of its gRPC APIs (the Storage Read API).
    pub grpc_url: String,
}

impl BqEmulator {
    /// Starts one for `project` on a free port and waits until it says
    /// where it listens.
    pub fn start(project: &str) -> BqEmulator {
        let bin = installed(BIN_ENV, ".venv/bin/bqemulator");
        let home = installed(HOME_ENV, ".venv/bqemulator-home");
        let mut child = Command::new(&bin)
            .args(["start", "--rest-port", "0", "--grpc-port", "0"])
            .args([
                "--project",
                project,
                "--log-format",
                "json",
                "--log-level",
                "info",
            ])
            .env("HOME", &home)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        // It logs `{"port": P, "event": "rest.listen", …}` and then
        // `{"port": P, "event": "grpc.listen", …}` to stderr.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut rest, mut grpc) = (None, None);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    match v["event"].as_str() {
                        Some("rest.listen") => rest = v["port"].as_u64(),
                        Some("grpc.listen") => grpc = v["port"].as_u64(),
                        _ => {}
                    }
                    if let (Some(r), Some(g)) = (rest, grpc) {
                        let _ = tx.send(Some((r, g)));
                        rest = None;
                    }
                }
            }
            let _ = tx.send(None);
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some((port, grpc))) => BqEmulator {
                child,
                url: format!("http://127.0.0.1:{port}"),
                grpc_url: format!("http://127.0.0.1:{grpc}"),
            },
            other => {
                let _ = child.kill();
                panic!("bqemulator did not start: {other:?}");
            }
        }
    }

    /// `127.0.0.1:PORT`, for `BIGQUERY_EMULATOR_HOST`.
    pub fn host(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for BqEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
