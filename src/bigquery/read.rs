//! Reading a table through the BigQuery Storage Read API (gRPC
//! `google.cloud.bigquery.storage.v1.BigQueryRead`): one read session in
//! Avro, up to four of its streams read side by side, each block of rows
//! written as the JSON lines `tabledata.list` reading makes
//! ([`super::avro`]).
//!
//! A stream that breaks is opened again at the row it reached (the
//! `offset` of `ReadRows`), under the client's retry budget, so no row is
//! read twice or lost. Memory is one answer per stream being read (kept in
//! the buffer it arrived in) and a 1 MiB chunk of its lines: an answer is
//! written out, a chunk at a time, before the next is asked for.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};
use tokio::time::Instant;
use tonic::{Request, Streaming};

use super::{
    avro::{Block, RowSchema},
    client::{BigQuery, ReadApiConfig, ReadClient, DEFAULT_STREAMS},
};
use crate::{
    error::{Error, Result},
    proto::google::cloud::bigquery::storage::v1::{
        big_query_read_client::BigQueryReadClient, read_rows_response::Rows, read_session::Schema,
        CreateReadSessionRequest, DataFormat, ReadRowsRequest, ReadRowsResponse, ReadSession,
    },
    storage::retry::retrying,
    transport::{
        auth::{Credentials, TokenCache},
        endpoint::{lazy_channel, resolve_endpoint},
        headers::{routing_header, HeaderLayer, Shared, REQUEST_PARAMS_STR},
        proxy::{route, ProxyEnv, ProxySettings},
    },
    uri::BigQueryUri,
};

/// Builds the gRPC client (no network I/O; needs a Tokio runtime).
pub(super) fn connect(
    config: &ReadApiConfig,
    tokens: Option<Arc<TokenCache>>,
) -> Result<ReadClient> {
    let (uri, tls_host) = resolve_endpoint(&config.endpoint, config.allow_plaintext)?;
    if tls_host.is_none() && tokens.as_ref().is_some_and(|t| !t.is_anonymous()) {
        let loopback = uri
            .strip_prefix("http://")
            .and_then(|a| crate::transport::endpoint::authority(a, "endpoint").ok())
            .is_some_and(|a| crate::uri::is_loopback(a.host()));
        if !loopback {
            return Err(Error::config(format!(
                "refusing to send credentials in plaintext to the Storage Read API at {uri}"
            )));
        }
    }
    let dst: http::Uri = uri
        .parse()
        .map_err(|e| Error::config(format!("invalid Storage Read API endpoint {uri:?}: {e}")))?;
    let env = config.use_env.then(ProxyEnv::from_process);
    let proxy = route(&ProxySettings::default(), env.as_ref(), &dst)?;
    let channel = lazy_channel(
        &uri,
        tls_host.as_deref(),
        Duration::from_secs(20),
        proxy.as_ref(),
    )?;
    let api_client = http::HeaderValue::try_from(crate::transport::api_client_header())
        .map_err(|e| Error::config(format!("x-goog-api-client: {e}")))?;
    let tokens = tokens.unwrap_or_else(|| Arc::new(TokenCache::new(Credentials::anonymous())));
    let layer = HeaderLayer::new(Shared {
        tokens,
        api_client,
        user_project: None,
    });
    Ok(
        BigQueryReadClient::new(tower::ServiceBuilder::new().layer(layer).service(channel))
            // The service's answers are at most 128 MB (its documented
            // limit); memory is at most four of them.
            .max_decoding_message_size(128 << 20),
    )
}

/// `projects/P/datasets/D/tables/T`.
fn table_name(table: &BigQueryUri) -> Result<String> {
    let id = table
        .table()
        .ok_or_else(|| Error::validation("table", format!("{table} names no table")))?;
    Ok(format!(
        "projects/{}/datasets/{}/tables/{id}",
        table.project(),
        table.dataset()
    ))
}

fn with_routing<T>(msg: T, key: &str, value: &str) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(v) = routing_header(key, value) {
        req.metadata_mut().insert(REQUEST_PARAMS_STR, v);
    }
    req
}

/// Whether a broken `ReadRows` stream is worth opening again, as Google's
/// own readers judge it: `UNAVAILABLE`, no answer at all, and the
/// `INTERNAL` resets of a long stream. (`RESOURCE_EXHAUSTED` is not: on a
/// stream it says an answer was too large, which a retry repeats.)
fn retryable_read(e: &Error) -> bool {
    match e.code() {
        Some(tonic::Code::Unavailable) => true,
        Some(tonic::Code::Internal) => e.as_service().is_some_and(|s| {
            let m = s.message();
            m.contains("RST_STREAM") || m.contains("unexpected EOS")
        }),
        Some(_) => false,
        None => matches!(e, Error::Transport { .. }),
    }
}

/// Streams read at once: memory is one block of rows per stream read.
const STREAMS_AT_ONCE: usize = 4;

impl BigQuery {
    fn read_client(&self) -> Result<ReadClient> {
        let config =
            self.inner.read_api.as_ref().ok_or_else(|| {
                Error::config("this BigQuery client reads through tabledata.list")
            })?;
        if let Some(c) = self.inner.read_client.get() {
            return Ok(c.clone());
        }
        let tokens = self.inner.http.wire()?.tokens().cloned();
        let client = connect(config, tokens)?;
        Ok(self.inner.read_client.get_or_init(|| client).clone())
    }

    /// Opens a read session on `table` (which `tables.get` has found) in
    /// Avro. `None` when the API is not for this caller
    /// (`PERMISSION_DENIED`: no `bigquery.readsessions.create`;
    /// `UNIMPLEMENTED`) or does not find the table (`NOT_FOUND`): then the
    /// rows are read through `tabledata.list`.
    async fn read_session(
        &self,
        table: &BigQueryUri,
        endpoint: &str,
    ) -> Result<Option<ReadSession>> {
        let client = self.read_client()?;
        let name = table_name(table)?;
        let streams = self
            .inner
            .read_api
            .as_ref()
            .map_or(DEFAULT_STREAMS, |c| c.streams);
        let what = format!("opening a Storage Read API session on {table}");
        let req = CreateReadSessionRequest {
            parent: format!("projects/{}", table.project()),
            read_session: Some(ReadSession {
                table: name.clone(),
                data_format: DataFormat::Avro as i32,
                ..Default::default()
            }),
            max_stream_count: streams,
            ..Default::default()
        };
        // The one retry loop of the crate's HTTP calls, on gRPC statuses.
        let got = retrying(self.retry(), &what, |_| {
            let mut client = client.clone();
            let req = with_routing(req.clone(), "read_session.table", &name);
            async move {
                client
                    .create_read_session(req)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| Error::from_status(status, endpoint))
            }
        })
        .await;
        match got {
            Ok(session) => Ok(Some(session)),
            Err(err)
                if matches!(
                    err.code(),
                    Some(tonic::Code::PermissionDenied | tonic::Code::Unimplemented)
                ) =>
            {
                tracing::info!(%table, code = ?err.code(), "the Storage Read API is not for this caller; reading through tabledata.list");
                Ok(None)
            }
            // The caller found the table a moment ago (`tables.get`), so a
            // NOT_FOUND here says the Read API cannot see it yet or failed
            // reading it (bqemulator answers NOT_FOUND for any error of its
            // engine, and hits them when a load runs beside the read):
            // `tabledata.list` reads it, and says "no table" if it is gone.
            Err(err) if err.code() == Some(tonic::Code::NotFound) => {
                tracing::warn!(%table, error = %err, "the Storage Read API did not find a table tables.get found; reading through tabledata.list");
                Ok(None)
            }
            Err(err) => Err(in_context(&what, err)),
        }
    }

    /// The rows of `table` as JSON lines, a block a chunk, through the
    /// Storage Read API; through `tabledata.list` when the API refuses
    /// this caller.
    pub(super) fn read_api_lines(&self, table: &BigQueryUri) -> BoxStream<'static, Result<Bytes>> {
        let bq = self.clone();
        let table = table.clone();
        let endpoint = self
            .inner
            .read_api
            .as_ref()
            .map(|c| c.endpoint.clone())
            .unwrap_or_default();
        futures::stream::once(async move {
            let info = bq.table(&table).await?.ok_or_else(|| Error::BigQuery {
                message: format!("no table {table}"),
                http_status: Some(404),
                source: None,
            })?;
            let Some(session) = bq.read_session(&table, &endpoint).await? else {
                return Ok(bq.rest_lines(&table));
            };
            let schema = match &session.schema {
                Some(Schema::AvroSchema(s)) => {
                    Arc::new(RowSchema::parse(&s.schema, info.schema())?)
                }
                _ => {
                    return Err(Error::BigQuery {
                        message: format!(
                            "the Storage Read API session on {table} has no Avro schema"
                        ),
                        http_status: None,
                        source: None,
                    })
                }
            };
            let streams = session.streams.into_iter().map(move |s| {
                read_stream(
                    bq.clone(),
                    s.name,
                    schema.clone(),
                    endpoint.clone(),
                    table.to_string(),
                )
            });
            Ok(futures::stream::iter(streams)
                .flatten_unordered(STREAMS_AT_ONCE)
                .boxed())
        })
        .flat_map(|r| match r {
            Ok(s) => s,
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .boxed()
    }
}

fn in_context(what: &str, err: Error) -> Error {
    Error::BigQuery {
        message: format!("{what}: {err}"),
        http_status: None,
        source: Some(Box::new(err)),
    }
}

struct StreamState {
    bq: BigQuery,
    name: String,
    schema: Arc<RowSchema>,
    endpoint: String,
    table: String,
    offset: i64,
    open: Option<Streaming<ReadRowsResponse>>,
    attempt: u32,
    started: Instant,
    /// A block of rows being written out a chunk at a time.
    pending: Option<(Bytes, Block)>,
}

/// The JSON a chunk of a block's rows is written to, at most (plus a row).
const CHUNK_BYTES: usize = 1 << 20;

/// One stream's rows, opened again at its offset after a break.
fn read_stream(
    bq: BigQuery,
    name: String,
    schema: Arc<RowSchema>,
    endpoint: String,
    table: String,
) -> BoxStream<'static, Result<Bytes>> {
    let state = StreamState {
        bq,
        name,
        schema,
        endpoint,
        table,
        offset: 0,
        open: None,
        attempt: 0,
        started: Instant::now(),
        pending: None,
    };
    futures::stream::try_unfold(state, |mut st| async move {
        loop {
            // A block is written out before the next is asked for: memory
            // is one block and one chunk of lines.
            if let Some((block, mut cursor)) = st.pending.take() {
                let mut out = Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4);
                st.schema.write_some(&block, &mut cursor, &mut out, CHUNK_BYTES)?;
                if !cursor.done() {
                    st.pending = Some((block, cursor));
                }
                if out.is_empty() {
                    continue;
                }
                return Ok(Some((Bytes::from(out), st)));
            }
            let got = match st.open.as_mut() {
                Some(s) => s.message().await.map_err(|e| Error::from_status(e, &st.endpoint)),
                None => {
                    st.attempt += 1;
                    let client = st.bq.read_client()?;
                    let req = with_routing(
                        ReadRowsRequest {
                            read_stream: st.name.clone(),
                            offset: st.offset,
                        },
                        "read_stream",
                        &st.name,
                    );
                    match client.clone().read_rows(req).await {
                        Ok(s) => {
                            st.open = Some(s.into_inner());
                            continue;
                        }
                        Err(e) => Err(Error::from_status(e, &st.endpoint)),
                    }
                }
            };
            match got {
                Ok(Some(resp)) => {
                    if resp.row_count < 0 {
                        return Err(Error::BigQuery {
                            message: format!("the Storage Read API sent a block of {} rows of {}", resp.row_count, st.table),
                            http_status: None,
                            source: None,
                        });
                    }
                    if let Some(Rows::AvroRows(rows)) = resp.rows {
                        let n = u64::try_from(resp.row_count).unwrap_or(0);
                        st.pending = Some((rows.serialized_binary_rows, Block::new(n)));
                    } else if resp.row_count > 0 {
                        return Err(Error::BigQuery {
                            message: format!("the Storage Read API sent {} rows of {} not in Avro", resp.row_count, st.table),
                            http_status: None,
                            source: None,
                        });
                    }
                    st.offset = st.offset.checked_add(resp.row_count).ok_or_else(|| Error::BigQuery {
                        message: format!("the Storage Read API sent more rows of {} than can be counted", st.table),
                        http_status: None,
                        source: None,
                    })?;
                    if resp.row_count > 0 {
                        // Progress: a later break starts its budget afresh.
                        st.attempt = 0;
                        st.started = Instant::now();
                    }
                }
                Ok(None) => return Ok(None),
                Err(err) => {
                    st.open = None;
                    let delay = if retryable_read(&err) {
                        // Judged as UNAVAILABLE: a reset is retried like one.
                        let as_unavailable = Error::from_status(tonic::Status::unavailable(err.to_string()), "");
                        st.bq.retry().next_delay(st.attempt.max(1), &as_unavailable, st.started.elapsed())
                    } else {
                        None
                    };
                    match delay {
                        Some(d) => {
                            tracing::warn!(stream = %st.name, offset = st.offset, delay = ?d, error = %err, "a Storage Read API stream broke; opening it again at its offset");
                            tokio::time::sleep(d).await;
                        }
                        None => {
                            return Err(in_context(
                                &format!("reading the rows of {} (stream {}, row {})", st.table, st.name, st.offset),
                                err,
                            ))
                        }
                    }
                }
            }
        }
    })
    .boxed()
}
