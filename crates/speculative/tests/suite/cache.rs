//! Cache bookkeeping: every call sees exactly the kept tokens; rollbacks keep exactly them.

use std::cell::RefCell;
use std::rc::Rc;

use spedec_speculative::{generate_speculative, GenConfig, Lm, Sampler};

use crate::common::{models, prompts, random, Event, HashLm, Log};

fn is_prefix(a: &[u32], of: &[u32]) -> bool {
    a.len() <= of.len() && a == &of[..a.len()]
}

/// Checks the call log of one run against the final sequence; returns the number of draft
/// catch-up calls that fed two tokens (after a step that accepted every draft).
fn check_log(events: &[Event], prompt: &[u32], fin: &[u32], gamma: usize) -> usize {
    // Reset, then prefill of both models with the prompt.
    assert!(matches!(&events[0], Event::Truncate { model: "target", after } if after.is_empty()));
    assert!(matches!(&events[1], Event::Truncate { model: "draft", after } if after.is_empty()));
    assert!(
        matches!(&events[2], Event::Forward { model: "draft", before, fed } if before.is_empty() && fed == prompt)
    );
    assert!(
        matches!(&events[3], Event::Forward { model: "target", before, fed } if before.is_empty() && fed == prompt)
    );
    let mut two_token_catch_ups = 0;
    let mut catch_up: Option<(usize, usize)> = None; // (before, fed) of the step's first draft call
    let mut after_target = true;
    for e in &events[4..] {
        match e {
            Event::Truncate { after, .. } => {
                assert!(
                    is_prefix(after, fin),
                    "a rollback kept tokens that are not in the output"
                );
            }
            Event::Forward {
                model: "draft",
                before,
                fed,
            } => {
                if after_target {
                    // The first draft call of a step catches up on the kept tokens it missed.
                    assert!(is_prefix(before, fin), "draft cache holds rejected tokens");
                    assert_eq!(&fin[before.len()..before.len() + fed.len()], &fed[..]);
                    assert!(
                        (1..=2).contains(&fed.len()),
                        "draft lagged by {} tokens",
                        fed.len()
                    );
                    two_token_catch_ups += usize::from(fed.len() == 2);
                    catch_up = Some((before.len(), fed.len()));
                    after_target = false;
                } else {
                    assert_eq!(fed.len(), 1);
                }
            }
            Event::Forward {
                model: "target",
                before,
                fed,
            } => {
                assert!(is_prefix(before, fin), "target cache holds rejected tokens");
                assert_eq!(
                    fed[0],
                    fin[before.len()],
                    "verify must start with the last kept token"
                );
                assert!(fed.len() <= gamma + 1);
                if let Some((b, f)) = catch_up.take() {
                    // The draft had caught up to exactly the target's position + 1.
                    assert_eq!(b + f, before.len() + 1);
                } else {
                    assert_eq!(
                        fed.len(),
                        1,
                        "a target call without drafts decodes one token"
                    );
                }
                after_target = true;
            }
            Event::Forward { .. } => unreachable!(),
        }
    }
    two_token_catch_ups
}

fn run_and_check(target: &HashLm, draft: &HashLm, sampler: Sampler, stop_at_eos: bool) -> usize {
    let mut two = 0;
    for (i, prompt) in prompts(15, 5, 6, 9).into_iter().enumerate() {
        for gamma in [1, 2, 4, 7] {
            let log: Log = Rc::new(RefCell::new(Vec::new()));
            let mut t = target.clone().logged(&log, "target");
            let mut d = draft.clone().logged(&log, "draft");
            let cfg = GenConfig {
                max_new_tokens: 25,
                gamma,
                sampler,
                seed: i as u64,
                stop_at_eos,
            };
            let g = generate_speculative(&mut t, &mut d, &prompt, &cfg).unwrap();
            let fin: Vec<u32> = prompt.iter().chain(&g.tokens).copied().collect();
            two += check_log(&log.borrow(), &prompt, &fin, gamma);
            // Final state: the target holds everything but the last token, the draft a prefix of
            // that at most two tokens shorter.
            let n = fin.len();
            assert_eq!(t.tokens(), &fin[..n - 1]);
            assert!(is_prefix(d.tokens(), &fin[..n - 1]));
            assert!(
                d.tokens().len() + 2 >= n - 1,
                "draft holds {} of {}",
                d.tokens().len(),
                n - 1
            );
        }
    }
    two
}

#[test]
fn caches_hold_exactly_the_kept_tokens() {
    let m = models(5, 2.0);
    for sampler in [Sampler::Greedy, random(0.8, 0, 1.0), random(1.0, 3, 0.9)] {
        for stop_at_eos in [false, true] {
            run_and_check(&m.target, &m.related, sampler, stop_at_eos);
            run_and_check(&m.target, &m.unrelated, sampler, stop_at_eos);
        }
    }
    // A self draft accepts everything, so every step after the first catches up on two tokens.
    let two = run_and_check(&m.target, &m.same, Sampler::Greedy, false);
    assert!(two > 100, "{two}");
}

#[test]
fn test_model_truncate_then_forward_equals_fresh_prefill() {
    let mut a = HashLm::new(5, 6, 2.0);
    let mut fresh = a.clone();
    a.forward(&[1, 2, 3, 4]).unwrap();
    a.truncate(2).unwrap();
    let rolled = a.forward(&[5, 0]).unwrap();
    let want = fresh.forward(&[1, 2, 5, 0]).unwrap();
    assert_eq!(rolled.row(1), want.row(3));
    assert_eq!(rolled.row(0), want.row(2));
    assert_eq!(rolled.last(), &a.logits_after(&[1, 2, 5, 0])[..]);
    assert_ne!(rolled.last(), &a.logits_after(&[1, 2, 4, 0])[..]);
}
