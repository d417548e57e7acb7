//! spedec-cuda: the CUDA backend's foundation. A cudarc context created only when a driver
//! is present, NVRTC compilation of `kernels/*.cu` (no CUDA toolkit needed), typed launchers
//! with shape checks, and the one device backend the model runs on (with its CUDA graphs).
//! The kernels' CPU references, their host emulation and the GPU self-check live apart, in
//! `spedec-check`.
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
//! Modules: [`nvrtc`] (compile, resource report), [`kernels`] (embedded sources),
//! [`context`] (device, stream, loaded kernels, buffers), [`ops`] (launchers), [`kv`]
//! (cache layout), [`linear_tc`] (the tensor-core linear: plan, scratch, launcher), [`backend`] (the kernels behind one trait; [`GpuBackend`], the device
//! implementation), [`graphs`] (a step's launches recorded and replayed), [`sampling_ops`]
//! (the device sampler's launchers: processing, draws, the speculative decision, Philox),
//! [`probe`] (the read-bandwidth probe, check-only).

pub mod backend;
pub mod context;
pub mod graphs;
pub mod kernels;
pub mod kv;
pub mod linear_tc;
pub mod nvrtc;
pub mod ops;
pub mod probe;
pub mod sampling_ops;

pub use backend::{
    Elem, GpuBackend, KernelBackend, LinDest, PhiloxAt, PickDest, SecondLn, MAX_ROWS,
};
pub use context::{driver_available, gpu_available, GpuContext, NO_DEVICE, NO_DRIVER};
pub use graphs::GraphStats;
pub use kv::{GpuKvCache, KvLayout};
pub use linear_tc::{LinearKernel, LinearTcScratch};
pub use nvrtc::{compile_all, compile_source, nvrtc_available, Compiled, KernelResources};
pub use ops::{AttnScratch, AttnShape, LayerNormOut, LinearOut, ATT_PREFILL_ROWS};

/// Re-exports of the cudarc buffer types the launchers take.
pub use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut};
