//! Where a batch keeps what it stages: a Cloud Storage prefix
//! (`gs://BUCKET/PREFIX/KEY/…`, objects) or a BigQuery dataset
//! (`bq://PROJECT.DATASET`, tables). The batch and its claims speak of
//! *documents* (the manifest, a part's claim: small JSON, written
//! create-only or version-matched) and *parts* (the staged input lines and
//! each job's output); this module maps them onto either backend.
//!
//! | what | Cloud Storage | BigQuery |
//! |---|---|---|
//! | a document `manifest.json` | object `ROOT/manifest.json` | table `vb_KEY_H__manifest`, the JSON in its description |
//! | its version | the object's generation | the table's etag |
//! | a part's input | object `ROOT/input/ATTEMPT/part-N.jsonl` | table `vb_KEY_H__input_ATTEMPT_part_N` (`key` STRING, `request` JSON), one load job, streamed |
//! | a part's output | prefix `ROOT/output/rR-pN` | table `vb_KEY_H__output_rR_pN`, made by the job |
//!
//! (`KEY_H`: the batch key with `-` as `_`, and 8 hex digits of its
//! SHA-256, so two keys never share tables.) A table is created
//! create-only on BigQuery and on bqemulator alike; an etag-matched update
//! is sent with `If-Match`, which bqemulator ignores (as fake-gcs-server
//! ignores `ifGenerationMatch`): there, the reconcile by request key keeps
//! one live job per part.

use bytes::Bytes;
use futures::TryStreamExt;

use crate::batch::read::{join::Inputs, open::ResultReader, stream::SourceFile};
use crate::{
    bigquery::{BigQuery, Field, LoadWriter},
    error::{Error, Result},
    family::Family,
    job::{Job, OutputLocation},
    storage::{ObjectWriter, Storage},
    uri::{BigQueryUri, GcsUri},
};

/// The longest document a BigQuery table description holds.
const MAX_DESCRIPTION: usize = 16_384;

/// A client a batch can stage with: a [`Storage`] for `gs://` staging, a
/// [`BigQuery`] for `bq://PROJECT.DATASET` staging.
///
/// ```no_run
/// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
/// use vertex_batch::{bigquery::BigQuery, batch::BatchSpec, JobSpec};
///
/// let bq = BigQuery::for_client(&client)?;
/// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "bq://my-project.batches");
/// let batch = client.start_batch(&bq, &spec, [("q1", "Why is the sky blue?")]).await?;
/// # Ok(()) }
/// ```
pub trait StagingClient: sealed::Sealed {
    /// The client, by kind.
    ///
    /// ```
    /// use vertex_batch::{batch::{Backend, StagingClient}, storage::Storage};
    /// let storage = Storage::builder().ignore_env().build()?;
    /// assert!(matches!(storage.backend(), Backend::Gcs(_)));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    fn backend(&self) -> Backend;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::storage::Storage {}
    impl Sealed for crate::bigquery::BigQuery {}
    impl Sealed for crate::batch::stage::Backend {}
}

impl StagingClient for Storage {
    fn backend(&self) -> Backend {
        Backend::Gcs(self.clone())
    }
}

impl StagingClient for BigQuery {
    fn backend(&self) -> Backend {
        Backend::Bq(self.clone())
    }
}

impl StagingClient for Backend {
    fn backend(&self) -> Backend {
        self.clone()
    }
}

/// A staging client of either kind, chosen at run time (e.g. from the
/// staging location's scheme).
///
/// ```
/// use vertex_batch::{bigquery::BigQuery, batch::Backend, storage::Storage};
///
/// let staging = "bq://my-project.batches";
/// let backend = if staging.starts_with("bq://") {
///     Backend::Bq(BigQuery::builder().ignore_env().build()?)
/// } else {
///     Backend::Gcs(Storage::builder().ignore_env().build()?)
/// };
/// assert!(matches!(backend, Backend::Bq(_)));
/// # Ok::<(), vertex_batch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub enum Backend {
    /// Cloud Storage.
    Gcs(Storage),
    /// BigQuery.
    Bq(BigQuery),
}

/// A document's version: the precondition of the next write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Version {
    /// A Cloud Storage generation.
    Generation(u64),
    /// A BigQuery table's etag.
    Etag(String),
}

/// One batch's staging area.
#[derive(Debug, Clone)]
pub(crate) enum Area {
    Gcs {
        storage: Storage,
        /// `gs://BUCKET/PREFIX/KEY`.
        root: GcsUri,
    },
    Bq {
        bq: BigQuery,
        /// `bq://PROJECT.DATASET`.
        dataset: BigQueryUri,
        /// The tables' common prefix, `vb_KEY_H`.
        prefix: String,
    },
}

impl Area {
    /// The area of batch `key` under `staging` (`gs://BUCKET[/PREFIX]` or
    /// `bq://PROJECT.DATASET`), with `backend` as its client.
    pub(crate) fn new(backend: Backend, staging: &str, key: &str) -> Result<Area> {
        match (backend, staging.starts_with("bq://")) {
            (Backend::Gcs(storage), false) => {
                let staging = GcsUri::parse_field(staging, "staging")?;
                Ok(Area::Gcs {
                    storage,
                    root: child(&staging, key)?,
                })
            }
            (Backend::Bq(bq), true) => {
                let dataset = BigQueryUri::parse_field(staging, "staging", false)?;
                if dataset.table().is_some() {
                    return Err(Error::validation(
                        "staging",
                        format!(
                            "{staging} names a table: a batch stages into a dataset, \
                             bq://PROJECT.DATASET"
                        ),
                    ));
                }
                Ok(Area::Bq {
                    bq,
                    dataset,
                    prefix: table_prefix(key),
                })
            }
            (Backend::Gcs(_), true) => Err(Error::validation(
                "staging",
                format!("staging {staging} is BigQuery: start the batch with a BigQuery client"),
            )),
            (Backend::Bq(_), false) => Err(Error::validation(
                "staging",
                format!(
                    "staging {staging} is not bq://PROJECT.DATASET: start a Cloud Storage \
                     batch with a Storage client"
                ),
            )),
        }
    }

    /// The batch's root as a person reads it: `gs://…/KEY`, or
    /// `bq://PROJECT.DATASET (tables vb_KEY_H__*)`.
    pub(crate) fn root(&self) -> String {
        match self {
            Area::Gcs { root, .. } => root.to_string(),
            Area::Bq {
                dataset, prefix, ..
            } => format!("{dataset} (tables {prefix}__*)"),
        }
    }

    /// Where the document `rel` (`manifest.json`, `claims/r0-p00000.json`)
    /// lives, for messages.
    pub(crate) fn doc_name(&self, rel: &str) -> String {
        match self {
            Area::Gcs { root, .. } => format!("{root}/{rel}"),
            Area::Bq { .. } => self
                .table(rel)
                .map_or_else(|_| rel.to_owned(), |t| t.to_string()),
        }
    }

    /// The table standing for `rel` in a BigQuery area.
    fn table(&self, rel: &str) -> Result<BigQueryUri> {
        let Area::Bq {
            dataset, prefix, ..
        } = self
        else {
            return Err(Error::config("not a BigQuery staging area"));
        };
        let stem = rel
            .strip_suffix(".json")
            .or_else(|| rel.strip_suffix(".jsonl"))
            .unwrap_or(rel);
        let name: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Ok(BigQueryUri::parse_field(
            &format!(
                "bq://{}.{}.{prefix}__{name}",
                dataset.project(),
                dataset.dataset()
            ),
            "staging",
            true,
        )?)
    }

    /// The document `rel` and its version; `None` when there is none.
    pub(crate) async fn read_doc(&self, rel: &str) -> Result<Option<(Vec<u8>, Option<Version>)>> {
        match self {
            Area::Gcs { storage, root } => {
                let at = child(root, rel)?;
                let Some(info) = storage.metadata(&at).await? else {
                    return Ok(None);
                };
                let bytes: Vec<Bytes> = storage.read(&at, None).await?.try_collect().await?;
                Ok(Some((
                    bytes.concat(),
                    info.generation().map(Version::Generation),
                )))
            }
            Area::Bq { bq, .. } => {
                let Some(t) = bq.table(&self.table(rel)?).await? else {
                    return Ok(None);
                };
                Ok(Some((
                    t.description().unwrap_or_default().as_bytes().to_vec(),
                    t.etag().map(|e| Version::Etag(e.to_owned())),
                )))
            }
        }
    }

    /// The document's version, without its content: `None` when there is
    /// no document, `Some(None)` when the backend reports no version.
    pub(crate) async fn doc_version(&self, rel: &str) -> Result<Option<Option<Version>>> {
        match self {
            Area::Gcs { storage, root } => Ok(storage
                .metadata(&child(root, rel)?)
                .await?
                .map(|i| i.generation().map(Version::Generation))),
            Area::Bq { bq, .. } => Ok(bq
                .table(&self.table(rel)?)
                .await?
                .map(|t| t.etag().map(|e| Version::Etag(e.to_owned())))),
        }
    }

    /// Writes the document only if there is none: `None` when one exists
    /// (another writer's), else the new version.
    pub(crate) async fn create_doc(
        &self,
        rel: &str,
        doc: Vec<u8>,
    ) -> Result<Option<Option<Version>>> {
        match self {
            Area::Gcs { storage, root } => Ok(storage
                .create_bytes(&child(root, rel)?, doc)
                .await?
                .map(|i| i.generation().map(Version::Generation))),
            Area::Bq { bq, .. } => {
                let text = description(rel, doc)?;
                let schema = [Field::new("document", "STRING")];
                Ok(bq
                    .create_table(&self.table(rel)?, &schema, Some(&text))
                    .await?
                    .map(|t| t.etag().map(|e| Version::Etag(e.to_owned()))))
            }
        }
    }

    /// Writes the document over the one at `version`: `None` when it moved
    /// on since (another writer's change), else the new version.
    pub(crate) async fn replace_doc(
        &self,
        rel: &str,
        doc: Vec<u8>,
        version: &Version,
    ) -> Result<Option<Option<Version>>> {
        match (self, version) {
            (Area::Gcs { storage, root }, Version::Generation(g)) => Ok(storage
                .replace_bytes(&child(root, rel)?, doc, *g)
                .await?
                .map(|i| i.generation().map(Version::Generation))),
            (Area::Bq { bq, .. }, Version::Etag(e)) => {
                let text = description(rel, doc)?;
                Ok(bq
                    .set_description(&self.table(rel)?, &text, Some(e))
                    .await?
                    .map(|t| t.etag().map(|e| Version::Etag(e.to_owned()))))
            }
            _ => Err(Error::config(format!(
                "a version of another backend for {}",
                self.doc_name(rel)
            ))),
        }
    }

    /// Writes the document whatever is there.
    pub(crate) async fn put_doc(&self, rel: &str, doc: Vec<u8>) -> Result<Option<Version>> {
        match self {
            Area::Gcs { storage, root } => Ok(storage
                .upload_bytes(&child(root, rel)?, doc)
                .await?
                .generation()
                .map(Version::Generation)),
            Area::Bq { bq, .. } => {
                let table = self.table(rel)?;
                let text = description(rel, doc.clone())?;
                match bq.set_description(&table, &text, None).await {
                    Ok(Some(t)) => Ok(t.etag().map(|e| Version::Etag(e.to_owned()))),
                    Ok(None)
                    | Err(Error::BigQuery {
                        http_status: Some(404),
                        ..
                    }) => self
                        .create_doc(rel, doc)
                        .await?
                        .ok_or_else(|| Error::BigQuery {
                            message: format!("{table} appeared while it was written"),
                            http_status: Some(409),
                            source: None,
                        }),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Where staged input `rel` (`input/ATTEMPT/part-00000.jsonl`) goes.
    pub(crate) fn part(&self, rel: &str) -> Result<String> {
        match self {
            Area::Gcs { root, .. } => Ok(child(root, rel)?.to_string()),
            Area::Bq { .. } => Ok(self.table(rel)?.to_string()),
        }
    }

    /// Where part output `rel` (`output/r0-p00000`) goes: a job's output
    /// prefix, or its output table.
    pub(crate) fn output(&self, rel: &str) -> Result<String> {
        self.part(rel)
    }

    /// The columns of a staged input table of `family` (SERVICE.md's BigQuery
    /// input columns per family).
    fn input_schema(family: Family) -> Result<Vec<Field>> {
        let f = |n: &str, t: &str| Field::new(n, t);
        Ok(match family {
            Family::Gemini => vec![f("key", "STRING"), f("request", "JSON")],
            Family::Claude => vec![f("custom_id", "STRING"), f("request", "JSON")],
            Family::OpenModel => vec![
                f("custom_id", "STRING"),
                f("method", "STRING"),
                f("url", "STRING"),
                f("body", "JSON"),
            ],
            Family::TextEmbedding => vec![
                f("key", "STRING"),
                f("content", "STRING"),
                f("task_type", "STRING"),
                f("title", "STRING"),
            ],
            Family::GeminiEmbedding => {
                return Err(Error::validation(
                    "staging",
                    "Gemini embedding jobs read Cloud Storage only: stage them on gs://",
                ))
            }
        })
    }

    /// A writer of staged input lines to `target` (from [`Area::part`]).
    pub(crate) async fn writer(&self, target: &str, family: Family) -> Result<PartWriter> {
        match self {
            Area::Gcs { storage, .. } => {
                let uri = GcsUri::parse_field(target, "staging")?;
                Ok(PartWriter::Gcs(Box::new(storage.writer(&uri).await?)))
            }
            Area::Bq { bq, .. } => {
                let table = BigQueryUri::parse_field(target, "staging", true)?;
                let schema = Self::input_schema(family)?;
                // A job id of its own: a load sent again is the same job.
                let id = format!(
                    "vertex_batch_{}_{:016x}",
                    table.table().unwrap_or("table"),
                    fastrand::u64(..)
                );
                let writer = bq.load_writer(&table, &schema, &id).await?;
                Ok(PartWriter::Bq(Box::new(writer), table))
            }
        }
    }

    /// Removes staged input `target` (best effort: a file or table left
    /// behind costs storage, never a wrong answer).
    pub(crate) async fn remove(&self, target: &str) {
        let removed = match self {
            Area::Gcs { storage, .. } => match GcsUri::parse_field(target, "staging") {
                Ok(uri) => storage.delete(&uri).await,
                Err(e) => Err(e.into()),
            },
            Area::Bq { bq, .. } => match BigQueryUri::parse_field(target, "staging", true) {
                Ok(t) => bq.delete_table(&t).await,
                Err(e) => Err(e.into()),
            },
        };
        if let Err(error) = removed {
            tracing::warn!(target, %error, "could not remove a staged input no manifest names");
        }
    }

    /// Staged input `target`'s lines, for reading.
    pub(crate) fn source(&self, target: &str) -> Result<SourceFile> {
        match self {
            Area::Gcs { storage, .. } => Ok(SourceFile::gcs(
                storage.clone(),
                GcsUri::parse_field(target, "input")?,
            )),
            Area::Bq { bq, .. } => {
                let t = BigQueryUri::parse_field(target, "input", true)?;
                Ok(SourceFile::stream(t.to_string(), bq.lines(&t)))
            }
        }
    }

    /// The staged inputs `targets`, to join results to.
    pub(crate) fn inputs(&self, targets: &[String]) -> Result<Inputs> {
        match self {
            Area::Gcs { storage, .. } => Ok(Inputs::gcs(
                storage,
                targets
                    .iter()
                    .map(|t| GcsUri::parse_field(t, "input"))
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            )),
            Area::Bq { bq, .. } => Ok(Inputs::bigquery(
                bq,
                targets
                    .iter()
                    .map(|t| BigQueryUri::parse_field(t, "input", true))
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            )),
        }
    }

    /// A reader with nothing added yet, on this area's client.
    pub(crate) fn reader(&self) -> ResultReader {
        match self {
            Area::Gcs { storage, .. } => ResultReader::new().storage(storage.clone()),
            Area::Bq { .. } => ResultReader::new(),
        }
    }

    /// Adds `job`'s output (if it has one) to `reader`: only within what
    /// the part was given (`output`, from [`Area::output`]) — a job
    /// reporting another place must not pull other rows into the results.
    pub(crate) fn add_output(
        &self,
        reader: ResultReader,
        job: &Job,
        output: &str,
    ) -> Result<ResultReader> {
        match (self, job.output_location()) {
            (Area::Gcs { .. }, Some(OutputLocation::Gcs(dir))) => {
                let prefix = format!("{}/", output.trim_end_matches('/'));
                if !dir.starts_with(&prefix) {
                    return Err(outside(job, &dir, &prefix));
                }
                Ok(reader.output_gcs(GcsUri::parse_field(&dir, "output_dir")?))
            }
            (Area::Bq { bq, .. }, Some(OutputLocation::BigQuery { dataset, table })) => {
                let got = format!("{dataset}.{table}");
                if got != output {
                    return Err(outside(job, &got, output));
                }
                Ok(reader.output_bigquery(bq, BigQueryUri::parse_field(&got, "output_dir", true)?))
            }
            _ => Ok(reader),
        }
    }

    /// Checks that a BigQuery area's dataset exists in `location`, the
    /// jobs' region (the service refuses tables elsewhere). Nothing for
    /// Cloud Storage.
    pub(crate) async fn check_location(&self, location: &str) -> Result<()> {
        let Area::Bq { bq, dataset, .. } = self else {
            return Ok(());
        };
        match bq.dataset_location(dataset).await? {
            None => Err(Error::validation(
                "staging",
                format!("no dataset {dataset}: create it in {location} first"),
            )),
            Some(l) if l.eq_ignore_ascii_case(location) => Ok(()),
            Some(l) => Err(Error::validation(
                "staging",
                format!(
                    "dataset {dataset} is in {l}, and the jobs run in {location}: batch jobs \
                     read and write tables of their own region only; stage in a dataset in \
                     {location}"
                ),
            )),
        }
    }
}

fn outside(job: &Job, got: &str, want: &str) -> Error {
    Error::validation(
        "output_dir",
        format!(
            "job {} reports its output at {got}, outside what its part was given ({want})",
            job.name()
        ),
    )
}

/// A document as a table description: UTF-8, at most 16 KiB.
fn description(rel: &str, doc: Vec<u8>) -> Result<String> {
    let text = String::from_utf8(doc)
        .map_err(|e| Error::config(format!("writing {rel}: not UTF-8: {e}")))?;
    if text.len() > MAX_DESCRIPTION {
        return Err(Error::validation(
            "staging",
            format!(
                "{rel} is {} bytes, and a BigQuery table description holds {MAX_DESCRIPTION}: \
                 a batch this large (this many parts or rounds) needs Cloud Storage staging",
                text.len()
            ),
        ));
    }
    Ok(text)
}

/// `vb_KEY_H`: the batch key with `-` as `_`, and 8 hex digits of its
/// SHA-256 (so `a-b` and `a_b` never share tables).
fn table_prefix(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let hex: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("vb_{}_{hex}", key.replace('-', "_"))
}

fn child(root: &GcsUri, rel: &str) -> Result<GcsUri> {
    Ok(GcsUri::parse_field(
        &format!("{}/{rel}", root.to_string().trim_end_matches('/')),
        "staging",
    )?)
}

/// Writes one staged input: a resumable upload, of an object (Cloud
/// Storage) or of one load job's rows (BigQuery) — one chunk in memory.
pub(crate) enum PartWriter {
    Gcs(Box<ObjectWriter>),
    Bq(Box<LoadWriter>, BigQueryUri),
}

impl PartWriter {
    /// Appends lines (whole, newline-terminated).
    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<()> {
        match self {
            PartWriter::Gcs(w) => w.write(data).await,
            PartWriter::Bq(w, _) => w.write(data).await,
        }
    }

    /// Finishes the part: the object exists, or the table holds every row
    /// (a load job: all rows or none). Returns where it is.
    pub(crate) async fn finish(self) -> Result<String> {
        match self {
            PartWriter::Gcs(w) => Ok(w.finish().await?.uri().to_string()),
            PartWriter::Bq(w, table) => {
                w.finish().await?;
                Ok(table.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_named_from_the_key_and_never_shared_by_two_keys() {
        let bq = BigQuery::builder().ignore_env().build().unwrap();
        let a = Area::new(Backend::Bq(bq.clone()), "bq://p.ds", "a-b").unwrap();
        let b = Area::new(Backend::Bq(bq), "bq://p.ds", "a_b").unwrap();
        let ta = a.part("input/3f2a/part-00000.jsonl").unwrap();
        let tb = b.part("input/3f2a/part-00000.jsonl").unwrap();
        assert!(ta.starts_with("bq://p.ds.vb_a_b_"), "{ta}");
        assert!(ta.ends_with("__input_3f2a_part_00000"), "{ta}");
        assert_ne!(ta, tb);
        assert!(a.doc_name("manifest.json").ends_with("__manifest"));
    }

    #[test]
    fn a_client_of_the_other_kind_or_a_table_is_refused() {
        let bq = BigQuery::builder().ignore_env().build().unwrap();
        let storage = Storage::builder().ignore_env().build().unwrap();
        assert!(Area::new(Backend::Bq(bq.clone()), "gs://b/p", "k").is_err());
        assert!(Area::new(Backend::Gcs(storage), "bq://p.ds", "k").is_err());
        let err = Area::new(Backend::Bq(bq), "bq://p.ds.t", "k").unwrap_err();
        assert!(err.to_string().contains("names a table"), "{err}");
    }

    #[test]
    fn a_document_over_a_description_is_refused_with_the_way_out() {
        let err = description("manifest.json", vec![b'x'; MAX_DESCRIPTION + 1]).unwrap_err();
        assert!(
            err.to_string().contains("needs Cloud Storage staging"),
            "{err}"
        );
        assert!(description("manifest.json", vec![0xff]).is_err());
    }
}
