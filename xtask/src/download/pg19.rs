//! PG-19 test books from DeepMind's public bucket into
//! `<dest>/datasets/pg19/<id>.txt`, with their sha256 recorded in
//! `SHA256SUMS` beside them (the format of `sha256sum -c`).
//!
//! Book order: the pinned books first (10146, 10321), then the rest of the
//! test split by ascending book id, as listed by the bucket (`metadata.csv`
//! has no split column; Hugging Face's `pg19` loader lists the bucket too).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::fetch::{self, Expect};
use super::files;
use super::http::{self, Http, Site, StatusContext};

/// Environment variable overriding the bucket's host.
pub const ENDPOINT_ENV: &str = "SPEDEC_PG19_ENDPOINT";
/// Default host of the bucket.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

const SITE: Site = Site {
    endpoint_env: ENDPOINT_ENV,
    uses_hf_token: false,
};

/// Where the books are and what they must hash to.
#[derive(Clone, Debug)]
pub struct Spec<'a> {
    /// Host, e.g. `https://storage.googleapis.com` (no trailing slash).
    pub endpoint: String,
    pub bucket: &'a str,
    pub split: &'a str,
    /// Books that always come first, with a pinned sha256 prefix (hex).
    pub pinned: &'a [(u32, &'a str)],
}

/// The real PG-19 test books of data/fixtures/SOURCES.md. Only the first 12
/// hex digits of their sha256 are known, so those are checked.
pub const PINNED: &[(u32, &str)] = &[(10146, "f8dd4334fd8d"), (10321, "fedcb2723c2a")];

impl Spec<'static> {
    pub fn real(endpoint: String) -> Self {
        Spec {
            endpoint,
            bucket: "deepmind-gutenberg",
            split: "test",
            pinned: PINNED,
        }
    }
}

/// `<dest>/datasets/pg19`.
pub fn output_dir(dest: &Path) -> PathBuf {
    dest.join("datasets").join("pg19")
}

/// Downloads `count` books; returns their paths in order.
pub fn download(http: &Http, spec: &Spec, count: usize, dest: &Path) -> Result<Vec<PathBuf>> {
    let ids = choose_books(http, spec, count)?;
    let dir = output_dir(dest);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let manifest_path = dir.join("SHA256SUMS");
    let mut manifest = read_manifest(&manifest_path)?;
    let mut paths = Vec::new();
    for id in ids {
        let name = format!("{id}.txt");
        let path = dir.join(&name);
        let pin = spec
            .pinned
            .iter()
            .find(|(p, _)| *p == id)
            .map(|(_, sha)| *sha);
        let recorded = manifest.get(&name).cloned();
        let what = format!("PG-19 book {id}");
        if path.is_file() {
            let sha = files::sha256_file(&path)?;
            let matches_record = recorded.as_deref().is_none_or(|r| r == sha);
            let matches_pin = pin.is_none_or(|p| sha.starts_with(p));
            if matches_record && matches_pin {
                manifest.insert(name.clone(), sha);
                paths.push(path);
                continue;
            }
            eprintln!(
                "warning: {} does not match its recorded sha256; downloading it again",
                path.display()
            );
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        let url = format!("{}/{}/{}/{name}", spec.endpoint, spec.bucket, spec.split);
        // A sha256 recorded by an earlier run pins the book as well.
        let expect = match (&recorded, pin) {
            (Some(sha), _) => Expect::Sha256(sha),
            (None, Some(prefix)) => Expect::Sha256Prefix(prefix),
            (None, None) => Expect::Nothing,
        };
        let req = fetch::Request {
            url: &url,
            headers: Vec::new(),
            dest: &path,
            size: None,
            expect,
            label: &name,
            what: &what,
            site: SITE,
        };
        let fetched = fetch::fetch(http, &req)?;
        eprintln!(
            "pg19: {name} {} sha256 {}",
            spedec_report::format_bytes(fetched.bytes),
            fetched.sha256
        );
        manifest.insert(name, fetched.sha256);
        write_manifest(&manifest_path, &manifest)?;
        paths.push(path);
    }
    write_manifest(&manifest_path, &manifest)?;
    Ok(paths)
}

/// The pinned books, then the rest of the split by ascending id.
fn choose_books(http: &Http, spec: &Spec, count: usize) -> Result<Vec<u32>> {
    let mut ids: Vec<u32> = spec.pinned.iter().map(|(id, _)| *id).collect();
    if count <= ids.len() {
        ids.truncate(count);
        return Ok(ids);
    }
    let mut listed = list_split(http, spec)?;
    listed.sort_unstable();
    let available = listed.len();
    ids.extend(
        listed
            .into_iter()
            .filter(|id| !spec.pinned.iter().any(|(p, _)| p == id)),
    );
    if ids.len() < count {
        bail!(
            "--pg19-books {count}: the PG-19 {} split lists only {available} books",
            spec.split
        );
    }
    ids.truncate(count);
    Ok(ids)
}

/// Book ids of the split, from the bucket listing (JSON API, paginated).
fn list_split(http: &Http, spec: &Spec) -> Result<Vec<u32>> {
    let base = format!(
        "{}/storage/v1/b/{}/o?prefix={}%2F&fields=items(name),nextPageToken",
        spec.endpoint, spec.bucket, spec.split
    );
    let mut ids = Vec::new();
    let mut token: Option<String> = None;
    for _page in 0..100 {
        let url = match &token {
            Some(t) => format!("{base}&pageToken={}", percent_encode(t)),
            None => base.clone(),
        };
        let mut response = http
            .get(&url, &[])
            .map_err(|e| http::transport_error(e, &url, SITE))?;
        let status = response.status().as_u16();
        if status != 200 {
            let what = format!("listing the PG-19 {} split ({url})", spec.split);
            let cx = StatusContext {
                what: &what,
                not_found_hint: "",
                site: SITE,
                had_token: false,
            };
            return Err(http::status_error(status, response.headers(), &cx));
        }
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the bucket listing {url}"))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing the bucket listing {url}"))?;
        let prefix = format!("{}/", spec.split);
        for item in json["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let id = item["name"]
                .as_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|n| n.strip_suffix(".txt"))
                .and_then(|n| n.parse::<u32>().ok());
            ids.extend(id);
        }
        token = json["nextPageToken"].as_str().map(str::to_string);
        if token.is_none() {
            return Ok(ids);
        }
    }
    bail!("the PG-19 bucket listing did not end after 100 pages")
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `SHA256SUMS`: `<sha256>  <file>` per line.
fn read_manifest(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut map = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match line.split_once("  ") {
            Some((sha, file)) if files::is_sha256(sha) => {
                map.insert(file.trim().to_string(), sha.to_ascii_lowercase());
            }
            _ => bail!(
                "{}: malformed line `{line}` (expected `<sha256>  <file>`)",
                path.display()
            ),
        }
    }
    Ok(map)
}

fn write_manifest(path: &Path, manifest: &BTreeMap<String, String>) -> Result<()> {
    let mut entries: Vec<(&String, &String)> = manifest.iter().collect();
    // Numeric order for `<id>.txt`.
    entries.sort_by_key(|(file, _)| {
        (
            file.trim_end_matches(".txt")
                .parse::<u64>()
                .unwrap_or(u64::MAX),
            file.to_string(),
        )
    });
    let text: String = entries
        .iter()
        .map(|(file, sha)| format!("{sha}  {file}\n"))
        .collect();
    spedec_report::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("SHA256SUMS");
        let mut m = BTreeMap::new();
        m.insert("10321.txt".to_string(), "b".repeat(64));
        m.insert("9.txt".to_string(), "a".repeat(64));
        write_manifest(&path, &m).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("{}  9.txt\n{}  10321.txt\n", "a".repeat(64), "b".repeat(64))
        );
        assert_eq!(read_manifest(&path).unwrap(), m);
        fs::write(&path, "nonsense\n").unwrap();
        assert!(read_manifest(&path).is_err());
    }

    #[test]
    fn encoding() {
        assert_eq!(percent_encode("a+b/c="), "a%2Bb%2Fc%3D");
    }
}
