//! Philox4x32-10, the counter-based generator of the device sampler, and how its words become
//! uniforms.
//!
//! Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3",
//! SC 2011) maps a 128-bit counter `[c0, c1, c2, c3]` and a 64-bit key `[k0, k1]` to four
//! 32-bit words through ten rounds. One round, with the multipliers `M0 = 0xD2511F53`,
//! `M1 = 0xCD9E8D57` and `hi`/`lo` the halves of the 64-bit product:
//!
//! ```text
//! [c0, c1, c2, c3] → [hi(M1·c2) ^ c1 ^ k0, lo(M1·c2), hi(M0·c0) ^ c3 ^ k1, lo(M0·c0)]
//! ```
//!
//! and between rounds the key is bumped by the Weyl constants `W0 = 0x9E3779B9`,
//! `W1 = 0xBB67AE85` (wrapping). The same function is written in CUDA in `kernels/philox.cuh`;
//! the host emulation of that header is checked equal to [`philox4x32_10`] bit for bit.
//!
//! **How the sampler uses it** (CPU and device alike): the key is the run's seed
//! (`k0` = its low 32 bits, `k1` = its high 32 bits); the counter is
//! `[position, stream, index, 0]` where `position` is the sequence position of the token being
//! decided (prompt length for the first generated token), `stream` is one of [`Stream`] (so
//! the draft draw, the acceptance test and the residual / bonus draw at the same position
//! never share a uniform), and `index` tells apart repeated decisions at the same position
//! and stream (the speculative engine passes its step number, since a position rejected in
//! one step is drafted again in the next). Only word 0 of the output is used.
//!
//! **Uniforms**: `u = (word >> 8) · 2⁻²⁴ ∈ [0, 1)`, 24 random bits — exact in `f32` and in
//! `f64`, so the device (`f32`/`f64`) and the CPU (`f64`) see the same number.

/// Philox round multipliers (Salmon et al. 2011, table 2).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
/// Key schedule (Weyl) increments: the golden ratio and √3 − 1 in 0.32 fixed point.
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Which decision a uniform serves; its value is counter word 1. Mirrored by the
/// `PHILOX_STREAM_*` defines of `kernels/philox.cuh` (a test checks they agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Stream {
    /// The first generated token, drawn from the target's prefill row (and plain
    /// autoregressive draws).
    First = 0,
    /// A draft token drawn from the draft's processed row.
    Draft = 1,
    /// The acceptance test `u < min(1, p(d) / q(d))` of a draft token.
    Accept = 2,
    /// The replacement drawn from `norm(max(0, p − q))` at the first rejection, or the bonus
    /// token from the last target row when every draft was accepted.
    Residual = 3,
}

impl Stream {
    /// Every stream, in id order.
    pub const ALL: [Stream; 4] = [
        Stream::First,
        Stream::Draft,
        Stream::Accept,
        Stream::Residual,
    ];

    /// The counter word (`ctr[1]`) of this stream.
    pub fn id(self) -> u32 {
        self as u32
    }
}

/// `(hi, lo)` of the 64-bit product `a · b`.
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with ten rounds: the four output words for `counter` under `key`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = counter;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c0);
        let (hi1, lo1) = mulhilo(M1, c2);
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
    }
    [c0, c1, c2, c3]
}

/// The key for a seed: `[low 32 bits, high 32 bits]`.
pub fn philox_key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The uniform in [0, 1) of a 32-bit word: its top 24 bits times 2⁻²⁴ (exact in `f32` and `f64`).
pub fn uniform_from_u32(word: u32) -> f64 {
    f64::from(word >> 8) * (1.0 / (1u32 << 24) as f64)
}

/// The sampler's uniform for one decision: word 0 of
/// `philox4x32_10([position, stream, index, 0], philox_key(seed))`, mapped by
/// [`uniform_from_u32`]. See the module docs for what `position` and `index` mean.
pub fn philox_uniform(seed: u64, position: u32, stream: Stream, index: u32) -> f64 {
    let words = philox4x32_10([position, stream.id(), index, 0], philox_key(seed));
    uniform_from_u32(words[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's published known-answer vectors for philox4x32 with 10 rounds (its
    /// `tests/kat_vectors`, D. E. Shaw Research; the same three lines are quoted by
    /// Random123-Boost's `libs/random/test/test_philox.cpp`): counter, key → output.
    /// The third is the leading hex digits of π.
    const KAT: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0, 0, 0, 0],
            [0, 0],
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
        ),
        (
            [0xffff_ffff; 4],
            [0xffff_ffff; 2],
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
        ),
        (
            [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
            [0xa409_3822, 0x299f_31d0],
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
        ),
    ];

    #[test]
    fn known_answer_vectors() {
        for (ctr, key, want) in KAT {
            assert_eq!(
                philox4x32_10(ctr, key),
                want,
                "ctr {ctr:08x?} key {key:08x?}"
            );
        }
    }

    #[test]
    fn streams_are_distinct_and_fixed() {
        let ids: Vec<u32> = Stream::ALL.iter().map(|s| s.id()).collect();
        assert_eq!(ids, vec![0, 1, 2, 3]);
        let u: Vec<f64> = Stream::ALL
            .iter()
            .map(|&s| philox_uniform(42, 7, s, 0))
            .collect();
        for i in 0..u.len() {
            for j in i + 1..u.len() {
                assert_ne!(u[i], u[j], "streams {i} and {j} share a uniform");
            }
        }
    }

    #[test]
    fn key_and_uniform_mapping() {
        assert_eq!(
            philox_key(0x0123_4567_89ab_cdef),
            [0x89ab_cdef, 0x0123_4567]
        );
        assert_eq!(uniform_from_u32(0), 0.0);
        assert_eq!(uniform_from_u32(0xff), 0.0);
        assert_eq!(uniform_from_u32(0x100), 1.0 / 16_777_216.0);
        assert_eq!(uniform_from_u32(u32::MAX), 1.0 - 1.0 / 16_777_216.0);
        // Exact in f32 as well.
        let u = uniform_from_u32(0xdead_beef);
        assert_eq!(f64::from(u as f32), u);
        // The uniform is word 0 of the counter [position, stream, index, 0].
        let w = philox4x32_10([9, 2, 5, 0], philox_key(77));
        assert_eq!(
            philox_uniform(77, 9, Stream::Accept, 5),
            uniform_from_u32(w[0])
        );
    }

    #[test]
    fn uniforms_look_uniform() {
        // Mean and a 16-bin histogram over 64k counters: loose bounds, a broken round fails.
        let n = 65_536u32;
        let mut bins = [0u32; 16];
        let mut sum = 0.0;
        for i in 0..n {
            let u = philox_uniform(3, i, Stream::Draft, 0);
            assert!((0.0..1.0).contains(&u));
            sum += u;
            bins[(u * 16.0) as usize] += 1;
        }
        let mean = sum / f64::from(n);
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        let expect = f64::from(n) / 16.0;
        for (b, &c) in bins.iter().enumerate() {
            assert!(
                (f64::from(c) - expect).abs() < 5.0 * expect.sqrt(),
                "bin {b}: {c} vs {expect}"
            );
        }
    }
}
