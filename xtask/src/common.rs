//! Helpers shared by `cargo xtask bench` and `cargo xtask ppl`: finding (building) the
//! `spedec` binary and running it, turning model names into model folders (downloading what is
//! missing through the download module), naming and atomically writing result files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use serde_json::Value;
use spedec_report::{Device, Gpu, Machine};

use crate::download;

/// Options `bench` and `ppl` share: where spedec runs, where results go, where models and texts
/// are found, and which spedec binary to run.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Where spedec runs: auto (CUDA when the binary and the machine have it, else the CPU),
    /// cpu, or cuda (fails without a GPU); passed on when the spedec binary has --device
    #[arg(long, default_value_t = Device::Auto,
          value_parser = PossibleValuesParser::new(Device::NAMES.iter().copied()).map(|s| s.parse::<Device>().expect("a listed name")))]
    pub device: Device,

    /// Folder for the result files (results/local is git-ignored; curated results are
    /// committed in results/)
    #[arg(long, default_value = "results/local", value_name = "DIR")]
    pub results_dir: PathBuf,

    /// Overwrite result files of the same name (same models, date and device)
    #[arg(long)]
    pub force: bool,

    /// Folder with models/ and datasets/ (as `cargo xtask download --dest` writes it)
    #[arg(long, default_value = "data", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Fail instead of downloading missing models or texts
    #[arg(long)]
    pub no_download: bool,

    /// spedec binary to run [default: $SPEDEC_BIN, else built with `cargo build --release -p
    /// spedec-eval`]
    #[arg(long, value_name = "PATH")]
    pub spedec: Option<PathBuf>,
}

/// An error whose message the user has already seen (`spedec` printed its own `error:` line
/// on the inherited stderr); `main` exits with failure without printing a second line.
#[derive(Debug)]
pub struct AlreadyReported;

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("spedec failed (its error is printed above)")
    }
}

impl std::error::Error for AlreadyReported {}

/// The `spedec` command-line tool.
pub struct Spedec {
    pub path: PathBuf,
}

impl Spedec {
    /// The binary named by `--spedec` or `$SPEDEC_BIN`; otherwise `cargo build --release -p
    /// spedec-eval` (a no-op when it is up to date) and the executable cargo reports.
    pub fn locate(explicit: Option<&Path>) -> Result<Spedec> {
        let explicit = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("SPEDEC_BIN").map(PathBuf::from));
        if let Some(path) = explicit {
            if !path.is_file() {
                bail!(
                    "spedec binary {} does not exist; build it with `cargo build --release -p \
                     spedec-eval` or drop --spedec / SPEDEC_BIN",
                    path.display()
                );
            }
            return Ok(Spedec { path });
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        eprintln!("building spedec (cargo build --release -p spedec-eval)");
        let path = cargo_build_bin(&manifest, &["--release"], "spedec-eval", "spedec")?;
        Ok(Spedec { path })
    }

    /// Whether `spedec <subcommand>` accepts `--device` (read from its `--help`).
    pub fn supports_device(&self, subcommand: &str) -> Result<bool> {
        let out = Command::new(&self.path)
            .args([subcommand, "--help"])
            .output()
            .with_context(|| format!("cannot run {}", self.path.display()))?;
        if !out.status.success() {
            bail!(
                "`{} {subcommand} --help` failed; rebuild spedec with `cargo build --release -p \
                 spedec-eval`",
                self.path.display()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).contains("--device"))
    }

    /// The `--device` arguments for `subcommand`: none when the binary predates the flag
    /// (CPU only), which is refused when the user asked for CUDA.
    pub fn device_args(&self, subcommand: &str, device: Device) -> Result<Vec<String>> {
        if self.supports_device(subcommand)? {
            return Ok(vec!["--device".into(), device.as_str().into()]);
        }
        if device == Device::Cuda {
            bail!(
                "this spedec ({}) has no --device option and runs on the CPU only; use --device \
                 cpu (or auto), or update the tree to a spedec with CUDA support",
                self.path.display()
            );
        }
        Ok(Vec::new())
    }

    /// Runs `spedec args…` with stderr passed through (progress bars, messages) and returns
    /// its stdout.
    pub fn run(&self, args: &[String]) -> Result<String> {
        let out = Command::new(&self.path)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .stdout(Stdio::piped())
            .output()
            .with_context(|| format!("cannot run {}", self.path.display()))?;
        match out.status.code() {
            Some(0) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            // spedec prints one `error: …` line and exits with 1.
            Some(1) => Err(AlreadyReported.into()),
            Some(code) => bail!("spedec {} exited with status {code}", args.join(" ")),
            None => bail!(
                "spedec {} was killed by a signal (out of memory? try a smaller model, \
                 --context or --max-tokens)",
                args.join(" ")
            ),
        }
    }
}

/// `cargo build <profile_args> -p <package> --bin <bin>`; returns the executable's path.
/// Compiler messages go to stderr; cargo's JSON artifact messages name the executable, so any
/// target directory (CARGO_TARGET_DIR, config) works.
pub fn cargo_build_bin(
    manifest: &Path,
    profile_args: &[&str],
    package: &str,
    bin: &str,
) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .arg("build")
        .args(profile_args)
        .args(["-p", package, "--bin", bin])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(manifest)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .stdout(Stdio::piped())
        .output()
        .context("cannot run cargo to build spedec")?;
    if !out.status.success() {
        bail!(
            "`cargo build {} -p {package}` failed (compiler output above); fix the build or pass \
             an existing binary with --spedec",
            profile_args.join(" ")
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo built {package} but reported no `{bin}` executable"))
}

/// Pythia model names as the user may type them: `pythia-70m`, `70m`, `EleutherAI/pythia-70m`.
pub fn pythia_name(input: &str) -> String {
    let trimmed = input.trim();
    let starts_with_digit = trimmed.chars().next().is_some_and(|c| c.is_ascii_digit());
    if starts_with_digit {
        format!("pythia-{trimmed}")
    } else {
        trimmed.to_string()
    }
}

/// A model as `spedec` takes it, with a short label for tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRef {
    /// `pythia-70m`, `synthetic pythia-70m` or the folder's name.
    pub label: String,
    /// A folder or a `synthetic:` spec.
    pub spec: String,
}

/// How model names become models.
pub struct ModelSource<'a> {
    /// Seeded random weights of the named shapes instead of downloads.
    pub synthetic: bool,
    /// `<data_dir>/models/<name>` holds (links to) each model's files.
    pub data_dir: &'a Path,
    /// Download what is missing (otherwise: an error naming the download command).
    pub download: bool,
}

impl ModelSource<'_> {
    /// Resolves `(name, seed)` pairs (Pythia names, sizes, `synthetic:…` specs or model
    /// folders), checking every name before anything is downloaded. With `synthetic`, `seed`
    /// picks the random weights (so a draft can differ from a target of the same size).
    pub fn resolve(&self, names: &[(String, u64)]) -> Result<Vec<ModelRef>> {
        let mut refs = Vec::new();
        let mut seeds = Vec::new();
        for (name, seed) in names {
            seeds.push(*seed);
            let name = name.trim();
            if name.starts_with("synthetic:") {
                refs.push(ModelRef {
                    label: name.to_string(),
                    spec: name.to_string(),
                });
            } else if Path::new(name).is_dir() {
                let label = Path::new(name)
                    .file_name()
                    .map_or(name.to_string(), |n| n.to_string_lossy().into_owned());
                refs.push(ModelRef {
                    label,
                    spec: name.to_string(),
                });
            } else {
                let canonical = canonical_pythia(&pythia_name(name))?;
                refs.push(ModelRef {
                    label: canonical,
                    spec: String::new(),
                });
            }
        }
        let mut missing = Vec::new();
        for (r, seed) in refs.iter_mut().zip(seeds) {
            if !r.spec.is_empty() {
                continue;
            }
            if self.synthetic {
                let base = r.label.strip_suffix("-deduped").unwrap_or(&r.label);
                r.spec = if seed == 0 {
                    format!("synthetic:{base}")
                } else {
                    format!("synthetic:{base}:seed={seed}")
                };
                r.label = format!("synthetic {}", r.label);
            } else {
                let dir = self.data_dir.join("models").join(&r.label);
                if !has_model_files(&dir) && !missing.contains(&r.label) {
                    missing.push(r.label.clone());
                }
                r.spec = dir.display().to_string();
            }
        }
        if !missing.is_empty() {
            self.fetch(&missing)?;
        }
        Ok(refs)
    }

    fn fetch(&self, models: &[String]) -> Result<()> {
        let list = models.join(",");
        let dest = self.data_dir.display();
        if !self.download {
            bail!(
                "{list} not found in {dest}/models; run `cargo xtask download --model {list} \
                 --data none --dest {dest}`, drop --no-download, or use --synthetic"
            );
        }
        eprintln!("downloading {list} into {dest}/models (cargo xtask download)");
        let args = download_args(
            models.to_vec(),
            vec![download::Dataset::None],
            self.data_dir,
        );
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let plan = download::Plan::new(&args, &env)?;
        download::execute(&plan).with_context(|| {
            format!("downloading {list} failed (use --synthetic to time random weights instead)")
        })?;
        Ok(())
    }
}

/// The download command's arguments for `models` and `data` into `dest`, defaults elsewhere.
pub fn download_args(
    models: Vec<String>,
    data: Vec<download::Dataset>,
    dest: &Path,
) -> download::Args {
    download::Args {
        model: if models.is_empty() {
            vec!["none".into()]
        } else {
            models
        },
        revision: "main".into(),
        data,
        pg19_books: 2,
        dest: dest.to_path_buf(),
        retries: 5,
        pg19_endpoint: None,
        wikitext_endpoint: None,
    }
}

/// Checks a Pythia name with the download module's rules (no network, no environment).
fn canonical_pythia(name: &str) -> Result<String> {
    let args = download_args(
        vec![name.to_string()],
        vec![download::Dataset::None],
        Path::new("."),
    );
    // A placeholder HF_HOME: the plan is only checked, never executed.
    let env = |var: &str| (var == "HF_HOME").then(|| "/nonexistent/hf-home".to_string());
    let plan = download::Plan::new(&args, &env)?;
    plan.models
        .into_iter()
        .next()
        .with_context(|| format!("unknown model `{name}`"))
}

fn has_model_files(dir: &Path) -> bool {
    download::has_model_files(dir)
}

/// Refuses a draft whose vocabulary differs from the target's (read from config.json) before
/// any model is loaded; synthetic Pythia models all share the 50304-row vocabulary.
pub fn check_vocab(target: &ModelRef, draft: &ModelRef) -> Result<()> {
    let vocab = |m: &ModelRef| -> Option<u64> {
        let text = fs::read_to_string(Path::new(&m.spec).join("config.json")).ok()?;
        serde_json::from_str::<Value>(&text).ok()?["vocab_size"].as_u64()
    };
    if let (Some(t), Some(d)) = (vocab(target), vocab(draft)) {
        if t != d {
            bail!(
                "draft {} has vocab_size {d} but target {} has {t}; pick a draft with the \
                 target's tokenizer (every Pythia size shares one, e.g. --draft pythia-70m)",
                draft.label,
                target.label
            );
        }
    }
    Ok(())
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    date_of_days((secs / 86_400) as i64)
}

/// The civil date of a day count since 1970-01-01 (proleptic Gregorian calendar).
pub fn date_of_days(days: i64) -> String {
    // Shift to an era starting on 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Lower-case ASCII letters and digits, runs of anything else as one `-`, at most 48 bytes.
pub fn sanitize(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(48);
    out.trim_end_matches('-').to_string()
}

/// A model's label as a file-name part: `synthetic pythia-2.8b` -> `pythia-2.8b`; lower-case
/// ASCII letters, digits and dots, runs of anything else as one `-`, at most 48 bytes.
pub fn model_tag(label: &str) -> String {
    let label = label.strip_prefix("synthetic ").unwrap_or(label);
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(48);
    out.trim_matches(['-', '.']).to_string()
}

/// The files one run writes: `<dir>/<stem>.<ext>` for each extension.
pub struct Outputs<'a> {
    pub dir: &'a Path,
    pub exts: &'a [&'a str],
    /// Overwrite files that exist (`--force`).
    pub force: bool,
}

impl Outputs<'_> {
    pub fn paths(&self, stem: &str) -> Vec<PathBuf> {
        self.exts
            .iter()
            .map(|ext| self.dir.join(format!("{stem}.{ext}")))
            .collect()
    }

    /// Refuses, before a run, to overwrite the files it would write (without `--force`).
    pub fn check(&self, stem: &str) -> Result<()> {
        match self.paths(stem).into_iter().find(|p| p.exists()) {
            Some(path) if !self.force => bail!(
                "{} exists (a run of the same models on the same day and device); pass --force \
                 to overwrite it, or another --results-dir",
                path.display()
            ),
            _ => Ok(()),
        }
    }

    /// The paths to write after a run: `stem`'s, or — when one of them appeared meanwhile (or
    /// the device differs from the one predicted before the run) and `--force` is not given —
    /// the first free `stem-2`, `stem-3`, …, so that no result is overwritten or lost.
    pub fn free(&self, stem: &str) -> Vec<PathBuf> {
        let taken = |paths: &[PathBuf]| !self.force && paths.iter().any(|p| p.exists());
        let first = self.paths(stem);
        if !taken(&first) {
            return first;
        }
        let mut n = 2;
        loop {
            let paths = self.paths(&format!("{stem}-{n}"));
            if !taken(&paths) {
                eprintln!(
                    "note: {} exists; writing {} instead (--force overwrites)",
                    first[0].display(),
                    paths[0].display()
                );
                return paths;
            }
            n += 1;
        }
    }
}

/// The device tag a run will most likely report, for checking output names before the run:
/// the CPU, or the NVIDIA GPU the driver lists when spedec has --device and may use CUDA.
pub fn expected_device_tag(device: Device, device_flag: bool) -> String {
    let unknown: Machine = serde_json::from_str("{}").expect("a machine with defaults");
    machine_and_tag(&unknown, device, device_flag).1
}

/// Words of CPU and GPU names that say nothing about the chip.
const NOISE: &[&str] = &["cpu", "processor", "with", "radeon", "graphics"];

/// File-name tag of the device a report was measured on: `cpu-<short cpu name>` or
/// `cuda-<gpu name>`. `machine` is spedec's description (`AMD EPYC, 2 threads (CPU)`); a
/// description naming CUDA or an NVIDIA GPU counts as CUDA.
pub fn device_tag(machine: &str) -> String {
    let lower = machine
        .to_ascii_lowercase()
        .replace("(r)", "")
        .replace("(tm)", "");
    let gpu_words = ["cuda", "nvidia", "geforce", "tesla", "quadro", "gpu"];
    let is_cuda = gpu_words.iter().any(|w| lower.contains(w));
    let name = if is_cuda {
        // The GPU's name: from the vendor word to the next separator.
        let start = ["nvidia", "geforce", "tesla", "quadro"]
            .iter()
            .filter_map(|w| lower.find(w))
            .min();
        match start {
            Some(start) => lower[start..]
                .split([',', ';', '(', ')', '|'])
                .next()
                .unwrap_or_default()
                .replace("nvidia", "")
                .to_string(),
            // Only the word CUDA: the GPU's name is not known.
            None => String::new(),
        }
    } else {
        lower
            .split([',', ';', '(', '@'])
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let words: Vec<&str> = name
        .split_whitespace()
        .filter(|w| !NOISE.contains(w) && !w.ends_with("-core"))
        .collect();
    let short = sanitize(&words.join(" "));
    let kind = if is_cuda { "cuda" } else { "cpu" };
    if short.is_empty() || short == kind {
        kind.to_string()
    } else {
        format!("{kind}-{short}")
    }
}

/// The machine a run used: the one its spedec report names, or for a report of an older spedec
/// that names none, the CPU when spedec has no --device or was told `cpu`, otherwise the
/// NVIDIA GPU the driver lists (what `auto` and `cuda` pick), if any.
pub fn run_machine(reported: &Machine, device: Device, device_flag: bool) -> Machine {
    if !reported.description.trim().is_empty() {
        return reported.clone();
    }
    if device_flag && device != Device::Cpu {
        let name =
            nvidia_gpu_name().or_else(|| (device == Device::Cuda).then(|| "CUDA GPU".into()));
        if let Some(name) = name {
            return Machine::cuda(Gpu {
                name,
                driver: String::new(),
                memory_bytes: 0,
            });
        }
    }
    Machine::host()
}

/// The description and the file-name tag of the machine a run used (see [`run_machine`]).
pub fn machine_and_tag(reported: &Machine, device: Device, device_flag: bool) -> (String, String) {
    let machine = run_machine(reported, device, device_flag);
    let tag = device_tag(&machine.description);
    (machine.description, tag)
}

/// The first GPU's model name from the NVIDIA driver's /proc files (Linux).
fn nvidia_gpu_name() -> Option<String> {
    let dir = fs::read_dir("/proc/driver/nvidia/gpus").ok()?;
    let mut entries: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    let info = fs::read_to_string(entries.first()?.join("information")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Model:"))
        .map(|m| m.trim().to_string())
}

/// The commit checked out in the source tree, marked when tracked files differ from it (read
/// only: `git rev-parse` and `git diff-index`; `None` outside a git checkout).
pub fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::null())
            .output()
            .ok()
    };
    let out = git(&["rev-parse", "--short=12", "HEAD"])?;
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || commit.is_empty() {
        return None;
    }
    let dirty =
        git(&["diff-index", "--quiet", "HEAD", "--"]).is_some_and(|o| o.status.code() == Some(1));
    Some(if dirty {
        format!("{commit} (+ uncommitted changes)")
    } else {
        commit
    })
}

/// The 1-, 5- and 15-minute load averages (Linux), to show how busy the machine was.
pub fn load_average() -> Option<String> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    let parts: Vec<&str> = text.split_whitespace().take(3).collect();
    (parts.len() == 3).then(|| parts.join(" "))
}

/// The command line as typed (`cargo xtask bench --synthetic …`).
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(date_of_days(0), "1970-01-01");
        assert_eq!(date_of_days(11_016), "2000-02-29");
        assert_eq!(date_of_days(19_782), "2024-02-29");
        assert_eq!(date_of_days(20_089), "2025-01-01");
        assert_eq!(date_of_days(-1), "1969-12-31");
        assert_eq!(today().len(), 10);
    }

    #[test]
    fn device_tags_are_short_and_safe() {
        assert_eq!(device_tag("AMD EPYC, 2 threads (CPU)"), "cpu-amd-epyc");
        assert_eq!(
            device_tag("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz, 8 threads (CPU)"),
            "cpu-intel-xeon-platinum-8375c"
        );
        assert_eq!(
            device_tag("AMD Ryzen 9 7950X 16-Core Processor, 32 threads (CPU)"),
            "cpu-amd-ryzen-9-7950x"
        );
        assert_eq!(
            device_tag("NVIDIA H100 80GB HBM3 (CUDA 12.4, driver 550.54)"),
            "cuda-h100-80gb-hbm3"
        );
        assert_eq!(
            device_tag("AMD EPYC 7R13, 16 threads; GPU: NVIDIA GeForce RTX 3060"),
            "cuda-geforce-rtx-3060"
        );
        assert_eq!(
            device_tag("NVIDIA H200 (CUDA driver 12.8, 140 GiB); host Intel(R) Xeon(R) Processor, 16 threads"),
            "cuda-h200"
        );
        assert_eq!(device_tag("cuda"), "cuda");
        assert_eq!(device_tag(""), "cpu");
        assert_eq!(sanitize("a/b c..d--"), "a-b-c-d");
    }

    #[test]
    fn model_tags_keep_the_size() {
        assert_eq!(model_tag("synthetic pythia-2.8b"), "pythia-2.8b");
        assert_eq!(
            model_tag("pythia-70m-deduped@step1000"),
            "pythia-70m-deduped-step1000"
        );
        assert_eq!(model_tag("My Model/"), "my-model");
    }

    #[test]
    fn outputs_are_never_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Outputs {
            dir: dir.path(),
            exts: &["json", "md"],
            force: false,
        };
        out.check("a").unwrap();
        assert_eq!(out.free("a"), out.paths("a"));
        fs::write(dir.path().join("a.md"), "old").unwrap();
        let err = out.check("a").unwrap_err().to_string();
        assert!(err.starts_with(&format!("{} exists", dir.path().join("a.md").display())));
        assert!(err.contains("pass --force to overwrite it"), "{err}");
        assert_eq!(out.free("a"), out.paths("a-2"));
        fs::write(dir.path().join("a-2.json"), "old").unwrap();
        assert_eq!(out.free("a"), out.paths("a-3"));
        out.force = true;
        out.check("a").unwrap();
        assert_eq!(out.free("a"), out.paths("a"));
    }

    #[test]
    fn pythia_names_accept_bare_sizes() {
        assert_eq!(pythia_name("70m"), "pythia-70m");
        assert_eq!(pythia_name(" pythia-2.8b "), "pythia-2.8b");
        assert_eq!(
            canonical_pythia("EleutherAI/Pythia-70M").unwrap(),
            "pythia-70m"
        );
        let err = canonical_pythia("pythia-7b").unwrap_err().to_string();
        assert!(err.starts_with("unknown model `pythia-7b`"), "{err}");
    }

    #[test]
    fn synthetic_models_need_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let source = ModelSource {
            synthetic: true,
            data_dir: dir.path(),
            download: false,
        };
        let names = [
            ("2.8b".to_string(), 0),
            ("pythia-70m-deduped".to_string(), 1),
        ];
        let refs = source.resolve(&names).unwrap();
        assert_eq!(refs[0].spec, "synthetic:pythia-2.8b");
        assert_eq!(refs[0].label, "synthetic pythia-2.8b");
        assert_eq!(refs[1].spec, "synthetic:pythia-70m:seed=1");
        assert_eq!(refs[1].label, "synthetic pythia-70m-deduped");
    }

    #[test]
    fn missing_models_without_download_name_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let source = ModelSource {
            synthetic: false,
            data_dir: dir.path(),
            download: false,
        };
        let err = source
            .resolve(&[("pythia-70m".to_string(), 0)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("run `cargo xtask download --model pythia-70m"),
            "{err}"
        );
    }

    #[test]
    fn the_reported_machine_wins_over_the_fallback() {
        let reported = Machine::new("AMD EPYC".into(), 2, None);
        assert_eq!(run_machine(&reported, Device::Cuda, true), reported);
        let old: Machine = serde_json::from_str("{}").unwrap();
        assert_eq!(run_machine(&old, Device::Cpu, true), Machine::host());
        assert_eq!(run_machine(&old, Device::Cuda, false), Machine::host());
        let cuda = run_machine(&old, Device::Cuda, true);
        assert_eq!(cuda.device, Device::Cuda);
        assert!(
            device_tag(&cuda.description).starts_with("cuda"),
            "{cuda:?}"
        );
    }
}
