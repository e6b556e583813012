//! The types of a classified output row.

use std::{borrow::Cow, fmt, time::SystemTime};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::{in_line, opt_str, without_key_label};
use crate::{error::Result, proto::aiplatform::GenerateContentResponse};

/// What happened to one request of a batch.
///
/// ```
/// use vertex_batch::format::{parse_output_line, Outcome};
///
/// // A succeeded (q1), a failed (q2) and a blocked (q3) row.
/// let rows = [
///     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#,
///     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#,
///     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#,
/// ]
/// .into_iter()
/// .map(parse_output_line)
/// .collect::<Result<Vec<_>, _>>()?;
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
/// # Ok::<(), vertex_batch::Error>(())
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
    /// use vertex_batch::format::{Outcome, RowError};
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
    /// use vertex_batch::format::{Outcome, RowError};
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
    /// use vertex_batch::format::{Outcome, RowError};
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
    /// use vertex_batch::format::{Outcome, RowError};
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
/// use vertex_batch::format::{parse_output_line, FinishReason, Outcome};
///
/// let row = parse_output_line(r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#)?;
/// let Outcome::Succeeded(answer) = row.outcome() else { panic!("q1 succeeded") };
/// assert_eq!(answer.text(), "Rayleigh scattering.");
/// assert_eq!(answer.finish_reason(), Some(&FinishReason::Stop));
/// assert_eq!(answer.usage().total_tokens, 13);
/// assert_eq!(answer.model_version(), Some("gemini-2.0-flash-001"));
/// assert!(answer.output_line().starts_with(r#"{"key":"q1""#));
/// assert!(answer.raw_response()?.get().starts_with(r#"{"candidates""#));
/// assert_eq!(answer.response()?.candidates.len(), 1);
/// # Ok::<(), vertex_batch::Error>(())
/// ```
#[derive(Clone)]
pub struct Answer {
    pub(super) text: Text,
    pub(super) finish_reason: Option<FinishReason>,
    pub(super) usage: Usage,
    pub(super) model_version: Option<Text>,
    /// An embedding's values: the JSON array as the line holds it.
    pub(super) embedding: Option<Text>,
    pub(super) line: RawLine,
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
    /// use vertex_batch::format::{parse_output_line, Outcome};
    ///
    /// let row = parse_output_line(r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#)?;
    /// let Outcome::Succeeded(answer) = row.outcome() else { panic!("q1 succeeded") };
    /// assert_eq!(answer.text(), "Rayleigh scattering.");
    /// # Ok::<(), vertex_batch::Error>(())
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
    /// use vertex_batch::format::{parse_output_line, Outcome};
    ///
    /// let row = parse_output_line(r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#)?;
    /// let Outcome::Succeeded(answer) = row.outcome() else { panic!("q1 succeeded") };
    /// use vertex_batch::format::FinishReason;
    /// assert_eq!(answer.finish_reason(), Some(&FinishReason::Stop));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish_reason.as_ref()
    }

    /// Token counts from `usageMetadata`.
    ///
    /// ```
    /// use vertex_batch::format::{parse_output_line, Outcome};
    ///
    /// let row = parse_output_line(r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#)?;
    /// let Outcome::Succeeded(answer) = row.outcome() else { panic!("q1 succeeded") };
    /// let usage = answer.usage();
    /// assert_eq!((usage.prompt_tokens, usage.candidates_tokens, usage.total_tokens), (9, 4, 13));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// `modelVersion`, when the response names it.
    ///
    /// ```
    /// use vertex_batch::format::{parse_output_line, Outcome};
    ///
    /// let row = parse_output_line(r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#)?;
    /// let Outcome::Succeeded(answer) = row.outcome() else { panic!("q1 succeeded") };
    /// assert_eq!(answer.model_version(), Some("gemini-2.0-flash-001"));
    /// # Ok::<(), vertex_batch::Error>(())
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
    /// use vertex_batch::format::{parse_output_line, Outcome};
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
    /// use vertex_batch::format::{parse_output_line, Outcome};
    ///
    /// let row = parse_output_line(r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#)?;
    /// let Outcome::Succeeded(answer) = row.outcome() else { panic!("q1 succeeded") };
    /// assert!(answer.output_line().starts_with(r#"{"key":"q1""#));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn output_line(&self) -> &str {
        self.line.as_str()
    }

    /// The response exactly as the output line holds it.
    ///
    /// ```
    /// use vertex_batch::format::{parse_output_line, Outcome};
    ///
    /// let row = parse_output_line(r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#)?;
    /// let Outcome::Succeeded(answer) = row.outcome() else { panic!("q1 succeeded") };
    /// let raw = answer.raw_response()?;
    /// assert!(raw.get().starts_with(r#"{"candidates""#));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn raw_response(&self) -> Result<Box<RawValue>> {
        self.line.response()
    }

    /// The typed response. Decoding is lenient (unknown fields and enum
    /// values ignored, `null` read as absent); it fails only on a response
    /// whose known fields have the wrong types.
    ///
    /// ```
    /// use vertex_batch::format::{parse_output_line, Outcome};
    ///
    /// let row = parse_output_line(r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#)?;
    /// let Outcome::Succeeded(answer) = row.outcome() else { panic!("q1 succeeded") };
    /// let response = answer.response()?;
    /// assert_eq!(response.candidates.len(), 1);
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn response(&self) -> Result<GenerateContentResponse> {
        crate::format::gemini::parse_response(self.line.response()?.get())
    }
}

/// A string of a row (its key, its time, an answer's text): most often an
/// unescaped JSON string, which is read straight from the line instead of
/// being copied. 16 bytes, so a row moves cheaply between threads.
#[derive(Clone, PartialEq)]
pub(super) enum Text {
    /// Start and end of the string in the line.
    InLine(u32, u32),
    Owned(Box<str>),
}

impl Text {
    pub(super) fn owned(s: String) -> Text {
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
    pub(super) fn of(line: &str, part: Cow<'_, str>) -> Text {
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
    /// let row = vertex_batch::format::parse_output_line(r#"{"key":"d","status":"","response":{"embedding":{"values":[1,2]}}}"#)?;
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
    /// let row = vertex_batch::format::parse_output_line(r#"{"key":"d","status":"","response":{"embedding":{"values":[1,"x"]}}}"#)?;
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
    /// let row = vertex_batch::format::parse_output_line(r#"{"key":"d","status":"","response":{"embedding":{"values":[ ]}}}"#)?;
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
/// use vertex_batch::format::RowError;
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
    /// use vertex_batch::format::RowError;
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
    /// use vertex_batch::format::RowError;
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
    /// use vertex_batch::format::RowError;
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
    /// use vertex_batch::format::RowError;
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
    /// use vertex_batch::format::RowError;
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
    /// use vertex_batch::format::RowError;
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
/// use vertex_batch::format::{parse_output_line, Outcome};
///
/// let row = parse_output_line(r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#)?;
/// let Outcome::Blocked(blocked) = row.outcome() else { panic!("q3 was blocked") };
/// assert_eq!(blocked.reason(), Some("SAFETY"));
/// assert_eq!(blocked.message(), Some("unsafe prompt"));
/// assert!(blocked.raw_response()?.get().contains("promptFeedback"));
/// assert!(blocked.response()?.prompt_feedback.is_some());
/// # Ok::<(), vertex_batch::Error>(())
/// ```
#[derive(Clone)]
pub struct Blocked {
    pub(super) reason: Option<String>,
    pub(super) message: Option<String>,
    /// The candidate's finish reason, when the answer was withheld.
    pub(super) finish_reason: Option<FinishReason>,
    pub(super) line: RawLine,
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
    /// use vertex_batch::format::{parse_output_line, Outcome};
    ///
    /// let row = parse_output_line(r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#)?;
    /// let Outcome::Blocked(blocked) = row.outcome() else { panic!("q3 was blocked") };
    /// assert_eq!(blocked.reason(), Some("SAFETY"));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// `promptFeedback.blockReasonMessage` (for a withheld answer, the
    /// candidate's `finishMessage`), when given.
    ///
    /// ```
    /// use vertex_batch::format::{parse_output_line, Outcome};
    ///
    /// let row = parse_output_line(r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#)?;
    /// let Outcome::Blocked(blocked) = row.outcome() else { panic!("q3 was blocked") };
    /// assert_eq!(blocked.message(), Some("unsafe prompt"));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The first candidate's finish reason when the answer was withheld
    /// (the candidate has no content); `None` when the prompt itself was
    /// blocked (no candidate).
    ///
    /// ```
    /// use vertex_batch::format::{parse_output_line, FinishReason, Outcome};
    ///
    /// // A candidate with no content, stopped for SAFETY; a blocked prompt.
    /// let q1 = parse_output_line(r#"{"key":"q1","status":"","response":{"candidates":[{"finishReason":"SAFETY","finishMessage":"unsafe answer"}]}}"#)?;
    /// let q2 = parse_output_line(r#"{"key":"q2","status":"","response":{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"}}}"#)?;
    /// let Outcome::Blocked(withheld) = q1.outcome() else { panic!("q1's answer was withheld") };
    /// assert_eq!(withheld.finish_reason(), Some(&FinishReason::Safety));
    /// assert_eq!((withheld.reason(), withheld.message()), (Some("SAFETY"), Some("unsafe answer")));
    /// assert!(!q1.outcome().needs_retry());
    /// let Outcome::Blocked(prompt) = q2.outcome() else { panic!("q2 was blocked") };
    /// assert_eq!(prompt.finish_reason(), None);
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish_reason.as_ref()
    }

    /// The response exactly as the output line holds it.
    ///
    /// ```
    /// use vertex_batch::format::{parse_output_line, Outcome};
    ///
    /// let row = parse_output_line(r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#)?;
    /// let Outcome::Blocked(blocked) = row.outcome() else { panic!("q3 was blocked") };
    /// assert!(blocked.raw_response()?.get().contains("promptFeedback"));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn raw_response(&self) -> Result<Box<RawValue>> {
        self.line.response()
    }

    /// The typed response (see [`Answer::response`]).
    ///
    /// ```
    /// use vertex_batch::format::{parse_output_line, Outcome};
    ///
    /// let row = parse_output_line(r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#)?;
    /// let Outcome::Blocked(blocked) = row.outcome() else { panic!("q3 was blocked") };
    /// let response = blocked.response()?;
    /// assert!(response.candidates.is_empty());
    /// assert!(response.prompt_feedback.is_some());
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn response(&self) -> Result<GenerateContentResponse> {
        crate::format::gemini::parse_response(self.line.response()?.get())
    }
}

/// A request that never came back, with the request as the input holds it
/// (less the crate's key label), ready for a new batch.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> vertex_batch::Result<()> {
/// use vertex_batch::{batch::{Inputs, ResultReader}, format::Outcome};
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
    /// the input except that the key label [`KEY_LABEL`](crate::format::KEY_LABEL)
    /// the input writer mirrored into `labels` is taken out (and `labels`
    /// with it when it held nothing else), so a new batch, which adds the
    /// label again, accepts it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// use vertex_batch::{batch::{Inputs, ResultReader}, format::Outcome};
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
/// use vertex_batch::format::FinishReason;
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
    /// use vertex_batch::format::FinishReason;
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
    /// use vertex_batch::format::FinishReason;
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
    /// use vertex_batch::format::FinishReason;
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
/// use vertex_batch::format::Usage;
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
/// use vertex_batch::format::parse_output_line;
///
/// let rows = [
///     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#,
///     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#,
///     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#,
/// ]
/// .into_iter()
/// .map(parse_output_line)
/// .collect::<Result<Vec<_>, _>>()?;
/// let row = &rows[0];
/// assert_eq!(row.key(), Some("q1"));
/// assert_eq!(row.text(), Some("Rayleigh scattering."));
/// assert_eq!(row.processed_time_str(), Some("2024-11-13T14:04:28.376+00:00"));
/// assert!(row.processed_time().is_some());
/// assert_eq!(rows[1].text(), None); // q2 failed
/// assert_eq!(rows[1].clone().into_outcome().kind(), "failed");
/// # Ok::<(), vertex_batch::Error>(())
/// ```
#[derive(Clone)]
pub struct ResultRow {
    pub(super) inner: RowData,
}

/// A row's parts. The key and the time are ranges of the output line when
/// the outcome keeps the line (answers, blocked prompts) and they needed no
/// unescaping, so reading an answer row allocates nothing.
#[derive(Clone)]
pub(super) struct RowData {
    pub(super) key: Option<Text>,
    pub(super) processed_time: Option<Text>,
    pub(super) outcome: Outcome,
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
    /// use vertex_batch::format::parse_output_line;
    ///
    /// let rows = [
    ///     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#,
    ///     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#,
    ///     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#,
    /// ]
    /// .into_iter()
    /// .map(parse_output_line)
    /// .collect::<Result<Vec<_>, _>>()?;
    /// let keys: Vec<_> = rows.iter().filter_map(|r| r.key()).collect();
    /// assert_eq!(keys, ["q1", "q2", "q3"]);
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn key(&self) -> Option<&str> {
        let d = &self.inner;
        d.key.as_ref().map(|k| d.str_of(k))
    }

    /// `processed_time` as the output line holds it (RFC 3339).
    ///
    /// ```
    /// use vertex_batch::format::parse_output_line;
    ///
    /// let rows = [
    ///     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#,
    ///     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#,
    ///     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#,
    /// ]
    /// .into_iter()
    /// .map(parse_output_line)
    /// .collect::<Result<Vec<_>, _>>()?;
    /// assert_eq!(rows[0].processed_time_str(), Some("2024-11-13T14:04:28.376+00:00"));
    /// assert_eq!(rows[1].processed_time_str(), None);
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn processed_time_str(&self) -> Option<&str> {
        let d = &self.inner;
        d.processed_time.as_ref().map(|t| d.str_of(t))
    }

    /// `processed_time` parsed (an offset and 0–9 fractional digits are
    /// accepted); `None` when absent or unreadable.
    ///
    /// ```
    /// use vertex_batch::format::parse_output_line;
    ///
    /// let row = parse_output_line(r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#)?;
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let at = row.processed_time().unwrap();
    /// assert_eq!(at.duration_since(UNIX_EPOCH).unwrap(), Duration::from_millis(1_731_506_668_376));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn processed_time(&self) -> Option<SystemTime> {
        self.processed_time_str().and_then(crate::time::parse)
    }

    /// What happened to the request.
    ///
    /// ```
    /// use vertex_batch::format::parse_output_line;
    ///
    /// let rows = [
    ///     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#,
    ///     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#,
    ///     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#,
    /// ]
    /// .into_iter()
    /// .map(parse_output_line)
    /// .collect::<Result<Vec<_>, _>>()?;
    /// let kinds: Vec<_> = rows.iter().map(|r| r.outcome().kind()).collect();
    /// assert_eq!(kinds, ["succeeded", "failed", "blocked"]);
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn outcome(&self) -> &Outcome {
        &self.inner.outcome
    }

    /// Takes the outcome.
    ///
    /// ```
    /// use vertex_batch::format::{parse_output_line, Outcome};
    ///
    /// let row = parse_output_line(r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#)?;
    /// let Outcome::Failed(error) = row.clone().into_outcome() else { panic!("q2 failed") };
    /// assert_eq!(error.code(), Some(400));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn into_outcome(self) -> Outcome {
        self.inner.outcome
    }

    /// The answer's text, for a succeeded row.
    ///
    /// ```
    /// use vertex_batch::format::parse_output_line;
    ///
    /// let rows = [
    ///     r#"{"key":"q1","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Rayleigh scattering."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash-001"}}"#,
    ///     r#"{"key":"q2","status":"Bad Request: {\"error\": {\"code\": 400, \"message\": \"Invalid JSON payload\", \"status\": \"INVALID_ARGUMENT\"}}"}"#,
    ///     r#"{"key":"q3","status":"","response":{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe prompt"}}}"#,
    /// ]
    /// .into_iter()
    /// .map(parse_output_line)
    /// .collect::<Result<Vec<_>, _>>()?;
    /// assert_eq!(rows[0].text(), Some("Rayleigh scattering."));
    /// assert_eq!(rows[2].text(), None); // q3 was blocked
    /// # Ok::<(), vertex_batch::Error>(())
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
    /// let row = vertex_batch::format::parse_output_line(r#"{"key":"d","instance":{"content":"sky"},"predictions":[{"embeddings":{"statistics":{"token_count":1,"truncated":false},"values":[0.6,0.8]}}],"status":""}"#)?;
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
    /// let row = vertex_batch::format::parse_output_line(r#"{"instance":{"content":"blue sky é"},"predictions":[{"embeddings":{"statistics":{"token_count":3,"truncated":false},"values":[0.6,0.8]}}],"status":""}"#)?;
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
