//! The HTTP client (blocking `ureq`, rustls) and the translation of transport
//! and status failures into one-line messages that say what to do.

use std::io;
use std::time::Duration;

use ureq::http::{HeaderMap, Response};
use ureq::Body;

/// Describes the site a request goes to, for error messages.
#[derive(Clone, Copy, Debug)]
pub struct Site {
    /// Environment variable that overrides the site's base URL.
    pub endpoint_env: &'static str,
    /// Whether the site takes a Hugging Face token (`HF_TOKEN`).
    pub uses_hf_token: bool,
}

/// The Hugging Face hub.
pub const HUB: Site = Site {
    endpoint_env: "HF_ENDPOINT",
    uses_hf_token: true,
};

/// Two agents: one that follows redirects (file bodies, which the hub serves
/// from a CDN) and one that does not (hub metadata lives on the redirect).
pub struct Http {
    follow: ureq::Agent,
    no_follow: ureq::Agent,
    /// How many times a failed transfer is retried (resuming each time).
    pub retries: u32,
    /// Pause before the first retry; doubled on each further one.
    pub backoff: Duration,
}

impl Http {
    pub fn new(retries: u32, backoff: Duration) -> Self {
        let agent = |redirects: u32| -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .timeout_connect(Some(Duration::from_secs(20)))
                .timeout_per_read(Some(Duration::from_secs(60)))
                .user_agent(concat!("spedec-xtask/", env!("CARGO_PKG_VERSION")))
                .build()
                .into()
        };
        Http {
            follow: agent(10),
            no_follow: agent(0),
            retries,
            backoff,
        }
    }

    /// HEAD without following redirects.
    pub fn head(
        &self,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<Response<Body>, ureq::Error> {
        let mut req = self
            .no_follow
            .head(url)
            .header("Accept-Encoding", "identity");
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        req.call()
    }

    /// GET, following redirects (an `Authorization` header is not sent on to
    /// another host).
    pub fn get(
        &self,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<Response<Body>, ureq::Error> {
        let mut req = self.follow.get(url).header("Accept-Encoding", "identity");
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        req.call()
    }

    /// Pause before retry number `attempt` (1-based).
    pub fn pause(&self, attempt: u32) {
        let factor = 1u32 << attempt.saturating_sub(1).min(6);
        std::thread::sleep(self.backoff.saturating_mul(factor));
    }
}

/// `https://host:port/path` -> `host:port`.
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

/// `host:port` -> `host` (IPv6 literals keep their brackets).
pub fn host_name(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// `https://host:port/path?q` -> `https://host:port` (scheme and authority).
pub fn origin_of(url: &str) -> &str {
    let Some(scheme_end) = url.find("://") else {
        return url;
    };
    let rest = &url[scheme_end + 3..];
    let end = rest
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + 3 + i);
    &url[..end]
}

/// Resolves a `Location` header against the URL that answered with it.
pub fn resolve_location(base: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        let scheme = base.split_once("://").map_or("https", |(s, _)| s);
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{}{location}", origin_of(base))
    } else {
        let path = base.split(['?', '#']).next().unwrap_or(base);
        let dir = path
            .rfind('/')
            .filter(|&i| i >= origin_of(base).len())
            .map_or(path, |i| &path[..i]);
        format!("{dir}/{location}")
    }
}

/// Whether the error means the server could not be reached at all: its name does not resolve,
/// or no connection to it can be made. Retrying that does not help (an offline machine stays
/// offline), so it is never retried.
pub fn is_unreachable(err: &ureq::Error) -> bool {
    match err {
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
        ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Resolve | ureq::Timeout::Connect),
        ureq::Error::Io(e) => is_name_resolution(e) || is_unreachable_io(e),
        _ => false,
    }
}

/// A failed DNS lookup: std reports `getaddrinfo` failures with this message and an
/// uncategorized kind, so the message is what identifies them.
fn is_name_resolution(err: &io::Error) -> bool {
    err.to_string()
        .contains("failed to lookup address information")
}

fn is_unreachable_io(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::NetworkDown
    )
}

/// Whether a failed request or body read is worth retrying: a connection that was made and
/// then failed (reset, timed out while reading, garbled), not one that could not be made.
pub fn is_transient(err: &ureq::Error) -> bool {
    match err {
        _ if is_unreachable(err) => false,
        ureq::Error::Io(e) => is_transient_io(e),
        ureq::Error::Protocol(_) | ureq::Error::Timeout(_) => true,
        _ => false,
    }
}

/// Whether an I/O error while reading a body is worth retrying.
pub fn is_transient_io(err: &io::Error) -> bool {
    !matches!(
        err.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported
    )
}

/// One-line message for a request that got no response.
pub fn transport_error(err: ureq::Error, url: &str, site: Site) -> anyhow::Error {
    let host = host_of(url);
    if is_unreachable(&err) {
        let cause = match &err {
            ureq::Error::Io(e) if is_name_resolution(e) => {
                format!("the name {} does not resolve: {e}", host_name(host))
            }
            ureq::Error::HostNotFound => format!("the name {} does not resolve", host_name(host)),
            other => other.to_string(),
        };
        anyhow::anyhow!(
            "cannot reach {host}; check your network or set {} ({cause})",
            site.endpoint_env
        )
    } else {
        anyhow::anyhow!("request to {url} failed: {err}")
    }
}

/// Whether an HTTP status is worth retrying.
pub fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// A header as a string, if present and valid.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// What was being fetched, for status-error messages.
pub struct StatusContext<'a> {
    /// e.g. "EleutherAI/pythia-70m@main: model.safetensors".
    pub what: &'a str,
    /// Appended to 404 messages, e.g. the list of valid names.
    pub not_found_hint: &'a str,
    pub site: Site,
    /// Whether a token was sent.
    pub had_token: bool,
}

/// One-line message for an unexpected HTTP status. Understands the hub's
/// `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`,
/// `GatedRepo`).
pub fn status_error(status: u16, headers: &HeaderMap, cx: &StatusContext) -> anyhow::Error {
    let what = cx.what;
    let code = header(headers, "x-error-code").unwrap_or("");
    let hint = if cx.not_found_hint.is_empty() {
        String::new()
    } else {
        format!("; {}", cx.not_found_hint)
    };
    let token_hint = if !cx.site.uses_hf_token {
        String::new()
    } else if cx.had_token {
        "; the token from HF_TOKEN was refused: check it is valid and has access".to_string()
    } else {
        "; set HF_TOKEN to a Hugging Face access token (https://huggingface.co/settings/tokens)"
            .to_string()
    };
    match (status, code) {
        (_, "GatedRepo") => anyhow::anyhow!(
            "{what}: the repository is gated (HTTP {status}); accept its terms on the hub{token_hint}"
        ),
        (401 | 404, "RepoNotFound") => anyhow::anyhow!(
            "{what}: repository not found (HTTP {status}; it may also be private){hint}"
        ),
        (404, "RevisionNotFound") => anyhow::anyhow!("{what}: revision not found (HTTP 404){hint}"),
        (404, _) => anyhow::anyhow!("{what}: not found (HTTP 404){hint}"),
        (401, _) => anyhow::anyhow!("{what}: unauthorized (HTTP 401){token_hint}"),
        (403, _) => anyhow::anyhow!("{what}: access denied (HTTP 403){token_hint}"),
        (416, _) => anyhow::anyhow!("{what}: the server refused the byte range (HTTP 416)"),
        (s, _) if is_transient_status(s) => {
            anyhow::anyhow!("{what}: server error (HTTP {s}); try again later")
        }
        (s, _) => anyhow::anyhow!("{what}: unexpected HTTP status {s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("https://huggingface.co/x/y"), "huggingface.co");
        assert_eq!(host_of("http://127.0.0.1:9/a?b"), "127.0.0.1:9");
        assert_eq!(host_of("example.org"), "example.org");
        assert_eq!(origin_of("https://h.co:8/a/b?c"), "https://h.co:8");
        assert_eq!(origin_of("http://h"), "http://h");
    }

    #[test]
    fn locations() {
        let base = "https://hub.io/org/repo/resolve/main/f.json";
        assert_eq!(resolve_location(base, "/api/x"), "https://hub.io/api/x");
        assert_eq!(
            resolve_location(base, "https://cdn.io/y"),
            "https://cdn.io/y"
        );
        assert_eq!(resolve_location(base, "//cdn.io/y"), "https://cdn.io/y");
        assert_eq!(
            resolve_location(base, "g.json"),
            "https://hub.io/org/repo/resolve/main/g.json"
        );
    }

    #[test]
    fn status_messages() {
        let cx = StatusContext {
            what: "org/repo@main: f",
            not_found_hint: "valid: a, b",
            site: HUB,
            had_token: false,
        };
        let none = HeaderMap::new();
        let msg = status_error(404, &none, &cx).to_string();
        assert_eq!(msg, "org/repo@main: f: not found (HTTP 404); valid: a, b");
        let msg = status_error(401, &none, &cx).to_string();
        assert!(msg.contains("set HF_TOKEN"), "{msg}");
        let mut gated = HeaderMap::new();
        gated.insert("x-error-code", "GatedRepo".parse().unwrap());
        assert!(status_error(403, &gated, &cx).to_string().contains("gated"));
    }
}
