//! spedec-neox: the GPT-NeoX (Pythia) model — config, weights, tokenizer, KV cache, the CPU
//! forward, and (feature `cuda`, on by default) the CUDA forward. Both models implement
//! [`Lm`], the engine's one model interface (from `spedec-lm`, re-exported here).

pub mod checkpoint;
pub mod config;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda_model;
pub mod model;
pub mod source;
pub mod synthetic;
pub mod tokenizer;
pub mod weights;

/// `pytorch_model.bin` read without executing anything, and its conversion to safetensors
/// (the `spedec-pytorch` crate, here under its old path).
pub use spedec_pytorch as pytorch;

pub use config::Config;
pub use cpu::Isa;
#[cfg(feature = "cuda")]
pub use cuda_model::{CudaModel, CudaOptions};
pub use model::CpuModel;
pub use source::ModelFiles;
pub use spedec_lm::{KvCursor, Lm, Logits};
pub use tokenizer::Tokenizer;
pub use weights::{Dtype, Weights};
