//! The tensor-core linear (`kernels/linear_tc.cu`): which linear kernel a backend runs
//! ([`LinearKernel`]), the launch plan (the fixed split-K, a function of N and K only, and the
//! row chunks a scratch allows), its scratch ([`LinearTcScratch`]) and the launcher
//! [`GpuContext::linear_tc_f16`].
//!
//! Batch invariance: the plan's `splits` / `tiles_per_split` never depend on M, row chunks
//! start at multiples of 128 rows, and both kernel instances (16-row and 128-row blocks)
//! reduce every output in the same order; see the header of `kernels/linear_tc.cu`.

use anyhow::{anyhow, bail, ensure, Context, Result};
use cudarc::driver::{CudaSlice, DevicePtrMut, LaunchConfig, PushKernelArg};
use half::f16;

use crate::context::GpuContext;
use crate::ops::{launch_err, opt_ptr, opt_ptr_mut, In, LinearOut, Out, NULL};

/// Launch constants shared with `kernels/linear_tc.cu` (a unit test checks each `#define`).
pub mod consts {
    /// `LTC_THREADS`: threads per block (4 warps).
    pub const LTC_THREADS: u32 = 128;
    /// `LTC_BK`: k per k-tile.
    pub const LTC_BK: usize = 32;
    /// `LTC16_BM`: rows per block of `linear_tc16_f16`.
    pub const LTC16_BM: usize = 16;
    /// `LTC16_BN`: columns per block of `linear_tc16_f16`.
    pub const LTC16_BN: usize = 128;
    /// `LTC128_BM`: rows per block of `linear_tc128_f16`.
    pub const LTC128_BM: usize = 128;
    /// `LTC128_BN`: columns per block of `linear_tc128_f16`.
    pub const LTC128_BN: usize = 64;
}
use consts::*;

/// Blocks the split-K aims for at small M: two per SM of a 132-SM H100/H200. A constant, not
/// the device's SM count, so the reduction order is the same on every GPU.
pub const TARGET_BLOCKS: usize = 264;
/// Fewest k-tiles (of [`LTC_BK`]) per split: 4 × 32 = 128 k.
pub const MIN_SPLIT_TILES: usize = 4;
/// Largest row count handled by the 16-row kernel; more rows use the 128-row one.
pub const SMALL_MAX_ROWS: usize = 16;

/// Which kernel a backend's `linear` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinearKernel {
    /// `linear_f16` (`kernels/linear.cu`): CUDA cores, M <= 16 per call. The default.
    #[default]
    Simt,
    /// `linear_tc16_f16` / `linear_tc128_f16` (`kernels/linear_tc.cu`): tensor cores
    /// (sm_80+), any M.
    TensorCore,
}

/// The K split of an [N, K] weight: `splits` ranges of `tiles_per_split` k-tiles (the last
/// may be shorter, none is empty). Depends on N and K only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Number of K ranges S.
    pub splits: usize,
    /// k-tiles of [`LTC_BK`] per range.
    pub tiles_per_split: usize,
}

/// The fixed split-K of a weight [n, k]: enough blocks to fill the GPU at M <= 16
/// ([`TARGET_BLOCKS`] over the 128-column tiles), each range at least [`MIN_SPLIT_TILES`].
pub fn split_for(n: usize, k: usize) -> Split {
    let k_tiles = k.div_ceil(LTC_BK).max(1);
    let n_tiles = n.div_ceil(LTC16_BN).max(1);
    let want = TARGET_BLOCKS.div_ceil(n_tiles);
    let most = (k_tiles / MIN_SPLIT_TILES).max(1);
    let s = want.clamp(1, most);
    let per = k_tiles.div_ceil(s);
    Split {
        splits: k_tiles.div_ceil(per),
        tiles_per_split: per,
    }
}

/// One kernel launch of a [`plan`]: rows `[row0, row0 + rows)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcLaunch {
    /// First row.
    pub row0: usize,
    /// Rows in this launch.
    pub rows: usize,
    /// `linear_tc128_f16` (else `linear_tc16_f16`).
    pub wide: bool,
    /// Grid (column tiles, row tiles, splits).
    pub grid: (usize, usize, usize),
}

impl TcLaunch {
    /// Output tiles of this launch (counters it needs).
    pub fn tiles(&self) -> usize {
        self.grid.0 * self.grid.1
    }
}

/// The launches of one tensor-core linear of m rows over a weight [n, k], given a scratch of
/// `part_len` f32 and `counters_len` u32: the split of [`split_for`], and the rows cut into
/// chunks of a multiple of 128 rows whose partials fit (one chunk when S = 1).
pub fn plan(
    m: usize,
    n: usize,
    k: usize,
    part_len: usize,
    counters_len: usize,
) -> Result<(Split, Vec<TcLaunch>)> {
    ensure!(
        m > 0 && n > 0 && k > 0,
        "linear_tc: empty shape {m}x{n}x{k}"
    );
    let split = split_for(n, k);
    let chunk = if split.splits == 1 {
        m
    } else {
        let per_row = split.splits * n;
        let fit = part_len / per_row;
        if fit >= m {
            m
        } else {
            let c = fit / LTC128_BM * LTC128_BM;
            ensure!(
                c > 0,
                "linear_tc: the scratch holds {part_len} f32 partials; a {n}x{k} weight \
                 (split {} ways) needs {} for {} rows",
                split.splits,
                per_row * m.min(LTC128_BM),
                m.min(LTC128_BM)
            );
            c
        }
    };
    let mut launches = Vec::new();
    let mut row0 = 0;
    while row0 < m {
        let rows = chunk.min(m - row0);
        let wide = rows > SMALL_MAX_ROWS;
        let (bm, bn) = if wide {
            (LTC128_BM, LTC128_BN)
        } else {
            (LTC16_BM, LTC16_BN)
        };
        let l = TcLaunch {
            row0,
            rows,
            wide,
            grid: (n.div_ceil(bn), rows.div_ceil(bm), split.splits),
        };
        ensure!(
            split.splits == 1 || l.tiles() <= counters_len,
            "linear_tc: {} output tiles but only {counters_len} counters",
            l.tiles()
        );
        ensure!(l.grid.1 <= 65535, "linear_tc: {rows} rows exceed the grid");
        launches.push(l);
        row0 += rows;
    }
    Ok((split, launches))
}

/// Device scratch of the tensor-core linear: f32 split partials and u32 tile counters (zero
/// between launches: every launch leaves them zero).
pub struct LinearTcScratch {
    part: CudaSlice<f32>,
    counters: CudaSlice<u32>,
}

impl LinearTcScratch {
    /// Default partials: 16 Mi f32 (64 MiB), e.g. 2.8b's 4h_to_h (S = 14, N = 2560) in chunks
    /// of 384 rows.
    pub const DEFAULT_PART: usize = 16 << 20;
    /// Default counters (256 KiB).
    pub const DEFAULT_COUNTERS: usize = 64 << 10;

    /// Scratch of `part` f32 partials and `counters` zeroed counters.
    pub fn new(gpu: &GpuContext, part: usize, counters: usize) -> Result<Self> {
        ensure!(part > 0 && counters > 0, "linear_tc scratch: empty");
        Ok(Self {
            part: gpu.zeros(part)?,
            counters: gpu.zeros(counters)?,
        })
    }
}

impl GpuContext {
    /// Tensor-core matrix product for any m: `out = x · Wᵀ + bias` with the epilogue chosen
    /// by `out` (as [`GpuContext::linear_f16`]).
    ///
    /// x: f16 [m, k], w: f16 [n, k] (exact), bias: f16 \[n\] (exact) or none. k must be a
    /// multiple of 8 and x, w 16-byte aligned; the device sm_80 or newer.
    /// Batch invariant: a row's result does not depend on m (nor on the row's position).
    #[allow(clippy::too_many_arguments)]
    pub fn linear_tc_f16(
        &self,
        x: In<f16>,
        w: In<f16>,
        bias: Option<In<f16>>,
        out: LinearOut,
        scratch: &mut LinearTcScratch,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        let cc = self.compute_capability();
        ensure!(
            cc.0 >= 8,
            "linear_tc_f16 needs tensor cores of sm_80 or newer; this device is sm_{}{}",
            cc.0,
            cc.1
        );
        ensure!(
            k > 0 && k % 8 == 0,
            "linear_tc_f16: k = {k} must be a positive multiple of 8"
        );
        ensure!(
            x.len() >= m * k,
            "linear_tc_f16 x: needs {} elements",
            m * k
        );
        ensure!(
            w.len() == n * k,
            "linear_tc_f16 weight: expected exactly {} elements, got {}",
            n * k,
            w.len()
        );
        if let Some(b) = bias {
            ensure!(
                b.len() == n,
                "linear_tc_f16 bias: expected {n} elements, got {}",
                b.len()
            );
        }
        let (mode, out_h, out_f): (i32, Option<Out<f16>>, Option<Out<f32>>) = match out {
            LinearOut::F16(o) => (0, Some(o), None),
            LinearOut::F16Gelu(o) => (1, Some(o), None),
            LinearOut::F32(o) => (2, None, Some(o)),
            LinearOut::AddF32(o) => (3, None, Some(o)),
        };
        let out_len = out_h.as_ref().map_or(0, |o| o.len()) + out_f.as_ref().map_or(0, |o| o.len());
        ensure!(
            out_len >= m * n,
            "linear_tc_f16 out: needs at least {} elements, got {out_len}",
            m * n
        );
        let (split, launches) = plan(m, n, k, scratch.part.len(), scratch.counters.len())?;
        let i32_of = |what: &str, v: usize| crate::ops::to_i32(what, v).context("linear_tc_f16");
        let (n_i, k_i) = (i32_of("n", n)?, i32_of("k", k)?);
        i32_of("n * k", n * k)?;
        i32_of("m * n", m * n)?;
        let (tps_i, s_i) = (
            i32_of("tiles_per_split", split.tiles_per_split)?,
            i32_of("splits", split.splits)?,
        );

        let s = self.stream();
        let (p_x, _gx) = x.device_ptr(s);
        let (p_w, _gw) = w.device_ptr(s);
        ensure!(
            p_x % 16 == 0 && p_w % 16 == 0,
            "linear_tc_f16: x and weight must be 16-byte aligned"
        );
        let (p_b, _gb) = opt_ptr(bias, s);
        let (p_oh, _goh) = opt_ptr_mut(out_h, s);
        let (p_of, _gof) = opt_ptr_mut(out_f, s);
        let (p_part, _gp) = scratch.part.device_ptr_mut(s);
        let (p_cnt, _gc) = scratch.counters.device_ptr_mut(s);
        for l in &launches {
            let name = if l.wide {
                "linear_tc128_f16"
            } else {
                "linear_tc16_f16"
            };
            let f = self.function(name)?;
            let r0 = l.row0 as u64;
            let px = p_x + r0 * k as u64 * 2;
            let poh = if p_oh == NULL {
                NULL
            } else {
                p_oh + r0 * n as u64 * 2
            };
            let pof = if p_of == NULL {
                NULL
            } else {
                p_of + r0 * n as u64 * 4
            };
            let m_i = i32_of("rows", l.rows)?;
            let u32_of = |v: usize| {
                u32::try_from(v).map_err(|_| anyhow!("linear_tc_f16: grid {v} too large"))
            };
            let cfg = LaunchConfig {
                grid_dim: (u32_of(l.grid.0)?, u32_of(l.grid.1)?, u32_of(l.grid.2)?),
                block_dim: (LTC_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = s.launch_builder(f);
            b.arg(&px)
                .arg(&p_w)
                .arg(&p_b)
                .arg(&poh)
                .arg(&pof)
                .arg(&p_part)
                .arg(&p_cnt)
                .arg(&m_i)
                .arg(&n_i)
                .arg(&k_i)
                .arg(&tps_i)
                .arg(&s_i)
                .arg(&mode);
            // SAFETY: argument list matches linear_tc.cu; lengths, alignment and the
            // scratch's capacity (plan) checked above.
            unsafe { b.launch(cfg) }.map_err(launch_err(name))?;
        }
        Ok(())
    }
}

/// Bail unless `kernel` can run on a device of compute capability `cc`.
pub fn check_supported(kernel: LinearKernel, cc: (i32, i32)) -> Result<()> {
    if kernel == LinearKernel::TensorCore && cc.0 < 8 {
        bail!(
            "the tensor-core linear needs sm_80 or newer; this device is sm_{}{}",
            cc.0,
            cc.1
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::KERNEL_SOURCES;

    fn define(name: &str) -> Option<usize> {
        let src = KERNEL_SOURCES
            .iter()
            .find(|k| k.file == "linear_tc.cu")
            .expect("linear_tc.cu is registered")
            .source;
        src.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some("#define") && it.next() == Some(name))
                .then(|| it.next().and_then(|v| v.parse().ok()))
                .flatten()
        })
    }

    #[test]
    fn constants_match_the_source() {
        assert_eq!(define("LTC_THREADS"), Some(LTC_THREADS as usize));
        assert_eq!(define("LTC_BK"), Some(LTC_BK));
        assert_eq!(define("LTC16_BM"), Some(LTC16_BM));
        assert_eq!(define("LTC16_BN"), Some(LTC16_BN));
        assert_eq!(define("LTC128_BM"), Some(LTC128_BM));
        assert_eq!(define("LTC128_BN"), Some(LTC128_BN));
    }

    #[test]
    fn splits_cover_k_and_ignore_m() {
        for &(n, k) in &[
            (7680, 2560),
            (2560, 2560),
            (10240, 2560),
            (2560, 10240),
            (50304, 2560),
            (1536, 512),
            (512, 2048),
            (200, 136),
            (8, 8),
        ] {
            let s = split_for(n, k);
            let k_tiles = k.div_ceil(LTC_BK);
            assert!(s.splits >= 1 && s.tiles_per_split >= 1, "{n}x{k}: {s:?}");
            // Every range non-empty, together exactly the k-tiles.
            assert!(
                (s.splits - 1) * s.tiles_per_split < k_tiles,
                "{n}x{k}: {s:?}"
            );
            assert!(s.splits * s.tiles_per_split >= k_tiles, "{n}x{k}: {s:?}");
            for m in [1, 5, 16, 17, 128, 2048] {
                let (sp, _) = plan(m, n, k, 1 << 30, 1 << 20).unwrap();
                assert_eq!(sp, s, "split depends on m");
            }
        }
        // Pythia-2.8b's shapes (what the expected figures in linear_tc.cu assume).
        assert_eq!(split_for(50304, 2560).splits, 1);
        assert_eq!(split_for(7680, 2560).splits, 5);
        assert_eq!(split_for(2560, 10240).splits, 14);
    }

    #[test]
    fn chunks_are_multiples_of_128_rows_and_fit_the_scratch() {
        let (n, k) = (2560, 10240);
        let s = split_for(n, k).splits;
        let part = s * n * 300; // room for 300 rows → chunks of 256
        let (_, l) = plan(2048, n, k, part, 1 << 16).unwrap();
        assert_eq!(l.len(), 8);
        assert!(l
            .iter()
            .all(|c| c.rows == 256 && c.row0 % 128 == 0 && c.wide));
        let (_, l) = plan(300, n, k, part, 1 << 16).unwrap();
        assert_eq!(l.len(), 1);
        let (_, l) = plan(600, n, k, part, 1 << 16).unwrap();
        assert_eq!(
            l.iter()
                .map(|c| (c.row0, c.rows, c.wide))
                .collect::<Vec<_>>(),
            vec![(0, 256, true), (256, 256, true), (512, 88, true)]
        );
        let (_, l) = plan(5, n, k, part, 1 << 16).unwrap();
        assert_eq!(l[0].grid, (20, 1, s));
        assert!(!l[0].wide);
        // Too small a scratch is an error, not a silent change of order.
        let err = plan(200, n, k, s * n * 100, 1 << 16)
            .unwrap_err()
            .to_string();
        assert!(err.contains("scratch"), "{err}");
        // S = 1 needs no scratch at all.
        let (_, l) = plan(2048, 50304, 2560, 0, 0).unwrap();
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn old_devices_are_refused() {
        assert!(check_supported(LinearKernel::TensorCore, (7, 5)).is_err());
        assert!(check_supported(LinearKernel::TensorCore, (9, 0)).is_ok());
        assert!(check_supported(LinearKernel::Simt, (7, 0)).is_ok());
    }
}
