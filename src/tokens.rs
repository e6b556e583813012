//! Input tokens without the network: [`offline_upper_bound`], for when
//! `CountTokens` ([`crate::Client::count_tokens`]) cannot be called (no
//! credentials yet, a model it does not serve, a million lines to price).
//!
//! The bound rests on how the tokenizers of the models the batch service
//! runs work: a byte-level BPE (GPT-style, Llama 3, Claude) or a
//! SentencePiece model with byte fallback (Gemini, Gemma) turns text into
//! tokens that each cover at least one byte of its UTF-8 encoding, so no
//! text makes more tokens than it has bytes. What the bytes do not cover —
//! the turn markers a chat template wraps around each message, the
//! SentencePiece word-boundary prefix — is at most [`PART_OVERHEAD`] tokens
//! a part (a text part, a message, a system text, an embedding input).
//!
//! How far off it is: typical English is about 4 bytes a token, so the
//! bound is about 4× the real count for English prose; for text in a
//! script of 3-byte characters (CJK) a token often holds one or two
//! characters, and the bound is 1.5–3× high. It never undercounts text.
//!
//! What is not text:
//!
//! * a media part (Gemini `inlineData` / `fileData`, Claude `image` /
//!   `document` blocks, OpenAI `image_url` / `input_audio` / `file`) counts
//!   [`MEDIA_PART_TOKENS`], Google's documented 258 tokens for an image (or
//!   a PDF page). That is an *estimate*, not a bound: video (263 tokens a
//!   second), audio (32 a second) and documents of many pages cost more;
//! * tool declarations (`tools`) and structured parts (function calls and
//!   responses, Claude `tool_use` / `tool_result` blocks) count the bytes
//!   of their compact JSON: the model reads a rendering of the same
//!   names, descriptions and schemas, and the same estimate applies;
//! * generation settings, safety settings, labels and other fields the
//!   model does not read count nothing.
//!
//! ```
//! use serde_json::json;
//! use vertex_batch::tokens::{offline_upper_bound, PART_OVERHEAD};
//!
//! // A Gemini request: 20 bytes of text in one part.
//! let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "Why is the sky blue?"}]}]});
//! assert_eq!(offline_upper_bound(&gemini), 20 + PART_OVERHEAD);
//! // The same question as a whole batch line, a Claude request and an OpenAI line.
//! assert_eq!(offline_upper_bound(&json!({"key": "q1", "request": gemini})), 20 + PART_OVERHEAD);
//! let claude = json!({"messages": [{"role": "user", "content": "Why is the sky blue?"}],
//!                     "anthropic_version": "vertex-2023-10-16", "max_tokens": 50});
//! assert_eq!(offline_upper_bound(&claude), 20 + PART_OVERHEAD);
//! let openai = json!({"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
//!                     "body": {"model": "m", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}});
//! assert_eq!(offline_upper_bound(&openai), 20 + PART_OVERHEAD);
//! ```

use serde_json::{Map, Value};

/// Tokens a part adds beyond its text's bytes: turn markers and the
/// role around a message (`<start_of_turn>user\n … <end_of_turn>\n` is 5
/// tokens in Gemma's template) and a word-boundary prefix, with room to
/// spare.
///
/// ```
/// use serde_json::json;
/// use vertex_batch::tokens::{offline_upper_bound, PART_OVERHEAD};
/// // An empty text part still costs its markers.
/// assert_eq!(offline_upper_bound(&json!({"contents": [{"parts": [{"text": ""}]}]})), PART_OVERHEAD);
/// ```
pub const PART_OVERHEAD: u64 = 8;

/// Tokens a media part (an image, a file, audio) counts: Google's
/// documented 258 tokens for an image, or a page of a PDF. An estimate,
/// not a bound (see the [module docs](self)).
///
/// ```
/// use serde_json::json;
/// use vertex_batch::tokens::{offline_upper_bound, MEDIA_PART_TOKENS};
/// let image = json!({"contents": [{"parts": [{"fileData": {"mimeType": "image/png", "fileUri": "gs://b/cat.png"}}]}]});
/// assert_eq!(offline_upper_bound(&image), MEDIA_PART_TOKENS);
/// ```
pub const MEDIA_PART_TOKENS: u64 = 258;

/// Nesting beyond which values are counted as plain JSON bytes (a
/// generous bound, with no recursion).
const MAX_DEPTH: usize = 16;

/// An upper bound of the input tokens of one request, computed without
/// the network; see the [module docs](self) for how it is made, how far
/// off it is and what it does with parts that are not text.
///
/// `request` may be a request or a whole batch line holding one under
/// `request` (Gemini, Gemini embeddings, Claude) or `body` (OpenAI batch
/// format), in any family's shape: Gemini (`contents`,
/// `systemInstruction`, `tools`; embeddings' `content`), the older text
/// embeddings (`content`, `title`), Claude (`messages`, `system`, `tools`)
/// or OpenAI (`messages`, `tools`; embeddings' `input`). Any JSON is
/// accepted and nothing panics: a value with none of those fields (a
/// string, a number, `{}`) counts 0.
///
/// ```
/// use serde_json::json;
/// use vertex_batch::tokens::{offline_upper_bound, PART_OVERHEAD};
/// let r = json!({
///     "systemInstruction": {"parts": [{"text": "Be brief."}]},           // 9 bytes
///     "contents": [{"role": "user", "parts": [{"text": "Name a river."}]}], // 13 bytes
///     "generationConfig": {"temperature": 0.2}                         // not counted
/// });
/// assert_eq!(offline_upper_bound(&r), 9 + 13 + 2 * PART_OVERHEAD);
/// assert_eq!(offline_upper_bound(&json!("just a string")), 0);
/// ```
pub fn offline_upper_bound(request: &Value) -> u64 {
    let Some(obj) = request.as_object() else {
        return 0;
    };
    // A batch line: the request is under `request` (or OpenAI's `body`);
    // the line's other fields (`key`, `custom_id`, `url`) are not read.
    for wrapper in ["request", "body"] {
        if let Some(inner @ Value::Object(_)) = obj.get(wrapper) {
            return offline_upper_bound(inner);
        }
    }
    request_bound(obj)
}

/// The bound of a request object (not a line).
fn request_bound(obj: &Map<String, Value>) -> u64 {
    let mut n = 0u64;
    let mut add = |k: u64| n = n.saturating_add(k);
    for key in [
        "contents",
        "systemInstruction",
        "system_instruction",
        "system",
    ] {
        if let Some(v) = obj.get(key) {
            add(content_bound(v, 0));
        }
    }
    // Embeddings: Gemini's `content` (a Content), the text models' and
    // OpenAI's plain strings.
    for key in ["content", "input", "title"] {
        if let Some(v) = obj.get(key) {
            add(content_bound(v, 0));
        }
    }
    if let Some(Value::Array(messages)) = obj.get("messages") {
        for m in messages {
            add(message_bound(m));
        }
    }
    for key in ["tools", "functions"] {
        if let Some(v) = obj.get(key) {
            add(json_bytes(v));
        }
    }
    n
}

/// A Claude or OpenAI message: its `content` (a string or an array of
/// blocks), plus any tool calls it carries, plus its turn markers.
fn message_bound(m: &Value) -> u64 {
    let Some(m) = m.as_object() else {
        return content_bound(m, 0);
    };
    let mut n = match m.get("content") {
        // A message's markers, even when its content is empty.
        Some(c) => content_bound(c, 0).max(PART_OVERHEAD),
        None => PART_OVERHEAD,
    };
    for key in ["tool_calls", "function_call"] {
        if let Some(v) = m.get(key) {
            n = n.saturating_add(json_bytes(v));
        }
    }
    n
}

/// A content-like value: a string (a text), an array of contents, a
/// Content (`parts`), or a single part or block.
fn content_bound(v: &Value, depth: usize) -> u64 {
    if depth > MAX_DEPTH {
        return json_bytes(v).saturating_add(PART_OVERHEAD);
    }
    match v {
        Value::String(s) => text(s),
        Value::Array(items) => items
            .iter()
            .fold(0u64, |n, i| n.saturating_add(content_bound(i, depth + 1))),
        Value::Object(o) => match o.get("parts") {
            Some(parts) => content_bound(parts, depth + 1),
            None => part_bound(o, depth),
        },
        // `null`, numbers, booleans: nothing the model reads as text.
        _ => 0,
    }
}

/// One part (Gemini) or content block (Claude, OpenAI).
fn part_bound(o: &Map<String, Value>, depth: usize) -> u64 {
    const MEDIA: [&str; 11] = [
        "inlineData",
        "inline_data",
        "fileData",
        "file_data",
        "image_url",
        "input_audio",
        "file",
        "source",
        "image",
        "audio",
        "document",
    ];
    let kind = o.get("type").and_then(Value::as_str);
    if MEDIA.iter().any(|k| o.contains_key(*k))
        || kind.is_some_and(|t| matches!(t, "image" | "document" | "image_url" | "input_audio"))
    {
        return MEDIA_PART_TOKENS;
    }
    match o.get("text") {
        Some(Value::String(s)) => text(s),
        // A Claude `tool_result` block holds content of its own.
        _ => match o.get("content") {
            Some(c @ (Value::String(_) | Value::Array(_))) => content_bound(c, depth + 1),
            // Function calls and responses, `tool_use` blocks, parts of a
            // kind not known here: their JSON.
            _ => object_bytes(o).saturating_add(PART_OVERHEAD),
        },
    }
}

/// The bound of one text: its UTF-8 bytes and a part's overhead.
fn text(s: &str) -> u64 {
    (s.len() as u64).saturating_add(PART_OVERHEAD)
}

/// The length of `v` as compact JSON with its strings unescaped (a comma
/// more per member or item, so never less), computed without recursion so
/// no nesting can overflow the stack.
fn json_bytes(v: &Value) -> u64 {
    let mut n = 0u64;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        let len = match v {
            Value::Null => 4,
            Value::Bool(b) => {
                if *b {
                    4
                } else {
                    5
                }
            }
            Value::Number(x) => x.to_string().len() as u64,
            Value::String(s) => s.len() as u64 + 2,
            Value::Array(items) => {
                stack.extend(items);
                // Brackets and commas.
                2 + items.len() as u64
            }
            Value::Object(o) => {
                stack.extend(o.values());
                members_bytes(o)
            }
        };
        n = n.saturating_add(len);
    }
    n
}

/// [`json_bytes`] of an object, without copying it into a `Value`.
fn object_bytes(o: &Map<String, Value>) -> u64 {
    o.values()
        .fold(members_bytes(o), |n, v| n.saturating_add(json_bytes(v)))
}

/// An object's braces, and per member its quoted key, a colon, a comma.
fn members_bytes(o: &Map<String, Value>) -> u64 {
    o.keys()
        .fold(2u64, |n, k| n.saturating_add(k.len() as u64 + 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn every_family_and_part_kind() {
        let fc = json!({"functionCall": {"name": "f", "args": {"x": 1}}});
        let fc_bytes = json_bytes(&fc);
        let tools =
            json!([{"functionDeclarations": [{"name": "get_weather", "description": "Weather"}]}]);
        let gemini = json!({
            "contents": [
                {"role": "user", "parts": [{"text": "abc"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
                {"role": "model", "parts": [fc]},
            ],
            "system_instruction": {"parts": [{"text": "hé"}]},
            "tools": tools,
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        });
        assert_eq!(
            offline_upper_bound(&gemini),
            (3 + PART_OVERHEAD)
                + MEDIA_PART_TOKENS
                + (fc_bytes + PART_OVERHEAD)
                + (3 + PART_OVERHEAD)
                + json_bytes(&tools)
        );
        // Gemini embeddings and the older text embeddings.
        let embed = json!({"key": "d1", "request": {"content": {"parts": [{"text": "blue sky"}]},
                           "embed_content_config": {"output_dimensionality": 768}}});
        assert_eq!(offline_upper_bound(&embed), 8 + PART_OVERHEAD);
        let text_embed =
            json!({"content": "blue sky", "title": "t", "task_type": "RETRIEVAL_DOCUMENT"});
        assert_eq!(offline_upper_bound(&text_embed), 8 + 1 + 2 * PART_OVERHEAD);
        // Claude: system as a string or blocks, images, tool results.
        let claude = json!({"custom_id": "c", "request": {
            "system": [{"type": "text", "text": "be kind"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42"}]},
                {"role": "assistant", "content": ""},
            ],
            "max_tokens": 10, "anthropic_version": "vertex-2023-10-16"}});
        assert_eq!(
            offline_upper_bound(&claude),
            (7 + PART_OVERHEAD)
                + (2 + PART_OVERHEAD)
                + MEDIA_PART_TOKENS
                + (2 + PART_OVERHEAD)
                + PART_OVERHEAD
        );
        // OpenAI chat and embeddings.
        let chat = json!({"body": {"messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "hey"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}});
        assert_eq!(
            offline_upper_bound(&chat),
            (3 + PART_OVERHEAD) + (3 + PART_OVERHEAD) + MEDIA_PART_TOKENS
        );
        let embeddings = json!({"body": {"model": "m", "input": ["ab", "cde"]}});
        assert_eq!(offline_upper_bound(&embeddings), 5 + 2 * PART_OVERHEAD);
        for nothing in [
            json!(null),
            json!(7),
            json!("text"),
            json!([]),
            json!({}),
            json!({"key": "x"}),
        ] {
            assert_eq!(offline_upper_bound(&nothing), 0, "{nothing}");
        }
    }

    /// Deep values are counted without recursion and still bound their text.
    #[test]
    fn deep_nesting_is_bounded_and_safe() {
        let mut v = json!({"text": "x".repeat(50)});
        // Built by hand: `json!` would copy (recursively) what it wraps.
        for _ in 0..10_000 {
            v = Value::Array(vec![v]);
        }
        let r = Value::Object([("contents".to_owned(), v)].into_iter().collect());
        assert!(offline_upper_bound(&r) >= 50);
        // A deep structured part (a function call's arguments) too.
        let mut args = json!("y".repeat(60));
        for _ in 0..10_000 {
            args = Value::Array(vec![args]);
        }
        let call = Value::Object([("functionCall".to_owned(), args)].into_iter().collect());
        let part = Value::Array(vec![call]);
        let content = Value::Object([("parts".to_owned(), part)].into_iter().collect());
        let deep_call = Value::Object([("contents".to_owned(), content)].into_iter().collect());
        assert!(offline_upper_bound(&deep_call) >= 60);
        teardown(deep_call);
        teardown(r);
    }

    /// Drops a deep `Value` iteratively (its own drop recurses).
    fn teardown(v: Value) {
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            match v {
                Value::Array(a) => stack.extend(a),
                Value::Object(o) => stack.extend(o.into_iter().map(|(_, v)| v)),
                _ => {}
            }
        }
    }

    #[test]
    fn structured_parts_count_their_json() {
        let part = json!({"functionResponse": {"name": "f", "response": {"ok": true}}});
        let expected = json_bytes(&part) + PART_OVERHEAD;
        // At least the compact JSON (a comma more per member, counted
        // for the last one too).
        let compact = serde_json::to_string(&part).unwrap().len() as u64;
        assert!(
            (compact..=compact + 4).contains(&json_bytes(&part)),
            "{compact}"
        );
        assert_eq!(
            offline_upper_bound(&json!({"contents": [{"parts": [part]}]})),
            expected
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        const KEYS: &[&str] = &[
            "request",
            "body",
            "contents",
            "parts",
            "text",
            "content",
            "messages",
            "system",
            "systemInstruction",
            "tools",
            "input",
            "type",
            "inlineData",
            "tool_calls",
        ];
        crate::testing::arb_json(KEYS, any::<String>(), 6, 5)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any JSON: a number, never a panic.
        #[test]
        fn arbitrary_json_never_panics(v in arb_json()) {
            let _ = offline_upper_bound(&v);
            let _ = offline_upper_bound(&json!({"request": v.clone()}));
            let _ = offline_upper_bound(&json!({"contents": [v]}));
        }

        /// Text is never undercounted: the bound of text parts is at
        /// least their bytes, in every family's shape.
        #[test]
        fn text_bytes_are_a_floor(texts in proptest::collection::vec(any::<String>(), 1..6)) {
            let bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
            let parts: Vec<Value> = texts.iter().map(|t| json!({"text": t})).collect();
            let gemini = json!({"contents": [{"role": "user", "parts": parts}]});
            let messages: Vec<Value> = texts.iter().map(|t| json!({"role": "user", "content": t})).collect();
            let claude = json!({"messages": messages});
            let openai = json!({"body": {"messages": messages}});
            for r in [gemini, claude, openai] {
                prop_assert!(offline_upper_bound(&r) >= bytes + PART_OVERHEAD * texts.len() as u64);
            }
        }
    }
}
