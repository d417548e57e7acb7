//! `cargo xtask bench` and `cargo xtask ppl` end to end: the xtask binary runs the real
//! `spedec` binary (built once per test run, or $SPEDEC_BIN) on tiny synthetic models and the
//! committed WikiText-2 / PG-19 fixtures, writing into a temporary results folder; and the
//! errors a user can cause end in one line saying what to do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The spedec binary: $SPEDEC_BIN, else `cargo build --profile test -p spedec-eval` once (the
/// profile `cargo test` already compiled spedec's dependencies with).
fn spedec() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SPEDEC_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--profile",
                "test",
                "-p",
                "spedec-eval",
                "--bin",
                "spedec",
            ])
            .args([
                "--message-format",
                "json-render-diagnostics",
                "--manifest-path",
            ])
            .arg(repo_root().join("Cargo.toml"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("cargo runs");
        assert!(out.status.success(), "building spedec failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "spedec")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the spedec executable")
    })
}

/// The xtask binary in `dir`, with no Hugging Face settings from the caller's environment.
fn xtask(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    for var in [
        "HF_ENDPOINT",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "SPEDEC_BIN",
        "XDG_CACHE_HOME",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", dir).current_dir(dir);
    cmd
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("xtask runs");
    assert!(
        out.status.success(),
        "xtask failed\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// The one file in `dir` whose name starts with `prefix` and ends with `ext`.
fn only_file(dir: &Path, prefix: &str, ext: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(prefix) && name.ends_with(ext)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{prefix}*{ext} in {}: {found:?}",
        dir.display()
    );
    found[0].clone()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Checks a `{median, min, max, n}` summary.
fn assert_summary(v: &Value, what: &str) {
    let (med, min, max) = (
        v["median"]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: {v}")),
        v["min"].as_f64().unwrap(),
        v["max"].as_f64().unwrap(),
    );
    assert!(min <= med && med <= max && min > 0.0, "{what}: {v}");
    assert!(v["n"].as_u64().unwrap() >= 1, "{what}: {v}");
}

const FAST_BENCH: [&str; 10] = [
    "--synthetic",
    "--target",
    "pythia-14m",
    "--draft",
    "14m",
    "--max-new-tokens",
    "8",
    "--runs",
    "1",
    "--warmup",
];

#[test]
fn bench_writes_the_report_and_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("out");
    let out = run_ok(
        xtask(dir.path())
            .arg("bench")
            .args(FAST_BENCH)
            .args(["0", "--results-dir", "out", "--spedec"])
            .arg(spedec()),
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("| model / mode | TTFT (ms) | TPOT (ms) | throughput (tokens/s) |"));
    assert!(
        stdout.contains("| synthetic pythia-14m (target) |"),
        "{stdout}"
    );
    assert!(stdout.contains("NOT meaningful"), "{stdout}");

    let json_path = only_file(&results, "bench-synthetic-", ".json");
    let md_path = only_file(&results, "bench-synthetic-", ".md");
    assert_eq!(
        std::fs::read_dir(&results).unwrap().count(),
        2,
        "no temporary files left"
    );
    let name = json_path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // bench-synthetic-<target>-<draft>-g<γ>-YYYY-MM-DD-<device>.json
    let rest = name
        .strip_prefix("bench-synthetic-pythia-14m-pythia-14m-g4-")
        .unwrap_or_else(|| panic!("{name}"));
    assert!(
        rest.as_bytes()[4] == b'-' && rest.as_bytes()[7] == b'-',
        "{name}"
    );
    let device = rest[11..].strip_suffix(".json").unwrap();
    assert!(
        device.starts_with("cpu") || device.starts_with("cuda"),
        "{name}"
    );
    assert!(
        device
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "{name}"
    );

    let r = read_json(&json_path);
    assert_eq!(r["gamma"], 4);
    assert_eq!(r["max_new_tokens"], 8);
    assert_eq!(
        (r["runs"].as_u64(), r["warmup"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(!r["prompts"].as_array().unwrap().is_empty());
    assert_eq!(r["target"], "synthetic:pythia-14m");
    assert_eq!(r["draft"], "synthetic:pythia-14m:seed=1");
    assert!(r["machine"].as_str().is_some_and(|m| !m.is_empty()));
    // The machine's fields: the device the run used, and the host CPU.
    let used = r["device"].as_str().unwrap();
    assert!(used == "cpu" || used == "cuda", "{used}");
    assert_eq!(used == "cuda", r["gpu"]["name"].is_string(), "{}", r["gpu"]);
    assert!(r["cpu_threads"].as_u64().unwrap() >= 1);
    assert!(!r["cpu"].as_str().unwrap().is_empty());
    let modes = r["modes"].as_array().unwrap();
    let names: Vec<&str> = modes.iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(names, ["small", "target", "spec"]);
    for m in modes {
        for key in ["ttft_ms", "tpot_ms", "throughput_tok_s"] {
            assert_summary(&m[key], key);
        }
    }
    let spec = &modes[2];
    let alpha = spec["acceptance_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&alpha));
    assert!(spec["mean_accepted_length"].as_f64().unwrap() >= 1.0);
    assert_eq!(spec["acceptance_per_position"].as_array().unwrap().len(), 4);
    assert_eq!(
        spec["accepted_length_histogram"].as_array().unwrap().len(),
        5
    );
    for key in [
        "speedup_tpot",
        "speedup_throughput",
        "cost_ratio",
        "predicted_speedup",
    ] {
        assert!(
            r[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {}",
            r[key]
        );
    }
    let meta = &r["xtask"];
    assert_eq!(meta["synthetic"], true);
    assert!(meta["note"].as_str().unwrap().contains("NOT meaningful"));
    assert_eq!(meta["device"].as_str().unwrap(), device);
    assert_eq!(meta["device_requested"], "auto");
    assert!(meta["command"]
        .as_str()
        .unwrap()
        .starts_with("cargo xtask bench --synthetic"));
    assert!(meta["wall_s"].as_f64().unwrap() > 0.0);

    let md = std::fs::read_to_string(md_path).unwrap();
    for needle in [
        "## Speed: synthetic pythia-14m → synthetic pythia-14m, γ = 4",
        "| speculative decoding (spec) |",
        "| acceptance rate α (accepted / drafted) |",
        "| predicted speedup (Leviathan et al., from α, γ, c) |",
        "Measured ",
    ] {
        assert!(md.contains(needle), "`{needle}` missing from:\n{md}");
    }
    assert!(!md.contains("quick"), "{md}");

    // The same run again would write the same names: refused before anything runs.
    let before = std::fs::read(&json_path).unwrap();
    let mut again = xtask(dir.path());
    again
        .arg("bench")
        .args(FAST_BENCH)
        .args(["0", "--results-dir", "out", "--spedec"])
        .arg(spedec());
    let err = error_line(&mut again);
    assert_eq!(
        err,
        format!(
            "error: out/{name} exists (a run of the same models on the same day and device); \
             pass --force to overwrite it, or another --results-dir"
        )
    );
    assert_eq!(std::fs::read(&json_path).unwrap(), before);
    assert_eq!(std::fs::read_dir(&results).unwrap().count(), 2);
    // --force overwrites.
    run_ok(again.arg("--force"));
    assert_ne!(std::fs::read(&json_path).unwrap(), before);
    assert_eq!(std::fs::read_dir(&results).unwrap().count(), 2);
}

#[test]
fn a_quick_run_is_short_labelled_and_lands_in_results_local() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        xtask(dir.path())
            .args(["bench", "--synthetic", "--quick"])
            .args(["--target", "pythia-14m", "--draft", "14m", "--spedec"])
            .arg(spedec()),
    );
    let results = dir.path().join("results/local");
    let json_path = only_file(
        &results,
        "bench-synthetic-quick-pythia-14m-pythia-14m-g4-",
        ".json",
    );
    only_file(
        &results,
        "bench-synthetic-quick-pythia-14m-pythia-14m-g4-",
        ".md",
    );
    assert_eq!(
        std::fs::read_dir(&results).unwrap().count(),
        2,
        "no prompts file or other temporary file left"
    );
    let r = read_json(&json_path);
    assert_eq!(r["max_new_tokens"], 32);
    assert_eq!(
        (r["runs"].as_u64(), r["warmup"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(r["prompts"].as_array().unwrap().len(), 2);
    assert_eq!(r["xtask"]["quick"], true);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("## Speed (quick run): synthetic pythia-14m → synthetic pythia-14m, γ = 4"),
        "{stdout}"
    );
    assert!(stdout.contains("Quick run (`--quick`)"), "{stdout}");
    assert!(
        stdout.contains("2 prompt(s) × 1 measured run(s) after 1 warm-up run(s), 32 new tokens"),
        "{stdout}"
    );
}

#[test]
fn a_gamma_sweep_writes_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prompts.txt"), "The history of the city\n").unwrap();
    run_ok(
        xtask(dir.path())
            .arg("bench")
            .args(FAST_BENCH)
            .args(["0", "--gamma", "1,2,auto", "--prompts", "prompts.txt"])
            .args(["--results-dir", "out", "--spedec"])
            .arg(spedec()),
    );
    let results = dir.path().join("out");
    let r = read_json(&only_file(
        &results,
        "bench-synthetic-gamma-sweep-pythia-14m-pythia-14m-20",
        ".json",
    ));
    assert_eq!(r["gammas"], serde_json::json!([1, 2, "auto"]));
    let points = r["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    assert_eq!(
        (points[0]["gamma"].as_u64(), points[1]["gamma"].as_u64()),
        (Some(1), Some(2))
    );
    // `--gamma auto` went through to spedec, whose report says so.
    assert_eq!(points[2]["gamma_auto"], true);
    assert_eq!(points[1]["gamma_auto"], false);
    assert_eq!(
        points[0]["prompts"],
        serde_json::json!(["The history of the city"])
    );
    let md = std::fs::read_to_string(only_file(&results, "bench-synthetic-gamma-sweep-", ".md"))
        .unwrap();
    assert!(md.contains("| synthetic pythia-14m | 2 |"), "{md}");
    assert!(
        md.contains("| synthetic pythia-14m | auto (≤ 16) |"),
        "{md}"
    );
    assert!(md.contains("| mean γ (auto) |"), "{md}");
    let svg = std::fs::read_to_string(only_file(&results, "bench-synthetic-gamma-sweep-", ".svg"))
        .unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains(">auto (≤ 16)</text>"), "{svg}");
    for series in [
        "measured speedup (TPOT)",
        "predicted speedup",
        "acceptance rate α",
    ] {
        assert!(svg.contains(series), "{series}");
    }
}

/// `dir/data` with the WikiText-2 test fixture and the two PG-19 fixture books where
/// `cargo xtask download` puts them.
fn data_dir(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let fixtures = repo_root().join("data/fixtures");
    let wiki = data.join("datasets/wikitext-2-raw");
    std::fs::create_dir_all(&wiki).unwrap();
    std::fs::copy(
        fixtures.join("wikitext-2-raw/wiki.test.raw"),
        wiki.join("wiki.test.raw"),
    )
    .unwrap();
    let pg19 = data.join("datasets/pg19");
    std::fs::create_dir_all(&pg19).unwrap();
    for id in ["10146", "10321"] {
        std::fs::copy(
            fixtures.join(format!("pg19/{id}.body.txt")),
            pg19.join(format!("{id}.txt")),
        )
        .unwrap();
    }
    data
}

const FAST_PPL: [&str; 9] = [
    "ppl",
    "--synthetic",
    "--target",
    "pythia-14m",
    "--draft",
    "pythia-14m",
    "--context",
    "64",
    "--no-download",
];

#[test]
fn ppl_of_spec_equals_ppl_of_target() {
    let dir = tempfile::tempdir().unwrap();
    data_dir(dir.path());
    let out = run_ok(
        xtask(dir.path())
            .args(FAST_PPL)
            .args(["--max-tokens", "300", "--results-dir", "out", "--spedec"])
            .arg(spedec()),
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("| model / mode | PPL |"), "{stdout}");
    let results = dir.path().join("out");
    let r = read_json(&only_file(
        &results,
        "ppl-synthetic-pythia-14m-pythia-14m-20",
        ".json",
    ));
    assert_eq!(r["dataset"], "wikitext2");
    assert_eq!(r["tokens"], 299);
    assert_eq!(r["windows"]["context"], 64);
    assert_eq!(r["windows"]["stride"], 32);
    assert_eq!(r["windows"]["method"], "strided");
    assert!(r["join"]
        .as_str()
        .unwrap()
        .contains("wiki.test.raw file as is"));
    let ppl = |k: &str| r[k]["ppl"].as_f64().unwrap();
    let (small, target, spec) = (ppl("small"), ppl("target"), ppl("spec"));
    assert!(small > 1.0 && target > 1.0);
    assert!(
        (spec - target).abs() <= 1e-6 * target,
        "spec {spec} != target {target}"
    );
    assert_ne!(small, target, "the synthetic draft is another model");
    assert_eq!(r["lossless"], true);
    assert_eq!(r["parts"].as_array().unwrap().len(), 1);
    let md = std::fs::read_to_string(only_file(&results, "ppl-synthetic-", ".md")).unwrap();
    for needle in [
        "| synthetic pythia-14m (target) |",
        "| speculative decoding (spec) |",
        "lossless passes",
        "windows of 64 tokens every 32 tokens",
        "first 300 tokens only",
    ] {
        assert!(md.contains(needle), "`{needle}` missing from:\n{md}");
    }
}

#[test]
fn ppl_scores_the_committed_wikitext_without_a_download() {
    let dir = tempfile::tempdir().unwrap();
    // No data folder, downloads off, and no hub: the committed copy is scored.
    let out = run_ok(
        xtask(dir.path())
            .args(FAST_PPL)
            .args(["--max-tokens", "100", "--results-dir", "out", "--spedec"])
            .arg(spedec())
            .env("HF_ENDPOINT", "http://nonexistent.invalid"),
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("wiki.test.raw not found; using the committed copy "),
        "{stderr}"
    );
    let r = read_json(&only_file(
        &dir.path().join("out"),
        "ppl-synthetic-",
        ".json",
    ));
    let scored = r["parts"][0]["text"].as_str().unwrap();
    assert!(
        scored.ends_with("data/fixtures/wikitext-2-raw/wiki.test.raw"),
        "{scored}"
    );
    assert_eq!(r["tokens"], 99);
    assert!(!dir.path().join("data").exists(), "nothing downloaded");
}

#[test]
fn pg19_books_are_scored_separately_and_weighted_by_tokens() {
    let dir = tempfile::tempdir().unwrap();
    data_dir(dir.path());
    run_ok(
        xtask(dir.path())
            .args(FAST_PPL)
            .args([
                "--data",
                "pg19",
                "--method",
                "chunked",
                "--max-tokens",
                "150",
            ])
            .args(["--results-dir", "out", "--spedec"])
            .arg(spedec()),
    );
    let r = read_json(&only_file(
        &dir.path().join("out"),
        "ppl-synthetic-pg19-",
        ".json",
    ));
    let parts = r["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert!(parts[0]["text"].as_str().unwrap().ends_with("10146.txt"));
    assert!(parts[1]["text"].as_str().unwrap().ends_with("10321.txt"));
    let tokens: Vec<f64> = parts
        .iter()
        .map(|p| p["tokens"].as_f64().unwrap())
        .collect();
    assert_eq!(r["tokens"].as_f64().unwrap(), tokens[0] + tokens[1]);
    let mean = (tokens[0] * parts[0]["nll"].as_f64().unwrap()
        + tokens[1] * parts[1]["nll"].as_f64().unwrap())
        / (tokens[0] + tokens[1]);
    assert!((r["target"]["nll"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert_eq!(r["windows"]["method"], "chunked");
    assert_eq!(r["lossless"], true);
}

/// Runs a command that must fail and returns its last stderr line, checking that it is the
/// only `error:` line.
fn error_line(cmd: &mut Command) -> String {
    let out = cmd.output().expect("xtask runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
    stderr.lines().last().unwrap_or_default().to_string()
}

#[test]
fn user_errors_end_in_one_line_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // Missing data, downloads off (WikiText-2 is committed; PG-19 is not).
    let err = error_line(xtask(dir.path()).args(FAST_PPL).args(["--data", "pg19"]));
    assert!(
        err.starts_with(
            "error: data/datasets/pg19 not found; run `cargo xtask download --data pg19"
        ),
        "{err}"
    );

    // A wrong model name.
    let err = error_line(xtask(dir.path()).args(["bench", "--draft", "pythia-7b"]));
    assert!(
        err.starts_with("error: unknown model `pythia-7b`; valid models: pythia-14m"),
        "{err}"
    );

    // A missing model, downloads off.
    let err = error_line(xtask(dir.path()).args(["bench", "--no-download"]));
    assert!(
        err.contains(
            "not found in data/models; run `cargo xtask download --model pythia-2.8b,pythia-70m"
        ),
        "{err}"
    );

    // A draft with another vocabulary.
    for (name, vocab) in [("pythia-14m", 50304), ("pythia-70m", 32000)] {
        let model = dir.path().join("data/models").join(name);
        std::fs::create_dir_all(&model).unwrap();
        std::fs::write(
            model.join("config.json"),
            format!("{{\"vocab_size\": {vocab}}}"),
        )
        .unwrap();
        std::fs::write(model.join("model.safetensors"), "").unwrap();
        std::fs::write(model.join("tokenizer.json"), "{}").unwrap();
    }
    let err = error_line(xtask(dir.path()).args(["bench", "--target", "14m", "--draft", "70m"]));
    assert!(
        err.starts_with("error: draft pythia-70m has vocab_size 32000 but target pythia-14m has 50304; pick a draft"),
        "{err}"
    );

    // No network: the hub cannot be reached.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = error_line(
        xtask(dir.path())
            .args(["ppl", "--target", "pythia-160m", "--draft", "pythia-14m"])
            .env("HF_ENDPOINT", format!("http://{addr}")),
    );
    assert!(
        err.starts_with("error: downloading pythia-160m failed (use --synthetic"),
        "{err}"
    );
    assert!(
        err.contains("check your network or set HF_ENDPOINT"),
        "{err}"
    );

    // A name that does not resolve: the same, at once (no retries).
    let start = std::time::Instant::now();
    let err = error_line(
        xtask(dir.path())
            .args(["bench", "--target", "pythia-160m", "--draft", "pythia-14m"])
            .env("HF_ENDPOINT", "http://nonexistent.invalid"),
    );
    assert!(
        err.starts_with(
            "error: downloading pythia-160m failed (use --synthetic to time random weights \
             instead): cannot reach nonexistent.invalid; check your network or set HF_ENDPOINT \
             (the name nonexistent.invalid does not resolve"
        ),
        "{err}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}
