//! The speculative step on the device: [`DeviceSpec`] implements
//! [`spedec_speculative::SpecEngine`] over two [`Engine`]s, so logits, sampling and the accept
//! / reject decision never leave the backend; the host reads back γ + 2 integers per step.
//!
//! A step of γ drafts after the sequence `seq` (n tokens; the target caches `seq[..n-1]`, the
//! draft a prefix `seq[..m]`), all enqueued before the one wait:
//!
//! | what | launches | writes |
//! |---|---|---|
//! | the host writes the draft's missing ids `seq[m..n]` and the target's first verify id `seq[n-1]` | copies (the stream is idle: the previous step ended with a wait) | draft ids, target ids row 0 |
//! | draft forward of `n - m` rows, its last row's logits stay on the device | one step (a CUDA graph) | draft logits |
//! | for i in 0..γ: pick dᵢ₊₁ from the draft's row: argmax, or process (temperature → top-k → top-p) into qᵢ and draw with Philox (position n + i, stream *draft*, index = step) | `sample_pick_f32` | `drafts[i]`, the draft's next input id, target ids row i + 1 |
//! | … and, but after the last, the draft forward of that one token | one step | draft logits |
//! | target verify of γ + 1 rows `[seq[n-1], d₁ … d_γ]` | one step | target logits `[γ + 1, V]` |
//! | process the target rows into p (random only), then the decision: accept dᵢ iff `u < min(1, p/q)` (Philox stream *accept*), the residual `norm(max(0, p − q))` or the bonus (stream *residual*); greedy: accept while dᵢ is the argmax | `sample_process_f32`, `spec_verify_f32` | `out` i32 `[γ + 2]` |
//! | the host reads `out` (the one wait) and moves both caches' lengths back to n + accepted | a copy of γ + 2 ints | |
//!
//! Positions are written by a launch (`KernelBackend::fill_positions_at`), never by a copy
//! from pageable host memory, which would make the host wait inside the chain. The host
//! writes only the step state {n, step index} (i32 \[2\]) before the launches; every
//! position and every Philox counter of the step is read from it on the device
//! (`PhiloxAt::Device`), so the launches of a step do not depend on the step — the ground a
//! recording of the whole step as graphs needs. The first token is
//! picked on the device from the target's last prompt row (stream *first*, index 0); step s
//! uses Philox index s, so no counter is ever used twice in a generation (positions repeat
//! across steps after a rejection, indices do not).
//!
//! Differences from the host step ([`spedec_speculative::generate_speculative`]): the
//! uniforms (Philox per counter instead of one sequential stream), so a seed gives another
//! sample of the same distribution; and drafting does not stop at an EOS draft (that would
//! need a wait per draft) — drafts after it are verified and never emitted, since the loop
//! stops emitting at EOS and the decision about a draft depends only on the rows before it.
//! Greedy output is the same token for token. γ is at most [`MAX_DEVICE_GAMMA`] (the verify
//! of γ + 1 rows is one recorded step).
//!
//! Timing: marks (CUDA events) at the draft phase's start, around every pick, at the
//! verify's start, after the verify forward and after the decision split each step into
//! draft forwards, the verify forward and the rest (picks, processing, decision: the
//! sampling bucket) without waiting in between. The γ policy sees the whole draft phase
//! (forwards and picks) and the whole verify (forward and decision), as on the host.
//!
//! Both engines' backends must address each other's buffers: one GPU context (the models of
//! a process share [`super::shared_gpu`]), or the host emulation.

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use spedec_cuda::{KernelBackend, PhiloxAt, PickDest, MAX_ROWS};
use spedec_sampling::philox::Stream;
use spedec_sampling::{Sampler, SamplingParams};
use spedec_speculative::{
    check_prompt_fits, check_vocabularies, SpecEngine, Start, StepOutcome, StepTimes,
};

use super::engine::Engine;

/// The largest γ of a device step: its verify of γ + 1 rows is one recorded step.
pub const MAX_DEVICE_GAMMA: usize = MAX_ROWS - 1;

/// What a device step keeps between its launches, on the target's backend.
struct SpecBuffers<B: KernelBackend> {
    /// f32 `[MAX_DEVICE_GAMMA, V]`: the processed draft rows qᵢ (random sampling)
    q: B::Buf<f32>,
    /// f32 `[MAX_DEVICE_GAMMA + 1, V]`: the processed target rows p (random sampling; row 0
    /// also takes the first token's processed row)
    p: B::Buf<f32>,
    /// i32 `[MAX_DEVICE_GAMMA]`: the drafted tokens
    drafts: B::Buf<i32>,
    /// i32 `[MAX_DEVICE_GAMMA + 2]`: the decision (accepted count a, the a drafts, the next
    /// token, −1 after), or the first token in element 0
    out: B::Buf<i32>,
    /// i32 `[2]`: the step's state, written by the host before the step's launches: the
    /// sequence length n (every position of the step is n plus a fixed offset) and the
    /// Philox index. The step's positions and counters are read from it on the device, so
    /// the launches of a step are the same whatever the step.
    state: B::Buf<i32>,
}

/// A draft and a target engine running speculative steps on their backend.
pub struct DeviceSpec<'a, B: KernelBackend> {
    target: &'a mut Engine<B>,
    draft: &'a mut Engine<B>,
    bufs: SpecBuffers<B>,
    /// Host copy of `out`.
    out: Vec<i32>,
    /// The marks around each pick of the current step (kept to reuse its allocation).
    pick_marks: Vec<(B::Mark, B::Mark)>,
    seed: u64,
    /// Philox index of the next step (the first token used 0).
    step: u32,
    /// A deliberate bug for the distribution tests (feature `fault-injection` only): verify
    /// against the target's raw softmax instead of its processed rows.
    raw_target_p: bool,
}

impl<'a, B: KernelBackend> DeviceSpec<'a, B> {
    /// The pair, with the step's buffers allocated on the target's backend (~(2γ + 1) rows
    /// of f32 logits). Refused when the vocabularies differ.
    pub fn new(target: &'a mut Engine<B>, draft: &'a mut Engine<B>) -> Result<Self> {
        let vocab = target.config().vocab_size;
        check_vocabularies(vocab, draft.config().vocab_size)?;
        let g = MAX_DEVICE_GAMMA;
        let b = target.backend_mut();
        let what = || format!("allocating the device speculative step's buffers (vocab {vocab})");
        let bufs = SpecBuffers {
            q: b.upload(&vec![0f32; g * vocab]).with_context(what)?,
            p: b.upload(&vec![0f32; (g + 1) * vocab]).with_context(what)?,
            drafts: b.upload(&vec![0i32; g]).with_context(what)?,
            out: b.upload(&vec![0i32; g + 2]).with_context(what)?,
            state: b.upload(&[0i32; 2]).with_context(what)?,
        };
        Ok(DeviceSpec {
            target,
            draft,
            bufs,
            out: vec![0; g + 2],
            pick_marks: Vec::with_capacity(g),
            seed: 0,
            step: 0,
            raw_target_p: false,
        })
    }

    /// Switches on a deliberate bug (tests only): the decision uses the target's raw softmax
    /// instead of its processed distribution, which the χ² tests must detect.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn set_raw_target_p(&mut self, on: bool) {
        self.raw_target_p = on;
    }

    fn vocab(&self) -> usize {
        self.target.config().vocab_size
    }
}

/// A sequence position as the samplers' u32 counter.
fn position(p: usize) -> Result<u32> {
    u32::try_from(p).map_err(|_| anyhow::anyhow!("position {p} does not fit the sampler's u32"))
}

impl<B: KernelBackend> SpecEngine for DeviceSpec<'_, B> {
    fn vocab_size(&self) -> usize {
        self.vocab()
    }

    fn max_len(&self) -> (usize, usize) {
        (self.target.capacity(), self.draft.capacity())
    }

    fn max_gamma(&self) -> usize {
        MAX_DEVICE_GAMMA
    }

    fn check_prompt(&self, prompt: &[u32]) -> Result<()> {
        let vocab = self.vocab();
        check_prompt_fits(prompt, vocab, self.target.capacity(), "target")?;
        check_prompt_fits(prompt, vocab, self.draft.capacity(), "draft")
    }

    fn start(&mut self, prompt: &[u32], sampler: &Sampler, seed: u64) -> Result<Start> {
        self.seed = seed;
        self.step = 1;
        let vocab = self.vocab();
        let DeviceSpec {
            target,
            draft,
            bufs,
            out,
            ..
        } = self;
        target.truncate(0)?;
        draft.truncate(0)?;
        let t = Instant::now();
        draft.forward_resident(prompt).context("draft prefill")?;
        let row = target.forward_resident(prompt).context("target prefill")?;
        let (b, logits, _) = target.resident_parts();
        let picked = b.mark()?;
        let probs = (!sampler.is_greedy()).then_some((&mut bufs.p, 0));
        let dest = PickDest {
            token: (&mut bufs.out, 0),
            draft_input: None,
            verify_input: None,
        };
        let at = position(prompt.len())?;
        b.sample_pick(
            logits,
            row,
            probs,
            dest,
            vocab,
            sampler,
            seed,
            Stream::First,
            PhiloxAt::Host {
                position: at,
                index: 0,
            },
        )?;
        let done = b.mark()?;
        b.read_into(&bufs.out, &mut out[..1])?;
        let total_s = t.elapsed().as_secs_f64();
        let sampling_s = b.seconds_between(&picked, &done)?.min(total_s);
        let first = out[0];
        ensure!(
            (0..vocab as i64).contains(&i64::from(first)),
            "the device sampler found no token to pick in the target's last prompt row \
             (NaN or no finite logit)"
        );
        Ok(Start {
            first: first as u32,
            prefill_s: total_s - sampling_s,
            sampling_s,
        })
    }

    fn step(
        &mut self,
        seq: &[u32],
        gamma: usize,
        sampler: &Sampler,
        _stop_at_eos: bool,
    ) -> Result<StepOutcome> {
        ensure!(
            gamma <= MAX_DEVICE_GAMMA,
            "a device step drafts at most {MAX_DEVICE_GAMMA} tokens, not {gamma}"
        );
        let n = seq.len();
        ensure!(
            n > 0,
            "internal: a speculative step needs a non-empty sequence"
        );
        let vocab = self.vocab();
        let (seed, index, raw_target_p) = (self.seed, self.step, self.raw_target_p);
        self.step = self.step.wrapping_add(1);
        let DeviceSpec {
            target,
            draft,
            bufs,
            out,
            pick_marks,
            ..
        } = self;
        ensure!(
            target.len() + 1 == n,
            "internal: the target cache ({}) is not one behind the sequence ({n})",
            target.len()
        );
        let random = !sampler.is_greedy();
        let at = position(n)?;
        position(n + gamma)?;

        let t0 = target.backend_mut().mark()?;
        // The host's writes, while the stream is idle (the last step ended with a wait).
        let state = [at as i32, index as i32];
        target.backend_mut().write(&state, &mut bufs.state)?;
        target.write_step_ids(&seq[n - 1..])?;
        let mut draft_calls = 0;
        // Marks around each pick, so the split counts them as sampling, not as drafting.
        pick_marks.clear();
        if gamma > 0 {
            // The draft first catches up on the tokens it has not seen (one or two after the
            // first step; the prompt's rows once, if the draft prefilled less).
            let m = draft.len();
            ensure!(
                m < n,
                "internal: the draft cache ({m}) is not behind the sequence ({n})"
            );
            let rows = n - m;
            let mut row = if rows <= MAX_ROWS {
                draft.write_step_ids(&seq[m..])?;
                draft
                    .step_resident_at(rows, &bufs.state, -(rows as i32))
                    .context("draft forward")?;
                rows - 1
            } else {
                draft.forward_resident(&seq[m..]).context("draft forward")?
            };
            draft_calls += 1;
            for i in 0..gamma {
                let last = i + 1 == gamma;
                let verify_ids = target.step_ids();
                let (b, logits, draft_ids) = draft.resident_parts();
                let before = b.mark()?;
                let probs = random.then_some((&mut bufs.q, i));
                let dest = PickDest {
                    token: (&mut bufs.drafts, i),
                    draft_input: (!last).then_some((draft_ids, 0)),
                    verify_input: Some((verify_ids, i + 1)),
                };
                b.sample_pick(
                    logits,
                    row,
                    probs,
                    dest,
                    vocab,
                    sampler,
                    seed,
                    Stream::Draft,
                    PhiloxAt::Device {
                        state: &bufs.state,
                        offset: i as i32,
                    },
                )?;
                pick_marks.push((before, b.mark()?));
                if !last {
                    // dᵢ₊₁ at position n + i.
                    draft
                        .step_resident_at(1, &bufs.state, i as i32)
                        .context("draft forward")?;
                    draft_calls += 1;
                    row = 0;
                }
            }
        }
        let t1 = target.backend_mut().mark()?;
        target
            .step_resident_at(gamma + 1, &bufs.state, -1)
            .context("target verify forward")?;
        let (b, logits, _) = target.resident_parts();
        let t2 = b.mark()?;
        match sampler {
            Sampler::Greedy => b.spec_verify(
                logits,
                None,
                &bufs.drafts,
                &mut bufs.out,
                gamma,
                vocab,
                seed,
                PhiloxAt::Device {
                    state: &bufs.state,
                    offset: 0,
                },
            )?,
            Sampler::Random(params) => {
                let raw = SamplingParams::new(1.0, 0, 1.0)?;
                let params = if raw_target_p { &raw } else { params };
                b.sample_process(logits, &mut bufs.p, gamma + 1, vocab, params)?;
                b.spec_verify(
                    &bufs.p,
                    Some(&bufs.q),
                    &bufs.drafts,
                    &mut bufs.out,
                    gamma,
                    vocab,
                    seed,
                    PhiloxAt::Device {
                        state: &bufs.state,
                        offset: 0,
                    },
                )?;
            }
        }
        let t3 = b.mark()?;
        b.read_into(&bufs.out, &mut out[..gamma + 2])?;
        let draft_phase_s = b.seconds_between(&t0, &t1)?;
        let target_s = b.seconds_between(&t1, &t2)?;
        let decision_s = b.seconds_between(&t2, &t3)?;
        let mut picks_s = 0.0;
        for (before, after) in pick_marks.iter() {
            picks_s += b.seconds_between(before, after)?;
        }
        let picks_s = picks_s.min(draft_phase_s);

        let accepted = out[0];
        if accepted < 0 || accepted as usize > gamma {
            bail!(
                "the device speculative decision failed (code {accepted}): a row without mass \
                 (NaN logits) or a draft id outside the vocabulary"
            );
        }
        let a = accepted as usize;
        let tokens = &out[1..a + 2];
        if let Some(bad) = tokens.iter().find(|&&t| t < 0 || t as usize >= vocab) {
            bail!("the device speculative decision returned token {bad}, outside the vocabulary of {vocab}");
        }
        let kept = n + a;
        target.truncate(kept)?;
        if draft.len() > kept {
            draft.truncate(kept)?;
        }
        Ok(StepOutcome {
            drafted: gamma,
            accepted: tokens[..a].iter().map(|&t| t as u32).collect(),
            next: tokens[a] as u32,
            draft_calls,
            times: StepTimes {
                draft_s: draft_phase_s - picks_s,
                target_s,
                sampling_s: picks_s + decision_s,
            },
            draft_phase_s,
            verify_phase_s: target_s + decision_s,
            verify_rows: gamma + 1,
        })
    }

    fn finish(&mut self, len: usize) -> Result<StepTimes> {
        if self.target.len() > len {
            self.target.truncate(len)?;
        }
        if self.draft.len() > len {
            self.draft.truncate(len)?;
        }
        Ok(StepTimes::default())
    }
}
