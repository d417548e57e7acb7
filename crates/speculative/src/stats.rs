//! Per-run counters and timings, with vLLM's definitions of the speculative metrics.
//!
//! - `acceptance_rate` = accepted / drafted.
//! - `mean_accepted_length` = tokens emitted per verify step, the correction / bonus token
//!   included: `1 + accepted / verify_steps` (= Σ (j + 1)·hist[j] / Σ hist[j]).
//! - `acceptance_per_position[i]` = (steps whose draft i was accepted) / (steps that drafted i).
//! - `accepted_length_histogram[j]` = verify steps that accepted exactly j drafts, j in 0..=γ;
//!   it sums to `verify_steps`.
//! - `gamma_histogram[g]` = verify steps that drafted exactly g tokens, g in 0..=γ (γ the
//!   configured one, or the largest `auto` may pick); it sums to `verify_steps`, and
//!   Σ g·`gamma_histogram[g]` = `drafted`. With a fixed γ only clipped steps fall below γ.
//!
//! A *verify step* is a target call that checks at least one draft token. Target calls that only
//! decode (γ clipped to 0 at the very end of the budget, or when the draft's context is full)
//! count in `target_calls`, not in the acceptance metrics.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Which generator produced the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One target call per token.
    Autoregressive,
    /// Draft, then verify.
    Speculative,
}

/// Wall-clock split of a run, in seconds (`std::time::Instant`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    /// Prefill forward calls (both models in speculative mode).
    pub prefill_s: f64,
    /// Draft forward calls after the prefill, plus draft cache rollbacks.
    pub draft_s: f64,
    /// Target decode / verify forward calls after the prefill, plus target cache rollbacks.
    pub target_s: f64,
    /// Logits processing, acceptance tests and token draws.
    pub sampling_s: f64,
    /// Whole run, validation to return.
    pub total_s: f64,
    /// Time to first token: start to the first new token (covers every prefill).
    pub ttft_s: Option<f64>,
    /// Time per output token after the first: (total − TTFT) / (new tokens − 1).
    pub tpot_s: Option<f64>,
    /// New tokens per second of `total_s`.
    pub throughput_tok_s: Option<f64>,
}

/// Counters of one run; see the module docs for the definitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Generator.
    pub mode: Mode,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub new_tokens: usize,
    /// Configured draft length γ (0 for autoregressive); with `gamma_auto`, the largest γ
    /// the automatic choice may pick.
    pub gamma: usize,
    /// Whether γ was chosen per step (`--gamma auto`).
    pub gamma_auto: bool,
    /// Target forward calls, prefill included.
    pub target_calls: usize,
    /// Draft forward calls, prefill included.
    pub draft_calls: usize,
    /// Target calls that verified at least one draft token.
    pub verify_steps: usize,
    /// Draft tokens proposed.
    pub drafted: usize,
    /// Draft tokens accepted.
    pub accepted: usize,
    /// accepted / drafted.
    pub acceptance_rate: Option<f64>,
    /// Tokens emitted per verify step, correction / bonus token included.
    pub mean_accepted_length: Option<f64>,
    /// Steps that drafted position i (length γ).
    pub drafted_per_position: Vec<usize>,
    /// Steps that accepted position i (length γ).
    pub accepted_per_position: Vec<usize>,
    /// accepted_per_position / drafted_per_position.
    pub acceptance_per_position: Vec<Option<f64>>,
    /// Verify steps by number of accepted drafts, index 0..=γ.
    pub accepted_length_histogram: Vec<usize>,
    /// Verify steps by number of drafted tokens (the γ each step used), index 0..=γ.
    pub gamma_histogram: Vec<usize>,
    /// Where the time went.
    pub timing: Timing,
}

/// The time buckets of [`Timing`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bucket {
    Prefill,
    Draft,
    Target,
    Sampling,
}

/// Collects counters and timings while a generator runs.
pub(crate) struct Recorder {
    start: Instant,
    ttft: Option<Duration>,
    times: [Duration; 4],
    stats: Stats,
}

fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

impl Recorder {
    pub(crate) fn new(mode: Mode, prompt_tokens: usize, gamma: usize) -> Self {
        let (per_pos, hist) = match mode {
            Mode::Autoregressive => (0, 0),
            Mode::Speculative => (gamma, gamma + 1),
        };
        Self {
            start: Instant::now(),
            ttft: None,
            times: [Duration::ZERO; 4],
            stats: Stats {
                mode,
                prompt_tokens,
                new_tokens: 0,
                gamma,
                gamma_auto: false,
                target_calls: 0,
                draft_calls: 0,
                verify_steps: 0,
                drafted: 0,
                accepted: 0,
                acceptance_rate: None,
                mean_accepted_length: None,
                drafted_per_position: vec![0; per_pos],
                accepted_per_position: vec![0; per_pos],
                acceptance_per_position: vec![None; per_pos],
                accepted_length_histogram: vec![0; hist],
                gamma_histogram: vec![0; hist],
                timing: Timing {
                    prefill_s: 0.0,
                    draft_s: 0.0,
                    target_s: 0.0,
                    sampling_s: 0.0,
                    total_s: 0.0,
                    ttft_s: None,
                    tpot_s: None,
                    throughput_tok_s: None,
                },
            },
        }
    }

    /// Runs `f`, adding its wall time to `bucket`.
    pub(crate) fn time<R>(&mut self, bucket: Bucket, f: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = f();
        self.times[bucket as usize] += t.elapsed();
        r
    }

    /// Adds `secs` seconds measured elsewhere (by a [`crate::SpecEngine`]) to `bucket`.
    pub(crate) fn add(&mut self, bucket: Bucket, secs: f64) {
        self.times[bucket as usize] += Duration::from_secs_f64(secs.max(0.0));
    }

    /// Marks γ as chosen per step.
    pub(crate) fn set_gamma_auto(&mut self, auto: bool) {
        self.stats.gamma_auto = auto;
    }

    pub(crate) fn target_call(&mut self) {
        self.stats.target_calls += 1;
    }

    pub(crate) fn draft_call(&mut self) {
        self.stats.draft_calls += 1;
    }

    /// Marks the first new token as out (only the first call counts).
    pub(crate) fn first_token(&mut self) {
        if self.ttft.is_none() {
            self.ttft = Some(self.start.elapsed());
        }
    }

    /// Records a verify step that drafted `drafted >= 1` tokens and accepted `accepted`.
    pub(crate) fn verify_step(&mut self, drafted: usize, accepted: usize) {
        let s = &mut self.stats;
        s.verify_steps += 1;
        s.drafted += drafted;
        s.accepted += accepted;
        for i in 0..drafted {
            s.drafted_per_position[i] += 1;
        }
        for i in 0..accepted {
            s.accepted_per_position[i] += 1;
        }
        s.accepted_length_histogram[accepted] += 1;
        s.gamma_histogram[drafted] += 1;
    }

    /// Fills the derived fields and returns the stats.
    pub(crate) fn finish(mut self, new_tokens: usize) -> Stats {
        let total = self.start.elapsed();
        let secs = |d: Duration| d.as_secs_f64();
        let s = &mut self.stats;
        s.new_tokens = new_tokens;
        s.acceptance_rate = ratio(s.accepted, s.drafted);
        s.mean_accepted_length = ratio(s.accepted + s.verify_steps, s.verify_steps);
        s.acceptance_per_position = s
            .accepted_per_position
            .iter()
            .zip(&s.drafted_per_position)
            .map(|(&a, &d)| ratio(a, d))
            .collect();
        let t = &mut s.timing;
        t.prefill_s = secs(self.times[Bucket::Prefill as usize]);
        t.draft_s = secs(self.times[Bucket::Draft as usize]);
        t.target_s = secs(self.times[Bucket::Target as usize]);
        t.sampling_s = secs(self.times[Bucket::Sampling as usize]);
        t.total_s = secs(total);
        t.ttft_s = self.ttft.map(secs);
        t.tpot_s = match self.ttft {
            Some(ttft) if new_tokens >= 2 => {
                Some(secs(total.saturating_sub(ttft)) / (new_tokens - 1) as f64)
            }
            _ => None,
        };
        t.throughput_tok_s =
            (new_tokens > 0 && t.total_s > 0.0).then(|| new_tokens as f64 / t.total_s);
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_metrics_follow_vllm_definitions() {
        let mut r = Recorder::new(Mode::Speculative, 5, 3);
        r.verify_step(3, 3);
        r.verify_step(3, 1);
        r.verify_step(2, 0);
        r.first_token();
        let s = r.finish(8);
        assert_eq!((s.drafted, s.accepted, s.verify_steps), (8, 4, 3));
        assert_eq!(s.acceptance_rate, Some(0.5));
        assert_eq!(s.mean_accepted_length, Some(7.0 / 3.0));
        assert_eq!(s.accepted_length_histogram, vec![1, 1, 0, 1]);
        assert_eq!(s.gamma_histogram, vec![0, 0, 1, 2]);
        assert_eq!(s.drafted_per_position, vec![3, 3, 2]);
        assert_eq!(s.accepted_per_position, vec![2, 1, 1]);
        assert_eq!(
            s.acceptance_per_position,
            vec![Some(2.0 / 3.0), Some(1.0 / 3.0), Some(0.5)]
        );
        assert!(s.timing.ttft_s.is_some() && s.timing.tpot_s.is_some());
    }

    #[test]
    fn undefined_ratios_are_none() {
        let s = Recorder::new(Mode::Autoregressive, 1, 0).finish(1);
        assert_eq!(s.acceptance_rate, None);
        assert_eq!(s.mean_accepted_length, None);
        assert_eq!(s.timing.ttft_s, None);
        assert_eq!(s.timing.tpot_s, None);
        assert!(s.accepted_length_histogram.is_empty());
        assert!(s.gamma_histogram.is_empty());
    }
}
