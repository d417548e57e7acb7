//! What every section shares: the options, the device ([`Env`]), the model on it
//! ([`Model`], CPU or CUDA behind one interface), and deterministic test tokens.

use std::sync::Arc;

use anyhow::Result;
use spedec_cuda::GpuContext;
use spedec_neox::cuda_model::{shared_gpu, GraphStats};
use spedec_neox::{Config, CpuModel, CudaModel, CudaOptions, Isa, Lm, ModelFiles, Weights};
use spedec_speculative::{generate_speculative_on, GammaChoice, GenConfig, Generation};

use crate::options::{LinearKernel, Options};
use crate::report::Lines;

/// What every section needs: the options, the device and its description.
pub struct Env {
    pub args: Options,
    pub gpu: Option<Arc<GpuContext>>,
    pub device_name: String,
    /// Where progress lines go.
    pub lines: Lines,
}

impl Env {
    /// The CUDA device (`on_gpu`) or the CPU model as a dry run of the harness.
    pub fn new(args: Options, on_gpu: bool, lines: Lines) -> Result<Self> {
        let (gpu, device_name) = if on_gpu {
            let gpu = shared_gpu()?;
            let name = match args.linear {
                LinearKernel::Simt => gpu.describe(),
                LinearKernel::TensorCore => {
                    format!("{}, tensor-core linears", gpu.describe())
                }
            };
            (Some(gpu), name)
        } else {
            (None, "cpu (dry run of the harness)".to_string())
        };
        Ok(Env {
            args,
            gpu,
            device_name,
            lines,
        })
    }

    /// Pass one progress line on.
    pub fn say(&self, line: &str) {
        (self.lines)(line)
    }

    /// `quick` when the options ask for a quick run, else `full`.
    pub fn pick(&self, full: usize, quick: usize) -> usize {
        if self.args.quick {
            quick
        } else {
            full
        }
    }

    /// Build a model of `config` / `weights` on the check's device.
    pub fn build(
        &self,
        config: &Config,
        weights: &Weights,
        capacity: Option<usize>,
    ) -> Result<Model> {
        match &self.gpu {
            Some(gpu) => {
                let opts = CudaOptions {
                    capacity,
                    ..CudaOptions::default()
                };
                let mut model = CudaModel::new(gpu.clone(), config, weights, &opts)?;
                model.set_linear_kernel(self.args.linear)?;
                Ok(Model::Cuda(Box::new(model)))
            }
            None => Ok(Model::Cpu(Box::new(CpuModel::new(
                config.clone(),
                weights.clone(),
                capacity,
                Isa::detect(),
            )?))),
        }
    }

    /// Open `spec` (folder or synthetic spec) and build it on the check's device.
    pub fn open(&self, spec: &str, capacity: Option<usize>) -> Result<(ModelFiles, Model)> {
        let files = ModelFiles::open(spec)?;
        let model = self.build(&files.config, &files.weights, capacity)?;
        Ok((files, model))
    }
}

/// A model on the check's device, with the CUDA-only knobs.
pub enum Model {
    Cpu(Box<CpuModel>),
    Cuda(Box<CudaModel>),
}

impl Model {
    /// As the engine's model interface.
    pub fn lm(&mut self) -> &mut dyn Lm {
        match self {
            Model::Cpu(m) => m.as_mut(),
            Model::Cuda(m) => m.as_mut(),
        }
    }

    /// Turn CUDA graphs on or off (nothing on the CPU).
    pub fn set_graphs(&mut self, on: bool) {
        if let Model::Cuda(m) = self {
            m.set_graphs(on);
        }
    }

    /// Graph counters (CUDA only).
    pub fn graph_stats(&self) -> Option<GraphStats> {
        match self {
            Model::Cuda(m) => Some(m.graph_stats()),
            Model::Cpu(_) => None,
        }
    }

    /// The CUDA model, if this is one.
    pub fn cuda_mut(&mut self) -> Option<&mut CudaModel> {
        match self {
            Model::Cuda(m) => Some(m.as_mut()),
            Model::Cpu(_) => None,
        }
    }

    /// Bytes of weights one decode step reads on this device.
    pub fn bytes_per_token(&self) -> usize {
        match self {
            Model::Cuda(m) => m.bytes_per_token(),
            Model::Cpu(m) => m.weights().bytes_per_token(),
        }
    }
}

/// A speculative generation with the steps on the device (`CudaModel::device_spec`), or
/// `None` where either model is on the CPU.
pub fn generate_on_device(
    target: &mut Model,
    draft: &mut Model,
    prompt: &[u32],
    cfg: &GenConfig,
    gamma: &GammaChoice,
) -> Result<Option<Generation>> {
    let (Some(t), Some(d)) = (target.cuda_mut(), draft.cuda_mut()) else {
        return Ok(None);
    };
    let mut engine = t.device_spec(d)?;
    generate_speculative_on(&mut engine, prompt, cfg, gamma).map(Some)
}

/// Deterministic pseudo-random token ids in `0..vocab.min(50277)` (real Pythia token ids).
pub fn test_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let range = vocab.min(50277) as u64;
    let mut z = seed;
    (0..n)
        .map(|_| {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((x ^ (x >> 31)) % range) as u32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tokens_are_deterministic_and_in_range() {
        let a = test_tokens(100, 50304, 1);
        assert_eq!(a, test_tokens(100, 50304, 1));
        assert!(a.iter().all(|&t| t < 50277));
        assert!(test_tokens(10, 1000, 2).iter().all(|&t| t < 1000));
    }
}
