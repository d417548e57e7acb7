//! The one model interface the engine needs: append tokens, get logits for each, roll back.

use crate::Logits;

/// A causal language model that owns its KV cache.
///
/// `forward` appends `tokens` after the `len()` tokens already cached and returns one row of
/// logits per new token (prefill, one-token decode and multi-token verify are the same call).
/// `truncate` rolls the cache back to its first `len` tokens; it never reallocates.
pub trait Lm {
    /// Width of a logits row (the model's padded vocabulary size).
    fn vocab_size(&self) -> usize;
    /// Largest number of tokens the cache can hold.
    fn max_len(&self) -> usize;
    /// Number of tokens currently cached.
    fn len(&self) -> usize;
    /// True when nothing is cached.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends `tokens` (non-empty) and returns logits of shape `[tokens.len(), vocab_size]`.
    fn forward(&mut self, tokens: &[u32]) -> anyhow::Result<Logits>;
    /// Appends `tokens` like [`forward`](Lm::forward) but returns only the last row, shape
    /// `[1, vocab_size]` (a prompt's prefill: backends may skip the other rows' unembedding).
    fn forward_last(&mut self, tokens: &[u32]) -> anyhow::Result<Logits> {
        let all = self.forward(tokens)?;
        anyhow::ensure!(
            all.rows() == tokens.len() && all.rows() > 0,
            "forward of {} tokens returned logits of shape [{}, {}], expected [{}, {}]",
            tokens.len(),
            all.rows(),
            all.vocab(),
            tokens.len(),
            all.vocab()
        );
        let vocab = all.vocab();
        Ok(Logits::new(all.last().to_vec(), 1, vocab))
    }
    /// Keeps the first `len` cached tokens (`len <= self.len()`).
    fn truncate(&mut self, len: usize) -> anyhow::Result<()>;
    /// The model as [`std::any::Any`], so code holding a `dyn Lm` can reach a concrete
    /// model's own API (the CUDA model's device speculative step). `None` by default.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}
