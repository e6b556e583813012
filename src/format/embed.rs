//! Typed embedding requests, for both embedding families and open
//! embedding models: [`Embed`].
//!
//! ```
//! use vertex_batch::format::Embed;
//!
//! let e = Embed::text("What is the capital of France?")
//!     .task_type("RETRIEVAL_QUERY")
//!     .dimensions(768);
//! assert_eq!(e.as_text(), "What is the capital of France?");
//! ```

use serde_json::{json, Map, Value};

/// One text to embed, with its options. The batch writer renders it in
/// the job's family:
///
/// * Gemini embeddings: `{"content": {"parts": [{"text": …}]},
///   "embed_content_config": {"output_dimensionality", "task_type", "title"}}`;
/// * text embeddings: `{"content": …, "task_type", "title"}` (the dimension
///   of the older models is a job parameter, `outputDimensionality`; see
///   [`crate::JobSpec::parameter`]);
/// * open embedding models: an OpenAI `/v1/embeddings` body `{"input",
///   "dimensions"}`.
///
/// Options the builder lacks go in [`Embed::extra`], merged into the
/// rendered request as given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embed {
    text: String,
    task_type: Option<String>,
    title: Option<String>,
    dimensions: Option<u32>,
    extra: Map<String, Value>,
}

impl Embed {
    /// A request to embed `text`.
    ///
    /// ```
    /// assert_eq!(vertex_batch::format::Embed::text("hi").as_text(), "hi");
    /// ```
    pub fn text(text: impl Into<String>) -> Self {
        Embed {
            text: text.into(),
            ..Embed::default()
        }
    }

    /// The task the embedding serves (`RETRIEVAL_DOCUMENT`,
    /// `RETRIEVAL_QUERY`, `SEMANTIC_SIMILARITY`, `CLASSIFICATION`,
    /// `CLUSTERING`, `QUESTION_ANSWERING`, `FACT_VERIFICATION`,
    /// `CODE_RETRIEVAL_QUERY`).
    ///
    /// ```
    /// use vertex_batch::format::Embed;
    /// let e = Embed::text("doc").task_type("RETRIEVAL_DOCUMENT");
    /// assert_eq!(e.task_type_str(), Some("RETRIEVAL_DOCUMENT"));
    /// ```
    pub fn task_type(mut self, task: impl Into<String>) -> Self {
        self.task_type = Some(task.into());
        self
    }

    /// The document's title (for `RETRIEVAL_DOCUMENT`).
    ///
    /// ```
    /// use vertex_batch::format::Embed;
    /// assert!(Embed::text("doc").title("Paris").as_text() == "doc");
    /// ```
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// The vector's length (`output_dimensionality`; `dimensions` for open
    /// models).
    ///
    /// ```
    /// use vertex_batch::format::Embed;
    /// assert_eq!(Embed::text("doc").dimensions(256).dimensions_value(), Some(256));
    /// ```
    pub fn dimensions(mut self, n: u32) -> Self {
        self.dimensions = Some(n);
        self
    }

    /// Merges `fields` (a JSON object) into the rendered request, for
    /// options the builder lacks; a member given here wins over the
    /// builder's. Not an object: ignored.
    ///
    /// ```
    /// use vertex_batch::format::Embed;
    /// let e = Embed::text("doc").extra(serde_json::json!({"autoTruncate": false}));
    /// assert_eq!(e, e.clone());
    /// ```
    pub fn extra(mut self, fields: Value) -> Self {
        if let Value::Object(m) = fields {
            self.extra.extend(m);
        }
        self
    }

    /// The text to embed.
    ///
    /// ```
    /// assert_eq!(vertex_batch::format::Embed::text("x").as_text(), "x");
    /// ```
    pub fn as_text(&self) -> &str {
        &self.text
    }

    /// The task type, if set.
    ///
    /// ```
    /// assert_eq!(vertex_batch::format::Embed::text("x").task_type_str(), None);
    /// ```
    pub fn task_type_str(&self) -> Option<&str> {
        self.task_type.as_deref()
    }

    /// The dimension, if set.
    ///
    /// ```
    /// assert_eq!(vertex_batch::format::Embed::text("x").dimensions_value(), None);
    /// ```
    pub fn dimensions_value(&self) -> Option<u32> {
        self.dimensions
    }

    /// The request of a Gemini-embeddings line.
    pub(crate) fn gemini(&self) -> Value {
        let mut config = Map::new();
        if let Some(n) = self.dimensions {
            config.insert("output_dimensionality".into(), n.into());
        }
        if let Some(t) = &self.task_type {
            config.insert("task_type".into(), t.clone().into());
        }
        if let Some(t) = &self.title {
            config.insert("title".into(), t.clone().into());
        }
        let mut out = Map::new();
        out.insert("content".into(), json!({"parts": [{"text": self.text}]}));
        if !config.is_empty() {
            out.insert("embed_content_config".into(), Value::Object(config));
        }
        merged(out, &self.extra)
    }

    /// The instance of a text-embedding line (without its key).
    pub(crate) fn instance(&self) -> Value {
        let mut out = Map::new();
        out.insert("content".into(), self.text.clone().into());
        if let Some(t) = &self.task_type {
            out.insert("task_type".into(), t.clone().into());
        }
        if let Some(t) = &self.title {
            out.insert("title".into(), t.clone().into());
        }
        merged(out, &self.extra)
    }

    /// The body of an OpenAI `/v1/embeddings` request.
    pub(crate) fn openai(&self, model: &str) -> Value {
        let mut out = Map::new();
        out.insert("model".into(), model.into());
        out.insert("input".into(), self.text.clone().into());
        if let Some(n) = self.dimensions {
            out.insert("dimensions".into(), n.into());
        }
        merged(out, &self.extra)
    }
}

impl From<&str> for Embed {
    fn from(text: &str) -> Self {
        Embed::text(text)
    }
}

/// `base` with `extra`'s members put over it.
pub(crate) fn merged(mut base: Map<String, Value>, extra: &Map<String, Value>) -> Value {
    for (k, v) in extra {
        base.insert(k.clone(), v.clone());
    }
    Value::Object(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_gets_its_shape() {
        let e = Embed::text("doc")
            .task_type("RETRIEVAL_DOCUMENT")
            .title("T")
            .dimensions(8);
        assert_eq!(
            e.gemini(),
            json!({"content": {"parts": [{"text": "doc"}]},
                   "embed_content_config": {"output_dimensionality": 8, "task_type": "RETRIEVAL_DOCUMENT", "title": "T"}})
        );
        assert_eq!(
            e.instance(),
            json!({"content": "doc", "task_type": "RETRIEVAL_DOCUMENT", "title": "T"})
        );
        assert_eq!(
            e.openai("m"),
            json!({"model": "m", "input": "doc", "dimensions": 8})
        );
        assert_eq!(
            Embed::text("x").gemini(),
            json!({"content": {"parts": [{"text": "x"}]}})
        );
        let extra = Embed::text("x").extra(json!({"autoTruncate": false, "content": "y"}));
        assert_eq!(
            extra.instance(),
            json!({"content": "y", "autoTruncate": false})
        );
    }
}
