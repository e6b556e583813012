//! A batch's cost before it runs: an upper bound from its requests.
//!
//! Input tokens are counted with `CountTokens` (v1: `LlmUtilityService`; Gemini
//! models; the same regional endpoint as the jobs) or, where it is not
//! available (other families, or the call fails), estimated offline by
//! [`crate::tokens::offline_upper_bound`], which never counts fewer tokens
//! than a byte-level tokenizer makes (see there for its error bound).
//! Output tokens are each row's cap: `generationConfig.maxOutputTokens`
//! (Gemini), `max_tokens` (Claude), `max_tokens` / `max_completion_tokens`
//! (open models), or the model's own cap from the price table; embedding
//! models produce none. Thinking tokens count against Gemini's cap, so they
//! are inside the bound.
//!
//! The bound prices every input token at the input rate (no cache
//! discount) and every row as if it wrote its whole cap: real batches cost
//! less, often far less.

use serde_json::value::RawValue;

use crate::{
    client::Client,
    cost::{Cost, ModelPrice},
    error::{Error, Result},
    family::Family,
};

/// An upper bound of a batch's cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Requests counted.
    pub rows: u64,
    /// Input tokens: counted by the service, or bounded offline.
    pub input_tokens: u64,
    /// Output tokens at most (each row's cap).
    pub max_output_tokens: u64,
    /// Rows whose input tokens the service counted (the rest offline).
    pub counted_rows: u64,
    /// The cost at most, at batch rates.
    pub upper_bound: Cost,
}

/// Rows counted by one `CountTokens` call at most at a time.
const CONCURRENCY: usize = 8;

/// The upper bound of running `requests` (each a request as a batch line
/// carries it: Gemini's `GenerateContentRequest`, Claude's or an open
/// model's body) on `model` at `price`. With `client`, Gemini requests are
/// counted by the service; a failing call falls back to the offline bound
/// for the rest (logged).
///
/// ```no_run
/// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
/// use vertex_batch::{cost::Prices, batch::estimate};
///
/// let price = Prices::builtin().lookup("gemini-2.5-flash").unwrap().clone();
/// let requests = vec![serde_json::value::to_raw_value(&serde_json::json!({
///     "contents": [{"role": "user", "parts": [{"text": "Why is the sky blue?"}]}],
///     "generationConfig": {"maxOutputTokens": 256}
/// })).unwrap()];
/// let e = estimate(Some(&client), "gemini-2.5-flash", &price, requests).await?;
/// println!("at most {} for {} rows", e.upper_bound, e.rows);
/// # Ok(()) }
/// ```
pub async fn estimate<I>(
    client: Option<&Client>,
    model: &str,
    price: &ModelPrice,
    requests: I,
) -> Result<Estimate>
where
    I: IntoIterator<Item = Box<RawValue>>,
{
    let family = Family::of_model(model)?;
    let mut count = client.filter(|_| family == Family::Gemini);
    let mut e = Estimate::default();
    // (request, its output cap), a group at a time.
    let mut batch: Vec<(serde_json::Value, u64)> = Vec::with_capacity(CONCURRENCY);
    let mut requests = requests.into_iter().peekable();
    while requests.peek().is_some() {
        batch.clear();
        for raw in requests.by_ref().take(CONCURRENCY) {
            let v: serde_json::Value = serde_json::from_str(raw.get())
                .map_err(|err| Error::validation("request", format!("not JSON: {err}")))?;
            let cap = max_output(&v, family, price);
            batch.push((v, cap));
        }
        let mut counted = None;
        if let Some(c) = count {
            let calls = batch.iter().map(|(v, _)| c.count_tokens(model, v));
            match futures::future::try_join_all(calls).await {
                Ok(n) => {
                    counted = Some(n.iter().map(|t| t.total_tokens).collect::<Vec<u64>>());
                }
                Err(error) => {
                    tracing::warn!(%error, "CountTokens failed; bounding the rest offline");
                    count = None;
                }
            }
        }
        for (i, (v, cap)) in batch.iter().enumerate() {
            let input = match &counted {
                Some(n) => n.get(i).copied().unwrap_or(0),
                None => crate::tokens::offline_upper_bound(v),
            };
            e.rows += 1;
            e.counted_rows += u64::from(counted.is_some());
            e.input_tokens = e.input_tokens.saturating_add(input);
            e.max_output_tokens = e.max_output_tokens.saturating_add(*cap);
            // Priced a row at a time: a long-context tier applies to a
            // request, not to the batch's sum.
            e.upper_bound += price.upper_bound(input, *cap);
        }
    }
    Ok(e)
}

/// A row's output cap.
fn max_output(v: &serde_json::Value, family: Family, price: &ModelPrice) -> u64 {
    let pick = |paths: &[&[&str]]| {
        paths.iter().find_map(|p| {
            p.iter()
                .try_fold(v, |v, k| v.get(*k))
                .and_then(serde_json::Value::as_u64)
        })
    };
    let given = match family {
        Family::GeminiEmbedding | Family::TextEmbedding => return 0,
        Family::Gemini => pick(&[
            &["generationConfig", "maxOutputTokens"],
            &["generation_config", "max_output_tokens"],
        ]),
        Family::Claude => pick(&[&["max_tokens"]]),
        Family::OpenModel => pick(&[
            &["max_tokens"],
            &["max_completion_tokens"],
            &["body", "max_tokens"],
            &["body", "max_completion_tokens"],
        ]),
    };
    let cap = price.max_output_tokens();
    match given {
        Some(n) if cap > 0 => n.min(cap),
        Some(n) => n,
        None => cap,
    }
}
