//! Speculative perplexity equals target perplexity (relative 1e-6) on the HF golden fixture
//! models, target parallel-f32 with the unrelated sequential-f16 as draft, over strided windows.

use std::path::{Path, PathBuf};

use spedec_eval::ppl::{perplexity, Method, Windows};
use spedec_neox::{Config, CpuModel, Isa, Weights};

fn load(name: &str) -> CpuModel {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/fixtures/golden")
        .join(name);
    let config = Config::from_file(&dir.join("config.json")).unwrap();
    let weights = Weights::load(&dir.join("model.safetensors"), &config).unwrap();
    CpuModel::new(config, weights, None, Isa::detect()).unwrap()
}

#[test]
fn spec_ppl_equals_target_ppl_on_fixture_models() {
    let mut target = load("parallel-f32");
    let mut draft = load("sequential-f16");
    let mut state = 7u64;
    let ids: Vec<u32> = (0..200)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % 1000) as u32
        })
        .collect();
    for method in [Method::Strided, Method::Chunked] {
        let windows = Windows::new(method, 64, None).unwrap();
        let r = perplexity(&mut target, Some(&mut draft), &ids, windows, |_, _| {}).unwrap();
        let (ppl, spec, dppl) = (r.ppl, r.spec_ppl.unwrap(), r.draft_ppl.unwrap());
        println!(
            "{method:?}: ppl {ppl:.6}, spec {spec:.6}, draft {dppl:.6}, {} tokens",
            r.tokens
        );
        assert!(
            (spec - ppl).abs() <= 1e-6 * ppl,
            "{method:?}: spec {spec} vs target {ppl}"
        );
        assert!((dppl - ppl).abs() > 1e-2 * ppl);
        // Without a draft the target PPL is the same number.
        // The progress counts scored tokens, each once although strided windows overlap.
        let mut last = (0, 0);
        let alone = perplexity(&mut target, None::<&mut CpuModel>, &ids, windows, |d, t| {
            last = (d, t)
        })
        .unwrap();
        assert_eq!(alone.ppl, ppl);
        assert_eq!(last, (alone.tokens, alone.tokens), "{method:?}");
        if method == Method::Strided {
            assert_eq!(alone.tokens, 199, "every token but the first, once");
        }
    }
}
