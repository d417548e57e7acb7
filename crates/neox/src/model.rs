//! The CPU GPT-NeoX model: weights, a KV cache allocated once, and `forward` / `truncate`.
//!
//! `forward(tokens)` reads top to bottom like HF's `GPTNeoXForCausalLM.forward`: embedding,
//! then per layer LayerNorm → fused QKV → rotary → cache write → causal attention → dense,
//! and the MLP (parallel or sequential residual), then the final LayerNorm and `embed_out`.

use anyhow::{anyhow, bail, Context, Result};
use spedec_lm::{KvCursor, Lm, Logits};
use spedec_report::format_bytes;

use crate::config::Config;
use crate::cpu::matmul::{linear, linear_then, Epilogue};
use crate::cpu::ops::{attention, layer_norm, Rope};
use crate::cpu::packed::PackedWeights;
use crate::cpu::Isa;
use crate::weights::Weights;

/// Keys and values of every layer, allocated once for `capacity` positions.
pub struct KvCache {
    /// `[layers, heads, capacity, head_dim]`
    keys: Vec<f32>,
    /// `[layers, heads, capacity, head_dim]`
    values: Vec<f32>,
    /// Elements per layer: `heads · capacity · head_dim`.
    layer_stride: usize,
    /// Cached length and capacity.
    cursor: KvCursor,
}

impl KvCache {
    /// Zeroed keys and values for `cursor.capacity()` positions; a size that overflows, that
    /// exceeds the memory this machine has available, or that cannot be allocated is an
    /// error naming the bytes asked for (never an abort).
    fn new(config: &Config, cursor: KvCursor) -> Result<Self> {
        let capacity = cursor.capacity();
        let layer_stride = config
            .num_heads
            .checked_mul(capacity)
            .and_then(|n| n.checked_mul(config.head_dim()));
        let total = layer_stride.and_then(|s| s.checked_mul(config.num_layers));
        let bytes = total.and_then(|t| t.checked_mul(2 * std::mem::size_of::<f32>()));
        let (Some(layer_stride), Some(total), Some(bytes)) = (layer_stride, total, bytes) else {
            bail!(
                "a KV cache of {capacity} positions ({} layers × {} hidden) is too large to \
                 address; use a shorter context length",
                config.num_layers,
                config.hidden_size
            );
        };
        let what = || {
            format!(
                "the KV cache ({capacity} positions, {})",
                format_bytes(bytes as u64)
            )
        };
        if let Some(available) = available_memory() {
            if bytes as u64 > available {
                bail!(
                    "{} does not fit the {} of memory available; use a shorter context length",
                    what(),
                    format_bytes(available)
                );
            }
        }
        Ok(KvCache {
            keys: try_zeroed(total).with_context(what)?,
            values: try_zeroed(total).with_context(what)?,
            layer_stride,
            cursor,
        })
    }

    /// Bytes held by the cache.
    pub fn bytes(&self) -> usize {
        (self.keys.len() + self.values.len()) * 4
    }
}

/// Element types whose all-zero bit pattern is the value zero.
///
/// # Safety
/// Implement only for types for which every all-zero byte pattern is a valid value.
pub(crate) unsafe trait ZeroBits: Copy {}
// SAFETY: +0.0 in IEEE binary32 and binary16 is all zero bits.
unsafe impl ZeroBits for f32 {}
// SAFETY: as above.
unsafe impl ZeroBits for half::f16 {}

/// A vector of `len` zeros, or an error naming the bytes that could not be allocated (where
/// `vec![0; len]` would abort). Allocated zeroed (`calloc`), so the pages of a large cache
/// are only touched when used, as with `vec!`.
pub(crate) fn try_zeroed<T: ZeroBits>(len: usize) -> Result<Vec<T>> {
    let too_big = || {
        let bytes = (len as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        anyhow!("cannot allocate {}", format_bytes(bytes))
    };
    let layout = std::alloc::Layout::array::<T>(len).map_err(|_| too_big())?;
    if layout.size() == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(too_big());
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `len` elements of
    // `T`, and its zeroed bytes are valid values of `T` (`ZeroBits`).
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// The memory this machine can still give (Linux's `MemAvailable`), when known.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A GPT-NeoX model on the CPU holding its own KV cache.
pub struct CpuModel {
    config: Config,
    weights: PackedWeights,
    rope: Rope,
    cache: KvCache,
    isa: Isa,
}

impl CpuModel {
    /// A model whose cache holds `capacity` positions (at most `max_position_embeddings`;
    /// default: that, capped at [`KvCursor::DEFAULT_CONTEXT_CAP`]).
    pub fn new(
        config: Config,
        weights: Weights,
        capacity: Option<usize>,
        isa: Isa,
    ) -> Result<Self> {
        let cursor = KvCursor::new(capacity, config.max_position_embeddings)?;
        let cache = KvCache::new(&config, cursor)?;
        let rope = Rope::new(
            config.rotary_dims(),
            config.rotary_base,
            cache.cursor.capacity(),
        )?;
        let weights = PackedWeights::pack(weights)?;
        Ok(CpuModel {
            config,
            weights,
            rope,
            cache,
            isa,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The weights as the CPU kernels read them.
    pub fn weights(&self) -> &PackedWeights {
        &self.weights
    }
    /// The kernel set in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// Switches the kernel set; every set gives the same bits, so the cache stays valid (for
    /// comparisons of sets in one process, on the same packed weights).
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = isa;
    }
    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.cache.cursor.capacity()
    }

    fn forward_rows(&mut self, tokens: &[u32], last_only: bool) -> Result<Logits> {
        // The whole step runs on a pool thread, so each parallel op inside it forks from a
        // worker instead of injecting a job from outside the pool and blocking the caller:
        // that hand-off, about forty times per token, cost a 70m decode step a fifth of its
        // time.
        rayon::scope(|_| self.forward_in_pool(tokens, last_only))
    }

    fn forward_in_pool(&mut self, tokens: &[u32], last_only: bool) -> Result<Logits> {
        let c = &self.config;
        let (d, heads, hd) = (c.hidden_size, c.num_heads, c.head_dim());
        let m = tokens.len();
        let start = self.cache.cursor.check_append(tokens, c.vocab_size)?;
        let capacity = self.cache.cursor.capacity();
        let eps = c.layer_norm_eps as f32;
        let isa = self.isa;
        let w = &self.weights;

        // x: [m, d] residual stream
        let mut x = vec![0.0f32; m * d];
        for (row, &t) in x.chunks_exact_mut(d).zip(tokens) {
            w.embed_in.row_f32(t as usize, row);
        }
        let mut h = vec![0.0f32; m * d]; // [m, d] normed input
        let mut qkv = vec![0.0f32; m * 3 * d]; // [m, heads, 3, hd]
        let mut q = vec![0.0f32; m * d]; // [m, heads, hd]
        let mut attn = vec![0.0f32; m * d]; // [m, d]
        let mut attn_out = vec![0.0f32; m * d]; // [m, d]
        let mut mlp_mid = vec![0.0f32; m * c.intermediate_size]; // [m, intermediate]
        let mut mlp_out = vec![0.0f32; m * d]; // [m, d]

        for (l, lw) in w.layers.iter().enumerate() {
            layer_norm(isa, &x, &lw.input_layernorm, eps, &mut h);
            linear(
                isa,
                &h,
                m,
                &lw.query_key_value.weight,
                Some(&lw.query_key_value.bias),
                &mut qkv,
            );
            let cache = &mut self.cache;
            let base = l * cache.layer_stride;
            for i in 0..m {
                let pos = start + i;
                for hh in 0..heads {
                    let src = &mut qkv[(i * heads + hh) * 3 * hd..][..3 * hd];
                    let (qh, rest) = src.split_at_mut(hd);
                    let (kh, vh) = rest.split_at_mut(hd);
                    self.rope.apply(qh, pos);
                    self.rope.apply(kh, pos);
                    q[(i * heads + hh) * hd..][..hd].copy_from_slice(qh);
                    let at = base + (hh * capacity + pos) * hd;
                    cache.keys[at..at + hd].copy_from_slice(kh);
                    cache.values[at..at + hd].copy_from_slice(vh);
                }
            }
            let layer_keys = &cache.keys[base..base + cache.layer_stride];
            let layer_values = &cache.values[base..base + cache.layer_stride];
            attention(
                isa,
                &q,
                layer_keys,
                layer_values,
                heads,
                hd,
                capacity,
                start,
                &mut attn,
            );
            linear(
                isa,
                &attn,
                m,
                &lw.dense.weight,
                Some(&lw.dense.bias),
                &mut attn_out,
            );

            if c.use_parallel_residual {
                layer_norm(isa, &x, &lw.post_attention_layernorm, eps, &mut h);
                self.mlp(l, &h, m, &mut mlp_mid, &mut mlp_out);
                for ((xv, a), f) in x.iter_mut().zip(&attn_out).zip(&mlp_out) {
                    *xv += *a + *f;
                }
            } else {
                for (xv, a) in x.iter_mut().zip(&attn_out) {
                    *xv += *a;
                }
                layer_norm(isa, &x, &lw.post_attention_layernorm, eps, &mut h);
                self.mlp(l, &h, m, &mut mlp_mid, &mut mlp_out);
                for (xv, f) in x.iter_mut().zip(&mlp_out) {
                    *xv += *f;
                }
            }
        }
        self.cache.cursor.advance(m);

        // Rows whose logits are wanted: all, or only the last.
        let (x, rows) = if last_only {
            (&x[(m - 1) * d..], 1)
        } else {
            (&x[..], m)
        };
        let h = &mut h[..rows * d];
        layer_norm(isa, x, &w.final_layer_norm, eps, h);
        let vocab = c.vocab_size;
        let mut logits = vec![0.0f32; rows * vocab];
        linear(isa, h, rows, &w.embed_out, None, &mut logits);
        Ok(Logits::new(logits, rows, vocab))
    }

    /// `out = W2·gelu(W1·h + b1) + b2` for layer `l`; `h` `[m, d]`, `mid` `[m, intermediate]`.
    fn mlp(&self, l: usize, h: &[f32], m: usize, mid: &mut [f32], out: &mut [f32]) {
        let lw = &self.weights.layers[l];
        linear_then(
            self.isa,
            h,
            m,
            &lw.dense_h_to_4h.weight,
            Some(&lw.dense_h_to_4h.bias),
            Epilogue::Gelu,
            mid,
        );
        linear(
            self.isa,
            mid,
            m,
            &lw.dense_4h_to_h.weight,
            Some(&lw.dense_4h_to_h.bias),
            out,
        );
    }
}

impl Lm for CpuModel {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn max_len(&self) -> usize {
        self.capacity()
    }
    fn len(&self) -> usize {
        self.cache.cursor.len()
    }
    /// Appends `tokens` after the cached ones; returns logits `[tokens.len(), vocab]`.
    fn forward(&mut self, tokens: &[u32]) -> Result<Logits> {
        self.forward_rows(tokens, false)
    }
    /// Appends `tokens` like [`forward`](Lm::forward) but returns only the last position's
    /// logits `[1, vocab]`: a prompt's prefill skips the unembedding of every other row.
    fn forward_last(&mut self, tokens: &[u32]) -> Result<Logits> {
        self.forward_rows(tokens, true)
    }
    fn truncate(&mut self, len: usize) -> Result<()> {
        self.cache.cursor.truncate(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_cache_is_an_error_naming_its_size_not_an_abort() {
        let mut config = Config::pythia("pythia-14m").unwrap();
        config.max_position_embeddings = 1_000_000_000_000;
        // The default context is capped, so such a config still loads.
        let cursor = KvCursor::new(None, config.max_position_embeddings).unwrap();
        let cache = KvCache::new(&config, cursor).unwrap();
        assert_eq!(cache.cursor.capacity(), KvCursor::DEFAULT_CONTEXT_CAP);
        assert_eq!(cache.bytes(), 6 * 128 * 4096 * 2 * 4);
        // Asking for all of it: 6 layers × 128 × 10¹² × 2 × 4 bytes.
        let cursor = KvCursor::new(Some(1_000_000_000_000), 1_000_000_000_000).unwrap();
        let err = format!("{:#}", KvCache::new(&config, cursor).err().unwrap());
        assert!(
            err.contains("KV cache (1000000000000 positions, 5.5 PiB)"),
            "{err}"
        );
        // A size past the address space.
        config.max_position_embeddings = usize::MAX;
        let cursor = KvCursor::new(Some(usize::MAX), usize::MAX).unwrap();
        let err = format!("{:#}", KvCache::new(&config, cursor).err().unwrap());
        assert!(err.contains("too large to address"), "{err}");
        let err = format!("{:#}", Rope::new(8, 1e4, usize::MAX).err().unwrap());
        assert!(err.contains("rotary table"), "{err}");
    }

    #[test]
    fn zeroed_vectors_are_zero_and_impossible_sizes_are_errors() {
        let v: Vec<f32> = try_zeroed(1 << 20).unwrap();
        assert!(v.len() == 1 << 20 && v.iter().all(|x| x.to_bits() == 0));
        assert!(try_zeroed::<half::f16>(0).unwrap().is_empty());
        let err = try_zeroed::<f32>(usize::MAX / 2).unwrap_err().to_string();
        assert!(err.starts_with("cannot allocate"), "{err}");
    }
}
