//! The random decisions a generator makes, behind a trait so tests can enumerate them.
//!
//! Every random choice of the generators is one of two kinds: draw a token from a distribution,
//! or accept with some probability. [`spedec_sampling::Rng`] answers both from its uniform
//! stream (inverse CDF; `u < prob`); a test can instead branch over every outcome and weigh it,
//! which yields the *exact* output distribution of the real code path.

use spedec_sampling::{Rng, SamplingError};

/// A source of the generators' random decisions.
pub trait Decisions {
    /// A token id drawn from `dist` (non-negative, positive mass; zero-mass ids never returned).
    fn categorical(&mut self, dist: &[f64]) -> Result<u32, SamplingError>;
    /// True with probability `prob` (clamped to [0, 1]).
    fn bernoulli(&mut self, prob: f64) -> bool;
}

impl Decisions for Rng {
    fn categorical(&mut self, dist: &[f64]) -> Result<u32, SamplingError> {
        self.sample(dist)
    }

    fn bernoulli(&mut self, prob: f64) -> bool {
        Rng::bernoulli(self, prob)
    }
}

/// Deliberate bugs, for showing that the distribution tests detect them. Public (as
/// `testing::Fault`) only with the test-only feature `fault-injection`; without it the
/// generators always run with [`Fault::None`].
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// The correct algorithm.
    #[default]
    None,
    /// Drafts are drawn from the processed q, but the acceptance ratio and residual use the
    /// draft's raw softmax (the bug of passing unprocessed draft probabilities to the verifier).
    RawDraftQ,
    /// After a rejection, draw the replacement from p instead of norm(max(0, p − q)).
    ResidualFromP,
    /// Verify against the target's raw softmax instead of its processed distribution.
    RawTargetP,
}
