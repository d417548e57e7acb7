//! The CUDA GPT-NeoX model as an [`Lm`].

use spedec_neox::{CudaModel, Logits};

use crate::lm::Lm;

impl Lm for CudaModel {
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }
    fn max_len(&self) -> usize {
        self.capacity()
    }
    fn len(&self) -> usize {
        CudaModel::len(self)
    }
    fn forward(&mut self, tokens: &[u32]) -> anyhow::Result<Logits> {
        CudaModel::forward(self, tokens)
    }
    fn truncate(&mut self, len: usize) -> anyhow::Result<()> {
        CudaModel::truncate(self, len)
    }
}
