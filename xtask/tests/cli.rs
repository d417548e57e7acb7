//! `cargo xtask download` as a user runs it: the binary, its environment
//! variables and its one-line errors, against a loopback server.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::hub_server::{Route, Server};

const COMMIT: &str = "0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a";

/// The xtask binary with a clean Hugging Face environment.
fn xtask(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    for var in [
        "HF_ENDPOINT",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "SPEDEC_PG19_ENDPOINT",
        "SPEDEC_WIKITEXT_ENDPOINT",
        "XDG_CACHE_HOME",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", dir).current_dir(dir);
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_describes_the_options_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = xtask(dir.path())
        .args(["download", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--model",
        "--revision",
        "--data",
        "--pg19-books",
        "--dest",
        "HF_TOKEN",
        "HF_HUB_CACHE",
        "step143000",
    ] {
        assert!(help.contains(needle), "`{needle}` missing from:\n{help}");
    }
    assert!(
        !help.contains("--pg19-endpoint"),
        "hidden flags stay hidden"
    );
}

#[test]
fn bad_names_are_refused_before_any_network_access() {
    let dir = tempfile::tempdir().unwrap();
    let out = xtask(dir.path())
        .args(["download", "--model", "pythia-70m", "--revision", "step3"])
        .env("HF_ENDPOINT", "http://192.0.2.1:9") // would hang if contacted
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "error: unknown revision `step3`; nearest: step2, step4; valid revisions: main, step0"
        ),
        "{err}"
    );

    let out = xtask(dir.path())
        .args(["download", "--model", "pythia-7b"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        err.starts_with("error: unknown model `pythia-7b`; valid models: pythia-14m"),
        "{err}"
    );
}

#[test]
fn an_unreachable_hub_gives_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out = xtask(dir.path())
        .args(["download", "--model", "pythia-70m", "--data", "none"])
        .env("HF_ENDPOINT", format!("http://{addr}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: cannot reach {addr}; check your network or set HF_ENDPOINT"
        )),
        "{err}"
    );
}

#[test]
fn a_download_honours_hf_endpoint_hf_home_and_hf_token() {
    let server = Server::start();
    let files = [
        ("config.json", b"{\"model_type\": \"gpt_neox\"}".to_vec()),
        ("model.safetensors", vec![7u8; 70_000]),
        ("tokenizer.json", b"{\"version\": \"1.0\"}".to_vec()),
    ];
    for (i, (name, body)) in files.iter().enumerate() {
        // Distinct git-style etags (40 hex digits), as the hub sends for non-LFS files.
        let etag = format!("\"{i}{}\"", "ab".repeat(19) + "a");
        let route = Route::file(
            body.clone(),
            vec![
                ("X-Repo-Commit".into(), COMMIT.into()),
                ("ETag".into(), etag),
            ],
        );
        server.route(
            &format!("/EleutherAI/pythia-160m-deduped/resolve/step1000/{name}"),
            route.requiring("Bearer hf_t"),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = xtask(dir.path())
        .args([
            "download",
            "--model",
            "EleutherAI/pythia-160m-deduped",
            "--revision",
            "step1000",
            "--data",
            "none",
        ])
        .args(["--dest", "out"])
        .env("HF_ENDPOINT", &server.base)
        .env("HF_HOME", dir.path().join("hfhome"))
        .env("HF_TOKEN", "hf_t")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "model    out/models/pythia-160m-deduped@step1000"
    );
    // stderr is not a terminal: plain progress lines, a first and a last one per file.
    let err = stderr(&out);
    let host = server.base.trim_start_matches("http://");
    for (name, size) in [("config.json", "26 B"), ("model.safetensors", "68.4 KiB")] {
        let file = format!("EleutherAI/pythia-160m-deduped/{name}");
        assert!(
            err.contains(&format!("{file}: downloading from {host} ({size})\n")),
            "{err}"
        );
        assert!(err.contains(&format!("{file}: {size} in ")), "{err}");
    }
    let cache = dir
        .path()
        .join("hfhome/hub/models--EleutherAI--pythia-160m-deduped");
    assert_eq!(
        std::fs::read_to_string(cache.join("refs/step1000")).unwrap(),
        COMMIT
    );
    for (name, body) in &files {
        let link = dir
            .path()
            .join("out/models/pythia-160m-deduped@step1000")
            .join(name);
        assert_eq!(&std::fs::read(link).unwrap(), body, "{name}");
    }
}
