//! The tensor-core linear (`kernels/linear_tc.cu`) under host emulation (its mma.sync modelled
//! lane by lane in `emu/emu.h`): against the CPU reference and the emulated CUDA-core kernel
//! within tolerance, and bit-exact batch invariance — a row's output bits are the same for
//! M = 1, 5, 16, 17, 64 and 130 and wherever the row sits, across both kernel instances
//! (16- and 128-row blocks), split-K and row chunking. Shapes include K and N that are not
//! multiples of the tiles. Prints `skipped: no C++ compiler` where none is found.

mod support;

use half::f16;
use spedec_check::emulator::HostEmulator;
use spedec_check::reference::{self as cpu, Act};
use spedec_cuda::linear_tc::split_for;
use spedec_cuda::{KernelBackend, LinDest, LinearKernel};
use support::{emulator_or_skip, visible};

const ROWS: [usize; 6] = [1, 5, 16, 17, 64, 130];
const MAX_M: usize = 130;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Epi {
    F16,
    Gelu,
    F32,
    AddF32,
}

/// SplitMix64 → uniform [-1, 1).
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn f16s(&mut self, n: usize, scale: f32) -> Vec<f16> {
        (0..n).map(|_| f16::from_f32(self.unit() * scale)).collect()
    }
}

struct Case {
    n: usize,
    k: usize,
    epi: Epi,
    w: Vec<f16>,
    bias: Option<Vec<f16>>,
    resid: Vec<f32>,
}

/// Output of one linear of the first `m` rows of `x` as (bits per element, f32 values).
fn run(
    emu: &mut HostEmulator,
    kernel: LinearKernel,
    c: &Case,
    x: &[f16],
    m: usize,
) -> (Vec<u32>, Vec<f32>) {
    emu.set_linear_kernel(kernel).unwrap();
    let (n, k) = (c.n, c.k);
    let x = x[..m * k].to_vec();
    match c.epi {
        Epi::F16 | Epi::Gelu => {
            let mut y = vec![f16::NAN; m * n];
            let d = if c.epi == Epi::Gelu {
                LinDest::F16Gelu(&mut y)
            } else {
                LinDest::F16(&mut y)
            };
            emu.linear(&x, &c.w, c.bias.as_ref(), d, m, n, k)
                .unwrap_or_else(|e| panic!("{kernel:?} {n}x{k} m {m}: {e:#}"));
            (
                y.iter().map(|v| v.to_bits() as u32).collect(),
                y.iter().map(|v| v.to_f32()).collect(),
            )
        }
        Epi::F32 | Epi::AddF32 => {
            let mut y = if c.epi == Epi::AddF32 {
                c.resid[..m * n].to_vec()
            } else {
                vec![f32::NAN; m * n]
            };
            let d = if c.epi == Epi::AddF32 {
                LinDest::AddF32(&mut y)
            } else {
                LinDest::F32(&mut y)
            };
            emu.linear(&x, &c.w, c.bias.as_ref(), d, m, n, k)
                .unwrap_or_else(|e| panic!("{kernel:?} {n}x{k} m {m}: {e:#}"));
            (y.iter().map(|v| v.to_bits()).collect(), y)
        }
    }
}

/// Largest |a − b| and whether every element is within atol + rtol·|ref|.
fn within(got: &[f32], want: &[f32], atol: f32, rtol: f32) -> (f32, bool) {
    assert_eq!(got.len(), want.len());
    let mut worst = 0.0f32;
    let mut ok = true;
    for (&g, &w) in got.iter().zip(want) {
        let d = (g - w).abs();
        if d.is_nan() || d > atol + rtol * w.abs() {
            ok = false;
        }
        worst = worst.max(if d.is_nan() { f32::INFINITY } else { d });
    }
    (worst, ok)
}

fn cases() -> Vec<Case> {
    let mut rng = Rng(0x1234_5678);
    // (n, k, epilogue, bias): K not a multiple of 32 (136, 520, 1000) or of 16·…; N not a
    // multiple of 64 or 128 (200, 96, 72); split-K S = 1, 4, 8 (see the printed splits).
    let shapes = [
        (200, 136, Epi::F16, true),
        (96, 520, Epi::AddF32, true),
        (72, 1000, Epi::Gelu, true),
        (256, 256, Epi::F32, false),
    ];
    shapes
        .iter()
        .map(|&(n, k, epi, bias)| Case {
            n,
            k,
            epi,
            w: rng.f16s(n * k, 2.0 / (k as f32).sqrt()),
            bias: bias.then(|| rng.f16s(n, 0.5)),
            resid: (0..MAX_M * n).map(|_| rng.unit()).collect(),
        })
        .collect()
}

#[test]
fn tensor_core_linear_matches_the_reference_and_is_batch_invariant() {
    let test = "tensor_core_linear_matches_the_reference_and_is_batch_invariant";
    let Some(mut emu) = emulator_or_skip(test) else {
        return;
    };
    let mut rng = Rng(99);
    let mut failures = Vec::new();
    for c in cases() {
        let (n, k) = (c.n, c.k);
        let split = split_for(n, k);
        let x = rng.f16s(MAX_M * k, 1.0);
        let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        let bias_f: Option<Vec<f32>> = c
            .bias
            .as_ref()
            .map(|b| b.iter().map(|v| v.to_f32()).collect());
        let act = if c.epi == Epi::Gelu {
            Act::Gelu
        } else {
            Act::None
        };
        let wf: Vec<f32> = c.w.iter().map(|v| v.to_f32()).collect();
        let mut want = cpu::linear(&xf, &wf, bias_f.as_deref(), act, MAX_M, n, k);
        if c.epi == Epi::AddF32 {
            want.iter_mut().zip(&c.resid).for_each(|(w, r)| *w += *r);
        }
        let (atol, rtol) = match c.epi {
            Epi::F16 | Epi::Gelu => (1e-3, 2e-3),
            Epi::F32 | Epi::AddF32 => (1e-4, 1e-4),
        };
        // The M = 130 result is the yardstick for the bits of every other M.
        let (bits_all, vals_all) = run(&mut emu, LinearKernel::TensorCore, &c, &x, MAX_M);
        for &m in &ROWS {
            let (bits, vals) = run(&mut emu, LinearKernel::TensorCore, &c, &x, m);
            let (d_ref, ok_ref) = within(&vals, &want[..m * n], atol, rtol);
            // The CUDA-core kernel, 16 rows per call (as the model runs it today).
            let mut simt = Vec::with_capacity(m * n);
            for r0 in (0..m).step_by(16) {
                let rows = (m - r0).min(16);
                let xs = &x[r0 * k..(r0 + rows) * k];
                let cs = Case {
                    resid: c.resid[r0 * n..].to_vec(),
                    w: c.w.clone(),
                    bias: c.bias.clone(),
                    ..c
                };
                simt.extend(run(&mut emu, LinearKernel::Simt, &cs, xs, rows).1);
            }
            let (d_simt, ok_simt) = within(&vals, &simt, 2.0 * atol, 2.0 * rtol);
            let differing = bits
                .iter()
                .zip(&bits_all[..m * n])
                .filter(|(a, b)| a != b)
                .count();
            visible(&format!(
                "linear_tc {n}x{k} {:?} S={} M={m:>3}: max |tc − ref| {d_ref:.3e}, \
                 |tc − simt| {d_simt:.3e}, {differing} elements differ in bits from M={MAX_M}",
                c.epi, split.splits
            ));
            if !ok_ref {
                failures.push(format!("{n}x{k} M={m}: vs reference {d_ref:e}"));
            }
            if !ok_simt {
                failures.push(format!("{n}x{k} M={m}: vs simt {d_simt:e}"));
            }
            if differing != 0 {
                failures.push(format!(
                    "{n}x{k} M={m}: {differing} elements differ in bits"
                ));
            }
        }
        // Same row content at another position: row r alone (M = 1) vs row r of M = 130.
        for r in [4, 17, 63, 129] {
            let (bits, _) = run(
                &mut emu,
                LinearKernel::TensorCore,
                &shift(&c, r),
                &x[r * k..],
                1,
            );
            if bits[..] != bits_all[r * n..(r + 1) * n] {
                failures.push(format!(
                    "{n}x{k}: row {r} alone differs from row {r} of M={MAX_M}"
                ));
            }
        }
        let (_, ok) = within(&vals_all, &want, atol, rtol);
        if !ok {
            failures.push(format!("{n}x{k} M={MAX_M}: vs reference"));
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

/// `c` with its residual rows starting at row r (for an M = 1 run of row r).
fn shift(c: &Case, r: usize) -> Case {
    Case {
        n: c.n,
        k: c.k,
        epi: c.epi,
        w: c.w.clone(),
        bias: c.bias.clone(),
        resid: c.resid[r * c.n..].to_vec(),
    }
}

#[test]
fn an_unwritten_output_or_a_wrong_fragment_would_show() {
    // The emulated mma is checked on its own against a plain product: one 16×8×16 tile with
    // distinct values, through the kernel (M = 16, N = 8, K = 16, S = 1).
    let Some(mut emu) = emulator_or_skip("an_unwritten_output_or_a_wrong_fragment_would_show")
    else {
        return;
    };
    let (m, n, k) = (16, 8, 16);
    let x: Vec<f16> = (0..m * k)
        .map(|i| f16::from_f32((i % 13) as f32 - 6.0))
        .collect();
    let w: Vec<f16> = (0..n * k)
        .map(|i| f16::from_f32((i % 7) as f32 * 0.5 - 1.5))
        .collect();
    let mut y = vec![f32::NAN; m * n];
    emu.set_linear_kernel(LinearKernel::TensorCore).unwrap();
    emu.linear(&x, &w, None, LinDest::F32(&mut y), m, n, k)
        .unwrap();
    for r in 0..m {
        for c in 0..n {
            // Small integers and halves: the f32 sum is exact in any order.
            let want: f32 = (0..k)
                .map(|i| x[r * k + i].to_f32() * w[c * k + i].to_f32())
                .sum();
            assert_eq!(y[r * n + c], want, "element ({r}, {c})");
        }
    }
}
