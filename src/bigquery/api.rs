//! The BigQuery REST calls (API v2): datasets, tables, load jobs and
//! `tabledata.list`.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{stream::BoxStream, StreamExt};
use http::{header::CONTENT_TYPE, Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    client::{bq_error, BigQuery, DEFAULT_ENDPOINT},
    rows::{write_row_line, Field, RawRow},
};
use crate::{
    error::{Error, Result},
    storage::{retry::retrying, wire},
    uri::BigQueryUri,
};

/// Rows asked for per `tabledata.list` page (the service caps a page at
/// 10 MB whatever is asked).
const PAGE_ROWS: u32 = 10_000;

/// What the crate reads of a table.
///
/// ```
/// use vertex_batch::bigquery::TableInfo;
/// let t: TableInfo = serde_json::from_str(r#"{"numRows": "2", "schema": {"fields": [{"name": "key", "type": "STRING"}]}}"#).unwrap();
/// assert_eq!((t.rows(), t.schema().len()), (2, 1));
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableInfo {
    #[serde(default)]
    schema: Schema,
    #[serde(default)]
    num_rows: Option<Count>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    location: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Schema {
    #[serde(default)]
    fields: Vec<Field>,
}

/// An int64 the REST API sends as a string (a number is read too).
#[derive(Debug, Clone, Copy, Default)]
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(Count)
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a count"))),
            Value::String(s) => s.parse().map(Count).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("{other} is not a count"))),
        }
    }
}

impl TableInfo {
    /// The columns.
    ///
    /// ```
    /// # let t: vertex_batch::bigquery::TableInfo = serde_json::from_str(r#"{"schema": {"fields": [{"name": "key", "type": "STRING"}]}}"#).unwrap();
    /// assert_eq!(t.schema()[0].name, "key");
    /// ```
    pub fn schema(&self) -> &[Field] {
        &self.schema.fields
    }

    /// How many rows it holds (0 when the service does not say).
    ///
    /// ```
    /// # let t: vertex_batch::bigquery::TableInfo = serde_json::from_str(r#"{"numRows": "7"}"#).unwrap();
    /// assert_eq!(t.rows(), 7);
    /// ```
    pub fn rows(&self) -> u64 {
        self.num_rows.map_or(0, |c| c.0)
    }

    /// Its description.
    ///
    /// ```
    /// # let t: vertex_batch::bigquery::TableInfo = serde_json::from_str(r#"{"description": "prompts"}"#).unwrap();
    /// assert_eq!(t.description(), Some("prompts"));
    /// ```
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Its etag (changes with every change to the table).
    ///
    /// ```
    /// # let t: vertex_batch::bigquery::TableInfo = serde_json::from_str(r#"{"etag": "\"abc\""}"#).unwrap();
    /// assert_eq!(t.etag(), Some("\"abc\""));
    /// ```
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// Its location (`US`, `us-central1`, …), when the service says.
    ///
    /// ```
    /// # let t: vertex_batch::bigquery::TableInfo = serde_json::from_str(r#"{"location": "us-central1"}"#).unwrap();
    /// assert_eq!(t.location(), Some("us-central1"));
    /// ```
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }
}

/// A finished load job.
///
/// ```
/// use vertex_batch::bigquery::LoadJob;
/// let j: LoadJob = serde_json::from_str(r#"{"jobReference": {"jobId": "j1"}, "statistics": {"load": {"outputRows": "3"}}}"#).unwrap();
/// assert_eq!((j.id(), j.rows()), ("j1", 3));
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadJob {
    #[serde(default)]
    job_reference: JobReference,
    #[serde(default)]
    statistics: Option<Statistics>,
    #[serde(default)]
    status: Option<JobStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobReference {
    #[serde(default)]
    job_id: String,
    #[serde(default)]
    location: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Statistics {
    #[serde(default)]
    load: Option<LoadStatistics>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoadStatistics {
    #[serde(default)]
    output_rows: Option<Count>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobStatus {
    #[serde(default)]
    state: String,
    #[serde(default)]
    error_result: Option<JobError>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct JobError {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

impl LoadJob {
    /// The job's id.
    ///
    /// ```
    /// # let j: vertex_batch::bigquery::LoadJob = serde_json::from_str(r#"{"jobReference": {"jobId": "j1"}}"#).unwrap();
    /// assert_eq!(j.id(), "j1");
    /// ```
    pub fn id(&self) -> &str {
        &self.job_reference.job_id
    }

    /// The rows it wrote.
    ///
    /// ```
    /// # let j: vertex_batch::bigquery::LoadJob = serde_json::from_str(r#"{}"#).unwrap();
    /// assert_eq!(j.rows(), 0);
    /// ```
    pub fn rows(&self) -> u64 {
        self.statistics
            .as_ref()
            .and_then(|s| s.load.as_ref())
            .and_then(|l| l.output_rows)
            .map_or(0, |c| c.0)
    }

    fn done(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.state.eq_ignore_ascii_case("DONE"))
    }
}

/// A path segment, escaped (project ids may hold `:` and `.`).
pub(super) fn seg(s: &str) -> String {
    wire::escape(s)
}

fn dataset_path(t: &BigQueryUri) -> String {
    format!(
        "/bigquery/v2/projects/{}/datasets/{}",
        seg(t.project()),
        seg(t.dataset())
    )
}

fn table_path(t: &BigQueryUri) -> Result<String> {
    let table = t
        .table()
        .ok_or_else(|| Error::validation("table", format!("{t} names a dataset, not a table")))?;
    Ok(format!("{}/tables/{}", dataset_path(t), seg(table)))
}

pub(super) fn request(method: Method, path: &str, body: Option<&Value>) -> Result<Request<Bytes>> {
    let body = match body {
        Some(v) => Bytes::from(
            serde_json::to_vec(v).map_err(|e| Error::config(format!("encoding a request: {e}")))?,
        ),
        None => Bytes::new(),
    };
    let mut b = Request::builder()
        .method(method)
        .uri(format!("{DEFAULT_ENDPOINT}{path}"));
    if !body.is_empty() {
        b = b.header(CONTENT_TYPE, "application/json");
    }
    b.body(body)
        .map_err(|e| Error::config(format!("building a BigQuery request for {path}: {e}")))
}

impl BigQuery {
    /// The retry budget (the storage client's, shared with the JobService
    /// client's when built from one).
    pub(super) fn retry(&self) -> &crate::policy::RetryPolicy {
        self.inner.http.retry_policy()
    }

    /// Sends a JSON request; `None` when the answer is 404 (or `absent`).
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        absent: Option<StatusCode>,
    ) -> Result<Option<T>> {
        let wire = self.inner.http.wire()?;
        let req = request(method, path, body)?;
        let resp = wire.send(what, req).await?;
        if resp.status() == StatusCode::NOT_FOUND || Some(resp.status()) == absent {
            return Ok(None);
        }
        wire::json(what, resp).await.map(Some)
    }

    /// A dataset's location (`US`, `us-central1`, …); `None` when there is
    /// no such dataset.
    ///
    /// ```no_run
    /// # async fn demo(bq: vertex_batch::bigquery::BigQuery) -> vertex_batch::Result<()> {
    /// let location = bq.dataset_location(&"bq://my-project.my_dataset".parse()?).await?;
    /// # Ok(()) }
    /// ```
    pub async fn dataset_location(&self, dataset: &BigQueryUri) -> Result<Option<String>> {
        let what = format!("reading dataset {}", dataset_of(dataset));
        let path = dataset_path(dataset);
        let found: Option<Value> = retrying(self.retry(), &what, |_| {
            self.call(&what, Method::GET, &path, None, None)
        })
        .await
        .map_err(bq_error)?;
        Ok(found.map(|d| d["location"].as_str().unwrap_or("US").to_owned()))
    }

    /// Creates a dataset in `location` (an existing one is left as it is).
    ///
    /// ```no_run
    /// # async fn demo(bq: vertex_batch::bigquery::BigQuery) -> vertex_batch::Result<()> {
    /// bq.create_dataset(&"bq://my-project.batches".parse()?, "us-central1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_dataset(&self, dataset: &BigQueryUri, location: &str) -> Result<()> {
        let what = format!("creating dataset {}", dataset_of(dataset));
        let path = format!("/bigquery/v2/projects/{}/datasets", seg(dataset.project()));
        let body = json!({
            "datasetReference": {"projectId": dataset.project(), "datasetId": dataset.dataset()},
            "location": location,
        });
        let _: Option<Value> = retrying(self.retry(), &what, |_| {
            self.call(
                &what,
                Method::POST,
                &path,
                Some(&body),
                Some(StatusCode::CONFLICT),
            )
        })
        .await
        .map_err(bq_error)?;
        Ok(())
    }

    /// A table's schema, size and description; `None` when there is no
    /// such table.
    ///
    /// ```no_run
    /// # async fn demo(bq: vertex_batch::bigquery::BigQuery) -> vertex_batch::Result<()> {
    /// if let Some(t) = bq.table(&"bq://my-project.ds.prompts".parse()?).await? {
    ///     println!("{} rows", t.rows());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn table(&self, table: &BigQueryUri) -> Result<Option<TableInfo>> {
        let what = format!("reading table {table}");
        let path = table_path(table)?;
        retrying(self.retry(), &what, |_| {
            self.call(&what, Method::GET, &path, None, None)
        })
        .await
        .map_err(bq_error)
    }

    /// Creates a table with `schema` (and `description`); `None` when it
    /// exists already — a create-only write: of several callers creating
    /// one table at once, exactly one gets `Some`.
    ///
    /// ```no_run
    /// # async fn demo(bq: vertex_batch::bigquery::BigQuery) -> vertex_batch::Result<()> {
    /// use vertex_batch::bigquery::Field;
    /// let schema = [Field::new("key", "STRING"), Field::new("request", "JSON")];
    /// let made = bq.create_table(&"bq://my-project.ds.prompts".parse()?, &schema, None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_table(
        &self,
        table: &BigQueryUri,
        schema: &[Field],
        description: Option<&str>,
    ) -> Result<Option<TableInfo>> {
        let what = format!("creating table {table}");
        let Some(id) = table.table() else {
            return Err(Error::validation(
                "table",
                format!("{table} names no table"),
            ));
        };
        let path = format!("{}/tables", dataset_path(table));
        let mut body = json!({
            "tableReference": {"projectId": table.project(), "datasetId": table.dataset(), "tableId": id},
            "schema": {"fields": schema},
        });
        if let Some(d) = description {
            body["description"] = Value::String(d.to_owned());
        }
        // Not retried: a create whose answer was lost would come back as
        // "exists" and be misread.
        self.call(
            &what,
            Method::POST,
            &path,
            Some(&body),
            Some(StatusCode::CONFLICT),
        )
        .await
        .map_err(bq_error)
    }

    /// Sets a table's description; with `etag`, only if the table is
    /// still at that etag (`None` when it moved on: another writer's
    /// change). Where a server ignores the etag (bqemulator does), the
    /// write goes through.
    ///
    /// ```no_run
    /// # async fn demo(bq: vertex_batch::bigquery::BigQuery) -> vertex_batch::Result<()> {
    /// let t = "bq://my-project.ds.notes".parse()?;
    /// let seen = bq.table(&t).await?.expect("exists");
    /// let moved = bq.set_description(&t, "new text", seen.etag()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_description(
        &self,
        table: &BigQueryUri,
        description: &str,
        etag: Option<&str>,
    ) -> Result<Option<TableInfo>> {
        let what = format!("updating table {table}");
        let path = table_path(table)?;
        let body = json!({"description": description});
        let (what, path, body) = (&what, &path, &body);
        retrying(self.retry(), what, |attempt| async move {
            let wire = self.inner.http.wire()?;
            let mut req = request(Method::PATCH, path, Some(body))?;
            if let Some(e) = etag {
                let value = http::HeaderValue::from_str(e)
                    .map_err(|_| Error::config(format!("{what}: an etag that is no header")))?;
                req.headers_mut().insert(http::header::IF_MATCH, value);
            }
            let resp = wire.send(what, req).await?;
            if resp.status() == StatusCode::PRECONDITION_FAILED {
                // A later try that finds the etag moved may be this write's
                // own first try: it wrote if the text is there now.
                if attempt > 1 {
                    if let Some(t) = self.table(table).await? {
                        if t.description() == Some(description) {
                            return Ok(Some(t));
                        }
                    }
                }
                return Ok(None);
            }
            wire::json(what, resp).await.map(Some)
        })
        .await
        .map_err(bq_error)
    }

    /// Deletes a table (one already gone is fine).
    ///
    /// ```no_run
    /// # async fn demo(bq: vertex_batch::bigquery::BigQuery) -> vertex_batch::Result<()> {
    /// bq.delete_table(&"bq://my-project.ds.old_prompts".parse()?).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_table(&self, table: &BigQueryUri) -> Result<()> {
        let what = format!("deleting table {table}");
        let path = table_path(table)?;
        retrying(self.retry(), &what, |_| async {
            let wire = self.inner.http.wire()?;
            let resp = wire
                .send(&what, request(Method::DELETE, &path, None)?)
                .await?;
            match resp.status() {
                s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
                _ => Err(wire::status_error(&what, resp).await),
            }
        })
        .await
        .map_err(bq_error)
    }

    /// Loads newline-delimited JSON rows into `table` with a load job
    /// (created with `schema` if missing; refused if it holds rows
    /// already, so a repeated load never doubles them), and waits for the
    /// job to finish. `job_id` names the job: a load sent again with the
    /// same id is the same job on BigQuery. The rows travel in one
    /// request, all in memory: this is for small tables (and empty ones);
    /// stream large ones through [`BigQuery::load_writer`], which holds
    /// one chunk.
    ///
    /// ```no_run
    /// # async fn demo(bq: vertex_batch::bigquery::BigQuery) -> vertex_batch::Result<()> {
    /// use vertex_batch::bigquery::Field;
    /// let schema = [Field::new("key", "STRING"), Field::new("request", "JSON")];
    /// let rows = "{\"key\":\"q1\",\"request\":{\"contents\":[]}}\n";
    /// let job = bq.load_ndjson(&"bq://my-project.ds.prompts".parse()?, &schema, rows, "load-prompts-1").await?;
    /// assert_eq!(job.rows(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn load_ndjson(
        &self,
        table: &BigQueryUri,
        schema: &[Field],
        rows: impl Into<Bytes>,
        job_id: &str,
    ) -> Result<LoadJob> {
        self.load_ndjson_as(table, schema, rows.into(), job_id, false)
            .await
    }

    /// [`BigQuery::load_ndjson`], appending to the rows the table holds
    /// when `append`.
    pub(super) async fn load_ndjson_as(
        &self,
        table: &BigQueryUri,
        schema: &[Field],
        rows: Bytes,
        job_id: &str,
        append: bool,
    ) -> Result<LoadJob> {
        let what = format!("loading rows into {table}");
        let meta = load_job(table, schema, job_id, append)?;
        let boundary = format!("vertex-batch-{:016x}", fastrand::u64(..));
        let body = multipart(&boundary, &meta, &rows)?;
        let path = format!(
            "/upload/bigquery/v2/projects/{}/jobs?uploadType=multipart",
            seg(table.project())
        );
        let job: LoadJob = retrying(self.retry(), &what, |_| async {
            let wire = self.inner.http.wire()?;
            let req = Request::builder()
                .method(Method::POST)
                .uri(format!("{DEFAULT_ENDPOINT}{path}"))
                .header(
                    CONTENT_TYPE,
                    format!("multipart/related; boundary={boundary}"),
                )
                .body(body.clone())
                .map_err(|e| Error::config(format!("{what}: {e}")))?;
            let resp = wire.send(&what, req).await?;
            if resp.status() == StatusCode::CONFLICT {
                // The same job id was sent before (a lost answer): it is
                // that job.
                return self.existing_job(&what, table, job_id).await;
            }
            wire::json(&what, resp).await
        })
        .await
        .map_err(bq_error)?;
        self.finished(table, job).await
    }

    /// The load job `job_id`, which the service says exists already
    /// (`409`): a load sent again with the same id is that job.
    pub(super) async fn existing_job(
        &self,
        what: &str,
        table: &BigQueryUri,
        job_id: &str,
    ) -> Result<LoadJob> {
        self.job(table.project(), job_id, None)
            .await?
            .ok_or_else(|| Error::Storage {
                message: format!("{what}: load job {job_id} exists but cannot be read"),
                http_status: Some(409),
                source: None,
            })
    }

    /// Waits for a load job to be done; its error, if it failed.
    pub(super) async fn finished(&self, table: &BigQueryUri, mut job: LoadJob) -> Result<LoadJob> {
        let mut pause = Duration::from_millis(50);
        while !job.done() {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            let location = job.job_reference.location.clone();
            job = self
                .job(
                    table.project(),
                    &job.job_reference.job_id,
                    location.as_deref(),
                )
                .await
                .map_err(bq_error)?
                .ok_or_else(|| Error::BigQuery {
                    message: format!(
                        "load job {} into {table} vanished",
                        job.job_reference.job_id
                    ),
                    http_status: Some(404),
                    source: None,
                })?;
        }
        if let Some(e) = job.status.as_ref().and_then(|s| s.error_result.as_ref()) {
            return Err(Error::BigQuery {
                message: format!(
                    "load job {} into {table} failed: {} ({})",
                    job.job_reference.job_id, e.message, e.reason
                ),
                http_status: None,
                source: None,
            });
        }
        Ok(job)
    }

    async fn job(
        &self,
        project: &str,
        id: &str,
        location: Option<&str>,
    ) -> Result<Option<LoadJob>> {
        let what = format!("reading job {id}");
        let mut path = format!("/bigquery/v2/projects/{}/jobs/{}", seg(project), seg(id));
        if let Some(l) = location {
            path.push_str(&format!("?location={}", seg(l)));
        }
        retrying(self.retry(), &what, |_| {
            self.call(&what, Method::GET, &path, None, None)
        })
        .await
    }

    /// Every row of `table`, page by page, each as one JSON object
    /// ([`decode_row`](super::decode_row)).
    ///
    /// ```no_run
    /// # async fn demo(bq: vertex_batch::bigquery::BigQuery) -> vertex_batch::Result<()> {
    /// use futures::TryStreamExt;
    /// let rows: Vec<_> = bq.rows(&"bq://my-project.ds.predictions".parse()?).try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub fn rows(&self, table: &BigQueryUri) -> BoxStream<'static, Result<Map<String, Value>>> {
        self.lines(table)
            .flat_map(|page| {
                futures::stream::iter(match page {
                    Ok(lines) => lines
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .map(|l| {
                            serde_json::from_slice(l)
                                .map_err(|e| Error::config(format!("reading back a row: {e}")))
                        })
                        .collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                })
            })
            .boxed()
    }

    /// The rows of `table` as newline-delimited JSON, a page a chunk: the
    /// shape of a Cloud Storage batch output file, for the one reader of
    /// both. Each page's rows are written straight from its text
    /// ([`write_row_line`]): no tree of values is built for the common
    /// column types.
    pub(crate) fn lines(&self, table: &BigQueryUri) -> BoxStream<'static, Result<Bytes>> {
        if self.inner.read_api.is_some() {
            return self.read_api_lines(table);
        }
        self.rest_lines(table)
    }

    /// [`BigQuery::lines`] through `tabledata.list`.
    pub(super) fn rest_lines(&self, table: &BigQueryUri) -> BoxStream<'static, Result<Bytes>> {
        enum Next {
            Start,
            Page(Vec<Field>, Option<String>),
            Done,
        }
        let bq = self.clone();
        let table = table.clone();
        futures::stream::try_unfold(Next::Start, move |next| {
            let bq = bq.clone();
            let table = table.clone();
            async move {
                let (schema, token) = match next {
                    Next::Done => return Ok(None),
                    Next::Start => {
                        let info = bq.table(&table).await?.ok_or_else(|| Error::BigQuery {
                            message: format!("no table {table}"),
                            http_status: Some(404),
                            source: None,
                        })?;
                        (info.schema.fields, None)
                    }
                    Next::Page(schema, token) => (schema, token),
                };
                let what = format!("reading the rows of {table}");
                let mut path = format!(
                    "{}/data?maxResults={PAGE_ROWS}&formatOptions.useInt64Timestamp=true",
                    table_path(&table)?
                );
                if let Some(t) = &token {
                    path.push_str(&format!("&pageToken={}", seg(t)));
                }
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Page<'a> {
                    #[serde(borrow, default)]
                    rows: Vec<RawRow<'a>>,
                    #[serde(default)]
                    page_token: Option<String>,
                }
                let body = retrying(bq.retry(), &what, |_| async {
                    let wire = bq.inner.http.wire()?;
                    let resp = wire.send(&what, request(Method::GET, &path, None)?).await?;
                    if resp.status() == StatusCode::NOT_FOUND {
                        return Ok(None);
                    }
                    wire::body(&what, resp).await.map(Some)
                })
                .await
                .map_err(bq_error)?
                .ok_or_else(|| Error::BigQuery {
                    message: format!("{what}: the table is gone"),
                    http_status: Some(404),
                    source: None,
                })?;
                let page: Page<'_> = wire::parse(&what, StatusCode::OK, &body).map_err(bq_error)?;
                let mut out = Vec::with_capacity(body.len() + body.len() / 8);
                for row in &page.rows {
                    write_row_line(&schema, row, &mut out)?;
                }
                let next = match page.page_token.filter(|t| !t.is_empty()) {
                    Some(t) if token.as_deref() == Some(t.as_str()) => {
                        return Err(Error::BigQuery {
                            message: format!(
                                "{what}: the service answered the page token it was sent"
                            ),
                            http_status: None,
                            source: None,
                        })
                    }
                    Some(t) => Next::Page(schema, Some(t)),
                    None => Next::Done,
                };
                Ok(Some((Bytes::from(out), next)))
            }
        })
        .boxed()
    }
}

/// The job resource of a load of newline-delimited JSON into `table`
/// (created with `schema` if missing; refused if it holds rows, unless
/// `append`, when the rows are added to those it holds), named `job_id`:
/// what [`BigQuery::load_ndjson`], [`BigQuery::load_writer`] and
/// [`BigQuery::append_writer`] send.
pub(super) fn load_job(
    table: &BigQueryUri,
    schema: &[Field],
    job_id: &str,
    append: bool,
) -> Result<Value> {
    let Some(id) = table.table() else {
        return Err(Error::validation(
            "table",
            format!("{table} names no table"),
        ));
    };
    Ok(json!({
        "jobReference": {"projectId": table.project(), "jobId": job_id},
        "configuration": {"load": {
            "destinationTable": {"projectId": table.project(), "datasetId": table.dataset(), "tableId": id},
            "sourceFormat": "NEWLINE_DELIMITED_JSON",
            "schema": {"fields": schema},
            "writeDisposition": if append { "WRITE_APPEND" } else { "WRITE_EMPTY" },
            "createDisposition": "CREATE_IF_NEEDED",
        }},
    }))
}

/// `bq://project.dataset` of a table or dataset URI.
fn dataset_of(t: &BigQueryUri) -> String {
    format!("bq://{}.{}", t.project(), t.dataset())
}

/// A `multipart/related` body: the job's JSON, then the data.
fn multipart(boundary: &str, meta: &Value, data: &[u8]) -> Result<Bytes> {
    let meta =
        serde_json::to_vec(meta).map_err(|e| Error::config(format!("encoding a load job: {e}")))?;
    let mut b = BytesMut::with_capacity(meta.len() + data.len() + 256);
    b.put_slice(
        format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n").as_bytes(),
    );
    b.put_slice(&meta);
    b.put_slice(
        format!("\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    b.put_slice(data);
    b.put_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(b.freeze())
}
