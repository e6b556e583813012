//! The batch input writer, and readers of local prompt files.
//!
//! A Gemini batch input file is JSONL, one `{"key": …, "request": {…}}`
//! object a line. [`InputEncoder`] turns `(key, request)` pairs into such
//! lines, checks keys (non-empty, unique, see [`crate::format::check_key`]), mirrors
//! each key into the request's labels, and splits the lines into parts that
//! stay under [`InputLimits`]. [`write_input_files`] does it straight to
//! local files.
//!
//! ```
//! use vertex_batch::format::{InputEncoder, InputLimits};
//!
//! let mut encoder = InputEncoder::new(InputLimits::default());
//! let mut out = Vec::new();
//! let part = encoder.encode("q1", "Give me a recipe for banana bread.", &mut out)?;
//! assert_eq!(part, 0);
//! assert!(out.starts_with(br#"{"key":"q1","request":{"#));
//! assert!(out.ends_with(b"}\n"));
//! # Ok::<(), vertex_batch::Error>(())
//! ```

use std::{
    fmt,
    fs::{self, File},
    io::{BufRead, BufWriter, Write},
    path::{Path, PathBuf},
};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{value::RawValue, Map, Value};

use crate::format::{
    chat::Chat,
    embed::Embed,
    gemini::Prompt,
    key::{
        check_key, display_key, insert_key_label, key_label_value, label_taken, too_many_labels,
        KEY_LABEL,
    },
};
use crate::{
    error::{Error, Result},
    family::Family,
    proto::aiplatform::GenerateContentRequest,
};

/// The request of one input line.
///
/// Built with `From` from a typed request (or a [`Prompt`]), from raw JSON
/// (a [`serde_json::Value`] or a [`RawValue`], which must be a JSON
/// object), or from a plain text prompt (`&str`, `String`). JSON held in a
/// string is raw with [`BatchRequest::json`].
///
/// ```
/// use serde_json::json;
/// use vertex_batch::format::{BatchRequest, Prompt};
///
/// let typed = BatchRequest::from(Prompt::text("hi").temperature(0.1));
/// let value = BatchRequest::from(json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}));
/// let raw = BatchRequest::json(r#"{"contents": []}"#)?;
/// let text = BatchRequest::from("hi");
/// assert!(matches!(text, BatchRequest::Text(_)));
/// # Ok::<(), vertex_batch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub enum BatchRequest {
    /// A typed request, written as proto3 JSON (camelCase).
    Typed(Box<GenerateContentRequest>),
    /// A JSON object, written as is plus the key label.
    Json(Value),
    /// A JSON object kept as text: its members are written byte for byte
    /// (line breaks between tokens become spaces), plus the key label.
    Raw(Box<RawValue>),
    /// A plain text prompt: one user turn (or one text to embed), in the
    /// job's family.
    Text(String),
    /// A text to embed, for the embedding families and open embedding
    /// models.
    Embed(Embed),
    /// A conversation, for every chat family (Gemini, Claude, open models).
    Chat(Chat),
}

impl PartialEq for BatchRequest {
    /// Same variant and content (raw JSON compared as text).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (BatchRequest::Typed(a), BatchRequest::Typed(b)) => a == b,
            (BatchRequest::Json(a), BatchRequest::Json(b)) => a == b,
            (BatchRequest::Raw(a), BatchRequest::Raw(b)) => a.get() == b.get(),
            (BatchRequest::Text(a), BatchRequest::Text(b)) => a == b,
            (BatchRequest::Embed(a), BatchRequest::Embed(b)) => a == b,
            (BatchRequest::Chat(a), BatchRequest::Chat(b)) => a == b,
            _ => false,
        }
    }
}

impl BatchRequest {
    /// Raw JSON from a string; an error unless it is one JSON object.
    ///
    /// ```
    /// use vertex_batch::format::BatchRequest;
    /// assert!(BatchRequest::json(r#"{"contents": []}"#).is_ok());
    /// assert!(BatchRequest::json("[1]").is_err());
    /// assert!(BatchRequest::json("{").is_err());
    /// ```
    pub fn json(json: &str) -> Result<Self> {
        let raw = RawValue::from_string(json.to_owned())
            .map_err(|e| Error::validation("request", format!("not JSON: {e}")))?;
        check_object_text(raw.get())?;
        Ok(BatchRequest::Raw(raw))
    }
}

fn check_object_text(json: &str) -> Result<()> {
    if json.trim_start().starts_with('{') {
        Ok(())
    } else {
        Err(Error::validation(
            "request",
            "must be a JSON object such as {\"contents\": [...]}",
        ))
    }
}

impl From<GenerateContentRequest> for BatchRequest {
    /// ```
    /// use vertex_batch::{format::BatchRequest, proto::aiplatform::GenerateContentRequest};
    /// let r = BatchRequest::from(GenerateContentRequest::default());
    /// assert!(matches!(r, BatchRequest::Typed(_)));
    /// ```
    fn from(r: GenerateContentRequest) -> Self {
        BatchRequest::Typed(Box::new(r))
    }
}

impl From<Prompt> for BatchRequest {
    /// ```
    /// use vertex_batch::format::{BatchRequest, Prompt};
    /// assert!(matches!(BatchRequest::from(Prompt::text("hi")), BatchRequest::Typed(_)));
    /// ```
    fn from(p: Prompt) -> Self {
        BatchRequest::from(p.into_request())
    }
}

impl From<Embed> for BatchRequest {
    /// ```
    /// use vertex_batch::format::{Embed, BatchRequest};
    /// assert!(matches!(BatchRequest::from(Embed::text("doc")), BatchRequest::Embed(_)));
    /// ```
    fn from(e: Embed) -> Self {
        BatchRequest::Embed(e)
    }
}

impl From<Chat> for BatchRequest {
    /// ```
    /// use vertex_batch::format::{Chat, BatchRequest};
    /// assert!(matches!(BatchRequest::from(Chat::user("hi")), BatchRequest::Chat(_)));
    /// ```
    fn from(c: Chat) -> Self {
        BatchRequest::Chat(c)
    }
}

impl From<Value> for BatchRequest {
    /// ```
    /// use vertex_batch::format::BatchRequest;
    /// assert!(matches!(BatchRequest::from(serde_json::json!({})), BatchRequest::Json(_)));
    /// ```
    fn from(v: Value) -> Self {
        BatchRequest::Json(v)
    }
}

impl From<Box<RawValue>> for BatchRequest {
    /// ```
    /// use serde_json::value::RawValue;
    /// use vertex_batch::format::BatchRequest;
    /// let raw = RawValue::from_string("{}".into()).unwrap();
    /// assert!(matches!(BatchRequest::from(raw), BatchRequest::Raw(_)));
    /// ```
    fn from(r: Box<RawValue>) -> Self {
        BatchRequest::Raw(r)
    }
}

impl From<&RawValue> for BatchRequest {
    /// ```
    /// use serde_json::value::RawValue;
    /// use vertex_batch::format::BatchRequest;
    /// let raw: &RawValue = serde_json::from_str("{}").unwrap();
    /// assert!(matches!(BatchRequest::from(raw), BatchRequest::Raw(_)));
    /// ```
    fn from(r: &RawValue) -> Self {
        BatchRequest::Raw(r.to_owned())
    }
}

impl From<&str> for BatchRequest {
    /// ```
    /// use vertex_batch::format::BatchRequest;
    /// assert_eq!(BatchRequest::from("hi"), BatchRequest::Text("hi".into()));
    /// ```
    fn from(text: &str) -> Self {
        BatchRequest::Text(text.to_owned())
    }
}

impl From<String> for BatchRequest {
    /// ```
    /// use vertex_batch::format::BatchRequest;
    /// assert_eq!(BatchRequest::from(String::from("hi")), BatchRequest::Text("hi".into()));
    /// ```
    fn from(text: String) -> Self {
        BatchRequest::Text(text)
    }
}

impl From<&String> for BatchRequest {
    /// ```
    /// use vertex_batch::format::BatchRequest;
    /// assert_eq!(BatchRequest::from(&String::from("hi")), BatchRequest::Text("hi".into()));
    /// ```
    fn from(text: &String) -> Self {
        BatchRequest::Text(text.clone())
    }
}

impl From<InputLine> for BatchRequest {
    /// The line's request, as raw JSON.
    ///
    /// ```
    /// use vertex_batch::format::{read_input_lines, BatchRequest};
    /// let line = read_input_lines(&br#"{"key":"a","request":{}}"#[..]).next().unwrap()?;
    /// assert!(matches!(BatchRequest::from(line), BatchRequest::Raw(_)));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    fn from(line: InputLine) -> Self {
        BatchRequest::Raw(line.request)
    }
}

/// The service's documented limit on requests per batch job.
///
/// ```
/// use vertex_batch::format::{InputLimits, SERVICE_MAX_ROWS_PER_JOB};
/// assert_eq!(InputLimits::default().rows(), SERVICE_MAX_ROWS_PER_JOB);
/// ```
pub const SERVICE_MAX_ROWS_PER_JOB: u64 = 200_000;
/// The service's documented limit on the size of one Cloud Storage input file.
///
/// ```
/// use vertex_batch::format::{InputLimits, SERVICE_MAX_BYTES_PER_FILE};
/// assert_eq!(InputLimits::default().bytes(), SERVICE_MAX_BYTES_PER_FILE);
/// ```
pub const SERVICE_MAX_BYTES_PER_FILE: u64 = 1_000_000_000;

/// How big one input file (part) may get.
///
/// The service takes at most 200,000 requests per Gemini batch job and
/// input files of at most 1 GB (a job may read several files through a
/// wildcard, but the row limit is per job). The defaults are those limits,
/// so with the defaults one part is at most one job's worth.
///
/// ```
/// use vertex_batch::format::InputLimits;
/// let limits = InputLimits::default().max_rows_per_file(50_000).max_bytes_per_file(100 << 20);
/// assert_eq!(limits.rows(), 50_000);
/// assert_eq!(limits.bytes(), 100 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    max_rows: u64,
    max_bytes: u64,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_rows: SERVICE_MAX_ROWS_PER_JOB,
            max_bytes: SERVICE_MAX_BYTES_PER_FILE,
        }
    }
}

impl InputLimits {
    /// The most lines in one part (at least 1; default 200,000).
    ///
    /// ```
    /// use vertex_batch::format::InputLimits;
    /// assert_eq!(InputLimits::default().max_rows_per_file(0).rows(), 1);
    /// ```
    pub fn max_rows_per_file(mut self, rows: u64) -> Self {
        self.max_rows = rows.max(1);
        self
    }

    /// The most bytes in one part, line breaks included (at least 1;
    /// default 1,000,000,000).
    ///
    /// ```
    /// use vertex_batch::format::InputLimits;
    /// assert_eq!(InputLimits::default().max_bytes_per_file(4096).bytes(), 4096);
    /// ```
    pub fn max_bytes_per_file(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }

    /// The row limit.
    ///
    /// ```
    /// assert_eq!(vertex_batch::format::InputLimits::default().rows(), 200_000);
    /// ```
    pub fn rows(&self) -> u64 {
        self.max_rows
    }

    /// The byte limit.
    ///
    /// ```
    /// assert_eq!(vertex_batch::format::InputLimits::default().bytes(), 1_000_000_000);
    /// ```
    pub fn bytes(&self) -> u64 {
        self.max_bytes
    }
}

/// What one part (input file) holds.
///
/// ```
/// use vertex_batch::format::{InputEncoder, InputLimits, PartStats};
/// let mut enc = InputEncoder::new(InputLimits::default());
/// let mut out = Vec::new();
/// enc.encode("k", "hi", &mut out)?;
/// assert_eq!(enc.parts(), &[PartStats { rows: 1, bytes: out.len() as u64 }]);
/// # Ok::<(), vertex_batch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartStats {
    /// Lines in the part.
    pub rows: u64,
    /// Bytes in the part, line breaks included.
    pub bytes: u64,
}

/// Encodes input lines, one call a line, streaming: it keeps no line, only
/// per-part counts and an 80-bit hash of every key seen.
///
/// Keys must be unique across the whole input. Uniqueness is tracked through
/// 80 bits of a seeded 128-bit hash of each key (about 8 bytes of memory a
/// key), so two different keys are taken for duplicates only on a hash
/// collision: with n keys the odds are about n²/2⁸¹, 4·10⁻¹¹ for ten
/// million keys. Such a collision is an error naming the key, never a lost
/// line.
///
/// ```
/// use vertex_batch::format::{InputEncoder, InputLimits};
///
/// let mut enc = InputEncoder::new(InputLimits::default().max_rows_per_file(2));
/// let mut parts: Vec<Vec<u8>> = Vec::new();
/// for (key, prompt) in [("a", "one"), ("b", "two"), ("c", "three")] {
///     let mut line = Vec::new();
///     let part = enc.encode(key, prompt, &mut line)?;
///     if part == parts.len() {
///         parts.push(Vec::new());
///     }
///     parts[part].extend_from_slice(&line);
/// }
/// assert_eq!(parts.len(), 2);
/// assert_eq!(enc.rows(), 3);
/// assert!(enc.encode("a", "again", &mut Vec::new()).is_err());
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub struct InputEncoder {
    limits: InputLimits,
    family: Family,
    model: String,
    seen: crate::format::fingerprint::FingerprintSet,
    parts: Vec<PartStats>,
    rows: u64,
}

impl fmt::Debug for InputEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputEncoder")
            .field("limits", &self.limits)
            .field("family", &self.family)
            .field("rows", &self.rows)
            .field("parts", &self.parts)
            .finish()
    }
}

impl InputEncoder {
    /// An encoder with nothing written yet.
    ///
    /// ```
    /// use vertex_batch::format::{InputEncoder, InputLimits};
    /// assert!(InputEncoder::new(InputLimits::default()).is_empty());
    /// ```
    pub fn new(limits: InputLimits) -> Self {
        InputEncoder {
            limits,
            family: Family::Gemini,
            model: String::new(),
            seen: Default::default(),
            parts: Vec::new(),
            rows: 0,
        }
    }

    /// An encoder writing the lines of `model`'s family (see
    /// [`crate::family`]): `{"key", "request"}` for Gemini and Gemini
    /// embeddings, `{"key", "content", …}` for text embeddings,
    /// `{"custom_id", "request"}` for Claude, `{"custom_id", "method",
    /// "url", "body"}` for open models (whose `body.model` is `model`'s
    /// publisher and id, `meta/llama-…`). An error if `model` is not a
    /// model name, or is ambiguous.
    ///
    /// ```
    /// use vertex_batch::format::{Chat, InputEncoder, InputLimits};
    ///
    /// let mut enc = InputEncoder::for_model(InputLimits::default(), "claude-sonnet-4-5")?;
    /// let mut out = Vec::new();
    /// enc.encode("r1", Chat::user("Hello!").max_tokens(50), &mut out)?;
    /// assert!(out.starts_with(br#"{"custom_id":"r1","request":{"anthropic_version":"vertex-2023-10-16""#));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn for_model(limits: InputLimits, model: &str) -> Result<Self> {
        let qualified = crate::family::qualify_model(model)?;
        let family = Family::of_qualified(&qualified);
        let mut enc = InputEncoder::new(limits);
        enc.family = family;
        enc.model = open_model_id(&qualified);
        Ok(enc)
    }

    /// The family whose lines this encoder writes.
    ///
    /// ```
    /// use vertex_batch::{format::{InputEncoder, InputLimits}, family::Family};
    /// assert_eq!(InputEncoder::new(InputLimits::default()).family(), Family::Gemini);
    /// ```
    pub fn family(&self) -> Family {
        self.family
    }

    /// The limits in force.
    ///
    /// ```
    /// use vertex_batch::format::{InputEncoder, InputLimits};
    /// assert_eq!(InputEncoder::new(InputLimits::default()).limits(), InputLimits::default());
    /// ```
    pub fn limits(&self) -> InputLimits {
        self.limits
    }

    /// Appends one line `{"key":…,"request":{…}}\n` to `out` and returns
    /// the index of the part it belongs to (a new part starts when this line
    /// would take the current one over a limit).
    ///
    /// Typed requests are written as proto3 JSON (camelCase); JSON requests
    /// as given. Every request gets the key mirror label
    /// ([`KEY_LABEL`]).
    ///
    /// Errors ([`Error::Validation`]), after which nothing was appended and
    /// the key is still free: an empty or too long key, a duplicate key
    /// (field `key`), a request that is not a JSON object (`request`), one
    /// that already has the key label or 64 labels (`labels`), a line
    /// longer than the byte limit (`request`, naming the key).
    ///
    /// ```
    /// use vertex_batch::format::{InputEncoder, InputLimits};
    /// use vertex_batch::Error;
    ///
    /// let mut enc = InputEncoder::new(InputLimits::default());
    /// let mut out = Vec::new();
    /// enc.encode("k1", serde_json::json!({"contents": []}), &mut out)?;
    /// let err = enc.encode("k1", "again", &mut out).unwrap_err();
    /// assert!(matches!(err, Error::Validation(v) if v.field() == "key"));
    /// assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn encode(
        &mut self,
        key: &str,
        request: impl Into<BatchRequest>,
        out: &mut Vec<u8>,
    ) -> Result<usize> {
        check_key(key)?;
        let id = crate::format::fingerprint::fingerprint(key);
        if self.seen.contains(id) {
            return Err(Error::validation(
                "key",
                format!("duplicate key {}", display_key(key)),
            ));
        }
        let start = out.len();
        if let Err(e) = write_family_line(self.family, &self.model, key, request.into(), out) {
            out.truncate(start);
            return Err(e);
        }
        let len = (out.len() - start) as u64;
        if len > self.limits.max_bytes {
            out.truncate(start);
            return Err(Error::validation(
                "request",
                format!(
                    "the line for key {} is {len} bytes, more than the {} allowed in one file",
                    display_key(key),
                    self.limits.max_bytes
                ),
            ));
        }
        let fits = self.parts.last().is_some_and(|p| {
            p.rows < self.limits.max_rows && p.bytes.saturating_add(len) <= self.limits.max_bytes
        });
        if !fits {
            self.parts.push(PartStats::default());
        }
        let index = self.parts.len() - 1;
        if let Some(part) = self.parts.last_mut() {
            part.rows += 1;
            part.bytes += len;
        }
        self.seen.insert(id);
        self.rows += 1;
        Ok(index)
    }

    /// The parts so far, in order.
    ///
    /// ```
    /// use vertex_batch::format::{InputEncoder, InputLimits};
    /// assert!(InputEncoder::new(InputLimits::default()).parts().is_empty());
    /// ```
    pub fn parts(&self) -> &[PartStats] {
        &self.parts
    }

    /// Lines encoded so far.
    ///
    /// ```
    /// use vertex_batch::format::{InputEncoder, InputLimits};
    /// let mut enc = InputEncoder::new(InputLimits::default());
    /// enc.encode("a", "hi", &mut Vec::new())?;
    /// assert_eq!(enc.rows(), 1);
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether no line has been encoded.
    ///
    /// ```
    /// use vertex_batch::format::{InputEncoder, InputLimits};
    /// assert!(InputEncoder::new(InputLimits::default()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

fn json_error(e: serde_json::Error) -> Error {
    Error::validation("request", e.to_string())
}

/// The `model` of an open model's body: `publishers/meta/models/llama-…`
/// becomes `meta/llama-…`, as Google's samples write it.
fn open_model_id(qualified: &str) -> String {
    match qualified.split('/').collect::<Vec<_>>().as_slice() {
        ["publishers", p, "models", id] => format!("{p}/{id}"),
        _ => qualified.to_owned(),
    }
}

fn wrong_request(key: &str, what: &str, family: Family) -> Error {
    Error::validation(
        "request",
        format!(
            "the request for key {} is {what}, which a {family} model does not take",
            display_key(key)
        ),
    )
}

/// A request that must be a JSON object, as text.
fn object_text(key: &str, request: BatchRequest, family: Family) -> Result<String> {
    let text = match request {
        BatchRequest::Json(v @ Value::Object(_)) => {
            serde_json::to_string(&Sorted(&v)).map_err(json_error)?
        }
        BatchRequest::Raw(raw) => {
            let members = Members::of(key, &raw)?;
            let mut seen = std::collections::HashSet::new();
            if let Some((dup, _)) = members.0.iter().find(|(n, _)| !seen.insert(n.as_str())) {
                return Err(Error::validation(
                    "request",
                    format!("the request for key {} has {dup:?} twice", display_key(key)),
                ));
            }
            // Valid JSON has no raw line break inside a string: these are
            // whitespace between tokens, and a space keeps the line one line.
            raw.get().trim().replace(['\n', '\r'], " ")
        }
        BatchRequest::Json(_) => {
            return Err(Error::validation(
                "request",
                format!(
                    "the request for key {} must be a JSON object",
                    display_key(key)
                ),
            ))
        }
        BatchRequest::Typed(_) => return Err(wrong_request(key, "a Gemini request", family)),
        BatchRequest::Text(_) | BatchRequest::Embed(_) | BatchRequest::Chat(_) => {
            return Err(wrong_request(key, "not JSON", family))
        }
    };
    Ok(text)
}

/// Writes one line of `family`.
fn write_family_line(
    family: Family,
    model: &str,
    key: &str,
    request: BatchRequest,
    out: &mut Vec<u8>,
) -> Result<()> {
    let key_json = serde_json::to_string(key).map_err(json_error)?;
    match family {
        Family::Gemini => write_line(key, request, out),
        Family::GeminiEmbedding => {
            let body = match request {
                BatchRequest::Text(t) => Embed::text(t).gemini(),
                BatchRequest::Embed(e) => e.gemini(),
                BatchRequest::Chat(_) => return Err(wrong_request(key, "a chat request", family)),
                other => {
                    let text = object_text(key, other, family)?;
                    write_wrapped(out, "key", &key_json, &[("request", &text)]);
                    return Ok(());
                }
            };
            let text = serde_json::to_string(&Sorted(&body)).map_err(json_error)?;
            write_wrapped(out, "key", &key_json, &[("request", &text)]);
            Ok(())
        }
        Family::TextEmbedding => {
            let text = match request {
                BatchRequest::Text(t) => to_sorted(&Embed::text(t).instance())?,
                BatchRequest::Embed(e) => to_sorted(&e.instance())?,
                BatchRequest::Chat(_) => return Err(wrong_request(key, "a chat request", family)),
                other => object_text(key, other, family)?,
            };
            let instance: Members<'_> = serde_json::from_str(&text).map_err(json_error)?;
            if instance.0.iter().any(|(n, _)| n == "key") {
                return Err(Error::validation(
                    "request",
                    format!(
                        "the instance for key {} has its own \"key\", which the row key takes",
                        display_key(key)
                    ),
                ));
            }
            out.extend_from_slice(b"{\"key\":");
            out.extend_from_slice(key_json.as_bytes());
            let inner = text.trim().strip_prefix('{').unwrap_or("}").trim_start();
            if !inner.starts_with('}') {
                out.push(b',');
            }
            out.extend_from_slice(inner.as_bytes());
            out.push(b'\n');
            Ok(())
        }
        Family::Claude => {
            let text = match request {
                BatchRequest::Text(t) => to_sorted(&Chat::user(t).claude())?,
                BatchRequest::Chat(c) => to_sorted(&c.claude())?,
                BatchRequest::Embed(_) => {
                    return Err(wrong_request(key, "an embedding request", family))
                }
                other => object_text(key, other, family)?,
            };
            check_claude(key, &text)?;
            write_wrapped(out, "custom_id", &key_json, &[("request", &text)]);
            Ok(())
        }
        Family::OpenModel => {
            let embeds_by_default = model.contains("embed");
            let (url, text) = match request {
                BatchRequest::Text(t) if embeds_by_default => {
                    (EMBEDDINGS_URL, to_sorted(&Embed::text(t).openai(model))?)
                }
                BatchRequest::Text(t) => (CHAT_URL, to_sorted(&Chat::user(t).openai(model))?),
                BatchRequest::Chat(c) => (CHAT_URL, to_sorted(&c.openai(model))?),
                BatchRequest::Embed(e) => (EMBEDDINGS_URL, to_sorted(&e.openai(model))?),
                other => {
                    let text = object_text(key, other, family)?;
                    let v: Value = serde_json::from_str(&text).map_err(json_error)?;
                    let url = if v.get("messages").is_none() && v.get("input").is_some() {
                        EMBEDDINGS_URL
                    } else {
                        CHAT_URL
                    };
                    (url, text)
                }
            };
            let url_json = serde_json::to_string(url).map_err(json_error)?;
            write_wrapped(
                out,
                "custom_id",
                &key_json,
                &[("method", "\"POST\""), ("url", &url_json), ("body", &text)],
            );
            Ok(())
        }
    }
}

/// The OpenAI batch URL of chat requests.
const CHAT_URL: &str = "/v1/chat/completions";
/// The OpenAI batch URL of embedding requests.
const EMBEDDINGS_URL: &str = "/v1/embeddings";

fn to_sorted(v: &Value) -> Result<String> {
    serde_json::to_string(&Sorted(v)).map_err(json_error)
}

/// `{"<key_field>":<key>,"<name>":<json>,…}\n`.
fn write_wrapped(out: &mut Vec<u8>, key_field: &str, key_json: &str, members: &[(&str, &str)]) {
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(key_field.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(key_json.as_bytes());
    for (name, json) in members {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(json.as_bytes());
    }
    out.extend_from_slice(b"}\n");
}

/// A Claude request must say how many tokens it may generate: the service
/// fails a line without `max_tokens`, so it is refused here, before any
/// upload.
fn check_claude(key: &str, text: &str) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Claude {
        #[serde(default)]
        max_tokens: Option<Value>,
        #[serde(default)]
        messages: Option<Value>,
    }
    let c: Claude = serde_json::from_str(text).map_err(json_error)?;
    if c.max_tokens.as_ref().and_then(Value::as_u64).unwrap_or(0) == 0 {
        return Err(Error::validation(
            "max_tokens",
            format!(
                "the Claude request for key {} has no positive integer \"max_tokens\", \
                 which Claude models require",
                display_key(key)
            ),
        ));
    }
    if !c.messages.as_ref().is_some_and(Value::is_array) {
        return Err(Error::validation(
            "request",
            format!(
                "the Claude request for key {} has no \"messages\" array",
                display_key(key)
            ),
        ));
    }
    Ok(())
}

fn write_line(key: &str, request: BatchRequest, out: &mut Vec<u8>) -> Result<()> {
    out.extend_from_slice(b"{\"key\":");
    serde_json::to_writer(&mut *out, key).map_err(json_error)?;
    out.extend_from_slice(b",\"request\":");
    match request {
        BatchRequest::Typed(mut r) => {
            insert_key_label(&mut r.labels, key)?;
            write_sorted(&r, out)?;
        }
        BatchRequest::Text(text) => {
            let mut r = Prompt::text(text).into_request();
            insert_key_label(&mut r.labels, key)?;
            serde_json::to_writer(&mut *out, &r).map_err(json_error)?;
        }
        BatchRequest::Json(Value::Object(mut map)) => {
            let labels = match map.remove("labels") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(l)) => l,
                Some(_) => return Err(labels_not_object(key)),
            };
            map.insert("labels".to_owned(), Value::Object(add_label(labels, key)?));
            serde_json::to_writer(&mut *out, &map).map_err(json_error)?;
        }
        BatchRequest::Json(_) => {
            return Err(Error::validation(
                "request",
                format!(
                    "the request for key {} must be a JSON object such as {{\"contents\": [...]}}",
                    display_key(key)
                ),
            ))
        }
        BatchRequest::Raw(raw) => write_raw(key, &raw, out)?,
        BatchRequest::Chat(c) => {
            let map = match c.gemini() {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            let mut map = map;
            let labels = match map.remove("labels") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(l)) => l,
                Some(_) => return Err(labels_not_object(key)),
            };
            map.insert("labels".to_owned(), Value::Object(add_label(labels, key)?));
            serde_json::to_writer(&mut *out, &Sorted(&Value::Object(map))).map_err(json_error)?;
        }
        BatchRequest::Embed(_) => {
            return Err(wrong_request(key, "an embedding request", Family::Gemini))
        }
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// Writes `request` as JSON with every object's members sorted by name.
/// A typed request's maps (labels, `Struct` fields, schema properties) are
/// hash maps, so their order changes from one process to the next; sorted,
/// one request always gives the same line, and a re-run's prompts digest
/// matches the first run's.
fn write_sorted(request: &GenerateContentRequest, out: &mut Vec<u8>) -> Result<()> {
    let value = serde_json::to_value(request).map_err(json_error)?;
    serde_json::to_writer(&mut *out, &Sorted(&value)).map_err(json_error)
}

/// Serializes a JSON value with each object's members in name order,
/// whatever order its map keeps (`serde_json`'s `preserve_order` feature,
/// which any crate in a build can switch on, keeps insertion order).
struct Sorted<'a>(&'a Value);

impl serde::Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self.0 {
            Value::Object(members) => {
                let mut sorted: Vec<_> = members.iter().collect();
                sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut map = s.serialize_map(Some(sorted.len()))?;
                for (name, value) in sorted {
                    map.serialize_entry(name, &Sorted(value))?;
                }
                map.end()
            }
            Value::Array(items) => s.collect_seq(items.iter().map(Sorted)),
            other => other.serialize(s),
        }
    }
}

fn labels_not_object(key: &str) -> Error {
    Error::validation(
        "labels",
        format!(
            "the request for key {} has \"labels\" that is not a JSON object",
            display_key(key)
        ),
    )
}

fn add_label(mut labels: Map<String, Value>, key: &str) -> Result<Map<String, Value>> {
    if labels.contains_key(KEY_LABEL) {
        return Err(label_taken(key));
    }
    if labels.len() >= crate::spec::MAX_LABELS {
        return Err(too_many_labels(key));
    }
    labels.insert(KEY_LABEL.to_owned(), Value::String(key_label_value(key)));
    Ok(labels)
}

/// Writes a raw JSON object's members byte for byte, the key label added to
/// its `labels`.
fn write_raw(key: &str, raw: &RawValue, out: &mut Vec<u8>) -> Result<()> {
    let members = Members::of(key, raw)?;
    let mut labels_done = false;
    out.push(b'{');
    for (i, (name, value)) in members.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, name).map_err(json_error)?;
        out.push(b':');
        if name == "labels" {
            if labels_done {
                return Err(Error::validation(
                    "labels",
                    format!(
                        "the request for key {} has \"labels\" twice",
                        display_key(key)
                    ),
                ));
            }
            labels_done = true;
            let labels = match serde_json::from_str::<Value>(value.get()).map_err(json_error)? {
                Value::Null => Map::new(),
                Value::Object(l) => l,
                _ => return Err(labels_not_object(key)),
            };
            serde_json::to_writer(&mut *out, &add_label(labels, key)?).map_err(json_error)?;
        } else {
            // Valid JSON has no raw line break inside a string, so these are
            // whitespace between tokens: a space keeps the line one line.
            out.extend(value.get().bytes().map(|b| match b {
                b'\n' | b'\r' => b' ',
                b => b,
            }));
        }
    }
    if !labels_done {
        if !members.0.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"labels\":");
        serde_json::to_writer(&mut *out, &add_label(Map::new(), key)?).map_err(json_error)?;
    }
    out.push(b'}');
    Ok(())
}

/// A JSON object's members, in order, values kept as raw text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The members of `raw`, the request for `key`; an error unless it is
    /// a JSON object.
    fn of(key: &str, raw: &'a RawValue) -> Result<Members<'a>> {
        serde_json::from_str(raw.get()).map_err(|e| {
            Error::validation(
                "request",
                format!(
                    "the request for key {} must be a JSON object: {e}",
                    display_key(key)
                ),
            )
        })
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

fn io_error(what: String, e: std::io::Error) -> Error {
    Error::Storage {
        message: format!("{what}: {e}"),
        http_status: None,
        source: Some(Box::new(e)),
    }
}

/// Writes `items` as batch input files `<dir>/<name_prefix>-00000.jsonl`,
/// `-00001`, … (one per part, see [`InputEncoder`]) and returns their paths.
///
/// Streams: each line goes through a `BufWriter` to disk as it is encoded.
/// `dir` is created if missing; existing files of the same names are
/// overwritten (files of a previous, longer run are not removed). On error,
/// the files written so far stay. No item, no file.
///
/// Errors: those of [`InputEncoder::encode`]; file errors are
/// [`Error::Storage`] naming the path.
///
/// ```
/// use vertex_batch::format::{write_input_files, InputLimits};
///
/// let dir = tempfile::tempdir().unwrap();
/// let prompts = [("q1", "What is Rust?"), ("q2", "What is a batch job?")];
/// let files = write_input_files(dir.path(), "prompts", prompts, InputLimits::default())?;
/// assert_eq!(files.len(), 1);
/// assert!(files[0].ends_with("prompts-00000.jsonl"));
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub fn write_input_files<K, R>(
    dir: impl AsRef<Path>,
    name_prefix: &str,
    items: impl IntoIterator<Item = (K, R)>,
    limits: InputLimits,
) -> Result<Vec<PathBuf>>
where
    K: AsRef<str>,
    R: Into<BatchRequest>,
{
    let dir = dir.as_ref();
    fs::create_dir_all(dir).map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
    let mut encoder = InputEncoder::new(limits);
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut file: Option<BufWriter<File>> = None;
    let mut line = Vec::new();
    for (key, request) in items {
        line.clear();
        let part = encoder.encode(key.as_ref(), request, &mut line)?;
        if part == paths.len() {
            if let (Some(mut f), Some(path)) = (file.take(), paths.last()) {
                f.flush()
                    .map_err(|e| io_error(format!("writing {}", path.display()), e))?;
            }
            let path = dir.join(format!("{name_prefix}-{part:05}.jsonl"));
            let f = File::create(&path)
                .map_err(|e| io_error(format!("creating {}", path.display()), e))?;
            file = Some(BufWriter::new(f));
            paths.push(path);
        }
        if let (Some(f), Some(path)) = (file.as_mut(), paths.last()) {
            f.write_all(&line)
                .map_err(|e| io_error(format!("writing {}", path.display()), e))?;
        }
    }
    if let (Some(mut f), Some(path)) = (file, paths.last()) {
        f.flush()
            .map_err(|e| io_error(format!("writing {}", path.display()), e))?;
    }
    Ok(paths)
}

/// One line of a batch input file.
///
/// ```
/// use vertex_batch::format::{read_input_lines, InputLine};
///
/// let file = b"\n{\"key\": \"q1\", \"request\": {\"contents\": []}}\n";
/// let line: InputLine = read_input_lines(&file[..]).next().unwrap()?;
/// assert_eq!(line.key, "q1");
/// assert_eq!(line.request.get(), r#"{"contents": []}"#);
/// assert_eq!(line.line, 2); // the blank first line still counts
/// # Ok::<(), vertex_batch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct InputLine {
    /// The row key.
    pub key: String,
    /// The request object, byte for byte as in the file.
    pub request: Box<RawValue>,
    /// The 1-based line number.
    pub line: u64,
}

/// Reads a Gemini batch input file (`{"key": …, "request": {…}}` lines).
///
/// Blank lines are skipped; other top-level members are ignored. A line that
/// is not a JSON object, lacks a string `key` (1..=1024 bytes) or an object
/// `request`, is an [`Error::Validation`] (field `input`) whose message
/// starts with `line N:`; reading goes on with the next line. A read error
/// ([`Error::Storage`]) ends the iteration.
///
/// ```
/// use vertex_batch::format::read_input_lines;
///
/// let file = b"{\"key\": \"a\", \"request\": {\"contents\": []}}\n\nnot json\n";
/// let lines: Vec<_> = read_input_lines(&file[..]).collect();
/// assert_eq!(lines.len(), 2);
/// let first = lines[0].as_ref().unwrap();
/// assert_eq!((first.key.as_str(), first.request.get(), first.line), ("a", "{\"contents\": []}", 1));
/// assert!(lines[1].as_ref().unwrap_err().to_string().contains("line 3:"));
/// ```
pub fn read_input_lines(reader: impl BufRead) -> impl Iterator<Item = Result<InputLine>> {
    Lines::new(reader).filter_map(|item| match item {
        Err(e) => Some(Err(e)),
        Ok((n, text)) => parse_input_line(n, &text).transpose(),
    })
}

/// Reads a plain-text prompt file: one prompt a line, its key the 1-based
/// line number, its request one user turn of that text (as raw JSON).
/// Blank lines are skipped (keys stay line numbers).
///
/// ```
/// use vertex_batch::format::read_text_prompts;
///
/// let lines: Vec<_> = read_text_prompts(&b"Hello\n\nWhy is the sky blue?\r\n"[..])
///     .collect::<Result<_, _>>()?;
/// assert_eq!(lines[1].key, "3");
/// assert_eq!(
///     lines[1].request.get(),
///     r#"{"contents":[{"role":"user","parts":[{"text":"Why is the sky blue?"}]}]}"#
/// );
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub fn read_text_prompts(reader: impl BufRead) -> impl Iterator<Item = Result<InputLine>> {
    Lines::new(reader).filter_map(|item| match item {
        Err(e) => Some(Err(e)),
        Ok((_, text)) if text.trim().is_empty() => None,
        Ok((n, text)) => {
            let request = Prompt::text(text).into_request();
            Some(
                serde_json::value::to_raw_value(&request)
                    .map_err(|e| line_error(n, e.to_string()))
                    .map(|request| InputLine {
                        key: n.to_string(),
                        request,
                        line: n,
                    }),
            )
        }
    })
}

/// How plain text becomes a request of a model's family: a user turn for
/// the chat families (Gemini, Claude, open chat models), a text to embed
/// for the embedding families — with the options the command line's
/// `--max-output-tokens`, `--dimensions` and `--task-type` set.
///
/// A text embedding's dimension is not a field of its line: set it on
/// the job (`JobSpec::parameter("outputDimensionality", n)`); the
/// command line does. Claude's `max_tokens` defaults to
/// [`DEFAULT_CLAUDE_MAX_TOKENS`](crate::format::DEFAULT_CLAUDE_MAX_TOKENS).
///
/// ```
/// use vertex_batch::format::{read_text_prompts_as, TextShape};
///
/// let shape = TextShape::for_model("text-embedding-005")?.task_type("RETRIEVAL_DOCUMENT");
/// let lines: Vec<_> = read_text_prompts_as(&b"blue sky\n"[..], shape).collect::<Result<_, _>>()?;
/// assert_eq!(lines[0].request.get(), r#"{"content":"blue sky","task_type":"RETRIEVAL_DOCUMENT"}"#);
/// # Ok::<(), vertex_batch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TextShape {
    family: Family,
    model: String,
    dimensions: Option<u32>,
    task_type: Option<String>,
    max_tokens: Option<u32>,
}

impl TextShape {
    /// Text as `model`'s family takes it (an error if `model` is not a
    /// model name, or is ambiguous).
    ///
    /// ```
    /// use vertex_batch::{format::TextShape, family::Family};
    /// assert_eq!(TextShape::for_model("claude-sonnet-4-5")?.family(), Family::Claude);
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn for_model(model: &str) -> Result<Self> {
        let qualified = crate::family::qualify_model(model)?;
        Ok(TextShape {
            family: Family::of_qualified(&qualified),
            model: open_model_id(&qualified),
            dimensions: None,
            task_type: None,
            max_tokens: None,
        })
    }

    /// The embedding's dimension (Gemini embeddings, open embedding
    /// models).
    ///
    /// ```
    /// let shape = vertex_batch::format::TextShape::for_model("gemini-embedding-001")?.dimensions(768);
    /// assert!(shape.request("x").get().contains(r#""output_dimensionality":768"#));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn dimensions(mut self, n: u32) -> Self {
        self.dimensions = Some(n);
        self
    }

    /// The embedding's task type (`RETRIEVAL_DOCUMENT`, …).
    ///
    /// ```
    /// let shape = vertex_batch::format::TextShape::for_model("gemini-embedding-001")?.task_type("CLUSTERING");
    /// assert!(shape.request("x").get().contains("CLUSTERING"));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn task_type(mut self, t: impl Into<String>) -> Self {
        self.task_type = Some(t.into());
        self
    }

    /// The answer's most tokens (every chat family).
    ///
    /// ```
    /// let shape = vertex_batch::format::TextShape::for_model("llama-3.3-70b-instruct-maas")?.max_tokens(64);
    /// assert!(shape.request("x").get().contains(r#""max_tokens":64"#));
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// The family the text is shaped for.
    ///
    /// ```
    /// use vertex_batch::{format::TextShape, family::Family};
    /// assert_eq!(TextShape::for_model("gemini-2.5-flash")?.family(), Family::Gemini);
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn family(&self) -> Family {
        self.family
    }

    /// Whether the text becomes a text to embed (the embedding families,
    /// and open models whose id names an embedding model).
    fn embeds(&self) -> bool {
        self.family.embeds() || (self.family == Family::OpenModel && self.model.contains("embed"))
    }

    /// `text` as the request object of a line of the family (what goes in
    /// `request`, `body`, or a text embedding's line beside its key).
    ///
    /// ```
    /// let shape = vertex_batch::format::TextShape::for_model("claude-sonnet-4-5")?;
    /// assert_eq!(
    ///     shape.request("Hi").get(),
    ///     r#"{"anthropic_version":"vertex-2023-10-16","max_tokens":1024,"messages":[{"content":"Hi","role":"user"}]}"#
    /// );
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn request(&self, text: &str) -> Box<RawValue> {
        if self.family == Family::Gemini {
            // The proto3 JSON `read_text_prompts` writes.
            let mut p = Prompt::text(text);
            if let Some(n) = self.max_tokens {
                p = p.max_output_tokens(i32::try_from(n).unwrap_or(i32::MAX));
            }
            if let Ok(raw) = serde_json::value::to_raw_value(&p.into_request()) {
                return raw;
            }
        }
        let value = if self.embeds() {
            let mut e = Embed::text(text);
            if let Some(n) = self.dimensions {
                e = e.dimensions(n);
            }
            if let Some(t) = &self.task_type {
                e = e.task_type(t.clone());
            }
            match self.family {
                Family::TextEmbedding => e.instance(),
                Family::OpenModel => e.openai(&self.model),
                _ => e.gemini(),
            }
        } else {
            let mut c = Chat::user(text);
            if let Some(n) = self.max_tokens {
                c = c.max_tokens(n);
            }
            match self.family {
                Family::Claude => c.claude(),
                Family::OpenModel => c.openai(&self.model),
                _ => c.gemini(),
            }
        };
        // A JSON value built here always serialises.
        let text = serde_json::to_string(&Sorted(&value)).unwrap_or_else(|_| "{}".to_owned());
        RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
    }
}

/// [`read_text_prompts`] for any family: one prompt a line, its key the
/// line number, its request `shape`'s (see [`TextShape`]).
///
/// ```
/// use vertex_batch::format::{read_text_prompts_as, TextShape};
///
/// let shape = TextShape::for_model("gemini-embedding-001")?;
/// let lines: Vec<_> = read_text_prompts_as(&b"a\n\nb\n"[..], shape).collect::<Result<_, _>>()?;
/// assert_eq!((lines[1].key.as_str(), lines[1].request.get()), ("3", r#"{"content":{"parts":[{"text":"b"}]}}"#));
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub fn read_text_prompts_as(
    reader: impl BufRead,
    shape: TextShape,
) -> impl Iterator<Item = Result<InputLine>> {
    Lines::new(reader).filter_map(move |item| match item {
        Err(e) => Some(Err(e)),
        Ok((_, text)) if text.trim().is_empty() => None,
        Ok((n, text)) => Some(Ok(InputLine {
            key: n.to_string(),
            request: shape.request(&text),
            line: n,
        })),
    })
}

fn line_error(n: u64, message: impl fmt::Display) -> Error {
    Error::validation("input", format!("line {n}: {message}"))
}

fn parse_input_line(n: u64, text: &str) -> Result<Option<InputLine>> {
    Ok(parse_input_text(text)
        .map_err(|m| line_error(n, m))?
        .map(|(key, request)| InputLine {
            key,
            request,
            line: n,
        }))
}

/// One input line of any family: its key (`key`, or `custom_id` for
/// Claude and open models) and its request, byte-exact (`request`; `body`
/// for open models; for a text-embedding line, which has neither, the
/// line's other members), or `None` for a blank line. The error says what
/// is wrong, for the caller to place.
pub(crate) fn parse_input_text(
    text: &str,
) -> std::result::Result<Option<(String, Box<RawValue>)>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let members: Members<'_> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let mut key = None;
    let mut request = None;
    let mut body = None;
    for (name, value) in &members.0 {
        let slot = match name.as_str() {
            "key" | "custom_id" => &mut key,
            "request" => &mut request,
            "body" => &mut body,
            _ => continue,
        };
        if slot.replace((name.as_str(), *value)).is_some() {
            return Err(format!(
                "\"{name}\" appears twice (or both key and custom_id)"
            ));
        }
    }
    let (key_name, key) = key.ok_or("no \"key\" (or \"custom_id\")")?;
    let key: String = serde_json::from_str(key.get())
        .map_err(|_| format!("\"{key_name}\" must be a string, got {}", key.get()))?;
    check_key(&key).map_err(|e| e.to_string())?;
    let request = match (request, body) {
        (Some((_, r)), _) | (None, Some((_, r))) => r.to_owned(),
        // A text-embedding instance: the line without its key.
        (None, None) if members.0.iter().any(|(n, _)| n == "content") => {
            let mut out = String::from("{");
            for (name, value) in members.0.iter().filter(|(n, _)| n != key_name) {
                if out.len() > 1 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(name).map_err(|e| e.to_string())?);
                out.push(':');
                out.push_str(value.get());
            }
            out.push('}');
            RawValue::from_string(out).map_err(|e| e.to_string())?
        }
        (None, None) => return Err("no \"request\" (or \"body\", or \"content\")".into()),
    };
    if !request.get().starts_with('{') {
        return Err("the request must be a JSON object".into());
    }
    Ok(Some((key, request)))
}

/// The key of a line of any family (`key` or `custom_id`), without
/// reading the rest of it into memory.
pub(crate) fn line_key(line: &str) -> std::result::Result<std::borrow::Cow<'_, str>, String> {
    #[derive(serde::Deserialize)]
    struct K<'a> {
        #[serde(borrow, default)]
        key: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        custom_id: Option<std::borrow::Cow<'a, str>>,
    }
    let k: K<'_> = serde_json::from_str(line).map_err(|e| e.to_string())?;
    k.key
        .or(k.custom_id)
        .ok_or_else(|| "no \"key\" (or \"custom_id\")".to_owned())
}

/// Lines of a reader, numbered from 1, without their line break (and
/// without a byte order mark on the first); ends after a read error.
struct Lines<R> {
    reader: R,
    n: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> Lines<R> {
    fn new(reader: R) -> Self {
        Lines {
            reader,
            n: 0,
            buf: Vec::new(),
            done: false,
        }
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Result<(u64, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.buf.clear();
        let n = self.n + 1;
        match self.reader.read_until(b'\n', &mut self.buf) {
            Ok(0) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(io_error(format!("reading line {n}"), e)))
            }
            Ok(_) => {
                self.n = n;
                let mut bytes = &self.buf[..];
                bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
                bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
                if n == 1 {
                    bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
                }
                Some(
                    std::str::from_utf8(bytes)
                        .map(|s| (n, s.to_owned()))
                        .map_err(|e| line_error(n, format!("not UTF-8: {e}"))),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{
        gemini::parse_request,
        key::{decode_key_label, KeyLabel},
    };
    use proptest::prelude::*;
    use serde_json::json;

    fn line_json(out: &[u8]) -> Value {
        let text = std::str::from_utf8(out).unwrap();
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text:?}"
        );
        serde_json::from_str(text).unwrap()
    }

    fn encode_one(key: &str, r: impl Into<BatchRequest>) -> Result<Value> {
        let mut out = Vec::new();
        InputEncoder::new(InputLimits::default()).encode(key, r, &mut out)?;
        Ok(line_json(&out))
    }

    #[test]
    fn text_prompt_is_the_camel_case_json_the_emulator_reads() {
        let v = encode_one("q1", "Give me a recipe").unwrap();
        assert_eq!(
            v,
            json!({"key": "q1", "request": {
                "contents": [{"role": "user", "parts": [{"text": "Give me a recipe"}]}],
                "labels": {KEY_LABEL: key_label_value("q1")}
            }})
        );
        let typed = encode_one("q2", Prompt::text("x").max_output_tokens(3)).unwrap();
        assert_eq!(typed["request"]["generationConfig"]["maxOutputTokens"], 3);
        let back = parse_request(&typed["request"].to_string()).unwrap();
        assert_eq!(
            decode_key_label(&back.labels[KEY_LABEL]),
            Some(KeyLabel::Exact("q2".into()))
        );
    }

    #[test]
    fn raw_json_keeps_its_fields_and_gets_the_label() {
        let v = encode_one(
            "k",
            json!({"contents": [], "futureField": {"a": [1, 2.5e3]}, "labels": {"team": "x"}}),
        )
        .unwrap();
        assert_eq!(v["request"]["futureField"], json!({"a": [1, 2.5e3]}));
        assert_eq!(v["request"]["labels"]["team"], "x");
        assert_eq!(v["request"]["labels"][KEY_LABEL], key_label_value("k"));

        let raw = "{ \"contents\" : [ ],\n  \"x\": 1.000e0, \"labels\": null, \"z\": \"a\\nb\" }";
        let mut out = Vec::new();
        InputEncoder::new(InputLimits::default())
            .encode("k", BatchRequest::json(raw).unwrap(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"key\":\"k\",\"request\":{{\"contents\":[ ],\"x\":1.000e0,\"labels\":{{\"{KEY_LABEL}\":\"{}\"}},\"z\":\"a\\nb\"}}}}\n",
                key_label_value("k")
            )
        );
        let pretty = "{\n  \"contents\": [\n    {\"parts\": [{\"text\": \"hi\"}]}\n  ]\n}";
        let v = encode_one("p", BatchRequest::json(pretty).unwrap()).unwrap();
        assert_eq!(v["request"]["contents"][0]["parts"][0]["text"], "hi");
    }

    #[test]
    fn a_taken_key_label_is_an_error() {
        let taken = json!({"labels": {KEY_LABEL: "rxx"}});
        for r in [
            BatchRequest::from(taken.clone()),
            BatchRequest::json(&taken.to_string()).unwrap(),
            BatchRequest::from(Prompt::text("x").label(KEY_LABEL, "v")),
        ] {
            let err = encode_one("k", r).unwrap_err();
            assert!(
                matches!(&err, Error::Validation(v) if v.field() == "labels"),
                "{err}"
            );
        }
        for bad in [json!({"labels": 3}), json!([1]), json!("text")] {
            assert!(encode_one("k", bad).is_err());
        }
    }

    #[test]
    fn duplicates_are_named_and_errors_leave_no_trace() {
        let mut enc = InputEncoder::new(InputLimits::default());
        let mut out = Vec::new();
        enc.encode("doc-7", "a", &mut out).unwrap();
        let len = out.len();
        let err = enc.encode("doc-7", "b", &mut out).unwrap_err();
        assert!(
            matches!(&err, Error::Validation(v) if v.field() == "key" && v.message().contains("\"doc-7\"")),
            "{err}"
        );
        assert!(enc.encode("", "b", &mut out).is_err());
        assert!(enc.encode("x", json!({"labels": 1}), &mut out).is_err());
        assert_eq!(out.len(), len);
        assert_eq!(enc.rows(), 1);
        // A key whose line failed is still free.
        enc.encode("x", "fine now", &mut out).unwrap();
        assert_eq!(enc.rows(), 2);
    }

    #[test]
    fn splits_at_the_row_limit() {
        let mut enc = InputEncoder::new(InputLimits::default().max_rows_per_file(3));
        let parts: Vec<usize> = (0..7)
            .map(|i| enc.encode(&format!("k{i}"), "p", &mut Vec::new()).unwrap())
            .collect();
        assert_eq!(parts, [0, 0, 0, 1, 1, 1, 2]);
        assert_eq!(
            enc.parts().iter().map(|p| p.rows).collect::<Vec<_>>(),
            [3, 3, 1]
        );
    }

    #[test]
    fn splits_at_the_byte_limit_and_rejects_a_line_too_big() {
        let mut probe = Vec::new();
        InputEncoder::new(InputLimits::default())
            .encode("k0", "p", &mut probe)
            .unwrap();
        let line = probe.len() as u64;
        let mut enc = InputEncoder::new(InputLimits::default().max_bytes_per_file(2 * line + 1));
        let mut out = Vec::new();
        let parts: Vec<usize> = (0..5)
            .map(|i| enc.encode(&format!("k{i}"), "p", &mut out).unwrap())
            .collect();
        assert_eq!(parts, [0, 0, 1, 1, 2]);
        assert!(enc.parts().iter().all(|p| p.bytes <= 2 * line + 1));
        assert_eq!(
            enc.parts().iter().map(|p| p.bytes).sum::<u64>(),
            out.len() as u64
        );
        let err = enc
            .encode("big-one", "p".repeat(1000), &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("\"big-one\""), "{err}");
    }

    #[test]
    fn files_are_written_per_part() {
        let dir = tempfile::tempdir().unwrap();
        let items = (0..5).map(|i| (format!("k{i}"), format!("prompt {i}")));
        let files = write_input_files(
            dir.path().join("sub"),
            "in",
            items,
            InputLimits::default().max_rows_per_file(2),
        )
        .unwrap();
        assert_eq!(files.len(), 3);
        let mut keys = Vec::new();
        for f in &files {
            let file = std::io::BufReader::new(File::open(f).unwrap());
            for line in read_input_lines(file) {
                keys.push(line.unwrap().key);
            }
        }
        assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"]);
        let none = write_input_files(
            dir.path(),
            "empty",
            Vec::<(&str, &str)>::new(),
            InputLimits::default(),
        );
        assert!(none.unwrap().is_empty());
        let dup = write_input_files(
            dir.path(),
            "d",
            [("a", "x"), ("a", "y")],
            InputLimits::default(),
        );
        assert!(dup.is_err());
    }

    #[test]
    fn input_lines_errors_name_their_line() {
        let file = concat!(
            "\u{feff}{\"key\":\"a\",\"request\":{\"contents\":[]},\"extra\":1}\r\n",
            "{\"request\":{}}\n",
            "{\"key\":\"b\"}\n",
            "{\"key\":5,\"request\":{}}\n",
            "{\"key\":\"c\",\"request\":[]}\n",
            "[]\n",
            "{\"key\":\"\",\"request\":{}}\n",
            "{\"key\":\"d\",  \"request\":  { \"x\" : 1 } }",
        );
        let items: Vec<_> = read_input_lines(file.as_bytes()).collect();
        assert_eq!(items.len(), 8);
        assert_eq!(items[0].as_ref().unwrap().key, "a");
        for (i, item) in items.iter().enumerate().take(7).skip(1) {
            let err = item.as_ref().unwrap_err().to_string();
            assert!(err.contains(&format!("line {}:", i + 1)), "{err}");
        }
        let last = items[7].as_ref().unwrap();
        assert_eq!((last.request.get(), last.line), ("{ \"x\" : 1 }", 8));
        let bad_utf8: Vec<_> = read_input_lines(&b"\xff\xfe\n"[..]).collect();
        assert!(bad_utf8[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("line 1:"));
    }

    proptest! {
        #[test]
        fn the_input_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let lines = bytes.split(|&b| b == b'\n').count() as u64;
            for item in read_input_lines(&bytes[..]) {
                match item {
                    Ok(l) => prop_assert!(l.line >= 1 && l.line <= lines),
                    Err(e) => {
                        let msg = e.to_string();
                        prop_assert!(msg.contains("line "), "{}", msg);
                    }
                }
            }
            for l in read_text_prompts(&bytes[..]).flatten() {
                prop_assert_eq!(l.key, l.line.to_string());
            }
        }

        #[test]
        fn json_lines_with_arbitrary_keys_round_trip(key in "\\PC{1,40}", text in any::<String>()) {
            let mut out = Vec::new();
            InputEncoder::new(InputLimits::default()).encode(&key, text.as_str(), &mut out).unwrap();
            let back: Vec<_> = read_input_lines(&out[..]).collect();
            prop_assert_eq!(back.len(), 1);
            let line = back.into_iter().next().unwrap().unwrap();
            prop_assert_eq!(line.key, key);
        }
    }

    fn family_line(model: &str, key: &str, req: impl Into<BatchRequest>) -> Result<Value> {
        let mut enc = InputEncoder::for_model(InputLimits::default(), model)?;
        let mut out = Vec::new();
        enc.encode(key, req, &mut out)?;
        assert!(out.ends_with(b"\n") && !out[..out.len() - 1].contains(&b'\n'));
        Ok(serde_json::from_slice(&out).expect("a JSON line"))
    }

    #[test]
    fn each_family_writes_its_own_line_from_plain_text() {
        assert_eq!(
            family_line("gemini-embedding-001", "d1", "sky").unwrap(),
            json!({"key": "d1", "request": {"content": {"parts": [{"text": "sky"}]}}})
        );
        assert_eq!(
            family_line("text-embedding-005", "d1", "sky").unwrap(),
            json!({"key": "d1", "content": "sky"})
        );
        assert_eq!(
            family_line("claude-sonnet-4-5@20250929", "c1", "Hello!").unwrap(),
            json!({"custom_id": "c1", "request": {"anthropic_version": "vertex-2023-10-16",
                   "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 1024}})
        );
        assert_eq!(
            family_line("llama-3.3-70b-instruct-maas", "o1", "Hi").unwrap(),
            json!({"custom_id": "o1", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "meta/llama-3.3-70b-instruct-maas", "messages": [{"role": "user", "content": "Hi"}]}})
        );
        assert_eq!(
            family_line("publishers/qwen/models/qwen3-embedding-8b-maas", "o2", "Hi").unwrap()
                ["url"],
            "/v1/embeddings"
        );
        // Gemini keeps its key label mirror.
        let g = family_line("gemini-2.5-flash", "q1", Chat::user("Hi").max_tokens(5)).unwrap();
        let label = g["request"]["labels"][KEY_LABEL].as_str().unwrap();
        assert_eq!(
            crate::format::key::decode_exact(label).as_deref(),
            Some("q1")
        );
        assert_eq!(g["request"]["generationConfig"]["maxOutputTokens"], 5);
    }

    #[test]
    fn typed_family_requests_carry_their_options_and_raw_json() {
        let e = Embed::text("doc")
            .task_type("RETRIEVAL_DOCUMENT")
            .title("T")
            .dimensions(768);
        let g = family_line("gemini-embedding-001", "d", e.clone()).unwrap();
        assert_eq!(
            g["request"]["embed_content_config"]["output_dimensionality"],
            768
        );
        let t = family_line("text-embedding-005", "d", e.clone()).unwrap();
        assert_eq!(
            t,
            json!({"key": "d", "content": "doc", "task_type": "RETRIEVAL_DOCUMENT", "title": "T"})
        );
        let o = family_line("publishers/openai/models/gpt-oss-120b-maas", "o", e).unwrap();
        assert_eq!(
            o["body"],
            json!({"model": "openai/gpt-oss-120b-maas", "input": "doc", "dimensions": 768})
        );
        assert_eq!(o["url"], "/v1/embeddings");
        let c = Chat::user("Q")
            .system("S")
            .max_tokens(9)
            .temperature(0.5)
            .stop_sequence("X")
            .extra(json!({"top_k": 3}));
        let line = family_line("claude-opus-4-1", "c", c.clone()).unwrap();
        assert_eq!(line["request"]["system"], "S");
        assert_eq!(line["request"]["stop_sequences"], json!(["X"]));
        assert_eq!(line["request"]["top_k"], 3);
        let chat = family_line("deepseek-v3.1-maas", "c", c).unwrap();
        assert_eq!(
            chat["body"]["messages"][0],
            json!({"role": "system", "content": "S"})
        );
        // Raw JSON passes through, in the family's envelope.
        let raw = json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "anthropic_version": "vertex-2023-10-16"});
        assert_eq!(
            family_line("claude-haiku-4-5", "r", raw.clone()).unwrap()["request"],
            raw
        );
        let raw = json!({"model": "m", "input": ["a", "b"]});
        assert_eq!(
            family_line("llama-3.1-8b-instruct-maas", "r", raw).unwrap()["url"],
            "/v1/embeddings"
        );
    }

    #[test]
    fn lines_a_family_refuses_are_errors_before_any_upload() {
        let no_max = json!({"messages": [{"role": "user", "content": "x"}], "anthropic_version": "vertex-2023-10-16"});
        let err = family_line("claude-sonnet-4-5", "c", no_max).unwrap_err();
        assert!(
            matches!(&err, Error::Validation(v) if v.field() == "max_tokens"),
            "{err}"
        );
        let zero = json!({"messages": [], "max_tokens": 0});
        assert!(family_line("claude-sonnet-4-5", "c", zero).is_err());
        assert!(family_line("claude-sonnet-4-5", "c", json!({"max_tokens": 5})).is_err());
        assert!(family_line("claude-sonnet-4-5", "c", Embed::text("x")).is_err());
        assert!(family_line("gemini-embedding-001", "c", Chat::user("x")).is_err());
        assert!(family_line("gemini-2.5-flash", "c", Embed::text("x")).is_err());
        assert!(family_line(
            "text-embedding-005",
            "c",
            json!({"key": "x", "content": "y"})
        )
        .is_err());
        assert!(family_line("text-embedding-005", "c", json!(["content"])).is_err());
        assert!(family_line("llama-3.3-70b-instruct-maas", "c", json!(7)).is_err());
        let err = family_line("mystery-model-maas", "c", "x").unwrap_err();
        assert!(
            err.to_string()
                .contains("publishers/PUBLISHER/models/mystery-model-maas"),
            "{err}"
        );
        // A refused line writes nothing, and the encoder goes on.
        let mut enc = InputEncoder::for_model(InputLimits::default(), "claude-sonnet-4-5").unwrap();
        let mut out = Vec::new();
        assert!(enc.encode("a", json!({"messages": []}), &mut out).is_err());
        assert!(out.is_empty());
        enc.encode("a", "fine", &mut out).unwrap();
        assert_eq!(enc.rows(), 1);
    }

    proptest! {
        #[test]
        fn every_family_line_reads_back_its_key_and_text(
            key in "[A-Za-z0-9_.:-]{1,40}",
            text in "\\PC{0,60}",
            family in 0usize..5,
        ) {
            let model = ["gemini-2.5-flash", "gemini-embedding-001", "text-embedding-005",
                         "claude-sonnet-4-5", "llama-3.3-70b-instruct-maas"][family];
            let mut enc = InputEncoder::for_model(InputLimits::default(), model).unwrap();
            let mut out = Vec::new();
            enc.encode(&key, text.as_str(), &mut out).unwrap();
            let line = std::str::from_utf8(&out).unwrap();
            prop_assert_eq!(line_key(line.trim_end()).unwrap(), key.as_str());
            let (back, request) = parse_input_text(line).unwrap().unwrap();
            prop_assert_eq!(&back, &key);
            let v: Value = serde_json::from_str(request.get()).unwrap();
            let got = match family {
                0 => &v["contents"][0]["parts"][0]["text"],
                1 => &v["content"]["parts"][0]["text"],
                2 => &v["content"],
                _ => &v["messages"][0]["content"],
            };
            prop_assert_eq!(got.as_str(), Some(text.as_str()));
        }
    }
}
