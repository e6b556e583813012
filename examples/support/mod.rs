//! What both examples share: flags and environment, choosing where to run
//! (Vertex AI, an external emulator, or an embedded one), and showing
//! progress and results.

use std::{path::PathBuf, pin::pin, time::Duration};

use futures::StreamExt;
use vertex_batch::{
    emulator::Emulator, policy::PollPolicy, transport::ENV_EMULATOR_HOST, Client, Job, JobSpec,
    WaitOptions,
};

/// What one example needs from the shared code.
pub struct Sample {
    /// The example's name (for `--help`).
    pub name: &'static str,
    /// What it does, one line.
    pub about: &'static str,
    /// The input Google's sample uses.
    pub default_input: &'static str,
    /// Where predictions go on the embedded emulator.
    pub emulator_output: &'static str,
    /// A placeholder output for the help text.
    pub output_hint: &'static str,
    /// Writes the sample's input into an embedded emulator.
    pub seed: fn(&Emulator, &str) -> Result<(), String>,
    /// Prints the first predictions from an embedded emulator.
    pub show: fn(&Emulator, &Job) -> Result<(), String>,
}

/// The settings of one run (flags, or the environment where noted).
#[derive(clap::Parser, Debug)]
pub struct Settings {
    /// GCP project; without one, and without VERTEX_AI_EMULATOR_HOST, the
    /// example runs on an embedded emulator.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    pub project: Option<String>,
    /// Region.
    #[arg(long, env = "GOOGLE_CLOUD_LOCATION", default_value = "us-central1")]
    pub location: String,
    /// The model.
    #[arg(long, default_value = "gemini-2.0-flash-001")]
    pub model: String,
    /// The job's input (default: the input Google's sample uses).
    #[arg(long)]
    input: Option<String>,
    /// Where predictions go (required on Vertex AI).
    #[arg(long)]
    pub output: Option<String>,
    /// The embedded emulator's data directory (default: a temporary one).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl Settings {
    /// The job's input.
    pub fn input(&self) -> &str {
        self.input.as_deref().unwrap_or_default()
    }
}

/// Reads flags and environment (clap prints help and usage errors itself).
pub fn settings(s: &Sample) -> Settings {
    use clap::{CommandFactory, FromArgMatches};
    let cmd = Settings::command()
        .name(s.name)
        .about(s.about)
        .after_help(format!(
            "Where it runs:\n  {ENV_EMULATOR_HOST}=host:port   an emulator you started (vertex-batch-emulator)\n  \
             a project (flag or env)         Vertex AI, with Application Default Credentials\n  \
             neither                         an embedded emulator: no credentials, no network\n\n\
             On Vertex AI, --output is e.g. {}",
            s.output_hint
        ));
    let mut cfg = Settings::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit());
    cfg.input.get_or_insert_with(|| s.default_input.to_owned());
    cfg
}

/// Runs the sample: pick the backend, submit, follow, report.
pub async fn main(
    sample: Sample,
    build: impl Fn(&Settings, &str) -> JobSpec,
) -> Result<(), String> {
    let mut cfg = settings(&sample);
    let external = std::env::var(ENV_EMULATOR_HOST)
        .ok()
        .filter(|v| !v.is_empty());
    let emulator = if external.is_none() && cfg.project.is_none() {
        let dir = match &cfg.data_dir {
            Some(d) => d.clone(),
            None => tempdir()?,
        };
        let emu = Emulator::start(&dir).await.map_err(|e| e.to_string())?;
        // Long enough to watch it happen.
        emu.knobs().set_queue_delay(Duration::from_millis(500));
        emu.knobs().set_job_duration(Some(Duration::from_secs(3)));
        (sample.seed)(&emu, cfg.input())?;
        println!("No GCP project configured: running on an embedded Vertex AI emulator.");
        println!("  data dir: {}", emu.data_dir().display());
        println!(
            "  input {} is the file {}",
            cfg.input(),
            input_file(&emu, cfg.input())
        );
        cfg.project = Some("local-project".into());
        Some(emu)
    } else {
        None
    };
    let output = match (&cfg.output, &emulator, &external) {
        (Some(o), _, _) => o.clone(),
        (None, Some(_), _) | (None, None, Some(_)) => sample.emulator_output.into(),
        (None, None, None) => {
            return Err(format!(
                "--output is required on Vertex AI, e.g. --output {}",
                sample.output_hint
            ))
        }
    };
    // An emulator accepts any project; the samples' placeholder will do.
    let project = cfg
        .project
        .clone()
        .unwrap_or_else(|| "local-project".into());
    let client = match &emulator {
        Some(emu) => emu.client(&project, &cfg.location),
        None => Client::builder()
            .project(&project)
            .location(&cfg.location)
            .build(),
    }
    .map_err(|e| e.to_string())?;
    if let Some(host) = &external {
        println!("Talking to the emulator at {host}.");
    }

    // `create` sends exactly what Google's samples send; a service that may
    // retry submissions should use `client.submit`, which never makes two jobs.
    let spec = build(&cfg, &output);
    let job = client.create(&spec).await.map_err(|e| e.to_string())?;
    println!("submitted batch predict job for model {:?}", job.model());
    println!("job id: {:?}", job.name());
    println!("job state: {}", job.state());

    let policy = if emulator.is_some() || external.is_some() {
        PollPolicy::default().max_interval(Duration::from_millis(500))
    } else {
        PollPolicy::default().max_interval(Duration::from_secs(60))
    };
    let mut updates = pin!(client.watch(job.name(), &WaitOptions::new().policy(policy)));
    let mut last = None;
    while let Some(update) = updates.next().await {
        let job = update.map_err(|e| e.to_string())?;
        let s = job.completion_stats();
        if s.total() > 0 {
            println!(
                "  {:<28} {:>5}/{} rows done ({} failed)",
                job.state().to_string(),
                s.done(),
                s.total(),
                s.failed
            );
        } else {
            println!("  {}", job.state());
        }
        last = Some(job);
    }
    let Some(job) = last else {
        return Err("no job state received".into());
    };
    println!("batch predict job finished with state {}", job.state());
    if let Some(err) = job.error() {
        println!("job error: {err}");
    }
    match job.output_location() {
        Some(loc) => println!("job output location: {loc}"),
        None => println!("job output location: (none reported)"),
    }
    if let Some(emu) = &emulator {
        if job.output_location().is_some() {
            (sample.show)(emu, &job)?;
        }
        emu.knobs().set_job_duration(None);
    }
    if job.state().is_success() {
        Ok(())
    } else {
        Err(format!("the job ended {}", job.state()))
    }
}

/// The process exit code for a run, printing its error.
pub fn exit(result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn input_file(emu: &Emulator, uri: &str) -> String {
    let path = if uri.starts_with("bq://") {
        emu.bigquery_path(uri)
    } else {
        emu.gcs_path(uri)
    };
    path.map(|p| p.display().to_string())
        .unwrap_or_else(|e| e.to_string())
}

/// A fresh directory under the system's temporary directory, left in place
/// so the output can be inspected afterwards (the example prints its path).
fn tempdir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "vertex-batch-example-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A handful of realistic prompts.
pub const PROMPTS: &[&str] = &[
    "Give me a recipe for banana bread.",
    "List three ways to reduce the cold-start time of a Rust web service.",
    "Summarize the plot of Moby-Dick in two sentences.",
    "Write a haiku about autumn rain on a tin roof.",
    "Explain the difference between TCP and UDP to a new engineer.",
];

/// Prints up to three predictions from JSONL output rows.
pub fn print_predictions(text: &str) {
    println!("first predictions:");
    for line in text.lines().take(3) {
        let Ok(row) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let request = &row["request"];
        let request = match request.as_str() {
            Some(s) => serde_json::from_str(s).unwrap_or(serde_json::Value::Null),
            None => request.clone(),
        };
        let prompt = request["contents"][0]["parts"]
            .as_array()
            .and_then(|parts| parts.iter().find_map(|p| p["text"].as_str()))
            .unwrap_or("?");
        let answer = row["response"]["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap_or("(no response)");
        println!("  > {prompt}\n    {answer}");
    }
}
