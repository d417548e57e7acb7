//! CPU references (plain Rust, f32 data, f64 accumulation) for every kernel, with the same
//! shapes and semantics. They are the truth the GPU kernels are checked against, so they
//! favour clarity and precision over speed (only `linear` is parallel, for vocab-sized N).

use rayon::prelude::*;

/// Embedding gather: table f32 [vocab, d], ids \[m\] → f32 [m, d]. An id >= vocab gives a NaN
/// row (as the kernel does).
pub fn embedding(table: &[f32], ids: &[u32], d: usize) -> Vec<f32> {
    let vocab = table.len() / d;
    let mut out = Vec::with_capacity(ids.len() * d);
    for &id in ids {
        let id = id as usize;
        if id < vocab {
            out.extend_from_slice(&table[id * d..(id + 1) * d]);
        } else {
            out.extend(std::iter::repeat_n(f32::NAN, d));
        }
    }
    out
}

/// LayerNorm of one row: (x − mean) / sqrt(var + eps) · w + b, biased variance.
pub fn layernorm(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let rstd = 1.0 / (var + eps as f64).sqrt();
    x.iter()
        .zip(w.iter().zip(b))
        .map(|(&v, (&w, &b))| ((v as f64 - mean) * rstd * w as f64 + b as f64) as f32)
        .collect()
}

/// Residual add + LayerNorm(s) over rows of length d: `x = (x + a) + b`, then returns
/// `LN_0(x)` and, when `second` is given, `LN_1(x)`. x: [m, d], a, b: [m, d].
pub fn add_layernorm(
    x: &mut [f32],
    add_a: Option<&[f32]>,
    add_b: Option<&[f32]>,
    first: (&[f32], &[f32]),
    second: Option<(&[f32], &[f32])>,
    d: usize,
    eps: f32,
) -> (Vec<f32>, Option<Vec<f32>>) {
    for (i, v) in x.iter_mut().enumerate() {
        if let Some(a) = add_a {
            *v += a[i];
        }
        if let Some(b) = add_b {
            *v += b[i];
        }
    }
    let mut out0 = Vec::with_capacity(x.len());
    let mut out1 = second.map(|_| Vec::with_capacity(x.len()));
    for row in x.chunks(d) {
        out0.extend(layernorm(row, first.0, first.1, eps));
        if let (Some(o), Some((w, b))) = (out1.as_mut(), second) {
            o.extend(layernorm(row, w, b, eps));
        }
    }
    (out0, out1)
}

/// Exact GELU: x · (1 + erf(x / √2)) / 2.
pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}

/// Epilogue of [`linear`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// y = x·Wᵀ + b
    None,
    /// y = gelu(x·Wᵀ + b)
    Gelu,
}

/// y [m, n] = act(x [m, k] · w [n, k]ᵀ + bias \[n\]).
pub fn linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Act,
    m: usize,
    n: usize,
    k: usize,
) -> Vec<f32> {
    assert!(x.len() >= m * k && w.len() == n * k, "linear: bad shapes");
    // Column-major result first (parallel over weight rows), then transpose to [m, n].
    let cols: Vec<Vec<f32>> = w
        .par_chunks(k)
        .enumerate()
        .map(|(j, wrow)| {
            (0..m)
                .map(|r| {
                    let xr = &x[r * k..(r + 1) * k];
                    let mut s: f64 = xr
                        .iter()
                        .zip(wrow)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum();
                    if let Some(b) = bias {
                        s += b[j] as f64;
                    }
                    match act {
                        Act::None => s as f32,
                        Act::Gelu => gelu(s as f32),
                    }
                })
                .collect()
        })
        .collect();
    let mut y = vec![0.0f32; m * n];
    for (j, col) in cols.iter().enumerate() {
        for (r, &v) in col.iter().enumerate() {
            y[r * n + j] = v;
        }
    }
    y
}

/// Rotate-half rotary embedding on the first `rot` dims of one head vector, in place:
/// for i < rot/2, a = pos · base^(−2i/rot):
/// x'\[i\] = x\[i\]·cos a − x\[i+rot/2\]·sin a, x'\[i+rot/2\] = x\[i+rot/2\]·cos a + x\[i\]·sin a.
/// The angle is formed in f32 as HF does (inv_freq and pos · inv_freq in f32).
pub fn rotary(x: &mut [f32], pos: usize, rot: usize, base: f32) {
    let half = rot / 2;
    for i in 0..half {
        let inv_freq = 1.0f32 / base.powf((2 * i) as f32 / rot as f32);
        let a = (pos as f32 * inv_freq) as f64;
        let (s, c) = a.sin_cos();
        let (x0, x1) = (x[i] as f64, x[i + half] as f64);
        x[i] = (x0 * c - x1 * s) as f32;
        x[i + half] = (x1 * c + x0 * s) as f32;
    }
}

/// Split the fused QKV rows [m, H, 3, hd] into rotated q, rotated k and v, each [m, H, hd].
pub fn rotary_qkv(
    qkv: &[f32],
    pos: &[usize],
    heads: usize,
    hd: usize,
    rot: usize,
    base: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = pos.len();
    let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
    for (r, &p) in pos.iter().enumerate().take(m) {
        for h in 0..heads {
            let base_i = (r * heads + h) * 3 * hd;
            let mut qh = qkv[base_i..base_i + hd].to_vec();
            let mut kh = qkv[base_i + hd..base_i + 2 * hd].to_vec();
            rotary(&mut qh, p, rot, base);
            rotary(&mut kh, p, rot, base);
            q.extend(qh);
            k.extend(kh);
            v.extend_from_slice(&qkv[base_i + 2 * hd..base_i + 3 * hd]);
        }
    }
    (q, k, v)
}

/// Causal attention: q [m, H, hd]; caches [H, max_pos, hd]; query r sees keys 0..=pos\[r\].
/// Returns [m, H·hd]; softmax(q·kᵀ · scale) · v per head, f64 internally.
pub fn attention(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    pos: &[usize],
    heads: usize,
    hd: usize,
    max_pos: usize,
) -> Vec<f32> {
    let scale = 1.0 / (hd as f64).sqrt();
    let m = pos.len();
    let mut out = vec![0.0f32; m * heads * hd];
    for (r, &p) in pos.iter().enumerate() {
        for h in 0..heads {
            let qv = &q[(r * heads + h) * hd..(r * heads + h + 1) * hd];
            let scores: Vec<f64> = (0..=p)
                .map(|j| {
                    let kv = &k_cache[(h * max_pos + j) * hd..(h * max_pos + j + 1) * hd];
                    qv.iter()
                        .zip(kv)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
            let sum: f64 = e.iter().sum();
            for d in 0..hd {
                let acc: f64 = e
                    .iter()
                    .enumerate()
                    .map(|(j, &w)| w * v_cache[(h * max_pos + j) * hd + d] as f64)
                    .sum();
                out[r * heads * hd + h * hd + d] = (acc / sum) as f32;
            }
        }
    }
    out
}

/// Index of the largest value (first on ties; NaN never wins; 0 if none is comparable).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best: Option<(f32, usize)> = None;
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.is_none_or(|(b, _)| v > b) {
            best = Some((v, i));
        }
    }
    best.map_or(0, |(_, i)| i as u32)
}

/// softmax(row / temperature).
pub fn softmax(row: &[f32], temperature: f32) -> Vec<f32> {
    let inv_t = 1.0 / temperature as f64;
    let mx = row
        .iter()
        .map(|&v| v as f64 * inv_t)
        .fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|&v| (v as f64 * inv_t - mx).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|&v| (v / sum) as f32).collect()
}

/// The read-bandwidth probe (`probe.cu`) over buf f16 `[len]` (len a multiple of 8) with
/// `blocks` blocks: u32 `[blocks]`, the wrapping sum of the 32-bit words (two f16, the lower
/// index in the low half) of the 16-byte vectors each block reads
/// (`spedec_cuda::probe::probe_block_of`).
pub fn read_probe_sums(buf: &[half::f16], blocks: usize) -> Vec<u32> {
    let mut sums = vec![0u32; blocks];
    for (i, v) in buf.chunks_exact(8).enumerate() {
        let b = spedec_cuda::probe::probe_block_of(i as u64, blocks);
        for pair in v.chunks_exact(2) {
            let w = u32::from(pair[0].to_bits()) | (u32::from(pair[1].to_bits()) << 16);
            sums[b] = sums[b].wrapping_add(w);
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn embedding_gathers_rows_and_flags_bad_ids() {
        let table = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // vocab 3, d 2
        assert_eq!(embedding(&table, &[2, 0], 2), vec![5.0, 6.0, 1.0, 2.0]);
        let bad = embedding(&table, &[3], 2);
        assert!(bad.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn layernorm_by_hand() {
        // x = [1, 2, 3, 4]: mean 2.5, var 1.25, rstd = 1/sqrt(1.25).
        let x = [1.0, 2.0, 3.0, 4.0];
        let y = layernorm(&x, &[1.0; 4], &[0.0; 4], 0.0);
        let r = 1.0 / 1.25f32.sqrt();
        assert!(close(&y, &[-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r], 1e-6));
        let y2 = layernorm(&x, &[2.0; 4], &[1.0; 4], 0.0);
        assert!(close(
            &y2,
            &[1.0 - 3.0 * r, 1.0 - r, 1.0 + r, 1.0 + 3.0 * r],
            1e-6
        ));
        // A constant row normalises to the bias (eps keeps it finite).
        assert!(close(
            &layernorm(&[7.0; 4], &[1.0; 4], &[0.5; 4], 1e-5),
            &[0.5; 4],
            1e-6
        ));
    }

    #[test]
    fn add_layernorm_updates_the_residual() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 1.0]; // m 2, d 4
        let a = vec![1.0; 8];
        let b = vec![-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let w = [1.0; 4];
        let z = [0.0; 4];
        let (o0, o1) = add_layernorm(&mut x, Some(&a), Some(&b), (&w, &z), Some((&w, &w)), 4, 0.0);
        assert_eq!(x, vec![1.0, 3.0, 4.0, 5.0, 1.0, 1.0, 1.0, 2.0]);
        let o1 = o1.unwrap();
        for i in 0..8 {
            assert!((o1[i] - (o0[i] + 1.0)).abs() < 1e-6);
        }
        // Row 1 = [1, 1, 1, 2]: mean 1.25, var 0.1875.
        let r = 1.0 / 0.1875f32.sqrt();
        assert!(close(
            &o0[4..],
            &[-0.25 * r, -0.25 * r, -0.25 * r, 0.75 * r],
            1e-5
        ));
    }

    #[test]
    fn gelu_values() {
        assert_eq!(gelu(0.0), 0.0);
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-6);
        assert!((gelu(3.0) - 2.995_950_3).abs() < 1e-6);
        assert!(gelu(-10.0).abs() < 1e-6);
    }

    #[test]
    fn linear_by_hand() {
        // x [2, 2], w [3, 2], bias [3].
        let x = [1.0, 2.0, 3.0, 4.0];
        let w = [1.0, 0.0, 0.0, 1.0, 1.0, -1.0];
        let b = [0.5, 0.0, 1.0];
        let y = linear(&x, &w, Some(&b), Act::None, 2, 3, 2);
        assert_eq!(y, vec![1.5, 2.0, 0.0, 3.5, 4.0, 0.0]);
        let g = linear(&x, &w, None, Act::Gelu, 1, 3, 2);
        assert!(close(&g, &[gelu(1.0), gelu(2.0), gelu(-1.0)], 1e-7));
    }

    #[test]
    fn rotary_by_hand() {
        // hd 8, rot 4 (half 2): pairs (0, 2) at freq 1 and (1, 3) at freq base^(-1/2).
        let mut x = [1.0, 0.0, 0.0, 1.0, 9.0, 9.0, 9.0, 9.0];
        rotary(&mut x, 0, 4, 10000.0);
        assert_eq!(x, [1.0, 0.0, 0.0, 1.0, 9.0, 9.0, 9.0, 9.0]); // position 0: identity
        let mut y = [1.0, 0.0, 0.0, 1.0, 9.0, 9.0, 9.0, 9.0];
        rotary(&mut y, 1, 4, 10000.0);
        let (s1, c1) = 1.0f64.sin_cos();
        let (s2, c2) = 0.01f64.sin_cos();
        let want = [
            c1 as f32, -s2 as f32, s1 as f32, c2 as f32, 9.0, 9.0, 9.0, 9.0,
        ];
        assert!(close(&y, &want, 1e-6), "{y:?} vs {want:?}");
    }

    #[test]
    fn rotary_qkv_splits_heads() {
        // m 1, H 2, hd 2, rot 0: no rotation, just the split.
        let qkv: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let (q, k, v) = rotary_qkv(&qkv, &[5], 2, 2, 0, 10000.0);
        assert_eq!(q, vec![0.0, 1.0, 6.0, 7.0]);
        assert_eq!(k, vec![2.0, 3.0, 8.0, 9.0]);
        assert_eq!(v, vec![4.0, 5.0, 10.0, 11.0]);
    }

    #[test]
    fn attention_by_hand() {
        // H 1, hd 1 (scale 1), max_pos 4: keys [0, ln 3], values [10, 20].
        let k = [0.0, 3.0f32.ln(), 0.0, 0.0];
        let v = [10.0, 20.0, 99.0, 99.0];
        // Query 0 sees key 0 only → 10; query 1 sees both with weights 1:3 → 17.5.
        let out = attention(&[1.0, 1.0], &k, &v, &[0, 1], 1, 1, 4);
        assert!(close(&out, &[10.0, 17.5], 1e-5), "{out:?}");
    }

    #[test]
    fn read_probe_sums_by_block() {
        use half::f16;
        let t = spedec_cuda::kernels::consts::PROBE_THREADS as usize;
        // 3t vectors of ones-bits (word 0x0001_0001) over two blocks: block 0 reads vectors
        // 0..t and 2t..3t, block 1 reads t..2t; 4 words per vector.
        let buf = vec![f16::from_bits(1); 3 * t * 8];
        let s = read_probe_sums(&buf, 2);
        assert_eq!(
            s,
            vec![
                (2 * t * 4 * 0x0001_0001) as u32,
                (t * 4 * 0x0001_0001) as u32
            ]
        );
        // Wrapping: 0xffff halves give words 0xffff_ffff = −1 each.
        let buf = vec![f16::from_bits(0xffff); 16];
        assert_eq!(read_probe_sums(&buf, 1), vec![8u32.wrapping_neg()]);
    }

    #[test]
    fn argmax_and_softmax() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -5.0]), 1);
        assert_eq!(argmax(&[f32::NAN]), 0);
        let p = softmax(&[0.0, 2.0f32.ln()], 1.0);
        assert!(close(&p, &[1.0 / 3.0, 2.0 / 3.0], 1e-7));
        let p2 = softmax(&[0.0, 2.0 * 2.0f32.ln()], 2.0);
        assert!(close(&p2, &[1.0 / 3.0, 2.0 / 3.0], 1e-7));
    }
}
