//! The emulator's built-in deterministic "model" and the per-row work:
//! one input line in, one output line out.
//!
//! The answer to a prompt is `Emulated answer to: <prompt words>`, cut to
//! `maxOutputTokens` words (`finishReason` then `MAX_TOKENS`, else `STOP`).
//! A token is a whitespace-separated word, so `usageMetadata` counts are
//! easy to assert on.
//!
//! Two markers let tests reproduce what real prompts meet:
//!
//! * a prompt containing [`BLOCK_MARKER`] (`[blocked]`) is blocked: the
//!   response has `promptFeedback.blockReason` `PROHIBITED_CONTENT` and no
//!   candidate;
//! * while the knob `fail_rows_containing` holds a text, a prompt containing
//!   it fails with the status the service writes for an exhausted quota,
//!   `{"error": {"code": 429, …, "status": "RESOURCE_EXHAUSTED"}}` (clear the
//!   knob and the same prompt succeeds, as on a retry).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{format::results::MaybeBorrowed, proto::aiplatform as pb};

/// What the emulator reads from one request (everything else is carried
/// through untouched).
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow, default)]
    contents: Option<Vec<Content<'a>>>,
    #[serde(rename = "generationConfig", alias = "generation_config", default)]
    generation_config: Option<GenerationConfig>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default, deserialize_with = "crate::format::results::opt_str")]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parts: Vec<Part<'a>>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default, deserialize_with = "crate::format::results::opt_str")]
    text: Option<Cow<'a, str>>,
}

/// The part of a `generationConfig` (a row's, or a job's model
/// parameters) the model reads.
#[derive(Deserialize, Default)]
struct GenerationConfig {
    #[serde(rename = "maxOutputTokens", alias = "max_output_tokens", default)]
    max_output_tokens: Option<f64>,
}

impl GenerationConfig {
    fn max_tokens(&self) -> Option<u64> {
        self.max_output_tokens.map(|m| m.max(0.0) as u64)
    }
}

#[derive(Serialize)]
struct Response<'a> {
    candidates: [Candidate<'a>; 1],
    #[serde(rename = "usageMetadata")]
    usage_metadata: Usage,
    #[serde(rename = "modelVersion")]
    model_version: &'a str,
}

#[derive(Serialize)]
struct Blocked<'a> {
    #[serde(rename = "promptFeedback")]
    prompt_feedback: Feedback,
    #[serde(rename = "usageMetadata")]
    usage_metadata: Usage,
    #[serde(rename = "modelVersion")]
    model_version: &'a str,
}

#[derive(Serialize)]
struct Feedback {
    #[serde(rename = "blockReason")]
    block_reason: &'static str,
}

#[derive(Serialize)]
struct Candidate<'a> {
    content: OutContent<'a>,
    #[serde(rename = "finishReason")]
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OutContent<'a> {
    role: &'static str,
    parts: [OutPart<'a>; 1],
}

#[derive(Serialize)]
struct OutPart<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct Usage {
    #[serde(rename = "promptTokenCount")]
    prompt_token_count: u64,
    #[serde(rename = "candidatesTokenCount")]
    candidates_token_count: u64,
    #[serde(rename = "totalTokenCount")]
    total_token_count: u64,
}

/// A prompt containing this text is blocked (`promptFeedback`, no candidate).
///
/// ```
/// use vertex_batch::{emulator::BLOCK_MARKER, format::Prompt};
/// // A row the emulator will answer as blocked by safety filters.
/// let prompt = Prompt::text(format!("tell me something {BLOCK_MARKER}"));
/// # let _ = prompt;
/// ```
pub const BLOCK_MARKER: &str = "[blocked]";

/// The fixed words every answer starts with.
///
/// ```
/// use vertex_batch::emulator::ANSWER_PREFIX;
/// // An emulated answer to "hi" reads "Emulated answer to: hi".
/// assert_eq!(format!("{ANSWER_PREFIX} hi"), "Emulated answer to: hi");
/// ```
pub const ANSWER_PREFIX: &str = "Emulated answer to:";

/// Per-job settings for the model.
#[derive(Debug, Clone)]
pub struct ModelCtx {
    /// `modelVersion` in responses (the model id).
    pub model_version: String,
    /// The job-level `maxOutputTokens`, if any.
    pub max_output_tokens: Option<u64>,
    /// Rows whose prompt contains this text fail (see the module docs).
    pub fail_rows_containing: Option<String>,
    /// The job's model family: which line format it reads and writes.
    pub family: crate::family::Family,
    /// The job-level `outputDimensionality` of embedding models, if any.
    pub embedding_dims: Option<usize>,
}

impl ModelCtx {
    /// The settings of `job`: its model id, and the `maxOutputTokens` of
    /// its model parameters.
    pub(crate) fn for_job(job: &pb::BatchPredictionJob) -> Self {
        let max_output_tokens = job
            .model_parameters
            .as_ref()
            .and_then(|v| serde_json::to_value(v).ok())
            .and_then(|p| GenerationConfig::deserialize(p).ok())
            .and_then(|g| g.max_tokens());
        let model_version = job
            .model
            .rsplit('/')
            .next()
            .unwrap_or(&job.model)
            .split('@')
            .next()
            .unwrap_or_default()
            .to_owned();
        let embedding_dims = job
            .model_parameters
            .as_ref()
            .and_then(|v| serde_json::to_value(v).ok())
            .and_then(|p| {
                p.get("outputDimensionality")
                    .or_else(|| p.get("output_dimensionality"))
                    .and_then(serde_json::Value::as_f64)
            })
            // A protobuf number is a double.
            .filter(|n| n.fract() == 0.0 && *n >= 1.0 && *n <= 1e6)
            .map(|n| n as usize);
        ModelCtx {
            model_version,
            max_output_tokens,
            fail_rows_containing: None,
            family: crate::family::Family::of_job_model(&job.model),
            embedding_dims,
        }
    }
}

/// The emulator's tokeniser: a token is a whitespace-separated word. The
/// `usageMetadata.promptTokenCount` of every response (the text parts of
/// `contents`) and the emulator's `CountTokens` both count with it, so a
/// count always equals the usage later reported for the same request.
pub(crate) fn count_tokens<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    texts
        .into_iter()
        .map(|t| t.split_whitespace().count() as u64)
        .sum()
}

/// The emulator's billable characters of `texts`: every character but
/// whitespace, as Vertex AI bills characters.
pub(crate) fn billable_characters<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    texts
        .into_iter()
        .map(|t| t.chars().filter(|c| !c.is_whitespace()).count() as u64)
        .sum()
}

/// Generates the `GenerateContentResponse` JSON for a raw request, appending
/// it to `out`. Errors are the row's status text.
pub fn respond(request: &RawValue, ctx: &ModelCtx, out: &mut Vec<u8>) -> Result<(), String> {
    let req: Request<'_> =
        serde_json::from_str(request.get()).map_err(|e| format!("invalid request: {e}"))?;
    let contents = req
        .contents
        .filter(|c| !c.is_empty())
        .ok_or_else(|| "invalid request: `contents` is missing or empty".to_owned())?;
    let prompt_words = count_tokens(
        contents
            .iter()
            .flat_map(|c| c.parts.iter())
            .filter_map(|p| p.text.as_deref()),
    );
    // Answer the last user turn.
    let last = contents
        .iter()
        .rev()
        .find(|c| c.role.as_deref().is_none_or(|r| r == "user"))
        .ok_or_else(|| "invalid request: no user turn in `contents`".to_owned())?;
    let prompt_text = || {
        contents
            .iter()
            .flat_map(|c| c.parts.iter())
            .filter_map(|p| p.text.as_deref())
    };
    if let Some(marker) = ctx.fail_rows_containing.as_deref() {
        if prompt_text().any(|t| t.contains(marker)) {
            return Err(r#"Resource exhausted: {"error": {"code": 429, "message": "Resource exhausted. Please try again later.", "status": "RESOURCE_EXHAUSTED"}}"#.to_owned());
        }
    }
    if prompt_text().any(|t| t.contains(BLOCK_MARKER)) {
        let blocked = Blocked {
            prompt_feedback: Feedback {
                block_reason: "PROHIBITED_CONTENT",
            },
            usage_metadata: Usage {
                prompt_token_count: prompt_words,
                candidates_token_count: 0,
                total_token_count: prompt_words,
            },
            model_version: &ctx.model_version,
        };
        return serde_json::to_writer(&mut *out, &blocked).map_err(|e| e.to_string());
    }
    let max = req
        .generation_config
        .and_then(|g| g.max_tokens())
        .or(ctx.max_output_tokens)
        .unwrap_or(u64::MAX);

    let mut text = String::with_capacity(64);
    let mut words = 0u64;
    let mut truncated = false;
    let prompt = last
        .parts
        .iter()
        .filter_map(|p| p.text.as_deref())
        .flat_map(str::split_whitespace);
    for word in ANSWER_PREFIX.split_whitespace().chain(prompt) {
        if words == max {
            truncated = true;
            break;
        }
        if words > 0 {
            text.push(' ');
        }
        text.push_str(word);
        words += 1;
    }
    let response = Response {
        candidates: [Candidate {
            content: OutContent {
                role: "model",
                parts: [OutPart { text: &text }],
            },
            finish_reason: if truncated { "MAX_TOKENS" } else { "STOP" },
        }],
        usage_metadata: Usage {
            prompt_token_count: prompt_words,
            candidates_token_count: words,
            total_token_count: prompt_words + words,
        },
        model_version: &ctx.model_version,
    };
    serde_json::to_writer(&mut *out, &response).map_err(|e| e.to_string())
}

/// The top-level fields of a GCS JSONL line, in order, each kept raw.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Fields<'a>, M::Error> {
                let mut out = Vec::with_capacity(2);
                while let Some(k) = m.next_key::<MaybeBorrowed<'de>>()? {
                    out.push((k.0, m.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The fields the service writes itself; an input line's own copies are
/// not carried through.
const OUTPUT_FIELDS: [&str; 4] = ["request", "status", "processed_time", "response"];

/// Processes one GCS JSONL line into one output line (without the newline).
/// Returns the row's error, if it failed; the output line is written either
/// way.
///
/// Like the service, every top-level field of the input line other than
/// `request` (a `key`, a `custom_id`, …) is carried into the output line,
/// before `status`, `processed_time`, `request` and `response`.
pub fn process_gcs_line(
    line: &str,
    processed_time: &str,
    ctx: &ModelCtx,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Option<String> {
    process_gcs_line_with(line, processed_time, ctx, scratch, out, respond)
}

/// The type of a model: a request in, its `response` appended to the
/// buffer, or the row's status.
pub(crate) type Respond = fn(&RawValue, &ModelCtx, &mut Vec<u8>) -> Result<(), String>;

/// [`process_gcs_line`] with another model (the families with a
/// `request` field: Gemini embeddings, Claude).
pub(crate) fn process_gcs_line_with(
    line: &str,
    processed_time: &str,
    ctx: &ModelCtx,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
    respond: Respond,
) -> Option<String> {
    let parsed: Result<Fields<'_>, _> = serde_json::from_str(line);
    let fields = parsed.as_ref().map(|f| f.0.as_slice()).unwrap_or_default();
    let request = fields.iter().find(|(k, _)| k == "request").map(|(_, v)| *v);
    let error = match (&parsed, request) {
        (Ok(_), Some(request)) => {
            scratch.clear();
            respond(request, ctx, scratch).err()
        }
        (Ok(_), None) => Some("invalid row: no `request` field".to_owned()),
        (Err(e), _) => Some(format!("invalid row: not a JSON object: {e}")),
    };
    out.push(b'{');
    for (k, v) in fields
        .iter()
        .filter(|(k, _)| !OUTPUT_FIELDS.contains(&k.as_ref()))
    {
        write_json_str(out, k);
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(b"\"status\":");
    write_json_str(out, error.as_deref().unwrap_or(""));
    out.extend_from_slice(b",\"processed_time\":\"");
    out.extend_from_slice(processed_time.as_bytes());
    out.extend_from_slice(b"\",\"request\":");
    match (request, &parsed) {
        (Some(r), _) => out.extend_from_slice(r.get().as_bytes()),
        // A line that is not JSON is carried through as a string, so nothing is lost.
        (None, Err(_)) => write_json_str(out, line),
        (None, Ok(_)) => out.extend_from_slice(b"null"),
    }
    if error.is_none() {
        out.extend_from_slice(b",\"response\":");
        out.extend_from_slice(scratch);
    }
    out.push(b'}');
    error
}

/// Processes one BigQuery row (a JSON object with a `request` column, as an
/// object or a JSON string). Input columns are carried through, and
/// `response`, `status` and `processed_time` added.
pub fn process_bq_line(
    line: &str,
    processed_time: &str,
    ctx: &ModelCtx,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Option<String> {
    process_bq_line_with(line, processed_time, ctx, scratch, out, respond)
}

/// [`process_bq_line`] with another model.
pub(crate) fn process_bq_line_with(
    line: &str,
    processed_time: &str,
    ctx: &ModelCtx,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
    respond: Respond,
) -> Option<String> {
    let row: Result<serde_json::Map<String, serde_json::Value>, _> = serde_json::from_str(line);
    let mut row = match row {
        Ok(r) => r,
        Err(e) => {
            let mut m = serde_json::Map::new();
            m.insert("request".into(), serde_json::Value::String(line.to_owned()));
            let err = format!("invalid row: not a JSON object: {e}");
            finish_bq(m, &err, processed_time, None, out);
            return Some(err);
        }
    };
    let request_json = match row.get("request") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(v @ serde_json::Value::Object(_)) => Some(v.to_string()),
        _ => None,
    };
    let result = match request_json {
        None => Err("invalid row: no `request` column".to_owned()),
        Some(s) => match serde_json::from_str::<&RawValue>(&s) {
            Ok(raw) => {
                scratch.clear();
                respond(raw, ctx, scratch)
            }
            Err(e) => Err(format!("invalid request: {e}")),
        },
    };
    let response = match &result {
        Ok(()) => serde_json::from_slice::<serde_json::Value>(scratch).ok(),
        Err(_) => None,
    };
    let err = result.err();
    row.remove("response");
    row.remove("status");
    row.remove("processed_time");
    finish_bq(
        row,
        err.as_deref().unwrap_or(""),
        processed_time,
        response,
        out,
    );
    err
}

fn finish_bq(
    mut row: serde_json::Map<String, serde_json::Value>,
    status: &str,
    processed_time: &str,
    response: Option<serde_json::Value>,
    out: &mut Vec<u8>,
) {
    row.insert("status".into(), status.into());
    row.insert("processed_time".into(), processed_time.into());
    if let Some(r) = response {
        row.insert("response".into(), r);
    }
    // Serialising a map of JSON values cannot fail.
    let _ = serde_json::to_writer(&mut *out, &row);
}

/// The output line of a row that failed before it could be read (too long,
/// not UTF-8): its status and time, no request echoed (nothing rewritten).
pub fn failed_row(message: &str, processed_time: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"status\":");
    write_json_str(out, message);
    out.extend_from_slice(b",\"processed_time\":\"");
    out.extend_from_slice(processed_time.as_bytes());
    out.extend_from_slice(b"\",\"request\":null}");
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a str cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{
        gemini::{parse_request_value, parse_response_value, response_text, Prompt},
        input::{BatchRequest, InputEncoder, InputLimits},
        key::{decode_key_label, key_hash, KeyLabel, KEY_LABEL},
    };
    use std::collections::HashMap;

    fn ctx() -> ModelCtx {
        ModelCtx {
            model_version: "gemini-2.0-flash-001".into(),
            max_output_tokens: None,
            fail_rows_containing: None,
            family: crate::family::Family::Gemini,
            embedding_dims: None,
        }
    }

    fn run(line: &str, ctx: &ModelCtx) -> (serde_json::Value, Option<String>) {
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        let err = process_gcs_line(
            line,
            "2024-01-01T00:00:00.000Z",
            ctx,
            &mut scratch,
            &mut out,
        );
        (serde_json::from_slice(&out).unwrap(), err)
    }

    #[test]
    fn answers_are_derived_from_the_prompt() {
        let line = r#"{"request":{"contents":[{"role":"user","parts":[{"text":"Give me a recipe for banana bread."}]}]}}"#;
        let (v, err) = run(line, &ctx());
        assert_eq!(err, None);
        assert_eq!(v["status"], "");
        let r = &v["response"];
        assert_eq!(
            r["candidates"][0]["content"]["parts"][0]["text"],
            "Emulated answer to: Give me a recipe for banana bread."
        );
        assert_eq!(r["candidates"][0]["finishReason"], "STOP");
        assert_eq!(r["usageMetadata"]["promptTokenCount"], 7);
        assert_eq!(r["usageMetadata"]["candidatesTokenCount"], 10);
        assert_eq!(r["usageMetadata"]["totalTokenCount"], 17);
        assert_eq!(r["modelVersion"], "gemini-2.0-flash-001");
        assert_eq!(
            v["request"]["contents"][0]["parts"][0]["text"],
            "Give me a recipe for banana bread."
        );
    }

    /// The `promptTokenCount` the model writes for `request`.
    fn prompt_token_count(request: &serde_json::Value) -> Option<u64> {
        let raw = serde_json::value::to_raw_value(request).unwrap();
        let mut out = Vec::new();
        respond(&raw, &ctx(), &mut out).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        v["usageMetadata"]["promptTokenCount"].as_u64()
    }

    /// One tokeniser: the usage the model reports is `count_tokens` of
    /// the text parts of `contents` (what CountTokens answers), whatever
    /// the whitespace, and blocked prompts count the same way.
    #[test]
    fn usage_is_count_tokens_of_the_text_parts() {
        assert_eq!(count_tokens(["a  b\n", "\tc", "", "   "]), 3);
        assert_eq!(billable_characters(["a  b\n", "\tcé"]), 4);
        for texts in [
            vec!["Give me a recipe for banana bread."],
            vec!["one", " two three ", "\u{3000}four\u{a0}five"],
            vec!["hi [blocked]", "more words here"],
        ] {
            let parts: Vec<_> = texts
                .iter()
                .map(|t| serde_json::json!({"text": t}))
                .collect();
            let request = serde_json::json!({
                "contents": [{"role": "user", "parts": parts},
                             {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png", "data": "AA=="}}]},
                             {"role": "user", "parts": [{"text": "and again"}]}],
            });
            let expected = count_tokens(texts.iter().copied().chain(["and again"]));
            assert_eq!(prompt_token_count(&request), Some(expected), "{texts:?}");
        }
    }

    proptest::proptest! {
        /// The offline bound is never below the emulator's count, for any
        /// text in any number of parts and turns.
        #[test]
        fn the_offline_bound_is_at_least_the_emulators_count(
            turns in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<String>(), 1..4), 1..4),
            system in proptest::option::of(proptest::prelude::any::<String>()),
        ) {
            let contents: Vec<_> = turns
                .iter()
                .map(|parts| serde_json::json!({"role": "user", "parts": parts.iter().map(|t| serde_json::json!({"text": t})).collect::<Vec<_>>()}))
                .collect();
            let mut request = serde_json::json!({"contents": contents});
            if let Some(s) = system {
                request["systemInstruction"] = serde_json::json!({"parts": [{"text": s}]});
            }
            let count = prompt_token_count(&request).unwrap();
            let expected = count_tokens(turns.iter().flatten().map(String::as_str));
            proptest::prop_assert_eq!(count, expected);
            proptest::prop_assert!(crate::tokens::offline_upper_bound(&request) >= count);
            let line = serde_json::json!({"key": "k", "request": request});
            proptest::prop_assert!(crate::tokens::offline_upper_bound(&line) >= count);
        }
    }

    #[test]
    fn max_output_tokens_cuts_the_answer() {
        let line = r#"{"request":{"contents":[{"role":"user","parts":[{"text":"one two three four"}]}],"generationConfig":{"maxOutputTokens":4}}}"#;
        let (v, _) = run(line, &ctx());
        assert_eq!(
            v["response"]["candidates"][0]["content"]["parts"][0]["text"],
            "Emulated answer to: one"
        );
        assert_eq!(v["response"]["candidates"][0]["finishReason"], "MAX_TOKENS");
        let job_level = ModelCtx {
            max_output_tokens: Some(3),
            ..ctx()
        };
        let line = r#"{"request":{"contents":[{"parts":[{"text":"x y"}]}]}}"#;
        let (v, _) = run(line, &job_level);
        assert_eq!(v["response"]["usageMetadata"]["candidatesTokenCount"], 3);
    }

    #[test]
    fn bad_rows_fail_with_a_status_and_keep_their_input() {
        let (v, err) = run("not json", &ctx());
        assert!(err.unwrap().contains("not a JSON object"));
        assert_eq!(v["request"], "not json");
        assert!(v.get("response").is_none());
        let (v, err) = run(r#"{"prompt":"x"}"#, &ctx());
        assert!(err.unwrap().contains("no `request`"));
        assert!(v["status"].as_str().unwrap().contains("no `request`"));
        let (_, err) = run(r#"{"request":{"contents":[]}}"#, &ctx());
        assert!(err.unwrap().contains("contents"));
    }

    #[test]
    fn extra_fields_are_carried_and_markers_block_or_fail() {
        let line = r#"{"key":"q-7","request":{"contents":[{"role":"user","parts":[{"text":"hi [blocked]"}]}]},"custom_id":{"a":1}}"#;
        let (v, err) = run(line, &ctx());
        assert_eq!(err, None);
        assert_eq!(v["key"], "q-7");
        assert_eq!(v["custom_id"]["a"], 1);
        assert_eq!(
            v["response"]["promptFeedback"]["blockReason"],
            "PROHIBITED_CONTENT"
        );
        assert!(v["response"].get("candidates").is_none());
        let failing = ModelCtx {
            fail_rows_containing: Some("hi".into()),
            ..ctx()
        };
        let (v, err) = run(line, &failing);
        assert!(err.unwrap().contains("RESOURCE_EXHAUSTED"));
        assert_eq!(v["key"], "q-7");
        assert!(v.get("response").is_none());
    }

    #[test]
    fn bigquery_rows_carry_columns_through() {
        let line = r#"{"id":7,"request":"{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"hi\"}]}]}"}"#;
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        let err = process_bq_line(line, "t", &ctx(), &mut scratch, &mut out);
        assert_eq!(err, None);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["status"], "");
        assert_eq!(v["processed_time"], "t");
        assert_eq!(
            v["response"]["candidates"][0]["content"]["parts"][0]["text"],
            "Emulated answer to: hi"
        );
    }

    /// The input writer's lines, run through the model: every row is
    /// understood, and its key comes back through the echoed request's labels.
    #[test]
    fn encoded_lines_run_in_the_emulator_and_their_keys_come_back() {
        let long_key = format!("doc/{}", "x".repeat(200));
        let rows: Vec<(String, BatchRequest)> = vec![
            ("plain".into(), "Give me a recipe for banana bread.".into()),
            (
                "typed".into(),
                Prompt::text("Summarise this")
                    .system("Be brief")
                    .temperature(0.2)
                    .into(),
            ),
            (
                "raw".into(),
                BatchRequest::json(
                    r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"labels":{"team":"a"}}"#,
                )
                .unwrap(),
            ),
            (long_key.clone(), "long key".into()),
        ];
        let hashes: HashMap<_, _> = rows.iter().map(|(k, _)| (key_hash(k), k.clone())).collect();

        let mut encoder = InputEncoder::new(InputLimits::default());
        let mut input = Vec::new();
        for (key, request) in rows.clone() {
            encoder.encode(&key, request, &mut input).unwrap();
        }
        let ctx = ctx();
        let mut keys = Vec::new();
        for line in std::str::from_utf8(&input).unwrap().lines() {
            let (mut scratch, mut out) = (Vec::new(), Vec::new());
            let error = process_gcs_line(
                line,
                "2024-11-13T14:04:28.376+00:00",
                &ctx,
                &mut scratch,
                &mut out,
            );
            assert_eq!(error, None, "{line}");
            let mut output: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let response = parse_response_value(output["response"].take()).unwrap();
            assert!(response_text(&response).is_some());
            let request = parse_request_value(output["request"].take()).unwrap();
            let key = match decode_key_label(&request.labels[KEY_LABEL]).unwrap() {
                KeyLabel::Exact(k) => k,
                KeyLabel::Hash(h) => hashes[&h].clone(),
            };
            keys.push(key);
        }
        let expected: Vec<String> = rows.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, expected);
    }
}
