//! The `spedec` binary end to end on small synthetic models: JSON output, speculative PPL equal
//! to target PPL on WikiText-2 text, speculative greedy output equal to autoregressive output,
//! and one-line errors for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn spedec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spedec"))
        .args(args)
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "spedec failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn wiki() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures/wikitext-2-raw/wiki.test.raw")
}

fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    assert!(
        out.stdout.is_empty(),
        "nothing may be printed on stdout on error"
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let line = err.lines().last().unwrap_or_default().to_string();
    assert!(line.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    line
}

#[test]
fn ppl_with_a_draft_reports_equal_spec_and_target_ppl() {
    let wiki = wiki();
    let out = spedec(&[
        "ppl",
        "--model",
        "synthetic:pythia-14m:seed=1",
        "--draft",
        "synthetic:pythia-14m:seed=2",
        "--text",
        wiki.to_str().unwrap(),
        "--max-tokens",
        "300",
        "--context",
        "128",
        "--json",
    ]);
    let v = json_of(&out);
    assert_eq!(v["tokens"], 299);
    let (ppl, spec, draft) = (
        v["ppl"].as_f64().unwrap(),
        v["spec_ppl"].as_f64().unwrap(),
        v["draft_ppl"].as_f64().unwrap(),
    );
    assert!(ppl.is_finite() && ppl > 1.0);
    assert!(
        (spec - ppl).abs() <= 1e-6 * ppl,
        "spec {spec} vs target {ppl}"
    );
    assert!(
        (draft - ppl).abs() > 1e-3 * ppl,
        "the draft is a different model"
    );
    assert_eq!(v["windows"]["stride"], 64);
}

#[test]
fn generate_json_and_speculative_greedy_equals_autoregressive() {
    let base = [
        "generate",
        "--model",
        "synthetic:pythia-14m:seed=1",
        "--prompt",
        "The history of the city",
        "--max-new-tokens",
        "12",
        "--greedy",
        "--json",
    ];
    let ar = json_of(&spedec(&base));
    assert_eq!(ar["tokens"].as_array().unwrap().len(), 12);
    assert!(ar["text"].is_string() && ar["stats"]["timing"]["tpot_s"].is_number());
    for draft in ["synthetic:pythia-14m:seed=1", "synthetic:pythia-14m:seed=9"] {
        let mut args = base.to_vec();
        args.extend(["--draft", draft, "--gamma", "3"]);
        let spec = json_of(&spedec(&args));
        assert_eq!(spec["tokens"], ar["tokens"], "draft {draft}");
        assert_eq!(spec["stats"]["mode"], "speculative");
    }
}

#[test]
fn sampled_generation_is_reproducible_and_samples_differ() {
    let args = [
        "generate",
        "--model",
        "synthetic:pythia-14m:seed=1",
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "6",
        "--temperature",
        "1.0",
        "--top-k",
        "50",
        "--seed",
        "7",
        "--samples",
        "3",
        "--json",
    ];
    let first = spedec(&args);
    let second = spedec(&args);
    assert!(first.status.success());
    let tokens = |out: &Output| -> Vec<Value> {
        out.stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice::<Value>(l).unwrap()["tokens"].clone())
            .collect()
    };
    let (a, b) = (tokens(&first), tokens(&second));
    assert_eq!(a.len(), 3);
    assert_ne!(a[0], a[1], "samples use different seeds");
    assert_eq!(a, b, "same seed, same samples");
}

#[test]
fn bad_input_gives_one_line_errors() {
    let wiki = wiki();
    let wiki = wiki.to_str().unwrap();
    let line = error_line(&spedec(&[
        "ppl",
        "--model",
        "/no/such/model",
        "--text",
        wiki,
    ]));
    assert!(line.contains("/no/such/model"), "{line}");

    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let line = error_line(&spedec(&[
        "ppl",
        "--model",
        "synthetic:pythia-14m",
        "--text",
        empty.to_str().unwrap(),
    ]));
    assert!(line.contains("empty"), "{line}");

    let line = error_line(&spedec(&[
        "ppl",
        "--model",
        "synthetic:pythia-14m",
        "--text",
        "/no/such/text.txt",
    ]));
    assert!(line.contains("/no/such/text.txt"), "{line}");

    let line = error_line(&spedec(&[
        "ppl",
        "--model",
        "synthetic:pythia-14m",
        "--text",
        wiki,
        "--context",
        "4096",
    ]));
    assert!(line.contains("4096") && line.contains("2048"), "{line}");

    // A draft with another vocabulary: the golden fixture model (vocab 1000) with a tokenizer.
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures/golden/parallel-f16");
    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(golden.join(f), small.join(f)).unwrap();
    }
    std::fs::write(
        small.join("tokenizer.json"),
        spedec_neox::Tokenizer::pythia_json(),
    )
    .unwrap();
    let line = error_line(&spedec(&[
        "generate",
        "--model",
        "synthetic:pythia-14m",
        "--draft",
        small.to_str().unwrap(),
        "--prompt",
        "Hi",
    ]));
    assert!(line.contains("vocab"), "{line}");

    let line = error_line(&spedec(&[
        "generate",
        "--model",
        "synthetic:pythia-14m",
        "--prompt",
        "",
    ]));
    assert!(line.contains("--prompt"), "{line}");

    let line = error_line(&spedec(&[
        "generate",
        "--model",
        "synthetic:pythia-14m",
        "--prompt",
        "Hi",
        "--temperature=-1",
    ]));
    assert!(line.contains("temperature"), "{line}");
}
