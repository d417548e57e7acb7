//! The GPT-NeoX model on a CUDA GPU: [`CudaModel`] has `forward` / `truncate` / `len` like
//! [`crate::CpuModel`], with f16 weights and activations, an f32 residual stream, f32
//! accumulation and f32 logits.
//!
//! - Weights: f16 checkpoints are uploaded as they are; bf16 and f32 checkpoints are
//!   rounded to f16 at upload (a value beyond the f16 range is an error). LayerNorm
//!   parameters and biases are f16 too.
//! - KV cache: f16, allocated once for `capacity` positions; `truncate` moves the length.
//! - `forward(tokens)` takes any number of tokens. Up to 16 (a decode or verify step) run
//!   as one step, copying its f32 logits to the host. No step allocates device memory; token
//!   ids and positions are written into device arrays, and each step's launches are
//!   replayed from a CUDA graph per row count (`spedec_cuda::graphs` explains the design;
//!   `SPEDEC_CUDA_GRAPHS=0` turns graphs off). Longer inputs (a prompt) run layer-major:
//!   each layer over all rows, so each linear is one matrix product over the prompt
//!   (see [`engine`]); `forward_last` unembeds only the last row. Both paths give the same
//!   bits, since every kernel is batch invariant.
//! - The linear kernel: [`LinearKernel::Simt`] (CUDA cores, the default) or
//!   [`LinearKernel::TensorCore`] (sm_80+), chosen by [`CudaModel::set_linear_kernel`].
//!
//! - Speculation on the device: [`CudaModel::device_spec`] pairs a target with a draft as a
//!   [`spedec_speculative::SpecEngine`] whose logits, sampling and decision stay on the GPU
//!   ([`speculate`]).
//!
//! Modules: [`engine`] (the forward over any kernel backend, in steps or layer-major, like
//! the CPU model), [`speculate`] (the device speculative step over any kernel backend); the
//! device backend itself is [`spedec_cuda::GpuBackend`].

pub mod engine;
pub mod speculate;

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, ensure, Result};
use spedec_cuda::{GpuBackend, GpuContext};
use spedec_lm::{Lm, Logits};

use crate::config::Config;
use crate::weights::Weights;

pub use engine::{Engine, MAX_ROWS, PREFILL_ROWS};
pub use speculate::{DeviceSpec, MAX_DEVICE_GAMMA};
pub use spedec_cuda::{GraphStats, LinearKernel};

/// Environment variable that turns CUDA graphs off when set to `0` (or `false` / `off`).
pub const GRAPHS_ENV: &str = "SPEDEC_CUDA_GRAPHS";

/// Whether CUDA graphs are on by default: yes unless `SPEDEC_CUDA_GRAPHS` is `0`, `false`
/// or `off`.
pub fn graphs_from_env() -> bool {
    !matches!(
        std::env::var(GRAPHS_ENV).as_deref().map(str::trim),
        Ok("0") | Ok("false") | Ok("off")
    )
}

/// The process's GPU context (device 0), created on first use and shared by every model, so
/// draft and target run on one stream and compile the kernels once.
///
/// Event tracking is turned off on its CUDA context: cudarc would otherwise record and wait
/// on events around every buffer use, which is illegal inside a graph capture. That is
/// sound here because all work of this context goes to its single stream.
pub fn shared_gpu() -> Result<Arc<GpuContext>> {
    static SHARED: Mutex<Option<Arc<GpuContext>>> = Mutex::new(None);
    let mut slot = SHARED
        .lock()
        .map_err(|_| anyhow!("GPU context lock poisoned"))?;
    if let Some(gpu) = slot.as_ref() {
        return Ok(gpu.clone());
    }
    let gpu = Arc::new(GpuContext::new(0)?);
    // SAFETY: every buffer and launch of this context uses its one stream (see above).
    unsafe { gpu.cuda().disable_event_tracking() };
    *slot = Some(gpu.clone());
    Ok(gpu)
}

/// How a [`CudaModel`] is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaOptions {
    /// KV-cache length in positions (default: the model's max positions).
    pub capacity: Option<usize>,
    /// Record and replay CUDA graphs (default: on unless `SPEDEC_CUDA_GRAPHS=0`).
    pub graphs: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            capacity: None,
            graphs: graphs_from_env(),
        }
    }
}

/// A GPT-NeoX model on a GPU holding its own KV cache.
pub struct CudaModel {
    engine: Engine<GpuBackend>,
}

impl CudaModel {
    /// Upload `weights` (as f16) to `gpu` and allocate the cache and scratch.
    pub fn new(
        gpu: Arc<GpuContext>,
        config: &Config,
        weights: &Weights,
        options: &CudaOptions,
    ) -> Result<Self> {
        let backend = GpuBackend::new(gpu, options.graphs);
        let engine = Engine::new(backend, config, weights, options.capacity)?;
        Ok(CudaModel { engine })
    }

    /// [`CudaModel::new`] on the process's shared GPU context ([`shared_gpu`]).
    pub fn on_shared_gpu(
        config: &Config,
        weights: &Weights,
        options: &CudaOptions,
    ) -> Result<Self> {
        Self::new(shared_gpu()?, config, weights, options)
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &Config {
        self.engine.config()
    }

    /// The device context.
    pub fn gpu(&self) -> &Arc<GpuContext> {
        self.engine.backend().gpu()
    }

    /// Positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.engine.capacity()
    }

    /// Bytes of f16 weights one decode step reads (every layer matrix and `embed_out`).
    pub fn bytes_per_token(&self) -> usize {
        self.engine.bytes_per_token()
    }

    /// Graph counters.
    pub fn graph_stats(&self) -> GraphStats {
        self.engine.backend().graph_stats().clone()
    }

    /// Turn CUDA graphs on or off (recorded graphs are dropped either way).
    pub fn set_graphs(&mut self, enabled: bool) {
        self.engine.backend_mut().set_graphs(enabled);
    }

    /// Choose the kernel of every linear layer: [`LinearKernel::Simt`] (the default) or
    /// [`LinearKernel::TensorCore`] (an error below sm_80). Recorded graphs are dropped; the
    /// tensor-core kernel's scratch (64 MiB) is allocated here. Logits differ between the
    /// two kernels in their last bits, but each is bit-identical across decode, verify and
    /// prefill.
    pub fn set_linear_kernel(&mut self, kernel: LinearKernel) -> Result<()> {
        self.engine.set_linear_kernel(kernel)
    }

    /// The linear kernel in use.
    pub fn linear_kernel(&self) -> LinearKernel {
        self.engine.linear_kernel()
    }

    /// Run the attention and MLP branches of Pythia's parallel residual side by side in each
    /// step (decode, verify, prefill chunks of up to 16 rows), on a second CUDA stream
    /// (inside the step's graph: two branches of it). Off by default. Logits keep their
    /// bits: the branch outputs are added to the residual stream in the same order as
    /// before. Recorded graphs are dropped; with the tensor-core kernel, the side branch's
    /// own scratch (64 MiB) is allocated here.
    pub fn set_concurrent_branches(&mut self, on: bool) -> Result<()> {
        self.engine.set_concurrent_branches(on)
    }

    /// Whether steps run the residual branches side by side.
    pub fn concurrent_branches(&self) -> bool {
        self.engine.concurrent_branches()
    }

    /// This model as the target and `draft` as the draft of a speculative step that runs on
    /// the GPU ([`speculate`]): hand it to `spedec_speculative::generate_speculative_on`.
    /// Errors when the two models are on different GPU contexts.
    pub fn device_spec<'a>(
        &'a mut self,
        draft: &'a mut CudaModel,
    ) -> Result<DeviceSpec<'a, GpuBackend>> {
        ensure!(
            Arc::ptr_eq(self.gpu(), draft.gpu()),
            "the draft and the target are on different GPU contexts: a device speculative step \
             needs both on one (load them with the shared context)"
        );
        DeviceSpec::new(&mut self.engine, &mut draft.engine)
    }

    /// Rows per layer-major prefill chunk (default [`PREFILL_ROWS`]; at least 1).
    pub fn set_prefill_rows(&mut self, rows: usize) -> Result<()> {
        self.engine.set_prefill_rows(rows)
    }
}

impl Lm for CudaModel {
    fn vocab_size(&self) -> usize {
        self.engine.config().vocab_size
    }
    fn max_len(&self) -> usize {
        self.engine.capacity()
    }
    fn len(&self) -> usize {
        self.engine.len()
    }
    fn forward(&mut self, tokens: &[u32]) -> Result<Logits> {
        self.engine.forward(tokens)
    }
    /// Only the last row is unembedded (a long prompt's prefill skips `embed_out` for the
    /// others); the same bits as the last row of `forward`.
    fn forward_last(&mut self, tokens: &[u32]) -> Result<Logits> {
        self.engine.forward_last(tokens)
    }
    fn truncate(&mut self, len: usize) -> Result<()> {
        self.engine.truncate(len)
    }
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}
