//! KV-cache layout on the device and a small owner for it.
//!
//! Layout: K and V are two f16 buffers of shape `[layers][H][max_pos][hd]`. One layer's slice,
//! `[H][max_pos][hd]`, is what [`GpuContext::rotary_kv_f16`] writes and
//! [`GpuContext::attention_f16`] reads: each head's keys are contiguous in position, so the
//! attention kernel streams them, and a rollback (truncate) only moves the length kept by the
//! caller. The buffers are allocated once for the context length.

use std::ops::Range;

use anyhow::{anyhow, ensure, Result};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use half::f16;

use crate::context::GpuContext;
use crate::ops::AttnShape;

/// Shape of a KV cache: `[layers][heads][max_pos][head_dim]` for K and for V.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    /// Transformer layers.
    pub layers: usize,
    /// Attention heads H.
    pub heads: usize,
    /// Capacity in positions.
    pub max_pos: usize,
    /// Head dimension hd.
    pub head_dim: usize,
}

impl KvLayout {
    /// Elements of one layer's K (or V): H · max_pos · hd.
    pub fn layer_len(&self) -> usize {
        self.heads * self.max_pos * self.head_dim
    }

    /// Elements of the whole K (or V) buffer.
    pub fn len(&self) -> usize {
        self.layers * self.layer_len()
    }

    /// Whether the cache holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element range of layer `layer` inside the K (or V) buffer.
    pub fn layer_range(&self, layer: usize) -> Range<usize> {
        layer * self.layer_len()..(layer + 1) * self.layer_len()
    }

    /// Flat index of (layer, head, position, dim).
    pub fn index(&self, layer: usize, head: usize, pos: usize, dim: usize) -> usize {
        ((layer * self.heads + head) * self.max_pos + pos) * self.head_dim + dim
    }
}

/// Device K and V buffers of one model.
pub struct GpuKvCache {
    layout: KvLayout,
    /// f16 [layers, H, max_pos, hd]
    k: CudaSlice<f16>,
    /// f16 [layers, H, max_pos, hd]
    v: CudaSlice<f16>,
}

impl GpuKvCache {
    /// Allocate a zeroed cache.
    pub fn new(gpu: &GpuContext, layout: KvLayout) -> Result<Self> {
        ensure!(!layout.is_empty(), "empty KV cache layout {layout:?}");
        Ok(Self {
            layout,
            k: gpu.zeros(layout.len())?,
            v: gpu.zeros(layout.len())?,
        })
    }

    /// The cache's layout.
    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// Whether `shape` describes this cache's per-layer geometry.
    pub fn matches(&self, shape: &AttnShape) -> bool {
        shape.heads == self.layout.heads
            && shape.head_dim == self.layout.head_dim
            && shape.max_pos == self.layout.max_pos
    }

    fn range(&self, layer: usize) -> Result<Range<usize>> {
        ensure!(
            layer < self.layout.layers,
            "layer {layer} out of range (cache has {})",
            self.layout.layers
        );
        Ok(self.layout.layer_range(layer))
    }

    /// Read views of one layer: (K, V), each f16 [H, max_pos, hd].
    pub fn layer(&self, layer: usize) -> Result<(CudaView<'_, f16>, CudaView<'_, f16>)> {
        let r = self.range(layer)?;
        let k = self
            .k
            .try_slice(r.clone())
            .ok_or_else(|| anyhow!("bad K range"))?;
        let v = self.v.try_slice(r).ok_or_else(|| anyhow!("bad V range"))?;
        Ok((k, v))
    }

    /// Write views of one layer: (K, V), each f16 [H, max_pos, hd].
    pub fn layer_mut(
        &mut self,
        layer: usize,
    ) -> Result<(CudaViewMut<'_, f16>, CudaViewMut<'_, f16>)> {
        let r = self.range(layer)?;
        let k = self
            .k
            .try_slice_mut(r.clone())
            .ok_or_else(|| anyhow!("bad K range"))?;
        let v = self
            .v
            .try_slice_mut(r)
            .ok_or_else(|| anyhow!("bad V range"))?;
        Ok((k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_indexing() {
        let l = KvLayout {
            layers: 2,
            heads: 3,
            max_pos: 5,
            head_dim: 8,
        };
        assert_eq!(l.layer_len(), 120);
        assert_eq!(l.len(), 240);
        assert_eq!(l.layer_range(1), 120..240);
        assert_eq!(l.index(0, 0, 0, 0), 0);
        assert_eq!(l.index(0, 0, 1, 0), 8);
        assert_eq!(l.index(0, 1, 0, 0), 40);
        assert_eq!(l.index(1, 2, 4, 7), 239);
    }
}
