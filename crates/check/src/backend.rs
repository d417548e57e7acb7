//! [`CheckBackend`]: what the checks need from a backend beyond what the model's forward
//! needs — buffers poisoned with NaN (so a kernel that skips a write fails), whether timings
//! mean anything, and the argmax / softmax kernels the model does not launch yet. Implemented
//! here for the device ([`GpuBackend`]) and in [`crate::emulator`] for the host emulation.

use anyhow::Result;
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

    /// Poison the attention scratch for `shape` (made first if need be), so a combine that
    /// reads an unwritten split fails.
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
        gpu.poison(ml)
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
