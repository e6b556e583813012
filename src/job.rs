//! A batch prediction job as Rust sees it: [`Job`], [`JobState`],
//! [`CompletionStats`] and [`OutputLocation`]; [`format_rfc3339`] writes
//! a job's times as its JSON form does.

use std::{borrow::Cow, collections::HashMap, fmt, time::SystemTime};

use crate::{
    error::service::ServiceError,
    names::JobName,
    proto::aiplatform::{self as pb, batch_prediction_job::output_info},
    time::to_system_time,
    uri::{BigQueryUri, GcsUri},
    validation::ValidationError,
};

/// The state of a batch prediction job (`google.cloud.aiplatform.v1.JobState`).
///
/// ```
/// use vertex_batch::JobState;
/// assert!(JobState::PartiallySucceeded.is_terminal());
/// assert!(JobState::Expired.is_terminal());
/// assert!(!JobState::Paused.is_terminal());
/// assert!(!JobState::Cancelling.is_terminal());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Not set.
    Unspecified,
    /// Created, waiting for resources.
    Queued,
    /// Resources are being prepared.
    Pending,
    /// Running.
    Running,
    /// Finished successfully. Rows may still have failed individually:
    /// check [`Job::completion_stats`].
    Succeeded,
    /// Failed; see [`Job::error`].
    Failed,
    /// Being cancelled; it will end `SUCCEEDED`, `FAILED` or `CANCELLED`.
    Cancelling,
    /// Cancelled.
    Cancelled,
    /// Paused: the service stopped running the job for a while (for
    /// example while it is updated) and will resume it. Not an end state:
    /// waits keep polling.
    Paused,
    /// Queued for longer than the service allows (72 h) and dropped.
    Expired,
    /// Being updated.
    Updating,
    /// Finished with some rows failed.
    PartiallySucceeded,
    /// A value this crate does not know (a newer API's state), kept as
    /// sent. Whether such a job has ended is told by [`Job::has_ended`]
    /// (its `end_time`), not by the state.
    Unrecognized(i32),
}

impl JobState {
    /// The state for a wire value; unknown values are kept as
    /// [`JobState::Unrecognized`].
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, JobState};
    /// assert_eq!(JobState::from_proto(pb::JobState::Running as i32), JobState::Running);
    /// assert_eq!(JobState::from_proto(99), JobState::Unrecognized(99));
    /// ```
    pub fn from_proto(value: i32) -> Self {
        use pb::JobState as P;
        match P::try_from(value) {
            Ok(P::Queued) => JobState::Queued,
            Ok(P::Pending) => JobState::Pending,
            Ok(P::Running) => JobState::Running,
            Ok(P::Succeeded) => JobState::Succeeded,
            Ok(P::Failed) => JobState::Failed,
            Ok(P::Cancelling) => JobState::Cancelling,
            Ok(P::Cancelled) => JobState::Cancelled,
            Ok(P::Paused) => JobState::Paused,
            Ok(P::Expired) => JobState::Expired,
            Ok(P::Updating) => JobState::Updating,
            Ok(P::PartiallySucceeded) => JobState::PartiallySucceeded,
            Ok(P::Unspecified) => JobState::Unspecified,
            Err(_) => JobState::Unrecognized(value),
        }
    }

    /// The wire value as the enum (`UNSPECIFIED` for an unrecognized one;
    /// [`JobState::to_wire`] keeps it).
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, JobState};
    /// assert_eq!(JobState::Succeeded.to_proto(), pb::JobState::Succeeded);
    /// assert_eq!(JobState::Unrecognized(99).to_proto(), pb::JobState::Unspecified);
    /// ```
    pub fn to_proto(self) -> pb::JobState {
        use pb::JobState as P;
        match self {
            JobState::Unspecified => P::Unspecified,
            JobState::Queued => P::Queued,
            JobState::Pending => P::Pending,
            JobState::Running => P::Running,
            JobState::Succeeded => P::Succeeded,
            JobState::Failed => P::Failed,
            JobState::Cancelling => P::Cancelling,
            JobState::Cancelled => P::Cancelled,
            JobState::Paused => P::Paused,
            JobState::Expired => P::Expired,
            JobState::Updating => P::Updating,
            JobState::PartiallySucceeded => P::PartiallySucceeded,
            JobState::Unrecognized(_) => P::Unspecified,
        }
    }

    /// The wire value, unrecognized ones included.
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, JobState};
    /// assert_eq!(JobState::Failed.to_wire(), pb::JobState::Failed as i32);
    /// assert_eq!(JobState::Unrecognized(99).to_wire(), 99);
    /// ```
    pub fn to_wire(self) -> i32 {
        match self {
            JobState::Unrecognized(v) => v,
            s => s.to_proto() as i32,
        }
    }

    /// True exactly for the states a job never leaves: `SUCCEEDED`, `FAILED`,
    /// `CANCELLED`, `EXPIRED` and `PARTIALLY_SUCCEEDED`.
    ///
    /// ```
    /// use vertex_batch::JobState;
    /// assert!(JobState::Failed.is_terminal());
    /// assert!(!JobState::Running.is_terminal());
    /// assert!(!JobState::Unrecognized(99).is_terminal()); // see Job::has_ended
    /// ```
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::Failed
                | JobState::Cancelled
                | JobState::Expired
                | JobState::PartiallySucceeded
        )
    }

    /// True only for `SUCCEEDED`.
    ///
    /// ```
    /// use vertex_batch::JobState;
    /// assert!(JobState::Succeeded.is_success());
    /// assert!(!JobState::PartiallySucceeded.is_success());
    /// ```
    pub fn is_success(self) -> bool {
        self == JobState::Succeeded
    }

    /// The name the API uses, e.g. `JOB_STATE_RUNNING`
    /// (`JOB_STATE_UNRECOGNIZED` for a value this crate does not know; its
    /// `Display` shows the number).
    ///
    /// ```
    /// use vertex_batch::JobState;
    /// assert_eq!(JobState::Running.as_str(), "JOB_STATE_RUNNING");
    /// assert_eq!(JobState::Unrecognized(99).as_str(), "JOB_STATE_UNRECOGNIZED");
    /// assert_eq!(JobState::Unrecognized(99).to_string(), "JOB_STATE_UNRECOGNIZED(99)");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Unrecognized(_) => "JOB_STATE_UNRECOGNIZED",
            s => s.to_proto().as_str_name(),
        }
    }
}

/// The states a job can be in, as [`JobState::from_str`] knows them (not
/// `UNSPECIFIED`, nor a state this crate does not know).
const KNOWN_STATES: [JobState; 11] = [
    JobState::Queued,
    JobState::Pending,
    JobState::Running,
    JobState::Succeeded,
    JobState::Failed,
    JobState::Cancelling,
    JobState::Cancelled,
    JobState::Paused,
    JobState::Expired,
    JobState::Updating,
    JobState::PartiallySucceeded,
];

impl std::str::FromStr for JobState {
    type Err = ValidationError;

    /// Parses a state by its API name (`JOB_STATE_RUNNING`) or its short
    /// name (`running`), in any case. `UNSPECIFIED` is not a state to ask
    /// for, and is refused like any other unknown name; the error (field
    /// `state`) lists the short names.
    ///
    /// ```
    /// use vertex_batch::JobState;
    /// assert_eq!("JOB_STATE_SUCCEEDED".parse::<JobState>(), Ok(JobState::Succeeded));
    /// assert_eq!("succeeded".parse::<JobState>(), Ok(JobState::Succeeded));
    /// assert_eq!("Partially_Succeeded".parse::<JobState>(), Ok(JobState::PartiallySucceeded));
    /// let err = "sleeping".parse::<JobState>().unwrap_err();
    /// assert_eq!(err.field(), "state");
    /// assert!(err.message().starts_with("\"sleeping\" is not a job state (queued, pending,"));
    /// assert!("unspecified".parse::<JobState>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let short = |st: &JobState| {
            let name = st.as_str();
            name.strip_prefix("JOB_STATE_").unwrap_or(name)
        };
        KNOWN_STATES
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s) || short(st).eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = KNOWN_STATES
                    .iter()
                    .map(|st| short(st).to_ascii_lowercase())
                    .collect();
                ValidationError::new(
                    "state",
                    format!("{s:?} is not a job state ({})", names.join(", ")),
                )
            })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobState::Unrecognized(v) => write!(f, "JOB_STATE_UNRECOGNIZED({v})"),
            s => f.write_str(s.as_str()),
        }
    }
}

/// Row counts of a job (`completion_stats`).
///
/// ```
/// use vertex_batch::job::CompletionStats;
/// let stats = CompletionStats { successful: 90, failed: 2, incomplete: Some(8) };
/// assert_eq!((stats.done(), stats.total()), (92, 100));
/// // The service sends -1 when it does not know how many rows are left.
/// let unknown = CompletionStats { incomplete: None, ..stats };
/// assert_eq!(unknown.total(), 92);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct CompletionStats {
    /// Rows with a prediction.
    pub successful: u64,
    /// Rows that failed.
    pub failed: u64,
    /// Rows not processed yet (or never: the job was cancelled); `None`
    /// when the service says it does not know (it sends -1).
    pub incomplete: Option<u64>,
}

impl CompletionStats {
    /// Rows processed so far (successful + failed).
    ///
    /// ```
    /// use vertex_batch::job::CompletionStats;
    /// let stats = CompletionStats { successful: 90, failed: 2, incomplete: Some(8) };
    /// assert_eq!(stats.done(), 92);
    /// ```
    pub fn done(&self) -> u64 {
        self.successful.saturating_add(self.failed)
    }

    /// All rows counted (successful + failed + incomplete); only the done
    /// rows while the number incomplete is unknown.
    ///
    /// ```
    /// use vertex_batch::job::CompletionStats;
    /// let stats = CompletionStats { successful: 90, failed: 2, incomplete: Some(8) };
    /// assert_eq!(stats.total(), 100);
    /// assert_eq!(CompletionStats { incomplete: None, ..stats }.total(), 92);
    /// ```
    pub fn total(&self) -> u64 {
        self.done().saturating_add(self.incomplete.unwrap_or(0))
    }
}

/// Where a job's predictions were written (`output_info`).
///
/// ```
/// use vertex_batch::job::OutputLocation;
/// let out = OutputLocation::Gcs("gs://my-bucket/out/prediction-model-2024".into());
/// assert_eq!(out.gcs().unwrap().bucket(), "my-bucket");
/// assert!(out.bigquery().is_none());
/// assert_eq!(out.to_string(), "gs://my-bucket/out/prediction-model-2024");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputLocation {
    /// A Cloud Storage directory holding `predictions.jsonl` files.
    Gcs(String),
    /// A BigQuery table (`bq://project.dataset.table`).
    BigQuery {
        /// `bq://project.dataset` as the service reports it.
        dataset: String,
        /// The table name inside that dataset.
        table: String,
    },
}

impl OutputLocation {
    /// The location as a URI: `gs://…` or `bq://project.dataset.table`.
    ///
    /// ```
    /// use vertex_batch::job::OutputLocation;
    /// let out = OutputLocation::BigQuery { dataset: "bq://p.d".into(), table: "predictions".into() };
    /// assert_eq!(out.uri(), "bq://p.d.predictions");
    /// ```
    pub fn uri(&self) -> String {
        match self {
            OutputLocation::Gcs(d) => d.clone(),
            OutputLocation::BigQuery { dataset, table } if table.is_empty() => dataset.clone(),
            OutputLocation::BigQuery { dataset, table } => format!("{dataset}.{table}"),
        }
    }

    /// The Cloud Storage directory, parsed.
    ///
    /// ```
    /// use vertex_batch::job::OutputLocation;
    /// let out = OutputLocation::Gcs("gs://my-bucket/out/prediction-1".into());
    /// assert_eq!(out.gcs().unwrap().object(), "out/prediction-1");
    /// ```
    pub fn gcs(&self) -> Option<GcsUri> {
        match self {
            OutputLocation::Gcs(d) => d.parse().ok(),
            OutputLocation::BigQuery { .. } => None,
        }
    }

    /// The BigQuery table, parsed.
    ///
    /// ```
    /// use vertex_batch::job::OutputLocation;
    /// let out = OutputLocation::BigQuery { dataset: "bq://p.d".into(), table: "predictions".into() };
    /// let table = out.bigquery().unwrap();
    /// assert_eq!((table.dataset(), table.table()), ("d", Some("predictions")));
    /// ```
    pub fn bigquery(&self) -> Option<BigQueryUri> {
        match self {
            OutputLocation::BigQuery { .. } => self.uri().parse().ok(),
            OutputLocation::Gcs(_) => None,
        }
    }
}

impl fmt::Display for OutputLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// A batch prediction job, as returned by create, get and list.
///
/// Accessors give Rust types; [`Job::proto`] and [`Job::into_proto`] give the
/// raw message for anything not covered. It serialises (serde) to the same
/// proto3 JSON the REST API shows.
///
/// ```
/// use vertex_batch::{proto::aiplatform as pb, Job, JobState};
/// let job = Job::from(pb::BatchPredictionJob {
///     name: "projects/p/locations/us-central1/batchPredictionJobs/42".into(),
///     state: pb::JobState::Running as i32,
///     ..Default::default()
/// });
/// assert_eq!((job.id(), job.state()), ("42", JobState::Running));
/// assert!(!job.has_ended());
/// assert_eq!(job.to_json()["state"], "JOB_STATE_RUNNING");
/// ```
#[derive(Clone, PartialEq)]
pub struct Job {
    raw: pb::BatchPredictionJob,
}

impl From<pb::BatchPredictionJob> for Job {
    fn from(raw: pb::BatchPredictionJob) -> Self {
        Job { raw }
    }
}

impl Job {
    /// The full resource name as the service sent it
    /// (`projects/*/locations/*/batchPredictionJobs/*`). Every client method
    /// that takes a job takes `&job` itself too (see [`JobRef`]); to get a
    /// typed [`JobName`], `job.name().parse()`.
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, Job};
    ///
    /// let job = Job::from(pb::BatchPredictionJob {
    ///     name: "projects/p/locations/us-central1/batchPredictionJobs/42".into(),
    ///     ..Default::default()
    /// });
    /// let name: vertex_batch::JobName = job.name().parse().unwrap();
    /// assert_eq!(name.parent().location(), "us-central1");
    /// ```
    pub fn name(&self) -> &str {
        &self.raw.name
    }

    /// The numeric id (the last segment of the name).
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, Job};
    ///
    /// let job = Job::from(pb::BatchPredictionJob {
    ///     name: "projects/p/locations/us-central1/batchPredictionJobs/42".into(),
    ///     ..Default::default()
    /// });
    /// assert_eq!(job.id(), "42");
    /// ```
    pub fn id(&self) -> &str {
        self.raw.name.rsplit('/').next().unwrap_or_default()
    }

    /// The display name.
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, Job};
    ///
    /// let job = Job::from(pb::BatchPredictionJob { display_name: "nightly".into(), ..Default::default() });
    /// assert_eq!(job.display_name(), "nightly");
    /// ```
    pub fn display_name(&self) -> &str {
        &self.raw.display_name
    }

    /// The model resource name.
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, Job};
    ///
    /// let model = "publishers/google/models/gemini-2.0-flash-001";
    /// let job = Job::from(pb::BatchPredictionJob { model: model.into(), ..Default::default() });
    /// assert_eq!(job.model(), model);
    /// ```
    pub fn model(&self) -> &str {
        &self.raw.model
    }

    /// The state.
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, Job, JobState};
    /// let job = Job::from(pb::BatchPredictionJob { state: pb::JobState::Failed as i32, ..Default::default() });
    /// assert_eq!(job.state(), JobState::Failed);
    /// ```
    pub fn state(&self) -> JobState {
        JobState::from_proto(self.raw.state)
    }

    /// Labels.
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, Job};
    ///
    /// let labels = [("team".to_string(), "search".to_string())].into();
    /// let job = Job::from(pb::BatchPredictionJob { labels, ..Default::default() });
    /// assert_eq!(job.labels()["team"], "search");
    /// ```
    pub fn labels(&self) -> &HashMap<String, String> {
        &self.raw.labels
    }

    /// Model parameters as JSON (e.g. `{"temperature": 0.2}`).
    ///
    /// ```
    /// use serde_json::json;
    /// let job: vertex_batch::Job =
    ///     serde_json::from_value(json!({"modelParameters": {"temperature": 0.2}})).unwrap();
    /// assert_eq!(job.model_parameters(), Some(json!({"temperature": 0.2})));
    /// ```
    pub fn model_parameters(&self) -> Option<serde_json::Value> {
        self.raw
            .model_parameters
            .as_ref()
            .and_then(|v| serde_json::to_value(v).ok())
    }

    /// When the job was created.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use vertex_batch::{proto::{aiplatform as pb, protobuf::Timestamp}, Job};
    /// let t = Some(Timestamp { seconds: 1_700_000_000, nanos: 0 });
    /// let job = Job::from(pb::BatchPredictionJob { create_time: t, ..Default::default() });
    /// assert_eq!(job.create_time(), Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
    /// ```
    pub fn create_time(&self) -> Option<SystemTime> {
        self.raw.create_time.as_ref().and_then(to_system_time)
    }

    /// When the job first started running.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use vertex_batch::{proto::{aiplatform as pb, protobuf::Timestamp}, Job};
    /// let t = Some(Timestamp { seconds: 1_700_000_000, nanos: 0 });
    /// let job = Job::from(pb::BatchPredictionJob { start_time: t, ..Default::default() });
    /// assert_eq!(job.start_time(), Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
    /// ```
    pub fn start_time(&self) -> Option<SystemTime> {
        self.raw.start_time.as_ref().and_then(to_system_time)
    }

    /// When the job ended.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use vertex_batch::{proto::{aiplatform as pb, protobuf::Timestamp}, Job};
    /// let t = Some(Timestamp { seconds: 1_700_000_000, nanos: 0 });
    /// let job = Job::from(pb::BatchPredictionJob { end_time: t, ..Default::default() });
    /// assert_eq!(job.end_time(), Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
    /// ```
    pub fn end_time(&self) -> Option<SystemTime> {
        self.raw.end_time.as_ref().and_then(to_system_time)
    }

    /// When the job was last updated.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use vertex_batch::{proto::{aiplatform as pb, protobuf::Timestamp}, Job};
    /// let t = Some(Timestamp { seconds: 1_700_000_000, nanos: 0 });
    /// let job = Job::from(pb::BatchPredictionJob { update_time: t, ..Default::default() });
    /// assert_eq!(job.update_time(), Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
    /// ```
    pub fn update_time(&self) -> Option<SystemTime> {
        self.raw.update_time.as_ref().and_then(to_system_time)
    }

    /// Row counts (zeros until the service reports some).
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, Job};
    ///
    /// let counts = pb::CompletionStats {
    ///     successful_count: 9, failed_count: 1, incomplete_count: -1, ..Default::default()
    /// };
    /// let job = Job::from(pb::BatchPredictionJob { completion_stats: Some(counts), ..Default::default() });
    /// let stats = job.completion_stats();
    /// assert_eq!((stats.successful, stats.failed, stats.incomplete), (9, 1, None)); // -1: unknown
    /// ```
    pub fn completion_stats(&self) -> CompletionStats {
        let s = self.raw.completion_stats.unwrap_or_default();
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        CompletionStats {
            successful: n(s.successful_count),
            failed: n(s.failed_count),
            // -1 (any negative) is the service's "unknown".
            incomplete: u64::try_from(s.incomplete_count).ok(),
        }
    }

    /// Where the predictions were written, once the service says.
    ///
    /// ```
    /// use vertex_batch::job::OutputLocation;
    /// let job: vertex_batch::Job = serde_json::from_value(serde_json::json!({
    ///     "outputInfo": {"gcsOutputDirectory": "gs://my-bucket/out/prediction-1"}
    /// })).unwrap();
    /// let out = OutputLocation::Gcs("gs://my-bucket/out/prediction-1".into());
    /// assert_eq!(job.output_location(), Some(out));
    /// ```
    pub fn output_location(&self) -> Option<OutputLocation> {
        let info = self.raw.output_info.as_ref()?;
        match info.output_location.as_ref()? {
            output_info::OutputLocation::GcsOutputDirectory(d) => {
                Some(OutputLocation::Gcs(d.clone()))
            }
            output_info::OutputLocation::BigqueryOutputDataset(d) => {
                Some(OutputLocation::BigQuery {
                    dataset: d.clone(),
                    table: info.bigquery_output_table.clone(),
                })
            }
            output_info::OutputLocation::VertexMultimodalDatasetName(_) => None,
        }
    }

    /// The job's error, when it failed.
    ///
    /// ```
    /// use vertex_batch::{proto::{aiplatform as pb, rpc}, Job};
    /// let status = rpc::Status { code: 3, message: "bad input".into(), details: vec![] };
    /// let job = Job::from(pb::BatchPredictionJob { error: Some(status), ..Default::default() });
    /// assert_eq!(job.error().unwrap().code(), tonic::Code::InvalidArgument);
    /// ```
    pub fn error(&self) -> Option<ServiceError> {
        self.raw
            .error
            .as_ref()
            .filter(|s| s.code != 0 || !s.message.is_empty())
            .map(ServiceError::from_rpc_status)
    }

    /// Up to 20 row errors the service reported while the job ran.
    ///
    /// ```
    /// use vertex_batch::{proto::{aiplatform as pb, rpc}, Job};
    /// let row = rpc::Status { code: 3, message: "row 7: bad request".into(), details: vec![] };
    /// let job = Job::from(pb::BatchPredictionJob { partial_failures: vec![row], ..Default::default() });
    /// assert_eq!(job.partial_failures()[0].message(), "row 7: bad request");
    /// ```
    pub fn partial_failures(&self) -> Vec<ServiceError> {
        self.raw
            .partial_failures
            .iter()
            .map(ServiceError::from_rpc_status)
            .collect()
    }

    /// Whether the job has ended: a terminal state, or `end_time` set
    /// whatever the state says (the rule Google's own Go sample uses; it
    /// catches states newer than this crate).
    ///
    /// ```
    /// use vertex_batch::{proto::{aiplatform as pb, protobuf::Timestamp}, Job};
    /// // A state this crate does not know, but `end_time` is set: it has ended.
    /// let end_time = Some(Timestamp { seconds: 1_700_000_000, nanos: 0 });
    /// let job = Job::from(pb::BatchPredictionJob { state: 99, end_time, ..Default::default() });
    /// assert!(job.has_ended());
    /// ```
    pub fn has_ended(&self) -> bool {
        self.state().is_terminal() || self.raw.end_time.is_some()
    }

    /// True when the job ended `SUCCEEDED` *and* no row failed.
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, Job};
    ///
    /// let counts = pb::CompletionStats { successful_count: 9, failed_count: 1, ..Default::default() };
    /// let job = Job::from(pb::BatchPredictionJob {
    ///     state: pb::JobState::Succeeded as i32,
    ///     completion_stats: Some(counts),
    ///     ..Default::default()
    /// });
    /// assert!(job.state().is_success() && !job.is_clean_success());
    /// ```
    pub fn is_clean_success(&self) -> bool {
        self.state().is_success() && self.completion_stats().failed == 0
    }

    /// The raw proto.
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, Job};
    ///
    /// let job = Job::from(pb::BatchPredictionJob { model_version_id: "2".into(), ..Default::default() });
    /// assert_eq!(job.proto().model_version_id, "2");
    /// ```
    pub fn proto(&self) -> &pb::BatchPredictionJob {
        &self.raw
    }

    /// The raw proto, owned.
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, Job};
    ///
    /// let raw = pb::BatchPredictionJob { display_name: "nightly".into(), ..Default::default() };
    /// assert_eq!(Job::from(raw.clone()).into_proto(), raw);
    /// ```
    pub fn into_proto(self) -> pb::BatchPredictionJob {
        self.raw
    }

    /// The job as proto3 JSON, as the REST API shows it.
    ///
    /// ```
    /// use vertex_batch::{proto::aiplatform as pb, Job};
    ///
    /// let job = Job::from(pb::BatchPredictionJob { display_name: "nightly".into(), ..Default::default() });
    /// assert_eq!(job.to_json()["displayName"], "nightly");
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.raw).unwrap_or(serde_json::Value::Null)
    }
}

/// Formats `t` in RFC 3339 exactly as a job's JSON form
/// ([`Job::to_json`]) writes its times: in UTC, written `+00:00`, with 0,
/// 3, 6 or 9 fraction digits (the fewest that hold the time exactly).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use vertex_batch::job::format_rfc3339;
///
/// let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(format_rfc3339(t), "2023-11-14T22:13:20+00:00");
/// assert_eq!(format_rfc3339(t + Duration::from_millis(376)), "2023-11-14T22:13:20.376+00:00");
/// ```
pub fn format_rfc3339(t: SystemTime) -> String {
    crate::time::format_rfc3339(t)
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.raw.name)
            .field("display_name", &self.raw.display_name)
            .field("model", &self.raw.model)
            .field("state", &self.state())
            .field("completion_stats", &self.completion_stats())
            .field("output", &self.output_location())
            .finish_non_exhaustive()
    }
}

impl serde::Serialize for Job {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Job {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        pb::BatchPredictionJob::deserialize(d).map(Job::from)
    }
}

/// A job, however the caller names it: every [`crate::Client`] method that
/// takes a job takes `impl Into<JobRef>`, so a full name, a bare numeric id
/// (in the client's location), a [`JobName`] or a [`Job`] all work alike.
///
/// ```no_run
/// # async fn demo(client: vertex_batch::Client, job: vertex_batch::Job) -> vertex_batch::Result<()> {
/// use vertex_batch::JobName;
/// client.get("1234567890").await?;                                 // a bare id
/// client.get("projects/p/locations/us-central1/batchPredictionJobs/1").await?;
/// let name: JobName = job.name().parse()?;
/// client.get(&name).await?;                                        // &JobName
/// client.get(name).await?;                                         // JobName
/// client.get(&job).await?;                                         // &Job
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef<'a>(Cow<'a, str>);

impl JobRef<'_> {
    /// The name as given (a full name or a bare id; checked when used).
    ///
    /// ```
    /// use vertex_batch::{JobName, JobRef};
    /// assert_eq!(JobRef::from("1234567890").as_str(), "1234567890");
    /// let name: JobName = "projects/p/locations/us-central1/batchPredictionJobs/1".parse().unwrap();
    /// assert_eq!(JobRef::from(&name).as_str(), name.to_string());
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'a> From<&'a str> for JobRef<'a> {
    fn from(s: &'a str) -> Self {
        JobRef(Cow::Borrowed(s))
    }
}

impl<'a> From<&'a String> for JobRef<'a> {
    fn from(s: &'a String) -> Self {
        JobRef(Cow::Borrowed(s))
    }
}

impl From<String> for JobRef<'static> {
    fn from(s: String) -> Self {
        JobRef(Cow::Owned(s))
    }
}

impl From<JobName> for JobRef<'static> {
    fn from(n: JobName) -> Self {
        JobRef(Cow::Owned(n.to_string()))
    }
}

impl From<&JobName> for JobRef<'static> {
    fn from(n: &JobName) -> Self {
        JobRef(Cow::Owned(n.to_string()))
    }
}

impl<'a> From<&'a Job> for JobRef<'a> {
    fn from(job: &'a Job) -> Self {
        JobRef(Cow::Borrowed(job.name()))
    }
}

impl<'a> From<&'a JobRef<'_>> for JobRef<'a> {
    fn from(r: &'a JobRef<'_>) -> Self {
        JobRef(Cow::Borrowed(r.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_twelve_states_round_trip_and_exactly_five_are_terminal() {
        let terminal: Vec<i32> = (0..12)
            .filter(|v| JobState::from_proto(*v).is_terminal())
            .collect();
        assert_eq!(terminal, vec![4, 5, 7, 9, 11]);
        for v in 0..12 {
            assert_eq!(JobState::from_proto(v).to_proto() as i32, v);
        }
        assert_eq!(JobState::from_proto(99), JobState::Unrecognized(99));
        assert_eq!(JobState::from_proto(99).to_wire(), 99);
        assert_eq!(
            JobState::from_proto(99).to_string(),
            "JOB_STATE_UNRECOGNIZED(99)"
        );
        assert!(!JobState::from_proto(99).is_terminal());
    }

    #[test]
    fn output_location_reads_bigquery_table() {
        let raw = pb::BatchPredictionJob {
            output_info: Some(pb::batch_prediction_job::OutputInfo {
                bigquery_output_table: "predictions_1".into(),
                output_location: Some(output_info::OutputLocation::BigqueryOutputDataset(
                    "bq://p.d".into(),
                )),
            }),
            ..Default::default()
        };
        let loc = Job::from(raw).output_location().unwrap();
        assert_eq!(loc.uri(), "bq://p.d.predictions_1");
        assert_eq!(loc.bigquery().unwrap().table(), Some("predictions_1"));
    }

    #[test]
    fn states_parse_by_api_and_short_name_in_any_case() {
        for st in KNOWN_STATES {
            let api = st.as_str();
            let short = api.strip_prefix("JOB_STATE_").unwrap();
            for text in [
                api.to_owned(),
                api.to_ascii_lowercase(),
                short.to_owned(),
                short.to_ascii_lowercase(),
            ] {
                assert_eq!(text.parse::<JobState>(), Ok(st), "{text}");
            }
        }
        for bad in [
            "",
            "unspecified",
            "JOB_STATE_UNSPECIFIED",
            "JOB_STATE_UNRECOGNIZED",
            "JOB_STATE_",
            " running",
            "sleeping",
        ] {
            let err = bad.parse::<JobState>().unwrap_err();
            assert_eq!(err.field(), "state");
            assert!(err.message().contains("is not a job state"), "{err}");
            assert!(err.message().contains("partially_succeeded"), "{err}");
        }
    }

    #[test]
    fn times_format_as_the_json_form_writes_them() {
        let t = Some(pbjson_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5_000,
        });
        let job = Job::from(pb::BatchPredictionJob {
            create_time: t,
            ..Default::default()
        });
        let created = job.create_time().map(format_rfc3339);
        assert_eq!(created.as_deref(), Some("2023-11-14T22:13:20.000005+00:00"));
        assert_eq!(job.to_json()["createTime"].as_str(), created.as_deref());
    }
}

#[cfg(test)]
mod prop_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any text: no panic, and only a known state parses.
        #[test]
        fn state_parsing_never_panics(s in "(?i)(job_state_)?[a-z_]{0,24}|.{0,40}") {
            if let Ok(st) = s.parse::<JobState>() {
                prop_assert!(KNOWN_STATES.contains(&st));
            }
        }

        /// A state's names parse back to it, whatever their case.
        #[test]
        fn states_round_trip(i in 0..KNOWN_STATES.len(), lower in any::<bool>(), short in any::<bool>()) {
            let st = KNOWN_STATES[i];
            let mut text = st.as_str().to_owned();
            if short {
                text = text["JOB_STATE_".len()..].to_owned();
            }
            if lower {
                text = text.to_ascii_lowercase();
            }
            prop_assert_eq!(text.parse::<JobState>(), Ok(st));
            prop_assert_eq!(st.to_string().parse::<JobState>(), Ok(st));
        }

        /// A job's times format as its JSON form holds them.
        #[test]
        fn job_times_format_as_json(seconds in 0i64..253_402_300_800, nanos in 0i32..1_000_000_000) {
            let job = Job::from(pb::BatchPredictionJob {
                end_time: Some(pbjson_types::Timestamp { seconds, nanos }),
                ..Default::default()
            });
            let ended = job.end_time().map(format_rfc3339);
            let json = job.to_json();
            prop_assert_eq!(json["endTime"].as_str(), ended.as_deref());
        }
    }
}
