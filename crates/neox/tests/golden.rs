//! Logits against HF transformers goldens (`data/fixtures/golden`, made by
//! `scripts/make_golden.py`), and batch invariance: prefill, token-by-token decode and
//! prefill → truncate → re-decode give bit-identical logits.

use std::path::{Path, PathBuf};

use spedec_neox::{Config, CpuModel, Isa, Weights};

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/fixtures/golden")
        .join(name)
}

const FOLDERS: [&str; 6] = [
    "parallel-f32",
    "parallel-f16",
    "parallel-bf16",
    "sequential-f32",
    "sequential-f16",
    "sequential-bf16",
];

struct Golden {
    ids: Vec<u32>,
    /// `[T, vocab]`
    logits: Vec<f32>,
}

fn read_golden(dir: &Path) -> Golden {
    let bytes = std::fs::read(dir.join("golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    assert_eq!(ids.dtype(), safetensors::Dtype::I64);
    let ids = ids
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    let logits = st.tensor("logits").unwrap();
    assert_eq!(logits.dtype(), safetensors::Dtype::F32);
    let logits = logits
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Golden { ids, logits }
}

fn load(dir: &Path, isa: Isa) -> CpuModel {
    let config = Config::from_file(&dir.join("config.json")).unwrap();
    let weights = Weights::load(&dir.join("model.safetensors"), &config).unwrap();
    CpuModel::new(config, weights, None, isa).unwrap()
}

/// Largest |a − b| and whether every element satisfies |a − b| ≤ atol + rtol·|ref|.
fn compare(got: &[f32], want: &[f32], atol: f32, rtol: f32) -> (f32, bool) {
    assert_eq!(got.len(), want.len());
    let mut max = 0.0f32;
    let mut ok = true;
    for (&a, &b) in got.iter().zip(want) {
        let diff = (a - b).abs();
        max = max.max(diff);
        ok &= diff <= atol + rtol * b.abs();
    }
    (max, ok)
}

#[test]
fn logits_match_hf_transformers() {
    for folder in FOLDERS {
        let dir = golden_dir(folder);
        let golden = read_golden(&dir);
        for isa in Isa::available() {
            let mut model = load(&dir, isa);
            let logits = model.forward(&golden.ids).unwrap();
            // f32 weights: 1e-4; f16/bf16 weights against HF's f32 forward on the same
            // (stored) weights: 1e-3.
            let tol = if folder.ends_with("f32") { 1e-4 } else { 1e-3 };
            let (max, ok) = compare(logits.as_slice(), &golden.logits, tol, tol);
            println!("{folder:>16} {isa:?}: max |ours − HF| = {max:.3e} (atol = rtol = {tol:e})");
            assert!(
                ok,
                "{folder} {isa:?}: logits differ from HF by up to {max:e}"
            );
        }
    }
}

#[test]
fn decode_prefill_and_truncate_are_bit_identical() {
    for folder in ["parallel-f16", "sequential-bf16", "parallel-f32"] {
        let dir = golden_dir(folder);
        let ids = read_golden(&dir).ids;
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
    let mut model = load(&golden_dir("parallel-f16"), Isa::detect());
    model.forward(&[1, 2, 3]).unwrap();
    let err = model.truncate(4).unwrap_err().to_string();
    assert!(err.contains("holds only 3"), "{err}");
}
