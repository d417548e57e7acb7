//! Sampling parameters: greedy, or temperature → top-k → top-p, validated up front.

use serde::{Deserialize, Serialize};

use crate::error::SamplingError;
use crate::process::{argmax, one_hot, process};

/// Parameters of random sampling, applied in HF's order: temperature, then top-k, then top-p.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Logits are divided by this; finite and > 0 (1.0 leaves them unchanged).
    pub temperature: f32,
    /// Keep the `top_k` highest logits (plus every token tied with the k-th); 0 disables it.
    pub top_k: usize,
    /// Keep the smallest most-probable set whose mass reaches `top_p`; in (0, 1], 1.0 disables it.
    pub top_p: f32,
}

impl Default for SamplingParams {
    /// Plain sampling from the softmax: temperature 1, no top-k, no top-p.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

impl SamplingParams {
    /// Builds and validates parameters.
    pub fn new(temperature: f32, top_k: usize, top_p: f32) -> Result<Self, SamplingError> {
        let params = Self {
            temperature,
            top_k,
            top_p,
        };
        params.validate()?;
        Ok(params)
    }

    /// Checks `temperature` is finite and > 0 and `top_p` is in (0, 1].
    pub fn validate(&self) -> Result<(), SamplingError> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(SamplingError::InvalidTemperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::InvalidTopP(self.top_p));
        }
        Ok(())
    }
}

/// How the next token is chosen from a logits row.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Sampler {
    /// Argmax (ties go to the lowest token id): the temperature → 0 limit.
    #[default]
    Greedy,
    /// Draw from the processed distribution.
    Random(SamplingParams),
}

impl Sampler {
    /// The usual command-line convention: temperature 0 means greedy (top-k / top-p are still
    /// validated but have no effect), anything else is random sampling with these parameters.
    pub fn from_temperature(
        temperature: f32,
        top_k: usize,
        top_p: f32,
    ) -> Result<Self, SamplingError> {
        if temperature == 0.0 {
            SamplingParams::new(1.0, top_k, top_p)?;
            Ok(Sampler::Greedy)
        } else {
            Ok(Sampler::Random(SamplingParams::new(
                temperature,
                top_k,
                top_p,
            )?))
        }
    }

    /// Validates the parameters of a random sampler (greedy is always valid).
    pub fn validate(&self) -> Result<(), SamplingError> {
        match self {
            Sampler::Greedy => Ok(()),
            Sampler::Random(params) => params.validate(),
        }
    }

    /// True for [`Sampler::Greedy`].
    pub fn is_greedy(&self) -> bool {
        matches!(self, Sampler::Greedy)
    }

    /// The distribution a token is drawn from: one-hot on the argmax for greedy, the processed
    /// distribution ([`process`]) otherwise. Length = `logits.len()`.
    pub fn distribution(&self, logits: &[f32]) -> Result<Vec<f64>, SamplingError> {
        match self {
            Sampler::Greedy => Ok(one_hot(logits.len(), argmax(logits)?)),
            Sampler::Random(params) => process(logits, params),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rejects_bad_parameters() {
        for t in [0.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert!(matches!(
                SamplingParams::new(t, 0, 1.0),
                Err(SamplingError::InvalidTemperature(_))
            ));
        }
        for p in [0.0, -0.1, 1.0001, f32::NAN] {
            assert!(matches!(
                SamplingParams::new(1.0, 0, p),
                Err(SamplingError::InvalidTopP(_))
            ));
        }
        assert!(SamplingParams::new(1e-6, 5, 1e-6).is_ok());
        assert!(SamplingParams::new(100.0, 0, 1.0).is_ok());
        let bad = Sampler::Random(SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
        });
        assert!(bad.validate().is_err());
        assert!(bad.distribution(&[1.0, 2.0]).is_err());
    }

    #[test]
    fn temperature_zero_means_greedy() {
        assert_eq!(
            Sampler::from_temperature(0.0, 0, 1.0).unwrap(),
            Sampler::Greedy
        );
        assert!(Sampler::from_temperature(0.0, 0, 2.0).is_err());
        assert_eq!(
            Sampler::from_temperature(0.7, 3, 0.9).unwrap(),
            Sampler::Random(SamplingParams {
                temperature: 0.7,
                top_k: 3,
                top_p: 0.9
            })
        );
        assert!(Sampler::from_temperature(-0.5, 0, 1.0).is_err());
    }

    #[test]
    fn greedy_distribution_is_one_hot_on_lowest_argmax() {
        let d = Sampler::Greedy
            .distribution(&[1.0, 3.0, 3.0, -2.0])
            .unwrap();
        assert_eq!(d, vec![0.0, 1.0, 0.0, 0.0]);
    }
}
