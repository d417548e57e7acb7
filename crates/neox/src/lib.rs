//! spedec-neox: the GPT-NeoX (Pythia) model — config, weights, tokenizer, KV cache, CPU forward.

pub mod config;
pub mod cpu;
pub mod cuda_model;
mod logits;
pub mod model;
pub mod source;
pub mod synthetic;
pub mod tokenizer;
pub mod weights;

pub use config::Config;
pub use cpu::Isa;
pub use cuda_model::{CudaModel, CudaOptions};
pub use logits::Logits;
pub use model::CpuModel;
pub use source::ModelFiles;
pub use tokenizer::Tokenizer;
pub use weights::{Dtype, Weights};
