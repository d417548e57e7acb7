//! Statistical check with the real random stream: many seeded speculative continuations, their
//! empirical joint distribution of the first tokens against the target's exact joint (χ²).
//! The same threshold is shown to fail for deliberately broken algorithms.

use std::collections::HashMap;

use spedec_check::distribution::ChiSquare;
use spedec_sampling::{derive_seed, Rng, Sampler};
use spedec_speculative::testing::{speculative_with, Fault};
use spedec_speculative::{generate_speculative_with_gamma, AutoGamma, GammaChoice, GenConfig};

use crate::common::{exact_joint, models, random, HashLm};

const RUNS: usize = 20_000;
const JOINT: usize = 4;
const PROMPT: [u32; 2] = [3, 1];

/// χ² statistic over outcome bins (expected counts < 5 pooled), its degrees of freedom, and the
/// number of samples that fell on outcomes of probability 0 (`spedec_check::distribution`,
/// which the device sampler's checks share).
fn chi_square(
    counts: &HashMap<Vec<u32>, usize>,
    exact: &HashMap<Vec<u32>, f64>,
    n: usize,
) -> (f64, usize, usize) {
    let c = ChiSquare::of(counts, exact, n);
    (c.stat, c.df, c.impossible)
}

/// About six standard deviations above the χ² mean (`ChiSquare::threshold`).
fn threshold(df: usize) -> f64 {
    ChiSquare {
        stat: 0.0,
        df,
        impossible: 0,
    }
    .threshold()
}

fn sample(
    target: &HashLm,
    draft: &HashLm,
    sampler: Sampler,
    gamma: GammaChoice,
    fault: Fault,
) -> HashMap<Vec<u32>, usize> {
    sample_with_gammas(target, draft, sampler, gamma, fault).0
}

/// [`sample`], also returning the verify steps by γ over all runs.
fn sample_with_gammas(
    target: &HashLm,
    draft: &HashLm,
    sampler: Sampler,
    gamma: GammaChoice,
    fault: Fault,
) -> (HashMap<Vec<u32>, usize>, Vec<usize>) {
    let (mut t, mut d) = (target.clone(), draft.clone());
    let mut counts = HashMap::new();
    let mut gammas = vec![0; gamma.max() + 1];
    for i in 0..RUNS {
        let cfg = GenConfig {
            max_new_tokens: 6,
            gamma: gamma.max(),
            sampler,
            seed: derive_seed(2024, i as u64),
            stop_at_eos: false,
        };
        let g = if fault == Fault::None {
            generate_speculative_with_gamma(&mut t, &mut d, &PROMPT, &cfg, &gamma)
        } else {
            speculative_with(
                &mut t,
                &mut d,
                &PROMPT,
                &cfg,
                &gamma,
                &mut Rng::new(cfg.seed),
                fault,
            )
        }
        .unwrap();
        *counts.entry(g.tokens[..JOINT].to_vec()).or_default() += 1;
        for (n, k) in gammas.iter_mut().zip(&g.stats.gamma_histogram) {
            *n += k;
        }
    }
    (counts, gammas)
}

fn tv(counts: &HashMap<Vec<u32>, usize>, exact: &HashMap<Vec<u32>, f64>) -> f64 {
    let mut keys: Vec<&Vec<u32>> = counts.keys().chain(exact.keys()).collect();
    keys.sort();
    keys.dedup();
    let f = |k: &Vec<u32>| *counts.get(k).unwrap_or(&0) as f64 / RUNS as f64;
    0.5 * keys
        .iter()
        .map(|k| (f(k) - exact.get(*k).unwrap_or(&0.0)).abs())
        .sum::<f64>()
}

/// Correct runs (two drafts, two γ) pass; every listed fault fails the same threshold.
fn check(name: &str, sampler: Sampler, faults: &[Fault]) {
    let m = models(4, 2.0);
    let exact = exact_joint(&m.target, &PROMPT, JOINT, &sampler);
    for (draft_name, draft, gamma) in [("unrelated", &m.unrelated, 3), ("related", &m.related, 2)] {
        let counts = sample(
            &m.target,
            draft,
            sampler,
            GammaChoice::Fixed(gamma),
            Fault::None,
        );
        let (stat, df, impossible) = chi_square(&counts, &exact, RUNS);
        println!(
            "{name}, {draft_name} draft, γ={gamma}: χ²={stat:.1} (df {df}, threshold {:.1}), TV={:.4}",
            threshold(df),
            tv(&counts, &exact)
        );
        assert_eq!(impossible, 0, "{name}: sampled an outcome of probability 0");
        assert!(
            stat < threshold(df),
            "{name}, {draft_name}: χ² {stat} over {}",
            threshold(df)
        );
    }
    for &fault in faults {
        let counts = sample(
            &m.target,
            &m.unrelated,
            sampler,
            GammaChoice::Fixed(3),
            fault,
        );
        let (stat, df, impossible) = chi_square(&counts, &exact, RUNS);
        println!(
            "{name}, {fault:?}: χ²={stat:.1} (df {df}, threshold {:.1}), TV={:.4}, impossible {impossible}",
            threshold(df),
            tv(&counts, &exact)
        );
        assert!(
            impossible > 0 || stat > threshold(df),
            "{name}: {fault:?} passed the test (χ² {stat})"
        );
    }
}

const ALL_FAULTS: [Fault; 3] = [Fault::RawDraftQ, Fault::ResidualFromP, Fault::RawTargetP];

#[test]
fn statistical_temperature() {
    check("T=0.6", random(0.6, 0, 1.0), &ALL_FAULTS);
}

#[test]
fn statistical_top_k() {
    check("top-k=2", random(1.0, 2, 1.0), &ALL_FAULTS);
}

#[test]
fn statistical_top_p() {
    check("top-p=0.7", random(1.0, 0, 0.7), &ALL_FAULTS);
}

#[test]
fn statistical_combined() {
    check("T=1.5 k=3 p=0.9", random(1.5, 3, 0.9), &ALL_FAULTS);
}

/// γ chosen per step from the run's own measurements (here: the test models' timings) is
/// still lossless: it depends only on the past, never on the draft it is about to make.
/// A target with a fixed cost per call (cheap drafts pay), `start = 1` and fast forgetting make
/// γ move within these six-token runs.
#[test]
fn statistical_auto_gamma() {
    let sampler = random(1.0, 3, 0.9);
    let mut m = models(4, 2.0);
    m.target = m.target.with_call_cost(3000);
    let exact = exact_joint(&m.target, &PROMPT, JOINT, &sampler);
    let auto = GammaChoice::Auto(AutoGamma {
        start: 1,
        alpha_window: 2.0,
        cost_window: 2.0,
        ..AutoGamma::default()
    });
    for (draft_name, draft) in [("related", &m.related), ("unrelated", &m.unrelated)] {
        let (counts, gammas) = sample_with_gammas(&m.target, draft, sampler, auto, Fault::None);
        let (stat, df, impossible) = chi_square(&counts, &exact, RUNS);
        println!(
            "auto γ, {draft_name} draft: χ²={stat:.1} (df {df}, threshold {:.1}), TV={:.4}, \
             steps by γ {gammas:?}",
            threshold(df),
            tv(&counts, &exact)
        );
        let used = gammas.iter().filter(|&&n| n > 0).count();
        assert!(used >= 2, "auto γ never moved: {gammas:?}");
        assert_eq!(impossible, 0, "auto γ: sampled an outcome of probability 0");
        assert!(
            stat < threshold(df),
            "auto γ, {draft_name}: χ² {stat} over {}",
            threshold(df)
        );
    }
    // The same runs with a broken residual fail the same threshold.
    let counts = sample(&m.target, &m.unrelated, sampler, auto, Fault::ResidualFromP);
    let (stat, df, impossible) = chi_square(&counts, &exact, RUNS);
    println!("auto γ, ResidualFromP: χ²={stat:.1} (df {df}), impossible {impossible}");
    assert!(
        impossible > 0 || stat > threshold(df),
        "auto γ: the fault passed"
    );
}
