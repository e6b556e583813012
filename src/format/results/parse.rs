//! The output line parser: lenient views of each family's line, then the
//! row's classification.

use std::{borrow::Cow, fmt};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{json::*, types::*};

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
                    if k.0 == crate::format::key::KEY_LABEL {
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
/// label (see [`KEY_LABEL`](crate::format::KEY_LABEL)). A line that is not
/// an output line is an [`Error::Output`](crate::error::Error::Output) (file
/// `"-"`, line 1); it never panics.
///
/// ```
/// use vertex_batch::format::{parse_output_line, Outcome};
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
    line.key_label
        .as_deref()
        .and_then(crate::format::key::decode_exact)
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
