//! The device sampler against the CPU sampler: comparisons (processing, draws, one row's
//! pick, the speculative decision, Philox words), the logits rows they run on (random and adversarial)
//! and the self-check [`run_sampler_checks_on`] that `kernels::run_checks` runs on a GPU at
//! V = 50304 and `tests/sampler_emulation.rs` runs on the host emulation.
//!
//! Exactness rules (f32 device rows against the CPU's f64):
//! - processed probabilities agree within `|a − b| <= atol + rtol·|ref|` ([`PROB_ATOL`],
//!   [`PROB_RTOL`]) and the kept token sets are equal — except in a row where top-p's
//!   boundary is within [`BOUNDARY_EPS`] of the CPU's mass above a differing token (rounding
//!   decides such a token; the row is counted, and skipped for the tolerance);
//! - draws and decisions are equal given the same Philox uniform, except where the CPU's
//!   margin (see `sampling_reference`) is within [`BOUNDARY_EPS`] (counted).

use std::time::Instant;

use anyhow::{ensure, Result};
use spedec_cuda::{PhiloxAt, PickDest};
use spedec_sampling::philox::{philox4x32_10, philox_key, uniform_from_u32, Stream};
use spedec_sampling::{process, Rng, Sampler, SamplingParams};

use crate::kernels::CheckResult;
use crate::sampler::SamplerBackend;
use crate::sampling_reference::{self as reference, Decision};

/// Absolute tolerance of a device probability.
pub const PROB_ATOL: f64 = 1e-6;
/// Relative tolerance of a device probability: the device computes `exp((l − max) / T)` in
/// f32, whose argument carries a rounding of ~|l − max|·6e-8 (≈ 3e-6 at a logit gap of 50).
pub const PROB_RTOL: f64 = 1e-4;
/// How close to a decision threshold a uniform (or top-p's cumulative mass) must be for a
/// device/CPU disagreement to count as rounding: f32 probabilities carry relative errors of
/// ~1e-6, so cumulative masses and ratios p/q can move by about that much.
pub const BOUNDARY_EPS: f64 = 1e-5;

/// A named logits generator for one row of `vocab` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// Uniform in ±4 (a spread like real logits).
    Random,
    /// Uniform in ±12: a peaked distribution.
    Peaked,
    /// Values quantised to a few levels: many exact ties, at the top-k and top-p boundaries.
    Ties,
    /// A third of the entries −inf (masked), the rest random.
    Masked,
    /// One token 30 above a random rest.
    Dominant,
    /// Every entry equal.
    Flat,
}

impl RowKind {
    /// Every kind.
    pub const ALL: [RowKind; 6] = [
        RowKind::Random,
        RowKind::Peaked,
        RowKind::Ties,
        RowKind::Masked,
        RowKind::Dominant,
        RowKind::Flat,
    ];

    /// A row of this kind.
    pub fn row(self, rng: &mut Rng, vocab: usize) -> Vec<f32> {
        let mut u = |s: f64| ((rng.uniform() * 2.0 - 1.0) * s) as f32;
        let mut row: Vec<f32> = match self {
            RowKind::Random | RowKind::Masked | RowKind::Dominant => {
                (0..vocab).map(|_| u(4.0)).collect()
            }
            RowKind::Peaked => (0..vocab).map(|_| u(12.0)).collect(),
            RowKind::Ties => (0..vocab).map(|_| (u(3.0) * 2.0).round() * 0.5).collect(),
            RowKind::Flat => vec![0.25; vocab],
        };
        match self {
            RowKind::Masked => {
                for (i, v) in row.iter_mut().enumerate() {
                    if (i * 7 + vocab).is_multiple_of(3) {
                        *v = f32::NEG_INFINITY;
                    }
                }
                row[(vocab / 2) | 1] = 1.0; // at least one finite entry
            }
            RowKind::Dominant => {
                let at = vocab / 3;
                row[at] += 30.0;
            }
            RowKind::Ties => {
                // −0 and +0 compare equal: make some of the zeros negative.
                for v in row.iter_mut().step_by(5) {
                    if *v == 0.0 {
                        *v = -0.0;
                    }
                }
            }
            _ => {}
        }
        row
    }
}

/// How device processed rows compare with the CPU's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessDiff {
    /// Rows compared.
    pub rows: usize,
    /// Largest |device − cpu| over the rows compared by tolerance.
    pub max_abs: f64,
    /// Largest relative difference (where cpu ≠ 0).
    pub max_rel: f64,
    /// Entries outside tolerance (in rows without an explained set difference).
    pub out_of_tol: usize,
    /// Rows whose kept sets differ only at top-p boundary tokens within [`BOUNDARY_EPS`].
    pub boundary_rows: usize,
    /// Tokens kept on one side only and not explained by the boundary rule.
    pub set_mismatches: usize,
    /// The first unexplained problem, in words.
    pub first_bad: Option<String>,
}

impl ProcessDiff {
    /// No unexplained difference.
    pub fn pass(&self) -> bool {
        self.out_of_tol == 0 && self.set_mismatches == 0
    }
}

/// The CPU's mass ranked above `token` (larger probability first, lower id on ties) in `d`.
fn mass_above(d: &[f64], token: usize) -> f64 {
    let x = d[token];
    d.iter()
        .enumerate()
        .filter(|&(j, &y)| y > x || (y == x && j < token))
        .map(|(_, &y)| y)
        .sum()
}

/// Compares device rows f32 [rows, vocab] with the CPU's processing of `logits`.
pub fn compare_processed(
    device: &[f32],
    logits: &[f32],
    vocab: usize,
    params: &SamplingParams,
) -> Result<ProcessDiff> {
    ensure!(
        device.len() == logits.len(),
        "compare_processed: lengths differ"
    );
    let cpu = reference::process_rows(logits, vocab, params)?;
    let before_top_p = SamplingParams {
        top_p: 1.0,
        ..*params
    };
    let mut diff = ProcessDiff {
        rows: cpu.len(),
        ..Default::default()
    };
    for (r, (want, got)) in cpu.iter().zip(device.chunks(vocab)).enumerate() {
        let differing: Vec<usize> = (0..vocab)
            .filter(|&i| (want[i] > 0.0) != (got[i] > 0.0))
            .collect();
        if !differing.is_empty() {
            let full = process(&logits[r * vocab..(r + 1) * vocab], &before_top_p)?;
            let top_p = f64::from(params.top_p);
            let unexplained: Vec<usize> = differing
                .iter()
                .copied()
                .filter(|&i| {
                    params.top_p >= 1.0 || (mass_above(&full, i) - top_p).abs() > BOUNDARY_EPS
                })
                .collect();
            if unexplained.is_empty() {
                diff.boundary_rows += 1;
                continue;
            }
            diff.set_mismatches += unexplained.len();
            let i = unexplained[0];
            diff.first_bad.get_or_insert_with(|| {
                format!(
                    "row {r} token {i}: cpu {} device {} ({} tokens differ)",
                    want[i],
                    got[i],
                    unexplained.len()
                )
            });
            continue;
        }
        for (i, (&w, &g)) in want.iter().zip(got).enumerate() {
            let g = f64::from(g);
            let d = (g - w).abs();
            let within = d <= PROB_ATOL + PROB_RTOL * w.abs(); // false for NaN
            if !within {
                diff.out_of_tol += 1;
                diff.first_bad
                    .get_or_insert_with(|| format!("row {r} token {i}: cpu {w} device {g}"));
            }
            if d.is_finite() {
                diff.max_abs = diff.max_abs.max(d);
                if w != 0.0 {
                    diff.max_rel = diff.max_rel.max(d / w.abs());
                }
            } else {
                diff.max_abs = f64::INFINITY;
            }
        }
    }
    Ok(diff)
}

/// How device draws or decisions compare with the CPU's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecisionDiff {
    /// Decisions compared.
    pub cases: usize,
    /// Equal outcomes.
    pub equal: usize,
    /// Different outcomes where the CPU's margin is within [`BOUNDARY_EPS`].
    pub boundary: usize,
    /// Different outcomes otherwise.
    pub mismatches: usize,
    /// The smallest CPU margin seen.
    pub min_margin: f64,
    /// The first unexplained difference, in words.
    pub first_bad: Option<String>,
}

impl DecisionDiff {
    fn new() -> Self {
        Self {
            min_margin: f64::INFINITY,
            ..Default::default()
        }
    }

    /// Records one comparison.
    pub fn record(&mut self, equal: bool, margin: f64, what: impl FnOnce() -> String) {
        self.cases += 1;
        self.min_margin = self.min_margin.min(margin);
        if equal {
            self.equal += 1;
        } else if margin <= BOUNDARY_EPS {
            self.boundary += 1;
        } else {
            self.mismatches += 1;
            self.first_bad.get_or_insert_with(what);
        }
    }

    /// No unexplained difference.
    pub fn pass(&self) -> bool {
        self.mismatches == 0
    }

    /// Merges another comparison into this one.
    pub fn merge(&mut self, o: DecisionDiff) {
        self.cases += o.cases;
        self.equal += o.equal;
        self.boundary += o.boundary;
        self.mismatches += o.mismatches;
        self.min_margin = self.min_margin.min(o.min_margin);
        if self.first_bad.is_none() {
            self.first_bad = o.first_bad;
        }
    }
}

/// An empty [`DecisionDiff`].
pub fn decision_diff() -> DecisionDiff {
    DecisionDiff::new()
}

/// Device draws (one per row of `device_probs`, row r at `position + r`) against the CPU's
/// draws from its own processing of `logits` with the same uniforms. A row whose kept set
/// differs at a top-p boundary (see [`compare_processed`]) draws from a different
/// distribution: a different token there counts as a boundary case; any unexplained
/// processing difference is an error.
#[allow(clippy::too_many_arguments)]
pub fn compare_draws(
    device_tokens: &[i32],
    device_probs: &[f32],
    logits: &[f32],
    vocab: usize,
    params: &SamplingParams,
    seed: u64,
    position: u32,
    stream: Stream,
    index: u32,
) -> Result<DecisionDiff> {
    let cpu = reference::process_rows(logits, vocab, params)?;
    ensure!(
        device_tokens.len() == cpu.len(),
        "compare_draws: row counts differ"
    );
    let mut diff = DecisionDiff::new();
    for (r, (dist, &got)) in cpu.iter().zip(device_tokens).enumerate() {
        let want = reference::draw(dist, seed, position + r as u32, stream, index)?;
        let rows = r * vocab..(r + 1) * vocab;
        let margin =
            match processing_boundary(&device_probs[rows.clone()], &logits[rows], vocab, params)? {
                true => 0.0,
                false => want.margin,
            };
        diff.record(got == want.token as i32, margin, || {
            format!(
                "row {r}: cpu token {} (u {}, margin {:.2e}) device {got}",
                want.token, want.u, want.margin
            )
        });
    }
    Ok(diff)
}

/// Whether device rows differ from the CPU's processing of `logits` in their kept sets at a
/// top-p boundary (an error if they differ in any other way).
pub fn processing_boundary(
    device: &[f32],
    logits: &[f32],
    vocab: usize,
    params: &SamplingParams,
) -> Result<bool> {
    let d = compare_processed(device, logits, vocab, params)?;
    ensure!(
        d.pass(),
        "device processing differs from the CPU's: {}",
        d.first_bad.unwrap_or_default()
    );
    Ok(d.boundary_rows > 0)
}

/// The CPU's decision for one verify step from logits: greedy on raw target logits, else on
/// the processed rows (target [γ + 1, vocab], draft [γ, vocab]).
#[allow(clippy::too_many_arguments)]
pub fn cpu_decision(
    sampler: &Sampler,
    target_logits: &[f32],
    draft_logits: &[f32],
    drafts: &[u32],
    vocab: usize,
    seed: u64,
    position: u32,
    index: u32,
) -> Result<Decision> {
    match sampler {
        Sampler::Greedy => reference::verify_greedy(target_logits, vocab, drafts),
        Sampler::Random(params) => {
            let p = reference::process_rows(target_logits, vocab, params)?;
            let q = reference::process_rows(draft_logits, vocab, params)?;
            reference::verify_probs(&p, &q, drafts, seed, position, index)
        }
    }
}

/// Device Philox words and uniforms against [`philox4x32_10`] for counters
/// `(position + j, stream, index, 0)`: the number of words and uniforms that differ.
pub fn compare_philox(
    words: &[u32],
    uniforms: &[f32],
    seed: u64,
    position: u32,
    stream: Stream,
    index: u32,
) -> usize {
    let mut bad = 0;
    for (j, (w, &u)) in words.chunks(4).zip(uniforms).enumerate() {
        let want = philox4x32_10(
            [position.wrapping_add(j as u32), stream.id(), index, 0],
            philox_key(seed),
        );
        bad += w.iter().zip(&want).filter(|(a, b)| a != b).count();
        bad += usize::from(f64::from(u) != uniform_from_u32(want[0]));
    }
    bad
}

/// The settings the self-check runs: greedy, plain, and three processed ones.
pub fn check_samplers() -> Vec<Sampler> {
    let r = |t, k, p| Sampler::Random(SamplingParams::new(t, k, p).expect("valid"));
    vec![
        Sampler::Greedy,
        r(1.0, 0, 1.0),
        r(0.7, 50, 1.0),
        r(1.0, 0, 0.9),
        r(0.8, 40, 0.95),
    ]
}

/// Describes a sampler for a report line.
pub fn describe(s: &Sampler) -> String {
    match s {
        Sampler::Greedy => "greedy".into(),
        Sampler::Random(p) => format!("T={} k={} p={}", p.temperature, p.top_k, p.top_p),
    }
}

fn line(
    name: &str,
    shape: String,
    pass: bool,
    max_abs: f64,
    max_rel: f64,
    note: String,
) -> CheckResult {
    CheckResult {
        name: name.to_string(),
        shape,
        max_abs,
        max_rel,
        atol: PROB_ATOL,
        rtol: PROB_RTOL,
        pass,
        time_us: None,
        note,
    }
}

fn timed<B: SamplerBackend>(
    b: &mut B,
    reps: usize,
    mut f: impl FnMut(&mut B) -> Result<()>,
) -> Result<Option<f64>> {
    if reps == 0 || !b.timed() {
        return Ok(None);
    }
    f(b)?;
    b.synchronize()?;
    let t = Instant::now();
    for _ in 0..reps {
        f(b)?;
    }
    b.synchronize()?;
    Ok(Some(t.elapsed().as_secs_f64() * 1e6 / reps as f64))
}

/// A draft row near a target row: the target plus noise of ±`sigma`.
pub fn near_row(rng: &mut Rng, target: &[f32], sigma: f64) -> Vec<f32> {
    target
        .iter()
        .map(|&l| l + ((rng.uniform() * 2.0 - 1.0) * sigma) as f32)
        .collect()
}

/// [`KernelBackend::sample_pick`] on each of the `rows` rows of `t_dev` (row r at position
/// `position + r`, stream First, as `sample_draw` numbers rows), routed to three buffers at
/// index r: the tokens must equal `want` and the routed ids the tokens, and (random) each
/// processed row must be bit-identical to `want_probs` (`sample_process`'s rows).
#[allow(clippy::too_many_arguments)]
fn pick_line<B: SamplerBackend>(
    b: &mut B,
    t_dev: &B::Buf<f32>,
    rows: usize,
    vocab: usize,
    sampler: &Sampler,
    seed: u64,
    position: u32,
    index: u32,
    want: &[i32],
    want_probs: Option<&[f32]>,
    shape: String,
    timing_reps: usize,
) -> Result<CheckResult> {
    let mut probs = b.poisoned::<f32>(rows * vocab)?;
    let mut toks = b.poisoned::<i32>(rows)?;
    let mut draft_in = b.poisoned::<u32>(rows)?;
    let mut verify_in = b.poisoned::<u32>(rows)?;
    let random = matches!(sampler, Sampler::Random(_));
    // Odd rows take their counter from a device state {position, index} (as a recorded
    // speculative step does), even rows from the launch: the same counters either way.
    let state = b.upload(&[position as i32, index as i32])?;
    let mut pick_all = |b: &mut B| -> Result<()> {
        for r in 0..rows {
            let counter = if r % 2 == 1 {
                PhiloxAt::Device {
                    state: &state,
                    offset: r as i32,
                }
            } else {
                PhiloxAt::Host {
                    position: position + r as u32,
                    index,
                }
            };
            b.sample_pick(
                t_dev,
                r,
                random.then_some((&mut probs, r)),
                PickDest {
                    token: (&mut toks, r),
                    draft_input: Some((&mut draft_in, r)),
                    verify_input: Some((&mut verify_in, r)),
                },
                vocab,
                sampler,
                seed,
                Stream::First,
                counter,
            )?;
        }
        Ok(())
    };
    pick_all(b)?;
    let t = timed(b, timing_reps, &mut pick_all)?.map(|us| us / rows as f64);
    let got = b.download(&toks)?;
    let ids_d = b.download(&draft_in)?;
    let ids_v = b.download(&verify_in)?;
    let routed = got
        .iter()
        .zip(ids_d.iter().zip(&ids_v))
        .all(|(&t, (&d, &v))| t >= 0 && d == t as u32 && v == t as u32);
    let mut differing_bits = 0usize;
    if let Some(w) = want_probs {
        let p = b.download(&probs)?;
        differing_bits = p
            .iter()
            .zip(w)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
    }
    let equal = got.iter().zip(want).filter(|(a, b)| a == b).count();
    let pass = equal == rows && routed && differing_bits == 0;
    let mut r = line(
        "sample_pick_f32",
        shape,
        pass,
        0.0,
        0.0,
        format!(
            "{equal}/{rows} tokens as {}, ids routed: {routed}, {differing_bits} processed \
             probabilities differ in bits from sample_process_f32 (device {got:?}, want {want:?})",
            if random {
                "sample_draw_f32"
            } else {
                "the CPU argmax"
            }
        ),
    );
    r.time_us = t;
    Ok(r)
}

/// The sampler self-check: for each of [`check_samplers`], `gamma + 1` target rows and
/// `gamma` draft rows of `vocab` entries — processing, draws and the verify decision on the
/// device against the CPU — and the Philox words. `timing_reps > 0` times the launches.
pub fn run_sampler_checks_on<B: SamplerBackend>(
    b: &mut B,
    vocab: usize,
    gamma: usize,
    seed: u64,
    timing_reps: usize,
) -> Result<Vec<CheckResult>> {
    ensure!(
        vocab > 1 && gamma >= 1,
        "sampler check: vocab {vocab}, gamma {gamma}"
    );
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let rows = gamma + 1;
    let (position, index) = (1000u32, 3u32);
    for sampler in check_samplers() {
        let name = describe(&sampler);
        let kinds = [RowKind::Random, RowKind::Ties, RowKind::Peaked];
        let target: Vec<f32> = (0..rows)
            .flat_map(|r| kinds[r % kinds.len()].row(&mut rng, vocab))
            .collect();
        let draft: Vec<f32> = target[..gamma * vocab]
            .chunks(vocab)
            .flat_map(|row| near_row(&mut rng, row, 1.0))
            .collect();
        let t_dev = b.upload(&target)?;
        let q_dev = b.upload(&draft)?;
        let shape = format!("[{rows}x{vocab}] {name}");
        // Drafts: what the CPU draft would propose (greedy: argmax of the draft rows).
        let drafts: Vec<u32> = match &sampler {
            Sampler::Greedy => draft
                .chunks(vocab)
                .map(spedec_sampling::argmax)
                .collect::<std::result::Result<_, _>>()?,
            Sampler::Random(params) => reference::process_rows(&draft, vocab, params)?
                .iter()
                .enumerate()
                .map(|(i, q)| {
                    reference::draw(q, seed, position + i as u32, Stream::Draft, index)
                        .map(|d| d.token)
                })
                .collect::<Result<_>>()?,
        };
        let drafts_i: Vec<i32> = drafts.iter().map(|&d| d as i32).collect();
        let d_dev = b.upload(&drafts_i)?;
        let mut verdict = b.poisoned::<i32>(gamma + 2)?;
        let want = cpu_decision(
            &sampler, &target, &draft, &drafts, vocab, seed, position, index,
        )?;
        let mut rows_at_boundary = false;
        let (p_dev, q_proc) = match &sampler {
            Sampler::Greedy => {
                let want = target
                    .chunks(vocab)
                    .map(|row| spedec_sampling::argmax(row).map(|t| t as i32))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                out.push(pick_line(
                    b,
                    &t_dev,
                    rows,
                    vocab,
                    &sampler,
                    seed,
                    position,
                    index,
                    &want,
                    None,
                    shape.clone(),
                    timing_reps,
                )?);
                (None, None)
            }
            Sampler::Random(params) => {
                let mut p = b.poisoned::<f32>(rows * vocab)?;
                b.sample_process(&t_dev, &mut p, rows, vocab, params)?;
                let t = timed(b, timing_reps, |b| {
                    b.sample_process(&t_dev, &mut p, rows, vocab, params)
                })?;
                let got = b.download(&p)?;
                let d = compare_processed(&got, &target, vocab, params)?;
                let mut r = line(
                    "sample_process_f32",
                    shape.clone(),
                    d.pass(),
                    d.max_abs,
                    d.max_rel,
                    format!(
                        "{} boundary rows; {}",
                        d.boundary_rows,
                        d.first_bad.clone().unwrap_or_default()
                    ),
                );
                r.time_us = t;
                out.push(r);

                let mut toks = b.poisoned::<i32>(rows)?;
                b.sample_draw(
                    &p,
                    &mut toks,
                    rows,
                    vocab,
                    seed,
                    position,
                    Stream::First,
                    index,
                )?;
                let t = timed(b, timing_reps, |b| {
                    b.sample_draw(
                        &p,
                        &mut toks,
                        rows,
                        vocab,
                        seed,
                        position,
                        Stream::First,
                        index,
                    )
                })?;
                let got = b.download(&toks)?;
                let probs = b.download(&p)?;
                let d = compare_draws(
                    &got,
                    &probs,
                    &target,
                    vocab,
                    params,
                    seed,
                    position,
                    Stream::First,
                    index,
                )?;
                let mut r = line(
                    "sample_draw_f32",
                    shape.clone(),
                    d.pass(),
                    0.0,
                    0.0,
                    format!(
                        "{}/{} equal, {} at a CDF boundary, min margin {:.1e} {}",
                        d.equal,
                        d.cases,
                        d.boundary,
                        d.min_margin,
                        d.first_bad.unwrap_or_default()
                    ),
                );
                r.time_us = t;
                out.push(r);
                out.push(pick_line(
                    b,
                    &t_dev,
                    rows,
                    vocab,
                    &sampler,
                    seed,
                    position,
                    index,
                    &got,
                    Some(&probs),
                    shape.clone(),
                    timing_reps,
                )?);

                let mut q = b.poisoned::<f32>(gamma * vocab)?;
                b.sample_process(&q_dev, &mut q, gamma, vocab, params)?;
                let q_host = b.download(&q)?;
                if processing_boundary(&probs, &target, vocab, params)?
                    || processing_boundary(&q_host, &draft, vocab, params)?
                {
                    rows_at_boundary = true;
                }
                (Some(p), Some(q))
            }
        };
        let target_in = p_dev.as_ref().unwrap_or(&t_dev);
        // The checked call reads its counters from a device state (as a recorded
        // speculative step does); the timed calls take them from the launch, and must agree.
        let state = b.upload(&[position as i32, index as i32])?;
        b.spec_verify(
            target_in,
            q_proc.as_ref(),
            &d_dev,
            &mut verdict,
            gamma,
            vocab,
            seed,
            PhiloxAt::Device {
                state: &state,
                offset: 0,
            },
        )?;
        let got = b.download(&verdict)?;
        let t = timed(b, timing_reps, |b| {
            b.spec_verify(
                target_in,
                q_proc.as_ref(),
                &d_dev,
                &mut verdict,
                gamma,
                vocab,
                seed,
                PhiloxAt::Host { position, index },
            )
        })?;
        let again = b.download(&verdict)?;
        ensure!(
            timing_reps == 0 || again == got,
            "spec_verify_f32: counters from the launch decided {again:?}, from a device state \
             {got:?}"
        );
        let want_layout = want.to_device_layout(&drafts);
        let mut d = decision_diff();
        let margin = if rows_at_boundary { 0.0 } else { want.margin };
        d.record(got == want_layout, margin, || {
            format!("cpu {want_layout:?} device {got:?}")
        });
        let mut r = line(
            "spec_verify_f32",
            format!("γ={gamma} {shape}"),
            d.pass(),
            0.0,
            0.0,
            format!(
                "accepted {} (cpu {}), margin {:.1e}{} {}",
                got[0],
                want.accepted,
                want.margin,
                if d.boundary > 0 {
                    " (at a boundary)"
                } else {
                    ""
                },
                d.first_bad.unwrap_or_default()
            ),
        );
        r.time_us = t;
        out.push(r);
    }

    let n = 4096;
    let mut words = b.poisoned::<u32>(4 * n)?;
    let mut uniforms = b.poisoned::<f32>(n)?;
    b.philox(seed, 17, Stream::Accept, 9, &mut words, &mut uniforms, n)?;
    let bad = compare_philox(
        &b.download(&words)?,
        &b.download(&uniforms)?,
        seed,
        17,
        Stream::Accept,
        9,
    );
    out.push(line(
        "philox_uniform_f32",
        format!("n={n}"),
        bad == 0,
        0.0,
        0.0,
        format!(
            "{bad} of {} words and uniforms differ from the Rust Philox",
            5 * n
        ),
    ));
    Ok(out)
}
