//! The GPT-NeoX-20B BPE tokenizer that every Pythia model shares, through `tokenizers`.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use sha2::{Digest, Sha256};

/// The Pythia tokenizer, embedded so synthetic models need no files.
const PYTHIA_TOKENIZER_JSON: &[u8] =
    include_bytes!("../../../data/fixtures/tokenizer/tokenizer.json");

/// Text ↔ token ids. Adds no BOS (Pythia's tokenizer adds none).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// sha256 of the (token, id) table, to check that two models share a vocabulary.
    fingerprint: [u8; 32],
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read tokenizer {}", path.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("invalid tokenizer {}", path.display()))
    }

    /// Parses the text of a `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| anyhow!("{e}"))?;
        let mut table: Vec<(u32, String)> = inner
            .get_vocab(true)
            .into_iter()
            .map(|(tok, id)| (id, tok))
            .collect();
        table.sort();
        let mut hasher = Sha256::new();
        for (id, tok) in &table {
            hasher.update(id.to_le_bytes());
            hasher.update((tok.len() as u32).to_le_bytes());
            hasher.update(tok.as_bytes());
        }
        Ok(Tokenizer {
            inner,
            fingerprint: hasher.finalize().into(),
        })
    }

    /// The GPT-NeoX-20B tokenizer Pythia uses (embedded copy).
    pub fn pythia() -> Self {
        Self::from_bytes(PYTHIA_TOKENIZER_JSON).expect("the embedded Pythia tokenizer parses")
    }

    /// The embedded Pythia `tokenizer.json`, for writing model folders.
    pub fn pythia_json() -> &'static [u8] {
        PYTHIA_TOKENIZER_JSON
    }

    /// Token ids of `text` (no BOS / EOS added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| anyhow!("cannot tokenize text: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens such as `<|endoftext|>` left out (the `tokenizers` default).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow!("cannot decode token ids: {e}"))
    }

    /// Number of ids the tokenizer can produce (base vocabulary plus added tokens).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// sha256 of the (id, token) table.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}
