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
//! The step itself runs behind [`SpecEngine`] (`crate::step`): on the host for any two [`Lm`]s
//! ([`generate_speculative`], the random stream above), or on a device
//! ([`generate_speculative_on`] with the CUDA model's device step, whose uniforms come from
//! Philox keyed by position, stream and step instead). This loop — γ per step, clipping,
//! emission, stopping, stats — is the same for both.
//!
//! On return the target's cache holds `prompt + tokens` without the last token; the draft's
//! holds a prefix of that, at most two tokens shorter (three after a final γ = 0 step, and more
//! only when the draft's context was full). Both caches are reset (`truncate(0)`) at the start.

use anyhow::{bail, Result};
use spedec_sampling::Rng;

use crate::config::{GenConfig, Generation, StopReason, EOS_TOKEN};
use crate::decide::{Decisions, Fault};
use crate::gamma::{GammaChoice, GammaPolicy, StepObservation};
use crate::stats::{Bucket, Mode, Recorder};
use crate::step::{HostSpec, SpecEngine, StepTimes};
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
    let mut engine = HostSpec::new(target, draft, decisions, fault)?;
    generate_speculative_on(&mut engine, prompt, cfg, gamma_choice)
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

fn add_times(rec: &mut Recorder, t: &StepTimes) {
    rec.add(Bucket::Draft, t.draft_s);
    rec.add(Bucket::Target, t.target_s);
    rec.add(Bucket::Sampling, t.sampling_s);
}

/// Speculative generation with the steps run by `engine` (the host pair behind
/// [`generate_speculative`], or a device engine), γ chosen by `gamma_choice` and clipped to
/// the engine's [`SpecEngine::max_gamma`]. `cfg.seed` keys a counter-based engine; the same
/// guarantees as [`generate_speculative`] hold for any correct engine.
pub fn generate_speculative_on(
    engine: &mut dyn SpecEngine,
    prompt: &[u32],
    cfg: &GenConfig,
    gamma_choice: &GammaChoice,
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
    engine.check_prompt(prompt)?;
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
    let (target_ctx, draft_ctx) = engine.max_len();
    let max_gamma = engine.max_gamma();
    if let GammaChoice::Fixed(g) = gamma_choice {
        if *g > max_gamma {
            log::warn!(
                "γ = {g} is more than this speculative step takes; its steps draft at most \
                 {max_gamma} tokens"
            );
        }
    }
    let sampler = &cfg.sampler;

    // Prefill both models; the first token comes from the target's last prompt row.
    rec.draft_call();
    rec.target_call();
    let start = engine.start(prompt, sampler, cfg.seed)?;
    rec.add(Bucket::Prefill, start.prefill_s);
    rec.add(Bucket::Sampling, start.sampling_s);
    let mut seq = prompt.to_vec();
    let first_stop = emit(&mut seq, start.first, prompt.len(), cfg);
    rec.first_token();

    let stop_reason = match first_stop {
        Some(reason) => reason,
        None => 'generate: loop {
            let n = seq.len();
            if n > target_ctx {
                break StopReason::ContextFull;
            }
            let remaining = cfg.max_new_tokens - (n - prompt.len());
            let wanted = match &mut policy {
                Some(p) => p.choose(),
                None => gamma_choice.max(),
            };
            let gamma = wanted
                .min(max_gamma)
                .min(remaining - 1)
                .min(target_ctx - n)
                .min((draft_ctx + 1).saturating_sub(n));

            let step = engine.step(&seq, gamma, sampler, cfg.stop_at_eos)?;
            for _ in 0..step.draft_calls {
                rec.draft_call();
            }
            rec.target_call();
            add_times(&mut rec, &step.times);
            if step.drafted > 0 {
                rec.verify_step(step.drafted, step.accepted.len());
                if let Some(p) = &mut policy {
                    p.observe(&StepObservation {
                        drafted: step.drafted,
                        accepted: step.accepted.len(),
                        draft_calls: step.draft_calls,
                        draft_s: step.draft_phase_s,
                        verify_rows: step.verify_rows,
                        verify_s: step.verify_phase_s,
                    });
                    log::debug!(
                        "auto γ: step drafted {} accepted {} (draft {:.3} ms over {} calls, \
                         verify {:.3} ms of {} rows); now α {:.3}, draft step {:.3} ms, \
                         verify line {:?} ms",
                        step.drafted,
                        step.accepted.len(),
                        step.draft_phase_s * 1e3,
                        step.draft_calls,
                        step.verify_phase_s * 1e3,
                        step.verify_rows,
                        p.alpha(),
                        p.draft_cost().unwrap_or(f64::NAN) * 1e3,
                        p.verify_line().map(|(a, b)| (a * 1e3, b * 1e3)),
                    );
                }
            }
            for &token in step.accepted.iter().chain([&step.next]) {
                if let Some(reason) = emit(&mut seq, token, prompt.len(), cfg) {
                    break 'generate reason;
                }
            }
        },
    };

    // Tokens after an EOS inside a step were verified but are not kept.
    let trimmed = engine.finish(seq.len() - 1)?;
    add_times(&mut rec, &trimmed);
    let tokens = seq.split_off(prompt.len());
    let stats = rec.finish(tokens.len());
    Ok(Generation {
        tokens,
        stop_reason,
        stats,
    })
}
