//! [`ResultReader`]: one entry point for reading results, from a local
//! directory or Cloud Storage, with or without the inputs to join to.

use std::path::PathBuf;

use futures::TryStreamExt;

use crate::batch::read::{
    join::{read_joined, Inputs},
    stream::{
        is_incremental, is_prediction_file, local_files, output_files_in_order, read_files,
        ReadOptions, ResultStream, SourceFile,
    },
};
use crate::{
    error::{Error, Result},
    storage::Storage,
    uri::GcsUri,
};

/// Reads a batch's results.
///
/// Add one or more output locations (newest first when a follow-up job's
/// results should win over the original's), optionally the inputs, and
/// read. Without inputs every distinct key comes out once; with inputs every
/// input key comes out exactly once, missing ones included.
///
/// # What an output directory may hold
///
/// An output directory is one job's: its `gcs_output_directory`
/// (`…/prediction-model-<timestamp>/`), or the prefix the job was given
/// when it holds that one directory. Every `*.jsonl` file below it is read,
/// final files before `incremental_predictions/` chunks (the first row read
/// for a key wins, and the final file's is the one to keep). Two kinds of
/// directory are refused by [`ResultReader::read`] ([`Error::Validation`],
/// field `output_dir`, naming what to read instead) rather than read into
/// nonsense:
///
/// * a batch's staging directory (`STAGING/KEY`, holding `manifest.json`
///   and the staged `input/` files, which are prompts, not results);
/// * a prefix holding several jobs' `prediction-model-*` directories (a
///   batch's `output/`, or an output prefix reused by several jobs), whose
///   rows would be merged as if they were one job's.
///
/// ```no_run
/// # async fn demo() -> vertex_batch::Result<()> {
/// use futures::StreamExt;
/// use vertex_batch::batch::{Inputs, ResultReader};
///
/// let mut rows = ResultReader::new()
///     .output_local("out/prediction-model-2026-11-22T10:00:00.000Z")
///     .inputs(Inputs::local(["prompts.jsonl"]))
///     .read()
///     .await?;
/// while let Some(row) = rows.next().await {
///     let row = row?;
///     println!("{}: {}", row.key().unwrap_or("?"), row.outcome().kind());
/// }
/// let totals = rows.totals();
/// assert_eq!(totals.rows(), totals.succeeded + totals.failed + totals.blocked + totals.missing);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct ResultReader {
    outputs: Vec<Output>,
    inputs: Option<Inputs>,
    options: ReadOptions,
    storage: Option<Storage>,
}

#[derive(Debug)]
enum Output {
    /// A local output directory (every `*.jsonl` below it) or one file.
    Local(PathBuf),
    /// A job's `gcs_output_directory` (every `*.jsonl` below it).
    Gcs(GcsUri),
    /// A BigQuery output table.
    BigQuery(crate::bigquery::BigQuery, crate::uri::BigQueryUri),
}

impl ResultReader {
    /// A reader with no outputs yet and the default [`ReadOptions`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # std::fs::write(dir.path().join("predictions.jsonl"), concat!(
    /// #     r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]},"finishReason":"STOP"}]}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::batch::ResultReader;
    ///
    /// // `dir`: a job's output directory, downloaded.
    /// let (rows, _errors, totals) = ResultReader::new().output_local(dir.path()).read().await?.collect_all().await;
    /// assert_eq!(rows[0].key(), Some("q1"));
    /// assert_eq!(totals.succeeded, 1);
    /// # Ok(()) }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a local output directory (every `*.jsonl` file below it) or a
    /// single output file.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # std::fs::write(dir.path().join("predictions.jsonl"), concat!(
    /// #     r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]},"finishReason":"STOP"}]}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::batch::ResultReader;
    ///
    /// // A downloaded output directory, or one file in it.
    /// let reader = ResultReader::new().output_local(dir.path().join("predictions.jsonl"));
    /// let (rows, _, _) = reader.read().await?.collect_all().await;
    /// assert_eq!(rows[0].text(), Some("Blue."));
    /// # Ok(()) }
    /// ```
    pub fn output_local(mut self, path: impl Into<PathBuf>) -> Self {
        self.outputs.push(Output::Local(path.into()));
        self
    }

    /// Adds a Cloud Storage output directory, e.g. a job's
    /// `output_info.gcs_output_directory`: every `*.jsonl` object below it
    /// (`predictions.jsonl`, `incremental_predictions/…`) is read. Needs
    /// [`ResultReader::storage`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use vertex_batch::{batch::ResultReader, storage::Storage};
    ///
    /// let storage = Storage::local(dir.path()); // or Storage::for_client(&client)?
    /// let line = r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]}}]}}"#;
    /// storage.upload_bytes(&"gs://my-bucket/out/predictions.jsonl".parse()?, line).await?;
    /// let rows = ResultReader::new()
    ///     .storage(storage)
    ///     .output_gcs("gs://my-bucket/out".parse()?)
    ///     .read()
    ///     .await?;
    /// let (rows, _errors, _totals) = rows.collect_all().await;
    /// assert_eq!(rows[0].text(), Some("Blue."));
    /// # Ok(()) }
    /// ```
    pub fn output_gcs(mut self, dir: GcsUri) -> Self {
        self.outputs.push(Output::Gcs(dir));
        self
    }

    /// Adds a BigQuery output table, e.g. the job's
    /// `output_info.bigquery_output_dataset` plus `bigquery_output_table`:
    /// its rows are read page by page and classified as an output file's
    /// lines are (the input's columns, `key` among them, carried through;
    /// `response` and `status`).
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// use vertex_batch::{bigquery::BigQuery, batch::ResultReader};
    ///
    /// let bq = BigQuery::for_client(&client)?;
    /// let rows = ResultReader::new()
    ///     .output_bigquery(&bq, "bq://my-project.my_dataset.predictions_2026_11_22".parse()?)
    ///     .read()
    ///     .await?;
    /// let (rows, _errors, totals) = rows.collect_all().await;
    /// println!("{} rows, {} succeeded", rows.len(), totals.succeeded);
    /// # Ok(()) }
    /// ```
    pub fn output_bigquery(
        mut self,
        bigquery: &crate::bigquery::BigQuery,
        table: crate::uri::BigQueryUri,
    ) -> Self {
        self.outputs.push(Output::BigQuery(bigquery.clone(), table));
        self
    }

    /// The Cloud Storage client for `gs://` outputs and inputs.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use vertex_batch::{batch::ResultReader, storage::Storage};
    ///
    /// let storage = Storage::local(dir.path()); // or Storage::for_client(&client)?
    /// let rows = ResultReader::new().storage(storage).output_gcs("gs://my-bucket/out".parse()?).read().await?;
    /// assert_eq!(rows.collect_all().await.0.len(), 0); // nothing under gs://my-bucket/out yet
    /// # Ok(()) }
    /// ```
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Joins the results to these inputs.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # std::fs::write(dir.path().join("predictions.jsonl"), concat!(
    /// #     r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]},"finishReason":"STOP"}]}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::batch::{Inputs, ResultReader};
    ///
    /// let inputs = Inputs::memory("prompts.jsonl", "{\"key\":\"q1\",\"request\":{}}\n{\"key\":\"q2\",\"request\":{}}\n");
    /// let reader = ResultReader::new().output_local(dir.path()).inputs(inputs);
    /// let (_, _, totals) = reader.read().await?.collect_all().await;
    /// assert_eq!((totals.succeeded, totals.missing), (1, 1)); // q2 never came back
    /// # Ok(()) }
    /// ```
    pub fn inputs(mut self, inputs: Inputs) -> Self {
        self.inputs = Some(inputs);
        self
    }

    /// How to read.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # std::fs::write(dir.path().join("predictions.jsonl"), concat!(
    /// #     r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]},"finishReason":"STOP"}]}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::batch::{ReadOptions, ResultReader};
    ///
    /// let reader = ResultReader::new().output_local(dir.path()).options(ReadOptions::new().parallelism(1));
    /// let (rows, _, _) = reader.read().await?.collect_all().await;
    /// assert_eq!(rows.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn options(mut self, options: ReadOptions) -> Self {
        self.options = options;
        self
    }

    /// Lists the output files and starts reading.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let output = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&output, concat!(
    /// #     r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]},"finishReason":"STOP"}]}}"#, "\n",
    /// #     r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]},"finishReason":"STOP"}]}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::batch::{Inputs, ResultReader};
    ///
    /// // `output` holds q1 twice; the inputs were q1 and q2.
    /// let inputs = Inputs::memory("prompts.jsonl", "{\"key\":\"q1\",\"request\":{}}\n{\"key\":\"q2\",\"request\":{}}\n");
    /// let rows = ResultReader::new().output_local(&output).inputs(inputs).read().await?;
    /// let (rows, _errors, totals) = rows.collect_all().await;
    /// assert_eq!(rows.len(), 2); // every input key exactly once
    /// assert_eq!((totals.succeeded, totals.missing, totals.duplicates), (1, 1, 1));
    /// # Ok(()) }
    /// ```
    pub async fn read(self) -> Result<ResultStream> {
        let mut groups = Vec::with_capacity(self.outputs.len());
        for out in &self.outputs {
            groups.push(match out {
                Output::Local(p) if p.is_dir() => {
                    let all = local_files(p)?;
                    let rel: Vec<String> = all
                        .iter()
                        .map(|f| {
                            let r = f.strip_prefix(p).unwrap_or(f);
                            r.components()
                                .map(|c| c.as_os_str().to_string_lossy())
                                .collect::<Vec<_>>()
                                .join("/")
                        })
                        .collect();
                    let shown = p.display().to_string();
                    let sep = if shown.ends_with(std::path::MAIN_SEPARATOR) {
                        ""
                    } else {
                        "/"
                    };
                    check_one_job(&format!("{shown}{sep}"), &rel)?;
                    output_files_in_order(p, all)
                        .into_iter()
                        .map(SourceFile::local)
                        .collect()
                }
                Output::Local(p) => vec![SourceFile::local(p.clone())],
                Output::Gcs(dir) => {
                    let storage = self.storage.as_ref().ok_or_else(|| {
                        Error::config(format!(
                            "reading {dir} needs a Cloud Storage client: call .storage(..)"
                        ))
                    })?;
                    gcs_output_files(storage, dir).await?
                }
                Output::BigQuery(bq, table) => {
                    vec![SourceFile::stream(table.to_string(), bq.lines(table))]
                }
            });
        }
        match self.inputs {
            Some(inputs) => read_joined(groups, inputs, self.options).await,
            None => Ok(read_files(
                groups.into_iter().flatten().collect(),
                self.options,
            )),
        }
    }
}

/// The prediction files below a `gs://` output directory, in name order,
/// each opened lazily as a download stream.
pub(crate) async fn gcs_output_files(storage: &Storage, dir: &GcsUri) -> Result<Vec<SourceFile>> {
    let prefix = dir_prefix(dir)?;
    let objects: Vec<crate::storage::ObjectInfo> = storage.list(&prefix).try_collect().await?;
    let rel = |u: &GcsUri| {
        u.object()
            .strip_prefix(prefix.object())
            .unwrap_or(u.object())
            .to_owned()
    };
    let all: Vec<String> = objects.iter().map(|o| rel(o.uri())).collect();
    let mut shown = prefix.to_string();
    if !shown.ends_with('/') {
        shown.push('/');
    }
    check_one_job(&shown, &all)?;
    let objects_sizes = objects
        .iter()
        .map(|o| (o.uri().object().to_owned(), o.size()))
        .collect();
    let mut files: Vec<GcsUri> = objects
        .into_iter()
        .map(|o| o.uri().clone())
        .filter(|u| is_prediction_file(u.object()))
        .collect();
    // Final files first: a row of `predictions.jsonl` wins over its copy
    // in an `incremental_predictions/` chunk.
    files.sort_by_cached_key(|u| (is_incremental(&rel(u)), u.object().to_owned()));
    let sizes: std::collections::HashMap<String, u64> = objects_sizes;
    Ok(files
        .into_iter()
        .map(|u| {
            let size = sizes.get(u.object()).copied();
            let mut f = SourceFile::gcs(storage.clone(), u);
            f.size = size;
            f
        })
        .collect())
}

/// Refuses a directory that is not one job's output (see the module
/// docs): `dir` is how it is shown, ending in `/`; `files` are the paths of
/// every file below it, relative to it, `/`-separated.
fn check_one_job(dir: &str, files: &[String]) -> Result<()> {
    // The `prediction-model-*` directories below, by their relative path.
    let mut jobs = std::collections::BTreeSet::new();
    for f in files {
        let parts: Vec<&str> = f.split('/').collect();
        if let Some(i) = parts[..parts.len().saturating_sub(1)]
            .iter()
            .position(|c| c.starts_with("prediction-model-"))
        {
            jobs.insert(parts[..=i].join("/"));
        }
    }
    let list = |jobs: &std::collections::BTreeSet<String>| {
        let mut shown: Vec<String> = jobs.iter().take(3).map(|j| format!("{dir}{j}/")).collect();
        if jobs.len() > 3 {
            shown.push(format!("and {} more", jobs.len() - 3));
        }
        shown.join(", ")
    };
    let manifest = files.iter().any(|f| f == "manifest.json");
    let staged = files
        .iter()
        .any(|f| f.starts_with("input/") && is_prediction_file(f));
    if manifest || staged {
        let holds = match (manifest, staged) {
            (true, true) => "manifest.json and staged inputs under input/",
            (true, false) => "manifest.json",
            _ => "staged inputs under input/",
        };
        let key = dir
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let read = if jobs.is_empty() {
            format!("its jobs' output directories (under {dir}output/) once they are written")
        } else {
            format!("one job's output directory at a time ({})", list(&jobs))
        };
        return Err(Error::validation(
            "output_dir",
            format!(
                "{dir} is a batch's staging directory (it holds {holds}), not a job's output: \
                 read {read}, or the whole batch through its request key \
                 (`vertex-batch run … --request-key {key}`, or `BatchSpec::request_key`)"
            ),
        ));
    }
    if jobs.len() > 1 {
        return Err(Error::validation(
            "output_dir",
            format!(
                "{dir} holds the output of {} jobs; read one job's output directory at a time: {}",
                jobs.len(),
                list(&jobs)
            ),
        ));
    }
    Ok(())
}

/// `dir` as a listing prefix ending in `/` (so `out/a` does not match
/// `out/ab/…`).
pub(crate) fn dir_prefix(dir: &GcsUri) -> Result<GcsUri> {
    let object = dir.object().trim_end_matches('/');
    if object.is_empty() {
        return Ok(dir.clone());
    }
    Ok(GcsUri::parse_field(
        &format!("gs://{}/{object}/", dir.bucket()),
        "output_dir",
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(key: &str, text: &str) -> String {
        format!(
            r#"{{"key":"{key}","status":"","response":{{"candidates":[{{"content":{{"parts":[{{"text":"{text}"}}]}},"finishReason":"STOP"}}]}}}}"#
        ) + "\n"
    }

    async fn put(storage: &Storage, uri: &str, text: impl Into<bytes::Bytes>) {
        storage
            .upload_bytes(&uri.parse().unwrap(), text)
            .await
            .unwrap();
    }

    async fn read_gcs(storage: &Storage, dir: &str) -> Result<ResultStream> {
        ResultReader::new()
            .storage(storage.clone())
            .output_gcs(dir.parse().unwrap())
            .read()
            .await
    }

    fn refusal(r: Result<ResultStream>) -> String {
        match r {
            Err(Error::Validation(v)) if v.field() == "output_dir" => v.message().to_owned(),
            Err(e) => panic!("another error: {e}"),
            Ok(s) => panic!("read: {s:?}"),
        }
    }

    /// A batch's staging directory: manifest, staged inputs, two jobs'
    /// output directories.
    async fn batch_root(storage: &Storage) {
        let root = "gs://bkt/batches/k1";
        put(storage, &format!("{root}/manifest.json"), "{}").await;
        let staged = format!(
            "{{\"key\":\"q1\",\"request\":{{\"contents\":[],\"labels\":{{\"{}\":\"roeyq\"}}}}}}\n",
            crate::format::key::KEY_LABEL
        );
        put(storage, &format!("{root}/input/part-00000.jsonl"), staged).await;
        for (part, key) in [("r0-p00000", "q1"), ("r0-p00001", "q2")] {
            put(
                storage,
                &format!("{root}/output/{part}/prediction-model-2026-11-22T10:00:00.000Z/predictions.jsonl"),
                answer(key, "a"),
            )
            .await;
        }
    }

    #[tokio::test]
    async fn a_batch_root_is_refused_naming_what_to_read_instead() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path());
        batch_root(&storage).await;
        let m = refusal(read_gcs(&storage, "gs://bkt/batches/k1").await);
        assert!(
            m.contains("gs://bkt/batches/k1/ is a batch's staging directory"),
            "{m}"
        );
        assert!(m.contains("manifest.json and staged inputs"), "{m}");
        assert!(
            m.contains(
                "gs://bkt/batches/k1/output/r0-p00000/prediction-model-2026-11-22T10:00:00.000Z/"
            ),
            "{m}"
        );
        assert!(m.contains("--request-key k1"), "{m}");
        // Its output/: two jobs.
        let m = refusal(read_gcs(&storage, "gs://bkt/batches/k1/output/").await);
        assert!(m.contains("holds the output of 2 jobs"), "{m}");
        assert!(m.contains("r0-p00001/prediction-model-"), "{m}");
        // One part's prefix, or its job's directory: one job, read.
        for one in [
            "gs://bkt/batches/k1/output/r0-p00000",
            "gs://bkt/batches/k1/output/r0-p00000/prediction-model-2026-11-22T10:00:00.000Z",
        ] {
            let (rows, errors, _) = read_gcs(&storage, one).await.unwrap().collect_all().await;
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].key(), Some("q1"));
        }
        // The same directories on the local disk.
        let local = dir.path().join("bkt/batches/k1");
        let refused = ResultReader::new().output_local(&local).read().await;
        assert!(refusal(refused).contains("is a batch's staging directory"));
        let refused = ResultReader::new()
            .output_local(local.join("output"))
            .read()
            .await;
        assert!(refusal(refused).contains("holds the output of 2 jobs"));
        // Staged inputs alone (the manifest not written yet) are refused too.
        let staged_only = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(staged_only.path().join("input")).unwrap();
        std::fs::write(staged_only.path().join("input/part-00000.jsonl"), "{}\n").unwrap();
        let refused = ResultReader::new()
            .output_local(staged_only.path())
            .read()
            .await;
        let m = refusal(refused);
        assert!(m.contains("(it holds staged inputs under input/)"), "{m}");
        assert!(m.contains("once they are written"), "{m}");
    }

    #[tokio::test]
    async fn the_final_file_wins_over_an_incremental_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path());
        let out = "gs://bkt/out/prediction-model-1";
        put(
            &storage,
            &format!("{out}/predictions.jsonl"),
            answer("a", "final") + &answer("b", "final"),
        )
        .await;
        put(
            &storage,
            &format!("{out}/incremental_predictions/predictions_0001.jsonl"),
            answer("a", "early"),
        )
        .await;
        let local = ResultReader::new()
            .output_local(dir.path().join("bkt/out/prediction-model-1"))
            .read()
            .await
            .unwrap();
        for stream in [read_gcs(&storage, out).await.unwrap(), local] {
            let (rows, errors, totals) = stream.collect_all().await;
            assert!(errors.is_empty(), "{errors:?}");
            let got: Vec<_> = rows
                .iter()
                .map(|r| (r.key().unwrap(), r.text().unwrap()))
                .collect();
            assert_eq!(got, [("a", "final"), ("b", "final")]);
            assert_eq!(totals.duplicates, 1);
        }
    }
}
