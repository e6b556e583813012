//! Which line format a model's batch jobs speak: its [`Family`].
//!
//! One `BatchPredictionJob` runs every model Vertex AI serves, but each
//! family of models reads and writes its own JSONL lines:
//!
//! | family | models | key field | request under |
//! |---|---|---|---|
//! | [`Family::Gemini`] | `publishers/google/models/gemini-*`, tuned models, anything else | `key` | `request` (a `GenerateContentRequest`) |
//! | [`Family::GeminiEmbedding`] | `publishers/google/models/gemini-embedding-*` | `key` | `request` (`content`, `embed_content_config`) |
//! | [`Family::TextEmbedding`] | `publishers/google/models/text-embedding-*`, `text-multilingual-embedding-*` | `key` | the line itself (`content`, `task_type`, `title`) |
//! | [`Family::Claude`] | `publishers/anthropic/models/*` | `custom_id` | `request` (an Anthropic Messages request) |
//! | [`Family::OpenModel`] | `publishers/{meta,openai,qwen,deepseek-ai,…}/models/*`, ids ending in `-maas` | `custom_id` | `body` (OpenAI batch format) |
//!
//! The family follows from the model name ([`Family::of_model`]); bare ids
//! are completed by their prefix ([`qualify_model`]). A bare id whose
//! publisher cannot be told from its prefix (an unknown `…-maas` id) needs
//! the full `publishers/P/models/M` name, and the error says so.
//!
//! ```
//! use vertex_batch::family::{qualify_model, Family};
//!
//! assert_eq!(qualify_model("claude-sonnet-4-5@20250929")?, "publishers/anthropic/models/claude-sonnet-4-5@20250929");
//! assert_eq!(Family::of_model("text-embedding-005")?, Family::TextEmbedding);
//! assert_eq!(Family::of_model("llama-3.3-70b-instruct-maas")?, Family::OpenModel);
//! assert_eq!(Family::of_model("gemini-2.5-flash")?, Family::Gemini);
//! assert!(Family::of_model("mystery-model-maas").is_err());
//! # Ok::<_, vertex_batch::Error>(())
//! ```

use std::fmt;

use crate::validation::ValidationError;

/// The line format of a model's batch jobs. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Gemini `generateContent`: `{"key", "request": GenerateContentRequest}`.
    Gemini,
    /// Gemini embeddings (`gemini-embedding-*`): `{"key", "request":
    /// {"content", "embed_content_config"}}`. Cloud Storage only.
    GeminiEmbedding,
    /// The older text-embedding models (`text-embedding-*`,
    /// `text-multilingual-embedding-*`): `{"key", "content", "task_type"?,
    /// "title"?}`; the job's `instanceConfig.keyField` keeps the key out of
    /// what the model sees.
    TextEmbedding,
    /// Anthropic Claude: `{"custom_id", "request": {"messages",
    /// "anthropic_version", "max_tokens", …}}`. Needs a region.
    Claude,
    /// Open models served as a service (Llama, gpt-oss, Qwen, DeepSeek…),
    /// in OpenAI's batch format: `{"custom_id", "method", "url", "body"}`.
    OpenModel,
}

/// Publishers whose models speak OpenAI's batch format.
const OPEN_PUBLISHERS: &[&str] = &[
    "meta",
    "openai",
    "qwen",
    "deepseek-ai",
    "moonshotai",
    "minimaxai",
    "zai-org",
    "intfloat",
];

/// Bare-id prefixes and the publisher they belong to.
const PREFIXES: &[(&str, &str)] = &[
    ("gemini-", "google"),
    ("text-embedding-", "google"),
    ("text-multilingual-embedding-", "google"),
    ("claude-", "anthropic"),
    ("llama-", "meta"),
    ("llama", "meta"),
    ("gpt-oss-", "openai"),
    ("qwen", "qwen"),
    ("deepseek-", "deepseek-ai"),
    ("kimi-", "moonshotai"),
    ("minimax-", "minimaxai"),
    ("glm-", "zai-org"),
];

/// The `anthropic_version` every Claude line carries on Vertex AI.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The most rows one Gemini-embeddings job takes.
pub const GEMINI_EMBEDDING_MAX_ROWS: u64 = 1_000_000;

impl Family {
    /// The family of `model` (a bare id, `models/ID`, `publishers/P/models/M`
    /// or a tuned model's resource name). Errors as [`qualify_model`].
    ///
    /// ```
    /// use vertex_batch::family::Family;
    /// assert_eq!(Family::of_model("publishers/google/models/gemini-embedding-001")?, Family::GeminiEmbedding);
    /// assert_eq!(Family::of_model("publishers/anthropic/models/claude-opus-4-1")?, Family::Claude);
    /// assert_eq!(Family::of_model("publishers/openai/models/gpt-oss-120b-maas")?, Family::OpenModel);
    /// assert_eq!(Family::of_model("projects/p/locations/us-central1/models/42")?, Family::Gemini);
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn of_model(model: &str) -> Result<Family, ValidationError> {
        Ok(Family::of_qualified(&qualify_model(model)?))
    }

    /// The family of a job's model name (`publishers/…/models/…`, with or
    /// without a `projects/…/locations/…/` prefix); Gemini when it names
    /// none.
    #[cfg(feature = "emulator")]
    pub(crate) fn of_job_model(model: &str) -> Family {
        let tail = model.find("publishers/").map_or(model, |i| &model[i..]);
        Family::of_model(tail).unwrap_or(Family::Gemini)
    }

    /// The family of a name [`qualify_model`] already completed.
    pub(crate) fn of_qualified(model: &str) -> Family {
        let parts: Vec<&str> = model.split('/').collect();
        let ["publishers", publisher, "models", id] = parts.as_slice() else {
            return Family::Gemini;
        };
        let id = id.split('@').next().unwrap_or(id);
        match *publisher {
            "google" if id.starts_with("gemini-embedding") => Family::GeminiEmbedding,
            "google"
                if id.starts_with("text-embedding")
                    || id.starts_with("text-multilingual-embedding") =>
            {
                Family::TextEmbedding
            }
            "anthropic" => Family::Claude,
            p if OPEN_PUBLISHERS.contains(&p) || id.ends_with("-maas") => Family::OpenModel,
            _ => Family::Gemini,
        }
    }

    /// The field of a line that holds its key: `key` or `custom_id`.
    ///
    /// ```
    /// use vertex_batch::family::Family;
    /// assert_eq!(Family::Claude.key_field(), "custom_id");
    /// assert_eq!(Family::TextEmbedding.key_field(), "key");
    /// ```
    pub fn key_field(self) -> &'static str {
        match self {
            Family::Claude | Family::OpenModel => "custom_id",
            Family::Gemini | Family::GeminiEmbedding | Family::TextEmbedding => "key",
        }
    }

    /// Whether the family's results are vectors rather than text.
    ///
    /// ```
    /// use vertex_batch::family::Family;
    /// assert!(Family::GeminiEmbedding.embeds());
    /// assert!(!Family::Claude.embeds());
    /// ```
    pub fn embeds(self) -> bool {
        matches!(self, Family::GeminiEmbedding | Family::TextEmbedding)
    }

    /// Whether a job of this family may read its input from BigQuery
    /// (Gemini embeddings take Cloud Storage only).
    ///
    /// ```
    /// use vertex_batch::family::Family;
    /// assert!(!Family::GeminiEmbedding.takes_bigquery());
    /// assert!(Family::Claude.takes_bigquery());
    /// ```
    pub fn takes_bigquery(self) -> bool {
        !matches!(self, Family::GeminiEmbedding)
    }

    /// Whether a job of this family may run on the `global` endpoint
    /// (Claude batch jobs need a region).
    ///
    /// ```
    /// use vertex_batch::family::Family;
    /// assert!(!Family::Claude.runs_global());
    /// ```
    pub fn runs_global(self) -> bool {
        !matches!(self, Family::Claude)
    }

    /// The most rows one job of this family takes: 1,000,000 for Gemini
    /// embeddings, 200,000 for the others.
    ///
    /// ```
    /// use vertex_batch::family::Family;
    /// assert_eq!(Family::GeminiEmbedding.max_rows_per_job(), 1_000_000);
    /// assert_eq!(Family::Gemini.max_rows_per_job(), 200_000);
    /// ```
    pub fn max_rows_per_job(self) -> u64 {
        match self {
            Family::GeminiEmbedding => GEMINI_EMBEDDING_MAX_ROWS,
            _ => 200_000,
        }
    }

    /// A short lower-case name (`gemini`, `gemini-embedding`,
    /// `text-embedding`, `claude`, `open-model`).
    ///
    /// ```
    /// assert_eq!(vertex_batch::family::Family::OpenModel.as_str(), "open-model");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Gemini => "gemini",
            Family::GeminiEmbedding => "gemini-embedding",
            Family::TextEmbedding => "text-embedding",
            Family::Claude => "claude",
            Family::OpenModel => "open-model",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Completes a bare model id by its prefix: `gemini-…`, `text-embedding-…`
/// → `publishers/google/models/…`; `claude-…` → `publishers/anthropic/…`;
/// `llama…` → `publishers/meta/…`; `gpt-oss-…` → `publishers/openai/…`;
/// `qwen…`, `deepseek-…` and a few more open models likewise. Other bare
/// ids are Google's (as the service reads them), except ids ending in
/// `-maas`, which belong to a publisher the id does not name: those need
/// the full name. Full names pass through unchanged (checked by
/// [`crate::names::normalize_model`]).
///
/// ```
/// use vertex_batch::family::qualify_model;
/// assert_eq!(qualify_model("llama-3.3-70b-instruct-maas")?, "publishers/meta/models/llama-3.3-70b-instruct-maas");
/// assert_eq!(qualify_model("models/gemini-2.5-flash")?, "publishers/google/models/gemini-2.5-flash");
/// let err = qualify_model("acme-7b-maas").unwrap_err();
/// assert!(err.to_string().contains("publishers/PUBLISHER/models/acme-7b-maas"));
/// # Ok::<_, vertex_batch::error::ValidationError>(())
/// ```
pub fn qualify_model(model: &str) -> Result<String, ValidationError> {
    let trimmed = model.trim();
    let bare = trimmed.strip_prefix("models/").unwrap_or(trimmed);
    if bare.is_empty() || bare.contains('/') {
        return crate::names::normalize_model(trimmed);
    }
    let lower = bare.to_ascii_lowercase();
    let publisher = PREFIXES
        .iter()
        .find(|(prefix, _)| lower.starts_with(prefix))
        .map(|(_, p)| *p);
    match publisher {
        Some(p) => crate::names::normalize_model(&format!("publishers/{p}/models/{bare}")),
        None if lower
            .split('@')
            .next()
            .is_some_and(|id| id.ends_with("-maas")) =>
        {
            Err(ValidationError::new(
                "model",
                format!(
                    "{bare:?} is an open model whose publisher its id does not name: \
                     give the full name publishers/PUBLISHER/models/{bare}"
                ),
            ))
        }
        None => crate::names::normalize_model(trimmed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_from_its_names() {
        let cases = [
            ("gemini-2.0-flash-001", Family::Gemini),
            ("gemini-embedding-001", Family::GeminiEmbedding),
            (
                "publishers/google/models/gemini-embedding-2",
                Family::GeminiEmbedding,
            ),
            ("text-embedding-005", Family::TextEmbedding),
            ("text-multilingual-embedding-002", Family::TextEmbedding),
            ("claude-sonnet-4-5@20250929", Family::Claude),
            ("publishers/anthropic/models/claude-3-haiku", Family::Claude),
            ("llama-4-maverick-17b-128e-instruct-maas", Family::OpenModel),
            ("gpt-oss-120b-maas", Family::OpenModel),
            ("qwen3-235b-a22b-instruct-2507-maas", Family::OpenModel),
            ("deepseek-v3.1-maas", Family::OpenModel),
            ("publishers/acme/models/x-7b-maas", Family::OpenModel),
            ("publishers/acme/models/x-7b", Family::Gemini),
            ("projects/p/locations/us-central1/models/42", Family::Gemini),
            ("some-google-model", Family::Gemini),
        ];
        for (model, family) in cases {
            assert_eq!(Family::of_model(model).unwrap(), family, "{model}");
        }
    }

    #[test]
    fn ambiguous_and_bad_names_are_refused() {
        for bad in [
            "",
            "acme-maas",
            "x-7b-maas@1",
            "publishers//models/x",
            "a/b",
        ] {
            assert!(Family::of_model(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Any name: no panic, and a qualified name keeps its family.
        #[test]
        fn any_name_no_panic(name in "\\PC{0,40}") {
            if let Ok(q) = qualify_model(&name) {
                proptest::prop_assert_eq!(Family::of_model(&q).unwrap(), Family::of_qualified(&q));
            }
        }
    }
}
