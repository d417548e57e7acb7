//! The PyTorch layouts converted into the model folder, once: `pytorch_model.bin` becomes a
//! real `model.safetensors` there (not a link), a sharded set becomes
//! `model-0000k-of-0000n.safetensors` shards and their `model.safetensors.index.json`, so that
//! later loads are memory-mapped. The reader executes nothing (`spedec-pytorch`); every output
//! is written under a temporary name and renamed. A marker, `.spedec-converted-from`, records
//! the blobs the outputs were made from, written last: when it matches and the outputs are
//! there, a later run does not convert again.

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::weights::{Convert, SHARD_INDEX, SINGLE};

/// The marker in the model folder: what its converted weights were made from.
pub const MARKER: &str = ".spedec-converted-from";

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Converted now: this many tensors.
    Converted { tensors: usize, seconds: f64 },
    /// The outputs were already there, made from the same source.
    AlreadyDone,
}

/// Makes the converted weights of `source` present in `dir`.
pub fn ensure(job: &Convert, source: &str, dir: &Path) -> Result<Outcome> {
    let marker = dir.join(MARKER);
    let outputs = outputs(job);
    let done = fs::read_to_string(&marker).is_ok_and(|m| m == source)
        && outputs.iter().all(|name| is_regular_file(&dir.join(name)));
    if done {
        return Ok(Outcome::AlreadyDone);
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if marker.exists() {
        fs::remove_file(&marker).with_context(|| format!("removing {}", marker.display()))?;
    }
    let start = Instant::now();
    let tensors = match job {
        Convert::Single { bin } => spedec_pytorch::convert_to_safetensors(bin, &dir.join(SINGLE))
            .with_context(|| {
            format!(
                "converting {} to {}",
                bin.display(),
                dir.join(SINGLE).display()
            )
        })?,
        Convert::Sharded { index, .. } => {
            clear_single(dir)?;
            spedec_pytorch::convert_sharded(index, dir)
                .with_context(|| format!("converting {} into {}", index.display(), dir.display()))?
                .tensors
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    spedec_report::write_atomic(&marker, source.as_bytes())?;
    Ok(Outcome::Converted { tensors, seconds })
}

/// Removes a `model.safetensors` link from `dir` (left by an earlier download), which would
/// shadow sharded weights; a real file there is not ours to remove, so it is an error.
pub fn clear_single(dir: &Path) -> Result<()> {
    let single = dir.join(SINGLE);
    match fs::symlink_metadata(&single) {
        Ok(m) if m.file_type().is_symlink() => {
            fs::remove_file(&single).with_context(|| format!("removing {}", single.display()))
        }
        Ok(_) => bail!(
            "{} is in the way of the sharded weights this revision has (a loader would take \
             it first); remove it and run the command again",
            single.display()
        ),
        Err(_) => Ok(()),
    }
}

/// The files a conversion leaves in the model folder.
pub fn outputs(job: &Convert) -> Vec<String> {
    match job {
        Convert::Single { .. } => vec![SINGLE.to_string()],
        Convert::Sharded { shards, .. } => {
            let mut names: Vec<String> = (1..=*shards)
                .map(|k| format!("model-{k:05}-of-{shards:05}.safetensors"))
                .collect();
            names.push(SHARD_INDEX.to_string());
            names
        }
    }
}

/// A file that is not a symlink (a link left by an earlier download is not a conversion).
fn is_regular_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}
