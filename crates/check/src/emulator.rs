//! The one test backend: `kernels/*.cu` compiled by the host C++ compiler against a small
//! emulation of the CUDA execution model (`emu/emu.h`: fibers per thread, `__syncthreads`
//! and warp shuffles as barriers; `emu/launch.cpp`: C entry points with the launch
//! configurations of `spedec_cuda::ops`), behind [`KernelBackend`] and [`CheckBackend`] on
//! host `Vec`s. The kernel self-check and the model's forward (`cuda_model::Engine`) run on
//! it without a GPU; it checks indexing, masking, reductions and batch invariance, not PTX,
//! the GPU compiler, timing or the launchers' device pointers.
//!
//! `__shared__` variables are function statics in the emulation, so launches are serialised
//! process-wide; the library is built once per process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use anyhow::{anyhow, bail, ensure, Result};
use half::f16;
use libloading::Library;
use spedec_cuda::kernels::consts::{ATT_MAX_M, ATT_SPLIT};
use spedec_cuda::linear_tc::{self, consts::LTC128_BM};
use spedec_cuda::{
    AttnShape, Elem, KernelBackend, LinDest, LinearKernel, PhiloxAt, PickDest, SecondLn,
};
use spedec_cuda::{ATT_PREFILL_ROWS, MAX_ROWS};
use spedec_sampling::philox::Stream;
use spedec_sampling::{Sampler, SamplingParams};

use crate::backend::CheckBackend;

type H = *const u16;
type HM = *mut u16;

/// Build the emulation library into `dir` (once per process). `None` where no C++
/// compiler is found (or not on x86-64 Linux).
fn build(dir: &Path) -> Result<Option<PathBuf>> {
    static BUILT: OnceLock<std::result::Result<Option<PathBuf>, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| compile(dir).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn compile(dir: &Path) -> Result<Option<PathBuf>> {
    if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        return Ok(None);
    }
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if Command::new(&cxx).arg("--version").output().is_err() {
        return Ok(None);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir)?;
    // One file per process: test binaries build in parallel.
    let out = dir.join(format!("libspedec_kernel_emu-{}.so", std::process::id()));
    let status = Command::new(&cxx)
        .args([
            "-O2",
            "-std=c++20",
            "-fPIC",
            "-shared",
            "-DSPEDEC_HOST_EMU",
            "-w",
            "-include",
        ])
        .arg(here.join("emu/emu.h"))
        .arg("-I")
        .arg(here.join("../../kernels"))
        .arg(here.join("emu/launch.cpp"))
        .arg("-o")
        .arg(&out)
        .status()?;
    ensure!(
        status.success(),
        "{cxx} failed to build the kernel emulation"
    );
    Ok(Some(out))
}

/// Serialises launches (the emulation's `__shared__` state is process-wide).
static LAUNCH: Mutex<()> = Mutex::new(());

/// The CUDA kernels emulated on the host, buffers in host memory.
pub struct HostEmulator {
    lib: Arc<Library>,
    linear_kernel: LinearKernel,
    /// [`KernelBackend::prefill_attention_rows`]: [`ATT_PREFILL_ROWS`] unless a test lowers it.
    prefill_attention_rows: usize,
    /// Attention launches run so far.
    attention_launches: u64,
    /// [`KernelBackend::concurrent_branches`]; the emulation runs the branches in the
    /// order they are enqueued, and checks that forks and joins pair up.
    concurrent_branches: bool,
    on_side: bool,
    /// Forks of the side branch so far.
    side_forks: u64,
}

fn ok(code: i32, what: &str) -> Result<()> {
    if code != 0 {
        bail!("emulated {what}: deadlock (divergent __syncthreads or shuffle)");
    }
    Ok(())
}

impl HostEmulator {
    /// The emulator, its library built in `dir` on first use; `None` where no C++ compiler
    /// is found (or not on x86-64 Linux).
    pub fn new(dir: &Path) -> Result<Option<Self>> {
        let Some(path) = build(dir)? else {
            return Ok(None);
        };
        // SAFETY: a library we just built; its initialisers do nothing.
        let lib = unsafe { Library::new(&path) }
            .map_err(|e| anyhow!("loading {}: {e}", path.display()))?;
        Ok(Some(HostEmulator {
            lib: Arc::new(lib),
            linear_kernel: LinearKernel::Simt,
            prefill_attention_rows: ATT_PREFILL_ROWS,
            attention_launches: 0,
            concurrent_branches: false,
            on_side: false,
            side_forks: 0,
        }))
    }

    /// Lower (or restore) the most queries a long prompt's attention puts in one launch
    /// ([`KernelBackend::prefill_attention_rows`], 1..=[`ATT_PREFILL_ROWS`]), so a test on a
    /// tiny model crosses slice boundaries without a prompt of hundreds of tokens. An
    /// attention call of more rows (and more than a step's [`MAX_ROWS`]) then fails.
    pub fn set_prefill_attention_rows(&mut self, rows: usize) -> Result<()> {
        ensure!(
            (1..=ATT_PREFILL_ROWS).contains(&rows),
            "prefill attention rows {rows} not in 1..={ATT_PREFILL_ROWS}"
        );
        self.prefill_attention_rows = rows;
        Ok(())
    }

    /// Attention launches (`attention_f16`) emulated so far.
    pub fn attention_launches(&self) -> u64 {
        self.attention_launches
    }

    /// `positions_i32` into `pos` (checked to hold m), base null or a live i32.
    fn positions(&mut self, pos: &mut [i32], base: *const i32, start: i32, m: usize) -> Result<()> {
        let (f, _serial) = self
            .sym::<unsafe extern "C" fn(*mut i32, *const i32, i32, i32) -> i32>(
                "emu_positions_i32",
            )?;
        // SAFETY: `pos` holds m elements and `base` is null or one element (callers check).
        ok(
            unsafe { f(pos.as_mut_ptr(), base, start, m as i32) },
            "positions",
        )
    }

    /// Forks of the side branch (concurrent residual branches) so far.
    pub fn side_forks(&self) -> u64 {
        self.side_forks
    }

    /// The entry point `name` of type `T`, and the launch lock to hold while it runs.
    fn sym<T>(&self, name: &str) -> Result<(libloading::Symbol<'_, T>, MutexGuard<'static, ()>)> {
        // SAFETY: the symbol's type is given by launch.cpp's signature at each call site.
        let f = unsafe { self.lib.get(name.as_bytes())? };
        Ok((f, LAUNCH.lock().unwrap_or_else(|e| e.into_inner())))
    }
}

fn p<T>(v: &[T]) -> *const u16 {
    v.as_ptr() as *const u16
}

fn pm<T>(v: &mut [T]) -> *mut u16 {
    v.as_mut_ptr() as *mut u16
}

fn opt<T>(v: Option<&Vec<T>>) -> *const u16 {
    v.map_or(std::ptr::null(), |v| p(v))
}

impl KernelBackend for HostEmulator {
    type Buf<T: Elem> = Vec<T>;

    /// The emulation runs each launch to completion: a mark is the host clock.
    type Mark = std::time::Instant;

    fn mark(&mut self) -> Result<std::time::Instant> {
        Ok(std::time::Instant::now())
    }

    fn seconds_between(
        &mut self,
        from: &std::time::Instant,
        to: &std::time::Instant,
    ) -> Result<f64> {
        Ok(to.saturating_duration_since(*from).as_secs_f64())
    }

    fn upload<T: Elem>(&mut self, host: &[T]) -> Result<Vec<T>> {
        Ok(host.to_vec())
    }
    fn download<T: Elem>(&mut self, buf: &Vec<T>) -> Result<Vec<T>> {
        Ok(buf.clone())
    }
    fn write<T: Elem>(&mut self, host: &[T], dst: &mut Vec<T>) -> Result<()> {
        ensure!(
            host.len() <= dst.len(),
            "write of {} elements into a buffer of {}",
            host.len(),
            dst.len()
        );
        dst[..host.len()].copy_from_slice(host);
        Ok(())
    }
    fn read_into<T: Elem>(&mut self, src: &Vec<T>, dst: &mut [T]) -> Result<()> {
        ensure!(
            dst.len() <= src.len(),
            "read of {} elements from a buffer of {}",
            dst.len(),
            src.len()
        );
        dst.copy_from_slice(&src[..dst.len()]);
        Ok(())
    }
    fn synchronize(&mut self) -> Result<()> {
        Ok(())
    }
    fn prepare(&mut self, _shape: &AttnShape) -> Result<()> {
        Ok(()) // the attention scratch is made (poisoned) on every call
    }
    fn prefill_attention_rows(&self) -> usize {
        self.prefill_attention_rows
    }

    fn fill_positions(&mut self, pos: &mut Vec<i32>, start: usize, m: usize) -> Result<()> {
        ensure!(
            pos.len() >= m && i32::try_from(start + m).is_ok(),
            "positions: {m} from {start} into a buffer of {}",
            pos.len()
        );
        self.positions(pos, std::ptr::null(), start as i32, m)
    }

    fn fill_positions_at(
        &mut self,
        pos: &mut Vec<i32>,
        base: &Vec<i32>,
        offset: i32,
        m: usize,
    ) -> Result<()> {
        ensure!(
            pos.len() >= m && !base.is_empty() && m <= i32::MAX as usize,
            "positions: {m} from base + {offset} into a buffer of {}",
            pos.len()
        );
        self.positions(pos, base.as_ptr(), offset, m)
    }

    fn embedding(
        &mut self,
        ids: &Vec<u32>,
        table: &Vec<f16>,
        out: &mut Vec<f32>,
        m: usize,
        vocab: usize,
        d: usize,
    ) -> Result<()> {
        ensure!(ids.len() >= m && table.len() == vocab * d && out.len() >= m * d);
        let (f, _serial) =
            self.sym::<unsafe extern "C" fn(*const u32, H, *mut f32, i32, i32, i32) -> i32>(
                "emu_embedding_f16",
            )?;
        ok(
            unsafe {
                f(
                    ids.as_ptr(),
                    p(table),
                    out.as_mut_ptr(),
                    m as i32,
                    vocab as i32,
                    d as i32,
                )
            },
            "embedding",
        )
    }

    fn add_layernorm(
        &mut self,
        x: &mut Vec<f32>,
        add_a: Option<&Vec<f32>>,
        add_b: Option<&Vec<f32>>,
        weight: &Vec<f16>,
        bias: &Vec<f16>,
        out: &mut Vec<f16>,
        second: Option<SecondLn<'_, Self>>,
        m: usize,
        d: usize,
        eps: f32,
    ) -> Result<()> {
        ensure!(x.len() >= m * d && weight.len() == d && bias.len() == d && out.len() >= m * d);
        let (f, _serial) = self.sym::<unsafe extern "C" fn(
            *mut f32,
            *const f32,
            *const f32,
            H,
            H,
            HM,
            H,
            H,
            HM,
            i32,
            i32,
            f32,
        ) -> i32>("emu_add_layernorm_f16")?;
        let (w1, b1, o1) = match second {
            Some((w, b, o)) => (p(w), p(b), pm(o)),
            None => (std::ptr::null(), std::ptr::null(), std::ptr::null_mut()),
        };
        let r = unsafe {
            f(
                x.as_mut_ptr(),
                opt(add_a) as *const f32,
                opt(add_b) as *const f32,
                p(weight),
                p(bias),
                pm(out),
                w1,
                b1,
                o1,
                m as i32,
                d as i32,
                eps,
            )
        };
        ok(r, "add_layernorm")
    }

    fn linear_kernel(&self) -> LinearKernel {
        self.linear_kernel
    }

    fn set_linear_kernel(&mut self, kernel: LinearKernel) -> Result<()> {
        self.linear_kernel = kernel;
        Ok(())
    }

    fn concurrent_branches(&self) -> bool {
        self.concurrent_branches
    }

    fn set_concurrent_branches(&mut self, on: bool) -> Result<()> {
        self.concurrent_branches = on;
        Ok(())
    }

    fn fork_side(&mut self) -> Result<()> {
        ensure!(!self.on_side, "fork_side while on the side branch");
        self.on_side = true;
        self.side_forks += 1;
        Ok(())
    }

    fn back_to_main(&mut self) -> Result<()> {
        ensure!(self.on_side, "back_to_main while on the main branch");
        self.on_side = false;
        Ok(())
    }

    fn join_side(&mut self) -> Result<()> {
        ensure!(!self.on_side, "join_side from the side branch");
        Ok(())
    }

    fn linear(
        &mut self,
        x: &Vec<f16>,
        w: &Vec<f16>,
        bias: Option<&Vec<f16>>,
        out: LinDest<'_, Self>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        if self.linear_kernel == LinearKernel::TensorCore {
            return self.linear_tc(x, w, bias, out, m, n, k);
        }
        ensure!(
            x.len() >= m * k && w.len() == n * k && k.is_multiple_of(8) && (1..=16).contains(&m)
        );
        let (f, _serial) =
            self.sym::<unsafe extern "C" fn(H, H, H, HM, *mut f32, i32, i32, i32, i32) -> i32>(
                "emu_linear_f16",
            )?;
        let (mode, oh, of): (i32, *mut u16, *mut f32) = match out {
            LinDest::F16(o) => (0, pm(o), std::ptr::null_mut()),
            LinDest::F16Gelu(o) => (1, pm(o), std::ptr::null_mut()),
            LinDest::F32(o) => (2, std::ptr::null_mut(), o.as_mut_ptr()),
            LinDest::AddF32(o) => (3, std::ptr::null_mut(), o.as_mut_ptr()),
        };
        ok(
            unsafe {
                f(
                    p(x),
                    p(w),
                    opt(bias),
                    oh,
                    of,
                    m as i32,
                    n as i32,
                    k as i32,
                    mode,
                )
            },
            "linear",
        )
    }

    fn rotary_kv(
        &mut self,
        qkv: &Vec<f16>,
        pos: &Vec<i32>,
        q: &mut Vec<f16>,
        k_cache: &mut Vec<f16>,
        v_cache: &mut Vec<f16>,
        m: usize,
        s: &AttnShape,
    ) -> Result<()> {
        ensure!(k_cache.len() == s.cache_len() && v_cache.len() == s.cache_len());
        let (f, _serial) = self.sym::<unsafe extern "C" fn(
            H,
            *const i32,
            HM,
            HM,
            HM,
            i32,
            i32,
            i32,
            i32,
            i32,
            f32,
        ) -> i32>("emu_rotary_kv_f16")?;
        let r = unsafe {
            f(
                p(qkv),
                pos.as_ptr(),
                pm(q),
                pm(k_cache),
                pm(v_cache),
                m as i32,
                s.heads as i32,
                s.head_dim as i32,
                s.rotary_dims as i32,
                s.max_pos as i32,
                s.rotary_base,
            )
        };
        ok(r, "rotary_kv")
    }

    fn attention(
        &mut self,
        q: &Vec<f16>,
        k_cache: &Vec<f16>,
        v_cache: &Vec<f16>,
        pos: &Vec<i32>,
        out: &mut Vec<f16>,
        m: usize,
        s: &AttnShape,
    ) -> Result<()> {
        let most = self.prefill_attention_rows.max(MAX_ROWS);
        ensure!(
            k_cache.len() == s.cache_len()
                && v_cache.len() == s.cache_len()
                && (1..=most).contains(&m),
            "emulated attention of {m} rows: expected 1..={most} and a cache of {}",
            s.cache_len()
        );
        ensure!(
            q.len() >= m * s.hidden() && pos.len() >= m && out.len() >= m * s.hidden(),
            "emulated attention of {m} rows: q, pos or out too short"
        );
        let n_split = s.max_pos.div_ceil(ATT_SPLIT as usize);
        let rows = m * s.heads * n_split;
        let mut o_part: Vec<f32> = self.poisoned(rows * s.head_dim)?;
        let mut ml_part: Vec<f32> = self.poisoned(rows * 2)?;
        let mut counters = vec![0u32; m.div_ceil(ATT_MAX_M) * s.heads];
        let (f, _serial) = self.sym::<unsafe extern "C" fn(
            H,
            H,
            H,
            *const i32,
            *mut f32,
            *mut f32,
            *mut u32,
            HM,
            i32,
            i32,
            i32,
            i32,
            i32,
            f32,
        ) -> i32>("emu_attention_f16")?;
        let r = unsafe {
            f(
                p(q),
                p(k_cache),
                p(v_cache),
                pos.as_ptr(),
                o_part.as_mut_ptr(),
                ml_part.as_mut_ptr(),
                counters.as_mut_ptr(),
                pm(out),
                m as i32,
                s.heads as i32,
                s.head_dim as i32,
                s.max_pos as i32,
                n_split as i32,
                1.0 / (s.head_dim as f32).sqrt(),
            )
        };
        self.attention_launches += 1;
        ok(r, "attention")?;
        ensure!(
            counters.iter().all(|&c| c == 0),
            "emulated attention left a split counter non-zero (the next launch would combine \
             too early): {counters:?}"
        );
        Ok(())
    }

    /// A slice copy, both ranges checked.
    fn sample_process(
        &mut self,
        logits: &Vec<f32>,
        probs: &mut Vec<f32>,
        m: usize,
        vocab: usize,
        params: &SamplingParams,
    ) -> Result<()> {
        params.validate()?;
        ensure!(
            m > 0 && vocab > 0 && vocab <= i32::MAX as usize,
            "emulated sample_process: m {m}, vocab {vocab}"
        );
        ensure!(logits.len() >= m * vocab && probs.len() >= m * vocab);
        let top_k = if params.top_k >= vocab {
            0
        } else {
            params.top_k as i32
        };
        let (f, _serial) =
            self.sym::<unsafe extern "C" fn(*const f32, *mut f32, i32, i32, f32, i32, f32) -> i32>(
                "emu_sample_process_f32",
            )?;
        let r = unsafe {
            f(
                logits.as_ptr(),
                probs.as_mut_ptr(),
                m as i32,
                vocab as i32,
                params.temperature,
                top_k,
                params.top_p,
            )
        };
        ok(r, "sample_process")
    }

    fn spec_verify(
        &mut self,
        target: &Vec<f32>,
        draft: Option<&Vec<f32>>,
        drafts: &Vec<i32>,
        out: &mut Vec<i32>,
        gamma: usize,
        vocab: usize,
        seed: u64,
        counter: PhiloxAt<'_, Vec<i32>>,
    ) -> Result<()> {
        ensure!(vocab > 0 && target.len() >= (gamma + 1) * vocab);
        ensure!(draft.is_none_or(|q| q.len() >= gamma * vocab));
        ensure!(drafts.len() >= gamma && out.len() >= gamma + 2);
        let (f, _serial) = self.sym::<unsafe extern "C" fn(
            *const f32,
            *const f32,
            *const i32,
            *mut i32,
            i32,
            i32,
            i32,
            u64,
            *const i32,
            u32,
            u32,
        ) -> i32>("emu_spec_verify_f32")?;
        let q = draft.map_or(std::ptr::null(), |q| q.as_ptr());
        let (state, position, index) = counter_args(counter)?;
        let r = unsafe {
            f(
                target.as_ptr(),
                q,
                drafts.as_ptr(),
                out.as_mut_ptr(),
                gamma as i32,
                vocab as i32,
                i32::from(draft.is_none()),
                seed,
                state,
                position,
                index,
            )
        };
        ok(r, "spec_verify")
    }

    fn sample_pick(
        &mut self,
        logits: &Vec<f32>,
        row: usize,
        probs: Option<(&mut Vec<f32>, usize)>,
        dest: PickDest<'_, Self>,
        vocab: usize,
        sampler: &Sampler,
        seed: u64,
        stream: Stream,
        counter: PhiloxAt<'_, Vec<i32>>,
    ) -> Result<()> {
        ensure!(
            vocab > 0 && vocab <= i32::MAX as usize,
            "emulated sample_pick: vocab {vocab}"
        );
        let (state, position, index) = counter_args(counter)?;
        let row_at = |what: &str, len: usize, r: usize| -> Result<usize> {
            r.checked_mul(vocab)
                .filter(|&s| s.checked_add(vocab).is_some_and(|e| e <= len))
                .ok_or_else(|| {
                    anyhow!("sample_pick {what}: row {r} of {vocab} outside a buffer of {len}")
                })
        };
        let elem_at = |what: &str, len: usize, at: usize| -> Result<usize> {
            ensure!(
                at < len,
                "sample_pick {what}: element {at} outside a buffer of {len}"
            );
            Ok(at)
        };
        let l_at = row_at("logits", logits.len(), row)?;
        let (greedy, temperature, top_k, top_p) = match sampler {
            Sampler::Greedy => (1, 1.0, 0, 1.0),
            Sampler::Random(p) => {
                p.validate()?;
                let k = if p.top_k >= vocab { 0 } else { p.top_k as i32 };
                (0, p.temperature, k, p.top_p)
            }
        };
        let probs_ptr = match (probs, greedy) {
            (_, 1) => std::ptr::null_mut(),
            (Some((buf, r)), _) => {
                let at = row_at("probs", buf.len(), r)?;
                // SAFETY: row `r` lies in the buffer (checked above).
                unsafe { buf.as_mut_ptr().add(at) }
            }
            (None, _) => bail!("sample_pick: random sampling needs a probs row"),
        };
        let t_at = elem_at("token", dest.token.0.len(), dest.token.1)?;
        let in_ptr = |d: Option<(&mut Vec<u32>, usize)>, what: &str| -> Result<*mut u32> {
            Ok(match d {
                Some((buf, at)) => {
                    let at = elem_at(what, buf.len(), at)?;
                    // SAFETY: element `at` lies in the buffer (checked above).
                    unsafe { buf.as_mut_ptr().add(at) }
                }
                None => std::ptr::null_mut(),
            })
        };
        let d_ptr = in_ptr(dest.draft_input, "draft_input")?;
        let v_ptr = in_ptr(dest.verify_input, "verify_input")?;
        type F = unsafe extern "C" fn(
            *const f32,
            *mut f32,
            *mut i32,
            *mut u32,
            *mut u32,
            i32,
            i32,
            f32,
            i32,
            f32,
            u64,
            *const i32,
            u32,
            u32,
            u32,
        ) -> i32;
        let (f, _serial) = self.sym::<F>("emu_sample_pick_f32")?;
        // SAFETY: every pointer addresses checked elements of a live, distinct buffer.
        let r = unsafe {
            f(
                logits.as_ptr().add(l_at),
                probs_ptr,
                dest.token.0.as_mut_ptr().add(t_at),
                d_ptr,
                v_ptr,
                vocab as i32,
                greedy,
                temperature,
                top_k,
                top_p,
                seed,
                state,
                position,
                stream.id(),
                index,
            )
        };
        ok(r, "sample_pick")
    }
}

/// The kernel arguments of a counter: the state (or null), the position (or the offset to
/// the state's base, as u32) and the index (0 with a state).
fn counter_args(counter: PhiloxAt<'_, Vec<i32>>) -> Result<(*const i32, u32, u32)> {
    Ok(match counter {
        PhiloxAt::Host { position, index } => (std::ptr::null(), position, index),
        PhiloxAt::Device { state, offset } => {
            ensure!(
                state.len() >= 2,
                "Philox step state: needs 2 elements, got {}",
                state.len()
            );
            (state.as_ptr(), offset as u32, 0)
        }
    })
}

impl HostEmulator {
    /// The tensor-core linear (`linear_tc.cu`) with the launches of `spedec_cuda::linear_tc`'s
    /// plan. The partials scratch is the smallest the plan accepts (one 128-row chunk), so
    /// more than 128 rows run as several launches, as on a GPU with a full scratch; it starts
    /// as NaN, so an unwritten partial shows, and the counters must come back zero.
    #[allow(clippy::too_many_arguments)]
    fn linear_tc(
        &mut self,
        x: &[f16],
        w: &[f16],
        bias: Option<&Vec<f16>>,
        out: LinDest<'_, Self>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        ensure!(
            m > 0 && x.len() >= m * k && w.len() == n * k && k.is_multiple_of(8),
            "emulated linear_tc: bad shapes m {m} n {n} k {k}"
        );
        ensure!(
            bias.is_none_or(|b| b.len() == n),
            "emulated linear_tc: bias length"
        );
        let split = linear_tc::split_for(n, k);
        let rows = m.min(LTC128_BM);
        let mut part: Vec<f32> = vec![f32::NAN; split.splits * n * rows];
        let mut counters = vec![0u32; n.div_ceil(16) * rows.div_ceil(16)];
        let (_, launches) = linear_tc::plan(m, n, k, part.len(), counters.len())?;
        let (mode, oh, of, out_len): (i32, *mut u16, *mut f32, usize) = match out {
            LinDest::F16(o) => (0, pm(o), std::ptr::null_mut(), o.len()),
            LinDest::F16Gelu(o) => (1, pm(o), std::ptr::null_mut(), o.len()),
            LinDest::F32(o) => (2, std::ptr::null_mut(), o.as_mut_ptr(), o.len()),
            LinDest::AddF32(o) => (3, std::ptr::null_mut(), o.as_mut_ptr(), o.len()),
        };
        ensure!(out_len >= m * n, "emulated linear_tc: output too short");
        type F = unsafe extern "C" fn(
            H,
            H,
            H,
            HM,
            *mut f32,
            *mut f32,
            *mut u32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
        ) -> i32;
        let (f, _serial) = self.sym::<F>("emu_linear_tc_f16")?;
        for l in &launches {
            // SAFETY: pointers into buffers checked above (rows row0..row0+rows of x and out).
            let r = unsafe {
                f(
                    p(x).add(l.row0 * k),
                    p(w),
                    opt(bias),
                    if oh.is_null() { oh } else { oh.add(l.row0 * n) },
                    if of.is_null() { of } else { of.add(l.row0 * n) },
                    part.as_mut_ptr(),
                    counters.as_mut_ptr(),
                    l.rows as i32,
                    n as i32,
                    k as i32,
                    split.tiles_per_split as i32,
                    split.splits as i32,
                    l.wide as i32,
                    mode,
                )
            };
            ok(r, "linear_tc")?;
            ensure!(
                counters.iter().all(|&c| c == 0),
                "emulated linear_tc: tile counters not reset after a launch"
            );
        }
        Ok(())
    }
}

impl CheckBackend for HostEmulator {
    fn timed(&self) -> bool {
        false
    }
    fn poison<T: Elem>(&mut self, buf: &mut Vec<T>) -> Result<()> {
        // SAFETY: every Elem type accepts any bit pattern.
        unsafe { std::ptr::write_bytes(buf.as_mut_ptr(), 0xff, buf.len()) };
        Ok(())
    }
    fn poison_attention_scratch(&mut self, _shape: &AttnShape) -> Result<()> {
        Ok(()) // fresh poisoned scratch on every call
    }

    fn argmax(
        &mut self,
        logits: &Vec<f32>,
        out: &mut Vec<u32>,
        m: usize,
        vocab: usize,
    ) -> Result<()> {
        ensure!(logits.len() >= m * vocab && out.len() >= m);
        let (f, _serial) = self
            .sym::<unsafe extern "C" fn(*const f32, *mut u32, i32, i32) -> i32>("emu_argmax_f32")?;
        ok(
            unsafe { f(logits.as_ptr(), out.as_mut_ptr(), m as i32, vocab as i32) },
            "argmax",
        )
    }

    fn softmax(
        &mut self,
        logits: &Vec<f32>,
        probs: &mut Vec<f32>,
        m: usize,
        vocab: usize,
        temperature: f32,
    ) -> Result<()> {
        ensure!(logits.len() >= m * vocab && probs.len() >= m * vocab);
        let (f, _serial) = self
            .sym::<unsafe extern "C" fn(*const f32, *mut f32, i32, i32, f32) -> i32>(
                "emu_softmax_f32",
            )?;
        ok(
            unsafe {
                f(
                    logits.as_ptr(),
                    probs.as_mut_ptr(),
                    m as i32,
                    vocab as i32,
                    1.0 / temperature,
                )
            },
            "softmax",
        )
    }

    fn read_probe(&mut self, buf: &Vec<f16>, sums: &mut Vec<u32>, blocks: usize) -> Result<()> {
        let n_vec = spedec_cuda::probe::probe_vectors(buf.len())?;
        ensure!(
            blocks > 0 && blocks <= i32::MAX as usize && sums.len() >= blocks,
            "read_probe: {blocks} blocks into {} sums",
            sums.len()
        );
        // A Vec<f16> is only 2-byte aligned; the kernel reads 16-byte vectors.
        let mut words = vec![[0u32; 4]; n_vec as usize];
        for (w, v) in words.iter_mut().zip(buf.chunks_exact(8)) {
            for (j, x) in w.iter_mut().enumerate() {
                *x = u32::from(v[2 * j].to_bits()) | (u32::from(v[2 * j + 1].to_bits()) << 16);
            }
        }
        let (f, _serial) = self
            .sym::<unsafe extern "C" fn(*const [u32; 4], u64, *mut u32, i32) -> i32>(
                "emu_read_probe_f16",
            )?;
        ok(
            unsafe { f(words.as_ptr(), n_vec, sums.as_mut_ptr(), blocks as i32) },
            "read_probe",
        )
    }
}

/// The device sampler (`kernels/sampling.cu`) under emulation, with the launch shapes of
/// `spedec_cuda::sampling_ops`.
impl crate::sampler::SamplerBackend for HostEmulator {
    fn sample_draw(
        &mut self,
        probs: &Vec<f32>,
        out: &mut Vec<i32>,
        m: usize,
        vocab: usize,
        seed: u64,
        position: u32,
        stream: spedec_sampling::philox::Stream,
        index: u32,
    ) -> Result<()> {
        ensure!(m > 0 && vocab > 0 && probs.len() >= m * vocab && out.len() >= m);
        let (f, _serial) = self.sym::<unsafe extern "C" fn(
            *const f32,
            *mut i32,
            i32,
            i32,
            u64,
            u32,
            u32,
            u32,
        ) -> i32>("emu_sample_draw_f32")?;
        let r = unsafe {
            f(
                probs.as_ptr(),
                out.as_mut_ptr(),
                m as i32,
                vocab as i32,
                seed,
                position,
                stream.id(),
                index,
            )
        };
        ok(r, "sample_draw")
    }

    fn philox(
        &mut self,
        seed: u64,
        position: u32,
        stream: spedec_sampling::philox::Stream,
        index: u32,
        words: &mut Vec<u32>,
        uniforms: &mut Vec<f32>,
        n: usize,
    ) -> Result<()> {
        ensure!(n > 0 && words.len() >= 4 * n && uniforms.len() >= n);
        let (f, _serial) =
            self.sym::<unsafe extern "C" fn(u64, u32, u32, u32, *mut u32, *mut f32, i32) -> i32>(
                "emu_philox_uniform_f32",
            )?;
        let r = unsafe {
            f(
                seed,
                position,
                stream.id(),
                index,
                words.as_mut_ptr(),
                uniforms.as_mut_ptr(),
                n as i32,
            )
        };
        ok(r, "philox_uniform")
    }
}
