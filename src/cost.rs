//! What a batch costs: list prices at batch rates, and the cost of a row
//! from its token counts.
//!
//! The crate carries a dated price table ([`Prices::builtin`], from
//! `src/cost/prices.json`; [`Prices::updated`] tells its date). Every
//! price is in **USD per 1,000,000 tokens at batch rates** — 50% of the
//! online price — and every entry names its public source (Google's
//! Vertex AI generative AI pricing page; the partner-model section for
//! Claude and the open models). Entries marked
//! [`verified: false`](ModelPrice::verified) hold the publisher's list
//! price as last known, not re-read from the source on the table's date:
//! check them, and override them (below) with your own.
//!
//! # How a row is priced
//!
//! [`ModelPrice::row_cost`] takes a row's [`Usage`]:
//!
//! * the prompt's plain tokens (`prompt − cached − cache_write − audio`)
//!   at the input rate;
//! * `cached_tokens` at the cached rate. For Gemini (implicit caching,
//!   2.5 and later) that is 10% of the **online** input price: the cache
//!   discount (90%) *replaces* the batch discount, it is not stacked on it.
//!   A model with no cached rate bills cached tokens as input;
//! * `cache_write_tokens` (Claude) at the cache-write rate;
//! * `prompt_audio_tokens` at the audio rate, when the model has one;
//! * `tool_use_prompt_tokens` at the input rate;
//! * `candidates_tokens + thoughts_tokens` (reasoning) at the output rate.
//!
//! A model with a long-context tier (Gemini 2.5 Pro, 3 Pro, Claude Sonnet 4
//! and 4.5: 200,000 prompt tokens) bills the whole row at that tier's input,
//! cached and output rates when `prompt_tokens` exceeds the threshold.
//!
//! Claude on Vertex AI: the table assumes, as Anthropic documents for its
//! own batch API, that the batch discount stacks with prompt caching —
//! cache reads at 50% of the online cache-hit price (10% of online input),
//! cache writes at 50% of the online 5-minute write price (125% of online
//! input). These entries are unverified.
//!
//! The legacy text-embedding models (`text-embedding-005`,
//! `text-multilingual-embedding-002`) are priced per **character**
//! ([`Unit::Character`]: USD per 1,000,000 characters, where Google counts
//! Unicode code points and leaves white space out); their rows need the
//! character count, [`ResultRow::input_chars`](crate::format::ResultRow::input_chars).
//!
//! Amounts are [`Cost`]s, whole nano-dollars: a row's cost is rounded once,
//! to the nearest nano-dollar, and sums never round again.
//!
//! ```
//! use vertex_batch::cost::Prices;
//! use vertex_batch::format::Usage;
//!
//! let prices = Prices::builtin();
//! let flash = prices.lookup("publishers/google/models/gemini-2.5-flash").unwrap();
//! let usage = Usage { prompt_tokens: 1_000, candidates_tokens: 200, ..Usage::default() };
//! // 1,000 × $0.15/M + 200 × $1.25/M = $0.00015 + $0.00025
//! assert_eq!(flash.row_cost(&usage, None).unwrap().to_string(), "$0.000400");
//! ```
//!
//! A batch costs the sum of its rows ([`ModelPrice::result_cost`] prices a
//! [`ResultRow`] of any outcome; only succeeded rows are billed):
//!
//! ```
//! use vertex_batch::cost::{Cost, Prices};
//! use vertex_batch::format::parse_output_line;
//!
//! let lines = [
//!     r#"{"key":"a","status":"","response":{"candidates":[{"content":{"parts":[{"text":"x"}]}}],"usageMetadata":{"promptTokenCount":1000,"candidatesTokenCount":100}}}"#,
//!     r#"{"key":"b","status":"Bad Request: {\"error\": {\"code\": 400}}"}"#,
//! ];
//! let prices = Prices::builtin();
//! let price = prices.lookup("gemini-2.5-flash-001").unwrap();
//! let mut total = Cost::ZERO;
//! for line in lines {
//!     let row = parse_output_line(line)?;
//!     total += price.result_cost(&row).unwrap_or_default();
//! }
//! // a: 1,000 × $0.15/M + 100 × $1.25/M = $0.000275; b failed: $0.
//! assert_eq!(total.to_string(), "$0.000275");
//! # Ok::<(), vertex_batch::Error>(())
//! ```
//!
//! # Your own prices
//!
//! [`Prices::from_json`] and [`Prices::from_file`] read a table in the same
//! format; [`Prices::with_overrides`] lays it over the built-in one (an
//! entry replaces the built-in entry of the same id, the others stay):
//!
//! ```json
//! {
//!   "updated": "2026-12-01",
//!   "models": {
//!     "gemini-2.5-pro": {
//!       "source": "our contract, 2026",
//!       "verified": true,
//!       "input": 0.5, "output": 4.0, "cached_input": 0.1,
//!       "long_context_threshold": 200000,
//!       "long_context_input": 1.0, "long_context_output": 6.0,
//!       "long_context_cached_input": 0.2,
//!       "max_output_tokens": 65536
//!     }
//!   }
//! }
//! ```
//!
//! An entry's fields: `source` (required), `verified` (default `false`),
//! `unit` (`"token"`, the default, or `"character"`), `input` (required),
//! `output` (default 0), `cached_input`, `cache_write`, `audio_input`,
//! `long_context_threshold` with `long_context_input` and
//! `long_context_output` (all three or none) and an optional
//! `long_context_cached_input`, `max_output_tokens` (required; 0 for
//! embedding models) and a free-text `note`. Unknown fields are errors, so
//! a misspelt price is never silently left out. Prices are non-negative
//! and at most $1,000,000 per million; they keep nine decimals.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::format::results::{Outcome, ResultRow, Usage};

/// The built-in table.
const BUILTIN_JSON: &str = include_str!("cost/prices.json");

/// The largest price file [`Prices::from_file`] reads.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// The largest price accepted, in USD per million units.
const MAX_PRICE: f64 = 1_000_000.0;

/// Nano-dollars in a dollar.
const NANOS_PER_USD: u64 = 1_000_000_000;

/// An amount of money in whole nano-dollars (10⁻⁹ USD).
///
/// `u64` nano-dollars reach about $18.4 billion; sums saturate there
/// instead of wrapping. It displays in dollars with six decimals, rounded
/// to the nearest micro-dollar (`$0.001234`).
///
/// ```
/// use vertex_batch::cost::Cost;
///
/// let a = Cost::from_nanos(1_234_000);
/// let total: Cost = [a, a, Cost::from_nanos(500)].into_iter().sum();
/// assert_eq!(total.nanos(), 2_468_500);
/// assert_eq!(total.to_string(), "$0.002469"); // 0.0024685 rounds up
/// assert_eq!(total.usd(), 0.0024685);
/// assert_eq!(Cost::from_nanos(u64::MAX) + a, Cost::from_nanos(u64::MAX));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost(u64);

impl Cost {
    /// Nothing.
    ///
    /// ```
    /// assert_eq!(vertex_batch::cost::Cost::ZERO.nanos(), 0);
    /// ```
    pub const ZERO: Cost = Cost(0);

    /// An amount of `nanos` nano-dollars.
    ///
    /// ```
    /// assert_eq!(vertex_batch::cost::Cost::from_nanos(1_500_000_000).usd(), 1.5);
    /// ```
    pub const fn from_nanos(nanos: u64) -> Cost {
        Cost(nanos)
    }

    /// An amount of `usd` dollars, to the nano-dollar (a budget given as a
    /// number): negative or not a number is nothing, too large saturates.
    ///
    /// ```
    /// use vertex_batch::cost::Cost;
    ///
    /// assert_eq!(Cost::from_usd(1.25).nanos(), 1_250_000_000);
    /// assert_eq!(Cost::from_usd(-3.0), Cost::ZERO);
    /// assert_eq!(Cost::from_usd(f64::NAN), Cost::ZERO);
    /// assert_eq!(Cost::from_usd(1e30).nanos(), u64::MAX);
    /// ```
    pub fn from_usd(usd: f64) -> Cost {
        // `as` saturates a float to the integer range, NaN to 0.
        Cost((usd * NANOS_PER_USD as f64).round().max(0.0) as u64)
    }

    /// The amount in nano-dollars.
    ///
    /// ```
    /// assert_eq!(vertex_batch::cost::Cost::from_nanos(7).nanos(), 7);
    /// ```
    pub const fn nanos(self) -> u64 {
        self.0
    }

    /// The amount in dollars (a float: for display and arithmetic, not for
    /// adding up; add [`Cost`]s instead).
    ///
    /// ```
    /// assert_eq!(vertex_batch::cost::Cost::from_nanos(250_000_000).usd(), 0.25);
    /// ```
    pub fn usd(self) -> f64 {
        let whole = self.0 / NANOS_PER_USD;
        let frac = self.0 % NANOS_PER_USD;
        whole as f64 + frac as f64 / NANOS_PER_USD as f64
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost(self.0.saturating_add(o.0))
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::ZERO, |a, b| a + b)
    }
}

impl<'a> std::iter::Sum<&'a Cost> for Cost {
    fn sum<I: Iterator<Item = &'a Cost>>(iter: I) -> Cost {
        iter.copied().sum()
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Micro-dollars, rounded half up (u128: no overflow near u64::MAX).
        let micros = (u128::from(self.0) + 500) / 1000;
        write!(f, "${}.{:06}", micros / 1_000_000, micros % 1_000_000)
    }
}

/// What a model's input price counts.
///
/// ```
/// use vertex_batch::cost::{Prices, Unit};
/// let prices = Prices::builtin();
/// assert_eq!(prices.lookup("text-embedding-005").unwrap().unit(), Unit::Character);
/// assert_eq!(prices.lookup("gemini-2.5-pro").unwrap().unit(), Unit::Token);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Prices are per 1,000,000 tokens.
    Token,
    /// Prices are per 1,000,000 characters of input (Unicode code points,
    /// white space not counted), the legacy text-embedding models' unit.
    Character,
}

/// Rates in nano-dollars per million units.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LongContext {
    threshold: u64,
    input: u64,
    output: u64,
    cached_input: Option<u64>,
}

/// One model's prices, at batch rates.
///
/// ```
/// use vertex_batch::cost::Prices;
///
/// let pro = Prices::builtin().lookup("gemini-2.5-pro-001").unwrap().clone();
/// assert_eq!(pro.id(), "gemini-2.5-pro");
/// assert_eq!(pro.input_per_million(), 0.625);
/// assert_eq!(pro.long_context_threshold(), Some(200_000));
/// assert!(pro.source().starts_with("https://cloud.google.com/"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    id: String,
    source: String,
    verified: bool,
    note: Option<String>,
    unit: Unit,
    input: u64,
    output: u64,
    cached_input: Option<u64>,
    cache_write: Option<u64>,
    audio_input: Option<u64>,
    long_context: Option<LongContext>,
    max_output_tokens: u64,
}

fn per_million(nanos: u64) -> f64 {
    Cost(nanos).usd()
}

impl ModelPrice {
    /// The model id the entry is for (`gemini-2.5-pro`).
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// assert_eq!(p.lookup("claude-sonnet-4-5@20250929").unwrap().id(), "claude-sonnet-4-5");
    /// ```
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the price is published.
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// assert!(p.lookup("gpt-oss-120b-maas").unwrap().source().starts_with("https://"));
    /// ```
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the price was checked against its source on the table's
    /// date (`false`: the list price as last known; check it).
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// let _checked: bool = p.lookup("gemini-2.5-flash").unwrap().verified();
    /// ```
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// The entry's free-text note (the online prices it was derived from,
    /// say).
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// assert!(p.lookup("gemini-2.5-pro").unwrap().note().is_some());
    /// ```
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// What the prices count: tokens, or characters.
    ///
    /// ```
    /// use vertex_batch::cost::{Prices, Unit};
    /// assert_eq!(Prices::builtin().lookup("gemini-2.0-flash").unwrap().unit(), Unit::Token);
    /// ```
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// USD per million input tokens (or characters).
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// assert_eq!(p.lookup("gemini-2.5-flash").unwrap().input_per_million(), 0.15);
    /// ```
    pub fn input_per_million(&self) -> f64 {
        per_million(self.input)
    }

    /// USD per million output tokens (answer and thoughts).
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// assert_eq!(p.lookup("gemini-2.5-flash").unwrap().output_per_million(), 1.25);
    /// ```
    pub fn output_per_million(&self) -> f64 {
        per_million(self.output)
    }

    /// USD per million cached input tokens, when the model has a cached
    /// rate.
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// // 10% of the online $0.30: the cache discount replaces the batch one.
    /// assert_eq!(p.lookup("gemini-2.5-flash").unwrap().cached_input_per_million(), Some(0.03));
    /// ```
    pub fn cached_input_per_million(&self) -> Option<f64> {
        self.cached_input.map(per_million)
    }

    /// USD per million tokens written to a cache (Claude), when given.
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// assert_eq!(p.lookup("claude-haiku-4-5").unwrap().cache_write_per_million(), Some(0.625));
    /// ```
    pub fn cache_write_per_million(&self) -> Option<f64> {
        self.cache_write.map(per_million)
    }

    /// USD per million audio input tokens, when audio has its own rate.
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// assert_eq!(p.lookup("gemini-2.5-flash").unwrap().audio_input_per_million(), Some(0.5));
    /// ```
    pub fn audio_input_per_million(&self) -> Option<f64> {
        self.audio_input.map(per_million)
    }

    /// The prompt size above which the long-context tier applies.
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// assert_eq!(p.lookup("gemini-2.5-flash").unwrap().long_context_threshold(), None);
    /// ```
    pub fn long_context_threshold(&self) -> Option<u64> {
        self.long_context.as_ref().map(|l| l.threshold)
    }

    /// USD per million input tokens above the long-context threshold.
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// assert_eq!(p.lookup("gemini-2.5-pro").unwrap().long_context_input_per_million(), Some(1.25));
    /// ```
    pub fn long_context_input_per_million(&self) -> Option<f64> {
        self.long_context.as_ref().map(|l| per_million(l.input))
    }

    /// USD per million output tokens above the long-context threshold.
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// assert_eq!(p.lookup("gemini-2.5-pro").unwrap().long_context_output_per_million(), Some(7.5));
    /// ```
    pub fn long_context_output_per_million(&self) -> Option<f64> {
        self.long_context.as_ref().map(|l| per_million(l.output))
    }

    /// USD per million cached input tokens above the long-context
    /// threshold, when given.
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// assert_eq!(p.lookup("gemini-2.5-pro").unwrap().long_context_cached_input_per_million(), Some(0.25));
    /// ```
    pub fn long_context_cached_input_per_million(&self) -> Option<f64> {
        self.long_context
            .as_ref()
            .and_then(|l| l.cached_input)
            .map(per_million)
    }

    /// The most tokens one answer of the model can have (0 for embedding
    /// models), for budgets' upper bounds.
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// assert_eq!(p.lookup("gemini-2.0-flash-001").unwrap().max_output_tokens(), 8192);
    /// ```
    pub fn max_output_tokens(&self) -> u64 {
        self.max_output_tokens
    }

    /// What a row with `usage` costs (see the [module docs](self) for the
    /// rule). `input_chars` is the row's billed character count, needed
    /// (and only used) by per-character models
    /// ([`ResultRow::input_chars`](crate::format::ResultRow::input_chars));
    /// `None` only when the model is priced per character and no count is
    /// given. Never overflows: huge counts saturate at [`u64::MAX`]
    /// nano-dollars.
    ///
    /// ```
    /// use vertex_batch::cost::Prices;
    /// use vertex_batch::format::Usage;
    ///
    /// let prices = Prices::builtin();
    /// let usage = Usage { prompt_tokens: 10_000, cached_tokens: 8_000, candidates_tokens: 500, thoughts_tokens: 1_500, ..Usage::default() };
    /// let pro = prices.lookup("gemini-2.5-pro").unwrap();
    /// // 2,000 × $0.625/M + 8,000 × $0.125/M + 2,000 × $5/M = $0.01225
    /// assert_eq!(pro.row_cost(&usage, None).unwrap().nanos(), 12_250_000);
    /// let embedding = prices.lookup("text-embedding-005").unwrap();
    /// assert_eq!(embedding.row_cost(&usage, None), None);
    /// assert_eq!(embedding.row_cost(&usage, Some(1_000_000)).unwrap().usd(), 0.02);
    /// ```
    pub fn row_cost(&self, usage: &Usage, input_chars: Option<u64>) -> Option<Cost> {
        if self.unit == Unit::Character {
            return Some(rate_cost(&[(input_chars?, self.input)]));
        }
        let long = self
            .long_context
            .as_ref()
            .filter(|l| usage.prompt_tokens > l.threshold);
        let (input, output, cached) = match long {
            Some(l) => (l.input, l.output, l.cached_input.unwrap_or(l.input)),
            None => (
                self.input,
                self.output,
                self.cached_input.unwrap_or(self.input),
            ),
        };
        let plain = usage
            .prompt_tokens
            .saturating_sub(usage.cached_tokens)
            .saturating_sub(usage.cache_write_tokens)
            .saturating_sub(usage.prompt_audio_tokens);
        Some(rate_cost(&[
            (plain, input),
            (usage.cached_tokens, cached),
            (usage.cache_write_tokens, self.cache_write.unwrap_or(input)),
            (usage.prompt_audio_tokens, self.audio_input.unwrap_or(input)),
            (usage.tool_use_prompt_tokens, input),
            (
                usage
                    .candidates_tokens
                    .saturating_add(usage.thoughts_tokens),
                output,
            ),
        ]))
    }

    /// What a [`ResultRow`] costs: a succeeded row's
    /// [`row_cost`](Self::row_cost) (with its
    /// [`input_chars`](ResultRow::input_chars)); failed and missing rows
    /// are not billed ([`Cost::ZERO`]), nor are blocked rows, which carry no
    /// token counts here (Google may bill a blocked prompt's input). `None`
    /// as `row_cost`: a per-character model's row without its echoed
    /// content.
    ///
    /// ```
    /// use vertex_batch::cost::Prices;
    /// use vertex_batch::format::parse_output_line;
    ///
    /// let row = parse_output_line(r#"{"instance":{"content":"blue sky"},"predictions":[{"embeddings":{"values":[0.6,0.8]}}],"status":""}"#)?;
    /// let price = Prices::builtin().lookup("text-embedding-005").unwrap().clone();
    /// // 7 characters × $0.02 per million = 140 nano-dollars.
    /// assert_eq!(price.result_cost(&row).unwrap().nanos(), 140);
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn result_cost(&self, row: &ResultRow) -> Option<Cost> {
        match row.outcome() {
            Outcome::Succeeded(a) => self.row_cost(a.usage(), row.input_chars()),
            Outcome::Failed(_) | Outcome::Blocked(_) | Outcome::Missing(_) => Some(Cost::ZERO),
        }
    }

    /// The most a request can cost, for budgets: `input_tokens` (for
    /// per-character models: characters) at the input rate — the
    /// long-context rate when they exceed the threshold — and
    /// `max_output_tokens` at the output rate of the same tier. The input
    /// rate is the dearest that may apply to a token: audio's and a cache
    /// write's too, when the model has them.
    ///
    /// ```
    /// use vertex_batch::cost::Prices;
    ///
    /// let pro = Prices::builtin().lookup("gemini-2.5-pro").unwrap().clone();
    /// // 300,000 × $1.25/M + 65,536 × $7.50/M = $0.375 + $0.49152
    /// assert_eq!(pro.upper_bound(300_000, pro.max_output_tokens()).to_string(), "$0.866520");
    /// ```
    pub fn upper_bound(&self, input_tokens: u64, max_output_tokens: u64) -> Cost {
        let (input, output) = match &self.long_context {
            Some(l) if input_tokens > l.threshold => (l.input, l.output),
            _ => (self.input, self.output),
        };
        // A bound: every input token at the dearest input rate that may
        // apply (audio, a cache write), not only text's.
        let input = [self.audio_input, self.cache_write]
            .into_iter()
            .flatten()
            .fold(input, u64::max);
        rate_cost(&[(input_tokens, input), (max_output_tokens, output)])
    }
}

/// Σ count × rate (rates per million), rounded once to the nearest
/// nano-dollar, saturating.
fn rate_cost(terms: &[(u64, u64)]) -> Cost {
    let sum = terms.iter().fold(0u128, |acc, &(n, rate)| {
        acc.saturating_add(u128::from(n) * u128::from(rate))
    });
    let nanos = sum.saturating_add(500_000) / 1_000_000;
    Cost(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A price table: model id → [`ModelPrice`], and the date it holds.
///
/// ```
/// use vertex_batch::cost::Prices;
///
/// let mine = Prices::from_json(r#"{"updated": "2027-01-01", "models": {
///     "gemini-2.5-flash": {"source": "contract", "input": 0.1, "output": 1.0, "max_output_tokens": 65535}}}"#)?;
/// let prices = Prices::builtin().with_overrides(mine);
/// assert_eq!(prices.lookup("gemini-2.5-flash").unwrap().input_per_million(), 0.1);
/// assert_eq!(prices.lookup("gemini-2.5-pro").unwrap().input_per_million(), 0.625);
/// assert_eq!(prices.updated(), "2027-01-01");
/// # Ok::<(), vertex_batch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    updated: String,
    models: BTreeMap<String, ModelPrice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableJson<'a> {
    updated: String,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
    #[serde(borrow)]
    models: BTreeMap<String, &'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryJson {
    source: String,
    #[serde(default)]
    verified: bool,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    unit: Option<String>,
    input: f64,
    #[serde(default)]
    output: Option<f64>,
    #[serde(default)]
    cached_input: Option<f64>,
    #[serde(default)]
    cache_write: Option<f64>,
    #[serde(default)]
    audio_input: Option<f64>,
    #[serde(default)]
    long_context_threshold: Option<u64>,
    #[serde(default)]
    long_context_input: Option<f64>,
    #[serde(default)]
    long_context_output: Option<f64>,
    #[serde(default)]
    long_context_cached_input: Option<f64>,
    max_output_tokens: u64,
}

/// `YYYY-MM-DD`, with a plausible month and day.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) {
        return false;
    }
    if !digits(8..10) {
        return false;
    }
    let month = (b[5] - b'0') * 10 + (b[6] - b'0');
    let day = (b[8] - b'0') * 10 + (b[9] - b'0');
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// A model id as the table keys it: lower case, no path, no `@version`
/// cut (the `@` is kept for the prefix match).
fn normalise(model: &str) -> String {
    let t = model.trim();
    let last = t.rsplit('/').next().unwrap_or(t);
    last.to_ascii_lowercase()
}

/// Whether `rest` (what follows a known id in a model name) is a version
/// suffix: `@…`, or `-…` whose first segment is not a one- or two-digit
/// number (`-001`, `-20250929`, `-preview-05-20` are; `-1` in
/// `claude-opus-4-1` is another model).
fn is_version_suffix(rest: &str) -> bool {
    if rest.starts_with('@') {
        return true;
    }
    let Some(tail) = rest.strip_prefix('-') else {
        return false;
    };
    let segment = tail.split(['-', '@']).next().unwrap_or("");
    !(segment.is_empty() || (segment.len() <= 2 && segment.bytes().all(|b| b.is_ascii_digit())))
}

impl Prices {
    /// The table built into the crate (see [`updated`](Self::updated) for
    /// its date).
    ///
    /// ```
    /// let prices = vertex_batch::cost::Prices::builtin();
    /// assert!(prices.lookup("gemini-2.5-pro").is_some());
    /// ```
    pub fn builtin() -> Prices {
        static BUILTIN: OnceLock<Prices> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                // The table is part of the crate, not input: a test parses
                // it (`the_builtin_table_parses_and_covers_every_family`).
                // Should it ever not parse, the table is empty (every
                // lookup `None`) rather than a panic.
                Prices::parse(BUILTIN_JSON, "the built-in table").unwrap_or_else(|_| Prices {
                    updated: String::new(),
                    models: BTreeMap::new(),
                })
            })
            .clone()
    }

    /// Reads a table (the format is in the [module docs](self)).
    ///
    /// ```
    /// use vertex_batch::cost::Prices;
    ///
    /// let p = Prices::from_json(r#"{"updated": "2026-12-01", "models": {}}"#)?;
    /// assert_eq!(p.updated(), "2026-12-01");
    /// let e = Prices::from_json(r#"{"updated": "2026-12-01", "models": {"m": {"source": "s", "input": -1, "max_output_tokens": 1}}}"#).unwrap_err();
    /// assert!(e.to_string().contains("model `m`"), "{e}");
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn from_json(json: &str) -> Result<Prices> {
        Prices::parse(json, "JSON")
    }

    /// Reads a table from a file (at most 4 MiB; the format is in the
    /// [module docs](self)). Errors name the file.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("prices.json");
    /// std::fs::write(&path, r#"{"updated": "2026-12-01", "models": {}}"#).unwrap();
    /// let p = vertex_batch::cost::Prices::from_file(&path)?;
    /// assert_eq!(p.updated(), "2026-12-01");
    /// assert!(vertex_batch::cost::Prices::from_file(dir.path().join("none.json")).is_err());
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Prices> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let fail = |m: String| Error::validation("prices", format!("{name}: {m}"));
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| fail(e.to_string()))?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(fail(format!(
                "larger than {MAX_FILE_BYTES} bytes: not a price table"
            )));
        }
        Prices::parse(&text, &name)
    }

    fn parse(json: &str, origin: &str) -> Result<Prices> {
        let fail = |m: String| Error::validation("prices", format!("{origin}: {m}"));
        let table: TableJson<'_> =
            serde_json::from_str(json).map_err(|e| fail(format!("not a price table: {e}")))?;
        if !is_date(&table.updated) {
            return Err(fail(format!(
                "`updated` is {:?}, not a date (YYYY-MM-DD)",
                table.updated
            )));
        }
        if let Some(c) = table.currency.as_deref().filter(|c| *c != "USD") {
            return Err(fail(format!("`currency` is {c:?}; prices are in USD")));
        }
        let mut models = BTreeMap::new();
        for (id, raw) in table.models {
            let price = ModelPrice::parse(&id, raw.get())
                .map_err(|m| fail(format!("model `{id}`: {m}")))?;
            models.insert(id, price);
        }
        Ok(Prices {
            updated: table.updated,
            models,
        })
    }

    /// The date of the table (`YYYY-MM-DD`); after
    /// [`with_overrides`](Self::with_overrides), the later of the two.
    ///
    /// ```
    /// let updated = vertex_batch::cost::Prices::builtin().updated().to_owned();
    /// assert_eq!(updated.len(), 10);
    /// ```
    pub fn updated(&self) -> &str {
        &self.updated
    }

    /// This table with `overrides` laid over it: each entry of `overrides`
    /// replaces the entry of the same id (whole: fields it leaves out are
    /// not taken from the replaced entry); the other entries stay. The
    /// date is the later of the two tables'.
    ///
    /// ```
    /// use vertex_batch::cost::Prices;
    ///
    /// let extra = Prices::from_json(r#"{"updated": "2020-01-01", "models": {
    ///     "my-tuned-model": {"source": "ours", "input": 1, "output": 2, "max_output_tokens": 10}}}"#)?;
    /// let prices = Prices::builtin().with_overrides(extra);
    /// assert!(prices.lookup("my-tuned-model").is_some());
    /// assert_eq!(prices.updated(), Prices::builtin().updated()); // the later date
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn with_overrides(mut self, overrides: Prices) -> Prices {
        if overrides.updated > self.updated {
            self.updated = overrides.updated;
        }
        self.models.extend(overrides.models);
        self
    }

    /// Every entry, by id.
    ///
    /// ```
    /// let prices = vertex_batch::cost::Prices::builtin();
    /// assert!(prices.models().any(|m| m.id() == "gemini-embedding-001"));
    /// ```
    pub fn models(&self) -> impl Iterator<Item = &ModelPrice> {
        self.models.values()
    }

    /// The prices of `model`: a bare id (`gemini-2.5-flash`), `models/…`,
    /// `publishers/…/models/…` or a full resource name
    /// (`projects/…/locations/…/publishers/…/models/…`), with or without a
    /// version.
    ///
    /// The rule: the name's last path segment, in lower case, is matched
    /// against the table's ids; the longest id it equals, or starts with
    /// followed by a version suffix, wins. A version suffix is `@…`
    /// (`claude-sonnet-4-5@20250929`) or `-…` whose first segment is not a
    /// one- or two-digit number (`gemini-2.0-flash-001`,
    /// `gemini-2.5-flash-preview-05-20`), so `claude-opus-4-7` is not
    /// taken for `claude-opus-4`. A tuned model (`…/models/1234`) or an
    /// unknown id is `None`. Variants sharing a prefix
    /// (`gemini-2.5-flash-image`) take the base model's prices unless the
    /// table lists them.
    ///
    /// ```
    /// let p = vertex_batch::cost::Prices::builtin();
    /// assert_eq!(p.lookup("gemini-2.0-flash-001").unwrap().id(), "gemini-2.0-flash");
    /// assert_eq!(p.lookup("gemini-2.5-flash-lite").unwrap().id(), "gemini-2.5-flash-lite");
    /// assert_eq!(p.lookup("projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929").unwrap().id(), "claude-sonnet-4-5");
    /// assert!(p.lookup("claude-opus-4-7").is_none());
    /// assert!(p.lookup("projects/p/locations/us-central1/models/1234").is_none());
    /// ```
    pub fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        let name = normalise(model);
        if let Some(p) = self.models.get(&name) {
            return Some(p);
        }
        self.models
            .iter()
            .filter(|(id, _)| {
                name.strip_prefix(id.as_str())
                    .is_some_and(is_version_suffix)
            })
            .max_by_key(|(id, _)| id.len())
            .map(|(_, p)| p)
    }
}

impl ModelPrice {
    fn parse(id: &str, json: &str) -> std::result::Result<ModelPrice, String> {
        if id.is_empty()
            || id != normalise(id)
            || id.contains('@')
            || id.chars().any(char::is_whitespace)
        {
            return Err("an id is a bare lower-case model id (`gemini-2.5-pro`), without path or `@version`".to_owned());
        }
        let e: EntryJson = serde_json::from_str(json).map_err(|e| e.to_string())?;
        if e.source.trim().is_empty() {
            return Err("`source` is empty: name where the price is published".to_owned());
        }
        let unit = match e.unit.as_deref() {
            None | Some("token") => Unit::Token,
            Some("character") => Unit::Character,
            Some(u) => return Err(format!("`unit` is {u:?}, not \"token\" or \"character\"")),
        };
        let rate = |field: &str, v: f64| -> std::result::Result<u64, String> {
            if !(v.is_finite() && (0.0..=MAX_PRICE).contains(&v)) {
                return Err(format!(
                    "`{field}` is {v}: a price is a number from 0 to {MAX_PRICE} (USD per million)"
                ));
            }
            Ok((v * NANOS_PER_USD as f64).round() as u64)
        };
        let opt = |field: &str, v: Option<f64>| v.map(|v| rate(field, v)).transpose();
        let long_context = match (
            e.long_context_threshold,
            e.long_context_input,
            e.long_context_output,
        ) {
            (None, None, None) => {
                if e.long_context_cached_input.is_some() {
                    return Err("`long_context_cached_input` needs `long_context_threshold`".to_owned());
                }
                None
            }
            (Some(threshold), Some(input), Some(output)) => Some(LongContext {
                threshold,
                input: rate("long_context_input", input)?,
                output: rate("long_context_output", output)?,
                cached_input: opt("long_context_cached_input", e.long_context_cached_input)?,
            }),
            _ => {
                return Err("`long_context_threshold`, `long_context_input` and `long_context_output` go together: all three or none".to_owned())
            }
        };
        if unit == Unit::Character
            && (long_context.is_some()
                || e.cached_input.is_some()
                || e.cache_write.is_some()
                || e.audio_input.is_some())
        {
            return Err(
                "a per-character price has `input` (and `output`) only: no cache, audio or long-context rates"
                    .to_owned(),
            );
        }
        Ok(ModelPrice {
            id: id.to_owned(),
            source: e.source,
            verified: e.verified,
            note: e.note,
            unit,
            input: rate("input", e.input)?,
            output: opt("output", e.output)?.unwrap_or(0),
            cached_input: opt("cached_input", e.cached_input)?,
            cache_write: opt("cache_write", e.cache_write)?,
            audio_input: opt("audio_input", e.audio_input)?,
            long_context,
            max_output_tokens: e.max_output_tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::Family;
    use crate::format::results::parse_output_line;

    fn price(model: &str) -> ModelPrice {
        Prices::builtin()
            .lookup(model)
            .unwrap_or_else(|| panic!("no price for {model}"))
            .clone()
    }

    fn nanos(p: &ModelPrice, u: &Usage) -> u64 {
        p.row_cost(u, None).map(Cost::nanos).unwrap_or(u64::MAX)
    }

    #[test]
    fn the_builtin_table_parses_and_covers_every_family() {
        // Parsed directly: `builtin()` would hide a failure as an empty table.
        let table = Prices::parse(BUILTIN_JSON, "the built-in table").unwrap();
        assert!(is_date(table.updated()));
        assert_eq!(Prices::builtin(), table);
        let covered = [
            ("gemini-2.0-flash-001", Family::Gemini),
            ("gemini-2.0-flash-lite-001", Family::Gemini),
            ("gemini-2.5-pro", Family::Gemini),
            ("gemini-2.5-flash", Family::Gemini),
            ("gemini-2.5-flash-lite", Family::Gemini),
            ("gemini-3-pro-preview", Family::Gemini),
            ("gemini-embedding-001", Family::GeminiEmbedding),
            ("text-embedding-005", Family::TextEmbedding),
            ("text-multilingual-embedding-002", Family::TextEmbedding),
            ("claude-sonnet-4-5@20250929", Family::Claude),
            ("claude-haiku-4-5@20251001", Family::Claude),
            ("claude-opus-4-5@20251101", Family::Claude),
            ("claude-opus-4-1@20250805", Family::Claude),
            ("claude-opus-4@20250514", Family::Claude),
            ("claude-sonnet-4@20250514", Family::Claude),
            ("llama-4-maverick-17b-128e-instruct-maas", Family::OpenModel),
            ("llama-4-scout-17b-16e-instruct-maas", Family::OpenModel),
            ("llama-3.3-70b-instruct-maas", Family::OpenModel),
            ("gpt-oss-120b-maas", Family::OpenModel),
            ("gpt-oss-20b-maas", Family::OpenModel),
            ("qwen3-235b-a22b-instruct-2507-maas", Family::OpenModel),
            ("deepseek-v3.1-maas", Family::OpenModel),
            ("deepseek-r1-0528-maas", Family::OpenModel),
        ];
        for (model, family) in covered {
            assert_eq!(Family::of_model(model).unwrap(), family, "{model}");
            let p = table.lookup(model).unwrap_or_else(|| panic!("{model}"));
            assert!(
                p.source().starts_with("https://cloud.google.com/"),
                "{model}"
            );
            assert!(p.input > 0, "{model}");
            assert_eq!(p.unit() == Unit::Character, family == Family::TextEmbedding);
            assert_eq!(p.max_output_tokens() == 0, family.embeds(), "{model}");
        }
        for p in table.models() {
            match (Family::of_model(p.id()).unwrap(), p.cached_input) {
                // Gemini's implicit cache: 10% of the online input price,
                // which is twice the batch one: cached = batch input / 5.
                (Family::Gemini, Some(c)) => assert_eq!(c * 5, p.input, "{}", p.id()),
                // Claude: the batch discount stacks on the cache-hit price.
                (Family::Claude, Some(c)) => assert_eq!(c * 10, p.input, "{}", p.id()),
                (Family::Claude, None) => panic!("{} has no cache price", p.id()),
                _ => {}
            }
            if let Some(l) = &p.long_context {
                assert!(l.input > p.input && l.output > p.output, "{}", p.id());
            }
        }
    }

    #[test]
    fn cost_displays_dollars_with_six_decimals() {
        let shown = |n| Cost::from_nanos(n).to_string();
        assert_eq!(shown(0), "$0.000000");
        assert_eq!(shown(1_234_000), "$0.001234");
        assert_eq!(shown(499), "$0.000000");
        assert_eq!(shown(500), "$0.000001");
        assert_eq!(shown(12_345_678_901), "$12.345679");
        assert_eq!(shown(u64::MAX), "$18446744073.709552");
        assert_eq!(Cost::from_nanos(1_500_000_000).usd(), 1.5);
        let mut c = Cost::from_nanos(u64::MAX - 1);
        c += Cost::from_nanos(5);
        assert_eq!(c.nanos(), u64::MAX);
        let refs = [Cost::from_nanos(2), Cost::from_nanos(3)];
        assert_eq!(refs.iter().sum::<Cost>().nanos(), 5);
    }

    #[test]
    fn a_gemini_row_bills_thoughts_cache_tool_use_and_audio() {
        let flash = price("publishers/google/models/gemini-2.5-flash");
        // Batch rates, nano-dollars a token: input 150, cached 30 (10% of
        // the online $0.30), audio 500, output 1,250.
        let usage = Usage {
            prompt_tokens: 10_000,
            cached_tokens: 4_000,
            tool_use_prompt_tokens: 1_000,
            candidates_tokens: 500,
            thoughts_tokens: 2_500,
            ..Usage::default()
        };
        // (10,000 − 4,000) × 150 = 900,000
        // + 4,000 × 30 = 120,000
        // + 1,000 tool-use × 150 = 150,000
        // + (500 + 2,500) × 1,250 = 3,750,000
        // = 4,920,000 nano-dollars
        assert_eq!(nanos(&flash, &usage), 4_920_000);
        assert_eq!(
            flash.row_cost(&usage, None).unwrap().to_string(),
            "$0.004920"
        );
        // 2,000 of the prompt tokens are audio: 6,000 plain becomes 4,000.
        // 4,000 × 150 + 4,000 × 30 + 2,000 × 500 + 150,000 + 3,750,000
        // = 600,000 + 120,000 + 1,000,000 + 150,000 + 3,750,000 = 5,620,000
        let audio = Usage {
            prompt_audio_tokens: 2_000,
            ..usage
        };
        assert_eq!(nanos(&flash, &audio), 5_620_000);
        // The same from a real-looking output line.
        let line = r#"{"key":"q1","status":"","processed_time":"2026-11-30T10:00:00Z","response":{"candidates":[{"content":{"role":"model","parts":[{"text":"Blue."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":10000,"candidatesTokenCount":500,"thoughtsTokenCount":2500,"cachedContentTokenCount":4000,"toolUsePromptTokenCount":1000,"totalTokenCount":14000,"trafficType":"BATCH","promptTokensDetails":[{"modality":"TEXT","tokenCount":8000},{"modality":"AUDIO","tokenCount":2000}]},"modelVersion":"gemini-2.5-flash"}}"#;
        let row = parse_output_line(line).unwrap();
        assert_eq!(flash.result_cost(&row).unwrap().nanos(), 5_620_000);
    }

    #[test]
    fn a_long_prompt_bills_the_whole_row_at_the_long_context_tier() {
        let pro = price("gemini-2.5-pro");
        let usage = Usage {
            prompt_tokens: 250_000,
            cached_tokens: 100_000,
            candidates_tokens: 1_000,
            thoughts_tokens: 3_000,
            ..Usage::default()
        };
        // Above 200,000 prompt tokens, nano-dollars a token: input 1,250,
        // cached 250, output 7,500.
        // 150,000 × 1,250 = 187,500,000
        // + 100,000 × 250 = 25,000,000
        // + 4,000 × 7,500 = 30,000,000
        // = 242,500,000 ($0.2425)
        assert_eq!(nanos(&pro, &usage), 242_500_000);
        // At the threshold itself, the base tier: 200,000 × 625.
        let at = Usage {
            prompt_tokens: 200_000,
            ..Usage::default()
        };
        assert_eq!(nanos(&pro, &at), 125_000_000);
        // One token more: all 200,001 at 1,250.
        let above = Usage {
            prompt_tokens: 200_001,
            ..Usage::default()
        };
        assert_eq!(nanos(&pro, &above), 250_001_250);
    }

    #[test]
    fn a_claude_row_bills_cache_reads_and_writes() {
        let sonnet = price("publishers/anthropic/models/claude-sonnet-4-5@20250929");
        let line = r#"{"custom_id":"c1","request":{"messages":[{"role":"user","content":"Hi"}],"anthropic_version":"vertex-2023-10-16","max_tokens":4000},"status":"","processed_time":"2026-11-30T10:00:00Z","response":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hello"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1000,"cache_creation_input_tokens":10000,"cache_read_input_tokens":50000,"output_tokens":2000}}}"#;
        let row = parse_output_line(line).unwrap();
        // Nano-dollars a token at batch rates: input 1,500, cache read 150,
        // cache write 1,875, output 7,500.
        // 1,000 × 1,500 = 1,500,000
        // + 50,000 × 150 = 7,500,000
        // + 10,000 × 1,875 = 18,750,000
        // + 2,000 × 7,500 = 15,000,000
        // = 42,750,000 ($0.04275); the prompt (61,000) is under 200,000.
        assert_eq!(sonnet.result_cost(&row).unwrap().nanos(), 42_750_000);
    }

    #[test]
    fn an_open_model_row_bills_reasoning_once() {
        let oss = price("publishers/openai/models/gpt-oss-120b-maas");
        let line = r#"{"id":"batch_req_1","custom_id":"o1","response":{"status_code":200,"request_id":"r1","body":{"id":"chatcmpl-1","object":"chat.completion","model":"openai/gpt-oss-120b-maas","choices":[{"index":0,"message":{"role":"assistant","content":"42"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2000,"completion_tokens":1500,"total_tokens":3500,"completion_tokens_details":{"reasoning_tokens":1200}}}},"error":null}"#;
        let row = parse_output_line(line).unwrap();
        // Nano-dollars a token: input 75, output 300.
        // 2,000 × 75 = 150,000
        // + (300 answer + 1,200 reasoning) × 300 = 450,000
        // = 600,000 (counting the reasoning twice would make 960,000)
        assert_eq!(oss.result_cost(&row).unwrap().nanos(), 600_000);
    }

    #[test]
    fn a_text_embedding_row_is_billed_by_the_character() {
        let legacy = price("publishers/google/models/text-embedding-005");
        let line = r#"{"instance":{"content":"Why is the sky blue?"},"predictions":[{"embeddings":{"statistics":{"token_count":6,"truncated":false},"values":[0.1,0.2]}}],"status":""}"#;
        let row = parse_output_line(line).unwrap();
        // "Whyistheskyblue?" = 16 characters × $0.02 per million = 16 × 20
        // nano-dollars = 320.
        assert_eq!(row.input_chars(), Some(16));
        assert_eq!(legacy.result_cost(&row).unwrap().nanos(), 320);
        // Tokens do not count, and without characters there is no cost.
        let usage = Usage {
            prompt_tokens: 1_000_000,
            ..Usage::default()
        };
        assert_eq!(legacy.row_cost(&usage, None), None);
        assert_eq!(legacy.row_cost(&usage, Some(0)), Some(Cost::ZERO));
        // Gemini embeddings are by the token: 1,000 × 75 = 75,000.
        let gemini = price("gemini-embedding-001");
        let usage = Usage {
            prompt_tokens: 1_000,
            total_tokens: 1_000,
            ..Usage::default()
        };
        assert_eq!(nanos(&gemini, &usage), 75_000);
    }

    #[test]
    fn a_row_is_rounded_once_not_per_part() {
        // gemini-2.0-flash-lite input: $0.0375/M = 37.5 nano-dollars a token.
        let lite = price("gemini-2.0-flash-lite-001");
        let one = Usage {
            prompt_tokens: 1,
            ..Usage::default()
        };
        assert_eq!(nanos(&lite, &one), 38); // 37.5 rounds half up
        let three = Usage {
            prompt_tokens: 3,
            ..Usage::default()
        };
        assert_eq!(nanos(&lite, &three), 113); // 112.5, not 3 × 38
                                               // Failed, blocked and missing rows cost nothing.
        let failed = parse_output_line(r#"{"key":"k","status":"boom"}"#).unwrap();
        assert_eq!(lite.result_cost(&failed), Some(Cost::ZERO));
    }

    #[test]
    fn upper_bounds_take_the_tier_of_the_input() {
        let pro = price("gemini-2.5-pro");
        // 100,000 × 625 + 65,536 × 5,000 = 62,500,000 + 327,680,000
        assert_eq!(pro.upper_bound(100_000, 65_536).nanos(), 390_180_000);
        // 300,000 × 1,250 + 65,536 × 7,500 = 375,000,000 + 491,520,000
        assert_eq!(pro.upper_bound(300_000, 65_536).nanos(), 866_520_000);
        assert_eq!(
            pro.upper_bound(u64::MAX, u64::MAX),
            Cost::from_nanos(u64::MAX)
        );
    }

    #[test]
    fn lookup_normalises_names_and_versions() {
        let p = Prices::builtin();
        let id = |m: &str| p.lookup(m).map(ModelPrice::id);
        assert_eq!(id("gemini-2.0-flash-001"), Some("gemini-2.0-flash"));
        assert_eq!(id("gemini-2.0-flash"), Some("gemini-2.0-flash"));
        assert_eq!(id("models/gemini-2.5-pro"), Some("gemini-2.5-pro"));
        assert_eq!(id("  Gemini-2.5-Flash  "), Some("gemini-2.5-flash"));
        assert_eq!(
            id("gemini-2.5-flash-lite-001"),
            Some("gemini-2.5-flash-lite")
        );
        assert_eq!(
            id("gemini-2.5-flash-preview-05-20"),
            Some("gemini-2.5-flash")
        );
        assert_eq!(
            id("publishers/google/models/gemini-2.0-flash-lite-001"),
            Some("gemini-2.0-flash-lite")
        );
        assert_eq!(
            id("projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro"),
            Some("gemini-2.5-pro")
        );
        assert_eq!(id("claude-sonnet-4-5@20250929"), Some("claude-sonnet-4-5"));
        assert_eq!(id("claude-sonnet-4-5-20250929"), Some("claude-sonnet-4-5"));
        assert_eq!(id("claude-opus-4-1@20250805"), Some("claude-opus-4-1"));
        assert_eq!(id("claude-opus-4@20250514"), Some("claude-opus-4"));
        assert_eq!(
            id("publishers/meta/models/llama-4-maverick-17b-128e-instruct-maas"),
            Some("llama-4-maverick-17b-128e-instruct-maas")
        );
        // Unknown models, other minor versions and tuned models: no price.
        assert_eq!(id("claude-opus-4-7"), None);
        assert_eq!(id("gemini-9-ultra"), None);
        assert_eq!(id("gemini-2.5"), None);
        assert_eq!(id("gemini-2.5-flashy"), None);
        assert_eq!(id("projects/p/locations/us-central1/models/1234"), None);
        assert_eq!(id(""), None);
        assert_eq!(id("/"), None);
    }

    #[test]
    fn overrides_replace_entries_whole_and_keep_the_rest() {
        let mine = Prices::from_json(
            r#"{"updated": "2099-01-01", "currency": "USD", "models": {
                "gemini-2.5-pro": {"source": "contract", "verified": true, "input": 0.5, "output": 4, "max_output_tokens": 1000},
                "my-model": {"source": "ours", "input": 1, "max_output_tokens": 0}}}"#,
        )
        .unwrap();
        let base = Prices::builtin();
        let merged = base.clone().with_overrides(mine);
        let pro = merged.lookup("gemini-2.5-pro-001").unwrap();
        assert_eq!(pro.source(), "contract");
        assert!(pro.verified());
        assert_eq!(pro.input_per_million(), 0.5);
        // Whole: the built-in long-context tier and cache price are gone.
        assert_eq!(pro.long_context_threshold(), None);
        assert_eq!(pro.cached_input_per_million(), None);
        assert_eq!(pro.max_output_tokens(), 1000);
        assert_eq!(merged.lookup("my-model").unwrap().output_per_million(), 0.0);
        assert_eq!(
            merged.lookup("gemini-2.5-flash"),
            base.lookup("gemini-2.5-flash")
        );
        assert_eq!(merged.updated(), "2099-01-01");
        assert_eq!(merged.models().count(), base.models().count() + 1);
    }

    #[test]
    fn bad_tables_name_the_model_and_field() {
        let err = |json: &str| Prices::from_json(json).unwrap_err().to_string();
        let table =
            |entry: &str| format!(r#"{{"updated": "2026-12-01", "models": {{"m-1": {entry}}}}}"#);
        let e = err(r#"{"updated": "yesterday", "models": {}}"#);
        assert!(e.contains("`updated`"), "{e}");
        let e = err(r#"{"updated": "2026-13-01", "models": {}}"#);
        assert!(e.contains("not a date"), "{e}");
        let e = err(r#"{"updated": "2026-12-01", "currency": "EUR", "models": {}}"#);
        assert!(e.contains("EUR"), "{e}");
        let e = err(r#"{"updated": "2026-12-01"}"#);
        assert!(e.contains("models"), "{e}");
        let e = err(&table(
            r#"{"source": "s", "input": 1, "cached_inptu": 0.1, "max_output_tokens": 1}"#,
        ));
        assert!(
            e.contains("model `m-1`") && e.contains("cached_inptu"),
            "{e}"
        );
        let e = err(&table(
            r#"{"source": "s", "input": -0.5, "max_output_tokens": 1}"#,
        ));
        assert!(e.contains("model `m-1`") && e.contains("`input`"), "{e}");
        let e = err(&table(
            r#"{"source": "s", "input": 1, "output": 1e300, "max_output_tokens": 1}"#,
        ));
        assert!(e.contains("`output`"), "{e}");
        let e = err(&table(
            r#"{"source": "s", "input": 1, "long_context_threshold": 5, "max_output_tokens": 1}"#,
        ));
        assert!(e.contains("all three or none"), "{e}");
        let e = err(&table(
            r#"{"source": "s", "unit": "word", "input": 1, "max_output_tokens": 1}"#,
        ));
        assert!(e.contains("\"word\""), "{e}");
        let e = err(&table(
            r#"{"source": "s", "unit": "character", "input": 1, "cached_input": 1, "max_output_tokens": 1}"#,
        ));
        assert!(e.contains("per-character"), "{e}");
        let e = err(&table(
            r#"{"source": " ", "input": 1, "max_output_tokens": 1}"#,
        ));
        assert!(e.contains("`source`"), "{e}");
        let e = err(&table(r#"{"source": "s", "input": 1}"#));
        assert!(e.contains("max_output_tokens"), "{e}");
        let e = err(
            r#"{"updated": "2026-12-01", "models": {"publishers/google/models/x": {"source": "s", "input": 1, "max_output_tokens": 1}}}"#,
        );
        assert!(e.contains("bare lower-case model id"), "{e}");
        let e = err(
            r#"{"updated": "2026-12-01", "models": {"Claude-X@1": {"source": "s", "input": 1, "max_output_tokens": 1}}}"#,
        );
        assert!(e.contains("bare lower-case model id"), "{e}");
    }

    #[test]
    fn price_files_are_read_with_their_name_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("prices.json");
        std::fs::write(
            &good,
            r#"{"updated": "2026-12-01", "models": {"x": {"source": "s", "input": 2, "max_output_tokens": 9}}}"#,
        )
        .unwrap();
        let p = Prices::from_file(&good).unwrap();
        assert_eq!(p.lookup("x").unwrap().input_per_million(), 2.0);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        let e = Prices::from_file(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.json"), "{e}");
        let e = Prices::from_file(dir.path().join("absent.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent.json"), "{e}");
        // A huge file is refused after MAX_FILE_BYTES, not loaded whole.
        let huge = dir.path().join("huge.json");
        let f = std::fs::File::create(&huge).unwrap();
        f.set_len(MAX_FILE_BYTES + 10).unwrap();
        let e = Prices::from_file(&huge).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    fn any_usage() -> impl proptest::strategy::Strategy<Value = Usage> {
        use proptest::prelude::*;
        let n = || prop_oneof![Just(0u64), 0u64..300_000, Just(u64::MAX), any::<u64>()];
        (n(), n(), n(), n(), n(), n(), n(), n()).prop_map(|(a, b, c, d, e, f, g, h)| Usage {
            prompt_tokens: a,
            candidates_tokens: b,
            thoughts_tokens: c,
            cached_tokens: d,
            cache_write_tokens: e,
            tool_use_prompt_tokens: f,
            prompt_audio_tokens: g,
            total_tokens: h,
        })
    }

    proptest::proptest! {
        /// Any text is a table or an error, never a panic.
        #[test]
        fn from_json_never_panics_on_text(text in "\\PC{0,200}") {
            let _ = Prices::from_json(&text);
        }

        /// Tables of any shape, with values of any JSON type in every
        /// field, are tables or errors, never panics; what parses has its
        /// date and looks its entries up.
        #[test]
        fn from_json_never_panics_on_odd_tables(
            updated in proptest::sample::select(vec!["\"2026-12-01\"", "\"2026-1-1\"", "\"9999-99-99\"", "1", "null", "\"\"", "\"2026-12-0é\""]),
            id in proptest::sample::select(vec!["m", "gemini-2.5-pro", "A", "", "a/b", "x@1", " s"]),
            field in proptest::sample::select(vec!["input", "output", "cached_input", "cache_write", "audio_input",
                "long_context_threshold", "long_context_input", "long_context_output", "long_context_cached_input",
                "max_output_tokens", "unit", "source", "verified", "note", "bogus"]),
            value in proptest::sample::select(vec!["0", "-1", "1e308", "0.5", "18446744073709551616", "\"token\"",
                "\"character\"", "null", "[]", "{}", "true", "\"s\""]),
        ) {
            let json = format!(r#"{{"updated": {updated}, "models": {{"{id}": {{"source": "s", "input": 1, "max_output_tokens": 1, "{field}": {value}}}}}}}"#);
            if let Ok(p) = Prices::from_json(&json) {
                proptest::prop_assert!(is_date(p.updated()));
                proptest::prop_assert!(p.lookup(id).is_some());
            }
        }

        /// Any counts on any built-in model: a cost (saturating, never a
        /// panic or a wrap), that more output never lowers.
        #[test]
        fn row_cost_never_panics_or_wraps(usage in any_usage(), chars in proptest::option::of(proptest::prelude::any::<u64>()), more in 1u64..1_000_000) {
            for p in Prices::builtin().models() {
                let Some(cost) = p.row_cost(&usage, chars) else {
                    proptest::prop_assert!(p.unit() == Unit::Character && chars.is_none());
                    continue;
                };
                let longer = Usage { candidates_tokens: usage.candidates_tokens.saturating_add(more), ..usage };
                let longer_cost = p.row_cost(&longer, chars);
                proptest::prop_assert!(longer_cost >= Some(cost), "{}: {usage:?}", p.id());
                let _ = p.upper_bound(usage.prompt_tokens, usage.candidates_tokens);
                let _ = cost.to_string();
            }
        }
    }

    #[test]
    fn the_largest_counts_saturate() {
        let all = Usage {
            prompt_tokens: u64::MAX,
            candidates_tokens: u64::MAX,
            thoughts_tokens: u64::MAX,
            cached_tokens: 0,
            cache_write_tokens: 0,
            tool_use_prompt_tokens: u64::MAX,
            prompt_audio_tokens: 0,
            total_tokens: u64::MAX,
        };
        for p in Prices::builtin().models() {
            let cost = p.row_cost(&all, Some(u64::MAX)).unwrap();
            assert_eq!(cost, Cost::from_nanos(u64::MAX), "{}", p.id());
        }
    }
}
