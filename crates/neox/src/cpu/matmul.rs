//! `y = x Wᵀ + b` over a [`PackedMatrix`] (stored f32 / f16 / bf16, widened in registers).
//!
//! Batch invariance: every output `y[m, n]` is one f32 fused multiply-add chain over
//! `k = 0, 1, …, K−1` starting from zero, then `+ bias[n]` — whatever the number of rows `M`,
//! the tile the element falls in, the thread that runs it or the kernel set (the portable
//! kernel uses `f32::mul_add`, which is fused too, so both sets give the same bits). Tiles only
//! decide which elements share a register load: a token's logits are bit-identical alone, in a
//! prefill or in a verify batch.
//!
//! Work is split over panels of sixteen outputs (rayon, the global pool); each task streams its
//! panels once for all `M` activation rows. Micro-tiles hold `R` rows × `P` panels in `2·R·P ≤
//! 12` accumulators: one row with four panels for decode (enough independent chains to hide the
//! FMA latency while four weight streams are in flight), up to six rows with one panel for
//! prefill (each weight load feeds twelve FMAs).
//!
//! The AVX-512 set (`x86_512`) holds a panel in one register. It streams the same tiles for
//! `M ≤ 6`; for prefills it widens a block of four panels' weights to f32 once (`[4][KC_WIDE][16]`,
//! in L1) and passes every row tile over it as six rows × four panels (24 accumulators).

use rayon::prelude::*;

use crate::cpu::packed::{PackedMatrix, PANEL};
use crate::cpu::Isa;
use crate::weights::Dtype;

/// Most activation rows in a micro-tile.
const MAX_ROWS: usize = 6;

/// Panels a micro-tile of `rows` activation rows covers.
fn tile_panels(rows: usize) -> usize {
    match rows {
        1 => 4,
        2 => 3,
        3 => 2,
        _ => 1,
    }
}

/// Inputs per block when several activation row tiles share each weight slice: a `[KC][16]`
/// weight slice (16 KiB in f16) stays in L1 while every row tile passes over it, and the packed
/// activations `[M][KC]` stay in L2. Partial sums go through `y` between blocks, which keeps
/// each element's chain — storing and reloading an f32 is exact.
const KC: usize = 512;

/// Panels per block in the AVX-512 prefill, whose row tiles are six rows × this many panels.
const WIDE_PANELS: usize = 4;

/// Inputs per block in the AVX-512 prefill: the widened block `[4][KC_WIDE][16]` f32 is 32 KiB,
/// inside a 48 KiB L1.
const KC_WIDE: usize = 128;

/// What happens to `Σ_k x·w + bias` before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// Stored as it is.
    None,
    /// Exact GELU applied (the MLP's first projection), see [`crate::cpu::ops::gelu`].
    Gelu,
}

/// `y[m, n] = Σ_k x[m, k]·w[n, k] + bias[n]`.
///
/// Shapes: `x` `[m, K]`, `w` `[N, K]` packed, `bias` `[N]` or none, `y` `[m, N]`.
pub fn linear(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &PackedMatrix,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    linear_then(isa, x, m, w, bias, Epilogue::None, y);
}

/// [`linear`] with `epilogue` applied to each output where it is written (no second pass over
/// `y`, no second hand-off to the thread pool). Same bits as `linear` followed by the op.
pub fn linear_then(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &PackedMatrix,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    y: &mut [f32],
) {
    let (n, k) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * k, "linear: x is not [m, K]");
    assert_eq!(y.len(), m * n, "linear: y is not [m, N]");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear: bias is not [N]");
    }
    if m == 0 || n == 0 {
        return;
    }
    let xp = pack_rows(isa, x, m, k);
    // AVX-512 prefills widen blocks of weights (see the module docs).
    let wide = isa.is_avx512() && m > MAX_ROWS;
    let group = if wide {
        WIDE_PANELS
    } else {
        tile_panels(m.min(MAX_ROWS))
    };
    let kc = match (wide, m > MAX_ROWS) {
        (true, _) => KC_WIDE,
        (false, true) => KC,
        (false, false) => k.max(1),
    };
    let panels = w.panels();
    let threads = rayon::current_num_threads().max(1);
    // Tasks per thread, each a whole number of panel groups. Streaming calls (M ≤ 6) take a
    // few long ones; compute-bound prefills take many short ones so that a thread slowed by
    // the host does not leave the other idle at the end (measured: 128-token prefill 5.5 s
    // with 4 per thread, 5.1–5.3 s with 64).
    let split = if m > MAX_ROWS { 64 } else { 4 };
    let per_task = panels.div_ceil(threads * split).next_multiple_of(group);
    let tasks = panels.div_ceil(per_task);
    let out = Out {
        ptr: y.as_mut_ptr(),
        n,
    };
    let job = Job {
        isa,
        xp: &xp,
        m,
        w,
        bias,
        epilogue,
        group,
        kc,
        wide,
    };
    (0..tasks).into_par_iter().for_each(|t| {
        let range = t * per_task..((t + 1) * per_task).min(panels);
        // SAFETY: tasks own disjoint panel ranges, hence disjoint columns of y; y outlives the
        // parallel loop.
        unsafe { job.run(range, out) };
    });
}

/// Activations packed per row tile: tile `t` holds rows `6t ..` (up to six) as `[K][rows]`,
/// so a kernel broadcasts consecutive floats. One row needs no packing.
fn pack_rows(isa: Isa, x: &[f32], m: usize, k: usize) -> std::borrow::Cow<'_, [f32]> {
    if m == 1 {
        return std::borrow::Cow::Borrowed(x);
    }
    let mut xp = vec![0.0f32; m * k];
    let pack = |(t, dst): (usize, &mut [f32])| {
        let i0 = t * MAX_ROWS;
        let rows = (m - i0).min(MAX_ROWS);
        let src = &x[i0 * k..(i0 + rows) * k];
        // Full six-row tiles sixteen inputs at a time in registers (the scalar loop was 2 % of
        // a 70m prefill), the rest one value at a time.
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if isa.is_avx512() && rows == MAX_ROWS {
            // SAFETY: an AVX-512 `Isa` is only built after detecting avx512f.
            done = unsafe { x86_512::pack_six(src, k, dst) };
        }
        let _ = isa;
        // Written front to back, the tile's rows read side by side.
        for (kk, out) in dst.chunks_exact_mut(rows).enumerate().skip(done) {
            for (i, o) in out.iter_mut().enumerate() {
                *o = src[i * k + kk];
            }
        }
    };
    if m <= MAX_ROWS {
        pack((0, &mut xp)); // one tile: not worth a hand-off to the pool
    } else {
        xp.par_chunks_mut(MAX_ROWS * k.max(1))
            .enumerate()
            .for_each(pack);
    }
    std::borrow::Cow::Owned(xp)
}

/// `y` as a raw pointer that tasks write disjoint columns of.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    /// Row stride of y.
    n: usize,
}
// SAFETY: used only to write disjoint elements from different tasks.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// One `linear` call, shared by its tasks.
struct Job<'a> {
    isa: Isa,
    /// Packed activations, see [`pack_rows`].
    xp: &'a [f32],
    m: usize,
    w: &'a PackedMatrix,
    bias: Option<&'a [f32]>,
    epilogue: Epilogue,
    /// Panels per micro-tile of the first row tile.
    group: usize,
    /// Inputs per block.
    kc: usize,
    /// The AVX-512 prefill: each block of `group` panels widened to f32 once.
    wide: bool,
}

impl Job<'_> {
    /// Computes the columns of `y` in panels `range`.
    ///
    /// The task's accumulators live in a buffer of its own, `[m][range × 16]` (small enough
    /// for L2 in a prefill, where input blocks pass over them several times: measured 3 %
    /// faster than keeping partial sums in `y`), and reach `y` once, with bias and epilogue.
    ///
    /// # Safety
    /// `out` must point to `[m, N]` f32s that no other thread writes in these panels' columns.
    unsafe fn run(&self, range: std::ops::Range<usize>, out: Out) {
        let (m, n, k) = (self.m, self.w.rows(), self.w.cols());
        let panel_bytes = self.w.panel_bytes();
        let size = self.w.dtype().size();
        let bytes = self.w.bytes();
        let width = range.len() * PANEL;
        let mut acc = vec![0.0f32; m * width];
        // The AVX-512 prefill's widened block, `[group][kc][16]` f32.
        let mut widened = if self.wide {
            vec![0.0f32; self.group * self.kc * PANEL]
        } else {
            Vec::new()
        };
        // The AVX-512 prefill: each group of four panels runs through all of K before the
        // next, so its weights are read as four sequential streams that the hardware
        // prefetcher follows (input blocks outer made every block a fresh 4 KiB stream, and
        // widening waited on memory: 9.6 % of a 2.8b prefill on AMD Zen 4). Each output's
        // chain still runs in k order.
        #[cfg(target_arch = "x86_64")]
        if self.wide {
            let mut p0 = range.start;
            while p0 < range.end {
                let g = self.group.min(range.end - p0);
                let mut k0 = 0;
                while k0 < k {
                    let kc = self.kc.min(k - k0);
                    let slice = kc * PANEL * size;
                    let panels = widened.chunks_exact_mut(kc * PANEL).take(g);
                    for (j, dst) in panels.enumerate() {
                        let start = (p0 + j) * panel_bytes + k0 * PANEL * size;
                        x86_512::widen(self.w.dtype(), &bytes[start..start + slice], dst);
                    }
                    // The next block's weights: the same panels' next inputs, else the next
                    // group's first ones; each row tile asks for a share of their lines.
                    let (next_p, next_k) = if k0 + kc < k {
                        (p0, k0 + kc)
                    } else {
                        (p0 + g, 0)
                    };
                    let next_g = self.group.min(range.end.saturating_sub(next_p));
                    let next_bytes = self.kc.min(k - next_k) * PANEL * size;
                    let tiles = m.div_ceil(MAX_ROWS);
                    let share = next_bytes.div_ceil(64).div_ceil(tiles) * 64;
                    let mut i0 = 0;
                    while i0 < m {
                        let rows = (m - i0).min(MAX_ROWS);
                        let from = i0 / MAX_ROWS * share;
                        for j in 0..next_g {
                            let start = (next_p + j) * panel_bytes + next_k * PANEL * size;
                            let lines = &bytes[start..start + next_bytes];
                            x86_512::prefetch(lines.get(from..).unwrap_or(&[]), share);
                        }
                        let xs = &self.xp[i0 * k + k0 * rows..i0 * k + (k0 + kc) * rows];
                        let tile = Tile {
                            ptr: acc
                                .as_mut_ptr()
                                .add(i0 * width + (p0 - range.start) * PANEL),
                            ld: width,
                            first: k0 == 0,
                        };
                        x86_512::wide_tile(xs, kc, rows, &widened, g, tile);
                        i0 += rows;
                    }
                    k0 += kc;
                }
                p0 += g;
            }
        }
        if !self.wide {
            let mut k0 = 0;
            loop {
                let kc = self.kc.min(k - k0);
                let mut p0 = range.start;
                while p0 < range.end {
                    let g = self.group.min(range.end - p0);
                    let mut i0 = 0;
                    while i0 < m {
                        let rows = (m - i0).min(MAX_ROWS);
                        // Row tile i0/6 starts at xp[i0·K] and is [K][rows].
                        let xs = &self.xp[i0 * k + k0 * rows..i0 * k + (k0 + kc) * rows];
                        let mut p = p0;
                        while p < p0 + g {
                            let np = tile_panels(rows).min(p0 + g - p);
                            let start = p * panel_bytes + k0 * PANEL * size;
                            let end = start + (np - 1) * panel_bytes + kc * PANEL * size;
                            let tile = Tile {
                                ptr: acc.as_mut_ptr().add(i0 * width + (p - range.start) * PANEL),
                                ld: width,
                                first: k0 == 0,
                            };
                            let block = Block {
                                xs,
                                kc,
                                rows,
                                w: &bytes[start..end],
                                panel_bytes,
                                np,
                                tile,
                            };
                            // A whole panel streamed from memory (see `Isa::one_row_prefetch`).
                            let prefetch = kc == k && (rows > 1 || self.isa.one_row_prefetch());
                            micro_tile(self.isa, self.w.dtype(), block, prefetch);
                            p += np;
                        }
                        i0 += rows;
                    }
                    p0 += g;
                }
                k0 += kc;
                if k0 >= k {
                    break;
                }
            }
        }
        // Every element is `chain + bias[n]`, then the epilogue (over the whole buffer: one
        // long vectorised run, where row pieces of a few panels would leave scalar tails);
        // columns past N (the last panel's padding) are dropped.
        let cols = range.start * PANEL..(range.end * PANEL).min(n);
        if let Some(b) = self.bias {
            for sums in acc.chunks_exact_mut(width) {
                for (s, b) in sums.iter_mut().zip(&b[cols.clone()]) {
                    *s += b;
                }
            }
        }
        if self.epilogue == Epilogue::Gelu {
            crate::cpu::ops::gelu_serial(self.isa, &mut acc);
        }
        for (i, sums) in acc.chunks_exact(width).enumerate() {
            let row =
                std::slice::from_raw_parts_mut(out.ptr.add(i * out.n + cols.start), cols.len());
            row.copy_from_slice(&sums[..cols.len()]);
        }
    }
}

/// Where a micro-tile's accumulators live: row `i`, panel `j` at `ptr + i·ld + 16j`.
#[derive(Clone, Copy)]
struct Tile {
    ptr: *mut f32,
    ld: usize,
    /// Start from zero (first input block) instead of the stored partial sums.
    first: bool,
}

/// One micro-tile's work: `tile[i, j] (+)= Σ_k xs[k][i]·panel_j[k][..16]` over a block of `kc`
/// inputs.
#[derive(Clone, Copy)]
struct Block<'a> {
    /// `[kc][rows]` activations.
    xs: &'a [f32],
    kc: usize,
    rows: usize,
    /// `np` panel slices of `[kc][16]` weights, `panel_bytes` apart.
    w: &'a [u8],
    panel_bytes: usize,
    np: usize,
    tile: Tile,
}

/// Runs `block` with the kernel set `isa`; `prefetch` asks the weight stream to be fetched ahead.
fn micro_tile(isa: Isa, dtype: Dtype, block: Block, prefetch: bool) {
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx512() {
        // SAFETY: an AVX-512 `Isa` is only built after detecting avx512f, avx2, fma and f16c
        // (see `Isa::avx512`); the tile pointer addresses accumulators owned by this task.
        unsafe {
            match dtype {
                Dtype::F32 => x86_512::dispatch::<x86_512::F32>(block, prefetch),
                Dtype::F16 => x86_512::dispatch::<x86_512::F16>(block, prefetch),
                Dtype::Bf16 => x86_512::dispatch::<x86_512::Bf16>(block, prefetch),
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: an AVX2 `Isa` is only built after detecting avx2, fma and f16c (it is
        // opaque: see `Isa::avx2`), so the target features are present; the tile pointer
        // addresses accumulators owned by this task.
        unsafe {
            match dtype {
                Dtype::F32 => x86::dispatch::<x86::F32>(block, prefetch),
                Dtype::F16 => x86::dispatch::<x86::F16>(block, prefetch),
                Dtype::Bf16 => x86::dispatch::<x86::Bf16>(block, prefetch),
            }
        }
        return;
    }
    let _ = (isa, prefetch);
    // SAFETY: as above.
    unsafe { portable::micro_tile(dtype, block) };
}

/// Any-CPU kernel with the same per-element chain (fused multiply-adds in `k` order).
mod portable {
    use super::{Block, MAX_ROWS, PANEL};
    use crate::weights::{widen_into, Dtype};

    /// # Safety
    /// `block.tile` must address `rows × np` writable accumulator rows of 16.
    pub unsafe fn micro_tile(dtype: Dtype, block: Block) {
        // `mul_add` is one instruction where the CPU has FMA and a (slow, exact) library call
        // where it does not; the same source built with `fma` enabled keeps it inline.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("fma") {
            return micro_tile_fma(dtype, block);
        }
        body(dtype, block);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma")]
    unsafe fn micro_tile_fma(dtype: Dtype, block: Block) {
        body(dtype, block);
    }

    #[inline(always)]
    unsafe fn body(dtype: Dtype, block: Block) {
        let Block {
            xs,
            kc,
            rows,
            w,
            panel_bytes,
            np,
            tile,
        } = block;
        let size = dtype.size();
        let mut wrow = [0.0f32; PANEL];
        for j in 0..np {
            let panel = &w[j * panel_bytes..];
            let mut acc = [[0.0f32; PANEL]; MAX_ROWS];
            if !tile.first {
                for (i, a) in acc.iter_mut().enumerate().take(rows) {
                    let src = tile.ptr.add(i * tile.ld + j * PANEL);
                    a.copy_from_slice(std::slice::from_raw_parts(src, PANEL));
                }
            }
            for kk in 0..kc {
                widen_into(
                    dtype,
                    &panel[kk * PANEL * size..(kk + 1) * PANEL * size],
                    &mut wrow,
                );
                for (i, a) in acc.iter_mut().enumerate().take(rows) {
                    let xv = xs[kk * rows + i];
                    for (a, &wv) in a.iter_mut().zip(&wrow) {
                        *a = xv.mul_add(wv, *a);
                    }
                }
            }
            for (i, a) in acc.iter().enumerate().take(rows) {
                let dst = tile.ptr.add(i * tile.ld + j * PANEL);
                std::slice::from_raw_parts_mut(dst, PANEL).copy_from_slice(a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Block, Tile, PANEL};
    use std::arch::x86_64::*;

    /// Loads eight weights and widens them to f32.
    pub trait Load {
        const SIZE: usize;
        /// # Safety
        /// `p` must point to 8 readable elements; the CPU must have avx2, fma and f16c.
        unsafe fn load8(p: *const u8) -> __m256;
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
    }
    impl Load for F16 {
        const SIZE: usize = 2;
        #[inline(always)]
        unsafe fn load8(p: *const u8) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
        }
    }
    impl Load for Bf16 {
        const SIZE: usize = 2;
        #[inline(always)]
        unsafe fn load8(p: *const u8) -> __m256 {
            let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
        }
    }

    /// # Safety
    /// The CPU must support avx2, fma and f16c; `xs` holds `kc·rows` values and `w` holds
    /// `np` panel slices of `kc·16` elements `panel_bytes` apart; `tile` addresses `rows × np`
    /// writable accumulator rows; `(rows, np)` is a shape `tile_panels` allows.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dispatch<L: Load>(block: Block, prefetch: bool) {
        let (xs, kc, rows, w) = (block.xs, block.kc, block.rows, block.w);
        let (panel_bytes, np, tile) = (block.panel_bytes, block.np, block.tile);
        assert!(xs.len() >= rows * kc && w.len() >= (np - 1) * panel_bytes + kc * PANEL * L::SIZE);
        let (x, w) = (xs.as_ptr(), w.as_ptr());
        match (rows, np, prefetch) {
            (1, 1, false) => kernel::<L, 1, 1, false>(x, kc, w, panel_bytes, tile),
            (1, 1, true) => kernel::<L, 1, 1, true>(x, kc, w, panel_bytes, tile),
            (1, 2, false) => kernel::<L, 1, 2, false>(x, kc, w, panel_bytes, tile),
            (1, 2, true) => kernel::<L, 1, 2, true>(x, kc, w, panel_bytes, tile),
            (1, 3, false) => kernel::<L, 1, 3, false>(x, kc, w, panel_bytes, tile),
            (1, 3, true) => kernel::<L, 1, 3, true>(x, kc, w, panel_bytes, tile),
            (1, 4, false) => kernel::<L, 1, 4, false>(x, kc, w, panel_bytes, tile),
            (1, 4, true) => kernel::<L, 1, 4, true>(x, kc, w, panel_bytes, tile),
            (2, 1, false) => kernel::<L, 2, 1, false>(x, kc, w, panel_bytes, tile),
            (2, 1, true) => kernel::<L, 2, 1, true>(x, kc, w, panel_bytes, tile),
            (2, 2, false) => kernel::<L, 2, 2, false>(x, kc, w, panel_bytes, tile),
            (2, 2, true) => kernel::<L, 2, 2, true>(x, kc, w, panel_bytes, tile),
            (2, 3, false) => kernel::<L, 2, 3, false>(x, kc, w, panel_bytes, tile),
            (2, 3, true) => kernel::<L, 2, 3, true>(x, kc, w, panel_bytes, tile),
            (3, 1, false) => kernel::<L, 3, 1, false>(x, kc, w, panel_bytes, tile),
            (3, 1, true) => kernel::<L, 3, 1, true>(x, kc, w, panel_bytes, tile),
            (3, 2, false) => kernel::<L, 3, 2, false>(x, kc, w, panel_bytes, tile),
            (3, 2, true) => kernel::<L, 3, 2, true>(x, kc, w, panel_bytes, tile),
            (4, 1, false) => kernel::<L, 4, 1, false>(x, kc, w, panel_bytes, tile),
            (4, 1, true) => kernel::<L, 4, 1, true>(x, kc, w, panel_bytes, tile),
            (5, 1, false) => kernel::<L, 5, 1, false>(x, kc, w, panel_bytes, tile),
            (5, 1, true) => kernel::<L, 5, 1, true>(x, kc, w, panel_bytes, tile),
            (6, 1, false) => kernel::<L, 6, 1, false>(x, kc, w, panel_bytes, tile),
            (6, 1, true) => kernel::<L, 6, 1, true>(x, kc, w, panel_bytes, tile),
            _ => unreachable!("micro-tile {rows}×{np}"),
        }
    }

    /// How far ahead (bytes) a verify-sized tile prefetches its weight stream: with 2–6 rows
    /// the FMAs between loads leave the hardware prefetcher behind. Measured on the 2.8b
    /// shapes ([10240, 2560], [2560, 10240], [50304, 2560] f16, 5 rows vs 1, alternating in one
    /// process): no prefetch 1.6×; one prefetch per 32-byte step at 2 KiB, 1.17–1.34×; the
    /// loop unrolled to 64 bytes with two lines asked for at 2 or 4 KiB, 1.09–1.26× (one line
    /// per iteration, 1.21–1.33×). In the whole 2.8b verify step: 1.27× → 1.14× a decode step.
    /// One-row (decode) tiles stream fast enough on their own on AMD Zen 3 and lose a little
    /// from the extra instructions (see `Isa::one_row_prefetch`); K-blocked prefill tiles
    /// read their slice from L1.
    const PREFETCH: usize = 4096;

    /// `R` rows × `P` panels: `2·R·P` accumulators, one FMA chain per output in `k` order.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn kernel<L: Load, const R: usize, const P: usize, const PF: bool>(
        x: *const f32,
        kc: usize,
        w: *const u8,
        panel_bytes: usize,
        tile: Tile,
    ) {
        let at = |i: usize, j: usize| tile.ptr.add(i * tile.ld + j * PANEL);
        let mut acc = [[[_mm256_setzero_ps(); 2]; P]; R];
        if !tile.first {
            for (i, acc_i) in acc.iter_mut().enumerate() {
                for (j, a) in acc_i.iter_mut().enumerate() {
                    *a = [_mm256_loadu_ps(at(i, j)), _mm256_loadu_ps(at(i, j).add(8))];
                }
            }
        }
        // One step: input k of every row against sixteen outputs of every panel.
        // (A macro, not a closure: closures do not inherit the target features.)
        macro_rules! step {
            ($acc:expr, $xk:expr, $wk:expr) => {
                for j in 0..P {
                    let wp = $wk.add(j * panel_bytes);
                    let w0 = L::load8(wp);
                    let w1 = L::load8(wp.add(8 * L::SIZE));
                    for (i, acc_i) in $acc.iter_mut().enumerate() {
                        let b = _mm256_broadcast_ss(&*$xk.add(i));
                        acc_i[j][0] = _mm256_fmadd_ps(b, w0, acc_i[j][0]);
                        acc_i[j][1] = _mm256_fmadd_ps(b, w1, acc_i[j][1]);
                    }
                }
            };
        }
        let (mut xk, mut wk) = (x, w);
        let mut left = kc;
        if PF {
            // Two steps (64 bytes of each f16 panel, 128 of f32) per iteration, each asking
            // for the two cache lines `PREFETCH` ahead — for 16-bit weights every line is
            // asked for twice, which measured faster than once (see `PREFETCH`).
            while left >= 2 {
                for j in 0..P {
                    let ahead = wk.add(j * panel_bytes + PREFETCH);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                    _mm_prefetch::<_MM_HINT_T0>(ahead.add(64).cast());
                }
                step!(acc, xk, wk);
                step!(acc, xk.add(R), wk.add(PANEL * L::SIZE));
                xk = xk.add(2 * R);
                wk = wk.add(2 * PANEL * L::SIZE);
                left -= 2;
            }
        }
        for _ in 0..left {
            step!(acc, xk, wk);
            xk = xk.add(R);
            wk = wk.add(PANEL * L::SIZE);
        }
        for (i, acc_i) in acc.iter().enumerate() {
            for (j, a) in acc_i.iter().enumerate() {
                _mm256_storeu_ps(at(i, j), a[0]);
                _mm256_storeu_ps(at(i, j).add(8), a[1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_512 {
    use super::{Block, Tile, MAX_ROWS, PANEL};
    use crate::weights::Dtype;
    use std::arch::x86_64::*;

    /// Loads one panel row (sixteen weights) and widens it to f32.
    pub trait Load {
        const SIZE: usize;
        /// # Safety
        /// `p` must point to 16 readable elements; the CPU must have avx512f.
        unsafe fn load16(p: *const u8) -> __m512;
    }

    pub struct F32;
    pub struct F16;
    pub struct Bf16;

    impl Load for F32 {
        const SIZE: usize = 4;
        #[inline(always)]
        unsafe fn load16(p: *const u8) -> __m512 {
            _mm512_loadu_ps(p.cast())
        }
    }
    impl Load for F16 {
        const SIZE: usize = 2;
        #[inline(always)]
        unsafe fn load16(p: *const u8) -> __m512 {
            _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
        }
    }
    impl Load for Bf16 {
        const SIZE: usize = 2;
        #[inline(always)]
        unsafe fn load16(p: *const u8) -> __m512 {
            let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
        }
    }

    /// `dst = bytes` widened to f32 (exact for every dtype, so the same values as
    /// [`crate::weights::widen_into`]); `bytes` holds `dst.len()` elements, a multiple of 16.
    pub fn widen(dtype: Dtype, bytes: &[u8], dst: &mut [f32]) {
        assert!(dst.len().is_multiple_of(PANEL) && bytes.len() == dst.len() * dtype.size());
        // SAFETY: only called for an AVX-512 `Isa`, built after detecting avx512f; the
        // lengths are checked above.
        unsafe {
            match dtype {
                Dtype::F32 => widen_as::<F32>(bytes, dst),
                Dtype::F16 => widen_as::<F16>(bytes, dst),
                Dtype::Bf16 => widen_as::<Bf16>(bytes, dst),
            }
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn widen_as<L: Load>(bytes: &[u8], dst: &mut [f32]) {
        for (i, out) in dst.chunks_exact_mut(PANEL).enumerate() {
            _mm512_storeu_ps(
                out.as_mut_ptr(),
                L::load16(bytes.as_ptr().add(i * PANEL * L::SIZE)),
            );
        }
    }

    /// [`pack_six`]'s lane tables, `[output vector j][row pair p][lane e]`. Lane e of output
    /// vector j is flat element f = 16j + e: input c = f / 6 of row i = f % 6. Pair p (rows 2p,
    /// 2p + 1) supplies the lanes whose row is in it: permute index c, or 16 + c for the pair's
    /// second row; `SIX_FROM[j][p]` marks those lanes.
    const SIX_INDEX: [[[i32; PANEL]; 3]; MAX_ROWS] = six_tables().0;
    const SIX_FROM: [[u16; 3]; MAX_ROWS] = six_tables().1;

    #[allow(clippy::type_complexity)] // the two tables above
    const fn six_tables() -> ([[[i32; PANEL]; 3]; MAX_ROWS], [[u16; 3]; MAX_ROWS]) {
        const ROWS: usize = MAX_ROWS;
        let mut index = [[[0i32; PANEL]; 3]; ROWS];
        let mut from = [[0u16; 3]; ROWS];
        let mut j = 0;
        while j < ROWS {
            let mut e = 0;
            while e < PANEL {
                let f = PANEL * j + e;
                let (c, i) = (f / ROWS, f % ROWS);
                index[j][i / 2][e] = (c + PANEL * (i % 2)) as i32;
                from[j][i / 2] |= 1 << e;
                e += 1;
            }
            j += 1;
        }
        (index, from)
    }

    /// `dst[kk·6 + i] = src[i·k + kk]` for the six rows of `src` (`[6][k]`) and the first
    /// `k / 16 · 16` inputs; returns how many inputs it packed. Each sixteen inputs are six
    /// row loads, and each of the six output vectors gathers its lanes from row pairs
    /// (`vpermt2ps`) blended by row.
    ///
    /// # Safety
    /// Only for an AVX-512 `Isa`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pack_six(src: &[f32], k: usize, dst: &mut [f32]) -> usize {
        const ROWS: usize = MAX_ROWS;
        assert!(src.len() == ROWS * k && dst.len() == ROWS * k);
        let index = SIX_INDEX.map(|v| v.map(|lanes| _mm512_loadu_si512(lanes.as_ptr().cast())));
        let full = k / PANEL * PANEL;
        let p = src.as_ptr();
        let mut kk = 0;
        while kk < full {
            let r: [__m512; ROWS] = std::array::from_fn(|i| _mm512_loadu_ps(p.add(i * k + kk)));
            for j in 0..ROWS {
                let pair = |q: usize| _mm512_permutex2var_ps(r[2 * q], index[j][q], r[2 * q + 1]);
                let v = _mm512_mask_blend_ps(SIX_FROM[j][1], pair(0), pair(1));
                let v = _mm512_mask_blend_ps(SIX_FROM[j][2], v, pair(2));
                _mm512_storeu_ps(dst.as_mut_ptr().add(kk * ROWS + PANEL * j), v);
            }
            kk += PANEL;
        }
        full
    }

    /// Asks for the cache lines of the first `len` bytes of `bytes` (fewer if it is shorter).
    pub fn prefetch(bytes: &[u8], len: usize) {
        for line in bytes[..len.min(bytes.len())].chunks(64) {
            // SAFETY: a prefetch never faults, and the address is inside `bytes`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
        }
    }

    /// One row tile of the prefill over a widened block: `tile[i, j] (+)= Σ_k xs[k][i]·
    /// widened[j][k][..16]` for `rows` rows and `np ≤ 4` panels.
    ///
    /// # Safety
    /// Only for an AVX-512 `Isa`; `xs` holds `kc·rows` values, `widened` `np` panels of
    /// `kc·16`, and `tile` addresses `rows × np` writable accumulator rows.
    pub unsafe fn wide_tile(
        xs: &[f32],
        kc: usize,
        rows: usize,
        widened: &[f32],
        np: usize,
        tile: Tile,
    ) {
        assert!(rows <= MAX_ROWS && np <= super::WIDE_PANELS && xs.len() >= rows * kc);
        assert!(widened.len() >= np * kc * PANEL);
        let block = Block {
            xs,
            kc,
            rows,
            w: std::slice::from_raw_parts(widened.as_ptr().cast(), widened.len() * 4),
            panel_bytes: kc * PANEL * 4,
            np,
            tile,
        };
        run::<F32>(block, false);
    }

    /// The streaming tiles (`M ≤ 6`), the same shapes as the AVX2 set.
    ///
    /// # Safety
    /// The CPU must support avx512f (an AVX-512 `Isa`); `xs` holds `kc·rows` values and `w`
    /// `np` panel slices of `kc·16` elements `panel_bytes` apart; `tile` addresses `rows × np`
    /// writable accumulator rows, `rows ≤ 6`, `np ≤ 4`.
    pub unsafe fn dispatch<L: Load>(block: Block, prefetch: bool) {
        run::<L>(block, prefetch)
    }

    unsafe fn run<L: Load>(block: Block, prefetch: bool) {
        let (xs, kc, rows, w) = (block.xs, block.kc, block.rows, block.w);
        let (panel_bytes, np, tile) = (block.panel_bytes, block.np, block.tile);
        assert!(xs.len() >= rows * kc && w.len() >= (np - 1) * panel_bytes + kc * PANEL * L::SIZE);
        let (x, w) = (xs.as_ptr(), w.as_ptr());
        // Whether one-row (decode) tiles prefetch is the `Isa`'s choice: measured with the
        // 2.8b shapes, two alternating rounds in one process — on the Sapphire Rapids guest
        // M = 1 matmuls 21–29 → 25–27 GB/s and the decode step 216 / 232 → 197 / 223 ms
        // with it; on the AMD EPYC Zen 4 guest (three rounds, 16 steps each, `isa_ab`
        // example) 278 / 233 / 249 ms with it and 188 / 192 / 195 ms without.
        macro_rules! by_np {
            ($r:literal) => {
                match (np, prefetch) {
                    (1, false) => kernel::<L, $r, 1, false>(x, kc, w, panel_bytes, tile),
                    (2, false) => kernel::<L, $r, 2, false>(x, kc, w, panel_bytes, tile),
                    (3, false) => kernel::<L, $r, 3, false>(x, kc, w, panel_bytes, tile),
                    (4, false) => kernel::<L, $r, 4, false>(x, kc, w, panel_bytes, tile),
                    (1, true) => kernel::<L, $r, 1, true>(x, kc, w, panel_bytes, tile),
                    (2, true) => kernel::<L, $r, 2, true>(x, kc, w, panel_bytes, tile),
                    (3, true) => kernel::<L, $r, 3, true>(x, kc, w, panel_bytes, tile),
                    (4, true) => kernel::<L, $r, 4, true>(x, kc, w, panel_bytes, tile),
                    _ => unreachable!("micro-tile {rows}×{np}"),
                }
            };
        }
        match rows {
            1 => by_np!(1),
            2 => by_np!(2),
            3 => by_np!(3),
            4 => by_np!(4),
            5 => by_np!(5),
            6 => by_np!(6),
            _ => unreachable!("micro-tile {rows}×{np}"),
        }
    }

    /// Prefetch distance of verify-sized tiles (see the AVX2 set's `PREFETCH`).
    const PREFETCH: usize = 4096;

    /// `R` rows × `P` panels: `R·P` accumulators, one FMA chain per output in `k` order.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn kernel<L: Load, const R: usize, const P: usize, const PF: bool>(
        x: *const f32,
        kc: usize,
        w: *const u8,
        panel_bytes: usize,
        tile: Tile,
    ) {
        let at = |i: usize, j: usize| tile.ptr.add(i * tile.ld + j * PANEL);
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        if !tile.first {
            for (i, acc_i) in acc.iter_mut().enumerate() {
                for (j, a) in acc_i.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(at(i, j));
                }
            }
        }
        // One step: input k of every row against the sixteen outputs of every panel.
        macro_rules! step {
            ($acc:expr, $xk:expr, $wk:expr) => {
                let mut wv = [_mm512_setzero_ps(); P];
                for (j, v) in wv.iter_mut().enumerate() {
                    *v = L::load16($wk.add(j * panel_bytes));
                }
                for (i, acc_i) in $acc.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*$xk.add(i));
                    for (a, v) in acc_i.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(b, *v, *a);
                    }
                }
            };
        }
        let (mut xk, mut wk) = (x, w);
        let mut left = kc;
        if PF {
            // Two steps (64 bytes of each 16-bit panel) per iteration, two lines asked for.
            while left >= 2 {
                for j in 0..P {
                    let ahead = wk.add(j * panel_bytes + PREFETCH);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                    _mm_prefetch::<_MM_HINT_T0>(ahead.add(64).cast());
                }
                step!(acc, xk, wk);
                step!(acc, xk.add(R), wk.add(PANEL * L::SIZE));
                xk = xk.add(2 * R);
                wk = wk.add(2 * PANEL * L::SIZE);
                left -= 2;
            }
        }
        for _ in 0..left {
            step!(acc, xk, wk);
            xk = xk.add(R);
            wk = wk.add(PANEL * L::SIZE);
        }
        for (i, acc_i) in acc.iter().enumerate() {
            for (j, a) in acc_i.iter().enumerate() {
                _mm512_storeu_ps(at(i, j), *a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::Matrix;

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn matrix(dtype: Dtype, n: usize, k: usize, seed: u64) -> Matrix {
        let v = values(n * k, seed);
        match dtype {
            Dtype::F32 => Matrix::owned_f32(n, k, v),
            Dtype::F16 => Matrix::owned16(
                dtype,
                n,
                k,
                v.iter()
                    .map(|&x| half::f16::from_f32(x).to_bits())
                    .collect(),
            ),
            Dtype::Bf16 => Matrix::owned16(
                dtype,
                n,
                k,
                v.iter()
                    .map(|&x| half::bf16::from_f32(x).to_bits())
                    .collect(),
            ),
        }
    }

    #[test]
    fn packed_rows_are_the_same_on_every_kernel_set() {
        // Tiles of six and a partial last one; K below, at and past sixteens.
        for (m, k) in [(2, 40), (6, 16), (7, 5), (13, 37), (128, 512), (12, 2048)] {
            let x = values(m * k, (m * 1000 + k) as u64);
            // Row tile t = rows 6t.. as [K][rows], from the definition.
            let mut want = Vec::with_capacity(m * k);
            for i0 in (0..m).step_by(MAX_ROWS) {
                let rows = (m - i0).min(MAX_ROWS);
                for kk in 0..k {
                    for i in 0..rows {
                        want.push(x[(i0 + i) * k + kk]);
                    }
                }
            }
            for isa in Isa::available() {
                let got = pack_rows(isa, &x, m, k);
                assert!(
                    crate::cpu::same_bits(&got, &want),
                    "{isa:?}: pack_rows of {m}×{k} differs"
                );
            }
        }
    }

    #[test]
    fn matches_f64_reference_is_batch_invariant_and_equal_across_kernel_sets() {
        let mut worst = 0.0f64;
        for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
            for (n, k) in [(1, 1), (17, 7), (16, 300), (50, 600), (100, 33), (33, 513)] {
                let w = matrix(dtype, n, k, (n * 31 + k) as u64);
                let packed = PackedMatrix::pack(&w).unwrap();
                let bias = values(n, 7);
                let x = values(14 * k, 11);
                // f64 reference of all 14 rows.
                let mut wf = vec![0.0f32; n * k];
                for r in 0..n {
                    w.row_f32(r, &mut wf[r * k..(r + 1) * k]);
                }
                let want: Vec<f64> = (0..14 * n)
                    .map(|e| {
                        let (i, j) = (e / n, e % n);
                        let dot: f64 = (0..k)
                            .map(|kk| x[i * k + kk] as f64 * wf[j * k + kk] as f64)
                            .sum();
                        dot + bias[j] as f64
                    })
                    .collect();
                let mut first: Option<Vec<f32>> = None;
                let variants = Isa::available()
                    .into_iter()
                    .flat_map(|isa| [false, true].map(|on| isa.with_one_row_prefetch(on)));
                for isa in variants {
                    let mut alone = vec![0.0f32; 14 * n];
                    for i in 0..14 {
                        let row = &mut alone[i * n..(i + 1) * n];
                        linear(isa, &x[i * k..(i + 1) * k], 1, &packed, Some(&bias), row);
                    }
                    for m in [2, 5, 6, 7, 13, 14] {
                        let mut y = vec![f32::NAN; m * n];
                        linear(isa, &x[..m * k], m, &packed, Some(&bias), &mut y);
                        assert!(
                            crate::cpu::same_bits(&y, &alone[..m * n]),
                            "{dtype:?} {isa:?} [{n}, {k}]: {m} rows differ from one row at a time"
                        );
                    }
                    for (got, want) in alone.iter().zip(&want) {
                        let diff = (*got as f64 - want).abs();
                        worst = worst.max(diff);
                        assert!(
                            diff <= 1e-4 + 1e-5 * want.abs(),
                            "{dtype:?} {isa:?} [{n}, {k}]: {got} vs {want}"
                        );
                    }
                    match &first {
                        None => first = Some(alone),
                        Some(f) => assert!(
                            crate::cpu::same_bits(f, &alone),
                            "{dtype:?} [{n}, {k}]: kernel sets disagree ({isa:?}, one-row \
                             prefetch {})",
                            isa.one_row_prefetch()
                        ),
                    }
                }
            }
        }
        println!("largest |linear − f64 reference| = {worst:.3e}");
    }

    #[test]
    fn gelu_epilogue_gives_the_bits_of_linear_then_gelu() {
        let (n, k) = (70, 40);
        let w = PackedMatrix::pack(&matrix(Dtype::F16, n, k, 5)).unwrap();
        let bias = values(n, 9);
        for isa in Isa::available() {
            for m in [1, 5, 13] {
                let x: Vec<f32> = values(m * k, 3).iter().map(|v| 4.0 * v).collect();
                let mut want = vec![0.0f32; m * n];
                linear(isa, &x, m, &w, Some(&bias), &mut want);
                crate::cpu::ops::gelu(isa, &mut want);
                let mut got = vec![f32::NAN; m * n];
                linear_then(isa, &x, m, &w, Some(&bias), Epilogue::Gelu, &mut got);
                assert!(
                    crate::cpu::same_bits(&got, &want),
                    "{isa:?} m = {m}: fused GELU differs"
                );
            }
        }
    }
}
