//! Checks and model calls shared by both generators.

use anyhow::{bail, ensure, Context, Result};
use spedec_lm::Logits;

use spedec_lm::Lm;

/// Checks that the prompt is non-empty, its ids fit `model`'s vocabulary and it fits the context.
pub(crate) fn check_prompt<M: Lm + ?Sized>(prompt: &[u32], model: &M, name: &str) -> Result<()> {
    check_prompt_fits(prompt, model.vocab_size(), model.max_len(), name)
}

/// Checks that `prompt` is non-empty, its ids are below `vocab` and it has at most `max_len`
/// tokens, naming the model `name` ("target", "draft") in the error.
pub fn check_prompt_fits(prompt: &[u32], vocab: usize, max_len: usize, name: &str) -> Result<()> {
    if prompt.is_empty() {
        bail!("the prompt is empty: generation needs at least one token");
    }
    if let Some((i, &t)) = prompt
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= vocab)
    {
        bail!("prompt token {i} has id {t}, outside the {name} model's vocabulary of {vocab}");
    }
    if prompt.len() > max_len {
        bail!(
            "the prompt has {} tokens, more than the {name} model's context of {max_len}",
            prompt.len(),
        );
    }
    Ok(())
}

/// `model.forward(tokens)`, checking that one row of `vocab_size` logits came back per token.
pub(crate) fn forward<M: Lm + ?Sized>(model: &mut M, tokens: &[u32], name: &str) -> Result<Logits> {
    let at = model.len();
    let logits = model
        .forward(tokens)
        .with_context(|| format!("{name} forward of {} tokens at position {at}", tokens.len()))?;
    ensure!(
        logits.rows() == tokens.len() && logits.vocab() == model.vocab_size(),
        "{name} forward of {} tokens returned logits of shape [{}, {}], expected [{}, {}]",
        tokens.len(),
        logits.rows(),
        logits.vocab(),
        tokens.len(),
        model.vocab_size()
    );
    Ok(logits)
}

/// `model.forward_last(tokens)`, checking that one row of `vocab_size` logits came back.
pub(crate) fn forward_last<M: Lm + ?Sized>(
    model: &mut M,
    tokens: &[u32],
    name: &str,
) -> Result<Logits> {
    let at = model.len();
    let logits = model
        .forward_last(tokens)
        .with_context(|| format!("{name} forward of {} tokens at position {at}", tokens.len()))?;
    ensure!(
        logits.rows() == 1 && logits.vocab() == model.vocab_size(),
        "{name} last-row forward of {} tokens returned logits of shape [{}, {}], expected [1, {}]",
        tokens.len(),
        logits.rows(),
        logits.vocab(),
        model.vocab_size()
    );
    Ok(logits)
}

/// `model.truncate(len)` with context.
pub(crate) fn truncate<M: Lm + ?Sized>(model: &mut M, len: usize, name: &str) -> Result<()> {
    model
        .truncate(len)
        .with_context(|| format!("{name} truncate from {} to {len}", model.len()))
}
