//! Prices and the budget on the command line: `--prices FILE` over the
//! built-in table, and `--max-cost USD` checked before anything is
//! submitted.

use std::path::Path;

use vertex_batch::{
    cost::{Cost, ModelPrice, Prices},
    Client,
};

use crate::{
    fail::{CliError, CliResult},
    prompts::Prompts,
};

/// The price of `model`: from `file` (its entries over the built-in
/// ones), or the built-in table; `None` when neither has it.
pub fn price_for(model: &str, file: Option<&Path>) -> CliResult<Option<ModelPrice>> {
    let prices = match file {
        Some(f) => Prices::builtin().with_overrides(
            Prices::from_file(f)
                .map_err(|e| CliError::usage(format!("--prices {}: {e}", f.display())))?,
        ),
        None => Prices::builtin(),
    };
    Ok(prices.lookup(model).cloned())
}

/// Prints the upper bound of running `prompts` and whether it fits `max`.
pub async fn check_budget(
    client: &Client,
    model: &str,
    price: Option<&ModelPrice>,
    prompts: &Prompts,
    max: Cost,
) -> CliResult<bool> {
    let Some(price) = price else {
        return Err(CliError::usage(format!(
            "--max-cost needs {model}'s prices, and the price table has none: give them with --prices FILE"
        )));
    };
    let broken = std::cell::Cell::new(None);
    // Streamed: the prompts are read once more, never held.
    let requests = prompts.iter(&broken)?.map(|(_, r)| r);
    let estimated = vertex_batch::batch::estimate(Some(client), model, price, requests).await;
    if let Some(problem) = broken.take() {
        return Err(prompts.changed(&problem));
    }
    let e = estimated?;
    let how = if e.counted_rows == e.rows {
        "counted by CountTokens".to_owned()
    } else if e.counted_rows == 0 {
        "bounded offline".to_owned()
    } else {
        format!(
            "{} rows counted by CountTokens, the rest bounded offline",
            e.counted_rows
        )
    };
    eprintln!(
        "estimate: at most {} for {} rows ({} input tokens, {how}; at most {} output tokens), budget {max}",
        e.upper_bound, e.rows, e.input_tokens, e.max_output_tokens
    );
    if e.upper_bound > max {
        eprintln!("over the budget: nothing was submitted (raise --max-cost, or lower the rows' output caps)");
        return Ok(false);
    }
    Ok(true)
}
