//! One file over HTTP into its final place: resumed from a partial file with
//! a `Range` request (also after a dropped connection; `Http::retries`
//! attempts in a row without progress end it), checked against an expected
//! sha256, and written atomically (`<name>.incomplete`, fsync, rename), with
//! its progress on stderr ([`Progress`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::files::{self, hex};
use super::http::{self, Http, Site, StatusContext};
use super::progress::Progress;

/// What the downloaded bytes must hash to.
#[derive(Clone, Copy, Debug)]
pub enum Expect<'a> {
    /// The full sha256, in hex.
    Sha256(&'a str),
    /// The first hex digits of the sha256 (a partial pin).
    Sha256Prefix(&'a str),
    /// Nothing known; the sha256 is only reported.
    Nothing,
}

/// One download.
pub struct Request<'a> {
    pub url: &'a str,
    /// Extra request headers (e.g. `Authorization`).
    pub headers: Vec<(&'static str, String)>,
    /// Final path; `<dest>.incomplete` holds the bytes until they are verified.
    pub dest: &'a Path,
    /// Size announced by the server's metadata, if known.
    pub size: Option<u64>,
    pub expect: Expect<'a>,
    /// Short name for the progress bar.
    pub label: &'a str,
    /// Long name for errors, e.g. "EleutherAI/pythia-70m@main: model.safetensors".
    pub what: &'a str,
    pub site: Site,
}

/// The verified result.
#[derive(Debug)]
pub struct Fetched {
    pub sha256: String,
    pub bytes: u64,
    /// Bytes that were already on disk from an earlier, interrupted run.
    pub resumed_from: u64,
}

/// Downloads `req.url` to `req.dest`. See the module docs.
pub fn fetch(http: &Http, req: &Request) -> Result<Fetched> {
    files::create_parent(req.dest)?;
    let partial = files::partial_path(req.dest);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&partial)
        .with_context(|| format!("opening {}", partial.display()))?;
    let mut have = file
        .metadata()
        .with_context(|| format!("reading {}", partial.display()))?
        .len();
    if req.size.is_some_and(|size| have > size) {
        truncate(&mut file, &partial)?;
        have = 0;
    }
    let mut resumed_from = have;
    let mut total = req.size;
    let mut hasher = Sha256::new();
    let mut hashed = 0u64;
    let mut bar = Progress::start(req.label, http::host_of(req.url), total, have);
    let mut failures = 0u32;
    let mut buf = vec![0u8; 1 << 18];

    loop {
        if total.is_some_and(|t| have == t) {
            break;
        }
        let mut headers: Vec<(&str, String)> =
            req.headers.iter().map(|(k, v)| (*k, v.clone())).collect();
        if have > 0 {
            headers.push(("Range", format!("bytes={have}-")));
        }
        let response = match http.get(req.url, &headers) {
            Ok(r) => r,
            Err(e) if http::is_transient(&e) && failures < http.retries => {
                failures += 1;
                bar.note(&format!(
                    "{}: {e}; retrying ({failures}/{})",
                    req.label, http.retries
                ));
                http.pause(failures);
                continue;
            }
            Err(e) => return Err(http::transport_error(e, req.url, req.site)),
        };
        let status = response.status().as_u16();
        match status {
            206 => {
                let range =
                    http::header(response.headers(), "content-range").and_then(parse_content_range);
                match range {
                    Some((start, full)) if start == have => {
                        if total.is_none() {
                            total = full;
                        }
                    }
                    _ => {
                        // Not the range asked for: start over.
                        truncate(&mut file, &partial)?;
                        (have, hashed, hasher, resumed_from) = (0, 0, Sha256::new(), 0);
                        failures += 1;
                        if failures > http.retries {
                            bail!(
                                "{}: the server answered a range request with the wrong range",
                                req.what
                            );
                        }
                        continue;
                    }
                }
            }
            200 => {
                if have > 0 {
                    // The server ignored the range: the body is the whole file.
                    truncate(&mut file, &partial)?;
                    (have, hashed, hasher, resumed_from) = (0, 0, Sha256::new(), 0);
                }
                if total.is_none() {
                    total = response.body().content_length();
                }
            }
            416 if have > 0 => {
                // Our partial file is not a prefix the server can continue.
                truncate(&mut file, &partial)?;
                (have, hashed, hasher, resumed_from) = (0, 0, Sha256::new(), 0);
                failures += 1;
                if failures > http.retries {
                    bail!("{}: the server refused to resume (HTTP 416)", req.what);
                }
                continue;
            }
            s if http::is_transient_status(s) && failures < http.retries => {
                failures += 1;
                bar.note(&format!(
                    "{}: HTTP {s}; retrying ({failures}/{})",
                    req.label, http.retries
                ));
                http.pause(failures);
                continue;
            }
            s => {
                let cx = StatusContext {
                    what: req.what,
                    not_found_hint: "",
                    site: req.site,
                    had_token: req
                        .headers
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case("authorization")),
                };
                return Err(http::status_error(s, response.headers(), &cx));
            }
        }
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(have);
        if hashed != have {
            hasher = Sha256::new();
            files::hash_prefix(&mut file, have, &mut hasher)
                .with_context(|| format!("reading {}", partial.display()))?;
        }
        file.seek(SeekFrom::Start(have))
            .with_context(|| format!("seeking in {}", partial.display()))?;
        let mut body = response.into_body().into_reader();
        let before = have;
        let outcome = copy_body(
            &mut body,
            &mut file,
            &mut buf,
            &mut hasher,
            &mut have,
            &mut bar,
        );
        hashed = have;
        if have > before {
            // Only attempts that make no progress at all use up the retries.
            failures = 0;
        }
        match outcome {
            Ok(()) => {}
            Err(CopyError::Write(err)) => {
                return Err(files::write_error(
                    err,
                    &partial,
                    total.map(|t| t.saturating_sub(have)),
                ))
            }
            Err(CopyError::Read(err)) if http::is_transient_io(&err) && failures < http.retries => {
                failures += 1;
                bar.note(&format!(
                    "{}: connection lost after {} ({err}); resuming ({failures}/{})",
                    req.label,
                    spedec_report::format_bytes(have),
                    http.retries
                ));
                http.pause(failures);
                continue;
            }
            Err(CopyError::Read(err)) => {
                bail!(
                    "{}: download interrupted after {} ({err}); run the command again to resume",
                    req.what,
                    spedec_report::format_bytes(have)
                )
            }
        }
        match total {
            Some(t) if have < t => {
                // The body ended early without an error.
                failures += 1;
                if failures > http.retries {
                    bail!("{}: the server sent only {have} of {t} bytes; run the command again to resume", req.what);
                }
                continue;
            }
            Some(t) if have > t => {
                truncate(&mut file, &partial)?;
                bail!(
                    "{}: the server sent {have} bytes, more than the {t} announced",
                    req.what
                );
            }
            _ => break,
        }
    }
    bar.finish();

    if hashed != have {
        hasher = Sha256::new();
        files::hash_prefix(&mut file, have, &mut hasher)
            .with_context(|| format!("reading {}", partial.display()))?;
    }
    let sha256 = hex(&hasher.finalize());
    let ok = match req.expect {
        Expect::Sha256(want) => sha256.eq_ignore_ascii_case(want),
        Expect::Sha256Prefix(want) => sha256.starts_with(&want.to_ascii_lowercase()),
        Expect::Nothing => true,
    };
    if !ok {
        drop(file);
        let removed = fs::remove_file(&partial).is_ok();
        let want = match req.expect {
            Expect::Sha256(w) | Expect::Sha256Prefix(w) => w,
            Expect::Nothing => "",
        };
        bail!(
            "sha256 mismatch for {}: expected {want}, got {sha256}; {} {}; run the command again to retry",
            req.what,
            if removed { "removed the downloaded file" } else { "could not remove the downloaded file" },
            partial.display()
        );
    }
    files::commit(file, &partial, req.dest)?;
    Ok(Fetched {
        sha256,
        bytes: have,
        resumed_from,
    })
}

fn truncate(file: &mut File, path: &Path) -> Result<()> {
    file.set_len(0)
        .with_context(|| format!("truncating {}", path.display()))
}

/// `bytes 100-199/1000` -> (100, Some(1000)); `bytes 100-199/*` -> (100, None).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let spec = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, full) = spec.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let full = if full.trim() == "*" {
        None
    } else {
        Some(full.trim().parse().ok()?)
    };
    Some((start.trim().parse().ok()?, full))
}

/// Why copying a body stopped early.
pub enum CopyError {
    /// The connection failed (retryable; the bytes so far are on disk).
    Read(io::Error),
    /// The disk failed.
    Write(io::Error),
}

/// Copies `body` to `file`, hashing and counting the bytes in `have`.
pub fn copy_body(
    body: &mut dyn Read,
    file: &mut File,
    buf: &mut [u8],
    hasher: &mut Sha256,
    have: &mut u64,
    bar: &mut Progress,
) -> Result<(), CopyError> {
    loop {
        let n = match body.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        file.write_all(&buf[..n]).map_err(CopyError::Write)?;
        hasher.update(&buf[..n]);
        *have += n as u64;
        bar.set_position(*have);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_during_a_download_names_path_and_bytes() {
        let mut full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let mut body = io::repeat(7).take(1 << 20);
        let (mut hasher, mut have, mut buf) = (Sha256::new(), 0u64, vec![0u8; 4096]);
        let mut bar = Progress::silent();
        let total = Some(5_000_000);
        let err = match copy_body(
            &mut body,
            &mut full,
            &mut buf,
            &mut hasher,
            &mut have,
            &mut bar,
        ) {
            Err(CopyError::Write(e)) => e,
            _ => panic!("writing to /dev/full must fail"),
        };
        let msg =
            files::write_error(err, Path::new("/dev/full"), total.map(|t| t - have)).to_string();
        assert!(
            msg.starts_with("disk full while writing /dev/full: 5000000 more bytes"),
            "{msg}"
        );
    }
}
