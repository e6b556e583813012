//! Typed Gemini requests without building the prost tree by hand, and
//! lenient decoding of the requests and responses a batch job writes.
//!
//! ```
//! use vertex_batch::format::Prompt;
//!
//! let request = Prompt::text("Give me a recipe for banana bread.")
//!     .system("You are a concise baker.")
//!     .temperature(0.4)
//!     .max_output_tokens(256)
//!     .into_request();
//! assert_eq!(request.contents[0].role, "user");
//! ```

use serde_json::Value;

use crate::{
    error::{Error, Result},
    proto::aiplatform::{
        part, safety_setting::HarmBlockThreshold, Content, GenerateContentRequest,
        GenerateContentResponse, GenerationConfig, HarmCategory, Part, SafetySetting,
    },
};

/// A `GenerateContentRequest` under construction, starting from the common
/// case: one user turn of text.
///
/// Every setter returns the builder; [`Prompt::into_request`] (or `From`)
/// gives the prost message. Anything not covered here can be set on the
/// message itself ([`Prompt::request_mut`]).
///
/// ```
/// use vertex_batch::format::Prompt;
/// use vertex_batch::proto::aiplatform::{safety_setting::HarmBlockThreshold, HarmCategory};
///
/// let request = Prompt::text("Summarise: …")
///     .top_p(0.9)
///     .response_mime_type("application/json")
///     .safety(HarmCategory::Harassment, HarmBlockThreshold::BlockOnlyHigh)
///     .label("team", "search")
///     .into_request();
/// assert_eq!(request.safety_settings.len(), 1);
/// assert_eq!(request.labels["team"], "search");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    request: GenerateContentRequest,
}

/// The role of the user's turns.
const USER: &str = "user";
/// The role of the model's turns.
const MODEL: &str = "model";

fn text_content(role: &str, text: impl Into<String>) -> Content {
    Content {
        role: role.to_owned(),
        parts: vec![Part {
            data: Some(part::Data::Text(text.into())),
            ..Part::default()
        }],
    }
}

impl Prompt {
    /// A request with one user turn holding `text`.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let r = Prompt::text("hi").into_request();
    /// assert_eq!(r.contents.len(), 1);
    /// ```
    pub fn text(text: impl Into<String>) -> Self {
        Prompt::new().user(text)
    }

    /// An empty request (no turns yet).
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let r = Prompt::new().user("Hello").model("Hi! How can I help?").user("Tell a joke");
    /// assert_eq!(r.as_request().contents.len(), 3);
    /// ```
    pub fn new() -> Self {
        Prompt::default()
    }

    /// Appends a user turn of text.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// assert_eq!(Prompt::new().user("hi").as_request().contents[0].role, "user");
    /// ```
    pub fn user(self, text: impl Into<String>) -> Self {
        self.content(text_content(USER, text))
    }

    /// Appends a model turn of text (for few-shot or multi-turn prompts).
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// assert_eq!(Prompt::new().model("ok").as_request().contents[0].role, "model");
    /// ```
    pub fn model(self, text: impl Into<String>) -> Self {
        self.content(text_content(MODEL, text))
    }

    /// Appends any turn (images, files, function calls...).
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// use vertex_batch::proto::aiplatform::{part, Content, FileData, Part};
    ///
    /// let image = Part {
    ///     data: Some(part::Data::FileData(FileData {
    ///         mime_type: "image/png".into(),
    ///         file_uri: "gs://bucket/cat.png".into(),
    ///         ..Default::default()
    ///     })),
    ///     ..Default::default()
    /// };
    /// let r = Prompt::new().content(Content { role: "user".into(), parts: vec![image] });
    /// assert_eq!(r.as_request().contents.len(), 1);
    /// ```
    pub fn content(mut self, content: Content) -> Self {
        self.request.contents.push(content);
        self
    }

    /// Sets the system instruction.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let r = Prompt::text("hi").system("Answer in French.").into_request();
    /// assert!(r.system_instruction.is_some());
    /// ```
    pub fn system(mut self, text: impl Into<String>) -> Self {
        let mut c = text_content(USER, text);
        c.role.clear();
        self.request.system_instruction = Some(c);
        self
    }

    fn config(&mut self) -> &mut GenerationConfig {
        self.request
            .generation_config
            .get_or_insert_with(GenerationConfig::default)
    }

    /// Sets the sampling temperature.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let r = Prompt::text("hi").temperature(0.2).into_request();
    /// assert_eq!(r.generation_config.unwrap().temperature, Some(0.2));
    /// ```
    pub fn temperature(mut self, t: f32) -> Self {
        self.config().temperature = Some(t);
        self
    }

    /// Sets nucleus sampling's `top_p`.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let r = Prompt::text("hi").top_p(0.95).into_request();
    /// assert_eq!(r.generation_config.unwrap().top_p, Some(0.95));
    /// ```
    pub fn top_p(mut self, p: f32) -> Self {
        self.config().top_p = Some(p);
        self
    }

    /// Sets `top_k`.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let r = Prompt::text("hi").top_k(40.0).into_request();
    /// assert_eq!(r.generation_config.unwrap().top_k, Some(40.0));
    /// ```
    pub fn top_k(mut self, k: f32) -> Self {
        self.config().top_k = Some(k);
        self
    }

    /// Sets the longest answer, in tokens.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let r = Prompt::text("hi").max_output_tokens(100).into_request();
    /// assert_eq!(r.generation_config.unwrap().max_output_tokens, Some(100));
    /// ```
    pub fn max_output_tokens(mut self, n: i32) -> Self {
        self.config().max_output_tokens = Some(n);
        self
    }

    /// Sets the random seed.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let r = Prompt::text("hi").seed(7).into_request();
    /// assert_eq!(r.generation_config.unwrap().seed, Some(7));
    /// ```
    pub fn seed(mut self, seed: i32) -> Self {
        self.config().seed = Some(seed);
        self
    }

    /// Adds a stop sequence.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let r = Prompt::text("hi").stop_sequence("END").into_request();
    /// assert_eq!(r.generation_config.unwrap().stop_sequences, ["END"]);
    /// ```
    pub fn stop_sequence(mut self, stop: impl Into<String>) -> Self {
        self.config().stop_sequences.push(stop.into());
        self
    }

    /// Sets the answer's MIME type (`text/plain`, `application/json`, ...).
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let r = Prompt::text("hi").response_mime_type("application/json").into_request();
    /// assert_eq!(r.generation_config.unwrap().response_mime_type, "application/json");
    /// ```
    pub fn response_mime_type(mut self, mime: impl Into<String>) -> Self {
        self.config().response_mime_type = mime.into();
        self
    }

    /// Sets a JSON Schema the answer must follow (implies JSON answers:
    /// sets the MIME type to `application/json` unless one is set).
    ///
    /// ```
    /// use serde_json::json;
    /// use vertex_batch::format::Prompt;
    ///
    /// let r = Prompt::text("List three fruits")
    ///     .response_json_schema(json!({"type": "array", "items": {"type": "string"}}))
    ///     .unwrap()
    ///     .into_request();
    /// assert!(r.generation_config.unwrap().response_json_schema.is_some());
    /// ```
    pub fn response_json_schema(mut self, schema: Value) -> Result<Self> {
        let schema = serde_json::from_value(schema)
            .map_err(|e| Error::validation("response_json_schema", e.to_string()))?;
        let config = self.config();
        config.response_json_schema = Some(schema);
        if config.response_mime_type.is_empty() {
            config.response_mime_type = "application/json".to_owned();
        }
        Ok(self)
    }

    /// Replaces the whole generation config.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// use vertex_batch::proto::aiplatform::GenerationConfig;
    ///
    /// let config = GenerationConfig { candidate_count: Some(2), ..Default::default() };
    /// let r = Prompt::text("hi").generation_config(config).into_request();
    /// assert_eq!(r.generation_config.unwrap().candidate_count, Some(2));
    /// ```
    pub fn generation_config(mut self, config: GenerationConfig) -> Self {
        self.request.generation_config = Some(config);
        self
    }

    /// Adds a safety setting (a later one for the same category replaces it).
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// use vertex_batch::proto::aiplatform::{safety_setting::HarmBlockThreshold, HarmCategory};
    ///
    /// let r = Prompt::text("hi")
    ///     .safety(HarmCategory::DangerousContent, HarmBlockThreshold::BlockNone)
    ///     .safety(HarmCategory::DangerousContent, HarmBlockThreshold::Off)
    ///     .into_request();
    /// assert_eq!(r.safety_settings.len(), 1);
    /// assert_eq!(r.safety_settings[0].threshold(), HarmBlockThreshold::Off);
    /// ```
    pub fn safety(mut self, category: HarmCategory, threshold: HarmBlockThreshold) -> Self {
        let settings = &mut self.request.safety_settings;
        settings.retain(|s| s.category != category as i32);
        settings.push(SafetySetting {
            category: category as i32,
            threshold: threshold as i32,
            ..SafetySetting::default()
        });
        self
    }

    /// Adds a label (billing and reporting; the service echoes it back).
    /// Keys and values: at most 63 lowercase letters, digits, `_` or `-`,
    /// keys start with a letter. The label
    /// [`KEY_LABEL`](crate::format::KEY_LABEL) is reserved.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let r = Prompt::text("hi").label("experiment", "a1").into_request();
    /// assert_eq!(r.labels["experiment"], "a1");
    /// ```
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.labels.insert(key.into(), value.into());
        self
    }

    /// Uses a context cache (`projects/…/cachedContents/…`).
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let r = Prompt::text("hi").cached_content("projects/p/locations/l/cachedContents/c");
    /// assert!(!r.as_request().cached_content.is_empty());
    /// ```
    pub fn cached_content(mut self, name: impl Into<String>) -> Self {
        self.request.cached_content = name.into();
        self
    }

    /// The request built so far.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// assert!(Prompt::new().as_request().contents.is_empty());
    /// ```
    pub fn as_request(&self) -> &GenerateContentRequest {
        &self.request
    }

    /// The request, for changes the builder does not cover.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let mut p = Prompt::text("hi");
    /// p.request_mut().model = "gemini-2.0-flash-001".into();
    /// assert_eq!(p.into_request().model, "gemini-2.0-flash-001");
    /// ```
    pub fn request_mut(&mut self) -> &mut GenerateContentRequest {
        &mut self.request
    }

    /// The finished request.
    ///
    /// ```
    /// use vertex_batch::format::Prompt;
    /// let r = Prompt::text("hi").into_request();
    /// assert_eq!(r.contents[0].parts.len(), 1);
    /// ```
    pub fn into_request(self) -> GenerateContentRequest {
        self.request
    }
}

impl From<Prompt> for GenerateContentRequest {
    /// ```
    /// use vertex_batch::{format::Prompt, proto::aiplatform::GenerateContentRequest};
    /// let r: GenerateContentRequest = Prompt::text("hi").into();
    /// assert_eq!(r.contents.len(), 1);
    /// ```
    fn from(p: Prompt) -> Self {
        p.request
    }
}

impl From<GenerateContentRequest> for Prompt {
    /// ```
    /// use vertex_batch::{format::Prompt, proto::aiplatform::GenerateContentRequest};
    /// let p = Prompt::from(GenerateContentRequest::default()).user("hi");
    /// assert_eq!(p.as_request().contents.len(), 1);
    /// ```
    fn from(request: GenerateContentRequest) -> Self {
        Prompt { request }
    }
}

impl From<&str> for Prompt {
    /// ```
    /// use vertex_batch::format::Prompt;
    /// assert_eq!(Prompt::from("hi"), Prompt::text("hi"));
    /// ```
    fn from(text: &str) -> Self {
        Prompt::text(text)
    }
}

impl From<String> for Prompt {
    /// ```
    /// use vertex_batch::format::Prompt;
    /// assert_eq!(Prompt::from(String::from("hi")), Prompt::text("hi"));
    /// ```
    fn from(text: String) -> Self {
        Prompt::text(text)
    }
}

/// The text of a response's first candidate: its text parts joined, thought
/// parts left out. `None` when there is no candidate (a blocked prompt) or
/// no text.
///
/// ```
/// use vertex_batch::format::{parse_response, response_text};
///
/// let r = parse_response(r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"},{"text":"lo"}]}}]}"#)?;
/// assert_eq!(response_text(&r).as_deref(), Some("Hello"));
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub fn response_text(response: &GenerateContentResponse) -> Option<String> {
    let content = response.candidates.first()?.content.as_ref()?;
    let mut text: Option<String> = None;
    for p in &content.parts {
        if let (Some(part::Data::Text(t)), false) = (&p.data, p.thought) {
            text.get_or_insert_with(String::new).push_str(t);
        }
    }
    text
}

/// Decodes a `GenerateContentResponse` as batch jobs write it, leniently:
/// unknown fields are ignored, unknown enum values decode as unspecified,
/// `null` anywhere means absent, camelCase and snake_case names may mix,
/// timestamps may end in `Z` or an offset with 0–9 fractional digits.
///
/// The error is [`Error::Validation`] with field `response`.
///
/// ```
/// use vertex_batch::format::parse_response;
/// use vertex_batch::proto::aiplatform::candidate::FinishReason;
///
/// let r = parse_response(r#"{"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]},
///     "finishReason": "STOP", "avgLogprobs": -0.1}], "usageMetadata": {"promptTokenCount": 9},
///     "modelVersion": "gemini-2.0-flash-001", "createTime": "2024-11-13T14:04:28.376+00:00"}"#)?;
/// assert_eq!(r.candidates[0].finish_reason(), FinishReason::Stop);
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub fn parse_response(json: &str) -> Result<GenerateContentResponse> {
    parse_str(json, "response")
}

/// [`parse_response`] from an already parsed JSON value.
///
/// ```
/// use serde_json::json;
/// use vertex_batch::format::parse_response_value;
///
/// let r = parse_response_value(json!({"candidates": null, "responseId": "abc"}))?;
/// assert!(r.candidates.is_empty());
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub fn parse_response_value(json: Value) -> Result<GenerateContentResponse> {
    parse_value(json, "response")
}

/// Decodes a `GenerateContentRequest` (e.g. one echoed in an output line),
/// as leniently as [`parse_response`]. The error is [`Error::Validation`]
/// with field `request`.
///
/// ```
/// use vertex_batch::format::parse_request;
///
/// let r = parse_request(r#"{"contents": [{"role": "user", "parts": [{"text": "hi", "file_data": null}]}],
///     "generation_config": {"maxOutputTokens": 10}, "labels": {"k": "v"}}"#)?;
/// assert_eq!(r.generation_config.unwrap().max_output_tokens, Some(10));
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub fn parse_request(json: &str) -> Result<GenerateContentRequest> {
    parse_str(json, "request")
}

/// [`parse_request`] from an already parsed JSON value.
///
/// ```
/// use serde_json::json;
/// use vertex_batch::format::parse_request_value;
///
/// let r = parse_request_value(json!({"contents": [{"parts": [{"text": "hi"}]}]}))?;
/// assert_eq!(r.contents.len(), 1);
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub fn parse_request_value(json: Value) -> Result<GenerateContentRequest> {
    parse_value(json, "request")
}

fn parse_str<T: serde::de::DeserializeOwned>(json: &str, field: &str) -> Result<T> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| Error::validation(field, format!("not JSON: {e}")))?;
    parse_value(value, field)
}

fn parse_value<T: serde::de::DeserializeOwned>(mut json: Value, field: &str) -> Result<T> {
    if !json.is_object() {
        return Err(Error::validation(
            field,
            format!("expected a JSON object, got {}", kind(&json)),
        ));
    }
    strip_nulls(&mut json);
    serde_json::from_value(json).map_err(|e| Error::validation(field, e.to_string()))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Removes every `null` object member and array element, so that it reads
/// as absent. (A `null` inside a `google.protobuf.Struct`, e.g. a function
/// call's argument, is dropped too: the price of one rule for all fields.)
/// Iterative, so a deep value cannot overflow the stack.
fn strip_nulls(value: &mut Value) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                stack.extend(map.values_mut());
            }
            Value::Array(items) => {
                items.retain(|v| !v.is_null());
                stack.extend(items.iter_mut());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::aiplatform::candidate::FinishReason;
    use proptest::prelude::*;
    use serde_json::json;

    /// The sample output line's response, with fields newer than our protos.
    const SAMPLE: &str = r#"{"candidates": [{"content": {"role": "model", "parts": [{"text": "Banana bread: …"}]}, "finishReason": "STOP", "avgLogprobs": -0.2139, "brandNewField": {"x": 1}}], "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 120, "totalTokenCount": 129, "trafficType": "ON_DEMAND", "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9}], "thoughtsTokenCount": 0}, "modelVersion": "gemini-2.0-flash-001", "createTime": "2024-11-13T14:04:28.376429Z", "responseId": "abc123"}"#;

    #[test]
    fn prompt_serializes_as_camel_case_proto_json() {
        let r = Prompt::text("hi")
            .system("be brief")
            .max_output_tokens(5)
            .response_mime_type("text/plain")
            .into_request();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({
                "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "systemInstruction": {"parts": [{"text": "be brief"}]},
                "generationConfig": {"maxOutputTokens": 5, "responseMimeType": "text/plain"}
            })
        );
    }

    #[test]
    fn the_sample_response_decodes() {
        let r = parse_response(SAMPLE).unwrap();
        assert_eq!(r.candidates[0].finish_reason(), FinishReason::Stop);
        assert_eq!(r.usage_metadata.as_ref().unwrap().total_token_count, 129);
        assert_eq!(r.model_version, "gemini-2.0-flash-001");
        assert_eq!(response_text(&r).as_deref(), Some("Banana bread: …"));
        assert!(r.create_time.is_some());
    }

    #[test]
    fn unknown_enum_values_do_not_fail_the_row() {
        let r = parse_response(
            r#"{"candidates": [{"finishReason": "SOMETHING_NEW", "safetyRatings": [{"category": "HARM_CATEGORY_FUTURE", "probability": "NEGLIGIBLE"}]}],
                "promptFeedback": {"blockReason": "NEW_REASON"}}"#,
        )
        .unwrap();
        assert_eq!(r.candidates[0].finish_reason(), FinishReason::Unspecified);
        assert!(r.prompt_feedback.is_some());
    }

    #[test]
    fn nulls_mean_absent() {
        let r = parse_request(
            r#"{"contents": [{"role": "user", "parts": [{"text": "hi", "file_data": null, "inlineData": null}, null]}],
                "system_instruction": null, "generationConfig": {"temperature": null, "topP": 0.5}, "labels": null}"#,
        )
        .unwrap();
        assert_eq!(r.contents[0].parts.len(), 1);
        assert_eq!(
            r.contents[0].parts[0].data,
            Some(part::Data::Text("hi".into()))
        );
        let config = r.generation_config.unwrap();
        assert_eq!((config.temperature, config.top_p), (None, Some(0.5)));
    }

    #[test]
    fn snake_and_camel_case_mix() {
        let r = parse_request(
            r#"{"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                "generation_config": {"max_output_tokens": 7, "responseMimeType": "application/json"},
                "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
                "systemInstruction": {"parts": [{"text": "s"}]}}"#,
        )
        .unwrap();
        let c = r.generation_config.unwrap();
        assert_eq!(c.max_output_tokens, Some(7));
        assert_eq!(c.response_mime_type, "application/json");
        assert_eq!(r.safety_settings[0].category(), HarmCategory::Harassment);
        assert!(r.system_instruction.is_some());
    }

    #[test]
    fn timestamps_with_offsets_and_any_precision() {
        for ts in [
            "2024-11-13T14:04:28Z",
            "2024-11-13T14:04:28.3Z",
            "2024-11-13T14:04:28.376+00:00",
            "2024-11-13T14:04:28.376429+00:00",
            "2024-11-13T16:04:28.123456789+02:00",
            "2024-11-13T14:04:28-00:00",
        ] {
            let r = parse_response(&format!(r#"{{"createTime": "{ts}"}}"#))
                .unwrap_or_else(|e| panic!("{ts}: {e}"));
            let t = r.create_time.unwrap();
            assert_eq!(t.seconds, 1_731_506_668, "{ts}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        for bad in ["", "not json", "[1,2]", "\"s\"", r#"{"candidates": 5}"#] {
            let err = parse_response(bad).unwrap_err();
            assert!(
                matches!(&err, Error::Validation(v) if v.field() == "response"),
                "{bad}: {err}"
            );
        }
        assert!(matches!(parse_request("{\"contents\": 1}"),
            Err(Error::Validation(v)) if v.field() == "request"));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        const KEYS: &[&str] = &[
            "candidates",
            "content",
            "parts",
            "text",
            "file_data",
            "fileData",
            "finishReason",
            "createTime",
            "contents",
            "generationConfig",
            "labels",
            "usageMetadata",
        ];
        crate::testing::arb_json(KEYS, "[a-zA-Z_0-9 :.+-]{0,12}", 5, 4)
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            let _ = parse_response(&s);
            let _ = parse_request(&s);
        }

        #[test]
        fn arbitrary_json_never_panics(v in arb_json()) {
            let _ = parse_response(&v.to_string());
            let _ = parse_request_value(v.clone());
            let _ = parse_response_value(v);
        }
    }
}
