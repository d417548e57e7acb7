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
//! Two paths, by row count, mirror `CpuModel::forward`: a **step** (`encode`: M <= 16 rows,
//! a decode or a verify, recorded as a graph) and a **layer-major prefill**
//! (`encode_prefill`: more rows, a prompt, in chunks of P <= [`PREFILL_ROWS`] rows, direct
//! launches):
//!
//! | CPU model                                  | kernels (step, M rows)                            | layer-major prefill (P rows)                        |
//! | ------------------------------------------ | ------------------------------------------------- | --------------------------------------------------- |
//! | `x = embed_in[ids]`                        | `embedding_f16` → x f32                           | the same, P rows                                    |
//! | `h = ln1(x)` (and `ln2(x)` when parallel)  | `add_layernorm_f16` (both LNs of one x in a pass) | the same, P rows                                    |
//! | `qkv = h·Wqkvᵀ + b`                        | `linear_f16` → f16                                | one linear of M = P (SIMT: 16-row slices)           |
//! | rotary on q, k; k, v into the cache        | `rotary_kv_f16`                                   | the same, P rows: the layer's K/V of the whole chunk |
//! | causal attention                           | `attention_f16` (splits combined by the last one) | the same, ≤ 256 queries a launch (`attention_rows`) |
//! | `x += attn·Wdᵀ + b`                        | `linear_f16` with the f32 `+=` epilogue           | one linear of M = P                                 |
//! | sequential only: `h = ln2(x)`              | `add_layernorm_f16`                               | the same, P rows                                    |
//! | `x += gelu(h·W1ᵀ + b1)·W2ᵀ + b2`           | `linear_f16` (+GELU) → f16, then `+=` into x      | two linears of M = P                                |
//! | `logits = ln_f(x)·W_outᵀ`                  | `add_layernorm_f16`, `linear_f16` → f32           | LN of P rows; `embed_out` only for the rows asked, 16 at a time (`forward_last`: one) |
//!
//! "linear" is the backend's chosen kernel ([`LinearKernel`]): `linear_f16` (SIMT, M <= 16
//! per launch, the default) or `linear_tc*_f16` (tensor cores, any M in one call; its
//! launcher cuts rows into chunks its split-K scratch holds).
//!
//! Parallel residual: both LayerNorms read x before either branch is added, then the
//! attention and MLP outputs are added to x in turn (f32), which is
//! `x + attn(ln1(x)) + mlp(ln2(x))`. Sequential: the attention output is added before `ln2`.
//!
//! **The layer-major prefill.** A step walks every layer for its ≤ 16 rows, so a prompt run
//! as steps reads all weights once per 16 tokens (8 times for 128 tokens). The prefill runs
//! each layer over all P rows of a chunk before the next layer: every weight matrix is read
//! once per chunk, and with the tensor-core kernel each linear is one GEMM with M = P. Its
//! rotary launch writes the chunk's K and V of the layer into the cache for all P positions
//! first, so every query's keys (earlier chunks' and its own chunk's, up to its position)
//! are in the cache when the attention runs, in slices of up to [`ATT_PREFILL_ROWS`] (256)
//! queries, each one launch (`attention_rows`; the kernel's blocks take 16 queries
//! each, the slice bounds its f32 scratch: ≈ 42 MB at 2,048 positions on Pythia-2.8b, made
//! by `KernelBackend::prepare_prefill` beside the chunk's activations), so a 2,048-token
//! prompt's attention is 8 launches a layer, not 128. Longer prompts run as chunks in
//! order; a chunk's attention reads the K/V earlier chunks left in every layer. The chunk scratch ([`PREFILL_ROWS`] rows, capped
//! by the cache capacity) is allocated on the first long prompt, never inside a recorded
//! step.
//!
//! **Why it is bit-identical to decoding token by token.** Every kernel computes a row (or a
//! (row, head) pair) in an order that depends on neither the number of rows M launched
//! together nor the row's place among them: embedding, LayerNorm and rotary have one block
//! per row (per row and head) with a fixed in-block reduction; the SIMT linear sums each
//! output in a fixed k order for any M <= 16 (the prefill slices its rows by 16, so any
//! slicing gives the same bits); the tensor-core linear's K split depends on (N, K) only and
//! both its tile shapes reduce in the same order (`spedec_cuda::linear_tc`); the attention
//! splits keys in fixed blocks of 128 positions set by the cache capacity, not by the
//! queries, computes a query with the same arithmetic in any 16-query chunk of any launch
//! (so the slice size does not show either), and a query reads only keys 0..=pos, so
//! whether later positions were already written (prefill) or not (decode) does not show. Hence a position's logits are the same
//! bits whether it ran alone, in a 16-row step, or in a layer-major chunk — for either
//! linear kernel (the two kernels differ from each other).
//! `crates/check/tests/prefill_emulation.rs` checks this on the host emulation.

use anyhow::{bail, ensure, Context, Result};
use half::f16;
use rayon::prelude::*;
use spedec_cuda::kernels::consts::ATT_MAX_HD;
use spedec_cuda::{AttnShape, KernelBackend, LinDest, LinearKernel, ATT_PREFILL_ROWS};
use spedec_lm::{KvCursor, Logits};

use crate::config::Config;
use crate::weights::{Dtype, Matrix, Weights};

pub use spedec_cuda::MAX_ROWS;

/// Rows per layer-major prefill chunk by default: prompts longer than this run as several
/// chunks in order. 1,024 rows keep the chunk scratch at ~68 MB for Pythia-2.8b (d = 2560,
/// I = 10240: 4d + 2·(7d + I) + 8 bytes a row) while a 2,048-token prompt reads the weights
/// twice; the tensor-core linear's own scratch chunks rows further where its split-K
/// partials need it.
pub const PREFILL_ROWS: usize = 1024;

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

/// Inputs and activations of up to `rows` rows: [`MAX_ROWS`] for a recorded step, up to
/// [`PREFILL_ROWS`] for a layer-major prefill chunk (allocated on the first prompt longer than
/// [`MAX_ROWS`], outside any recorded step).
struct Activations<B: KernelBackend> {
    /// Rows this scratch holds.
    rows: usize,
    /// u32 `[rows]` token ids
    ids: B::Buf<u32>,
    /// i32 `[rows]` absolute positions
    pos: B::Buf<i32>,
    /// f32 `[rows, d]` residual stream
    x: B::Buf<f32>,
    /// f16 `[rows, d]` ln1 output (and the final LayerNorm's)
    h1: B::Buf<f16>,
    /// f16 `[rows, d]` ln2 output
    h2: B::Buf<f16>,
    /// f16 `[rows, H, 3, hd]` fused QKV projection
    qkv: B::Buf<f16>,
    /// f16 `[rows, H, hd]` rotated queries
    q: B::Buf<f16>,
    /// f16 `[rows, d]` attention output (heads concatenated)
    attn: B::Buf<f16>,
    /// f16 `[rows, I]` GELU(h2·W1ᵀ + b1)
    mid: B::Buf<f16>,
    /// f32 `[rows, d]` each: the attention and MLP branch outputs (biases included), added to
    /// x by the next LayerNorm; only in a step's scratch, for the concurrent branches.
    branch_out: Option<[B::Buf<f32>; 2]>,
}

impl<B: KernelBackend> Activations<B> {
    /// Scratch for `rows` rows; `branches` adds the branch outputs of a recorded step.
    fn new(b: &mut B, dims: &Dims, rows: usize, branches: bool) -> Result<Self> {
        let (d, r) = (dims.hidden, rows);
        let branch_bytes = if branches { 8 * d } else { 0 };
        let bytes = r * (8 + 4 * d + 2 * (7 * d + dims.intermediate) + branch_bytes);
        let what = || {
            format!(
                "allocating activations for {rows} rows ({})",
                spedec_report::format_bytes(bytes as u64)
            )
        };
        Ok(Activations {
            rows,
            ids: b.upload(&vec![0u32; r]).with_context(what)?,
            pos: b.upload(&vec![0i32; r]).with_context(what)?,
            x: b.upload(&vec![0f32; r * d]).with_context(what)?,
            h1: b.upload(&vec![f16::ZERO; r * d]).with_context(what)?,
            h2: b.upload(&vec![f16::ZERO; r * d]).with_context(what)?,
            qkv: b.upload(&vec![f16::ZERO; r * 3 * d]).with_context(what)?,
            q: b.upload(&vec![f16::ZERO; r * d]).with_context(what)?,
            attn: b.upload(&vec![f16::ZERO; r * d]).with_context(what)?,
            mid: b
                .upload(&vec![f16::ZERO; r * dims.intermediate])
                .with_context(what)?,
            branch_out: if branches {
                Some([
                    b.upload(&vec![0f32; r * d]).with_context(what)?,
                    b.upload(&vec![0f32; r * d]).with_context(what)?,
                ])
            } else {
                None
            },
        })
    }
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
    /// Activations of a recorded step ([`MAX_ROWS`] rows).
    scratch: Activations<B>,
    /// f32 `[MAX_ROWS, V]` logits
    logits: B::Buf<f32>,
    /// Rows per layer-major prefill chunk ([`PREFILL_ROWS`] unless set).
    prefill_rows: usize,
    /// The prefill chunk's activations, once a long prompt came.
    prefill: Option<Activations<B>>,
    /// Layer-major chunks run so far.
    prefill_chunks: u64,
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
        let scratch = Activations::new(&mut backend, &dims, MAX_ROWS, true)?;
        let logits = backend.upload(&vec![0f32; MAX_ROWS * dims.vocab])?;
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
            logits,
            prefill_rows: PREFILL_ROWS,
            prefill: None,
            prefill_chunks: 0,
            cursor,
            bytes_per_token: f16_bytes_per_token(config),
        })
    }

    /// Rows per layer-major prefill chunk.
    pub fn prefill_rows(&self) -> usize {
        self.prefill_rows
    }

    /// Set the rows per layer-major prefill chunk (at least 1; default [`PREFILL_ROWS`]):
    /// longer prompts run as several chunks. The chunk scratch is reallocated on the next
    /// long prompt. Results do not depend on it (bit for bit); tests use small values to
    /// cross chunk boundaries on tiny models.
    pub fn set_prefill_rows(&mut self, rows: usize) -> Result<()> {
        ensure!(rows >= 1, "prefill chunks need at least one row");
        if rows != self.prefill_rows {
            self.prefill = None;
            self.prefill_rows = rows;
        }
        Ok(())
    }

    /// Layer-major prefill chunks run so far (one per [`Engine::prefill_rows`] rows of each
    /// input longer than [`MAX_ROWS`]).
    pub fn prefill_chunks(&self) -> u64 {
        self.prefill_chunks
    }

    /// Choose the linear kernel (see [`KernelBackend::set_linear_kernel`]); recorded steps
    /// are dropped by the backend.
    pub fn set_linear_kernel(&mut self, kernel: LinearKernel) -> Result<()> {
        self.backend.set_linear_kernel(kernel)
    }

    /// The linear kernel in use.
    pub fn linear_kernel(&self) -> LinearKernel {
        self.backend.linear_kernel()
    }

    /// Run the parallel residual's attention and MLP branches of each step side by side
    /// (see [`KernelBackend::set_concurrent_branches`]); recorded steps are dropped by the
    /// backend. The logits keep their bits; a sequential-residual model runs as before.
    pub fn set_concurrent_branches(&mut self, on: bool) -> Result<()> {
        self.backend.set_concurrent_branches(on)
    }

    /// Whether steps run the residual branches side by side.
    pub fn concurrent_branches(&self) -> bool {
        self.backend.concurrent_branches()
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
    /// Up to [`MAX_ROWS`] tokens run as one step (a recorded graph); more run layer-major
    /// ([`Engine::prefill_rows`] rows per chunk). Bit-identical either way.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Logits> {
        self.forward_rows(tokens, false)
    }

    /// Appends `tokens` like [`Engine::forward`] but returns only the last position's logits
    /// `[1, vocab]` (the same bits as the last row of `forward`): a long prompt's prefill
    /// computes `embed_out` for that one row only.
    pub fn forward_last(&mut self, tokens: &[u32]) -> Result<Logits> {
        self.forward_rows(tokens, true)
    }

    fn forward_rows(&mut self, tokens: &[u32], last_only: bool) -> Result<Logits> {
        let n = tokens.len();
        let vocab = self.dims.vocab;
        let start = self.cursor.check_append(tokens, vocab)?;
        let out = if n > MAX_ROWS {
            self.prefill(tokens, start, last_only, true)?
        } else {
            self.step(tokens, start, last_only, true)?
        };
        self.cursor.advance(n);
        let rows = if last_only { 1 } else { n };
        Ok(Logits::new(out, rows, vocab))
    }

    /// Appends `tokens` like [`Engine::forward_last`] but leaves the logits on the backend:
    /// returns the row of [`Engine::logits_buffer`] that holds the last token's logits
    /// (the same bits `forward_last` returns). Nothing is copied back and nothing waits.
    pub fn forward_resident(&mut self, tokens: &[u32]) -> Result<usize> {
        let n = tokens.len();
        let start = self.cursor.check_append(tokens, self.dims.vocab)?;
        let row = if n > MAX_ROWS {
            self.prefill(tokens, start, true, false)?;
            0
        } else {
            self.step(tokens, start, false, false)?;
            n - 1
        };
        self.cursor.advance(n);
        Ok(row)
    }

    /// One step of `m` (1..=[`MAX_ROWS`]) rows whose token ids a kernel already wrote to rows
    /// `0..m` of [`Engine::step_ids`] (a device sampler's picks): the positions `b + offset ..`
    /// are written by a launch that reads b = `base`\[0\] when it runs (a buffer of this
    /// backend's device, i32 \[1..\]), so the step can be part of a recorded chain that
    /// replays at new positions; the step runs (replayed from its graph), and its logits
    /// `[m, vocab]` stay in rows `0..m` of [`Engine::logits_buffer`]. Nothing is copied back
    /// and nothing waits. The caller keeps b + offset equal to this engine's length (the
    /// cache it extends) whenever the launch runs, and keeps the ids in the vocabulary; the
    /// length here moves on by `m` as for any step.
    pub fn step_resident_at(&mut self, m: usize, base: &B::Buf<i32>, offset: i32) -> Result<()> {
        ensure!(
            (1..=MAX_ROWS).contains(&m),
            "a resident step takes 1..={MAX_ROWS} rows, not {m}"
        );
        let start = self
            .cursor
            .check_append(&[0u32; MAX_ROWS][..m], self.dims.vocab)?;
        self.run_step(m, start, Some((base, offset)))?;
        self.cursor.advance(m);
        Ok(())
    }

    /// Writes `ids` (at most [`MAX_ROWS`]) into the start of the step's id buffer, for a
    /// later [`Engine::step_resident_at`] (kernels may write the rows after them).
    pub fn write_step_ids(&mut self, ids: &[u32]) -> Result<()> {
        ensure!(
            ids.len() <= MAX_ROWS,
            "{} step ids for a buffer of {MAX_ROWS}",
            ids.len()
        );
        self.backend.write(ids, &mut self.scratch.ids)
    }

    /// The step's token-id buffer: u32 `[MAX_ROWS]` (the inputs of [`Engine::step_resident_at`]).
    pub fn step_ids(&mut self) -> &mut B::Buf<u32> {
        &mut self.scratch.ids
    }

    /// The logits buffer: f32 `[MAX_ROWS, vocab]` (rows of the last step, or row 0 after a
    /// long prompt's [`Engine::forward_resident`]).
    pub fn logits_buffer(&self) -> &B::Buf<f32> {
        &self.logits
    }

    /// The backend, the logits buffer and the step's id buffer at once (a sampler kernel
    /// launched on this backend reads the one and writes the other).
    pub fn resident_parts(&mut self) -> (&mut B, &B::Buf<f32>, &mut B::Buf<u32>) {
        (&mut self.backend, &self.logits, &mut self.scratch.ids)
    }

    /// Writes the positions `start..start + m` (or, with `at`, `base[0] + offset ..` by the
    /// device) and runs one step of `m` rows over the ids already in the step's id buffer;
    /// the logits land in rows `0..m` of `self.logits`.
    fn run_step(&mut self, m: usize, start: usize, at: Option<(&B::Buf<i32>, i32)>) -> Result<()> {
        let Engine {
            backend,
            dims,
            shape,
            params,
            kv,
            scratch,
            logits,
            ..
        } = self;
        match at {
            None => backend.fill_positions(&mut scratch.pos, start, m)?,
            Some((base, offset)) => backend.fill_positions_at(&mut scratch.pos, base, offset, m)?,
        }
        backend.run_step(m, &mut |b| {
            encode(b, dims, shape, params, kv, scratch, logits, m)
        })
    }

    /// One step of `tokens.len()` <= [`MAX_ROWS`] rows at positions `start..`: logits of
    /// every row, or of the last only.
    /// (`download` false: the logits stay on the backend and an empty vector comes back.)
    fn step(
        &mut self,
        tokens: &[u32],
        start: usize,
        last_only: bool,
        download: bool,
    ) -> Result<Vec<f32>> {
        let m = tokens.len();
        let vocab = self.dims.vocab;
        self.backend.write(tokens, &mut self.scratch.ids)?;
        self.run_step(m, start, None)?;
        if !download {
            return Ok(Vec::new());
        }
        let mut out = vec![0f32; m * vocab];
        self.backend.read_into(&self.logits, &mut out)?;
        if last_only {
            out.drain(..(m - 1) * vocab);
        }
        Ok(out)
    }

    /// A long input layer-major, in chunks of [`Engine::prefill_rows`] rows at positions
    /// `start..`: logits of every row (unembedded [`MAX_ROWS`] rows at a time), or of the
    /// last only.
    /// (`download` false: the logits stay in `self.logits`, only the last row can be asked
    /// for, and an empty vector comes back.)
    fn prefill(
        &mut self,
        tokens: &[u32],
        start: usize,
        last_only: bool,
        download: bool,
    ) -> Result<Vec<f32>> {
        ensure!(
            download || last_only,
            "internal: a resident prefill keeps the last row only"
        );
        let rows = self.prefill_rows.min(self.cursor.capacity()).max(1);
        if self.prefill.as_ref().is_none_or(|p| p.rows != rows) {
            self.prefill = None;
            self.prefill = Some(Activations::new(
                &mut self.backend,
                &self.dims,
                rows,
                false,
            )?);
        }
        // The attention scratch for a chunk's query slices (a no-op once it fits).
        let slice = attention_slice(&self.backend).min(rows);
        self.backend.prepare_prefill(&self.shape, slice)?;
        let Engine {
            backend,
            dims,
            shape,
            params,
            kv,
            logits,
            prefill,
            prefill_chunks,
            ..
        } = self;
        let ps = prefill
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the prefill scratch was not allocated"))?;
        let (n, vocab, d) = (tokens.len(), dims.vocab, dims.hidden);
        let mut out = match (download, last_only) {
            (false, _) => Vec::new(),
            (true, true) => vec![0f32; vocab],
            (true, false) => vec![0f32; n * vocab],
        };
        let mut filled = 0;
        let chunks = n.div_ceil(rows);
        for (c, chunk) in tokens.chunks(rows).enumerate() {
            let m = chunk.len();
            let first = start + c * rows;
            let pos: Vec<i32> = (first..first + m).map(|p| p as i32).collect();
            backend.write(chunk, &mut ps.ids)?;
            backend.write(&pos, &mut ps.pos)?;
            let want = if !last_only {
                0..m
            } else if c + 1 == chunks {
                m - 1..m
            } else {
                0..0
            };
            encode_prefill(backend, dims, shape, params, kv, ps, m, !want.is_empty())?;
            *prefill_chunks += 1;
            // logits = ln_f(x)·W_outᵀ for the rows asked, MAX_ROWS at a time.
            let mut r0 = want.start;
            while r0 < want.end {
                let r = (want.end - r0).min(MAX_ROWS);
                backend.linear_rows(
                    &ps.h1,
                    r0,
                    &params.embed_out,
                    None,
                    LinDest::F32(logits),
                    0,
                    r,
                    vocab,
                    d,
                )?;
                if download {
                    backend.read_into(logits, &mut out[filled..filled + r * vocab])?;
                    filled += r * vocab;
                }
                r0 += r;
            }
        }
        debug_assert_eq!(filled, out.len());
        Ok(out)
    }
}

/// Enqueue the launches of one step of `m` rows (ids and positions already on the device).
#[allow(clippy::too_many_arguments)]
fn encode<B: KernelBackend>(
    b: &mut B,
    dims: &Dims,
    shape: &AttnShape,
    w: &Params<B>,
    kv: &mut [LayerKv<B>],
    s: &mut Activations<B>,
    logits: &mut B::Buf<f32>,
    m: usize,
) -> Result<()> {
    let Dims {
        hidden: d,
        intermediate: inter,
        vocab,
        eps,
        parallel,
    } = *dims;
    // Concurrent branches (parallel residual only): the MLP runs on the backend's side
    // branch beside the attention; both write f32 branch outputs that the next LayerNorm adds
    // to x in the order the two AddF32 epilogues would (the same bits either way).
    let mut branch_out = match (parallel && b.concurrent_branches(), s.branch_out.as_mut()) {
        (false, _) => None,
        (true, Some([attn_out, mlp_out])) => Some((attn_out, mlp_out)),
        (true, None) => bail!("concurrent branches need a step scratch with branch outputs"),
    };
    // Whether x still lacks the previous layer's branch outputs.
    let mut pending = false;
    b.embedding(&s.ids, &w.embed_in, &mut s.x, m, vocab, d)?;
    for (lw, cache) in w.layers.iter().zip(kv.iter_mut()) {
        // h1 = ln1(x); parallel residual: h2 = ln2(x) of the same x, in the same pass.
        let (add_a, add_b) = match &branch_out {
            Some((a, mo)) if pending => (Some(&**a), Some(&**mo)),
            _ => (None, None),
        };
        let second = parallel.then_some((&lw.ln2_w, &lw.ln2_b, &mut s.h2));
        b.add_layernorm(
            &mut s.x, add_a, add_b, &lw.ln1_w, &lw.ln1_b, &mut s.h1, second, m, d, eps,
        )?;
        if let Some((_, mlp_out)) = &mut branch_out {
            b.fork_side()?;
            mlp(
                b,
                lw,
                &s.h2,
                &mut s.mid,
                LinDest::F32(&mut **mlp_out),
                m,
                d,
                inter,
            )?;
            b.back_to_main()?;
        }
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
        // x += attn · Wdᵀ + b (or that term into the attention branch's output)
        let dense_out = match &mut branch_out {
            Some((attn_out, _)) => LinDest::F32(&mut **attn_out),
            None => LinDest::AddF32(&mut s.x),
        };
        b.linear(&s.attn, &lw.dense_w, Some(&lw.dense_b), dense_out, m, d, d)?;
        if branch_out.is_some() {
            b.join_side()?;
            pending = true;
            continue;
        }
        if !parallel {
            // Sequential residual: h2 = ln2(x + attn).
            b.add_layernorm(
                &mut s.x, None, None, &lw.ln2_w, &lw.ln2_b, &mut s.h2, None, m, d, eps,
            )?;
        }
        mlp(
            b,
            lw,
            &s.h2,
            &mut s.mid,
            LinDest::AddF32(&mut s.x),
            m,
            d,
            inter,
        )?;
    }
    let (add_a, add_b) = match &branch_out {
        Some((a, mo)) if pending => (Some(&**a), Some(&**mo)),
        _ => (None, None),
    };
    b.add_layernorm(
        &mut s.x, add_a, add_b, &w.final_w, &w.final_b, &mut s.h1, None, m, d, eps,
    )?;
    b.linear(&s.h1, &w.embed_out, None, LinDest::F32(logits), m, vocab, d)?;
    Ok(())
}

/// The MLP of one layer: `out ← gelu(h2 · W1ᵀ + b1) · W2ᵀ + b2` (`out` says how: into x, or
/// into a branch output), through `mid`.
#[allow(clippy::too_many_arguments)]
fn mlp<B: KernelBackend>(
    b: &mut B,
    lw: &LayerParams<B>,
    h2: &B::Buf<f16>,
    mid: &mut B::Buf<f16>,
    out: LinDest<'_, B>,
    m: usize,
    d: usize,
    inter: usize,
) -> Result<()> {
    b.linear(
        h2,
        &lw.fc1_w,
        Some(&lw.fc1_b),
        LinDest::F16Gelu(mid),
        m,
        inter,
        d,
    )?;
    b.linear(mid, &lw.fc2_w, Some(&lw.fc2_b), out, m, d, inter)
}

/// `y = x·Wᵀ + b` over `m` rows: one call with the tensor-core kernel (any M; its launcher
/// chunks rows as its scratch needs), [`MAX_ROWS`]-row slices with the SIMT one (M <= 16).
#[allow(clippy::too_many_arguments)]
fn linear_all<B: KernelBackend>(
    b: &mut B,
    x: &B::Buf<f16>,
    w: &B::Buf<f16>,
    bias: Option<&B::Buf<f16>>,
    mut out: LinDest<'_, B>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    if m <= MAX_ROWS || b.linear_kernel() == LinearKernel::TensorCore {
        return b.linear(x, w, bias, out, m, n, k);
    }
    let mut r0 = 0;
    while r0 < m {
        let r = (m - r0).min(MAX_ROWS);
        b.linear_rows(x, r0, w, bias, out.reborrow(), r0, r, n, k)?;
        r0 += r;
    }
    Ok(())
}

/// Queries per attention call of a long prompt: the backend's bound
/// ([`KernelBackend::prefill_attention_rows`], [`ATT_PREFILL_ROWS`] on a GPU), kept in
/// 1..=[`ATT_PREFILL_ROWS`].
fn attention_slice<B: KernelBackend>(b: &B) -> usize {
    b.prefill_attention_rows().clamp(1, ATT_PREFILL_ROWS)
}

/// Enqueue one layer-major prefill chunk of `m` rows (ids and positions already on the
/// device): every layer over all `m` rows before the next layer, the chunk's K/V written to
/// the cache before its attention (in slices of up to [`ATT_PREFILL_ROWS`] queries, one
/// launch each), and with `final_ln` the final LayerNorm of all rows into `h1` (the
/// caller unembeds the rows it wants).
#[allow(clippy::too_many_arguments)]
fn encode_prefill<B: KernelBackend>(
    b: &mut B,
    dims: &Dims,
    shape: &AttnShape,
    w: &Params<B>,
    kv: &mut [LayerKv<B>],
    s: &mut Activations<B>,
    m: usize,
    final_ln: bool,
) -> Result<()> {
    let Dims {
        hidden: d,
        intermediate: inter,
        vocab,
        eps,
        parallel,
    } = *dims;
    ensure!(
        (1..=s.rows).contains(&m),
        "prefill chunk of {m} rows for a scratch of {}",
        s.rows
    );
    let slice = attention_slice(b);
    b.embedding(&s.ids, &w.embed_in, &mut s.x, m, vocab, d)?;
    for (lw, cache) in w.layers.iter().zip(kv.iter_mut()) {
        let second = parallel.then_some((&lw.ln2_w, &lw.ln2_b, &mut s.h2));
        b.add_layernorm(
            &mut s.x, None, None, &lw.ln1_w, &lw.ln1_b, &mut s.h1, second, m, d, eps,
        )?;
        let qkv = LinDest::F16(&mut s.qkv);
        linear_all(b, &s.h1, &lw.qkv_w, Some(&lw.qkv_b), qkv, m, 3 * d, d)?;
        // All m rows' k, v of this layer land in the cache before any query reads it.
        b.rotary_kv(
            &s.qkv,
            &s.pos,
            &mut s.q,
            &mut cache.k,
            &mut cache.v,
            m,
            shape,
        )?;
        let mut r0 = 0;
        while r0 < m {
            let r = (m - r0).min(slice);
            b.attention_rows(&s.q, &cache.k, &cache.v, &s.pos, &mut s.attn, r0, r, shape)?;
            r0 += r;
        }
        let dense = LinDest::AddF32(&mut s.x);
        linear_all(b, &s.attn, &lw.dense_w, Some(&lw.dense_b), dense, m, d, d)?;
        if !parallel {
            b.add_layernorm(
                &mut s.x, None, None, &lw.ln2_w, &lw.ln2_b, &mut s.h2, None, m, d, eps,
            )?;
        }
        let mid = LinDest::F16Gelu(&mut s.mid);
        linear_all(b, &s.h2, &lw.fc1_w, Some(&lw.fc1_b), mid, m, inter, d)?;
        let fc2 = LinDest::AddF32(&mut s.x);
        linear_all(b, &s.mid, &lw.fc2_w, Some(&lw.fc2_b), fc2, m, d, inter)?;
    }
    if final_ln {
        b.add_layernorm(
            &mut s.x, None, None, &w.final_w, &w.final_b, &mut s.h1, None, m, d, eps,
        )?;
    }
    Ok(())
}
