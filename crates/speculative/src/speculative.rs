//! Speculative decoding: the draft proposes γ tokens, the target verifies them in one call.
//!
//! Sequence `seq` = prompt + tokens emitted so far, `n = seq.len()`. Invariants at the top of
//! every step:
//! - the target's cache holds exactly `seq[..n-1]` (the last token is fed by the next call);
//! - the draft's cache holds `seq[..m]` for some `m <= n-1` — normally `n-1`, or `n-2` after a
//!   step that accepted all its drafts (the draft never ran on the last draft `d_γ`).
//!
//! A step: feed the draft the tokens it is missing (`seq[m..n]`, one or two) and take its last
//! row as q₁; draw `d₁ ~ q₁`; feed `d₁`, draw `d₂ ~ q₂`; … up to `d_γ` (the draft never runs on
//! `d_γ`). Run the target once on `[seq[n-1], d₁..d_γ]` (γ+1 rows: row i scores `d_{i+1}`, the
//! last row gives the bonus token). Accept `dᵢ` with probability `min(1, p(dᵢ)/q(dᵢ))`; at the
//! first rejection draw the replacement from `norm(max(0, p − q))`; if all are accepted draw the
//! bonus from the last row. Greedy: accept while `dᵢ` is the target's argmax, then emit the
//! target's argmax. Roll the target back to `n + accepted` (`seq[n-1]` and the accepted drafts)
//! and the draft to at most that.
//!
//! The first token is drawn from the target's prefill logits (no drafting), so TTFT covers the
//! prefill of both models. Each step's γ is the fixed one or, with [`GammaChoice::Auto`], the
//! policy's choice from the steps before ([`crate::gamma`]); either is clipped so a step never
//! emits past `max_new_tokens` or past either model's context; a step with γ = 0 is a plain
//! target decode. Drafting stops early at EOS when `stop_at_eos` is set (drafts after it could
//! never be emitted).
//!
//! Random stream (random mode; greedy uses none), in order: one draw for the first token; then
//! per step the γ draft draws, one uniform per examined draft (`u < min(1, p/q)`), and one
//! draw for the replacement or bonus token.
//!
//! On return the target's cache holds `prompt + tokens` without the last token; the draft's
//! holds a prefix of that, at most two tokens shorter (three after a final γ = 0 step, and more
//! only when the draft's context was full). Both caches are reset (`truncate(0)`) at the start.

use std::time::Instant;

use anyhow::{bail, ensure, Result};
use spedec_sampling::Rng;

use crate::config::{GenConfig, Generation, StopReason, EOS_TOKEN};
use crate::decide::{Decisions, Fault};
use crate::gamma::{GammaChoice, GammaPolicy, StepObservation};
use crate::run::{check_prompt, forward, forward_last, truncate};
use crate::stats::{Bucket, Mode, Recorder};
use crate::verify::{choose, draw_draft, verify};
use spedec_lm::Lm;

/// Generates up to `cfg.max_new_tokens` tokens after `prompt` with `target`, drafting `cfg.gamma`
/// tokens per step with `draft`. The output is distributed exactly as the target's own sampling
/// with `cfg.sampler`; in greedy mode it is token-for-token the target's greedy output (given a
/// batch-invariant target). Random sampling uses `Rng::new(cfg.seed)`; its stream is consumed
/// differently from [`crate::generate_autoregressive`], so the two give different samples.
pub fn generate_speculative<T: Lm + ?Sized, D: Lm + ?Sized>(
    target: &mut T,
    draft: &mut D,
    prompt: &[u32],
    cfg: &GenConfig,
) -> Result<Generation> {
    generate_speculative_with_gamma(target, draft, prompt, cfg, &GammaChoice::Fixed(cfg.gamma))
}

/// [`generate_speculative`] with γ chosen by `gamma` (`cfg.gamma` is not used): a fixed γ, or
/// [`GammaChoice::Auto`], which picks each step's γ from the acceptance and the costs the run
/// measured so far. Greedy output is the target's greedy output either way; with `Auto` and
/// random sampling, the sample drawn for a seed depends on those timings.
pub fn generate_speculative_with_gamma<T: Lm + ?Sized, D: Lm + ?Sized>(
    target: &mut T,
    draft: &mut D,
    prompt: &[u32],
    cfg: &GenConfig,
    gamma: &GammaChoice,
) -> Result<Generation> {
    speculative_with(
        target,
        draft,
        prompt,
        cfg,
        gamma,
        &mut Rng::new(cfg.seed),
        Fault::None,
    )
}

/// Appends `token`; says whether generation must stop after it.
fn emit(seq: &mut Vec<u32>, token: u32, prompt_len: usize, cfg: &GenConfig) -> Option<StopReason> {
    seq.push(token);
    if cfg.stop_at_eos && token == EOS_TOKEN {
        Some(StopReason::Eos)
    } else if seq.len() - prompt_len == cfg.max_new_tokens {
        Some(StopReason::MaxNewTokens)
    } else {
        None
    }
}

/// [`generate_speculative_with_gamma`] with the random decisions taken from `decisions` and an
/// optional deliberate [`Fault`] (tests only: exported as `testing::speculative_with` with the
/// feature `fault-injection`).
pub fn speculative_with<T: Lm + ?Sized, D: Lm + ?Sized>(
    target: &mut T,
    draft: &mut D,
    prompt: &[u32],
    cfg: &GenConfig,
    gamma_choice: &GammaChoice,
    decisions: &mut dyn Decisions,
    fault: Fault,
) -> Result<Generation> {
    cfg.validate()?;
    let mut policy = match gamma_choice {
        GammaChoice::Fixed(0) => bail!("gamma (draft tokens per step) must be at least 1"),
        GammaChoice::Fixed(_) => None,
        GammaChoice::Auto(auto) => {
            auto.validate()?;
            Some(GammaPolicy::new(*auto))
        }
    };
    if draft.vocab_size() != target.vocab_size() {
        bail!(
            "the draft model's vocabulary ({}) differs from the target's ({}): their token ids \
             and distributions cannot be compared",
            draft.vocab_size(),
            target.vocab_size()
        );
    }
    check_prompt(prompt, target, "target")?;
    check_prompt(prompt, draft, "draft")?;
    let mut rec = Recorder::new(Mode::Speculative, prompt.len(), gamma_choice.max());
    rec.set_gamma_auto(gamma_choice.is_auto());
    if cfg.max_new_tokens == 0 {
        let stats = rec.finish(0);
        return Ok(Generation {
            tokens: Vec::new(),
            stop_reason: StopReason::MaxNewTokens,
            stats,
        });
    }
    let (target_ctx, draft_ctx) = (target.max_len(), draft.max_len());
    let sampler = &cfg.sampler;
    truncate(target, 0, "target")?;
    truncate(draft, 0, "draft")?;

    // Prefill both models; the first token comes from the target's last prompt row.
    rec.draft_call();
    rec.time(Bucket::Prefill, || forward_last(draft, prompt, "draft"))?;
    rec.target_call();
    let logits = rec.time(Bucket::Prefill, || forward_last(target, prompt, "target"))?;
    let first = rec.time(Bucket::Sampling, || {
        choose(logits.last(), sampler, decisions)
    })?;
    let mut seq = prompt.to_vec();
    let first_stop = emit(&mut seq, first, prompt.len(), cfg);
    rec.first_token();

    let stop_reason = match first_stop {
        Some(reason) => reason,
        None => 'generate: loop {
            let n = seq.len();
            if n > target_ctx {
                break StopReason::ContextFull;
            }
            let remaining = cfg.max_new_tokens - (n - prompt.len());
            let wanted = match &policy {
                Some(p) => p.choose(),
                None => gamma_choice.max(),
            };
            let gamma = wanted
                .min(remaining - 1)
                .min(target_ctx - n)
                .min((draft_ctx + 1).saturating_sub(n));

            // Draft γ tokens (the draft first catches up on the tokens it has not seen).
            let draft_start = Instant::now();
            let mut draft_calls = 0;
            let mut drafts = Vec::with_capacity(gamma);
            if gamma > 0 {
                let m = draft.len();
                ensure!(
                    m < n,
                    "internal: the draft cache ({m}) is not behind the sequence ({n})"
                );
                let pending = seq[m..].to_vec();
                rec.draft_call();
                draft_calls += 1;
                let mut logits =
                    rec.time(Bucket::Draft, || forward_last(draft, &pending, "draft"))?;
                loop {
                    let d = rec.time(Bucket::Sampling, || {
                        draw_draft(logits.last(), sampler, decisions, fault)
                    })?;
                    let token = d.token;
                    drafts.push(d);
                    if drafts.len() == gamma || (cfg.stop_at_eos && token == EOS_TOKEN) {
                        break;
                    }
                    rec.draft_call();
                    draft_calls += 1;
                    logits = rec.time(Bucket::Draft, || forward(draft, &[token], "draft"))?;
                }
            }
            let verify_start = Instant::now();

            // Verify all drafts with one target call, then roll both caches back.
            let mut fed = Vec::with_capacity(drafts.len() + 1);
            fed.push(seq[n - 1]);
            fed.extend(drafts.iter().map(|d| d.token));
            rec.target_call();
            let logits = rec.time(Bucket::Target, || forward(target, &fed, "target"))?;
            let verdict = rec.time(Bucket::Sampling, || {
                verify(&logits, &drafts, sampler, decisions, fault)
            })?;
            let kept = n + verdict.accepted;
            rec.time(Bucket::Target, || truncate(target, kept, "target"))?;
            let verify_s = verify_start.elapsed().as_secs_f64();
            if draft.len() > kept {
                rec.time(Bucket::Draft, || truncate(draft, kept, "draft"))?;
            }
            if !drafts.is_empty() {
                rec.verify_step(drafts.len(), verdict.accepted);
                if let Some(p) = &mut policy {
                    p.observe(&StepObservation {
                        drafted: drafts.len(),
                        accepted: verdict.accepted,
                        draft_calls,
                        draft_s: (verify_start - draft_start).as_secs_f64(),
                        verify_rows: fed.len(),
                        verify_s,
                    });
                }
            }

            let accepted = drafts[..verdict.accepted].iter().map(|d| d.token);
            for token in accepted.chain([verdict.next]) {
                if let Some(reason) = emit(&mut seq, token, prompt.len(), cfg) {
                    break 'generate reason;
                }
            }
        },
    };

    // Tokens after an EOS inside a step were verified but are not kept.
    let keep = seq.len() - 1;
    if target.len() > keep {
        rec.time(Bucket::Target, || truncate(target, keep, "target"))?;
    }
    if draft.len() > keep {
        rec.time(Bucket::Draft, || truncate(draft, keep, "draft"))?;
    }
    let tokens = seq.split_off(prompt.len());
    let stats = rec.finish(tokens.len());
    Ok(Generation {
        tokens,
        stop_reason,
        stats,
    })
}
