//! The emulator's model for the families other than Gemini: Gemini
//! embeddings, text embeddings, Claude and the open models (OpenAI batch
//! format). Each line comes out in its family's output shape — the shapes
//! the crate's reader reads (see "Model families" in docs/GUIDE.md):
//!
//! * **Gemini embeddings**: the input line's fields, `status`,
//!   `processed_time`, `request` and `response: {"embedding": {"values"},
//!   "usageMetadata"}`; the dimension is the request's
//!   `embed_content_config.output_dimensionality`, else the job's
//!   `outputDimensionality`, else 3072.
//! * **Text embeddings**: the key, `instance` (the line without its key),
//!   `predictions: [{"embeddings": {"statistics", "values"}}]`, `status`
//!   and `processed_time`; the dimension is the job's
//!   `outputDimensionality`, else 768.
//! * **Claude**: the line's fields, `status`, `processed_time`, `request`
//!   and `response`, an Anthropic Message (`content[].text`,
//!   `stop_reason` `end_turn` or `max_tokens`, `usage`).
//! * **Open models**: `{"id", "custom_id", "response": {"status_code",
//!   "request_id", "body"}, "error"}`, the body a chat completion or an
//!   embedding list; a refused line has `"response": null` and an `error`.
//!
//! Embeddings are deterministic: a vector derived from the text's bytes
//! (equal texts give equal vectors, different texts different ones),
//! L2-normalised. Token counts are whitespace-separated words, as for
//! Gemini. The lines the service refuses fail as it would: Claude without
//! a positive `max_tokens` or `messages`, an embedding with no text. The
//! `[blocked]` marker is refused by the chat families (`stop_reason`
//! `refusal`, `finish_reason` `content_filter`), and the
//! `fail_rows_containing` knob fails a row of any family with a 429.

use serde_json::{json, Map, Value};

use serde_json::value::RawValue;

use super::model::{self, ModelCtx, ANSWER_PREFIX, BLOCK_MARKER};
use crate::family::Family;

/// The default dimension of a Gemini embedding.
const GEMINI_EMBEDDING_DIMS: usize = 3072;
/// The default dimension of a text embedding.
const TEXT_EMBEDDING_DIMS: usize = 768;
/// The most dimensions the emulator writes (the real models stop at 3072).
const MAX_DIMS: usize = 8192;

const EXHAUSTED: &str = r#"Resource exhausted: {"error": {"code": 429, "message": "Resource exhausted. Please try again later.", "status": "RESOURCE_EXHAUSTED"}}"#;

fn bad_request(message: &str) -> String {
    let inner = json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}});
    format!("Bad Request: {inner}")
}

/// A stable 64-bit hash (FNV-1a) of `text`.
fn short_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn words(text: &str) -> u64 {
    model::count_tokens([text])
}

/// A deterministic unit vector of `dims` numbers derived from `text`.
pub fn embedding_of(text: &str, dims: usize) -> Vec<f32> {
    // FNV-1a seeds a splitmix64 stream: stable across platforms and
    // versions, unlike the standard library's hasher.
    let mut seed = short_hash(text);
    let mut next = || {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut v: Vec<f32> = (0..dims)
        .map(|_| ((next() >> 40) as f32 / (1u64 << 23) as f32) - 1.0)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Writes `values` as a JSON array, numbers in their shortest form.
fn write_values(values: &[f32], out: &mut Vec<u8>) {
    // Serialising numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, values);
}

fn dims_of(v: Option<&Value>, default: usize) -> Result<usize, String> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(n) => match n.as_u64() {
            Some(n) if n > 0 && n as usize <= MAX_DIMS => Ok(n as usize),
            _ => Err(bad_request(&format!(
                "output dimensionality {n} is not between 1 and {MAX_DIMS}"
            ))),
        },
    }
}

/// The text of a content: a string, or text blocks / parts.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        Value::Object(o) => o.get("parts").map(text_of).unwrap_or_default(),
        _ => String::new(),
    }
}

/// An answer built like the Gemini model's: the prefix and the prompt's
/// words, cut to `max` words.
fn answer(prompt: &str, max: u64) -> (String, u64, bool) {
    let mut text = String::with_capacity(64);
    let mut n = 0u64;
    for word in ANSWER_PREFIX
        .split_whitespace()
        .chain(prompt.split_whitespace())
    {
        if n == max {
            return (text, n, true);
        }
        if n > 0 {
            text.push(' ');
        }
        text.push_str(word);
        n += 1;
    }
    (text, n, false)
}

fn injected_failure(ctx: &ModelCtx, text: &str) -> bool {
    ctx.fail_rows_containing
        .as_deref()
        .is_some_and(|m| text.contains(m))
}

/// Processes one Cloud Storage line of the job's family (see
/// [`model::process_gcs_line`], which it is for Gemini).
pub fn process_gcs_line(
    line: &str,
    processed_time: &str,
    ctx: &ModelCtx,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Option<String> {
    match ctx.family {
        Family::Gemini => model::process_gcs_line(line, processed_time, ctx, scratch, out),
        Family::GeminiEmbedding | Family::Claude => {
            model::process_gcs_line_with(line, processed_time, ctx, scratch, out, respond)
        }
        Family::TextEmbedding => text_embedding_line(line, processed_time, ctx, out),
        Family::OpenModel => open_model_line(line, ctx, out),
    }
}

/// Processes one BigQuery row of the job's family: Claude's `request`
/// column like Gemini's; a text embedding's `content` into `predictions`
/// (a JSON string of the array); an open model's `body` into `id` and
/// `response`, `method` and `url` dropped. Every family gets `status` and
/// `processed_time`.
pub fn process_bq_line(
    line: &str,
    processed_time: &str,
    ctx: &ModelCtx,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Option<String> {
    match ctx.family {
        Family::Gemini => model::process_bq_line(line, processed_time, ctx, scratch, out),
        Family::GeminiEmbedding | Family::Claude => {
            model::process_bq_line_with(line, processed_time, ctx, scratch, out, respond)
        }
        Family::TextEmbedding | Family::OpenModel => bq_row(line, processed_time, ctx, out),
    }
}

/// A text-embedding or open-model BigQuery row.
fn bq_row(line: &str, processed_time: &str, ctx: &ModelCtx, out: &mut Vec<u8>) -> Option<String> {
    let mut row = match serde_json::from_str::<Map<String, Value>>(line) {
        Ok(r) => r,
        Err(e) => {
            let err = format!("invalid row: not a JSON object: {e}");
            let v = json!({"status": err, "processed_time": processed_time});
            let _ = serde_json::to_writer(&mut *out, &v);
            return Some(err);
        }
    };
    for reserved in ["status", "processed_time", "predictions", "response", "id"] {
        row.remove(reserved);
    }
    let error = if ctx.family == Family::TextEmbedding {
        let text = row.get("content").map(text_of).unwrap_or_default();
        if text.trim().is_empty() {
            Some(bad_request("the row has no `content` to embed"))
        } else if injected_failure(ctx, &text) {
            Some(EXHAUSTED.to_owned())
        } else {
            let values = embedding_of(&text, ctx.embedding_dims.unwrap_or(TEXT_EMBEDDING_DIMS));
            let n = words(&text);
            let predictions = json!([{"embeddings": {"statistics": {"token_count": n, "truncated": false}, "values": values}}]);
            row.insert("predictions".into(), predictions.to_string().into());
            None
        }
    } else {
        let url = row
            .remove("url")
            .and_then(|u| u.as_str().map(str::to_owned))
            .unwrap_or_else(|| "/v1/chat/completions".to_owned());
        row.remove("method");
        let body = match row.get("body") {
            Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok(),
            Some(v @ Value::Object(_)) => Some(v.clone()),
            _ => None,
        };
        let id = short_hash(line);
        row.insert("id".into(), format!("batch_req_{id:016x}").into());
        let answered = match &body {
            Some(b @ Value::Object(_)) => open_body(&url, b, ctx, id),
            _ => Err((
                400,
                "invalid row: no `body` object".to_owned(),
                "INVALID_ARGUMENT",
            )),
        };
        match answered {
            Ok(body) => {
                row.insert(
                    "response".into(),
                    json!({"status_code": 200, "request_id": format!("req_{id:016x}"), "body": body}),
                );
                None
            }
            Err((code, message, status)) => Some(format!(
                "{}",
                json!({"error": {"code": code, "message": message, "status": status}})
            )),
        }
    };
    row.insert("status".into(), error.clone().unwrap_or_default().into());
    row.insert("processed_time".into(), processed_time.into());
    let _ = serde_json::to_writer(&mut *out, &row);
    error
}

/// The `response` of a Gemini-embeddings or Claude request, appended to
/// `out`; the error is the row's status.
fn respond(request: &RawValue, ctx: &ModelCtx, out: &mut Vec<u8>) -> Result<(), String> {
    let request: Value =
        serde_json::from_str(request.get()).map_err(|e| format!("invalid request: {e}"))?;
    let request = &request;
    match ctx.family {
        Family::GeminiEmbedding => {
            let text = request.get("content").map(text_of).unwrap_or_default();
            if text.trim().is_empty() {
                return Err(bad_request("the request has no text to embed"));
            }
            if injected_failure(ctx, &text) {
                return Err(EXHAUSTED.to_owned());
            }
            let config = request
                .get("embed_content_config")
                .or_else(|| request.get("embedContentConfig"));
            let asked = config.and_then(|c| {
                c.get("output_dimensionality")
                    .or_else(|| c.get("outputDimensionality"))
            });
            let dims = dims_of(asked, ctx.embedding_dims.unwrap_or(GEMINI_EMBEDDING_DIMS))?;
            let n = words(&text);
            out.extend_from_slice(b"{\"embedding\":{\"values\":");
            write_values(&embedding_of(&text, dims), out);
            out.extend_from_slice(
                format!(
                    "}},\"usageMetadata\":{{\"promptTokenCount\":{n},\"totalTokenCount\":{n}}}}}"
                )
                .as_bytes(),
            );
        }
        Family::Claude => {
            let max = match request.get("max_tokens").and_then(Value::as_u64) {
                Some(n) if n > 0 => n,
                _ => return Err(bad_request("max_tokens: Field required")),
            };
            let Some(messages) = request.get("messages").and_then(Value::as_array) else {
                return Err(bad_request("messages: Field required"));
            };
            let all: String = messages
                .iter()
                .filter_map(|m| m.get("content"))
                .map(text_of)
                .collect::<Vec<_>>()
                .join(" ");
            let last = messages
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                .and_then(|m| m.get("content"))
                .map(text_of)
                .ok_or_else(|| bad_request("messages: no user turn"))?;
            if injected_failure(ctx, &all) {
                return Err(EXHAUSTED.to_owned());
            }
            let system = request.get("system").map(text_of).unwrap_or_default();
            let input = words(&all) + words(&system);
            let id = format!("msg_{:016x}", short_hash(&all));
            let message = if all.contains(BLOCK_MARKER) {
                json!({"id": id, "type": "message", "role": "assistant", "model": ctx.model_version,
                       "content": [], "stop_reason": "refusal", "stop_sequence": null,
                       "usage": {"input_tokens": input, "output_tokens": 0}})
            } else {
                let (text, n, cut) = answer(&last, max);
                json!({"id": id, "type": "message", "role": "assistant", "model": ctx.model_version,
                       "content": [{"type": "text", "text": text}],
                       "stop_reason": if cut { "max_tokens" } else { "end_turn" }, "stop_sequence": null,
                       "usage": {"input_tokens": input, "output_tokens": n}})
            };
            serde_json::to_writer(&mut *out, &message).map_err(|e| e.to_string())?;
        }
        Family::Gemini | Family::TextEmbedding | Family::OpenModel => {
            return Err("invalid row: no model for this line".to_owned())
        }
    }
    Ok(())
}

/// A text-embedding line's output: `{"key"?, "instance", "predictions",
/// "status", "processed_time"}` (`predictions` left out when it failed).
pub(crate) fn text_embedding_line(
    line: &str,
    processed_time: &str,
    ctx: &ModelCtx,
    out: &mut Vec<u8>,
) -> Option<String> {
    let mut fields = match serde_json::from_str::<Map<String, Value>>(line) {
        Ok(f) => f,
        Err(e) => {
            let err = format!("invalid row: not a JSON object: {e}");
            let v = json!({"instance": line, "status": err, "processed_time": processed_time});
            let _ = serde_json::to_writer(&mut *out, &v);
            return Some(err);
        }
    };
    let key = fields.remove("key");
    let text = fields.get("content").map(text_of).unwrap_or_default();
    let result = if text.trim().is_empty() {
        Err(bad_request("the instance has no `content` to embed"))
    } else if injected_failure(ctx, &text) {
        Err(EXHAUSTED.to_owned())
    } else {
        Ok(())
    };
    out.push(b'{');
    if let Some(k) = key {
        out.extend_from_slice(b"\"key\":");
        let _ = serde_json::to_writer(&mut *out, &k);
        out.push(b',');
    }
    out.extend_from_slice(b"\"instance\":");
    let _ = serde_json::to_writer(&mut *out, &fields);
    if result.is_ok() {
        let n = words(&text);
        out.extend_from_slice(
            format!(",\"predictions\":[{{\"embeddings\":{{\"statistics\":{{\"token_count\":{n},\"truncated\":false}},\"values\":")
                .as_bytes(),
        );
        write_values(
            &embedding_of(&text, ctx.embedding_dims.unwrap_or(TEXT_EMBEDDING_DIMS)),
            out,
        );
        out.extend_from_slice(b"}}]");
    }
    out.extend_from_slice(b",\"status\":");
    let _ = serde_json::to_writer(&mut *out, result.as_ref().err().map_or("", String::as_str));
    out.extend_from_slice(b",\"processed_time\":");
    let _ = serde_json::to_writer(&mut *out, processed_time);
    out.push(b'}');
    result.err()
}

/// An open model's body answered: a chat completion or an embedding list.
fn open_body(
    url: &str,
    body: &Value,
    ctx: &ModelCtx,
    id: u64,
) -> Result<Value, (u16, String, &'static str)> {
    let invalid = |m: &str| (400, m.to_owned(), "INVALID_ARGUMENT");
    let model = body.get("model").cloned().unwrap_or(Value::Null);
    if url.ends_with("/embeddings")
        || (body.get("messages").is_none() && body.get("input").is_some())
    {
        let inputs: Vec<String> = match body.get("input") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().map(text_of).collect(),
            _ => Vec::new(),
        };
        if inputs.is_empty() || inputs.iter().all(|s| s.trim().is_empty()) {
            return Err(invalid("input: the request has no text to embed"));
        }
        if inputs.iter().any(|t| injected_failure(ctx, t)) {
            return Err((
                429,
                "Resource exhausted. Please try again later.".into(),
                "RESOURCE_EXHAUSTED",
            ));
        }
        let dims = dims_of(
            body.get("dimensions"),
            ctx.embedding_dims.unwrap_or(TEXT_EMBEDDING_DIMS),
        )
        .map_err(|_| invalid("dimensions: out of range"))?;
        let n: u64 = inputs.iter().map(|t| words(t)).sum();
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": embedding_of(t, dims)}))
            .collect();
        return Ok(json!({"object": "list", "data": data, "model": model,
                         "usage": {"prompt_tokens": n, "total_tokens": n}}));
    }
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err(invalid("messages: Field required"));
    };
    let all: String = messages
        .iter()
        .filter_map(|m| m.get("content"))
        .map(text_of)
        .collect::<Vec<_>>()
        .join(" ");
    let Some(last) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(text_of)
    else {
        return Err(invalid("messages: no user turn"));
    };
    if injected_failure(ctx, &all) {
        return Err((
            429,
            "Resource exhausted. Please try again later.".into(),
            "RESOURCE_EXHAUSTED",
        ));
    }
    let max = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .or(ctx.max_output_tokens)
        .unwrap_or(u64::MAX);
    let prompt = words(&all);
    let (content, n, reason) = if all.contains(BLOCK_MARKER) {
        (Value::Null, 0, "content_filter")
    } else {
        let (text, n, cut) = answer(&last, max);
        (Value::String(text), n, if cut { "length" } else { "stop" })
    };
    Ok(
        json!({"id": format!("chatcmpl-{id:016x}"), "object": "chat.completion", "created": 0, "model": model,
              "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": reason}],
              "usage": {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}}),
    )
}

/// An open model's line: `{"id", "custom_id", "response", "error"}`.
pub(crate) fn open_model_line(line: &str, ctx: &ModelCtx, out: &mut Vec<u8>) -> Option<String> {
    let id = short_hash(line);
    let parsed = serde_json::from_str::<Map<String, Value>>(line);
    let custom_id = parsed
        .as_ref()
        .ok()
        .and_then(|f| f.get("custom_id").cloned())
        .unwrap_or(Value::Null);
    let result = match &parsed {
        Err(e) => Err((
            400,
            format!("invalid row: not a JSON object: {e}"),
            "INVALID_ARGUMENT",
        )),
        Ok(f) => match f.get("body") {
            Some(body @ Value::Object(_)) => {
                let url = f
                    .get("url")
                    .and_then(Value::as_str)
                    .unwrap_or("/v1/chat/completions");
                open_body(url, body, ctx, id)
            }
            _ => Err((
                400,
                "invalid row: no `body` object".to_owned(),
                "INVALID_ARGUMENT",
            )),
        },
    };
    let batch_id = format!("batch_req_{id:016x}");
    let (v, err) = match result {
        Ok(body) => (
            json!({"id": batch_id, "custom_id": custom_id,
                   "response": {"status_code": 200, "request_id": format!("req_{id:016x}"), "body": body},
                   "error": null}),
            None,
        ),
        Err((code, message, status)) => (
            json!({"id": batch_id, "custom_id": custom_id, "response": null,
                   "error": {"code": code, "message": message, "status": status}}),
            Some(format!("{status}: {message}")),
        ),
    };
    let _ = serde_json::to_writer(&mut *out, &v);
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{
        input::{InputEncoder, InputLimits},
        results::{parse_output_line, Outcome},
    };

    fn ctx(model: &str) -> ModelCtx {
        ModelCtx {
            model_version: model.to_owned(),
            max_output_tokens: None,
            fail_rows_containing: None,
            family: Family::of_job_model(model),
            embedding_dims: None,
        }
    }

    fn run(model: &str, line: &str) -> (String, Option<String>) {
        let c = ctx(model);
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        let err = process_gcs_line(line, "2026-01-01T00:00:00Z", &c, &mut scratch, &mut out);
        (String::from_utf8(out).unwrap(), err)
    }

    fn encode(
        model: &str,
        key: &str,
        req: impl Into<crate::format::input::BatchRequest>,
    ) -> String {
        let mut enc = InputEncoder::for_model(InputLimits::default(), model).unwrap();
        let mut out = Vec::new();
        enc.encode(key, req, &mut out).unwrap();
        String::from_utf8(out).unwrap().trim_end().to_owned()
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding_of("sky", 768);
        assert_eq!(a, embedding_of("sky", 768));
        assert_ne!(a, embedding_of("sea", 768));
        assert_eq!(a.len(), 768);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }

    #[test]
    fn every_family_round_trips_through_the_emulator_and_the_reader() {
        use crate::format::{chat::Chat, embed::Embed};
        let cases = [
            (
                "publishers/google/models/gemini-embedding-001",
                encode(
                    "gemini-embedding-001",
                    "d1",
                    Embed::text("blue sky").dimensions(8),
                ),
            ),
            (
                "publishers/google/models/text-embedding-005",
                encode("text-embedding-005", "d1", "blue sky"),
            ),
            (
                "publishers/anthropic/models/claude-sonnet-4-5",
                encode(
                    "claude-sonnet-4-5",
                    "d1",
                    Chat::user("blue sky").max_tokens(3),
                ),
            ),
            (
                "publishers/meta/models/llama-3.3-70b-instruct-maas",
                encode("llama-3.3-70b-instruct-maas", "d1", "blue sky"),
            ),
            (
                "publishers/qwen/models/qwen3-embedding-maas",
                encode(
                    "publishers/qwen/models/qwen3-embedding-maas",
                    "d1",
                    "blue sky",
                ),
            ),
        ];
        for (i, (model, line)) in cases.iter().enumerate() {
            let (out, err) = run(model, line);
            assert_eq!(err, None, "{model}: {out}");
            let row = parse_output_line(&out).unwrap();
            assert_eq!(row.key(), Some("d1"), "{out}");
            let Outcome::Succeeded(a) = row.outcome() else {
                panic!("{model}: {out}")
            };
            match i {
                0 => assert_eq!(
                    a.embedding().unwrap().values().unwrap(),
                    embedding_of("blue sky", 8)
                ),
                1 | 4 => assert_eq!(a.embedding().unwrap().dimensions(), 768),
                2 => {
                    assert_eq!(a.text(), "Emulated answer to:");
                    assert_eq!(
                        a.finish_reason(),
                        Some(&crate::format::results::FinishReason::MaxTokens)
                    );
                    assert_eq!(
                        (a.usage().prompt_tokens, a.usage().candidates_tokens),
                        (2, 3)
                    );
                }
                _ => {
                    assert_eq!(a.text(), "Emulated answer to: blue sky");
                    assert_eq!(a.usage().total_tokens, 7);
                }
            }
            if i != 2 && i != 3 {
                assert_eq!(a.usage().prompt_tokens, 2, "{model}");
            }
        }
    }

    #[test]
    fn lines_the_service_refuses_fail_as_it_would() {
        let claude = "publishers/anthropic/models/claude-sonnet-4-5";
        let (out, err) = run(
            claude,
            r#"{"custom_id":"c","request":{"messages":[{"role":"user","content":"x"}]}}"#,
        );
        assert!(err.unwrap().contains("max_tokens"));
        assert!(
            matches!(parse_output_line(&out).unwrap().outcome(), Outcome::Failed(e) if e.status_name() == Some("INVALID_ARGUMENT"))
        );
        let (out, err) = run(
            "publishers/google/models/gemini-embedding-001",
            r#"{"key":"e","request":{"content":{"parts":[]}}}"#,
        );
        assert!(err.is_some());
        assert_eq!(parse_output_line(&out).unwrap().outcome().kind(), "failed");
        let (out, err) = run(
            "publishers/google/models/text-embedding-005",
            r#"{"key":"t","title":"no content"}"#,
        );
        assert!(err.is_some());
        let row = parse_output_line(&out).unwrap();
        assert_eq!((row.key(), row.outcome().kind()), (Some("t"), "failed"));
        let (out, err) = run(
            "publishers/meta/models/llama-3.3-70b-instruct-maas",
            r#"{"custom_id":"o","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}"#,
        );
        assert!(err.is_some());
        let row = parse_output_line(&out).unwrap();
        assert_eq!((row.key(), row.outcome().kind()), (Some("o"), "failed"));
        let (out, _) = run(
            claude,
            &encode("claude-sonnet-4-5", "b", "a [blocked] prompt"),
        );
        assert_eq!(parse_output_line(&out).unwrap().outcome().kind(), "blocked");
    }

    #[test]
    fn the_failure_knob_fails_any_family_with_a_429() {
        for (model, line) in [
            (
                "publishers/google/models/text-embedding-005",
                encode("text-embedding-005", "k", "boom here"),
            ),
            (
                "publishers/anthropic/models/claude-sonnet-4-5",
                encode("claude-sonnet-4-5", "k", "boom here"),
            ),
            (
                "publishers/meta/models/llama-3.3-70b-instruct-maas",
                encode("llama-3.3-70b-instruct-maas", "k", "boom here"),
            ),
            (
                "publishers/google/models/gemini-embedding-001",
                encode("gemini-embedding-001", "k", "boom here"),
            ),
        ] {
            let mut c = ctx(model);
            c.fail_rows_containing = Some("boom".into());
            let (mut out, mut scratch) = (Vec::new(), Vec::new());
            let err = process_gcs_line(&line, "t", &c, &mut scratch, &mut out);
            assert!(err.is_some(), "{model}");
            let row = parse_output_line(std::str::from_utf8(&out).unwrap()).unwrap();
            let Outcome::Failed(e) = row.outcome() else {
                panic!("{model}")
            };
            assert_eq!(e.code(), Some(429), "{model}: {e:?}");
        }
    }
}
