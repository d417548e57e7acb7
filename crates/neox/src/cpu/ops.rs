//! Per-row ops of the forward pass: LayerNorm, exact GELU, rotary embedding, causal attention.
//!
//! Each output row depends only on its own input row (and the cache), computed in a fixed
//! order, so results never depend on how many rows a call carries.

use rayon::prelude::*;

use crate::weights::Norm;

/// LayerNorm of each `hidden`-wide row of `x` into `out` (both `[rows, hidden]`).
pub fn layer_norm(x: &[f32], norm: &Norm, eps: f32, out: &mut [f32]) {
    let d = norm.weight.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = xr.iter().sum::<f32>() / d as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..d {
            or[i] = (xr[i] - mean) * inv * norm.weight[i] + norm.bias[i];
        }
    }
}

/// Exact (erf) GELU in place: `x · ½(1 + erf(x/√2))`.
pub fn gelu(x: &mut [f32]) {
    x.par_chunks_mut(4096).for_each(|c| {
        for v in c {
            *v = 0.5 * *v * (1.0 + libm::erff(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
}

/// cos / sin tables for rotary embeddings, `[max_pos, rotary_dims / 2]` each.
pub struct Rope {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    /// Angles `pos · base^(−2i/rotary_dims)`, computed in f64 and rounded once.
    pub fn new(rotary_dims: usize, base: f64, max_pos: usize) -> Self {
        let half = rotary_dims / 2;
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for pos in 0..max_pos {
            for i in 0..half {
                let inv_freq = 1.0 / base.powf((2 * i) as f64 / rotary_dims as f64);
                let angle = pos as f64 * inv_freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Rope { half, cos, sin }
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
/// `start + i` and sees cache positions `0..=start + i`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    heads: usize,
    head_dim: usize,
    capacity: usize,
    start: usize,
    out: &mut [f32],
) {
    let scale = 1.0 / (head_dim as f32).sqrt();
    out.par_chunks_mut(head_dim)
        .enumerate()
        .for_each(|(row, o)| {
            let (i, h) = (row / heads, row % heads);
            let qh = &q[row * head_dim..(row + 1) * head_dim];
            let kh = &keys[h * capacity * head_dim..];
            let vh = &values[h * capacity * head_dim..];
            let len = start + i + 1;
            let mut scores: Vec<f32> = (0..len)
                .map(|t| dot(qh, &kh[t * head_dim..(t + 1) * head_dim]) * scale)
                .collect();
            let max = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut sum = 0.0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let inv = 1.0 / sum;
            o.fill(0.0);
            for (t, &p) in scores.iter().enumerate() {
                let w = p * inv;
                for (a, &v) in o.iter_mut().zip(&vh[t * head_dim..(t + 1) * head_dim]) {
                    *a += w * v;
                }
            }
        });
}

/// Fixed-order dot product (four partial sums, then combined).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 4];
    let full = a.len() / 4 * 4;
    for (x, y) in a[..full].chunks_exact(4).zip(b[..full].chunks_exact(4)) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for t in full..a.len() {
        s += a[t] * b[t];
    }
    s
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
        layer_norm(&[1.0, 2.0, 3.0, 4.0], &norm, 0.0, &mut out);
        let s = 1.0 / 1.25f32.sqrt();
        let want = [-1.5 * s, -0.5 * s * 2.0, 0.5 * s, 1.5 * s + 1.0];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{out:?} vs {want:?}");
        }
    }

    #[test]
    fn gelu_values() {
        let mut x = [0.0f32, 1.0, -1.0, 3.0];
        gelu(&mut x);
        // 0.5·x·(1 + erf(x/√2)) from the closed form.
        let want = [0.0f32, 0.841_344_7, -0.158_655_26, 2.995_950_5];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{x:?}");
        }
    }

    #[test]
    fn rope_rotates_pairs_and_leaves_the_rest() {
        let rope = Rope::new(4, 10000.0, 8);
        let mut v = [1.0f32, 0.0, 0.0, 0.0, 7.0];
        rope.apply(&mut v, 3);
        // Pair (0, 2) rotates by angle 3·1.
        assert!((v[0] - 3f32.cos()).abs() < 1e-6 && (v[2] - 3f32.sin()).abs() < 1e-6);
        assert_eq!((v[1], v[3], v[4]), (0.0, 0.0, 7.0));
    }

    #[test]
    fn attention_with_one_key_returns_its_value() {
        // heads 1, head_dim 2, capacity 4, one cached position.
        let keys = [1.0, 0.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0];
        let values = [0.5, -2.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0];
        let mut out = [0.0; 2];
        attention(&[3.0, 1.0], &keys, &values, 1, 2, 4, 0, &mut out);
        assert_eq!(out, [0.5, -2.0]);
    }
}
