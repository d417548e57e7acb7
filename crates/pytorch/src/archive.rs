//! The zip that `torch.save` writes: `<archive>/data.pkl` (the pickle) and
//! `<archive>/data/<key>` (each storage's raw little-endian bytes), all stored uncompressed.
//!
//! Every size comes from the file and is checked before use: members against the archive's
//! length, storages against `numel · element size`, and each tensor's extent (offset, shape,
//! strides) against its storage. A contiguous tensor is a slice of its storage (no copy); a
//! strided one is gathered into row-major order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Seek};

use anyhow::{bail, ensure, Context, Result};
use safetensors::Dtype as StDtype;

use crate::unpickle::{unpickle_state_dict, TensorRef};

/// Largest `data.pkl` accepted: a state dict's pickle is kilobytes (the tensors live apart).
const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// One tensor of an [`Archive`]: its bytes in row-major order, borrowed where contiguous.
pub(crate) struct Tensor<'a> {
    pub(crate) name: &'a str,
    pub(crate) dtype: StDtype,
    pub(crate) shape: &'a [usize],
    /// `[numel · size]` little-endian bytes.
    pub(crate) data: Cow<'a, [u8]>,
}

/// A state dict read from its archive: the storages' bytes and the tensor views into them,
/// each view already checked against its storage.
pub(crate) struct Archive {
    storages: HashMap<String, Vec<u8>>,
    /// In file order.
    tensors: Vec<(String, TensorRef)>,
}

impl Archive {
    /// Reads the whole zip of `len` bytes from `reader`.
    pub(crate) fn read<R: Read + Seek>(reader: R, len: u64) -> Result<Archive> {
        let mut zip = zip::ZipArchive::new(reader)
            .map_err(|e| anyhow::anyhow!("not a zip archive as torch.save writes ({e})"))?;
        let pickle_name = zip
            .file_names()
            .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
            .map(str::to_string)
            .context(
                "no data.pkl in the archive (a legacy pre-1.6 torch.save file, or not a checkpoint)",
            )?;
        let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
        let pickle = read_member(&mut zip, &pickle_name, len, MAX_PICKLE_BYTES)?;
        let tensors = unpickle_state_dict(&pickle).context("in data.pkl")?;
        let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
        for (name, t) in &tensors {
            if !storages.contains_key(&t.storage.key) {
                let member = format!("{prefix}data/{}", t.storage.key);
                let bytes = read_member(&mut zip, &member, len, len)
                    .with_context(|| format!("storage of tensor {name:?}"))?;
                storages.insert(t.storage.key.clone(), bytes);
            }
            // Checked now: a broken view is refused before anything is written.
            check_view(name, t, storages[&t.storage.key].len())?;
        }
        Ok(Archive { storages, tensors })
    }

    /// The tensors, in file order: name, dtype, shape and row-major bytes.
    pub(crate) fn tensors(&self) -> Result<Vec<Tensor<'_>>> {
        self.tensors
            .iter()
            .map(|(name, t)| {
                let data = gather(name, t, &self.storages[&t.storage.key])?;
                Ok(Tensor {
                    name: name.as_str(),
                    dtype: t.storage.dtype,
                    shape: t.shape.as_slice(),
                    data,
                })
            })
            .collect()
    }
}

/// The bytes of member `name`, refusing sizes beyond the archive (`len`) or `max`.
fn read_member<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    len: u64,
    max: u64,
) -> Result<Vec<u8>> {
    let mut member = zip
        .by_name(name)
        .map_err(|e| anyhow::anyhow!("member {name}: {e}"))?;
    let size = member.size();
    if member.compression() != zip::CompressionMethod::Stored || size > len || size > max {
        bail!(
            "member {name}: {size} bytes ({:?}); torch.save stores members uncompressed and \
             no larger than the archive",
            member.compression()
        );
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(size as usize)
        .with_context(|| format!("member {name}: cannot allocate {size} bytes"))?;
    (&mut member)
        .take(size)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("member {name}: truncated or corrupt ({e})"))?;
    ensure!(
        bytes.len() as u64 == size,
        "member {name}: truncated ({} of {size} bytes)",
        bytes.len()
    );
    Ok(bytes)
}

/// Checks view `t` against its storage of `storage_len` bytes: the storage holds exactly
/// `numel · size` bytes, shape and strides agree in rank, the view's extent stays inside the
/// storage, and it has no more elements than the storage (overlapping strides, as an
/// `expand`ed tensor has, cannot be stored in safetensors). Returns the view's element count.
pub(crate) fn check_view(name: &str, t: &TensorRef, storage_len: usize) -> Result<usize> {
    let size = st_size(t.storage.dtype);
    let need = (t.storage.numel as u64).checked_mul(size as u64);
    ensure!(
        need == Some(storage_len as u64),
        "tensor {name:?}: storage {} has {storage_len} bytes, but {} elements of {:?} need {}",
        t.storage.key,
        t.storage.numel,
        t.storage.dtype,
        need.map_or("more than 2^64".to_string(), |n| n.to_string())
    );
    ensure!(
        t.shape.len() == t.stride.len(),
        "tensor {name:?}: shape {:?} and strides {:?} differ in rank",
        t.shape,
        t.stride
    );
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .with_context(|| format!("tensor {name:?}: shape {:?} overflows", t.shape))?;
    if numel == 0 {
        return Ok(0);
    }
    ensure!(
        numel <= t.storage.numel,
        "tensor {name:?}: shape {:?} has {numel} elements, more than its storage's {} \
         (overlapping strides {:?})",
        t.shape,
        t.storage.numel,
        t.stride
    );
    // The largest element index the view reaches must lie inside the storage.
    let last = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&d, &s)| {
            a.checked_add((d - 1).checked_mul(s)?)
        });
    match last {
        Some(last) if last < t.storage.numel => Ok(numel),
        _ => bail!(
            "tensor {name:?}: offset {} with shape {:?} and strides {:?} reaches past its \
             storage of {} elements",
            t.offset,
            t.shape,
            t.stride,
            t.storage.numel
        ),
    }
}

/// Tensor `t`'s bytes in row-major order, after [`check_view`]: a slice of `storage` when
/// the view is contiguous, else a gathered copy.
pub(crate) fn gather<'s>(name: &str, t: &TensorRef, storage: &'s [u8]) -> Result<Cow<'s, [u8]>> {
    let numel = check_view(name, t, storage.len())?;
    if numel == 0 {
        return Ok(Cow::Borrowed(&[]));
    }
    let size = st_size(t.storage.dtype);
    let contiguous = {
        let mut expect = 1;
        let mut ok = true;
        for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
            ok &= d == 1 || s == expect;
            expect *= d;
        }
        ok
    };
    if contiguous {
        // No copy: the view is a slice of its storage.
        return Ok(Cow::Borrowed(
            &storage[t.offset * size..(t.offset + numel) * size],
        ));
    }
    // numel ≤ the storage's element count (checked), so this is at most the storage's size.
    let mut out = Vec::new();
    out.try_reserve_exact(numel * size)
        .with_context(|| format!("tensor {name:?}: cannot allocate {} bytes", numel * size))?;
    let mut index = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        let at = t.offset
            + index
                .iter()
                .zip(&t.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        out.extend_from_slice(&storage[at * size..(at + 1) * size]);
        for k in (0..index.len()).rev() {
            index[k] += 1;
            if index[k] < t.shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
    Ok(Cow::Owned(out))
}

pub(crate) fn st_size(dtype: StDtype) -> usize {
    dtype.bitsize().div_ceil(8)
}
