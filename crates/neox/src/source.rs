//! Where a model comes from: a Hugging Face folder or `synthetic:<pythia-name>[:part]…`.
//!
//! A folder holds `config.json`, `tokenizer.json` and the weights: `model.safetensors`, or a
//! sharded set (`model.safetensors.index.json` and its shards; see [`crate::checkpoint`]). A
//! synthetic spec gives seeded random weights of an exact Pythia shape and the embedded Pythia
//! tokenizer. Its parts, in any order: `f16` (default) / `bf16` / `f32`, `seed=N` (default 0),
//! and for a draft derived from the same seed's target (see [`crate::synthetic`]):
//! `noise=σ` (relative Gaussian noise, default 0), `noise-seed=K` (default 0) and `layers=N`
//! (keep the first N blocks); and, given to target and draft alike, `logit-scale=X` (default
//! 1: every logit × X, for peaked distributions) and `layer-decay=r` (default 1: block l's
//! output projections × r^l, so that a draft of the first N blocks stays near). E.g.
//! `synthetic:pythia-160m:seed=1:layer-decay=0.7:layers=6:noise=0.05` is a near, cheaper
//! draft of `synthetic:pythia-160m:f32:seed=1:layer-decay=0.7`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use spedec_report::write_atomic;

use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::synthetic::{synthetic_weights, SyntheticSpec};
use crate::tokenizer::Tokenizer;
use crate::weights::{Dtype, Weights};

/// Everything needed to build a model: config, weights and tokenizer.
pub struct ModelFiles {
    /// What the user named (a folder or a synthetic spec), for messages.
    pub name: String,
    pub config: Config,
    pub weights: Weights,
    pub tokenizer: Tokenizer,
}

impl ModelFiles {
    /// Opens `spec`: a model folder or `synthetic:pythia-70m[:f16|bf16|f32][:seed=N]`
    /// `[:noise=σ][:noise-seed=K][:layers=N][:logit-scale=X][:layer-decay=r]` (see the
    /// module docs).
    pub fn open(spec: &str) -> Result<Self> {
        match spec.strip_prefix("synthetic:") {
            Some(rest) => Self::synthetic(rest),
            None => Self::from_dir(Path::new(spec)),
        }
    }

    /// Loads a Hugging Face model folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            let what = if dir.exists() {
                "is not a folder"
            } else {
                "does not exist"
            };
            bail!(
                "model folder {} {what} (expected a folder with config.json, model.safetensors \
                 and tokenizer.json, or synthetic:pythia-70m)",
                dir.display()
            );
        }
        let file = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            if !path.is_file() {
                bail!("missing {} in model folder {}", name, dir.display());
            }
            Ok(path)
        };
        let config = Config::from_file(&file("config.json")?)?;
        let weights = Weights::from_checkpoint(&Checkpoint::find(dir)?, &config)?;
        let tokenizer = Tokenizer::from_file(&file("tokenizer.json")?)?;
        Ok(ModelFiles {
            name: dir.display().to_string(),
            config,
            weights,
            tokenizer,
        })
    }

    fn synthetic(rest: &str) -> Result<Self> {
        let mut parts = rest.split(':');
        let name = parts.next().unwrap_or_default();
        let mut config = Config::pythia(name).context("in synthetic model spec")?;
        let spec = parse_synthetic_parts(parts, config.num_layers)
            .with_context(|| format!("in synthetic model spec synthetic:{rest}"))?;
        let weights = synthetic_weights(&config, &spec);
        if let Some(n) = spec.layers {
            config.num_layers = n;
        }
        Ok(ModelFiles {
            name: format!("synthetic:{rest}"),
            config,
            weights,
            tokenizer: Tokenizer::pythia(),
        })
    }

    /// Writes a Hugging Face folder (`config.json`, `model.safetensors`, `tokenizer.json`);
    /// each file is written under a temporary name and renamed, so none is ever half-written.
    pub fn write_dir(&self, dir: &Path, tokenizer_json: &[u8]) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dtype = self.weights.embed_out.dtype();
        let config = serde_json::to_vec_pretty(&self.config.to_json(dtype.torch_name()))?;
        write_atomic(&dir.join("config.json"), &config)?;
        write_atomic(&dir.join("tokenizer.json"), tokenizer_json)?;
        let tensors = self.weights.named_tensors();
        let views = tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                let view = safetensors::tensor::TensorView::new(
                    dtype.to_safetensors(),
                    shape.clone(),
                    bytes,
                )
                .map_err(|e| anyhow::anyhow!("tensor {name}: {e}"))?;
                Ok((name.as_str(), view))
            })
            .collect::<Result<Vec<_>>>()?;
        let data = safetensors::tensor::serialize(views, None)
            .map_err(|e| anyhow::anyhow!("cannot serialize weights: {e}"))?;
        write_atomic(&dir.join("model.safetensors"), &data)
    }
}

/// What a synthetic spec's parts may be, for error messages.
const SYNTHETIC_PARTS: &str =
    "f16, bf16, f32, seed=N, noise=σ (σ ≥ 0, e.g. 0.05), noise-seed=K, layers=N, logit-scale=X or \
     layer-decay=r";

/// Parses the parts after the Pythia name; `num_layers` is the shape's layer count.
fn parse_synthetic_parts<'a>(
    parts: impl Iterator<Item = &'a str>,
    num_layers: usize,
) -> Result<SyntheticSpec> {
    let mut spec = SyntheticSpec::default();
    for part in parts {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        match (key, part.contains('=')) {
            ("f16", false) => spec.dtype = Dtype::F16,
            ("bf16", false) => spec.dtype = Dtype::Bf16,
            ("f32", false) => spec.dtype = Dtype::F32,
            ("seed", true) => spec.seed = parse_int(part, value, "seed=N (an integer ≥ 0)")?,
            ("noise-seed", true) => {
                spec.noise_seed = parse_int(part, value, "noise-seed=K (an integer ≥ 0)")?
            }
            ("noise", true) => {
                spec.noise = match value.parse::<f32>() {
                    Ok(v) if v.is_finite() && v >= 0.0 => v,
                    _ => bail!(
                        "bad part {part:?}: expected noise=σ with σ a finite number ≥ 0 (the \
                         noise's standard deviation relative to each tensor's, e.g. noise=0.05)"
                    ),
                }
            }
            ("logit-scale", true) => {
                spec.logit_scale = match value.parse::<f32>() {
                    Ok(v) if v.is_finite() && v > 0.0 && v <= 1000.0 => v,
                    _ => bail!(
                        "bad part {part:?}: expected logit-scale=X with 0 < X ≤ 1000 (a factor \
                         on every logit, e.g. logit-scale=8)"
                    ),
                }
            }
            ("layer-decay", true) => {
                spec.layer_decay = match value.parse::<f32>() {
                    Ok(v) if v.is_finite() && v > 0.0 && v <= 1.0 => v,
                    _ => bail!(
                        "bad part {part:?}: expected layer-decay=r with 0 < r ≤ 1 (block l's \
                         output projections × r^l, e.g. layer-decay=0.7)"
                    ),
                }
            }
            ("layers", true) => {
                let n: u64 = parse_int(part, value, "layers=N (an integer ≥ 1)")?;
                if n == 0 || n as usize > num_layers {
                    bail!(
                        "bad part {part:?}: expected layers=N with 1 ≤ N ≤ {num_layers} (the \
                         layers of this shape)"
                    );
                }
                spec.layers = Some(n as usize);
            }
            _ => bail!("bad part {part:?}; expected {SYNTHETIC_PARTS}"),
        }
    }
    Ok(spec)
}

/// `value` as an unsigned integer, or an error naming `part` and its `form`.
fn parse_int(part: &str, value: &str, form: &str) -> Result<u64> {
    value
        .parse::<u64>()
        .map_err(|_| anyhow::anyhow!("bad part {part:?}: expected {form}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<SyntheticSpec> {
        parse_synthetic_parts(spec.split(':').filter(|p| !p.is_empty()), 12)
    }

    #[test]
    fn synthetic_parts_parse_in_any_order() {
        let s = parse("layers=3:noise=0.25:f32:noise-seed=9:seed=7:logit-scale=8").unwrap();
        assert_eq!((s.seed, s.noise_seed, s.layers), (7, 9, Some(3)));
        assert_eq!(s.logit_scale, 8.0);
        assert_eq!(parse("layer-decay=0.5").unwrap().layer_decay, 0.5);
        assert_eq!((s.noise, s.dtype), (0.25, Dtype::F32));
        let d = parse("").unwrap();
        assert_eq!(
            (d.seed, d.noise, d.layers, d.dtype),
            (0, 0.0, None, Dtype::F16)
        );
    }

    #[test]
    fn bad_synthetic_parts_name_the_part_and_the_form() {
        for (spec, want) in [
            ("noise=-1", "bad part \"noise=-1\": expected noise=σ"),
            ("noise=inf", "expected noise=σ with σ a finite number ≥ 0"),
            (
                "noise",
                "bad part \"noise\"; expected f16, bf16, f32, seed=N, noise=σ",
            ),
            ("layers=0", "expected layers=N with 1 ≤ N ≤ 12"),
            ("layers=13", "expected layers=N with 1 ≤ N ≤ 12"),
            (
                "layers=x",
                "bad part \"layers=x\": expected layers=N (an integer ≥ 1)",
            ),
            ("seed=-3", "expected seed=N (an integer ≥ 0)"),
            ("noise-seed=", "expected noise-seed=K"),
            ("f64", "bad part \"f64\"; expected"),
            ("logit-scale=0", "expected logit-scale=X with 0 < X ≤ 1000"),
            ("layer-decay=1.5", "expected layer-decay=r with 0 < r ≤ 1"),
            ("layer-decay=0", "expected layer-decay=r with 0 < r ≤ 1"),
            (
                "logit-scale=nan",
                "expected logit-scale=X with 0 < X ≤ 1000",
            ),
            ("f16=1", "bad part \"f16=1\"; expected"),
        ] {
            let err = format!("{:#}", parse(spec).unwrap_err());
            assert!(err.contains(want), "{spec}: {err}");
        }
    }
}
