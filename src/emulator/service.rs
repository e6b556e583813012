//! The gRPC face of the emulator: `JobService` (batch prediction methods;
//! every other method answers `UNIMPLEMENTED`),
//! `google.longrunning.Operations/GetOperation` and
//! `LlmUtilityService/CountTokens` (counted by the emulator's model).

use std::sync::Arc;

use percent_encoding::percent_decode_str;
use tonic::{Request, Response, Status};

use super::{
    filter::Filter,
    state::{EmuState, JobRecord, JobSlot, OpRecord},
};
use crate::{
    error::service::{status_with_details, StatusDetail},
    names::{check_model_resource, JobName, LocationName},
    proto::{
        aiplatform::{
            self as pb,
            batch_prediction_job::{input_config, output_config},
            job_service_server::JobService,
            llm_utility_service_server::LlmUtilityService,
        },
        longrunning::{self, operations_server::Operations},
        rpc::{bad_request::FieldViolation, BadRequest},
    },
    uri::{BigQueryUri, GcsUri},
};

/// Default and largest page sizes of ListBatchPredictionJobs.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// The emulator's service implementation (both services share it).
#[derive(Clone)]
pub(crate) struct EmulatorService {
    pub(crate) state: Arc<EmuState>,
}

fn invalid(violations: Vec<(&str, String)>) -> Status {
    let message = violations
        .iter()
        .map(|(f, d)| format!("{f}: {d}"))
        .collect::<Vec<_>>()
        .join("; ");
    status_with_details(
        tonic::Code::InvalidArgument,
        format!("invalid request: {message}"),
        &[StatusDetail::BadRequest(BadRequest {
            field_violations: violations
                .into_iter()
                .map(|(field, description)| FieldViolation {
                    field: field.to_owned(),
                    description,
                    ..Default::default()
                })
                .collect(),
        })],
    )
}

impl EmulatorService {
    /// Common to every RPC: log, inject faults, check the routing header.
    fn begin<T>(
        &self,
        method: &str,
        req: &Request<T>,
        key: &str,
        value: &str,
    ) -> Result<(), Status> {
        tracing::info!(method, resource = value, "rpc");
        self.state.count_rpc(method);
        if self.state.knobs.inject_unavailable() {
            tracing::info!(method, "injected UNAVAILABLE");
            return Err(Status::unavailable("emulator: injected UNAVAILABLE"));
        }
        if key.is_empty() {
            return Ok(());
        }
        let Some(header) = req.metadata().get("x-goog-request-params") else {
            return Ok(());
        };
        let header = header
            .to_str()
            .map_err(|_| invalid(vec![("x-goog-request-params", "not ASCII".into())]))?;
        for pair in header.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            // Compared byte by byte as it decodes: nothing is allocated
            // unless it differs.
            if k == key && !percent_decode_str(v).eq(value.bytes()) {
                let decoded = percent_decode_str(v).decode_utf8_lossy();
                return Err(invalid(vec![(
                    key,
                    format!(
                        "the request's {key} {value:?} does not match the routing header's {decoded:?}"
                    ),
                )]));
            }
        }
        Ok(())
    }

    fn find(&self, name: &str) -> Result<(JobName, Arc<JobSlot>), Status> {
        let job: JobName = name
            .parse()
            .map_err(|e: crate::error::ValidationError| invalid(vec![("name", e.to_string())]))?;
        let id: u64 = job
            .id()
            .parse()
            .map_err(|_| Status::not_found(format!("{name} not found")))?;
        let slot = self
            .state
            .get(id)
            .filter(|s| s.lock().job.name == name)
            .ok_or_else(|| Status::not_found(format!("BatchPredictionJob {name} not found")))?;
        Ok((job, slot))
    }
}

const INSTANCES_FORMAT: &str = "batch_prediction_job.input_config.instances_format";
const PREDICTIONS_FORMAT: &str = "batch_prediction_job.output_config.predictions_format";

type Violations = Vec<(&'static str, String)>;

/// A format that must match its source or destination kind.
fn check_format(v: &mut Violations, field: &'static str, actual: &str, expected: &str, kind: &str) {
    if actual != expected {
        v.push((
            field,
            format!("{actual:?} does not match a {kind}; use \"{expected}\""),
        ));
    }
}

/// A URI that must parse.
fn check_uri<T, E: std::fmt::Display>(
    v: &mut Violations,
    field: &'static str,
    parsed: std::result::Result<T, E>,
) {
    if let Err(e) = parsed {
        v.push((field, e.to_string()));
    }
}

/// Checks a create request like the service does, collecting every violation.
fn validate_create(
    parent: &str,
    job: Option<&pb::BatchPredictionJob>,
) -> Result<(LocationName, pb::BatchPredictionJob), Status> {
    let mut v: Violations = Vec::new();
    let parent = match parent.parse::<LocationName>() {
        Ok(p) => Some(p),
        Err(e) => {
            v.push(("parent", e.to_string()));
            None
        }
    };
    let Some(job) = job else {
        v.push(("batch_prediction_job", "required".into()));
        return Err(invalid(v));
    };
    if job.display_name.trim().is_empty() {
        v.push(("batch_prediction_job.display_name", "required".into()));
    }
    if job.model.is_empty() {
        v.push(("batch_prediction_job.model", "required".into()));
    } else if let Err(e) = check_model_resource(&job.model) {
        v.push(("batch_prediction_job.model", e.message().to_owned()));
    }
    match &job.input_config {
        None => v.push(("batch_prediction_job.input_config", "required".into())),
        Some(ic) => match &ic.source {
            Some(input_config::Source::GcsSource(g)) => {
                check_format(
                    &mut v,
                    INSTANCES_FORMAT,
                    &ic.instances_format,
                    "jsonl",
                    "gcs_source",
                );
                if g.uris.is_empty() {
                    v.push((
                        "batch_prediction_job.input_config.gcs_source.uris",
                        "required".into(),
                    ));
                }
                for u in &g.uris {
                    check_uri(
                        &mut v,
                        "batch_prediction_job.input_config.gcs_source.uris",
                        GcsUri::parse_field(u, "uris"),
                    );
                }
            }
            Some(input_config::Source::BigquerySource(b)) => {
                check_format(
                    &mut v,
                    INSTANCES_FORMAT,
                    &ic.instances_format,
                    "bigquery",
                    "bigquery_source",
                );
                check_uri(
                    &mut v,
                    "batch_prediction_job.input_config.bigquery_source.input_uri",
                    BigQueryUri::parse_field(&b.input_uri, "input_uri", true),
                );
            }
            Some(input_config::Source::VertexMultimodalDatasetSource(_)) => v.push((
                "batch_prediction_job.input_config",
                "the emulator supports gcs_source and bigquery_source".into(),
            )),
            None => v.push((
                "batch_prediction_job.input_config.source",
                "required".into(),
            )),
        },
    }
    match &job.output_config {
        None => v.push(("batch_prediction_job.output_config", "required".into())),
        Some(oc) => match &oc.destination {
            Some(output_config::Destination::GcsDestination(g)) => {
                check_format(
                    &mut v,
                    PREDICTIONS_FORMAT,
                    &oc.predictions_format,
                    "jsonl",
                    "gcs_destination",
                );
                check_uri(
                    &mut v,
                    "batch_prediction_job.output_config.gcs_destination.output_uri_prefix",
                    GcsUri::parse_field(&g.output_uri_prefix, "output_uri_prefix"),
                );
            }
            Some(output_config::Destination::BigqueryDestination(b)) => {
                check_format(
                    &mut v,
                    PREDICTIONS_FORMAT,
                    &oc.predictions_format,
                    "bigquery",
                    "bigquery_destination",
                );
                check_uri(
                    &mut v,
                    "batch_prediction_job.output_config.bigquery_destination.output_uri",
                    BigQueryUri::parse_field(&b.output_uri, "output_uri", false),
                );
            }
            Some(output_config::Destination::VertexMultimodalDatasetDestination(_)) => v.push((
                "batch_prediction_job.output_config",
                "the emulator supports gcs_destination and bigquery_destination".into(),
            )),
            None => v.push((
                "batch_prediction_job.output_config.destination",
                "required".into(),
            )),
        },
    }
    let labels: std::collections::BTreeMap<String, String> = job
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Err(e) = crate::spec::check_labels(&labels) {
        v.push(("batch_prediction_job.labels", e.to_string()));
    }
    match (v.is_empty(), parent) {
        (true, Some(p)) => Ok((p, job.clone())),
        _ => Err(invalid(v)),
    }
}

#[tonic::async_trait]
impl JobService for EmulatorService {
    async fn create_batch_prediction_job(
        &self,
        request: Request<pb::CreateBatchPredictionJobRequest>,
    ) -> Result<Response<pb::BatchPredictionJob>, Status> {
        let parent = request.get_ref().parent.clone();
        self.begin("CreateBatchPredictionJob", &request, "parent", &parent)?;
        let req = request.into_inner();
        let (parent, mut job) = validate_create(&req.parent, req.batch_prediction_job.as_ref())?;
        if self.state.knobs.take_refused_create() {
            return Err(Status::resource_exhausted(
                "Quota exceeded for aiplatform.googleapis.com/concurrent_batch_prediction_jobs",
            ));
        }
        let id = self.state.next_id();
        let now = self.state.clock.now_ts();
        job.name = format!("{parent}/batchPredictionJobs/{id}");
        job.state = pb::JobState::Pending as i32;
        job.create_time = Some(now);
        job.update_time = Some(now);
        job.start_time = None;
        job.end_time = None;
        job.error = None;
        job.output_info = None;
        job.completion_stats = None;
        job.partial_failures.clear();
        job.model_version_id = String::new();
        let slot = Arc::new(JobSlot::new(
            id,
            JobRecord {
                job: job.clone(),
                partial_output: None,
                output_claim: None,
                output_published: false,
            },
        ));
        self.state
            .persist_durably(&slot)
            .await
            .map_err(|e| Status::internal(format!("emulator could not store the job: {e}")))?;
        self.state.insert(slot.clone());
        super::runner::spawn(&self.state, slot, false);
        tracing::info!(job = %job.name, model = %job.model, "job created");
        if self.state.knobs.take_lost_create() {
            tracing::info!(job = %job.name, "answering UNAVAILABLE after commit (lost response)");
            return Err(Status::unavailable(
                "emulator: response lost after the job was created",
            ));
        }
        Ok(Response::new(job))
    }

    async fn get_batch_prediction_job(
        &self,
        request: Request<pb::GetBatchPredictionJobRequest>,
    ) -> Result<Response<pb::BatchPredictionJob>, Status> {
        let name = request.get_ref().name.clone();
        self.begin("GetBatchPredictionJob", &request, "name", &name)?;
        let (_, slot) = self.find(&name)?;
        Ok(Response::new(slot.snapshot()))
    }

    async fn list_batch_prediction_jobs(
        &self,
        request: Request<pb::ListBatchPredictionJobsRequest>,
    ) -> Result<Response<pb::ListBatchPredictionJobsResponse>, Status> {
        let parent = request.get_ref().parent.clone();
        self.begin("ListBatchPredictionJobs", &request, "parent", &parent)?;
        let req = request.into_inner();
        let parent: LocationName = req
            .parent
            .parse()
            .map_err(|e: crate::error::ValidationError| invalid(vec![("parent", e.to_string())]))?;
        let filter =
            Filter::parse(&req.filter).map_err(|e| invalid(vec![("filter", e.message)]))?;
        let page_size = match req.page_size {
            n if n < 0 => return Err(invalid(vec![("page_size", "must not be negative".into())])),
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        let after: Option<u64> = if req.page_token.is_empty() {
            None
        } else {
            Some(
                req.page_token
                    .strip_prefix("after-")
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        invalid(vec![(
                            "page_token",
                            "not a token this server issued".into(),
                        )])
                    })?,
            )
        };
        let prefix = format!("{parent}/batchPredictionJobs/");
        let mut jobs = Vec::with_capacity(page_size);
        let mut next_page_token = String::new();
        for slot in self.state.all_newest_first() {
            if after.is_some_and(|a| slot.id >= a) {
                continue;
            }
            let job = slot.snapshot();
            if !job.name.starts_with(&prefix) || !filter.matches(&job) {
                continue;
            }
            if jobs.len() == page_size {
                next_page_token = format!("after-{}", jobs_last_id(&jobs));
                break;
            }
            jobs.push(job);
        }
        Ok(Response::new(pb::ListBatchPredictionJobsResponse {
            batch_prediction_jobs: jobs,
            next_page_token,
        }))
    }

    async fn cancel_batch_prediction_job(
        &self,
        request: Request<pb::CancelBatchPredictionJobRequest>,
    ) -> Result<Response<pbjson_types::Empty>, Status> {
        let name = request.get_ref().name.clone();
        self.begin("CancelBatchPredictionJob", &request, "name", &name)?;
        let (_, slot) = self.find(&name)?;
        {
            let mut rec = slot.lock();
            let state = crate::job::JobState::from_proto(rec.job.state);
            if state.is_terminal() {
                return Err(Status::failed_precondition(format!(
                    "BatchPredictionJob {name} has already ended ({state}) and cannot be cancelled"
                )));
            }
            rec.job.state = pb::JobState::Cancelling as i32;
            rec.job.update_time = Some(self.state.clock.now_ts());
        }
        self.state
            .persist_durably(&slot)
            .await
            .map_err(|e| Status::internal(format!("emulator could not store the job: {e}")))?;
        slot.request_cancel();
        Ok(Response::new(pbjson_types::Empty {}))
    }

    async fn delete_batch_prediction_job(
        &self,
        request: Request<pb::DeleteBatchPredictionJobRequest>,
    ) -> Result<Response<longrunning::Operation>, Status> {
        let name = request.get_ref().name.clone();
        self.begin("DeleteBatchPredictionJob", &request, "name", &name)?;
        let (job_name, slot) = self.find(&name)?;
        let state = crate::job::JobState::from_proto(slot.lock().job.state);
        if !state.is_terminal() {
            return Err(Status::failed_precondition(format!(
                "BatchPredictionJob {name} is {state}; cancel it and wait for it to end before deleting it"
            )));
        }
        self.state
            .remove(slot.id)
            .map_err(|e| Status::internal(format!("emulator could not delete the job: {e}")))?;
        let now = self.state.clock.now();
        let op = OpRecord {
            name: format!("{}/operations/{}", job_name.parent(), self.state.next_id()),
            create_time: now,
            done_at: now
                .checked_add(self.state.knobs.values().delete_delay)
                .unwrap_or(now),
        };
        self.state.add_op(op.clone()).map_err(|e| {
            Status::internal(format!("emulator could not store the operation: {e}"))
        })?;
        Ok(Response::new(self.state.op_proto(&op)))
    }
}

fn jobs_last_id(jobs: &[pb::BatchPredictionJob]) -> u64 {
    jobs.last()
        .and_then(|j| j.name.rsplit('/').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or(0)
}

#[tonic::async_trait]
impl Operations for EmulatorService {
    async fn get_operation(
        &self,
        request: Request<longrunning::GetOperationRequest>,
    ) -> Result<Response<longrunning::Operation>, Status> {
        let name = request.get_ref().name.clone();
        // Not checked against the routing header: Node's client re-sends the
        // Delete call's header (the job's name) on GetOperation.
        self.begin("GetOperation", &request, "", &name)?;
        let op = self
            .state
            .op(&name)
            .ok_or_else(|| Status::not_found(format!("operation {name} not found")))?;
        Ok(Response::new(self.state.op_proto(&op)))
    }
}

/// Checks a CountTokens `endpoint` (or `model`): a publisher model
/// `projects/P/locations/L/publishers/X/models/M`, or for `endpoint` also
/// an endpoint `projects/P/locations/L/endpoints/E`.
fn check_count_target(v: &mut Violations, field: &'static str, name: &str, endpoints_ok: bool) {
    let parts: Vec<&str> = name.splitn(5, '/').collect();
    let (location, rest) = match parts.as_slice() {
        ["projects", p, "locations", l, rest] => (format!("projects/{p}/locations/{l}"), *rest),
        _ => {
            v.push((
                field,
                format!("{name:?} is not projects/P/locations/L/publishers/PUBLISHER/models/MODEL"),
            ));
            return;
        }
    };
    if let Err(e) = location.parse::<LocationName>() {
        v.push((field, e.to_string()));
        return;
    }
    let endpoint = rest
        .strip_prefix("endpoints/")
        .is_some_and(|id| endpoints_ok && !id.is_empty() && !id.contains('/'));
    if !endpoint && (!rest.starts_with("publishers/") || check_model_resource(rest).is_err()) {
        v.push((
            field,
            format!("{name:?} names no publisher model (…/publishers/PUBLISHER/models/MODEL)"),
        ));
    }
}

#[tonic::async_trait]
impl LlmUtilityService for EmulatorService {
    /// Counts the text parts of `contents` with the emulator's tokeniser, as
    /// the model counts `usageMetadata.promptTokenCount` for the same
    /// request (the system instruction and tools, which the model does not
    /// count either, are checked but not counted).
    async fn count_tokens(
        &self,
        request: Request<pb::CountTokensRequest>,
    ) -> Result<Response<pb::CountTokensResponse>, Status> {
        let endpoint = request.get_ref().endpoint.clone();
        self.begin("CountTokens", &request, "endpoint", &endpoint)?;
        let req = request.into_inner();
        let mut v: Violations = Vec::new();
        if req.endpoint.is_empty() {
            v.push(("endpoint", "required".into()));
        } else {
            check_count_target(&mut v, "endpoint", &req.endpoint, true);
        }
        if !req.model.is_empty() {
            check_count_target(&mut v, "model", &req.model, false);
        }
        if req.contents.is_empty() {
            let why = if req.instances.is_empty() {
                "required"
            } else {
                "required (the emulator does not count `instances`)"
            };
            v.push(("contents", why.into()));
        }
        if req.contents.iter().any(|c| c.parts.is_empty()) {
            v.push((
                "contents.parts",
                "every content needs at least one part".into(),
            ));
        }
        if req
            .contents
            .iter()
            .flat_map(|c| &c.parts)
            .any(|p| p.data.is_none())
        {
            v.push(("contents.parts", "a part holds no data".into()));
        }
        if !v.is_empty() {
            return Err(invalid(v));
        }
        let texts = || {
            req.contents
                .iter()
                .flat_map(|c| &c.parts)
                .filter_map(|p| match &p.data {
                    Some(pb::part::Data::Text(t)) => Some(t.as_str()),
                    _ => None,
                })
        };
        let saturate = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
        Ok(Response::new(pb::CountTokensResponse {
            total_tokens: saturate(super::model::count_tokens(texts())),
            total_billable_characters: saturate(super::model::billable_characters(texts())),
            prompt_tokens_details: Vec::new(),
        }))
    }
}
