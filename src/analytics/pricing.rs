//! Prices: what a request cost in USD. A built-in table of the major OpenAI, Anthropic
//! and Gemini models (list prices, USD per million tokens), matched by the deployment's
//! upstream model name (provider prefix stripped, date and version suffixes tolerated),
//! and per-deployment overrides from LiteLLM's `model_info.input_cost_per_token` /
//! `output_cost_per_token` / `cache_read_input_token_cost` (USD per token).

use crate::config::DeploymentConfig;
use crate::protocol::ir::Usage;

/// USD per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Prompt tokens read from the provider's cache.
    pub cached_input: f64,
    /// Prompt tokens written to the cache (Anthropic); the input price elsewhere.
    pub cache_write: f64,
}

impl Price {
    /// The cost of `usage`. `input_tokens` includes cached and cache-written tokens.
    pub fn cost(&self, u: &Usage) -> f64 {
        let plain = u
            .input_tokens
            .saturating_sub(u.cached_input_tokens + u.cache_creation_input_tokens);
        plain as f64 * self.input
            + u.cached_input_tokens as f64 * self.cached_input
            + u.cache_creation_input_tokens as f64 * self.cache_write
            + u.output_tokens as f64 * self.output
    }
}

/// (name prefix, input, output, cached input, cache write) in USD per million tokens;
/// `None` cache prices mean "same as input".
type Row = (&'static str, f64, f64, Option<f64>, Option<f64>);

/// List prices. Longest matching name wins, so `gpt-4o-mini` is not priced as `gpt-4o`.
const TABLE: &[Row] = &[
    // OpenAI
    ("gpt-4o", 2.5, 10.0, Some(1.25), None),
    ("gpt-4o-mini", 0.15, 0.6, Some(0.075), None),
    ("gpt-4.1", 2.0, 8.0, Some(0.5), None),
    ("gpt-4.1-mini", 0.4, 1.6, Some(0.1), None),
    ("gpt-4.1-nano", 0.1, 0.4, Some(0.025), None),
    ("gpt-4-turbo", 10.0, 30.0, None, None),
    ("gpt-4", 30.0, 60.0, None, None),
    ("gpt-3.5-turbo", 0.5, 1.5, None, None),
    ("o1", 15.0, 60.0, Some(7.5), None),
    ("o3", 2.0, 8.0, Some(0.5), None),
    ("o3-mini", 1.1, 4.4, Some(0.55), None),
    ("o3-pro", 20.0, 80.0, None, None),
    ("o4-mini", 1.1, 4.4, Some(0.275), None),
    ("gpt-5", 1.25, 10.0, Some(0.125), None),
    ("gpt-5-mini", 0.25, 2.0, Some(0.025), None),
    ("gpt-5-nano", 0.05, 0.4, Some(0.005), None),
    ("gpt-5-pro", 15.0, 120.0, None, None),
    ("gpt-5.1", 1.25, 10.0, Some(0.125), None),
    ("gpt-5.2", 1.75, 14.0, Some(0.175), None),
    // Anthropic (cache reads 0.1×, cache writes 1.25× the input price)
    ("claude-opus-4", 15.0, 75.0, Some(1.5), Some(18.75)),
    ("claude-opus-4-1", 15.0, 75.0, Some(1.5), Some(18.75)),
    ("claude-opus-4-5", 5.0, 25.0, Some(0.5), Some(6.25)),
    ("claude-opus-4-6", 5.0, 25.0, Some(0.5), Some(6.25)),
    ("claude-opus-4-7", 5.0, 25.0, Some(0.5), Some(6.25)),
    ("claude-sonnet-4", 3.0, 15.0, Some(0.3), Some(3.75)),
    ("claude-sonnet-4-5", 3.0, 15.0, Some(0.3), Some(3.75)),
    ("claude-sonnet-4-6", 3.0, 15.0, Some(0.3), Some(3.75)),
    ("claude-haiku-4-5", 1.0, 5.0, Some(0.1), Some(1.25)),
    ("claude-3-7-sonnet", 3.0, 15.0, Some(0.3), Some(3.75)),
    ("claude-3-5-sonnet", 3.0, 15.0, Some(0.3), Some(3.75)),
    ("claude-3-5-haiku", 0.8, 4.0, Some(0.08), Some(1.0)),
    ("claude-3-opus", 15.0, 75.0, Some(1.5), Some(18.75)),
    ("claude-3-haiku", 0.25, 1.25, Some(0.03), Some(0.3)),
    // Gemini (prompts up to 200k tokens)
    ("gemini-2.5-pro", 1.25, 10.0, Some(0.125), None),
    ("gemini-2.5-flash", 0.3, 2.5, Some(0.03), None),
    ("gemini-2.5-flash-lite", 0.1, 0.4, Some(0.01), None),
    ("gemini-2.0-flash", 0.1, 0.4, Some(0.025), None),
    ("gemini-2.0-flash-lite", 0.075, 0.3, None, None),
    ("gemini-3-pro", 2.0, 12.0, Some(0.2), None),
    ("gemini-3-flash", 0.5, 3.0, Some(0.05), None),
];

const PER_MILLION: f64 = 1e-6;

fn from_row(r: &Row) -> Price {
    Price {
        input: r.1 * PER_MILLION,
        output: r.2 * PER_MILLION,
        cached_input: r.3.unwrap_or(r.1) * PER_MILLION,
        cache_write: r.4.unwrap_or(r.1) * PER_MILLION,
    }
}

/// `name` is `prefix` followed by nothing or a `-`/`@`/`:` suffix (a date, `latest`, a
/// version): `gpt-4o-2024-08-06` matches `gpt-4o`, `gpt-4o` does not match `gpt-4`.
fn matches(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '@', ':']))
}

fn lookup(name: &str) -> Option<&'static Row> {
    TABLE
        .iter()
        .filter(|r| matches(name, r.0))
        .max_by_key(|r| r.0.len())
}

/// The list price of a model by its upstream name (`openai/gpt-4o-2024-08-06`,
/// `claude-sonnet-4-5-20250929`, `models/gemini-2.5-flash`, `claude-sonnet-4.5`).
pub fn list_price(model: &str) -> Option<Price> {
    let name = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let name = name.trim();
    lookup(name)
        .or_else(|| {
            // `claude-sonnet-4.5` style aliases: Anthropic's ids use dashes.
            name.starts_with("claude")
                .then(|| lookup(&name.replace('.', "-")))
                .flatten()
        })
        .map(from_row)
}

/// The price of a deployment for `upstream_model`: the `model_info` overrides, completed
/// by the list price; none when neither knows the model.
pub fn price_for(deployment: &DeploymentConfig, upstream_model: &str) -> Option<Price> {
    let list = list_price(upstream_model);
    let (i, o) = (
        deployment.input_cost_per_token,
        deployment.output_cost_per_token,
    );
    if i.is_none() && o.is_none() && deployment.cache_read_input_token_cost.is_none() {
        return list;
    }
    let input = i.or(list.map(|p| p.input)).unwrap_or(0.0);
    Some(Price {
        input,
        output: o.or(list.map(|p| p.output)).unwrap_or(0.0),
        cached_input: deployment
            .cache_read_input_token_cost
            .or(list.filter(|_| i.is_none()).map(|p| p.cached_input))
            .unwrap_or(input),
        cache_write: list
            .filter(|_| i.is_none())
            .map_or(input, |p| p.cache_write),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(model: &str, input: u64, output: u64) -> f64 {
        list_price(model).unwrap().cost(&Usage {
            input_tokens: input,
            output_tokens: output,
            ..Default::default()
        })
    }

    #[test]
    fn matches_names_with_prefixes_and_date_suffixes() {
        assert!((usd("gpt-4o", 1_000_000, 0) - 2.5).abs() < 1e-9);
        assert!((usd("openai/gpt-4o-2024-08-06", 0, 1_000_000) - 10.0).abs() < 1e-9);
        assert!((usd("gpt-4o-mini-2024-07-18", 1_000_000, 0) - 0.15).abs() < 1e-9);
        assert!((usd("anthropic/claude-sonnet-4-5-20250929", 1000, 1000) - 0.018).abs() < 1e-9);
        assert!((usd("claude-sonnet-4.5", 1000, 0) - 0.003).abs() < 1e-9);
        assert!((usd("claude-opus-4-5-20251101", 1_000_000, 0) - 5.0).abs() < 1e-9);
        assert!((usd("claude-opus-4-20250514", 1_000_000, 0) - 15.0).abs() < 1e-9);
        assert!((usd("gemini/gemini-2.5-flash-lite", 1_000_000, 0) - 0.1).abs() < 1e-9);
        assert!((usd("models/gemini-2.5-pro", 0, 1_000_000) - 10.0).abs() < 1e-9);
        assert!((usd("o3-mini", 1_000_000, 0) - 1.1).abs() < 1e-9);
        assert!((usd("gpt-4-0613", 1_000_000, 0) - 30.0).abs() < 1e-9);
        assert!(list_price("gpt-4oo").is_none());
        assert!(list_price("mock").is_none());
        assert!(list_price("llama3:8b").is_none());
    }

    #[test]
    fn cached_and_cache_written_tokens_have_their_own_price() {
        let p = list_price("claude-sonnet-4-5").unwrap();
        let u = Usage {
            input_tokens: 1_000_000 + 1_000_000 + 1_000_000,
            cached_input_tokens: 1_000_000,
            cache_creation_input_tokens: 1_000_000,
            ..Default::default()
        };
        assert!((p.cost(&u) - (3.0 + 0.3 + 3.75)).abs() < 1e-9);
    }
}
