//! [`write_atomic`]: a file is written under a temporary name in its own folder, flushed and
//! renamed, so readers never see it half-written.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Writes `bytes` to `path` under a temporary name in the same folder (created when missing),
/// flushes it to disk, then renames it over `path`; on failure the temporary file is removed
/// and `path` is left as it was.
///
/// A `path` that is a folder, or that has no file name, is refused before anything is made.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut file = fs::File::create(tmp)?;
        file.write_all(bytes)?;
        Ok(())
    })
}

/// [`write_atomic`] for a file too large to hold in memory: `write` creates and fills the
/// temporary file at the path it is given (streaming as it likes); then it is flushed to
/// disk and renamed over `path`. On any failure the temporary file is removed and `path` is
/// left as it was.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = file_name(path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = write(&tmp).and_then(|()| {
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .and_then(|()| fs::rename(&tmp, path))
            .map_err(anyhow::Error::from)
    });
    if let Err(err) = result {
        let _ = fs::remove_file(&tmp);
        return Err(err.context(format!("cannot write {}", path.display())));
    }
    // Best effort: make the rename itself durable (not every platform opens folders).
    if let Some(dir) = dir {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Checks, before any work, that [`write_atomic`] can later write `path`: it must name a file
/// (not a folder), and its nearest existing ancestor must be a folder in which a file can be
/// created (missing folders below it are created by the write, not now). Nothing is left
/// behind: the probe file is removed at once.
pub fn check_writable(path: &Path) -> Result<()> {
    file_name(path)?;
    let mut dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    while !dir.exists() {
        match dir.parent() {
            Some(up) if !up.as_os_str().is_empty() => dir = up,
            _ => {
                dir = Path::new(".");
                break;
            }
        }
    }
    if !dir.is_dir() {
        bail!(
            "cannot write {}: {} is not a folder",
            path.display(),
            dir.display()
        );
    }
    let probe = dir.join(format!(".spedec-probe.{}.tmp", std::process::id()));
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(file) => {
            drop(file);
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(err) => Err(err).with_context(|| {
            format!(
                "cannot write {}: cannot create a file in {}",
                path.display(),
                dir.display()
            )
        }),
    }
}

/// The file name of `path`, or an error when it names a folder or has none.
fn file_name(path: &Path) -> Result<&std::ffi::OsStr> {
    if path.is_dir() {
        bail!(
            "cannot write {}: it is a folder; expected a file path",
            path.display()
        );
    }
    path.file_name()
        .with_context(|| format!("cannot write {}: expected a file path", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_atomic(&path, b"old").unwrap();
        // A folder in the way of the rename.
        let blocked = dir.path().join("blocked");
        fs::create_dir_all(blocked.join("inner")).unwrap();
        let err = write_atomic(&blocked, b"new").unwrap_err();
        assert!(
            format!("{err:#}").contains("blocked: it is a folder; expected a file path"),
            "{err:#}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_folder_where_no_file_can_be_made_is_named_early_and_late() {
        // Nobody, root included, creates files in /proc.
        let err = check_writable(Path::new("/proc/spedec-no/out.json")).unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot create a file in /proc"),
            "{err:#}"
        );
        let err = write_atomic(Path::new("/proc/out.json"), b"x").unwrap_err();
        assert!(
            format!("{err:#}").starts_with("cannot write /proc/out.json"),
            "{err:#}"
        );
    }

    #[test]
    fn check_writable_refuses_folders_and_files_in_the_way_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        check_writable(&dir.path().join("out.json")).unwrap();
        check_writable(&dir.path().join("no/such/dir/out.json")).unwrap();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no probe left"
        );
        let err = check_writable(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("it is a folder"), "{err:#}");
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        let err = check_writable(&file.join("out.json")).unwrap_err();
        assert!(format!("{err:#}").contains("is not a folder"), "{err:#}");
        check_writable(Path::new("relative-out.json")).unwrap();
    }
}
