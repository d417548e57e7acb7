//! Which files make up a checkpoint, and the checks every safetensors file passes before a
//! byte of it is used.
//!
//! - [`Checkpoint::find`]: a folder's weights are `model.safetensors`, or a sharded set
//!   (`model.safetensors.index.json` + the `model-0000k-of-0000n.safetensors` it lists).
//! - [`ShardIndex`]: the index's `weight_map` (tensor name → shard file), checked: shard
//!   names are plain file names in the folder, every listed shard exists.
//! - [`check_header`]: a safetensors header validated by us, naming the broken tensor: the
//!   header length fits the file, the JSON parses, every dtype is known, shapes multiply
//!   without overflow, and the data offsets tile the data section exactly (each tensor's
//!   bytes are `numel · size`, in order, no gap, no overlap, nothing past the end). Only then
//!   does the `safetensors` crate see the file, so no field of an unchecked header sizes an
//!   allocation or an index.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The single-file weights of a Hugging Face folder.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The index of a sharded safetensors checkpoint.
pub const SHARD_INDEX: &str = spedec_pytorch::SAFETENSORS_INDEX;
/// PyTorch's pickle checkpoint (not read by this loader).
pub const PYTORCH_BIN: &str = "pytorch_model.bin";

/// The index of a sharded PyTorch checkpoint.
pub const PYTORCH_BIN_INDEX: &str = spedec_pytorch::BIN_INDEX;

/// A model folder holds only PyTorch pickle weights (`pytorch_model.bin`, or a sharded set
/// from `pytorch_model.bin.index.json`), which the loader does not map; they must be
/// converted to safetensors first (`spedec_neox::pytorch` does it without running the
/// pickle). The CLI recognises this error to say how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PytorchOnly {
    pub dir: PathBuf,
    /// The sharded layout (`pytorch_model.bin.index.json`).
    pub sharded: bool,
}

impl std::fmt::Display for PytorchOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.sharded {
            PYTORCH_BIN_INDEX
        } else {
            PYTORCH_BIN
        };
        write!(
            f,
            "model folder {} has only {what} (PyTorch pickle), which is not memory-mapped; \
             convert it to safetensors first",
            self.dir.display()
        )
    }
}

impl std::error::Error for PytorchOnly {}

/// Largest safetensors header we accept (the `safetensors` crate's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Where a model folder's weights are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// One `model.safetensors`.
    Single(PathBuf),
    /// A sharded set, from its index.
    Sharded(ShardIndex),
}

impl Checkpoint {
    /// The weights of model folder `dir`: `model.safetensors` if present, else the sharded
    /// set of `model.safetensors.index.json`. A folder with only `pytorch_model.bin` is an
    /// error that says so.
    pub fn find(dir: &Path) -> Result<Checkpoint> {
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return Ok(Checkpoint::Single(single));
        }
        let index = dir.join(SHARD_INDEX);
        if index.is_file() {
            return Ok(Checkpoint::Sharded(ShardIndex::read(&index)?));
        }
        for (file, sharded) in [(PYTORCH_BIN, false), (PYTORCH_BIN_INDEX, true)] {
            if dir.join(file).is_file() {
                return Err(PytorchOnly {
                    dir: dir.to_path_buf(),
                    sharded,
                }
                .into());
            }
        }
        bail!(
            "missing {SINGLE_FILE} (or {SHARD_INDEX}) in model folder {}",
            dir.display()
        );
    }
}

/// A sharded checkpoint's index: which shard holds each tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIndex {
    /// The index file.
    pub path: PathBuf,
    /// Tensor name → shard file name (in the index's folder).
    pub weight_map: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// Reads and checks `path` (`model.safetensors.index.json`).
    pub fn read(path: &Path) -> Result<ShardIndex> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read shard index {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses the index text of `path` and checks the shard names and that the shards exist.
    pub fn parse(text: &str, path: &Path) -> Result<ShardIndex> {
        let index: IndexFile = serde_json::from_str(text).with_context(|| {
            format!(
                "shard index {} is not valid JSON with a \"weight_map\" object of tensor name \
                 → shard file",
                path.display()
            )
        })?;
        if index.weight_map.is_empty() {
            bail!("shard index {}: the weight_map is empty", path.display());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let shards: BTreeSet<&String> = index.weight_map.values().collect();
        for shard in shards {
            let plain = Path::new(shard)
                .file_name()
                .is_some_and(|f| f == shard.as_str());
            if !plain || !shard.ends_with(".safetensors") {
                bail!(
                    "shard index {}: shard {shard:?} is not a .safetensors file name in the \
                     index's folder",
                    path.display()
                );
            }
            if !dir.join(shard).is_file() {
                bail!(
                    "shard index {} lists {shard}, which is missing from {}",
                    path.display(),
                    dir.display()
                );
            }
        }
        Ok(ShardIndex {
            path: path.to_path_buf(),
            weight_map: index.weight_map,
        })
    }

    /// The shard files, each once, in name order.
    pub fn shards(&self) -> Vec<PathBuf> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let names: BTreeSet<&String> = self.weight_map.values().collect();
        names.into_iter().map(|n| dir.join(n)).collect()
    }
}

#[derive(Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// Bits per element of a safetensors dtype name (the dtypes the format defines).
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Checks the safetensors file `bytes` (see the module docs); errors name the tensor.
pub fn check_header(bytes: &[u8]) -> Result<()> {
    let Some(len_bytes) = bytes.get(..8) else {
        bail!(
            "{} bytes is too short for a safetensors file (8-byte header length first)",
            bytes.len()
        );
    };
    let n = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    let rest = bytes.len() as u64 - 8;
    if n > MAX_HEADER_BYTES || n > rest {
        bail!(
            "the header length field says {n} bytes, but the file has {rest} after it (and at \
             most {MAX_HEADER_BYTES} are allowed): truncated or not a safetensors file"
        );
    }
    let header = &bytes[8..8 + n as usize];
    let data_len = rest - n;
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| anyhow::anyhow!("the header is not a JSON object: {e}"))?;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        if name == "__metadata__" {
            continue;
        }
        let entry: TensorEntry = serde_json::from_value(value).map_err(|e| {
            anyhow::anyhow!(
                "tensor {name:?}: expected {{\"dtype\", \"shape\", \"data_offsets\"}}: {e}"
            )
        })?;
        let bits = dtype_bits(&entry.dtype)
            .with_context(|| format!("tensor {name:?} has unknown dtype {:?}", entry.dtype))?;
        let numel = entry
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .with_context(|| format!("tensor {name:?}: shape {:?} overflows", entry.shape))?;
        let bytes_needed = numel
            .checked_mul(bits)
            .map(|b| b.div_ceil(8))
            .with_context(|| format!("tensor {name:?}: shape {:?} overflows", entry.shape))?;
        let (begin, end) = entry.data_offsets;
        if begin > end || end > data_len {
            bail!(
                "tensor {name:?}: data offsets [{begin}, {end}) are outside the {data_len}-byte \
                 data section"
            );
        }
        if end - begin != bytes_needed {
            bail!(
                "tensor {name:?}: data offsets [{begin}, {end}) hold {} bytes, but {} {:?} \
                 needs {bytes_needed}",
                end - begin,
                entry.dtype,
                entry.shape
            );
        }
        tensors.push((begin, end, name));
    }
    tensors.sort();
    let mut at = 0;
    let mut previous: Option<&str> = None;
    for (begin, end, name) in &tensors {
        if *begin != at {
            let what = if *begin < at {
                "overlaps"
            } else {
                "leaves a gap after"
            };
            let before = previous.map_or("the start of the data".to_string(), |p| format!("{p:?}"));
            bail!(
                "tensor {name:?} starts at byte {begin}: it {what} {before} (which ends at {at})"
            );
        }
        at = *end;
        previous = Some(name);
    }
    if at != data_len {
        bail!("the tensors end at byte {at} of a {data_len}-byte data section: trailing bytes");
    }
    Ok(())
}
