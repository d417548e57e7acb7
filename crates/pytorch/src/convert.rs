//! State dicts → safetensors: one `pytorch_model.bin` to one file, or a sharded set (each
//! `.bin` shard to a `model-0000k-of-0000n.safetensors`, then the
//! `model.safetensors.index.json` naming them). Each file is streamed to a temporary name,
//! flushed to disk and renamed, so no half-written file appears under a final name; the
//! sharded index is written last, after every shard, so a folder only looks sharded once it
//! is complete.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use safetensors::tensor::TensorView;

use crate::archive::Tensor;
use crate::index::{BinIndex, SAFETENSORS_INDEX};

/// Converts the state dict in `bin` to a safetensors file `out` (written under a temporary
/// name, then renamed); returns the number of tensors.
pub fn convert_to_safetensors(bin: &Path, out: &Path) -> Result<usize> {
    let archive = crate::open(bin)?;
    let tensors = archive.tensors()?;
    write_safetensors(out, &tensors)?;
    Ok(tensors.len())
}

/// What [`convert_sharded`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedOutput {
    /// The safetensors shards, in order.
    pub shards: Vec<PathBuf>,
    /// Their `model.safetensors.index.json`.
    pub index: PathBuf,
    /// Tensors in all shards.
    pub tensors: usize,
}

/// Converts the sharded checkpoint of `bin_index` (`pytorch_model.bin.index.json`, its shards
/// beside it) into `out_dir`: shard `k` of `n` (in name order) becomes
/// `model-0000k-of-0000n.safetensors`, and `model.safetensors.index.json` maps each tensor to
/// its new shard. Every tensor must sit in the shard the index names, and every listed tensor
/// must be found; otherwise nothing is left in `out_dir` (shards written so far are removed).
pub fn convert_sharded(bin_index: &Path, out_dir: &Path) -> Result<ShardedOutput> {
    let index = BinIndex::read(bin_index)?;
    let dir = bin_index.parent().unwrap_or(Path::new("."));
    let shards = index.shards();
    let n = shards.len();
    let mut written = Vec::new();
    let result = (|| -> Result<(BTreeMap<String, String>, u64)> {
        let mut weight_map = BTreeMap::new();
        let mut total_size = 0u64;
        for (k, shard) in shards.iter().enumerate() {
            let path = dir.join(shard);
            let archive = crate::open(&path)?;
            let tensors = archive.tensors()?;
            let out_name = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
            for Tensor { name, data, .. } in &tensors {
                match index.weight_map.get(*name) {
                    Some(listed) if listed == shard => {}
                    Some(listed) => bail!(
                        "{}: holds tensor {name:?}, which the index {} lists in {listed}",
                        path.display(),
                        bin_index.display()
                    ),
                    None => bail!(
                        "{}: holds tensor {name:?}, which the index {} does not list",
                        path.display(),
                        bin_index.display()
                    ),
                }
                if weight_map
                    .insert(name.to_string(), out_name.clone())
                    .is_some()
                {
                    bail!("{}: tensor {name:?} appears twice", path.display());
                }
                total_size += data.len() as u64;
            }
            let out = out_dir.join(&out_name);
            write_safetensors(&out, &tensors)?;
            written.push(out);
        }
        let listed: BTreeSet<&String> = index.weight_map.keys().collect();
        if let Some(missing) = listed.into_iter().find(|t| !weight_map.contains_key(*t)) {
            bail!(
                "the index {} lists tensor {missing:?} in {}, which does not hold it",
                bin_index.display(),
                index.weight_map[missing]
            );
        }
        Ok((weight_map, total_size))
    })();
    let (weight_map, total_size) = match result {
        Ok(v) => v,
        Err(e) => {
            for path in &written {
                let _ = fs::remove_file(path);
            }
            return Err(e);
        }
    };
    let tensors = weight_map.len();
    let json = serde_json::json!({
        "metadata": { "total_size": total_size },
        "weight_map": weight_map,
    });
    let index_path = out_dir.join(SAFETENSORS_INDEX);
    let text = serde_json::to_string_pretty(&json).context("serializing the shard index")?;
    spedec_report::write_atomic(&index_path, text.as_bytes())?;
    Ok(ShardedOutput {
        shards: written,
        index: index_path,
        tensors,
    })
}

/// Streams `tensors` as a safetensors file to a temporary name beside `out`, flushes it to
/// disk and renames it to `out`.
fn write_safetensors(out: &Path, tensors: &[Tensor]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.to_vec(), &t.data)
                .map(|v| (t.name, v))
                .map_err(|e| anyhow::anyhow!("tensor {:?}: {e}", t.name))
        })
        .collect::<Result<Vec<_>>>()?;
    spedec_report::write_atomic_with(out, |tmp| {
        safetensors::tensor::serialize_to_file(views, None, tmp)
            .map_err(|e| anyhow::anyhow!("cannot write the converted tensors: {e}"))
    })
}
