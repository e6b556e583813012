//! What the facade costs: Get round trips per second through `Client::get`
//! (header layer with a bearer token, routing header, retry policy, name
//! validation, tracing span) beside the bare generated stub, on one channel
//! each, against the emulator over loopback TCP. Serially and with 64 calls
//! in flight. Variants alternate within each round; medians of 7 rounds.
//!
//! `cargo bench --bench facade --features emulator`

use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use vertex_batch::{
    emulator::Emulator,
    proto::aiplatform::{job_service_client::JobServiceClient, GetBatchPredictionJobRequest},
    Client, Credentials, JobSpec, PollPolicy, WaitOptions,
};

const ROUNDS: usize = 7;
const SERIAL_CALLS: usize = 2_000;
const CONCURRENT_CALLS: usize = 20_000;
const IN_FLIGHT: usize = 64;

#[derive(Clone)]
enum Variant {
    Bare(JobServiceClient<tonic::transport::Channel>),
    Facade(Client),
}

impl Variant {
    async fn get(&self, name: &str) {
        match self {
            Variant::Bare(stub) => {
                let mut stub = stub.clone();
                let req = GetBatchPredictionJobRequest {
                    name: name.to_owned(),
                };
                stub.get_batch_prediction_job(req).await.expect("bare get");
            }
            Variant::Facade(client) => {
                client.get(name).await.expect("facade get");
            }
        }
    }
}

async fn serial(v: &Variant, name: &str) -> f64 {
    let t = Instant::now();
    for _ in 0..SERIAL_CALLS {
        v.get(name).await;
    }
    SERIAL_CALLS as f64 / t.elapsed().as_secs_f64()
}

async fn concurrent(v: &Variant, name: &str) -> f64 {
    let t = Instant::now();
    stream::iter(0..CONCURRENT_CALLS)
        .map(|_| v.get(name))
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    CONCURRENT_CALLS as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let emu = Emulator::start(dir.path()).await.expect("emulator");
        let input = emu.gcs_path("gs://bench/in.jsonl").expect("path");
        std::fs::create_dir_all(input.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &input,
            r#"{"request":{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}}"#,
        )
        .expect("write");
        let facade = Client::builder()
            .ignore_env()
            .project("bench")
            .location("us-central1")
            .endpoint(format!("http://{}", emu.addr()))
            .credentials(Credentials::access_token("ya29.bench-token"))
            .build()
            .expect("client");
        let job = facade
            .create(
                &JobSpec::new("gemini-2.0-flash-001")
                    .display_name("facade-bench")
                    .input("gs://bench/in.jsonl")
                    .output("gs://bench/out"),
            )
            .await
            .expect("create");
        facade
            .wait_with(
                job.name(),
                WaitOptions::new().policy(PollPolicy::fixed(Duration::from_millis(10))),
            )
            .await
            .expect("job");
        let bare = JobServiceClient::connect(format!("http://{}", emu.addr()))
            .await
            .expect("connect");
        let variants = [Variant::Bare(bare), Variant::Facade(facade)];
        let name = job.name().to_owned();
        // Warm up both connections.
        for v in &variants {
            serial(v, &name).await;
        }
        // Profiling aid: FACADE_BENCH_ONLY=bare|facade runs one variant serially.
        if let Ok(only) = std::env::var("FACADE_BENCH_ONLY") {
            let v = &variants[usize::from(only == "facade")];
            for _ in 0..10 {
                println!("{only}: {:.0} serial calls/s", serial(v, &name).await);
            }
            return;
        }
        let mut results: [[Vec<f64>; 2]; 2] = Default::default();
        for round in 0..ROUNDS {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                results[i][0].push(serial(&variants[i], &name).await);
                results[i][1].push(concurrent(&variants[i], &name).await);
            }
        }
        let [bare, facade] = results.map(|r| r.map(median));

        println!(
            "Get round trips per second, loopback TCP, one channel (median of {ROUNDS} rounds)"
        );
        println!(
            "{:>22} {:>12} {:>12} {:>10}",
            "", "bare stub", "facade", "facade/bare"
        );
        println!(
            "{:>22} {:>12.0} {:>12.0} {:>10.3}",
            "serial",
            bare[0],
            facade[0],
            facade[0] / bare[0]
        );
        println!(
            "{:>22} {:>12.0} {:>12.0} {:>10.3}",
            format!("{IN_FLIGHT} in flight"),
            bare[1],
            facade[1],
            facade[1] / bare[1]
        );
        emu.shutdown().await;
    });
}
