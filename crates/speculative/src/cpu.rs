//! The CPU GPT-NeoX model as an [`Lm`].

use spedec_neox::{CpuModel, Logits};

use crate::lm::Lm;

impl Lm for CpuModel {
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }
    fn max_len(&self) -> usize {
        self.capacity()
    }
    fn len(&self) -> usize {
        CpuModel::len(self)
    }
    fn forward(&mut self, tokens: &[u32]) -> anyhow::Result<Logits> {
        CpuModel::forward(self, tokens)
    }
    fn forward_last(&mut self, tokens: &[u32]) -> anyhow::Result<Logits> {
        CpuModel::forward_last(self, tokens)
    }
    fn truncate(&mut self, len: usize) -> anyhow::Result<()> {
        CpuModel::truncate(self, len)
    }
}
