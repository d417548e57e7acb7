//! Where a model comes from: a Hugging Face folder or `synthetic:<pythia-name>[:dtype][:seed=N]`.
//!
//! A folder holds `config.json`, `tokenizer.json` and the weights: `model.safetensors`, or a
//! sharded set (`model.safetensors.index.json` and its shards; see [`crate::checkpoint`]). A
//! synthetic spec gives seeded random weights of an exact Pythia shape and the embedded Pythia
//! tokenizer.

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
    /// Opens `spec`: a model folder or `synthetic:pythia-70m[:f16|bf16|f32][:seed=N]`.
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
        let config = Config::pythia(name).context("in synthetic model spec")?;
        let mut spec = SyntheticSpec::default();
        for part in parts {
            match part {
                "f16" => spec.dtype = Dtype::F16,
                "bf16" => spec.dtype = Dtype::Bf16,
                "f32" => spec.dtype = Dtype::F32,
                _ => match part.strip_prefix("seed=").map(str::parse::<u64>) {
                    Some(Ok(seed)) => spec.seed = seed,
                    _ => bail!(
                        "bad part {part:?} in synthetic:{rest}; expected f16, bf16, f32 or seed=N"
                    ),
                },
            }
        }
        let weights = synthetic_weights(&config, &spec);
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
