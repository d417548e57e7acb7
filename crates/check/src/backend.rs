//! [`CheckBackend`]: what the checks need from a backend beyond what the model's forward
//! needs — buffers poisoned with NaN (so a kernel that skips a write fails), whether timings
//! mean anything, the argmax / softmax kernels the model does not launch yet, and the
//! read-bandwidth probe. Implemented
//! here for the device ([`GpuBackend`]) and in [`crate::emulator`] for the host emulation.

use anyhow::Result;
use half::f16;
use spedec_cuda::{AttnShape, CudaSlice, Elem, GpuBackend, KernelBackend};

/// Check-only calls, as an extension of [`KernelBackend`].
pub trait CheckBackend: KernelBackend {
    /// Whether timings mean anything (false for an emulation).
    fn timed(&self) -> bool;

    /// Fill a buffer with 0xFF bytes (NaN for floats).
    fn poison<T: Elem>(&mut self, buf: &mut Self::Buf<T>) -> Result<()>;

    /// A new buffer of `len` elements filled with 0xFF bytes.
    fn poisoned<T: Elem>(&mut self, len: usize) -> Result<Self::Buf<T>> {
        let mut buf = self.upload(&vec![T::default(); len])?;
        self.poison(&mut buf)?;
        Ok(buf)
    }

    /// Poison the attention scratch for `shape` (made first if need be), and the prefill
    /// attention scratch where one was prepared, so a combine that reads an unwritten split
    /// fails.
    fn poison_attention_scratch(&mut self, shape: &AttnShape) -> Result<()>;

    /// See `GpuContext::argmax_f32`.
    fn argmax(
        &mut self,
        logits: &Self::Buf<f32>,
        out: &mut Self::Buf<u32>,
        m: usize,
        vocab: usize,
    ) -> Result<()>;

    /// See `GpuContext::softmax_f32`.
    fn softmax(
        &mut self,
        logits: &Self::Buf<f32>,
        probs: &mut Self::Buf<f32>,
        m: usize,
        vocab: usize,
        temperature: f32,
    ) -> Result<()>;

    /// See `GpuContext::read_probe_f16`: buf f16 `[len]` (a multiple of 8) read by `blocks`
    /// blocks into sums u32 `[blocks]`.
    fn read_probe(
        &mut self,
        buf: &Self::Buf<f16>,
        sums: &mut Self::Buf<u32>,
        blocks: usize,
    ) -> Result<()>;
}

impl CheckBackend for GpuBackend {
    fn timed(&self) -> bool {
        true
    }

    fn poison<T: Elem>(&mut self, buf: &mut CudaSlice<T>) -> Result<()> {
        self.gpu().poison(buf)
    }

    fn poison_attention_scratch(&mut self, shape: &AttnShape) -> Result<()> {
        let gpu = self.gpu().clone();
        let (o, ml) = self.attention_scratch(shape)?.buffers_mut();
        gpu.poison(o)?;
        gpu.poison(ml)?;
        if let Some(scratch) = self.prefill_attention_scratch(shape) {
            let (o, ml) = scratch.buffers_mut();
            gpu.poison(o)?;
            gpu.poison(ml)?;
        }
        Ok(())
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

    fn read_probe(
        &mut self,
        buf: &CudaSlice<f16>,
        sums: &mut CudaSlice<u32>,
        blocks: usize,
    ) -> Result<()> {
        self.gpu().read_probe_f16(buf, sums, blocks)
    }
}
