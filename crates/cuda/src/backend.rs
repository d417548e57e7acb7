//! The kernels as the self-check sees them: a backend owns buffers and runs each kernel with
//! the kernel's own arguments. [`GpuBackend`] runs them on a device through the typed
//! launchers; the crate's tests implement the same trait for a host emulation of the CUDA
//! sources, so every check also runs on machines without a GPU.

use anyhow::Result;
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use half::f16;

use crate::context::GpuContext;
use crate::ops::{AttnScratch, AttnShape, LayerNormOut, LinearOut};

/// Element types moved between host and backend: every bit pattern is a valid value.
pub trait Elem: DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + 'static {}
impl Elem for f16 {}
impl Elem for f32 {}
impl Elem for u32 {}
impl Elem for i32 {}

/// Destination and epilogue of [`KernelBackend::linear`] (mirrors [`LinearOut`]).
pub enum LinDest<'a, B: KernelBackend + ?Sized> {
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

/// Buffers plus one call per kernel, with the shapes of [`GpuContext`]'s launchers.
#[allow(clippy::too_many_arguments)]
pub trait KernelBackend {
    /// A buffer of `T` owned by the backend.
    type Buf<T: Elem>;

    /// Short description for reports.
    fn describe(&self) -> String;
    /// Copy host data into a new buffer.
    fn upload<T: Elem>(&mut self, host: &[T]) -> Result<Self::Buf<T>>;
    /// A new buffer of `len` elements filled with 0xFF bytes (NaN for floats).
    fn poisoned<T: Elem>(&mut self, len: usize) -> Result<Self::Buf<T>>;
    /// Fill a buffer with 0xFF bytes.
    fn poison<T: Elem>(&mut self, buf: &mut Self::Buf<T>) -> Result<()>;
    /// Copy a buffer back (waits for pending work).
    fn download<T: Elem>(&mut self, buf: &Self::Buf<T>) -> Result<Vec<T>>;
    /// Wait for pending work.
    fn synchronize(&mut self) -> Result<()>;
    /// Whether timings mean anything (false for an emulation).
    fn timed(&self) -> bool;

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

    /// Poison the attention scratch, so a combine that reads an unwritten split fails.
    fn poison_attention_scratch(&mut self) -> Result<()>;

    /// See [`GpuContext::argmax_f32`].
    fn argmax(
        &mut self,
        logits: &Self::Buf<f32>,
        out: &mut Self::Buf<u32>,
        m: usize,
        vocab: usize,
    ) -> Result<()>;

    /// See [`GpuContext::softmax_f32`].
    fn softmax(
        &mut self,
        logits: &Self::Buf<f32>,
        probs: &mut Self::Buf<f32>,
        m: usize,
        vocab: usize,
        temperature: f32,
    ) -> Result<()>;
}

/// A device backend: a context plus the attention scratch it owns. Every such type gets the one
/// [`KernelBackend`] implementation below (the self-check's [`GpuBackend`] and the engine's
/// model ops share it).
pub trait GpuKernels {
    /// The device context.
    fn gpu(&self) -> &GpuContext;
    /// The context and an attention scratch fitting `shape` (made on first use or when the
    /// shape changes).
    fn gpu_and_scratch(&mut self, shape: &AttnShape) -> Result<(&GpuContext, &mut AttnScratch)>;
    /// The context and the scratch made so far, if any.
    fn gpu_and_existing_scratch(&mut self) -> (&GpuContext, Option<&mut AttnScratch>);
}

/// The self-check's backend: kernels on a device through [`GpuContext`]'s launchers.
pub struct GpuBackend<'a> {
    gpu: &'a GpuContext,
    scratch: Option<AttnScratch>,
}

impl<'a> GpuBackend<'a> {
    /// Wrap a live context.
    pub fn new(gpu: &'a GpuContext) -> Self {
        Self { gpu, scratch: None }
    }
}

impl GpuKernels for GpuBackend<'_> {
    fn gpu(&self) -> &GpuContext {
        self.gpu
    }

    fn gpu_and_scratch(&mut self, shape: &AttnShape) -> Result<(&GpuContext, &mut AttnScratch)> {
        let stale = self.scratch.as_ref().is_none_or(|s| s.shape() != shape);
        if stale {
            let mut s = AttnScratch::new(self.gpu, shape, crate::kernels::consts::ATT_MAX_M)?;
            poison_scratch(self.gpu, &mut s)?;
            self.scratch = Some(s);
        }
        let scratch = self.scratch.as_mut().expect("scratch was just set");
        Ok((self.gpu, scratch))
    }

    fn gpu_and_existing_scratch(&mut self) -> (&GpuContext, Option<&mut AttnScratch>) {
        (self.gpu, self.scratch.as_mut())
    }
}

fn poison_scratch(gpu: &GpuContext, s: &mut AttnScratch) -> Result<()> {
    let (o, ml) = s.buffers_mut();
    gpu.poison(o)?;
    gpu.poison(ml)
}

impl<G: GpuKernels> KernelBackend for G {
    type Buf<T: Elem> = CudaSlice<T>;

    fn describe(&self) -> String {
        self.gpu().describe()
    }

    fn upload<T: Elem>(&mut self, host: &[T]) -> Result<CudaSlice<T>> {
        self.gpu().upload(host)
    }

    fn poisoned<T: Elem>(&mut self, len: usize) -> Result<CudaSlice<T>> {
        let mut b = self.gpu().zeros::<T>(len)?;
        self.gpu().poison(&mut b)?;
        Ok(b)
    }

    fn poison<T: Elem>(&mut self, buf: &mut CudaSlice<T>) -> Result<()> {
        self.gpu().poison(buf)
    }

    fn download<T: Elem>(&mut self, buf: &CudaSlice<T>) -> Result<Vec<T>> {
        self.gpu().download(buf)
    }

    fn synchronize(&mut self) -> Result<()> {
        self.gpu().synchronize()
    }

    fn timed(&self) -> bool {
        true
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
        self.gpu().embedding_f16(ids, table, out, m, vocab, d)
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
        self.gpu().add_layernorm_f16(
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
        self.gpu()
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
        self.gpu()
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
        let (gpu, scratch) = self.gpu_and_scratch(shape)?;
        gpu.attention_f16(q, k_cache, v_cache, pos, scratch, out, m, shape)
    }

    fn poison_attention_scratch(&mut self) -> Result<()> {
        match self.gpu_and_existing_scratch() {
            (gpu, Some(s)) => poison_scratch(gpu, s),
            (_, None) => Ok(()),
        }
    }

    fn argmax(
        &mut self,
        logits: &CudaSlice<f32>,
        out: &mut CudaSlice<u32>,
        m: usize,
        vocab: usize,
    ) -> Result<()> {
        self.gpu().argmax_f32(logits, out, m, vocab)
    }

    fn softmax(
        &mut self,
        logits: &CudaSlice<f32>,
        probs: &mut CudaSlice<f32>,
        m: usize,
        vocab: usize,
        temperature: f32,
    ) -> Result<()> {
        self.gpu().softmax_f32(logits, probs, m, vocab, temperature)
    }
}
