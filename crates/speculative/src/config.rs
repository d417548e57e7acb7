//! What a generation run is asked to do ([`GenConfig`]) and what it returns ([`Generation`]).

use anyhow::{bail, Result};
use serde::Serialize;
use spedec_sampling::Sampler;

use crate::stats::Stats;

/// Pythia's `<|endoftext|>` token id.
pub const EOS_TOKEN: u32 = 0;

/// Settings of one generation run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GenConfig {
    /// Stop after this many new tokens (0 returns at once without calling the models).
    pub max_new_tokens: usize,
    /// Draft tokens per verify step (speculative only; must be >= 1 there). A run given a
    /// [`crate::GammaChoice`] (`generate_speculative_with_gamma`) uses that instead.
    pub gamma: usize,
    /// Greedy or random sampling; draft and target use the same processing.
    pub sampler: Sampler,
    /// Seed of the run's random stream ([`spedec_sampling::Rng`]); unused when greedy.
    pub seed: u64,
    /// Stop after emitting [`EOS_TOKEN`] (the EOS token is part of the output).
    pub stop_at_eos: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 200,
            gamma: 4,
            sampler: Sampler::Greedy,
            seed: 0,
            stop_at_eos: false,
        }
    }
}

impl GenConfig {
    /// Checks the sampler parameters.
    pub fn validate(&self) -> Result<()> {
        self.sampler.validate()?;
        Ok(())
    }

    /// Checks the sampler parameters and `gamma >= 1`.
    pub fn validate_speculative(&self) -> Result<()> {
        self.validate()?;
        if self.gamma == 0 {
            bail!("gamma (draft tokens per step) must be at least 1");
        }
        Ok(())
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `max_new_tokens` were generated.
    MaxNewTokens,
    /// [`EOS_TOKEN`] was emitted with `stop_at_eos` set.
    Eos,
    /// The target model's context (`max_len`) is full.
    ContextFull,
}

/// Result of a generation run.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// The new token ids (the prompt is not repeated).
    pub tokens: Vec<u32>,
    /// Why the run ended.
    pub stop_reason: StopReason,
    /// Counters and timings.
    pub stats: Stats,
}
