//! spedec-eval: the pieces behind the `spedec` command-line tool.

pub mod bandwidth;
pub mod bench;
pub mod generate;
#[cfg(feature = "cuda")]
pub mod gpu_check;
pub mod kernels_bench;
pub mod models;
pub mod ppl;
pub mod spec_step;
