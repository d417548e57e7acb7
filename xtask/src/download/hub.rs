//! Files from the Hugging Face hub, kept in the standard HF cache so that
//! other HF tools (Python `huggingface_hub`, `hf-hub`, ...) and this one share
//! downloads:
//!
//! ```text
//! $HF_HUB_CACHE/models--EleutherAI--pythia-70m/
//!   blobs/<etag>                         file contents (etag = sha256 for LFS files)
//!   blobs/<etag>.incomplete              a download in progress (resumed)
//!   refs/main                            commit hash the revision pointed at
//!   snapshots/<commit>/model.safetensors -> ../../blobs/<etag>
//! ```
//!
//! Protocol: `HEAD {endpoint}/{repo}/resolve/{revision}/{file}`, following
//! redirects only on the hub's own origin (not to the CDN), gives
//! `X-Repo-Commit`, `X-Linked-Etag` (or `ETag`) and `X-Linked-Size` (or
//! `Content-Length`); a `GET` of the same URL (following redirects) gives the
//! bytes.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::fetch::{self, Expect};
use super::files;
use super::http::{self, Http, StatusContext, HUB};

/// Where the hub is and where its cache lives.
#[derive(Clone, Debug)]
pub struct Hub {
    /// Base URL without a trailing slash, e.g. `https://huggingface.co`.
    pub endpoint: String,
    /// The hub cache directory (`$HF_HUB_CACHE`).
    pub cache: PathBuf,
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE`: use the cache only.
    pub offline: bool,
}

/// Default hub URL.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

impl Hub {
    /// Reads the settings the Hugging Face tools use: `HF_ENDPOINT`,
    /// `HF_HUB_CACHE` (or `HF_HOME/hub`, `XDG_CACHE_HOME/huggingface/hub`,
    /// `~/.cache/huggingface/hub`), `HF_TOKEN` (or the token file
    /// `HF_TOKEN_PATH` / `HF_HOME/token` that `hf auth login` writes) and
    /// `HF_HUB_OFFLINE`. `env` looks a variable up (non-empty values only).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Hub> {
        let endpoint = env("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            bail!("HF_ENDPOINT must start with http:// or https://, got `{endpoint}`");
        }
        let home = || -> Result<PathBuf> {
            env("HOME")
                .or_else(|| env("USERPROFILE"))
                .map(PathBuf::from)
                .context("cannot find the home directory: set HF_HOME or HF_HUB_CACHE")
        };
        let hf_home = match env("HF_HOME") {
            Some(dir) => PathBuf::from(dir),
            None => match env("XDG_CACHE_HOME") {
                Some(dir) => PathBuf::from(dir).join("huggingface"),
                None => home()?.join(".cache").join("huggingface"),
            },
        };
        let cache = env("HF_HUB_CACHE")
            .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = env("HF_TOKEN")
            .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = env("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        let offline = env("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "on" | "yes" | "true")
        });
        Ok(Hub {
            endpoint,
            cache,
            token,
            offline,
        })
    }

    fn auth_headers(&self) -> Vec<(&'static str, String)> {
        self.token
            .iter()
            .map(|t| ("Authorization", format!("Bearer {t}")))
            .collect()
    }
}

/// Kind of hub repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

/// One file at one revision of a hub repository.
#[derive(Clone, Copy, Debug)]
pub struct HubFile<'a> {
    pub kind: RepoKind,
    /// `org/name`.
    pub repo: &'a str,
    /// Branch, tag or commit hash.
    pub revision: &'a str,
    /// Path inside the repository.
    pub filename: &'a str,
    /// A sha256 pinned by us; checked in addition to the hub's.
    pub pinned_sha256: Option<&'a str>,
    /// Appended to "not found" errors (e.g. the valid names).
    pub not_found_hint: &'a str,
}

impl HubFile<'_> {
    fn what(&self) -> String {
        format!("{}@{}: {}", self.repo, self.revision, self.filename)
    }

    fn url(&self, endpoint: &str) -> String {
        let prefix = match self.kind {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        };
        let revision = self.revision.replace('/', "%2F");
        format!(
            "{endpoint}/{prefix}{}/resolve/{revision}/{}",
            self.repo, self.filename
        )
    }

    /// `models--EleutherAI--pythia-70m`.
    fn folder(&self, cache: &Path) -> PathBuf {
        let kind = match self.kind {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        };
        cache.join(format!("{kind}--{}", self.repo.replace('/', "--")))
    }
}

/// What the hub says about a file.
#[derive(Debug)]
struct Metadata {
    commit: String,
    etag: String,
    size: Option<u64>,
}

/// Why [`get`] found no file: the hub answered that the repository has no such file at this
/// revision (HTTP 404, the repository and revision themselves exist), or the hub could not
/// be asked (offline, unreachable) and the cache does not have it. Callers that probe for one
/// of several layouts tell it from other failures with [`missing`].
#[derive(Debug)]
pub struct Missing {
    pub kind: MissingKind,
    message: String,
}

/// See [`Missing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingKind {
    /// The hub says the file does not exist (HTTP 404 `EntryNotFound`).
    NotFound,
    /// The hub was not asked or not reached, and the cache does not have the file.
    NotCached,
}

impl Missing {
    fn error(kind: MissingKind, message: String) -> anyhow::Error {
        anyhow::Error::new(Missing { kind, message })
    }
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Missing {}

/// Whether `err` (from [`get`]) says the file is missing, and why.
pub fn missing(err: &anyhow::Error) -> Option<MissingKind> {
    err.downcast_ref::<Missing>().map(|m| m.kind)
}

/// How a file was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Downloaded now (resumed from this many bytes).
    Downloaded { resumed_from: u64 },
    /// Already in the HF cache.
    Cached,
    /// Already in the HF cache; the hub could not be asked (offline).
    CachedOffline,
}

/// Result of [`get`].
#[derive(Debug)]
pub struct Got {
    /// `snapshots/<commit>/<filename>` in the cache.
    pub path: PathBuf,
    pub commit: String,
    pub size: u64,
    /// sha256, where known (LFS files and pinned files).
    pub sha256: Option<String>,
    pub source: Source,
}

/// Makes `file` present in the HF cache and returns its snapshot path.
pub fn get(http: &Http, hub: &Hub, file: &HubFile) -> Result<Got> {
    let folder = file.folder(&hub.cache);
    let what = file.what();

    // A commit hash names immutable content: a snapshot entry is final.
    if is_commit_hash(file.revision) {
        if let Some(got) = from_cache(&folder, file, Source::Cached)? {
            return Ok(got);
        }
    }
    if hub.offline {
        return from_cache(&folder, file, Source::CachedOffline)?.ok_or_else(|| {
            Missing::error(
                MissingKind::NotCached,
                format!(
                    "{what}: HF_HUB_OFFLINE is set and the file is not in the cache {}",
                    hub.cache.display()
                ),
            )
        });
    }

    let url = file.url(&hub.endpoint);
    let meta = match head(http, hub, file, &url) {
        Ok(meta) => meta,
        Err(HeadError::Unreachable(err)) => {
            // Like the Python client: without a network, use what is cached.
            return match from_cache(&folder, file, Source::CachedOffline)? {
                Some(got) => {
                    eprintln!("warning: {err:#}; using the cached copy of {what}");
                    Ok(got)
                }
                None => Err(Missing::error(MissingKind::NotCached, format!("{err:#}"))),
            };
        }
        Err(HeadError::Other(err)) => return Err(err),
    };

    let hub_sha = files::is_sha256(&meta.etag).then(|| meta.etag.to_ascii_lowercase());
    if let (Some(pin), Some(sha)) = (file.pinned_sha256, &hub_sha) {
        if !pin.eq_ignore_ascii_case(sha) {
            bail!("{what}: the hub reports sha256 {sha} but {pin} is pinned; refusing to download");
        }
    }
    let expected = file.pinned_sha256.map(str::to_ascii_lowercase).or(hub_sha);

    let blob = folder.join("blobs").join(&meta.etag);
    let mut source = Source::Cached;
    let mut size = fs::metadata(&blob)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    if size.is_some() && meta.size.is_some() && size != meta.size {
        eprintln!(
            "warning: {} has the wrong size; downloading it again",
            blob.display()
        );
        fs::remove_file(&blob).with_context(|| format!("removing {}", blob.display()))?;
        size = None;
    }
    if size.is_some() && file.pinned_sha256.is_some() {
        // Cheap for the small pinned files; large model blobs are trusted as
        // the other HF tools do.
        let got = files::sha256_file(&blob)?;
        if Some(&got) != expected.as_ref() {
            fs::remove_file(&blob).with_context(|| format!("removing {}", blob.display()))?;
            size = None;
        }
    }
    if size.is_none() {
        let label = format!("{}/{}", file.repo, file.filename);
        let req = fetch::Request {
            url: &url,
            headers: hub.auth_headers(),
            dest: &blob,
            size: meta.size,
            expect: expected.as_deref().map_or(Expect::Nothing, Expect::Sha256),
            label: &label,
            what: &what,
            site: HUB,
        };
        let fetched = fetch::fetch(http, &req)?;
        source = Source::Downloaded {
            resumed_from: fetched.resumed_from,
        };
        size = Some(fetched.bytes);
    }

    let path = link_snapshot(&folder, &meta.commit, file.filename, &meta.etag)?;
    if !is_commit_hash(file.revision) {
        let reference = folder.join("refs").join(file.revision);
        if fs::read_to_string(&reference).ok().as_deref() != Some(meta.commit.as_str()) {
            spedec_report::write_atomic(&reference, meta.commit.as_bytes())?;
        }
    }
    Ok(Got {
        path,
        commit: meta.commit,
        size: size.unwrap_or(0),
        sha256: expected,
        source,
    })
}

/// A file of `file.revision` that is already in the cache, if any.
fn from_cache(folder: &Path, file: &HubFile, source: Source) -> Result<Option<Got>> {
    let commit = if is_commit_hash(file.revision) {
        file.revision.to_string()
    } else {
        match fs::read_to_string(folder.join("refs").join(file.revision)) {
            Ok(c) => c.trim().to_string(),
            Err(_) => return Ok(None),
        }
    };
    let path = folder.join("snapshots").join(&commit).join(file.filename);
    let Ok(meta) = fs::metadata(&path) else {
        return Ok(None);
    };
    let mut sha256 = None;
    if let Some(pin) = file.pinned_sha256 {
        let got = files::sha256_file(&path)?;
        if !got.eq_ignore_ascii_case(pin) {
            if source == Source::CachedOffline {
                bail!(
                    "{}: the cached file {} has sha256 {got}, expected {pin}",
                    file.what(),
                    path.display()
                );
            }
            return Ok(None);
        }
        sha256 = Some(got);
    }
    Ok(Some(Got {
        path,
        commit,
        size: meta.len(),
        sha256,
        source,
    }))
}

enum HeadError {
    Unreachable(anyhow::Error),
    Other(anyhow::Error),
}

/// HEAD the resolve URL, following redirects only while they stay on the same
/// origin (renamed repositories), and read the file's metadata from the
/// response (the hub puts it on the redirect to the CDN).
fn head(http: &Http, hub: &Hub, file: &HubFile, url: &str) -> Result<Metadata, HeadError> {
    let headers = hub.auth_headers();
    let mut current = url.to_string();
    let mut failures = 0;
    // Redirects followed; failed attempts count against `http.retries` instead.
    let mut hops = 0;
    loop {
        let response = match http.head(&current, &headers) {
            Ok(r) => r,
            // No name resolution or no connection: fail at once (retrying cannot help).
            Err(e) if http::is_unreachable(&e) => {
                return Err(HeadError::Unreachable(http::transport_error(
                    e, &current, HUB,
                )))
            }
            Err(e) if http::is_transient(&e) && failures < http.retries => {
                failures += 1;
                http.pause(failures);
                continue;
            }
            Err(e) => return Err(HeadError::Other(http::transport_error(e, &current, HUB))),
        };
        let status = response.status().as_u16();
        let h = response.headers();
        if (300..400).contains(&status) {
            if let Some(location) = http::header(h, "location") {
                let target = http::resolve_location(&current, location);
                if http::origin_of(&target) == http::origin_of(&current) {
                    // Still on the hub (e.g. a renamed repo): follow. A redirect
                    // elsewhere is the CDN, and the metadata is on this answer.
                    hops += 1;
                    if hops > MAX_HUB_REDIRECTS {
                        return Err(HeadError::Other(anyhow::anyhow!(
                            "{}: more than {MAX_HUB_REDIRECTS} redirects from {url}",
                            file.what()
                        )));
                    }
                    current = target;
                    continue;
                }
            }
        } else if !(200..300).contains(&status) {
            if http::is_transient_status(status) && failures < http.retries {
                failures += 1;
                http.pause(failures);
                continue;
            }
            let what = file.what();
            let cx = StatusContext {
                what: &what,
                not_found_hint: file.not_found_hint,
                site: HUB,
                had_token: hub.token.is_some(),
            };
            let err = http::status_error(status, h, &cx);
            let code = http::header(h, "x-error-code").unwrap_or("");
            let entry_missing =
                status == 404 && !matches!(code, "RepoNotFound" | "RevisionNotFound" | "GatedRepo");
            return Err(HeadError::Other(if entry_missing {
                Missing::error(MissingKind::NotFound, err.to_string())
            } else {
                err
            }));
        }
        // 2xx, or a redirect to the CDN: the metadata is on this response.
        let missing = |name: &str| {
            HeadError::Other(anyhow::anyhow!(
                "{}: the server's answer has no {name} header; is {} a Hugging Face hub (HF_ENDPOINT)?",
                file.what(),
                hub.endpoint
            ))
        };
        let commit = http::header(h, "x-repo-commit")
            .ok_or_else(|| missing("X-Repo-Commit"))?
            .to_string();
        let etag = http::header(h, "x-linked-etag")
            .or_else(|| http::header(h, "etag"))
            .map(normalize_etag)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| missing("ETag"))?;
        let size = http::header(h, "x-linked-size")
            .or_else(|| http::header(h, "content-length"))
            .and_then(|v| v.parse::<u64>().ok());
        if !is_commit_hash(&commit) || etag.contains(['/', '\\']) || etag.starts_with('.') {
            return Err(HeadError::Other(anyhow::anyhow!(
                "{}: the hub sent a malformed commit or etag ({commit}, {etag})",
                file.what()
            )));
        }
        return Ok(Metadata { commit, etag, size });
    }
}

/// Redirects within the hub's origin that [`head`] follows.
const MAX_HUB_REDIRECTS: u32 = 5;

/// `W/"abc"` -> `abc`.
fn normalize_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// A 40-hex-digit git commit hash.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Creates `snapshots/<commit>/<filename>` -> `../../blobs/<etag>`.
fn link_snapshot(folder: &Path, commit: &str, filename: &str, etag: &str) -> Result<PathBuf> {
    let link = folder.join("snapshots").join(commit).join(filename);
    let depth = filename.split('/').count() + 1;
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push("blobs");
    target.push(etag);
    let already = fs::read_link(&link).is_ok_and(|t| t == target);
    if !already {
        files::link_or_copy(&target, &link)?;
    }
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_conventions() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let hub = Hub::from_env(&vars(&[("HOME", "/home/u")])).unwrap();
        assert_eq!(hub.endpoint, "https://huggingface.co");
        assert_eq!(hub.cache, Path::new("/home/u/.cache/huggingface/hub"));
        assert!(!hub.offline);
        let hub = Hub::from_env(&vars(&[
            ("HF_HOME", "/hf"),
            ("HF_ENDPOINT", "http://m:1/"),
            ("HF_TOKEN", "t"),
        ]))
        .unwrap();
        assert_eq!(hub.cache, Path::new("/hf/hub"));
        assert_eq!(hub.endpoint, "http://m:1");
        assert_eq!(hub.token.as_deref(), Some("t"));
        let hub = Hub::from_env(&vars(&[
            ("HF_HOME", "/hf"),
            ("HF_HUB_CACHE", "/c"),
            ("HF_HUB_OFFLINE", "1"),
        ]))
        .unwrap();
        assert_eq!(hub.cache, Path::new("/c"));
        assert!(hub.offline);
        let hub = Hub::from_env(&vars(&[("XDG_CACHE_HOME", "/x")])).unwrap();
        assert_eq!(hub.cache, Path::new("/x/huggingface/hub"));
        assert!(
            Hub::from_env(&vars(&[("HOME", "/h"), ("HF_ENDPOINT", "huggingface.co")])).is_err()
        );
    }

    #[test]
    fn token_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("token"), "hf_abc\n").unwrap();
        let home = dir.path().to_string_lossy().to_string();
        let hub = Hub::from_env(&|k: &str| (k == "HF_HOME").then(|| home.clone())).unwrap();
        assert_eq!(hub.token.as_deref(), Some("hf_abc"));
    }

    #[test]
    fn urls_and_folders() {
        let f = HubFile {
            kind: RepoKind::Dataset,
            repo: "ggml-org/ci",
            revision: "main",
            filename: "a/b.zip",
            pinned_sha256: None,
            not_found_hint: "",
        };
        assert_eq!(
            f.url("https://h"),
            "https://h/datasets/ggml-org/ci/resolve/main/a/b.zip"
        );
        assert_eq!(
            f.folder(Path::new("/c")),
            Path::new("/c/datasets--ggml-org--ci")
        );
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert!(is_commit_hash("927b3642933080f1b0e811e2f916e14c292992f9"));
    }
}
