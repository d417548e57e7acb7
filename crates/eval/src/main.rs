//! `spedec`: run Pythia models with speculative decoding — generate text, measure perplexity.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use spedec_eval::bench::{
    markdown, parse_gamma, run_bench, BenchOptions, BenchProgress, DEFAULT_PROMPTS,
};
use spedec_eval::generate::generate;
use spedec_eval::models::{check_draft, host_machine, load_model_on, Device, LoadedModel};
use spedec_eval::ppl::{perplexity, Method, PplReport, Windows};
use spedec_eval::spec_step::SpecStep;
use spedec_report::{check_writable, write_atomic};
use spedec_sampling::Sampler;
use spedec_speculative::{GammaChoice, GenConfig, StopReason};

#[derive(Parser)]
#[command(
    name = "spedec",
    version,
    about = "Pythia inference with exact speculative decoding"
)]
struct Cli {
    /// Worker threads of the CPU pool (like llama.cpp's -t) [default: all cores].
    #[arg(short = 't', long, global = true, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// Where `--json` goes.
#[derive(Debug, Clone, PartialEq)]
enum JsonTo {
    /// Not asked for.
    Nowhere,
    Stdout,
    File(PathBuf),
}

impl JsonTo {
    /// Where `--json [FILE]` goes (no FILE, or `-`: stdout); a FILE is checked writable now,
    /// before any work, so that a bad path fails at once rather than after the run.
    fn of(json: &Option<Option<PathBuf>>) -> Result<JsonTo> {
        Ok(match json {
            None => JsonTo::Nowhere,
            Some(None) => JsonTo::Stdout,
            Some(Some(p)) if p.as_os_str() == "-" => JsonTo::Stdout,
            Some(Some(p)) => {
                check_writable(p).context("bad --json")?;
                JsonTo::File(p.clone())
            }
        })
    }
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
    /// Convert a pytorch_model.bin (torch.save zip) to model.safetensors, executing nothing.
    Convert(ConvertArgs),
}

#[derive(Args)]
struct ConvertArgs {
    /// The pytorch_model.bin to read, or a model folder holding one.
    #[arg(short = 'i', long)]
    input: PathBuf,
    /// Where to write [default: model.safetensors beside the input].
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct BenchKernelsArgs {
    /// Model to time: a model folder or synthetic:pythia-… .
    #[arg(short = 'm', long, default_value = "synthetic:pythia-2.8b")]
    model: String,
    /// Untimed runs before each measurement.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs per measurement (verify steps, matmul calls, probe passes).
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// Consecutive decode steps timed over the growing cache (as llama-bench -n).
    #[arg(long, default_value_t = 32, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=spedec_eval::kernels_bench::MAX_STEPS as i64))]
    steps: u16,
    /// Write the report as JSON to FILE (without FILE or with `-` on stdout, the table then
    /// going to stderr).
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    json: Option<Option<PathBuf>>,
}

#[derive(Args)]
struct BenchArgs {
    /// Target model: a model folder or synthetic:pythia-… .
    #[arg(short = 'm', long)]
    target: String,
    /// Draft model: a model folder or synthetic:pythia-… .
    #[arg(long, alias = "model-draft")]
    draft: String,
    /// Draft tokens per verify step, 1..=16 (vLLM's num_speculative_tokens, llama.cpp's
    /// --draft-max), or `auto`: chosen per step from the measured acceptance and the measured
    /// costs of a draft step and of a verify (up to 16). Several, comma-separated (e.g.
    /// 1,2,4,8,auto), make a sweep: the spec runs of each are interleaved and compared in one
    /// table. With auto and random sampling a seed's sample depends on timing (greedy output
    /// does not).
    #[arg(long, alias = "draft-max", value_delimiter = ',', default_value = "4",
          value_parser = parse_gamma, value_name = "N|auto")]
    gamma: Vec<GammaChoice>,
    /// Where a speculative step samples and decides: `device` keeps logits, sampling and
    /// the accept/reject decision on the GPU (both models on CUDA; the host reads back a few
    /// integers a step), `host` copies every forward's logits back and samples on the CPU;
    /// `auto`: device when both models run on CUDA. Greedy output is the same either way;
    /// sampled output has the same distribution but another random stream.
    #[arg(long, value_parser = one_of::<SpecStep>(SpecStep::NAMES), default_value_t = SpecStep::Auto)]
    spec_step: SpecStep,
    /// New tokens per run (fewer when the context fills up).
    #[arg(short = 'n', long, default_value_t = 200)]
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
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    temperature: f32,
    /// Top-k for sampling (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Top-p for sampling (1 = off).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    top_p: f32,
    /// Seed of the sampler.
    #[arg(short = 's', long, default_value_t = 0)]
    seed: u64,
    /// KV-cache length in tokens (llama.cpp's -c) [default: the model's max positions, at
    /// most 4096].
    #[arg(short = 'c', long)]
    context: Option<usize>,
    /// Where to run: cuda, cpu, or auto (cuda when a GPU is usable, else cpu).
    #[arg(long, value_parser = one_of::<Device>(Device::NAMES), default_value_t = Device::Auto)]
    device: Device,
    /// Write the full report as JSON to FILE (without FILE or with `-` on stdout, the table
    /// then going to stderr).
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    json: Option<Option<PathBuf>>,
    /// Write the markdown table to this file (it is always printed).
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[derive(Args)]
struct PplArgs {
    /// Target model: a folder with config.json, model.safetensors and tokenizer.json, or
    /// synthetic:pythia-70m (…-2.8b) for seeded random weights of that shape.
    #[arg(short = 'm', long)]
    model: String,
    /// Draft model (same forms as --model); adds draft_ppl and spec_ppl.
    #[arg(long, alias = "model-draft")]
    draft: Option<String>,
    /// UTF-8 text file to score (e.g. data/datasets/wikitext-2-raw/wiki.test.raw).
    #[arg(short = 'f', long, alias = "file")]
    text: PathBuf,
    /// Window length in tokens (llama.cpp's -c) [default: the model's max positions, at most
    /// 4096].
    #[arg(short = 'c', long)]
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
    /// Write the report as JSON to FILE; without FILE or with `-`, print one JSON object on
    /// stdout instead of a summary.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    json: Option<Option<PathBuf>>,
}

#[derive(Args)]
struct GenerateArgs {
    /// Target model: a model folder or synthetic:pythia-… .
    #[arg(short = 'm', long)]
    model: String,
    /// Draft model: enables speculative decoding.
    #[arg(long, alias = "model-draft")]
    draft: Option<String>,
    /// Draft tokens per verify step, 1..=16 (vLLM's num_speculative_tokens, llama.cpp's
    /// --draft-max), or `auto`: chosen per step from the measured acceptance and the measured
    /// costs of a draft step and of a verify (up to 16). With auto and random sampling a seed's
    /// sample depends on timing, so it may differ between runs; greedy output does not.
    #[arg(long, alias = "draft-max", default_value = "4", value_parser = parse_gamma,
          value_name = "N|auto")]
    gamma: GammaChoice,
    /// Where a speculative step samples and decides: `device` keeps logits, sampling and
    /// the accept/reject decision on the GPU (both models on CUDA; the host reads back a few
    /// integers a step), `host` copies every forward's logits back and samples on the CPU;
    /// `auto`: device when both models run on CUDA. Greedy output is the same either way;
    /// sampled output has the same distribution but another random stream.
    #[arg(long, value_parser = one_of::<SpecStep>(SpecStep::NAMES), default_value_t = SpecStep::Auto)]
    spec_step: SpecStep,
    /// Text to continue.
    #[arg(short = 'p', long)]
    prompt: String,
    /// Number of tokens to generate (fewer when the context fills up, which is said on
    /// stderr).
    #[arg(short = 'n', long, default_value_t = 200)]
    max_new_tokens: usize,
    /// Greedy decoding (argmax); the default when no sampling flag is given.
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    greedy: bool,
    /// Sampling temperature; 0 = greedy [default: 1 when --top-k or --top-p is given].
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long)]
    top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches P (1 = off).
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Seed of the sampler's random stream.
    #[arg(short = 's', long, default_value_t = 0)]
    seed: u64,
    /// Independent continuations to draw (seeds derived from --seed).
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// Stop when <|endoftext|> is generated.
    #[arg(long)]
    stop_at_eos: bool,
    /// KV-cache length in tokens: prompt plus new tokens (llama.cpp's -c) [default: the
    /// model's max positions, at most 4096].
    #[arg(short = 'c', long)]
    context: Option<usize>,
    /// Where to run: cuda, cpu, or auto (cuda when a GPU is usable, else cpu).
    #[arg(long, value_parser = one_of::<Device>(Device::NAMES), default_value_t = Device::Auto)]
    device: Device,
    /// Write one JSON line per sample to FILE; without FILE or with `-`, print them on stdout
    /// instead of the text.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    json: Option<Option<PathBuf>>,
}

mod logger;

fn main() {
    logger::init();
    let cli = Cli::parse();
    let result = set_threads(cli.threads).and_then(|()| match cli.command {
        Command::Ppl(args) => run_ppl(args),
        Command::Generate(args) => run_generate(args),
        Command::Bench(args) => run_bench_cmd(args),
        Command::BenchKernels(args) => run_bench_kernels(args),
        #[cfg(feature = "cuda")]
        Command::GpuCheck(args) => spedec_eval::gpu_check::run(args),
        Command::Convert(args) => run_convert(args),
    });
    if let Err(err) = result {
        // One line; a folder of pickle weights also says how to convert it.
        let hint = err
            .downcast_ref::<spedec_neox::checkpoint::PytorchOnly>()
            .map(|only| {
                format!(
                    " (run `spedec convert --input {}`: it writes safetensors beside it and \
                     executes nothing in the pickle)",
                    only.dir.display()
                )
            })
            .unwrap_or_default();
        eprintln!("error: {err:#}{hint}");
        std::process::exit(1);
    }
}

fn run_convert(args: ConvertArgs) -> Result<()> {
    use spedec_neox::checkpoint::{PYTORCH_BIN, PYTORCH_BIN_INDEX, SINGLE_FILE};
    // A folder: its pytorch_model.bin, else its sharded set.
    let sharded_index = args.input.join(PYTORCH_BIN_INDEX);
    if args.input.is_dir() && !args.input.join(PYTORCH_BIN).is_file() && sharded_index.is_file() {
        return convert_sharded(&sharded_index, args.output.as_deref(), args.force);
    }
    let input = if args.input.is_dir() {
        args.input.join(PYTORCH_BIN)
    } else {
        args.input.clone()
    };
    if !input.is_file() {
        anyhow::bail!(
            "bad --input: {} is not a file (expected a pytorch_model.bin, or a folder with one or \
             with {PYTORCH_BIN_INDEX} and its shards)",
            input.display()
        );
    }
    let output = args.output.unwrap_or_else(|| {
        input
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(SINGLE_FILE)
    });
    if output.exists() && !args.force {
        anyhow::bail!(
            "bad --output: {} exists; pass --force to replace it",
            output.display()
        );
    }
    spedec_report::check_writable(&output).context("bad --output")?;
    let t0 = std::time::Instant::now();
    let n = spedec_neox::pytorch::convert_to_safetensors(&input, &output)?;
    eprintln!(
        "converted {n} tensors: {} -> {} in {:.1} s",
        input.display(),
        output.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `spedec convert` of a sharded `.bin` set: the safetensors shards and their index go to
/// `output` (a folder; default: beside the input).
fn convert_sharded(
    index: &std::path::Path,
    output: Option<&std::path::Path>,
    force: bool,
) -> Result<()> {
    use spedec_neox::checkpoint::SHARD_INDEX;
    let dir = output.unwrap_or_else(|| index.parent().unwrap_or(std::path::Path::new(".")));
    if dir.is_file() {
        anyhow::bail!(
            "bad --output: {} is a file; a sharded checkpoint converts into a folder",
            dir.display()
        );
    }
    let out_index = dir.join(SHARD_INDEX);
    if out_index.exists() && !force {
        anyhow::bail!(
            "bad --output: {} exists; pass --force to replace it",
            out_index.display()
        );
    }
    spedec_report::check_writable(&out_index).context("bad --output")?;
    let t0 = std::time::Instant::now();
    let done = spedec_neox::pytorch::convert_sharded(index, dir)?;
    eprintln!(
        "converted {} tensors in {} shards: {} -> {} in {:.1} s",
        done.tensors,
        done.shards.len(),
        index.display(),
        done.index.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Sizes rayon's global pool (the CPU kernels' threads) to `threads`, when given.
fn set_threads(threads: Option<usize>) -> Result<()> {
    let Some(n) = threads else { return Ok(()) };
    if n == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .with_context(|| format!("cannot start --threads {n} worker threads"))
}

fn run_ppl(args: PplArgs) -> Result<()> {
    let json = JsonTo::of(&args.json)?;
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
    let bar = progress_bar("tokens scored");
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
    let full = PplReport {
        scores: report.clone(),
        model: target.name.clone(),
        draft: draft.as_ref().map(|d| d.name.clone()),
        text: args.text.display().to_string(),
        machine: target.machine.clone(),
    };
    if json == JsonTo::Stdout {
        println!("{}", serde_json::to_string(&full)?);
    } else {
        println!("tokens scored: {}", report.tokens);
        println!("ppl:        {:.6}", report.ppl);
        if let (Some(d), Some(s)) = (report.draft_ppl, report.spec_ppl) {
            println!("draft_ppl:  {d:.6}");
            println!("spec_ppl:   {s:.6}");
        }
        write_json(&json, &serde_json::to_string_pretty(&full)?)?;
    }
    eprintln!(
        "{:.1} s, {:.1} tokens/s (window tokens, overlaps counted)",
        report.seconds, report.tokens_per_second
    );
    Ok(())
}

fn run_generate(args: GenerateArgs) -> Result<()> {
    let json = JsonTo::of(&args.json)?;
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
        gamma: args.gamma.max(),
        sampler,
        seed: args.seed,
        stop_at_eos: args.stop_at_eos,
    };
    let mut target = load_model_on(&args.model, args.context, args.device)?;
    let mut draft = match &args.draft {
        Some(spec) => Some(load_model_on(spec, args.context, args.device)?),
        None => None,
    };
    check_spec_step(args.spec_step, &target, draft.as_ref())?;
    let room = Room::of(&target, draft.as_ref());
    let mut lines = String::new();
    generate(
        &mut target,
        draft.as_mut(),
        &args.prompt,
        cfg,
        args.gamma,
        args.spec_step,
        args.samples,
        |sample| {
            let mut out = std::io::stdout().lock();
            if json == JsonTo::Stdout {
                writeln!(out, "{}", serde_json::to_string(sample)?)?;
            } else {
                if args.samples > 1 {
                    writeln!(out, "--- sample {} (seed {})", sample.sample, sample.seed)?;
                }
                writeln!(out, "{}{}", args.prompt, sample.text)?;
                if json != JsonTo::Nowhere {
                    lines += &serde_json::to_string(sample)?;
                    lines.push('\n');
                }
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
            if sample.stats.gamma_auto {
                line += &gamma_steps(&sample.stats.gamma_histogram);
            }
            eprintln!("{line}");
            if sample.stop_reason == StopReason::ContextFull {
                eprintln!(
                    "warning: stopped after {} of {} new tokens: the context of {} positions \
                     (the prompt took {}) is full; {}",
                    sample.tokens.len(),
                    args.max_new_tokens,
                    room.context,
                    sample.prompt_tokens.len(),
                    room.advice()
                );
            }
            Ok(())
        },
    )?;
    if let JsonTo::File(path) = &json {
        write_atomic(path, lines.as_bytes())?;
    }
    Ok(())
}

/// `, γ auto: mean 3.40, steps by γ 2×3 4×7` from a γ histogram (index γ).
fn gamma_steps(histogram: &[usize]) -> String {
    let steps: Vec<String> = histogram
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(g, n)| format!("{g}×{n}"))
        .collect();
    match spedec_report::bench::mean_gamma(histogram) {
        Some(mean) => format!(", γ auto: mean {mean:.2}, steps by γ {}", steps.join(" ")),
        None => ", γ auto: no verify step".to_string(),
    }
}

/// The context a run has, and how the user could give it more.
struct Room {
    /// Positions the caches hold (the smaller of target and draft).
    context: usize,
    /// What the models allow.
    max_positions: usize,
}

impl Room {
    fn of(target: &LoadedModel, draft: Option<&LoadedModel>) -> Room {
        let both = std::iter::once(target).chain(draft);
        Room {
            context: both.clone().map(|m| m.lm.max_len()).min().unwrap_or(0),
            max_positions: both
                .map(|m| m.config.max_position_embeddings)
                .min()
                .unwrap_or(0),
        }
    }

    fn advice(&self) -> String {
        if self.context < self.max_positions {
            format!(
                "raise --context (the model allows {}) or lower --max-new-tokens",
                self.max_positions
            )
        } else {
            "the model allows no more: lower --max-new-tokens or shorten the prompt".to_string()
        }
    }
}

fn run_bench_cmd(args: BenchArgs) -> Result<()> {
    let json = JsonTo::of(&args.json)?;
    if let Some(path) = &args.markdown {
        check_writable(path).context("bad --markdown")?;
    }
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
    check_spec_step(args.spec_step, &target, Some(&draft))?;
    let room = Room::of(&target, Some(&draft));
    let prompts = prompt_texts
        .iter()
        .map(|p| target.tokenizer.encode(p))
        .collect::<Result<Vec<_>>>()?;
    let opts = BenchOptions {
        gen: GenConfig {
            max_new_tokens: args.max_new_tokens,
            gamma: args.gamma[0].max(),
            sampler,
            seed: args.seed,
            stop_at_eos: false,
        },
        gammas: args.gamma.clone(),
        runs: args.runs,
        warmup: args.warmup,
        prompts,
        prompt_texts,
        target_name: target.name.clone(),
        draft_name: draft.name.clone(),
        machine: target.machine.clone(),
        spec_step: args.spec_step,
    };
    let bar = ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let report = run_bench(target.lm.as_mut(), draft.lm.as_mut(), &opts, |p| {
        bar.set_message(progress_line(p, started.elapsed()))
    })?;
    bar.finish_and_clear();
    if let Some(s) = report.new_tokens.filter(|_| report.stopped_early()) {
        eprintln!(
            "warning: runs made {} to {} of the {} new tokens asked for: the context of {} \
             positions filled up; {}",
            s.min,
            s.max,
            report.max_new_tokens,
            room.context,
            room.advice()
        );
    }
    let table = markdown(&report);
    print_table(&json, &table);
    if let Some(path) = &args.markdown {
        write_atomic(path, table.as_bytes())?;
    }
    write_json(&json, &serde_json::to_string_pretty(&report)?)
}

/// `Small run 3/20 (5 of 66 done), ETA 12 min`: where the benchmark stands and, once a run
/// has finished, the time left at the pace so far.
fn progress_line(p: &BenchProgress, elapsed: Duration) -> String {
    let mut line = format!("{p} ({} of {} done)", p.done, p.total);
    if p.done > 0 {
        let left = elapsed.as_secs_f64() * (p.total - p.done) as f64 / p.done as f64;
        line += &format!(", ETA {}", fmt_duration(left));
    }
    line
}

/// `45 s`, `12 min`, `2 h 05 min`.
fn fmt_duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// Prints a command's table on stdout, or on stderr when the JSON goes to stdout.
fn print_table(json: &JsonTo, table: &str) {
    if *json == JsonTo::Stdout {
        eprintln!("{table}");
    } else {
        println!("{table}");
    }
}

/// Writes `text` where `--json` asked for it: stdout, or FILE (atomically).
fn write_json(json: &JsonTo, text: &str) -> Result<()> {
    match json {
        JsonTo::Nowhere => Ok(()),
        JsonTo::Stdout => {
            println!("{text}");
            Ok(())
        }
        JsonTo::File(path) => write_atomic(path, text.as_bytes()),
    }
}

fn run_bench_kernels(args: BenchKernelsArgs) -> Result<()> {
    let json = JsonTo::of(&args.json)?;
    if args.repeats == 0 {
        anyhow::bail!("--repeats must be at least 1");
    }
    let report = spedec_eval::kernels_bench::run(
        &args.model,
        args.warmup,
        args.repeats,
        args.steps as usize,
        host_machine(),
        |m| eprintln!("{m}"),
    )?;
    print_table(&json, &spedec_eval::kernels_bench::markdown(&report));
    write_json(&json, &serde_json::to_string_pretty(&report)?)
}

/// A clap parser accepting exactly `names`, each parsed with `T`'s `FromStr`.
/// `--spec-step device` needs a draft and both models on CUDA: refused before any run.
fn check_spec_step(
    step: SpecStep,
    target: &LoadedModel,
    draft: Option<&LoadedModel>,
) -> Result<()> {
    if step != SpecStep::Device {
        return Ok(());
    }
    let Some(draft) = draft else {
        bail!("--spec-step device needs --draft: it says where a speculative step runs");
    };
    if target.device != Device::Cuda || draft.device != Device::Cuda {
        bail!(
            "--spec-step device needs both models on CUDA (--device cuda); the target runs on \
             {} and the draft on {}",
            target.device,
            draft.device
        );
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use spedec_eval::bench::BenchMode;

    #[test]
    fn the_spinner_gives_totals_and_an_eta() {
        let mut p = BenchProgress {
            mode: BenchMode::Small,
            warm_up: false,
            index: 3,
            count: 20,
            done: 0,
            total: 66,
        };
        assert_eq!(
            progress_line(&p, Duration::from_secs(5)),
            "Small run 3/20 (0 of 66 done)"
        );
        p.done = 6;
        assert_eq!(
            progress_line(&p, Duration::from_secs(66)),
            "Small run 3/20 (6 of 66 done), ETA 11 min"
        );
        assert_eq!(fmt_duration(42.4), "42 s");
        assert_eq!(fmt_duration(7530.0), "2 h 05 min");
    }

    #[test]
    fn auto_gamma_steps_are_listed_by_gamma() {
        assert_eq!(
            gamma_steps(&[0, 3, 0, 0, 7]),
            ", γ auto: mean 3.10, steps by γ 1×3 4×7"
        );
        assert_eq!(gamma_steps(&[0, 0]), ", γ auto: no verify step");
    }

    #[test]
    fn json_goes_to_stdout_without_a_file_or_with_a_dash() {
        assert_eq!(JsonTo::of(&None).unwrap(), JsonTo::Nowhere);
        assert_eq!(JsonTo::of(&Some(None)).unwrap(), JsonTo::Stdout);
        assert_eq!(JsonTo::of(&Some(Some("-".into()))).unwrap(), JsonTo::Stdout);
        let err = JsonTo::of(&Some(Some(".".into()))).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("bad --json: cannot write ."),
            "{err:#}"
        );
    }
}
