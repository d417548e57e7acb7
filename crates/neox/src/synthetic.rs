//! Seeded random weights of any GPT-NeoX shape, so real Pythia shapes run with no download.
//!
//! Every element is a pure function of (seed, tensor index, element index) — a splitmix64
//! hash mapped to a uniform value of the requested standard deviation — so generation is
//! parallel and the same seed gives the same model on every machine.

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
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            seed: 0,
            std: 0.02,
            dtype: Dtype::F16,
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

/// Vector values rounded to the storage dtype, as a checkpoint written in that dtype holds them.
fn values(seed: u64, stream: u64, len: usize, std: f32, dtype: Dtype) -> Vec<f32> {
    (0..len)
        .map(|i| round_to(dtype, value(seed, stream, i as u64, std)))
        .collect()
}

fn round_to(dtype: Dtype, v: f32) -> f32 {
    match dtype {
        Dtype::F32 => v,
        Dtype::F16 => half::f16::from_f32(v).to_f32(),
        Dtype::Bf16 => half::bf16::from_f32(v).to_f32(),
    }
}

struct Streams {
    seed: u64,
    next: u64,
}

impl Streams {
    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

fn matrix(s: &mut Streams, spec: &SyntheticSpec, rows: usize, cols: usize) -> Matrix {
    let stream = s.next();
    let seed = s.seed;
    let dtype = spec.dtype;
    let mut data = vec![0u16; rows * cols];
    data.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(c, chunk)| {
            let base = (c << 16) as u64;
            for (j, out) in chunk.iter_mut().enumerate() {
                let v = value(seed, stream, base + j as u64, spec.std);
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
        weight: values(s.seed, a, d, 0.1, Dtype::F32)
            .into_iter()
            .map(|v| round_to(spec.dtype, 1.0 + v))
            .collect(),
        bias: values(s.seed, b, d, 0.05, spec.dtype),
    }
}

fn linear(s: &mut Streams, spec: &SyntheticSpec, out: usize, inp: usize) -> Linear {
    let weight = matrix(s, spec, out, inp);
    let stream = s.next();
    Linear {
        weight,
        bias: values(s.seed, stream, out, 0.02, spec.dtype),
    }
}

/// Random weights of the shapes `config` describes.
pub fn synthetic_weights(config: &Config, spec: &SyntheticSpec) -> Weights {
    let (d, i, v) = (
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
    );
    let mut s = Streams {
        seed: spec.seed,
        next: 0,
    };
    let embed_in = matrix(&mut s, spec, v, d);
    let layers = (0..config.num_layers)
        .map(|_| LayerWeights {
            input_layernorm: norm(&mut s, spec, d),
            post_attention_layernorm: norm(&mut s, spec, d),
            query_key_value: linear(&mut s, spec, 3 * d, d),
            dense: linear(&mut s, spec, d, d),
            dense_h_to_4h: linear(&mut s, spec, i, d),
            dense_4h_to_h: linear(&mut s, spec, d, i),
        })
        .collect();
    let final_layer_norm = norm(&mut s, spec, d);
    let embed_out = matrix(&mut s, spec, v, d);
    Weights {
        embed_in,
        layers,
        final_layer_norm,
        embed_out,
    }
}
