//! Download tests against a hub-like HTTP server on 127.0.0.1 (no network).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::files::{hex, partial_path};
use super::http::Http;
use super::hub::Hub;
use super::{execute, pg19, wikitext, Plan};

#[path = "../../tests/support/hub_server.rs"]
pub(super) mod hub_server;
use hub_server::{Route, Server};

pub(super) const COMMIT: &str = "4c4fb9bd1c2b7ca2ec7c2e2f3cbe6ae1b1b1b1b1";
pub(super) const REPO: &str = "EleutherAI/pythia-70m";

pub(super) fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub(super) fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Deterministic bytes standing in for a safetensors file.
fn weights(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub(super) fn header(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

/// A plain (non-LFS) file: 200 with the git etag.
pub(super) fn serve_plain(server: &Server, repo: &str, rev: &str, name: &str, body: Vec<u8>) {
    let etag = format!("\"{}\"", &sha256(&body)[..40]);
    server.route(
        &format!("/{repo}/resolve/{rev}/{name}"),
        Route::file(
            body,
            vec![header("X-Repo-Commit", COMMIT), header("ETag", etag)],
        ),
    );
}

/// An LFS file like the hub serves it: the resolve URL redirects to a CDN
/// URL on another origin; the redirect carries X-Linked-Etag (the sha256) and
/// X-Linked-Size.
pub(super) fn serve_lfs(
    server: &Server,
    path: &str,
    commit: &str,
    sha: &str,
    size: usize,
    cdn: Route,
) {
    let cdn_path = format!("/cdn/{sha}");
    server.route(
        path,
        Route::Status {
            code: 302,
            headers: vec![
                header("Location", format!("{}{cdn_path}", server.cdn_base)),
                header("X-Repo-Commit", commit),
                header("X-Linked-Etag", format!("\"{sha}\"")),
                header("X-Linked-Size", size.to_string()),
                header("ETag", "\"redirect-etag\""),
            ],
        },
    );
    server.route(&cdn_path, cdn);
}

struct Model {
    weights: Vec<u8>,
    sha: String,
}

/// Serves config.json, model.safetensors (LFS, optionally altered) and tokenizer.json.
fn serve_model(server: &Server, rev: &str, cdn: impl FnOnce(Vec<u8>) -> Route) -> Model {
    let w = weights(300_000);
    let sha = sha256(&w);
    serve_plain(
        server,
        REPO,
        rev,
        "config.json",
        fixture("tiny-model/config.json"),
    );
    serve_plain(
        server,
        REPO,
        rev,
        "tokenizer.json",
        fixture("tiny-model/tokenizer.json"),
    );
    let path = format!("/{REPO}/resolve/{rev}/model.safetensors");
    serve_lfs(server, &path, COMMIT, &sha, w.len(), cdn(w.clone()));
    Model { weights: w, sha }
}

pub(super) fn plan(server_base: &str, dir: &Path) -> Plan {
    let hub = Hub {
        endpoint: server_base.to_string(),
        cache: dir.join("hf/hub"),
        token: None,
        offline: false,
    };
    Plan {
        models: vec!["pythia-70m".to_string()],
        revision: "main".to_string(),
        wikitext: false,
        pg19_books: None,
        dest: dir.join("data"),
        hub: hub.clone(),
        wikitext_hub: hub,
        wikitext_spec: wikitext::SPEC,
        pg19_spec: pg19::Spec::real(server_base.to_string()),
        http: Http::new(3, Duration::from_millis(5)),
    }
}

pub(super) fn model_cache(dir: &Path) -> PathBuf {
    dir.join("hf/hub/models--EleutherAI--pythia-70m")
}

/// Every path under `dir` (recursively) whose name ends with `.incomplete`.
pub(super) fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".incomplete") {
                found.push(p);
            }
        }
    }
    found
}

pub(super) fn err_text(result: anyhow::Result<Vec<String>>) -> String {
    format!("{:#}", result.expect_err("the download must fail"))
}

#[test]
fn a_model_lands_in_the_hf_cache_and_is_linked_into_data_models() {
    let server = Server::start();
    let model = serve_model(&server, "main", |w| Route::file(w, vec![]));
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(&server.base, dir.path());

    let lines = execute(&plan).unwrap();
    assert_eq!(
        lines,
        vec![format!(
            "model    {}",
            dir.path().join("data/models/pythia-70m").display()
        )]
    );

    let cache = model_cache(dir.path());
    assert_eq!(fs::read_to_string(cache.join("refs/main")).unwrap(), COMMIT);
    assert_eq!(
        fs::read(cache.join("blobs").join(&model.sha)).unwrap(),
        model.weights
    );
    let snap = cache
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors");
    assert_eq!(
        fs::read_link(&snap).unwrap(),
        Path::new("../../blobs").join(&model.sha)
    );
    for (name, bytes) in [
        ("config.json", fixture("tiny-model/config.json")),
        ("model.safetensors", model.weights.clone()),
        ("tokenizer.json", fixture("tiny-model/tokenizer.json")),
    ] {
        let link = dir.path().join("data/models/pythia-70m").join(name);
        let is_link = fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink();
        assert!(is_link || !cfg!(unix), "{name} must be a symlink");
        assert_eq!(fs::read(&link).unwrap(), bytes, "{name}");
    }
    assert!(leftovers(dir.path()).is_empty());
    // Authorization is never sent without a token.
    assert!(server.log().iter().all(|l| l.authorization.is_none()));

    // A second run asks the hub (HEAD) but downloads nothing.
    let gets = server.requests("GET", "/").len();
    execute(&plan).unwrap();
    assert_eq!(server.requests("GET", "/").len(), gets);
}

#[test]
fn redirects_on_the_hub_itself_are_followed_for_the_metadata() {
    let server = Server::start();
    let model = serve_model(&server, "main", |w| Route::file(w, vec![]));
    // A renamed repository: the hub answers with a redirect on its own origin.
    let old = "/EleutherAI/pythia-70m-old/resolve/main/model.safetensors";
    let location = format!("{}/{REPO}/resolve/main/model.safetensors", server.base);
    server.route(
        old,
        Route::Status {
            code: 307,
            headers: vec![header("Location", location)],
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new(0, Duration::ZERO);
    let plan = plan(&server.base, dir.path());
    let file = super::hub::HubFile {
        kind: super::hub::RepoKind::Model,
        repo: "EleutherAI/pythia-70m-old",
        revision: "main",
        filename: "model.safetensors",
        pinned_sha256: None,
        not_found_hint: "",
    };
    let got = super::hub::get(&http, &plan.hub, &file).unwrap();
    assert_eq!(got.sha256.as_deref(), Some(model.sha.as_str()));
    assert_eq!(fs::read(&got.path).unwrap(), model.weights);
    let heads: Vec<_> = server
        .log()
        .into_iter()
        .filter(|l| l.method == "HEAD")
        .map(|l| l.target)
        .collect();
    assert_eq!(
        heads,
        vec![
            old.to_string(),
            format!("/{REPO}/resolve/main/model.safetensors")
        ]
    );
}

#[cfg(unix)]
#[test]
fn files_another_hf_tool_downloaded_are_reused() {
    let server = Server::start();
    let model = serve_model(&server, "main", |w| Route::file(w, vec![]));
    let dir = tempfile::tempdir().unwrap();
    // The layout huggingface_hub (Python) leaves behind.
    let cache = model_cache(dir.path());
    fs::create_dir_all(cache.join("blobs")).unwrap();
    fs::create_dir_all(cache.join("snapshots").join(COMMIT)).unwrap();
    fs::create_dir_all(cache.join("refs")).unwrap();
    fs::write(cache.join("blobs").join(&model.sha), &model.weights).unwrap();
    std::os::unix::fs::symlink(
        Path::new("../../blobs").join(&model.sha),
        cache
            .join("snapshots")
            .join(COMMIT)
            .join("model.safetensors"),
    )
    .unwrap();
    fs::write(cache.join("refs/main"), COMMIT).unwrap();

    execute(&plan(&server.base, dir.path())).unwrap();
    assert!(
        server.requests("GET", "/cdn/").is_empty(),
        "the cached weights must not be fetched again"
    );
    let link = dir.path().join("data/models/pythia-70m/model.safetensors");
    assert_eq!(fs::read(link).unwrap(), model.weights);
}

#[test]
fn a_corrupted_file_is_refused_and_nothing_is_left_under_its_name() {
    let server = Server::start();
    let model = serve_model(&server, "main", |mut w| {
        w[1234] ^= 0xff;
        Route::file(w, vec![])
    });
    let dir = tempfile::tempdir().unwrap();
    let msg = err_text(execute(&plan(&server.base, dir.path())));
    assert!(
        msg.contains("sha256 mismatch for EleutherAI/pythia-70m@main: model.safetensors"),
        "{msg}"
    );
    assert!(msg.contains(&format!("expected {}", model.sha)), "{msg}");
    assert!(msg.contains("removed the downloaded file"), "{msg}");
    let cache = model_cache(dir.path());
    assert!(!cache.join("blobs").join(&model.sha).exists());
    assert!(fs::symlink_metadata(
        cache
            .join("snapshots")
            .join(COMMIT)
            .join("model.safetensors")
    )
    .is_err());
    assert!(
        fs::symlink_metadata(dir.path().join("data/models/pythia-70m/model.safetensors")).is_err()
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let server = Server::start();
    let model = serve_model(&server, "main", |w| {
        Route::file(w, vec![]).dropping(100_000, 1)
    });
    let dir = tempfile::tempdir().unwrap();
    execute(&plan(&server.base, dir.path())).unwrap();

    let gets = server.requests("GET", "/cdn/");
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[1].range.as_deref(), Some("bytes=100000-"));
    let blob = model_cache(dir.path()).join("blobs").join(&model.sha);
    assert_eq!(fs::read(blob).unwrap(), model.weights);
}

#[test]
fn repeated_drops_that_make_progress_still_complete() {
    let server = Server::start();
    // Five drops with three retries: each attempt gets 40 kB further.
    let model = serve_model(&server, "main", |w| {
        Route::file(w, vec![]).dropping(40_000, 5)
    });
    let dir = tempfile::tempdir().unwrap();
    execute(&plan(&server.base, dir.path())).unwrap();
    let ranges: Vec<_> = server
        .requests("GET", "/cdn/")
        .into_iter()
        .map(|l| l.range)
        .collect();
    assert_eq!(ranges.len(), 6);
    assert_eq!(ranges[5].as_deref(), Some("bytes=200000-"));
    let blob = model_cache(dir.path()).join("blobs").join(&model.sha);
    assert_eq!(fs::read(blob).unwrap(), model.weights);
}

#[test]
fn a_connection_that_never_delivers_gives_up_and_keeps_the_partial_file() {
    let server = Server::start();
    let model = serve_model(&server, "main", |w| {
        Route::file(w, vec![]).dropping(0, 1000)
    });
    let dir = tempfile::tempdir().unwrap();
    let blob = model_cache(dir.path()).join("blobs").join(&model.sha);
    fs::create_dir_all(blob.parent().unwrap()).unwrap();
    fs::write(partial_path(&blob), &model.weights[..1000]).unwrap();
    let msg = err_text(execute(&plan(&server.base, dir.path())));
    assert!(
        msg.starts_with(
            "EleutherAI/pythia-70m@main: model.safetensors: download interrupted after 1000 B"
        ),
        "{msg}"
    );
    assert!(msg.ends_with("run the command again to resume"), "{msg}");
    assert_eq!(
        server.requests("GET", "/cdn/").len(),
        4,
        "1 try + 3 retries"
    );
    assert_eq!(
        fs::read(partial_path(&blob)).unwrap(),
        &model.weights[..1000]
    );
    assert!(!blob.exists());
}

#[test]
fn a_partial_file_from_a_killed_run_is_resumed() {
    let server = Server::start();
    let model = serve_model(&server, "main", |w| Route::file(w, vec![]));
    let dir = tempfile::tempdir().unwrap();
    let blob = model_cache(dir.path()).join("blobs").join(&model.sha);
    fs::create_dir_all(blob.parent().unwrap()).unwrap();
    fs::write(partial_path(&blob), &model.weights[..123_457]).unwrap();

    execute(&plan(&server.base, dir.path())).unwrap();
    let gets = server.requests("GET", "/cdn/");
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].range.as_deref(), Some("bytes=123457-"));
    assert_eq!(fs::read(&blob).unwrap(), model.weights);
    assert!(!partial_path(&blob).exists());
}

#[test]
fn a_corrupt_partial_file_is_caught_by_the_hash_and_removed() {
    let server = Server::start();
    let model = serve_model(&server, "main", |w| Route::file(w, vec![]));
    let dir = tempfile::tempdir().unwrap();
    let blob = model_cache(dir.path()).join("blobs").join(&model.sha);
    fs::create_dir_all(blob.parent().unwrap()).unwrap();
    fs::write(partial_path(&blob), vec![0u8; 5000]).unwrap();

    let msg = err_text(execute(&plan(&server.base, dir.path())));
    assert!(msg.contains("sha256 mismatch"), "{msg}");
    assert!(!partial_path(&blob).exists() && !blob.exists());
    // The next run starts from scratch and succeeds.
    execute(&plan(&server.base, dir.path())).unwrap();
    assert_eq!(fs::read(&blob).unwrap(), model.weights);
}

#[test]
fn a_missing_file_names_model_revision_and_file_and_the_valid_names() {
    let server = Server::start();
    serve_plain(
        &server,
        REPO,
        "step1000",
        "config.json",
        fixture("tiny-model/config.json"),
    );
    server.route(
        &format!("/{REPO}/resolve/step1000/model.safetensors"),
        Route::Status {
            code: 404,
            headers: vec![
                header("X-Error-Code", "EntryNotFound"),
                header("X-Repo-Commit", COMMIT),
            ],
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan(&server.base, dir.path());
    plan.revision = "step1000".to_string();
    let msg = err_text(execute(&plan));
    assert!(
        msg.starts_with("EleutherAI/pythia-70m@step1000: model.safetensors: not found (HTTP 404)"),
        "{msg}"
    );
    assert!(msg.contains("valid revisions: main, step0"), "{msg}");
    assert!(msg.contains("pythia-2.8b-deduped"), "{msg}");
    assert!(!dir
        .path()
        .join("data/models/pythia-70m@step1000/model.safetensors")
        .exists());
}

#[test]
fn unauthorized_says_to_set_hf_token_and_the_token_is_sent() {
    let server = Server::start();
    for (name, body) in [
        ("config.json", fixture("tiny-model/config.json")),
        ("model.safetensors", weights(1000)),
        ("tokenizer.json", fixture("tiny-model/tokenizer.json")),
    ] {
        let etag = format!("\"{}\"", sha256(&body));
        let route = Route::file(
            body,
            vec![
                header("X-Repo-Commit", COMMIT),
                header("X-Linked-Etag", etag),
            ],
        );
        server.route(
            &format!("/{REPO}/resolve/main/{name}"),
            route.requiring("Bearer hf_secret"),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan(&server.base, dir.path());
    let msg = err_text(execute(&plan));
    assert!(
        msg.starts_with(
            "EleutherAI/pythia-70m@main: config.json: unauthorized (HTTP 401); set HF_TOKEN"
        ),
        "{msg}"
    );

    plan.hub.token = Some("hf_wrong".to_string());
    let msg = err_text(execute(&plan));
    assert!(msg.contains("the token from HF_TOKEN was refused"), "{msg}");

    plan.hub.token = Some("hf_secret".to_string());
    execute(&plan).unwrap();
    let last = server.log().pop().unwrap();
    assert_eq!(last.authorization.as_deref(), Some("Bearer hf_secret"));
}

fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A plan whose HTTP client retries 5 times with a 1 s backoff (31 s of pauses in all).
fn patient_plan(endpoint: &str, dir: &Path) -> Plan {
    let mut plan = plan(endpoint, dir);
    plan.http = Http::new(5, Duration::from_secs(1));
    plan
}

#[test]
fn an_unreachable_hub_fails_at_once_whatever_the_retries() {
    let dir = tempfile::tempdir().unwrap();
    // Connection refused (an unused loopback port) and a name that does not resolve (the
    // reserved .invalid domain): retrying cannot help, so neither is retried.
    for (endpoint, cause) in [
        (dead_endpoint(), "Connection refused"),
        (
            "http://nonexistent.invalid".to_string(),
            "the name nonexistent.invalid does not resolve",
        ),
    ] {
        let start = std::time::Instant::now();
        let msg = err_text(execute(&patient_plan(&endpoint, dir.path())));
        let host = endpoint.trim_start_matches("http://");
        assert!(
            msg.starts_with(&format!(
                "cannot reach {host}; check your network or set HF_ENDPOINT ("
            )),
            "{msg}"
        );
        assert!(msg.contains(cause), "{msg}");
        assert!(!msg.contains("redirect"), "{msg}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{endpoint}: {:?}",
            start.elapsed()
        );
    }
    assert!(leftovers(dir.path()).is_empty());
}

/// Answers HEAD and GET of the model's config.json with `code` and `headers`; returns the path.
fn config_answers(server: &Server, code: u16, headers: Vec<(String, String)>) -> String {
    let path = format!("/{REPO}/resolve/main/config.json");
    server.route(&path, Route::Status { code, headers });
    path
}

#[test]
fn server_errors_use_every_retry_and_then_say_so() {
    let server = Server::start();
    let path = config_answers(&server, 503, vec![]);
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan(&server.base, dir.path());
    // More retries than redirects are followed: the retries are not counted as redirects.
    plan.http = Http::new(7, Duration::from_millis(1));
    let msg = err_text(execute(&plan));
    assert_eq!(
        msg,
        "EleutherAI/pythia-70m@main: config.json: server error (HTTP 503); try again later"
    );
    assert_eq!(server.requests("HEAD", &path).len(), 8, "1 try + 7 retries");
}

#[test]
fn a_redirect_loop_on_the_hub_is_cut_short() {
    let server = Server::start();
    let location = format!("/{REPO}/resolve/main/config.json");
    let path = config_answers(&server, 307, vec![header("Location", location)]);
    let dir = tempfile::tempdir().unwrap();
    let msg = err_text(execute(&plan(&server.base, dir.path())));
    assert!(
        msg.starts_with("EleutherAI/pythia-70m@main: config.json: more than 5 redirects from "),
        "{msg}"
    );
    assert_eq!(server.requests("HEAD", &path).len(), 6);
}

#[test]
fn without_a_network_the_cache_is_used() {
    let server = Server::start();
    let model = serve_model(&server, "main", |w| Route::file(w, vec![]));
    let dir = tempfile::tempdir().unwrap();
    execute(&plan(&server.base, dir.path())).unwrap();
    fs::remove_dir_all(dir.path().join("data")).unwrap();

    // Hub unreachable: fall back to the cache, like the Python client.
    execute(&plan(&dead_endpoint(), dir.path())).unwrap();
    // HF_HUB_OFFLINE: no request at all.
    let requests = server.log().len();
    let mut offline = plan(&server.base, dir.path());
    offline.hub.offline = true;
    execute(&offline).unwrap();
    assert_eq!(server.log().len(), requests);
    let link = dir.path().join("data/models/pythia-70m/model.safetensors");
    assert_eq!(fs::read(link).unwrap(), model.weights);
    // ...and a revision that was never downloaded is reported as missing.
    offline.revision = "step1000".to_string();
    let msg = err_text(execute(&offline));
    assert!(
        msg.contains("HF_HUB_OFFLINE is set and the file is not in the cache"),
        "{msg}"
    );
}

/// A deflated zip holding `members`.
fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// Serves `zip` where the pinned WikiText-2 mirror lives; returns a spec
/// pinning the zip's own sha256 (the real member pin is kept).
fn serve_wikitext(server: &Server, zip: Vec<u8>) -> wikitext::Spec<'static> {
    let spec = wikitext::SPEC;
    let sha = sha256(&zip);
    let path = format!(
        "/datasets/{}/resolve/{}/{}",
        spec.repo, spec.revision, spec.zip_name
    );
    let len = zip.len();
    serve_lfs(
        server,
        &path,
        spec.revision,
        &sha,
        len,
        Route::file(zip, vec![]),
    );
    wikitext::Spec {
        zip_sha256: leak(sha),
        fixture: None,
        ..spec
    }
}

fn real_wiki_test_raw() -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/wikitext-2-raw/wiki.test.raw");
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn wikitext_is_extracted_and_matches_the_real_pin() {
    let raw = real_wiki_test_raw();
    let server = Server::start();
    let zip = zip_of(&[
        ("wikitext-2-raw/wiki.train.raw", b" = decoy = \n"),
        ("wikitext-2-raw/wiki.test.raw", &raw),
    ]);
    let spec = serve_wikitext(&server, zip);
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan(&server.base, dir.path());
    plan.models.clear();
    plan.wikitext = true;
    plan.wikitext_spec = spec;

    let lines = execute(&plan).unwrap();
    let out = dir
        .path()
        .join("data/datasets/wikitext-2-raw/wiki.test.raw");
    assert_eq!(lines, vec![format!("dataset  {}", out.display())]);
    assert_eq!(sha256(&fs::read(&out).unwrap()), wikitext::SPEC.raw_sha256);
    let zip_in_cache = dir
        .path()
        .join("hf/hub/datasets--ggml-org--ci/snapshots")
        .join(spec.revision)
        .join(spec.zip_name);
    assert!(zip_in_cache.is_file());

    // Present and verified: nothing is requested again.
    let requests = server.log().len();
    execute(&plan).unwrap();
    assert_eq!(server.log().len(), requests);
    // Output removed: extracted again from the cached zip (a pinned commit), still no request.
    fs::remove_file(&out).unwrap();
    execute(&plan).unwrap();
    assert_eq!(server.log().len(), requests);
    assert_eq!(sha256(&fs::read(&out).unwrap()), wikitext::SPEC.raw_sha256);
}

#[test]
fn wikitext_with_the_wrong_contents_is_refused() {
    let server = Server::start();
    let zip = zip_of(&[(
        "wikitext-2-raw/wiki.test.raw",
        b" = Not Robert Boulter = \n",
    )]);
    let spec = serve_wikitext(&server, zip);
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan(&server.base, dir.path());
    plan.models.clear();
    plan.wikitext = true;
    plan.wikitext_spec = spec;
    let msg = err_text(execute(&plan));
    assert!(
        msg.starts_with(
            "sha256 mismatch for wikitext-2-raw/wiki.test.raw (from wikitext-2-raw-v1.zip)"
        ),
        "{msg}"
    );
    assert!(msg.contains("the file was removed"), "{msg}");
    assert!(!dir
        .path()
        .join("data/datasets/wikitext-2-raw/wiki.test.raw")
        .exists());
    assert!(leftovers(dir.path()).is_empty());

    // A zip that does not match its pin is refused before extraction.
    plan.wikitext_spec.zip_sha256 =
        "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11";
    let msg = err_text(execute(&plan));
    assert!(
        msg.contains("the hub reports sha256") && msg.contains("is pinned; refusing"),
        "{msg}"
    );
}

#[test]
fn wikitext_comes_from_the_committed_copy_without_a_network() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = patient_plan(&dead_endpoint(), dir.path());
    plan.models.clear();
    plan.wikitext = true;
    plan.wikitext_hub.endpoint = dead_endpoint();
    assert!(plan.wikitext_spec.fixture.is_some());
    let lines = execute(&plan).unwrap();
    let out = dir
        .path()
        .join("data/datasets/wikitext-2-raw/wiki.test.raw");
    assert_eq!(lines, vec![format!("dataset  {}", out.display())]);
    assert_eq!(fs::read(&out).unwrap(), real_wiki_test_raw());
    assert!(
        !dir.path().join("hf").exists(),
        "the hub cache is not touched"
    );
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(
        super::committed_wikitext()
            .unwrap()
            .map(|p| fs::read(p).unwrap()),
        Some(real_wiki_test_raw())
    );
}

#[test]
fn a_committed_copy_with_other_contents_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("wiki.test.raw");
    fs::write(&fake, " = Not Robert Boulter = \n").unwrap();
    let mut plan = plan(&dead_endpoint(), dir.path());
    plan.models.clear();
    plan.wikitext = true;
    plan.wikitext_spec.fixture = Some(leak(fake.display().to_string()));
    let msg = err_text(execute(&plan));
    assert!(msg.starts_with("cannot reach 127.0.0.1:"), "{msg}");
    assert!(!dir
        .path()
        .join("data/datasets/wikitext-2-raw/wiki.test.raw")
        .exists());
}

fn serve_pg19(server: &Server, books: &[(u32, Vec<u8>)]) {
    let mut items = Vec::new();
    for (id, body) in books {
        server.route(
            &format!("/deepmind-gutenberg/test/{id}.txt"),
            Route::file(body.clone(), vec![]),
        );
        items.push(format!("{{\"name\": \"test/{id}.txt\"}}"));
    }
    let json = format!("{{\"items\": [{}]}}", items.join(", "));
    server.route(
        "/storage/v1/b/deepmind-gutenberg/o",
        Route::Text {
            body: json,
            content_type: "application/json".to_string(),
        },
    );
}

fn book(id: u32) -> Vec<u8> {
    format!("Book {id}\n\n").repeat(5000).into_bytes()
}

#[test]
fn pg19_books_are_fetched_in_order_with_a_manifest() {
    let server = Server::start();
    let books: Vec<(u32, Vec<u8>)> = [10146, 30000, 10321, 200, 9999]
        .iter()
        .map(|&id| (id, book(id)))
        .collect();
    serve_pg19(&server, &books);
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan(&server.base, dir.path());
    plan.models.clear();
    let pinned = vec![
        (10146, leak(sha256(&book(10146))[..12].to_string())),
        (10321, leak(sha256(&book(10321))[..12].to_string())),
    ];
    plan.pg19_spec.pinned = Box::leak(pinned.into_boxed_slice());
    plan.pg19_books = Some(4);

    execute(&plan).unwrap();
    let out = dir.path().join("data/datasets/pg19");
    let manifest = fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let expected: String = [200, 9999, 10146, 10321]
        .iter()
        .map(|id| format!("{}  {id}.txt\n", sha256(&book(*id))))
        .collect();
    assert_eq!(manifest, expected);
    for id in [10146, 10321, 200, 9999] {
        assert_eq!(fs::read(out.join(format!("{id}.txt"))).unwrap(), book(id));
    }
    assert!(!out.join("30000.txt").exists());
    assert_eq!(server.requests("GET", "/storage/").len(), 1);

    // Second run: verified against the manifest, nothing downloaded.
    let gets = server.requests("GET", "/deepmind-gutenberg/").len();
    execute(&plan).unwrap();
    assert_eq!(server.requests("GET", "/deepmind-gutenberg/").len(), gets);

    // The default two books need no listing.
    let dir2 = tempfile::tempdir().unwrap();
    let mut two = self::plan(&server.base, dir2.path());
    two.models.clear();
    two.pg19_spec.pinned = plan.pg19_spec.pinned;
    two.pg19_books = Some(2);
    let listings = server.requests("GET", "/storage/").len();
    execute(&two).unwrap();
    assert_eq!(server.requests("GET", "/storage/").len(), listings);
}

#[test]
fn a_pg19_book_not_matching_its_pin_is_refused() {
    let server = Server::start();
    serve_pg19(&server, &[(10146, book(10146)), (10321, book(10321))]);
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan(&server.base, dir.path());
    plan.models.clear();
    plan.pg19_books = Some(2); // real pins: the test books do not match them
    let msg = err_text(execute(&plan));
    assert!(
        msg.contains("sha256 mismatch for PG-19 book 10146: expected f8dd4334fd8d"),
        "{msg}"
    );
    assert!(!dir.path().join("data/datasets/pg19/10146.txt").exists());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn a_missing_pg19_book_is_named() {
    let server = Server::start();
    serve_pg19(&server, &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan(&server.base, dir.path());
    plan.models.clear();
    plan.pg19_books = Some(2);
    let msg = err_text(execute(&plan));
    assert!(
        msg.contains("PG-19 book 10146: not found (HTTP 404)"),
        "{msg}"
    );
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: super::Args,
}

fn plan_from(argv: &[&str], vars: &[(&str, &str)]) -> anyhow::Result<Plan> {
    use clap::Parser;
    let cli = Cli::try_parse_from(std::iter::once("download").chain(argv.iter().copied()))?;
    let env = |k: &str| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    Plan::new(&cli.args, &env)
}

#[test]
fn arguments_and_environment_make_the_plan() {
    let plan = plan_from(&[], &[("HOME", "/h")]).unwrap();
    assert_eq!(plan.models, ["pythia-70m", "pythia-2.8b"]);
    assert_eq!(plan.revision, "main");
    assert!(plan.wikitext);
    assert_eq!(plan.pg19_books, Some(2));
    assert_eq!(plan.dest, Path::new("data"));
    assert_eq!(plan.pg19_spec.endpoint, pg19::DEFAULT_ENDPOINT);
    assert_eq!(plan.wikitext_hub.endpoint, "https://huggingface.co");

    let vars = [
        ("HOME", "/h"),
        ("HF_ENDPOINT", "http://mirror/"),
        ("SPEDEC_PG19_ENDPOINT", "http://books/"),
    ];
    let argv = [
        "--model",
        "none",
        "--data",
        "pg19",
        "--pg19-books",
        "5",
        "--dest",
        "/d",
    ];
    let plan = plan_from(&argv, &vars).unwrap();
    assert!(plan.models.is_empty() && !plan.wikitext);
    assert_eq!(plan.pg19_books, Some(5));
    assert_eq!(plan.pg19_spec.endpoint, "http://books");
    assert_eq!(plan.wikitext_hub.endpoint, "http://mirror");

    let argv = [
        "--model",
        "pythia-70m,EleutherAI/pythia-70m",
        "--data",
        "none",
        "--revision",
        "step512",
    ];
    let plan = plan_from(&argv, &[("HOME", "/h")]).unwrap();
    assert_eq!(plan.models, ["pythia-70m"]);
    assert_eq!(plan.revision, "step512");
    assert!(plan.pg19_books.is_none() && !plan.wikitext);

    assert!(plan_from(&["--pg19-books", "1"], &[("HOME", "/h")]).is_err());
    assert!(plan_from(&["--data", "wikitext103"], &[("HOME", "/h")]).is_err());
    let Err(err) = plan_from(&["--pg19-endpoint", "books.example"], &[("HOME", "/h")]) else {
        panic!("a base URL without a scheme must be refused");
    };
    assert!(
        err.to_string()
            .contains("SPEDEC_PG19_ENDPOINT must start with http"),
        "{err}"
    );
}
