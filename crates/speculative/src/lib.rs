//! spedec-speculative: the model interface, autoregressive and speculative generators, stats.
//!
//! - [`Lm`] (re-exported from `spedec-lm`): a causal LM owning its KV cache (`forward`
//!   appends, `truncate` rolls back); the models of `spedec-neox` implement it.
//! - [`generate_autoregressive`]: the baseline, one target call per token.
//! - [`generate_speculative`]: γ draft tokens from the draft model, one target call to verify
//!   them, lossless rejection sampling (Leviathan et al. 2023; Chen et al. 2023);
//!   [`generate_speculative_with_gamma`] with [`GammaChoice::Auto`] picks γ per step from the
//!   measured acceptance and costs ([`GammaPolicy`]).
//! - [`SpecEngine`]: one speculative step wherever it runs (the host pair inside
//!   [`generate_speculative`]; the CUDA model's device step in `spedec-neox`), driven by
//!   [`generate_speculative_on`].
//! - [`GenConfig`] in, [`Generation`] (tokens, [`StopReason`], [`Stats`]) out.
//! - [`token_nll`] / [`target_nll`] / [`NllTotals`]: target, draft and "speculative" perplexity of scored text.

mod autoregressive;
mod config;
mod decide;
mod gamma;
mod ppl;
mod run;
mod speculative;
mod stats;
mod step;
mod verify;

pub use autoregressive::generate_autoregressive;
pub use config::{GenConfig, Generation, StopReason, EOS_TOKEN};
pub use gamma::{
    best_gamma, expected_tokens, AutoGamma, GammaChoice, GammaPolicy, StepObservation,
    MAX_AUTO_GAMMA,
};
pub use ppl::{target_nll, token_nll, NllTotals, Perplexities, TokenNll};
pub use run::check_prompt_fits;
pub use speculative::{
    generate_speculative, generate_speculative_on, generate_speculative_with_gamma,
};
pub use spedec_lm::{Lm, Logits};
pub use spedec_sampling::{Sampler, SamplingParams};
pub use stats::{Mode, Stats, Timing};
pub use step::{check_vocabularies, SpecEngine, Start, StepOutcome, StepTimes};

/// Hooks for tests: run the generators with a chosen source of randomness, or (with the
/// test-only feature `fault-injection`) with a deliberately broken acceptance rule, to show
/// that the statistical tests can tell.
#[doc(hidden)]
pub mod testing {
    pub use crate::autoregressive::autoregressive_with;
    pub use crate::decide::Decisions;
    #[cfg(feature = "fault-injection")]
    pub use crate::decide::Fault;
    #[cfg(feature = "fault-injection")]
    pub use crate::speculative::speculative_with;
}
