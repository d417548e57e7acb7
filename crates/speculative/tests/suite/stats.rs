//! Run statistics: consistency identities and serialisation.

use spedec_speculative::{generate_autoregressive, generate_speculative, GenConfig, Mode, Sampler};

use crate::common::{models, prompts, random};

#[test]
fn self_draft_accepts_everything_and_counters_are_consistent() {
    let m = models(6, 2.0);
    for sampler in [Sampler::Greedy, random(0.9, 0, 1.0), random(1.0, 3, 0.8)] {
        for gamma in [1, 3, 5] {
            let (mut t, mut d) = (m.target.clone(), m.same.clone());
            let cfg = GenConfig {
                max_new_tokens: 40,
                gamma,
                sampler,
                seed: 3,
                stop_at_eos: false,
            };
            let s = generate_speculative(&mut t, &mut d, &[1, 2, 3], &cfg)
                .unwrap()
                .stats;
            assert_eq!(s.acceptance_rate, Some(1.0), "{sampler:?} γ={gamma}");
            assert_eq!(s.accepted, s.drafted);
            assert!(s.acceptance_per_position.iter().all(|a| *a == Some(1.0)));
            // Only the last, clipped step may accept fewer than γ.
            let hist = &s.accepted_length_histogram;
            assert!(hist[gamma] >= s.verify_steps - 1);
        }
    }
}

#[test]
fn counters_obey_their_identities() {
    let m = models(5, 2.0);
    for (i, prompt) in prompts(20, 5, 7, 4).into_iter().enumerate() {
        for draft in [&m.related, &m.unrelated] {
            let (mut t, mut d) = (m.target.clone(), draft.clone());
            let gamma = 1 + i % 5;
            let cfg = GenConfig {
                max_new_tokens: 33,
                gamma,
                sampler: random(1.0, 0, 1.0),
                seed: i as u64,
                stop_at_eos: false,
            };
            let g = generate_speculative(&mut t, &mut d, &prompt, &cfg).unwrap();
            let s = &g.stats;
            assert_eq!(s.mode, Mode::Speculative);
            assert_eq!(s.new_tokens, g.tokens.len());
            assert_eq!(s.prompt_tokens, prompt.len());
            let hist = &s.accepted_length_histogram;
            assert_eq!(hist.len(), gamma + 1);
            assert_eq!(hist.iter().sum::<usize>(), s.verify_steps);
            assert_eq!(
                hist.iter().enumerate().map(|(j, h)| j * h).sum::<usize>(),
                s.accepted
            );
            let mean = hist
                .iter()
                .enumerate()
                .map(|(j, h)| (j + 1) * h)
                .sum::<usize>() as f64
                / s.verify_steps as f64;
            assert!((s.mean_accepted_length.unwrap() - mean).abs() < 1e-12);
            assert!(
                (s.mean_accepted_length.unwrap()
                    - (1.0 + s.accepted as f64 / s.verify_steps as f64))
                    .abs()
                    < 1e-12
            );
            assert_eq!(s.drafted_per_position[0], s.verify_steps);
            assert_eq!(s.drafted_per_position.iter().sum::<usize>(), s.drafted);
            assert_eq!(s.accepted_per_position.iter().sum::<usize>(), s.accepted);
            // Without EOS every target call emits accepted + 1 tokens (the prefill emits one).
            assert_eq!(s.new_tokens, s.accepted + s.target_calls);
            // The draft runs once for the prompt and once per drafted token.
            assert_eq!(s.draft_calls, 1 + s.drafted);
            let t = &s.timing;
            assert!(t.ttft_s.unwrap() <= t.total_s && t.prefill_s <= t.ttft_s.unwrap());
            assert!(t.tpot_s.unwrap() >= 0.0 && t.throughput_tok_s.unwrap() > 0.0);
            assert!(t.draft_s + t.target_s + t.sampling_s + t.prefill_s <= t.total_s);
        }
    }
}

#[test]
fn acceptance_statistics_of_the_test_pairs() {
    // Reported, and loosely bounded so a broken acceptance rule shows.
    let m = models(8, 2.0);
    let mut rates = Vec::new();
    for (name, draft) in [
        ("same", &m.same),
        ("related", &m.related),
        ("unrelated", &m.unrelated),
    ] {
        for sampler in [Sampler::Greedy, random(1.0, 0, 1.0)] {
            let (mut acc, mut dr, mut steps, mut emitted) = (0, 0, 0, 0);
            let mut per_pos = [0usize; 4];
            let mut per_pos_d = [0usize; 4];
            for (i, prompt) in prompts(30, 8, 6, 8).into_iter().enumerate() {
                let (mut t, mut d) = (m.target.clone(), draft.clone());
                let cfg = GenConfig {
                    max_new_tokens: 64,
                    gamma: 4,
                    sampler,
                    seed: i as u64,
                    stop_at_eos: false,
                };
                let s = generate_speculative(&mut t, &mut d, &prompt, &cfg)
                    .unwrap()
                    .stats;
                acc += s.accepted;
                dr += s.drafted;
                steps += s.verify_steps;
                emitted += s.accepted + s.verify_steps;
                for p in 0..4 {
                    per_pos[p] += s.accepted_per_position[p];
                    per_pos_d[p] += s.drafted_per_position[p];
                }
            }
            let rate = acc as f64 / dr as f64;
            let pos: Vec<String> = (0..4)
                .map(|p| format!("{:.2}", per_pos[p] as f64 / per_pos_d[p] as f64))
                .collect();
            let mode = if sampler.is_greedy() { "greedy" } else { "T=1" };
            println!(
                "γ=4 {name} draft, {mode}: acceptance {rate:.3}, mean accepted length {:.2}, per position [{}]",
                emitted as f64 / steps as f64,
                pos.join(", ")
            );
            rates.push((name, mode, rate));
        }
    }
    // Per mode: the self draft accepts everything, a related draft more than an unrelated one.
    for mode in ["greedy", "T=1"] {
        let r: Vec<f64> = rates.iter().filter(|x| x.1 == mode).map(|x| x.2).collect();
        assert_eq!(r[0], 1.0);
        assert!(
            r[1] < 1.0 && r[1] > r[2] + 0.1 && r[2] > 0.0,
            "{mode}: {r:?}"
        );
    }
}

#[test]
fn stats_serialise_to_json() {
    let m = models(5, 2.0);
    let (mut t, mut d) = (m.target.clone(), m.related.clone());
    let cfg = GenConfig {
        max_new_tokens: 10,
        gamma: 3,
        sampler: random(0.8, 0, 1.0),
        seed: 1,
        stop_at_eos: false,
    };
    let g = generate_speculative(&mut t, &mut d, &[1], &cfg).unwrap();
    let json = serde_json::to_value(&g).unwrap();
    assert_eq!(json["stats"]["mode"], "speculative");
    assert_eq!(json["stop_reason"], "max_new_tokens");
    assert!(json["stats"]["timing"]["ttft_s"].is_number());
    assert_eq!(
        json["stats"]["accepted_length_histogram"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let cfg_json = serde_json::to_value(cfg).unwrap();
    assert_eq!(cfg_json["sampler"]["mode"], "random");
    let a = generate_autoregressive(
        &mut t,
        &[1],
        &GenConfig {
            max_new_tokens: 1,
            ..cfg
        },
    )
    .unwrap();
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["stats"]["mode"], "autoregressive");
    assert!(json["stats"]["timing"]["tpot_s"].is_null());
}
