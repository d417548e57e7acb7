//! The GPT-NeoX forward as a fixed sequence of kernel launches over any
//! [`KernelBackend`]: the GPU ([`spedec_cuda::GpuBackend`]) or, in `spedec-check`'s tests, a
//! host emulation of the same CUDA sources.
//!
//! Everything a step touches lives in buffers allocated once by [`Engine::new`]: the weights
//! (f16), the KV cache (f16, one K and one V buffer per layer, `[H, capacity, hd]` each, the
//! per-layer slice of `spedec_cuda::KvLayout`), and activation scratch for [`MAX_ROWS`] rows.
//! Token ids and positions are written into device arrays before each step, so the launches
//! of a step depend only on its row count M: a backend may record them once per M (a CUDA
//! graph) and replay them for every later step with M rows.
//!
//! One step of M rows (`encode`) mirrors `CpuModel::forward`:
//!
//! | CPU model                                  | kernels                                           |
//! | ------------------------------------------ | ------------------------------------------------- |
//! | `x = embed_in[ids]`                        | `embedding_f16` → x f32                           |
//! | `h = ln1(x)` (and `ln2(x)` when parallel)  | `add_layernorm_f16` (both LNs of one x in a pass) |
//! | `qkv = h·Wqkvᵀ + b`                        | `linear_f16` → f16                                |
//! | rotary on q, k; k, v into the cache        | `rotary_kv_f16`                                   |
//! | causal attention                           | `attn_partial_f16` + `attn_combine_f16`           |
//! | `x += attn·Wdᵀ + b`                        | `linear_f16` with the f32 `+=` epilogue           |
//! | sequential only: `h = ln2(x)`              | `add_layernorm_f16`                               |
//! | `x += gelu(h·W1ᵀ + b1)·W2ᵀ + b2`           | `linear_f16` (+GELU) → f16, then `+=` into x      |
//! | `logits = ln_f(x)·W_outᵀ`                  | `add_layernorm_f16`, `linear_f16` → f32           |
//!
//! Parallel residual: both LayerNorms read x before either branch is added, then the
//! attention and MLP outputs are added to x in turn (f32), which is
//! `x + attn(ln1(x)) + mlp(ln2(x))`. Sequential: the attention output is added before `ln2`.

use anyhow::{bail, ensure, Context, Result};
use half::f16;
use rayon::prelude::*;
use spedec_cuda::kernels::consts::ATT_MAX_HD;
use spedec_cuda::{AttnShape, KernelBackend, LinDest};
use spedec_lm::{KvCursor, Logits};

use crate::config::Config;
use crate::weights::{Dtype, Matrix, Weights};

pub use spedec_cuda::MAX_ROWS;

/// The model dimensions a step needs.
#[derive(Debug, Clone, Copy)]
struct Dims {
    hidden: usize,
    intermediate: usize,
    vocab: usize,
    eps: f32,
    parallel: bool,
}

/// One layer's parameters on the backend, all f16.
struct LayerParams<B: KernelBackend> {
    /// `[d]` each
    ln1_w: B::Buf<f16>,
    ln1_b: B::Buf<f16>,
    ln2_w: B::Buf<f16>,
    ln2_b: B::Buf<f16>,
    /// `[3d, d]`, rows per head `[q|k|v][hd]`; bias `[3d]`
    qkv_w: B::Buf<f16>,
    qkv_b: B::Buf<f16>,
    /// `[d, d]`; bias `[d]`
    dense_w: B::Buf<f16>,
    dense_b: B::Buf<f16>,
    /// `[I, d]`; bias `[I]`
    fc1_w: B::Buf<f16>,
    fc1_b: B::Buf<f16>,
    /// `[d, I]`; bias `[d]`
    fc2_w: B::Buf<f16>,
    fc2_b: B::Buf<f16>,
}

/// All parameters on the backend, all f16.
struct Params<B: KernelBackend> {
    /// `[V, d]`
    embed_in: B::Buf<f16>,
    layers: Vec<LayerParams<B>>,
    /// `[d]` each
    final_w: B::Buf<f16>,
    final_b: B::Buf<f16>,
    /// `[V, d]`
    embed_out: B::Buf<f16>,
}

/// One layer's KV cache: K and V, each f16 `[H, capacity, hd]`.
struct LayerKv<B: KernelBackend> {
    k: B::Buf<f16>,
    v: B::Buf<f16>,
}

/// Per-step inputs and activations, sized for [`MAX_ROWS`] rows.
struct Scratch<B: KernelBackend> {
    /// u32 `[MAX_ROWS]` token ids of the step
    ids: B::Buf<u32>,
    /// i32 `[MAX_ROWS]` absolute positions of the step
    pos: B::Buf<i32>,
    /// f32 `[MAX_ROWS, d]` residual stream
    x: B::Buf<f32>,
    /// f16 `[MAX_ROWS, d]` ln1 output (and the final LayerNorm's)
    h1: B::Buf<f16>,
    /// f16 `[MAX_ROWS, d]` ln2 output
    h2: B::Buf<f16>,
    /// f16 `[MAX_ROWS, H, 3, hd]` fused QKV projection
    qkv: B::Buf<f16>,
    /// f16 `[MAX_ROWS, H, hd]` rotated queries
    q: B::Buf<f16>,
    /// f16 `[MAX_ROWS, d]` attention output (heads concatenated)
    attn: B::Buf<f16>,
    /// f16 `[MAX_ROWS, I]` GELU(h2·W1ᵀ + b1)
    mid: B::Buf<f16>,
    /// f32 `[MAX_ROWS, V]` logits
    logits: B::Buf<f32>,
}

/// A GPT-NeoX model resident on a backend: f16 weights, f16 KV cache, scratch, and the
/// number of cached positions.
pub struct Engine<B: KernelBackend> {
    backend: B,
    config: Config,
    dims: Dims,
    shape: AttnShape,
    params: Params<B>,
    kv: Vec<LayerKv<B>>,
    scratch: Scratch<B>,
    /// Cached length and capacity.
    cursor: KvCursor,
    /// Bytes of f16 matrices one decode step reads (all but `embed_in`).
    bytes_per_token: usize,
}

/// Check that `config` fits the kernels' limits (with messages that say what to do).
pub fn check_config(config: &Config) -> Result<()> {
    let (d, hd, inter) = (
        config.hidden_size,
        config.head_dim(),
        config.intermediate_size,
    );
    if !d.is_multiple_of(8) || !inter.is_multiple_of(8) {
        bail!(
            "the CUDA kernels need hidden_size ({d}) and intermediate_size ({inter}) to be \
             multiples of 8 (the CPU backend has no such limit)"
        );
    }
    if !hd.is_multiple_of(8) || hd > ATT_MAX_HD {
        bail!(
            "the CUDA attention kernel needs a head_dim that is a multiple of 8 and at most \
             {ATT_MAX_HD} (this model has {hd}; the CPU backend has no such limit)"
        );
    }
    let rot = config.rotary_dims();
    if !rot.is_multiple_of(2) || rot > hd {
        bail!("rotary dims {rot} must be even and at most head_dim {hd}");
    }
    i32::try_from(config.vocab_size * d)
        .map_err(|_| anyhow::anyhow!("vocab_size × hidden_size does not fit the kernels' i32"))?;
    i32::try_from(inter * d)
        .map_err(|_| anyhow::anyhow!("intermediate × hidden_size does not fit the kernels' i32"))?;
    Ok(())
}

/// Largest finite f16 value.
const F16_MAX: f32 = 65504.0;

/// A matrix converted to f16 (f16 storage is copied as is; bf16 and f32 are rounded to
/// nearest). Values beyond the f16 range are an error naming the tensor.
pub fn matrix_to_f16(name: &str, m: &Matrix) -> Result<Vec<f16>> {
    let bytes = m.bytes();
    let out: Vec<f16> = match m.dtype() {
        Dtype::F16 => bytes
            .par_chunks_exact(2)
            .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::Bf16 => bytes
            .par_chunks_exact(2)
            .map(|b| {
                f16::from_f32(half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            })
            .collect(),
        Dtype::F32 => bytes
            .par_chunks_exact(4)
            .map(|b| f16::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
    };
    if m.dtype() != Dtype::F16 {
        if let Some(i) = out.par_iter().position_any(|v| v.is_infinite()) {
            bail!(
                "{name} element {i} is beyond the f16 range (±{F16_MAX}): this checkpoint cannot \
                 run with f16 weights on the CUDA backend (the CPU backend keeps the stored dtype)"
            );
        }
    }
    Ok(out)
}

/// A vector (LayerNorm parameter or bias) rounded to f16.
pub fn vector_to_f16(name: &str, v: &[f32]) -> Result<Vec<f16>> {
    if let Some(x) = v.iter().find(|x| x.abs() > F16_MAX) {
        bail!(
            "{name} holds {x}, beyond the f16 range of the CUDA backend (the CPU backend keeps \
             the stored dtype)"
        );
    }
    Ok(v.iter().map(|&x| f16::from_f32(x)).collect())
}

fn upload_matrix<B: KernelBackend>(b: &mut B, name: &str, m: &Matrix) -> Result<B::Buf<f16>> {
    let host = matrix_to_f16(name, m)?;
    b.upload(&host)
        .with_context(|| format!("uploading {name} ({} × {})", m.rows(), m.cols()))
}

fn upload_vector<B: KernelBackend>(b: &mut B, name: &str, v: &[f32]) -> Result<B::Buf<f16>> {
    let host = vector_to_f16(name, v)?;
    b.upload(&host).with_context(|| format!("uploading {name}"))
}

fn upload_params<B: KernelBackend>(b: &mut B, w: &Weights) -> Result<Params<B>> {
    let mut layers = Vec::with_capacity(w.layers.len());
    for (l, lw) in w.layers.iter().enumerate() {
        let p = format!("layer {l}");
        layers.push(LayerParams {
            ln1_w: upload_vector(
                b,
                &format!("{p} input_layernorm.weight"),
                &lw.input_layernorm.weight,
            )?,
            ln1_b: upload_vector(
                b,
                &format!("{p} input_layernorm.bias"),
                &lw.input_layernorm.bias,
            )?,
            ln2_w: upload_vector(
                b,
                &format!("{p} post_attention_layernorm.weight"),
                &lw.post_attention_layernorm.weight,
            )?,
            ln2_b: upload_vector(
                b,
                &format!("{p} post_attention_layernorm.bias"),
                &lw.post_attention_layernorm.bias,
            )?,
            qkv_w: upload_matrix(
                b,
                &format!("{p} query_key_value.weight"),
                &lw.query_key_value.weight,
            )?,
            qkv_b: upload_vector(
                b,
                &format!("{p} query_key_value.bias"),
                &lw.query_key_value.bias,
            )?,
            dense_w: upload_matrix(b, &format!("{p} dense.weight"), &lw.dense.weight)?,
            dense_b: upload_vector(b, &format!("{p} dense.bias"), &lw.dense.bias)?,
            fc1_w: upload_matrix(
                b,
                &format!("{p} dense_h_to_4h.weight"),
                &lw.dense_h_to_4h.weight,
            )?,
            fc1_b: upload_vector(
                b,
                &format!("{p} dense_h_to_4h.bias"),
                &lw.dense_h_to_4h.bias,
            )?,
            fc2_w: upload_matrix(
                b,
                &format!("{p} dense_4h_to_h.weight"),
                &lw.dense_4h_to_h.weight,
            )?,
            fc2_b: upload_vector(
                b,
                &format!("{p} dense_4h_to_h.bias"),
                &lw.dense_4h_to_h.bias,
            )?,
        });
    }
    Ok(Params {
        embed_in: upload_matrix(b, "embed_in.weight", &w.embed_in)?,
        layers,
        final_w: upload_vector(b, "final_layer_norm.weight", &w.final_layer_norm.weight)?,
        final_b: upload_vector(b, "final_layer_norm.bias", &w.final_layer_norm.bias)?,
        embed_out: upload_matrix(b, "embed_out.weight", &w.embed_out)?,
    })
}

/// Bytes of the f16 matrices one decode step reads: every layer matrix and `embed_out`
/// (of `embed_in` one row is read).
pub fn f16_bytes_per_token(config: &Config) -> usize {
    let (d, i, v) = (
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
    );
    let per_layer = 3 * d * d + d * d + 2 * i * d;
    2 * (config.num_layers * per_layer + v * d)
}

impl<B: KernelBackend> Engine<B> {
    /// Upload `weights` (converted to f16) and allocate the KV cache for `capacity` positions
    /// (default: the model's max positions, capped at [`KvCursor::DEFAULT_CONTEXT_CAP`]) and
    /// the scratch of one step.
    pub fn new(
        mut backend: B,
        config: &Config,
        weights: &Weights,
        capacity: Option<usize>,
    ) -> Result<Self> {
        check_config(config)?;
        let cursor = KvCursor::new(capacity, config.max_position_embeddings)?;
        let capacity = cursor.capacity();
        ensure!(
            weights.layers.len() == config.num_layers,
            "weights have {} layers, config says {}",
            weights.layers.len(),
            config.num_layers
        );
        let dims = Dims {
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            vocab: config.vocab_size,
            eps: config.layer_norm_eps as f32,
            parallel: config.use_parallel_residual,
        };
        let shape = AttnShape {
            heads: config.num_heads,
            head_dim: config.head_dim(),
            rotary_dims: config.rotary_dims(),
            rotary_base: config.rotary_base as f32,
            max_pos: capacity,
        };
        // The cache's size comes from the config and the asked-for context: checked before
        // anything is allocated, and named when the device cannot hold it.
        let layer_len = shape
            .heads
            .checked_mul(capacity)
            .and_then(|n| n.checked_mul(shape.head_dim));
        let kv_bytes = layer_len.and_then(|n| n.checked_mul(4 * config.num_layers));
        let (Some(layer_len), Some(kv_bytes)) = (layer_len, kv_bytes) else {
            bail!(
                "a KV cache of {capacity} positions ({} layers × {} hidden) is too large to \
                 address; use a shorter context length",
                config.num_layers,
                config.hidden_size
            );
        };
        let what = || {
            format!(
                "allocating the KV cache ({capacity} positions, {} of f16)",
                spedec_report::format_bytes(kv_bytes as u64)
            )
        };
        let params = upload_params(&mut backend, weights)?;
        let zeros = crate::model::try_zeroed::<f16>(layer_len).with_context(what)?;
        let mut kv = Vec::with_capacity(config.num_layers);
        for _ in 0..config.num_layers {
            kv.push(LayerKv {
                k: backend.upload(&zeros).with_context(what)?,
                v: backend.upload(&zeros).with_context(what)?,
            });
        }
        drop(zeros);
        let (d, r) = (dims.hidden, MAX_ROWS);
        let scratch = Scratch {
            ids: backend.upload(&[0u32; MAX_ROWS])?,
            pos: backend.upload(&[0i32; MAX_ROWS])?,
            x: backend.upload(&vec![0f32; r * d])?,
            h1: backend.upload(&vec![f16::ZERO; r * d])?,
            h2: backend.upload(&vec![f16::ZERO; r * d])?,
            qkv: backend.upload(&vec![f16::ZERO; r * 3 * d])?,
            q: backend.upload(&vec![f16::ZERO; r * d])?,
            attn: backend.upload(&vec![f16::ZERO; r * d])?,
            mid: backend.upload(&vec![f16::ZERO; r * dims.intermediate])?,
            logits: backend.upload(&vec![0f32; r * dims.vocab])?,
        };
        backend.prepare(&shape)?;
        backend.synchronize()?;
        Ok(Engine {
            backend,
            config: config.clone(),
            dims,
            shape,
            params,
            kv,
            scratch,
            cursor,
            bytes_per_token: f16_bytes_per_token(config),
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The backend (e.g. for graph statistics).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.cursor.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.cursor.is_empty()
    }

    /// Positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.cursor.capacity()
    }

    /// Bytes of f16 weights one decode step reads.
    pub fn bytes_per_token(&self) -> usize {
        self.bytes_per_token
    }

    /// Keeps the first `len` cached positions (moves the length only).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        self.cursor.truncate(len)
    }

    /// Appends `tokens` after the cached ones; returns logits `[tokens.len(), vocab]` (f32).
    /// Runs in steps of at most [`MAX_ROWS`] rows.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Logits> {
        let n = tokens.len();
        let vocab = self.dims.vocab;
        let start = self.cursor.check_append(tokens, vocab)?;
        let mut out = vec![0f32; n * vocab];
        let Engine {
            backend,
            dims,
            shape,
            params,
            kv,
            scratch,
            ..
        } = self;
        for (c, (chunk, dst)) in tokens
            .chunks(MAX_ROWS)
            .zip(out.chunks_mut(MAX_ROWS * vocab))
            .enumerate()
        {
            let m = chunk.len();
            let first = start + c * MAX_ROWS;
            let mut pos = [0i32; MAX_ROWS];
            for (i, p) in pos.iter_mut().enumerate().take(m) {
                *p = (first + i) as i32;
            }
            backend.write(chunk, &mut scratch.ids)?;
            backend.write(&pos[..m], &mut scratch.pos)?;
            backend.run_step(m, &mut |b| encode(b, dims, shape, params, kv, scratch, m))?;
            backend.read_into(&scratch.logits, dst)?;
        }
        self.cursor.advance(n);
        Ok(Logits::new(out, n, vocab))
    }
}

/// Enqueue the launches of one step of `m` rows (ids and positions already on the device).
fn encode<B: KernelBackend>(
    b: &mut B,
    dims: &Dims,
    shape: &AttnShape,
    w: &Params<B>,
    kv: &mut [LayerKv<B>],
    s: &mut Scratch<B>,
    m: usize,
) -> Result<()> {
    let Dims {
        hidden: d,
        intermediate: inter,
        vocab,
        eps,
        parallel,
    } = *dims;
    b.embedding(&s.ids, &w.embed_in, &mut s.x, m, vocab, d)?;
    for (lw, cache) in w.layers.iter().zip(kv.iter_mut()) {
        // h1 = ln1(x); parallel residual: h2 = ln2(x) of the same x, in the same pass.
        let second = parallel.then_some((&lw.ln2_w, &lw.ln2_b, &mut s.h2));
        b.add_layernorm(
            &mut s.x, None, None, &lw.ln1_w, &lw.ln1_b, &mut s.h1, second, m, d, eps,
        )?;
        b.linear(
            &s.h1,
            &lw.qkv_w,
            Some(&lw.qkv_b),
            LinDest::F16(&mut s.qkv),
            m,
            3 * d,
            d,
        )?;
        b.rotary_kv(
            &s.qkv,
            &s.pos,
            &mut s.q,
            &mut cache.k,
            &mut cache.v,
            m,
            shape,
        )?;
        b.attention(&s.q, &cache.k, &cache.v, &s.pos, &mut s.attn, m, shape)?;
        // x += attn · Wdᵀ + b
        b.linear(
            &s.attn,
            &lw.dense_w,
            Some(&lw.dense_b),
            LinDest::AddF32(&mut s.x),
            m,
            d,
            d,
        )?;
        if !parallel {
            // Sequential residual: h2 = ln2(x + attn).
            b.add_layernorm(
                &mut s.x, None, None, &lw.ln2_w, &lw.ln2_b, &mut s.h2, None, m, d, eps,
            )?;
        }
        // x += gelu(h2 · W1ᵀ + b1) · W2ᵀ + b2
        b.linear(
            &s.h2,
            &lw.fc1_w,
            Some(&lw.fc1_b),
            LinDest::F16Gelu(&mut s.mid),
            m,
            inter,
            d,
        )?;
        b.linear(
            &s.mid,
            &lw.fc2_w,
            Some(&lw.fc2_b),
            LinDest::AddF32(&mut s.x),
            m,
            d,
            inter,
        )?;
    }
    b.add_layernorm(
        &mut s.x, None, None, &w.final_w, &w.final_b, &mut s.h1, None, m, d, eps,
    )?;
    b.linear(
        &s.h1,
        &w.embed_out,
        None,
        LinDest::F32(&mut s.logits),
        m,
        vocab,
        d,
    )?;
    Ok(())
}
