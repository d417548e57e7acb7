//! Device timings against references, for `spedec gpu-check` (GPU only):
//! - [`read_bandwidth`]: the read-bandwidth probe (`kernels/probe.cu`) over a 1 GiB buffer,
//!   the best of a few block counts: the floor of every weight-streaming kernel;
//! - [`linears_vs_cublas`]: our linears (SIMT at M ≤ 16, tensor cores at every M) against
//!   cuBLAS (`cublasGemmEx`, f16 in, f32 compute) at Pythia-70m / 2.8b shapes and
//!   M ∈ [`BENCH_ROWS`], each call on the next copy of the weight in a working set larger
//!   than the L2 ([`copies_for`]), so neither side reads its weights from cache.
//!
//! Timing: CUDA events around a run of calls, queued while the stream is still busy with a
//! read probe over the 1 GiB buffer (so no call waits for the host to submit it, and the L2
//! holds none of the weights when the run starts); µs per call = event time / calls; the
//! median over a few such runs. cuBLAS is loaded at run time (`libcublas.so`) and is a
//! reference only, never in the model's path; where it cannot be loaded our times are still
//! measured and the reason is returned.

use std::ffi::c_void;
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};
use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{sys as drv, CudaEvent, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use half::f16;
use spedec_cuda::probe::{probe_block_counts, PROBE_VEC};
use spedec_cuda::{GpuBackend, GpuContext, KernelBackend, LinDest, LinearKernel};
use spedec_report::kernels::LinearVsCublas;
use spedec_report::Summary;

use crate::kernels::ModelShape;
use crate::report::summarize;

/// Bytes of the probe's buffer (and of the blocker the timed runs queue behind).
pub const PROBE_BYTES: usize = 1 << 30;
/// Row counts of the linears' comparison: decode, verify, a long verify, prefill chunks.
pub const BENCH_ROWS: [usize; 5] = [1, 5, 16, 128, 2048];
/// The weights' working set: over 4× the L2 of an H200 (60 MB), H100 (50 MB) or A100 (40 MB).
pub const WORKING_SET_BYTES: usize = 256 << 20;
/// Fewest copies of a weight the calls rotate through, however large it is.
pub const MIN_COPIES: usize = 4;
/// Most calls in one timed run.
pub const MAX_CALLS: usize = 32;
/// Largest SIMT row count (`linear_f16` takes M ≤ 16 per launch).
const SIMT_MAX_ROWS: usize = spedec_cuda::kernels::consts::LIN_MAX_M;

/// What cuBLAS runs, as the report states it.
pub const CUBLAS_CALL: &str = "cublasGemmEx: W f16 (op T, lda = k), x f16 (op N, ldb = k), \
     y f16 (qkv, h_to_4h) or f32 (attn.dense, 4h_to_h with β = 1, embed_out; ldc = n), \
     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT; no bias, no GELU (ours: no bias, GELU on h_to_4h)";

/// The output of a benchmarked linear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchOut {
    /// f16 `[m, n]`.
    F16,
    /// f16 `[m, n]` through GELU (ours; cuBLAS writes the plain f16 product).
    F16Gelu,
    /// f32 `[m, n]` (logits).
    F32,
    /// f32 `[m, n]` += (the residual stream; cuBLAS with β = 1).
    AddF32,
}

impl BenchOut {
    /// Bytes per output element and whether the output is read too.
    pub fn traffic(self) -> (usize, bool) {
        match self {
            BenchOut::F16 | BenchOut::F16Gelu => (2, false),
            BenchOut::F32 => (4, false),
            BenchOut::AddF32 => (4, true),
        }
    }
}

/// One weight W f16 `[n, k]` of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchMatrix {
    pub name: &'static str,
    pub n: usize,
    pub k: usize,
    pub out: BenchOut,
}

impl BenchMatrix {
    /// Bytes of one copy of W.
    pub fn bytes(&self) -> usize {
        2 * self.n * self.k
    }
}

/// The five weights of a layer and the head of `model`.
pub fn bench_matrices(model: &ModelShape) -> [BenchMatrix; 5] {
    let (d, i, v) = (model.hidden, model.intermediate, model.vocab);
    let mat = |name, n, k, out| BenchMatrix { name, n, k, out };
    [
        mat("qkv", 3 * d, d, BenchOut::F16),
        mat("attn.dense", d, d, BenchOut::AddF32),
        mat("mlp.h_to_4h", i, d, BenchOut::F16Gelu),
        mat("mlp.4h_to_h", d, i, BenchOut::AddF32),
        mat("embed_out", v, d, BenchOut::F32),
    ]
}

/// Copies of a weight of `bytes` that make a working set of at least
/// [`WORKING_SET_BYTES`], and never fewer than [`MIN_COPIES`].
pub fn copies_for(bytes: usize) -> usize {
    WORKING_SET_BYTES.div_ceil(bytes.max(1)).max(MIN_COPIES)
}

/// Calls in one timed run over `copies` copies: each call on a different copy.
pub fn calls_per_run(copies: usize) -> usize {
    copies.clamp(1, MAX_CALLS)
}

/// The copies run `run` uses, call by call: the rotation goes on from run to run, so
/// consecutive runs start on copies the previous one did not touch (where there are more
/// copies than calls).
pub fn rotation(copies: usize, calls: usize, run: usize) -> impl Iterator<Item = usize> {
    let copies = copies.max(1);
    (0..calls).map(move |j| (run * calls + j) % copies)
}

/// The read-bandwidth probe's result.
#[derive(Debug, Clone)]
pub struct ReadBandwidth {
    /// Best median over the block counts, in GB/s (10⁹ bytes/s).
    pub gb_s: f64,
    /// The block count of the best median.
    pub blocks: usize,
    /// Milliseconds per pass at the best block count.
    pub ms: Summary,
    pub bytes: usize,
    /// (blocks, median GB/s) of every block count tried.
    pub tried: Vec<(usize, f64)>,
}

/// GB/s of `bytes` read in `ms` milliseconds.
fn gb_s_of(bytes: usize, ms: f64) -> f64 {
    bytes as f64 / (ms * 1e-3) / 1e9
}

/// A start and an end event that record timing.
struct Events {
    start: CudaEvent,
    end: CudaEvent,
}

impl Events {
    fn new(gpu: &GpuContext) -> Result<Self> {
        let ev = || {
            gpu.cuda()
                .new_event(Some(drv::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| anyhow!("creating a CUDA event: {e:?}"))
        };
        Ok(Events {
            start: ev()?,
            end: ev()?,
        })
    }

    /// Milliseconds the stream spent on what `f` queues.
    fn time(&self, gpu: &GpuContext, f: impl FnOnce() -> Result<()>) -> Result<f64> {
        let s = gpu.stream();
        self.start
            .record(s)
            .map_err(|e| anyhow!("recording an event: {e:?}"))?;
        f()?;
        self.end
            .record(s)
            .map_err(|e| anyhow!("recording an event: {e:?}"))?;
        let ms = self
            .start
            .elapsed_ms(&self.end)
            .map_err(|e| anyhow!("event time: {e:?}"))?;
        Ok(f64::from(ms))
    }
}

/// A 1 GiB f16 buffer of 0xFF bytes and the probe's sums: every 32-bit word is u32::MAX,
/// so the probe's total over the buffer must be −(words) (wrapping).
struct Probe {
    buf: CudaSlice<f16>,
    sums: CudaSlice<u32>,
    blocks: Vec<usize>,
}

impl Probe {
    fn new(gpu: &GpuContext) -> Result<Self> {
        let blocks = probe_block_counts(gpu.multiprocessors()?);
        let most = blocks.iter().copied().max().unwrap_or(1);
        let mut buf = gpu
            .zeros::<f16>(PROBE_BYTES / 2)
            .context("the probe's 1 GiB buffer")?;
        gpu.poison(&mut buf)?;
        let sums = gpu.zeros::<u32>(most)?;
        Ok(Probe { buf, sums, blocks })
    }

    /// One pass with the block count that keeps the stream busiest for longest (the one
    /// the timed runs queue behind).
    fn block(&mut self, gpu: &GpuContext) -> Result<()> {
        let blocks = self.blocks.first().copied().unwrap_or(1);
        gpu.read_probe_f16(&self.buf, &mut self.sums, blocks)
    }

    /// The total of the last pass's `blocks` sums against the buffer's known words.
    fn verify(&self, gpu: &GpuContext, blocks: usize) -> Result<()> {
        let sums = gpu.download(&self.sums.slice(0..blocks))?;
        let total = sums.iter().fold(0u32, |a, &s| a.wrapping_add(s));
        let words = (self.buf.len() / 2) as u64;
        let want = (words as u32).wrapping_neg();
        ensure!(
            total == want,
            "read probe: the sums of {blocks} blocks total {total:#010x}, expected {want:#010x} \
             (a block skipped part of the buffer)"
        );
        Ok(())
    }
}

/// The read-bandwidth probe: `reps` timed passes over 1 GiB (after one warm-up) at each of
/// [`probe_block_counts`]; the best median wins. Every block count's sums are checked
/// against the buffer's known contents.
pub fn read_bandwidth(gpu: &Arc<GpuContext>, reps: usize) -> Result<ReadBandwidth> {
    ensure!(reps > 0, "read bandwidth: no repetitions asked for");
    let mut probe = Probe::new(gpu)?;
    let ev = Events::new(gpu)?;
    let bytes = probe.buf.len() * 2;
    debug_assert_eq!(probe.buf.len() % PROBE_VEC, 0);
    let mut best: Option<(f64, usize, Summary)> = None;
    let mut tried = Vec::new();
    for blocks in probe.blocks.clone() {
        let mut times = Vec::with_capacity(reps);
        for i in 0..reps + 1 {
            let (buf, sums) = (&probe.buf, &mut probe.sums);
            let ms = ev.time(gpu, || gpu.read_probe_f16(buf, sums, blocks))?;
            if i > 0 {
                times.push(ms);
            }
        }
        probe.verify(gpu, blocks)?;
        let s = summarize(&times)?;
        let gb_s = gb_s_of(bytes, s.median);
        tried.push((blocks, gb_s));
        if best.as_ref().is_none_or(|b| gb_s > b.0) {
            best = Some((gb_s, blocks, s));
        }
    }
    let (gb_s, blocks, ms) = best.ok_or_else(|| anyhow!("read bandwidth: no block counts"))?;
    Ok(ReadBandwidth {
        gb_s,
        blocks,
        ms,
        bytes,
        tried,
    })
}

/// Ok where `libcublas.so` can be loaded, else an error saying where to put it.
pub fn cublas_present() -> Result<()> {
    // SAFETY: only tries to dlopen the candidate library names.
    if !unsafe { blas_sys::is_culib_present() } {
        bail!(
            "cuBLAS cannot be loaded: no libcublas.so (libcublas.so.13 / .12) on the \
             library path; put the CUDA toolkit's lib64 (or the nvidia-cublas wheel's \
             lib) on LD_LIBRARY_PATH"
        );
    }
    Ok(())
}

/// cuBLAS on the check's stream.
pub struct Cublas {
    blas: CudaBlas,
    /// The stream the handle was set to (the check's own).
    stream: Arc<CudaStream>,
    version: i32,
}

impl Cublas {
    /// cuBLAS loaded at run time on `gpu`'s stream; an error (never a panic) where
    /// `libcublas.so` cannot be loaded or a handle cannot be made.
    pub fn load(gpu: &GpuContext) -> Result<Cublas> {
        cublas_present()?;
        let stream = gpu.stream().clone();
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            CudaBlas::new(stream.clone())
        }))
        .map_err(|_| anyhow!("cuBLAS could not be loaded (a symbol is missing)"))?;
        let blas = made.map_err(|e| anyhow!("creating a cuBLAS handle: {e:?}"))?;
        let mut version = 0;
        // SAFETY: a live handle and a valid out pointer.
        unsafe { blas_sys::cublasGetVersion_v2(*blas.handle(), &mut version) }
            .result()
            .map_err(|e| anyhow!("cublasGetVersion: {e:?}"))?;
        Ok(Cublas {
            blas,
            stream,
            version,
        })
    }

    /// The library's version, e.g. "13.0.2" (from 130002).
    pub fn version(&self) -> String {
        let v = self.version;
        format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
    }

    /// y `[m, n]` (row-major; += where `accumulate`) = x f16 `[m, k]` · W f16 `[n, k]`ᵀ, as
    /// column-major yᵀ `[n, m]` = op_T(W as `[k, n]`) · xᵀ `[k, m]`.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        w: &CudaSlice<f16>,
        x: &CudaSlice<f16>,
        y: Y<'_>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        ensure!(
            w.len() == n * k && x.len() >= m * k,
            "cuBLAS gemm: W has {} elements (want {}), x {} (want {})",
            w.len(),
            n * k,
            x.len(),
            m * k
        );
        let int = |what: &str, v: usize| {
            i32::try_from(v).map_err(|_| anyhow!("cuBLAS gemm: {what} = {v} does not fit in i32"))
        };
        let (mi, ni, ki) = (int("m", m)?, int("n", n)?, int("k", k)?);
        let s = &*self.stream;
        let (pw, _gw) = w.device_ptr(s);
        let (px, _gx) = x.device_ptr(s);
        let alpha = 1.0f32;
        let (py, _gy, c_type, beta) = match y {
            Y::F16(y) => {
                ensure!(y.len() >= m * n, "cuBLAS gemm: y too short");
                let (p, g) = y.device_ptr_mut(s);
                (p, g, blas_sys::cudaDataType_t::CUDA_R_16F, 0.0f32)
            }
            Y::F32 { y, accumulate } => {
                ensure!(y.len() >= m * n, "cuBLAS gemm: y too short");
                let (p, g) = y.device_ptr_mut(s);
                let beta = if accumulate { 1.0 } else { 0.0 };
                (p, g, blas_sys::cudaDataType_t::CUDA_R_32F, beta)
            }
        };
        // SAFETY: pointers of live buffers of the checked lengths, on the handle's stream;
        // alpha and beta are host f32 (the default pointer mode, f32 compute).
        unsafe {
            blas::gemm_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                ni,
                mi,
                ki,
                (&alpha) as *const f32 as *const c_void,
                pw as *const c_void,
                blas_sys::cudaDataType_t::CUDA_R_16F,
                ki,
                px as *const c_void,
                blas_sys::cudaDataType_t::CUDA_R_16F,
                ki,
                (&beta) as *const f32 as *const c_void,
                py as *mut c_void,
                c_type,
                ni,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| anyhow!("cublasGemmEx {m}x{n}x{k}: {e:?}"))
    }
}

/// Where a cuBLAS call writes.
enum Y<'a> {
    F16(&'a mut CudaSlice<f16>),
    F32 {
        y: &'a mut CudaSlice<f32>,
        accumulate: bool,
    },
}

/// The output buffer of one (matrix, M): f16 or f32 `[m, n]`.
enum OutBuf {
    F16(CudaSlice<f16>),
    F32(CudaSlice<f32>),
}

impl OutBuf {
    fn new(gpu: &GpuContext, out: BenchOut, len: usize) -> Result<Self> {
        Ok(match out {
            BenchOut::F16 | BenchOut::F16Gelu => OutBuf::F16(gpu.zeros(len)?),
            BenchOut::F32 | BenchOut::AddF32 => OutBuf::F32(gpu.zeros(len)?),
        })
    }

    /// Zero it (before a comparison: `+=` outputs start from 0).
    fn clear(&mut self, gpu: &GpuContext) -> Result<()> {
        let s = gpu.stream();
        match self {
            OutBuf::F16(b) => s.memset_zeros(b),
            OutBuf::F32(b) => s.memset_zeros(b),
        }
        .map_err(|e| anyhow!("memset: {e:?}"))
    }

    /// The first `len` elements as f32.
    fn head(&self, gpu: &GpuContext, len: usize) -> Result<Vec<f32>> {
        Ok(match self {
            OutBuf::F16(b) => gpu
                .download(&b.slice(0..len))?
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            OutBuf::F32(b) => gpu.download(&b.slice(0..len))?,
        })
    }
}

/// Our linear on `b` (its kernel chosen by the caller), no bias.
#[allow(clippy::too_many_arguments)]
fn ours(
    b: &mut GpuBackend,
    x: &CudaSlice<f16>,
    w: &CudaSlice<f16>,
    y: &mut OutBuf,
    out: BenchOut,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    let dest = match (y, out) {
        (OutBuf::F16(y), BenchOut::F16) => LinDest::F16(y),
        (OutBuf::F16(y), BenchOut::F16Gelu) => LinDest::F16Gelu(y),
        (OutBuf::F32(y), BenchOut::F32) => LinDest::F32(y),
        (OutBuf::F32(y), BenchOut::AddF32) => LinDest::AddF32(y),
        _ => bail!("output buffer of the wrong type"),
    };
    b.linear(x, w, None, dest, m, n, k)
}

#[allow(clippy::too_many_arguments)]
fn theirs(
    blas: &Cublas,
    x: &CudaSlice<f16>,
    w: &CudaSlice<f16>,
    y: &mut OutBuf,
    out: BenchOut,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    let y = match y {
        OutBuf::F16(y) => Y::F16(y),
        OutBuf::F32(y) => Y::F32 {
            y,
            accumulate: out == BenchOut::AddF32,
        },
    };
    blas.gemm(w, x, y, m, n, k)
}

/// Deterministic f16 values uniform in [−scale, scale) (splitmix64).
fn random_f16(len: usize, scale: f32, seed: u64) -> Vec<f16> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let u = (z >> 40) as f32 / (1u64 << 24) as f32;
            f16::from_f32((u * 2.0 - 1.0) * scale)
        })
        .collect()
}

/// Largest |a − b| and whether every element is within `atol + rtol·|b|`.
pub fn within(a: &[f32], b: &[f32], atol: f32, rtol: f32) -> (f32, bool) {
    let mut worst = 0.0f32;
    let mut ok = a.len() == b.len();
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        if d.is_nan() || d > atol + rtol * y.abs() {
            ok = false;
        }
        if d > worst || d.is_nan() {
            worst = d;
        }
    }
    (worst, ok)
}

/// What [`linears_vs_cublas`] measured.
#[derive(Debug, Clone)]
pub struct LinearBench {
    pub rows: Vec<LinearVsCublas>,
    /// cuBLAS's version, or why it could not be loaded.
    pub cublas: std::result::Result<String, String>,
    /// Shapes where ours and cuBLAS disagree (beyond f16 rounding): a layout error on one side.
    pub mismatches: Vec<String>,
    /// Largest |ours − cuBLAS| over the compared rows (GELU outputs not compared).
    pub max_abs_vs_cublas: f32,
}

/// Our linears against cuBLAS at every [`bench_matrices`] of `models` and [`BENCH_ROWS`]:
/// `reps` timed runs each (median), weights rotated over [`copies_for`] copies. Where both
/// ran, the first rows of our tensor-core result and cuBLAS's are compared (not for GELU).
pub fn linears_vs_cublas(
    gpu: &Arc<GpuContext>,
    models: &[ModelShape],
    reps: usize,
) -> Result<LinearBench> {
    ensure!(reps > 0, "linears vs cuBLAS: no repetitions asked for");
    let blas = Cublas::load(gpu);
    let mut probe = Probe::new(gpu)?;
    let ev = Events::new(gpu)?;
    let mut b = GpuBackend::new(gpu.clone(), false);
    let mut bench = LinearBench {
        rows: Vec::new(),
        cublas: blas
            .as_ref()
            .map(|c| c.version())
            .map_err(|e| format!("{e:#}")),
        mismatches: Vec::new(),
        max_abs_vs_cublas: 0.0,
    };
    let blas = blas.ok();
    let mut seed = 0x13_c0b1a5u64;
    for model in models {
        for mat in bench_matrices(model) {
            let (n, k) = (mat.n, mat.k);
            seed += 1;
            let host = random_f16(n * k, 2.0 / (k as f32).sqrt(), seed);
            let first = gpu.upload(&host)?;
            drop(host);
            let copies = copies_for(mat.bytes());
            let mut ws = Vec::with_capacity(copies);
            for _ in 1..copies {
                let mut c = gpu.zeros::<f16>(n * k)?;
                gpu.stream()
                    .memcpy_dtod(&first, &mut c)
                    .map_err(|e| anyhow!("copying a weight: {e:?}"))?;
                ws.push(c);
            }
            ws.insert(0, first);
            let calls = calls_per_run(copies);
            for &m in &BENCH_ROWS {
                seed += 1;
                let x = gpu.upload(&random_f16(m * k, 1.0, seed))?;
                let mut y = OutBuf::new(gpu, mat.out, m * n)?;
                let mut y_ref = OutBuf::new(gpu, mat.out, m * n)?;
                let mut time = |f: &mut dyn FnMut(usize) -> Result<()>| -> Result<f64> {
                    f(0)?; // warm-up (plans, scratch, cuBLAS heuristics)
                    let mut per_call = Vec::with_capacity(reps);
                    for run in 0..reps {
                        probe.block(gpu)?;
                        probe.block(gpu)?;
                        let ms = ev.time(gpu, || {
                            for c in rotation(copies, calls, run) {
                                f(c)?;
                            }
                            Ok(())
                        })?;
                        per_call.push(ms * 1e3 / calls as f64);
                    }
                    Ok(summarize(&per_call)?.median)
                };
                let cublas_us = match &blas {
                    Some(blas) => Some(time(&mut |c| {
                        theirs(blas, &x, &ws[c], &mut y_ref, mat.out, m, n, k)
                    })?),
                    None => None,
                };
                let mut kernels = vec![LinearKernel::TensorCore];
                if m <= SIMT_MAX_ROWS {
                    kernels.insert(0, LinearKernel::Simt);
                }
                for kernel in kernels {
                    b.set_linear_kernel(kernel)?;
                    let us = time(&mut |c| ours(&mut b, &x, &ws[c], &mut y, mat.out, m, n, k))?;
                    bench.rows.push(LinearVsCublas::new(
                        model.name,
                        mat.name,
                        (m, n, k),
                        match kernel {
                            LinearKernel::Simt => "simt",
                            LinearKernel::TensorCore => "tc",
                        },
                        us,
                        cublas_us,
                        mat.out.traffic(),
                        copies,
                    ));
                }
                // b's kernel is the tensor-core one here.
                if let (Some(blas), true) = (&blas, mat.out != BenchOut::F16Gelu) {
                    y.clear(gpu)?;
                    y_ref.clear(gpu)?;
                    ours(&mut b, &x, &ws[0], &mut y, mat.out, m, n, k)?;
                    theirs(blas, &x, &ws[0], &mut y_ref, mat.out, m, n, k)?;
                    let len = m.min(16) * n;
                    let (worst, ok) =
                        within(&y.head(gpu, len)?, &y_ref.head(gpu, len)?, 1e-2, 1e-2);
                    bench.max_abs_vs_cublas = bench.max_abs_vs_cublas.max(worst);
                    if !ok {
                        bench.mismatches.push(format!(
                            "{} {} M={m}: max |ours − cuBLAS| = {worst:.3e}",
                            model.name, mat.name
                        ));
                    }
                }
            }
        }
    }
    b.set_linear_kernel(LinearKernel::Simt)?;
    Ok(bench)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{PYTHIA_2_8B, PYTHIA_70M};

    #[test]
    fn shapes_are_pythias() {
        let m = bench_matrices(&PYTHIA_2_8B);
        let dims: Vec<(&str, usize, usize)> = m.iter().map(|b| (b.name, b.n, b.k)).collect();
        assert_eq!(
            dims,
            vec![
                ("qkv", 7680, 2560),
                ("attn.dense", 2560, 2560),
                ("mlp.h_to_4h", 10240, 2560),
                ("mlp.4h_to_h", 2560, 10240),
                ("embed_out", 50304, 2560),
            ]
        );
        assert_eq!(m[4].bytes(), 2 * 50304 * 2560);
        assert_eq!(bench_matrices(&PYTHIA_70M)[0].n, 1536);
        assert_eq!(BenchOut::AddF32.traffic(), (4, true));
        assert_eq!(BenchOut::F16Gelu.traffic(), (2, false));
    }

    #[test]
    fn working_set_exceeds_the_l2() {
        for model in [PYTHIA_70M, PYTHIA_2_8B] {
            for mat in bench_matrices(&model) {
                let c = copies_for(mat.bytes());
                assert!(c >= MIN_COPIES, "{} {}", model.name, mat.name);
                assert!(
                    c * mat.bytes() >= WORKING_SET_BYTES,
                    "{} {}",
                    model.name,
                    mat.name
                );
                // No more copies than needed (beyond the minimum of 4).
                assert!(c == MIN_COPIES || (c - 1) * mat.bytes() < WORKING_SET_BYTES);
            }
        }
        // 70m qkv: 1.5 MiB → 171 copies (256 MiB / 1.5 MiB, rounded up); 2.8b embed_out
        // (246 MiB) → 4 copies, 983 MiB.
        assert_eq!(copies_for(2 * 1536 * 512), 171);
        assert_eq!(copies_for(2 * 50304 * 2560), 4);
        const { assert!(WORKING_SET_BYTES > 4 * 60_000_000) };
    }

    #[test]
    fn rotation_never_reuses_a_copy_within_a_run() {
        assert_eq!(calls_per_run(4), 4);
        assert_eq!(calls_per_run(171), MAX_CALLS);
        assert_eq!(calls_per_run(0), 1);
        let r0: Vec<usize> = rotation(171, 32, 0).collect();
        let r1: Vec<usize> = rotation(171, 32, 1).collect();
        assert_eq!(r0, (0..32).collect::<Vec<_>>());
        assert_eq!(r1, (32..64).collect::<Vec<_>>());
        // Past the end it wraps: 171 copies, run 5 covers 160..171 then 0..21.
        let r5: Vec<usize> = rotation(171, 32, 5).collect();
        assert_eq!(r5[..11], (160..171).collect::<Vec<_>>()[..]);
        assert_eq!(r5[11], 0);
        for run in 0..8 {
            let mut seen: Vec<usize> = rotation(4, calls_per_run(4), run).collect();
            seen.sort();
            assert_eq!(seen, vec![0, 1, 2, 3]);
        }
    }

    #[test]
    fn comparison_and_inputs() {
        let (worst, ok) = within(&[1.0, 2.0], &[1.0, 2.015], 1e-2, 1e-2);
        assert!(ok && (worst - 0.015).abs() < 1e-6);
        assert!(!within(&[1.0, 2.0], &[1.0, 2.1], 1e-2, 1e-2).1);
        assert!(!within(&[f32::NAN], &[0.0], 1e-2, 1e-2).1);
        assert!(!within(&[1.0], &[1.0, 2.0], 1e-2, 1e-2).1);
        let v = random_f16(1000, 0.5, 3);
        assert!(v.iter().all(|x| x.to_f32().abs() <= 0.5));
        assert_eq!(v, random_f16(1000, 0.5, 3));
        assert!((gb_s_of(1_000_000_000, 1.0) - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn missing_cublas_is_an_error_not_a_panic() {
        // Wherever the library is absent the check must say so; where present, Ok.
        match cublas_present() {
            Ok(()) => {}
            Err(e) => assert!(format!("{e:#}").contains("LD_LIBRARY_PATH"), "{e:#}"),
        }
    }
}
