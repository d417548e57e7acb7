//! `cargo xtask ppl`: perplexity of the small (draft), target and speculative models on the
//! WikiText-2 raw test file (or PG-19 test books) through `spedec ppl --model T --draft D
//! --json`, which scores all three in one pass. Writes
//! `results/local/ppl[-…]-<target>-<draft>-<date>-<device>.{json,md}`
//! with the seed study's table and the method, and prints the table; spec PPL must equal target
//! PPL (the empirical losslessness check).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::ValueEnum;
use serde::Serialize;
use serde_json::{json, Value};
use spedec_report::ppl::{Method, PplReport, Windows};
use spedec_report::{fmt_opt, write_atomic};

use crate::common::{
    self, check_vocab, download_args, ModelRef, ModelSource, Outputs, RunArgs, Spedec,
};
use crate::download;

/// The largest relative difference between spec and target PPL that counts as equal.
pub const LOSSLESS_TOLERANCE: f64 = 1e-6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Data {
    /// WikiText-2 raw test split (data/datasets/wikitext-2-raw/wiki.test.raw)
    Wikitext2,
    /// PG-19 test books (data/datasets/pg19/<id>.txt), each scored separately
    Pg19,
}

#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// Text to score
    #[arg(long, value_enum, default_value_t = Data::Wikitext2)]
    pub data: Data,

    /// Target model: a Pythia name (pythia-2.8b or 2.8b), a model folder, or a synthetic: spec
    #[arg(long, default_value = "pythia-2.8b", value_name = "MODEL")]
    pub target: String,

    /// Draft (small) model, same forms as --target
    #[arg(long, default_value = "pythia-70m", value_name = "MODEL")]
    pub draft: String,

    /// How the token stream is cut into windows: strided (overlapping windows every --stride
    /// tokens, HF's sliding-window perplexity) or chunked (non-overlapping windows of --context
    /// tokens)
    #[arg(long, default_value_t = Method::Strided,
          value_parser = PossibleValuesParser::new(Method::NAMES.iter().copied()).map(|s| s.parse::<Method>().expect("a listed name")))]
    pub method: Method,

    /// Window length in tokens [default: the model's 2048 positions]
    #[arg(long, value_name = "N")]
    pub context: Option<u32>,

    /// Window step for --method strided [default: context / 2]
    #[arg(long, value_name = "N")]
    pub stride: Option<u32>,

    /// Score only the first N tokens (of each book with --data pg19), for quick runs
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,

    /// How many PG-19 books: 10146 and 10321 first, then by ascending id (as downloaded)
    #[arg(long, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub pg19_books: u32,

    /// Seeded random weights of the exact Pythia shapes, no download: the PPL values are
    /// meaningless, the spec = target check is not
    #[arg(long)]
    pub synthetic: bool,

    #[command(flatten)]
    pub run: RunArgs,
}

const AFTER_HELP: &str = "\
One `spedec ppl --model <target> --draft <draft> --json` pass per text scores every token with
the draft (small), the target, and the probability with which speculative sampling emits it
(spec), which is exactly the target's: spec PPL = target PPL up to rounding.

WikiText-2: the raw wiki.test.raw file as is (one string, newlines kept, no BOS), one token
stream. PG-19: each book separately, then PPL = exp(token-weighted mean NLL over the books).
Missing models and texts are downloaded (cargo xtask download) unless --no-download.

WikiText-2 needs no download: when data/datasets/wikitext-2-raw/wiki.test.raw is missing, the
repository's committed copy (data/fixtures/wikitext-2-raw, the same sha256) is scored.

Output, in --results-dir (default results/local, git-ignored; written under a temporary name,
then renamed; an existing file is not overwritten without --force):
  ppl-<target>-<draft>-<date>-<device>.json / .md   WikiText-2
  ppl-pg19-<target>-<draft>-<date>-<device>.*       PG-19
  ppl-synthetic[-pg19]-…                            with --synthetic

Examples:
  cargo xtask ppl                                   # Pythia-70m / Pythia-2.8b on WikiText-2
  cargo xtask ppl --max-tokens 4096 --context 1024  # a quick run
  cargo xtask ppl --data pg19 --method chunked";

/// One scored text.
#[derive(Clone, Debug)]
pub struct Part {
    pub text: PathBuf,
    /// `spedec ppl --json` output.
    pub report: PplReport,
}

/// Token-weighted means over parts: (tokens, target NLL, draft NLL, spec NLL).
pub fn combine(parts: &[Part]) -> Result<(u64, f64, Option<f64>, Option<f64>)> {
    let mut tokens = 0u64;
    let mut sums = [0.0f64; 3];
    let mut have = [true; 3];
    for part in parts {
        let r = &part.report.scores;
        let n = r.tokens as u64;
        tokens += n;
        for (i, value) in [Some(r.nll), r.draft_nll, r.spec_nll]
            .into_iter()
            .enumerate()
        {
            match value {
                Some(v) => sums[i] += v * n as f64,
                None => have[i] = false,
            }
        }
    }
    if tokens == 0 || !have[0] {
        bail!("spedec ppl scored no tokens");
    }
    let mean = |i: usize| have[i].then(|| sums[i] / tokens as f64);
    Ok((tokens, sums[0] / tokens as f64, mean(1), mean(2)))
}

/// Entry point of the subcommand.
pub fn run(args: &Args) -> Result<()> {
    check_windows(args)?;
    let source = ModelSource {
        synthetic: args.synthetic,
        data_dir: &args.run.data_dir,
        download: !args.run.no_download,
    };
    let models = source.resolve(&[(args.target.clone(), 0), (args.draft.clone(), 1)])?;
    let (target, draft) = (&models[0], &models[1]);
    check_vocab(target, draft)?;
    let texts = texts(args)?;
    let synthetic = if args.synthetic { "-synthetic" } else { "" };
    let data = if args.data == Data::Pg19 { "-pg19" } else { "" };
    let models = format!(
        "{}-{}",
        common::model_tag(&target.label),
        common::model_tag(&draft.label)
    );
    let stem = |date: &str, device: &str| format!("ppl{synthetic}{data}-{models}-{date}-{device}");
    let outputs = Outputs {
        dir: &args.run.results_dir,
        exts: &["json", "md"],
        force: args.run.force,
    };
    let spedec = Spedec::locate(args.run.spedec.as_deref())?;
    let device_args = spedec.device_args("ppl", args.run.device)?;
    let expected_device = common::expected_device_tag(args.run.device, !device_args.is_empty());
    outputs.check(&stem(&common::today(), &expected_device))?;

    let start = Instant::now();
    let mut parts = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        if texts.len() > 1 {
            eprintln!("[{}/{}] {}", i + 1, texts.len(), text.display());
        }
        let mut cmd = vec![
            "ppl".to_string(),
            "--model".into(),
            target.spec.clone(),
            "--draft".into(),
            draft.spec.clone(),
            "--text".into(),
            text.display().to_string(),
            "--method".into(),
            args.method.as_str().into(),
            "--json".into(),
        ];
        for (flag, value) in [
            ("--context", args.context),
            ("--stride", args.stride),
            ("--max-tokens", args.max_tokens),
        ] {
            if let Some(v) = value {
                cmd.extend([flag.to_string(), v.to_string()]);
            }
        }
        cmd.extend(device_args.iter().cloned());
        let stdout = spedec.run(&cmd)?;
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .context("spedec ppl printed no JSON result")?;
        let report: PplReport =
            serde_json::from_str(line).context("spedec ppl printed malformed JSON")?;
        parts.push(Part {
            text: text.clone(),
            report,
        });
    }
    let reported = &parts[0].report.machine;
    let (machine, device) =
        common::machine_and_tag(reported, args.run.device, !device_args.is_empty());
    let meta = PplMeta {
        date: common::today(),
        device,
        machine,
        command: common::command_line(),
        synthetic: args.synthetic,
        data: args.data,
        wall_s: start.elapsed().as_secs_f64(),
        git_commit: common::git_commit(),
    };
    let result = summarize(&parts, target, draft, &meta, args.max_tokens)?;
    let table = markdown(&result);
    println!("{table}");
    let paths = outputs.free(&stem(&meta.date, &meta.device));
    write_atomic(&paths[0], serde_json::to_string_pretty(&result)?.as_bytes())?;
    write_atomic(&paths[1], table.as_bytes())?;
    println!("wrote {}\nwrote {}", paths[0].display(), paths[1].display());
    Ok(())
}

/// The window checks spedec makes, before any model is loaded.
fn check_windows(args: &Args) -> Result<()> {
    if let Some(c) = args.context {
        if c < 2 {
            bail!("--context must be at least 2 tokens, got {c}");
        }
    }
    match (args.method, args.stride) {
        (Method::Chunked, Some(_)) => {
            bail!("--stride cannot be set with --method chunked (its stride is --context)")
        }
        (Method::Strided, Some(0)) => bail!("--stride must be at least 1"),
        (Method::Strided, Some(s)) if args.context.is_some_and(|c| s > c) => {
            bail!("--stride ({s}) must not exceed --context")
        }
        _ => Ok(()),
    }
}

/// The files to score, downloaded first when missing (unless --no-download).
fn texts(args: &Args) -> Result<Vec<PathBuf>> {
    let datasets = args.run.data_dir.join("datasets");
    match args.data {
        Data::Wikitext2 => {
            let path = datasets.join("wikitext-2-raw").join("wiki.test.raw");
            if path.is_file() {
                return Ok(vec![path]);
            }
            // The repository commits the same file: no download needed.
            if let Some(committed) = download::committed_wikitext()? {
                eprintln!(
                    "{} not found; using the committed copy {} (sha256 matches the pinned \
                     WikiText-2 test split)",
                    path.display(),
                    committed.display()
                );
                return Ok(vec![committed]);
            }
            fetch_data(args, download::Dataset::Wikitext2, "wikitext2", &path)?;
            Ok(vec![path])
        }
        Data::Pg19 => {
            let dir = datasets.join("pg19");
            let wanted = args.pg19_books as usize;
            let mut books = pg19_books(&dir);
            if books.len() < wanted {
                fetch_data(args, download::Dataset::Pg19, "pg19", &dir)?;
                books = pg19_books(&dir);
                if books.len() < wanted {
                    bail!(
                        "{} holds {} PG-19 book(s), fewer than --pg19-books {wanted}",
                        dir.display(),
                        books.len()
                    );
                }
            }
            books.truncate(wanted);
            Ok(books)
        }
    }
}

fn fetch_data(args: &Args, set: download::Dataset, name: &str, missing: &Path) -> Result<()> {
    let dest = args.run.data_dir.display();
    let books = if set == download::Dataset::Pg19 {
        format!(" --pg19-books {}", args.pg19_books.max(2))
    } else {
        String::new()
    };
    if args.run.no_download {
        bail!(
            "{} not found; run `cargo xtask download --data {name}{books} --model none --dest \
             {dest}` or drop --no-download",
            missing.display()
        );
    }
    eprintln!(
        "{} not found; downloading it (cargo xtask download --data {name})",
        missing.display()
    );
    let mut dl = download_args(Vec::new(), vec![set], &args.run.data_dir);
    dl.pg19_books = args.pg19_books.max(2);
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let plan = download::Plan::new(&dl, &env)?;
    download::execute(&plan).with_context(|| format!("downloading {name} failed"))?;
    Ok(())
}

/// The two books the download module fetches first.
const PG19_FIRST: [u64; 2] = [10146, 10321];

/// `<id>.txt` files of `dir` in download order: 10146, 10321, then ascending id.
fn pg19_books(dir: &Path) -> Vec<PathBuf> {
    let mut books: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let id = p
                .file_name()?
                .to_str()?
                .strip_suffix(".txt")?
                .parse()
                .ok()?;
            p.is_file().then_some((id, p))
        })
        .collect();
    books.sort_by_key(|(id, _)| (!PG19_FIRST.contains(id), *id));
    books.into_iter().map(|(_, p)| p).collect()
}

/// How a perplexity result was obtained.
#[derive(Clone, Debug)]
pub struct PplMeta {
    pub date: String,
    pub machine: String,
    pub device: String,
    pub command: String,
    pub synthetic: bool,
    pub data: Data,
    pub wall_s: f64,
    pub git_commit: Option<String>,
}

/// The PPL of one model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelPpl {
    /// Label (`pythia-70m`, `synthetic pythia-70m`, a folder's name).
    pub model: String,
    /// What spedec was given: a folder or a synthetic spec.
    pub spec: String,
    pub nll: f64,
    pub ppl: f64,
}

/// The speculative sampler's PPL.
#[derive(Clone, Debug, Serialize)]
pub struct SpecPpl {
    pub nll: f64,
    pub ppl: f64,
}

/// The result file's content: the three PPLs, the check, the method and every part.
#[derive(Clone, Debug, Serialize)]
pub struct PplResult {
    /// `wikitext2` or `pg19`.
    pub dataset: &'static str,
    pub texts: Vec<String>,
    /// How the texts were joined and tokenized.
    pub join: &'static str,
    pub windows: Windows,
    pub max_tokens: Option<u32>,
    /// The windows in words.
    pub method: String,
    pub tokens: u64,
    pub small: ModelPpl,
    pub target: ModelPpl,
    pub spec: SpecPpl,
    pub spec_target_relative_difference: f64,
    pub lossless: bool,
    pub seconds: f64,
    /// Window tokens (overlaps counted) per second of spedec's scoring.
    pub tokens_per_second: f64,
    /// Every text's `spedec ppl --json` report.
    pub parts: Vec<PplReport>,
    /// How the result was obtained.
    pub xtask: Value,
    #[serde(skip)]
    pub meta: PplMeta,
}

/// The three PPLs, the check, the method and every part.
pub fn summarize(
    parts: &[Part],
    target: &ModelRef,
    draft: &ModelRef,
    meta: &PplMeta,
    max_tokens: Option<u32>,
) -> Result<PplResult> {
    let (tokens, nll, draft_nll, spec_nll) = combine(parts)?;
    let spec_nll = spec_nll.context("spedec ppl reported no spec NLL (was --draft passed?)")?;
    let draft_nll = draft_nll.context("spedec ppl reported no draft NLL")?;
    let ppl = nll.exp();
    let spec_ppl = spec_nll.exp();
    let rel = (spec_ppl - ppl).abs() / ppl;
    let windows = parts[0].report.scores.windows;
    let seconds: f64 = parts.iter().map(|p| p.report.scores.seconds).sum();
    let window_tokens: f64 = parts
        .iter()
        .map(|p| p.report.scores.tokens_per_second * p.report.scores.seconds)
        .sum();
    let model = |m: &ModelRef, nll: f64| ModelPpl {
        model: m.label.clone(),
        spec: m.spec.clone(),
        nll,
        ppl: nll.exp(),
    };
    Ok(PplResult {
        dataset: match meta.data {
            Data::Wikitext2 => "wikitext2",
            Data::Pg19 => "pg19",
        },
        texts: parts.iter().map(|p| p.text.display().to_string()).collect(),
        join: join_text(meta.data),
        windows,
        max_tokens,
        method: method_text(&windows, max_tokens),
        tokens,
        small: model(draft, draft_nll),
        target: model(target, nll),
        spec: SpecPpl {
            nll: spec_nll,
            ppl: spec_ppl,
        },
        spec_target_relative_difference: rel,
        lossless: rel <= LOSSLESS_TOLERANCE,
        seconds,
        tokens_per_second: if seconds > 0.0 {
            window_tokens / seconds
        } else {
            0.0
        },
        parts: parts.iter().map(|p| p.report.clone()).collect(),
        xtask: json!({
            "date": meta.date,
            "machine": meta.machine,
            "device": meta.device,
            "command": meta.command,
            "synthetic": meta.synthetic,
            "note": meta.synthetic.then_some(SYNTHETIC_NOTE),
            "wall_s": meta.wall_s,
            "git_commit": meta.git_commit,
        }),
        meta: meta.clone(),
    })
}

const SYNTHETIC_NOTE: &str = "Synthetic weights (seeded random values, exact Pythia shapes): \
the PPL values are those of random models and mean nothing; the spec = target check still holds.";

fn join_text(data: Data) -> &'static str {
    match data {
        Data::Wikitext2 => {
            "the raw wiki.test.raw file as is (one string, newlines and blank lines kept, no BOS \
             added), tokenized as one token stream"
        }
        Data::Pg19 => {
            "each book tokenized and scored separately as one token stream (no BOS added); PPL = \
             exp(token-weighted mean NLL over the books)"
        }
    }
}

fn method_text(windows: &Windows, max_tokens: Option<u32>) -> String {
    let (context, stride) = (windows.context, windows.stride);
    let mut text = if windows.method == Method::Chunked {
        format!(
            "non-overlapping windows of {context} tokens (the first token of each window is not \
             scored)"
        )
    } else {
        format!(
            "windows of {context} tokens every {stride} tokens (HF's strided sliding window): each \
             token after the first is scored once, with at least {} tokens of history after the \
             first window",
            context - stride
        )
    };
    if let Some(n) = max_tokens {
        text += &format!("; first {n} tokens only (--max-tokens)");
    }
    text
}

/// The seed study's PPL table, the losslessness check and the method.
pub fn markdown(result: &PplResult) -> String {
    let data = match result.meta.data {
        Data::Pg19 => "PG-19 (test books)",
        Data::Wikitext2 => "WikiText-2 (raw, test split)",
    };
    let mut out = format!("## Perplexity on {data}\n\n");
    if result.meta.synthetic {
        out += &format!("> **Note.** {SYNTHETIC_NOTE}\n\n");
    }
    out += "| model / mode | PPL |\n|---|---|\n";
    let ppl = |v: f64| fmt_opt(Some(v), 6);
    out += &format!(
        "| {} (small) | {} |\n",
        result.small.model,
        ppl(result.small.ppl)
    );
    out += &format!(
        "| {} (target) | {} |\n",
        result.target.model,
        ppl(result.target.ppl)
    );
    out += &format!(
        "| speculative decoding (spec) | {} |\n",
        ppl(result.spec.ppl)
    );
    let rel = result.spec_target_relative_difference;
    let verdict = if result.lossless {
        format!(
            "≤ {LOSSLESS_TOLERANCE:.0e}: spec PPL equals target PPL, the empirical check that \
             speculative decoding is lossless passes"
        )
    } else {
        format!("> {LOSSLESS_TOLERANCE:.0e}: spec PPL DIFFERS from target PPL — the check FAILS")
    };
    out += &format!("\nLosslessness: |spec − target| / target = {rel:.2e} ({verdict}).\n\n");
    let texts: Vec<String> = result.texts.iter().map(|t| format!("`{t}`")).collect();
    let meta = &result.meta;
    out += &format!(
        "Method: {}; {}. Texts: {}. {} tokens scored in {:.1} s ({:.1} tokens/s, window overlaps \
         counted). spec is the NLL of the probability with which speculative sampling (draft \
         proposes from q, target accepts with min(1, p/q), else draws from norm(max(0, p − q))) \
         emits each token.\n\nMeasured {} on {} (`{}`) with `{}`.\n",
        result.join,
        result.method,
        texts.join(", "),
        result.tokens,
        result.seconds,
        result.tokens_per_second,
        meta.date,
        meta.machine,
        meta.device,
        meta.command,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(tokens: u64, nll: f64, draft: f64, spec: f64) -> Part {
        Part {
            text: PathBuf::from(format!("{tokens}.txt")),
            report: serde_json::from_value(json!({
                "tokens": tokens, "nll": nll, "ppl": nll.exp(), "draft_nll": draft,
                "draft_ppl": draft.exp(), "spec_nll": spec, "spec_ppl": spec.exp(),
                "windows": {"method": "strided", "context": 2048, "stride": 1024},
                "num_windows": 3, "seconds": 2.0, "tokens_per_second": 100.0,
                "model": "t", "draft": "d", "text": "x"
            }))
            .expect("a spedec ppl report"),
        }
    }

    fn meta(data: Data) -> PplMeta {
        PplMeta {
            date: "2025-01-02".into(),
            machine: "AMD EPYC, 2 threads (CPU)".into(),
            device: "cpu-amd-epyc".into(),
            command: "cargo xtask ppl".into(),
            synthetic: false,
            data,
            wall_s: 4.0,
            git_commit: None,
        }
    }

    fn model(label: &str) -> ModelRef {
        ModelRef {
            label: label.into(),
            spec: format!("data/models/{label}"),
        }
    }

    #[test]
    fn books_are_weighted_by_tokens() {
        let parts = [part(100, 2.0, 4.0, 2.0), part(300, 3.0, 5.0, 3.0)];
        let (tokens, nll, draft, spec) = combine(&parts).unwrap();
        assert_eq!(tokens, 400);
        assert!((nll - 2.75).abs() < 1e-12);
        assert!((draft.unwrap() - 4.75).abs() < 1e-12);
        assert!((spec.unwrap() - 2.75).abs() < 1e-12);
    }

    #[test]
    fn markdown_has_the_seed_table_method_and_check() {
        let parts = [part(
            100,
            17.141058f64.ln(),
            84.37263f64.ln(),
            17.141058f64.ln(),
        )];
        let result = summarize(
            &parts,
            &model("pythia-2.8b"),
            &model("pythia-70m"),
            &meta(Data::Wikitext2),
            None,
        )
        .unwrap();
        assert!(result.lossless);
        let md = markdown(&result);
        for needle in [
            "## Perplexity on WikiText-2 (raw, test split)",
            "| model / mode | PPL |",
            "| pythia-70m (small) | 84.372630 |",
            "| pythia-2.8b (target) | 17.141058 |",
            "| speculative decoding (spec) | 17.141058 |",
            "the empirical check that speculative decoding is lossless passes",
            "the raw wiki.test.raw file as is",
            "windows of 2048 tokens every 1024 tokens",
            "at least 1024 tokens of history",
            "100 tokens scored in 2.0 s (100.0 tokens/s",
            "Measured 2025-01-02 on AMD EPYC, 2 threads (CPU) (`cpu-amd-epyc`)",
        ] {
            assert!(md.contains(needle), "`{needle}` missing from:\n{md}");
        }
        let off = [part(100, 2.0, 3.0, 2.001)];
        let result =
            summarize(&off, &model("t"), &model("d"), &meta(Data::Pg19), Some(300)).unwrap();
        assert!(!result.lossless);
        let md = markdown(&result);
        assert!(
            md.contains("the check FAILS") && md.contains("PG-19"),
            "{md}"
        );
        assert!(md.contains("token-weighted mean") && md.contains("first 300 tokens"));
    }

    #[test]
    fn pg19_books_come_in_download_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "200.txt",
            "10321.txt",
            "99999.txt",
            "10146.txt",
            "SHA256SUMS",
            "x.txt",
        ] {
            fs::write(dir.path().join(name), "text").unwrap();
        }
        let names: Vec<String> = pg19_books(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10146.txt", "10321.txt", "200.txt", "99999.txt"]);
    }
}
