//! Seeded random weights of any GPT-NeoX shape, so real Pythia shapes run with no download.
//!
//! Every element is a pure function of (seed, tensor index, element index) — a splitmix64
//! hash mapped to a uniform value of the requested standard deviation — so generation is
//! parallel and the same seed gives the same model on every machine.
//!
//! Derived drafts (for speculative decoding with a known closeness to a synthetic target):
//! - **noise σ**: every element gets independent Gaussian noise of standard deviation
//!   σ × *the standard deviation that tensor was drawn with* (0.02 for matrices and linear
//!   biases, 0.1 for the spread of LayerNorm weights around 1, 0.05 for LayerNorm biases),
//!   from its own stream keyed by `noise_seed`, added before rounding to the storage dtype.
//!   σ = 0 gives the target's exact bits; acceptance falls as σ grows.
//! - **first N layers**: the target's first N blocks with its own embedding, final norm and
//!   unembedding (the tensors of a layer do not depend on how many layers follow).
//!
//! Both leave the target's streams untouched, so `seed=S:noise=…:layers=…` is always "near"
//! `seed=S`.
//!
//! The default weights give near-uniform next-token distributions (pythia-70m: top-1
//! probability ≈ 1e-4, entropy 10.72 nats against 10.83 for uniform), so any two models agree
//! when sampling. **`logit_scale` X** draws the unembedding with X times the usual standard
//! deviation, which multiplies every logit by X (a temperature of 1/X): target and drafts that
//! share it get peaked distributions, and sampled acceptance then tracks σ as greedy
//! acceptance does. X = 1 is the default weights' exact bits.
//!
//! In these random models every block adds as much to the residual stream as the first, so a
//! draft of the first N layers is far from its target (pythia-70m, 5 of 6 layers: greedy
//! acceptance ≈ 0.2). **`layer_decay` r** draws the output projections of block l (attention
//! dense and MLP 4h→h, weights and biases) with r^l times the usual standard deviation: later
//! blocks add less, as they refine rather than rewrite in a trained model, and a truncated
//! draft's distance shrinks with N. r = 1 is the default weights' exact bits.

use rayon::prelude::*;

use crate::config::Config;
use crate::weights::{Dtype, LayerWeights, Linear, Matrix, Norm, Weights};

/// How synthetic weights are drawn.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticSpec {
    pub seed: u64,
    /// Standard deviation of matrix entries (Pythia's init uses 0.02).
    pub std: f32,
    /// Storage dtype of the matrices (f16 or bf16; f32 is widened from f16 values).
    pub dtype: Dtype,
    /// Relative noise σ (0: none): see the module docs.
    pub noise: f32,
    /// Seed of the noise stream (independent of `seed`'s streams).
    pub noise_seed: u64,
    /// Keep only the first N layers (`None`: all of the config's layers).
    pub layers: Option<usize>,
    /// Factor on the unembedding's standard deviation (1: the default weights).
    pub logit_scale: f32,
    /// Per-block factor on the output projections' standard deviation (1: the default).
    pub layer_decay: f32,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            seed: 0,
            std: 0.02,
            dtype: Dtype::F16,
            noise: 0.0,
            noise_seed: 0,
            layers: None,
            logit_scale: 1.0,
            layer_decay: 1.0,
        }
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform value in `[-√3·std, √3·std)` (standard deviation `std`) for element `i` of stream `s`.
fn value(seed: u64, stream: u64, i: u64, std: f32) -> f32 {
    let h = splitmix64(seed ^ splitmix64(stream.wrapping_mul(0x1000_0000_01B3) ^ i));
    let u = (h >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
    (2.0 * u - 1.0) * std * 3f32.sqrt()
}

/// Domain separator of the noise streams, so that no noise hash equals a weight hash.
const NOISE_DOMAIN: u64 = 0xD1B5_4A32_D192_ED03;

/// Standard normal value for element `i` of noise stream `s` (Box–Muller on one 64-bit hash).
fn gaussian(noise_seed: u64, stream: u64, i: u64) -> f32 {
    let h = splitmix64(
        NOISE_DOMAIN ^ noise_seed ^ splitmix64(stream.wrapping_mul(0x9E37_79B9) ^ i ^ NOISE_DOMAIN),
    );
    let u1 = ((h >> 32) as f64 + 1.0) / 4_294_967_296.0; // (0, 1]
    let u2 = (h & 0xFFFF_FFFF) as f64 / 4_294_967_296.0; // [0, 1)
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Element `i` of stream `stream` drawn with standard deviation `std`, plus the spec's noise.
fn noisy(spec: &SyntheticSpec, stream: u64, i: u64, std: f32) -> f32 {
    let v = value(spec.seed, stream, i, std);
    if spec.noise == 0.0 {
        v
    } else {
        v + spec.noise * std * gaussian(spec.noise_seed, stream, i)
    }
}

/// Vector values rounded to the storage dtype, as a checkpoint written in that dtype holds them.
fn values(spec: &SyntheticSpec, stream: u64, len: usize, std: f32, dtype: Dtype) -> Vec<f32> {
    (0..len)
        .map(|i| round_to(dtype, noisy(spec, stream, i as u64, std)))
        .collect()
}

fn round_to(dtype: Dtype, v: f32) -> f32 {
    match dtype {
        Dtype::F32 => v,
        Dtype::F16 => half::f16::from_f32(v).to_f32(),
        Dtype::Bf16 => half::bf16::from_f32(v).to_f32(),
    }
}

/// Hands out stream numbers in a fixed order: the same tensor always gets the same stream.
struct Streams {
    next: u64,
}

impl Streams {
    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

fn matrix(s: &mut Streams, spec: &SyntheticSpec, std: f32, rows: usize, cols: usize) -> Matrix {
    let stream = s.next();
    let dtype = spec.dtype;
    let mut data = vec![0u16; rows * cols];
    data.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(c, chunk)| {
            let base = (c << 16) as u64;
            for (j, out) in chunk.iter_mut().enumerate() {
                let v = noisy(spec, stream, base + j as u64, std);
                *out = match dtype {
                    Dtype::Bf16 => half::bf16::from_f32(v).to_bits(),
                    _ => half::f16::from_f32(v).to_bits(),
                };
            }
        });
    match dtype {
        Dtype::F32 => {
            // Widen the f16 values: the same model, stored as f32.
            let wide: Vec<f32> = data
                .iter()
                .map(|&b| half::f16::from_bits(b).to_f32())
                .collect();
            Matrix::owned_f32(rows, cols, wide)
        }
        _ => Matrix::owned16(dtype, rows, cols, data),
    }
}

fn norm(s: &mut Streams, spec: &SyntheticSpec, d: usize) -> Norm {
    let (a, b) = (s.next(), s.next());
    Norm {
        weight: values(spec, a, d, 0.1, Dtype::F32)
            .into_iter()
            .map(|v| round_to(spec.dtype, 1.0 + v))
            .collect(),
        bias: values(spec, b, d, 0.05, spec.dtype),
    }
}

/// A linear layer whose weight and bias are drawn with `scale` times the usual deviations.
fn linear(s: &mut Streams, spec: &SyntheticSpec, scale: f32, out: usize, inp: usize) -> Linear {
    let weight = matrix(s, spec, spec.std * scale, out, inp);
    let stream = s.next();
    Linear {
        weight,
        bias: values(spec, stream, out, 0.02 * scale, spec.dtype),
    }
}

/// Streams one layer takes: two norms (weight, bias) and four linears (weight, bias).
const STREAMS_PER_LAYER: u64 = 2 * 2 + 4 * 2;

/// Random weights of the shapes `config` describes (with `spec.layers = Some(n)`, only the
/// first `n` of its layers; `n` must not exceed `config.num_layers`).
pub fn synthetic_weights(config: &Config, spec: &SyntheticSpec) -> Weights {
    let (d, i, v) = (
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
    );
    let kept = spec
        .layers
        .unwrap_or(config.num_layers)
        .min(config.num_layers);
    let mut s = Streams { next: 0 };
    let embed_in = matrix(&mut s, spec, spec.std, v, d);
    let layers = (0..kept)
        .map(|l| {
            let first = s.next;
            let out_scale = spec.layer_decay.powi(l as i32);
            let layer = LayerWeights {
                input_layernorm: norm(&mut s, spec, d),
                post_attention_layernorm: norm(&mut s, spec, d),
                query_key_value: linear(&mut s, spec, 1.0, 3 * d, d),
                dense: linear(&mut s, spec, out_scale, d, d),
                dense_h_to_4h: linear(&mut s, spec, 1.0, i, d),
                dense_4h_to_h: linear(&mut s, spec, out_scale, d, i),
            };
            debug_assert_eq!(s.next - first, STREAMS_PER_LAYER);
            layer
        })
        .collect();
    // The dropped layers' streams are skipped, so the final norm and the unembedding are the
    // full model's.
    s.next += (config.num_layers - kept) as u64 * STREAMS_PER_LAYER;
    let final_layer_norm = norm(&mut s, spec, d);
    let embed_out = matrix(&mut s, spec, spec.std * spec.logit_scale, v, d);
    Weights {
        embed_in,
        layers,
        final_layer_norm,
        embed_out,
    }
}
