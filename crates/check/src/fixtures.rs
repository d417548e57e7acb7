//! The committed test models and their HF goldens (`data/fixtures/golden/<name>/`:
//! `config.json`, `model.safetensors`, `golden.safetensors` with `input_ids` I64 `[T]` and
//! HF transformers' `logits` F32 `[T, vocab]`, made by `scripts/make_golden.py`).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use spedec_neox::{Config, Weights};

/// The fixture folders: both residual wirings, each with f32, f16 and bf16 weights.
pub const GOLDEN_FOLDERS: [&str; 6] = [
    "parallel-f32",
    "parallel-f16",
    "parallel-bf16",
    "sequential-f32",
    "sequential-f16",
    "sequential-bf16",
];

/// `data/fixtures/golden` of this repository (for tests run from the source tree).
pub fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures/golden")
}

/// The config and weights of a model folder.
pub fn load(dir: &Path) -> Result<(Config, Weights)> {
    let config = Config::from_file(&dir.join("config.json"))?;
    let weights = Weights::load(&dir.join("model.safetensors"), &config)?;
    Ok((config, weights))
}

/// Fixture folders: subfolders of `dir` with config.json and model.safetensors, sorted.
pub fn fixture_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the fixture folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").is_file() && p.join("model.safetensors").is_file())
        .collect();
    out.sort();
    ensure!(!out.is_empty(), "no fixture model under {}", dir.display());
    Ok(out)
}

/// (input ids, HF logits) from a fixture's golden.safetensors.
pub fn read_golden(path: &Path) -> Result<(Vec<u32>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let ids = st
        .tensor("input_ids")
        .map_err(|e| anyhow::anyhow!("input_ids: {e}"))?;
    ensure!(
        ids.dtype() == safetensors::Dtype::I64,
        "input_ids must be I64"
    );
    let ids = ids
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as u32)
        .collect();
    let logits = st
        .tensor("logits")
        .map_err(|e| anyhow::anyhow!("logits: {e}"))?;
    ensure!(
        logits.dtype() == safetensors::Dtype::F32,
        "logits must be F32"
    );
    let logits = logits
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((ids, logits))
}
