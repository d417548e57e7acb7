//! Model parameters from `model.safetensors` (or the shards of a sharded checkpoint),
//! memory-mapped and kept in their stored dtype.
//!
//! Matrices (`[out_features, in_features]`, row-major, as PyTorch stores `Linear.weight`) stay
//! f32, f16 or bf16 exactly as on disk and are widened to f32 inside the matmul kernels, so a
//! 2.8b model occupies 5.6 GB, not 11 GB. Small vectors (LayerNorm, biases) become `Vec<f32>`.
//!
//! Every file's header is checked by [`crate::checkpoint::check_header`] first, every tensor
//! against the config's shapes, and every value for NaN / infinity (an error naming the
//! tensor and the element: such weights would only surface later as NaN logits).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype as StDtype, SafeTensors};

use crate::checkpoint::{check_header, Checkpoint, ShardIndex};
use crate::config::Config;

/// Storage dtype of a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    /// The name `config.json` uses (`torch_dtype`).
    pub fn torch_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::Bf16 => "bfloat16",
        }
    }

    fn from_safetensors(dtype: StDtype) -> Option<Self> {
        match dtype {
            StDtype::F32 => Some(Dtype::F32),
            StDtype::F16 => Some(Dtype::F16),
            StDtype::BF16 => Some(Dtype::Bf16),
            _ => None,
        }
    }

    pub(crate) fn to_safetensors(self) -> StDtype {
        match self {
            Dtype::F32 => StDtype::F32,
            Dtype::F16 => StDtype::F16,
            Dtype::Bf16 => StDtype::BF16,
        }
    }
}

/// Bytes that back weight matrices: a memory-mapped file or an owned buffer.
pub(crate) enum Storage {
    Mapped(Mmap),
    /// A whole safetensors file read into memory.
    OwnedBytes(Vec<u8>),
    /// Raw little-endian 16-bit elements (f16 or bf16).
    Owned16(Vec<u16>),
    OwnedF32(Vec<f32>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::OwnedBytes(v) => v,
            Storage::Owned16(v) => {
                // SAFETY: u16 has no padding; any byte view of it is valid and aligned for u8.
                unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len() * 2) }
            }
            Storage::OwnedF32(v) => {
                // SAFETY: as above; f32 has no padding and u8 has alignment 1.
                unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len() * 4) }
            }
        }
    }
}

/// A `[rows, cols]` row-major matrix in its stored dtype.
#[derive(Clone)]
pub struct Matrix {
    dtype: Dtype,
    rows: usize,
    cols: usize,
    storage: Arc<Storage>,
    /// Byte offset of element (0, 0) in `storage`.
    offset: usize,
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Matrix({:?}, [{}, {}])",
            self.dtype, self.rows, self.cols
        )
    }
}

impl Matrix {
    pub(crate) fn owned16(dtype: Dtype, rows: usize, cols: usize, data: Vec<u16>) -> Self {
        assert!(dtype.size() == 2 && data.len() == rows * cols);
        Matrix {
            dtype,
            rows,
            cols,
            storage: Arc::new(Storage::Owned16(data)),
            offset: 0,
        }
    }

    pub(crate) fn owned_f32(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert!(data.len() == rows * cols);
        Matrix {
            dtype: Dtype::F32,
            rows,
            cols,
            storage: Arc::new(Storage::OwnedF32(data)),
            offset: 0,
        }
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// All elements as little-endian bytes, `[rows * cols * dtype.size()]`.
    pub fn bytes(&self) -> &[u8] {
        let len = self.rows * self.cols * self.dtype.size();
        &self.storage.bytes()[self.offset..self.offset + len]
    }

    /// Row `r` widened to f32, shape `[cols]` (used for the embedding gather and references).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let size = self.dtype.size();
        let bytes = &self.bytes()[r * self.cols * size..(r + 1) * self.cols * size];
        widen_into(self.dtype, bytes, out);
    }
}

/// IEEE half → single, exact for every bit pattern, branch-free (so loops of it vectorise on
/// any CPU): the exponent-and-mantissa bits shifted into place and scaled by 2¹¹², which is exact
/// for normal and subnormal halves alike; infinities and NaNs get the all-ones exponent.
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let magnitude = h & 0x7fff;
    let scaled = f32::from_bits(magnitude << 13) * f32::from_bits((127 + 112) << 23);
    let special = if magnitude >= 0x7c00 { 0xff << 23 } else { 0 };
    f32::from_bits(scaled.to_bits() | special | sign)
}

/// Widens little-endian `bytes` of `dtype` into `out` (same element count).
pub fn widen_into(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        Dtype::Bf16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
    }
}

/// `y = x Wᵀ + b` parameters.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`
    pub weight: Matrix,
    /// `[out]`
    pub bias: Vec<f32>,
}

/// LayerNorm scale and shift, each `[hidden]`.
#[derive(Debug, Clone)]
pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub input_layernorm: Norm,
    pub post_attention_layernorm: Norm,
    /// `[3·hidden, hidden]`, rows grouped per head as `[head][q|k|v][head_dim]`.
    pub query_key_value: Linear,
    /// `[hidden, hidden]`
    pub dense: Linear,
    /// `[intermediate, hidden]`
    pub dense_h_to_4h: Linear,
    /// `[hidden, intermediate]`
    pub dense_4h_to_h: Linear,
}

/// All parameters of a GPT-NeoX model.
#[derive(Debug, Clone)]
pub struct Weights {
    /// `[vocab, hidden]`
    pub embed_in: Matrix,
    pub layers: Vec<LayerWeights>,
    pub final_layer_norm: Norm,
    /// `[vocab, hidden]`
    pub embed_out: Matrix,
}

/// Buffers that checkpoints carry but that are not parameters.
fn is_non_parameter(name: &str) -> bool {
    name.ends_with(".attention.bias")
        || name.ends_with(".attention.masked_bias")
        || name.ends_with(".attention.rotary_emb.inv_freq")
}

/// Memory-maps `path` read-only.
fn map(path: &Path) -> Result<Arc<Storage>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open weights file {}", path.display()))?;
    // SAFETY: the file is opened read-only; like every mmap-based loader we assume it is not
    // truncated by another process while mapped.
    let mmap = unsafe { Mmap::map(&file) }
        .with_context(|| format!("cannot memory-map {}", path.display()))?;
    Ok(Arc::new(Storage::Mapped(mmap)))
}

/// Parses one safetensors file after checking its header.
fn parse(bytes: &[u8]) -> Result<SafeTensors<'_>> {
    check_header(bytes).context("not a valid safetensors file (truncated or corrupt?)")?;
    SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow::anyhow!("not a valid safetensors file (truncated or corrupt?): {e}"))
}

impl Weights {
    /// Memory-maps `path` and checks every parameter against `config`.
    pub fn load(path: &Path, config: &Config) -> Result<Self> {
        let storage = map(path)?;
        Self::from_storages(&[storage], config, None)
            .with_context(|| format!("invalid weights file {}", path.display()))
    }

    /// The weights in `bytes`, a whole safetensors file held in memory (checked like a file).
    pub fn from_bytes(bytes: Vec<u8>, config: &Config) -> Result<Self> {
        Self::from_storages(&[Arc::new(Storage::OwnedBytes(bytes))], config, None)
    }

    /// Memory-maps every shard of `index` and checks every parameter against `config`; each
    /// tensor must be in the shard the index names for it.
    pub fn load_sharded(index: &ShardIndex, config: &Config) -> Result<Self> {
        let paths = index.shards();
        let storages = paths.iter().map(|p| map(p)).collect::<Result<Vec<_>>>()?;
        let names: Vec<String> = paths
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        Self::from_storages(&storages, config, Some((index, &names)))
            .with_context(|| format!("invalid sharded checkpoint {}", index.path.display()))
    }

    /// The weights of a folder's checkpoint, single or sharded.
    pub fn from_checkpoint(checkpoint: &Checkpoint, config: &Config) -> Result<Self> {
        match checkpoint {
            Checkpoint::Single(path) => Self::load(path, config),
            Checkpoint::Sharded(index) => Self::load_sharded(index, config),
        }
    }

    /// The weights in `storages` (safetensors files). For a sharded checkpoint `shards` gives
    /// the index and the file name of each storage: every tensor must sit in the shard the
    /// index names for it.
    fn from_storages(
        storages: &[Arc<Storage>],
        config: &Config,
        shards: Option<(&ShardIndex, &[String])>,
    ) -> Result<Self> {
        let mut table = TensorTable {
            found: HashMap::new(),
            storages,
        };
        for (shard, storage) in storages.iter().enumerate() {
            let bytes = storage.bytes();
            let file = shards.map(|(_, names)| names[shard].as_str());
            let tensors = match file {
                Some(file) => parse(bytes).with_context(|| format!("shard {file}"))?,
                None => parse(bytes)?,
            };
            for (name, view) in tensors.tensors() {
                if is_non_parameter(&name) {
                    continue;
                }
                if let (Some((index, _)), Some(file)) = (shards, file) {
                    match index.weight_map.get(&name) {
                        Some(listed) if listed == file => {}
                        Some(listed) => bail!(
                            "tensor {name:?} is in shard {file}, but the index lists it in {listed}"
                        ),
                        None => bail!("tensor {name:?} of shard {file} is not in the index"),
                    }
                }
                let offset = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
                let placed = Placed {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    shard,
                    offset,
                };
                if table.found.insert(name.clone(), placed).is_some() {
                    bail!("tensor {name:?} appears in more than one shard");
                }
            }
        }
        let (d, i, v) = (
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
        );
        let embed_in = table.matrix("gpt_neox.embed_in.weight", v, d)?;
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let p = format!("gpt_neox.layers.{l}");
            layers.push(LayerWeights {
                input_layernorm: table.norm(&format!("{p}.input_layernorm"), d)?,
                post_attention_layernorm: table
                    .norm(&format!("{p}.post_attention_layernorm"), d)?,
                query_key_value: table.linear_opt_bias(
                    &format!("{p}.attention.query_key_value"),
                    3 * d,
                    d,
                    config.attention_bias,
                )?,
                dense: table.linear_opt_bias(
                    &format!("{p}.attention.dense"),
                    d,
                    d,
                    config.attention_bias,
                )?,
                dense_h_to_4h: table.linear(&format!("{p}.mlp.dense_h_to_4h"), i, d)?,
                dense_4h_to_h: table.linear(&format!("{p}.mlp.dense_4h_to_h"), d, i)?,
            });
        }
        let final_layer_norm = table.norm("gpt_neox.final_layer_norm", d)?;
        // transformers 5 names the output projection `lm_head` in memory; files say `embed_out`.
        let out_name = if table.found.contains_key("lm_head.weight") {
            "lm_head.weight"
        } else {
            "embed_out.weight"
        };
        let embed_out = table.matrix(out_name, v, d)?;
        if let Some(extra) = table.found.keys().min() {
            bail!(
                "unexpected tensor {extra:?} ({} unexpected in all): the file does not match a \
                 GPT-NeoX model with {} layers",
                table.found.len(),
                config.num_layers
            );
        }
        Ok(Weights {
            embed_in,
            layers,
            final_layer_norm,
            embed_out,
        })
    }

    /// Total bytes of the matrices read by one decode step (everything but `embed_in`, of which
    /// one row is read).
    pub fn bytes_per_token(&self) -> usize {
        let m = |x: &Matrix| x.rows * x.cols * x.dtype.size();
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                m(&l.query_key_value.weight)
                    + m(&l.dense.weight)
                    + m(&l.dense_h_to_4h.weight)
                    + m(&l.dense_4h_to_h.weight)
            })
            .sum();
        layers + m(&self.embed_out)
    }

    /// Every named tensor in HF order, for writing a checkpoint: `(name, dtype, shape, bytes)`.
    pub(crate) fn named_tensors(&self) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
        let mut out = Vec::new();
        let mat = |out: &mut Vec<_>, name: String, m: &Matrix| {
            out.push((name, m.dtype, vec![m.rows, m.cols], m.bytes().to_vec()));
        };
        let vec_ = |out: &mut Vec<_>, name: String, dtype: Dtype, v: &[f32]| {
            out.push((name, dtype, vec![v.len()], encode(dtype, v)));
        };
        let dt = self.embed_out.dtype;
        mat(&mut out, "gpt_neox.embed_in.weight".into(), &self.embed_in);
        for (l, w) in self.layers.iter().enumerate() {
            let p = format!("gpt_neox.layers.{l}");
            for (n, norm) in [
                ("input_layernorm", &w.input_layernorm),
                ("post_attention_layernorm", &w.post_attention_layernorm),
            ] {
                vec_(&mut out, format!("{p}.{n}.weight"), dt, &norm.weight);
                vec_(&mut out, format!("{p}.{n}.bias"), dt, &norm.bias);
            }
            for (n, lin) in [
                ("attention.query_key_value", &w.query_key_value),
                ("attention.dense", &w.dense),
                ("mlp.dense_h_to_4h", &w.dense_h_to_4h),
                ("mlp.dense_4h_to_h", &w.dense_4h_to_h),
            ] {
                mat(&mut out, format!("{p}.{n}.weight"), &lin.weight);
                vec_(&mut out, format!("{p}.{n}.bias"), dt, &lin.bias);
            }
        }
        vec_(
            &mut out,
            "gpt_neox.final_layer_norm.weight".into(),
            dt,
            &self.final_layer_norm.weight,
        );
        vec_(
            &mut out,
            "gpt_neox.final_layer_norm.bias".into(),
            dt,
            &self.final_layer_norm.bias,
        );
        mat(&mut out, "embed_out.weight".into(), &self.embed_out);
        out
    }
}

/// Where a tensor of a checkpoint lies.
struct Placed {
    dtype: StDtype,
    shape: Vec<usize>,
    /// Index of its file in the table's storages.
    shard: usize,
    /// Byte offset of its first element in that file.
    offset: usize,
}

/// The tensors of a checkpoint's files not yet claimed by a parameter.
struct TensorTable<'a> {
    found: HashMap<String, Placed>,
    storages: &'a [Arc<Storage>],
}

impl TensorTable<'_> {
    /// Removes `name`, checking its shape, dtype and values; returns its dtype, file and byte
    /// offset.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<(Dtype, &Arc<Storage>, usize)> {
        let placed = self
            .found
            .remove(name)
            .with_context(|| format!("missing tensor {name:?} (expected shape {shape:?})"))?;
        if placed.shape != shape {
            bail!(
                "tensor {name:?} has shape {:?}, expected {shape:?}",
                placed.shape
            );
        }
        let dtype = Dtype::from_safetensors(placed.dtype).with_context(|| {
            format!(
                "tensor {name:?} has dtype {:?}, expected F32, F16 or BF16",
                placed.dtype
            )
        })?;
        let storage = &self.storages[placed.shard];
        let len = shape.iter().product::<usize>() * dtype.size();
        let bytes = &storage.bytes()[placed.offset..placed.offset + len];
        if let Some(i) = first_non_finite(dtype, bytes) {
            bail!(
                "tensor {name:?} holds a NaN or infinity at element {i} (flat index of shape \
                 {shape:?}): the checkpoint's weights are corrupt"
            );
        }
        Ok((dtype, storage, placed.offset))
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let (dtype, storage, offset) = self.take(name, &[rows, cols])?;
        Ok(Matrix {
            dtype,
            rows,
            cols,
            storage: storage.clone(),
            offset,
        })
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let (dtype, storage, offset) = self.take(name, &[len])?;
        let mut out = vec![0.0f32; len];
        widen_into(
            dtype,
            &storage.bytes()[offset..offset + len * dtype.size()],
            &mut out,
        );
        Ok(out)
    }

    fn norm(&mut self, prefix: &str, len: usize) -> Result<Norm> {
        Ok(Norm {
            weight: self.vector(&format!("{prefix}.weight"), len)?,
            bias: self.vector(&format!("{prefix}.bias"), len)?,
        })
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize) -> Result<Linear> {
        self.linear_opt_bias(prefix, out, inp, true)
    }

    /// A linear layer whose bias is zero when `has_bias` is false.
    fn linear_opt_bias(
        &mut self,
        prefix: &str,
        out: usize,
        inp: usize,
        has_bias: bool,
    ) -> Result<Linear> {
        Ok(Linear {
            weight: self.matrix(&format!("{prefix}.weight"), out, inp)?,
            bias: if has_bias {
                self.vector(&format!("{prefix}.bias"), out)?
            } else {
                vec![0.0; out]
            },
        })
    }
}

/// Flat index of the first NaN or infinity in little-endian `bytes` of `dtype`, if any
/// (scanned in parallel: a whole checkpoint passes through here once, at load).
fn first_non_finite(dtype: Dtype, bytes: &[u8]) -> Option<usize> {
    // NaN or infinity: the exponent bits all ones, in every format. `mask` repeats the
    // exponent mask over the lanes of a u64, `low` / `high` the lowest / highest bit of each.
    let (mask, low, high): (u64, u64, u64) = match dtype {
        Dtype::F32 => (
            0x7f80_0000_7f80_0000,
            0x0000_0001_0000_0001,
            0x8000_0000_8000_0000,
        ),
        Dtype::F16 => (
            0x7c00_7c00_7c00_7c00,
            0x0001_0001_0001_0001,
            0x8000_8000_8000_8000,
        ),
        Dtype::Bf16 => (
            0x7f80_7f80_7f80_7f80,
            0x0001_0001_0001_0001,
            0x8000_8000_8000_8000,
        ),
    };
    let size = dtype.size();
    let lane_mask = mask >> (64 - 8 * size);
    let is_bad = |b: &[u8]| {
        let mut x = [0u8; 8];
        x[..size].copy_from_slice(b);
        u64::from_le_bytes(x) & lane_mask == lane_mask
    };
    // Whether any lane of the words of `chunk` is all ones under the mask: the lanes of
    // `(x & mask) ^ mask` are zero exactly there, and `(v − low) & !v & high` is non-zero
    // exactly when some lane of v is zero. Branch-free, so it vectorises.
    let any_bad = |chunk: &[u8]| {
        let words = chunk.chunks_exact(8);
        let tail = words.remainder();
        let hits = words.fold(0u64, |acc, w| {
            let v = (u64::from_le_bytes(w.try_into().expect("8 bytes")) & mask) ^ mask;
            acc | (v.wrapping_sub(low) & !v & high)
        });
        hits != 0 || tail.chunks_exact(size).any(is_bad)
    };
    const CHUNK: usize = 1 << 20;
    bytes
        .par_chunks(CHUNK)
        .enumerate()
        .find_map_first(|(c, chunk)| {
            if !any_bad(chunk) {
                return None;
            }
            chunk
                .chunks_exact(size)
                .position(is_bad)
                .map(|i| c * CHUNK / size + i)
        })
}

/// Encodes f32 values as little-endian `dtype` bytes (round to nearest even).
pub(crate) fn encode(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.size());
    for &v in values {
        match dtype {
            Dtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
            Dtype::F16 => out.extend_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes()),
            Dtype::Bf16 => out.extend_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod non_finite_tests {
    use super::{first_non_finite, Dtype};

    #[test]
    fn every_nan_and_infinity_is_found_at_its_index() {
        for (dtype, bad) in [
            (Dtype::F16, vec![0x7c00u64, 0xfc00, 0x7e00, 0x7c01]),
            (Dtype::Bf16, vec![0x7f80, 0xff80, 0x7fc0]),
            (Dtype::F32, vec![0x7f80_0000, 0xff80_0000, 0x7fc0_0000]),
        ] {
            let size = dtype.size();
            // Finite values with many exponent bits set: the largest finite, -0, subnormals.
            let finite: &[u64] = match dtype {
                Dtype::F16 => &[0x7bff, 0x8000, 0x0001, 0x3c00, 0xfbff],
                Dtype::Bf16 => &[0x7f7f, 0x8000, 0x0001, 0x3f80],
                Dtype::F32 => &[0x7f7f_ffff, 0x8000_0000, 0x0000_0001, 0x3f80_0000],
            };
            let n = (1 << 20) / size * 2 + 7; // crosses a chunk and ends in a short tail
            let mut bytes: Vec<u8> = (0..n)
                .flat_map(|i| finite[i % finite.len()].to_le_bytes()[..size].to_vec())
                .collect();
            assert_eq!(first_non_finite(dtype, &bytes), None, "{dtype:?}");
            for &b in &bad {
                for at in [0, 3, n / 2, n - 1] {
                    let mut v = bytes.clone();
                    v[at * size..(at + 1) * size].copy_from_slice(&b.to_le_bytes()[..size]);
                    assert_eq!(
                        first_non_finite(dtype, &v),
                        Some(at),
                        "{dtype:?} {b:#x} at {at}"
                    );
                }
            }
            bytes.truncate(0);
            assert_eq!(first_non_finite(dtype, &bytes), None);
        }
    }
}

#[cfg(test)]
mod f16_tests {
    #[test]
    fn f16_widening_is_exact_for_every_bit_pattern() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            let got = super::f16_bits_to_f32(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}: {got} vs {want}");
            }
        }
    }
}
