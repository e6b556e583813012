//! Flags and values several commands share: the flags every command takes
//! ([`Global`]), a job argument ([`JobArg`]) and the parsers of values
//! (`KEY=VALUE` labels, row counts, seconds).

/// Flags every command takes.
#[derive(clap::Args, Clone, Debug)]
pub struct Global {
    /// The Google Cloud project.
    #[arg(
        long,
        global = true,
        env = "GOOGLE_CLOUD_PROJECT",
        hide_env_values = true
    )]
    pub project: Option<String>,
    /// The Vertex AI region, e.g. us-central1.
    #[arg(
        long,
        global = true,
        env = "GOOGLE_CLOUD_LOCATION",
        default_value = "us-central1"
    )]
    pub location: String,
    /// How long to keep retrying a call that fails for a passing reason
    /// (unavailable, rate limited, network), in seconds; 0: never retry.
    /// One budget for Vertex AI and Cloud Storage calls alike. It also
    /// bounds each Vertex AI call: a budget under 60 s is its deadline.
    /// While `run` follows its jobs, it is how long the service may go
    /// without answering before `run` gives up (exit 6): the jobs keep
    /// running, and the command it prints picks them up. Raise it for a
    /// flaky network.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 300)]
    pub retry_for: u64,
}

impl Global {
    /// The retry policy `--retry-for` sets, for both APIs.
    pub fn retry_policy(&self) -> vertex_batch::policy::RetryPolicy {
        if self.retry_for == 0 {
            vertex_batch::policy::RetryPolicy::none()
        } else {
            vertex_batch::policy::RetryPolicy::default()
                .with_max_attempts(u32::MAX)
                .with_total_timeout(Some(std::time::Duration::from_secs(self.retry_for)))
        }
    }

    /// Whether the JobService is an emulator (no region to get wrong).
    pub fn emulated(&self) -> bool {
        std::env::var("VERTEX_AI_EMULATOR_HOST").is_ok_and(|v| !v.trim().is_empty())
    }
}

/// A job, by its full name or its numeric id.
#[derive(clap::Args, Debug)]
pub struct JobArg {
    /// The job: projects/P/locations/L/batchPredictionJobs/ID, or just ID.
    pub job: String,
}

/// Parses `KEY=VALUE`.
pub fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Parses `--rows-per-job`: 1 to the service's 200,000.
pub fn rows_per_job(s: &str) -> Result<u64, String> {
    let max = vertex_batch::format::SERVICE_MAX_ROWS_PER_JOB;
    match s.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of rows from 1 to {max}")),
    }
}

/// Parses `--claim-lease`: seconds, more than 0 and at most a day.
pub fn claim_lease(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(n) if n > 0.0 && n <= 86_400.0 => Ok(n),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 86400")),
    }
}

/// Parses `--poll`: seconds, more than 0 and at most a day.
pub fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}
