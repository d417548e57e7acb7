//! spedec-pytorch: `pytorch_model.bin` read without executing anything — the zip that
//! `torch.save` writes and a restricted unpickler for the state dict inside it — and
//! converted to safetensors, one file or a sharded set.
//!
//! - [`read_state_dict`] / [`state_dict_from_bytes`]: the tensors of a state dict.
//! - [`convert_to_safetensors`]: one `pytorch_model.bin` → one `model.safetensors`.
//! - [`BinIndex`] and [`convert_sharded`]: a sharded `pytorch_model.bin.index.json` set →
//!   `model-0000k-of-0000n.safetensors` shards and their `model.safetensors.index.json`.
//!
//! Outputs are written under a temporary name and renamed, so a failed or interrupted
//! conversion never leaves a half-written file under the final name.

mod archive;
mod convert;
mod index;
mod unpickle;

use std::path::Path;

use anyhow::{Context, Result};
use safetensors::Dtype as StDtype;

pub use convert::{convert_sharded, convert_to_safetensors, ShardedOutput};
pub use index::{BinIndex, BIN_INDEX, SAFETENSORS_INDEX};

use archive::Archive;

/// One tensor of a state dict, its elements copied out contiguously (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    pub name: String,
    pub dtype: StDtype,
    pub shape: Vec<usize>,
    /// Little-endian elements, `[numel · size]`.
    pub data: Vec<u8>,
}

/// The tensors of the state dict in `path` (a `torch.save` zip), in file order.
pub fn read_state_dict(path: &Path) -> Result<Vec<StateTensor>> {
    owned(&open(path)?)
}

/// The tensors of a state dict held in memory (the bytes of a `torch.save` zip).
pub fn state_dict_from_bytes(bytes: &[u8]) -> Result<Vec<StateTensor>> {
    owned(&Archive::read(
        std::io::Cursor::new(bytes),
        bytes.len() as u64,
    )?)
}

/// Reads the archive at `path`, naming it in errors.
fn open(path: &Path) -> Result<Archive> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open PyTorch checkpoint {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot read PyTorch checkpoint {}", path.display()))?
        .len();
    Archive::read(std::io::BufReader::new(file), len)
        .with_context(|| format!("invalid PyTorch checkpoint {}", path.display()))
}

fn owned(archive: &Archive) -> Result<Vec<StateTensor>> {
    Ok(archive
        .tensors()?
        .into_iter()
        .map(|t| StateTensor {
            name: t.name.to_string(),
            dtype: t.dtype,
            shape: t.shape.to_vec(),
            data: t.data.into_owned(),
        })
        .collect())
}
