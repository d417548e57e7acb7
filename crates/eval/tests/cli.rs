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

/// A folder with the golden fixture model (vocab 1000), a tokenizer and `edit`ed config.
fn fixture_folder(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures/golden/parallel-f16");
    let folder = dir.join("model");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(
        golden.join("model.safetensors"),
        folder.join("model.safetensors"),
    )
    .unwrap();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(golden.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(folder.join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        folder.join("tokenizer.json"),
        spedec_neox::Tokenizer::pythia_json(),
    )
    .unwrap();
    folder
}

#[test]
fn a_huge_max_position_embeddings_gets_a_capped_cache_and_huge_contexts_a_clean_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_folder(tmp.path(), |c| {
        c["max_position_embeddings"] = serde_json::json!(1_000_000_000_000u64)
    });
    let model = model.to_str().unwrap();
    // "a b c" has ids below the fixture's vocabulary of 1000.
    let base = [
        "generate", "-m", model, "-p", "a b c", "-n", "3", "--device", "cpu",
    ];
    let out = spedec(&base);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = base.to_vec();
    args.extend(["--context", "1000000000000"]);
    let out = spedec(&args);
    assert_eq!(out.status.code(), Some(1), "an error, not an abort");
    let line = error_line(&out);
    assert!(
        line.contains("KV cache (1000000000000 positions") && line.contains("PiB"),
        "{line}"
    );
}

#[test]
fn output_paths_are_checked_before_any_work_and_nothing_is_left_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let (dir_s, in_file) = (
        dir.to_str().unwrap().to_string(),
        file.join("x.json").to_str().unwrap().to_string(),
    );
    // The model does not exist: failing on the path first shows it is checked before loading.
    let bench = |extra: &[&str]| {
        let mut args = vec!["bench", "--target", "/no/such/model", "--draft", "/no/such"];
        args.extend(extra);
        spedec(&args)
    };
    for (flag, path, want) in [
        ("--json", &dir_s, "it is a folder"),
        ("--markdown", &dir_s, "it is a folder"),
        ("--json", &in_file, "is not a folder"),
    ] {
        let line = error_line(&bench(&[flag, path]));
        assert!(
            line.contains(&format!("bad {flag}: cannot write {path}")) && line.contains(want),
            "{line}"
        );
    }
    let line = error_line(&spedec(&[
        "bench-kernels",
        "-m",
        "/no/such/model",
        "--json",
        &dir_s,
    ]));
    assert!(line.contains("bad --json"), "{line}");
    let line = error_line(&spedec(&[
        "generate", "-m", "/no/such", "-p", "Hi", "--json", &dir_s,
    ]));
    assert!(line.contains("bad --json"), "{line}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no file left");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
}

/// `spedec bench` of pythia-14m, one measured run per line of `prompts`, with `extra` flags.
fn tiny_bench(prompts: &Path, extra: &[&str]) -> Output {
    let prompts = prompts.to_str().unwrap();
    let mut args = vec!["bench", "-m", "synthetic:pythia-14m", "--prompts", prompts];
    args.extend(["--runs", "1", "--warmup", "0", "--device", "cpu"]);
    args.extend(extra);
    spedec(&args)
}

#[test]
fn early_stops_are_said_on_stderr_and_tables_say_what_was_generated() {
    let tmp = tempfile::tempdir().unwrap();
    let out = spedec(&[
        "generate",
        "-m",
        "synthetic:pythia-14m",
        "-p",
        "The history of the city",
        "-n",
        "30",
        "-c",
        "12",
        "--device",
        "cpu",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "warning: stopped after 8 of 30 new tokens: the context of 12 positions \
             (the prompt took 5) is full"
        ) && err.contains("raise --context (the model allows 2048)"),
        "{err}"
    );

    let prompts = tmp.path().join("prompts.txt");
    std::fs::write(&prompts, "The history of the city\nIn machine learning\n").unwrap();
    let report = tmp.path().join("sub/report.json");
    let out = tiny_bench(
        &prompts,
        &[
            "--draft",
            "synthetic:pythia-14m:seed=2",
            "-n",
            "40",
            "-c",
            "12",
            "--json",
            report.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("new tokens (40 asked; the context filled up)"),
        "{stdout}"
    );
    assert!(!stdout.contains("40 new tokens"), "{stdout}");
    assert!(stderr.contains("warning: runs made"), "{stderr}");
    let v: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(v["new_tokens"]["max"].as_f64().unwrap() < 40.0, "{v}");
    assert_eq!(v["max_new_tokens"], 40);
}

#[test]
fn json_takes_an_optional_file_everywhere_and_llama_cpp_short_flags_work() {
    let tmp = tempfile::tempdir().unwrap();
    let wiki = wiki();
    let ppl = |json: &[&str]| {
        let mut args = vec![
            "-t",
            "1",
            "ppl",
            "-m",
            "synthetic:pythia-14m",
            "-f",
            wiki.to_str().unwrap(),
            "--max-tokens",
            "100",
            "-c",
            "64",
            "--device",
            "cpu",
        ];
        args.extend(json);
        spedec(&args)
    };
    let on_stdout = json_of(&ppl(&["--json"]));
    assert_eq!(on_stdout["tokens"], 99);
    assert_eq!(on_stdout["cpu_threads"], 1, "--threads sizes the pool");
    assert_eq!(json_of(&ppl(&["--json", "-"]))["ppl"], on_stdout["ppl"]);
    let file = tmp.path().join("ppl.json");
    let out = ppl(&["--json", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("tokens scored: 99"));
    let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(v["ppl"], on_stdout["ppl"]);

    let file = tmp.path().join("gen.jsonl");
    let out = spedec(&[
        "generate",
        "-m",
        "synthetic:pythia-14m",
        "-p",
        "Hello",
        "-n",
        "4",
        "-s",
        "3",
        "--temperature",
        "0.8",
        "--samples",
        "2",
        "--json",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--- sample 1"));
    let lines = std::fs::read_to_string(&file).unwrap();
    assert_eq!(lines.lines().count(), 2);
    for line in lines.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["tokens"].as_array().unwrap().len(), 4);
    }

    // bench --json with no FILE: the report on stdout, the table on stderr.
    let prompts = tmp.path().join("prompts.txt");
    std::fs::write(&prompts, "Hello\n").unwrap();
    let out = tiny_bench(
        &prompts,
        &[
            "--draft-max",
            "2",
            "--draft",
            "synthetic:pythia-14m",
            "-n",
            "3",
            "--json",
        ],
    );
    let v = json_of(&out);
    assert_eq!(
        (v["gamma"].clone(), v["max_new_tokens"].clone()),
        (2.into(), 3.into())
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("| model / mode |"));

    // Negative numbers need no `=`; they reach the sampler's own check.
    let line = error_line(&spedec(&[
        "generate",
        "-m",
        "synthetic:pythia-14m",
        "-p",
        "Hi",
        "--temperature",
        "-1",
    ]));
    assert!(
        line.contains("temperature must be finite and > 0"),
        "{line}"
    );
    let line = error_line(&spedec(&["-t", "0", "generate", "-m", "x", "-p", "Hi"]));
    assert!(line.contains("--threads must be at least 1"), "{line}");
}

#[test]
fn convert_turns_a_pytorch_bin_into_a_loadable_folder_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = fixture_folder(tmp.path(), |_| {});
    std::fs::remove_file(folder.join("model.safetensors")).unwrap();
    let bin =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures/pytorch/parallel-f16.bin");
    std::fs::copy(&bin, folder.join("pytorch_model.bin")).unwrap();
    let dir = folder.to_str().unwrap();
    // Before: a clear error saying what the folder has.
    let line = error_line(&spedec(&[
        "generate", "-m", dir, "-p", "Hello", "-n", "2", "--greedy",
    ]));
    assert!(line.contains("has only pytorch_model.bin"), "{line}");
    assert!(line.contains("spedec convert --input"), "{line}");
    let out = spedec(&["convert", "--input", dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("converted 32 tensors"));
    let out = spedec(&[
        "generate", "-m", dir, "-p", "a b", "-n", "2", "--greedy", "--json",
    ]);
    assert_eq!(json_of(&out)["tokens"].as_array().map(Vec::len), Some(2));
    // A second conversion would replace the file: refused without --force.
    let line = error_line(&spedec(&["convert", "--input", dir]));
    assert!(line.contains("exists; pass --force"), "{line}");
    let out = spedec(&["convert", "--input", dir, "--force"]);
    assert!(out.status.success());
    let line = error_line(&spedec(&[
        "convert",
        "--input",
        tmp.path().join("none.bin").to_str().unwrap(),
    ]));
    assert!(line.contains("bad --input"), "{line}");
}

#[test]
fn bench_kernels_times_consecutive_steps_and_reports_the_probe_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("k.json");
    let out = spedec(&[
        "bench-kernels",
        "-m",
        "synthetic:pythia-14m",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--steps",
        "3",
        "--json",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let timing = report["step_timing"].as_str().unwrap();
    assert!(timing.contains("3 consecutive decode steps"), "{timing}");
    assert!(timing.contains("outside the timed stretch"), "{timing}");
    let tried = report["probe"]["tried"].as_array().unwrap();
    assert!(tried.len() >= 2, "{tried:?}");
    let best = tried
        .iter()
        .map(|t| t["median_gb_s"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(report["read_bandwidth_gb_s"]["median"].as_f64(), Some(best));
    assert!(report["decode"]["ms"]["median"].as_f64().unwrap() > 0.0);
    // A decode stretch longer than the benchmark allows is refused by the flag.
    let out = spedec(&["bench-kernels", "--steps", "100000"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'--steps <N>'"), "{err}");
}

#[test]
fn gamma_takes_a_number_from_1_to_16_or_auto() {
    for bad in ["0", "17", "x"] {
        for cmd in ["generate", "bench"] {
            let mut args = vec![cmd, "-m", "synthetic:pythia-14m", "--draft"];
            args.extend(["synthetic:pythia-14m:seed=1", "-p", "Hi", "--gamma", bad]);
            if cmd == "bench" {
                args.retain(|a| *a != "-p" && *a != "Hi");
            }
            let out = spedec(&args);
            assert!(!out.status.success(), "{cmd} --gamma {bad} was accepted");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!("invalid value '{bad}' for '--gamma"))
                    && err.contains("from 1 to 16, or auto"),
                "{cmd} --gamma {bad}: {err}"
            );
        }
    }
    // Auto γ with a noisy copy of the target: greedy output is still the target's.
    let base = [
        "generate",
        "-m",
        "synthetic:pythia-14m:seed=1",
        "-p",
        "The history of the city",
        "-n",
        "16",
        "--greedy",
        "--device",
        "cpu",
        "--json",
    ];
    let ar = json_of(&spedec(&base));
    let mut args = base.to_vec();
    args.extend([
        "--draft",
        "synthetic:pythia-14m:seed=1:noise=0.3:layers=3",
        "--gamma",
        "auto",
    ]);
    let out = spedec(&args);
    let spec = json_of(&out);
    assert_eq!(spec["tokens"], ar["tokens"]);
    let stats = &spec["stats"];
    assert_eq!(
        (&stats["gamma_auto"], &stats["gamma"]),
        (&Value::from(true), &Value::from(16))
    );
    let hist: Vec<u64> = stats["gamma_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(hist.len(), 17);
    assert_eq!(
        hist.iter().sum::<u64>(),
        stats["verify_steps"].as_u64().unwrap()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(", γ auto: mean "), "{err}");
}

#[test]
fn bench_sweeps_several_gammas_with_auto() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.txt");
    std::fs::write(&prompts, "The history of the city\n").unwrap();
    let report = tmp.path().join("sweep.json");
    let out = tiny_bench(
        &prompts,
        &[
            "--draft",
            "synthetic:pythia-14m:noise=0.1",
            "-n",
            "12",
            "--gamma",
            "1,3,auto",
            "--json",
            report.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "Speed on ",
        ": γ = 1, 12 new tokens",
        "γ sweep: synthetic:pythia-14m:noise=0.1 → synthetic:pythia-14m",
        "| γ | spec TPOT (ms) |",
        "\n| 1 | ",
        "\n| 3 | ",
        "\n| auto (≤ 16) | ",
    ] {
        assert!(
            stdout.contains(needle),
            "`{needle}` missing from:\n{stdout}"
        );
    }
    let v: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let sweep = v["sweep"].as_array().unwrap();
    let labels: Vec<(Value, Value)> = sweep
        .iter()
        .map(|p| (p["gamma"].clone(), p["gamma_auto"].clone()))
        .collect();
    assert_eq!(
        labels,
        [(1, false), (3, false), (16, true)].map(|(g, a)| (Value::from(g), Value::from(a)))
    );
    for p in sweep {
        let runs = p["spec"]["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0]["gamma_auto"], p["gamma_auto"]);
    }
    assert_eq!(v["modes"][2]["runs"], sweep[0]["spec"]["runs"]);
    assert_eq!(
        (&v["gamma"], &v["gamma_auto"]),
        (&Value::from(1), &Value::from(false))
    );
}

#[test]
fn convert_turns_a_sharded_pytorch_set_into_safetensors_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = fixture_folder(tmp.path(), |_| {});
    let single = std::fs::read(folder.join("model.safetensors")).unwrap();
    std::fs::remove_file(folder.join("model.safetensors")).unwrap();
    // One shard holding every tensor, named by an index as transformers writes it.
    let bin =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures/pytorch/parallel-f16.bin");
    let shard = "pytorch_model-00001-of-00001.bin";
    std::fs::copy(&bin, folder.join(shard)).unwrap();
    let header_len = u64::from_le_bytes(single[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&single[8..8 + header_len]).unwrap();
    let mut weight_map = serde_json::Map::new();
    for name in header.as_object().unwrap().keys() {
        if name != "__metadata__" {
            weight_map.insert(name.clone(), Value::from(shard));
        }
    }
    // The fixture's extra buffers (attention.bias / masked_bias) are in the shard too.
    for layer in 0..2 {
        for buf in ["bias", "masked_bias"] {
            weight_map.insert(
                format!("gpt_neox.layers.{layer}.attention.{buf}"),
                Value::from(shard),
            );
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        folder.join("pytorch_model.bin.index.json"),
        serde_json::to_string(&index).unwrap(),
    )
    .unwrap();
    let dir = folder.to_str().unwrap();
    let line = error_line(&spedec(&[
        "generate", "-m", dir, "-p", "Hello", "-n", "2", "--greedy",
    ]));
    assert!(
        line.contains("has only pytorch_model.bin.index.json"),
        "{line}"
    );
    let out = spedec(&["convert", "--input", dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(folder.join("model.safetensors.index.json").is_file());
    assert!(folder.join("model-00001-of-00001.safetensors").is_file());
    let out = spedec(&[
        "generate", "-m", dir, "-p", "a b", "-n", "2", "--greedy", "--json",
    ]);
    assert_eq!(json_of(&out)["tokens"].as_array().map(Vec::len), Some(2));
    let line = error_line(&spedec(&["convert", "--input", dir]));
    assert!(line.contains("exists; pass --force"), "{line}");
}

#[test]
fn spec_step_device_without_cuda_is_refused_naming_the_flag() {
    let out = spedec(&[
        "generate",
        "-m",
        "synthetic:pythia-14m:seed=1",
        "--draft",
        "synthetic:pythia-14m:seed=2",
        "--device",
        "cpu",
        "--spec-step",
        "device",
        "-p",
        "Hello",
        "-n",
        "2",
    ]);
    let line = error_line(&out);
    assert!(line.contains("--spec-step device"), "{line}");
    assert!(line.contains("--device cuda"), "{line}");
    let out = spedec(&[
        "generate",
        "-m",
        "synthetic:pythia-14m:seed=1",
        "--device",
        "cpu",
        "--spec-step",
        "device",
        "-p",
        "Hello",
        "-n",
        "2",
    ]);
    assert!(error_line(&out).contains("--draft"));
    // `host` runs anywhere and gives the CPU's output.
    let out = spedec(&[
        "generate",
        "-m",
        "synthetic:pythia-14m:seed=1",
        "--draft",
        "synthetic:pythia-14m:seed=2",
        "--device",
        "cpu",
        "--spec-step",
        "host",
        "-p",
        "Hello",
        "-n",
        "3",
        "--json",
    ]);
    assert_eq!(json_of(&out)["tokens"].as_array().map(Vec::len), Some(3));
}
