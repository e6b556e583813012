//! Joining output rows to the inputs that produced them: every input key
//! gets exactly one result, and inputs with no output row are
//! [`Outcome::Missing`](crate::format::Outcome::Missing) with their original request.
//!
//! # How
//!
//! 1. The inputs are read once for their keys: each key's 96-bit
//!    fingerprint goes into one sorted array (12 bytes a key, nothing else),
//!    plus, for keys too long for a reversible label, their label's hash.
//! 2. The outputs are read, newest first when there are several (a
//!    follow-up job's results win over the original's: the latest outcome per
//!    key). Each row's key (or key label) is looked up in the array on the
//!    parsing threads; one bit per input marks it seen. A row whose key was
//!    seen already is a duplicate; a row whose key is not an input is counted
//!    in [`Totals::unexpected`](crate::batch::Totals::unexpected) and logged.
//! 3. The inputs are read again, and every input never seen comes out as
//!    missing, with its request byte-exact.
//!
//! So `succeeded + failed + blocked + missing` always equals the number of
//! distinct input keys, and memory stays at about 12 bytes an input.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::{
    batch::read::stream::{parse_lines, ReadOptions, ResultStream, SourceFile, Totals},
    format::{
        fingerprint::{fingerprint, Fingerprint},
        results::{parse_line, ParsedLine, ResultRow},
    },
};

/// Where a batch's input lines (`{"key": …, "request": {…}}`) are read from.
/// They are read twice by a joined read, so this names them rather than
/// holding a stream.
///
/// ```
/// use vertex_batch::batch::Inputs;
///
/// let staged = Inputs::local(["batch/input/part-00000.jsonl", "batch/input/part-00001.jsonl"]);
/// assert_eq!(staged.len(), 2);
/// let small = Inputs::memory("prompts.jsonl", "{\"key\":\"q1\",\"request\":{\"contents\":[]}}\n");
/// assert!(!small.is_empty());
/// assert!(Inputs::default().is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    files: Vec<InputFile>,
}

#[derive(Clone, Debug)]
enum InputFile {
    Local(PathBuf),
    Memory(Arc<str>, Bytes),
    Gcs(crate::storage::Storage, crate::uri::GcsUri),
    BigQuery(crate::bigquery::BigQuery, crate::uri::BigQueryUri),
}

impl Inputs {
    /// Input files on the local disk, in order.
    ///
    /// ```
    /// use vertex_batch::batch::{Inputs, ResultReader};
    ///
    /// let reader = ResultReader::new()
    ///     .output_local("out/prediction-model-2026-11-22T10:00:00.000Z")
    ///     .inputs(Inputs::local(["prompts.jsonl"]));
    /// ```
    pub fn local(files: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        Inputs {
            files: files
                .into_iter()
                .map(|f| InputFile::Local(f.into()))
                .collect(),
        }
    }

    /// Input lines held in memory (e.g. a small batch built in a test).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// use vertex_batch::batch::{Inputs, ResultReader};
    ///
    /// let inputs = Inputs::memory("test-inputs", "{\"key\":\"a\",\"request\":{}}\n{\"key\":\"b\",\"request\":{}}\n");
    /// // No output yet: both inputs come back missing.
    /// let (_rows, _errors, totals) = ResultReader::new().inputs(inputs).read().await?.collect_all().await;
    /// assert_eq!(totals.missing, 2);
    /// # Ok(()) }
    /// ```
    pub fn memory(name: &str, jsonl: impl Into<Bytes>) -> Self {
        Inputs {
            files: vec![InputFile::Memory(name.into(), jsonl.into())],
        }
    }

    /// Input objects in Cloud Storage, in order (each is downloaded twice by
    /// a joined read: once for the keys, once for the missing requests).
    ///
    /// ```
    /// # fn main() -> vertex_batch::Result<()> {
    /// use vertex_batch::{batch::{Inputs, ResultReader}, storage::Storage};
    ///
    /// let storage = Storage::local("/tmp/gcs"); // or Storage::for_client(&client)?
    /// let inputs = Inputs::gcs(&storage, ["gs://my-bucket/batches/k/input/part-00000.jsonl".parse()?]);
    /// assert_eq!(inputs.len(), 1);
    /// let reader = ResultReader::new()
    ///     .storage(storage)
    ///     .output_gcs("gs://my-bucket/batches/k/output/r0-p00000".parse()?)
    ///     .inputs(inputs);
    /// # Ok(()) }
    /// ```
    pub fn gcs(
        storage: &crate::storage::Storage,
        objects: impl IntoIterator<Item = crate::uri::GcsUri>,
    ) -> Self {
        Inputs {
            files: objects
                .into_iter()
                .map(|u| InputFile::Gcs(storage.clone(), u))
                .collect(),
        }
    }

    /// Input tables in BigQuery (a `key` and a `request` column, as a
    /// BigQuery batch stages them), in order; each is read twice by a
    /// joined read.
    ///
    /// ```
    /// # fn main() -> vertex_batch::Result<()> {
    /// use vertex_batch::{bigquery::BigQuery, batch::Inputs};
    /// let bq = BigQuery::builder().ignore_env().emulator_host("127.0.0.1:9050").build()?;
    /// let inputs = Inputs::bigquery(&bq, ["bq://my-project.batches.nightly_r0_p00000".parse()?]);
    /// assert_eq!(inputs.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn bigquery(
        bigquery: &crate::bigquery::BigQuery,
        tables: impl IntoIterator<Item = crate::uri::BigQueryUri>,
    ) -> Self {
        Inputs {
            files: tables
                .into_iter()
                .map(|t| InputFile::BigQuery(bigquery.clone(), t))
                .collect(),
        }
    }

    /// How many input files there are.
    ///
    /// ```
    /// use vertex_batch::batch::Inputs;
    ///
    /// let inputs = Inputs::local(["prompts-0.jsonl", "prompts-1.jsonl"]);
    /// assert_eq!(inputs.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are no input files.
    ///
    /// ```
    /// use vertex_batch::batch::Inputs;
    ///
    /// assert!(!Inputs::memory("prompts.jsonl", "").is_empty()); // one (empty) file
    /// assert!(Inputs::local(Vec::<std::path::PathBuf>::new()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub(crate) fn open(&self) -> Vec<SourceFile> {
        self.files
            .iter()
            .map(|f| match f {
                InputFile::Local(p) => SourceFile::local(p.clone()),
                InputFile::Memory(name, bytes) => SourceFile::stream(
                    name.clone(),
                    futures::stream::once(futures::future::ready(Ok(bytes.clone()))).boxed(),
                ),
                InputFile::Gcs(storage, uri) => SourceFile::gcs(storage.clone(), uri.clone()),
                InputFile::BigQuery(bq, table) => {
                    SourceFile::stream(table.to_string(), bq.lines(table))
                }
            })
            .collect()
    }
}

fn parse_input(raw: &[u8]) -> std::result::Result<(String, Box<RawValue>), String> {
    let line = std::str::from_utf8(raw).map_err(|e| format!("not UTF-8: {e}"))?;
    crate::format::input::parse_input_text(line)?.ok_or_else(|| "a blank line".to_owned())
}

/// The inputs' keys, as sorted fingerprints.
pub(crate) struct KeyIndex {
    sorted: Vec<Fingerprint>,
    /// Hash-form key labels (keys too long to mirror reversibly) to their
    /// key.
    hashed_labels: HashMap<String, String>,
}

impl KeyIndex {
    fn position(&self, fp: Fingerprint) -> Option<u32> {
        self.sorted
            .binary_search(&fp)
            .ok()
            .and_then(|i| u32::try_from(i).ok())
    }

    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The position of the input whose key has fingerprint `fp`.
    pub(crate) fn position_of(&self, fp: Fingerprint) -> Option<u32> {
        self.position(fp)
    }

    /// The fingerprint of input `i`.
    pub(crate) fn fingerprint_at(&self, i: u32) -> Option<Fingerprint> {
        self.sorted.get(i as usize).copied()
    }

    /// An output line's row (its key recovered from its key label when
    /// the line lost it) and the position of its input, if any.
    pub(crate) fn locate(&self, line: ParsedLine) -> (ResultRow, Option<u32>) {
        let mut row = line.row;
        let index = match row.key() {
            Some(k) => self.position(fingerprint(k)),
            None => match line.key_label.as_deref() {
                Some(label) => match crate::format::key::decode_exact(label) {
                    Some(key) => {
                        let i = self.position(fingerprint(&key));
                        row.set_key(Some(key));
                        i
                    }
                    None => match self.hashed_labels.get(label) {
                        Some(key) => {
                            row.set_key(Some(key.clone()));
                            self.position(fingerprint(key))
                        }
                        None => None,
                    },
                },
                None => None,
            },
        };
        (row, index)
    }
}

/// Reads every input key. Duplicate keys are kept once (the writer never
/// makes them; a hand-made input may have them, and the joined read reports
/// each repeat as an error when it reads the inputs again).
pub(crate) async fn index_inputs(inputs: &Inputs, opts: &ReadOptions) -> Result<KeyIndex> {
    let mut lines = Box::pin(parse_lines(inputs.open(), opts.clone(), |raw| {
        let line = std::str::from_utf8(&raw).map_err(|e| format!("not UTF-8: {e}"))?;
        #[derive(Deserialize)]
        struct KeyOnly<'a> {
            #[serde(
                borrow,
                default,
                alias = "custom_id",
                deserialize_with = "crate::format::results::opt_str"
            )]
            key: Option<std::borrow::Cow<'a, str>>,
        }
        let view: KeyOnly<'_> =
            serde_json::from_str(line).map_err(|e| format!("not an input line: {e}"))?;
        let key = view
            .key
            .ok_or("the input line has no `key` (or `custom_id`)")?;
        let fp = fingerprint(&key);
        let label = crate::format::key::hashed_label(&key).map(|l| (l, key.into_owned()));
        Ok((fp, label))
    }));
    let mut sorted = Vec::new();
    let mut hashed_labels = HashMap::new();
    while let Some(item) = lines.next().await {
        let (fp, label) = item?;
        sorted.push(fp);
        if let Some((label, key)) = label {
            hashed_labels.insert(label, key);
        }
    }
    sorted.sort_unstable();
    sorted.dedup();
    sorted.shrink_to_fit();
    Ok(KeyIndex {
        sorted,
        hashed_labels,
    })
}

/// One output row matched to an input (or not).
struct Matched {
    row: ResultRow,
    index: Option<u32>,
}

/// A bit set over input positions.
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub(crate) fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    /// Sets bit `i`; returns whether it was already set.
    pub(crate) fn set(&mut self, i: u32) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        match self.0.get_mut(w) {
            Some(word) => {
                let was = *word & (1 << b) != 0;
                *word |= 1 << b;
                was
            }
            None => true,
        }
    }

    /// Whether bit `i` is set (a position past the end counts as set).
    pub(crate) fn get(&self, i: u32) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        self.0.get(w).is_none_or(|word| word & (1 << b) != 0)
    }
}

/// Reads `outputs` (groups of files, newest job first) joined to `inputs`.
pub(crate) async fn read_joined(
    outputs: Vec<Vec<SourceFile>>,
    inputs: Inputs,
    opts: ReadOptions,
) -> Result<ResultStream> {
    let index = Arc::new(index_inputs(&inputs, &opts).await?);
    let pricing = opts.clone();
    let totals = Arc::new(std::sync::Mutex::new(Totals::default()));
    let seen = Arc::new(std::sync::Mutex::new(Bits::new(index.len())));
    let seen_by_rows = seen.clone();
    let files: Vec<SourceFile> = outputs.into_iter().flatten().collect();
    let lookup = index.clone();
    let t = totals.clone();
    let rows = parse_lines(files, opts.clone(), move |raw| {
        let (row, index) = lookup.locate(parse_line(&raw)?);
        Ok(Matched { row, index })
    })
    .filter_map(move |item| {
        let out = match item {
            Err(e) => Some(Err(e)),
            Ok(Matched {
                row,
                index: Some(i),
            }) => {
                if seen_by_rows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .set(i)
                {
                    t.lock().unwrap_or_else(|e| e.into_inner()).duplicates += 1;
                    None
                } else {
                    Some(Ok(row))
                }
            }
            Ok(Matched { row, index: None }) => {
                tracing::warn!(
                    key = row.key().unwrap_or("<none>"),
                    "an output row matches no input; left out of the joined results"
                );
                t.lock().unwrap_or_else(|e| e.into_inner()).unexpected += 1;
                None
            }
        };
        futures::future::ready(out)
    });
    // The rows, then (once they are exhausted) the inputs never seen.
    let stream = rows
        .chain(
            futures::stream::once(async move { missing_rows(inputs, opts, index, seen) }).flatten(),
        )
        .boxed();
    Ok(ResultStream::new(stream, totals).priced_by(&pricing))
}

/// The inputs never seen in the output, read again, as missing rows.
pub(crate) fn missing_rows(
    inputs: Inputs,
    opts: ReadOptions,
    index: Arc<KeyIndex>,
    seen: Arc<std::sync::Mutex<Bits>>,
) -> BoxStream<'static, Result<ResultRow>> {
    let mut done = std::mem::replace(
        &mut *seen.lock().unwrap_or_else(|e| e.into_inner()),
        Bits(Vec::new()),
    );
    let idx = index.clone();
    parse_lines(inputs.open(), opts, move |raw| {
        let (key, request) = parse_input(&raw)?;
        let i = idx.position(fingerprint(&key));
        Ok((key, request, i))
    })
    .filter_map(move |item| {
        let out = match item {
            Err(e) => Some(Err(e)),
            Ok((key, request, Some(i))) => {
                (!done.set(i)).then(|| Ok(ResultRow::missing(key, request)))
            }
            // Indexed in the first pass, so always found; a file that
            // changed between the passes is reported.
            Ok((key, _, None)) => Some(Err(Error::Output {
                file: "inputs".into(),
                line: 0,
                message: format!("input key {key:?} appeared while the batch was read"),
            })),
        };
        futures::future::ready(out)
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::results::Outcome;

    fn ok(key: &str) -> String {
        format!(
            r#"{{"key":"{key}","status":"","response":{{"candidates":[{{"content":{{"parts":[{{"text":"a-{key}"}}]}}}}]}}}}"#
        )
    }

    fn out(name: &str, lines: &[String]) -> Vec<SourceFile> {
        let text = lines.join("\n") + "\n";
        vec![SourceFile::stream(
            name,
            futures::stream::once(futures::future::ready(Ok(Bytes::from(text)))).boxed(),
        )]
    }

    fn inputs(keys: &[&str]) -> Inputs {
        let text: String = keys
            .iter()
            .map(|k| format!("{{\"key\":\"{k}\",\"request\":{{\"contents\":[{{\"parts\":[{{\"text\":\"q {k}\"}}]}}]}}}}\n"))
            .collect();
        Inputs::memory("inputs.jsonl", text)
    }

    #[tokio::test]
    async fn every_input_gets_exactly_one_result() {
        let outputs = out(
            "o",
            &[
                ok("b"),
                r#"{"key":"c","status":"boom"}"#.into(),
                ok("b"),
                ok("stranger"),
                "{\"key\":\"a\",\"trunc".into(),
            ],
        );
        let (rows, errors, totals) = read_joined(
            vec![outputs],
            inputs(&["a", "b", "c", "d"]),
            ReadOptions::new(),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
        let mut got: Vec<(String, &str)> = rows
            .iter()
            .map(|r| (r.key().unwrap().to_owned(), r.outcome().kind()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("a".into(), "missing"),
                ("b".into(), "succeeded"),
                ("c".into(), "failed"),
                ("d".into(), "missing")
            ]
        );
        assert_eq!(totals.rows(), 4);
        assert_eq!((totals.duplicates, totals.unexpected), (1, 1));
        assert_eq!(errors.len(), 1, "the truncated line is reported");
        let Outcome::Missing(m) = rows
            .iter()
            .find(|r| r.key() == Some("d"))
            .unwrap()
            .outcome()
        else {
            panic!()
        };
        assert_eq!(
            m.request().get(),
            r#"{"contents":[{"parts":[{"text":"q d"}]}]}"#
        );
    }

    #[tokio::test]
    async fn rows_without_a_key_are_matched_by_their_key_label() {
        let long = "a key far longer than a label can hold reversibly, so it is hashed";
        let label = |k: &str| {
            format!(
                r#"{{"status":"","request":{{"labels":{{"team":"x","{}":"{}"}}}},"response":{{"candidates":[{{"content":{{"parts":[{{"text":"t"}}]}}}}]}}}}"#,
                crate::format::key::KEY_LABEL,
                crate::format::key::key_label_value(k)
            )
        };
        let outputs = out("o", &[label("short"), label(long)]);
        let (rows, errors, totals) = read_joined(
            vec![outputs],
            inputs(&["short", long, "gone"]),
            ReadOptions::new(),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!((totals.succeeded, totals.missing), (2, 1));
        let keys: Vec<_> = rows.iter().filter_map(|r| r.key()).collect();
        assert!(keys.contains(&"short"), "{keys:?}");
        assert!(keys.contains(&"gone"));
        assert!(
            keys.contains(&long),
            "a hashed label finds its key among the inputs"
        );
    }

    #[tokio::test]
    async fn inputs_are_read_as_the_input_reader_reads_them() {
        // A byte-order mark and Unicode-whitespace lines, which
        // `input::read_input_lines` (and so `run`) accepts.
        let text = "\u{feff}{\"key\":\"a\",\"request\":{\"contents\":[]}}\n\u{a0}\u{2003}\n\u{3000}\r\n{\"key\":\"b\",\"request\":{}}\n";
        let checked: Vec<_> = crate::format::input::read_input_lines(text.as_bytes())
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(checked.len(), 2);
        let (rows, errors, totals) = read_joined(
            vec![out("o", &[ok("a")])],
            Inputs::memory("prompts.jsonl", text),
            ReadOptions::new(),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!((totals.succeeded, totals.missing), (1, 1));
        assert_eq!(rows.len(), 2);
    }

    #[tokio::test]
    async fn the_newest_output_wins() {
        let original = out(
            "orig",
            &[ok("a"), r#"{"key":"b","status":"429 quota"}"#.into()],
        );
        let follow_up = out("retry", &[ok("b")]);
        let (rows, _, totals) = read_joined(
            vec![follow_up, original],
            inputs(&["a", "b", "c"]),
            ReadOptions::new(),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
        assert_eq!(totals.succeeded, 2);
        assert_eq!(totals.missing, 1);
        assert_eq!(totals.failed, 0);
        assert_eq!(
            totals.duplicates, 1,
            "the original's failed b is superseded"
        );
        assert_eq!(rows.len(), 3);
    }
}
