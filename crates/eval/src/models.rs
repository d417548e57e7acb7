//! Opening models for the CLI: a model folder or `synthetic:…` spec becomes a boxed [`Lm`].

use anyhow::{bail, Result};
use serde::Serialize;
use spedec_neox::cuda_model::shared_gpu;
use spedec_neox::{Config, CpuModel, CudaModel, CudaOptions, Isa, ModelFiles, Tokenizer};
use spedec_speculative::Lm;

/// Where a model runs (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when a GPU is usable (driver, device and NVRTC), else the CPU.
    #[default]
    Auto,
    /// The CPU forward (f32 activations).
    Cpu,
    /// The CUDA forward (f16 weights and activations); an error without a GPU.
    Cuda,
}

impl Device {
    /// `Auto` becomes `Cuda` when a CUDA device is usable here, else `Cpu`; the others stay.
    pub fn resolve(self) -> Device {
        match self {
            Device::Auto if spedec_cuda::gpu_available() => Device::Cuda,
            Device::Auto => Device::Cpu,
            d => d,
        }
    }

    /// `auto`, `cpu` or `cuda`.
    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A model ready to run, with what the CLI needs to know about it.
pub struct LoadedModel {
    /// The folder or spec the user gave.
    pub name: String,
    pub config: Config,
    pub tokenizer: Tokenizer,
    /// Bytes of weights one decode step reads.
    pub bytes_per_token: usize,
    pub lm: Box<dyn Lm>,
    /// Where it runs (`Cpu` or `Cuda`, never `Auto`).
    pub device: Device,
}

/// Opens `spec` on the CPU with a KV cache of `context` positions (default: the model's max
/// positions).
pub fn load_model(spec: &str, context: Option<usize>) -> Result<LoadedModel> {
    load_model_on(spec, context, Device::Cpu)
}

/// Opens `spec` on `device` with a KV cache of `context` positions (default: the model's max
/// positions). On CUDA the weights are uploaded as f16 (bf16 / f32 checkpoints are rounded)
/// and the host copy is dropped; `--device cuda` without a driver is the error
/// "no CUDA driver found; use --device cpu".
pub fn load_model_on(spec: &str, context: Option<usize>, device: Device) -> Result<LoadedModel> {
    match device.resolve() {
        Device::Cuda => {
            // The device first: no point reading gigabytes of weights without one.
            let gpu = shared_gpu()?;
            let files = ModelFiles::open(spec)?;
            let options = CudaOptions {
                capacity: context,
                ..CudaOptions::default()
            };
            let model = CudaModel::new(gpu, &files.config, &files.weights, &options)?;
            Ok(LoadedModel {
                name: files.name,
                config: files.config,
                tokenizer: files.tokenizer,
                bytes_per_token: model.bytes_per_token(),
                lm: Box::new(model),
                device: Device::Cuda,
            })
        }
        _ => {
            let files = ModelFiles::open(spec)?;
            let bytes_per_token = files.weights.bytes_per_token();
            let model = CpuModel::new(files.config.clone(), files.weights, context, Isa::detect())?;
            Ok(LoadedModel {
                name: files.name,
                config: files.config,
                tokenizer: files.tokenizer,
                bytes_per_token,
                lm: Box::new(model),
                device: Device::Cpu,
            })
        }
    }
}

/// Refuses a draft that cannot propose tokens for `target`: a different vocabulary size or a
/// different tokenizer.
pub fn check_draft(target: &LoadedModel, draft: &LoadedModel) -> Result<()> {
    if target.config.vocab_size != draft.config.vocab_size {
        bail!(
            "draft {} has vocab_size {} but target {} has {}: a draft must share the target's \
             vocabulary",
            draft.name,
            draft.config.vocab_size,
            target.name,
            target.config.vocab_size
        );
    }
    if target.tokenizer.fingerprint() != draft.tokenizer.fingerprint() {
        bail!(
            "draft {} and target {} have different tokenizers (their token tables differ): a \
             draft must use the target's tokenizer",
            draft.name,
            target.name
        );
    }
    Ok(())
}
