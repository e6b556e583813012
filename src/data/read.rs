//! [`ResultReader`]: one entry point for reading results, from a local
//! directory or Cloud Storage, with or without the inputs to join to.

use std::path::PathBuf;

use futures::TryStreamExt;

use super::{
    join::{read_joined, Inputs},
    reader::{
        is_prediction_file, local_output_files, read_files, ReadOptions, ResultStream, SourceFile,
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
/// ```no_run
/// # async fn demo() -> vertex_batch::Result<()> {
/// use futures::StreamExt;
/// use vertex_batch::data::{Inputs, ResultReader};
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
    /// use vertex_batch::data::ResultReader;
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
    /// use vertex_batch::data::ResultReader;
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
    /// use vertex_batch::{data::ResultReader, storage::Storage};
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

    /// The Cloud Storage client for `gs://` outputs and inputs.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use vertex_batch::{data::ResultReader, storage::Storage};
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
    /// use vertex_batch::data::{Inputs, ResultReader};
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
    /// use vertex_batch::data::{ReadOptions, ResultReader};
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
    /// use vertex_batch::data::{Inputs, ResultReader};
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
                Output::Local(p) if p.is_dir() => local_output_files(p)?
                    .into_iter()
                    .map(SourceFile::local)
                    .collect(),
                Output::Local(p) => vec![SourceFile::local(p.clone())],
                Output::Gcs(dir) => {
                    let storage = self.storage.as_ref().ok_or_else(|| {
                        Error::config(format!(
                            "reading {dir} needs a Cloud Storage client: call .storage(..)"
                        ))
                    })?;
                    gcs_output_files(storage, dir).await?
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
    let objects_sizes = objects
        .iter()
        .map(|o| (o.uri().object().to_owned(), o.size()))
        .collect();
    let mut files: Vec<GcsUri> = objects
        .into_iter()
        .map(|o| o.uri().clone())
        .filter(|u| is_prediction_file(u.object()))
        .collect();
    files.sort_by(|a, b| a.object().cmp(b.object()));
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
