//! `pytorch_model.bin.index.json`: the `weight_map` (tensor name → shard file) of a sharded
//! PyTorch checkpoint, checked before any shard is fetched or read: non-empty, and every
//! shard a plain `.bin` file name (no folder, no `..`, not absolute).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The index of a sharded PyTorch checkpoint.
pub const BIN_INDEX: &str = "pytorch_model.bin.index.json";
/// The index of a sharded safetensors checkpoint (what [`crate::convert_sharded`] writes).
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";

/// A checked `pytorch_model.bin.index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinIndex {
    /// Tensor name → shard file name (beside the index).
    pub weight_map: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

impl BinIndex {
    /// Parses the text of index `what` (a path or a name, for errors) and checks it.
    pub fn parse(text: &str, what: &str) -> Result<BinIndex> {
        let index: IndexFile = serde_json::from_str(text).with_context(|| {
            format!(
                "shard index {what} is not valid JSON with a \"weight_map\" object of tensor \
                 name → shard file"
            )
        })?;
        if index.weight_map.is_empty() {
            bail!("shard index {what}: the weight_map is empty");
        }
        for shard in index.weight_map.values() {
            if !is_plain_file_name(shard) || !shard.ends_with(".bin") {
                bail!(
                    "shard index {what}: shard {shard:?} is not a .bin file name beside the \
                     index"
                );
            }
        }
        Ok(BinIndex {
            weight_map: index.weight_map,
        })
    }

    /// Reads and checks the index file at `path`.
    pub fn read(path: &Path) -> Result<BinIndex> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read shard index {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The shard file names, each once, in name order.
    pub fn shards(&self) -> Vec<&str> {
        let names: BTreeSet<&str> = self.weight_map.values().map(String::as_str).collect();
        names.into_iter().collect()
    }
}

/// A file name with no folder part: not empty, no `/` or `\`, not `.` or `..`, no NUL.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).file_name().is_some_and(|f| f == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_is_checked_before_use() {
        let ok = r#"{"metadata": {"total_size": 4}, "weight_map": {
            "a": "pytorch_model-00002-of-00002.bin", "b": "pytorch_model-00001-of-00002.bin",
            "c": "pytorch_model-00001-of-00002.bin"}}"#;
        let index = BinIndex::parse(ok, "i.json").unwrap();
        assert_eq!(
            index.shards(),
            [
                "pytorch_model-00001-of-00002.bin",
                "pytorch_model-00002-of-00002.bin"
            ]
        );
        for (bad, want) in [
            ("{}", "not valid JSON"),
            (r#"{"weight_map": {}}"#, "the weight_map is empty"),
            (
                r#"{"weight_map": {"a": "../x.bin"}}"#,
                "\"../x.bin\" is not",
            ),
            (
                r#"{"weight_map": {"a": "/etc/x.bin"}}"#,
                "\"/etc/x.bin\" is not",
            ),
            (r#"{"weight_map": {"a": "d/x.bin"}}"#, "\"d/x.bin\" is not"),
            (r#"{"weight_map": {"a": "..\\x.bin"}}"#, "is not a .bin"),
            (r#"{"weight_map": {"a": "x.safetensors"}}"#, "is not a .bin"),
            (r#"{"weight_map": {"a": ".."}}"#, "is not a .bin"),
        ] {
            let err = format!("{:#}", BinIndex::parse(bad, "i.json").unwrap_err());
            assert!(err.contains(want) && err.contains("i.json"), "{bad}: {err}");
        }
    }
}
