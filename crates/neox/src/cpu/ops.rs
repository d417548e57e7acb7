//! Per-row ops of the forward pass: LayerNorm, exact GELU, rotary embedding, causal attention.
//!
//! Each output row depends only on its own input row (and the cache), computed in a fixed
//! order, so results never depend on how many rows a call carries.

use rayon::prelude::*;

use crate::weights::Norm;

/// LayerNorm of each `hidden`-wide row of `x` into `out` (both `[rows, hidden]`).
/// Rows are shared out to the thread pool in prefills (a decode step's one row stays put).
///
/// The mean and the variance are sums in a fixed order, sixteen running lane sums
/// ([`lane_sum`]), so the row vectorises (a sequential sum was a chain of `hidden` dependent
/// adds: 4.3 % of a 70m prefill); one source runs as plain code and as AVX2 and AVX-512 builds
/// with the same IEEE operations, so every kernel set gives the same bits.
pub fn layer_norm(isa: crate::cpu::Isa, x: &[f32], norm: &Norm, eps: f32, out: &mut [f32]) {
    let d = norm.weight.len();
    let row = |(xr, or): (&[f32], &mut [f32])| {
        #[cfg(target_arch = "x86_64")]
        if isa.is_avx512() {
            // SAFETY: an AVX-512 `Isa` is only built after detecting avx512f and avx2.
            return unsafe { norm_row_avx512(xr, norm, eps, or) };
        }
        #[cfg(target_arch = "x86_64")]
        if isa.is_avx2() {
            // SAFETY: an AVX2 `Isa` is only built after detecting avx2.
            return unsafe { norm_row_avx2(xr, norm, eps, or) };
        }
        let _ = isa;
        norm_row(xr, norm, eps, or)
    };
    if x.len() >= 8 * d {
        x.par_chunks_exact(d)
            .zip(out.par_chunks_exact_mut(d))
            .for_each(row);
    } else {
        x.chunks_exact(d).zip(out.chunks_exact_mut(d)).for_each(row);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn norm_row_avx2(x: &[f32], norm: &Norm, eps: f32, out: &mut [f32]) {
    norm_row(x, norm, eps, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn norm_row_avx512(x: &[f32], norm: &Norm, eps: f32, out: &mut [f32]) {
    norm_row(x, norm, eps, out);
}

/// One row: `out = (x − mean)·(var + eps)^−½·weight + bias`.
#[inline(always)]
fn norm_row(x: &[f32], norm: &Norm, eps: f32, out: &mut [f32]) {
    let d = x.len() as f32;
    let mean = lane_sum(x, |v| v) / d;
    let var = lane_sum(x, |v| (v - mean) * (v - mean)) / d;
    let inv = 1.0 / (var + eps).sqrt();
    for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(&norm.weight).zip(&norm.bias) {
        *o = (v - mean) * inv * w + b;
    }
}

/// `Σ f(xᵢ)` in a fixed order: lane `l` of sixteen sums `f(xᵢ)` for `i ≡ l (mod 16)` over the
/// whole sixteens, the lanes are folded pairwise (`l + 8` into `l`, then `+ 4`, `+ 2`, `+ 1`),
/// then the tail is added in order.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let full = x.len() / LANES * LANES;
    let mut acc = [0.0f32; LANES];
    for chunk in x[..full].chunks_exact(LANES) {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    let mut sum = acc[0];
    for &v in &x[full..] {
        sum += f(v);
    }
    sum
}

/// Exact (erf) GELU in place: `x · Φ(x)`, `Φ(x) = ½(1 + erf(x/√2)) = ½·erfc(−x/√2)`.
///
/// `erfc` comes from the Chebyshev fit of Press et al., *Numerical Recipes* (2nd ed., §6.2,
/// `erfcc`: fractional error below 1.2e-7 everywhere), evaluated with a branch-free `exp`, so a
/// loop of it vectorises. The same source runs as plain code and as AVX2 and AVX-512 builds,
/// with only IEEE-rounded adds, multiplies and divides (Rust never fuses them), so every kernel
/// set gives the same bits. Measured against f64 `erf`: see the test `gelu_matches_f64_erf`.
pub fn gelu(isa: crate::cpu::Isa, x: &mut [f32]) {
    x.par_chunks_mut(4096).for_each(|c| gelu_serial(isa, c));
}

/// [`gelu`] on the calling thread (for a matmul epilogue, already inside a task).
pub fn gelu_serial(isa: crate::cpu::Isa, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx512() {
        // SAFETY: an AVX-512 `Isa` is only built after detecting avx512f (see `Isa::avx512`).
        unsafe { gelu_avx512(x) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: an AVX2 `Isa` is only built after detecting avx2 (it is opaque: see
        // `Isa::avx2`), so the target feature is present.
        unsafe { gelu_avx2(x) };
        return;
    }
    let _ = isa;
    gelu_slice(x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_avx2(x: &mut [f32]) {
    gelu_slice(x);
}

/// The same source on sixteen lanes (the same IEEE operations per element, so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn gelu_avx512(x: &mut [f32]) {
    gelu_slice(x);
}

#[inline(always)]
fn gelu_slice(x: &mut [f32]) {
    for v in x {
        *v *= normal_cdf(*v);
    }
}

/// `Φ(x)`, the standard normal CDF, branch-free.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the coefficients as published
fn normal_cdf(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    // erfc(z) = t·exp(−z² + P(t)), t = 1/(1 + z/2), for z ≥ 0.
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77f32;
    for c in [
        -0.822_152_23f32,
        1.488_515_87,
        -1.135_203_98,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_68,
        -1.265_512_23,
    ] {
        p = p * t + c;
    }
    let half_erfc = 0.5 * t * exp_neg(p - z * z);
    if x < 0.0 {
        half_erfc
    } else {
        1.0 - half_erfc
    }
}

/// `eᵃ` for `a ≤ 0` (results below ~1e-38 flush to zero), branch-free: `a = n·ln2 + r` with
/// `|r| ≤ ln2/2`, a degree-7 Taylor polynomial for `eʳ` (truncation below 3e-9 relative), and
/// `2ⁿ` built from its exponent bits.
#[inline(always)]
fn exp_neg(a: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75; // ln 2 split so n·LN2_HI is exact for |n| < 2^9
    const LN2_LO: f32 = 1.428_606_8e-6;
    let a = a.max(-87.0);
    let n = (a * std::f32::consts::LOG2_E).round();
    let r = (a - n * LN2_HI) - n * LN2_LO;
    let mut e = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        e = e * r + c;
    }
    e * two_to(n)
}

/// `2ⁿ` for an integral `n` in `[-126, 0]`, built from its exponent bits without a float →
/// int cast (Rust's saturating `as i32` stays scalar in a vectorised loop, eight conversions
/// and selects per eight lanes): `n + 127 + 2²³` is exact and its low mantissa bits are the
/// biased exponent `n + 127`.
#[inline(always)]
fn two_to(n: f32) -> f32 {
    const MAGIC: f32 = 8_388_608.0; // 2²³
    let biased = (n + 127.0 + MAGIC).to_bits() - MAGIC.to_bits();
    f32::from_bits(biased << 23)
}

/// cos / sin tables for rotary embeddings, `[max_pos, rotary_dims / 2]` each.
pub struct Rope {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    /// Angles `pos · base^(−2i/rotary_dims)` for positions `0..max_pos`, computed in f64 and
    /// rounded once; a table too large to allocate is an error naming its size.
    pub fn new(rotary_dims: usize, base: f64, max_pos: usize) -> anyhow::Result<Self> {
        let half = rotary_dims / 2;
        let len = max_pos.saturating_mul(half);
        let table = |_| {
            anyhow::anyhow!(
                "cannot allocate the rotary table of {max_pos} positions × {half} angles ({})",
                spedec_report::format_bytes((len as u64).saturating_mul(8))
            )
        };
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        cos.try_reserve_exact(len).map_err(table)?;
        sin.try_reserve_exact(len).map_err(table)?;
        for pos in 0..max_pos {
            for i in 0..half {
                let inv_freq = 1.0 / base.powf((2 * i) as f64 / rotary_dims as f64);
                let angle = pos as f64 * inv_freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(Rope { half, cos, sin })
    }

    /// Rotate-half on the first `rotary_dims` of one head vector at position `pos`.
    pub fn apply(&self, head: &mut [f32], pos: usize) {
        let h = self.half;
        let cos = &self.cos[pos * h..(pos + 1) * h];
        let sin = &self.sin[pos * h..(pos + 1) * h];
        for i in 0..h {
            let (a, b) = (head[i], head[i + h]);
            head[i] = a * cos[i] - b * sin[i];
            head[i + h] = b * cos[i] + a * sin[i];
        }
    }
}

/// Causal attention of `m` queries over one layer's cache.
///
/// Shapes: `q` `[m, heads, head_dim]` (already rotated), `keys` / `values`
/// `[heads, capacity, head_dim]`, `out` `[m, heads, head_dim]`. Query `i` sits at position
/// `start + i` and sees cache positions `0..=start + i`. Like [`gelu`], one source serves every
/// kernel set (the AVX2 and AVX-512 builds only widen the vectors, the AVX-512 one also holding
/// two queries' eight-lane score sums in one register), so they give the same bits.
///
/// The work is cut into tiles of up to [`QUERY_TILE`] consecutive queries of one head, one
/// task each: a tile's queries read each key and value row once between them (from L1)
/// instead of once each (from L3 or memory), which at a 2,048-token window was most of a
/// 70m perplexity run's attention time. A query's arithmetic does not depend on its tile.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    isa: crate::cpu::Isa,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    heads: usize,
    head_dim: usize,
    capacity: usize,
    start: usize,
    out: &mut [f32],
) {
    let hd = head_dim;
    let m = q.len() / (heads * hd);
    let scale = 1.0 / (hd as f32).sqrt();
    let rows = QUERY_TILE.min(m);
    let tiles = m.div_ceil(rows.max(1));
    // [heads, tiles · rows, hd]: the tiles' outputs, head-major (rows past m unused)
    let mut by_head = vec![0.0f32; heads * tiles * rows * hd];
    by_head
        .par_chunks_mut(rows * hd)
        .enumerate()
        .for_each_init(Vec::new, |scores, (c, o)| {
            let (h, first) = (c / tiles, c % tiles * rows);
            let tile = Tile {
                q,
                heads,
                head_dim: hd,
                head: h,
                first,
                rows: rows.min(m - first),
                start,
                keys: &keys[h * capacity * hd..],
                values: &values[h * capacity * hd..],
                scale,
            };
            #[cfg(target_arch = "x86_64")]
            if isa.is_avx512() {
                // SAFETY: an AVX-512 `Isa` is only built after detecting avx512f and avx2
                // (see `Isa::avx512`).
                unsafe { attend_avx512(&tile, scores, o) };
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if isa.is_avx2() {
                // SAFETY: an AVX2 `Isa` is only built after detecting avx2 (it is opaque: see
                // `Isa::avx2`), so the target feature is present.
                unsafe { attend_avx2(&tile, scores, o) };
                return;
            }
            let _ = isa;
            attend::<false, false>(&tile, scores, o);
        });
    for (i, row) in out.chunks_exact_mut(heads * hd).enumerate() {
        for (h, o) in row.chunks_exact_mut(hd).enumerate() {
            o.copy_from_slice(&by_head[(h * tiles * rows + i) * hd..][..hd]);
        }
    }
}

/// Queries per attention task (consecutive positions, one head).
const QUERY_TILE: usize = 16;

/// Positions a tile's queries take in turn (a multiple of four): 32 keys or values of a
/// head are 8–16 KiB, which stay in L1 while every query of the tile reads them.
const KEY_BLOCK: usize = 32;

/// Consecutive queries `first..first + rows` of one head against its cached keys and values.
struct Tile<'a> {
    /// `[m, heads, head_dim]`: every query of the call
    q: &'a [f32],
    heads: usize,
    head_dim: usize,
    head: usize,
    first: usize,
    rows: usize,
    /// Position of query 0 of the call: query `i` sees positions `0..=start + i`.
    start: usize,
    /// `[capacity.., head_dim]` of this head from position 0
    keys: &'a [f32],
    /// `[capacity.., head_dim]` of this head from position 0
    values: &'a [f32],
    scale: f32,
}

impl Tile<'_> {
    /// Row `j` of the tile: its `[head_dim]` query and the number of positions it sees.
    #[inline(always)]
    fn query(&self, j: usize) -> (&[f32], usize) {
        let (i, hd) = (self.first + j, self.head_dim);
        (
            &self.q[(i * self.heads + self.head) * hd..][..hd],
            self.start + i + 1,
        )
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_avx2(tile: &Tile, scores: &mut Vec<f32>, out: &mut [f32]) {
    attend::<true, false>(tile, scores, out);
}

/// [`attend_avx2`] built for AVX-512: the scores keep [`dot4_avx2`]'s eight-lane sums, the
/// element-wise loops (softmax, the weighted sum of values) run sixteen lanes wide with the
/// same operations per element, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn attend_avx512(tile: &Tile, scores: &mut Vec<f32>, out: &mut [f32]) {
    attend::<true, true>(tile, scores, out);
}

/// Softmax-weighted sums of values for the tile's queries into `out` (`[rows.., head_dim]`);
/// `scores` is scratch. `AVX2`: the scores' dot products run as [`dot4_avx2`] (only inside
/// [`attend_avx2`]), which computes [`dot4`]'s bits.
///
/// Keys and values go in blocks of [`KEY_BLOCK`] positions, each block once for all the
/// tile's queries, and within a block four positions at a time (independent dot products in
/// flight, an output row loaded and stored once per four values); a query's last one to
/// three positions go one at a time. Every score and
/// every output element sees exactly the operations of one query and one position at a
/// time, in position order, so a query gives the same bits in any tile, alone or not.
#[inline(always)]
fn attend<const AVX2: bool, const AVX512: bool>(
    tile: &Tile,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = tile.head_dim;
    let key = |t: usize| &tile.keys[t * hd..(t + 1) * hd];
    let value = |t: usize| &tile.values[t * hd..(t + 1) * hd];
    let widest = tile.query(tile.rows - 1).1;
    // [rows, widest]: query j's scores, then probabilities, in row j
    scores.resize(tile.rows * widest, 0.0);
    // `dot` / `dot4` are called from loop bodies, not from closures handed to iterator
    // adaptors, so they stay inlined here (an adaptor would run them in a generic helper
    // built without this function's target features).
    for block in (0..widest).step_by(KEY_BLOCK) {
        // Two queries at a time while both have whole groups of four left (twice the
        // independent sums in flight, one load of each key row), then each on its own.
        for j in (0..tile.rows).step_by(2) {
            let (q0, len0) = tile.query(j);
            let mut t = block;
            if j + 1 < tile.rows {
                let (q1, len1) = tile.query(j + 1);
                let (s0, s1) = scores[j * widest..(j + 2) * widest].split_at_mut(widest);
                let common = (len0 / 4 * 4).min(len1 / 4 * 4).min(block + KEY_BLOCK);
                while t + 4 <= common {
                    let [d0, d1] = dots_pair::<AVX2, AVX512>(
                        q0,
                        q1,
                        [key(t), key(t + 1), key(t + 2), key(t + 3)],
                    );
                    for ((s0, s1), (d0, d1)) in s0[t..t + 4]
                        .iter_mut()
                        .zip(&mut s1[t..t + 4])
                        .zip(d0.into_iter().zip(d1))
                    {
                        *s0 = d0 * tile.scale;
                        *s1 = d1 * tile.scale;
                    }
                    t += 4;
                }
                let end = len1.min(block + KEY_BLOCK);
                scores_from::<AVX2>(q1, tile.keys, tile.scale, &mut s1[..len1], t, end);
            }
            let s0 = &mut scores[j * widest..][..len0];
            scores_from::<AVX2>(
                q0,
                tile.keys,
                tile.scale,
                s0,
                t,
                len0.min(block + KEY_BLOCK),
            );
        }
    }
    let mut inv = [0.0f32; QUERY_TILE];
    for (j, inv) in inv.iter_mut().enumerate().take(tile.rows) {
        let len = tile.query(j).1;
        let s = &mut scores[j * widest..][..len];
        // The maximum is exact in any order: sixteen running maxima, then one. `s > m`
        // rather than `f32::max` (one `maxps`, not a NaN-aware select; a NaN score is
        // skipped either way).
        // (Whole chunks, then the rest: a partial chunk in the loop kept the lanes in memory.)
        let mut lanes = [f32::NEG_INFINITY; 16];
        let mut chunks = s.chunks_exact(16);
        for chunk in &mut chunks {
            for (m, &s) in lanes.iter_mut().zip(chunk) {
                *m = if s > *m { s } else { *m };
            }
        }
        for (m, &s) in lanes.iter_mut().zip(chunks.remainder()) {
            *m = if s > *m { s } else { *m };
        }
        let max = lanes
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        for s in s.iter_mut() {
            *s = exp_neg(*s - max);
        }
        // In lanes (a sequential sum is a chain of `len` dependent adds).
        *inv = 1.0 / lane_sum(s, |v| v);
    }
    out.fill(0.0);
    for block in (0..widest).step_by(KEY_BLOCK) {
        // As for the scores: pairs of queries while both have whole groups left.
        for j in (0..tile.rows).step_by(2) {
            let len0 = tile.query(j).1;
            let mut t = block;
            if j + 1 < tile.rows {
                let len1 = tile.query(j + 1).1;
                let (p0, p1) = (
                    &scores[j * widest..][..len0],
                    &scores[(j + 1) * widest..][..len1],
                );
                let (inv0, inv1) = (inv[j], inv[j + 1]);
                let (o0, o1) = out[j * hd..(j + 2) * hd].split_at_mut(hd);
                let common = (len0 / 4 * 4).min(len1 / 4 * 4).min(block + KEY_BLOCK);
                while t + 4 <= common {
                    let w0 = [
                        p0[t] * inv0,
                        p0[t + 1] * inv0,
                        p0[t + 2] * inv0,
                        p0[t + 3] * inv0,
                    ];
                    let w1 = [
                        p1[t] * inv1,
                        p1[t + 1] * inv1,
                        p1[t + 2] * inv1,
                        p1[t + 3] * inv1,
                    ];
                    for (((((o0, o1), v0), v1), v2), v3) in o0
                        .iter_mut()
                        .zip(o1.iter_mut())
                        .zip(value(t))
                        .zip(value(t + 1))
                        .zip(value(t + 2))
                        .zip(value(t + 3))
                    {
                        *o0 = (((*o0 + w0[0] * v0) + w0[1] * v1) + w0[2] * v2) + w0[3] * v3;
                        *o1 = (((*o1 + w1[0] * v0) + w1[1] * v1) + w1[2] * v2) + w1[3] * v3;
                    }
                    t += 4;
                }
                values_from(p1, inv1, tile.values, o1, t, len1.min(block + KEY_BLOCK));
            }
            let p0 = &scores[j * widest..][..len0];
            let o0 = &mut out[j * hd..(j + 1) * hd];
            values_from(p0, inv[j], tile.values, o0, t, len0.min(block + KEY_BLOCK));
        }
    }
}

/// Scores `s[from..end]` of one query (`s` holds its `len` scores; `from` a multiple of four):
/// whole groups of four positions, then its last one to three one at a time.
#[inline(always)]
fn scores_from<const AVX2: bool>(
    q: &[f32],
    keys: &[f32],
    scale: f32,
    s: &mut [f32],
    from: usize,
    end: usize,
) {
    let hd = q.len();
    let key = |t: usize| &keys[t * hd..(t + 1) * hd];
    let quads = s.len() / 4 * 4;
    let mut t = from;
    while t + 4 <= quads.min(end) {
        let d = dots::<AVX2>(q, [key(t), key(t + 1), key(t + 2), key(t + 3)]);
        for (s, d) in s[t..t + 4].iter_mut().zip(d) {
            *s = d * scale;
        }
        t += 4;
    }
    while t < end {
        s[t] = dots::<AVX2>(q, [key(t); 4])[0] * scale;
        t += 1;
    }
}

/// Adds positions `from..end` of one query's weighted values to `o` (`p` holds its `len`
/// probabilities, `inv` their sum's reciprocal): groups of four, then one at a time.
#[inline(always)]
fn values_from(p: &[f32], inv: f32, values: &[f32], o: &mut [f32], from: usize, end: usize) {
    let hd = o.len();
    let value = |t: usize| &values[t * hd..(t + 1) * hd];
    let quads = p.len() / 4 * 4;
    let mut t = from;
    while t + 4 <= quads.min(end) {
        let w = [p[t] * inv, p[t + 1] * inv, p[t + 2] * inv, p[t + 3] * inv];
        for ((((o, v0), v1), v2), v3) in o
            .iter_mut()
            .zip(value(t))
            .zip(value(t + 1))
            .zip(value(t + 2))
            .zip(value(t + 3))
        {
            *o = (((*o + w[0] * v0) + w[1] * v1) + w[2] * v2) + w[3] * v3;
        }
        t += 4;
    }
    while t < end {
        let w = p[t] * inv;
        for (a, &v) in o.iter_mut().zip(value(t)) {
            *a += w * v;
        }
        t += 1;
    }
}

/// [`dots`] of two vectors `a0`, `a1` with the same four: each result [`dot4`]'s bits
/// (`AVX512`: [`dot4x2_avx512`], inside [`attend_avx512`] only).
#[inline(always)]
fn dots_pair<const AVX2: bool, const AVX512: bool>(
    a0: &[f32],
    a1: &[f32],
    b: [&[f32]; 4],
) -> [[f32; 4]; 2] {
    #[cfg(target_arch = "x86_64")]
    if AVX512 {
        // SAFETY: `AVX512` is set only by `attend_avx512`, which runs after avx512f was
        // detected.
        return unsafe { dot4x2_avx512(a0, a1, b) };
    }
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: `AVX2` is set only by `attend_avx2`, which runs after avx2 was detected.
        return unsafe { dot4x2_avx2(a0, a1, b) };
    }
    [dot4(a0, b), dot4(a1, b)]
}

/// [`dot4`], or with `AVX2` [`dot4_avx2`] (same bits). The last one to three keys of a query
/// repeat one key four times and keep lane 0; a padded last group of four measured slower
/// (prefill-128 attention of one 2.8b layer 4.1–4.8 ms as it is, 5.1–5.8 ms padded).
#[inline(always)]
fn dots<const AVX2: bool>(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: `AVX2` is set only by `attend_avx2`, which runs after avx2 was detected.
        return unsafe { dot4_avx2(a, b) };
    }
    dot4(a, b)
}

/// Fixed-order dot products of `a` with four vectors of its length: per vector, eight partial
/// sums (`acc[l] += a[i]·b[i]` for `i ≡ l mod 8`, a product rounded then added), combined as
/// `((acc0 + acc4) + (acc2 + acc6)) + ((acc1 + acc5) + (acc3 + acc7))`, then the tail in order.
#[inline(always)]
fn dot4(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    let full = a.len() / 8 * 8;
    let mut acc = [[0.0f32; 8]; 4];
    for ((((x, y0), y1), y2), y3) in a[..full]
        .chunks_exact(8)
        .zip(b[0][..full].chunks_exact(8))
        .zip(b[1][..full].chunks_exact(8))
        .zip(b[2][..full].chunks_exact(8))
        .zip(b[3][..full].chunks_exact(8))
    {
        for l in 0..8 {
            acc[0][l] += x[l] * y0[l];
            acc[1][l] += x[l] * y1[l];
            acc[2][l] += x[l] * y2[l];
            acc[3][l] += x[l] * y3[l];
        }
    }
    let mut sums = [0.0f32; 4];
    for j in 0..4 {
        let acc = &acc[j];
        let s4 = [
            acc[0] + acc[4],
            acc[1] + acc[5],
            acc[2] + acc[6],
            acc[3] + acc[7],
        ];
        let mut s = (s4[0] + s4[2]) + (s4[1] + s4[3]);
        for t in full..a.len() {
            s += a[t] * b[j][t];
        }
        sums[j] = s;
    }
    sums
}

/// [`dot4`] in AVX2 registers: one `ymm` of eight partial sums per vector, multiplied and
/// added as separate roundings (no FMA), then reduced in `dot4`'s order — the same bits. Written
/// with intrinsics because the compiler vectorised `dot4`'s loops across the four vectors (one
/// lane per key, shuffles per step), which made the scores most of a prefill's attention time.
///
/// # Safety
/// AVX2 must be present; it is inlined into [`attend_avx2`], whose target features its
/// intrinsics then compile with.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot4_avx2(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let n = a.len();
    assert!(b.iter().all(|v| v.len() == n), "dot4_avx2: lengths differ");
    let full = n / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < full {
        // SAFETY: `i + 8 ≤ full ≤ n`, and every slice holds `n` values.
        let x = _mm256_loadu_ps(a.as_ptr().add(i));
        for (acc, v) in acc.iter_mut().zip(b) {
            let y = _mm256_loadu_ps(v.as_ptr().add(i));
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, y));
        }
        i += 8;
    }
    reduce4_avx2(acc, a, b)
}

/// [`dot4_avx2`] of two vectors with the same four (eight independent sums, each key row
/// loaded once for both): the same bits as two calls.
///
/// # Safety
/// As [`dot4_avx2`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot4x2_avx2(a0: &[f32], a1: &[f32], b: [&[f32]; 4]) -> [[f32; 4]; 2] {
    use std::arch::x86_64::*;
    let n = a0.len();
    assert!(
        a1.len() == n && b.iter().all(|v| v.len() == n),
        "dot4x2_avx2: lengths differ"
    );
    let full = n / 8 * 8;
    let mut acc0 = [_mm256_setzero_ps(); 4];
    let mut acc1 = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < full {
        // SAFETY: `i + 8 ≤ full ≤ n`, and every slice holds `n` values.
        let x0 = _mm256_loadu_ps(a0.as_ptr().add(i));
        let x1 = _mm256_loadu_ps(a1.as_ptr().add(i));
        for ((acc0, acc1), v) in acc0.iter_mut().zip(acc1.iter_mut()).zip(b) {
            let y = _mm256_loadu_ps(v.as_ptr().add(i));
            *acc0 = _mm256_add_ps(*acc0, _mm256_mul_ps(x0, y));
            *acc1 = _mm256_add_ps(*acc1, _mm256_mul_ps(x1, y));
        }
        i += 8;
    }
    [reduce4_avx2(acc0, a0, b), reduce4_avx2(acc1, a1, b)]
}

/// [`dot4x2_avx2`] on 16-lane registers: lanes 0–7 hold `a0`'s eight partial sums with a key,
/// lanes 8–15 `a1`'s, each key's eight values loaded once into both halves, so one multiply
/// and one add per key and eight dimensions serve both vectors; the halves are then reduced
/// as [`dot4_avx2`] does. The same bits as two [`dot4`] calls.
///
/// # Safety
/// AVX-512F and AVX2 must be present (inlined into [`attend_avx512`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot4x2_avx512(a0: &[f32], a1: &[f32], b: [&[f32]; 4]) -> [[f32; 4]; 2] {
    use std::arch::x86_64::*;
    let n = a0.len();
    assert!(
        a1.len() == n && b.iter().all(|v| v.len() == n),
        "dot4x2_avx512: lengths differ"
    );
    let full = n / 8 * 8;
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i < full {
        // SAFETY: `i + 8 ≤ full ≤ n`, and every slice holds `n` values.
        let x = _mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_loadu_pd(a0.as_ptr().add(i).cast())),
            _mm256_loadu_pd(a1.as_ptr().add(i).cast()),
        );
        let x = _mm512_castpd_ps(x);
        for (acc, v) in acc.iter_mut().zip(b) {
            let y = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(
                v.as_ptr().add(i).cast(),
            )));
            *acc = _mm512_add_ps(*acc, _mm512_mul_ps(x, y));
        }
        i += 8;
    }
    // Written out: a closure handed to `map` would be built without this function's target
    // features.
    let half = |a: __m512| _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
    let lo = [
        _mm512_castps512_ps256(acc[0]),
        _mm512_castps512_ps256(acc[1]),
        _mm512_castps512_ps256(acc[2]),
        _mm512_castps512_ps256(acc[3]),
    ];
    let hi = [half(acc[0]), half(acc[1]), half(acc[2]), half(acc[3])];
    [reduce4_avx2(lo, a0, b), reduce4_avx2(hi, a1, b)]
}

/// The four sums of [`dot4`] from their eight-lane partial sums `acc` (then `a · b[j]`'s tail
/// past the last whole eight, in order).
///
/// # Safety
/// As [`dot4_avx2`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn reduce4_avx2(acc: [std::arch::x86_64::__m256; 4], a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let n = a.len();
    let full = n / 8 * 8;
    let mut sums = [0.0f32; 4];
    if full == n {
        // The four reductions side by side, each pair of lanes added as in `dot4`:
        // [a.lo, b.lo] + [a.hi, b.hi] gives lanes l + (l + 4) of a and b (likewise c, d);
        let ab = _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(acc[0], acc[1]),
            _mm256_permute2f128_ps::<0x31>(acc[0], acc[1]),
        );
        let cd = _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(acc[2], acc[3]),
            _mm256_permute2f128_ps::<0x31>(acc[2], acc[3]),
        );
        // then per 128-bit half [s4[0] + s4[2], s4[1] + s4[3]] of (a, c) and of (b, d);
        let s2 = _mm256_add_ps(
            _mm256_shuffle_ps::<0b01_00_01_00>(ab, cd),
            _mm256_shuffle_ps::<0b11_10_11_10>(ab, cd),
        );
        // then s2[0] + s2[1]: [a, c, a, c | b, d, b, d], interleaved into [a, b, c, d].
        let s1 = _mm256_add_ps(
            _mm256_shuffle_ps::<0b10_00_10_00>(s2, s2),
            _mm256_shuffle_ps::<0b11_01_11_01>(s2, s2),
        );
        let abcd = _mm_unpacklo_ps(_mm256_castps256_ps128(s1), _mm256_extractf128_ps::<1>(s1));
        _mm_storeu_ps(sums.as_mut_ptr(), abcd);
        return sums;
    }
    for ((sum, acc), v) in sums.iter_mut().zip(acc).zip(b) {
        // lanes l: acc[l] + acc[l + 4]
        let s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
        // lanes 0, 1: s4[0] + s4[2], s4[1] + s4[3]
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let mut s = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2)));
        for t in full..n {
            s += a[t] * v[t];
        }
        *sum = s;
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_of_a_row() {
        let norm = Norm {
            weight: vec![1.0, 2.0, 1.0, 1.0],
            bias: vec![0.0, 0.0, 0.0, 1.0],
        };
        let mut out = [0.0; 4];
        layer_norm(
            crate::cpu::Isa::detect(),
            &[1.0, 2.0, 3.0, 4.0],
            &norm,
            0.0,
            &mut out,
        );
        let s = 1.0 / 1.25f32.sqrt();
        let want = [-1.5 * s, -0.5 * s * 2.0, 0.5 * s, 1.5 * s + 1.0];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{out:?} vs {want:?}");
        }
    }

    #[test]
    fn layer_norm_matches_f64_and_gives_the_same_bits_on_every_kernel_set() {
        // 3 rows of 2560 (the 2.8b width) and 9 rows of 37 (tails, and the parallel path).
        for (rows, d) in [(3usize, 2560usize), (9, 37)] {
            let x: Vec<f32> = (0..rows * d)
                .map(|i| ((i * 7919) % 1009) as f32 / 100.0 - 3.0)
                .collect();
            let norm = Norm {
                weight: (0..d).map(|i| 0.5 + (i % 7) as f32 / 7.0).collect(),
                bias: (0..d).map(|i| (i % 5) as f32 / 10.0 - 0.2).collect(),
            };
            let eps = 1e-5;
            let mut first: Option<Vec<f32>> = None;
            for isa in crate::cpu::Isa::available() {
                let mut out = vec![0.0f32; rows * d];
                layer_norm(isa, &x, &norm, eps, &mut out);
                let mut worst = 0.0f64;
                for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact(d)) {
                    let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
                    let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
                    for i in 0..d {
                        let want = (xr[i] as f64 - mean) / (var + eps as f64).sqrt()
                            * norm.weight[i] as f64
                            + norm.bias[i] as f64;
                        let err = (or[i] as f64 - want).abs();
                        assert!(
                            err <= 1e-5 + 1e-5 * want.abs(),
                            "{isa:?}: {} vs {want}",
                            or[i]
                        );
                        worst = worst.max(err);
                    }
                }
                println!("{isa:?} {rows}×{d}: largest |layer_norm − f64| = {worst:.3e}");
                match &first {
                    None => first = Some(out),
                    Some(f) => assert!(
                        crate::cpu::same_bits(f, &out),
                        "{isa:?}: layer_norm bits differ between kernel sets"
                    ),
                }
            }
        }
    }

    #[test]
    fn gelu_matches_f64_erf() {
        // A dense grid over the range activations reach, plus extremes.
        let mut xs: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 * 1e-4).collect();
        xs.extend([-100.0, -30.0, -14.0, 14.0, 30.0, 100.0, 1e-30, -1e-30, 0.0]);
        let want: Vec<f64> = xs
            .iter()
            .map(|&x| 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2)))
            .collect();
        let mut first: Option<Vec<f32>> = None;
        for isa in crate::cpu::Isa::available() {
            let mut got = xs.clone();
            gelu(isa, &mut got);
            let mut worst = (0.0f64, 0.0f32);
            for ((&g, &w), &x) in got.iter().zip(&want).zip(&xs) {
                // Relative to the value, with an absolute floor of 1e-7·max(1, |x|) where Φ
                // is near 1 (the f32 rounding of 1 − ½·erfc).
                let err = (g as f64 - w).abs();
                let tol = 4e-7 * w.abs() + 1e-7 * (x.abs() as f64).max(1.0);
                assert!(err <= tol, "{isa:?}: gelu({x}) = {g}, want {w}");
                if err > worst.0 {
                    worst = (err, x);
                }
            }
            println!(
                "{isa:?}: largest |gelu − f64 reference| = {:.3e} at x = {}",
                worst.0, worst.1
            );
            match &first {
                None => first = Some(got),
                Some(f) => assert!(
                    crate::cpu::same_bits(f, &got),
                    "{isa:?}: gelu bits differ between kernel sets"
                ),
            }
        }
    }

    #[test]
    fn two_to_n_from_bits_equals_the_exponent_cast() {
        // Every n `exp_neg` can reach (a clamped to [-87, 0]: n = round(a·log2 e) ≥ -126).
        for n in -126..=0 {
            let want = f32::from_bits(((n + 127) as u32) << 23);
            assert_eq!(two_to(n as f32).to_bits(), want.to_bits(), "2^{n}");
            assert_eq!(want, 2f32.powi(n), "2^{n}");
        }
    }

    #[test]
    fn gelu_values() {
        let mut x = [0.0f32, 1.0, -1.0, 3.0];
        gelu(crate::cpu::Isa::detect(), &mut x);
        // 0.5·x·(1 + erf(x/√2)) from the closed form.
        let want = [0.0f32, 0.841_344_7, -0.158_655_26, 2.995_950_5];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{x:?}");
        }
    }

    #[test]
    fn rope_rotates_pairs_and_leaves_the_rest() {
        let rope = Rope::new(4, 10000.0, 8).unwrap();
        let mut v = [1.0f32, 0.0, 0.0, 0.0, 7.0];
        rope.apply(&mut v, 3);
        // Pair (0, 2) rotates by angle 3·1.
        assert!((v[0] - 3f32.cos()).abs() < 1e-6 && (v[2] - 3f32.sin()).abs() < 1e-6);
        assert_eq!((v[1], v[3], v[4]), (0.0, 0.0, 7.0));
    }

    #[test]
    fn attention_matches_f64_and_each_query_alone() {
        // heads 3, head_dim 20 (two chunks of eight and a tail of four), capacity 16; 11
        // queries from position 2, so lengths 3..=13 cover every remainder of four.
        attention_case(3, 20, 16, 2, 11);
        // 40 queries from position 5: three tiles, the last one partial.
        attention_case(2, 20, 48, 5, 40);
        // head_dim 16: whole eights only (the four sums reduced side by side).
        attention_case(2, 16, 48, 1, 37);
    }

    fn attention_case(heads: usize, hd: usize, cap: usize, start: usize, m: usize) {
        let val =
            |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 2003) as f32 / 1001.5 - 1.0;
        let keys: Vec<f32> = (0..heads * cap * hd).map(|i| val(i, 1)).collect();
        let values: Vec<f32> = (0..heads * cap * hd).map(|i| val(i, 2)).collect();
        let q: Vec<f32> = (0..m * heads * hd).map(|i| 3.0 * val(i, 3)).collect();
        let mut worst = 0.0f64;
        let mut first: Option<Vec<f32>> = None;
        for isa in crate::cpu::Isa::available() {
            let mut batch = vec![0.0f32; m * heads * hd];
            attention(isa, &q, &keys, &values, heads, hd, cap, start, &mut batch);
            for i in 0..m {
                let row = i * heads * hd..(i + 1) * heads * hd;
                let mut alone = vec![0.0f32; heads * hd];
                attention(
                    isa,
                    &q[row.clone()],
                    &keys,
                    &values,
                    heads,
                    hd,
                    cap,
                    start + i,
                    &mut alone,
                );
                assert!(
                    crate::cpu::same_bits(&alone, &batch[row]),
                    "{isa:?}: query {i} differs alone and in the batch"
                );
                for h in 0..heads {
                    let qh = &q[(i * heads + h) * hd..][..hd];
                    let len = start + i + 1;
                    let s: Vec<f64> = (0..len)
                        .map(|t| {
                            let k = &keys[(h * cap + t) * hd..][..hd];
                            qh.iter()
                                .zip(k)
                                .map(|(&a, &b)| a as f64 * b as f64)
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let p: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                    let sum: f64 = p.iter().sum();
                    for e in 0..hd {
                        let want: f64 = (0..len)
                            .map(|t| p[t] / sum * values[(h * cap + t) * hd + e] as f64)
                            .sum();
                        let got = batch[(i * heads + h) * hd + e] as f64;
                        worst = worst.max((got - want).abs());
                        assert!(
                            (got - want).abs() <= 1e-5 + 1e-5 * want.abs(),
                            "{isa:?}: {got} vs {want}"
                        );
                    }
                }
            }
            match &first {
                None => first = Some(batch),
                Some(f) => assert!(
                    crate::cpu::same_bits(f, &batch),
                    "{isa:?}: attention bits differ between kernel sets"
                ),
            }
        }
        println!("largest |attention − f64 reference| = {worst:.3e}");
    }

    #[test]
    fn attention_with_one_key_returns_its_value() {
        // heads 1, head_dim 2, capacity 4, one cached position.
        let keys = [1.0, 0.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0];
        let values = [0.5, -2.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0];
        let mut out = [0.0; 2];
        attention(
            crate::cpu::Isa::detect(),
            &[3.0, 1.0],
            &keys,
            &values,
            1,
            2,
            4,
            0,
            &mut out,
        );
        assert_eq!(out, [0.5, -2.0]);
    }
}
