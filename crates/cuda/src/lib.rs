//! spedec-cuda: the CUDA backend's foundation. A cudarc context created only when a driver
//! is present, NVRTC compilation of `kernels/*.cu` (no CUDA toolkit needed), typed launchers
//! with shape checks, a CPU reference beside every kernel, and a GPU self-check.
//!
//! Conventions (every kernel):
//! - f16 weights and activations, f32 accumulation, f32 residual stream and logits;
//! - weights in PyTorch Linear layout [out, in], row-major;
//! - KV cache f16 `[layers][heads][max_pos][head_dim]` for K and for V ([`kv::KvLayout`]);
//! - positions and token ids live in device memory, so a captured CUDA graph serves every
//!   step;
//! - batch invariance: a row's result never depends on how many rows (M <= 16) were
//!   computed with it.
//!
//! Modules: [`backend`] (kernels behind a trait, for the checks), [`nvrtc`] (compile, resource report), [`kernels`] (embedded sources),
//! [`context`] (device, stream, loaded kernels, buffers), [`ops`] (launchers), [`kv`]
//! (cache layout), [`reference`](mod@reference) (CPU references), [`check`] (GPU vs CPU self-check).

pub mod backend;
pub mod check;
pub mod context;
pub mod kernels;
pub mod kv;
pub mod nvrtc;
pub mod ops;
pub mod reference;

pub use backend::{GpuBackend, KernelBackend};
pub use check::{
    format_table, run_checks, run_checks_on, CheckOptions, CheckResult, PYTHIA_2_8B, PYTHIA_70M,
};
pub use context::{driver_available, gpu_available, GpuContext, NO_DEVICE, NO_DRIVER};
pub use kv::{GpuKvCache, KvLayout};
pub use nvrtc::{compile_all, compile_source, nvrtc_available, Compiled, KernelResources};
pub use ops::{AttnScratch, AttnShape, LayerNormOut, LinearOut};

/// Re-exports of the cudarc buffer types the launchers take.
pub use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut};
