//! Logits against HF transformers goldens (`data/fixtures/golden`, made by
//! `scripts/make_golden.py`), and batch invariance: prefill, token-by-token decode and
//! prefill → truncate → re-decode give bit-identical logits.

use std::path::Path;

use spedec_check::compare::compare;
use spedec_check::fixtures::{self, golden_root, read_golden, GOLDEN_FOLDERS};
use spedec_neox::{CpuModel, Isa, Lm};

fn load(dir: &Path, isa: Isa) -> CpuModel {
    let (config, weights) = fixtures::load(dir).unwrap();
    CpuModel::new(config, weights, None, isa).unwrap()
}

#[test]
fn logits_match_hf_transformers() {
    for folder in GOLDEN_FOLDERS {
        let dir = golden_root().join(folder);
        let (ids, hf) = read_golden(&dir.join("golden.safetensors")).unwrap();
        for isa in Isa::available() {
            let mut model = load(&dir, isa);
            let logits = model.forward(&ids).unwrap();
            // f32 weights: 1e-4; f16/bf16 weights against HF's f32 forward on the same
            // (stored) weights: 1e-3.
            let tol = if folder.ends_with("f32") { 1e-4 } else { 1e-3 };
            let d = compare(logits.as_slice(), &hf, logits.vocab(), tol, tol).unwrap();
            println!("{folder:>16} {isa:?}: ours vs HF: {}", d.line());
            assert!(
                d.pass,
                "{folder} {isa:?}: logits differ from HF: {}",
                d.line()
            );
        }
    }
}

#[test]
fn decode_prefill_and_truncate_are_bit_identical() {
    for folder in ["parallel-f16", "sequential-bf16", "parallel-f32"] {
        let dir = golden_root().join(folder);
        let (ids, _) = read_golden(&dir.join("golden.safetensors")).unwrap();
        let mut first_isa: Option<(Isa, Vec<f32>)> = None;
        for isa in Isa::available() {
            let mut model = load(&dir, isa);
            let prefill = model.forward(&ids).unwrap();

            model.truncate(0).unwrap();
            for (i, &t) in ids.iter().enumerate() {
                let step = model.forward(&[t]).unwrap();
                assert_eq!(
                    step.row(0),
                    prefill.row(i),
                    "{folder} {isa:?}: decode row {i}"
                );
            }
            assert_eq!(model.len(), ids.len());

            // Roll back to 10 tokens and re-decode the rest in uneven chunks.
            model.truncate(10).unwrap();
            let mut at = 10;
            for chunk in ids[10..].chunks(5) {
                let out = model.forward(chunk).unwrap();
                for r in 0..chunk.len() {
                    assert_eq!(
                        out.row(r),
                        prefill.row(at + r),
                        "{folder} {isa:?}: row {}",
                        at + r
                    );
                }
                at += chunk.len();
            }

            // A prompt's prefill that keeps only the last row gives that row's bits.
            model.truncate(0).unwrap();
            let last = model.forward_last(&ids).unwrap();
            assert_eq!((last.rows(), model.len()), (1, ids.len()));
            assert_eq!(
                last.row(0),
                prefill.last(),
                "{folder} {isa:?}: forward_last"
            );

            // Both kernel sets compute every element with the same chain of fused
            // multiply-adds, so they agree bit for bit.
            match &first_isa {
                None => first_isa = Some((isa, prefill.into_vec())),
                Some((other, bits)) => assert!(
                    bits.iter()
                        .zip(prefill.as_slice())
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{folder}: {isa:?} and {other:?} logits differ"
                ),
            }
        }
    }
}

#[test]
fn truncate_past_the_end_is_an_error() {
    let mut model = load(&golden_root().join("parallel-f16"), Isa::detect());
    model.forward(&[1, 2, 3]).unwrap();
    let err = model.truncate(4).unwrap_err().to_string();
    assert!(err.contains("holds only 3"), "{err}");
}
