//! The baseline: prefill the prompt, then one target call per new token.
//!
//! On return the model's cache holds `prompt + tokens` without the last token (whose logits
//! were never needed). The model's cache is reset (`truncate(0)`) at the start.

use anyhow::Result;
use spedec_sampling::Rng;

use crate::config::{GenConfig, Generation, StopReason, EOS_TOKEN};
use crate::decide::Decisions;
use crate::run::{check_prompt, forward, forward_last, truncate};
use crate::stats::{Bucket, Mode, Recorder};
use crate::verify::choose;
use spedec_lm::Lm;

/// Generates up to `cfg.max_new_tokens` tokens after `prompt` with `model` alone
/// (`cfg.gamma` is ignored). Random sampling uses `Rng::new(cfg.seed)`.
pub fn generate_autoregressive<M: Lm + ?Sized>(
    model: &mut M,
    prompt: &[u32],
    cfg: &GenConfig,
) -> Result<Generation> {
    autoregressive_with(model, prompt, cfg, &mut Rng::new(cfg.seed))
}

/// [`generate_autoregressive`] with the random decisions taken from `decisions`.
pub fn autoregressive_with<M: Lm + ?Sized>(
    model: &mut M,
    prompt: &[u32],
    cfg: &GenConfig,
    decisions: &mut dyn Decisions,
) -> Result<Generation> {
    cfg.validate()?;
    check_prompt(prompt, model, "target")?;
    let mut rec = Recorder::new(Mode::Autoregressive, prompt.len(), 0);
    let mut tokens = Vec::new();
    if cfg.max_new_tokens == 0 {
        return Ok(Generation {
            tokens,
            stop_reason: StopReason::MaxNewTokens,
            stats: rec.finish(0),
        });
    }
    let max_len = model.max_len();
    truncate(model, 0, "target")?;
    rec.target_call();
    let mut logits = rec.time(Bucket::Prefill, || forward_last(model, prompt, "target"))?;
    let stop_reason = loop {
        let next = rec.time(Bucket::Sampling, || {
            choose(logits.last(), &cfg.sampler, decisions)
        })?;
        tokens.push(next);
        rec.first_token();
        if cfg.stop_at_eos && next == EOS_TOKEN {
            break StopReason::Eos;
        }
        if tokens.len() == cfg.max_new_tokens {
            break StopReason::MaxNewTokens;
        }
        // The cache holds every token but `next`; feeding it needs one more slot.
        if model.len() >= max_len {
            break StopReason::ContextFull;
        }
        rec.target_call();
        logits = rec.time(Bucket::Target, || forward(model, &[next], "target"))?;
    };
    let stats = rec.finish(tokens.len());
    Ok(Generation {
        tokens,
        stop_reason,
        stats,
    })
}
