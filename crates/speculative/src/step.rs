//! One speculative step behind a trait, so that the loop around it (γ per step, emission,
//! stopping, stats: `crate::speculative`) is one piece of code wherever the step runs.
//!
//! [`SpecEngine`] is what the loop needs: prefill both models and pick the first token, run a
//! step (draft γ tokens, verify them with one target call, accept or reject, roll both caches
//! back), and trim the caches at the end. Two implementations:
//!
//! - [`HostSpec`] (this module): any two [`Lm`]s; every forward returns its logits to the
//!   host and `spedec-sampling` draws and decides there, with the random decisions taken from
//!   a [`Decisions`] source in the documented order (`crate::speculative`).
//! - the CUDA model's device step (`spedec_neox::cuda_model::DeviceSpec`): logits, sampling
//!   and the decision stay on the GPU, random numbers come from Philox keyed by
//!   (seed, position, stream, step), and the host reads back a few integers per step.
//!
//! Both follow the same algorithm (Leviathan et al. 2023, Chen et al. 2023) with the same
//! processing (temperature → top-k → top-p) and the same decision rule; they differ only in
//! where their uniforms come from, so greedy output is identical and sampled output has the
//! same distribution.

use std::time::Instant;

use anyhow::{bail, ensure, Result};
use spedec_lm::Lm;
use spedec_sampling::Sampler;

use crate::config::EOS_TOKEN;
use crate::decide::{Decisions, Fault};
use crate::run::{check_prompt, forward, forward_last, truncate};
use crate::verify::{choose, draw_draft, verify};

/// Seconds spent, by where they went (the buckets of [`crate::Timing`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes {
    /// Draft forwards and draft cache rollbacks (a device engine: its whole draft phase, the
    /// token picks between its forwards included).
    pub draft_s: f64,
    /// Target forwards and target cache rollbacks.
    pub target_s: f64,
    /// Sampling and the accept / reject decision, where they run apart from the forwards.
    pub sampling_s: f64,
}

/// What [`SpecEngine::start`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Start {
    /// The first new token, picked from the target's last prompt row.
    pub first: u32,
    /// Both prefills (`prefill_s`) and the pick (`sampling_s`).
    pub prefill_s: f64,
    pub sampling_s: f64,
}

/// What one [`SpecEngine::step`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// Draft tokens proposed (the step's γ, fewer when drafting stopped at an EOS).
    pub drafted: usize,
    /// The accepted drafts, in order (a prefix of the proposed ones).
    pub accepted: Vec<u32>,
    /// The token after them: the replacement at the first rejection, else the bonus token.
    pub next: u32,
    /// Draft forwards run.
    pub draft_calls: usize,
    /// Where the step's time went.
    pub times: StepTimes,
    /// For the γ policy: seconds from the step's start to the verify's start (drafting:
    /// forwards and draws) and from there to the end (verify forward, decision, rollback).
    pub draft_phase_s: f64,
    pub verify_phase_s: f64,
    /// Rows of the verify forward (`drafted + 1`).
    pub verify_rows: usize,
}

/// One speculative step, wherever the models run. Sequence `seq` = prompt + tokens emitted;
/// at each [`SpecEngine::step`] the target's cache holds `seq[..n-1]` and the draft's a prefix
/// of `seq[..n]` (its gaps are the engine's business).
pub trait SpecEngine {
    /// The vocabulary both models share.
    fn vocab_size(&self) -> usize;

    /// Positions the target's and the draft's caches hold: `(target, draft)`.
    fn max_len(&self) -> (usize, usize);

    /// The largest γ one step takes (the loop clips its choice to it).
    fn max_gamma(&self) -> usize {
        usize::MAX
    }

    /// Checks that `prompt` is non-empty, its ids are in the vocabulary and it fits both
    /// models' contexts.
    fn check_prompt(&self, prompt: &[u32]) -> Result<()>;

    /// Resets both caches, prefills `prompt` into both and picks the first new token from the
    /// target's last row. `seed` keys an engine whose randomness is counter-based (the device
    /// step); [`HostSpec`] draws from the [`Decisions`] it was built with instead.
    fn start(&mut self, prompt: &[u32], sampler: &Sampler, seed: u64) -> Result<Start>;

    /// Drafts `gamma` tokens after `seq` (fewer when `stop_at_eos` and a draft is EOS;
    /// `gamma = 0` is a plain target decode), verifies them with one target call and decides;
    /// on return the target's cache holds `seq[..n] + accepted` and the draft's at most that.
    fn step(
        &mut self,
        seq: &[u32],
        gamma: usize,
        sampler: &Sampler,
        stop_at_eos: bool,
    ) -> Result<StepOutcome>;

    /// Trims both caches to at most `len` positions; returns the seconds spent (draft, target).
    fn finish(&mut self, len: usize) -> Result<StepTimes>;
}

/// [`SpecEngine`] over two [`Lm`]s, sampling on the host (`spedec-sampling`), the random
/// decisions from `decisions` in the documented order, with an optional deliberate [`Fault`]
/// (tests only).
pub(crate) struct HostSpec<'a, T: Lm + ?Sized, D: Lm + ?Sized> {
    target: &'a mut T,
    draft: &'a mut D,
    decisions: &'a mut dyn Decisions,
    fault: Fault,
}

impl<'a, T: Lm + ?Sized, D: Lm + ?Sized> HostSpec<'a, T, D> {
    /// The pair, refused when the vocabularies differ.
    pub(crate) fn new(
        target: &'a mut T,
        draft: &'a mut D,
        decisions: &'a mut dyn Decisions,
        fault: Fault,
    ) -> Result<Self> {
        check_vocabularies(target.vocab_size(), draft.vocab_size())?;
        Ok(HostSpec {
            target,
            draft,
            decisions,
            fault,
        })
    }
}

/// The error when draft and target vocabularies differ.
pub fn check_vocabularies(target: usize, draft: usize) -> Result<()> {
    if draft != target {
        bail!(
            "the draft model's vocabulary ({draft}) differs from the target's ({target}): their \
             token ids and distributions cannot be compared"
        );
    }
    Ok(())
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

impl<T: Lm + ?Sized, D: Lm + ?Sized> SpecEngine for HostSpec<'_, T, D> {
    fn vocab_size(&self) -> usize {
        self.target.vocab_size()
    }

    fn max_len(&self) -> (usize, usize) {
        (self.target.max_len(), self.draft.max_len())
    }

    fn check_prompt(&self, prompt: &[u32]) -> Result<()> {
        check_prompt(prompt, &*self.target, "target")?;
        check_prompt(prompt, &*self.draft, "draft")
    }

    fn start(&mut self, prompt: &[u32], sampler: &Sampler, _seed: u64) -> Result<Start> {
        truncate(self.target, 0, "target")?;
        truncate(self.draft, 0, "draft")?;
        let t = Instant::now();
        forward_last(self.draft, prompt, "draft")?;
        let logits = forward_last(self.target, prompt, "target")?;
        let prefill_s = secs(t);
        let t = Instant::now();
        let first = choose(logits.last(), sampler, self.decisions)?;
        Ok(Start {
            first,
            prefill_s,
            sampling_s: secs(t),
        })
    }

    fn step(
        &mut self,
        seq: &[u32],
        gamma: usize,
        sampler: &Sampler,
        stop_at_eos: bool,
    ) -> Result<StepOutcome> {
        let n = seq.len();
        let mut times = StepTimes::default();
        let step_start = Instant::now();
        let mut draft_calls = 0;
        let mut drafts = Vec::with_capacity(gamma);
        if gamma > 0 {
            // The draft first catches up on the tokens it has not seen.
            let m = self.draft.len();
            ensure!(
                m < n,
                "internal: the draft cache ({m}) is not behind the sequence ({n})"
            );
            let t = Instant::now();
            let mut logits = forward_last(self.draft, &seq[m..], "draft")?;
            times.draft_s += secs(t);
            draft_calls += 1;
            loop {
                let t = Instant::now();
                let d = draw_draft(logits.last(), sampler, self.decisions, self.fault)?;
                times.sampling_s += secs(t);
                let token = d.token;
                drafts.push(d);
                if drafts.len() == gamma || (stop_at_eos && token == EOS_TOKEN) {
                    break;
                }
                let t = Instant::now();
                logits = forward(self.draft, &[token], "draft")?;
                times.draft_s += secs(t);
                draft_calls += 1;
            }
        }
        let verify_start = Instant::now();

        // Verify all drafts with one target call, then roll both caches back.
        let mut fed = Vec::with_capacity(drafts.len() + 1);
        fed.push(seq[n - 1]);
        fed.extend(drafts.iter().map(|d| d.token));
        let t = Instant::now();
        let logits = forward(self.target, &fed, "target")?;
        times.target_s += secs(t);
        let t = Instant::now();
        let verdict = verify(&logits, &drafts, sampler, self.decisions, self.fault)?;
        times.sampling_s += secs(t);
        let kept = n + verdict.accepted;
        let t = Instant::now();
        truncate(self.target, kept, "target")?;
        times.target_s += secs(t);
        let verify_phase_s = secs(verify_start);
        if self.draft.len() > kept {
            let t = Instant::now();
            truncate(self.draft, kept, "draft")?;
            times.draft_s += secs(t);
        }
        Ok(StepOutcome {
            drafted: drafts.len(),
            accepted: drafts[..verdict.accepted].iter().map(|d| d.token).collect(),
            next: verdict.next,
            draft_calls,
            times,
            draft_phase_s: (verify_start - step_start).as_secs_f64(),
            verify_phase_s,
            verify_rows: fed.len(),
        })
    }

    fn finish(&mut self, len: usize) -> Result<StepTimes> {
        let mut times = StepTimes::default();
        if self.target.len() > len {
            let t = Instant::now();
            truncate(self.target, len, "target")?;
            times.target_s = secs(t);
        }
        if self.draft.len() > len {
            let t = Instant::now();
            truncate(self.draft, len, "draft")?;
            times.draft_s = secs(t);
        }
        Ok(times)
    }
}
