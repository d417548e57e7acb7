//! The error type of every fallible function in this crate.

/// What went wrong while processing logits or sampling.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// Temperature must be finite and strictly positive (greedy is its own mode).
    #[error("temperature must be finite and > 0 (got {0}); use greedy decoding for temperature 0")]
    InvalidTemperature(f32),
    /// top_p must lie in (0, 1]; 1 disables nucleus filtering.
    #[error("top_p must be in (0, 1] (got {0}); 1.0 disables top-p")]
    InvalidTopP(f32),
    /// A logits row of length 0.
    #[error("logits row is empty")]
    EmptyLogits,
    /// NaN or +inf in a logits row (−inf is allowed: it masks a token).
    #[error("logit {index} is {value}: NaN and +inf logits are not allowed")]
    BadLogit {
        /// Token id of the offending entry.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// Every logit is −inf, so no token can be chosen.
    #[error("every logit is -inf: no token can be chosen")]
    AllMasked,
    /// Two distributions over different vocabularies.
    #[error("distributions have different lengths ({left} vs {right})")]
    LengthMismatch {
        /// Length of the first argument.
        left: usize,
        /// Length of the second argument.
        right: usize,
    },
    /// A vector that is not a (possibly unnormalised) probability distribution.
    #[error("not a probability distribution: {0}")]
    BadDistribution(String),
    /// A token id outside the distribution.
    #[error("token {token} is out of range for a vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The id asked for.
        token: usize,
        /// Length of the distribution.
        vocab: usize,
    },
    /// A uniform variate outside [0, 1).
    #[error("uniform variate {0} is outside [0, 1)")]
    BadUniform(f64),
}
