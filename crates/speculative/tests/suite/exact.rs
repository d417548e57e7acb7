//! Exact output distributions, by enumerating every path through the generators' random
//! decisions (each run of the real code weighed by the probability of its decisions).

use std::collections::HashMap;

use spedec_speculative::testing::{autoregressive_with, speculative_with, Fault};
use spedec_speculative::{GammaChoice, GenConfig, Sampler};

use crate::common::{enumerate_outputs, exact_joint, models, random, total_variation, HashLm};

fn settings() -> Vec<(&'static str, Sampler)> {
    vec![
        ("T=1", random(1.0, 0, 1.0)),
        ("T=0.7", random(0.7, 0, 1.0)),
        ("top-k=2", random(1.0, 2, 1.0)),
        ("top-p=0.8", random(1.0, 0, 0.8)),
        ("T=1.3 k=3 p=0.9", random(1.3, 3, 0.9)),
    ]
}

fn cfg(sampler: Sampler, max_new_tokens: usize, gamma: usize) -> GenConfig {
    GenConfig {
        max_new_tokens,
        gamma,
        sampler,
        seed: 0,
        stop_at_eos: false,
    }
}

fn spec_distribution(
    target: &HashLm,
    draft: &HashLm,
    prompt: &[u32],
    cfg: &GenConfig,
    fault: Fault,
) -> (HashMap<Vec<u32>, f64>, usize) {
    let (mut t, mut d) = (target.clone(), draft.clone());
    enumerate_outputs(|dec| {
        let gamma = GammaChoice::Fixed(cfg.gamma);
        speculative_with(&mut t, &mut d, prompt, cfg, &gamma, dec, fault)
            .unwrap()
            .tokens
    })
}

#[test]
fn enumeration_of_autoregressive_sampling_gives_the_target_joint() {
    let m = models(4, 2.0);
    for (name, sampler) in settings() {
        let mut t = m.target.clone();
        let c = cfg(sampler, 3, 1);
        let (got, _) = enumerate_outputs(|dec| {
            autoregressive_with(&mut t, &[1, 2], &c, dec)
                .unwrap()
                .tokens
        });
        let want = exact_joint(&m.target, &[1, 2], 3, &sampler);
        assert!(total_variation(&got, &want) < 1e-12, "{name}");
    }
}

#[test]
fn speculative_output_distribution_is_exactly_the_target_joint() {
    let m = models(4, 2.0);
    let mut total_paths = 0;
    for (name, sampler) in settings() {
        let want = exact_joint(&m.target, &[2, 0], 4, &sampler);
        for (draft_name, draft) in [
            ("same", &m.same),
            ("related", &m.related),
            ("unrelated", &m.unrelated),
        ] {
            for gamma in [1, 2, 3] {
                let (got, paths) = spec_distribution(
                    &m.target,
                    draft,
                    &[2, 0],
                    &cfg(sampler, 4, gamma),
                    Fault::None,
                );
                total_paths += paths;
                let mass: f64 = got.values().sum();
                assert!(
                    (mass - 1.0).abs() < 1e-12,
                    "{name} {draft_name} γ={gamma}: mass {mass}"
                );
                let tv = total_variation(&got, &want);
                assert!(
                    tv < 1e-12,
                    "{name}, {draft_name} draft, γ={gamma}: TV {tv:e}"
                );
            }
        }
    }
    println!("enumerated {total_paths} decision paths");
}

#[test]
fn speculative_exactness_with_full_gamma_and_several_steps() {
    // Vocabulary 3 keeps the tree small enough for 5 tokens: the first step after the prefill
    // token drafts γ = 3 unclipped, and rejections lead to second and third steps.
    let m = models(3, 2.5);
    let mut total_paths = 0;
    for (name, sampler) in settings() {
        let want = exact_joint(&m.target, &[1], 5, &sampler);
        let (got, paths) = spec_distribution(
            &m.target,
            &m.unrelated,
            &[1],
            &cfg(sampler, 5, 3),
            Fault::None,
        );
        total_paths += paths;
        assert!(total_variation(&got, &want) < 1e-12, "{name}");
    }
    println!("enumerated {total_paths} decision paths");
}

#[test]
fn exact_enumeration_detects_each_fault() {
    let m = models(4, 2.0);
    for (name, sampler) in settings() {
        let want = exact_joint(&m.target, &[2, 0], 4, &sampler);
        for fault in [Fault::RawDraftQ, Fault::ResidualFromP, Fault::RawTargetP] {
            let raw_is_processed = name == "T=1";
            if raw_is_processed && fault != Fault::ResidualFromP {
                continue; // with plain sampling the raw softmax *is* the processed distribution
            }
            let (got, _) =
                spec_distribution(&m.target, &m.unrelated, &[2, 0], &cfg(sampler, 4, 2), fault);
            let tv = total_variation(&got, &want);
            println!("exact, {name}, {fault:?}: TV {tv:.4}");
            assert!(
                tv > 0.01,
                "{name} {fault:?}: TV {tv} — the fault went unnoticed"
            );
        }
    }
}
