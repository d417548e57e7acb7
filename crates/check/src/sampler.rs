//! [`SamplerBackend`]: the device sampler's check-only calls (`kernels/sampling.cu`'s
//! `sample_draw_f32` and `philox_uniform_f32`) on a backend — implemented here for the device
//! ([`GpuBackend`]) and in [`crate::emulator`] for the host emulation. The calls the engine
//! makes (`sample_process`, `spec_verify`, `sample_pick`) are on
//! `spedec_cuda::KernelBackend`.

use anyhow::Result;
use spedec_cuda::{CudaSlice, GpuBackend};
use spedec_sampling::philox::Stream;

use crate::backend::CheckBackend;

/// The sampler kernels, as an extension of [`CheckBackend`].
pub trait SamplerBackend: CheckBackend {
    /// See `GpuContext::sample_draw_f32`: probs f32 [m, vocab] → out i32 \[m\].
    #[allow(clippy::too_many_arguments)]
    fn sample_draw(
        &mut self,
        probs: &Self::Buf<f32>,
        out: &mut Self::Buf<i32>,
        m: usize,
        vocab: usize,
        seed: u64,
        position: u32,
        stream: Stream,
        index: u32,
    ) -> Result<()>;

    /// See `GpuContext::philox_uniform_f32`: words u32 [n, 4], uniforms f32 \[n\].
    #[allow(clippy::too_many_arguments)]
    fn philox(
        &mut self,
        seed: u64,
        position: u32,
        stream: Stream,
        index: u32,
        words: &mut Self::Buf<u32>,
        uniforms: &mut Self::Buf<f32>,
        n: usize,
    ) -> Result<()>;
}

impl SamplerBackend for GpuBackend {
    fn sample_draw(
        &mut self,
        probs: &CudaSlice<f32>,
        out: &mut CudaSlice<i32>,
        m: usize,
        vocab: usize,
        seed: u64,
        position: u32,
        stream: Stream,
        index: u32,
    ) -> Result<()> {
        self.gpu()
            .sample_draw_f32(probs, out, m, vocab, seed, position, stream.id(), index)
    }

    fn philox(
        &mut self,
        seed: u64,
        position: u32,
        stream: Stream,
        index: u32,
        words: &mut CudaSlice<u32>,
        uniforms: &mut CudaSlice<f32>,
        n: usize,
    ) -> Result<()> {
        self.gpu()
            .philox_uniform_f32(seed, position, stream.id(), index, words, uniforms, n)
    }
}
