//! [`SamplerBackend`]: the device sampler's kernels (`kernels/sampling.cu`) as calls on a
//! backend, for the checks — implemented here for the device ([`GpuBackend`]) and in
//! [`crate::emulator`] for the host emulation. The engine does not launch them yet.

use anyhow::Result;
use spedec_cuda::{CudaSlice, GpuBackend};
use spedec_sampling::philox::Stream;
use spedec_sampling::SamplingParams;

use crate::backend::CheckBackend;

/// The sampler kernels, as an extension of [`CheckBackend`].
pub trait SamplerBackend: CheckBackend {
    /// See `GpuContext::sample_process_f32`: logits f32 [m, vocab] → probs f32 [m, vocab].
    fn sample_process(
        &mut self,
        logits: &Self::Buf<f32>,
        probs: &mut Self::Buf<f32>,
        m: usize,
        vocab: usize,
        params: &SamplingParams,
    ) -> Result<()>;

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

    /// See `GpuContext::spec_verify_f32` (`draft = None`: greedy on raw target logits).
    #[allow(clippy::too_many_arguments)]
    fn spec_verify(
        &mut self,
        target: &Self::Buf<f32>,
        draft: Option<&Self::Buf<f32>>,
        drafts: &Self::Buf<i32>,
        out: &mut Self::Buf<i32>,
        gamma: usize,
        vocab: usize,
        seed: u64,
        position: u32,
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
    fn sample_process(
        &mut self,
        logits: &CudaSlice<f32>,
        probs: &mut CudaSlice<f32>,
        m: usize,
        vocab: usize,
        params: &SamplingParams,
    ) -> Result<()> {
        params.validate()?;
        self.gpu().sample_process_f32(
            logits,
            probs,
            m,
            vocab,
            params.temperature,
            params.top_k,
            params.top_p,
        )
    }

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

    fn spec_verify(
        &mut self,
        target: &CudaSlice<f32>,
        draft: Option<&CudaSlice<f32>>,
        drafts: &CudaSlice<i32>,
        out: &mut CudaSlice<i32>,
        gamma: usize,
        vocab: usize,
        seed: u64,
        position: u32,
        index: u32,
    ) -> Result<()> {
        let draft = draft.map(|q| q as &dyn spedec_cuda::DevicePtr<f32>);
        self.gpu().spec_verify_f32(
            target, draft, drafts, out, gamma, vocab, seed, position, index,
        )
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
