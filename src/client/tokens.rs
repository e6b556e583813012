//! Counting a request's input tokens before anything runs: `CountTokens`
//! on the client's regional endpoint (in v1 an RPC of `LlmUtilityService`),
//! made like every other call (routing header `endpoint=…`, the retry
//! policy, the credentials). For an estimate without the network, see
//! [`crate::tokens::offline_upper_bound`].

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::{call::Routing, handle::Client};
use crate::{
    error::{Error, Result},
    family::qualify_model,
    format::gemini::parse_request_value,
    proto::aiplatform::{self as pb, GenerateContentRequest},
};

/// What `CountTokens` reports for a request: its input tokens and billable
/// characters, as the model would count them.
///
/// Counts add up (`+`, saturating, and `Sum`), which is how
/// [`Client::count_tokens_many`] totals many requests.
///
/// ```
/// use vertex_batch::client::TokenCount;
/// let a = TokenCount { total_tokens: 7, total_billable_characters: 30 };
/// let b = TokenCount { total_tokens: 2, total_billable_characters: 5 };
/// let sum: TokenCount = [a, b].into_iter().sum();
/// assert_eq!(sum, TokenCount { total_tokens: 9, total_billable_characters: 35 });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TokenCount {
    /// The input tokens of the request (`total_tokens`).
    pub total_tokens: u64,
    /// The billable characters of the request (`total_billable_characters`;
    /// 0 when the model bills by token only).
    pub total_billable_characters: u64,
}

/// The sum of two counts (saturating: it never overflows).
///
/// ```
/// use vertex_batch::client::TokenCount;
/// let a = TokenCount { total_tokens: 7, total_billable_characters: 30 };
/// assert_eq!((a + a).total_tokens, 14);
/// ```
impl std::ops::Add for TokenCount {
    type Output = TokenCount;

    fn add(self, other: TokenCount) -> TokenCount {
        TokenCount {
            total_tokens: self.total_tokens.saturating_add(other.total_tokens),
            total_billable_characters: self
                .total_billable_characters
                .saturating_add(other.total_billable_characters),
        }
    }
}

impl std::iter::Sum for TokenCount {
    fn sum<I: Iterator<Item = TokenCount>>(iter: I) -> Self {
        iter.fold(TokenCount::default(), |a, b| a + b)
    }
}

impl From<pb::CountTokensResponse> for TokenCount {
    fn from(r: pb::CountTokensResponse) -> Self {
        // A negative count is no count.
        TokenCount {
            total_tokens: u64::try_from(r.total_tokens).unwrap_or(0),
            total_billable_characters: u64::try_from(r.total_billable_characters).unwrap_or(0),
        }
    }
}

/// # Counting tokens
impl Client {
    /// Counts the input tokens of `request`, a `GenerateContentRequest` in
    /// proto3 JSON as batch lines carry it under `request` (camelCase or
    /// snake_case field names), for `model` (a bare id such as
    /// `gemini-2.5-flash`, or `publishers/P/models/M`).
    ///
    /// The call goes to `CountTokens` on this client's endpoint with
    /// `endpoint` and `model` both
    /// `projects/{project}/locations/{location}/publishers/{publisher}/models/{model}`
    /// and the request's `contents`, `systemInstruction`, `tools` and
    /// `generationConfig` (its other fields, such as `labels` or
    /// `safetySettings`, do not count). It is idempotent, so the client's
    /// retry policy applies.
    ///
    /// A request that is not a `GenerateContentRequest`, or has no
    /// `contents`, is an [`Error::Validation`] (field `request`) before any
    /// network call; so is a model that is not a publisher model (a tuned
    /// model's `projects/…/models/ID`).
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// use serde_json::json;
    /// let request = json!({"contents": [{"role": "user", "parts": [{"text": "Why is the sky blue?"}]}]});
    /// let count = client.count_tokens("gemini-2.5-flash", &request).await?;
    /// println!("{} input tokens", count.total_tokens);
    /// # Ok(()) }
    /// ```
    pub async fn count_tokens(&self, model: &str, request: &Value) -> Result<TokenCount> {
        let request = parse_request_value(request.clone())?;
        self.count_request_tokens(model, &request).await
    }

    /// [`Client::count_tokens`] of a typed request, such as a
    /// [`Prompt`](crate::format::Prompt)'s ([`Prompt::as_request`](crate::format::Prompt::as_request)).
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// use vertex_batch::format::Prompt;
    /// let prompt = Prompt::text("Name three rivers.").system("Answer in one line.");
    /// let count = client.count_request_tokens("gemini-2.5-flash", prompt.as_request()).await?;
    /// # let _ = count; Ok(()) }
    /// ```
    pub async fn count_request_tokens(
        &self,
        model: &str,
        request: &GenerateContentRequest,
    ) -> Result<TokenCount> {
        let endpoint = self.count_endpoint(model)?;
        if request.contents.is_empty() {
            return Err(Error::validation(
                "request",
                "`contents` is missing or empty: there is nothing to count",
            ));
        }
        let count = pb::CountTokensRequest {
            endpoint: endpoint.clone(),
            model: endpoint.clone(),
            instances: Vec::new(),
            contents: request.contents.clone(),
            system_instruction: request.system_instruction.clone(),
            tools: request.tools.clone(),
            generation_config: request.generation_config.clone(),
        };
        let response = self
            .call(
                "CountTokens",
                Routing::endpoint(&endpoint),
                true,
                count,
                |s, r| {
                    let mut stub = s.llm.clone();
                    async move { stub.count_tokens(r).await }
                },
            )
            .await?;
        Ok(TokenCount::from(response))
    }

    /// The summed [`Client::count_tokens`] of many requests (for instance
    /// every line of a batch before it is submitted), at most `concurrency`
    /// calls in flight at once over the client's one connection.
    ///
    /// Every request is checked as [`Client::count_tokens`] checks it; the
    /// first error (a bad request, or a call that failed after its retries)
    /// ends the count and is returned, and calls still in flight are
    /// dropped. A `concurrency` of 0 is an [`Error::Validation`]. No
    /// requests count as zero.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// use serde_json::json;
    /// let requests = (0..100).map(|i| json!({"contents": [{"parts": [{"text": format!("Question {i}")}]}]}));
    /// let total = client.count_tokens_many("gemini-2.5-flash", requests, 8).await?;
    /// println!("{} input tokens in all", total.total_tokens);
    /// # Ok(()) }
    /// ```
    pub async fn count_tokens_many(
        &self,
        model: &str,
        requests: impl IntoIterator<Item = Value>,
        concurrency: usize,
    ) -> Result<TokenCount> {
        if concurrency == 0 {
            return Err(Error::validation(
                "concurrency",
                "must be at least 1 (calls in flight at once)",
            ));
        }
        // The model is checked once, before any call.
        self.count_endpoint(model)?;
        futures::stream::iter(requests)
            .map(|request| async move {
                let request = parse_request_value(request)?;
                self.count_request_tokens(model, &request).await
            })
            .buffer_unordered(concurrency)
            .try_fold(TokenCount::default(), |sum, n| async move { Ok(sum + n) })
            .await
    }

    /// The `endpoint` (and `model`) CountTokens takes for `model`:
    /// `projects/P/locations/L/publishers/X/models/M` in this client's
    /// location.
    fn count_endpoint(&self, model: &str) -> Result<String> {
        let qualified = qualify_model(model)?;
        if !qualified.starts_with("publishers/") {
            return Err(Error::validation(
                "model",
                format!(
                    "{qualified:?} is not a publisher model: CountTokens counts for a model \
                     such as \"gemini-2.5-flash\" or publishers/PUBLISHER/models/MODEL"
                ),
            ));
        }
        Ok(format!("{}/{qualified}", self.parent_path()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        Client::builder()
            .ignore_env()
            .project("p")
            .location("europe-west4")
            .emulator_host("127.0.0.1:9")
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn endpoints_are_qualified_in_the_clients_location() {
        let c = client();
        assert_eq!(
            c.count_endpoint("gemini-2.5-flash").unwrap(),
            "projects/p/locations/europe-west4/publishers/google/models/gemini-2.5-flash"
        );
        assert_eq!(
            c.count_endpoint("claude-sonnet-4-5@20250929").unwrap(),
            "projects/p/locations/europe-west4/publishers/anthropic/models/claude-sonnet-4-5@20250929"
        );
        for bad in ["", "projects/p/locations/europe-west4/models/42", "a/b"] {
            let err = c.count_endpoint(bad).unwrap_err();
            assert!(
                matches!(&err, Error::Validation(v) if v.field() == "model"),
                "{bad}: {err}"
            );
        }
    }

    /// Bad input is refused before the network (the endpoint is closed:
    /// reaching it would be a transport error, not a validation error).
    #[tokio::test]
    async fn bad_requests_fail_validation_before_any_call() {
        let c = client();
        for bad in [
            serde_json::json!("text"),
            serde_json::json!({"contents": 5}),
            serde_json::json!({"contents": []}),
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
        ] {
            let err = c.count_tokens("gemini-2.5-flash", &bad).await.unwrap_err();
            assert!(
                matches!(&err, Error::Validation(v) if v.field() == "request"),
                "{bad}: {err}"
            );
        }
        let ok = serde_json::json!({"contents": [{"parts": [{"text": "hi"}]}]});
        let err = c
            .count_tokens_many("gemini-2.5-flash", [ok.clone()], 0)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Validation(v) if v.field() == "concurrency"),
            "{err}"
        );
        let err = c.count_tokens_many("a/b", [ok], 4).await.unwrap_err();
        assert!(
            matches!(&err, Error::Validation(v) if v.field() == "model"),
            "{err}"
        );
        let none = c
            .count_tokens_many("gemini-2.5-flash", Vec::new(), 4)
            .await
            .unwrap();
        assert_eq!(none, TokenCount::default());
    }
}
