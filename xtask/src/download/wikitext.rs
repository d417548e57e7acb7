//! WikiText-2 (raw) test split: the official `wikitext-2-raw-v1.zip`, fetched
//! from a pinned hub mirror into the HF cache, checked against its pinned
//! sha256, and `wiki.test.raw` extracted and checked against its own pin. The repository
//! commits the same `wiki.test.raw` (data/fixtures/wikitext-2-raw/); when its sha256 matches
//! the pin it is copied instead, with no network access.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::files;
use super::http::Http;
use super::hub::{self, Hub, HubFile, RepoKind};

/// Where the zip comes from and what it must contain.
#[derive(Clone, Copy, Debug)]
pub struct Spec<'a> {
    /// Hub dataset repository holding the zip.
    pub repo: &'a str,
    /// Pinned commit of that repository.
    pub revision: &'a str,
    pub zip_name: &'a str,
    pub zip_sha256: &'a str,
    /// Path of the test split inside the zip.
    pub member: &'a str,
    pub raw_sha256: &'a str,
    /// A local copy of the test split to use instead of the zip when its sha256 is
    /// `raw_sha256`.
    pub fixture: Option<&'a str>,
}

/// The real source (see data/fixtures/SOURCES.md).
pub const SPEC: Spec<'static> = Spec {
    repo: "ggml-org/ci",
    revision: "927b3642933080f1b0e811e2f916e14c292992f9",
    zip_name: "wikitext-2-raw-v1.zip",
    zip_sha256: "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11",
    member: "wikitext-2-raw/wiki.test.raw",
    raw_sha256: "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08",
    fixture: Some(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/fixtures/wikitext-2-raw/wiki.test.raw"
    )),
};

/// `<dest>/datasets/wikitext-2-raw/wiki.test.raw`.
pub fn output_path(dest: &Path) -> PathBuf {
    dest.join("datasets")
        .join("wikitext-2-raw")
        .join("wiki.test.raw")
}

/// Makes `wiki.test.raw` present and verified under `dest`; returns its path.
pub fn download(http: &Http, hub: &Hub, spec: &Spec, dest: &Path) -> Result<PathBuf> {
    let out = output_path(dest);
    if out.is_file() && files::sha256_file(&out)? == spec.raw_sha256 {
        eprintln!("wikitext-2: {} is present (sha256 ok)", out.display());
        return Ok(out);
    }
    if let Some(fixture) = committed_copy(spec)? {
        let mut source =
            File::open(&fixture).with_context(|| format!("opening {}", fixture.display()))?;
        let what = format!("the committed copy {}", fixture.display());
        files::write_verified(&out, &mut source, spec.raw_sha256, &what)?;
        eprintln!(
            "wikitext-2: copied {} from {} (sha256 matches the pin; nothing downloaded)",
            out.display(),
            fixture.display()
        );
        return Ok(out);
    }
    let file = HubFile {
        kind: RepoKind::Dataset,
        repo: spec.repo,
        revision: spec.revision,
        filename: spec.zip_name,
        pinned_sha256: Some(spec.zip_sha256),
        not_found_hint: "the pinned WikiText-2 mirror is gone; see data/fixtures/SOURCES.md",
    };
    let got = hub::get(http, hub, &file)?;
    let zip = File::open(&got.path).with_context(|| format!("opening {}", got.path.display()))?;
    let mut archive = zip::ZipArchive::new(zip)
        .with_context(|| format!("reading the zip {}", got.path.display()))?;
    let mut member = archive
        .by_name(spec.member)
        .with_context(|| format!("{} has no {}", got.path.display(), spec.member))?;
    let what = format!("{} (from {})", spec.member, spec.zip_name);
    files::write_verified(&out, &mut member, spec.raw_sha256, &what)?;
    eprintln!("wikitext-2: extracted {} (sha256 ok)", out.display());
    Ok(out)
}

/// The spec's local copy of the test split, if it exists and has the pinned sha256.
pub fn committed_copy(spec: &Spec) -> Result<Option<PathBuf>> {
    let Some(path) = spec.fixture.map(PathBuf::from) else {
        return Ok(None);
    };
    if !path.is_file() || files::sha256_file(&path)? != spec.raw_sha256 {
        return Ok(None);
    }
    Ok(Some(std::fs::canonicalize(&path).unwrap_or(path)))
}
