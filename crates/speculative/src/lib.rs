//! spedec-speculative: the model interface, autoregressive and speculative generators, stats.

mod lm;

pub use lm::Lm;
pub use spedec_neox::Logits;
