//! The device sampler (`kernels/sampling.cu`) on the host emulation against the CPU sampler
//! (`spedec-sampling` through `spedec_check::sampling_reference`): Philox words bit for bit,
//! processing within tolerance with equal kept sets, draws and speculative decisions equal
//! given the same Philox uniforms — on random and adversarial rows (ties, −inf, a dominant
//! token, flat rows, ±0) and on hand-built p / q. Disagreements are allowed only where the
//! CPU's margin is within `BOUNDARY_EPS` of a threshold; they are counted, bounded and
//! printed. A χ² test checks that one emulated speculative step emits tokens distributed as
//! the target's p. `sample_pick` (one row's processing and draw, or argmax, in one launch) must
//! equal `sample_process` + `sample_draw` bit for bit, route its ids, and flag bad rows; `copy`
//! moves exactly its range. Prints `skipped: no C++ compiler` where none is found.

mod support;

use spedec_check::emulator::HostEmulator;
use spedec_check::kernels::{all_passed, format_table};
use spedec_check::sampler::SamplerBackend;
use spedec_check::sampler_check::{
    compare_draws, compare_philox, compare_processed, cpu_decision, decision_diff, near_row,
    processing_boundary, run_sampler_checks_on, DecisionDiff, ProcessDiff, RowKind, BOUNDARY_EPS,
};
use spedec_check::sampling_reference::verify_probs;
use spedec_cuda::{KernelBackend, PhiloxAt, PickDest};
use spedec_sampling::philox::Stream;
use spedec_sampling::{Rng, Sampler, SamplingParams};
use support::{emulator_or_skip, visible};

fn params(t: f32, k: usize, p: f32) -> SamplingParams {
    SamplingParams::new(t, k, p).unwrap()
}

/// Temperature / top-k / top-p settings: plain, temperature only, top-k (incl. k = 1 and
/// ties), top-p (incl. tight and loose), and both.
fn settings() -> Vec<SamplingParams> {
    vec![
        params(1.0, 0, 1.0),
        params(0.7, 0, 1.0),
        params(1.3, 50, 1.0),
        params(1.0, 1, 1.0),
        params(1.0, 0, 0.9),
        params(1.0, 0, 0.5),
        params(2.0, 0, 0.999),
        params(0.8, 40, 0.95),
        params(1.0, 5, 0.3),
        params(0.6, 200, 0.99),
    ]
}

fn rows_of(rng: &mut Rng, vocab: usize, kinds: &[RowKind]) -> Vec<f32> {
    kinds.iter().flat_map(|k| k.row(rng, vocab)).collect()
}

fn process_on(
    emu: &mut HostEmulator,
    logits: &[f32],
    m: usize,
    v: usize,
    p: &SamplingParams,
) -> Vec<f32> {
    let l = emu.upload(logits).unwrap();
    let mut out = vec![f32::NAN; m * v];
    emu.sample_process(&l, &mut out, m, v, p).unwrap();
    out
}

#[test]
fn philox_on_the_device_equals_the_rust_philox() {
    let Some(mut emu) = emulator_or_skip("philox_on_the_device_equals_the_rust_philox") else {
        return;
    };
    // Random123's first known-answer vector: key 0, counter 0 (position 0, stream 0, index 0).
    let mut w = vec![0u32; 4];
    let mut u = vec![0f32; 1];
    emu.philox(0, 0, Stream::First, 0, &mut w, &mut u, 1)
        .unwrap();
    assert_eq!(w, vec![0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
    let n = 1000;
    let mut total = 0;
    for (seed, position, stream, index) in [
        (0u64, 0u32, Stream::Draft, 0u32),
        (u64::MAX, u32::MAX - 500, Stream::Accept, u32::MAX),
        (0x243f_6a88_85a3_08d3, 123_456, Stream::Residual, 7),
        (42, 5, Stream::First, 1),
    ] {
        let mut words = vec![0u32; 4 * n];
        let mut uniforms = vec![0f32; n];
        emu.philox(seed, position, stream, index, &mut words, &mut uniforms, n)
            .unwrap();
        let bad = compare_philox(&words, &uniforms, seed, position, stream, index);
        total += bad;
        assert_eq!(bad, 0, "seed {seed:#x} position {position} {stream:?}");
    }
    visible(&format!(
        "philox: 4 × {n} counters, {total} words or uniforms differ from the Rust Philox"
    ));
}

#[test]
fn processing_matches_the_cpu_sampler() {
    let Some(mut emu) = emulator_or_skip("processing_matches_the_cpu_sampler") else {
        return;
    };
    let mut rng = Rng::new(11);
    let (mut rows, mut boundary) = (0, 0);
    let (mut worst_abs, mut worst_rel) = (0f64, 0f64);
    for v in [777usize, 4096] {
        for p in settings() {
            let kinds = RowKind::ALL;
            let logits = rows_of(&mut rng, v, &kinds);
            let got = process_on(&mut emu, &logits, kinds.len(), v, &p);
            let d: ProcessDiff = compare_processed(&got, &logits, v, &p).unwrap();
            visible(&format!(
                "process V={v:<5} T={:<4} k={:<4} p={:<6} max_abs {:.2e} max_rel {:.2e} boundary rows {}",
                p.temperature, p.top_k, p.top_p, d.max_abs, d.max_rel, d.boundary_rows
            ));
            assert!(d.pass(), "V={v} {p:?}: {:?}", d.first_bad);
            rows += d.rows;
            boundary += d.boundary_rows;
            worst_abs = worst_abs.max(d.max_abs);
            worst_rel = worst_rel.max(d.max_rel);
        }
    }
    visible(&format!(
        "process: {rows} rows, largest |device − cpu| {worst_abs:.3e} (relative {worst_rel:.3e}), \
         {boundary} rows with a top-p boundary token within {BOUNDARY_EPS:e}"
    ));
    assert!(
        boundary * 20 <= rows,
        "{boundary} of {rows} rows at a boundary"
    );
}

#[test]
fn kept_sets_follow_the_top_k_and_top_p_rules_on_ties() {
    let Some(mut emu) = emulator_or_skip("kept_sets_follow_the_top_k_and_top_p_rules_on_ties")
    else {
        return;
    };
    // Four tokens tied at the top, then lower ones: top-k = 2 keeps all four tied tokens.
    let v = 600;
    let mut row = vec![-3.0f32; v];
    for &i in &[10, 200, 201, 599] {
        row[i] = 2.0;
    }
    row[300] = 1.0;
    let got = process_on(&mut emu, &row, 1, v, &params(1.0, 2, 1.0));
    let kept: Vec<usize> = (0..v).filter(|&i| got[i] > 0.0).collect();
    assert_eq!(kept, vec![10, 200, 201, 599]);
    // Top-p among the four equal tokens: 0.3 of the mass needs two of them — the lowest ids.
    let got = process_on(&mut emu, &row, 1, v, &params(1.0, 2, 0.3));
    let kept: Vec<usize> = (0..v).filter(|&i| got[i] > 0.0).collect();
    assert_eq!(kept, vec![10, 200]);
    assert!((got[10] - 0.5).abs() < 1e-6 && (got[200] - 0.5).abs() < 1e-6);
    // A tiny top-p keeps exactly the top token (the lowest id among the tied).
    let got = process_on(&mut emu, &row, 1, v, &params(1.0, 0, 1e-6));
    assert_eq!(
        (0..v).filter(|&i| got[i] > 0.0).collect::<Vec<_>>(),
        vec![10]
    );
    assert_eq!(got[10], 1.0);
    // −inf entries never survive; a flat row keeps everything under top-k = V − 1 (ties).
    let mut masked = vec![f32::NEG_INFINITY; v];
    masked[7] = 0.0;
    masked[8] = -0.0;
    let got = process_on(&mut emu, &masked, 1, v, &params(1.0, 1, 1.0));
    assert_eq!(
        (0..v).filter(|&i| got[i] > 0.0).collect::<Vec<_>>(),
        vec![7, 8]
    );
    let flat = vec![1.5f32; v];
    let got = process_on(&mut emu, &flat, 1, v, &params(1.0, v - 1, 1.0));
    assert!(got.iter().all(|&p| (p - 1.0 / v as f32).abs() < 1e-9));
}

#[test]
fn greedy_argmax_matches_the_cpu_on_adversarial_rows() {
    let Some(mut emu) = emulator_or_skip("greedy_argmax_matches_the_cpu_on_adversarial_rows")
    else {
        return;
    };
    use spedec_check::CheckBackend;
    let mut rng = Rng::new(8);
    for v in [5usize, 1000, 5003] {
        let kinds = RowKind::ALL;
        let logits = rows_of(&mut rng, v, &kinds);
        let mut ids = vec![u32::MAX; kinds.len()];
        emu.argmax(&logits, &mut ids, kinds.len(), v).unwrap();
        let want: Vec<u32> = logits
            .chunks(v)
            .map(|r| spedec_sampling::argmax(r).unwrap())
            .collect();
        assert_eq!(ids, want, "V={v}");
    }
}

#[test]
fn draws_match_the_cpu_given_the_same_uniform() {
    let Some(mut emu) = emulator_or_skip("draws_match_the_cpu_given_the_same_uniform") else {
        return;
    };
    let mut rng = Rng::new(5);
    let mut all: DecisionDiff = decision_diff();
    let v = 1500;
    let m = 48; // 8 copies of each kind: different positions, different uniforms
    for (n, p) in settings().iter().enumerate() {
        let kinds: Vec<RowKind> = (0..m)
            .map(|r| RowKind::ALL[r % RowKind::ALL.len()])
            .collect();
        let logits = rows_of(&mut rng, v, &kinds);
        let probs = process_on(&mut emu, &logits, m, v, p);
        let mut toks = vec![-2i32; m];
        let (seed, position) = (1000 + n as u64, 40 * n as u32);
        emu.sample_draw(&probs, &mut toks, m, v, seed, position, Stream::Draft, 2)
            .unwrap();
        let d = compare_draws(
            &toks,
            &probs,
            &logits,
            v,
            p,
            seed,
            position,
            Stream::Draft,
            2,
        )
        .unwrap();
        assert!(d.pass(), "{p:?}: {:?}", d.first_bad);
        all.merge(d);
    }
    visible(&format!(
        "draw: {} draws, {} equal, {} at a CDF boundary (margin <= {BOUNDARY_EPS:e}) or a top-p boundary, \
         smallest margin {:.2e}",
        all.cases, all.equal, all.boundary, all.min_margin
    ));
    assert!(all.boundary * 50 <= all.cases);
    // A row without mass gives −1; zero-probability tokens are never drawn.
    let probs = vec![0.0f32; 64];
    let mut toks = vec![7i32; 1];
    emu.sample_draw(&probs, &mut toks, 1, 64, 1, 0, Stream::First, 0)
        .unwrap();
    assert_eq!(toks, vec![-1]);
    let mut probs = vec![0.0f32; 3000];
    probs[2999] = 0.25;
    probs[1] = 0.75;
    let mut toks = vec![0i32; 200];
    let rows: Vec<f32> = (0..200).flat_map(|_| probs.clone()).collect();
    emu.sample_draw(&rows, &mut toks, 200, 3000, 9, 0, Stream::First, 0)
        .unwrap();
    assert!(toks.iter().all(|&t| t == 1 || t == 2999), "{toks:?}");
    let last = toks.iter().filter(|&&t| t == 2999).count();
    assert!(
        (25..=80).contains(&last),
        "token 2999 drawn {last} of 200 times (p 0.25)"
    );
}

/// Runs the device decision on f32 rows p [γ + 1, V], q [γ, V] and the CPU's on their f64
/// images (identical inputs).
fn verify_exact(
    emu: &mut HostEmulator,
    p: &[Vec<f32>],
    q: &[Vec<f32>],
    drafts: &[u32],
    seed: u64,
    position: u32,
    index: u32,
) -> (Vec<i32>, Vec<i32>, f64) {
    let v = p[0].len();
    let pf: Vec<f32> = p.concat();
    let qf: Vec<f32> = q.concat();
    let d: Vec<i32> = drafts.iter().map(|&x| x as i32).collect();
    let mut out = vec![-9i32; drafts.len() + 2];
    emu.spec_verify(
        &pf,
        Some(&qf),
        &d,
        &mut out,
        drafts.len(),
        v,
        seed,
        PhiloxAt::Host { position, index },
    )
    .unwrap();
    let p64: Vec<Vec<f64>> = p
        .iter()
        .map(|r| r.iter().map(|&x| f64::from(x)).collect())
        .collect();
    let q64: Vec<Vec<f64>> = q
        .iter()
        .map(|r| r.iter().map(|&x| f64::from(x)).collect())
        .collect();
    let want = verify_probs(&p64, &q64, drafts, seed, position, index).unwrap();
    (out, want.to_device_layout(drafts), want.margin)
}

fn normalised(rng: &mut Rng, v: usize) -> Vec<f32> {
    let w: Vec<f64> = (0..v).map(|_| rng.uniform().powi(3)).collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|x| (x / s) as f32).collect()
}

#[test]
fn decisions_match_on_constructed_p_and_q() {
    let Some(mut emu) = emulator_or_skip("decisions_match_on_constructed_p_and_q") else {
        return;
    };
    let v = 300;
    let mut rng = Rng::new(21);
    // p >= q at every draft: all accepted, whatever the uniforms; the bonus from row γ.
    let q: Vec<Vec<f32>> = (0..3).map(|_| normalised(&mut rng, v)).collect();
    let mut p = q.clone();
    p.push(normalised(&mut rng, v));
    let drafts = [3u32, 100, 299];
    for (row, &d) in p.iter_mut().zip(&drafts) {
        row[d as usize] += 0.01; // p(d) > q(d); rows need not sum to 1 for the decision
    }
    for index in 0..20 {
        let (got, want, _) = verify_exact(&mut emu, &p, &q, &drafts, 7, 50, index);
        assert_eq!(got[0], 3, "index {index}: {got:?}");
        assert_eq!(got, want);
    }
    // p(d₀) = 0: the first draft is always rejected; the replacement comes from
    // max(0, p − q), which here has all its mass on tokens 10 and 20.
    let mut p0 = vec![0.0f32; v];
    p0[10] = 0.5;
    p0[20] = 0.5;
    let mut q0 = vec![0.0f32; v];
    q0[3] = 0.5;
    q0[10] = 0.5;
    // max(0, p − q) = {20: 0.5}: always token 20.
    let p = vec![p0.clone(), normalised(&mut rng, v)];
    let q = vec![q0.clone()];
    for index in 0..20 {
        let (got, want, _) = verify_exact(&mut emu, &p, &q, &[3], 7, 50, index);
        assert_eq!(got, vec![0, 20, -1], "index {index}");
        assert_eq!(got, want);
    }
    // p = q: every draft accepted (the ratio is 1).
    let p = vec![q0.clone(), q0.clone()];
    let (got, want, _) = verify_exact(&mut emu, &p, &[q0.clone()], &[3], 1, 0, 0);
    assert_eq!(got[0], 1);
    assert_eq!(got, want);
    // A bad draft id is reported, not used.
    let mut out = vec![0i32; 3];
    let pf = [p0.clone(), p0.clone()].concat();
    let at = PhiloxAt::Host {
        position: 0,
        index: 0,
    };
    emu.spec_verify(&pf, Some(&q0), &vec![v as i32], &mut out, 1, v, 1, at)
        .unwrap();
    assert_eq!(out, vec![-1, -1, -1]);

    // p < q at random drafts, many uniforms: acceptance, first rejection and residual draws
    // all as the CPU decides them.
    let mut diff = decision_diff();
    let mut accepted = [0usize; 6];
    for case in 0..60u32 {
        let gamma = 1 + (case % 5) as usize;
        let p: Vec<Vec<f32>> = (0..=gamma).map(|_| normalised(&mut rng, v)).collect();
        let q: Vec<Vec<f32>> = (0..gamma).map(|_| normalised(&mut rng, v)).collect();
        let drafts: Vec<u32> = q
            .iter()
            .map(|row| {
                // The draft's most likely token: p < q there more often than not.
                (0..v).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as u32
            })
            .collect();
        let (got, want, margin) = verify_exact(&mut emu, &p, &q, &drafts, 3, case * 10, case);
        accepted[got[0].clamp(0, 5) as usize] += 1;
        diff.record(got == want, margin, || {
            format!("case {case}: cpu {want:?} device {got:?}")
        });
    }
    visible(&format!(
        "verify (constructed p, q): {} cases, {} equal, {} at a boundary, accepted-count \
         histogram {accepted:?}",
        diff.cases, diff.equal, diff.boundary
    ));
    assert!(diff.pass(), "{:?}", diff.first_bad);
    assert!(accepted[0] > 0 && accepted[1..].iter().sum::<usize>() > 0);
}

#[test]
fn decisions_match_on_processed_logits_and_greedy() {
    let Some(mut emu) = emulator_or_skip("decisions_match_on_processed_logits_and_greedy") else {
        return;
    };
    let v = 1024;
    let mut rng = Rng::new(33);
    let mut diff = decision_diff();
    let mut hist = [0usize; 8];
    let samplers = [
        Sampler::Greedy,
        Sampler::Random(params(1.0, 0, 1.0)),
        Sampler::Random(params(0.8, 40, 0.95)),
        Sampler::Random(params(1.2, 0, 0.9)),
    ];
    for case in 0..32u32 {
        let sampler = samplers[case as usize % samplers.len()];
        let gamma = [1usize, 4, 7][case as usize % 3];
        let sigma = [0.1, 1.0, 4.0][(case as usize / 3) % 3];
        let kinds: Vec<RowKind> = (0..=gamma)
            .map(|r| RowKind::ALL[(r + case as usize) % 5])
            .collect();
        let target = rows_of(&mut rng, v, &kinds);
        let draft: Vec<f32> = target[..gamma * v]
            .chunks(v)
            .flat_map(|r| near_row(&mut rng, r, sigma))
            .collect();
        let (seed, position, index) = (77u64, 500 + case, case);
        let drafts: Vec<u32> = match &sampler {
            Sampler::Greedy => draft
                .chunks(v)
                .map(|r| spedec_sampling::argmax(r).unwrap())
                .collect(),
            Sampler::Random(p) => spedec_check::sampling_reference::process_rows(&draft, v, p)
                .unwrap()
                .iter()
                .enumerate()
                .map(|(i, q)| {
                    spedec_check::sampling_reference::draw(
                        q,
                        seed,
                        position + i as u32,
                        Stream::Draft,
                        index,
                    )
                    .unwrap()
                    .token
                })
                .collect(),
        };
        let want = cpu_decision(&sampler, &target, &draft, &drafts, v, seed, position, index)
            .unwrap()
            .to_device_layout(&drafts);
        let d_i: Vec<i32> = drafts.iter().map(|&d| d as i32).collect();
        let mut out = vec![-9i32; gamma + 2];
        let processed = match &sampler {
            Sampler::Greedy => {
                let at = PhiloxAt::Host { position, index };
                emu.spec_verify(&target, None, &d_i, &mut out, gamma, v, seed, at)
                    .unwrap();
                None
            }
            Sampler::Random(p) => {
                let pt = process_on(&mut emu, &target, gamma + 1, v, p);
                let qt = process_on(&mut emu, &draft, gamma, v, p);
                emu.spec_verify(
                    &pt,
                    Some(&qt),
                    &d_i,
                    &mut out,
                    gamma,
                    v,
                    seed,
                    PhiloxAt::Host { position, index },
                )
                .unwrap();
                Some((pt, qt))
            }
        };
        let mut margin = cpu_decision(&sampler, &target, &draft, &drafts, v, seed, position, index)
            .unwrap()
            .margin;
        if let (Sampler::Random(p), Some((pt, qt))) = (&sampler, &processed) {
            // Rows whose kept sets differ at a top-p boundary make a different decision
            // legitimate.
            if processing_boundary(pt, &target, v, p).unwrap()
                || processing_boundary(qt, &draft, v, p).unwrap()
            {
                margin = 0.0;
            }
        }
        hist[out[0].clamp(0, 7) as usize] += 1;
        diff.record(out == want, margin, || {
            format!("case {case} {sampler:?} γ {gamma}: cpu {want:?} device {out:?}")
        });
    }
    visible(&format!(
        "verify (processed logits, greedy): {} cases, {} equal, {} at a boundary, accepted \
         histogram {hist:?}",
        diff.cases, diff.equal, diff.boundary
    ));
    assert!(diff.pass(), "{:?}", diff.first_bad);
    assert!(diff.boundary * 10 <= diff.cases);
}

#[test]
fn sampler_self_check_at_pythia_vocabulary() {
    let Some(mut emu) = emulator_or_skip("sampler_self_check_at_pythia_vocabulary") else {
        return;
    };
    let t = std::time::Instant::now();
    let results = run_sampler_checks_on(&mut emu, 50304, 4, 0x5eed, 0).unwrap();
    visible(&format!(
        "sampler self-check at V = 50304 (emulated, {:.1} s):\n{}",
        t.elapsed().as_secs_f64(),
        format_table(&results)
    ));
    assert!(all_passed(&results), "see the table above");
}

#[test]
fn emitted_tokens_follow_the_target_distribution() {
    let Some(mut emu) = emulator_or_skip("emitted_tokens_follow_the_target_distribution") else {
        return;
    };
    // One speculative step with γ = 1 on fixed p and q, repeated over positions (fresh
    // uniforms): the first emitted token (the draft if accepted, else the residual draw) must
    // be distributed as p. The draft token itself is drawn on the device from q.
    let p = [0.30f32, 0.05, 0.25, 0.10, 0.20, 0.10];
    let q = [0.10f32, 0.30, 0.10, 0.30, 0.10, 0.10];
    let v = p.len();
    let n = 1500usize;
    let (seed, index) = (2024u64, 1u32);
    let q_rows: Vec<f32> = (0..n).flat_map(|_| q).collect();
    let mut drafts = vec![-1i32; n];
    emu.sample_draw(&q_rows, &mut drafts, n, v, seed, 0, Stream::Draft, index)
        .unwrap();
    let target: Vec<f32> = [p, p].concat(); // row 0 scores the draft, row 1 gives the bonus
    let q_row = q.to_vec();
    let mut counts = [0usize; 6];
    let mut accepted = 0;
    for (pos, &d) in drafts.iter().enumerate() {
        let mut out = vec![-9i32; 3];
        emu.spec_verify(
            &target,
            Some(&q_row),
            &vec![d],
            &mut out,
            1,
            v,
            seed,
            PhiloxAt::Host {
                position: pos as u32,
                index,
            },
        )
        .unwrap();
        let first = if out[0] == 1 { d } else { out[1] };
        accepted += usize::from(out[0] == 1);
        counts[first as usize] += 1;
    }
    let chi2: f64 = counts
        .iter()
        .zip(p)
        .map(|(&c, pi)| {
            let e = n as f64 * f64::from(pi);
            (c as f64 - e).powi(2) / e
        })
        .sum();
    let overlap: f64 = p.iter().zip(q).map(|(a, b)| f64::from(a.min(b))).sum();
    visible(&format!(
        "emitted-token distribution over {n} steps: counts {counts:?}, χ² = {chi2:.2} (5 dof), \
         acceptance {:.3} (expected Σ min(p, q) = {overlap:.3})",
        accepted as f64 / n as f64
    ));
    // 5 degrees of freedom: P(χ² > 20.5) = 0.001.
    assert!(
        chi2 < 20.5,
        "χ² {chi2:.2}: the emitted tokens do not follow p"
    );
    assert!((accepted as f64 / n as f64 - overlap).abs() < 0.04);
}

/// `sample_pick` of row `row` into fresh buffers: (token, probs row written, draft id,
/// verify id).
#[allow(clippy::too_many_arguments)]
fn pick_on(
    emu: &mut HostEmulator,
    logits: &Vec<f32>,
    row: usize,
    v: usize,
    sampler: &Sampler,
    seed: u64,
    position: u32,
    stream: Stream,
    index: u32,
) -> (i32, Vec<f32>, u32, u32) {
    let mut probs = vec![f32::NAN; v];
    let mut tok = vec![-9i32; 1];
    let (mut d, mut q) = (vec![u32::MAX; 1], vec![u32::MAX; 1]);
    emu.sample_pick(
        logits,
        row,
        Some((&mut probs, 0)),
        PickDest {
            token: (&mut tok, 0),
            draft_input: Some((&mut d, 0)),
            verify_input: Some((&mut q, 0)),
        },
        v,
        sampler,
        seed,
        stream,
        PhiloxAt::Host { position, index },
    )
    .unwrap();
    (tok[0], probs, d[0], q[0])
}

#[test]
fn pick_equals_process_then_draw_and_greedy_the_argmax() {
    let Some(mut emu) = emulator_or_skip("pick_equals_process_then_draw_and_greedy_the_argmax")
    else {
        return;
    };
    let mut rng = Rng::new(41);
    let kinds = RowKind::ALL;
    let m = kinds.len();
    let (mut picks, mut bits) = (0usize, 0usize);
    for v in [777usize, 4096] {
        for (n, p) in settings().iter().enumerate() {
            let logits = rows_of(&mut rng, v, &kinds);
            let probs = process_on(&mut emu, &logits, m, v, p);
            let (seed, position, index) = (900 + n as u64, 70 * n as u32, 5u32);
            let mut toks = vec![-2i32; m];
            emu.sample_draw(
                &probs,
                &mut toks,
                m,
                v,
                seed,
                position,
                Stream::Draft,
                index,
            )
            .unwrap();
            let sampler = Sampler::Random(*p);
            for r in 0..m {
                let pos = position + r as u32;
                let (tok, row_probs, d, q) = pick_on(
                    &mut emu,
                    &logits,
                    r,
                    v,
                    &sampler,
                    seed,
                    pos,
                    Stream::Draft,
                    index,
                );
                let want = &probs[r * v..(r + 1) * v];
                let differ = row_probs
                    .iter()
                    .zip(want)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                bits += differ;
                assert_eq!(differ, 0, "V={v} {p:?} row {r} ({:?})", kinds[r]);
                assert_eq!(tok, toks[r], "V={v} {p:?} row {r} ({:?})", kinds[r]);
                assert!(tok >= 0 && d == tok as u32 && q == tok as u32);
                picks += 1;
            }
            // Greedy on the same rows: the CPU argmax (lowest id on ties), no probs needed.
            for r in 0..m {
                let want = spedec_sampling::argmax(&logits[r * v..(r + 1) * v]).unwrap();
                let mut tok = vec![-9i32; 1];
                emu.sample_pick(
                    &logits,
                    r,
                    None,
                    PickDest {
                        token: (&mut tok, 0),
                        draft_input: None,
                        verify_input: None,
                    },
                    v,
                    &Sampler::Greedy,
                    seed,
                    Stream::First,
                    PhiloxAt::Host { position, index },
                )
                .unwrap();
                assert_eq!(tok[0], want as i32, "greedy V={v} row {r} ({:?})", kinds[r]);
                picks += 1;
            }
        }
    }
    visible(&format!(
        "sample_pick: {picks} picks equal to sample_process + sample_draw (random) or the CPU \
         argmax (greedy); {bits} processed probabilities differ in bits"
    ));
}

#[test]
fn pick_routes_ids_and_flags_bad_rows() {
    let Some(mut emu) = emulator_or_skip("pick_routes_ids_and_flags_bad_rows") else {
        return;
    };
    let v = 513;
    let mut rng = Rng::new(3);
    let mut logits = rows_of(
        &mut rng,
        v,
        &[RowKind::Random, RowKind::Dominant, RowKind::Ties],
    );
    // Row 1's dominant token, placed where we know it.
    logits[v..2 * v]
        .iter_mut()
        .for_each(|x| *x = x.clamp(-4.0, 4.0));
    logits[v + 321] = 40.0;
    let random = Sampler::Random(params(0.9, 0, 0.95));
    for sampler in [Sampler::Greedy, random] {
        let mut probs = vec![-7.0f32; 3 * v];
        let mut tok = vec![-5i32; 6];
        let mut d = vec![11u32; 9];
        let mut q = vec![12u32; 4];
        // The counter (position 2, index 3) from a device state, as a device step takes it.
        let state = vec![2i32, 3];
        emu.sample_pick(
            &logits,
            1,
            Some((&mut probs, 2)),
            PickDest {
                token: (&mut tok, 4),
                draft_input: Some((&mut d, 8)),
                verify_input: Some((&mut q, 1)),
            },
            v,
            &sampler,
            1,
            Stream::First,
            PhiloxAt::Device {
                state: &state,
                offset: 0,
            },
        )
        .unwrap();
        assert_eq!(tok, vec![-5, -5, -5, -5, 321, -5], "{sampler:?}");
        assert_eq!(d, [vec![11u32; 8], vec![321]].concat());
        assert_eq!(q, vec![12, 321, 12, 12]);
        // Only row 2 of probs is written, and only when sampling.
        assert!(probs[..2 * v].iter().all(|&x| x == -7.0));
        if sampler == Sampler::Greedy {
            assert!(probs[2 * v..].iter().all(|&x| x == -7.0));
        } else {
            let s: f32 = probs[2 * v..].iter().sum();
            assert!(
                (s - 1.0).abs() < 1e-4 && probs[2 * v + 321] > 0.99,
                "sum {s}"
            );
        }
    }
    // Bad rows: a NaN, a +inf, nothing finite → −1 and ids 0, in both modes.
    let mut bad = vec![0.5f32; 3 * v];
    bad[17] = f32::NAN;
    bad[v + 400] = f32::INFINITY;
    bad[2 * v..].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    for sampler in [
        Sampler::Greedy,
        random,
        Sampler::Random(params(1.0, 5, 1.0)),
    ] {
        for r in 0..3 {
            let (tok, _, d, q) = pick_on(&mut emu, &bad, r, v, &sampler, 9, 0, Stream::First, 0);
            assert_eq!((tok, d, q), (-1, 0, 0), "{sampler:?} bad row {r}");
        }
    }
}

#[test]
fn pick_refuses_bad_arguments() {
    let Some(mut emu) = emulator_or_skip("pick_refuses_bad_arguments") else {
        return;
    };
    let v = 64;
    let logits = vec![0.0f32; 2 * v];
    let mut tok = vec![0i32; 2];
    let mut probs = vec![0.0f32; v];
    let random = Sampler::Random(params(1.0, 0, 1.0));
    let mut call = |emu: &mut HostEmulator,
                    row: usize,
                    probs: Option<(&mut Vec<f32>, usize)>,
                    at: usize,
                    sampler: &Sampler| {
        emu.sample_pick(
            &logits,
            row,
            probs,
            PickDest {
                token: (&mut tok, at),
                draft_input: None,
                verify_input: None,
            },
            v,
            sampler,
            0,
            Stream::First,
            PhiloxAt::Host {
                position: 0,
                index: 0,
            },
        )
    };
    let e = call(&mut emu, 0, None, 0, &random).unwrap_err();
    assert!(format!("{e:#}").contains("probs"), "{e:#}");
    assert!(call(&mut emu, 2, None, 0, &Sampler::Greedy).is_err()); // row past the end
    assert!(call(&mut emu, 0, None, 2, &Sampler::Greedy).is_err()); // token index
    assert!(call(&mut emu, 0, Some((&mut probs, 1)), 0, &random).is_err()); // probs row
    let bad_t = Sampler::Random(SamplingParams {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
    });
    assert!(call(&mut emu, 0, Some((&mut probs, 0)), 0, &bad_t).is_err());
    call(&mut emu, 1, Some((&mut probs, 0)), 1, &random).unwrap();
    call(&mut emu, 1, None, 1, &Sampler::Greedy).unwrap();
}
