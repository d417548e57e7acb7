//! `spedec gpu-check` and `--device` from the command line: without a GPU the check prints
//! `skipped: no CUDA device` and succeeds, `--device cuda` is a one-line error, and the check
//! harness itself runs end to end on the CPU model (`--device cpu`), writing its JSON files.

#![cfg(feature = "cuda")]

use std::io::Write;
use std::process::{Command, Output};

use serde_json::Value;

fn spedec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spedec"))
        .args(args)
        .output()
        .unwrap()
}

fn visible(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn gpu_check_without_a_device_says_skipped() {
    if spedec_cuda::gpu_available() {
        visible("gpu_check_without_a_device_says_skipped: skipped: a CUDA device is present");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = spedec(&["gpu-check", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("skipped: no CUDA device"), "{stdout}");
    visible(stdout.trim());
}

#[test]
fn device_cuda_without_a_driver_is_a_clear_error() {
    if spedec_cuda::driver_available() {
        visible("device_cuda_without_a_driver_is_a_clear_error: skipped: a CUDA driver is present");
        return;
    }
    let out = spedec(&[
        "generate",
        "--model",
        "synthetic:pythia-14m",
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "2",
        "--device",
        "cuda",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.trim_end()
            .ends_with("error: no CUDA driver found (use --device cpu)"),
        "{err}"
    );
    // And auto falls back to the CPU.
    let out = spedec(&[
        "generate",
        "--model",
        "synthetic:pythia-14m",
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "2",
        "--device",
        "auto",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn gpu_check_harness_runs_on_the_cpu_model() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/fixtures/golden");
    let out = spedec(&[
        "gpu-check",
        "--device",
        "cpu",
        "--quick",
        "--only",
        "logits,consistency,speculative",
        "--target",
        "synthetic:pythia-14m",
        "--draft",
        "synthetic:pythia-14m:seed=3",
        "--fixtures",
        fixtures,
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("[PASS] logits: fixture parallel-f16"),
        "{stdout}"
    );
    assert!(!stdout.contains("[FAIL]"), "{stdout}");
    let merged: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("gpu-check.json")).unwrap()).unwrap();
    assert_eq!(merged["all_passed"], true);
    assert_eq!(merged["sections"].as_array().unwrap().len(), 3);

    // --summarize of a section that never ran reports it missing and fails.
    let out = spedec(&[
        "gpu-check",
        "--summarize",
        "--only",
        "logits,timing",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FAIL  section timing (no result file"),
        "{stdout}"
    );
}
