//! Streaming load jobs: [`LoadWriter`] sends newline-delimited JSON rows to
//! a BigQuery load job through a resumable upload — the Cloud Storage
//! upload's own session code ([`Resumable`]), so the chunking, the `308`
//! and `Range` handling, the retries under the client's budget and the
//! idle timeout are one implementation for both services.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Method};

use super::{
    api::{load_job, request, seg, LoadJob},
    client::{bq_error, BigQuery},
    rows::Field,
};
use crate::{
    error::{Error, Result},
    storage::upload::{Completion, Resumable},
    uri::BigQueryUri,
};

impl Completion for LoadJob {
    fn read(what: &str, status: u16, body: &[u8]) -> Result<Self> {
        serde_json::from_slice(body).map_err(|e| Error::Storage {
            message: format!("{what}: could not read the load job: {e}"),
            http_status: Some(status),
            source: Some(Box::new(e)),
        })
    }

    /// A job does not say how many bytes it was given.
    fn stored(&self) -> Option<u64> {
        None
    }
}

impl BigQuery {
    /// Starts a load job into `table` whose rows are streamed: the same
    /// load as [`BigQuery::load_ndjson`] (newline-delimited JSON, the table
    /// created with `schema` if missing, refused if it holds rows already;
    /// `job_id` names the job), but the rows go up through a resumable
    /// upload as they are written, one chunk in memory (8 MiB unless
    /// [`BigQueryBuilder::chunk_size`](super::BigQueryBuilder::chunk_size)
    /// says otherwise), so a table of any size loads in bounded memory.
    /// Write rows, then [`LoadWriter::finish`]; dropped unfinished, it
    /// loads nothing.
    ///
    /// ```no_run
    /// # async fn demo(bq: vertex_batch::bigquery::BigQuery) -> vertex_batch::Result<()> {
    /// use vertex_batch::bigquery::Field;
    /// let schema = [Field::new("key", "STRING"), Field::new("request", "JSON")];
    /// let table = "bq://my-project.ds.prompts".parse()?;
    /// let mut w = bq.load_writer(&table, &schema, "load-prompts-1").await?;
    /// for i in 0..1_000_000 {
    ///     w.write(format!("{{\"key\":\"q{i}\",\"request\":{{\"contents\":[]}}}}\n").as_bytes()).await?;
    /// }
    /// let job = w.finish().await?; // the rows appear all at once, or none do
    /// assert_eq!(job.rows(), 1_000_000);
    /// # Ok(()) }
    /// ```
    pub async fn load_writer(
        &self,
        table: &BigQueryUri,
        schema: &[Field],
        job_id: &str,
    ) -> Result<LoadWriter> {
        self.writer(table, schema, job_id, false).await
    }

    /// Starts a streamed load job, as [`BigQuery::load_writer`] does, whose
    /// rows are added to those the table holds already (`WRITE_APPEND`)
    /// instead of being refused. Each call needs a job id of its own: a
    /// load sent again with the same id is that job, so its rows are never
    /// appended twice.
    ///
    /// ```no_run
    /// # async fn demo(bq: vertex_batch::bigquery::BigQuery) -> vertex_batch::Result<()> {
    /// use vertex_batch::bigquery::Field;
    /// let schema = [Field::new("key", "STRING")];
    /// let table = "bq://my-project.ds.keys".parse()?;
    /// for (i, rows) in ["{\"key\":\"a\"}\n", "{\"key\":\"b\"}\n"].into_iter().enumerate() {
    ///     let mut w = bq.append_writer(&table, &schema, &format!("append-keys-{i}")).await?;
    ///     w.write(rows.as_bytes()).await?;
    ///     w.finish().await?; // the table now holds one row more
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn append_writer(
        &self,
        table: &BigQueryUri,
        schema: &[Field],
        job_id: &str,
    ) -> Result<LoadWriter> {
        self.writer(table, schema, job_id, true).await
    }

    async fn writer(
        &self,
        table: &BigQueryUri,
        schema: &[Field],
        job_id: &str,
        append: bool,
    ) -> Result<LoadWriter> {
        let meta = load_job(table, schema, job_id, append)?;
        let path = format!(
            "/upload/bigquery/v2/projects/{}/jobs?uploadType=resumable",
            seg(table.project())
        );
        let starting = format!("starting a load into {table}");
        let opened = self
            .inner
            .http
            .resumable(&starting, format!("loading rows into {table}"), || {
                let mut req = request(Method::POST, &path, Some(&meta))?;
                req.headers_mut().insert(
                    "x-upload-content-type",
                    HeaderValue::from_static("application/octet-stream"),
                );
                Ok(req)
            })
            .await;
        let session = match opened {
            Ok(s) => Some(s),
            // A job of that id exists already: a load sent again with the
            // same id is that job, as with `load_ndjson`.
            Err(Error::Storage {
                http_status: Some(409),
                ..
            }) => None,
            Err(e) => return Err(bq_error(e)),
        };
        Ok(LoadWriter {
            bq: self.clone(),
            table: table.clone(),
            schema: schema.to_vec(),
            job_id: job_id.to_owned(),
            session,
            ignored: 0,
            append,
        })
    }
}

/// A load job whose rows are being uploaded (from
/// [`BigQuery::load_writer`]): rows are buffered up to one chunk and sent
/// chunk by chunk; [`LoadWriter::finish`] sends the rest and waits for the
/// job. A chunk that fails is sent again, from what the service says it
/// kept, under the client's retry budget.
///
/// ```no_run
/// # async fn demo(bq: vertex_batch::bigquery::BigQuery) -> vertex_batch::Result<()> {
/// use vertex_batch::bigquery::Field;
/// let schema = [Field::new("key", "STRING")];
/// let mut w = bq.load_writer(&"bq://my-project.ds.keys".parse()?, &schema, "load-keys-1").await?;
/// w.write(b"{\"key\":\"a\"}\n{\"key\":\"b\"}\n").await?;
/// println!("{} bytes, {} chunks sent so far", w.len(), w.chunks_sent());
/// assert_eq!(w.finish().await?.rows(), 2);
/// # Ok(()) }
/// ```
pub struct LoadWriter {
    bq: BigQuery,
    table: BigQueryUri,
    schema: Vec<Field>,
    job_id: String,
    /// `None` when the job exists already: rows written are not sent.
    session: Option<Resumable<LoadJob>>,
    /// Bytes written while there is no session.
    ignored: u64,
    /// Whether the rows are appended to those the table holds.
    append: bool,
}

impl fmt::Debug for LoadWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the session's URL: it is a credential.
        f.debug_struct("LoadWriter")
            .field("table", &self.table)
            .field("job_id", &self.job_id)
            .field("written", &self.len())
            .finish_non_exhaustive()
    }
}

impl LoadWriter {
    /// Appends newline-delimited JSON rows (any split: a row may span
    /// calls), sending every full chunk once more follows it.
    ///
    /// ```no_run
    /// # async fn demo(mut w: vertex_batch::bigquery::LoadWriter) -> vertex_batch::Result<()> {
    /// w.write(b"{\"key\":\"a\"}\n").await?;
    /// w.write(b"{\"key\":").await?;
    /// w.write(b"\"b\"}\n").await?;
    /// # Ok(()) }
    /// ```
    pub async fn write(&mut self, rows: &[u8]) -> Result<()> {
        match &mut self.session {
            Some(s) => s.write(rows).await.map_err(bq_error),
            None => {
                self.ignored += rows.len() as u64;
                Ok(())
            }
        }
    }

    /// Bytes written so far (sent or buffered).
    ///
    /// ```no_run
    /// # async fn demo(mut w: vertex_batch::bigquery::LoadWriter) -> vertex_batch::Result<()> {
    /// w.write(b"{\"key\":\"a\"}\n").await?;
    /// assert_eq!(w.len(), 12);
    /// # Ok(()) }
    /// ```
    pub fn len(&self) -> u64 {
        self.session.as_ref().map_or(self.ignored, Resumable::len)
    }

    /// Whether nothing was written yet.
    ///
    /// ```no_run
    /// # async fn demo(w: vertex_batch::bigquery::LoadWriter) {
    /// assert!(w.is_empty());
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many upload requests carried rows so far.
    ///
    /// ```no_run
    /// # async fn demo(mut w: vertex_batch::bigquery::LoadWriter) -> vertex_batch::Result<()> {
    /// w.write(b"{\"key\":\"a\"}\n").await?;
    /// assert_eq!(w.chunks_sent(), 0); // less than a chunk waits for `finish`
    /// # Ok(()) }
    /// ```
    pub fn chunks_sent(&self) -> u64 {
        self.session.as_ref().map_or(0, Resumable::chunks_sent)
    }

    /// The memory the buffer holds, and the chunk size.
    #[cfg(test)]
    fn memory(&self) -> (usize, usize) {
        self.session.as_ref().map_or((0, 0), Resumable::memory)
    }

    /// Sends the last piece and waits for the load job to be done: the job,
    /// or [`Error::BigQuery`] when it failed (a table that holds rows
    /// already, rows that do not fit the schema, …). A load with no rows
    /// goes as one request through [`BigQuery::load_ndjson`] instead (an
    /// empty final piece, `bytes */0`, is read by some services as a
    /// status query), leaving the session unused to expire.
    ///
    /// ```no_run
    /// # async fn demo(mut w: vertex_batch::bigquery::LoadWriter) -> vertex_batch::Result<()> {
    /// w.write(b"{\"key\":\"a\"}\n").await?;
    /// let job = w.finish().await?;
    /// println!("job {} loaded {} rows", job.id(), job.rows());
    /// # Ok(()) }
    /// ```
    pub async fn finish(self) -> Result<LoadJob> {
        let LoadWriter {
            bq,
            table,
            schema,
            job_id,
            session,
            append,
            ..
        } = self;
        let what = format!("loading rows into {table}");
        let job = match session {
            None => bq.existing_job(&what, &table, &job_id).await,
            Some(s) if s.len() == 0 => {
                return bq
                    .load_ndjson_as(&table, &schema, Bytes::new(), &job_id, append)
                    .await
            }
            Some(s) => match s.finish().await {
                // Completed before, by a load of the same id.
                Err(Error::Storage {
                    http_status: Some(409),
                    ..
                }) => bq.existing_job(&what, &table, &job_id).await,
                other => other,
            },
        };
        bq.finished(&table, job.map_err(bq_error)?).await
    }
}

#[cfg(test)]
mod tests {
    //! The load protocol against a BigQuery upload host in memory (a hyper
    //! server on loopback), on tokio's paused clock: retry waits pass at
    //! once, and nothing waits on the wall clock.

    use std::{
        convert::Infallible,
        sync::{Arc, Mutex},
    };

    use http_body_util::{BodyExt, Full};
    use hyper::{body::Incoming, Request, Response};

    use super::*;
    use crate::policy::RetryPolicy;

    /// What the upload host saw and holds.
    #[derive(Default)]
    struct Host {
        /// Requests, in order: method and `Content-Range` (`-` for none).
        seen: Vec<String>,
        /// The bytes the session kept.
        kept: Vec<u8>,
        /// Data requests (carrying bytes) seen, and which of them to
        /// answer 503 without keeping anything.
        data_requests: usize,
        fail: Vec<usize>,
        /// Answer the start with 409, as for a job id used before.
        exists: bool,
    }

    const JOB_ID: &str = "load-1";

    fn job_json(rows: usize) -> String {
        serde_json::json!({
            "jobReference": {"projectId": "p", "jobId": JOB_ID},
            "status": {"state": "DONE"},
            "statistics": {"load": {"outputRows": rows.to_string()}},
        })
        .to_string()
    }

    fn answer(
        host: &Mutex<Host>,
        method: &str,
        range: Option<&str>,
        body: &[u8],
    ) -> (u16, String, String) {
        let mut h = host.lock().unwrap();
        h.seen.push(format!("{method} {}", range.unwrap_or("-")));
        let kept_range = |kept: usize| match kept {
            0 => String::new(),
            n => format!("bytes=0-{}", n - 1),
        };
        match (method, range) {
            ("POST", _) if h.exists => (
                409,
                String::new(),
                r#"{"error":{"code":409,"message":"Already Exists"}}"#.into(),
            ),
            ("POST", _) => (200, String::new(), String::new()),
            ("GET", _) => (200, String::new(), job_json(1)),
            ("PUT", Some("bytes */*")) => (308, kept_range(h.kept.len()), String::new()),
            ("PUT", Some(range)) => {
                h.data_requests += 1;
                if h.fail.contains(&h.data_requests) {
                    return (
                        503,
                        String::new(),
                        r#"{"error":{"code":503,"message":"backend unavailable"}}"#.into(),
                    );
                }
                let (span, total) = range.trim_start_matches("bytes ").split_once('/').unwrap();
                let start: usize = span.split('-').next().unwrap().parse().unwrap();
                assert_eq!(start, h.kept.len(), "a chunk from where the session is");
                h.kept.extend_from_slice(body);
                match total {
                    "*" => (308, kept_range(h.kept.len()), String::new()),
                    _ => {
                        assert_eq!(total.parse::<usize>().unwrap(), h.kept.len());
                        let rows = h.kept.iter().filter(|&&b| b == b'\n').count();
                        (200, String::new(), job_json(rows))
                    }
                }
            }
            _ => (400, String::new(), "unexpected".into()),
        }
    }

    /// Serves `host` on loopback; a client for it with `chunk` chunks.
    async fn upload_host(host: Arc<Mutex<Host>>, chunk: usize) -> BigQuery {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let session =
            format!("{url}/upload/bigquery/v2/projects/p/jobs?uploadType=resumable&upload_id=s1");
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    break;
                };
                let (host, session) = (host.clone(), session.clone());
                let reply = move |req: Request<Incoming>| {
                    let (host, session) = (host.clone(), session.clone());
                    async move {
                        let method = req.method().to_string();
                        let range = req
                            .headers()
                            .get("content-range")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let (status, kept, text) = answer(&host, &method, range.as_deref(), &body);
                        let mut resp = Response::builder()
                            .status(status)
                            .header("location", &session);
                        if !kept.is_empty() {
                            resp = resp.header("range", kept);
                        }
                        Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(text))).unwrap())
                    }
                };
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    hyper_util::rt::TokioIo::new(sock),
                    hyper::service::service_fn(reply),
                ));
            }
        });
        BigQuery::builder()
            .ignore_env()
            .emulator_host(url)
            .chunk_size(chunk)
            .retry_policy(RetryPolicy::default().with_max_attempts(3))
            .build()
            .unwrap()
    }

    /// Rows `from..to`, each about 28 bytes.
    fn rows(from: usize, to: usize) -> Vec<u8> {
        (from..to)
            .flat_map(|i| format!("{{\"key\":\"k{i:07}\",\"n\":{i}}}\n").into_bytes())
            .collect()
    }

    const CHUNK: usize = 256 << 10;

    /// The second chunk fails once (503): the writer waits out the retry
    /// delay, asks what was kept (`bytes */*`), sends that chunk again, and
    /// the load completes with every row, byte for byte, in order.
    #[tokio::test(start_paused = true)]
    async fn a_chunk_that_fails_once_is_sent_again_after_asking_what_was_kept() {
        let host = Arc::new(Mutex::new(Host {
            fail: vec![2],
            ..Host::default()
        }));
        let bq = upload_host(host.clone(), CHUNK).await;
        let table = "bq://p.ds.t".parse().unwrap();
        let schema = [Field::new("key", "STRING"), Field::new("n", "INT64")];
        let mut w = bq.load_writer(&table, &schema, JOB_ID).await.unwrap();
        let data = rows(0, 30_000);
        assert!(
            (3 * CHUNK..4 * CHUNK).contains(&data.len()),
            "3 chunks and a piece"
        );
        for piece in data.chunks(10_007) {
            w.write(piece).await.unwrap();
        }
        assert_eq!(w.len(), data.len() as u64);
        let job = w.finish().await.unwrap();
        assert_eq!(job.rows(), 30_000);
        let h = host.lock().unwrap();
        assert!(h.kept == data, "the session holds exactly the rows written");
        let c = |n: usize| format!("bytes {}-{}/*", n * CHUNK, (n + 1) * CHUNK - 1);
        let last = format!("bytes {}-{}/{}", 3 * CHUNK, data.len() - 1, data.len());
        assert_eq!(
            h.seen,
            [
                "POST -".to_owned(),
                format!("PUT {}", c(0)),
                format!("PUT {}", c(1)), // 503
                "PUT bytes */*".to_owned(),
                format!("PUT {}", c(1)), // sent again, whole: nothing was kept
                format!("PUT {}", c(2)),
                format!("PUT {last}"),
            ]
        );
    }

    /// However rows are written — in small pieces, or in one piece larger
    /// than several chunks — and across a failed chunk, the buffer never
    /// holds more than one chunk of memory.
    #[tokio::test(start_paused = true)]
    async fn the_buffer_never_grows_past_one_chunk() {
        let host = Arc::new(Mutex::new(Host {
            fail: vec![3, 4],
            ..Host::default()
        }));
        let bq = upload_host(host.clone(), CHUNK).await;
        let table = "bq://p.ds.t".parse().unwrap();
        let mut w = bq.load_writer(&table, &[], JOB_ID).await.unwrap();
        let mut written = 0;
        let mut peak = 0;
        for (i, piece) in [rows(0, 7), rows(7, 30_000), rows(30_000, 30_001)]
            .iter()
            .cycle()
            .take(12)
            .enumerate()
        {
            w.write(piece).await.unwrap();
            written += piece.len();
            let (held, chunk) = w.memory();
            assert_eq!(chunk, CHUNK);
            assert!(held <= CHUNK, "write {i}: {held} bytes held");
            peak = peak.max(held);
        }
        assert!(peak > 0);
        assert!(w.chunks_sent() >= (written / CHUNK - 1) as u64);
        w.finish().await.unwrap();
        assert_eq!(host.lock().unwrap().kept.len(), written);
    }

    /// A job id used before: the start is refused (409) and the writer
    /// finishes as that job, sending no rows.
    #[tokio::test(start_paused = true)]
    async fn a_job_id_used_before_is_that_job() {
        let host = Arc::new(Mutex::new(Host {
            exists: true,
            ..Host::default()
        }));
        let bq = upload_host(host.clone(), CHUNK).await;
        let mut w = bq
            .load_writer(&"bq://p.ds.t".parse().unwrap(), &[], JOB_ID)
            .await
            .unwrap();
        w.write(b"{}\n").await.unwrap();
        let job = w.finish().await.unwrap();
        assert_eq!((job.id(), job.rows()), (JOB_ID, 1));
        assert_eq!(host.lock().unwrap().seen, ["POST -", "GET -"]);
    }
}
