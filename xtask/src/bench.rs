//! `cargo xtask bench`: the seed study's speed experiment — small (draft alone), target (alone)
//! and speculative decoding — through `spedec bench`, on Pythia-70m → Pythia-2.8b by default
//! (downloaded when missing) or on synthetic weights of the same shapes. Writes
//! `results/local/bench[-…]-<target>-<draft>-g<γ>-<date>-<device>.{json,md}` and prints the
//! table; a list of γ values (numbers and `auto`, γ chosen per step by spedec) or of drafts makes
//! a sweep with an SVG plot of speedup (measured and predicted) and acceptance. `--quick` is a
//! run of minutes instead of hours.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use spedec_report::bench::{gamma_label, mean_gamma, BenchMode, BenchReport};
use spedec_report::{fmt_opt, write_atomic, Device};

use crate::common::{self, check_vocab, ModelRef, ModelSource, Outputs, RunArgs, Spedec};
use crate::plot::{self, Panel, Series};

#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// Target model: a Pythia name (pythia-2.8b or 2.8b), a model folder, or a synthetic: spec
    #[arg(long, default_value = "pythia-2.8b", value_name = "MODEL")]
    pub target: String,

    /// Draft model(s), comma-separated; several make a draft sweep (e.g. 14m,70m,160m,410m)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pythia-70m",
        value_name = "MODELS"
    )]
    pub draft: Vec<String>,

    /// Draft tokens per verify step: a number from 1 to 16, or auto (spedec chooses γ before
    /// each step from the measured acceptance and costs, up to 16); comma-separated, several
    /// make a γ sweep (e.g. 1,2,4,8,auto)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4",
        value_name = "N|auto,…"
    )]
    pub gamma: Vec<Gamma>,

    /// Seeded random weights of the exact Pythia shapes, no download: timings only, acceptance
    /// (and every speedup of spec) is meaningless
    #[arg(long)]
    pub synthetic: bool,

    /// A quick first look, minutes instead of hours: 2 prompts × 1 measured run after 1 warm-up,
    /// 32 new tokens (each can still be set); results are named and headed "quick"
    #[arg(long)]
    pub quick: bool,

    /// New tokens per run [default: 200; 32 with --quick]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_new_tokens: Option<u32>,

    /// Measured runs per prompt and mode [default: 5; 1 with --quick]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: Option<u32>,

    /// Warm-up runs per mode, not measured [default: 1]
    #[arg(long, value_name = "N")]
    pub warmup: Option<u32>,

    /// Text file with one prompt per line [default: spedec's four built-in prompts; its first
    /// two with --quick]
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,

    /// Sampling temperature; 0 = greedy (the seed study's setting)
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    pub temperature: f32,

    /// Top-k filter when sampling (0 = off)
    #[arg(long, value_name = "K")]
    pub top_k: Option<u32>,

    /// Top-p filter when sampling (1 = off)
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,

    /// Seed of the sampler
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// KV-cache length in tokens [default: the model's 2048 positions]
    #[arg(long, value_name = "N")]
    pub context: Option<u32>,

    #[command(flatten)]
    pub run: RunArgs,
}

const AFTER_HELP: &str = "\
Each (draft, γ) pair is one `spedec bench` run: every mode (small = draft alone, target alone,
spec) generates --max-new-tokens tokens for each prompt, --warmup times unmeasured, then --runs
times measured. Cells are median (min–max) over prompts × runs. --gamma auto is passed on to
spedec, which then chooses γ (1 to 16) before each step; the tables label it `auto (≤ 16)`
and give the mean γ it chose, and a sweep's plot puts it after the fixed γ values, apart from
their lines.

Output, in --results-dir (default results/local, git-ignored; written under a temporary name,
then renamed; an existing file is not overwritten without --force):
  bench-<target>-<draft>-g<γ>-<date>-<device>.json / .md   one run (spedec's JSON report + how
                                                            it was run); -gauto for --gamma auto
  bench-synthetic-…, bench-quick-…                          with --synthetic, --quick
  bench-gamma-sweep-<target>-<draft>-<date>-<device>.*      sweeps, with a .svg plot
  bench-draft-sweep-<target>-<draft>+<draft>…-g<γ>-<date>-<device>.*
<date> is YYYY-MM-DD (UTC), <device> cpu-<cpu name> or cuda-<gpu name>, as spedec reports it.

Run time: the default run (per mode 4 prompts × 5 runs + 1 warm-up, 200 tokens each) takes
about 2 hours on a 2-core CPU with Pythia-2.8b; --quick takes minutes.

Examples:
  cargo xtask bench                                  # Pythia-70m -> Pythia-2.8b, γ = 4
  cargo xtask bench --synthetic --quick              # a first look, no download
  cargo xtask bench --synthetic --max-new-tokens 32 --runs 2
  cargo xtask bench --gamma 1,2,4,8 --runs 3
  cargo xtask bench --gamma auto                     # γ chosen per step by spedec
  cargo xtask bench --gamma 1,2,4,8,auto             # fixed γ against auto
  cargo xtask bench --draft pythia-14m,70m,160m,410m";

/// Largest fixed γ `spedec bench` takes (and the most `auto` may choose).
pub const MAX_GAMMA: u32 = 16;

/// One `--gamma` value: a fixed number of draft tokens per verify step, or `auto` (spedec
/// chooses γ before each step). Written `4` or `auto`, as `spedec bench --gamma` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gamma {
    /// The same γ, 1..=[`MAX_GAMMA`], every step.
    Fixed(u32),
    /// Chosen per step by spedec.
    Auto,
}

impl Gamma {
    pub fn is_auto(self) -> bool {
        self == Gamma::Auto
    }

    /// The value in the sweep's JSON: the number, or `"auto"`.
    pub fn to_json(self) -> Value {
        match self {
            Gamma::Fixed(g) => g.into(),
            Gamma::Auto => "auto".into(),
        }
    }

    /// Whether `report` is of a spec run with this γ (spedec writes `gamma` and `gamma_auto`).
    fn check_report(self, report: &BenchReport) -> Result<()> {
        let matches = match self {
            Gamma::Fixed(g) => !report.gamma_auto && report.gamma == g as usize,
            Gamma::Auto => report.gamma_auto,
        };
        if !matches {
            bail!(
                "spedec bench was asked for γ = {self} but its report says γ = {} (is the \
                 spedec binary older than this xtask? rebuild it)",
                gamma_label(report.gamma, report.gamma_auto)
            );
        }
        Ok(())
    }
}

impl FromStr for Gamma {
    type Err = String;

    fn from_str(text: &str) -> Result<Gamma, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Gamma::Auto);
        }
        match text.parse::<u32>() {
            Ok(g) if (1..=MAX_GAMMA).contains(&g) => Ok(Gamma::Fixed(g)),
            _ => Err(format!(
                "expected a number of draft tokens per verify step from 1 to {MAX_GAMMA}, or \
                 auto (e.g. --gamma 4, --gamma auto, --gamma 1,2,4,8,auto); got `{text}`"
            )),
        }
    }
}

impl fmt::Display for Gamma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gamma::Fixed(g) => write!(f, "{g}"),
            Gamma::Auto => f.write_str("auto"),
        }
    }
}

/// How a result was obtained, recorded beside it.
#[derive(Clone, Debug)]
pub struct Meta {
    pub date: String,
    /// spedec's description of the machine (CPU, or GPU).
    pub machine: String,
    /// File-name tag of the device, e.g. `cpu-amd-epyc`.
    pub device: String,
    pub device_requested: Device,
    pub command: String,
    pub synthetic: bool,
    /// `--quick`: fewer prompts, runs and tokens.
    pub quick: bool,
    /// `greedy` or the sampling parameters.
    pub sampling: String,
    pub load_before: Option<String>,
    pub load_after: Option<String>,
    pub threads: usize,
    pub wall_s: f64,
    pub git_commit: Option<String>,
}

/// What a synthetic run's numbers mean.
pub const SYNTHETIC_NOTE: &str = "Synthetic weights (seeded random values, exact Pythia \
shapes): the timings of each mode and the cost ratio c are real measurements of models of these \
sizes, but the acceptance rate α and everything derived from it (mean accepted length, spec's \
speedup, the predicted speedup) are NOT meaningful — random models agree only by chance. Use \
real weights for acceptance.";

impl Meta {
    pub fn to_json(&self) -> Value {
        json!({
            "date": self.date,
            "machine": self.machine,
            "device": self.device,
            "device_requested": self.device_requested.as_str(),
            "command": self.command,
            "synthetic": self.synthetic,
            "note": self.synthetic.then_some(SYNTHETIC_NOTE),
            "quick": self.quick,
            "sampling": self.sampling,
            "load_average_before": self.load_before,
            "load_average_after": self.load_after,
            "cpu_threads": self.threads,
            "wall_s": self.wall_s,
            "git_commit": self.git_commit,
        })
    }

    fn how_measured(&self) -> String {
        let load = match (&self.load_before, &self.load_after) {
            (Some(a), Some(b)) => format!(
                " Load average (1, 5, 15 min) before: {a}, after: {b}, on {} CPU threads — a \
                 load above the thread count means other processes shared the machine and the \
                 timings are noisy.",
                self.threads
            ),
            _ => String::new(),
        };
        let commit = self
            .git_commit
            .as_deref()
            .map_or(String::new(), |c| format!(" at commit {c}"));
        format!(
            "Measured {} on {} (`{}`){commit} with `{}`, {}; {:.0} s in all.{load}",
            self.date, self.machine, self.device, self.command, self.sampling, self.wall_s
        )
    }
}

/// One `spedec bench` run of a sweep.
#[derive(Clone, Debug)]
pub struct Point {
    pub draft: ModelRef,
    /// The γ asked for; the report says the same (checked when it is read back).
    pub gamma: Gamma,
    pub report: BenchReport,
}

impl Point {
    /// `4`, or `auto (≤ 16)`, from the report.
    pub fn gamma_label(&self) -> String {
        gamma_label(self.report.gamma, self.report.gamma_auto)
    }
}

/// `--quick`'s settings (where not given): prompts, measured runs, new tokens.
pub const QUICK_PROMPTS: [&str; 2] = [
    "The history of the city begins in the early nineteenth century, when",
    "In machine learning, a language model is",
];
const QUICK_RUNS: u32 = 1;
const QUICK_NEW_TOKENS: u32 = 32;

/// What a note on a quick run says.
pub const QUICK_NOTE: &str = "Quick run (`--quick`): few prompts, runs and tokens, for a first \
look; the medians are rougher than a full run's.";

/// The run's settings after `--quick` and the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Settings {
    max_new_tokens: u32,
    runs: u32,
    warmup: u32,
}

impl Settings {
    fn of(args: &Args) -> Settings {
        let (tokens, runs) = if args.quick {
            (QUICK_NEW_TOKENS, QUICK_RUNS)
        } else {
            (200, 5)
        };
        Settings {
            max_new_tokens: args.max_new_tokens.unwrap_or(tokens),
            runs: args.runs.unwrap_or(runs),
            warmup: args.warmup.unwrap_or(1),
        }
    }
}

/// How the result files are named: `bench[-synthetic][-quick][-<kind>]-<models>-<date>-<device>`.
struct Naming {
    prefix: String,
    /// `<target>-<draft>[+<draft>…][-g<γ>]`, `-gauto` for `--gamma auto`.
    models: String,
}

impl Naming {
    fn new(args: &Args, target: &ModelRef, drafts: &[ModelRef], gammas: &[Gamma]) -> Naming {
        let kind = match (drafts.len() > 1, gammas.len() > 1) {
            (false, false) => "",
            (true, false) => "-draft-sweep",
            (false, true) => "-gamma-sweep",
            (true, true) => "-sweep",
        };
        let synthetic = if args.synthetic { "-synthetic" } else { "" };
        let quick = if args.quick { "-quick" } else { "" };
        let mut draft_tags: Vec<String> =
            drafts.iter().map(|d| common::model_tag(&d.label)).collect();
        draft_tags.dedup();
        let mut drafts_part = draft_tags.join("+");
        if drafts_part.len() > 64 {
            drafts_part = format!("{}-drafts", draft_tags.len());
        }
        let mut models = format!("{}-{drafts_part}", common::model_tag(&target.label));
        if let [gamma] = gammas {
            models += &format!("-g{gamma}");
        }
        Naming {
            prefix: format!("bench{synthetic}{quick}{kind}"),
            models,
        }
    }

    fn stem(&self, date: &str, device: &str) -> String {
        format!("{}-{}-{date}-{device}", self.prefix, self.models)
    }
}

/// Entry point of the subcommand.
pub fn run(args: &Args) -> Result<()> {
    if let Some(path) = &args.prompts {
        if !path.is_file() {
            bail!("--prompts {} does not exist", path.display());
        }
    }
    let settings = Settings::of(args);
    let mut gammas: Vec<Gamma> = Vec::new();
    for &g in &args.gamma {
        if !gammas.contains(&g) {
            gammas.push(g);
        }
    }
    let source = ModelSource {
        synthetic: args.synthetic,
        data_dir: &args.run.data_dir,
        download: !args.run.no_download,
    };
    // Synthetic drafts get another seed, so a draft of the target's size is another model.
    let mut names = vec![(args.target.clone(), 0)];
    names.extend(args.draft.iter().map(|d| (d.clone(), 1)));
    let models = source.resolve(&names)?;
    let (target, drafts) = (models[0].clone(), models[1..].to_vec());
    for draft in &drafts {
        check_vocab(&target, draft)?;
    }
    let naming = Naming::new(args, &target, &drafts, &gammas);
    let outputs = Outputs {
        dir: &args.run.results_dir,
        exts: if drafts.len() * gammas.len() == 1 {
            &["json", "md"]
        } else {
            &["json", "md", "svg"]
        },
        force: args.run.force,
    };
    let spedec = Spedec::locate(args.run.spedec.as_deref())?;
    let device_args = spedec.device_args("bench", args.run.device)?;
    let expected_device = common::expected_device_tag(args.run.device, !device_args.is_empty());
    outputs.check(&naming.stem(&common::today(), &expected_device))?;
    fs::create_dir_all(&args.run.results_dir)
        .with_context(|| format!("cannot create {}", args.run.results_dir.display()))?;

    let load_before = common::load_average();
    let start = Instant::now();
    // --quick's prompts go to spedec as a --prompts file, removed afterwards.
    let quick_prompts = (args.quick && args.prompts.is_none()).then(|| {
        args.run
            .results_dir
            .join(format!(".bench-prompts-{}.txt", std::process::id()))
    });
    if let Some(path) = &quick_prompts {
        write_atomic(path, (QUICK_PROMPTS.join("\n") + "\n").as_bytes())?;
    }
    let mut extra = pass_through(args, settings, quick_prompts.as_deref());
    extra.extend(device_args.iter().cloned());
    let points = run_points(args, &spedec, &target, &drafts, &gammas, &extra);
    if let Some(path) = &quick_prompts {
        let _ = fs::remove_file(path);
    }
    let points = points?;
    let reported = &points[0].report.machine;
    let (machine, device) =
        common::machine_and_tag(reported, args.run.device, !device_args.is_empty());
    let meta = Meta {
        date: common::today(),
        device,
        machine,
        device_requested: args.run.device,
        command: common::command_line(),
        synthetic: args.synthetic,
        quick: args.quick,
        sampling: sampling(args),
        load_before,
        load_after: common::load_average(),
        threads: spedec_report::machine::host_threads(),
        wall_s: start.elapsed().as_secs_f64(),
        git_commit: common::git_commit(),
    };
    let paths = outputs.free(&naming.stem(&meta.date, &meta.device));
    if points.len() == 1 {
        write_single(&paths, &target, &points[0], &meta)?;
    } else {
        write_sweep(&paths, &target, &points, &meta)?;
    }
    for path in paths {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// One `spedec bench` per (draft, γ), with the `extra` arguments.
fn run_points(
    args: &Args,
    spedec: &Spedec,
    target: &ModelRef,
    drafts: &[ModelRef],
    gammas: &[Gamma],
    extra: &[String],
) -> Result<Vec<Point>> {
    let total = drafts.len() * gammas.len();
    let mut points = Vec::new();
    for draft in drafts {
        for &gamma in gammas {
            eprintln!(
                "[{}/{total}] spedec bench: {} -> {}, γ = {gamma}",
                points.len() + 1,
                draft.label,
                target.label
            );
            let tmp = args.run.results_dir.join(format!(
                ".bench-{}-{}.json",
                std::process::id(),
                points.len()
            ));
            let mut cmd = vec![
                "bench".to_string(),
                "--target".into(),
                target.spec.clone(),
                "--draft".into(),
                draft.spec.clone(),
                "--gamma".into(),
                gamma.to_string(),
            ];
            cmd.extend(extra.iter().cloned());
            cmd.extend(["--json".into(), tmp.display().to_string()]);
            let result = spedec
                .run(&cmd)
                .and_then(|_| read_report(&tmp))
                .and_then(|report| gamma.check_report(&report).map(|_| report));
            let _ = fs::remove_file(&tmp);
            points.push(Point {
                draft: draft.clone(),
                gamma,
                report: result?,
            });
        }
    }
    Ok(points)
}

fn read_report(path: &Path) -> Result<BenchReport> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("spedec wrote no report to {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("bad JSON from spedec in {}", path.display()))
}

/// The options handed to `spedec bench` (`prompts` where --prompts is not given).
fn pass_through(args: &Args, settings: Settings, prompts: Option<&Path>) -> Vec<String> {
    let mut out = vec![
        "--max-new-tokens".to_string(),
        settings.max_new_tokens.to_string(),
        "--runs".into(),
        settings.runs.to_string(),
        "--warmup".into(),
        settings.warmup.to_string(),
        "--temperature".into(),
        args.temperature.to_string(),
    ];
    let optional = [
        (
            "--prompts",
            args.prompts
                .as_deref()
                .or(prompts)
                .map(|p| p.display().to_string()),
        ),
        ("--top-k", args.top_k.map(|v| v.to_string())),
        ("--top-p", args.top_p.map(|v| v.to_string())),
        ("--seed", args.seed.map(|v| v.to_string())),
        ("--context", args.context.map(|v| v.to_string())),
    ];
    for (flag, value) in optional {
        if let Some(value) = value {
            out.extend([flag.to_string(), value]);
        }
    }
    out
}

fn sampling(args: &Args) -> String {
    if args.temperature == 0.0 {
        return "greedy decoding".into();
    }
    let mut s = format!("sampling at temperature {}", args.temperature);
    if let Some(k) = args.top_k {
        s += &format!(", top-k {k}");
    }
    if let Some(p) = args.top_p {
        s += &format!(", top-p {p}");
    }
    s + &format!(", seed {}", args.seed.unwrap_or(0))
}

/// Writes one run's report and table to `paths` (.json, .md).
fn write_single(paths: &[PathBuf], target: &ModelRef, point: &Point, meta: &Meta) -> Result<()> {
    let mut report = serde_json::to_value(&point.report)?;
    report["xtask"] = meta.to_json();
    let table = markdown(&point.report, &target.label, &point.draft.label, meta);
    println!("{table}");
    write_atomic(&paths[0], serde_json::to_string_pretty(&report)?.as_bytes())?;
    write_atomic(&paths[1], table.as_bytes())?;
    Ok(())
}

/// `## <kind>[ (quick run)]: <what>`, then the notes on quick and synthetic runs.
fn heading(kind: &str, what: &str, meta: &Meta) -> String {
    let quick = if meta.quick { " (quick run)" } else { "" };
    let mut out = format!("## {kind}{quick}: {what}");
    if meta.quick {
        out += &format!("\n\n> **Note.** {QUICK_NOTE}");
    }
    if meta.synthetic {
        out += &format!("\n\n> **Note.** {SYNTHETIC_NOTE}");
    }
    out + "\n\n"
}

/// The seed study's speed table (TTFT and TPOT in ms, throughput in tokens/s) plus the
/// speculative statistics, for one `spedec bench` report.
pub fn markdown(report: &BenchReport, target: &str, draft: &str, meta: &Meta) -> String {
    let what = format!(
        "{draft} → {target}, γ = {}",
        gamma_label(report.gamma, report.gamma_auto)
    );
    let mut out = heading("Speed", &what, meta);
    out += &report.tables(target, draft);
    out += &format!(
        "\nEach mode: {} prompt(s) × {} measured run(s) after {} warm-up run(s), {} new tokens \
         per run; cells are median (min–max) over prompts × runs. TTFT: start to the first new \
         token (prefill included); TPOT: (total − TTFT) / (new tokens − 1); throughput: new \
         tokens / total time. c = small TPOT / target TPOT; predicted speedup = (1 − α^(γ+1)) / \
         ((1 − α)(γc + 1)) (Leviathan et al., 2023).{}\n\n{}\n",
        report.prompts.len(),
        report.runs,
        report.warmup,
        report.max_new_tokens,
        if report.gamma_auto {
            format!(" {}", auto_note(report.gamma))
        } else {
            String::new()
        },
        meta.how_measured()
    );
    out
}

/// What `auto (≤ max)` means, under a table with an auto point.
fn auto_note(max: usize) -> String {
    format!(
        "γ auto (≤ {max}): spedec chose γ from 1 to {max} before each step from the measured \
         acceptance and costs; mean γ is over the verify steps, and the predicted speedup is \
         Leviathan et al.'s over the chosen γ values, Σ h_g E(α, g) / Σ h_g (gc + 1) with h_g \
         the steps that drafted g tokens."
    )
}

/// Writes a sweep's report, table and plot to `paths` (.json, .md, .svg).
fn write_sweep(paths: &[PathBuf], target: &ModelRef, points: &[Point], meta: &Meta) -> Result<()> {
    let mut drafts: Vec<String> = Vec::new();
    let mut gammas: Vec<Gamma> = Vec::new();
    for p in points {
        if !drafts.contains(&p.draft.label) {
            drafts.push(p.draft.label.clone());
        }
        if !gammas.contains(&p.gamma) {
            gammas.push(p.gamma);
        }
    }
    let svg_name = paths[2]
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let table = sweep_markdown(points, &target.label, meta, &svg_name);
    println!("{table}");
    let report = json!({
        "xtask": meta.to_json(),
        "target": target.label,
        "drafts": drafts,
        "gammas": gammas.iter().map(|g| g.to_json()).collect::<Vec<_>>(),
        "points": points.iter().map(|p| {
            let mut r = serde_json::to_value(&p.report)?;
            r["draft_label"] = p.draft.label.clone().into();
            Ok(r)
        }).collect::<Result<Vec<_>>>()?,
    });
    let svg = sweep_plot(points, &target.label, meta.synthetic);
    write_atomic(&paths[0], serde_json::to_string_pretty(&report)?.as_bytes())?;
    write_atomic(&paths[1], table.as_bytes())?;
    write_atomic(&paths[2], svg.as_bytes())?;
    Ok(())
}

/// A summary row per (draft, γ), then each run's full tables. With an `auto` point a `mean γ`
/// column (the mean γ of the verify steps, from the reports' `gamma_histogram`) follows γ.
pub fn sweep_markdown(points: &[Point], target: &str, meta: &Meta, svg_name: &str) -> String {
    let mut out = heading("Speed sweep", &format!("drafts → {target}"), meta);
    out += &format!("![speedup and acceptance]({svg_name})\n\n");
    let auto_max = points
        .iter()
        .filter(|p| p.report.gamma_auto)
        .map(|p| p.report.gamma)
        .max();
    let (mean_head, mean_rule) = if auto_max.is_some() {
        (" mean γ |", "---|")
    } else {
        ("", "")
    };
    out += &format!(
        "| draft | γ |{mean_head} α | mean accepted length | c | speedup, TPOT | speedup, \
         throughput | predicted speedup | spec TPOT (ms) | target TPOT (ms) |\n\
         |---|---|{mean_rule}---|---|---|---|---|---|---|---|\n"
    );
    for p in points {
        let r = &p.report;
        let spec = r.mode(BenchMode::Spec);
        let tpot = |m: BenchMode| fmt_opt(r.median_tpot_ms(m), 2);
        // The mean over the verify steps; a fixed γ's own value where the report has no
        // histogram (written before spedec recorded one).
        let mean = match (auto_max, spec.and_then(|s| mean_gamma(&s.gamma_histogram))) {
            (None, _) => String::new(),
            (Some(_), Some(m)) => format!(" {m:.2} |"),
            (Some(_), None) if !r.gamma_auto => format!(" {} |", r.gamma),
            (Some(_), None) => " — |".into(),
        };
        out += &format!(
            "| {} | {} |{mean} {} | {} | {} | {} | {} | {} | {} | {} |\n",
            p.draft.label,
            p.gamma_label(),
            fmt_opt(spec.and_then(|s| s.acceptance_rate), 3),
            fmt_opt(spec.and_then(|s| s.mean_accepted_length), 3),
            fmt_opt(r.cost_ratio, 4),
            fmt_opt(r.speedup_tpot, 3),
            fmt_opt(r.speedup_throughput, 3),
            fmt_opt(r.predicted_speedup, 3),
            tpot(BenchMode::Spec),
            tpot(BenchMode::Target),
        );
    }
    if let Some(first) = points.first() {
        out += &format!(
            "\nEvery point is its own `spedec bench` run (small, target and spec, each {} \
             prompt(s) × {} run(s) after {} warm-up, {} new tokens); speedups are of spec over \
             that run's target, from medians.{}\n\n{}\n",
            first.report.prompts.len(),
            first.report.runs,
            first.report.warmup,
            first.report.max_new_tokens,
            auto_max.map_or(String::new(), |max| format!(" {}", auto_note(max))),
            meta.how_measured()
        );
    }
    for p in points {
        out += &format!(
            "\n### {} → {target}, γ = {}\n\n",
            p.draft.label,
            p.gamma_label()
        );
        out += &p.report.tables(target, &p.draft.label);
    }
    out
}

/// Speedup (measured from TPOT, predicted) and acceptance against γ, or against the draft when
/// only the draft varies; one series per draft when both vary. `auto` has no numeric γ: it is
/// its own category after the fixed γ values (`auto (≤ 16)`), apart from them — its markers
/// are not joined to the fixed γ's lines and a dotted rule separates them.
pub fn sweep_plot(points: &[Point], target: &str, synthetic: bool) -> String {
    let mut drafts: Vec<&str> = Vec::new();
    let mut gammas: Vec<Gamma> = Vec::new();
    for p in points {
        if !drafts.contains(&p.draft.label.as_str()) {
            drafts.push(&p.draft.label);
        }
        if !gammas.contains(&p.gamma) {
            gammas.push(p.gamma);
        }
    }
    // Fixed γ in the order given, then auto.
    gammas.sort_by_key(|g| g.is_auto());
    let by_draft = gammas.len() == 1;
    let label = |g: &Gamma| {
        points
            .iter()
            .find(|p| p.gamma == *g)
            .map_or(g.to_string(), Point::gamma_label)
    };
    let ticks: Vec<String> = if by_draft {
        drafts.iter().map(|d| d.to_string()).collect()
    } else {
        gammas.iter().map(label).collect()
    };
    let apart_from = (!by_draft)
        .then(|| gammas.iter().position(|g| g.is_auto()))
        .flatten();
    // (series suffix, x index) → point
    let groups: Vec<(String, Vec<Option<&Point>>)> = if by_draft {
        vec![(
            String::new(),
            drafts
                .iter()
                .map(|d| points.iter().find(|p| p.draft.label == *d))
                .collect(),
        )]
    } else {
        drafts
            .iter()
            .map(|d| {
                let suffix = if drafts.len() > 1 {
                    format!(", {d}")
                } else {
                    String::new()
                };
                let row = gammas
                    .iter()
                    .map(|g| points.iter().find(|p| p.draft.label == *d && p.gamma == *g))
                    .collect();
                (suffix, row)
            })
            .collect()
    };
    let values = |row: &[Option<&Point>], f: &dyn Fn(&BenchReport) -> Option<f64>| {
        row.iter()
            .map(|p| p.and_then(|p| f(&p.report)))
            .collect::<Vec<_>>()
    };
    let mut speed = Vec::new();
    let mut accept = Vec::new();
    for (suffix, row) in &groups {
        speed.push(Series {
            name: format!("measured speedup (TPOT){suffix}"),
            values: values(row, &|r| r.speedup_tpot),
            dashed: false,
        });
        speed.push(Series {
            name: format!("predicted speedup (Leviathan et al.){suffix}"),
            values: values(row, &|r| r.predicted_speedup),
            dashed: true,
        });
        accept.push(Series {
            name: format!("acceptance rate α{suffix}"),
            values: values(row, &|r| r.mode(BenchMode::Spec)?.acceptance_rate),
            dashed: false,
        });
    }
    let panels = [
        Panel {
            title: format!("speedup of spec over {target}"),
            y_label: "speedup (×)".into(),
            series: speed,
            y_max: None,
            reference: Some(1.0),
        },
        Panel {
            title: if synthetic {
                "acceptance (synthetic weights: not meaningful)".into()
            } else {
                "acceptance of draft tokens".into()
            },
            y_label: "acceptance rate α".into(),
            series: accept,
            y_max: Some(1.0),
            reference: None,
        },
    ];
    let (title, x_label) = if by_draft {
        (
            format!("Draft sweep, γ = {}", label(&gammas[0])),
            "draft model",
        )
    } else {
        (
            format!("γ sweep → {target}"),
            "γ (draft tokens per verify step)",
        )
    };
    plot::line_chart(&title, x_label, &ticks, apart_from, &panels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Gamma::{Auto, Fixed};

    fn summary(median: f64, min: f64, max: f64) -> Value {
        json!({"median": median, "min": min, "max": max, "n": 4})
    }

    /// A report as spedec writes it, with round numbers; for `auto`, γ ≤ 16 and a histogram of
    /// the chosen γ with mean 2.3.
    fn report(gamma: Gamma, alpha: f64) -> BenchReport {
        let (max, auto, histogram) = match gamma {
            Gamma::Fixed(g) => (g, false, json!([])),
            Gamma::Auto => (16, true, json!([0, 2, 3, 5])),
        };
        let mut report: BenchReport = serde_json::from_value(json!({
            "gamma": max, "gamma_auto": auto, "max_new_tokens": 200, "runs": 5, "warmup": 1,
            "prompts": ["a", "b", "c", "d"],
            "modes": [
                {"mode": "small", "ttft_ms": summary(12.5, 10.0, 20.0),
                 "tpot_ms": summary(9.0, 8.5, 9.5), "throughput_tok_s": summary(111.0, 100.0, 115.0),
                 "acceptance_rate": null, "mean_accepted_length": null,
                 "acceptance_per_position": [], "accepted_length_histogram": [],
                 "draft_s": 0.0, "target_s": 1.0, "sampling_s": 0.1, "prefill_s": 0.1, "runs": []},
                {"mode": "target", "ttft_ms": summary(1406.1, 1400.0, 1500.0),
                 "tpot_ms": summary(267.0, 260.0, 270.0), "throughput_tok_s": summary(3.74, 3.7, 3.8),
                 "acceptance_rate": null, "mean_accepted_length": null,
                 "acceptance_per_position": [], "accepted_length_histogram": [],
                 "draft_s": 0.0, "target_s": 50.0, "sampling_s": 0.1, "prefill_s": 1.0, "runs": []},
                {"mode": "spec", "ttft_ms": summary(957.0, 900.0, 1000.0),
                 "tpot_ms": summary(107.19, 100.0, 150.0), "throughput_tok_s": summary(9.33, 6.7, 9.4),
                 "acceptance_rate": alpha, "mean_accepted_length": 2.5,
                 "acceptance_per_position": [0.8, 0.7, null, 0.5], "accepted_length_histogram": [1, 2, 3, 4, 5],
                 "draft_s": 2.0, "target_s": 6.0, "sampling_s": 1.0, "prefill_s": 1.0, "runs": []}
            ],
            "speedup_tpot": 2.491, "speedup_throughput": 2.4947, "cost_ratio": 0.0337,
            "predicted_speedup": null, "target": "data/models/pythia-2.8b",
            "draft": "data/models/pythia-70m", "machine": "AMD EPYC, 2 threads (CPU)"
        }))
        .expect("a spedec bench report");
        report.modes[2].gamma_histogram = serde_json::from_value(histogram).unwrap();
        report
    }

    fn meta(synthetic: bool) -> Meta {
        Meta {
            date: "2025-01-02".into(),
            machine: "AMD EPYC, 2 threads (CPU)".into(),
            device: "cpu-amd-epyc".into(),
            device_requested: Device::Auto,
            command: "cargo xtask bench".into(),
            synthetic,
            quick: false,
            sampling: "greedy decoding".into(),
            load_before: Some("1.00 2.00 3.00".into()),
            load_after: Some("4.00 5.00 6.00".into()),
            threads: 2,
            wall_s: 12.0,
            git_commit: None,
        }
    }

    fn point(draft: &str, gamma: Gamma, alpha: f64) -> Point {
        Point {
            draft: ModelRef {
                label: draft.into(),
                spec: format!("data/models/{draft}"),
            },
            gamma,
            report: report(gamma, alpha),
        }
    }

    #[test]
    fn markdown_has_the_seed_table_and_the_statistics() {
        let md = markdown(
            &report(Fixed(4), 0.75),
            "pythia-2.8b",
            "pythia-70m",
            &meta(false),
        );
        for needle in [
            "## Speed: pythia-70m → pythia-2.8b, γ = 4",
            "| model / mode | TTFT (ms) | TPOT (ms) | throughput (tokens/s) |",
            "| pythia-70m (small) | 12.50 (10.00–20.00) | 9.00 (8.50–9.50) | 111.00 (100.00–115.00) |",
            "| pythia-2.8b (target) | 1406.10 (1400.00–1500.00) | 267.00 (260.00–270.00) |",
            "| speculative decoding (spec) | 957.00 (900.00–1000.00) | 107.19 (100.00–150.00) |",
            "| speedup, TPOT (target / spec) | 2.491× |",
            "| acceptance rate α (accepted / drafted) | 0.750 |",
            "| mean accepted length (tokens per verify step) | 2.500 |",
            "| acceptance by draft position 1..γ | 0.800, 0.700, —, 0.500 |",
            "| verify steps by accepted drafts 0..γ | 1, 2, 3, 4, 5 |",
            "| cost ratio c (small TPOT / target TPOT) | 0.0337 |",
            "| predicted speedup (Leviathan et al., from α, γ, c) | — |",
            "| spec time: draft / verify / sampling / prefill | 20% / 60% / 10% / 10% |",
            "4 prompt(s) × 5 measured run(s) after 1 warm-up run(s), 200 new tokens",
            "Measured 2025-01-02 on AMD EPYC, 2 threads (CPU) (`cpu-amd-epyc`)",
            "before: 1.00 2.00 3.00, after: 4.00 5.00 6.00, on 2 CPU threads",
        ] {
            assert!(md.contains(needle), "`{needle}` missing from:\n{md}");
        }
        assert!(!md.contains("NOT meaningful"));
        let synthetic = markdown(&report(Fixed(4), 0.0), "t", "d", &meta(true));
        assert!(synthetic.contains("NOT meaningful"), "{synthetic}");
    }

    #[test]
    fn sweep_outputs_name_every_point() {
        let points = vec![
            point("pythia-70m", Fixed(1), 0.9),
            point("pythia-70m", Fixed(2), 0.8),
        ];
        let md = sweep_markdown(&points, "pythia-2.8b", &meta(false), "x.svg");
        assert!(md.contains("![speedup and acceptance](x.svg)"));
        assert!(
            md.contains("| pythia-70m | 2 | 0.800 | 2.500 | 0.0337 | 2.491 |"),
            "{md}"
        );
        assert!(md.contains("### pythia-70m → pythia-2.8b, γ = 1"));
        let svg = sweep_plot(&points, "pythia-2.8b", false);
        for name in [
            "measured speedup (TPOT)",
            "predicted speedup (Leviathan et al.)",
            "acceptance rate α",
            "γ (draft tokens per verify step)",
        ] {
            assert!(svg.contains(name), "{name}");
        }
        let drafts = vec![
            point("pythia-14m", Fixed(4), 0.5),
            point("pythia-70m", Fixed(4), 0.6),
        ];
        let svg = sweep_plot(&drafts, "pythia-2.8b", true);
        assert!(svg.contains(">pythia-14m</text>") && svg.contains("draft model"));
        assert!(svg.contains("not meaningful"));
        let both = vec![
            point("a", Fixed(1), 0.5),
            point("b", Fixed(1), 0.6),
            point("a", Fixed(2), 0.4),
        ];
        let svg = sweep_plot(&both, "t", false);
        assert!(svg.contains("acceptance rate α, a") && svg.contains("acceptance rate α, b"));
    }

    /// `cargo xtask bench` parsed from `argv` (after the subcommand).
    fn args(argv: &[&str]) -> Result<Args, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn gamma_is_a_number_from_1_to_16_or_auto() {
        assert_eq!("4".parse(), Ok(Fixed(4)));
        assert_eq!("16".parse(), Ok(Fixed(16)));
        assert_eq!("1".parse(), Ok(Fixed(1)));
        assert_eq!("auto".parse(), Ok(Auto));
        assert_eq!(" AUTO ".parse(), Ok(Auto));
        for bad in ["0", "17", "-1", "4.5", "x", "", "automatic"] {
            let err = bad.parse::<Gamma>().unwrap_err();
            assert!(
                err.starts_with(
                    "expected a number of draft tokens per verify step from 1 to 16, or auto"
                ) && err.ends_with(&format!("got `{}`", bad.trim())),
                "{bad}: {err}"
            );
        }
        assert_eq!(Fixed(8).to_string(), "8");
        assert_eq!(Auto.to_string(), "auto");
        assert_eq!(Auto.to_string().parse(), Ok(Auto));
        assert_eq!(Fixed(3).to_json(), json!(3));
        assert_eq!(Auto.to_json(), json!("auto"));

        assert_eq!(args(&[]).unwrap().gamma, vec![Fixed(4)]);
        assert_eq!(args(&["--gamma", "auto"]).unwrap().gamma, vec![Auto]);
        assert_eq!(
            args(&["--gamma", "1,2,4,8,auto"]).unwrap().gamma,
            vec![Fixed(1), Fixed(2), Fixed(4), Fixed(8), Auto]
        );
        let err = args(&["--gamma", "1,0"]).unwrap_err().to_string();
        assert!(
            err.contains("--gamma") && err.contains("from 1 to 16, or auto"),
            "{err}"
        );
    }

    #[test]
    fn auto_files_are_named_gauto() {
        let model = |label: &str| ModelRef {
            label: label.into(),
            spec: format!("data/models/{label}"),
        };
        let (target, draft) = (model("pythia-2.8b"), model("pythia-70m"));
        let stem = |argv: &[&str], gammas: &[Gamma], drafts: &[ModelRef]| {
            Naming::new(&args(argv).unwrap(), &target, drafts, gammas)
                .stem("2025-01-02", "cpu-amd-epyc")
        };
        let one = std::slice::from_ref(&draft);
        assert_eq!(
            stem(&[], &[Auto], one),
            "bench-pythia-2.8b-pythia-70m-gauto-2025-01-02-cpu-amd-epyc"
        );
        assert_eq!(
            stem(&["--synthetic", "--quick"], &[Fixed(4)], one),
            "bench-synthetic-quick-pythia-2.8b-pythia-70m-g4-2025-01-02-cpu-amd-epyc"
        );
        assert_eq!(
            stem(&[], &[Fixed(1), Auto], one),
            "bench-gamma-sweep-pythia-2.8b-pythia-70m-2025-01-02-cpu-amd-epyc"
        );
        let drafts = [draft.clone(), model("pythia-14m")];
        assert_eq!(
            stem(&[], &[Auto], &drafts),
            "bench-draft-sweep-pythia-2.8b-pythia-70m+pythia-14m-gauto-2025-01-02-cpu-amd-epyc"
        );
    }

    #[test]
    fn a_report_of_another_gamma_is_refused() {
        assert!(Fixed(4).check_report(&report(Fixed(4), 0.5)).is_ok());
        assert!(Auto.check_report(&report(Auto, 0.5)).is_ok());
        let err = Auto.check_report(&report(Fixed(4), 0.5)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spedec bench was asked for γ = auto but its report says γ = 4"),
            "{err}"
        );
        let err = Fixed(16).check_report(&report(Auto, 0.5)).unwrap_err();
        assert!(
            err.to_string().contains("report says γ = auto (≤ 16)"),
            "{err}"
        );
        assert!(Fixed(2).check_report(&report(Fixed(4), 0.5)).is_err());
    }

    #[test]
    fn an_auto_run_is_labelled_with_its_bound_and_mean() {
        let md = markdown(
            &report(Auto, 0.75),
            "pythia-2.8b",
            "pythia-70m",
            &meta(false),
        );
        for needle in [
            "## Speed: pythia-70m → pythia-2.8b, γ = auto (≤ 16)",
            "| γ chosen per step (auto): verify steps by γ 0..16 | 0, 2, 3, 5 |",
            "| mean γ (auto) | 2.30 |",
            "γ auto (≤ 16): spedec chose γ from 1 to 16 before each step",
        ] {
            assert!(md.contains(needle), "`{needle}` missing from:\n{md}");
        }
        let fixed = markdown(&report(Fixed(4), 0.75), "t", "d", &meta(false));
        assert!(!fixed.contains("γ auto"), "{fixed}");
    }

    #[test]
    fn a_sweep_with_auto_puts_it_in_the_tables_and_apart_in_the_plot() {
        // auto given first: the tables keep the order given, the plot puts auto last.
        let mut points = vec![
            point("pythia-70m", Auto, 0.7),
            point("pythia-70m", Fixed(1), 0.9),
            point("pythia-70m", Fixed(2), 0.8),
        ];
        // γ = 2 with one short step (the last tokens): mean γ 1.9; γ = 1 without a histogram.
        points[2].report.modes[2].gamma_histogram = vec![0, 1, 9];
        let md = sweep_markdown(&points, "pythia-2.8b", &meta(false), "x.svg");
        for needle in [
            "| draft | γ | mean γ | α | mean accepted length |",
            "|---|---|---|---|---|---|---|---|---|---|---|\n",
            "| pythia-70m | auto (≤ 16) | 2.30 | 0.700 | 2.500 | 0.0337 | 2.491 |",
            "| pythia-70m | 1 | 1 | 0.900 | 2.500 |",
            "| pythia-70m | 2 | 1.90 | 0.800 |",
            "### pythia-70m → pythia-2.8b, γ = auto (≤ 16)",
            "### pythia-70m → pythia-2.8b, γ = 2",
            "| mean γ (auto) | 2.30 |",
            "γ auto (≤ 16): spedec chose γ",
        ] {
            assert!(md.contains(needle), "`{needle}` missing from:\n{md}");
        }
        assert!(
            md.find("| pythia-70m | auto (≤ 16) |") < md.find("| pythia-70m | 1 |"),
            "{md}"
        );
        // Without auto: no mean γ column and no auto note.
        let fixed = sweep_markdown(&points[1..], "pythia-2.8b", &meta(false), "x.svg");
        assert!(fixed.contains("| draft | γ | α |") && !fixed.contains("γ auto"));

        let svg = sweep_plot(&points, "pythia-2.8b", false);
        // The x ticks (centred, unlike the y ticks) of the first panel, left to right.
        let x_of = |t: &str| -> f64 {
            let line = svg
                .lines()
                .find(|l| l.ends_with(&format!(r#"text-anchor="middle">{t}</text>"#)))
                .unwrap_or_else(|| panic!("no x tick {t} in {svg}"));
            let x = line
                .split("x=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            x.parse().unwrap()
        };
        assert!(x_of("1") < x_of("2") && x_of("2") < x_of("auto (≤ 16)"));
        // A dotted rule before auto in each panel, and the fixed γ's lines end before it:
        // each polyline has two points (γ = 1, 2).
        assert_eq!(svg.matches(r#"class="apart""#).count(), 2);
        for line in svg.lines().filter(|l| l.contains("<polyline")) {
            assert_eq!(
                line.split('"').nth(1).unwrap().split(' ').count(),
                2,
                "{line}"
            );
        }
        // Measured speedup and acceptance at γ = 1, 2 and auto (the fixture predicts nothing).
        assert_eq!(svg.matches("<circle").count(), 6);

        // A draft sweep with auto only: titled with the label, no rule.
        let drafts = vec![
            point("pythia-14m", Auto, 0.5),
            point("pythia-70m", Auto, 0.6),
        ];
        let svg = sweep_plot(&drafts, "pythia-2.8b", false);
        assert!(svg.contains("Draft sweep, γ = auto (≤ 16)") && !svg.contains("apart"));
        let md = sweep_markdown(&drafts, "pythia-2.8b", &meta(false), "x.svg");
        assert!(md.contains("| pythia-14m | auto (≤ 16) | 2.30 |"), "{md}");
    }

    #[test]
    fn a_sweep_report_lists_auto_among_its_gammas() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = ["json", "md", "svg"]
            .iter()
            .map(|e| dir.path().join(format!("sweep.{e}")))
            .collect();
        let target = ModelRef {
            label: "pythia-2.8b".into(),
            spec: "data/models/pythia-2.8b".into(),
        };
        let points = vec![
            point("pythia-70m", Fixed(4), 0.8),
            point("pythia-70m", Auto, 0.7),
        ];
        write_sweep(&paths, &target, &points, &meta(false)).unwrap();
        let r: Value = serde_json::from_str(&fs::read_to_string(&paths[0]).unwrap()).unwrap();
        assert_eq!(r["gammas"], json!([4, "auto"]));
        assert_eq!(r["points"][1]["gamma_auto"], true);
        assert_eq!(r["points"][1]["gamma"], 16);
        assert_eq!(r["points"][0]["gamma_auto"], false);
        let svg = fs::read_to_string(&paths[2]).unwrap();
        assert!(svg.contains(">auto (≤ 16)</text>"));
    }
}
