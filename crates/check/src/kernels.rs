//! GPU self-check: every kernel against the CPU reference at real Pythia shapes, plus
//! batch-invariance checks. Called by the GPU test and by a GPU check command.
//!
//! For each model (70m, 2.8b) and each row count M (1, 5, 16): random inputs, outputs
//! poisoned with NaN (0xFF bytes) before each run, comparison by `|a − b| <= atol + rtol·|ref|`
//! with the largest differences reported, and a timing of the same launch. Batch invariance:
//! rows 0 and 4 of an M = 5 call must be bit-identical to M = 1 calls on those rows alone,
//! and every row of a long prompt's attention slice (M = [`ATT_PREFILL_CHECK_ROWS`], three
//! query chunks in one launch) to M = 1 calls.
//! The tensor-core linear (`linear_tc.cu`) runs at M = 1, 5, 16, 128 ([`TC_ROWS`]), timed
//! against the CUDA-core one, with bit-exact invariance across its two block shapes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Result};
use half::f16;

use spedec_cuda::{AttnShape, GpuBackend, GpuContext, LinDest, LinearKernel, MAX_ROWS};

use crate::backend::CheckBackend;
use crate::compare::compare;
use crate::reference::{self as cpu, Act};

/// Geometry of a model under test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelShape {
    /// Short name, e.g. "2.8b".
    pub name: &'static str,
    /// Hidden size d.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Head dimension (d / heads).
    pub head_dim: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Rotary dims per head (25 % of head_dim for Pythia).
    pub rotary_dims: usize,
    /// Context capacity.
    pub max_pos: usize,
}

/// Pythia-70m: 6 layers, d 512, 8 heads × 64, intermediate 2048.
pub const PYTHIA_70M: ModelShape = ModelShape {
    name: "70m",
    hidden: 512,
    heads: 8,
    head_dim: 64,
    intermediate: 2048,
    vocab: 50304,
    rotary_dims: 16,
    max_pos: 2048,
};

/// Pythia-2.8b: 32 layers, d 2560, 32 heads × 80, intermediate 10240.
pub const PYTHIA_2_8B: ModelShape = ModelShape {
    name: "2.8b",
    hidden: 2560,
    heads: 32,
    head_dim: 80,
    intermediate: 10240,
    vocab: 50304,
    rotary_dims: 20,
    max_pos: 2048,
};

impl ModelShape {
    /// The attention geometry (rotary base 10000).
    pub fn attn(&self) -> AttnShape {
        AttnShape {
            heads: self.heads,
            head_dim: self.head_dim,
            rotary_dims: self.rotary_dims,
            rotary_base: 10000.0,
            max_pos: self.max_pos,
        }
    }
}

/// What [`run_checks`] covers.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Models whose shapes are used.
    pub models: Vec<ModelShape>,
    /// Row counts M (each at most 16).
    pub rows: Vec<usize>,
    /// Seed of the input generator.
    pub seed: u64,
    /// Timed repetitions per launch (0: no timing).
    pub timing_reps: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            models: vec![PYTHIA_70M, PYTHIA_2_8B],
            rows: vec![1, 5, 16],
            seed: 0x5eed_dec0,
            timing_reps: 20,
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Kernel and use, e.g. "linear_f16 qkv".
    pub name: String,
    /// Model, M and tensor shape.
    pub shape: String,
    /// Largest |gpu − ref|.
    pub max_abs: f64,
    /// Largest |gpu − ref| / |ref| (over elements with ref ≠ 0).
    pub max_rel: f64,
    /// Absolute tolerance used.
    pub atol: f64,
    /// Relative tolerance used.
    pub rtol: f64,
    /// Within tolerance everywhere (bit-identical for invariance rows).
    pub pass: bool,
    /// Mean time of one launch in µs, when timed.
    pub time_us: Option<f64>,
    /// Extra facts: first failing index, bandwidth, ...
    pub note: String,
}

/// Render results as an aligned text table with a summary line.
pub fn format_table(results: &[CheckResult]) -> String {
    let wn = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let ws = results
        .iter()
        .map(|r| r.shape.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<wn$}  {:<ws$}  {:>10} {:>10} {:>8} {:>8} {:>9}  {:<4}  note",
        "check", "shape", "max_abs", "max_rel", "atol", "rtol", "time_us", "ok"
    );
    for r in results {
        let t = r.time_us.map_or("-".to_string(), |t| format!("{t:.1}"));
        let _ = writeln!(
            s,
            "{:<wn$}  {:<ws$}  {:>10.3e} {:>10.3e} {:>8.1e} {:>8.1e} {:>9}  {:<4}  {}",
            r.name,
            r.shape,
            r.max_abs,
            r.max_rel,
            r.atol,
            r.rtol,
            t,
            if r.pass { "ok" } else { "FAIL" },
            r.note
        );
    }
    let failed = results.iter().filter(|r| !r.pass).count();
    let _ = writeln!(s, "{} passed, {} failed", results.len() - failed, failed);
    s
}

/// Whether every check passed.
pub fn all_passed(results: &[CheckResult]) -> bool {
    results.iter().all(|r| r.pass)
}

/// SplitMix64: a tiny deterministic generator for test inputs.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [−1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn f32s(&mut self, n: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale + offset).collect()
    }

    /// f16 values and their exact f32 images.
    fn f16s(&mut self, n: usize, scale: f32, offset: f32) -> (Vec<f16>, Vec<f32>) {
        let h: Vec<f16> = (0..n)
            .map(|_| f16::from_f32(self.unit() * scale + offset))
            .collect();
        let f = h.iter().map(|v| v.to_f32()).collect();
        (h, f)
    }
}

fn to_f32(v: &[f16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

#[allow(clippy::too_many_arguments)]
fn result(
    name: &str,
    shape: String,
    got: &[f32],
    want: &[f32],
    atol: f64,
    rtol: f64,
    time_us: Option<f64>,
    note: String,
) -> CheckResult {
    let mut note = note;
    let (max_abs, max_rel, pass) = match compare(got, want, got.len().max(1), atol, rtol) {
        Ok(d) => {
            if let Some(i) = d.first_bad {
                let _ = write!(note, " first bad [{i}]: gpu {} ref {}", got[i], want[i]);
            }
            (d.max_abs, d.max_rel, d.pass)
        }
        Err(e) => {
            let _ = write!(note, " {e}");
            (f64::NAN, f64::NAN, false)
        }
    };
    CheckResult {
        name: name.to_string(),
        shape,
        max_abs,
        max_rel,
        atol,
        rtol,
        pass,
        time_us,
        note: note.trim().to_string(),
    }
}

fn invariance(
    name: &str,
    shape: String,
    row: usize,
    m: usize,
    a: &[u16],
    b: &[u16],
) -> CheckResult {
    let differing = a.iter().zip(b).filter(|(x, y)| x != y).count();
    CheckResult {
        name: format!("{name} batch-invariance"),
        shape,
        max_abs: 0.0,
        max_rel: 0.0,
        atol: 0.0,
        rtol: 0.0,
        pass: differing == 0 && a.len() == b.len(),
        time_us: None,
        note: format!("row {row} of M={m} vs M=1: {differing} elements differ in bits"),
    }
}

fn bits_f32(v: &[f32]) -> Vec<u16> {
    v.iter()
        .flat_map(|x| {
            let b = x.to_bits();
            [(b & 0xffff) as u16, (b >> 16) as u16]
        })
        .collect()
}

fn bits_f16(v: &[f16]) -> Vec<u16> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Mean time of `f` over `reps` launches after one warm-up, in µs (None when not timed).
fn time_it<B: CheckBackend>(
    b: &mut B,
    reps: usize,
    mut f: impl FnMut(&mut B) -> Result<()>,
) -> Result<Option<f64>> {
    if reps == 0 || !b.timed() {
        return Ok(None);
    }
    f(b)?;
    b.synchronize()?;
    let t = Instant::now();
    for _ in 0..reps {
        f(b)?;
    }
    b.synchronize()?;
    Ok(Some(t.elapsed().as_secs_f64() * 1e6 / reps as f64))
}

/// Run every check on a GPU. Errors only on driver failures; numerical failures are results.
/// Includes the device sampler's checks (`crate::sampler_check`) at the last model's
/// vocabulary with γ = 4.
pub fn run_checks(gpu: &Arc<GpuContext>, opts: &CheckOptions) -> Result<Vec<CheckResult>> {
    let mut backend = GpuBackend::new(gpu.clone(), false);
    let mut out = run_checks_on(&mut backend, opts)?;
    if let Some(model) = opts.models.last() {
        out.extend(crate::sampler_check::run_sampler_checks_on(
            &mut backend,
            model.vocab,
            4,
            opts.seed,
            opts.timing_reps,
        )?);
    }
    Ok(out)
}

/// Run every check on any backend (the GPU, or the host emulation in the tests).
pub fn run_checks_on<B: CheckBackend>(b: &mut B, opts: &CheckOptions) -> Result<Vec<CheckResult>> {
    ensure!(
        opts.rows.iter().all(|&m| (1..=16).contains(&m)),
        "rows must be in 1..=16"
    );
    let mut rng = Rng(opts.seed);
    let mut out = Vec::new();
    for model in &opts.models {
        check_embedding(b, &mut rng, model, opts, &mut out)?;
        check_layernorm(b, &mut rng, model, opts, &mut out)?;
        check_linears(b, &mut rng, model, opts, &mut out)?;
        check_linears_tc(b, &mut rng, model, opts, &mut out)?;
        check_rotary(b, &mut rng, model, opts, &mut out)?;
        check_attention(b, &mut rng, model, opts, &mut out)?;
    }
    if let Some(model) = opts.models.last() {
        check_vocab(b, &mut rng, model.vocab, opts, &mut out)?;
    }
    check_read_probe(b, opts.seed, &mut out)?;
    Ok(out)
}

/// The read-bandwidth probe (`probe.cu`): per-block sums of random f16 bits, exactly equal to
/// the CPU's, over a buffer that is not a whole number of grid strides, at 1, 3 and 7 blocks
/// (the sums buffer poisoned first, so a block that writes nothing fails).
fn check_read_probe<B: CheckBackend>(
    b: &mut B,
    seed: u64,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    let mut rng = Rng(seed ^ 0x9e0b_e5ad);
    let n_vec = 5 * spedec_cuda::kernels::consts::PROBE_THREADS as usize + 3;
    let host: Vec<f16> = (0..n_vec * 8)
        .map(|_| f16::from_bits(rng.next_u64() as u16))
        .collect();
    let buf = b.upload(&host)?;
    for blocks in [1, 3, 7] {
        let mut sums = b.poisoned::<u32>(blocks)?;
        b.read_probe(&buf, &mut sums, blocks)?;
        let got = b.download(&sums)?;
        let want = cpu::read_probe_sums(&host, blocks);
        let differing = got.iter().zip(&want).filter(|(g, w)| g != w).count();
        let total = want.iter().fold(0u32, |a, &w| a.wrapping_add(w));
        out.push(CheckResult {
            name: "read_probe_f16".into(),
            shape: format!("{n_vec} vectors [{}], {blocks} blocks", n_vec * 8),
            max_abs: differing as f64,
            max_rel: 0.0,
            atol: 0.0,
            rtol: 0.0,
            pass: differing == 0 && got.len() == want.len(),
            time_us: None,
            note: format!("{differing} block sums differ (exact u32; total {total:#010x})"),
        });
    }
    Ok(())
}

fn check_embedding<B: CheckBackend>(
    b: &mut B,
    rng: &mut Rng,
    model: &ModelShape,
    opts: &CheckOptions,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    let (v, d) = (model.vocab, model.hidden);
    let (table_h, table_f) = rng.f16s(v * d, 1.0, 0.0);
    let table = b.upload(&table_h)?;
    for &m in &opts.rows {
        let mut ids: Vec<u32> = (0..m).map(|_| rng.below(v) as u32).collect();
        ids[m - 1] = (v - 1) as u32;
        let ids_d = b.upload(&ids)?;
        let mut y = b.poisoned::<f32>(m * d)?;
        b.embedding(&ids_d, &table, &mut y, m, v, d)?;
        let got = b.download(&y)?;
        let t = time_it(b, opts.timing_reps, |b| {
            b.embedding(&ids_d, &table, &mut y, m, v, d)
        })?;
        let want = cpu::embedding(&table_f, &ids, d);
        out.push(result(
            "embedding_f16",
            format!("{} M={m} [{v}x{d}]->f32", model.name),
            &got,
            &want,
            0.0,
            0.0,
            t,
            String::new(),
        ));
    }
    Ok(())
}

struct LnParams<B: CheckBackend> {
    d: usize,
    w0: B::Buf<f16>,
    b0: B::Buf<f16>,
    w1: B::Buf<f16>,
    b1: B::Buf<f16>,
    host: [Vec<f32>; 4],
}

/// Runs add_layernorm on m rows with both adds and both norms; returns (x after, ln1, ln2).
fn run_ln<B: CheckBackend>(
    b: &mut B,
    p: &LnParams<B>,
    x: &[f32],
    add_a: &[f32],
    add_b: &[f32],
    m: usize,
) -> Result<(Vec<f32>, Vec<f16>, Vec<f16>)> {
    let d = p.d;
    let mut xd = b.upload(x)?;
    let (ad, bd) = (b.upload(add_a)?, b.upload(add_b)?);
    let mut o0 = b.poisoned::<f16>(m * d)?;
    let mut o1 = b.poisoned::<f16>(m * d)?;
    b.add_layernorm(
        &mut xd,
        Some(&ad),
        Some(&bd),
        &p.w0,
        &p.b0,
        &mut o0,
        Some((&p.w1, &p.b1, &mut o1)),
        m,
        d,
        1e-5,
    )?;
    Ok((b.download(&xd)?, b.download(&o0)?, b.download(&o1)?))
}

fn check_layernorm<B: CheckBackend>(
    b: &mut B,
    rng: &mut Rng,
    model: &ModelShape,
    opts: &CheckOptions,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    let d = model.hidden;
    let (w0h, w0) = rng.f16s(d, 0.5, 1.0);
    let (b0h, b0) = rng.f16s(d, 0.2, 0.0);
    let (w1h, w1) = rng.f16s(d, 0.5, 1.0);
    let (b1h, b1) = rng.f16s(d, 0.2, 0.0);
    let p = LnParams::<B> {
        d,
        w0: b.upload(&w0h)?,
        b0: b.upload(&b0h)?,
        w1: b.upload(&w1h)?,
        b1: b.upload(&b1h)?,
        host: [w0, b0, w1, b1],
    };
    let gen = |rng: &mut Rng, m: usize| {
        let x = rng.f32s(m * d, 2.0, 0.3);
        let ah = rng.f32s(m * d, 1.0, 0.0);
        let bh = rng.f32s(m * d, 1.0, 0.0);
        (x, ah, bh)
    };
    for &m in &opts.rows {
        let (x, ah, bh) = gen(rng, m);
        let (x_gpu, o0, o1) = run_ln(b, &p, &x, &ah, &bh, m)?;
        let t = {
            let mut xd = b.upload(&x)?;
            let mut o0d = b.poisoned::<f16>(m * d)?;
            time_it(b, opts.timing_reps, |b| {
                b.add_layernorm(
                    &mut xd, None, None, &p.w0, &p.b0, &mut o0d, None, m, d, 1e-5,
                )
            })?
        };
        let mut xr = x.clone();
        let (r0, r1) = cpu::add_layernorm(
            &mut xr,
            Some(&ah),
            Some(&bh),
            (&p.host[0], &p.host[1]),
            Some((&p.host[2], &p.host[3])),
            d,
            1e-5,
        );
        let shape = format!("{} M={m} [{m}x{d}]", model.name);
        out.push(result(
            "add_layernorm_f16 residual",
            shape.clone(),
            &x_gpu,
            &xr,
            1e-6,
            1e-6,
            None,
            String::new(),
        ));
        out.push(result(
            "add_layernorm_f16 ln1",
            shape.clone(),
            &to_f32(&o0),
            &r0,
            1e-3,
            2e-3,
            t,
            if t.is_some() {
                "time: one LN, no add".into()
            } else {
                String::new()
            },
        ));
        out.push(result(
            "add_layernorm_f16 ln2",
            shape,
            &to_f32(&o1),
            &r1.unwrap_or_default(),
            1e-3,
            2e-3,
            None,
            String::new(),
        ));
    }
    // Batch invariance: rows 0 and 4 of M = 5 against M = 1.
    let (x, ah, bh) = gen(rng, 5);
    let (x5, o5, _) = run_ln(b, &p, &x, &ah, &bh, 5)?;
    for row in [0, 4] {
        let r = row * d..(row + 1) * d;
        let (x1, o1, _) = run_ln(b, &p, &x[r.clone()], &ah[r.clone()], &bh[r.clone()], 1)?;
        let mut a = bits_f16(&o5[r.clone()]);
        a.extend(bits_f32(&x5[r.clone()]));
        let mut c = bits_f16(&o1);
        c.extend(bits_f32(&x1));
        out.push(invariance(
            "add_layernorm_f16",
            format!("{} [1x{d}]", model.name),
            row,
            5,
            &a,
            &c,
        ));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Epi {
    F16,
    Gelu,
    F32,
    AddF32,
}

struct LinSpec {
    name: &'static str,
    n: usize,
    k: usize,
    epi: Epi,
    bias: bool,
}

impl LinSpec {
    /// (atol, rtol) of the epilogue's output type.
    fn tolerance(&self) -> (f64, f64) {
        match self.epi {
            Epi::F16 | Epi::Gelu => (1e-3, 2e-3),
            Epi::F32 | Epi::AddF32 => (1e-4, 1e-4),
        }
    }
}

struct LinParams<B: CheckBackend> {
    w: B::Buf<f16>,
    bias: Option<B::Buf<f16>>,
    w_f: Vec<f32>,
    bias_f: Option<Vec<f32>>,
}

/// Random weights (scale 2/√K) and bias of `s`, uploaded, with their f32 values.
fn random_linear<B: CheckBackend>(b: &mut B, rng: &mut Rng, s: &LinSpec) -> Result<LinParams<B>> {
    let scale = 2.0 / (s.k as f32).sqrt();
    let (wh, w_f) = rng.f16s(s.n * s.k, scale, 0.0);
    let (bias, bias_f) = if s.bias {
        let (bh, bf) = rng.f16s(s.n, 0.5, 0.0);
        (Some(b.upload(&bh)?), Some(bf))
    } else {
        (None, None)
    };
    Ok(LinParams {
        w: b.upload(&wh)?,
        bias,
        w_f,
        bias_f,
    })
}

/// The CPU reference of rows `rows` of `s` over x f32 `[m, k]` (and, for the `+=` epilogue,
/// the residual f32 `[m, n]`): f32 `[rows.len(), n]`.
fn linear_reference<B: CheckBackend>(
    s: &LinSpec,
    p: &LinParams<B>,
    xf: &[f32],
    resid: &[f32],
    rows: &[usize],
) -> Vec<f32> {
    let x_sel: Vec<f32> = rows
        .iter()
        .flat_map(|&r| xf[r * s.k..(r + 1) * s.k].iter().copied())
        .collect();
    let act = if s.epi == Epi::Gelu {
        Act::Gelu
    } else {
        Act::None
    };
    let mut want = cpu::linear(
        &x_sel,
        &p.w_f,
        p.bias_f.as_deref(),
        act,
        rows.len(),
        s.n,
        s.k,
    );
    if s.epi == Epi::AddF32 {
        for (j, &r) in rows.iter().enumerate() {
            for c in 0..s.n {
                want[j * s.n + c] += resid[r * s.n + c];
            }
        }
    }
    want
}

/// Output bits of row `row` of x f16 `[m, k]` run alone (M = 1).
fn run_row<B: CheckBackend>(
    b: &mut B,
    s: &LinSpec,
    p: &LinParams<B>,
    xh: &[f16],
    resid: &[f32],
    row: usize,
) -> Result<Vec<u16>> {
    let x = &xh[row * s.k..(row + 1) * s.k];
    let r = &resid[row * s.n..(row + 1) * s.n];
    Ok(run_linear(b, s, p, x, r, 1, 0)?.0)
}

/// Runs linear for m rows; returns the raw output bits, its f32 values and a timing.
fn run_linear<B: CheckBackend>(
    b: &mut B,
    s: &LinSpec,
    p: &LinParams<B>,
    x: &[f16],
    resid: &[f32],
    m: usize,
    reps: usize,
) -> Result<(Vec<u16>, Vec<f32>, Option<f64>)> {
    let xd = b.upload(x)?;
    let (n, k) = (s.n, s.k);
    match s.epi {
        Epi::F16 | Epi::Gelu => {
            let mut y = b.poisoned::<f16>(m * n)?;
            let launch = |b: &mut B, y: &mut B::Buf<f16>| {
                let o = if s.epi == Epi::Gelu {
                    LinDest::F16Gelu(y)
                } else {
                    LinDest::F16(y)
                };
                b.linear(&xd, &p.w, p.bias.as_ref(), o, m, n, k)
            };
            launch(b, &mut y)?;
            let got = b.download(&y)?;
            let t = time_it(b, reps, |b| launch(b, &mut y))?;
            Ok((bits_f16(&got), to_f32(&got), t))
        }
        Epi::F32 | Epi::AddF32 => {
            let mut y = if s.epi == Epi::AddF32 {
                b.upload(resid)?
            } else {
                b.poisoned::<f32>(m * n)?
            };
            let launch = |b: &mut B, y: &mut B::Buf<f32>| {
                let o = if s.epi == Epi::AddF32 {
                    LinDest::AddF32(y)
                } else {
                    LinDest::F32(y)
                };
                b.linear(&xd, &p.w, p.bias.as_ref(), o, m, n, k)
            };
            launch(b, &mut y)?;
            let got = b.download(&y)?;
            let t = time_it(b, reps, |b| launch(b, &mut y))?;
            Ok((bits_f32(&got), got, t))
        }
    }
}

/// The five matrices of a layer and the head, with their epilogues.
fn linear_specs(model: &ModelShape) -> [LinSpec; 5] {
    let (d, i, v) = (model.hidden, model.intermediate, model.vocab);
    [
        LinSpec {
            name: "qkv",
            n: 3 * d,
            k: d,
            epi: Epi::F16,
            bias: true,
        },
        LinSpec {
            name: "attn.dense (+= f32)",
            n: d,
            k: d,
            epi: Epi::AddF32,
            bias: true,
        },
        LinSpec {
            name: "mlp.h_to_4h (gelu)",
            n: i,
            k: d,
            epi: Epi::Gelu,
            bias: true,
        },
        LinSpec {
            name: "mlp.4h_to_h (+= f32)",
            n: d,
            k: i,
            epi: Epi::AddF32,
            bias: true,
        },
        LinSpec {
            name: "embed_out (f32)",
            n: v,
            k: d,
            epi: Epi::F32,
            bias: false,
        },
    ]
}

fn check_linears<B: CheckBackend>(
    b: &mut B,
    rng: &mut Rng,
    model: &ModelShape,
    opts: &CheckOptions,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    let specs = linear_specs(model);
    for s in &specs {
        let p = random_linear(b, rng, s)?;
        let (atol, rtol) = s.tolerance();
        for &m in &opts.rows {
            let (xh, xf) = rng.f16s(m * s.k, 1.0, 0.0);
            let resid = rng.f32s(m * s.n, 1.0, 0.0);
            let (_, got, t) = run_linear(b, s, &p, &xh, &resid, m, opts.timing_reps)?;
            let all: Vec<usize> = (0..m).collect();
            let want = linear_reference(s, &p, &xf, &resid, &all);
            let note = t.map_or(String::new(), |t| {
                format!("{:.0} GB/s of weights", (s.n * s.k * 2) as f64 / (t * 1e3))
            });
            out.push(result(
                &format!("linear_f16 {}", s.name),
                format!("{} M={m} [{}x{}]", model.name, s.n, s.k),
                &got,
                &want,
                atol,
                rtol,
                t,
                note,
            ));
        }
        // Batch invariance: rows 0 and 4 of M = 5 against M = 1.
        let (xh, _) = rng.f16s(5 * s.k, 1.0, 0.0);
        let resid = rng.f32s(5 * s.n, 1.0, 0.0);
        let (bits5, _, _) = run_linear(b, s, &p, &xh, &resid, 5, 0)?;
        let per_row = bits5.len() / 5;
        for row in [0, 4] {
            let b1 = run_row(b, s, &p, &xh, &resid, row)?;
            out.push(invariance(
                &format!("linear_f16 {}", s.name),
                format!("{} [{}x{}]", model.name, s.n, s.k),
                row,
                5,
                &bits5[row * per_row..(row + 1) * per_row],
                &b1,
            ));
        }
    }
    Ok(())
}

/// Row counts of the tensor-core linear's check: decode, verify, a verify of 16, a prefill
/// chunk. The CUDA-core kernel is timed at the same M in launches of at most 16 rows (how the
/// model runs it today) for the comparison in the note.
pub const TC_ROWS: [usize; 4] = [1, 5, 16, 128];

/// Rows compared against the CPU reference at M rows (all up to 16, else a sample).
fn tc_ref_rows(m: usize) -> Vec<usize> {
    if m <= 16 {
        (0..m).collect()
    } else {
        vec![0, 1, m / 2, m - 1]
    }
}

fn failed(name: &str, shape: String, note: String) -> CheckResult {
    CheckResult {
        name: name.to_string(),
        shape,
        max_abs: f64::NAN,
        max_rel: f64::NAN,
        atol: 0.0,
        rtol: 0.0,
        pass: false,
        time_us: None,
        note,
    }
}

/// The tensor-core linear (`linear_tc.cu`) at the model's shapes and [`TC_ROWS`]: against
/// the reference, timed against the CUDA-core kernel, and bit-exact batch invariance (rows 0
/// and 4 of M = 5 and rows 0, 4, 127 of M = 128 against M = 1 runs of the same rows). The
/// backend's kernel choice is restored afterwards.
fn check_linears_tc<B: CheckBackend>(
    b: &mut B,
    rng: &mut Rng,
    model: &ModelShape,
    opts: &CheckOptions,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    let before = b.linear_kernel();
    if let Err(e) = b.set_linear_kernel(LinearKernel::TensorCore) {
        out.push(failed(
            "linear_tc_f16",
            model.name.to_string(),
            format!("{e:#}"),
        ));
        return Ok(());
    }
    let ran = check_linears_tc_on(b, rng, model, opts, out);
    b.set_linear_kernel(before)?;
    ran
}

fn check_linears_tc_on<B: CheckBackend>(
    b: &mut B,
    rng: &mut Rng,
    model: &ModelShape,
    opts: &CheckOptions,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    for s in &linear_specs(model) {
        let p = random_linear(b, rng, s)?;
        let (atol, rtol) = s.tolerance();
        let name = format!("linear_tc_f16 {}", s.name);
        for &m in &TC_ROWS {
            let (xh, xf) = rng.f16s(m * s.k, 1.0, 0.0);
            let resid = rng.f32s(m * s.n, 1.0, 0.0);
            let (_, got, t) = run_linear(b, s, &p, &xh, &resid, m, opts.timing_reps)?;
            let rows = tc_ref_rows(m);
            let want = linear_reference(s, &p, &xf, &resid, &rows);
            let got_sel: Vec<f32> = rows
                .iter()
                .flat_map(|&r| got[r * s.n..(r + 1) * s.n].iter().copied())
                .collect();
            let simt = time_simt(b, s, &p, &xh, m, opts.timing_reps)?;
            let mut note = if m > 16 {
                format!("rows {rows:?} vs reference")
            } else {
                String::new()
            };
            if let Some(t) = t {
                let _ = write!(
                    note,
                    " {:.0} GB/s of weights",
                    (s.n * s.k * 2) as f64 / (t * 1e3)
                );
                if let Some(ts) = simt {
                    let _ = write!(
                        note,
                        "; linear_f16 {ts:.1} us in {} launch(es), tc/simt {:.2}",
                        m.div_ceil(16),
                        t / ts
                    );
                }
            }
            out.push(result(
                &name,
                format!("{} M={m} [{}x{}]", model.name, s.n, s.k),
                &got_sel,
                &want,
                atol,
                rtol,
                t,
                note,
            ));
        }
        // Batch invariance, across both kernel instances (16- and 128-row blocks).
        let (xh, _) = rng.f16s(128 * s.k, 1.0, 0.0);
        let resid = rng.f32s(128 * s.n, 1.0, 0.0);
        let (bits128, _, _) = run_linear(b, s, &p, &xh, &resid, 128, 0)?;
        let (bits5, _, _) = run_linear(b, s, &p, &xh[..5 * s.k], &resid[..5 * s.n], 5, 0)?;
        let per_row = bits128.len() / 128;
        for row in [0, 4, 127] {
            let b1 = run_row(b, s, &p, &xh, &resid, row)?;
            let mut against = vec![(128, &bits128[row * per_row..(row + 1) * per_row])];
            if row < 5 {
                against.push((5, &bits5[row * per_row..(row + 1) * per_row]));
            }
            for (m, bits) in against {
                out.push(invariance(
                    &name,
                    format!("{} [{}x{}]", model.name, s.n, s.k),
                    row,
                    m,
                    bits,
                    &b1,
                ));
            }
        }
    }
    Ok(())
}

/// Time of the CUDA-core `linear_f16` over m rows in launches of at most 16 rows (None when
/// the backend does not time). Leaves the tensor-core kernel chosen.
fn time_simt<B: CheckBackend>(
    b: &mut B,
    s: &LinSpec,
    p: &LinParams<B>,
    x: &[f16],
    m: usize,
    reps: usize,
) -> Result<Option<f64>> {
    if reps == 0 || !b.timed() {
        return Ok(None);
    }
    let (n, k) = (s.n, s.k);
    let mut chunks = Vec::new();
    for r0 in (0..m).step_by(16) {
        let rows = (m - r0).min(16);
        chunks.push((rows, b.upload(&x[r0 * k..(r0 + rows) * k])?));
    }
    let mut y16 = b.poisoned::<f16>(16 * n)?;
    let mut y32 = b.poisoned::<f32>(16 * n)?;
    b.set_linear_kernel(LinearKernel::Simt)?;
    let t = time_it(b, reps, |b| {
        for (rows, xd) in &chunks {
            let o = match s.epi {
                Epi::F16 => LinDest::F16(&mut y16),
                Epi::Gelu => LinDest::F16Gelu(&mut y16),
                Epi::F32 => LinDest::F32(&mut y32),
                Epi::AddF32 => LinDest::AddF32(&mut y32),
            };
            b.linear(xd, &p.w, p.bias.as_ref(), o, *rows, n, k)?;
        }
        Ok(())
    });
    b.set_linear_kernel(LinearKernel::TensorCore)?;
    t
}

fn check_rotary<B: CheckBackend>(
    b: &mut B,
    rng: &mut Rng,
    model: &ModelShape,
    opts: &CheckOptions,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    let shape = model.attn();
    let (h, hd) = (shape.heads, shape.head_dim);
    let mut kc = b.poisoned::<f16>(shape.cache_len())?;
    let mut vc = b.poisoned::<f16>(shape.cache_len())?;
    for &m in &opts.rows {
        let start = (1237 * m) % (shape.max_pos - m);
        let pos: Vec<usize> = (start..start + m).collect();
        let pos_i: Vec<i32> = pos.iter().map(|&p| p as i32).collect();
        let (qkv_h, qkv_f) = rng.f16s(m * h * 3 * hd, 1.0, 0.0);
        let qkv = b.upload(&qkv_h)?;
        let pos_d = b.upload(&pos_i)?;
        let mut q = b.poisoned::<f16>(m * h * hd)?;
        b.poison(&mut kc)?;
        b.poison(&mut vc)?;
        b.rotary_kv(&qkv, &pos_d, &mut q, &mut kc, &mut vc, m, &shape)?;
        let q_got = to_f32(&b.download(&q)?);
        let k_all = b.download(&kc)?;
        let v_all = b.download(&vc)?;
        let t = time_it(b, opts.timing_reps, |b| {
            b.rotary_kv(&qkv, &pos_d, &mut q, &mut kc, &mut vc, m, &shape)
        })?;
        let (q_ref, k_ref, v_ref) =
            cpu::rotary_qkv(&qkv_f, &pos, h, hd, shape.rotary_dims, shape.rotary_base);
        // The cache rows the kernel should have written, gathered in [m, H, hd] order.
        let mut k_got = Vec::with_capacity(m * h * hd);
        let mut v_got = Vec::with_capacity(m * h * hd);
        for &p in &pos {
            for hh in 0..h {
                let o = (hh * shape.max_pos + p) * hd;
                k_got.extend(to_f32(&k_all[o..o + hd]));
                v_got.extend(to_f32(&v_all[o..o + hd]));
            }
        }
        let written = k_all.iter().filter(|x| !x.is_nan()).count();
        let sh = format!(
            "{} M={m} pos {start}.. [{h}x{hd}] rot {}",
            model.name, shape.rotary_dims
        );
        out.push(result(
            "rotary_kv_f16 q",
            sh.clone(),
            &q_got,
            &q_ref,
            1e-3,
            2e-3,
            t,
            String::new(),
        ));
        let mut rk = result(
            "rotary_kv_f16 k cache",
            sh.clone(),
            &k_got,
            &k_ref,
            1e-3,
            2e-3,
            None,
            String::new(),
        );
        if written != m * h * hd {
            rk.pass = false;
            rk.note = format!("{written} cache slots written, expected {}", m * h * hd);
        }
        out.push(rk);
        out.push(result(
            "rotary_kv_f16 v cache",
            sh,
            &v_got,
            &v_ref,
            0.0,
            0.0,
            None,
            String::new(),
        ));
    }
    Ok(())
}

struct AttnParams<B: CheckBackend> {
    shape: AttnShape,
    k: B::Buf<f16>,
    v: B::Buf<f16>,
    k_f: Vec<f32>,
    v_f: Vec<f32>,
}

/// Queries of the long-prompt attention check: three chunks of 16 (16 + 16 + 8) in one
/// `attention_rows` launch.
pub const ATT_PREFILL_CHECK_ROWS: usize = 40;

/// One attention call on `q` (f16 [m, H, hd]) at `pos` (m = `pos.len()`): a step's
/// `attention` up to [`MAX_ROWS`] queries, a prefill slice's `attention_rows` above.
fn run_attention<B: CheckBackend>(
    b: &mut B,
    a: &AttnParams<B>,
    q: &[f16],
    pos: &[usize],
    reps: usize,
) -> Result<(Vec<f16>, Option<f64>)> {
    let pos_i: Vec<i32> = pos.iter().map(|&p| p as i32).collect();
    let m = pos.len();
    let o = b.poisoned::<f16>(m * a.shape.hidden())?;
    run_attention_at(b, a, q, &pos_i, o, reps)
}

/// [`run_attention`] at positions as the kernel takes them (any i32, also invalid ones),
/// into `o` as given (f16 [m, H·hd]).
fn run_attention_at<B: CheckBackend>(
    b: &mut B,
    a: &AttnParams<B>,
    q: &[f16],
    pos_i: &[i32],
    mut o: B::Buf<f16>,
    reps: usize,
) -> Result<(Vec<f16>, Option<f64>)> {
    let m = pos_i.len();
    let shape = &a.shape;
    let qd = b.upload(q)?;
    let pd = b.upload(pos_i)?;
    if m > MAX_ROWS {
        b.prepare_prefill(shape, m)?;
    }
    b.poison_attention_scratch(shape)?;
    let call = |b: &mut B, o: &mut B::Buf<f16>| {
        if m > MAX_ROWS {
            b.attention_rows(&qd, &a.k, &a.v, &pd, o, 0, m, shape)
        } else {
            b.attention(&qd, &a.k, &a.v, &pd, o, m, shape)
        }
    };
    call(b, &mut o)?;
    let got = b.download(&o)?;
    let t = time_it(b, reps, |b| call(b, &mut o))?;
    Ok((got, t))
}

fn check_attention<B: CheckBackend>(
    b: &mut B,
    rng: &mut Rng,
    model: &ModelShape,
    opts: &CheckOptions,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    let shape = model.attn();
    let (h, hd, mp) = (shape.heads, shape.head_dim, shape.max_pos);
    // Keys/values are random below `filled`; later slots hold NaN, which must never leak in.
    let filled = mp - 4;
    let (mut kh, mut k_f) = rng.f16s(h * mp * hd, 1.0, 0.0);
    let (mut vh, mut v_f) = rng.f16s(h * mp * hd, 1.0, 0.0);
    for hh in 0..h {
        let r = (hh * mp + filled) * hd..(hh + 1) * mp * hd;
        kh[r.clone()].fill(f16::NAN);
        vh[r.clone()].fill(f16::NAN);
        k_f[r.clone()].fill(f32::NAN);
        v_f[r].fill(f32::NAN);
    }
    let a = AttnParams::<B> {
        shape,
        k: b.upload(&kh)?,
        v: b.upload(&vh)?,
        k_f,
        v_f,
    };
    for &m in &opts.rows {
        for (label, start) in [("short", 0), ("long", filled - m)] {
            let pos: Vec<usize> = (start..start + m).collect();
            let (qh, qf) = rng.f16s(m * h * hd, 4.0, 0.0);
            let (got, t) = run_attention(b, &a, &qh, &pos, opts.timing_reps)?;
            let want = cpu::attention(&qf, &a.k_f, &a.v_f, &pos, h, hd, mp);
            out.push(result(
                &format!("attention_f16 {label}"),
                format!(
                    "{} M={m} pos {start}..={} [{h}x{hd}]",
                    model.name,
                    start + m - 1
                ),
                &to_f32(&got),
                &want,
                1e-3,
                2e-3,
                t,
                String::new(),
            ));
        }
    }
    // Batch invariance: rows 0 and 4 of M = 5 (verify) against M = 1 (decode).
    let start = filled.saturating_sub(5 + 150);
    let pos: Vec<usize> = (start..start + 5).collect();
    let (qh, _) = rng.f16s(5 * h * hd, 4.0, 0.0);
    let (o5, _) = run_attention(b, &a, &qh, &pos, 0)?;
    for row in [0, 4] {
        let r = row * h * hd..(row + 1) * h * hd;
        let (o1, _) = run_attention(b, &a, &qh[r.clone()], &pos[row..row + 1], 0)?;
        out.push(invariance(
            "attention_f16",
            format!("{} pos {} [{h}x{hd}]", model.name, pos[row]),
            row,
            5,
            &bits_f16(&o5[r]),
            &bits_f16(&o1),
        ));
    }
    // Invalid positions give f16 NaN rows and leave the valid rows of the call as they are
    // alone: 3 queries at (valid, max_pos, valid), and one at −1 (no valid position in its
    // chunk: only split 0 runs, and must still write the row). The outputs start at 0, not
    // at the NaN poison, so a row left unwritten shows.
    let p0 = filled - 200.min(filled / 2);
    let (qh, _) = rng.f16s(3 * h * hd, 4.0, 0.0);
    let width = h * hd;
    let mixed = [p0 as i32, mp as i32, (p0 + 7) as i32];
    let zeros = b.upload(&vec![f16::ZERO; 3 * width])?;
    let (o3, _) = run_attention_at(b, &a, &qh, &mixed, zeros, 0)?;
    let zeros = b.upload(&vec![f16::ZERO; width])?;
    let (neg, _) = run_attention_at(b, &a, &qh[..width], &[-1], zeros, 0)?;
    let mut problems = Vec::new();
    for (row, &p) in mixed.iter().enumerate() {
        let got = &o3[row * width..(row + 1) * width];
        if p == mp as i32 {
            if !got.iter().all(|x| x.is_nan()) {
                problems.push(format!("row {row} (pos {p} = max_pos) is not all NaN"));
            }
            continue;
        }
        let o = b.poisoned::<f16>(width)?;
        let (alone, _) = run_attention_at(b, &a, &qh[row * width..(row + 1) * width], &[p], o, 0)?;
        if bits_f16(got) != bits_f16(&alone) {
            problems.push(format!("row {row} (pos {p}) differs from the query alone"));
        }
    }
    if !neg.iter().all(|x| x.is_nan()) {
        problems.push("the query at pos −1 is not all NaN".into());
    }
    out.push(CheckResult {
        name: "attention_f16 invalid positions".into(),
        shape: format!("{} pos {mixed:?} and [-1] [{h}x{hd}]", model.name),
        max_abs: 0.0,
        max_rel: 0.0,
        atol: 0.0,
        rtol: 0.0,
        pass: problems.is_empty(),
        time_us: None,
        note: if problems.is_empty() {
            "NaN rows for invalid positions, valid rows bit-identical to alone".into()
        } else {
            problems.join("; ")
        },
    });
    // A long prompt's slice: M = 40 queries (3 query chunks) across a split boundary, against
    // the CPU reference and, bit for bit, against each query alone.
    let m = ATT_PREFILL_CHECK_ROWS;
    let split = spedec_cuda::kernels::consts::ATT_SPLIT as usize;
    let boundary = (filled - m / 2) / split * split; // the last split start with room around it
    let start = boundary.saturating_sub(m / 2);
    let pos: Vec<usize> = (start..start + m).collect();
    let (qh, qf) = rng.f16s(m * h * hd, 4.0, 0.0);
    let (got, t) = run_attention(b, &a, &qh, &pos, opts.timing_reps)?;
    let want = cpu::attention(&qf, &a.k_f, &a.v_f, &pos, h, hd, mp);
    let sh = format!(
        "{} M={m} pos {start}..={} [{h}x{hd}]",
        model.name,
        start + m - 1
    );
    out.push(result(
        "attention_f16 prefill slice",
        sh.clone(),
        &to_f32(&got),
        &want,
        1e-3,
        2e-3,
        t,
        String::new(),
    ));
    let width = h * hd;
    let (mut rows_differing, mut elems_differing) = (0, 0);
    for row in 0..m {
        let r = row * width..(row + 1) * width;
        let (o1, _) = run_attention(b, &a, &qh[r.clone()], &pos[row..row + 1], 0)?;
        let n = bits_f16(&got[r])
            .iter()
            .zip(bits_f16(&o1))
            .filter(|(x, y)| **x != *y)
            .count();
        rows_differing += usize::from(n > 0);
        elems_differing += n;
    }
    out.push(CheckResult {
        name: "attention_f16 prefill slice batch-invariance".into(),
        shape: sh,
        max_abs: 0.0,
        max_rel: 0.0,
        atol: 0.0,
        rtol: 0.0,
        pass: elems_differing == 0 && got.len() == m * width,
        time_us: None,
        note: format!(
            "all {m} rows of M={m} vs M=1: {rows_differing} rows ({elems_differing} elements) \
             differ in bits"
        ),
    });
    Ok(())
}

fn check_vocab<B: CheckBackend>(
    b: &mut B,
    rng: &mut Rng,
    v: usize,
    opts: &CheckOptions,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    for &m in &opts.rows {
        let mut logits = rng.f32s(m * v, 5.0, 0.0);
        // A planted tie in every row: the first index must win.
        let mut want_ids = Vec::with_capacity(m);
        for r in 0..m {
            let (i, j) = (rng.below(v), rng.below(v));
            logits[r * v + i] = 100.0;
            logits[r * v + j] = 100.0;
            want_ids.push(cpu::argmax(&logits[r * v..(r + 1) * v]));
        }
        let ld = b.upload(&logits)?;
        let mut ids = b.poisoned::<u32>(m)?;
        b.argmax(&ld, &mut ids, m, v)?;
        let got_ids = b.download(&ids)?;
        let t = time_it(b, opts.timing_reps, |b| b.argmax(&ld, &mut ids, m, v))?;
        let g: Vec<f32> = got_ids.iter().map(|&x| x as f32).collect();
        let w: Vec<f32> = want_ids.iter().map(|&x| x as f32).collect();
        out.push(result(
            "argmax_f32",
            format!("M={m} [{m}x{v}]"),
            &g,
            &w,
            0.0,
            0.0,
            t,
            String::new(),
        ));

        let temp = 0.7;
        let logits2 = rng.f32s(m * v, 5.0, 0.0);
        let ld2 = b.upload(&logits2)?;
        let mut probs = b.poisoned::<f32>(m * v)?;
        b.softmax(&ld2, &mut probs, m, v, temp)?;
        let got = b.download(&probs)?;
        let t = time_it(b, opts.timing_reps, |b| {
            b.softmax(&ld2, &mut probs, m, v, temp)
        })?;
        let want: Vec<f32> = logits2
            .chunks(v)
            .flat_map(|r| cpu::softmax(r, temp))
            .collect();
        out.push(result(
            "softmax_f32",
            format!("M={m} [{m}x{v}] T={temp}"),
            &got,
            &want,
            1e-9,
            1e-4,
            t,
            String::new(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_name_the_first_bad_element() {
        let r = result(
            "x",
            "s".into(),
            &[1.0, 2.0, 3.5],
            &[1.0, 2.1, 3.0],
            0.2,
            0.0,
            None,
            String::new(),
        );
        assert!(!r.pass && (r.max_abs - 0.5).abs() < 1e-6);
        assert!(r.note.contains("first bad [2]"), "{}", r.note);
        let r = result(
            "x",
            "s".into(),
            &[1.0],
            &[1.0, 2.0],
            1.0,
            1.0,
            None,
            String::new(),
        );
        assert!(!r.pass && r.note.contains("shape mismatch"), "{}", r.note);
    }

    #[test]
    fn table_has_a_summary_line() {
        let r = result(
            "x",
            "s".into(),
            &[1.0],
            &[1.0],
            0.0,
            0.0,
            Some(3.0),
            String::new(),
        );
        let t = format_table(&[r]);
        assert!(t.contains("1 passed, 0 failed"), "{t}");
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng(1);
        let mut b = Rng(1);
        for _ in 0..1000 {
            let x = a.unit();
            assert_eq!(x, b.unit());
            assert!((-1.0..1.0).contains(&x));
        }
    }
}
