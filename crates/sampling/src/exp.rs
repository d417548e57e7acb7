//! The softmax in `f64`, vectorised: `exp(z − max)` over a row of scores, its sum, the
//! division.
//!
//! A perplexity run exponentiates a whole vocabulary (50,304 entries for Pythia) per scored
//! token and per model; through libm that was a fifth of a 70m perplexity run on the CPU and
//! would be most of one on a GPU. Here `exp` is range reduction `x = n·ln 2 + r` (Cody–Waite,
//! |r| ≤ ln 2 / 2), a degree-13 Taylor polynomial of `e^r` in Horner form with fused
//! multiply-adds (truncation below 5e-18 relative), and `2ⁿ` built from its exponent bits:
//! within 2 ulp of libm's `exp` (the unit test measures it). The sum runs in eight fixed lanes.
//!
//! One source, compiled plain and (on x86-64, detected at run time) for AVX2 + FMA and
//! AVX-512: the same IEEE operations in the same order on every path (`mul_add` is fused
//! everywhere), so the same bits on every machine. A row whose finite scores reach more than
//! 700 below the maximum (where `2ⁿ` would leave the normal range) takes libm's `exp` instead.

/// `z ← softmax(z)` in place, for scores where at least one is finite and none is NaN /
/// +inf: `exp(z[i] − max)` (−inf entries become 0), each divided by their sum, summed in eight
/// lanes (`i mod 8`) folded `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`.
pub(crate) fn softmax_in_place(z: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        let fma = std::arch::is_x86_feature_detected!("fma");
        if std::arch::is_x86_feature_detected!("avx512f") && fma {
            // SAFETY: avx512f and fma were detected just above (avx2 comes with avx512f).
            return unsafe { softmax_avx512(z) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && fma {
            // SAFETY: avx2 and fma were detected just above.
            return unsafe { softmax_avx2(z) };
        }
    }
    softmax(z)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn softmax_avx512(z: &mut [f64]) {
    softmax(z)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(z: &mut [f64]) {
    softmax(z)
}

#[inline(always)]
fn softmax(z: &mut [f64]) {
    // In eight lanes with selects rather than `f64::max` / `min`, so they vectorise (a fold
    // of selects in one chain does not; no NaN reaches here, and either is exact in any order).
    let max = lane_fold(z, f64::NEG_INFINITY, |a, b| if b > a { b } else { a });
    let lowest = lane_fold(z, max, |a, b| {
        if b < a && b != f64::NEG_INFINITY {
            b
        } else {
            a
        }
    });
    let sum = if lowest - max < LOWEST {
        for v in z.iter_mut() {
            *v = (*v - max).exp();
        }
        lane_sum(z)
    } else {
        exp_sum(z, max)
    };
    for v in z.iter_mut() {
        *v /= sum;
    }
}

/// Scores this far below the maximum or further take libm's `exp` (`2ⁿ` stays normal above).
const LOWEST: f64 = -700.0;

#[inline(always)]
fn exp_sum(z: &mut [f64], max: f64) -> f64 {
    for v in z.iter_mut() {
        let x = *v - max;
        let e = exp_near(if x > LOWEST { x } else { LOWEST });
        *v = if x == f64::NEG_INFINITY { 0.0 } else { e };
    }
    lane_sum(z)
}

/// `e^x` for `LOWEST ≤ x ≤ 0` (any finite x whose `2ⁿ` stays normal).
#[inline(always)]
fn exp_near(x: f64) -> f64 {
    // Round to nearest: adding 1.5·2⁵² leaves the integer part in the low mantissa bits.
    const ROUND: f64 = 6_755_399_441_055_744.0;
    // ln 2 split so that n · LN2_HI is exact for |n| < 2¹¹ (fdlibm's split: 6.93147180369e-1
    // with its low 21 bits zero, and the rest, 1.90821492927e-10).
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
    const C: [f64; 14] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    let n = (x * std::f64::consts::LOG2_E + ROUND) - ROUND;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p = C[13];
    for &c in C[..13].iter().rev() {
        p = p.mul_add(r, c);
    }
    p * two_to(n)
}

/// `2ⁿ` for an integer-valued `n` in −1022..=1023, from the bits of `n + 1023 + 2⁵²`.
#[inline(always)]
fn two_to(n: f64) -> f64 {
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    let biased = (n + 1023.0 + TWO_52).to_bits() - TWO_52.to_bits();
    f64::from_bits(biased << 52)
}

/// `f` folded over `v` in eight lanes (`i mod 8`) from `init`, then over the lanes.
#[inline(always)]
fn lane_fold(v: &[f64], init: f64, f: impl Fn(f64, f64) -> f64) -> f64 {
    let mut lanes = [init; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = f(*l, x);
        }
    }
    for (l, &x) in lanes.iter_mut().zip(chunks.remainder()) {
        *l = f(*l, x);
    }
    lanes.iter().fold(init, |a, &b| f(a, b))
}

/// `Σ v` in eight lanes (`i mod 8`), folded pairwise in a fixed order.
#[inline(always)]
fn lane_sum(v: &[f64]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    for (l, &x) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += x;
    }
    ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
        + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two positive normal doubles.
    fn ulps(a: f64, b: f64) -> u64 {
        a.to_bits().abs_diff(b.to_bits())
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = (0, 0.0);
        let mut check = |x: f64| {
            let d = ulps(exp_near(x), x.exp());
            if d > worst.0 {
                worst = (d, x);
            }
        };
        for i in 0..=2_000_000u64 {
            check(-(i as f64) * 3.5e-4); // 0 … −700, every reduction interval many times
        }
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..1_000_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            check(-((s >> 11) as f64 / (1u64 << 53) as f64) * 40.0); // logit-sized gaps
        }
        println!(
            "largest distance from libm exp: {} ulp at x = {:e}",
            worst.0, worst.1
        );
        assert!(worst.0 <= 2, "{} ulp at x = {:e}", worst.0, worst.1);
        assert_eq!(exp_near(0.0), 1.0);
    }

    #[test]
    fn every_build_gives_the_same_bits() {
        let row: Vec<f64> = (0..50_304)
            .map(|i| ((i * 7919) % 10_007) as f64 / 100.0 - 90.0)
            .chain([f64::NEG_INFINITY, 10.0])
            .collect();
        let mut plain = row.clone();
        softmax(&mut plain);
        let mut dispatched = row.clone();
        softmax_in_place(&mut dispatched);
        assert!(plain
            .iter()
            .zip(&dispatched)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(plain[50_304], 0.0);
        assert!((plain.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        #[cfg(target_arch = "x86_64")]
        for (detected, run) in [
            (
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma"),
                softmax_avx2 as unsafe fn(&mut [f64]),
            ),
            (
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("fma"),
                softmax_avx512,
            ),
        ] {
            if detected {
                let mut built = row.clone();
                // SAFETY: the features were detected.
                unsafe { run(&mut built) };
                assert!(plain
                    .iter()
                    .zip(&built)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }

    #[test]
    fn far_below_the_maximum_takes_libm() {
        let mut z = vec![0.0, -650.0, -720.0, f64::NEG_INFINITY];
        softmax_in_place(&mut z);
        let want: Vec<f64> = [0.0f64, -650.0, -720.0].iter().map(|v| v.exp()).collect();
        let sum = lane_sum(&want);
        assert_eq!(z[..3], [want[0] / sum, want[1] / sum, want[2] / sum]);
        assert!(z[2] > 0.0 && z[3] == 0.0);
    }
}
