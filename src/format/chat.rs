//! Typed chat requests for every chat family: [`Chat`].
//!
//! ```
//! use vertex_batch::format::Chat;
//!
//! let chat = Chat::user("Write a haiku about autumn.")
//!     .system("You are a poet.")
//!     .max_tokens(200)
//!     .temperature(0.7)
//!     .stop_sequence("\n\n\n");
//! assert_eq!(chat.max_tokens_value(), Some(200));
//! ```

use serde_json::{json, Map, Value};

use crate::family::ANTHROPIC_VERSION;
use crate::format::embed::merged;

/// The `max_tokens` a Claude line gets when its request sets none (the
/// service refuses Claude lines without one).
pub const DEFAULT_CLAUDE_MAX_TOKENS: u32 = 1024;

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// A conversation for a chat model, rendered by the batch writer in the
/// job's family:
///
/// * Claude: `{"anthropic_version": "vertex-2023-10-16", "messages",
///   "system", "max_tokens", "temperature", "stop_sequences"}` (a missing
///   `max_tokens` becomes [`DEFAULT_CLAUDE_MAX_TOKENS`]);
/// * open models: an OpenAI `/v1/chat/completions` body `{"model",
///   "messages" (the system prompt first, as a `system` message),
///   "max_tokens", "temperature", "stop"}`;
/// * Gemini: a `GenerateContentRequest` (`contents`,
///   `systemInstruction`, `generationConfig`).
///
/// Options the builder lacks go in [`Chat::extra`], merged into the
/// rendered request as given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chat {
    system: Option<String>,
    messages: Vec<(Role, String)>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    stop: Vec<String>,
    extra: Map<String, Value>,
}

impl Chat {
    /// A conversation of one user turn.
    ///
    /// ```
    /// assert_eq!(vertex_batch::format::Chat::user("hi").turns().len(), 1);
    /// ```
    pub fn user(text: impl Into<String>) -> Self {
        Chat::new().then_user(text)
    }

    /// An empty conversation.
    ///
    /// ```
    /// assert!(vertex_batch::format::Chat::new().turns().is_empty());
    /// ```
    pub fn new() -> Self {
        Chat::default()
    }

    /// Appends a user turn.
    ///
    /// ```
    /// use vertex_batch::format::{Chat, Role};
    /// let c = Chat::user("Hello").then_assistant("Hi!").then_user("A joke?");
    /// assert_eq!(c.turns()[1].0, Role::Assistant);
    /// ```
    pub fn then_user(mut self, text: impl Into<String>) -> Self {
        self.messages.push((Role::User, text.into()));
        self
    }

    /// Appends a model turn (few-shot and multi-turn prompts).
    ///
    /// ```
    /// use vertex_batch::format::Chat;
    /// assert_eq!(Chat::new().then_assistant("ok").turns().len(), 1);
    /// ```
    pub fn then_assistant(mut self, text: impl Into<String>) -> Self {
        self.messages.push((Role::Assistant, text.into()));
        self
    }

    /// Sets the system prompt.
    ///
    /// ```
    /// use vertex_batch::format::Chat;
    /// assert_eq!(Chat::user("hi").system("Be brief.").system_text(), Some("Be brief."));
    /// ```
    pub fn system(mut self, text: impl Into<String>) -> Self {
        self.system = Some(text.into());
        self
    }

    /// The most tokens to generate.
    ///
    /// ```
    /// use vertex_batch::format::Chat;
    /// assert_eq!(Chat::user("hi").max_tokens(50).max_tokens_value(), Some(50));
    /// ```
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// The sampling temperature.
    ///
    /// ```
    /// use vertex_batch::format::Chat;
    /// assert_eq!(Chat::user("hi").temperature(0.5), Chat::user("hi").temperature(0.5));
    /// ```
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }

    /// Adds a stop sequence.
    ///
    /// ```
    /// use vertex_batch::format::Chat;
    /// assert_ne!(Chat::user("hi").stop_sequence("END"), Chat::user("hi"));
    /// ```
    pub fn stop_sequence(mut self, stop: impl Into<String>) -> Self {
        self.stop.push(stop.into());
        self
    }

    /// Merges `fields` (a JSON object) into the rendered request, for
    /// options the builder lacks (`top_p`, `tools`, …); a member given here
    /// wins over the builder's. Not an object: ignored.
    ///
    /// ```
    /// use vertex_batch::format::Chat;
    /// assert_ne!(Chat::user("hi").extra(serde_json::json!({"top_p": 0.9})), Chat::user("hi"));
    /// ```
    pub fn extra(mut self, fields: Value) -> Self {
        if let Value::Object(m) = fields {
            self.extra.extend(m);
        }
        self
    }

    /// The turns so far.
    ///
    /// ```
    /// assert_eq!(vertex_batch::format::Chat::user("hi").turns()[0].1, "hi");
    /// ```
    pub fn turns(&self) -> &[(Role, String)] {
        &self.messages
    }

    /// The system prompt, if set.
    ///
    /// ```
    /// assert_eq!(vertex_batch::format::Chat::user("hi").system_text(), None);
    /// ```
    pub fn system_text(&self) -> Option<&str> {
        self.system.as_deref()
    }

    /// The `max_tokens`, if set.
    ///
    /// ```
    /// assert_eq!(vertex_batch::format::Chat::user("hi").max_tokens_value(), None);
    /// ```
    pub fn max_tokens_value(&self) -> Option<u32> {
        self.max_tokens
    }

    /// The request of a Claude line.
    pub(crate) fn claude(&self) -> Value {
        let mut out = Map::new();
        out.insert("anthropic_version".into(), ANTHROPIC_VERSION.into());
        let messages: Vec<Value> = self
            .messages
            .iter()
            .map(|(role, text)| {
                let role = match role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                json!({"role": role, "content": text})
            })
            .collect();
        out.insert("messages".into(), messages.into());
        out.insert(
            "max_tokens".into(),
            self.max_tokens.unwrap_or(DEFAULT_CLAUDE_MAX_TOKENS).into(),
        );
        if let Some(s) = &self.system {
            out.insert("system".into(), s.clone().into());
        }
        if let Some(t) = self.temperature {
            out.insert("temperature".into(), f64::from(t).into());
        }
        if !self.stop.is_empty() {
            out.insert("stop_sequences".into(), self.stop.clone().into());
        }
        merged(out, &self.extra)
    }

    /// The body of an OpenAI `/v1/chat/completions` request.
    pub(crate) fn openai(&self, model: &str) -> Value {
        let mut out = Map::new();
        out.insert("model".into(), model.into());
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        if let Some(s) = &self.system {
            messages.push(json!({"role": "system", "content": s}));
        }
        for (role, text) in &self.messages {
            let role = match role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            messages.push(json!({"role": role, "content": text}));
        }
        out.insert("messages".into(), messages.into());
        if let Some(n) = self.max_tokens {
            out.insert("max_tokens".into(), n.into());
        }
        if let Some(t) = self.temperature {
            out.insert("temperature".into(), f64::from(t).into());
        }
        if !self.stop.is_empty() {
            out.insert("stop".into(), self.stop.clone().into());
        }
        merged(out, &self.extra)
    }

    /// The Gemini request (proto3 JSON).
    pub(crate) fn gemini(&self) -> Value {
        let mut out = Map::new();
        let contents: Vec<Value> = self
            .messages
            .iter()
            .map(|(role, text)| {
                let role = match role {
                    Role::User => "user",
                    Role::Assistant => "model",
                };
                json!({"role": role, "parts": [{"text": text}]})
            })
            .collect();
        out.insert("contents".into(), contents.into());
        if let Some(s) = &self.system {
            out.insert("systemInstruction".into(), json!({"parts": [{"text": s}]}));
        }
        let mut config = Map::new();
        if let Some(n) = self.max_tokens {
            config.insert("maxOutputTokens".into(), n.into());
        }
        if let Some(t) = self.temperature {
            config.insert("temperature".into(), f64::from(t).into());
        }
        if !self.stop.is_empty() {
            config.insert("stopSequences".into(), self.stop.clone().into());
        }
        if !config.is_empty() {
            out.insert("generationConfig".into(), Value::Object(config));
        }
        merged(out, &self.extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_gets_its_shape() {
        let c = Chat::user("Q")
            .system("S")
            .max_tokens(9)
            .temperature(0.5)
            .stop_sequence("X");
        assert_eq!(
            c.claude(),
            json!({"anthropic_version": "vertex-2023-10-16", "messages": [{"role": "user", "content": "Q"}],
                   "max_tokens": 9, "system": "S", "temperature": 0.5, "stop_sequences": ["X"]})
        );
        assert_eq!(
            c.openai("m"),
            json!({"model": "m", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
                   "max_tokens": 9, "temperature": 0.5, "stop": ["X"]})
        );
        assert_eq!(
            c.gemini(),
            json!({"contents": [{"role": "user", "parts": [{"text": "Q"}]}], "systemInstruction": {"parts": [{"text": "S"}]},
                   "generationConfig": {"maxOutputTokens": 9, "temperature": 0.5, "stopSequences": ["X"]}})
        );
        assert_eq!(Chat::user("Q").claude()["max_tokens"], 1024);
        assert!(Chat::user("Q").openai("m").get("max_tokens").is_none());
    }
}
