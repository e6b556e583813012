//! [`JobSpec`]: what to submit, built the way Google's samples build a
//! `BatchPredictionJob`, validated before anything reaches the network.

use std::{collections::BTreeMap, fmt, sync::Arc, time::SystemTime};

use serde_json::{Map, Value};

use crate::{
    error::{Error, Result},
    names::LocationName,
    proto::aiplatform::{
        self as pb,
        batch_prediction_job::{input_config, output_config, InputConfig, OutputConfig},
    },
    time,
    uri::{InputSource, OutputDestination},
};

/// The most labels a resource may carry.
///
/// ```
/// use vertex_batch::{spec::MAX_LABELS, JobSpec, LocationName};
/// let parent = LocationName::new("p", "us-central1")?;
/// let mut spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
/// for i in 0..=MAX_LABELS {
///     spec = spec.label(format!("l{i}"), "x");
/// }
/// assert!(spec.to_request(&parent).is_err());
/// # Ok::<_, vertex_batch::Error>(())
/// ```
pub const MAX_LABELS: usize = 64;

/// The label that carries the request key. Its name uses underscores, so
/// every AIP-160 filter parser accepts `labels.vertex_batch_request_key`.
///
/// ```
/// use vertex_batch::{spec::REQUEST_KEY_LABEL, JobSpec};
/// let spec = JobSpec::new("gemini-2.0-flash-001").request_key("nightly-2026-11-22");
/// assert_eq!(spec.labels()[REQUEST_KEY_LABEL], "nightly-2026-11-22");
/// ```
pub const REQUEST_KEY_LABEL: &str = "vertex_batch_request_key";

/// The label that carries a fingerprint of the job spec, so a request key
/// reused for a different spec is caught instead of answered with the
/// earlier job. [`crate::Client::submit`] sets it; it is read back from the
/// job found by key.
///
/// ```no_run
/// # async fn demo(client: vertex_batch::Client, spec: vertex_batch::JobSpec) -> vertex_batch::Result<()> {
/// use vertex_batch::spec::SPEC_LABEL;
/// let job = client.submit(&spec.request_key("k1")).await?;
/// println!("spec fingerprint {}", job.labels()[SPEC_LABEL]);
/// # Ok(()) }
/// ```
pub const SPEC_LABEL: &str = "vertex_batch_spec";

type Customizer = Arc<dyn Fn(&mut pb::BatchPredictionJob) + Send + Sync>;

/// A batch prediction job to submit.
///
/// Required: a model (positional), an input and an output. Everything else is
/// optional and fluent. Nothing is checked until [`JobSpec::to_request`]
/// (called by [`crate::Client::create`]), which returns an
/// [`Error::Validation`] naming the field at fault; building never panics.
///
/// ```
/// use serde_json::json;
/// use vertex_batch::{JobSpec, LocationName};
///
/// let spec = JobSpec::new("gemini-2.0-flash-001")
///     .display_name("batch-predict-gcs-test-001")
///     .input("gs://cloud-samples-data/batch/prompt_for_batch_gemini_predict.jsonl")
///     .output("gs://my-bucket/results")
///     .model_parameters(json!({"temperature": 0.2, "maxOutputTokens": 200}))
///     .label("team", "search");
/// let req = spec.to_request(&LocationName::new("my-project", "us-central1")?)?;
/// let job = req.batch_prediction_job.unwrap();
/// assert_eq!(job.model, "publishers/google/models/gemini-2.0-flash-001");
/// assert_eq!(job.input_config.unwrap().instances_format, "jsonl");
/// # Ok::<_, vertex_batch::Error>(())
/// ```
#[derive(Clone)]
pub struct JobSpec {
    model: String,
    display_name: Option<String>,
    inputs: Vec<String>,
    output: Option<String>,
    parameters: Option<Value>,
    labels: BTreeMap<String, String>,
    service_account: Option<String>,
    encryption_key: Option<String>,
    customizers: Vec<Customizer>,
}

impl fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobSpec")
            .field("model", &self.model)
            .field("display_name", &self.display_name)
            .field("inputs", &self.inputs)
            .field("output", &self.output)
            .field("parameters", &self.parameters)
            .field("labels", &self.labels)
            .field("service_account", &self.service_account)
            .field("encryption_key", &self.encryption_key)
            .field("customizers", &self.customizers.len())
            .finish()
    }
}

impl JobSpec {
    /// A job for `model`: a Gemini id (`gemini-2.0-flash-001`), `models/ID`,
    /// `publishers/P/models/M[@version]` or a tuned model
    /// `projects/P/locations/L/models/ID`.
    ///
    /// ```
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
    /// let job = spec.to_request(&LocationName::new("p", "us-central1")?)?.batch_prediction_job.unwrap();
    /// assert_eq!(job.model, "publishers/google/models/gemini-2.0-flash-001");
    /// assert!(job.display_name.starts_with("vertex-batch-gemini-2-0-flash-001-"));
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn new(model: impl Into<String>) -> Self {
        JobSpec {
            model: model.into(),
            display_name: None,
            inputs: Vec::new(),
            output: None,
            parameters: None,
            labels: BTreeMap::new(),
            service_account: None,
            encryption_key: None,
            customizers: Vec::new(),
        }
    }

    /// The model, as given.
    pub(crate) fn model(&self) -> &str {
        &self.model
    }

    /// The display name (default: `vertex-batch-<model id>-<UTC timestamp>`).
    ///
    /// ```
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
    /// let req = spec.display_name("nightly-summaries").to_request(&LocationName::new("p", "us-central1")?)?;
    /// assert_eq!(req.batch_prediction_job.unwrap().display_name, "nightly-summaries");
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Adds an input URI: `gs://bucket/file.jsonl` (repeatable, wildcards
    /// allowed) or one `bq://project.dataset.table`.
    ///
    /// ```
    /// use vertex_batch::proto::aiplatform::batch_prediction_job::input_config::Source;
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/a.jsonl").output("gs://bkt/out");
    /// let job = spec.to_request(&LocationName::new("p", "us-central1")?)?.batch_prediction_job.unwrap();
    /// let Some(Source::GcsSource(src)) = job.input_config.unwrap().source else { panic!("not GCS") };
    /// assert_eq!(src.uris, ["gs://bkt/a.jsonl"]);
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn input(mut self, uri: impl Into<String>) -> Self {
        self.inputs.push(uri.into());
        self
    }

    /// Adds several input URIs.
    ///
    /// ```
    /// use vertex_batch::proto::aiplatform::batch_prediction_job::input_config::Source;
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").inputs(["gs://bkt/a.jsonl", "gs://bkt/b/*.jsonl"]);
    /// let job = spec.output("gs://bkt/out").to_request(&LocationName::new("p", "us-central1")?)?.batch_prediction_job.unwrap();
    /// let Some(Source::GcsSource(src)) = job.input_config.unwrap().source else { panic!("not GCS") };
    /// assert_eq!(src.uris, ["gs://bkt/a.jsonl", "gs://bkt/b/*.jsonl"]);
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn inputs<I, S>(mut self, uris: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inputs.extend(uris.into_iter().map(Into::into));
        self
    }

    /// The output: `gs://bucket/prefix`, `bq://project.dataset` or
    /// `bq://project.dataset.table`.
    ///
    /// ```
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("bq://p.results");
    /// let job = spec.to_request(&LocationName::new("p", "us-central1")?)?.batch_prediction_job.unwrap();
    /// assert_eq!(job.output_config.unwrap().predictions_format, "bigquery");
    /// assert!(JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").to_request(&LocationName::new("p", "us-central1")?).is_err());
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn output(mut self, uri: impl Into<String>) -> Self {
        self.output = Some(uri.into());
        self
    }

    /// Model parameters as a JSON object, e.g.
    /// `json!({"temperature": 0.2, "maxOutputTokens": 200})`. Replaces any
    /// set before; the typed setters below add to it.
    ///
    /// ```
    /// use serde_json::json;
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
    /// let req = spec.model_parameters(json!({"maxOutputTokens": 200})).to_request(&LocationName::new("p", "us-central1")?)?;
    /// let params = serde_json::to_value(req.batch_prediction_job.unwrap().model_parameters).unwrap();
    /// assert_eq!(params["maxOutputTokens"], 200.0);
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn model_parameters(mut self, params: Value) -> Self {
        self.parameters = Some(params);
        self
    }

    /// Sets one model parameter (camelCase key, as the API spells it).
    ///
    /// ```
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
    /// let req = spec.parameter("candidateCount", 2).to_request(&LocationName::new("p", "us-central1")?)?;
    /// let params = serde_json::to_value(req.batch_prediction_job.unwrap().model_parameters).unwrap();
    /// assert_eq!(params["candidateCount"], 2.0);
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn parameter(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let key = key.into();
        let value = value.into();
        match &mut self.parameters {
            Some(Value::Object(map)) => {
                map.insert(key, value);
            }
            // A non-object stays as it is so that validation reports it.
            Some(_) => {}
            None => {
                let mut map = Map::new();
                map.insert(key, value);
                self.parameters = Some(Value::Object(map));
            }
        }
        self
    }

    /// `temperature`.
    ///
    /// ```
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
    /// let req = spec.temperature(0.2).to_request(&LocationName::new("p", "us-central1")?)?;
    /// let params = serde_json::to_value(req.batch_prediction_job.unwrap().model_parameters).unwrap();
    /// assert_eq!(params["temperature"], 0.2);
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn temperature(self, t: f64) -> Self {
        self.parameter("temperature", t)
    }

    /// `maxOutputTokens`.
    ///
    /// ```
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
    /// let req = spec.max_output_tokens(200).to_request(&LocationName::new("p", "us-central1")?)?;
    /// let params = serde_json::to_value(req.batch_prediction_job.unwrap().model_parameters).unwrap();
    /// assert_eq!(params["maxOutputTokens"], 200.0);
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn max_output_tokens(self, n: u32) -> Self {
        self.parameter("maxOutputTokens", n)
    }

    /// `topP`.
    ///
    /// ```
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
    /// let req = spec.top_p(0.95).to_request(&LocationName::new("p", "us-central1")?)?;
    /// let params = serde_json::to_value(req.batch_prediction_job.unwrap().model_parameters).unwrap();
    /// assert_eq!(params["topP"], 0.95);
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn top_p(self, p: f64) -> Self {
        self.parameter("topP", p)
    }

    /// `topK`.
    ///
    /// ```
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
    /// let req = spec.top_k(40).to_request(&LocationName::new("p", "us-central1")?)?;
    /// let params = serde_json::to_value(req.batch_prediction_job.unwrap().model_parameters).unwrap();
    /// assert_eq!(params["topK"], 40.0);
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn top_k(self, k: u32) -> Self {
        self.parameter("topK", k)
    }

    /// Adds a label (lowercase letters, digits, `_`, `-`, international
    /// characters; keys start with a letter; at most 64 characters each, at
    /// most 64 labels).
    ///
    /// ```
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
    /// let spec = spec.label("team", "search");
    /// assert_eq!(spec.labels()["team"], "search");
    /// assert!(spec.label("Team", "x").to_request(&LocationName::new("p", "us-central1")?).is_err()); // keys are lowercase
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The service account the job runs as.
    ///
    /// ```
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
    /// let sa = "batch@my-project.iam.gserviceaccount.com";
    /// let job = spec.clone().service_account(sa).to_request(&LocationName::new("p", "us-central1")?)?.batch_prediction_job.unwrap();
    /// assert_eq!(job.service_account, sa);
    /// assert!(spec.service_account("not-an-email").to_request(&LocationName::new("p", "us-central1")?).is_err());
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn service_account(mut self, email: impl Into<String>) -> Self {
        self.service_account = Some(email.into());
        self
    }

    /// A customer-managed encryption key
    /// (`projects/P/locations/L/keyRings/R/cryptoKeys/K`).
    ///
    /// ```
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
    /// let key = "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k";
    /// let job = spec.encryption_key(key).to_request(&LocationName::new("p", "us-central1")?)?.batch_prediction_job.unwrap();
    /// assert_eq!(job.encryption_spec.unwrap().kms_key_name, key);
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn encryption_key(mut self, kms_key_name: impl Into<String>) -> Self {
        self.encryption_key = Some(kms_key_name.into());
        self
    }

    /// Sets any other field of the proto after the spec is applied, e.g.
    /// `instance_config` or `dedicated_resources`.
    ///
    /// ```
    /// use vertex_batch::{JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
    /// let spec = spec.with_proto(|job| job.generate_explanation = true);
    /// let job = spec.to_request(&LocationName::new("p", "us-central1")?)?.batch_prediction_job.unwrap();
    /// assert!(job.generate_explanation);
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn with_proto(
        mut self,
        f: impl Fn(&mut pb::BatchPredictionJob) + Send + Sync + 'static,
    ) -> Self {
        self.customizers.push(Arc::new(f));
        self
    }

    /// Sets the request key [`crate::Client::submit`] uses to recognise the
    /// job after an ambiguous failure (the label `vertex_batch_request_key`;
    /// lowercase letters, digits, `_`, `-`). Reuse a key to make a submit
    /// idempotent across process restarts.
    ///
    /// ```
    /// use vertex_batch::JobSpec;
    /// let spec = JobSpec::new("gemini-2.0-flash-001").request_key("nightly-2026-11-22");
    /// assert_eq!(spec.labels()["vertex_batch_request_key"], "nightly-2026-11-22");
    /// ```
    pub fn request_key(self, key: impl Into<String>) -> Self {
        self.label(REQUEST_KEY_LABEL, key)
    }

    /// The labels set so far.
    ///
    /// ```
    /// use vertex_batch::JobSpec;
    /// let spec = JobSpec::new("gemini-2.0-flash-001").label("team", "search").label("env", "prod");
    /// let keys: Vec<&str> = spec.labels().keys().map(String::as_str).collect();
    /// assert_eq!(keys, ["env", "team"]);
    /// ```
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Validates the spec and builds the request for `parent`.
    ///
    /// ```
    /// use vertex_batch::{Error, JobSpec, LocationName};
    /// let spec = JobSpec::new("gemini-2.0-flash-001").input("gs://bkt/in.jsonl").output("gs://bkt/out");
    /// let req = spec.to_request(&LocationName::new("p", "us-central1")?)?;
    /// assert_eq!(req.parent, "projects/p/locations/us-central1");
    /// let err = JobSpec::new("gemini-2.0-flash-001").to_request(&LocationName::new("p", "us-central1")?).unwrap_err();
    /// assert!(matches!(err, Error::Validation(ref v) if v.field() == "input_uri"));
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn to_request(&self, parent: &LocationName) -> Result<pb::CreateBatchPredictionJobRequest> {
        self.build(parent, Defaults::Made)
    }

    /// The request as the caller asked for it: like [`JobSpec::to_request`]
    /// but a display name the caller did not set is left empty instead of
    /// made up (the made-up one carries the time). What a spec fingerprint
    /// is taken of, so the same spec gives the same fingerprint whenever
    /// it is built.
    pub(crate) fn to_request_as_asked(
        &self,
        parent: &LocationName,
    ) -> Result<pb::CreateBatchPredictionJobRequest> {
        self.build(parent, Defaults::Left)
    }

    /// Whether an input was set ([`JobSpec::input`]).
    pub(crate) fn has_input(&self) -> bool {
        !self.inputs.is_empty()
    }

    /// Whether an output was set ([`JobSpec::output`]).
    pub(crate) fn has_output(&self) -> bool {
        self.output.is_some()
    }

    fn build(
        &self,
        parent: &LocationName,
        defaults: Defaults,
    ) -> Result<pb::CreateBatchPredictionJobRequest> {
        let model = crate::family::qualify_model(&self.model)?;
        let family = crate::family::Family::of_qualified(&model);
        let input = InputSource::parse(&self.inputs)?;
        let output = OutputDestination::parse(self.output.as_deref().ok_or_else(|| {
            Error::validation(
                "output_uri",
                "no output given: use gs://bucket/prefix or bq://project.dataset[.table]",
            )
        })?)?;
        if parent.location() == "global"
            && (matches!(input, InputSource::BigQuery(_))
                || matches!(output, OutputDestination::BigQuery(_)))
        {
            return Err(Error::validation(
                "location",
                "the global endpoint does not support BigQuery input or output for batch jobs; \
                 use a region such as us-central1",
            ));
        }
        if parent.location() == "global" && !family.runs_global() {
            return Err(Error::validation(
                "location",
                format!(
                    "{model} is a Claude model: its batch jobs run in a region such as \
                     us-east5, not on the global endpoint"
                ),
            ));
        }
        if matches!(input, InputSource::BigQuery(_)) && !family.takes_bigquery() {
            return Err(Error::validation(
                "input_uri",
                format!(
                    "{model} is a Gemini embedding model: its batch jobs read Cloud Storage \
                     (gs://) input only, not BigQuery"
                ),
            ));
        }
        let display_name = match (&self.display_name, defaults) {
            (Some(n), _) => check_display_name(n)?,
            (None, Defaults::Made) => default_display_name(&model),
            (None, Defaults::Left) => String::new(),
        };
        check_labels(&self.labels)?;
        let model_parameters = self.parameters.as_ref().map(to_proto_value).transpose()?;
        if let Some(sa) = &self.service_account {
            if !looks_like_email(sa) {
                return Err(Error::validation(
                    "service_account",
                    format!("{sa:?} is not a service account email"),
                ));
            }
        }
        let encryption_spec = match &self.encryption_key {
            Some(key) => {
                check_kms_key(key)?;
                Some(pb::EncryptionSpec {
                    kms_key_name: key.clone(),
                })
            }
            None => None,
        };

        let input_config = InputConfig {
            instances_format: input.format().into(),
            source: Some(match input {
                InputSource::Gcs(uris) => input_config::Source::GcsSource(pb::GcsSource {
                    uris: uris.iter().map(ToString::to_string).collect(),
                }),
                InputSource::BigQuery(t) => {
                    input_config::Source::BigquerySource(pb::BigQuerySource {
                        input_uri: t.to_string(),
                    })
                }
            }),
        };
        let output_config = OutputConfig {
            predictions_format: output.format().into(),
            destination: Some(match output {
                OutputDestination::Gcs(g) => {
                    output_config::Destination::GcsDestination(pb::GcsDestination {
                        output_uri_prefix: g.to_string(),
                    })
                }
                OutputDestination::BigQuery(b) => {
                    output_config::Destination::BigqueryDestination(pb::BigQueryDestination {
                        output_uri: b.to_string(),
                    })
                }
            }),
        };
        let mut job = pb::BatchPredictionJob {
            display_name,
            model,
            model_parameters,
            input_config: Some(input_config),
            output_config: Some(output_config),
            labels: self.labels.clone().into_iter().collect(),
            service_account: self.service_account.clone().unwrap_or_default(),
            encryption_spec,
            // The older text-embedding models see the whole line as their
            // instance: the key field keeps the row key out of it and puts
            // it on the output line instead.
            instance_config: (family == crate::family::Family::TextEmbedding).then(|| {
                pb::batch_prediction_job::InstanceConfig {
                    key_field: "key".to_owned(),
                    ..Default::default()
                }
            }),
            ..Default::default()
        };
        for f in &self.customizers {
            f(&mut job);
        }
        Ok(pb::CreateBatchPredictionJobRequest {
            parent: parent.to_string(),
            batch_prediction_job: Some(job),
        })
    }
}

/// What [`JobSpec::build`] does with a field the caller left unset.
#[derive(Clone, Copy)]
enum Defaults {
    /// Makes the value the service needs (a display name).
    Made,
    /// Leaves it empty.
    Left,
}

fn default_display_name(model: &str) -> String {
    let id = model.rsplit('/').next().unwrap_or(model);
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "vertex-batch-{id}-{}",
        time::format_compact(SystemTime::now())
    )
}

fn check_display_name(name: &str) -> Result<String> {
    if name.trim().is_empty() {
        return Err(Error::validation("display_name", "must not be empty"));
    }
    if name.chars().count() > 128 {
        return Err(Error::validation(
            "display_name",
            "must be at most 128 characters",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::validation(
            "display_name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// Checks labels against the service's rules.
pub(crate) fn check_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::validation(
            "labels",
            format!(
                "{} labels given, at most {MAX_LABELS} allowed",
                labels.len()
            ),
        ));
    }
    for (k, v) in labels {
        check_label(k, v).map_err(|why| Error::validation("labels", why))?;
    }
    Ok(())
}

/// One label as the service accepts it: keys and values of at most 64
/// characters (code points) that are lowercase letters, digits, `_` or `-`,
/// international characters allowed; a key starts with a letter. The error
/// says what is wrong.
pub(crate) fn check_label(k: &str, v: &str) -> std::result::Result<(), String> {
    let letter = |c: char| c.is_ascii_lowercase() || (!c.is_ascii() && !c.is_uppercase());
    let ok = |s: &str| {
        s.chars().count() <= MAX_LABEL_CHARS
            && s.chars()
                .all(|c| letter(c) || c.is_ascii_digit() || c == '_' || c == '-')
    };
    if k.is_empty() || !k.starts_with(letter) || !ok(k) {
        return Err(format!(
            "key {k:?}: keys are 1-64 lowercase letters, digits, '_' or '-' \
             (international characters allowed), starting with a letter"
        ));
    }
    if !ok(v) {
        return Err(format!(
            "value {v:?} of key {k:?}: values are 0-64 lowercase letters, digits, '_' or '-' \
             (international characters allowed)"
        ));
    }
    Ok(())
}

/// The longest label key or value, in code points.
const MAX_LABEL_CHARS: usize = 64;

fn to_proto_value(params: &Value) -> Result<pbjson_types::Value> {
    if !params.is_object() {
        return Err(Error::validation(
            "model_parameters",
            format!("must be a JSON object such as {{\"temperature\": 0.2}}, got {params}"),
        ));
    }
    serde_json::from_value(params.clone())
        .map_err(|e| Error::validation("model_parameters", e.to_string()))
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty()
                && domain.contains('.')
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

fn check_kms_key(key: &str) -> Result<()> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["projects", p, "locations", l, "keyRings", r, "cryptoKeys", k]
            if [p, l, r, k].iter().all(|s| !s.is_empty()) =>
        {
            Ok(())
        }
        _ => Err(Error::validation(
            "encryption_key",
            format!("{key:?} is not of the form projects/P/locations/L/keyRings/R/cryptoKeys/K"),
        )),
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Labels: any key and value are judged without a panic, and what
        /// passes is what the service's rules allow.
        #[test]
        fn labels_never_panic(k in "[a-z_-]{0,70}|.{0,70}", v in "[a-z0-9_-]{0,70}|.{0,70}") {
            if check_label(&k, &v).is_ok() {
                proptest::prop_assert!(!k.is_empty() && k.chars().count() <= 64 && v.chars().count() <= 64);
            }
        }
    }

    use serde_json::json;

    use super::*;

    fn parent() -> LocationName {
        LocationName::new("p", "us-central1").unwrap()
    }

    fn field(spec: &JobSpec) -> String {
        match spec.to_request(&parent()) {
            Err(Error::Validation(v)) => v.field().to_owned(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn ok_spec() -> JobSpec {
        JobSpec::new("gemini-2.0-flash-001")
            .input("gs://bucket/in.jsonl")
            .output("gs://bucket/out")
    }

    #[test]
    fn family_rules_are_checked_before_the_network() {
        let global = LocationName::new("p", "global").unwrap();
        let claude = JobSpec::new("claude-sonnet-4-5@20250929")
            .input("gs://bucket/in.jsonl")
            .output("gs://bucket/out");
        match claude.to_request(&global) {
            Err(Error::Validation(v)) => assert_eq!(v.field(), "location"),
            other => panic!("{other:?}"),
        }
        let req = claude.to_request(&parent()).unwrap();
        let job = req.batch_prediction_job.unwrap();
        assert_eq!(
            job.model,
            "publishers/anthropic/models/claude-sonnet-4-5@20250929"
        );
        assert!(JobSpec::new("gemini-2.5-flash")
            .input("gs://bucket/i.jsonl")
            .output("gs://bucket/o")
            .to_request(&global)
            .is_ok());
        let bq = JobSpec::new("gemini-embedding-001")
            .input("bq://p.d.t")
            .output("bq://p.d");
        assert_eq!(field(&bq), "input_uri");
        let text = JobSpec::new("text-embedding-005")
            .input("gs://bucket/in.jsonl")
            .output("gs://bucket/out")
            .to_request(&parent())
            .unwrap()
            .batch_prediction_job
            .unwrap();
        assert_eq!(text.model, "publishers/google/models/text-embedding-005");
        assert_eq!(text.instance_config.unwrap().key_field, "key");
        assert_eq!(
            field(
                &JobSpec::new("acme-7b-maas")
                    .input("gs://bucket/i")
                    .output("gs://bucket/o")
            ),
            "model"
        );
    }

    #[test]
    fn every_validation_error_names_its_field() {
        assert_eq!(
            field(&ok_spec().model_parameters(json!([1, 2]))),
            "model_parameters"
        );
        assert_eq!(
            field(&ok_spec().model_parameters(json!(0.2))),
            "model_parameters"
        );
        assert_eq!(
            field(&JobSpec::new("").input("gs://bkt/x").output("gs://bkt/o")),
            "model"
        );
        assert_eq!(field(&JobSpec::new("m").output("gs://bkt/o")), "input_uri");
        assert_eq!(field(&JobSpec::new("m").input("gs://bkt/x")), "output_uri");
        assert_eq!(field(&ok_spec().input("bq://p.d.t")), "input_uri");
        assert_eq!(field(&ok_spec().label("Team", "x")), "labels");
        assert_eq!(field(&ok_spec().label("team", "X Y")), "labels");
        assert_eq!(field(&ok_spec().label("1team", "x")), "labels");
        assert_eq!(field(&ok_spec().label("k", "v".repeat(65))), "labels");
        assert_eq!(field(&ok_spec().label("Équipe", "x")), "labels");
        // International characters are allowed; 64 code points is the limit.
        for (k, v) in [
            ("équipe", "données"),
            ("チーム", "値"),
            ("k", &"é".repeat(64)),
        ] {
            assert!(
                ok_spec().label(k, v).to_request(&parent()).is_ok(),
                "{k}={v}"
            );
        }
        let many = (0..65).fold(ok_spec(), |s, i| s.label(format!("k{i}"), "v"));
        assert_eq!(field(&many), "labels");
        assert_eq!(field(&ok_spec().display_name("  ")), "display_name");
        assert_eq!(
            field(&ok_spec().service_account("nobody")),
            "service_account"
        );
        assert_eq!(field(&ok_spec().encryption_key("key-1")), "encryption_key");
        assert_eq!(
            field(&JobSpec::new("m").input("bq://p.d").output("gs://bkt/o")),
            "input_uri"
        );
        assert_eq!(
            field(&JobSpec::new("m").input("gs://bkt/x").output("bq://p")),
            "output_uri"
        );
        let global = LocationName::new("p", "global").unwrap();
        let bq = JobSpec::new("m").input("bq://p.d.t").output("bq://p.d");
        assert!(
            matches!(bq.to_request(&global), Err(Error::Validation(v)) if v.field() == "location")
        );
    }

    #[test]
    fn typed_parameters_merge_into_json_ones() {
        let req = ok_spec()
            .model_parameters(json!({"temperature": 0.2}))
            .max_output_tokens(200)
            .to_request(&parent())
            .unwrap();
        let job = req.batch_prediction_job.unwrap();
        let params = serde_json::to_value(job.model_parameters.unwrap()).unwrap();
        assert_eq!(
            params,
            json!({"temperature": 0.2, "maxOutputTokens": 200.0})
        );
        assert!(
            job.display_name
                .starts_with("vertex-batch-gemini-2-0-flash-001-"),
            "{}",
            job.display_name
        );
    }

    #[test]
    fn bigquery_in_and_out_set_formats_and_with_proto_applies_last() {
        let req = JobSpec::new("publishers/google/models/gemini-2.5-flash")
            .input("bq://storage-samples.generative_ai.batch_requests_for_multimodal_input")
            .output("bq://my-project.results")
            .with_proto(|j| j.disable_container_logging = true)
            .to_request(&parent())
            .unwrap();
        let job = req.batch_prediction_job.unwrap();
        assert_eq!(job.input_config.unwrap().instances_format, "bigquery");
        assert_eq!(job.output_config.unwrap().predictions_format, "bigquery");
        assert!(job.disable_container_logging);
    }
}
