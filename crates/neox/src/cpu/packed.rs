//! Weight matrices re-laid out once at load for the CPU matmul: column panels in huge pages.
//!
//! A `[N, K]` matrix (PyTorch `Linear` layout, one row per output) becomes `⌈N/16⌉` panels;
//! panel `p` holds outputs `16p .. 16p+16` as `[K][16]` elements of the stored dtype, so the
//! kernel reads each panel front to back as one stream and every weight load feeds sixteen
//! outputs. Rows past `N` in the last panel are zero. The buffer is an anonymous mapping
//! aligned to 2 MiB and advised for transparent huge pages: a decode step streams gigabytes
//! and, with 4 KiB pages, TLB misses cost a fifth of the read bandwidth on our machine.

use anyhow::{Context, Result};
use memmap2::MmapMut;
use rayon::prelude::*;

use crate::weights::{Dtype, Linear, Matrix, Norm, Weights};

/// Outputs per panel: two 8-lane f32 vectors.
pub const PANEL: usize = 16;

/// Alignment of the buffer, the size of an x86-64 huge page.
const HUGE_PAGE: usize = 2 << 20;

/// A zero-filled buffer in an anonymous mapping aligned to 2 MiB and advised for transparent
/// huge pages (for weights and for the bandwidth probe that sets their floor).
pub struct HugeBuffer {
    map: MmapMut,
    /// Byte offset of the aligned start in `map`.
    offset: usize,
    len: usize,
}

impl HugeBuffer {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Result<Self> {
        let map = MmapMut::map_anon(len + HUGE_PAGE)
            .with_context(|| format!("cannot allocate {len} bytes of memory"))?;
        let offset = map.as_ptr().align_offset(HUGE_PAGE).min(HUGE_PAGE);
        #[cfg(target_os = "linux")]
        if len > 0 {
            // Only advice: without transparent huge pages everything runs, just slower.
            let _ = map.advise_range(memmap2::Advice::HugePage, offset, len);
        }
        Ok(HugeBuffer { map, offset, len })
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.map[self.offset..self.offset + self.len]
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map[self.offset..self.offset + self.len]
    }
}

/// A matrix as column panels, see the module doc.
pub struct PackedMatrix {
    dtype: Dtype,
    /// Outputs `N`.
    rows: usize,
    /// Inputs `K`.
    cols: usize,
    /// `[panels][K][16]` elements.
    buf: HugeBuffer,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PackedMatrix({:?}, [{}, {}] in {} panels)",
            self.dtype,
            self.rows,
            self.cols,
            self.panels()
        )
    }
}

impl PackedMatrix {
    /// Packs `w` (`[N, K]`) into panels, in parallel.
    pub fn pack(w: &Matrix) -> Result<Self> {
        let (rows, cols, dtype) = (w.rows(), w.cols(), w.dtype());
        let size = dtype.size();
        let panel_bytes = cols * PANEL * size;
        let len = rows.div_ceil(PANEL) * panel_bytes;
        let mut buf = HugeBuffer::zeroed(len)
            .with_context(|| format!("cannot pack a [{rows}, {cols}] {dtype:?} weight matrix"))?;
        let src = w.bytes();
        if len > 0 {
            buf.as_mut_slice()
                .par_chunks_mut(panel_bytes)
                .enumerate()
                .for_each(|(p, dst)| match size {
                    2 => fill_panel::<2>(src, rows, cols, p, dst),
                    4 => fill_panel::<4>(src, rows, cols, p, dst),
                    _ => unreachable!("dtype size {size}"),
                });
        }
        Ok(PackedMatrix {
            dtype,
            rows,
            cols,
            buf,
        })
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }
    /// Outputs `N`.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Inputs `K`.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Number of panels, `⌈N/16⌉`.
    pub fn panels(&self) -> usize {
        self.rows.div_ceil(PANEL)
    }
    /// Bytes of one panel, `K·16·dtype size`.
    pub fn panel_bytes(&self) -> usize {
        self.cols * PANEL * self.dtype.size()
    }
    /// Weight bytes a full pass reads (padding included).
    pub fn byte_len(&self) -> usize {
        self.panels() * self.panel_bytes()
    }
    /// All panels, `[panels][K][16]` elements as little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        self.buf.as_slice()
    }

    /// Element `(row, col)` widened to f32 (tests and references).
    pub fn get(&self, row: usize, col: usize) -> f32 {
        let size = self.dtype.size();
        let at = ((row / PANEL) * self.cols * PANEL + col * PANEL + row % PANEL) * size;
        let mut out = [0.0f32];
        crate::weights::widen_into(self.dtype, &self.bytes()[at..at + size], &mut out);
        out[0]
    }
}

/// `y = x Wᵀ + b` parameters with W packed.
#[derive(Debug)]
pub struct PackedLinear {
    /// `[out, in]` packed
    pub weight: PackedMatrix,
    /// `[out]`
    pub bias: Vec<f32>,
}

impl PackedLinear {
    fn pack(l: Linear) -> Result<Self> {
        Ok(PackedLinear {
            weight: PackedMatrix::pack(&l.weight)?,
            bias: l.bias,
        })
    }
}

/// One transformer block with packed matrices (see [`crate::weights::LayerWeights`]).
#[derive(Debug)]
pub struct PackedLayer {
    pub input_layernorm: Norm,
    pub post_attention_layernorm: Norm,
    /// `[3·hidden, hidden]`, outputs grouped per head as `[head][q|k|v][head_dim]`.
    pub query_key_value: PackedLinear,
    /// `[hidden, hidden]`
    pub dense: PackedLinear,
    /// `[intermediate, hidden]`
    pub dense_h_to_4h: PackedLinear,
    /// `[hidden, intermediate]`
    pub dense_4h_to_h: PackedLinear,
}

/// All parameters laid out for the CPU kernels.
#[derive(Debug)]
pub struct PackedWeights {
    /// `[vocab, hidden]`, gathered one row per token, so kept as stored.
    pub embed_in: Matrix,
    pub layers: Vec<PackedLayer>,
    pub final_layer_norm: Norm,
    /// `[vocab, hidden]` packed
    pub embed_out: PackedMatrix,
    /// Weight bytes one decode step reads (as stored, before packing).
    bytes_per_token: usize,
}

impl PackedWeights {
    /// Packs every matrix, releasing each original as soon as its copy exists (peak memory is
    /// the model plus one matrix when the weights are owned; mapped files stay in the page
    /// cache, which the kernel may reclaim).
    pub fn pack(weights: Weights) -> Result<Self> {
        let bytes_per_token = weights.bytes_per_token();
        let Weights {
            embed_in,
            layers,
            final_layer_norm,
            embed_out,
        } = weights;
        let layers = layers
            .into_iter()
            .map(|l| {
                Ok(PackedLayer {
                    input_layernorm: l.input_layernorm,
                    post_attention_layernorm: l.post_attention_layernorm,
                    query_key_value: PackedLinear::pack(l.query_key_value)?,
                    dense: PackedLinear::pack(l.dense)?,
                    dense_h_to_4h: PackedLinear::pack(l.dense_h_to_4h)?,
                    dense_4h_to_h: PackedLinear::pack(l.dense_4h_to_h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PackedWeights {
            embed_in,
            layers,
            final_layer_norm,
            embed_out: PackedMatrix::pack(&embed_out)?,
            bytes_per_token,
        })
    }

    /// Weight bytes one decode step reads: every matrix but `embed_in` (one row of it).
    pub fn bytes_per_token(&self) -> usize {
        self.bytes_per_token
    }
}

/// Writes panel `p` of the `[rows, cols]` matrix `src` (elements of `S` bytes) into `dst`.
fn fill_panel<const S: usize>(src: &[u8], rows: usize, cols: usize, p: usize, dst: &mut [u8]) {
    for j in 0..PANEL {
        let row = p * PANEL + j;
        if row >= rows {
            break; // the mapping is zero-filled already
        }
        let src_row = &src[row * cols * S..(row + 1) * cols * S];
        for (kk, e) in src_row.chunks_exact(S).enumerate() {
            let at = (kk * PANEL + j) * S;
            let d: &mut [u8; S] = (&mut dst[at..at + S]).try_into().expect("S bytes");
            *d = e.try_into().expect("S bytes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_every_element_and_zero_pads() {
        for (rows, cols) in [(16, 8), (37, 5), (1, 1), (50, 33)] {
            let data: Vec<u16> = (0..rows * cols)
                .map(|i| half::f16::from_f32(i as f32).to_bits())
                .collect();
            let w = Matrix::owned16(Dtype::F16, rows, cols, data);
            let p = PackedMatrix::pack(&w).unwrap();
            assert_eq!(p.panels(), rows.div_ceil(PANEL));
            assert_eq!(p.bytes().as_ptr() as usize % HUGE_PAGE, 0);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(p.get(r, c), (r * cols + c) as f32, "({r}, {c})");
                }
            }
            for r in rows..p.panels() * PANEL {
                for c in 0..cols {
                    assert_eq!(p.get(r, c), 0.0, "padding ({r}, {c})");
                }
            }
        }
    }
}
