//! The one speculative loop (`generate_speculative_on`) over a scripted [`SpecEngine`]: what
//! it asks of an engine (γ clipped to the engine's limit, to the tokens left and to the
//! contexts; the sequence it passes; the final trim) and how it turns the engine's outcomes
//! into tokens, a stop reason and stats.

use anyhow::{bail, Result};
use spedec_sampling::Sampler;
use spedec_speculative::{
    generate_speculative_on, GammaChoice, GenConfig, SpecEngine, Start, StepOutcome, StepTimes,
    StopReason, EOS_TOKEN,
};

/// An engine that emits a fixed token script: each step accepts `accept` drafts (or all of
/// them, if fewer) and then emits the next script token; it records what it was asked.
struct Scripted {
    script: Vec<u32>,
    accept: usize,
    max_gamma: usize,
    contexts: (usize, usize),
    /// (sequence length, γ) of every step.
    asked: Vec<(usize, usize)>,
    finished: Option<usize>,
    emitted: usize,
}

impl Scripted {
    fn new(script: Vec<u32>, accept: usize, max_gamma: usize) -> Self {
        Scripted {
            script,
            accept,
            max_gamma,
            contexts: (1000, 1000),
            asked: Vec::new(),
            finished: None,
            emitted: 0,
        }
    }

    fn next(&mut self) -> u32 {
        let t = self.script[self.emitted % self.script.len()];
        self.emitted += 1;
        t
    }
}

impl SpecEngine for Scripted {
    fn vocab_size(&self) -> usize {
        100
    }
    fn max_len(&self) -> (usize, usize) {
        self.contexts
    }
    fn max_gamma(&self) -> usize {
        self.max_gamma
    }
    fn check_prompt(&self, prompt: &[u32]) -> Result<()> {
        if prompt.is_empty() {
            bail!("empty prompt");
        }
        Ok(())
    }
    fn start(&mut self, _prompt: &[u32], _sampler: &Sampler, _seed: u64) -> Result<Start> {
        Ok(Start {
            first: self.next(),
            prefill_s: 0.5,
            sampling_s: 0.0,
        })
    }
    fn step(
        &mut self,
        seq: &[u32],
        gamma: usize,
        _sampler: &Sampler,
        _stop_at_eos: bool,
    ) -> Result<StepOutcome> {
        if gamma > self.max_gamma {
            bail!("asked for γ = {gamma} above the limit {}", self.max_gamma);
        }
        self.asked.push((seq.len(), gamma));
        let a = self.accept.min(gamma);
        let accepted: Vec<u32> = (0..a).map(|_| self.next()).collect();
        Ok(StepOutcome {
            drafted: gamma,
            accepted,
            next: self.next(),
            draft_calls: gamma,
            times: StepTimes {
                draft_s: 0.01,
                target_s: 0.02,
                sampling_s: 0.001,
            },
            draft_phase_s: 0.01,
            verify_phase_s: 0.021,
            verify_rows: gamma + 1,
        })
    }
    fn finish(&mut self, len: usize) -> Result<StepTimes> {
        self.finished = Some(len);
        Ok(StepTimes::default())
    }
}

fn cfg(new: usize, eos: bool) -> GenConfig {
    GenConfig {
        max_new_tokens: new,
        gamma: 4,
        sampler: Sampler::Greedy,
        seed: 0,
        stop_at_eos: eos,
    }
}

#[test]
fn gamma_is_clipped_to_the_engines_limit_and_the_tokens_left() {
    let mut e = Scripted::new((1..=50).collect(), 9, 2);
    let g =
        generate_speculative_on(&mut e, &[7, 8], &cfg(8, false), &GammaChoice::Fixed(4)).unwrap();
    assert_eq!(g.tokens, (1..=8).collect::<Vec<u32>>());
    assert_eq!(g.stop_reason, StopReason::MaxNewTokens);
    // First token from the prefill, then steps of γ = 2 (the limit) emitting 3 tokens each,
    // and with one token left γ = 0 (a plain target decode, no verify step).
    assert_eq!(e.asked, vec![(3, 2), (6, 2), (9, 0)]);
    assert_eq!(e.finished, Some(2 + 8 - 1));
    let s = &g.stats;
    assert_eq!((s.verify_steps, s.drafted, s.accepted), (2, 4, 4));
    assert_eq!(s.target_calls, 1 + 3);
    assert_eq!(s.draft_calls, 1 + 4);
    assert_eq!(s.gamma_histogram[..=2], [0, 0, 2]);
    assert!(s.timing.prefill_s >= 0.5 && s.timing.target_s >= 0.06 - 1e-9);
}

#[test]
fn an_eos_inside_a_step_stops_and_trims() {
    // Script: 1, 2, EOS, 4 …: the EOS arrives as an accepted draft of the first step.
    let mut e = Scripted::new(vec![1, 2, EOS_TOKEN, 4, 5, 6], 9, 4);
    let g = generate_speculative_on(&mut e, &[7], &cfg(20, true), &GammaChoice::Fixed(4)).unwrap();
    assert_eq!(g.tokens, vec![1, 2, EOS_TOKEN]);
    assert_eq!(g.stop_reason, StopReason::Eos);
    assert_eq!(e.finished, Some(1 + 3 - 1));
    // Without stop_at_eos the EOS is an ordinary token.
    let mut e = Scripted::new(vec![1, 2, EOS_TOKEN, 4, 5, 6], 9, 4);
    let g = generate_speculative_on(&mut e, &[7], &cfg(6, false), &GammaChoice::Fixed(4)).unwrap();
    assert_eq!(g.tokens, vec![1, 2, EOS_TOKEN, 4, 5, 6]);
}

#[test]
fn a_full_target_context_stops_the_loop() {
    let mut e = Scripted::new((1..=50).collect(), 0, 4);
    e.contexts = (6, 1000);
    let g =
        generate_speculative_on(&mut e, &[7, 8], &cfg(20, false), &GammaChoice::Fixed(4)).unwrap();
    assert_eq!(g.stop_reason, StopReason::ContextFull);
    // Never asked to draft past the target's context.
    for &(n, gamma) in &e.asked {
        assert!(n + gamma <= 6, "step at {n} with γ = {gamma}");
    }
    assert_eq!(g.tokens.len() + 2, 7);
}

#[test]
fn zero_gamma_and_bad_prompts_are_refused_before_the_engine_runs() {
    let mut e = Scripted::new(vec![1], 0, 4);
    let err = generate_speculative_on(&mut e, &[7], &cfg(4, false), &GammaChoice::Fixed(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 1"), "{err}");
    let err = generate_speculative_on(&mut e, &[], &cfg(4, false), &GammaChoice::Fixed(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty"), "{err}");
    assert!(e.asked.is_empty() && e.emitted == 0);
}
