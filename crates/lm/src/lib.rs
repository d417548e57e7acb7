//! spedec-lm: the one model interface of the engine, what it returns, and the cache cursor
//! every implementation shares.
//!
//! - [`Lm`]: a causal LM that owns its KV cache (`forward` appends, `truncate` rolls back);
//!   `spedec-neox` implements it for its CPU and CUDA models, the speculative engine and the
//!   perplexity code consume it.
//! - [`Logits`]: `[rows, vocab]` f32 scores, one row per new position.
//! - [`KvCursor`]: the cached length and capacity of a model, with the checks of the `Lm`
//!   contract (non-empty appends of in-vocabulary ids that fit; rollbacks only backwards).
//!
//! This crate has no heavy dependencies, so the speculative engine links no model code.

mod kv;
mod lm;
mod logits;

pub use kv::KvCursor;
pub use lm::Lm;
pub use logits::Logits;
