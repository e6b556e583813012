//! A test-only JobService on 127.0.0.1:0 that records every request with its
//! metadata and answers from a script. Used where the emulator cannot help:
//! exact header capture with credentials, scripted error statuses, and
//! answers no real server would send.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use vertex_batch::proto::aiplatform::{
    self as pb,
    job_service_server::{JobService, JobServiceServer},
    llm_utility_service_server::{LlmUtilityService, LlmUtilityServiceServer},
};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: &'static str,
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
}

/// What the next call does before its normal behaviour.
enum Scripted {
    Fail(Status),
    /// Fails with the request's `authorization` header in the message (a
    /// careless server).
    EchoToken,
    /// Answers only after this long.
    Hang(std::time::Duration),
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    script: VecDeque<Scripted>,
    jobs: HashMap<String, pb::BatchPredictionJob>,
    next_id: u64,
    /// List pages answer `a`, `b`, `a`, … (a loop of two tokens) instead
    /// of echoing the token sent.
    cycle_tokens: bool,
}

#[derive(Clone, Default)]
pub struct Recorder {
    state: Arc<Mutex<State>>,
}

impl Recorder {
    /// Starts the server; the listener is bound before the task is spawned.
    pub async fn start() -> (Recorder, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorder = Recorder::default();
        let svc = JobServiceServer::new(recorder.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .add_service(LlmUtilityServiceServer::new(recorder.clone()))
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                ),
        );
        (recorder, addr)
    }

    /// Stores `job` under its name, as Get will answer it.
    pub fn put_job(&self, job: pb::BatchPredictionJob) {
        let mut st = self.state.lock().unwrap();
        st.jobs.insert(job.name.clone(), job);
    }

    /// Makes the next call fail with the caller's token in the message.
    pub fn push_echo_token(&self) {
        self.state
            .lock()
            .unwrap()
            .script
            .push_back(Scripted::EchoToken);
    }

    /// Queues a status to answer the next call with (before normal behaviour).
    pub fn push_error(&self, status: Status) {
        self.state
            .lock()
            .unwrap()
            .script
            .push_back(Scripted::Fail(status));
    }

    /// From now on, List pages loop over two tokens (`a` → `b` → `a` …).
    #[allow(dead_code)]
    pub fn cycle_list_tokens(&self) {
        self.state.lock().unwrap().cycle_tokens = true;
    }

    /// Makes the next call answer only after `delay`.
    #[allow(dead_code)]
    pub fn push_hang(&self, delay: std::time::Duration) {
        self.state
            .lock()
            .unwrap()
            .script
            .push_back(Scripted::Hang(delay));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    async fn record<T: serde::Serialize>(
        &self,
        method: &'static str,
        req: &Request<T>,
    ) -> Result<(), Status> {
        let headers = req
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = serde_json::to_value(req.get_ref()).unwrap();
        let next = {
            let mut st = self.state.lock().unwrap();
            st.requests.push(Recorded {
                method,
                headers,
                body,
            });
            st.script.pop_front()
        };
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        match next {
            Some(Scripted::Fail(status)) => Err(status),
            Some(Scripted::EchoToken) => Err(Status::permission_denied(format!(
                "credentials {auth} are not valid for this project"
            ))),
            Some(Scripted::Hang(delay)) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl JobService for Recorder {
    async fn create_batch_prediction_job(
        &self,
        request: Request<pb::CreateBatchPredictionJobRequest>,
    ) -> Result<Response<pb::BatchPredictionJob>, Status> {
        self.record("CreateBatchPredictionJob", &request).await?;
        let req = request.into_inner();
        let mut job = req.batch_prediction_job.unwrap_or_default();
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        job.name = format!("{}/batchPredictionJobs/{}", req.parent, 1000 + st.next_id);
        job.state = pb::JobState::Pending as i32;
        st.jobs.insert(job.name.clone(), job.clone());
        Ok(Response::new(job))
    }

    /// Answers no jobs and, as a broken server might, the page token it
    /// was sent (or `"again"`) as the next one.
    async fn list_batch_prediction_jobs(
        &self,
        request: Request<pb::ListBatchPredictionJobsRequest>,
    ) -> Result<Response<pb::ListBatchPredictionJobsResponse>, Status> {
        self.record("ListBatchPredictionJobs", &request).await?;
        let token = request.into_inner().page_token;
        let cycle = self.state.lock().unwrap().cycle_tokens;
        let next_page_token = match (cycle, token.as_str()) {
            (true, "a") => "b".into(),
            (true, _) => "a".into(),
            (false, "") => "again".into(),
            (false, _) => token,
        };
        Ok(Response::new(pb::ListBatchPredictionJobsResponse {
            batch_prediction_jobs: vec![],
            next_page_token,
        }))
    }

    async fn get_batch_prediction_job(
        &self,
        request: Request<pb::GetBatchPredictionJobRequest>,
    ) -> Result<Response<pb::BatchPredictionJob>, Status> {
        self.record("GetBatchPredictionJob", &request).await?;
        let name = request.into_inner().name;
        let st = self.state.lock().unwrap();
        st.jobs
            .get(&name)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("{name} not found")))
    }
}

#[tonic::async_trait]
impl LlmUtilityService for Recorder {
    /// Answers 10 tokens and 100 billable characters a content.
    async fn count_tokens(
        &self,
        request: Request<pb::CountTokensRequest>,
    ) -> Result<Response<pb::CountTokensResponse>, Status> {
        self.record("CountTokens", &request).await?;
        let n = request.get_ref().contents.len() as i32;
        Ok(Response::new(pb::CountTokensResponse {
            total_tokens: 10 * n,
            total_billable_characters: 100 * n,
            prompt_tokens_details: vec![],
        }))
    }
}
