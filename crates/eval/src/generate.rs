//! `spedec generate`: autoregressive or speculative continuations of a prompt.

use anyhow::{bail, Result};
use serde::Serialize;
use spedec_sampling::derive_seed;
use spedec_speculative::{generate_autoregressive, GammaChoice, GenConfig, Stats, StopReason};

use crate::models::{check_draft, LoadedModel};
use crate::spec_step::{generate_spec, SpecStep};

/// One generated continuation, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Index of the sample (0-based) and its derived seed.
    pub sample: usize,
    pub seed: u64,
    /// Prompt token ids.
    pub prompt_tokens: Vec<u32>,
    /// Generated token ids (the prompt not repeated).
    pub tokens: Vec<u32>,
    /// Generated text.
    pub text: String,
    pub stop_reason: StopReason,
    pub stats: Stats,
}

/// Generates `samples` continuations of `prompt`; sample `i` uses seed `derive_seed(seed, i)`
/// (sample 0 of a single-sample run uses `seed` itself, so `--seed S` reproduces it alone).
/// With a draft, each step drafts as `gamma` says (`cfg.gamma` is not used) and runs where
/// `step` says.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    target: &mut LoadedModel,
    mut draft: Option<&mut LoadedModel>,
    prompt: &str,
    cfg: GenConfig,
    gamma: GammaChoice,
    step: SpecStep,
    samples: usize,
    mut emit: impl FnMut(&Sample) -> Result<()>,
) -> Result<()> {
    if prompt.is_empty() {
        bail!("--prompt is empty: give at least one character of text to continue");
    }
    if samples == 0 {
        bail!("--samples must be at least 1");
    }
    if let Some(d) = draft.as_deref() {
        check_draft(target, d)?;
    }
    let prompt_tokens = target.tokenizer.encode(prompt)?;
    for i in 0..samples {
        let seed = if samples == 1 {
            cfg.seed
        } else {
            derive_seed(cfg.seed, i as u64)
        };
        let run = GenConfig { seed, ..cfg };
        let generation = match draft.as_deref_mut() {
            Some(d) => generate_spec(
                target.lm.as_mut(),
                d.lm.as_mut(),
                &prompt_tokens,
                &run,
                &gamma,
                step,
            )?,
            None => generate_autoregressive(target.lm.as_mut(), &prompt_tokens, &run)?,
        };
        let text = target.tokenizer.decode(&generation.tokens)?;
        emit(&Sample {
            sample: i,
            seed,
            prompt_tokens: prompt_tokens.clone(),
            tokens: generation.tokens,
            text,
            stop_reason: generation.stop_reason,
            stats: generation.stats,
        })?;
    }
    Ok(())
}
