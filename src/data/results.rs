//! One row of a batch job's output, classified: [`ResultRow`] and its
//! [`Outcome`].
//!
//! A Gemini batch output line looks like
//!
//! ```json
//! {"key": "q1", "status": "", "processed_time": "2024-11-13T14:04:28.376+00:00",
//!  "request": {…}, "response": {"candidates": [{"content": {"role": "model",
//!  "parts": [{"text": "…"}]}, "finishReason": "STOP"}], "usageMetadata": {…}}}
//! ```
//!
//! Reading it is lenient where the service is loose and strict where a row
//! could otherwise be lost:
//!
//! * fields this crate does not know are skipped, `null` means absent, and
//!   the response is kept as raw JSON: the typed
//!   [`GenerateContentResponse`](crate::proto::aiplatform::GenerateContentResponse)
//!   is one call away ([`Answer::response`]);
//! * a line that is not a JSON object, or whose `key`, `status` or `response`
//!   has the wrong type, is an [`Error::Output`](crate::error::Error::Output) naming
//!   its file and line — never a panic, never a silently dropped row;
//! * the key comes from the top-level `key` field, or, when a pipeline
//!   dropped it, from the label [`KEY_LABEL`](crate::data::key::KEY_LABEL) that the
//!   input writer mirrors into `request.labels`.

use std::{borrow::Cow, fmt, time::SystemTime};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{error::Result, proto::aiplatform::GenerateContentResponse};

/// What happened to one request of a batch.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> vertex_batch::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let file = dir.path().join("predictions.jsonl");
/// # std::fs::write(&file, concat!(
/// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
/// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
/// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
/// # )).unwrap();
/// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
///
/// // `file`: an output file with a succeeded (q1), a failed (q2) and a blocked (q3) row.
/// let (rows, _errors, _totals) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
/// for row in &rows {
///     match row.outcome() {
///         Outcome::Succeeded(answer) => println!("{}", answer.text()),
///         Outcome::Failed(error) => println!("failed: {}", error.message()),
///         Outcome::Blocked(blocked) => println!("blocked: {:?}", blocked.reason()),
///         Outcome::Missing(_) => println!("never came back"),
///     }
/// }
/// assert!(rows[0].outcome().is_success());
/// let retry: Vec<_> = rows.iter().filter(|r| r.outcome().needs_retry()).filter_map(|r| r.key()).collect();
/// assert_eq!(retry, ["q2"]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The model answered. Truncated answers (`MAX_TOKENS`, with or without
    /// text) and answers that hold some content before they were cut (for
    /// safety or otherwise) are successes too; see [`Answer::finish_reason`].
    Succeeded(Answer),
    /// The row failed: the service wrote a non-empty `status`.
    Failed(RowError),
    /// No answer, by the model's filters: either the prompt was blocked (the
    /// response has `promptFeedback` and no candidate), or the answer was
    /// withheld (the first candidate has no content and stopped for a
    /// reason other than `STOP` or `MAX_TOKENS`: `SAFETY`,
    /// `PROHIBITED_CONTENT`, `RECITATION`, `BLOCKLIST`, `SPII`, … and values
    /// newer than this crate). [`Blocked::finish_reason`] tells the two
    /// apart. Never retried.
    Blocked(Blocked),
    /// No output line came back for this request (the job was cancelled,
    /// expired, cut after 24 h, or the row was lost). Only produced when
    /// results are joined to their inputs.
    Missing(Missing),
}

impl Outcome {
    /// The outcome's name as the command line and JSON output spell it:
    /// `succeeded`, `failed`, `blocked` or `missing`.
    ///
    /// ```
    /// use vertex_batch::data::{Outcome, RowError};
    /// let o = Outcome::Failed(RowError::from_status("boom"));
    /// assert_eq!(o.kind(), "failed");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Succeeded(_) => "succeeded",
            Outcome::Failed(_) => "failed",
            Outcome::Blocked(_) => "blocked",
            Outcome::Missing(_) => "missing",
        }
    }

    /// Whether the row succeeded.
    ///
    /// ```
    /// use vertex_batch::data::{Outcome, RowError};
    ///
    /// assert!(!Outcome::Failed(RowError::from_status("boom")).is_success());
    /// ```
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded(_))
    }

    /// Whether a follow-up job should send this request again: failed and
    /// missing rows. Blocked rows (prompts blocked, answers withheld) are not
    /// retried: the same prompt would be blocked again.
    ///
    /// ```
    /// use vertex_batch::data::{Outcome, RowError};
    ///
    /// // A failed row is sent again by a follow-up job.
    /// assert!(Outcome::Failed(RowError::from_status("boom")).needs_retry());
    /// ```
    pub fn needs_retry(&self) -> bool {
        matches!(self, Outcome::Failed(_) | Outcome::Missing(_))
    }

    /// Whether the row failed for a passing cause
    /// ([`RowError::is_retryable`]): what a batch sends again while its
    /// jobs still run.
    ///
    /// ```
    /// use vertex_batch::data::{Outcome, RowError};
    ///
    /// let quota = RowError::from_status(r#"{"error": {"code": 429, "message": "Quota"}}"#);
    /// assert!(Outcome::Failed(quota).is_retryable_failure());
    /// assert!(!Outcome::Failed(RowError::from_status(r#"{"error": {"code": 400, "message": "Bad"}}"#)).is_retryable_failure());
    /// ```
    pub fn is_retryable_failure(&self) -> bool {
        matches!(self, Outcome::Failed(e) if e.is_retryable())
    }
}

/// A successful answer.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> vertex_batch::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let file = dir.path().join("predictions.jsonl");
/// # std::fs::write(&file, concat!(
/// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
/// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
/// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
/// # )).unwrap();
/// use vertex_batch::data::{read_local_files, FinishReason, Outcome, ReadOptions};
///
/// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
/// let Outcome::Succeeded(answer) = rows[0].outcome() else { panic!("q1 succeeded") };
/// assert_eq!(answer.text(), "Rayleigh scattering.");
/// assert_eq!(answer.finish_reason(), Some(&FinishReason::Stop));
/// assert_eq!(answer.usage().total_tokens, 13);
/// assert_eq!(answer.model_version(), Some("gemini-2.0-flash-001"));
/// assert!(answer.output_line().starts_with(r#"{"key":"q1""#));
/// assert!(answer.raw_response()?.get().starts_with(r#"{"candidates""#));
/// assert_eq!(answer.response()?.candidates.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Answer {
    text: Text,
    finish_reason: Option<FinishReason>,
    usage: Usage,
    model_version: Option<Text>,
    /// An embedding's values: the JSON array as the line holds it.
    embedding: Option<Text>,
    line: RawLine,
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("text", &self.text())
            .field("finish_reason", &self.finish_reason)
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

impl Answer {
    /// The first candidate's text: its text parts joined, thought parts
    /// (`"thought": true`) left out. Empty when the candidate holds no text
    /// (a function call, thoughts only, an empty answer). A candidate with
    /// no content at all that stopped for safety (or any reason but `STOP`
    /// and `MAX_TOKENS`) is not an answer: it is [`Outcome::Blocked`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let Outcome::Succeeded(answer) = rows[0].outcome() else { panic!("q1 succeeded") };
    /// assert_eq!(answer.text(), "Rayleigh scattering.");
    /// # Ok(()) }
    /// ```
    pub fn text(&self) -> &str {
        self.str_of(&self.text)
    }

    fn str_of<'s>(&'s self, t: &'s Text) -> &'s str {
        t.resolve(Some(&self.line))
    }

    /// Why the first candidate stopped (`STOP`, `MAX_TOKENS`, …; values this
    /// crate does not know are kept as [`FinishReason::Other`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let Outcome::Succeeded(answer) = rows[0].outcome() else { panic!("q1 succeeded") };
    /// use vertex_batch::data::FinishReason;
    /// assert_eq!(answer.finish_reason(), Some(&FinishReason::Stop));
    /// # Ok(()) }
    /// ```
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish_reason.as_ref()
    }

    /// Token counts from `usageMetadata`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let Outcome::Succeeded(answer) = rows[0].outcome() else { panic!("q1 succeeded") };
    /// let usage = answer.usage();
    /// assert_eq!((usage.prompt_tokens, usage.candidates_tokens, usage.total_tokens), (9, 4, 13));
    /// # Ok(()) }
    /// ```
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// `modelVersion`, when the response names it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let Outcome::Succeeded(answer) = rows[0].outcome() else { panic!("q1 succeeded") };
    /// assert_eq!(answer.model_version(), Some("gemini-2.0-flash-001"));
    /// # Ok(()) }
    /// ```
    pub fn model_version(&self) -> Option<&str> {
        self.model_version.as_ref().map(|t| self.str_of(t))
    }

    /// The embedding of an embedding row (Gemini embeddings, text
    /// embeddings, open embedding models); `None` for a chat answer.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// use vertex_batch::data::{parse_output_line, Outcome};
    ///
    /// let row = parse_output_line(r#"{"key":"d1","status":"","response":{"embedding":{"values":[0.5,-0.25,1]},"usageMetadata":{"promptTokenCount":3}}}"#)?;
    /// let Outcome::Succeeded(answer) = row.outcome() else { panic!("d1 succeeded") };
    /// let embedding = answer.embedding().expect("an embedding row");
    /// assert_eq!(embedding.values()?, [0.5, -0.25, 1.0]);
    /// assert_eq!(embedding.dimensions(), 3);
    /// assert_eq!(embedding.json(), "[0.5,-0.25,1]");
    /// assert_eq!(answer.usage().prompt_tokens, 3);
    /// # Ok(()) }
    /// ```
    pub fn embedding(&self) -> Option<Embedding<'_>> {
        self.embedding.as_ref().map(|t| Embedding {
            json: self.str_of(t),
        })
    }

    /// The whole output line this answer came from, byte-exact.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let Outcome::Succeeded(answer) = rows[0].outcome() else { panic!("q1 succeeded") };
    /// assert!(answer.output_line().starts_with(r#"{"key":"q1""#));
    /// # Ok(()) }
    /// ```
    pub fn output_line(&self) -> &str {
        self.line.as_str()
    }

    /// The response exactly as the output line holds it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let Outcome::Succeeded(answer) = rows[0].outcome() else { panic!("q1 succeeded") };
    /// let raw = answer.raw_response()?;
    /// assert!(raw.get().starts_with(r#"{"candidates""#));
    /// # Ok(()) }
    /// ```
    pub fn raw_response(&self) -> Result<Box<RawValue>> {
        self.line.response()
    }

    /// The typed response. Decoding is lenient (unknown fields and enum
    /// values ignored, `null` read as absent); it fails only on a response
    /// whose known fields have the wrong types.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let Outcome::Succeeded(answer) = rows[0].outcome() else { panic!("q1 succeeded") };
    /// let response = answer.response()?;
    /// assert_eq!(response.candidates.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn response(&self) -> Result<GenerateContentResponse> {
        super::request::parse_response(self.line.response()?.get())
    }
}

/// A string of a row (its key, its time, an answer's text): most often an
/// unescaped JSON string, which is read straight from the line instead of
/// being copied. 16 bytes, so a row moves cheaply between threads.
#[derive(Clone, PartialEq)]
enum Text {
    /// Start and end of the string in the line.
    InLine(u32, u32),
    Owned(Box<str>),
}

impl Text {
    fn owned(s: String) -> Text {
        Text::Owned(s.into_boxed_str())
    }

    /// The string, read from `line` when it is a range of it (empty if the
    /// line is not there).
    fn resolve<'s>(&'s self, line: Option<&'s RawLine>) -> &'s str {
        match (self, line) {
            (Text::Owned(s), _) => s,
            (Text::InLine(start, end), Some(line)) => line.slice(*start as usize..*end as usize),
            (Text::InLine(..), None) => "",
        }
    }

    /// `part` as a range of `line` when it is borrowed from it, else a copy.
    fn of(line: &str, part: Cow<'_, str>) -> Text {
        match part {
            Cow::Borrowed(b) => in_line(line, b)
                .and_then(|r| {
                    Some(Text::InLine(
                        r.start.try_into().ok()?,
                        r.end.try_into().ok()?,
                    ))
                })
                .unwrap_or_else(|| Text::owned(b.to_owned())),
            Cow::Owned(o) => Text::owned(o),
        }
    }
}

/// An output line kept as it was read (a cheap reference into the block
/// the reader parsed), so the raw and typed responses stay one call away
/// without copying every response.
#[derive(Clone)]
pub(crate) struct RawLine(bytes::Bytes);

impl RawLine {
    /// Wraps a line already checked to be UTF-8.
    pub(crate) fn new(line: bytes::Bytes) -> Self {
        RawLine(line)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Checked when the line was parsed; an empty string otherwise.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// A part of the line (a range taken from a string slice of it, so on
    /// character boundaries): only that part is checked again, not the line.
    fn slice(&self, r: std::ops::Range<usize>) -> &str {
        self.0
            .get(r)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    fn response(&self) -> Result<Box<RawValue>> {
        #[derive(Deserialize)]
        struct Only {
            response: Option<Box<RawValue>>,
            predictions: Option<Box<RawValue>>,
        }
        let only: Only = serde_json::from_str(self.as_str())
            .map_err(|e| crate::error::Error::validation("response", e.to_string()))?;
        only.response
            .or(only.predictions)
            .ok_or_else(|| crate::error::Error::validation("response", "the line has no response"))
    }
}

impl PartialEq for RawLine {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// An embedding's values, as the output line holds them: read lazily, so
/// a reader that only passes vectors on ([`Embedding::json`]) never turns
/// their text into numbers and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Embedding<'a> {
    json: &'a str,
}

impl<'a> Embedding<'a> {
    /// The values as a JSON array, byte-exact from the line.
    ///
    /// ```
    /// # fn main() -> vertex_batch::Result<()> {
    /// let row = vertex_batch::data::parse_output_line(r#"{"key":"d","status":"","response":{"embedding":{"values":[1,2]}}}"#)?;
    /// assert_eq!(row.embedding().unwrap().json(), "[1,2]");
    /// # Ok(()) }
    /// ```
    pub fn json(&self) -> &'a str {
        self.json
    }

    /// The values as numbers. An error ([`crate::Error::Validation`], field
    /// `embedding`) when the array holds anything but numbers.
    ///
    /// ```
    /// # fn main() -> vertex_batch::Result<()> {
    /// let row = vertex_batch::data::parse_output_line(r#"{"key":"d","status":"","response":{"embedding":{"values":[1,"x"]}}}"#)?;
    /// assert!(row.embedding().unwrap().values().is_err());
    /// # Ok(()) }
    /// ```
    pub fn values(&self) -> Result<Vec<f32>> {
        serde_json::from_str::<Vec<f32>>(self.json).map_err(|e| {
            crate::error::Error::validation("embedding", format!("not an array of numbers: {e}"))
        })
    }

    /// How many values the array holds (counted without reading them).
    ///
    /// ```
    /// # fn main() -> vertex_batch::Result<()> {
    /// let row = vertex_batch::data::parse_output_line(r#"{"key":"d","status":"","response":{"embedding":{"values":[ ]}}}"#)?;
    /// assert_eq!(row.embedding().unwrap().dimensions(), 0);
    /// # Ok(()) }
    /// ```
    pub fn dimensions(&self) -> usize {
        // Numbers hold no commas; anything else fails `values`.
        let inner = self
            .json
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if inner.trim().is_empty() {
            0
        } else {
            inner.bytes().filter(|&b| b == b',').count() + 1
        }
    }
}

/// A failed row: the service's `status` text, with the code and message
/// parsed out when it embeds a JSON error such as
/// `{"error": {"code": 400, "message": "…", "status": "INVALID_ARGUMENT"}}`.
///
/// ```
/// use vertex_batch::data::RowError;
///
/// let status = r#"{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}"#;
/// let e = RowError::from_status(status);
/// assert_eq!(e.status(), status);
/// assert_eq!(e.code(), Some(429));
/// assert_eq!(e.message(), "Quota exceeded");
/// assert_eq!(e.status_name(), Some("RESOURCE_EXHAUSTED"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    status: String,
    code: Option<i64>,
    message: String,
    status_name: Option<String>,
}

impl RowError {
    /// Reads a row's `status` text.
    ///
    /// ```
    /// use vertex_batch::data::RowError;
    /// let e = RowError::from_status(
    ///     r#"Bad Request: {"error": {"code": 400, "message": "Invalid JSON payload", "status": "INVALID_ARGUMENT"}}"#,
    /// );
    /// assert_eq!(e.code(), Some(400));
    /// assert_eq!(e.message(), "Invalid JSON payload");
    /// assert_eq!(e.status_name(), Some("INVALID_ARGUMENT"));
    /// let plain = RowError::from_status("internal error");
    /// assert_eq!((plain.code(), plain.message()), (None, "internal error"));
    /// ```
    pub fn from_status(status: &str) -> Self {
        #[derive(Deserialize)]
        struct Wrapper {
            error: Inner,
        }
        #[derive(Deserialize)]
        struct Inner {
            #[serde(default)]
            code: Option<i64>,
            #[serde(default)]
            message: Option<String>,
            #[serde(default)]
            status: Option<String>,
        }
        let embedded = status.find('{').and_then(|i| {
            let mut de = serde_json::Deserializer::from_str(&status[i..]).into_iter::<Wrapper>();
            de.next().and_then(|r| r.ok())
        });
        match embedded {
            Some(w) => RowError {
                status: status.to_owned(),
                code: w.error.code,
                message: w.error.message.unwrap_or_else(|| status.to_owned()),
                status_name: w.error.status,
            },
            None => RowError {
                status: status.to_owned(),
                code: None,
                message: status.to_owned(),
                status_name: None,
            },
        }
    }

    /// The `status` text exactly as the output line holds it.
    ///
    /// ```
    /// use vertex_batch::data::RowError;
    ///
    /// let e = RowError::from_status("Internal error");
    /// assert_eq!(e.status(), "Internal error");
    /// ```
    pub fn status(&self) -> &str {
        &self.status
    }

    /// The HTTP-style code of an embedded JSON error (e.g. 400, 429, 500).
    ///
    /// ```
    /// use vertex_batch::data::RowError;
    ///
    /// let e = RowError::from_status(r#"{"error": {"code": 500, "message": "Internal"}}"#);
    /// assert_eq!(e.code(), Some(500));
    /// assert_eq!(RowError::from_status("no JSON here").code(), None);
    /// ```
    pub fn code(&self) -> Option<i64> {
        self.code
    }

    /// The embedded error's message, or the whole status text.
    ///
    /// ```
    /// use vertex_batch::data::RowError;
    ///
    /// let e = RowError::from_status(r#"Bad Request: {"error": {"code": 400, "message": "Invalid JSON payload"}}"#);
    /// assert_eq!(e.message(), "Invalid JSON payload");
    /// assert_eq!(RowError::from_status("timeout").message(), "timeout");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The embedded error's status name (e.g. `INVALID_ARGUMENT`).
    ///
    /// ```
    /// use vertex_batch::data::RowError;
    ///
    /// let e = RowError::from_status(r#"{"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}}"#);
    /// assert_eq!(e.status_name(), Some("RESOURCE_EXHAUSTED"));
    /// ```
    pub fn status_name(&self) -> Option<&str> {
        self.status_name.as_deref()
    }

    /// Whether the cause is passing, so sending the row again may succeed:
    /// a quota or rate limit (429, `RESOURCE_EXHAUSTED`), or a server-side
    /// failure (5xx, `UNAVAILABLE`, `INTERNAL`, `DEADLINE_EXCEEDED`,
    /// `ABORTED`). Invalid requests (400, `INVALID_ARGUMENT`), missing
    /// resources and refusals are not: they would fail the same way again.
    /// A status with no code nor status name is judged by its text.
    ///
    /// ```
    /// use vertex_batch::data::RowError;
    ///
    /// let quota = RowError::from_status(r#"{"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}}"#);
    /// assert!(quota.is_retryable());
    /// assert!(RowError::from_status(r#"{"error": {"code": 503, "message": "try later"}}"#).is_retryable());
    /// let invalid = RowError::from_status(r#"Bad Request: {"error": {"code": 400, "message": "Invalid JSON payload", "status": "INVALID_ARGUMENT"}}"#);
    /// assert!(!invalid.is_retryable());
    /// assert!(RowError::from_status("RESOURCE_EXHAUSTED: too many requests").is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        const PASSING: [&str; 5] = [
            "RESOURCE_EXHAUSTED",
            "UNAVAILABLE",
            "INTERNAL",
            "DEADLINE_EXCEEDED",
            "ABORTED",
        ];
        if let Some(code) = self.code {
            return code == 429 || (500..600).contains(&code);
        }
        if let Some(name) = &self.status_name {
            return PASSING.contains(&name.as_str());
        }
        PASSING.iter().any(|p| self.status.contains(p))
    }
}

/// A row with no answer, by the model's filters: a blocked prompt
/// (`promptFeedback` and no candidate), or a withheld answer (a candidate
/// with no content and a finish reason such as `SAFETY`; see
/// [`Outcome::Blocked`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> vertex_batch::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let file = dir.path().join("predictions.jsonl");
/// # std::fs::write(&file, concat!(
/// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
/// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
/// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
/// # )).unwrap();
/// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
///
/// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
/// let Outcome::Blocked(blocked) = rows[2].outcome() else { panic!("q3 was blocked") };
/// assert_eq!(blocked.reason(), Some("SAFETY"));
/// assert_eq!(blocked.message(), Some("unsafe prompt"));
/// assert!(blocked.raw_response()?.get().contains("promptFeedback"));
/// assert!(blocked.response()?.prompt_feedback.is_some());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Blocked {
    reason: Option<String>,
    message: Option<String>,
    /// The candidate's finish reason, when the answer was withheld.
    finish_reason: Option<FinishReason>,
    line: RawLine,
}

impl fmt::Debug for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blocked")
            .field("reason", &self.reason)
            .field("message", &self.message)
            .field("finish_reason", &self.finish_reason)
            .finish_non_exhaustive()
    }
}

impl Blocked {
    /// Why: `promptFeedback.blockReason` for a blocked prompt (e.g.
    /// `SAFETY`, `PROHIBITED_CONTENT`), the candidate's `finishReason` for a
    /// withheld answer.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let Outcome::Blocked(blocked) = rows[2].outcome() else { panic!("q3 was blocked") };
    /// assert_eq!(blocked.reason(), Some("SAFETY"));
    /// # Ok(()) }
    /// ```
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// `promptFeedback.blockReasonMessage` (for a withheld answer, the
    /// candidate's `finishMessage`), when given.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let Outcome::Blocked(blocked) = rows[2].outcome() else { panic!("q3 was blocked") };
    /// assert_eq!(blocked.message(), Some("unsafe prompt"));
    /// # Ok(()) }
    /// ```
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The first candidate's finish reason when the answer was withheld
    /// (the candidate has no content); `None` when the prompt itself was
    /// blocked (no candidate).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","response":{"candidates":[{"finishReason":"SAFETY","finishMessage":"unsafe answer"}]}}"#, "\n",
    /// #     r#"{"key":"q2","status":"","response":{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, FinishReason, Outcome, ReadOptions};
    ///
    /// // q1: a candidate with no content, stopped for SAFETY; q2: a blocked prompt.
    /// let (rows, _, totals) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let Outcome::Blocked(withheld) = rows[0].outcome() else { panic!("q1's answer was withheld") };
    /// assert_eq!(withheld.finish_reason(), Some(&FinishReason::Safety));
    /// assert_eq!((withheld.reason(), withheld.message()), (Some("SAFETY"), Some("unsafe answer")));
    /// assert!(!rows[0].outcome().needs_retry());
    /// let Outcome::Blocked(prompt) = rows[1].outcome() else { panic!("q2 was blocked") };
    /// assert_eq!(prompt.finish_reason(), None);
    /// assert_eq!((totals.succeeded, totals.blocked), (0, 2));
    /// # Ok(()) }
    /// ```
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish_reason.as_ref()
    }

    /// The response exactly as the output line holds it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let Outcome::Blocked(blocked) = rows[2].outcome() else { panic!("q3 was blocked") };
    /// assert!(blocked.raw_response()?.get().contains("promptFeedback"));
    /// # Ok(()) }
    /// ```
    pub fn raw_response(&self) -> Result<Box<RawValue>> {
        self.line.response()
    }

    /// The typed response (see [`Answer::response`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let Outcome::Blocked(blocked) = rows[2].outcome() else { panic!("q3 was blocked") };
    /// let response = blocked.response()?;
    /// assert!(response.candidates.is_empty());
    /// assert!(response.prompt_feedback.is_some());
    /// # Ok(()) }
    /// ```
    pub fn response(&self) -> Result<GenerateContentResponse> {
        super::request::parse_response(self.line.response()?.get())
    }
}

/// A request that never came back, with the request as the input holds it
/// (less the crate's key label), ready for a new batch.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> vertex_batch::Result<()> {
/// use vertex_batch::data::{Inputs, Outcome, ResultReader};
///
/// // A job that wrote no output at all: every input comes back missing.
/// let inputs = Inputs::memory("prompts.jsonl", "{\"key\":\"q1\",\"request\":{\"contents\":[]}}\n");
/// let (rows, _, totals) = ResultReader::new().inputs(inputs).read().await?.collect_all().await;
/// let Outcome::Missing(missing) = rows[0].outcome() else { panic!("q1 is missing") };
/// assert_eq!(missing.request().get(), r#"{"contents":[]}"#);
/// assert_eq!(totals.missing, 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Missing {
    pub(crate) request: Box<RawValue>,
}

impl Missing {
    /// The original request, ready to send again: raw JSON, byte-exact from
    /// the input except that the key label [`KEY_LABEL`](crate::data::key::KEY_LABEL)
    /// the input writer mirrored into `labels` is taken out (and `labels`
    /// with it when it held nothing else), so a new batch, which adds the
    /// label again, accepts it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// use vertex_batch::data::{Inputs, Outcome, ResultReader};
    ///
    /// // A staged input line: the key mirrored into the request's labels.
    /// let staged = concat!(
    ///     r#"{"key":"q1","request":{"contents": [],"labels":{"team":"x","vertex_batch_key":"roeyq"}}}"#, "\n",
    ///     r#"{"key":"q2","request":{"contents":[],"labels":{"vertex_batch_key":"roeza"}}}"#, "\n",
    /// );
    /// let (rows, _, _) = ResultReader::new().inputs(Inputs::memory("part-00000.jsonl", staged)).read().await?.collect_all().await;
    /// let Outcome::Missing(missing) = rows[0].outcome() else { panic!("q1 is missing") };
    /// assert_eq!(missing.request().get(), r#"{"contents": [],"labels":{"team":"x"}}"#);
    /// let Outcome::Missing(missing) = rows[1].outcome() else { panic!("q2 is missing") };
    /// assert_eq!(missing.request().get(), r#"{"contents":[]}"#); // ready to send again
    /// # Ok(()) }
    /// ```
    pub fn request(&self) -> &RawValue {
        &self.request
    }
}

/// Why a candidate stopped.
///
/// ```
/// use vertex_batch::data::FinishReason;
///
/// let reason = FinishReason::parse("MAX_TOKENS");
/// assert_eq!(reason, FinishReason::MaxTokens);
/// assert_eq!(reason.to_string(), "MAX_TOKENS");
/// match FinishReason::parse("SPII") {
///     FinishReason::Other(name) => assert_eq!(name, "SPII"),
///     _ => unreachable!(),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FinishReason {
    /// A natural stop point or a stop sequence.
    Stop,
    /// The `maxOutputTokens` limit was reached: the answer is truncated.
    MaxTokens,
    /// Cut for safety reasons.
    Safety,
    /// Cut for recitation.
    Recitation,
    /// Any other value, kept as the service wrote it (`OTHER`, `BLOCKLIST`,
    /// `PROHIBITED_CONTENT`, `SPII`, `MALFORMED_FUNCTION_CALL`, and values
    /// newer than this crate).
    Other(String),
}

impl FinishReason {
    /// Reads the proto enum name (`STOP`, `MAX_TOKENS`, …).
    ///
    /// ```
    /// use vertex_batch::data::FinishReason;
    /// assert_eq!(FinishReason::parse("MAX_TOKENS"), FinishReason::MaxTokens);
    /// assert_eq!(FinishReason::parse("NEW_REASON").as_str(), "NEW_REASON");
    /// ```
    pub fn parse(name: &str) -> Self {
        match name {
            "STOP" => FinishReason::Stop,
            "MAX_TOKENS" => FinishReason::MaxTokens,
            "SAFETY" => FinishReason::Safety,
            "RECITATION" => FinishReason::Recitation,
            other => FinishReason::Other(other.to_owned()),
        }
    }

    /// Whether a candidate that stopped for this reason with no content
    /// is a withheld answer ([`Outcome::Blocked`]): every reason but `STOP`,
    /// `MAX_TOKENS` and `FINISH_REASON_UNSPECIFIED` (or an empty name).
    ///
    /// ```
    /// use vertex_batch::data::FinishReason;
    ///
    /// for reason in ["SAFETY", "PROHIBITED_CONTENT", "RECITATION", "BLOCKLIST", "SPII", "A_NEW_ONE"] {
    ///     assert!(FinishReason::parse(reason).withholds(), "{reason}");
    /// }
    /// for reason in ["STOP", "MAX_TOKENS", "FINISH_REASON_UNSPECIFIED", ""] {
    ///     assert!(!FinishReason::parse(reason).withholds(), "{reason}");
    /// }
    /// ```
    pub fn withholds(&self) -> bool {
        match self {
            FinishReason::Stop | FinishReason::MaxTokens => false,
            FinishReason::Safety | FinishReason::Recitation => true,
            FinishReason::Other(name) => !name.is_empty() && name != "FINISH_REASON_UNSPECIFIED",
        }
    }

    /// The proto enum name.
    ///
    /// ```
    /// use vertex_batch::data::FinishReason;
    ///
    /// assert_eq!(FinishReason::Safety.as_str(), "SAFETY");
    /// assert_eq!(FinishReason::Other("SPII".into()).as_str(), "SPII");
    /// ```
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "STOP",
            FinishReason::MaxTokens => "MAX_TOKENS",
            FinishReason::Safety => "SAFETY",
            FinishReason::Recitation => "RECITATION",
            FinishReason::Other(s) => s,
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Token counts of one response (`usageMetadata`), or summed over many.
///
/// ```
/// use vertex_batch::data::Usage;
///
/// let one = Usage { prompt_tokens: 9, candidates_tokens: 4, total_tokens: 13, ..Usage::default() };
/// let mut sum = Usage::default();
/// sum += one;
/// sum += one;
/// assert_eq!((sum.prompt_tokens, sum.total_tokens), (18, 26));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The prompt's tokens, all of them: Gemini's `promptTokenCount`
    /// (which includes `cachedContentTokenCount`), OpenAI's
    /// `prompt_tokens` (which includes `cached_tokens`), Claude's
    /// `input_tokens + cache_read_input_tokens +
    /// cache_creation_input_tokens` (Claude reports the three apart).
    pub prompt_tokens: u64,
    /// The answer's tokens, thoughts not included: `candidatesTokenCount`,
    /// Claude's `output_tokens`, OpenAI's `completion_tokens` less its
    /// `reasoning_tokens`.
    pub candidates_tokens: u64,
    /// Thinking tokens: `thoughtsTokenCount`, OpenAI's
    /// `completion_tokens_details.reasoning_tokens`.
    pub thoughts_tokens: u64,
    /// Prompt tokens read from a cache (part of `prompt_tokens`):
    /// `cachedContentTokenCount`, Claude's `cache_read_input_tokens`,
    /// OpenAI's `prompt_tokens_details.cached_tokens`.
    pub cached_tokens: u64,
    /// Prompt tokens written to a cache (part of `prompt_tokens`): Claude's
    /// `cache_creation_input_tokens`.
    pub cache_write_tokens: u64,
    /// Tokens of tool results fed back to the model (`toolUsePromptTokenCount`;
    /// not part of `prompt_tokens`).
    pub tool_use_prompt_tokens: u64,
    /// The prompt's audio tokens (part of `prompt_tokens`): the `AUDIO` entry
    /// of `promptTokensDetails`.
    pub prompt_audio_tokens: u64,
    /// `totalTokenCount` (or the sum of the parts when a family does not
    /// report it).
    pub total_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        // Counts come from output files: a huge one saturates, never wraps.
        self.prompt_tokens = self.prompt_tokens.saturating_add(o.prompt_tokens);
        self.candidates_tokens = self.candidates_tokens.saturating_add(o.candidates_tokens);
        self.thoughts_tokens = self.thoughts_tokens.saturating_add(o.thoughts_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(o.cached_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(o.cache_write_tokens);
        self.tool_use_prompt_tokens = self
            .tool_use_prompt_tokens
            .saturating_add(o.tool_use_prompt_tokens);
        self.prompt_audio_tokens = self
            .prompt_audio_tokens
            .saturating_add(o.prompt_audio_tokens);
        self.total_tokens = self.total_tokens.saturating_add(o.total_tokens);
    }
}

/// One request's result: its key, when it was processed, and its outcome.
///
/// A row is one pointer wide (its data is boxed), so streams of millions of
/// rows move little memory.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> vertex_batch::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let file = dir.path().join("predictions.jsonl");
/// # std::fs::write(&file, concat!(
/// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
/// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
/// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
/// # )).unwrap();
/// use vertex_batch::data::{read_local_files, ReadOptions};
///
/// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
/// let row = &rows[0];
/// assert_eq!(row.key(), Some("q1"));
/// assert_eq!(row.text(), Some("Rayleigh scattering."));
/// assert_eq!(row.processed_time_str(), Some("2024-11-13T14:04:28.376+00:00"));
/// assert!(row.processed_time().is_some());
/// assert_eq!(rows[1].text(), None); // q2 failed
/// assert_eq!(rows[1].clone().into_outcome().kind(), "failed");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ResultRow {
    inner: RowData,
}

/// A row's parts. The key and the time are ranges of the output line when
/// the outcome keeps the line (answers, blocked prompts) and they needed no
/// unescaping, so reading an answer row allocates nothing.
#[derive(Clone)]
struct RowData {
    key: Option<Text>,
    processed_time: Option<Text>,
    outcome: Outcome,
}

impl RowData {
    fn str_of<'s>(&'s self, t: &'s Text) -> &'s str {
        let line = match &self.outcome {
            Outcome::Succeeded(Answer { line, .. }) | Outcome::Blocked(Blocked { line, .. }) => {
                Some(line)
            }
            Outcome::Failed(_) | Outcome::Missing(_) => None,
        };
        t.resolve(line)
    }
}

impl fmt::Debug for ResultRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultRow")
            .field("key", &self.key())
            .field("processed_time", &self.processed_time_str())
            .field("outcome", self.outcome())
            .finish()
    }
}

impl ResultRow {
    pub(crate) fn new(
        key: Option<String>,
        processed_time: Option<String>,
        outcome: Outcome,
    ) -> Self {
        ResultRow {
            inner: RowData {
                key: key.map(Text::owned),
                processed_time: processed_time.map(Text::owned),
                outcome,
            },
        }
    }

    /// A missing row; `request` as the input holds it (its key label is
    /// taken out here, see [`Missing::request`]).
    pub(crate) fn missing(key: String, request: Box<RawValue>) -> Self {
        let request = without_key_label(&request).unwrap_or(request);
        ResultRow::new(Some(key), None, Outcome::Missing(Missing { request }))
    }

    pub(crate) fn set_key(&mut self, key: Option<String>) {
        self.inner.key = key.map(Text::owned);
    }

    /// The request's key (from the line's `key`, or recovered from the
    /// request's key label). `None` for output of an input without keys.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let keys: Vec<_> = rows.iter().filter_map(|r| r.key()).collect();
    /// assert_eq!(keys, ["q1", "q2", "q3"]);
    /// # Ok(()) }
    /// ```
    pub fn key(&self) -> Option<&str> {
        let d = &self.inner;
        d.key.as_ref().map(|k| d.str_of(k))
    }

    /// `processed_time` as the output line holds it (RFC 3339).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// assert_eq!(rows[0].processed_time_str(), Some("2024-11-13T14:04:28.376+00:00"));
    /// assert_eq!(rows[1].processed_time_str(), None);
    /// # Ok(()) }
    /// ```
    pub fn processed_time_str(&self) -> Option<&str> {
        let d = &self.inner;
        d.processed_time.as_ref().map(|t| d.str_of(t))
    }

    /// `processed_time` parsed (an offset and 0–9 fractional digits are
    /// accepted); `None` when absent or unreadable.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let at = rows[0].processed_time().unwrap();
    /// assert_eq!(at.duration_since(UNIX_EPOCH).unwrap(), Duration::from_millis(1_731_506_668_376));
    /// # Ok(()) }
    /// ```
    pub fn processed_time(&self) -> Option<SystemTime> {
        self.processed_time_str().and_then(crate::time::parse)
    }

    /// What happened to the request.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let kinds: Vec<_> = rows.iter().map(|r| r.outcome().kind()).collect();
    /// assert_eq!(kinds, ["succeeded", "failed", "blocked"]);
    /// # Ok(()) }
    /// ```
    pub fn outcome(&self) -> &Outcome {
        &self.inner.outcome
    }

    /// Takes the outcome.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, Outcome, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// let Outcome::Failed(error) = rows[1].clone().into_outcome() else { panic!("q2 failed") };
    /// assert_eq!(error.code(), Some(400));
    /// # Ok(()) }
    /// ```
    pub fn into_outcome(self) -> Outcome {
        self.inner.outcome
    }

    /// The answer's text, for a succeeded row.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#, "\n",
    /// #     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#, "\n",
    /// #     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::data::{read_local_files, ReadOptions};
    ///
    /// let (rows, _, _) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// assert_eq!(rows[0].text(), Some("Rayleigh scattering."));
    /// assert_eq!(rows[2].text(), None); // q3 was blocked
    /// # Ok(()) }
    /// ```
    pub fn text(&self) -> Option<&str> {
        match &self.inner.outcome {
            Outcome::Succeeded(a) => Some(a.text()),
            _ => None,
        }
    }

    /// The embedding, for a succeeded row of an embedding model.
    ///
    /// ```
    /// let row = vertex_batch::data::parse_output_line(r#"{"key":"d","instance":{"content":"sky"},"predictions":[{"embeddings":{"statistics":{"token_count":1,"truncated":false},"values":[0.6,0.8]}}],"status":""}"#)?;
    /// assert_eq!(row.embedding().map(|e| e.dimensions()), Some(2));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn embedding(&self) -> Option<Embedding<'_>> {
        match &self.inner.outcome {
            Outcome::Succeeded(a) => a.embedding(),
            _ => None,
        }
    }

    /// The characters a legacy text-embedding model bills for this row
    /// (`text-embedding-005`, `text-multilingual-embedding-002`: priced per
    /// character, see [`crate::cost`]): the echoed `instance.content`
    /// counted as Google counts it, in Unicode code points with white space
    /// left out (from BigQuery output, the `content` column). `None` when
    /// the row kept no output line (failed, missing) or the line echoes no
    /// string content (other families).
    ///
    /// ```
    /// let row = vertex_batch::data::parse_output_line(r#"{"instance":{"content":"blue sky é"},"predictions":[{"embeddings":{"statistics":{"token_count":3,"truncated":false},"values":[0.6,0.8]}}],"status":""}"#)?;
    /// assert_eq!(row.input_chars(), Some(8));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn input_chars(&self) -> Option<u64> {
        #[derive(Deserialize)]
        struct Line<'a> {
            #[serde(borrow, default)]
            instance: Option<Instance<'a>>,
            /// BigQuery output: the input's `content` column.
            #[serde(deserialize_with = "opt_str", borrow, default)]
            content: Option<Cow<'a, str>>,
        }
        #[derive(Deserialize)]
        struct Instance<'a> {
            #[serde(deserialize_with = "opt_str", borrow, default)]
            content: Option<Cow<'a, str>>,
        }
        let line = match &self.inner.outcome {
            Outcome::Succeeded(Answer { line, .. }) | Outcome::Blocked(Blocked { line, .. }) => {
                line
            }
            Outcome::Failed(_) | Outcome::Missing(_) => return None,
        };
        let view: Line<'_> = serde_json::from_str(line.as_str()).ok()?;
        let content = view.instance.and_then(|i| i.content).or(view.content)?;
        Some(content.chars().filter(|c| !c.is_whitespace()).count() as u64)
    }
}

// ---------------------------------------------------------------------------
// Taking the key label out of a request, every other byte kept.

/// Skips JSON whitespace from `i`.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

/// The range of the one JSON value starting at `i` (after whitespace).
fn value_at(text: &str, i: usize) -> Option<std::ops::Range<usize>> {
    let rest = text.get(i..)?;
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<&RawValue>();
    let raw = values.next()?.ok()?;
    let start = in_line(text, raw.get())?.start;
    Some(start..start + raw.get().len())
}

/// One member of a JSON object text: its name, the range of the whole
/// member (name to value) and of its value.
struct Member {
    name: String,
    whole: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

/// The members of the JSON object `text`, in order (`None` if it is not
/// one object).
fn object_members(text: &str) -> Option<Vec<Member>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut out = Vec::new();
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(out);
    }
    loop {
        let name = value_at(text, i)?;
        if b.get(name.start) != Some(&b'"') {
            return None;
        }
        let decoded: String = serde_json::from_str(text.get(name.clone())?).ok()?;
        i = skip_ws(b, name.end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let value = value_at(text, i + 1)?;
        out.push(Member {
            name: decoded,
            whole: name.start..value.end,
            value: value.clone(),
        });
        i = skip_ws(b, value.end);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => break,
            _ => return None,
        }
    }
    (skip_ws(b, i + 1) == b.len()).then_some(out)
}

/// `text` without member `k` of `members` (and one comma beside it).
fn remove_member(text: &str, members: &[Member], k: usize) -> Option<String> {
    let cut = match (k.checked_sub(1), members.get(k + 1)) {
        // Not the last: up to the next member.
        (_, Some(next)) => members.get(k)?.whole.start..next.whole.start,
        // The last of several: from the end of the one before.
        (Some(prev), None) => members.get(prev)?.whole.end..members.get(k)?.whole.end,
        // The only one.
        (None, None) => members.get(k)?.whole.clone(),
    };
    Some(format!(
        "{}{}",
        text.get(..cut.start)?,
        text.get(cut.end..)?
    ))
}

/// `request` without the key label [`KEY_LABEL`](crate::data::key::KEY_LABEL)
/// in its `labels` (and without `labels` when that was its only label);
/// `None` when there is none to take out or `request` is not an object.
pub(crate) fn without_key_label(request: &RawValue) -> Option<Box<RawValue>> {
    let text = request.get();
    let members = object_members(text)?;
    let li = members.iter().position(|m| m.name == "labels")?;
    let labels_at = members.get(li)?.value.clone();
    let mut labels = text.get(labels_at.clone())?.to_owned();
    let mut found = false;
    // Every copy of the label (a hand-made input may hold it twice).
    loop {
        let lm = object_members(&labels)?;
        let Some(k) = lm
            .iter()
            .position(|m| m.name == crate::data::key::KEY_LABEL)
        else {
            break;
        };
        found = true;
        if lm.len() == 1 {
            let out = remove_member(text, &members, li)?;
            return RawValue::from_string(out).ok();
        }
        labels = remove_member(&labels, &lm, k)?;
    }
    if !found {
        return None;
    }
    let out = format!(
        "{}{labels}{}",
        text.get(..labels_at.start)?,
        text.get(labels_at.end..)?
    );
    RawValue::from_string(out).ok()
}

// ---------------------------------------------------------------------------
// Parsing one line.

/// A line's fields, borrowed from the line where possible. One view reads
/// every family's lines: the fields a family does not write are absent.
#[derive(Deserialize)]
struct LineView<'a> {
    #[serde(deserialize_with = "opt_str", borrow, default)]
    key: Option<Cow<'a, str>>,
    /// Claude's and open models' key.
    #[serde(deserialize_with = "opt_str", borrow, default)]
    custom_id: Option<Cow<'a, str>>,
    /// A string (Gemini: empty when the row succeeded), or an object.
    #[serde(borrow, default)]
    status: Option<&'a RawValue>,
    /// Open models' error (`null` when the row succeeded).
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(deserialize_with = "opt_str", borrow, default)]
    processed_time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request: Option<RequestLabels<'a>>,
    #[serde(borrow, default)]
    response: Option<ResponseView<'a>>,
    /// Text embeddings' answer: an array, or (in BigQuery) a JSON string
    /// holding it.
    #[serde(borrow, default)]
    predictions: Option<&'a RawValue>,
}

/// A response of any family (for open models, also the batch envelope
/// `{"status_code", "body"}` around it).
#[derive(Deserialize)]
struct ResponseView<'a> {
    #[serde(borrow, default)]
    candidates: Option<FirstOf<CandidateView<'a>>>,
    #[serde(borrow, default, rename = "promptFeedback", alias = "prompt_feedback")]
    prompt_feedback: Option<FeedbackView<'a>>,
    #[serde(default, rename = "usageMetadata", alias = "usage_metadata")]
    usage_metadata: Option<UsageView>,
    #[serde(
        deserialize_with = "opt_str",
        borrow,
        default,
        rename = "modelVersion",
        alias = "model_version"
    )]
    model_version: Option<Cow<'a, str>>,
    /// Gemini embeddings.
    #[serde(borrow, default)]
    embedding: Option<ValuesView<'a>>,
    /// Claude: the answer's content blocks.
    #[serde(borrow, default)]
    content: Option<TextParts<'a>>,
    #[serde(deserialize_with = "opt_str", borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    /// Claude's and open models' usage.
    #[serde(default)]
    usage: Option<ChatUsageView>,
    #[serde(deserialize_with = "opt_str", borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(deserialize_with = "opt_str", borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    /// Open models: chat completions.
    #[serde(borrow, default)]
    choices: Option<FirstOf<ChoiceView<'a>>>,
    /// Open models: embeddings.
    #[serde(borrow, default)]
    data: Option<FirstOf<DataView<'a>>>,
    /// Open models' batch envelope.
    #[serde(default)]
    status_code: Option<f64>,
    #[serde(borrow, default)]
    body: Option<Box<ResponseView<'a>>>,
}

#[derive(Deserialize)]
struct ValuesView<'a> {
    #[serde(borrow, default)]
    values: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow, default)]
    message: Option<MessageView<'a>>,
    #[serde(deserialize_with = "opt_str", borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct MessageView<'a> {
    #[serde(deserialize_with = "opt_str", borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(deserialize_with = "opt_str", borrow, default)]
    refusal: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DataView<'a> {
    #[serde(borrow, default)]
    embedding: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PredictionView<'a> {
    #[serde(borrow, default)]
    embeddings: Option<TextEmbeddingView<'a>>,
}

#[derive(Deserialize)]
struct TextEmbeddingView<'a> {
    #[serde(borrow, default)]
    values: Option<&'a RawValue>,
    #[serde(default)]
    statistics: Option<StatisticsView>,
}

#[derive(Deserialize)]
struct StatisticsView {
    #[serde(default)]
    token_count: Option<f64>,
}

/// Claude's (`input_tokens`, `output_tokens`, `cache_read_input_tokens`,
/// `cache_creation_input_tokens`) and OpenAI's (`prompt_tokens`,
/// `completion_tokens`, `total_tokens`) usage.
#[derive(Deserialize, Default)]
struct ChatUsageView {
    #[serde(default)]
    input_tokens: Option<f64>,
    #[serde(default)]
    output_tokens: Option<f64>,
    #[serde(default)]
    cache_read_input_tokens: Option<f64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<f64>,
    #[serde(default)]
    prompt_tokens: Option<f64>,
    #[serde(default)]
    completion_tokens: Option<f64>,
    #[serde(default)]
    total_tokens: Option<f64>,
    #[serde(default)]
    completion_tokens_details: Option<ReasoningView>,
    #[serde(default)]
    prompt_tokens_details: Option<CachedView>,
}

#[derive(Deserialize, Default)]
struct ReasoningView {
    #[serde(default)]
    reasoning_tokens: Option<f64>,
}

#[derive(Deserialize, Default)]
struct CachedView {
    #[serde(default)]
    cached_tokens: Option<f64>,
}

impl ChatUsageView {
    fn usage(&self) -> Usage {
        let reasoning = count(
            self.completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        );
        let (prompt, cached, written, out) =
            if self.input_tokens.is_some() || self.output_tokens.is_some() {
                // Claude: `input_tokens` leaves out the cache's reads and writes.
                let read = count(self.cache_read_input_tokens);
                let written = count(self.cache_creation_input_tokens);
                let prompt = count(self.input_tokens)
                    .saturating_add(read)
                    .saturating_add(written);
                (prompt, read, written, count(self.output_tokens))
            } else {
                // OpenAI: `prompt_tokens` holds the cached ones, and
                // `completion_tokens` the reasoning ones.
                let cached = count(
                    self.cache_read_input_tokens.or(self
                        .prompt_tokens_details
                        .as_ref()
                        .and_then(|d| d.cached_tokens)),
                );
                let out = count(self.completion_tokens).saturating_sub(reasoning);
                (count(self.prompt_tokens), cached, 0, out)
            };
        let total = match self.total_tokens {
            Some(t) => count(Some(t)),
            None => prompt.saturating_add(out).saturating_add(reasoning),
        };
        Usage {
            prompt_tokens: prompt,
            candidates_tokens: out,
            thoughts_tokens: reasoning,
            cached_tokens: cached,
            cache_write_tokens: written,
            total_tokens: total,
            ..Usage::default()
        }
    }
}

#[derive(Deserialize)]
struct CandidateView<'a> {
    #[serde(borrow, default)]
    content: Option<ContentView<'a>>,
    #[serde(
        deserialize_with = "opt_str",
        borrow,
        default,
        rename = "finishReason",
        alias = "finish_reason"
    )]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(
        deserialize_with = "opt_str",
        borrow,
        default,
        rename = "finishMessage",
        alias = "finish_message"
    )]
    finish_message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ContentView<'a> {
    #[serde(borrow, default)]
    parts: Option<TextParts<'a>>,
}

#[derive(Deserialize)]
struct PartView<'a> {
    #[serde(deserialize_with = "opt_str", borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    thought: Option<bool>,
}

/// An optional string borrowed from the input when it has no escapes:
/// `#[serde(borrow)]` borrows a `Cow<str>` field but not an
/// `Option<Cow<str>>`, which serde copies into a `String` every time.
pub(crate) fn opt_str<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Cow<'a, str>>, D::Error> {
    Option::<MaybeBorrowed<'a>>::deserialize(d).map(|o| o.map(|m| m.0))
}

/// A string borrowed from the input when it has no escapes (serde's own
/// `Cow<str>` always copies).
pub(crate) struct MaybeBorrowed<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeBorrowed<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = MaybeBorrowed<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// The first element of a JSON array (the rest is skipped, nothing is
/// collected).
struct FirstOf<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for FirstOf<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = FirstOf<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut seq: S,
            ) -> std::result::Result<FirstOf<T>, S::Error> {
                let first = seq.next_element::<T>()?;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(FirstOf(first))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// The text of a content's parts, thoughts left out, without collecting
/// the parts: the first text as found, the others appended to `rest`.
struct TextParts<'a> {
    first: Option<Cow<'a, str>>,
    rest: Option<String>,
    /// Whether the array held any part at all (text or not).
    any: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for TextParts<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = TextParts<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of parts")
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut seq: S,
            ) -> std::result::Result<TextParts<'a>, S::Error> {
                let mut out = TextParts {
                    first: None,
                    rest: None,
                    any: false,
                };
                while let Some(part) = seq.next_element::<PartView<'de>>()? {
                    out.any = true;
                    let Some(text) = part.text.filter(|_| part.thought != Some(true)) else {
                        continue;
                    };
                    match &mut out.first {
                        None => out.first = Some(text),
                        Some(_) => out.rest.get_or_insert_with(String::new).push_str(&text),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct FeedbackView<'a> {
    #[serde(
        deserialize_with = "opt_str",
        borrow,
        default,
        rename = "blockReason",
        alias = "block_reason"
    )]
    block_reason: Option<Cow<'a, str>>,
    #[serde(
        deserialize_with = "opt_str",
        borrow,
        default,
        rename = "blockReasonMessage",
        alias = "block_reason_message"
    )]
    block_reason_message: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct UsageView {
    #[serde(default, rename = "promptTokenCount", alias = "prompt_token_count")]
    prompt: Option<f64>,
    #[serde(
        default,
        rename = "candidatesTokenCount",
        alias = "candidates_token_count"
    )]
    candidates: Option<f64>,
    #[serde(default, rename = "thoughtsTokenCount", alias = "thoughts_token_count")]
    thoughts: Option<f64>,
    #[serde(
        default,
        rename = "cachedContentTokenCount",
        alias = "cached_content_token_count"
    )]
    cached: Option<f64>,
    #[serde(default, rename = "totalTokenCount", alias = "total_token_count")]
    total: Option<f64>,
    #[serde(
        default,
        rename = "toolUsePromptTokenCount",
        alias = "tool_use_prompt_token_count"
    )]
    tool_use: Option<f64>,
    #[serde(
        default,
        rename = "promptTokensDetails",
        alias = "prompt_tokens_details"
    )]
    prompt_details: Option<AudioTokens>,
}

/// The `AUDIO` entries' `tokenCount` of a list of per-modality counts
/// (`[{"modality": "AUDIO", "tokenCount": 12}, …]`), summed without
/// collecting the list.
#[derive(Default)]
struct AudioTokens(u64);

impl<'de> Deserialize<'de> for AudioTokens {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Entry<'a> {
            #[serde(deserialize_with = "opt_str", borrow, default)]
            modality: Option<Cow<'a, str>>,
            #[serde(default, rename = "tokenCount", alias = "token_count")]
            tokens: Option<f64>,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AudioTokens;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of modality counts")
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut seq: S,
            ) -> std::result::Result<AudioTokens, S::Error> {
                let mut audio = 0u64;
                while let Some(e) = seq.next_element::<Entry<'_>>()? {
                    if e.modality.as_deref() == Some("AUDIO") {
                        audio = audio.saturating_add(count(e.tokens));
                    }
                }
                Ok(AudioTokens(audio))
            }
        }
        d.deserialize_seq(V)
    }
}

fn count(v: Option<f64>) -> u64 {
    // Counts arrive as JSON numbers (sometimes as floats); negative or
    // non-finite values read as 0.
    v.filter(|x| x.is_finite() && *x > 0.0)
        .map_or(0, |x| x.min(u64::MAX as f64) as u64)
}

/// Accepts (and skips) every JSON value but strings and maps, producing
/// `$none`, in a lenient visitor.
macro_rules! any_other_value {
    ($none:expr) => {
        fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_none<E>(self) -> std::result::Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_seq<S: serde::de::SeqAccess<'de>>(
            self,
            mut seq: S,
        ) -> std::result::Result<Self::Value, S::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok($none)
        }
    };
}

/// The request's key label (the rest of the request is skipped). Lenient:
/// a `request` that is not an object, `labels` that are not a map, or a key
/// label that is not a string only mean "no key label"; the rest of the
/// line is read all the same.
#[derive(Default)]
struct RequestLabels<'a> {
    labels: Labels<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for RequestLabels<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Labels<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a request")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<Labels<'a>, M::Error> {
                let mut found = Labels(None);
                while let Some(k) = m.next_key::<MaybeBorrowed<'de>>()? {
                    if k.0 == "labels" {
                        found = m.next_value::<Labels<'de>>()?;
                    } else {
                        m.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(found)
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Self::Value, E> {
                Ok(Labels(None))
            }
            any_other_value!(Labels(None));
        }
        d.deserialize_any(V(std::marker::PhantomData))
            .map(|labels| RequestLabels { labels })
    }
}

/// Only the key label of a labels map (`None` for anything else).
#[derive(Default)]
struct Labels<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Labels<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Labels<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of labels")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<Labels<'a>, M::Error> {
                let mut found = None;
                while let Some(k) = m.next_key::<MaybeBorrowed<'de>>()? {
                    if k.0 == crate::data::key::KEY_LABEL {
                        found = m.next_value::<AnyStr<'de>>()?.0;
                    } else {
                        m.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Labels(found))
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Self::Value, E> {
                Ok(Labels(None))
            }
            any_other_value!(Labels(None));
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A string borrowed where it can be, or `None` for any other JSON value.
struct AnyStr<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for AnyStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = AnyStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a label value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(AnyStr(Some(Cow::Borrowed(v))))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(AnyStr(Some(Cow::Owned(v))))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<Self::Value, M::Error> {
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(AnyStr(None))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(AnyStr(Some(Cow::Owned(v.to_owned()))))
            }
            any_other_value!(AnyStr(None));
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A line parsed into a row, plus the key label's value when the line had
/// no top-level key (the row's key is then `None` until resolved).
#[derive(Debug)]
pub(crate) struct ParsedLine {
    pub(crate) row: ResultRow,
    pub(crate) key_label: Option<String>,
}

/// Parses one output line (without its newline). The error is the reason,
/// to be wrapped with the file and line number by the caller.
pub(crate) fn parse_line(bytes: &bytes::Bytes) -> std::result::Result<ParsedLine, String> {
    let line = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let view: LineView<'_> = serde_json::from_str(line).map_err(|e| {
        if e.is_eof() {
            format!("truncated line ({e})")
        } else {
            format!("not a valid output line: {e}")
        }
    })?;
    let key = view.key.or(view.custom_id);
    let key_label = match (&key, view.request) {
        (None, Some(req)) => req.labels.0.map(Cow::into_owned),
        _ => None,
    };
    let status = view
        .status
        .map(status_text)
        .transpose()?
        .unwrap_or_default();
    let error = view.error.and_then(error_text);
    let outcome = if !status.is_empty() {
        Outcome::Failed(RowError::from_status(&status))
    } else if let Some(error) = error {
        Outcome::Failed(RowError::from_status(&error))
    } else {
        match (view.response, view.predictions) {
            (Some(response), _) => classify(response, line, RawLine::new(bytes.clone())),
            (None, Some(predictions)) => {
                text_embedding(predictions, line, RawLine::new(bytes.clone()))?
            }
            // Not an output line at all (a staged input line, say): no row
            // is made up for it.
            (None, None) => {
                return Err(
                    "neither a status nor a response: not an output line (an input line?)"
                        .to_owned(),
                )
            }
        }
    };
    // Ranges of the line where the outcome keeps it; copies otherwise.
    let keeps_line = matches!(outcome, Outcome::Succeeded(_) | Outcome::Blocked(_));
    let text = |part: Cow<'_, str>| match part {
        Cow::Borrowed(_) if keeps_line => Text::of(line, part),
        part => Text::owned(part.into_owned()),
    };
    Ok(ParsedLine {
        row: ResultRow {
            inner: RowData {
                key: key.map(text),
                processed_time: view.processed_time.map(text),
                outcome,
            },
        },
        key_label,
    })
}

/// Parses one line of a batch job's output, of any model family, into a
/// [`ResultRow`]: the one-line way to read a line without a job or a file.
///
/// A line without a top-level key gets its key back from a reversible key
/// label (see [`KEY_LABEL`](super::key::KEY_LABEL)). A line that is not
/// an output line is an [`Error::Output`](crate::error::Error::Output) (file
/// `"-"`, line 1); it never panics.
///
/// ```
/// use vertex_batch::data::{parse_output_line, Outcome};
///
/// let row = parse_output_line(r#"{"custom_id":"c1","status":"","response":{"type":"message","content":[{"type":"text","text":"Hi."}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":2}}}"#)?;
/// assert_eq!(row.key(), Some("c1"));
/// assert_eq!(row.text(), Some("Hi."));
/// let Outcome::Succeeded(answer) = row.outcome() else { panic!("c1 succeeded") };
/// assert_eq!(answer.usage().total_tokens, 7);
/// assert!(parse_output_line("not json").is_err());
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub fn parse_output_line(line: &str) -> crate::error::Result<ResultRow> {
    let bytes = bytes::Bytes::copy_from_slice(line.trim_end_matches(['\n', '\r']).as_bytes());
    let parsed = parse_line(&bytes).map_err(|message| crate::error::Error::Output {
        file: "-".to_owned(),
        line: 1,
        message,
    })?;
    let key = plain_key(&parsed);
    let mut row = parsed.row;
    if row.key().is_none() {
        row.set_key(key);
    }
    Ok(row)
}

/// Resolves a parsed line's key: the top-level key, else a reversible key
/// label.
pub(crate) fn plain_key(line: &ParsedLine) -> Option<String> {
    line.key_label.as_deref().and_then(super::key::decode_exact)
}

/// A `status` as text: a string as it is, an object (or any other value)
/// as its JSON, wrapped in `{"error": …}` when it is a bare error object so
/// that [`RowError::from_status`] finds its code and message; `null` is
/// empty.
fn status_text(raw: &RawValue) -> std::result::Result<String, String> {
    let text = raw.get().trim();
    if text == "null" {
        return Ok(String::new());
    }
    if text.starts_with('"') {
        return serde_json::from_str::<String>(text).map_err(|e| format!("a bad status: {e}"));
    }
    Ok(error_text(raw).unwrap_or_default())
}

/// An error value as status text; `None` for `null`.
fn error_text(raw: &RawValue) -> Option<String> {
    let text = raw.get().trim();
    match text {
        "null" | "\"\"" | "{}" => None,
        t if t.starts_with('"') => serde_json::from_str::<String>(t).ok(),
        t if t.starts_with('{') => {
            #[derive(Deserialize)]
            struct HasError {
                #[serde(default)]
                error: Option<serde::de::IgnoredAny>,
            }
            let wrapped = serde_json::from_str::<HasError>(t).is_ok_and(|h| h.error.is_some());
            Some(if wrapped {
                t.to_owned()
            } else {
                format!("{{\"error\": {t}}}")
            })
        }
        t => Some(t.to_owned()),
    }
}

/// A text-embedding row (`predictions`, maybe as a JSON string).
fn text_embedding(
    predictions: &RawValue,
    line_str: &str,
    line: RawLine,
) -> std::result::Result<Outcome, String> {
    let text = predictions.get().trim();
    let owned;
    let (array, borrowed) = if text.starts_with('"') {
        owned =
            serde_json::from_str::<String>(text).map_err(|e| format!("bad predictions: {e}"))?;
        (owned.as_str(), false)
    } else {
        (text, true)
    };
    let first: FirstOf<PredictionView<'_>> =
        serde_json::from_str(array).map_err(|e| format!("bad predictions: {e}"))?;
    let Some(embeddings) = first.0.and_then(|p| p.embeddings) else {
        return Ok(Outcome::Failed(RowError::from_status(
            "the predictions hold no embeddings",
        )));
    };
    let Some(values) = embeddings.values.filter(|v| v.get().starts_with('[')) else {
        return Ok(Outcome::Failed(RowError::from_status(
            "the embeddings hold no values array",
        )));
    };
    let tokens = count(embeddings.statistics.and_then(|s| s.token_count));
    let embedding = if borrowed {
        Text::of(line_str, Cow::Borrowed(values.get()))
    } else {
        Text::owned(values.get().to_owned())
    };
    Ok(Outcome::Succeeded(Answer {
        text: Text::Owned(Box::default()),
        finish_reason: None,
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
            ..Usage::default()
        },
        model_version: None,
        embedding: Some(embedding),
        line,
    }))
}

/// Where `part` (a slice borrowed from `line`) sits in `line`.
fn in_line(line: &str, part: &str) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(line.as_ptr() as usize)?;
    let same = line.get(start..start + part.len())?;
    (same.as_ptr() == part.as_ptr()).then_some(start..start + part.len())
}

fn classify(view: ResponseView<'_>, line_str: &str, line: RawLine) -> Outcome {
    // Open models' batch envelope: the answer is its body.
    if let Some(code) = view.status_code.filter(|c| !(200.0..300.0).contains(c)) {
        let body = view
            .body
            .as_ref()
            .and_then(|b| b.error)
            .and_then(error_text)
            .unwrap_or_default();
        return Outcome::Failed(RowError::from_status(&format!("HTTP {code}: {body}")));
    }
    if let Some(body) = view.body {
        return classify(*body, line_str, line);
    }
    if view.kind.as_deref() == Some("error") || view.error.is_some_and(|e| e.get() != "null") {
        let text = view.error.and_then(error_text).unwrap_or_default();
        return Outcome::Failed(RowError::from_status(&text));
    }
    let embedding_of = |raw: Option<&RawValue>| {
        raw.filter(|v| v.get().starts_with('['))
            .map(|v| Text::of(line_str, Cow::Borrowed(v.get())))
    };
    let meta = view.usage_metadata.unwrap_or_default();
    // Gemini embeddings.
    if let Some(values) = view.embedding {
        let usage = meta;
        let Some(embedding) = embedding_of(values.values) else {
            return Outcome::Failed(RowError::from_status("the embedding holds no values array"));
        };
        let prompt = count(usage.prompt);
        return Outcome::Succeeded(Answer {
            text: Text::Owned(Box::default()),
            finish_reason: None,
            usage: Usage {
                prompt_tokens: prompt,
                total_tokens: if usage.total.is_some() {
                    count(usage.total)
                } else {
                    prompt
                },
                ..Usage::default()
            },
            model_version: view.model_version.map(|m| Text::of(line_str, m)),
            embedding: Some(embedding),
            line,
        });
    }
    let chat_usage = view
        .usage
        .as_ref()
        .map(ChatUsageView::usage)
        .unwrap_or_default();
    let model = view.model.map(|m| Text::of(line_str, m));
    // Open models: chat completions and embeddings.
    if let Some(choices) = view.choices {
        let Some(choice) = choices.0 else {
            return Outcome::Failed(RowError::from_status("the response holds no choice"));
        };
        let finish_reason = choice.finish_reason.as_deref().map(chat_reason);
        let (content, refusal) = match choice.message {
            Some(m) => (m.content, m.refusal),
            None => (None, None),
        };
        if content.as_deref().is_none_or(str::is_empty)
            && (refusal.is_some() || finish_reason.as_ref().is_some_and(FinishReason::withholds))
        {
            return Outcome::Blocked(Blocked {
                reason: finish_reason.as_ref().map(|r| r.as_str().to_owned()),
                message: refusal.map(Cow::into_owned),
                finish_reason,
                line,
            });
        }
        return Outcome::Succeeded(Answer {
            text: content.map_or(Text::Owned(Box::default()), |c| Text::of(line_str, c)),
            finish_reason,
            usage: chat_usage,
            model_version: model,
            embedding: None,
            line,
        });
    }
    if let Some(data) = view.data {
        let Some(embedding) = embedding_of(data.0.and_then(|d| d.embedding)) else {
            return Outcome::Failed(RowError::from_status("the response holds no embedding"));
        };
        return Outcome::Succeeded(Answer {
            text: Text::Owned(Box::default()),
            finish_reason: None,
            usage: chat_usage,
            model_version: model,
            embedding: Some(embedding),
            line,
        });
    }
    // Claude: an Anthropic Message.
    if let Some(content) = view.content {
        let finish_reason = view.stop_reason.as_deref().map(chat_reason);
        if content.first.is_none() && finish_reason.as_ref().is_some_and(FinishReason::withholds) {
            return Outcome::Blocked(Blocked {
                reason: finish_reason.as_ref().map(|r| r.as_str().to_owned()),
                message: None,
                finish_reason,
                line,
            });
        }
        return Outcome::Succeeded(Answer {
            text: joined(line_str, Some(content)),
            finish_reason,
            usage: chat_usage,
            model_version: model,
            embedding: None,
            line,
        });
    }
    let usage = Usage {
        prompt_tokens: count(meta.prompt),
        candidates_tokens: count(meta.candidates),
        thoughts_tokens: count(meta.thoughts),
        cached_tokens: count(meta.cached),
        cache_write_tokens: 0,
        tool_use_prompt_tokens: count(meta.tool_use),
        prompt_audio_tokens: meta.prompt_details.map_or(0, |d| d.0),
        total_tokens: count(meta.total),
    };
    let first = view.candidates.and_then(|c| c.0);
    let Some(candidate) = first else {
        return match view.prompt_feedback {
            Some(fb) => Outcome::Blocked(Blocked {
                reason: fb.block_reason.map(Cow::into_owned),
                message: fb.block_reason_message.map(Cow::into_owned),
                finish_reason: None,
                line,
            }),
            None => Outcome::Failed(RowError::from_status(
                "the response holds no candidate and no prompt feedback",
            )),
        };
    };
    let parts = candidate.content.and_then(|c| c.parts);
    let finish_reason = candidate.finish_reason.as_deref().map(FinishReason::parse);
    // No content at all, stopped for a reason other than finishing: the
    // answer was withheld (safety, recitation, …), and it is not an answer.
    let no_content = parts.as_ref().is_none_or(|p| !p.any);
    if let Some(reason) = finish_reason
        .as_ref()
        .filter(|r| no_content && r.withholds())
    {
        return Outcome::Blocked(Blocked {
            reason: Some(reason.as_str().to_owned()),
            message: candidate.finish_message.map(Cow::into_owned),
            finish_reason,
            line,
        });
    }
    let text = joined(line_str, parts);
    Outcome::Succeeded(Answer {
        text,
        finish_reason,
        usage,
        model_version: view.model_version.map(|m| Text::of(line_str, m)),
        embedding: None,
        line,
    })
}

/// The text of parts (or content blocks), kept as a range of the line
/// when it is one text borrowed from it.
fn joined(line_str: &str, parts: Option<TextParts<'_>>) -> Text {
    match parts {
        None | Some(TextParts { first: None, .. }) => Text::Owned(Box::default()),
        Some(TextParts {
            first: Some(Cow::Borrowed(t)),
            rest: None,
            ..
        }) => Text::of(line_str, Cow::Borrowed(t)),
        Some(TextParts {
            first: Some(first),
            rest,
            ..
        }) => {
            let mut s = first.into_owned();
            s.push_str(rest.as_deref().unwrap_or(""));
            Text::owned(s)
        }
    }
}

/// Claude's `stop_reason` and OpenAI's `finish_reason` in the one
/// [`FinishReason`]: `end_turn`, `stop_sequence`, `stop` and `tool_use` /
/// `tool_calls` are [`FinishReason::Stop`]; `max_tokens` and `length`
/// [`FinishReason::MaxTokens`]; `refusal` and `content_filter`
/// [`FinishReason::Safety`]; others are kept as written.
fn chat_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" | "stop" | "tool_use" | "tool_calls" | "pause_turn" => {
            FinishReason::Stop
        }
        "max_tokens" | "length" | "model_context_window_exceeded" => FinishReason::MaxTokens,
        "refusal" | "content_filter" => FinishReason::Safety,
        other => FinishReason::parse(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> ParsedLine {
        parse_line(&bytes::Bytes::copy_from_slice(line.as_bytes()))
            .unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn parse_err(line: &str) -> String {
        parse_line(&bytes::Bytes::copy_from_slice(line.as_bytes())).unwrap_err()
    }

    const OK: &str = r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","request":{"contents":[{"role":"user","parts":[{"text":"hi","file_data":null}]}]},"response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"},{"text":" there"}]},"finishReason":"STOP","avgLogprobs":-0.2}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":120,"totalTokenCount":129,"trafficType":"ON_DEMAND"},"modelVersion":"gemini-2.0-flash-001","createTime":"2024-11-13T14:04:28.123456789Z","responseId":"abc"}}"#;

    #[test]
    fn a_succeeded_row_has_its_text_reason_and_usage() {
        let p = parse(OK);
        assert_eq!(p.row.key(), Some("q1"));
        let Outcome::Succeeded(a) = p.row.into_outcome() else {
            panic!("not a success")
        };
        assert_eq!(a.text(), "Hello there");
        assert_eq!(a.finish_reason(), Some(&FinishReason::Stop));
        assert_eq!(a.usage().total_tokens, 129);
        assert_eq!(a.model_version(), Some("gemini-2.0-flash-001"));
        let typed = a.response().unwrap();
        assert_eq!(typed.candidates.len(), 1);
        assert_eq!(typed.response_id, "abc");
    }

    #[test]
    fn keys_and_times_read_the_same_from_the_line_or_copied() {
        // Borrowed from the line (an answer keeps it), unescaped on the way
        // (a copy), and on a failed row (which keeps no line).
        let ok = parse(OK);
        assert_eq!(ok.row.key(), Some("q1"));
        assert_eq!(
            ok.row.processed_time_str(),
            Some("2024-11-13T14:04:28.376+00:00")
        );
        assert!(format!("{:?}", ok.row).contains(r#"key: Some("q1")"#));
        let escaped = parse(
            r#"{"key":"a\"b\u00e9","status":"","processed_time":"2024-11-13T14:04:28Z","response":{"promptFeedback":{"blockReason":"SAFETY"}}}"#,
        );
        assert_eq!(escaped.row.key(), Some("a\"bé"));
        assert_eq!(
            escaped.row.processed_time_str(),
            Some("2024-11-13T14:04:28Z")
        );
        let failed =
            parse(r#"{"key":"k9","status":"boom","processed_time":"2024-11-13T14:04:28Z"}"#);
        assert_eq!(failed.row.key(), Some("k9"));
        assert!(failed.row.processed_time().is_some());
        let mut relabelled = ok.row.clone();
        relabelled.set_key(Some("other".into()));
        assert_eq!(relabelled.key(), Some("other"));
    }

    #[test]
    fn thoughts_are_not_text_and_unknown_reasons_are_kept() {
        let p = parse(
            r#"{"key":"k","status":"","response":{"candidates":[{"content":{"parts":[{"text":"thinking","thought":true},{"text":"answer"}]},"finishReason":"SOMETHING_NEW"}]}}"#,
        );
        let Outcome::Succeeded(a) = p.row.into_outcome() else {
            panic!()
        };
        assert_eq!(a.text(), "answer");
        assert_eq!(a.finish_reason().unwrap().as_str(), "SOMETHING_NEW");
        assert!(a.response().is_ok(), "an unknown enum value must not fail");
    }

    #[test]
    fn max_tokens_is_a_success_with_its_reason() {
        let p = parse(
            r#"{"key":"k","status":"","response":{"candidates":[{"content":{"parts":[{"text":"cut"}]},"finishReason":"MAX_TOKENS"}]}}"#,
        );
        assert!(
            matches!(p.row.outcome(), Outcome::Succeeded(a) if a.finish_reason() == Some(&FinishReason::MaxTokens))
        );
    }

    #[test]
    fn a_failed_row_parses_its_embedded_error() {
        let p = parse(
            r#"{"key":"k","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid payload\", \"status\": \"INVALID_ARGUMENT\"}}","processed_time":"2024-11-13T14:04:28Z","request":{}}"#,
        );
        let Outcome::Failed(e) = p.row.into_outcome() else {
            panic!()
        };
        assert_eq!(e.code(), Some(400));
        assert_eq!(e.message(), "Invalid payload");
        assert_eq!(e.status_name(), Some("INVALID_ARGUMENT"));
    }

    #[test]
    fn a_blocked_prompt_is_blocked() {
        let p = parse(
            r#"{"key":"k","status":"","response":{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT","blockReasonMessage":"no"},"usageMetadata":{"promptTokenCount":5}}}"#,
        );
        let Outcome::Blocked(b) = p.row.into_outcome() else {
            panic!()
        };
        assert_eq!(b.reason(), Some("PROHIBITED_CONTENT"));
        assert_eq!(b.message(), Some("no"));
    }

    #[test]
    fn snake_case_and_nulls_read() {
        let p = parse(
            r#"{"key":"k","status":null,"response":{"candidates":[{"content":{"parts":[{"text":"x"}]},"finish_reason":"STOP"}],"usage_metadata":{"total_token_count":3},"prompt_feedback":null}}"#,
        );
        let Outcome::Succeeded(a) = p.row.into_outcome() else {
            panic!()
        };
        assert_eq!(a.finish_reason(), Some(&FinishReason::Stop));
        assert_eq!(a.usage().total_tokens, 3);
    }

    #[test]
    fn the_key_label_stands_in_for_a_dropped_key() {
        let line = format!(
            r#"{{"status":"","request":{{"contents":[],"labels":{{"{}":"rabc"}}}},"response":{{"candidates":[]}}}}"#,
            crate::data::key::KEY_LABEL
        );
        let p = parse(&line);
        assert_eq!(p.row.key(), None);
        assert_eq!(p.key_label.as_deref(), Some("rabc"));
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the parser.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_line(&bytes::Bytes::from(bytes));
        }

        /// Every prefix of a real line either parses or is an error saying
        /// why — never a panic, never a silent success with another key.
        #[test]
        fn every_truncation_of_a_line_is_handled(cut in 0usize..OK.len()) {
            let prefix = &OK[..cut];
            if let Ok(p) = parse_line(&bytes::Bytes::copy_from_slice(prefix.as_bytes())) {
                proptest::prop_assert!(p.row.key().is_none_or(|k| k == "q1"));
            }
        }

        /// Lines with fields of the wrong JSON type are errors or
        /// well-formed rows, never panics.
        #[test]
        fn wrong_types_never_panic(
            key in proptest::sample::select(vec!["\"k\"", "7", "null", "[]", "{}"]),
            status in proptest::sample::select(vec!["\"\"", "\"boom\"", "1", "null", "{}"]),
            response in proptest::sample::select(vec!["null", "1", "\"x\"", "[]", "{}",
                r#"{"candidates":{}}"#, r#"{"candidates":[1]}"#,
                r#"{"candidates":[{"content":{"parts":[{"text":5}]}}]}"#,
                r#"{"usageMetadata":{"totalTokenCount":"x"}}"#,
                r#"{"candidates":[{"finishReason":7}]}"#]),
        ) {
            let line = format!(r#"{{"key":{key},"status":{status},"response":{response}}}"#);
            let _ = parse_line(&bytes::Bytes::from(line));
        }

        /// Any strings (quotes, backslashes, control and non-ASCII
        /// characters: escaped or not, borrowed or copied) read back as
        /// written, on answers, blocked rows and failed rows alike.
        #[test]
        fn strings_read_back_as_written(
            key in "\\PC{0,12}|[\"\\\\\\n\\u{7f}é😀a]{0,6}",
            time in "\\PC{0,8}",
            text in "\\PC{0,12}|[\"\\\\\\t\\u{1}b]{0,6}",
            version in "\\PC{0,8}",
            kind in 0u8..3,
        ) {
            let response = match kind {
                0 => serde_json::json!({
                    "candidates": [{"content": {"parts": [{"text": text}]}, "finishReason": "STOP"}],
                    "modelVersion": version,
                }),
                1 => serde_json::json!({"promptFeedback": {"blockReason": text}}),
                _ => serde_json::Value::Null,
            };
            let status = if kind == 2 { text.as_str() } else { "" };
            let line = serde_json::json!({
                "key": key, "processed_time": time, "status": status, "response": response,
            })
            .to_string();
            if kind == 2 && text.is_empty() {
                // Neither a status nor a response: not an output line.
                proptest::prop_assert!(parse_line(&bytes::Bytes::from(line)).is_err());
                return Ok(());
            }
            let p = parse_line(&bytes::Bytes::from(line)).map_err(proptest::test_runner::TestCaseError::fail)?;
            proptest::prop_assert_eq!(p.row.key(), Some(key.as_str()));
            proptest::prop_assert_eq!(p.row.processed_time_str(), Some(time.as_str()));
            match (kind, p.row.outcome()) {
                (0, Outcome::Succeeded(a)) => {
                    proptest::prop_assert_eq!(a.text(), text.as_str());
                    proptest::prop_assert_eq!(a.model_version(), Some(version.as_str()));
                }
                (1, Outcome::Blocked(b)) => proptest::prop_assert_eq!(b.reason(), Some(text.as_str())),
                (2, Outcome::Failed(e)) => proptest::prop_assert_eq!(e.status(), text.as_str()),
                (k, o) => proptest::prop_assert!(false, "kind {} gave {}", k, o.kind()),
            }
        }
    }

    #[test]
    fn huge_token_counts_saturate_instead_of_wrapping() {
        let line = r#"{"key":"k","status":"","response":{"candidates":[{}],"usageMetadata":{"totalTokenCount":1e20}}}"#;
        let Outcome::Succeeded(a) = parse(line).row.into_outcome() else {
            panic!()
        };
        let mut sum = *a.usage();
        sum += *a.usage();
        assert_eq!(sum.total_tokens, u64::MAX);
    }

    #[test]
    fn hostile_lines_are_errors_not_panics() {
        for bad in [
            "",
            "not json",
            r#"{"key":"k","status":"","response":{"candidates":[{"content":"#,
            r#"{"key":7}"#,
            r#"{"key":"k","status":"","response":"text"}"#,
            r#"{"key":"k","status":"","response":{"candidates":{"a":1}}}"#,
            "[1,2,3]",
        ] {
            assert!(!parse_err(bad).is_empty(), "{bad:?} should fail");
        }
        assert!(
            parse_err(r#"{"key":"k","status":"","response":{"candidates":[{"content":"#)
                .contains("truncated")
        );
        // A status that is neither a string nor an object is read
        // leniently: a failed row carrying it, never a success.
        let odd = parse(r#"{"key":"k","status":5}"#);
        assert!(matches!(odd.row.outcome(), Outcome::Failed(e) if e.message() == "5"));
    }

    #[test]
    fn a_line_with_neither_status_nor_response_is_unreadable_not_failed() {
        // A staged input line (what a batch root holds under input/).
        let input = format!(
            r#"{{"key":"q1","request":{{"contents":[],"labels":{{"{}":"roeyq"}}}}}}"#,
            crate::data::key::KEY_LABEL
        );
        for line in [
            input.as_str(),
            r#"{"key":"q1","status":""}"#,
            r#"{"key":"q1","status":null,"response":null}"#,
            "{}",
        ] {
            let e = parse_err(line);
            assert!(e.contains("neither a status nor a response"), "{line}: {e}");
        }
    }

    #[test]
    fn a_candidate_with_no_content_stopped_for_safety_is_blocked_not_an_answer() {
        for (candidate, reason) in [
            (r#"{"finishReason":"SAFETY"}"#, "SAFETY"),
            (
                r#"{"finishReason":"PROHIBITED_CONTENT","content":{"role":"model"}}"#,
                "PROHIBITED_CONTENT",
            ),
            (
                r#"{"finishReason":"RECITATION","content":{"parts":[]}}"#,
                "RECITATION",
            ),
            (
                r#"{"finish_reason":"BLOCKLIST","content":null}"#,
                "BLOCKLIST",
            ),
            (
                r#"{"finishReason":"SPII","finishMessage":"personal data"}"#,
                "SPII",
            ),
            (r#"{"finishReason":"IMAGE_SAFETY"}"#, "IMAGE_SAFETY"),
        ] {
            let line = format!(
                r#"{{"key":"k","status":"","response":{{"candidates":[{candidate}],"usageMetadata":{{"promptTokenCount":4}}}}}}"#
            );
            let p = parse(&line);
            let Outcome::Blocked(b) = p.row.outcome() else {
                panic!("{line}: {}", p.row.outcome().kind())
            };
            assert_eq!(b.reason(), Some(reason), "{line}");
            assert_eq!(b.finish_reason().map(FinishReason::as_str), Some(reason));
            assert!(!p.row.outcome().needs_retry() && !p.row.outcome().is_success());
            assert_eq!(p.row.outcome().kind(), "blocked");
            assert!(b.raw_response().unwrap().get().contains(reason));
        }
        let spii = parse(
            r#"{"key":"k","status":"","response":{"candidates":[{"finishReason":"SPII","finishMessage":"personal data"}]}}"#,
        );
        let Outcome::Blocked(b) = spii.row.outcome() else {
            panic!()
        };
        assert_eq!(b.message(), Some("personal data"));
    }

    #[test]
    fn candidates_with_content_or_a_normal_stop_stay_answers() {
        for candidate in [
            // Truncated, with text or without (thoughts used the budget).
            r#"{"content":{"parts":[{"text":"cut"}]},"finishReason":"MAX_TOKENS"}"#,
            r#"{"finishReason":"MAX_TOKENS"}"#,
            // Cut for safety after some text: the text is kept.
            r#"{"content":{"parts":[{"text":"partial"}]},"finishReason":"SAFETY"}"#,
            // A function call: content, no text.
            r#"{"content":{"parts":[{"functionCall":{"name":"f"}}]},"finishReason":"STOP"}"#,
            r#"{"finishReason":"STOP"}"#,
            r#"{"finishReason":"FINISH_REASON_UNSPECIFIED"}"#,
            "{}",
        ] {
            let line =
                format!(r#"{{"key":"k","status":"","response":{{"candidates":[{candidate}]}}}}"#);
            let p = parse(&line);
            assert!(
                p.row.outcome().is_success(),
                "{line}: {}",
                p.row.outcome().kind()
            );
        }
    }

    #[test]
    fn an_odd_request_or_labels_lose_only_the_key_label() {
        let label = crate::data::key::KEY_LABEL;
        for request in [
            "\"a string\"".to_owned(),
            "[1,{\"labels\":{}}]".to_owned(),
            "7".to_owned(),
            "true".to_owned(),
            r#"{"labels":"x"}"#.to_owned(),
            r#"{"labels":[1,2]}"#.to_owned(),
            r#"{"labels":null}"#.to_owned(),
            format!(r#"{{"labels":{{"{label}":7}}}}"#),
            format!(r#"{{"labels":{{"{label}":{{"a":[1]}}}}}}"#),
        ] {
            for key in [r#""key":"q1","#, ""] {
                let line = format!(
                    r#"{{{key}"status":"boom","request":{request},"processed_time":"2024-11-13T14:04:28Z"}}"#
                );
                let p = parse(&line);
                assert_eq!(p.row.outcome().kind(), "failed", "{line}");
                assert_eq!(p.row.processed_time_str(), Some("2024-11-13T14:04:28Z"));
                assert_eq!(p.row.key(), (!key.is_empty()).then_some("q1"), "{line}");
                assert_eq!(p.key_label, None, "{line}");
            }
        }
        // An escaped label value is read too.
        let p = parse(&format!(
            r#"{{"status":"","request":{{"labels":{{"{label}":"r\u006fe"}}}},"response":{{"candidates":[{{}}]}}}}"#
        ));
        assert_eq!(p.key_label.as_deref(), Some("roe"));
    }

    #[test]
    fn the_key_label_is_taken_out_of_a_missing_request_and_nothing_else() {
        let label = crate::data::key::KEY_LABEL;
        let strip = |r: &str| {
            let raw = RawValue::from_string(r.to_owned()).unwrap();
            without_key_label(&raw).map(|r| r.get().to_owned())
        };
        for (input, want) in [
            (
                format!(
                    r#"{{"contents": [ ], "labels": {{"team": "x", "{label}": "rme"}}, "z": 1.0e0}}"#
                ),
                r#"{"contents": [ ], "labels": {"team": "x"}, "z": 1.0e0}"#,
            ),
            (
                format!(r#"{{"labels":{{"{label}":"rme","team":"x"}},"contents":[]}}"#),
                r#"{"labels":{"team":"x"},"contents":[]}"#,
            ),
            (
                format!(r#"{{"contents":[],"labels":{{"{label}":"rme"}}}}"#),
                r#"{"contents":[]}"#,
            ),
            (
                format!(r#"{{"labels":{{"{label}":"rme"}},"contents":[]}}"#),
                r#"{"contents":[]}"#,
            ),
            (format!(r#"{{"labels":{{"{label}":"rme"}}}}"#), "{}"),
            (
                format!(r#"{{"labels":{{"{label}":"a","b":"c","{label}":"d"}}}}"#),
                r#"{"labels":{"b":"c"}}"#,
            ),
        ] {
            assert_eq!(strip(&input).as_deref(), Some(want), "{input}");
        }
        for untouched in [
            r#"{"contents":[],"labels":{"team":"x"}}"#,
            r#"{"contents":[]}"#,
            r#"{"labels":null}"#,
            r#"[1]"#,
        ] {
            assert_eq!(strip(untouched), None, "{untouched}");
        }
    }

    /// JSON objects as requests: a few members of any kind, with labels of
    /// any kind or none.
    fn request_strategy() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i32>().prop_map(serde_json::Value::from),
            "\\PC{0,8}".prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z\"\\\\]{1,4}", inner, 0..3)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        let labels = prop_oneof![
            Just(None),
            Just(Some(serde_json::Value::Null)),
            Just(Some(serde_json::json!(7))),
            Just(Some(serde_json::json!(["x"]))),
            Just(Some(serde_json::json!({"a": {"b": 1}}))),
            proptest::collection::btree_map("[a-z][a-z0-9_]{0,5}", "[a-z0-9_-]{0,6}", 0..4)
                .prop_map(|m| Some(serde_json::Value::Object(
                    m.into_iter().map(|(k, v)| (k, v.into())).collect()
                ))),
        ];
        (
            proptest::collection::btree_map("[a-km-z]{1,6}", value, 0..4),
            labels,
        )
            .prop_map(|(members, labels)| {
                let mut m: serde_json::Map<String, serde_json::Value> =
                    members.into_iter().collect();
                if let Some(l) = labels {
                    m.insert("labels".into(), l);
                }
                serde_json::Value::Object(m)
            })
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// Any output line: no panic; when it parses, what it holds is read;
        /// when its key and status are fine, an odd `request` never makes it
        /// unreadable.
        #[test]
        fn any_line_is_read_as_far_as_it_can_be(
            request in proptest::prop_oneof![
                request_strategy(),
                proptest::prelude::any::<i32>().prop_map(serde_json::Value::from),
                "\\PC{0,6}".prop_map(serde_json::Value::from),
                proptest::strategy::Just(serde_json::Value::Null),
                proptest::collection::vec(request_strategy(), 0..2).prop_map(serde_json::Value::from),
            ],
            key in proptest::option::of("\\PC{1,8}"),
            status in "\\PC{1,8}",
            junk in "\\PC{0,40}",
        ) {
            let _ = parse_line(&bytes::Bytes::from(junk));
            let mut line = serde_json::json!({"status": status, "request": request});
            if let Some(k) = &key {
                line["key"] = k.clone().into();
            }
            let p = parse_line(&bytes::Bytes::from(line.to_string()))
                .map_err(proptest::test_runner::TestCaseError::fail)?;
            proptest::prop_assert_eq!(p.row.key(), key.as_deref());
            let Outcome::Failed(e) = p.row.outcome() else {
                return Err(proptest::test_runner::TestCaseError::fail("not failed"));
            };
            proptest::prop_assert_eq!(e.status(), status.as_str());
        }

        /// A request staged by the input writer and taken back from a
        /// missing row is the request given (labels aside: none, `null` and
        /// `{}` all read as none), and a new batch accepts it again, staging
        /// the same line.
        #[test]
        fn a_missing_request_goes_back_into_a_new_batch(
            request in request_strategy(),
            key in "\\PC{1,80}",
        ) {
            use crate::data::input::{BatchRequest, InputEncoder, InputLimits};
            let raw = BatchRequest::json(&request.to_string()).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let mut staged = Vec::new();
            if InputEncoder::new(InputLimits::default()).encode(&key, raw, &mut staged).is_err() {
                return Ok(()); // e.g. a labels map the writer refuses
            }
            let text = std::str::from_utf8(&staged).unwrap().trim_end();
            let (k, staged_request) = crate::data::input::parse_input_text(text)
                .map_err(proptest::test_runner::TestCaseError::fail)?
                .unwrap();
            proptest::prop_assert_eq!(&k, &key);
            let row = ResultRow::missing(k, staged_request);
            let Outcome::Missing(m) = row.outcome() else { unreachable!() };
            let back: serde_json::Value = serde_json::from_str(m.request().get()).unwrap();
            let mut want = request.clone();
            if want.get("labels").is_some_and(|l| l.is_null() || l.as_object().is_some_and(|o| o.is_empty())) {
                want.as_object_mut().unwrap().remove("labels");
            }
            proptest::prop_assert_eq!(&back, &want);
            let mut again = Vec::new();
            let raw = BatchRequest::json(m.request().get()).unwrap();
            InputEncoder::new(InputLimits::default())
                .encode(&key, raw, &mut again)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            // The same line as staged (labels may move to the end).
            let parsed = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
            proptest::prop_assert_eq!(parsed(&again), parsed(&staged));
        }

        /// Taking the label out never panics, whatever the text.
        #[test]
        fn taking_the_label_out_of_any_text_never_panics(text in "\\PC{0,64}|[{}\\[\\]\":, a-z_]{0,40}") {
            if let Ok(raw) = RawValue::from_string(text.clone()) {
                if let Some(out) = without_key_label(&raw) {
                    proptest::prop_assert!(serde_json::from_str::<serde_json::Value>(out.get()).is_ok());
                }
            }
            let _ = object_members(&text);
        }
    }
}
#[cfg(test)]
mod borrowing {
    use super::*;

    /// An answer's strings without escapes are ranges of its line, not
    /// copies (serde copies an `Option<Cow<str>>` unless told otherwise);
    /// escaped ones are unescaped copies and read the same.
    #[test]
    fn unescaped_strings_of_an_answer_are_ranges_of_its_line() {
        let line = br#"{"key":"q1","processed_time":"2024-11-13T14:04:28Z","response":{"candidates":[{"content":{"parts":[{"text":"hello"}]},"finishReason":"STOP"}],"modelVersion":"m-1"}}"#;
        let p = parse_line(&bytes::Bytes::from_static(line)).unwrap();
        assert!(matches!(p.row.inner.key, Some(Text::InLine(..))));
        assert!(matches!(p.row.inner.processed_time, Some(Text::InLine(..))));
        let Outcome::Succeeded(a) = &p.row.inner.outcome else {
            panic!("not a success")
        };
        assert!(matches!(a.text, Text::InLine(..)));
        assert!(matches!(a.model_version, Some(Text::InLine(..))));
        assert_eq!(
            (p.row.key(), a.text(), a.model_version()),
            (Some("q1"), "hello", Some("m-1"))
        );

        let escaped = br#"{"key":"q\u0031","response":{"candidates":[{"content":{"parts":[{"text":"a\nb"}]}}]}}"#;
        let p = parse_line(&bytes::Bytes::from_static(escaped)).unwrap();
        assert!(matches!(p.row.inner.key, Some(Text::Owned(_))));
        assert_eq!(p.row.key(), Some("q1"));
        assert_eq!(p.row.text(), Some("a\nb"));
    }
}

#[cfg(test)]
mod families {
    //! The output reader for every model family.
    use super::*;

    fn parse(line: &str) -> ParsedLine {
        parse_line(&bytes::Bytes::copy_from_slice(line.as_bytes()))
            .unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn outcome(line: &str) -> Outcome {
        parse(line).row.into_outcome()
    }

    fn answer(line: &str) -> Answer {
        match outcome(line) {
            Outcome::Succeeded(a) => a,
            o => panic!("{} for {line}", o.kind()),
        }
    }

    #[test]
    fn gemini_usage_reads_tool_use_and_audio_tokens() {
        let line = r#"{"key":"g1","status":"","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"ok"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1200,"candidatesTokenCount":50,"thoughtsTokenCount":300,"cachedContentTokenCount":1024,"toolUsePromptTokenCount":40,"totalTokenCount":1590,"trafficType":"BATCH","promptTokensDetails":[{"modality":"TEXT","tokenCount":900},{"modality":"AUDIO","tokenCount":250},{"modality":"AUDIO","tokenCount":50}],"cacheTokensDetails":[{"modality":"TEXT","tokenCount":1024}],"candidatesTokensDetails":[{"modality":"TEXT","tokenCount":50}]},"modelVersion":"gemini-2.5-flash"}}"#;
        let u = *answer(line).usage();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 1200,
                candidates_tokens: 50,
                thoughts_tokens: 300,
                cached_tokens: 1024,
                cache_write_tokens: 0,
                tool_use_prompt_tokens: 40,
                // The two AUDIO entries, summed.
                prompt_audio_tokens: 300,
                total_tokens: 1590,
            }
        );
        // snake_case spellings (BigQuery exports) read the same.
        let snake = r#"{"key":"g2","status":"","response":{"candidates":[{"content":{"parts":[{"text":"ok"}]}}],"usage_metadata":{"prompt_token_count":10,"tool_use_prompt_token_count":3,"prompt_tokens_details":[{"modality":"AUDIO","token_count":4}]}}}"#;
        let u = *answer(snake).usage();
        assert_eq!(
            (
                u.prompt_tokens,
                u.tool_use_prompt_tokens,
                u.prompt_audio_tokens
            ),
            (10, 3, 4)
        );
        // Odd details (not an array of objects) are a bad line, not a panic.
        let odd = r#"{"key":"g3","status":"","response":{"candidates":[{}],"usageMetadata":{"promptTokensDetails":{"modality":"AUDIO"}}}}"#;
        assert!(parse_line(&bytes::Bytes::from(odd)).is_err());
    }

    #[test]
    fn claude_usage_counts_cache_reads_and_writes_in_the_prompt() {
        let line = r#"{"custom_id":"c1","status":"","response":{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":20,"cache_creation_input_tokens":2000,"cache_read_input_tokens":3000,"output_tokens":7}}}"#;
        let u = *answer(line).usage();
        assert_eq!(
            u,
            Usage {
                // 20 + 2000 + 3000
                prompt_tokens: 5020,
                candidates_tokens: 7,
                cached_tokens: 3000,
                cache_write_tokens: 2000,
                total_tokens: 5027,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn openai_usage_splits_reasoning_from_the_answer() {
        let line = r#"{"custom_id":"o1","response":{"status_code":200,"body":{"object":"chat.completion","choices":[{"message":{"role":"assistant","content":"42"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":900,"total_tokens":1900,"prompt_tokens_details":{"cached_tokens":512},"completion_tokens_details":{"reasoning_tokens":850}}}},"error":null}"#;
        let u = *answer(line).usage();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 1000,
                // 900 - 850: the reasoning is counted once, in thoughts.
                candidates_tokens: 50,
                thoughts_tokens: 850,
                cached_tokens: 512,
                total_tokens: 1900,
                ..Usage::default()
            }
        );
        // More reasoning than completion (a confused server): 0, no wrap.
        let odd = r#"{"custom_id":"o2","response":{"choices":[{"message":{"content":"x"}}],"usage":{"completion_tokens":1,"completion_tokens_details":{"reasoning_tokens":5}}}}"#;
        assert_eq!(answer(odd).usage().candidates_tokens, 0);
    }

    #[test]
    fn text_embedding_rows_tell_their_billed_characters() {
        let line = r#"{"instance":{"content":"  Why is\tthe sky blue?\n"},"predictions":[{"embeddings":{"statistics":{"token_count":7,"truncated":false},"values":[0.1]}}],"status":""}"#;
        let row = parse_output_line(line).unwrap();
        // "Whyistheskyblue?": white space is not billed.
        assert_eq!(row.input_chars(), Some(16));
        // Code points, not bytes: "日本語" is 3 characters (9 bytes).
        let cjk = r#"{"instance":{"content":"日本語"},"predictions":[{"embeddings":{"values":[0.1]}}],"status":""}"#;
        assert_eq!(parse_output_line(cjk).unwrap().input_chars(), Some(3));
        // BigQuery rows: the `content` column, predictions as a string.
        let bq = r#"{"content":"a b c","predictions":"[{\"embeddings\":{\"values\":[0.5]}}]","status":""}"#;
        assert_eq!(parse_output_line(bq).unwrap().input_chars(), Some(3));
        // Other families echo no `instance.content`.
        let gemini = r#"{"key":"k","status":"","response":{"candidates":[{"content":{"parts":[{"text":"x"}]}}]}}"#;
        assert_eq!(parse_output_line(gemini).unwrap().input_chars(), None);
        // A failed row keeps no line.
        let failed = r#"{"instance":{"content":"abc"},"status":"boom"}"#;
        assert_eq!(parse_output_line(failed).unwrap().input_chars(), None);
    }

    #[test]
    fn gemini_embeddings_read_their_values_and_tokens() {
        let a = answer(
            r#"{"key":"d1","request":{"content":{"parts":[{"text":"sky"}]}},"status":"","processed_time":"2026-01-01T00:00:00Z","response":{"embedding":{"values":[0.25,-1.5e-3,1]},"usageMetadata":{"promptTokenCount":4,"totalTokenCount":4}}}"#,
        );
        let e = a.embedding().unwrap();
        assert_eq!(e.values().unwrap(), [0.25, -1.5e-3, 1.0]);
        assert_eq!(e.json(), "[0.25,-1.5e-3,1]");
        assert_eq!(e.dimensions(), 3);
        assert_eq!((a.usage().prompt_tokens, a.usage().total_tokens), (4, 4));
        assert_eq!(a.text(), "");
        let failed = outcome(
            r#"{"key":"d2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"no text\", \"status\": \"INVALID_ARGUMENT\"}}"}"#,
        );
        assert!(
            matches!(failed, Outcome::Failed(e) if e.status_name() == Some("INVALID_ARGUMENT"))
        );
        assert!(matches!(
            outcome(r#"{"key":"d","status":"","response":{"embedding":{}}}"#),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn text_embeddings_read_predictions_as_json_or_as_a_string() {
        let line = r#"{"key":"t1","instance":{"content":"sky"},"predictions":[{"embeddings":{"statistics":{"token_count":8,"truncated":false},"values":[0.6,0.8]}}],"status":""}"#;
        let p = parse(line);
        assert_eq!(p.row.key(), Some("t1"));
        let a = answer(line);
        assert_eq!(a.embedding().unwrap().values().unwrap(), [0.6, 0.8]);
        assert_eq!(a.usage().prompt_tokens, 8);
        // BigQuery's `predictions` column: the same array as a JSON string.
        let bq = r#"{"key":"t1","content":"sky","predictions":"[{\"embeddings\":{\"statistics\":{\"token_count\":2},\"values\":[1,2,3]}}]","status":""}"#;
        assert_eq!(answer(bq).embedding().unwrap().dimensions(), 3);
        assert!(matches!(
            outcome(r#"{"key":"t","predictions":[],"status":""}"#),
            Outcome::Failed(_)
        ));
        assert!(
            matches!(outcome(r#"{"key":"t","instance":{},"status":"Invalid content"}"#), Outcome::Failed(e) if e.message() == "Invalid content")
        );
    }

    #[test]
    fn claude_reads_text_stop_reason_and_usage() {
        let line = r#"{"custom_id":"c1","request":{"messages":[]},"status":"","processed_time":"2026-01-01T00:00:00Z","response":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello"},{"type":"text","text":" there"}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":3,"cache_read_input_tokens":4}}}"#;
        let p = parse(line);
        assert_eq!(p.row.key(), Some("c1"));
        let a = answer(line);
        assert_eq!(a.text(), "Hello there");
        assert_eq!(a.finish_reason(), Some(&FinishReason::MaxTokens));
        // Claude's `input_tokens` leaves the cache reads out; the prompt
        // counts them (as Gemini's does): 10 + 4.
        assert_eq!(a.usage().prompt_tokens, 14);
        assert_eq!(a.usage().candidates_tokens, 3);
        assert_eq!(a.usage().cached_tokens, 4);
        assert_eq!(a.usage().total_tokens, 17);
        assert_eq!(a.model_version(), Some("claude-sonnet-4-5"));
        let stop = answer(
            r#"{"custom_id":"c","response":{"content":[{"type":"text","text":"x"}],"stop_reason":"end_turn"}}"#,
        );
        assert_eq!(stop.finish_reason(), Some(&FinishReason::Stop));
        let refused =
            outcome(r#"{"custom_id":"c","response":{"content":[],"stop_reason":"refusal"}}"#);
        assert!(matches!(refused, Outcome::Blocked(_)), "{}", refused.kind());
        let err = outcome(
            r#"{"custom_id":"c","response":{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}}"#,
        );
        assert!(matches!(err, Outcome::Failed(e) if e.message().contains("Overloaded")));
        let status_object = outcome(
            r#"{"custom_id":"c","status":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert!(matches!(status_object, Outcome::Failed(e) if e.message().contains("Quota")));
    }

    #[test]
    fn open_models_read_the_envelope_or_the_bare_completion() {
        let line = r#"{"id":"batch_req_1","custom_id":"o1","response":{"status_code":200,"request_id":"r","body":{"id":"c","object":"chat.completion","model":"meta/llama","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"completion_tokens_details":{"reasoning_tokens":1}}}},"error":null}"#;
        assert_eq!(parse(line).row.key(), Some("o1"));
        let a = answer(line);
        assert_eq!(a.text(), "Hi!");
        assert_eq!(a.finish_reason(), Some(&FinishReason::MaxTokens));
        assert_eq!(
            (
                a.usage().prompt_tokens,
                a.usage().candidates_tokens,
                a.usage().total_tokens
            ),
            // `completion_tokens` (2) holds the reasoning token: the
            // answer's own tokens are 2 - 1, as Gemini counts them.
            (5, 1, 7)
        );
        assert_eq!(a.usage().thoughts_tokens, 1);
        // The completion straight under `response`.
        let bare = answer(
            r#"{"custom_id":"o1","response":{"choices":[{"message":{"content":"Yo"},"finish_reason":"stop"}]}}"#,
        );
        assert_eq!(
            (bare.text(), bare.finish_reason()),
            ("Yo", Some(&FinishReason::Stop))
        );
        let emb = answer(
            r#"{"custom_id":"o2","response":{"status_code":200,"body":{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,0.5]}],"usage":{"prompt_tokens":2,"total_tokens":2}}}}"#,
        );
        assert_eq!(emb.embedding().unwrap().values().unwrap(), [0.5, 0.5]);
        assert_eq!(emb.usage().prompt_tokens, 2);
        let http = outcome(
            r#"{"custom_id":"o3","response":{"status_code":429,"body":{"error":{"message":"slow down"}}}}"#,
        );
        assert!(
            matches!(&http, Outcome::Failed(e) if e.message().contains("slow down")),
            "{http:?}"
        );
        let top = outcome(
            r#"{"custom_id":"o4","response":null,"error":{"code":400,"message":"bad body","status":"INVALID_ARGUMENT"}}"#,
        );
        assert!(
            matches!(&top, Outcome::Failed(e) if e.code() == Some(400)),
            "{top:?}"
        );
        let filtered = outcome(
            r#"{"custom_id":"o5","response":{"body":{"choices":[{"message":{"content":null},"finish_reason":"content_filter"}]}}}"#,
        );
        assert!(matches!(filtered, Outcome::Blocked(_)));
        assert!(matches!(
            outcome(r#"{"custom_id":"o6","response":{"choices":[]}}"#),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn the_public_one_line_parser_reads_any_family() {
        let row = parse_output_line("{\"custom_id\":\"x\",\"response\":{\"choices\":[{\"message\":{\"content\":\"a\"}}]}}\r\n").unwrap();
        assert_eq!((row.key(), row.text()), (Some("x"), Some("a")));
        let err = parse_output_line("{\"custom_id\":").unwrap_err();
        assert!(
            matches!(err, crate::error::Error::Output { line: 1, .. }),
            "{err}"
        );
    }

    proptest::proptest! {
        /// Lines of every family with fields of any JSON type: rows or
        /// errors, never panics.
        #[test]
        fn family_lines_of_wrong_types_never_panic(
            key in proptest::sample::select(vec![r#""key":"k""#, r#""custom_id":"k""#, r#""custom_id":5"#, r#""key":null"#]),
            body in proptest::sample::select(vec![
                r#""response":{"embedding":{"values":"x"}}"#,
                r#""response":{"embedding":[1]}"#,
                r#""predictions":[{"embeddings":{"values":{}}}]"#,
                r#""predictions":"[1"#,
                r#""predictions":7"#,
                r#""response":{"content":[{"text":5}],"stop_reason":1}"#,
                r#""response":{"content":"x","usage":{"input_tokens":"a"}}"#,
                r#""response":{"choices":[{"message":7}]}"#,
                r#""response":{"status_code":"x","body":[]}"#,
                r#""response":{"status_code":500}"#,
                r#""response":{"body":{"body":{"body":{"choices":[]}}}}"#,
                r#""response":{"data":[{"embedding":"x"}]}"#,
                r#""error":[1,2]"#,
                r#""status":[],"response":{}"#,
            ]),
        ) {
            let line = format!("{{{key},{body}}}");
            let _ = parse_line(&bytes::Bytes::from(line));
        }

        /// Typed fields of every family read back as written.
        #[test]
        fn family_fields_read_back_as_written(
            key in "\\PC{1,12}",
            text in "\\PC{0,16}",
            values in proptest::collection::vec(-1.0e3f32..1.0e3, 1..8),
            tokens in 0u32..1_000_000,
            family in 0u8..4,
        ) {
            let line = match family {
                0 => serde_json::json!({"key": key, "status": "", "response": {"embedding": {"values": values}, "usageMetadata": {"promptTokenCount": tokens}}}),
                1 => serde_json::json!({"key": key, "status": "", "instance": {"content": text}, "predictions": [{"embeddings": {"statistics": {"token_count": tokens}, "values": values}}]}),
                2 => serde_json::json!({"custom_id": key, "status": "", "response": {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "usage": {"input_tokens": tokens, "output_tokens": 1}}}),
                _ => serde_json::json!({"custom_id": key, "response": {"status_code": 200, "body": {"choices": [{"message": {"content": text}, "finish_reason": "stop"}], "usage": {"prompt_tokens": tokens, "completion_tokens": 1}}}, "error": null}),
            }.to_string();
            let row = parse_output_line(&line).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(row.key(), Some(key.as_str()));
            let Outcome::Succeeded(a) = row.outcome() else {
                return Err(proptest::test_runner::TestCaseError::fail(format!("not a success: {line}")));
            };
            proptest::prop_assert_eq!(a.usage().prompt_tokens, u64::from(tokens));
            if family < 2 {
                proptest::prop_assert_eq!(a.embedding().unwrap().values().unwrap(), values);
            } else {
                proptest::prop_assert_eq!(a.text(), text.as_str());
                proptest::prop_assert_eq!(a.finish_reason(), Some(&FinishReason::Stop));
                proptest::prop_assert_eq!(a.usage().candidates_tokens, 1);
            }
        }
    }
}
