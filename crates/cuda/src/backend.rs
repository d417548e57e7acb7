//! Kernels behind one trait, and the one device type that runs them.
//!
//! [`KernelBackend`] is what the model's forward (`spedec_neox::cuda_model::Engine`) needs:
//! buffers, host ↔ backend copies, one call per kernel with the launchers' shapes, and a
//! hook to record a step's launches. [`GpuBackend`] is its implementation on a device: it
//! owns the context, the attention scratch and the CUDA graphs of one model. The
//! verification crate (`spedec-gpu-check`) adds its check-only calls (poisoning, timing,
//! argmax, softmax) in an extension trait, and implements both traits for a host emulation
//! of the CUDA sources, so the forward and the checks also run on machines without a GPU.

use std::sync::Arc;

use anyhow::{anyhow, ensure, Result};
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use half::f16;

use crate::context::GpuContext;
use crate::graphs::{GraphStats, Graphs};
use crate::kernels::consts::{ATT_MAX_M, LIN_MAX_M};
use crate::ops::{AttnScratch, AttnShape, LayerNormOut, LinearOut};

/// Rows per step: the kernels' limit (M ≤ 16). Longer inputs run in steps of this size,
/// which batch invariance makes exact.
pub const MAX_ROWS: usize = if LIN_MAX_M < ATT_MAX_M {
    LIN_MAX_M
} else {
    ATT_MAX_M
};

/// Element types moved between host and backend: every bit pattern is a valid value.
pub trait Elem: DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + 'static {}
impl Elem for f16 {}
impl Elem for f32 {}
impl Elem for u32 {}
impl Elem for i32 {}

/// Destination and epilogue of [`KernelBackend::linear`] (mirrors [`LinearOut`]).
pub enum LinDest<'a, B: KernelBackend> {
    /// f16 [m, n] = x·Wᵀ + b
    F16(&'a mut B::Buf<f16>),
    /// f16 [m, n] = gelu(x·Wᵀ + b)
    F16Gelu(&'a mut B::Buf<f16>),
    /// f32 [m, n] = x·Wᵀ + b
    F32(&'a mut B::Buf<f32>),
    /// f32 [m, n] += x·Wᵀ + b
    AddF32(&'a mut B::Buf<f32>),
}

/// A second LayerNorm of [`KernelBackend::add_layernorm`]: (weight \[d\], bias \[d\], out [m, d]).
pub type SecondLn<'a, B> = (
    &'a <B as KernelBackend>::Buf<f16>,
    &'a <B as KernelBackend>::Buf<f16>,
    &'a mut <B as KernelBackend>::Buf<f16>,
);

/// Buffers, copies, and one call per kernel, with the shapes of [`GpuContext`]'s launchers.
#[allow(clippy::too_many_arguments)]
pub trait KernelBackend: Sized {
    /// A buffer of `T` owned by the backend.
    type Buf<T: Elem>;

    /// Copy host data into a new buffer.
    fn upload<T: Elem>(&mut self, host: &[T]) -> Result<Self::Buf<T>>;
    /// Copy a buffer back (waits for pending work).
    fn download<T: Elem>(&mut self, buf: &Self::Buf<T>) -> Result<Vec<T>>;
    /// Copy `host` into the start of `dst` (ordered with the launches).
    fn write<T: Elem>(&mut self, host: &[T], dst: &mut Self::Buf<T>) -> Result<()>;
    /// Copy the first `dst.len()` elements of `src` into `dst` (waits for pending work).
    fn read_into<T: Elem>(&mut self, src: &Self::Buf<T>, dst: &mut [T]) -> Result<()>;
    /// Wait for pending work.
    fn synchronize(&mut self) -> Result<()>;

    /// Allocate what the backend keeps per model before the first step (the attention
    /// scratch for `shape`), so that no step allocates.
    fn prepare(&mut self, shape: &AttnShape) -> Result<()>;

    /// Run one step of `m` rows; `encode` enqueues its launches. A backend may record them
    /// the first times and replay the record later (CUDA graphs); the default runs them.
    fn run_step(
        &mut self,
        m: usize,
        encode: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let _ = m;
        encode(self)
    }

    /// See [`GpuContext::embedding_f16`].
    fn embedding(
        &mut self,
        ids: &Self::Buf<u32>,
        table: &Self::Buf<f16>,
        out: &mut Self::Buf<f32>,
        m: usize,
        vocab: usize,
        d: usize,
    ) -> Result<()>;

    /// See [`GpuContext::add_layernorm_f16`].
    fn add_layernorm(
        &mut self,
        x: &mut Self::Buf<f32>,
        add_a: Option<&Self::Buf<f16>>,
        add_b: Option<&Self::Buf<f16>>,
        weight: &Self::Buf<f16>,
        bias: &Self::Buf<f16>,
        out: &mut Self::Buf<f16>,
        second: Option<SecondLn<'_, Self>>,
        m: usize,
        d: usize,
        eps: f32,
    ) -> Result<()>;

    /// See [`GpuContext::linear_f16`].
    fn linear(
        &mut self,
        x: &Self::Buf<f16>,
        w: &Self::Buf<f16>,
        bias: Option<&Self::Buf<f16>>,
        out: LinDest<'_, Self>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()>;

    /// See [`GpuContext::rotary_kv_f16`].
    fn rotary_kv(
        &mut self,
        qkv: &Self::Buf<f16>,
        pos: &Self::Buf<i32>,
        q: &mut Self::Buf<f16>,
        k_cache: &mut Self::Buf<f16>,
        v_cache: &mut Self::Buf<f16>,
        m: usize,
        shape: &AttnShape,
    ) -> Result<()>;

    /// See [`GpuContext::attention_f16`] (the backend owns the scratch).
    fn attention(
        &mut self,
        q: &Self::Buf<f16>,
        k_cache: &Self::Buf<f16>,
        v_cache: &Self::Buf<f16>,
        pos: &Self::Buf<i32>,
        out: &mut Self::Buf<f16>,
        m: usize,
        shape: &AttnShape,
    ) -> Result<()>;
}

/// Kernels on one GPU stream, with the attention scratch and the CUDA graphs of one model.
pub struct GpuBackend {
    gpu: Arc<GpuContext>,
    /// f32 partial results of the two-pass attention, for up to [`MAX_ROWS`] queries.
    scratch: Option<AttnScratch>,
    graphs: Graphs,
}

impl GpuBackend {
    /// Kernels on `gpu`; `graphs` turns step recording on (which needs the context's event
    /// tracking off: see [`crate::graphs`]).
    pub fn new(gpu: Arc<GpuContext>, graphs: bool) -> Self {
        GpuBackend {
            gpu,
            scratch: None,
            graphs: Graphs::new(graphs),
        }
    }

    /// The device context.
    pub fn gpu(&self) -> &Arc<GpuContext> {
        &self.gpu
    }

    /// The attention scratch fitting `shape`, made on first use or when the shape changes.
    pub fn attention_scratch(&mut self, shape: &AttnShape) -> Result<&mut AttnScratch> {
        scratch_for(&self.gpu, &mut self.scratch, shape)
    }

    /// Graph counters.
    pub fn graph_stats(&self) -> &GraphStats {
        self.graphs.stats()
    }

    /// Turn step recording on or off (dropping recorded graphs either way).
    pub fn set_graphs(&mut self, enabled: bool) {
        self.graphs.set_enabled(enabled);
    }
}

impl KernelBackend for GpuBackend {
    type Buf<T: Elem> = CudaSlice<T>;

    fn upload<T: Elem>(&mut self, host: &[T]) -> Result<CudaSlice<T>> {
        self.gpu.upload(host)
    }

    fn download<T: Elem>(&mut self, buf: &CudaSlice<T>) -> Result<Vec<T>> {
        self.gpu.download(buf)
    }

    fn write<T: Elem>(&mut self, host: &[T], dst: &mut CudaSlice<T>) -> Result<()> {
        self.gpu.write(host, dst)
    }

    fn read_into<T: Elem>(&mut self, src: &CudaSlice<T>, dst: &mut [T]) -> Result<()> {
        ensure!(
            dst.len() <= src.len(),
            "read of {} elements from a buffer of {}",
            dst.len(),
            src.len()
        );
        let view = src.slice(0..dst.len());
        self.gpu
            .stream()
            .memcpy_dtoh(&view, dst)
            .map_err(|e| anyhow!("device-to-host copy of {} elements: {e:?}", dst.len()))?;
        self.gpu.synchronize()
    }

    fn synchronize(&mut self) -> Result<()> {
        self.gpu.synchronize()
    }

    fn prepare(&mut self, shape: &AttnShape) -> Result<()> {
        self.attention_scratch(shape)?;
        Ok(())
    }

    fn run_step(
        &mut self,
        m: usize,
        encode: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        ensure!((1..=MAX_ROWS).contains(&m), "step of {m} rows");
        // The graphs are taken out for the step, so `encode` can borrow the backend whole.
        let mut graphs = std::mem::take(&mut self.graphs);
        let gpu = self.gpu.clone();
        let ran = graphs.run(&gpu, m, &mut || encode(self));
        self.graphs = graphs;
        ran
    }

    fn embedding(
        &mut self,
        ids: &CudaSlice<u32>,
        table: &CudaSlice<f16>,
        out: &mut CudaSlice<f32>,
        m: usize,
        vocab: usize,
        d: usize,
    ) -> Result<()> {
        self.gpu.embedding_f16(ids, table, out, m, vocab, d)
    }

    fn add_layernorm(
        &mut self,
        x: &mut CudaSlice<f32>,
        add_a: Option<&CudaSlice<f16>>,
        add_b: Option<&CudaSlice<f16>>,
        weight: &CudaSlice<f16>,
        bias: &CudaSlice<f16>,
        out: &mut CudaSlice<f16>,
        second: Option<SecondLn<'_, Self>>,
        m: usize,
        d: usize,
        eps: f32,
    ) -> Result<()> {
        self.gpu.add_layernorm_f16(
            x,
            add_a.map(|a| a as _),
            add_b.map(|b| b as _),
            LayerNormOut { weight, bias, out },
            second.map(|(weight, bias, out)| LayerNormOut { weight, bias, out }),
            m,
            d,
            eps,
        )
    }

    fn linear(
        &mut self,
        x: &CudaSlice<f16>,
        w: &CudaSlice<f16>,
        bias: Option<&CudaSlice<f16>>,
        out: LinDest<'_, Self>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        let out = match out {
            LinDest::F16(o) => LinearOut::F16(o),
            LinDest::F16Gelu(o) => LinearOut::F16Gelu(o),
            LinDest::F32(o) => LinearOut::F32(o),
            LinDest::AddF32(o) => LinearOut::AddF32(o),
        };
        self.gpu
            .linear_f16(x, w, bias.map(|b| b as _), out, m, n, k)
    }

    fn rotary_kv(
        &mut self,
        qkv: &CudaSlice<f16>,
        pos: &CudaSlice<i32>,
        q: &mut CudaSlice<f16>,
        k_cache: &mut CudaSlice<f16>,
        v_cache: &mut CudaSlice<f16>,
        m: usize,
        shape: &AttnShape,
    ) -> Result<()> {
        self.gpu
            .rotary_kv_f16(qkv, pos, q, k_cache, v_cache, m, shape)
    }

    fn attention(
        &mut self,
        q: &CudaSlice<f16>,
        k_cache: &CudaSlice<f16>,
        v_cache: &CudaSlice<f16>,
        pos: &CudaSlice<i32>,
        out: &mut CudaSlice<f16>,
        m: usize,
        shape: &AttnShape,
    ) -> Result<()> {
        let scratch = scratch_for(&self.gpu, &mut self.scratch, shape)?;
        self.gpu
            .attention_f16(q, k_cache, v_cache, pos, scratch, out, m, shape)
    }
}

/// The scratch in `slot` if it fits `shape`, else a new one put there.
fn scratch_for<'a>(
    gpu: &GpuContext,
    slot: &'a mut Option<AttnScratch>,
    shape: &AttnShape,
) -> Result<&'a mut AttnScratch> {
    if slot.as_ref().is_none_or(|s| s.shape() != shape) {
        *slot = Some(AttnScratch::new(gpu, shape, MAX_ROWS)?);
    }
    Ok(slot.as_mut().expect("scratch was just set"))
}
