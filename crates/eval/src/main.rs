//! `spedec`: run Pythia models with speculative decoding — generate text, measure perplexity.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use spedec_eval::bench::{markdown, run_bench, BenchOptions, DEFAULT_PROMPTS};
use spedec_eval::generate::generate;
use spedec_eval::models::{check_draft, load_model_on, Device};
use spedec_eval::ppl::{perplexity, Method, PplReport, Windows};
use spedec_report::{write_atomic, Machine};
use spedec_sampling::Sampler;
use spedec_speculative::GenConfig;

#[derive(Parser)]
#[command(
    name = "spedec",
    version,
    about = "Pythia inference with exact speculative decoding"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Token-level perplexity of a text file (target, and with --draft also draft and spec).
    Ppl(PplArgs),
    /// Continue a prompt, autoregressively or (with --draft) with speculative decoding.
    Generate(GenerateArgs),
    /// Speed of small (draft AR), target (AR) and spec, the seed study's protocol.
    Bench(BenchArgs),
    /// CPU kernel timings against the memory-bandwidth floor (decode, verify, prefill, per op).
    BenchKernels(BenchKernelsArgs),
    /// Check and time the CUDA backend on a GPU machine (`skipped: no CUDA device` without one).
    #[cfg(feature = "cuda")]
    GpuCheck(spedec_eval::gpu_check::GpuCheckArgs),
}

#[derive(Args)]
struct BenchKernelsArgs {
    /// Model to time: a model folder or synthetic:pythia-… .
    #[arg(long, default_value = "synthetic:pythia-2.8b")]
    model: String,
    /// Untimed runs before each measurement.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs per measurement.
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// Target model: a model folder or synthetic:pythia-… .
    #[arg(long)]
    target: String,
    /// Draft model: a model folder or synthetic:pythia-… .
    #[arg(long)]
    draft: String,
    /// Draft tokens per verify step.
    #[arg(long, default_value_t = 4)]
    gamma: usize,
    /// New tokens per run.
    #[arg(long, default_value_t = 200)]
    max_new_tokens: usize,
    /// Text file with one prompt per line [default: four built-in prompts].
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Measured runs per prompt and mode.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Warm-up runs per mode (not measured).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Top-k for sampling (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Top-p for sampling (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// KV-cache length in tokens [default: the model's max positions].
    #[arg(long)]
    context: Option<usize>,
    /// Where to run: cuda, cpu, or auto (cuda when a GPU is usable, else cpu).
    #[arg(long, value_parser = one_of::<Device>(Device::NAMES), default_value_t = Device::Auto)]
    device: Device,
    /// Write the full report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the markdown table to this file (it is always printed).
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[derive(Args)]
struct PplArgs {
    /// Target model: a folder with config.json, model.safetensors and tokenizer.json, or
    /// synthetic:pythia-70m (…-2.8b) for seeded random weights of that shape.
    #[arg(long)]
    model: String,
    /// Draft model (same forms as --model); adds draft_ppl and spec_ppl.
    #[arg(long)]
    draft: Option<String>,
    /// UTF-8 text file to score (e.g. data/datasets/wikitext-2-raw/wiki.test.raw).
    #[arg(long)]
    text: PathBuf,
    /// Window length in tokens [default: the model's max positions].
    #[arg(long)]
    context: Option<usize>,
    /// Where to run: cuda, cpu, or auto (cuda when a GPU is usable, else cpu).
    #[arg(long, value_parser = one_of::<Device>(Device::NAMES), default_value_t = Device::Auto)]
    device: Device,
    /// Window step for --method strided [default: context / 2].
    #[arg(long)]
    stride: Option<usize>,
    /// strided: HF's sliding window; chunked: non-overlapping windows.
    #[arg(long, value_parser = one_of::<Method>(Method::NAMES), default_value_t = Method::Strided)]
    method: Method,
    /// Score only the first N tokens of the text.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Print one JSON object on stdout instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// Target model: a model folder or synthetic:pythia-… .
    #[arg(long)]
    model: String,
    /// Draft model: enables speculative decoding.
    #[arg(long)]
    draft: Option<String>,
    /// Draft tokens per verify step.
    #[arg(long, default_value_t = 4)]
    gamma: usize,
    /// Text to continue.
    #[arg(long)]
    prompt: String,
    /// Number of tokens to generate.
    #[arg(long, default_value_t = 200)]
    max_new_tokens: usize,
    /// Greedy decoding (argmax); the default when no sampling flag is given.
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    greedy: bool,
    /// Sampling temperature (> 0).
    #[arg(long)]
    temperature: Option<f32>,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long)]
    top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches P (1 = off).
    #[arg(long)]
    top_p: Option<f32>,
    /// Seed of the sampler's random stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Independent continuations to draw (seeds derived from --seed).
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// Stop when <|endoftext|> is generated.
    #[arg(long)]
    stop_at_eos: bool,
    /// KV-cache length in tokens [default: the model's max positions].
    #[arg(long)]
    context: Option<usize>,
    /// Where to run: cuda, cpu, or auto (cuda when a GPU is usable, else cpu).
    #[arg(long, value_parser = one_of::<Device>(Device::NAMES), default_value_t = Device::Auto)]
    device: Device,
    /// Print one JSON line per sample on stdout.
    #[arg(long)]
    json: bool,
}

mod logger;

fn main() {
    logger::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ppl(args) => run_ppl(args),
        Command::Generate(args) => run_generate(args),
        Command::Bench(args) => run_bench_cmd(args),
        Command::BenchKernels(args) => run_bench_kernels(args),
        #[cfg(feature = "cuda")]
        Command::GpuCheck(args) => spedec_eval::gpu_check::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run_ppl(args: PplArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.text)
        .with_context(|| format!("cannot read --text {}", args.text.display()))?;
    if text.is_empty() {
        anyhow::bail!("--text {} is empty: nothing to score", args.text.display());
    }
    let mut target = load_model_on(&args.model, args.context, args.device)?;
    let mut draft = match &args.draft {
        Some(spec) => Some(load_model_on(spec, args.context, args.device)?),
        None => None,
    };
    if let Some(d) = &draft {
        check_draft(&target, d)?;
    }
    let mut ids = target.tokenizer.encode(&text)?;
    if let Some(max) = args.max_tokens {
        ids.truncate(max);
    }
    let context = args
        .context
        .unwrap_or(target.lm.max_len())
        .min(ids.len().max(2));
    let windows =
        Windows::new(args.method, context, args.stride).context("bad --context / --stride")?;
    eprintln!(
        "scoring {} tokens of {} with {} ({:?}, context {}, stride {})",
        ids.len(),
        args.text.display(),
        target.name,
        windows.method,
        windows.context,
        windows.stride
    );
    let bar = progress_bar("tokens");
    let report = perplexity(
        target.lm.as_mut(),
        draft.as_mut().map(|d| d.lm.as_mut()),
        &ids,
        windows,
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    if args.json {
        let report = PplReport {
            scores: report.clone(),
            model: target.name.clone(),
            draft: draft.as_ref().map(|d| d.name.clone()),
            text: args.text.display().to_string(),
            machine: target.machine.clone(),
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("tokens scored: {}", report.tokens);
        println!("ppl:        {:.6}", report.ppl);
        if let (Some(d), Some(s)) = (report.draft_ppl, report.spec_ppl) {
            println!("draft_ppl:  {d:.6}");
            println!("spec_ppl:   {s:.6}");
        }
    }
    eprintln!(
        "{:.1} s, {:.1} tokens/s",
        report.seconds, report.tokens_per_second
    );
    Ok(())
}

fn run_generate(args: GenerateArgs) -> Result<()> {
    let sampler = if args.greedy || (args.temperature, args.top_k, args.top_p) == (None, None, None)
    {
        Sampler::Greedy
    } else {
        Sampler::from_temperature(
            args.temperature.unwrap_or(1.0),
            args.top_k.unwrap_or(0),
            args.top_p.unwrap_or(1.0),
        )
        .context("invalid sampling flags")?
    };
    let cfg = GenConfig {
        max_new_tokens: args.max_new_tokens,
        gamma: args.gamma,
        sampler,
        seed: args.seed,
        stop_at_eos: args.stop_at_eos,
    };
    let mut target = load_model_on(&args.model, args.context, args.device)?;
    let mut draft = match &args.draft {
        Some(spec) => Some(load_model_on(spec, args.context, args.device)?),
        None => None,
    };
    let json = args.json;
    generate(
        &mut target,
        draft.as_mut(),
        &args.prompt,
        cfg,
        args.samples,
        |sample| {
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string(sample)?)?;
            } else {
                if args.samples > 1 {
                    writeln!(out, "--- sample {} (seed {})", sample.sample, sample.seed)?;
                }
                writeln!(out, "{}{}", args.prompt, sample.text)?;
            }
            let t = &sample.stats.timing;
            let mut line = format!("{} tokens in {:.2} s", sample.tokens.len(), t.total_s);
            if let (Some(ttft), Some(tpot)) = (t.ttft_s, t.tpot_s) {
                line += &format!(", TTFT {:.1} ms, TPOT {:.1} ms", ttft * 1e3, tpot * 1e3);
            }
            if let Some(rate) = sample.stats.acceptance_rate {
                line += &format!(
                    ", acceptance {:.1}%, {:.2} tokens/verify",
                    rate * 100.0,
                    sample.stats.mean_accepted_length.unwrap_or(0.0)
                );
            }
            eprintln!("{line}");
            Ok(())
        },
    )
}

fn run_bench_cmd(args: BenchArgs) -> Result<()> {
    let prompt_texts: Vec<String> = match &args.prompts {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --prompts {}", path.display()))?;
            let lines: Vec<String> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect();
            if lines.is_empty() {
                anyhow::bail!("--prompts {} has no non-empty line", path.display());
            }
            lines
        }
        None => DEFAULT_PROMPTS.iter().map(|s| s.to_string()).collect(),
    };
    let sampler = Sampler::from_temperature(args.temperature, args.top_k, args.top_p)
        .context("invalid sampling flags")?;
    let mut target = load_model_on(&args.target, args.context, args.device)?;
    let mut draft = load_model_on(&args.draft, args.context, args.device)?;
    check_draft(&target, &draft)?;
    let prompts = prompt_texts
        .iter()
        .map(|p| target.tokenizer.encode(p))
        .collect::<Result<Vec<_>>>()?;
    let opts = BenchOptions {
        gen: GenConfig {
            max_new_tokens: args.max_new_tokens,
            gamma: args.gamma,
            sampler,
            seed: args.seed,
            stop_at_eos: false,
        },
        runs: args.runs,
        warmup: args.warmup,
        prompts,
        prompt_texts,
        target_name: target.name.clone(),
        draft_name: draft.name.clone(),
        machine: target.machine.clone(),
    };
    let bar = ProgressBar::new_spinner();
    let report = run_bench(target.lm.as_mut(), draft.lm.as_mut(), &opts, |msg| {
        bar.set_message(msg.to_string())
    })?;
    bar.finish_and_clear();
    let table = markdown(&report);
    println!("{table}");
    if let Some(path) = &args.markdown {
        write_atomic(path, table.as_bytes())?;
    }
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}

fn run_bench_kernels(args: BenchKernelsArgs) -> Result<()> {
    if args.repeats == 0 {
        anyhow::bail!("--repeats must be at least 1");
    }
    let machine = Machine::host();
    let report =
        spedec_eval::kernels_bench::run(&args.model, args.warmup, args.repeats, machine, |m| {
            eprintln!("{m}")
        })?;
    println!("{}", spedec_eval::kernels_bench::markdown(&report));
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}

/// A clap parser accepting exactly `names`, each parsed with `T`'s `FromStr`.
fn one_of<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names.iter().copied())
        .map(|s| s.parse::<T>().expect("one of the listed names"))
}

fn progress_bar(unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {unit} [{{elapsed_precise}} < {{eta}}, {{per_sec}}]"
        ))
        .expect("valid progress template"),
    );
    bar
}
