//! What the facade costs: Get round trips per second through `Client::get`
//! (header layer with a bearer token, routing header, retry policy with its
//! per-attempt deadline, name validation, tracing span with no subscriber)
//! beside the bare
//! generated stub, on one channel each, against the emulator over loopback
//! TCP. Serially, and with 64 calls in flight (64 tasks sharing the client).
//!
//! Five variants: the bare stub; the bare stub carrying by hand only the
//! token, then only the 60 s `grpc-timeout`, then exactly what the facade
//! puts on the wire (token, routing and api-client headers, deadline),
//! values prepared once; the facade. Ratios to the bare stub are what each
//! costs in all; the last column, facade over same wire, is what the
//! facade's own code adds.
//!
//! Two setups, both printed:
//!
//! * **split**: the client on one thread, the emulator on another, each a
//!   single-threaded runtime, so neither's work runs on the other's thread.
//!   The client thread's CPU time per call (from its clock) is what the
//!   facade costs its caller, whatever the emulator does; the emulator's is
//!   printed beside it.
//! * **shared**: client and emulator on one 2-worker runtime, so the
//!   emulator's work on the facade's headers (decoding them, the timer a
//!   deadline arms) competes with the client's: the cost to both ends.
//!
//! Each round runs every variant in turn (order reversed every other round);
//! ratios are medians of the per-round ratios, which cancels drift between
//! rounds. Absolute rates are medians too, and noisy on a shared machine.
//!
//! `cargo bench --bench facade --features emulator`

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use vertex_batch::{
    emulator::Emulator, policy::PollPolicy,
    proto::aiplatform::job_service_client::JobServiceClient,
    proto::aiplatform::GetBatchPredictionJobRequest, transport::Credentials, Client, JobSpec,
    WaitOptions,
};

const ROUNDS: usize = 9;
const SERIAL_CALLS: usize = 2_000;
const CONCURRENT_CALLS: usize = 20_000;
const IN_FLIGHT: usize = 64;
/// The length of a real OAuth access token.
const TOKEN_LEN: usize = 250;

type Stub = JobServiceClient<tonic::transport::Channel>;
type Header = (&'static str, MetadataValue<Ascii>);

#[derive(Clone)]
enum Variant {
    Bare(Stub),
    /// The bare stub with these headers on every request.
    Wire(Stub, Arc<Vec<Header>>),
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
            Variant::Wire(stub, headers) => {
                let mut stub = stub.clone();
                let mut req = tonic::Request::new(GetBatchPredictionJobRequest {
                    name: name.to_owned(),
                });
                // Sized as the facade sizes it, so neither pays a rehash.
                *req.metadata_mut() = MetadataMap::with_capacity(8);
                for (key, value) in headers.iter() {
                    req.metadata_mut().insert(*key, value.clone());
                }
                stub.get_batch_prediction_job(req).await.expect("wire get");
            }
            Variant::Facade(client) => {
                client.get(name).await.expect("facade get");
            }
        }
    }
}

const VARIANTS: [&str; 5] = [
    "bare stub",
    "stub + token",
    "stub + deadline",
    "stub + same wire",
    "facade",
];
const SAME_WIRE: usize = 3;
const FACADE: usize = 4;

async fn variants(addr: SocketAddr, job: &str) -> [Variant; 5] {
    let token = format!("ya29.{}", "x".repeat(TOKEN_LEN - 5));
    let facade = Client::builder()
        .ignore_env()
        .project("bench")
        .location("us-central1")
        .endpoint(format!("http://{addr}"))
        .credentials(Credentials::access_token(&token))
        .build()
        .expect("client");
    let bare = JobServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let value = |s: String| MetadataValue::try_from(s).expect("header value");
    let mut auth = value(format!("Bearer {token}"));
    auth.set_sensitive(true);
    let mut deadline = tonic::Request::new(());
    deadline.set_timeout(Duration::from_secs(60));
    let deadline = deadline
        .metadata()
        .get("grpc-timeout")
        .cloned()
        .expect("grpc-timeout");
    let wire = vec![
        ("authorization", auth.clone()),
        (
            "x-goog-api-client",
            value(vertex_batch::transport::api_client_header()),
        ),
        (
            "x-goog-request-params",
            value(format!("name={}", job.replace('/', "%2F"))),
        ),
        ("grpc-timeout", deadline.clone()),
    ];
    let only = |header: Header| Variant::Wire(bare.clone(), Arc::new(vec![header]));
    [
        Variant::Bare(bare.clone()),
        only(("authorization", auth)),
        only(("grpc-timeout", deadline)),
        Variant::Wire(bare.clone(), Arc::new(wire)),
        Variant::Facade(facade),
    ]
}

/// Creates a job and waits for it to finish, so every Get reads a full job.
async fn finished_job(addr: SocketAddr) -> String {
    let client = Client::builder()
        .ignore_env()
        .project("bench")
        .location("us-central1")
        .endpoint(format!("http://{addr}"))
        .credentials(Credentials::anonymous())
        .build()
        .expect("client");
    let job = client
        .create(
            &JobSpec::new("gemini-2.0-flash-001")
                .display_name("facade-bench")
                .input("gs://bench/in.jsonl")
                .output("gs://bench/out"),
        )
        .await
        .expect("create");
    let fast = WaitOptions::new().policy(PollPolicy::fixed(Duration::from_millis(10)));
    client.wait(job.name(), &fast).await.expect("job");
    job.name().to_owned()
}

async fn start_emulator(dir: &std::path::Path) -> Emulator {
    let emu = Emulator::start(dir).await.expect("emulator");
    let input = emu.gcs_path("gs://bench/in.jsonl").expect("path");
    std::fs::create_dir_all(input.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &input,
        r#"{"request":{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}}"#,
    )
    .expect("write");
    emu
}

async fn serial(v: &Variant, name: &str) -> usize {
    for _ in 0..SERIAL_CALLS {
        v.get(name).await;
    }
    SERIAL_CALLS
}

/// `IN_FLIGHT` tasks, as a service's request handlers would be, sharing one
/// client and its channel, each calling until the round's calls are used up.
async fn concurrent(v: &Variant, name: &str) -> usize {
    let left = Arc::new(AtomicUsize::new(CONCURRENT_CALLS));
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (v, name, left) = (v.clone(), name.to_owned(), left.clone());
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    v.get(&name).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    CONCURRENT_CALLS
}

/// CPU time consumed so far by a thread, from its CPU-time clock.
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn this_thread_clock() -> libc::clockid_t {
    let mut clock = 0;
    // SAFETY: pthread_self is always valid; `clock` is writable.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    assert_eq!(rc, 0, "pthread_getcpuclockid");
    clock
}

/// One measurement: calls per second, and CPU µs per call on the client's
/// and on the emulator's thread (split setup only).
#[derive(Default, Clone, Copy)]
struct Sample {
    rate: f64,
    client_us: f64,
    server_us: f64,
}

struct Clocks {
    client: libc::clockid_t,
    server: libc::clockid_t,
}

async fn measure<F: std::future::Future<Output = usize>>(
    clocks: Option<&Clocks>,
    run: F,
) -> Sample {
    let cpu = |pick: fn(&Clocks) -> libc::clockid_t| clocks.map(|c| cpu_time(pick(c)));
    let (c0, s0) = (cpu(|c| c.client), cpu(|c| c.server));
    let t = Instant::now();
    let calls = run.await as f64;
    let wall = t.elapsed();
    let (c1, s1) = (cpu(|c| c.client), cpu(|c| c.server));
    let per_call = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => (b - a).as_secs_f64() * 1e6 / calls,
        _ => f64::NAN,
    };
    Sample {
        rate: calls / wall.as_secs_f64(),
        client_us: per_call(c0, c1),
        server_us: per_call(s0, s1),
    }
}

/// `[variant][serial, concurrent][round]`.
type Results = [[Vec<Sample>; 2]; VARIANTS.len()];

async fn rounds(
    variants: &[Variant; VARIANTS.len()],
    name: &str,
    clocks: Option<&Clocks>,
) -> Results {
    for v in variants {
        serial(v, name).await; // warm up the connections
    }
    let mut results: Results = Default::default();
    for round in 0..ROUNDS {
        let mut order: [usize; VARIANTS.len()] = std::array::from_fn(|i| i);
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let v = &variants[i];
            results[i][0].push(measure(clocks, serial(v, name)).await);
            results[i][1].push(measure(clocks, concurrent(v, name)).await);
        }
    }
    results
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median over rounds of `f(variant's sample) / f(baseline's sample)`.
fn paired(r: &Results, mode: usize, variant: usize, baseline: usize, f: fn(&Sample) -> f64) -> f64 {
    let pairs = r[variant][mode].iter().zip(&r[baseline][mode]);
    median(pairs.map(|(s, b)| f(s) / f(b)).collect())
}

fn report(title: &str, r: &Results, with_cpu: bool) {
    println!("\n{title}");
    print!("{:>21}", "");
    for v in VARIANTS {
        print!(" {v:>17}");
    }
    println!(" {:>12}", "facade/wire");
    let rate: fn(&Sample) -> f64 = |s| s.rate;
    let client: fn(&Sample) -> f64 = |s| s.client_us;
    let server: fn(&Sample) -> f64 = |s| s.server_us;
    let mut lines = vec![("calls/s", rate)];
    if with_cpu {
        lines.push(("client CPU µs/call", client));
        lines.push(("emulator CPU µs/call", server));
    }
    for (mode, label) in [(0, "serial"), (1, "64 in flight")] {
        println!("{label}");
        for (what, f) in &lines {
            print!("{what:>21}");
            for i in 0..VARIANTS.len() {
                let value = median(r[i][mode].iter().map(f).collect());
                let ratio = paired(r, mode, i, 0, *f);
                print!(" {:>17}", format!("{value:.1} ({ratio:.3})"));
            }
            println!(" {:>12.3}", paired(r, mode, FACADE, SAME_WIRE, *f));
        }
    }
}

fn split() -> Results {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let data_dir = dir.path().to_owned();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("emulator runtime");
        rt.block_on(async {
            let emu = start_emulator(&data_dir).await;
            ready_tx
                .send((emu.addr(), this_thread_clock()))
                .expect("ready");
            stop_rx.await.ok();
            emu.shutdown().await;
        });
    });
    let (addr, server_clock) = ready_rx.recv().expect("emulator thread");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let results = rt.block_on(async {
        let name = finished_job(addr).await;
        let variants = variants(addr, &name).await;
        let clocks = Clocks {
            client: this_thread_clock(),
            server: server_clock,
        };
        rounds(&variants, &name, Some(&clocks)).await
    });
    // Closing the client's connections lets the emulator shut down.
    drop(rt);
    stop_tx.send(()).ok();
    server.join().expect("emulator thread");
    results
}

fn shared() -> Results {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Run on a worker, as a service's requests do, not on the thread that
    // blocks on the runtime: 2 busy threads for 2 cores.
    let main = rt.spawn(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let emu = start_emulator(dir.path()).await;
        let name = finished_job(emu.addr()).await;
        let variants = variants(emu.addr(), &name).await;
        let results = rounds(&variants, &name, None).await;
        // Closing the clients' connections lets the emulator shut down.
        drop(variants);
        emu.shutdown().await;
        results
    });
    rt.block_on(main).expect("benchmark task")
}

fn main() {
    println!(
        "Get round trips through one channel, loopback TCP, {TOKEN_LEN}-byte token; \
         medians of {ROUNDS} rounds; in brackets, the ratio to the bare stub in the same round"
    );
    let r = split();
    report(
        "split: client and emulator on a thread each (what the facade costs its caller)",
        &r,
        true,
    );
    let r = shared();
    report(
        "shared: client and emulator on one 2-worker runtime (the cost to both ends)",
        &r,
        false,
    );
}
