//! Typed launchers: one method per kernel entry point, with shape, length and alignment
//! checks that return errors (never panic) before anything is enqueued.
//!
//! Buffers are passed as `&dyn DevicePtr<T>` (read) and `&mut dyn DevicePtrMut<T>` (write),
//! so `CudaSlice`, `CudaView` and `CudaViewMut` all work. Activation buffers may be longer
//! than needed (scratch sized for the largest M); weights must have their exact length.
//! All launches go on [`GpuContext::stream`]; nothing synchronises.

use anyhow::{anyhow, bail, ensure, Result};
use cudarc::driver::{
    CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg, SyncOnDrop,
};
use half::f16;

use crate::context::GpuContext;
use crate::kernels::consts::*;

/// A read-only device buffer.
pub type In<'a, T> = &'a dyn DevicePtr<T>;
/// A written device buffer.
pub type Out<'a, T> = &'a mut dyn DevicePtrMut<T>;

/// Where a [`GpuContext::linear_f16`] writes, and how.
pub enum LinearOut<'a> {
    /// f16 [M, N] = x·Wᵀ + b
    F16(Out<'a, f16>),
    /// f16 [M, N] = gelu(x·Wᵀ + b) (exact erf GELU)
    F16Gelu(Out<'a, f16>),
    /// f32 [M, N] = x·Wᵀ + b (logits)
    F32(Out<'a, f32>),
    /// f32 [M, N] += x·Wᵀ + b (residual stream)
    AddF32(Out<'a, f32>),
}

/// One LayerNorm of [`GpuContext::add_layernorm_f16`]: f16 weight and bias \[d\], f16 output
/// [M, d].
pub struct LayerNormOut<'a> {
    /// f16 \[d\]
    pub weight: In<'a, f16>,
    /// f16 \[d\]
    pub bias: In<'a, f16>,
    /// f16 [M, d]
    pub out: Out<'a, f16>,
}

/// Attention geometry of one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnShape {
    /// Number of heads H.
    pub heads: usize,
    /// Head dimension hd (multiple of 8, at most 128).
    pub head_dim: usize,
    /// Rotary dims per head (even, at most hd): `head_dim * rotary_pct`.
    pub rotary_dims: usize,
    /// Rotary base (10000 for Pythia).
    pub rotary_base: f32,
    /// KV-cache capacity in positions.
    pub max_pos: usize,
}

impl AttnShape {
    /// d = H · hd.
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Number of key splits of the attention kernel (fixed by the capacity, not by M).
    pub fn n_split(&self) -> usize {
        self.max_pos.div_ceil(ATT_SPLIT as usize)
    }

    /// Elements of one layer's K (or V) cache: H · max_pos · hd.
    pub fn cache_len(&self) -> usize {
        self.heads * self.max_pos * self.head_dim
    }

    fn validate(&self) -> Result<()> {
        ensure!(self.heads > 0, "attention: zero heads");
        ensure!(
            self.head_dim > 0 && self.head_dim % 8 == 0 && self.head_dim <= ATT_MAX_HD,
            "attention: head_dim {} must be a multiple of 8 in 8..={ATT_MAX_HD}",
            self.head_dim
        );
        ensure!(
            self.rotary_dims % 2 == 0 && self.rotary_dims <= self.head_dim,
            "rotary_dims {} must be even and <= head_dim {}",
            self.rotary_dims,
            self.head_dim
        );
        ensure!(
            self.max_pos > 0 && self.max_pos <= i32::MAX as usize / 2,
            "max_pos {} out of range",
            self.max_pos
        );
        ensure!(
            self.rotary_base.is_finite() && self.rotary_base > 0.0,
            "rotary_base must be positive"
        );
        Ok(())
    }
}

/// Most queries one [`GpuContext::attention_f16`] call takes (the scratch's row bound for a
/// long prompt's attention): a launch covers up to 16 chunks of 16 queries. At a
/// capacity of 2,048 positions (16 splits) with 32 heads of 80 dims the f32 scratch is
/// 256·32·16·80·4 ≈ 42 MB.
pub const ATT_PREFILL_ROWS: usize = 256;

/// Scratch for the split attention: the per-split partial results, and the counters that
/// tell the last split of a (query chunk, head) to combine them.
pub struct AttnScratch {
    /// f32 [max_m, H, n_split, hd]
    o_part: CudaSlice<f32>,
    /// f32 [max_m, H, n_split, 2]
    ml_part: CudaSlice<f32>,
    /// u32 [ceil(max_m / 16), H], zero between launches
    counters: CudaSlice<u32>,
    max_m: usize,
    shape: AttnShape,
}

impl AttnScratch {
    /// Scratch for up to `max_m` (<= [`ATT_PREFILL_ROWS`]) queries of `shape`: 16 for a
    /// step, more for a long prompt's attention.
    pub fn new(gpu: &GpuContext, shape: &AttnShape, max_m: usize) -> Result<Self> {
        shape.validate()?;
        ensure!(
            (1..=ATT_PREFILL_ROWS).contains(&max_m),
            "attention scratch: max_m {max_m} not in 1..={ATT_PREFILL_ROWS}"
        );
        let rows = max_m * shape.heads * shape.n_split();
        Ok(Self {
            o_part: gpu.zeros(rows * shape.head_dim)?,
            ml_part: gpu.zeros(rows * 2)?,
            counters: gpu.zeros(max_m.div_ceil(ATT_MAX_M) * shape.heads)?,
            max_m,
            shape: *shape,
        })
    }

    /// The geometry this scratch was made for.
    pub fn shape(&self) -> &AttnShape {
        &self.shape
    }

    /// Most queries one attention call with this scratch takes.
    pub fn max_m(&self) -> usize {
        self.max_m
    }

    /// The two partial buffers (o, ml), e.g. to poison them in checks.
    pub fn buffers_mut(&mut self) -> (&mut CudaSlice<f32>, &mut CudaSlice<f32>) {
        (&mut self.o_part, &mut self.ml_part)
    }
}

fn check_len<T>(what: &str, buf: &dyn DevicePtr<T>, need: usize, exact: bool) -> Result<()> {
    let have = buf.len();
    if exact && have != need {
        bail!("{what}: expected exactly {need} elements, got {have}");
    }
    if have < need {
        bail!("{what}: needs at least {need} elements, got {have}");
    }
    Ok(())
}

fn check_len_mut<T>(what: &str, buf: &dyn DevicePtrMut<T>, need: usize) -> Result<()> {
    let have = buf.len();
    if have < need {
        bail!("{what}: needs at least {need} elements, got {have}");
    }
    Ok(())
}

fn check_rows(what: &str, m: usize, max: usize) -> Result<()> {
    ensure!(
        (1..=max).contains(&m),
        "{what}: M = {m} rows, expected 1..={max}"
    );
    Ok(())
}

pub(crate) fn to_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| anyhow!("{what} = {v} does not fit in i32"))
}

pub(crate) fn to_u32(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| anyhow!("{what} = {v} does not fit in u32"))
}

pub(crate) fn launch_err(
    kernel: &str,
) -> impl FnOnce(cudarc::driver::DriverError) -> anyhow::Error + '_ {
    move |e| anyhow!("launching {kernel}: {e:?}")
}

pub(crate) const NULL: u64 = 0;

/// The address of an optional read buffer (null when absent) and the guard that orders its
/// use on stream `s`.
pub(crate) fn opt_ptr<'a, T>(
    buf: Option<In<'a, T>>,
    s: &'a CudaStream,
) -> (u64, Option<SyncOnDrop<'a>>) {
    match buf {
        Some(b) => {
            let (p, g) = b.device_ptr(s);
            (p, Some(g))
        }
        None => (NULL, None),
    }
}

/// [`opt_ptr`] for a written buffer.
pub(crate) fn opt_ptr_mut<'a, T>(
    buf: Option<&'a mut dyn DevicePtrMut<T>>,
    s: &'a CudaStream,
) -> (u64, Option<SyncOnDrop<'a>>) {
    match buf {
        Some(b) => {
            let (p, g) = b.device_ptr_mut(s);
            (p, Some(g))
        }
        None => (NULL, None),
    }
}

impl GpuContext {
    /// Token embedding gather into the f32 residual stream.
    ///
    /// ids: u32 \[m\] (device), table: f16 [vocab, d] (exact), out: f32 [m, d].
    /// An id >= vocab yields a NaN row (ids live on the device, so they are not checked here).
    pub fn embedding_f16(
        &self,
        ids: In<u32>,
        table: In<f16>,
        out: Out<f32>,
        m: usize,
        vocab: usize,
        d: usize,
    ) -> Result<()> {
        check_rows("embedding_f16", m, i32::MAX as usize)?;
        ensure!(d > 0 && vocab > 0, "embedding_f16: empty table");
        check_len("embedding_f16 ids", ids, m, false)?;
        check_len("embedding_f16 table", table, vocab * d, true)?;
        check_len_mut("embedding_f16 out", out, m * d)?;
        let (vocab_i, d_i) = (to_i32("vocab", vocab)?, to_i32("d", d)?);
        let cfg = LaunchConfig {
            grid_dim: (to_u32("m", m)?, 1, 1),
            block_dim: (EMB_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("embedding_f16")?;
        let s = self.stream();
        let (p_ids, _g0) = ids.device_ptr(s);
        let (p_tab, _g1) = table.device_ptr(s);
        let (p_out, _g2) = out.device_ptr_mut(s);
        let mut b = s.launch_builder(f);
        b.arg(&p_ids)
            .arg(&p_tab)
            .arg(&p_out)
            .arg(&vocab_i)
            .arg(&d_i);
        // SAFETY: argument list matches embedding.cu; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(launch_err("embedding_f16"))?;
        Ok(())
    }

    /// pos i32 \[m\] = b + start, b + start + 1, …: a step's positions by a launch, so that
    /// no host copy makes the stream wait; b = `base`\[0\] read when the launch runs (a
    /// recorded chain replays at new positions), or 0. grid 1 × `EMB_THREADS`.
    pub fn positions_i32(
        &self,
        pos: Out<i32>,
        base: Option<In<i32>>,
        start: i32,
        m: usize,
    ) -> Result<()> {
        check_rows("positions_i32", m, i32::MAX as usize)?;
        check_len_mut("positions_i32 pos", pos, m)?;
        if let Some(b) = base {
            check_len("positions_i32 base", b, 1, false)?;
        } else {
            ensure!(
                start >= 0 && start.checked_add(m as i32).is_some(),
                "positions {start}.. + {m} do not fit i32"
            );
        }
        let (start_i, m_i) = (start, to_i32("m", m)?);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (EMB_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("positions_i32")?;
        let s = self.stream();
        let (p_pos, _g0) = pos.device_ptr_mut(s);
        let (p_base, _g1) = opt_ptr(base, s);
        let mut b = s.launch_builder(f);
        b.arg(&p_pos).arg(&p_base).arg(&start_i).arg(&m_i);
        // SAFETY: argument list matches embedding.cu; the length is checked above.
        unsafe { b.launch(cfg) }.map_err(launch_err("positions_i32"))?;
        Ok(())
    }

    /// Residual add fused with one or two LayerNorms over the f32 residual stream:
    /// `x = (x + add_a) + add_b` (adds optional, f32 [m, d]), then `first.out = LN(x)` and,
    /// if given, `second.out = LN'(x)` (Pythia's ln1 and ln2 of the same x).
    ///
    /// x: f32 [m, d] (updated in place when an add is given).
    #[allow(clippy::too_many_arguments)]
    pub fn add_layernorm_f16(
        &self,
        x: Out<f32>,
        add_a: Option<In<f32>>,
        add_b: Option<In<f32>>,
        first: LayerNormOut,
        second: Option<LayerNormOut>,
        m: usize,
        d: usize,
        eps: f32,
    ) -> Result<()> {
        check_rows("add_layernorm_f16", m, i32::MAX as usize)?;
        ensure!(d > 0, "add_layernorm_f16: d = 0");
        ensure!(
            eps >= 0.0 && eps.is_finite(),
            "add_layernorm_f16: bad eps {eps}"
        );
        check_len_mut("add_layernorm_f16 x", x, m * d)?;
        if let Some(a) = add_a {
            check_len("add_layernorm_f16 add_a", a, m * d, false)?;
        }
        if let Some(a) = add_b {
            check_len("add_layernorm_f16 add_b", a, m * d, false)?;
        }
        check_len("add_layernorm_f16 weight", first.weight, d, true)?;
        check_len("add_layernorm_f16 bias", first.bias, d, true)?;
        check_len_mut("add_layernorm_f16 out", first.out, m * d)?;
        if let Some(sec) = &second {
            check_len("add_layernorm_f16 second weight", sec.weight, d, true)?;
            check_len("add_layernorm_f16 second bias", sec.bias, d, true)?;
            check_len_mut("add_layernorm_f16 second out", sec.out, m * d)?;
        }
        let d_i = to_i32("d", d)?;
        let cfg = LaunchConfig {
            grid_dim: (to_u32("m", m)?, 1, 1),
            block_dim: (LN_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("add_layernorm_f16")?;
        let s = self.stream();
        let (p_x, _gx) = x.device_ptr_mut(s);
        let (p_a, _ga) = match add_a {
            Some(a) => {
                let (p, g) = a.device_ptr(s);
                (p, Some(g))
            }
            None => (NULL, None),
        };
        let (p_b, _gb) = match add_b {
            Some(a) => {
                let (p, g) = a.device_ptr(s);
                (p, Some(g))
            }
            None => (NULL, None),
        };
        let LayerNormOut { weight, bias, out } = first;
        let (p_w0, _g0) = weight.device_ptr(s);
        let (p_b0, _g1) = bias.device_ptr(s);
        let (p_o0, _g2) = out.device_ptr_mut(s);
        let mut guards = Vec::new();
        let (p_w1, p_b1, p_o1) = match second {
            Some(LayerNormOut { weight, bias, out }) => {
                let (w, g0) = weight.device_ptr(s);
                let (b, g1) = bias.device_ptr(s);
                let (o, g2) = out.device_ptr_mut(s);
                guards.extend([g0, g1, g2]);
                (w, b, o)
            }
            None => (NULL, NULL, NULL),
        };
        let mut b = s.launch_builder(f);
        b.arg(&p_x)
            .arg(&p_a)
            .arg(&p_b)
            .arg(&p_w0)
            .arg(&p_b0)
            .arg(&p_o0)
            .arg(&p_w1)
            .arg(&p_b1)
            .arg(&p_o1)
            .arg(&d_i)
            .arg(&eps);
        // SAFETY: argument list matches layernorm.cu; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(launch_err("add_layernorm_f16"))?;
        drop(guards);
        Ok(())
    }

    /// Skinny matrix product for m <= 16 rows: `out = x · Wᵀ + bias` with the epilogue chosen
    /// by `out` (f16, f16 + GELU, f32, or f32 accumulate).
    ///
    /// x: f16 [m, k], w: f16 [n, k] (exact), bias: f16 \[n\] (exact) or none.
    /// k must be a multiple of 8 and x, w 16-byte aligned (16-byte loads).
    /// Batch invariant: a row's result does not depend on m.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_f16(
        &self,
        x: In<f16>,
        w: In<f16>,
        bias: Option<In<f16>>,
        out: LinearOut,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        check_rows("linear_f16", m, LIN_MAX_M)?;
        ensure!(n > 0, "linear_f16: n = 0");
        ensure!(
            k > 0 && k % 8 == 0,
            "linear_f16: k = {k} must be a positive multiple of 8"
        );
        check_len("linear_f16 x", x, m * k, false)?;
        check_len("linear_f16 weight", w, n * k, true)?;
        if let Some(b) = bias {
            check_len("linear_f16 bias", b, n, true)?;
        }
        let (mode, out_h, out_f): (i32, Option<Out<f16>>, Option<Out<f32>>) = match out {
            LinearOut::F16(o) => (0, Some(o), None),
            LinearOut::F16Gelu(o) => (1, Some(o), None),
            LinearOut::F32(o) => (2, None, Some(o)),
            LinearOut::AddF32(o) => (3, None, Some(o)),
        };
        if let Some(o) = &out_h {
            check_len_mut("linear_f16 out", &**o, m * n)?;
        }
        if let Some(o) = &out_f {
            check_len_mut("linear_f16 out", &**o, m * n)?;
        }
        let (m_i, n_i, k_i) = (to_i32("m", m)?, to_i32("n", n)?, to_i32("k", k)?);
        to_i32("n * k", n * k)?;
        let cfg = LaunchConfig {
            grid_dim: (to_u32("blocks", n.div_ceil(LIN_COLS as usize))?, 1, 1),
            block_dim: (LIN_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("linear_f16")?;
        let s = self.stream();
        let (p_x, _gx) = x.device_ptr(s);
        let (p_w, _gw) = w.device_ptr(s);
        ensure!(
            p_x % 16 == 0 && p_w % 16 == 0,
            "linear_f16: x and weight must be 16-byte aligned"
        );
        let (p_b, _gb) = opt_ptr(bias, s);
        let (p_oh, _goh) = opt_ptr_mut(out_h, s);
        let (p_of, _gof) = opt_ptr_mut(out_f, s);
        let mut b = s.launch_builder(f);
        b.arg(&p_x)
            .arg(&p_w)
            .arg(&p_b)
            .arg(&p_oh)
            .arg(&p_of)
            .arg(&m_i)
            .arg(&n_i)
            .arg(&k_i)
            .arg(&mode);
        // SAFETY: argument list matches linear.cu; lengths and alignment checked above.
        unsafe { b.launch(cfg) }.map_err(launch_err("linear_f16"))?;
        Ok(())
    }

    /// Partial rotary embedding fused with the KV-cache write, for one layer.
    ///
    /// qkv: f16 [m, H, 3, hd] (per head q|k|v), pos: i32 \[m\] (device), q_out: f16 [m, H, hd],
    /// k_cache / v_cache: f16 [H, max_pos, hd] (exact: one layer's cache).
    /// Row r's k and v land at position pos\[r\]; a position outside [0, max_pos) writes
    /// nothing and makes that q row NaN.
    #[allow(clippy::too_many_arguments)]
    pub fn rotary_kv_f16(
        &self,
        qkv: In<f16>,
        pos: In<i32>,
        q_out: Out<f16>,
        k_cache: Out<f16>,
        v_cache: Out<f16>,
        m: usize,
        shape: &AttnShape,
    ) -> Result<()> {
        shape.validate()?;
        check_rows("rotary_kv_f16", m, u16::MAX as usize)?;
        let (h, hd) = (shape.heads, shape.head_dim);
        check_len("rotary_kv_f16 qkv", qkv, m * h * 3 * hd, false)?;
        check_len("rotary_kv_f16 pos", pos, m, false)?;
        check_len_mut("rotary_kv_f16 q_out", q_out, m * h * hd)?;
        ensure!(
            k_cache.len() == shape.cache_len() && v_cache.len() == shape.cache_len(),
            "rotary_kv_f16: k/v cache must hold exactly H·max_pos·hd = {} elements (got {}, {})",
            shape.cache_len(),
            k_cache.len(),
            v_cache.len()
        );
        let cfg = LaunchConfig {
            grid_dim: (to_u32("heads", h)?, to_u32("m", m)?, 1),
            block_dim: (hd.div_ceil(32) as u32 * 32, 1, 1),
            shared_mem_bytes: 0,
        };
        let (h_i, hd_i) = (to_i32("heads", h)?, to_i32("head_dim", hd)?);
        let rot_i = to_i32("rotary_dims", shape.rotary_dims)?;
        let mp_i = to_i32("max_pos", shape.max_pos)?;
        to_i32("cache", shape.cache_len())?;
        let base = shape.rotary_base;
        let f = self.function("rotary_kv_f16")?;
        let s = self.stream();
        let (p_qkv, _g0) = qkv.device_ptr(s);
        let (p_pos, _g1) = pos.device_ptr(s);
        let (p_q, _g2) = q_out.device_ptr_mut(s);
        let (p_k, _g3) = k_cache.device_ptr_mut(s);
        let (p_v, _g4) = v_cache.device_ptr_mut(s);
        let mut b = s.launch_builder(f);
        b.arg(&p_qkv)
            .arg(&p_pos)
            .arg(&p_q)
            .arg(&p_k)
            .arg(&p_v)
            .arg(&h_i)
            .arg(&hd_i)
            .arg(&rot_i)
            .arg(&mp_i)
            .arg(&base);
        // SAFETY: argument list matches rotary.cu; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(launch_err("rotary_kv_f16"))?;
        Ok(())
    }

    /// Causal attention of m queries (up to the scratch's rows, at most [`ATT_PREFILL_ROWS`])
    /// over one layer's KV cache in one launch, split over the keys in fixed blocks of 128
    /// positions and over the queries in chunks of 16, the last split of each (chunk, head)
    /// combining the splits in split order; scale 1/sqrt(hd).
    ///
    /// q: f16 [m, H, hd], k_cache / v_cache: f16 [H, max_pos, hd] (exact), pos: i32 \[m\]
    /// (query r sees keys 0..=pos\[r\]), out: f16 [m, H·hd].
    /// Batch invariant: a query's output does not depend on m or on the other queries.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_f16(
        &self,
        q: In<f16>,
        k_cache: In<f16>,
        v_cache: In<f16>,
        pos: In<i32>,
        scratch: &mut AttnScratch,
        out: Out<f16>,
        m: usize,
        shape: &AttnShape,
    ) -> Result<()> {
        shape.validate()?;
        check_rows("attention_f16", m, ATT_PREFILL_ROWS)?;
        ensure!(
            scratch.shape == *shape && m <= scratch.max_m,
            "attention_f16: scratch was made for {:?} and up to {} rows",
            scratch.shape,
            scratch.max_m
        );
        let (h, hd) = (shape.heads, shape.head_dim);
        check_len("attention_f16 q", q, m * h * hd, false)?;
        check_len("attention_f16 k_cache", k_cache, shape.cache_len(), true)?;
        check_len("attention_f16 v_cache", v_cache, shape.cache_len(), true)?;
        check_len("attention_f16 pos", pos, m, false)?;
        check_len_mut("attention_f16 out", out, m * h * hd)?;
        to_i32("cache", shape.cache_len())?;
        let n_split = shape.n_split();
        let (m_i, h_i, hd_i) = (
            to_i32("m", m)?,
            to_i32("heads", h)?,
            to_i32("head_dim", hd)?,
        );
        let (mp_i, ns_i) = (
            to_i32("max_pos", shape.max_pos)?,
            to_i32("n_split", n_split)?,
        );
        let scale = 1.0f32 / (hd as f32).sqrt();
        let s = self.stream();

        let f = self.function("attention_f16")?;
        let cfg = LaunchConfig {
            grid_dim: (
                to_u32("n_split", n_split)?,
                to_u32("heads", h)?,
                to_u32("query chunks", m.div_ceil(ATT_MAX_M))?,
            ),
            block_dim: (ATT_SPLIT, 1, 1),
            shared_mem_bytes: 0,
        };
        let (p_q, _g0) = q.device_ptr(s);
        let (p_k, _g1) = k_cache.device_ptr(s);
        let (p_v, _g2) = v_cache.device_ptr(s);
        let (p_pos, _g3) = pos.device_ptr(s);
        ensure!(
            p_k % 16 == 0 && p_v % 16 == 0,
            "attention_f16: k/v cache must be 16-byte aligned"
        );
        let (p_o, _g4) = scratch.o_part.device_ptr_mut(s);
        let (p_ml, _g5) = scratch.ml_part.device_ptr_mut(s);
        let (p_c, _g6) = scratch.counters.device_ptr_mut(s);
        let (p_out, _g7) = out.device_ptr_mut(s);
        let mut b = s.launch_builder(f);
        b.arg(&p_q)
            .arg(&p_k)
            .arg(&p_v)
            .arg(&p_pos)
            .arg(&p_o)
            .arg(&p_ml)
            .arg(&p_c)
            .arg(&p_out)
            .arg(&m_i)
            .arg(&h_i)
            .arg(&hd_i)
            .arg(&mp_i)
            .arg(&ns_i)
            .arg(&scale);
        // SAFETY: argument list matches attention.cu; lengths checked above, the counters
        // hold ceil(max_m / 16) · H >= the grid's chunks · H.
        unsafe { b.launch(cfg) }.map_err(launch_err("attention_f16"))?;
        Ok(())
    }

    /// Greedy token per row: logits f32 [m, vocab] → out u32 \[m\] (first index on ties).
    pub fn argmax_f32(&self, logits: In<f32>, out: Out<u32>, m: usize, vocab: usize) -> Result<()> {
        check_rows("argmax_f32", m, i32::MAX as usize)?;
        ensure!(vocab > 0, "argmax_f32: empty vocabulary");
        check_len("argmax_f32 logits", logits, m * vocab, false)?;
        check_len_mut("argmax_f32 out", out, m)?;
        let v_i = to_i32("vocab", vocab)?;
        let cfg = LaunchConfig {
            grid_dim: (to_u32("m", m)?, 1, 1),
            block_dim: (VOCAB_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("argmax_f32")?;
        let s = self.stream();
        let (p_l, _g0) = logits.device_ptr(s);
        let (p_o, _g1) = out.device_ptr_mut(s);
        let mut b = s.launch_builder(f);
        b.arg(&p_l).arg(&p_o).arg(&v_i);
        // SAFETY: argument list matches logits.cu; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(launch_err("argmax_f32"))?;
        Ok(())
    }

    /// Softmax per row with temperature: probs = softmax(logits / temperature).
    /// logits, probs: f32 [m, vocab].
    pub fn softmax_f32(
        &self,
        logits: In<f32>,
        probs: Out<f32>,
        m: usize,
        vocab: usize,
        temperature: f32,
    ) -> Result<()> {
        check_rows("softmax_f32", m, i32::MAX as usize)?;
        ensure!(vocab > 0, "softmax_f32: empty vocabulary");
        ensure!(
            temperature.is_finite() && temperature > 0.0,
            "softmax_f32: temperature {temperature} must be positive"
        );
        check_len("softmax_f32 logits", logits, m * vocab, false)?;
        check_len_mut("softmax_f32 probs", probs, m * vocab)?;
        let v_i = to_i32("vocab", vocab)?;
        let inv_t = 1.0f32 / temperature;
        let cfg = LaunchConfig {
            grid_dim: (to_u32("m", m)?, 1, 1),
            block_dim: (VOCAB_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("softmax_f32")?;
        let s = self.stream();
        let (p_l, _g0) = logits.device_ptr(s);
        let (p_p, _g1) = probs.device_ptr_mut(s);
        let mut b = s.launch_builder(f);
        b.arg(&p_l).arg(&p_p).arg(&v_i).arg(&inv_t);
        // SAFETY: argument list matches logits.cu; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(launch_err("softmax_f32"))?;
        Ok(())
    }
}
