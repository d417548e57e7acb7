//! `spedec bench`: the seed study's speed protocol — small (draft AR), target (AR) and spec —
//! with TTFT, TPOT and throughput as median and min–max over runs × prompts (warm-up runs
//! excluded), the speculative statistics, and the measured speedup of spec over target beside
//! the one Leviathan et al.'s formula predicts from the measured acceptance and cost ratio.

use anyhow::{bail, Result};
pub use spedec_report::bench::{leviathan_speedup, BenchMode, ModeReport};
use spedec_report::Machine;
pub use spedec_report::Summary;
use spedec_speculative::{generate_autoregressive, generate_speculative, GenConfig, Lm, Stats};

/// The report of one benchmark, with every run's statistics.
pub type BenchReport = spedec_report::bench::BenchReport<Stats>;

/// Prompts used when no `--prompts` file is given: varied registers of English prose.
pub const DEFAULT_PROMPTS: [&str; 4] = [
    "The history of the city begins in the early nineteenth century, when",
    "In machine learning, a language model is",
    "She opened the old wooden door slowly and saw",
    "The following is a list of the tallest buildings in the world:",
];

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub gen: GenConfig,
    pub runs: usize,
    pub warmup: usize,
    pub prompts: Vec<Vec<u32>>,
    pub prompt_texts: Vec<String>,
    /// The target and draft as the user named them, for the report.
    pub target_name: String,
    pub draft_name: String,
    /// The machine the models run on.
    pub machine: Machine,
}

/// Where a benchmark stands, reported before each generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchProgress {
    pub mode: BenchMode,
    pub warm_up: bool,
    /// This generation among the mode's warm-up (or measured) ones, from 1, and their number.
    pub index: usize,
    pub count: usize,
    /// Generations finished so far, over all modes, and planned in all.
    pub done: usize,
    pub total: usize,
}

impl std::fmt::Display for BenchProgress {
    /// `Small run 3/20`, `Spec warm-up 1/1`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.warm_up { "warm-up" } else { "run" };
        write!(f, "{:?} {kind} {}/{}", self.mode, self.index, self.count)
    }
}

/// Runs small, target and spec; `progress` is called before each generation.
pub fn run_bench(
    target: &mut dyn Lm,
    draft: &mut dyn Lm,
    opts: &BenchOptions,
    mut progress: impl FnMut(&BenchProgress),
) -> Result<BenchReport> {
    if opts.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if opts.prompts.is_empty() || opts.prompts.iter().any(Vec::is_empty) {
        bail!("every benchmark prompt must have at least one token");
    }
    let measured = opts.runs * opts.prompts.len();
    let total = 3 * (opts.warmup + measured);
    let mut done = 0;
    let mut modes = Vec::new();
    for mode in [BenchMode::Small, BenchMode::Target, BenchMode::Spec] {
        let mut runs = Vec::new();
        for r in 0..opts.warmup + opts.runs {
            for (p, prompt) in opts.prompts.iter().enumerate() {
                let warm = r < opts.warmup;
                if warm && p > 0 {
                    continue; // one prompt per warm-up run is enough to warm caches
                }
                progress(&BenchProgress {
                    mode,
                    warm_up: warm,
                    index: if warm { r + 1 } else { runs.len() + 1 },
                    count: if warm { opts.warmup } else { measured },
                    done,
                    total,
                });
                done += 1;
                let g = match mode {
                    BenchMode::Small => generate_autoregressive(draft, prompt, &opts.gen)?,
                    BenchMode::Target => generate_autoregressive(target, prompt, &opts.gen)?,
                    BenchMode::Spec => generate_speculative(target, draft, prompt, &opts.gen)?,
                };
                if !warm {
                    runs.push(g.stats);
                }
            }
        }
        modes.push(summarize(mode, runs));
    }
    let median =
        |m: usize, f: fn(&ModeReport<Stats>) -> Option<Summary>| f(&modes[m]).map(|s| s.median);
    let tpot = |r: &ModeReport<Stats>| r.tpot_ms;
    let thr = |r: &ModeReport<Stats>| r.throughput_tok_s;
    let speedup_tpot = median(1, tpot).zip(median(2, tpot)).map(|(t, s)| t / s);
    let speedup_throughput = median(2, thr).zip(median(1, thr)).map(|(s, t)| s / t);
    let cost_ratio = median(0, tpot).zip(median(1, tpot)).map(|(d, t)| d / t);
    let predicted_speedup = modes[2]
        .acceptance_rate
        .zip(cost_ratio)
        .map(|(alpha, c)| leviathan_speedup(alpha, opts.gen.gamma, c));
    let new_tokens: Vec<f64> = modes
        .iter()
        .flat_map(|m| &m.runs)
        .map(|s| s.new_tokens as f64)
        .collect();
    Ok(BenchReport {
        gamma: opts.gen.gamma,
        max_new_tokens: opts.gen.max_new_tokens,
        new_tokens: Summary::of(&new_tokens),
        runs: opts.runs,
        warmup: opts.warmup,
        prompts: opts.prompt_texts.clone(),
        modes,
        speedup_tpot,
        speedup_throughput,
        cost_ratio,
        predicted_speedup,
        target: opts.target_name.clone(),
        draft: opts.draft_name.clone(),
        machine: opts.machine.clone(),
    })
}

fn summarize(mode: BenchMode, runs: Vec<Stats>) -> ModeReport<Stats> {
    let ms = |f: fn(&Stats) -> Option<f64>| -> Vec<f64> {
        runs.iter().filter_map(f).map(|s| s * 1e3).collect()
    };
    let ttft = ms(|s| s.timing.ttft_s);
    let tpot = ms(|s| s.timing.tpot_s);
    let thr: Vec<f64> = runs
        .iter()
        .filter_map(|s| s.timing.throughput_tok_s)
        .collect();
    let drafted: usize = runs.iter().map(|s| s.drafted).sum();
    let accepted: usize = runs.iter().map(|s| s.accepted).sum();
    let verify: usize = runs.iter().map(|s| s.verify_steps).sum();
    let gamma = runs.first().map_or(0, |s| s.drafted_per_position.len());
    let per_pos = (0..gamma)
        .map(|i| {
            let d: usize = runs.iter().map(|s| s.drafted_per_position[i]).sum();
            let a: usize = runs.iter().map(|s| s.accepted_per_position[i]).sum();
            (d > 0).then(|| a as f64 / d as f64)
        })
        .collect();
    let hist = (0..runs
        .first()
        .map_or(0, |s| s.accepted_length_histogram.len()))
        .map(|j| runs.iter().map(|s| s.accepted_length_histogram[j]).sum())
        .collect();
    let is_spec = mode == BenchMode::Spec;
    ModeReport {
        mode,
        ttft_ms: Summary::of(&ttft),
        tpot_ms: Summary::of(&tpot),
        throughput_tok_s: Summary::of(&thr),
        acceptance_rate: (is_spec && drafted > 0).then(|| accepted as f64 / drafted as f64),
        mean_accepted_length: (is_spec && verify > 0)
            .then(|| (accepted + verify) as f64 / verify as f64),
        acceptance_per_position: per_pos,
        accepted_length_histogram: hist,
        draft_s: runs.iter().map(|s| s.timing.draft_s).sum(),
        target_s: runs.iter().map(|s| s.timing.target_s).sum(),
        sampling_s: runs.iter().map(|s| s.timing.sampling_s).sum(),
        prefill_s: runs.iter().map(|s| s.timing.prefill_s).sum(),
        runs,
    }
}

/// The report as a markdown table like the seed study's, plus the speculative statistics.
pub fn markdown(report: &BenchReport) -> String {
    format!(
        "Speed on {}: γ = {}, {}, {} prompts × {} runs (+{} warm-up); median (min–max).\n\n{}",
        report.machine.description,
        report.gamma,
        report.new_tokens_label(),
        report.prompts.len(),
        report.runs,
        report.warmup,
        report.tables(&report.target, &report.draft)
    )
}
