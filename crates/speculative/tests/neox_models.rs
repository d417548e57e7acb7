//! The generators on real GPT-NeoX models (the HF golden fixtures, vocabulary 1000): greedy
//! speculative output equals greedy autoregressive output token for token, and the caches hold
//! exactly the kept tokens afterwards (compared against a fresh prefill).

use std::path::{Path, PathBuf};

use spedec_neox::{Config, CpuModel, Isa, Weights};
use spedec_speculative::{generate_autoregressive, generate_speculative, GenConfig, Lm};

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/fixtures/golden")
        .join(name)
}

fn load(name: &str) -> CpuModel {
    let dir = golden_dir(name);
    let config = Config::from_file(&dir.join("config.json")).unwrap();
    let weights = Weights::load(&dir.join("model.safetensors"), &config).unwrap();
    CpuModel::new(config, weights, None, Isa::detect()).unwrap()
}

fn prompts() -> Vec<Vec<u32>> {
    let mut state = 12345u64;
    (0..6)
        .map(|i| {
            (0..3 + 2 * i)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 33) % 1000) as u32
                })
                .collect()
        })
        .collect()
}

#[test]
fn greedy_speculative_equals_greedy_autoregressive() {
    let mut target = load("parallel-f32");
    // Self-draft (everything accepted), the same model in bf16 (mostly accepted) and an
    // unrelated model (almost nothing accepted).
    for (draft_name, min_rate, max_rate) in [
        ("parallel-f32", 1.0, 1.0),
        ("parallel-bf16", 0.5, 1.0),
        ("sequential-f16", 0.0, 0.5),
    ] {
        let mut draft = load(draft_name);
        let mut drafted = 0;
        let mut accepted = 0;
        for gamma in [1, 2, 4, 8] {
            for prompt in prompts() {
                let cfg = GenConfig {
                    max_new_tokens: 20,
                    gamma,
                    ..GenConfig::default()
                };
                let ar = generate_autoregressive(&mut target, &prompt, &cfg).unwrap();
                let spec = generate_speculative(&mut target, &mut draft, &prompt, &cfg).unwrap();
                assert_eq!(spec.tokens, ar.tokens, "draft {draft_name}, γ = {gamma}");
                drafted += spec.stats.drafted;
                accepted += spec.stats.accepted;

                // The target's cache holds prompt + output minus the last token: its logits for
                // those positions must equal a fresh prefill's.
                let kept: Vec<u32> = prompt
                    .iter()
                    .chain(&spec.tokens[..spec.tokens.len() - 1])
                    .copied()
                    .collect();
                assert_eq!(Lm::len(&target), kept.len());
                let last = *kept.last().unwrap();
                target.truncate(kept.len() - 1).unwrap();
                let cached = target.forward(&[last]).unwrap();
                let mut fresh = load("parallel-f32");
                let full = fresh.forward(&kept).unwrap();
                assert!(
                    cached.row(0) == full.last(),
                    "target cache differs from a fresh prefill"
                );
            }
        }
        let rate = accepted as f64 / drafted as f64;
        println!("draft {draft_name}: acceptance {rate:.3} ({accepted}/{drafted})");
        assert!(
            rate >= min_rate && rate <= max_rate,
            "draft {draft_name}: acceptance {rate}"
        );
    }
}
