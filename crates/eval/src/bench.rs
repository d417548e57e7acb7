//! `spedec bench`: the seed study's speed protocol — small (draft AR), target (AR) and spec —
//! with TTFT, TPOT and throughput as median and min–max over runs × prompts (warm-up runs
//! excluded), the speculative statistics, and the measured speedup of spec over target beside
//! the one Leviathan et al.'s formula predicts from the measured acceptance and cost ratio.

use anyhow::{bail, Result};
use serde::Serialize;
use spedec_speculative::{generate_autoregressive, generate_speculative, GenConfig, Lm, Stats};

/// The three modes of the seed study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// The draft model alone, autoregressive.
    Small,
    /// The target model alone, autoregressive.
    Target,
    /// Speculative decoding (draft proposes, target verifies).
    Spec,
}

/// Prompts used when no `--prompts` file is given: varied registers of English prose.
pub const DEFAULT_PROMPTS: [&str; 4] = [
    "The history of the city begins in the early nineteenth century, when",
    "In machine learning, a language model is",
    "She opened the old wooden door slowly and saw",
    "The following is a list of the tallest buildings in the world:",
];

/// Median and range of one measurement.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// `None` for an empty sample.
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

/// Results of one mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub mode: BenchMode,
    pub ttft_ms: Option<Summary>,
    pub tpot_ms: Option<Summary>,
    pub throughput_tok_s: Option<Summary>,
    /// Speculative only: accepted / drafted over all measured runs.
    pub acceptance_rate: Option<f64>,
    /// Speculative only: tokens emitted per verify step (bonus token counted).
    pub mean_accepted_length: Option<f64>,
    /// Speculative only: acceptance rate of draft position i.
    pub acceptance_per_position: Vec<Option<f64>>,
    /// Speculative only: verify steps by accepted drafts, 0..=γ.
    pub accepted_length_histogram: Vec<usize>,
    /// Seconds spent in draft forward / target forward / sampling, summed over measured runs.
    pub draft_s: f64,
    pub target_s: f64,
    pub sampling_s: f64,
    pub prefill_s: f64,
    /// Every measured run's stats, for later analysis.
    pub runs: Vec<Stats>,
}

/// Whole benchmark report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub gamma: usize,
    pub max_new_tokens: usize,
    pub runs: usize,
    pub warmup: usize,
    pub prompts: Vec<String>,
    pub modes: Vec<ModeReport>,
    /// Median target TPOT / median spec TPOT.
    pub speedup_tpot: Option<f64>,
    /// Median spec throughput / median target throughput.
    pub speedup_throughput: Option<f64>,
    /// Draft/target cost ratio c = median small TPOT / median target TPOT.
    pub cost_ratio: Option<f64>,
    /// Leviathan et al. (2023), eq. for the expected walltime improvement:
    /// (1 − α^(γ+1)) / ((1 − α)(γc + 1)), with α the measured acceptance rate.
    pub predicted_speedup: Option<f64>,
}

/// Leviathan et al.'s expected speedup for acceptance rate `alpha`, draft length `gamma` and
/// draft/target cost ratio `c`.
pub fn leviathan_speedup(alpha: f64, gamma: usize, c: f64) -> f64 {
    let tokens_per_step = if (1.0 - alpha).abs() < 1e-12 {
        (gamma + 1) as f64
    } else {
        (1.0 - alpha.powi(gamma as i32 + 1)) / (1.0 - alpha)
    };
    tokens_per_step / (gamma as f64 * c + 1.0)
}

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub gen: GenConfig,
    pub runs: usize,
    pub warmup: usize,
    pub prompts: Vec<Vec<u32>>,
    pub prompt_texts: Vec<String>,
}

/// Runs small, target and spec; `progress(message)` reports each run.
pub fn run_bench(
    target: &mut dyn Lm,
    draft: &mut dyn Lm,
    opts: &BenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<BenchReport> {
    if opts.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if opts.prompts.is_empty() || opts.prompts.iter().any(Vec::is_empty) {
        bail!("every benchmark prompt must have at least one token");
    }
    let mut modes = Vec::new();
    for mode in [BenchMode::Small, BenchMode::Target, BenchMode::Spec] {
        let mut runs = Vec::new();
        for r in 0..opts.warmup + opts.runs {
            for (p, prompt) in opts.prompts.iter().enumerate() {
                let warm = r < opts.warmup;
                if warm && p > 0 {
                    continue; // one prompt per warm-up run is enough to warm caches
                }
                progress(&format!(
                    "{mode:?} {} {}/{} prompt {}",
                    if warm { "warm-up" } else { "run" },
                    if warm { r + 1 } else { r - opts.warmup + 1 },
                    if warm { opts.warmup } else { opts.runs },
                    p + 1
                ));
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
    let median = |m: usize, f: fn(&ModeReport) -> Option<Summary>| f(&modes[m]).map(|s| s.median);
    let tpot = |r: &ModeReport| r.tpot_ms;
    let thr = |r: &ModeReport| r.throughput_tok_s;
    let speedup_tpot = median(1, tpot).zip(median(2, tpot)).map(|(t, s)| t / s);
    let speedup_throughput = median(2, thr).zip(median(1, thr)).map(|(s, t)| s / t);
    let cost_ratio = median(0, tpot).zip(median(1, tpot)).map(|(d, t)| d / t);
    let predicted_speedup = modes[2]
        .acceptance_rate
        .zip(cost_ratio)
        .map(|(alpha, c)| leviathan_speedup(alpha, opts.gen.gamma, c));
    Ok(BenchReport {
        gamma: opts.gen.gamma,
        max_new_tokens: opts.gen.max_new_tokens,
        runs: opts.runs,
        warmup: opts.warmup,
        prompts: opts.prompt_texts.clone(),
        modes,
        speedup_tpot,
        speedup_throughput,
        cost_ratio,
        predicted_speedup,
    })
}

fn summarize(mode: BenchMode, runs: Vec<Stats>) -> ModeReport {
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
pub fn markdown(
    report: &BenchReport,
    target_name: &str,
    draft_name: &str,
    machine: &str,
) -> String {
    let fmt = |s: Option<Summary>, digits: usize| match s {
        Some(s) => format!(
            "{:.*} ({:.*}–{:.*})",
            digits, s.median, digits, s.min, digits, s.max
        ),
        None => "—".into(),
    };
    let mut out = String::new();
    out += &format!(
        "Speed on {machine}: γ = {}, {} new tokens, {} prompts × {} runs (+{} warm-up); median (min–max).\n\n",
        report.gamma,
        report.max_new_tokens,
        report.prompts.len(),
        report.runs,
        report.warmup
    );
    out += "| model / mode | TTFT (ms) | TPOT (ms) | throughput (tokens/s) |\n|---|---|---|---|\n";
    for m in &report.modes {
        let name = match m.mode {
            BenchMode::Small => format!("{draft_name} (small)"),
            BenchMode::Target => format!("{target_name} (target)"),
            BenchMode::Spec => "speculative decoding (spec)".to_string(),
        };
        out += &format!(
            "| {name} | {} | {} | {} |\n",
            fmt(m.ttft_ms, 1),
            fmt(m.tpot_ms, 2),
            fmt(m.throughput_tok_s, 2)
        );
    }
    let opt =
        |v: Option<f64>, suffix: &str| v.map_or("—".to_string(), |v| format!("{v:.3}{suffix}"));
    let spec = &report.modes[2];
    out += "\n| statistic | value |\n|---|---|\n";
    out += &format!(
        "| speedup, TPOT (target / spec) | {} |\n",
        opt(report.speedup_tpot, "×")
    );
    out += &format!(
        "| speedup, throughput (spec / target) | {} |\n",
        opt(report.speedup_throughput, "×")
    );
    out += &format!(
        "| acceptance rate α | {} |\n",
        opt(spec.acceptance_rate, "")
    );
    out += &format!(
        "| mean accepted length (tokens / verify) | {} |\n",
        opt(spec.mean_accepted_length, "")
    );
    let per_pos: Vec<String> = spec
        .acceptance_per_position
        .iter()
        .map(|v| opt(*v, ""))
        .collect();
    out += &format!(
        "| acceptance per draft position | {} |\n",
        per_pos.join(", ")
    );
    out += &format!(
        "| accepted-length histogram (0..=γ) | {:?} |\n",
        spec.accepted_length_histogram
    );
    out += &format!(
        "| cost ratio c (small TPOT / target TPOT) | {} |\n",
        opt(report.cost_ratio, "")
    );
    out += &format!(
        "| predicted speedup (Leviathan et al., from α, γ, c) | {} |\n",
        opt(report.predicted_speedup, "×")
    );
    let total = spec.draft_s + spec.target_s + spec.sampling_s + spec.prefill_s;
    if total > 0.0 {
        out += &format!(
            "| spec time split: draft / verify / sampling / prefill | {:.0}% / {:.0}% / {:.0}% / {:.0}% |\n",
            100.0 * spec.draft_s / total,
            100.0 * spec.target_s / total,
            100.0 * spec.sampling_s / total,
            100.0 * spec.prefill_s / total
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leviathan_formula_limits() {
        // α = 0: one token per step, slowed by the draft's cost.
        assert!((leviathan_speedup(0.0, 4, 0.05) - 1.0 / 1.2).abs() < 1e-12);
        // α = 1: γ + 1 tokens per step.
        assert!((leviathan_speedup(1.0, 4, 0.0) - 5.0).abs() < 1e-12);
        // α = 0.5, γ = 2, c = 0: 1 + 0.5 + 0.25.
        assert!((leviathan_speedup(0.5, 2, 0.0) - 1.75).abs() < 1e-12);
    }

    #[test]
    fn summary_median_and_range() {
        let s = Summary::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        assert!(Summary::of(&[]).is_none());
    }
}
