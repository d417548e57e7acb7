//! A revision's weights in whichever layout the hub has, decided from its answers: a single
//! `model.safetensors`; else a sharded set (`model.safetensors.index.json` and the shards its
//! `weight_map` lists); else a `pytorch_model.bin`; else a sharded one
//! (`pytorch_model.bin.index.json`). A 404 for one layout moves on to the next; any other
//! failure stops. Every file comes through [`hub::get`], so LFS files are checked against the
//! hub's sha256. The safetensors layouts are linked into the model folder; the PyTorch ones
//! are converted there once (see [`super::convert`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::hub::{self, Got, MissingKind};

/// The single-file weights.
pub const SINGLE: &str = "model.safetensors";
/// The index of a sharded safetensors checkpoint.
pub const SHARD_INDEX: &str = spedec_pytorch::SAFETENSORS_INDEX;
/// PyTorch's pickle checkpoint.
pub const BIN: &str = "pytorch_model.bin";
/// The index of a sharded PyTorch checkpoint.
pub const BIN_INDEX: &str = spedec_pytorch::BIN_INDEX;

/// How a revision's weights are stored on the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Single,
    Sharded,
    Bin,
    ShardedBin,
}

impl Layout {
    /// The layouts in the order they are tried, with the file that marks each.
    const ALL: [(Layout, &'static str); 4] = [
        (Layout::Single, SINGLE),
        (Layout::Sharded, SHARD_INDEX),
        (Layout::Bin, BIN),
        (Layout::ShardedBin, BIN_INDEX),
    ];
}

/// Files to link into the model folder: the name there, the path in the HF cache.
pub type Links = Vec<(String, PathBuf)>;

/// What to convert into the model folder (the PyTorch layouts).
#[derive(Debug)]
pub enum Convert {
    /// `pytorch_model.bin` → `model.safetensors`.
    Single { bin: PathBuf },
    /// `pytorch_model.bin.index.json` (its shards beside it) → safetensors shards + index.
    Sharded { index: PathBuf, shards: usize },
}

/// The weights of a revision, in the HF cache.
#[derive(Debug)]
pub struct Found {
    pub layout: Layout,
    pub links: Links,
    pub convert: Option<Convert>,
    /// What the weights were made from (repo, commit, each file's blob), so a conversion
    /// can tell whether it is already done.
    pub source: String,
    /// One line for the user: which layout was found.
    pub summary: String,
}

/// Fetches one file of the repository (printing what happened); the caller's `get`.
pub type Fetch<'a> = dyn Fn(&str) -> Result<Got> + 'a;

/// Finds the layout of `what` (`repo@revision`) and fetches its weight files with `get`.
/// `hint` is appended when no layout exists.
pub fn fetch(get: &Fetch, what: &str, hint: &str) -> Result<Found> {
    let mut missing = Vec::new();
    for (layout, file) in Layout::ALL {
        match get(file) {
            Ok(got) => return fetch_layout(get, what, layout, got),
            Err(err) if hub::missing(&err).is_some() => missing.push(err),
            Err(err) => return Err(err),
        }
    }
    let all_not_found = missing
        .iter()
        .all(|e| hub::missing(e) == Some(MissingKind::NotFound));
    let first = missing.remove(0);
    if !all_not_found {
        // Offline or unreachable: the first layout's error says why.
        return Err(first);
    }
    let others: Vec<&str> = Layout::ALL[1..].iter().map(|(_, f)| *f).collect();
    bail!(
        "{first}; nor {} (the weight layouts this command reads){}",
        others.join(", "),
        if hint.is_empty() {
            String::new()
        } else {
            format!("; {hint}")
        }
    )
}

fn fetch_layout(get: &Fetch, what: &str, layout: Layout, first: Got) -> Result<Found> {
    let mut source = vec![format!("{what} {}", first.commit)];
    let marker = Layout::ALL
        .iter()
        .find(|(l, _)| *l == layout)
        .map(|(_, f)| *f)
        .unwrap_or(SINGLE);
    source.push(format!("{marker} {}", blob_of(&first)));
    match layout {
        Layout::Single => Ok(Found {
            layout,
            links: vec![(SINGLE.to_string(), first.path)],
            convert: None,
            source: source.join("\n"),
            summary: format!("{what}: weights: one {SINGLE}"),
        }),
        Layout::Bin => Ok(Found {
            layout,
            links: Vec::new(),
            convert: Some(Convert::Single { bin: first.path }),
            source: source.join("\n"),
            summary: format!("{what}: weights: {BIN} only (no safetensors)"),
        }),
        Layout::Sharded | Layout::ShardedBin => {
            let text = fs::read_to_string(&first.path)
                .with_context(|| format!("reading {}", first.path.display()))?;
            let index_what = format!("{what}: {marker}");
            let suffix = if layout == Layout::Sharded {
                ".safetensors"
            } else {
                ".bin"
            };
            let shards = shard_names(&text, &index_what, suffix)?;
            let mut links = vec![(marker.to_string(), first.path.clone())];
            for shard in &shards {
                let got = get(shard).map_err(|err| match hub::missing(&err) {
                    Some(_) => anyhow::anyhow!(
                        "{index_what} lists the shard {shard}, which cannot be had ({err:#})"
                    ),
                    None => err,
                })?;
                source.push(format!("{shard} {}", blob_of(&got)));
                links.push((shard.clone(), got.path));
            }
            let n = shards.len();
            Ok(if layout == Layout::Sharded {
                Found {
                    layout,
                    links,
                    convert: None,
                    source: source.join("\n"),
                    summary: format!("{what}: weights: sharded safetensors ({marker}, {n} shards)"),
                }
            } else {
                Found {
                    layout,
                    links: Vec::new(),
                    convert: Some(Convert::Sharded {
                        index: first.path,
                        shards: n,
                    }),
                    source: source.join("\n"),
                    summary: format!(
                        "{what}: weights: sharded {BIN} ({marker}, {n} shards, no safetensors)"
                    ),
                }
            })
        }
    }
}

/// The blob a snapshot entry points at (its etag: the sha256 for LFS files), else the entry.
fn blob_of(got: &Got) -> String {
    fs::canonicalize(&got.path)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .unwrap_or_else(|| got.path.display().to_string())
}

#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

/// The shard files an index lists, each once, in name order: the `weight_map` must be
/// non-empty and every shard a plain file name (ASCII letters, digits, `.`, `-`, `_`; not
/// starting with `.`: no folder, no `..`, nothing a URL would read differently) ending with
/// `suffix`.
pub fn shard_names(text: &str, what: &str, suffix: &str) -> Result<Vec<String>> {
    let index: IndexFile = serde_json::from_str(text).with_context(|| {
        format!("{what}: not valid JSON with a \"weight_map\" object of tensor name → shard file")
    })?;
    if index.weight_map.is_empty() {
        bail!("{what}: the weight_map is empty");
    }
    let names: BTreeSet<String> = index.weight_map.into_values().collect();
    for name in &names {
        let plain = !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !plain || !name.ends_with(suffix) || name.len() == suffix.len() {
            bail!(
                "{what}: shard {name:?} is not a plain {suffix} file name beside the index \
                 (refused: no folders, no `..`, no absolute paths)"
            );
        }
    }
    Ok(names.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_are_checked() {
        let ok = r#"{"metadata": {}, "weight_map": {"a": "model-00002-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#;
        assert_eq!(
            shard_names(ok, "i", ".safetensors").unwrap(),
            [
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        for (bad, want) in [
            ("[]", "not valid JSON"),
            (r#"{"weight_map": {}}"#, "the weight_map is empty"),
            (
                r#"{"weight_map": {"a": "../m.safetensors"}}"#,
                "\"../m.safetensors\" is not",
            ),
            (
                r#"{"weight_map": {"a": "/etc/m.safetensors"}}"#,
                "is not a plain",
            ),
            (
                r#"{"weight_map": {"a": "d/m.safetensors"}}"#,
                "is not a plain",
            ),
            (
                r#"{"weight_map": {"a": "m.safetensors?x=1"}}"#,
                "is not a plain",
            ),
            (r#"{"weight_map": {"a": ".safetensors"}}"#, "is not a plain"),
            (
                r#"{"weight_map": {"a": "m.bin"}}"#,
                "is not a plain .safetensors",
            ),
        ] {
            let err = format!(
                "{:#}",
                shard_names(bad, "repo: index", ".safetensors").unwrap_err()
            );
            assert!(
                err.starts_with("repo: index: ") && err.contains(want),
                "{bad}: {err}"
            );
        }
    }
}
