//! `y = x Wᵀ + b` with W kept in its stored dtype (f32 / f16 / bf16) and widened in registers.
//!
//! Batch invariance: every output element `y[m, n]` is computed by the same sequence of
//! operations whatever the number of rows `M`, the tile it falls in or the thread that runs it
//! — one 8-lane accumulator over `k` in steps of 8, a fixed horizontal sum, then a scalar tail
//! and the bias. Tiles only decide which elements share register loads, never the order of a
//! reduction. So a token's logits are bit-identical alone, in a prefill or in a verify batch.
//!
//! Work is split over output rows `n` (rayon, the global pool); each task streams its block of
//! weight rows once for all `M` activation rows.

use rayon::prelude::*;

use crate::cpu::Isa;
use crate::weights::{Dtype, Matrix};

/// Most rows of W processed together by the micro-kernel.
const NR: usize = 8;
/// Most rows of x processed together by the micro-kernel.
const MR: usize = 3;
/// Weight rows kept hot in L2 while every activation tile passes over them.
const L2_ROWS: usize = 32;

/// `y[m, n] = Σ_k x[m, k]·w[n, k] + bias[n]`.
///
/// Shapes: `x` `[m, K]`, `w` `[N, K]`, `bias` `[N]` or none, `y` `[m, N]`.
pub fn linear(isa: Isa, x: &[f32], m: usize, w: &Matrix, bias: Option<&[f32]>, y: &mut [f32]) {
    let (n, k) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * k, "linear: x is not [m, K]");
    assert_eq!(y.len(), m * n, "linear: y is not [m, N]");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear: bias is not [N]");
    }
    let threads = rayon::current_num_threads().max(1);
    // Enough tasks to balance, each a multiple of NR rows.
    let block = (n.div_ceil(threads * 8)).max(32).next_multiple_of(NR);
    let tasks = n.div_ceil(block);
    let y_ptr = SendPtr(y.as_mut_ptr());
    let bytes = w.bytes();
    let dtype = w.dtype();
    (0..tasks).into_par_iter().for_each(|t| {
        let rows = t * block..((t + 1) * block).min(n);
        // SAFETY: tasks own disjoint column ranges `rows` of y; every write below stays inside
        // y[.., rows] and y outlives the parallel loop.
        unsafe { linear_block(isa, dtype, x, m, k, bytes, bias, rows, n, y_ptr) };
    });
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to write disjoint elements from different tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Computes `y[.., rows]`.
///
/// # Safety
/// `y` must point to `[m, n]` f32s that no other thread writes in columns `rows`.
#[allow(clippy::too_many_arguments)]
unsafe fn linear_block(
    isa: Isa,
    dtype: Dtype,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    bias: Option<&[f32]>,
    rows: std::ops::Range<usize>,
    n: usize,
    y: SendPtr,
) {
    let size = dtype.size();
    let mut r0 = rows.start;
    while r0 < rows.end {
        let r1 = (r0 + L2_ROWS).min(rows.end);
        let mut i0 = 0;
        while i0 < m {
            let (mr, nr_full) = tile_shape(m, i0);
            let mut j0 = r0;
            while j0 < r1 {
                let nr = if r1 - j0 >= nr_full { nr_full } else { 1 };
                let xs: [&[f32]; MR] = std::array::from_fn(|i| &x[(i0 + i.min(mr - 1)) * k..][..k]);
                let ws: [&[u8]; NR] =
                    std::array::from_fn(|j| &w[(j0 + j.min(nr - 1)) * k * size..][..k * size]);
                let mut out = [[0.0f32; NR]; MR];
                tile(isa, dtype, &xs, &ws, mr, nr, &mut out);
                for (i, row) in out.iter().enumerate().take(mr) {
                    for (j, &v) in row.iter().enumerate().take(nr) {
                        let col = j0 + j;
                        let b = bias.map_or(0.0, |b| b[col]);
                        *y.0.add((i0 + i) * n + col) = v + b;
                    }
                }
                j0 += nr;
            }
            i0 += mr;
        }
        r0 = r1;
    }
}

/// Tile for the activation rows from `i0` of an `m`-row call: up to three rows with four weight
/// rows, or one row with eight weight rows (more weight streams in flight for decode). Only
/// which elements share loads changes, never an element's reduction order.
fn tile_shape(m: usize, i0: usize) -> (usize, usize) {
    let mr = (m - i0).min(MR);
    (mr, if mr == 1 { 8 } else { 4 })
}

/// Dot products of `mr` activation rows with `nr` weight rows; `out[i][j] = xs[i]·ws[j]`.
fn tile(
    isa: Isa,
    dtype: Dtype,
    xs: &[&[f32]; MR],
    ws: &[&[u8]; NR],
    mr: usize,
    nr: usize,
    out: &mut [[f32; NR]; MR],
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: Isa::Avx2 is only chosen when avx2, fma and f16c were detected.
        unsafe {
            match dtype {
                Dtype::F32 => x86::tile::<x86::F32>(xs, ws, mr, nr, out),
                Dtype::F16 => x86::tile::<x86::F16>(xs, ws, mr, nr, out),
                Dtype::Bf16 => x86::tile::<x86::Bf16>(xs, ws, mr, nr, out),
            }
        }
        return;
    }
    let _ = isa;
    portable::tile(dtype, xs, ws, mr, nr, out);
}

/// Any-CPU kernel: eight f32 lanes emulated per output element, the same reduction shape as
/// the SIMD kernel (so both are batch invariant), compiled to whatever the target offers.
mod portable {
    use super::{MR, NR};
    use crate::weights::{widen_into, Dtype};

    const LANES: usize = 8;

    pub fn tile(
        dtype: Dtype,
        xs: &[&[f32]; MR],
        ws: &[&[u8]; NR],
        mr: usize,
        nr: usize,
        out: &mut [[f32; NR]; MR],
    ) {
        let k = xs[0].len();
        let size = dtype.size();
        let mut wbuf = [0.0f32; 256];
        for j in 0..nr {
            let mut acc = [[0.0f32; LANES]; MR];
            let mut k0 = 0;
            while k0 < k {
                let len = (k - k0).min(wbuf.len());
                widen_into(
                    dtype,
                    &ws[j][k0 * size..(k0 + len) * size],
                    &mut wbuf[..len],
                );
                let full = len / LANES * LANES;
                for i in 0..mr {
                    let x = &xs[i][k0..k0 + full];
                    for (xc, wc) in x.chunks_exact(LANES).zip(wbuf[..full].chunks_exact(LANES)) {
                        for l in 0..LANES {
                            acc[i][l] += xc[l] * wc[l];
                        }
                    }
                }
                if full < len {
                    // Only the very last chunk can have a tail (chunks are multiples of 8).
                    for i in 0..mr {
                        let s = reduce(&acc[i]);
                        let mut s = s;
                        for kk in full..len {
                            s += xs[i][k0 + kk] * wbuf[kk];
                        }
                        out[i][j] = s;
                    }
                    break;
                }
                k0 += len;
                if k0 == k {
                    for i in 0..mr {
                        out[i][j] = reduce(&acc[i]);
                    }
                }
            }
        }
    }

    /// Fixed-order horizontal sum of the eight lanes.
    fn reduce(a: &[f32; LANES]) -> f32 {
        let s4 = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
        let s2 = [s4[0] + s4[2], s4[1] + s4[3]];
        s2[0] + s2[1]
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// Loads eight weights and widens them to f32.
    pub trait Load {
        const SIZE: usize;
        /// # Safety
        /// `p` must point to 8 readable elements; the CPU must have avx2, fma and f16c.
        unsafe fn load8(p: *const u8) -> __m256;
        fn scalar(b: &[u8]) -> f32;
    }

    pub struct F32;
    pub struct F16;
    pub struct Bf16;

    impl Load for F32 {
        const SIZE: usize = 4;
        #[inline(always)]
        unsafe fn load8(p: *const u8) -> __m256 {
            _mm256_loadu_ps(p.cast())
        }
        fn scalar(b: &[u8]) -> f32 {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
    }
    impl Load for F16 {
        const SIZE: usize = 2;
        #[inline(always)]
        unsafe fn load8(p: *const u8) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
        }
        fn scalar(b: &[u8]) -> f32 {
            half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
        }
    }
    impl Load for Bf16 {
        const SIZE: usize = 2;
        #[inline(always)]
        unsafe fn load8(p: *const u8) -> __m256 {
            let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
        }
        fn scalar(b: &[u8]) -> f32 {
            half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
        }
    }

    /// # Safety
    /// The CPU must support avx2, fma and f16c; row slices hold `K` elements each.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile<L: Load>(
        xs: &[&[f32]; MR],
        ws: &[&[u8]; NR],
        mr: usize,
        nr: usize,
        out: &mut [[f32; NR]; MR],
    ) {
        match (mr, nr) {
            (1, 8) => tile_fixed::<L, 1, 8>(xs, ws, out),
            (2, 4) => tile_fixed::<L, 2, 4>(xs, ws, out),
            (3, 4) => tile_fixed::<L, 3, 4>(xs, ws, out),
            (1, 1) => tile_fixed::<L, 1, 1>(xs, ws, out),
            (2, 1) => tile_fixed::<L, 2, 1>(xs, ws, out),
            (3, 1) => tile_fixed::<L, 3, 1>(xs, ws, out),
            _ => unreachable!("tile shape {mr}×{nr}"),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_fixed<L: Load, const R: usize, const C: usize>(
        xs: &[&[f32]; MR],
        ws: &[&[u8]; NR],
        out: &mut [[f32; NR]; MR],
    ) {
        let k = xs[0].len();
        let full = k / 8 * 8;
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let xp: [*const f32; R] = std::array::from_fn(|i| xs[i].as_ptr());
        let wp: [*const u8; C] = std::array::from_fn(|j| ws[j].as_ptr());
        let mut kk = 0;
        while kk < full {
            let xv: [__m256; R] = std::array::from_fn(|i| _mm256_loadu_ps(xp[i].add(kk)));
            for j in 0..C {
                let wv = L::load8(wp[j].add(kk * L::SIZE));
                for i in 0..R {
                    acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
                }
            }
            kk += 8;
        }
        for i in 0..R {
            for j in 0..C {
                let mut s = hsum(acc[i][j]);
                for t in full..k {
                    s += xs[i][t] * L::scalar(&ws[j][t * L::SIZE..]);
                }
                out[i][j] = s;
            }
        }
    }

    /// Fixed-order horizontal sum: (lo + hi) halves, then pairs, then the last two.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2));
        _mm_cvtss_f32(s1)
    }
}
