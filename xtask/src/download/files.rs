//! File-system helpers: streamed, sha256-checked writes (temporary name, fsync,
//! rename; whole small files go through `spedec_report::write_atomic`), sha256
//! of files, links with a copy fallback, and disk-full messages.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use spedec_report::format_bytes;

/// Suffix of files that are still being written (the Hugging Face cache uses
/// the same one, so a partial blob left by another HF tool is resumed too).
pub const PARTIAL_SUFFIX: &str = ".incomplete";

/// `dir/name` -> `dir/name.incomplete`.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(PARTIAL_SUFFIX);
    dest.with_file_name(name)
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` looks like a sha256 in hex (64 hex digits).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Feeds the first `len` bytes of `file` (from its start) into `hasher`.
pub fn hash_prefix(file: &mut File, len: u64, hasher: &mut Sha256) -> io::Result<()> {
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0))?;
    let copied = io::copy(&mut file.take(len), &mut HashWriter(hasher))?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while hashing",
        ));
    }
    Ok(())
}

/// sha256 of a whole file, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut HashWriter(&mut hasher))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether an I/O error means the disk (or quota) is full.
pub fn is_disk_full(err: &io::Error) -> bool {
    // 28 = ENOSPC, 122 = EDQUOT on Linux.
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(err.raw_os_error(), Some(28) | Some(122))
}

/// Turns a write error into a one-line message; for a full disk it names the
/// path and how many more bytes were needed.
pub fn write_error(err: io::Error, path: &Path, needed: Option<u64>) -> anyhow::Error {
    if is_disk_full(&err) {
        let need = match needed {
            Some(n) => format!("{n} more bytes ({}) were needed", format_bytes(n)),
            None => "the remaining size is unknown".to_string(),
        };
        anyhow::anyhow!(
            "disk full while writing {}: {need}; free some space and run the command again \
             (a partial download is kept and resumes)",
            path.display()
        )
    } else {
        anyhow::Error::new(err).context(format!("writing {}", path.display()))
    }
}

/// Creates the parent directory of `path`.
pub fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

/// fsyncs a directory so a rename inside it survives a crash (best effort:
/// not every platform lets a directory be opened).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Flushes `file` to disk and renames `partial` to `dest`.
pub fn commit(file: File, partial: &Path, dest: &Path) -> Result<()> {
    file.sync_all().map_err(|e| write_error(e, partial, None))?;
    drop(file);
    fs::rename(partial, dest)
        .with_context(|| format!("renaming {} to {}", partial.display(), dest.display()))?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// Streams `reader` into `dest` atomically while hashing it; the file is
/// kept only if its sha256 equals `expected_sha256`.
pub fn write_verified(
    dest: &Path,
    reader: &mut dyn Read,
    expected_sha256: &str,
    what: &str,
) -> Result<()> {
    create_parent(dest)?;
    let partial = partial_path(dest);
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                drop(file);
                let _ = fs::remove_file(&partial);
                return Err(anyhow::Error::new(e).context(format!("reading {what}")));
            }
        };
        hasher.update(&buf[..n]);
        if let Err(e) = file.write_all(&buf[..n]) {
            return Err(write_error(e, &partial, None));
        }
    }
    let got = hex(&hasher.finalize());
    if got != expected_sha256 {
        drop(file);
        let _ = fs::remove_file(&partial);
        bail!(
            "sha256 mismatch for {what}: expected {expected_sha256}, got {got}; \
             the file was removed"
        );
    }
    commit(file, &partial, dest)
}

/// Points `link` at `target` (a symlink; a copy where links are not
/// supported), replacing whatever was at `link` atomically.
/// Returns true when a copy was made.
pub fn link_or_copy(target: &Path, link: &Path) -> Result<bool> {
    create_parent(link)?;
    let tmp = partial_path(link);
    let _ = fs::remove_file(&tmp);
    if try_symlink(target, &tmp).is_ok() {
        fs::rename(&tmp, link)
            .with_context(|| format!("renaming {} to {}", tmp.display(), link.display()))?;
        return Ok(false);
    }
    // Resolve `target` relative to the link's directory, as the symlink would.
    let source = match link.parent() {
        Some(dir) if target.is_relative() => dir.join(target),
        _ => target.to_path_buf(),
    };
    let mut input = File::open(&source).with_context(|| format!("opening {}", source.display()))?;
    let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let size = input.metadata().map(|m| m.len()).ok();
    io::copy(&mut input, &mut file).map_err(|e| write_error(e, &tmp, size))?;
    commit(file, &tmp, link)?;
    Ok(true)
}

#[cfg(unix)]
fn try_symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn try_symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

#[cfg(not(any(unix, windows)))]
fn try_symlink(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "no symlinks"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_and_hex() {
        assert_eq!(
            partial_path(Path::new("a/b.txt")),
            Path::new("a/b.txt.incomplete")
        );
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert!(is_sha256(&"a".repeat(64)));
        assert!(!is_sha256(&"g".repeat(64)));
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(12), "12 B");
    }

    #[test]
    fn write_verified_refuses_a_wrong_hash_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x/out.txt");
        let err =
            write_verified(&dest, &mut &b"hello"[..], &"0".repeat(64), "test data").unwrap_err();
        assert!(
            format!("{err:#}").contains("sha256 mismatch for test data"),
            "{err:#}"
        );
        assert!(!dest.exists());
        assert!(!partial_path(&dest).exists());
        let good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        write_verified(&dest, &mut &b"hello"[..], good, "test data").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
        assert_eq!(sha256_file(&dest).unwrap(), good);
    }

    #[test]
    fn links_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, "A").unwrap();
        fs::write(&b, "B").unwrap();
        let link = dir.path().join("sub/link");
        link_or_copy(&a, &link).unwrap();
        assert_eq!(fs::read_to_string(&link).unwrap(), "A");
        link_or_copy(&b, &link).unwrap();
        assert_eq!(fs::read_to_string(&link).unwrap(), "B");
        assert!(!partial_path(&link).exists());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn disk_full_names_the_path_and_the_bytes_needed() {
        // /dev/full fails every write with ENOSPC.
        let mut full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let err = full
            .write_all(&[0u8; 4096])
            .and_then(|_| full.flush())
            .unwrap_err();
        let msg = format!(
            "{:#}",
            write_error(err, Path::new("/dev/full"), Some(3 << 20))
        );
        assert!(
            msg.starts_with("disk full while writing /dev/full: 3145728 more bytes (3.0 MiB)"),
            "{msg}"
        );
    }
}
