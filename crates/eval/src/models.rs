//! Opening models for the CLI: a model folder or `synthetic:…` spec becomes a boxed [`Lm`].

use anyhow::{bail, Result};
use spedec_neox::{Config, CpuModel, Isa, ModelFiles, Tokenizer};
use spedec_speculative::Lm;

/// A model ready to run, with what the CLI needs to know about it.
pub struct LoadedModel {
    /// The folder or spec the user gave.
    pub name: String,
    pub config: Config,
    pub tokenizer: Tokenizer,
    /// Bytes of weights one decode step reads.
    pub bytes_per_token: usize,
    pub lm: Box<dyn Lm>,
}

/// Opens `spec` with a KV cache of `context` positions (default: the model's max positions).
pub fn load_model(spec: &str, context: Option<usize>) -> Result<LoadedModel> {
    let files = ModelFiles::open(spec)?;
    let bytes_per_token = files.weights.bytes_per_token();
    let model = CpuModel::new(files.config.clone(), files.weights, context, Isa::detect())?;
    Ok(LoadedModel {
        name: files.name,
        config: files.config,
        tokenizer: files.tokenizer,
        bytes_per_token,
        lm: Box::new(model),
    })
}

/// Refuses a draft that cannot propose tokens for `target`: a different vocabulary size or a
/// different tokenizer.
pub fn check_draft(target: &LoadedModel, draft: &LoadedModel) -> Result<()> {
    if target.config.vocab_size != draft.config.vocab_size {
        bail!(
            "draft {} has vocab_size {} but target {} has {}: a draft must share the target's \
             vocabulary",
            draft.name,
            draft.config.vocab_size,
            target.name,
            target.config.vocab_size
        );
    }
    if target.tokenizer.fingerprint() != draft.tokenizer.fingerprint() {
        bail!(
            "draft {} and target {} have different tokenizers (their token tables differ): a \
             draft must use the target's tokenizer",
            draft.name,
            target.name
        );
    }
    Ok(())
}
