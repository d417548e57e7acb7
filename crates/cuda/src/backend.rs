//! Kernels behind one trait, and the one device type that runs them.
//!
//! [`KernelBackend`] is what the model's forward (`spedec_neox::cuda_model::Engine`) needs:
//! buffers, host ↔ backend copies, one call per kernel with the launchers' shapes (plus
//! row-offset forms of the linear and the attention, for a long prompt's slices), and a
//! hook to record a step's launches. [`GpuBackend`] is its implementation on a device: it
//! owns the context, the attention scratches (a step's, and a long prompt's slices') and the
//! CUDA graphs of one model. The
//! verification crate (`spedec-gpu-check`) adds its check-only calls (poisoning, timing,
//! argmax, softmax) in an extension trait, and implements both traits for a host emulation
//! of the CUDA sources, so the forward and the checks also run on machines without a GPU.

use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Result};
use cudarc::driver::{
    CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr, ValidAsZeroBits,
};
use half::f16;
use spedec_sampling::philox::Stream;
use spedec_sampling::{Sampler, SamplingParams};

use crate::context::GpuContext;
use crate::graphs::{GraphStats, Graphs};
use crate::kernels::consts::{ATT_MAX_M, LIN_MAX_M};
use crate::linear_tc::{self, LinearKernel, LinearTcScratch};
use crate::ops::{AttnScratch, AttnShape, In, LayerNormOut, LinearOut, ATT_PREFILL_ROWS};

/// Rows per step: the kernels' limit (M ≤ 16). Longer inputs run layer-major (the engine's
/// prefill: [`KernelBackend::linear_rows`] addresses 16-row slices of them,
/// [`KernelBackend::attention_rows`] slices of up to [`ATT_PREFILL_ROWS`] queries), which
/// batch invariance makes exact.
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

impl<B: KernelBackend> LinDest<'_, B> {
    /// The same destination, borrowed for one call (so one `LinDest` serves several
    /// row-slice calls).
    pub fn reborrow(&mut self) -> LinDest<'_, B> {
        match self {
            LinDest::F16(o) => LinDest::F16(&mut **o),
            LinDest::F16Gelu(o) => LinDest::F16Gelu(&mut **o),
            LinDest::F32(o) => LinDest::F32(&mut **o),
            LinDest::AddF32(o) => LinDest::AddF32(&mut **o),
        }
    }
}

/// A second LayerNorm of [`KernelBackend::add_layernorm`]: (weight \[d\], bias \[d\], out [m, d]).
pub type SecondLn<'a, B> = (
    &'a <B as KernelBackend>::Buf<f16>,
    &'a <B as KernelBackend>::Buf<f16>,
    &'a mut <B as KernelBackend>::Buf<f16>,
);

/// Where [`KernelBackend::sample_pick`] writes the picked token: element indices into the buffers.
pub struct PickDest<'a, B: KernelBackend> {
    /// i32 [..]: the token (−1 for a row without mass or with a NaN)
    pub token: (&'a mut B::Buf<i32>, usize),
    /// u32 [..]: the draft model's next input ids (0 written for a bad row), if any
    pub draft_input: Option<(&'a mut B::Buf<u32>, usize)>,
    /// u32 [..]: the target's verify input ids (0 written for a bad row), if any
    pub verify_input: Option<(&'a mut B::Buf<u32>, usize)>,
}

/// Where a sampler launch takes the position and index of its Philox counters from.
#[derive(Clone, Copy)]
pub enum PhiloxAt<'a, T: ?Sized> {
    /// Given by the host with the launch.
    Host {
        /// Sequence position (of the first row, for the verify).
        position: u32,
        /// Philox index (the step).
        index: u32,
    },
    /// Read when the kernel runs from `state`, i32 \[2\] = {base position, index}: the
    /// position is base + `offset`. A recorded chain of launches replays with whatever the
    /// host wrote there before the replay.
    Device {
        /// i32 \[2\]: {base position, index}
        state: &'a T,
        /// Added to the base position (two's complement: may be negative).
        offset: i32,
    },
}

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

    /// Allocate what [`KernelBackend::attention_rows`] needs for up to `rows` queries a call
    /// (1..=[`ATT_PREFILL_ROWS`]; more than [`MAX_ROWS`] needs it on [`GpuBackend`]): called
    /// where a long prompt's activations are allocated, never inside a recorded step. The
    /// default allocates nothing.
    fn prepare_prefill(&mut self, shape: &AttnShape, rows: usize) -> Result<()> {
        let _ = shape;
        ensure!(
            (1..=ATT_PREFILL_ROWS).contains(&rows),
            "prefill attention of {rows} rows a call, expected 1..={ATT_PREFILL_ROWS}"
        );
        Ok(())
    }

    /// Most queries one [`KernelBackend::attention_rows`] call takes, so the most a long
    /// prompt's attention puts in one launch: [`ATT_PREFILL_ROWS`] unless the backend
    /// lowers it (the host emulation lets tests do so, to cross slice boundaries cheaply).
    fn prefill_attention_rows(&self) -> usize {
        ATT_PREFILL_ROWS
    }

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

    /// pos i32 \[m\] = start, start + 1, … (a step's positions), ordered with the launches.
    /// The default copies them from the host; [`GpuBackend`] launches `positions_i32`, since
    /// a copy from pageable host memory makes the host wait for the stream.
    fn fill_positions(&mut self, pos: &mut Self::Buf<i32>, start: usize, m: usize) -> Result<()> {
        let end = start
            .checked_add(m)
            .filter(|&e| i32::try_from(e).is_ok())
            .ok_or_else(|| anyhow!("positions {start}.. + {m} do not fit i32"))?;
        let host: Vec<i32> = (start..end).map(|p| p as i32).collect();
        self.write(&host, pos)
    }

    /// pos i32 \[m\] = b + offset, b + offset + 1, … with b = `base`\[0\] read when the launch
    /// runs (so a recorded chain of steps replays at the positions the host wrote there).
    fn fill_positions_at(
        &mut self,
        pos: &mut Self::Buf<i32>,
        base: &Self::Buf<i32>,
        offset: i32,
        m: usize,
    ) -> Result<()>;

    /// See [`GpuContext::add_layernorm_f16`].
    fn add_layernorm(
        &mut self,
        x: &mut Self::Buf<f32>,
        add_a: Option<&Self::Buf<f32>>,
        add_b: Option<&Self::Buf<f32>>,
        weight: &Self::Buf<f16>,
        bias: &Self::Buf<f16>,
        out: &mut Self::Buf<f16>,
        second: Option<SecondLn<'_, Self>>,
        m: usize,
        d: usize,
        eps: f32,
    ) -> Result<()>;

    /// Which kernel [`KernelBackend::linear`] runs (default [`LinearKernel::Simt`]).
    fn linear_kernel(&self) -> LinearKernel {
        LinearKernel::Simt
    }

    /// Choose the kernel [`KernelBackend::linear`] runs. With [`LinearKernel::TensorCore`],
    /// `linear` takes any m (not only m <= 16). Errors where the backend lacks the kernel.
    fn set_linear_kernel(&mut self, kernel: LinearKernel) -> Result<()> {
        ensure!(
            kernel == LinearKernel::Simt,
            "this backend has no {kernel:?} linear kernel"
        );
        Ok(())
    }

    /// Whether a step runs Pythia's two residual branches side by side (default off): the
    /// model then enqueues the MLP between [`KernelBackend::fork_side`] and
    /// [`KernelBackend::back_to_main`], and the attention after it, and joins them with
    /// [`KernelBackend::join_side`] before the next LayerNorm.
    fn concurrent_branches(&self) -> bool {
        false
    }

    /// Turn the concurrent branches on or off. Errors where the backend cannot run them.
    fn set_concurrent_branches(&mut self, on: bool) -> Result<()> {
        ensure!(!on, "this backend cannot run concurrent branches");
        Ok(())
    }

    /// Later launches go to the side branch, which starts once everything enqueued so far is
    /// done. The default (one queue, launches run in order) does nothing.
    fn fork_side(&mut self) -> Result<()> {
        Ok(())
    }

    /// Later launches go to the main branch again; the side branch's work may still be
    /// running beside them.
    fn back_to_main(&mut self) -> Result<()> {
        Ok(())
    }

    /// Later launches on the main branch wait for everything enqueued on the side branch.
    fn join_side(&mut self) -> Result<()> {
        Ok(())
    }

    /// See [`GpuContext::linear_f16`] and, with the tensor-core kernel chosen,
    /// [`GpuContext::linear_tc_f16`].
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

    /// See [`GpuContext::attention_f16`] (the backend owns the scratch): `m` <= [`MAX_ROWS`]
    /// on [`GpuBackend`] (its step scratch); a long prompt's slices go through
    /// [`KernelBackend::attention_rows`].
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

    /// [`KernelBackend::linear`] of the `m` rows of `x` starting at row `x_row` (x: f16
    /// [.., k]), written to the `m` rows of `out` starting at row `out_row` (out: [.., n]):
    /// a slice of a long prompt's rows (the layer-major prefill). Row results are the
    /// `linear` ones (every linear kernel is batch invariant and row-position invariant).
    ///
    /// The default stages the rows through host copies (correct on any backend, and what
    /// the host emulation uses); [`GpuBackend`] passes views of the device buffers.
    fn linear_rows(
        &mut self,
        x: &Self::Buf<f16>,
        x_row: usize,
        w: &Self::Buf<f16>,
        bias: Option<&Self::Buf<f16>>,
        out: LinDest<'_, Self>,
        out_row: usize,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        let staged;
        let x = if x_row == 0 {
            x
        } else {
            staged = stage_in(self, x, x_row * k, m * k, "linear_rows x")?;
            &staged
        };
        let (start, len) = (out_row * n, m * n);
        match out {
            LinDest::F16(o) => with_rows(self, o, start, len, |b, o| {
                b.linear(x, w, bias, LinDest::F16(o), m, n, k)
            }),
            LinDest::F16Gelu(o) => with_rows(self, o, start, len, |b, o| {
                b.linear(x, w, bias, LinDest::F16Gelu(o), m, n, k)
            }),
            LinDest::F32(o) => with_rows(self, o, start, len, |b, o| {
                b.linear(x, w, bias, LinDest::F32(o), m, n, k)
            }),
            LinDest::AddF32(o) => with_rows(self, o, start, len, |b, o| {
                b.linear(x, w, bias, LinDest::AddF32(o), m, n, k)
            }),
        }
    }

    /// [`KernelBackend::attention`] of the `m` queries at rows `row0..row0 + m` of `q` (f16
    /// [.., H, hd]), `pos` (i32 [..]) and `out` (f16 [.., H·hd]): a slice of a long prompt's
    /// queries, whose keys are all in the cache already, in one launch. `m` may exceed
    /// [`MAX_ROWS`], up to [`KernelBackend::prefill_attention_rows`] (at most
    /// [`ATT_PREFILL_ROWS`]) and the rows given to [`KernelBackend::prepare_prefill`]. A
    /// query's result is the `attention` one, bit for bit (the kernel is batch invariant per
    /// query and computes a launch's queries in fixed chunks of 16).
    ///
    /// The default stages the rows through host copies (as [`KernelBackend::linear_rows`])
    /// and calls `attention` with all `m` rows; [`GpuBackend`] passes views, with the step's
    /// scratch up to [`MAX_ROWS`] rows and the prefill scratch above.
    fn attention_rows(
        &mut self,
        q: &Self::Buf<f16>,
        k_cache: &Self::Buf<f16>,
        v_cache: &Self::Buf<f16>,
        pos: &Self::Buf<i32>,
        out: &mut Self::Buf<f16>,
        row0: usize,
        m: usize,
        shape: &AttnShape,
    ) -> Result<()> {
        if row0 == 0 {
            return self.attention(q, k_cache, v_cache, pos, out, m, shape);
        }
        let width = shape.hidden();
        let q = stage_in(self, q, row0 * width, m * width, "attention_rows q")?;
        let pos = stage_in(self, pos, row0, m, "attention_rows pos")?;
        with_rows(self, out, row0 * width, m * width, |b, o| {
            b.attention(&q, k_cache, v_cache, &pos, o, m, shape)
        })
    }

    /// See [`GpuContext::sample_process_f32`]: logits f32 [m, vocab] → probs f32 [m, vocab].
    fn sample_process(
        &mut self,
        logits: &Self::Buf<f32>,
        probs: &mut Self::Buf<f32>,
        m: usize,
        vocab: usize,
        params: &SamplingParams,
    ) -> Result<()>;

    /// See [`GpuContext::spec_verify_f32`] (`draft = None`: greedy on raw target logits).
    fn spec_verify(
        &mut self,
        target: &Self::Buf<f32>,
        draft: Option<&Self::Buf<f32>>,
        drafts: &Self::Buf<i32>,
        out: &mut Self::Buf<i32>,
        gamma: usize,
        vocab: usize,
        seed: u64,
        counter: PhiloxAt<'_, Self::Buf<i32>>,
    ) -> Result<()>;

    /// One token from row `row` of `logits` (f32 [.., vocab]), on the backend: greedy → the
    /// argmax (lowest id on ties); `Sampler::Random(p)` → the row processed as
    /// [`KernelBackend::sample_process`] does (same bits) into row `probs.1` of `probs.0`
    /// (f32 [.., vocab]; required, an error if `None`), then drawn by inverse CDF as
    /// `sample_draw_f32` does with the uniform of counter (position, stream, index, 0) under
    /// `seed` (position and index from `counter`). Written to `dest`. One launch (see
    /// [`GpuContext::sample_pick_f32`]).
    fn sample_pick(
        &mut self,
        logits: &Self::Buf<f32>,
        row: usize,
        probs: Option<(&mut Self::Buf<f32>, usize)>,
        dest: PickDest<'_, Self>,
        vocab: usize,
        sampler: &Sampler,
        seed: u64,
        stream: Stream,
        counter: PhiloxAt<'_, Self::Buf<i32>>,
    ) -> Result<()>;

    /// A point in the backend's queue of work (a CUDA event), for timing a stretch of work
    /// without waiting in between.
    type Mark;

    /// A mark after the work enqueued so far (no wait).
    fn mark(&mut self) -> Result<Self::Mark>;

    /// Seconds between two marks, `from` first (waits until `to` is reached).
    fn seconds_between(&mut self, from: &Self::Mark, to: &Self::Mark) -> Result<f64>;
}

/// Elements `start..start + len` of `buf` as a new buffer (host round trip; the defaults of
/// [`KernelBackend::linear_rows`] and [`KernelBackend::attention_rows`]).
fn stage_in<B: KernelBackend, T: Elem>(
    b: &mut B,
    buf: &B::Buf<T>,
    start: usize,
    len: usize,
    what: &str,
) -> Result<B::Buf<T>> {
    let host = b.download(buf)?;
    ensure!(
        start + len <= host.len(),
        "{what}: elements {start}..{} of a buffer of {}",
        start + len,
        host.len()
    );
    b.upload(&host[start..start + len])
}

/// Run `f` on elements `start..start + len` of `buf` as if they were a buffer of their own
/// (staged through the host unless `start` is 0), then put them back.
fn with_rows<B: KernelBackend, T: Elem>(
    b: &mut B,
    buf: &mut B::Buf<T>,
    start: usize,
    len: usize,
    f: impl FnOnce(&mut B, &mut B::Buf<T>) -> Result<()>,
) -> Result<()> {
    if start == 0 {
        return f(b, buf);
    }
    let mut host = b.download(buf)?;
    ensure!(
        start + len <= host.len(),
        "row slice {start}..{} of a buffer of {}",
        start + len,
        host.len()
    );
    let mut part = b.upload(&host[start..start + len])?;
    f(b, &mut part)?;
    let done = b.download(&part)?;
    host[start..start + len].copy_from_slice(&done);
    b.write(&host, buf)
}

/// Kernels on one GPU stream, with the attention scratch and the CUDA graphs of one model.
pub struct GpuBackend {
    gpu: Arc<GpuContext>,
    /// f32 partial results of the split attention (and its counters), for up to [`MAX_ROWS`] queries.
    scratch: Option<AttnScratch>,
    /// The same for a long prompt's attention slices (up to [`ATT_PREFILL_ROWS`] queries),
    /// made by [`KernelBackend::prepare_prefill`].
    prefill_scratch: Option<AttnScratch>,
    graphs: Graphs,
    /// The kernel `linear` runs, and the tensor-core kernel's scratch once chosen.
    linear_kernel: LinearKernel,
    tc_scratch: Option<LinearTcScratch>,
    /// Whether steps run the residual branches concurrently, and the side branch's own
    /// tensor-core scratch (two linears running at once cannot share one).
    concurrent_branches: bool,
    tc_side_scratch: Option<LinearTcScratch>,
}

impl GpuBackend {
    /// Kernels on `gpu`; `graphs` turns step recording on (which needs the context's event
    /// tracking off: see [`crate::graphs`]).
    pub fn new(gpu: Arc<GpuContext>, graphs: bool) -> Self {
        GpuBackend {
            gpu,
            scratch: None,
            prefill_scratch: None,
            graphs: Graphs::new(graphs),
            linear_kernel: LinearKernel::Simt,
            tc_scratch: None,
            concurrent_branches: false,
            tc_side_scratch: None,
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

    /// The prefill attention scratch, if [`KernelBackend::prepare_prefill`] made one for
    /// `shape` (e.g. to poison it in checks).
    pub fn prefill_attention_scratch(&mut self, shape: &AttnShape) -> Option<&mut AttnScratch> {
        self.prefill_scratch.as_mut().filter(|s| s.shape() == shape)
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

    /// Makes the prefill attention scratch for `rows` queries (f32, `rows · H · n_split ·
    /// (hd + 2)` elements) unless the one there fits already; a scratch of up to
    /// [`MAX_ROWS`] rows is not needed (those slices use the step's).
    fn prepare_prefill(&mut self, shape: &AttnShape, rows: usize) -> Result<()> {
        ensure!(
            (1..=ATT_PREFILL_ROWS).contains(&rows),
            "prefill attention of {rows} rows a call, expected 1..={ATT_PREFILL_ROWS}"
        );
        if rows <= MAX_ROWS {
            return Ok(());
        }
        let fits = self
            .prefill_scratch
            .as_ref()
            .is_some_and(|s| s.shape() == shape && s.max_m() >= rows);
        if !fits {
            self.prefill_scratch = None; // freed before the new one is allocated
            self.prefill_scratch = Some(AttnScratch::new(&self.gpu, shape, rows)?);
        }
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
        // A step that failed between a fork and its join: later launches go to the main
        // stream again (a later synchronize waits for both streams).
        if gpu.on_side() {
            gpu.back_to_main();
            ran?;
            bail!("a step forked the side branch without joining it");
        }
        ran
    }

    fn linear_kernel(&self) -> LinearKernel {
        self.linear_kernel
    }

    /// Recorded graphs are dropped (they launched the other kernel); the tensor-core scratch
    /// ([`LinearTcScratch::DEFAULT_PART`] f32) is allocated here, never inside a step.
    fn set_linear_kernel(&mut self, kernel: LinearKernel) -> Result<()> {
        linear_tc::check_supported(kernel, self.gpu.compute_capability())?;
        self.allocate_tc_scratch(kernel, self.concurrent_branches)?;
        if kernel != self.linear_kernel {
            let enabled = self.graphs.stats().enabled;
            self.graphs.set_enabled(enabled);
        }
        self.linear_kernel = kernel;
        Ok(())
    }

    fn concurrent_branches(&self) -> bool {
        self.concurrent_branches
    }

    /// Recorded graphs are dropped (they hold the other launch order); with the tensor-core
    /// kernel, the side branch's scratch is allocated here.
    fn set_concurrent_branches(&mut self, on: bool) -> Result<()> {
        self.allocate_tc_scratch(self.linear_kernel, on)?;
        if on != self.concurrent_branches {
            let enabled = self.graphs.stats().enabled;
            self.graphs.set_enabled(enabled);
        }
        self.concurrent_branches = on;
        Ok(())
    }

    fn fork_side(&mut self) -> Result<()> {
        self.gpu.fork_side()
    }

    fn back_to_main(&mut self) -> Result<()> {
        self.gpu.back_to_main();
        Ok(())
    }

    fn join_side(&mut self) -> Result<()> {
        self.gpu.join_side()
    }

    fn fill_positions(&mut self, pos: &mut CudaSlice<i32>, start: usize, m: usize) -> Result<()> {
        let start = i32::try_from(start).map_err(|_| anyhow!("position {start} overflows i32"))?;
        self.gpu.positions_i32(pos, None, start, m)
    }

    fn fill_positions_at(
        &mut self,
        pos: &mut CudaSlice<i32>,
        base: &CudaSlice<i32>,
        offset: i32,
        m: usize,
    ) -> Result<()> {
        self.gpu.positions_i32(pos, Some(base), offset, m)
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
        add_a: Option<&CudaSlice<f32>>,
        add_b: Option<&CudaSlice<f32>>,
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
        self.linear_on(x, w, bias.map(|b| b as _), out, m, n, k)
    }

    /// Views of the rows (no copies): the launchers take views as they take buffers.
    fn linear_rows(
        &mut self,
        x: &CudaSlice<f16>,
        x_row: usize,
        w: &CudaSlice<f16>,
        bias: Option<&CudaSlice<f16>>,
        out: LinDest<'_, Self>,
        out_row: usize,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        let xv = tail(x, x_row * k, "linear_rows x")?;
        let bias = bias.map(|b| b as In<f16>);
        let start = out_row * n;
        match out {
            LinDest::F16(o) => {
                let mut v = tail_mut(o, start, "linear_rows out")?;
                self.linear_on(&xv, w, bias, LinearOut::F16(&mut v), m, n, k)
            }
            LinDest::F16Gelu(o) => {
                let mut v = tail_mut(o, start, "linear_rows out")?;
                self.linear_on(&xv, w, bias, LinearOut::F16Gelu(&mut v), m, n, k)
            }
            LinDest::F32(o) => {
                let mut v = tail_mut(o, start, "linear_rows out")?;
                self.linear_on(&xv, w, bias, LinearOut::F32(&mut v), m, n, k)
            }
            LinDest::AddF32(o) => {
                let mut v = tail_mut(o, start, "linear_rows out")?;
                self.linear_on(&xv, w, bias, LinearOut::AddF32(&mut v), m, n, k)
            }
        }
    }

    /// Views of the rows (no copies).
    fn attention_rows(
        &mut self,
        q: &CudaSlice<f16>,
        k_cache: &CudaSlice<f16>,
        v_cache: &CudaSlice<f16>,
        pos: &CudaSlice<i32>,
        out: &mut CudaSlice<f16>,
        row0: usize,
        m: usize,
        shape: &AttnShape,
    ) -> Result<()> {
        let width = shape.hidden();
        let qv = tail(q, row0 * width, "attention_rows q")?;
        let pv = tail(pos, row0, "attention_rows pos")?;
        let mut ov = tail_mut(out, row0 * width, "attention_rows out")?;
        let scratch = if m <= MAX_ROWS {
            scratch_for(&self.gpu, &mut self.scratch, shape)?
        } else {
            let held = self
                .prefill_scratch
                .as_ref()
                .map(|s| (*s.shape(), s.max_m()));
            self.prefill_scratch
                .as_mut()
                .filter(|s| s.shape() == shape && s.max_m() >= m)
                .ok_or_else(|| match held {
                    Some((held_shape, rows)) => anyhow!(
                        "attention_rows of {m} queries: the prefill scratch holds {rows} rows \
                         of {held_shape:?}; call prepare_prefill for this shape and >= {m} rows"
                    ),
                    None => anyhow!(
                        "attention_rows of {m} queries (> {MAX_ROWS}): call prepare_prefill first"
                    ),
                })?
        };
        self.gpu
            .attention_f16(&qv, k_cache, v_cache, &pv, scratch, &mut ov, m, shape)
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

    type Mark = cudarc::driver::CudaEvent;

    fn mark(&mut self) -> Result<cudarc::driver::CudaEvent> {
        self.gpu
            .stream()
            .record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| anyhow!("recording a CUDA event: {e:?}"))
    }

    fn seconds_between(
        &mut self,
        from: &cudarc::driver::CudaEvent,
        to: &cudarc::driver::CudaEvent,
    ) -> Result<f64> {
        let ms = from
            .elapsed_ms(to)
            .map_err(|e| anyhow!("reading the time between two CUDA events: {e:?}"))?;
        Ok(f64::from(ms) / 1e3)
    }

    fn sample_process(
        &mut self,
        logits: &CudaSlice<f32>,
        probs: &mut CudaSlice<f32>,
        m: usize,
        vocab: usize,
        params: &SamplingParams,
    ) -> Result<()> {
        params.validate()?;
        self.gpu.sample_process_f32(
            logits,
            probs,
            m,
            vocab,
            params.temperature,
            params.top_k,
            params.top_p,
        )
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
        counter: PhiloxAt<'_, CudaSlice<i32>>,
    ) -> Result<()> {
        let draft = draft.map(|q| q as In<f32>);
        self.gpu.spec_verify_f32(
            target,
            draft,
            drafts,
            out,
            gamma,
            vocab,
            seed,
            dyn_counter(counter),
        )
    }

    /// Views at the given rows and elements (no copies).
    fn sample_pick(
        &mut self,
        logits: &CudaSlice<f32>,
        row: usize,
        probs: Option<(&mut CudaSlice<f32>, usize)>,
        dest: PickDest<'_, Self>,
        vocab: usize,
        sampler: &Sampler,
        seed: u64,
        stream: Stream,
        counter: PhiloxAt<'_, CudaSlice<i32>>,
    ) -> Result<()> {
        let start = row
            .checked_mul(vocab)
            .ok_or_else(|| anyhow!("sample_pick: row {row} × vocab {vocab} overflows"))?;
        let lv = tail(logits, start, "sample_pick logits")?;
        let mut pv = match probs {
            Some((buf, r)) => {
                let at = r.checked_mul(vocab).ok_or_else(|| {
                    anyhow!("sample_pick: probs row {r} × vocab {vocab} overflows")
                })?;
                Some(tail_mut(buf, at, "sample_pick probs")?)
            }
            None => None,
        };
        let mut tv = tail_mut(dest.token.0, dest.token.1, "sample_pick token")?;
        let mut dv = match dest.draft_input {
            Some((buf, at)) => Some(tail_mut(buf, at, "sample_pick draft_input")?),
            None => None,
        };
        let mut vv = match dest.verify_input {
            Some((buf, at)) => Some(tail_mut(buf, at, "sample_pick verify_input")?),
            None => None,
        };
        self.gpu.sample_pick_f32(
            &lv,
            pv.as_mut().map(|v| v as &mut dyn DevicePtrMut<f32>),
            &mut tv,
            dv.as_mut().map(|v| v as &mut dyn DevicePtrMut<u32>),
            vv.as_mut().map(|v| v as &mut dyn DevicePtrMut<u32>),
            vocab,
            sampler,
            seed,
            stream.id(),
            dyn_counter(counter),
        )
    }
}

/// A counter over a device buffer as the launchers take it.
fn dyn_counter<'a>(c: PhiloxAt<'a, CudaSlice<i32>>) -> PhiloxAt<'a, dyn DevicePtr<i32> + 'a> {
    match c {
        PhiloxAt::Host { position, index } => PhiloxAt::Host { position, index },
        PhiloxAt::Device { state, offset } => PhiloxAt::Device {
            state: state as In<i32>,
            offset,
        },
    }
}

impl GpuBackend {
    /// The tensor-core scratch `kernel` needs, and the side branch's when `branches`
    /// (allocated once, never inside a step).
    fn allocate_tc_scratch(&mut self, kernel: LinearKernel, branches: bool) -> Result<()> {
        if kernel != LinearKernel::TensorCore {
            return Ok(());
        }
        let wanted = [
            (&mut self.tc_scratch, true),
            (&mut self.tc_side_scratch, branches),
        ];
        for (slot, want) in wanted {
            if want && slot.is_none() {
                *slot = Some(LinearTcScratch::new(
                    &self.gpu,
                    LinearTcScratch::DEFAULT_PART,
                    LinearTcScratch::DEFAULT_COUNTERS,
                )?);
            }
        }
        Ok(())
    }

    /// The chosen linear kernel on device buffers or views.
    #[allow(clippy::too_many_arguments)]
    fn linear_on(
        &mut self,
        x: In<f16>,
        w: In<f16>,
        bias: Option<In<f16>>,
        out: LinearOut<'_>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        if self.linear_kernel == LinearKernel::TensorCore {
            let slot = if self.gpu.on_side() {
                &mut self.tc_side_scratch
            } else {
                &mut self.tc_scratch
            };
            let scratch = slot
                .as_mut()
                .ok_or_else(|| anyhow!("tensor-core linear chosen without its scratch"))?;
            return self.gpu.linear_tc_f16(x, w, bias, out, scratch, m, n, k);
        }
        self.gpu.linear_f16(x, w, bias, out, m, n, k)
    }
}

/// The elements of `buf` from `start` on, as a view.
fn tail<'a, T>(buf: &'a CudaSlice<T>, start: usize, what: &str) -> Result<CudaView<'a, T>> {
    let len = buf.len();
    buf.try_slice(start..)
        .ok_or_else(|| anyhow!("{what}: element {start} is past the end of a buffer of {len}"))
}

/// The elements of `buf` from `start` on, as a writable view.
fn tail_mut<'a, T>(
    buf: &'a mut CudaSlice<T>,
    start: usize,
    what: &str,
) -> Result<CudaViewMut<'a, T>> {
    let len = buf.len();
    buf.try_slice_mut(start..)
        .ok_or_else(|| anyhow!("{what}: element {start} is past the end of a buffer of {len}"))
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
