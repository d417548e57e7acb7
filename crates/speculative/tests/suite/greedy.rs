//! Greedy speculative output is token-for-token the target's greedy output.

use spedec_speculative::{
    generate_autoregressive, generate_speculative, generate_speculative_with_gamma, AutoGamma,
    GammaChoice, GenConfig, Lm, Sampler, StopReason, MAX_AUTO_GAMMA,
};

use crate::common::{models, prompts, HashLm};

fn greedy(max_new_tokens: usize, gamma: usize, stop_at_eos: bool) -> GenConfig {
    GenConfig {
        max_new_tokens,
        gamma,
        sampler: Sampler::Greedy,
        seed: 0,
        stop_at_eos,
    }
}

/// Runs every prompt and γ against `draft`; returns (accepted, drafted) over all runs.
fn check_equal(
    target: &mut HashLm,
    draft: &mut HashLm,
    max_new: usize,
    stop_at_eos: bool,
) -> (usize, usize) {
    let (mut accepted, mut drafted) = (0, 0);
    for prompt in prompts(40, target.vocab_size(), 9, 5) {
        let want =
            generate_autoregressive(target, &prompt, &greedy(max_new, 1, stop_at_eos)).unwrap();
        for gamma in [1, 2, 4, 8] {
            let got =
                generate_speculative(target, draft, &prompt, &greedy(max_new, gamma, stop_at_eos))
                    .unwrap();
            assert_eq!(got.tokens, want.tokens, "prompt {prompt:?}, gamma {gamma}");
            assert_eq!(got.stop_reason, want.stop_reason);
            accepted += got.stats.accepted;
            drafted += got.stats.drafted;
        }
    }
    (accepted, drafted)
}

#[test]
fn greedy_self_draft_accepts_everything() {
    let mut m = models(6, 2.0);
    let (accepted, drafted) = check_equal(&mut m.target, &mut m.same, 30, false);
    assert_eq!(accepted, drafted);
    println!("greedy self draft: accepted {accepted} / drafted {drafted}");
}

#[test]
fn greedy_related_and_unrelated_drafts_match_target() {
    for vocab in [3, 8] {
        let mut m = models(vocab, 2.0);
        let (a, d) = check_equal(&mut m.target, &mut m.related, 30, false);
        println!(
            "greedy related draft, vocab {vocab}: acceptance {:.3} ({a}/{d})",
            a as f64 / d as f64
        );
        let (a, d) = check_equal(&mut m.target, &mut m.unrelated, 30, false);
        println!(
            "greedy unrelated draft, vocab {vocab}: acceptance {:.3} ({a}/{d})",
            a as f64 / d as f64
        );
        assert!(
            a < d / 2,
            "an unrelated draft should be mostly rejected ({a}/{d})"
        );
    }
}

#[test]
fn greedy_stops_at_eos_like_the_target() {
    let mut m = models(4, 2.0);
    let mut eos_stops = 0;
    for prompt in prompts(40, 4, 9, 6) {
        let want = generate_autoregressive(&mut m.target, &prompt, &greedy(40, 1, true)).unwrap();
        if want.stop_reason == StopReason::Eos {
            eos_stops += 1;
            assert_eq!(want.tokens.last(), Some(&0));
            assert!(!want.tokens[..want.tokens.len() - 1].contains(&0));
        }
        for gamma in [1, 3, 8] {
            for draft in [&mut m.same, &mut m.related, &mut m.unrelated] {
                let got =
                    generate_speculative(&mut m.target, draft, &prompt, &greedy(40, gamma, true))
                        .unwrap();
                assert_eq!(got.tokens, want.tokens);
                assert_eq!(got.stop_reason, want.stop_reason);
            }
        }
    }
    assert!(
        eos_stops > 5,
        "the test needs prompts that hit EOS ({eos_stops})"
    );
}

#[test]
fn never_exceeds_max_new_tokens() {
    let mut m = models(5, 2.0);
    for max_new in 1..=12 {
        for gamma in [1, 2, 5, 8, 20] {
            let want = generate_autoregressive(&mut m.target, &[1, 2], &greedy(max_new, 1, false))
                .unwrap();
            let got = generate_speculative(
                &mut m.target,
                &mut m.same,
                &[1, 2],
                &greedy(max_new, gamma, false),
            )
            .unwrap();
            assert_eq!(got.tokens.len(), max_new);
            assert_eq!(got.tokens, want.tokens);
            assert_eq!(got.stop_reason, StopReason::MaxNewTokens);
        }
    }
    let none =
        generate_speculative(&mut m.target, &mut m.same, &[1], &greedy(0, 4, false)).unwrap();
    assert!(none.tokens.is_empty());
}

#[test]
fn context_limits_clip_gamma_and_stop_like_the_target() {
    let m = models(5, 2.0);
    let prompt = [3, 1, 4];
    for target_ctx in 3..12 {
        let mut target = m.target.clone().with_max_len(target_ctx);
        let want = generate_autoregressive(&mut target, &prompt, &greedy(50, 1, false)).unwrap();
        // The target never holds the last token, so it can emit up to max_len + 1 − prompt.
        assert_eq!(want.tokens.len(), target_ctx + 1 - prompt.len());
        assert_eq!(want.stop_reason, StopReason::ContextFull);
        for draft_ctx in [3, 4, 6, 100] {
            for gamma in [1, 3, 8] {
                let mut draft = m.same.clone().with_max_len(draft_ctx);
                let got = generate_speculative(
                    &mut target,
                    &mut draft,
                    &prompt,
                    &greedy(50, gamma, false),
                )
                .unwrap();
                assert_eq!(
                    got.tokens, want.tokens,
                    "target ctx {target_ctx}, draft ctx {draft_ctx}"
                );
                assert_eq!(got.stop_reason, StopReason::ContextFull);
            }
        }
    }
}

/// With γ chosen per step (`auto`), greedy output is still the target's greedy output — for
/// every draft, with EOS stops and context limits — since each γ depends only on the past.
#[test]
fn greedy_auto_gamma_matches_target() {
    let m = models(6, 2.0);
    let autos = [
        AutoGamma::default(),
        AutoGamma {
            start: 1,
            alpha_window: 2.0,
            cost_window: 2.0,
            ..AutoGamma::default()
        },
        AutoGamma {
            max: 3,
            start: 3,
            ..AutoGamma::default()
        },
    ];
    let mut gammas_used = vec![0usize; MAX_AUTO_GAMMA + 1];
    for (p, prompt) in prompts(20, 6, 9, 7).into_iter().enumerate() {
        let stop_at_eos = p % 2 == 1;
        let target_ctx = if p % 3 == 0 { 24 } else { 1 << 20 };
        let mut target = m.target.clone().with_max_len(target_ctx);
        let want =
            generate_autoregressive(&mut target, &prompt, &greedy(40, 1, stop_at_eos)).unwrap();
        for draft in [&m.same, &m.related, &m.unrelated] {
            for auto in autos {
                let mut d = draft.clone();
                let got = generate_speculative_with_gamma(
                    &mut target,
                    &mut d,
                    &prompt,
                    &greedy(40, 4, stop_at_eos),
                    &GammaChoice::Auto(auto),
                )
                .unwrap();
                assert_eq!(got.tokens, want.tokens, "prompt {prompt:?}, {auto:?}");
                assert_eq!(got.stop_reason, want.stop_reason);
                let s = &got.stats;
                assert!(s.gamma_auto);
                assert_eq!(s.gamma, auto.max);
                assert_eq!(s.gamma_histogram.len(), auto.max + 1);
                assert_eq!(s.gamma_histogram.iter().sum::<usize>(), s.verify_steps);
                let drafted: usize = s
                    .gamma_histogram
                    .iter()
                    .enumerate()
                    .map(|(g, n)| g * n)
                    .sum();
                assert_eq!(drafted, s.drafted);
                for (g, n) in s.gamma_histogram.iter().enumerate() {
                    gammas_used[g] += n;
                }
            }
        }
    }
    // The choice did move: several γ were used over these runs.
    let distinct = gammas_used.iter().filter(|&&n| n > 0).count();
    assert!(distinct >= 3, "γ used: {gammas_used:?}");
    println!("greedy auto γ: steps by γ {gammas_used:?}");
}

#[test]
fn bad_gamma_choices_are_errors() {
    let mut m = models(5, 2.0);
    let cfg = greedy(5, 4, false);
    let err = generate_speculative_with_gamma(
        &mut m.target,
        &mut m.same,
        &[1],
        &cfg,
        &GammaChoice::Fixed(0),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("gamma (draft tokens per step) must be at least 1"));
    let bad = GammaChoice::Auto(AutoGamma {
        max: MAX_AUTO_GAMMA + 1,
        ..AutoGamma::default()
    });
    let err =
        generate_speculative_with_gamma(&mut m.target, &mut m.same, &[1], &cfg, &bad).unwrap_err();
    assert!(
        format!("{err:#}").contains("max must be in 1..=16"),
        "{err:#}"
    );
}
