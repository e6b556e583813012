#![allow(dead_code)]
pub mod bq;
pub mod gcs;
pub mod recorder;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use vertex_batch::{emulator::Emulator, Client, Job, JobSpec};

/// One realistic Gemini request line.
pub fn prompt_line(i: usize) -> String {
    format!(
        r#"{{"request":{{"contents":[{{"role":"user","parts":[{{"text":"Prompt number {i}: write a haiku about rivers."}}]}}],"generationConfig":{{"temperature":0.4}}}}}}"#
    )
}

/// What the emulator's model does to prompt `i` of the data-plane tests:
/// every 10th is blocked (`[blocked]`), every 10th from 5 carries the
/// `flaky` marker the `fail_rows_containing` knob is set to.
pub fn marker(i: usize) -> &'static str {
    match i % 10 {
        0 => " [blocked]",
        5 => " flaky",
        _ => "",
    }
}

/// Writes `lines` to the file behind `uri` in the emulator's data directory.
pub fn write_gcs(emu: &Emulator, uri: &str, lines: &[String]) -> PathBuf {
    let path = emu.gcs_path(uri).unwrap();
    write_lines(&path, lines);
    path
}

pub fn write_lines(path: &Path, lines: &[String]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// Reads a JSONL file as JSON values.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The predictions file of a finished GCS job.
pub fn predictions_file(emu: &Emulator, job: &vertex_batch::Job) -> PathBuf {
    let dir = job.output_location().expect("output location").uri();
    emu.gcs_path(&dir).unwrap().join("predictions.jsonl")
}

pub fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Polls every 10 ms, for at most a minute: jobs in tests end in
/// milliseconds (the default policy first waits 2 s).
pub fn fast_wait() -> vertex_batch::WaitOptions {
    vertex_batch::WaitOptions::new()
        .policy(vertex_batch::policy::PollPolicy::fixed(
            Duration::from_millis(10),
        ))
        .timeout(Duration::from_secs(60))
}

/// Creates a job from `spec` and waits (polling fast) for it to end in any
/// terminal state.
pub async fn run_to_end(client: &Client, spec: &JobSpec) -> Job {
    let job = client.create(spec).await.unwrap();
    client
        .wait(job.name(), &fast_wait().any_end())
        .await
        .unwrap()
}

/// Polls `get` every 20 ms (at most 1,500 times) until `pred` holds; a failed
/// get is tried again, a job that ends first fails the test.
pub async fn poll_until(
    client: &Client,
    name: &str,
    what: &str,
    pred: impl Fn(&Job) -> bool,
) -> Job {
    for _ in 0..1500 {
        if let Ok(job) = client.get(name).await {
            if pred(&job) {
                return job;
            }
            assert!(
                !job.state().is_terminal(),
                "{name} ended {} before {what}",
                job.state()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name}: {what} never happened");
}

/// Every job the client's location holds, newest first.
pub async fn collect_jobs(client: &Client) -> Vec<Job> {
    use futures::TryStreamExt;
    client
        .list(&vertex_batch::ListOptions::new())
        .try_collect()
        .await
        .unwrap()
}

/// A TCP forwarder on a port of its own, to whichever address it is
/// pointed at (or refusing connections while pointed nowhere): a server
/// can restart on a new port while clients keep one address, so no test
/// rebinds a fixed port.
pub struct Forwarder {
    pub addr: std::net::SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
}

impl Forwarder {
    pub async fn start(target: std::net::SocketAddr) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = std::sync::Arc::new(std::sync::Mutex::new(Some(target)));
        let t = target.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = *t.lock().unwrap();
                let Some(to) = to else { continue };
                tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Forwarder { addr, target }
    }

    /// Where new connections go (`None`: nowhere, they are dropped).
    pub fn point_to(&self, to: Option<std::net::SocketAddr>) {
        *self.target.lock().unwrap() = to;
    }
}
