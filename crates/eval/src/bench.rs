//! `spedec bench`: the seed study's speed protocol — small (draft AR), target (AR) and spec —
//! with TTFT, TPOT and throughput as median and min–max over runs × prompts (warm-up runs
//! excluded), the speculative statistics, and the measured speedup of spec over target beside
//! the one Leviathan et al.'s formula predicts from the measured acceptance and cost ratio.
//! With several γ (fixed values and `auto`), the spec runs of every γ are interleaved (run r
//! of prompt p goes through every γ before run r + 1) and a sweep table compares them.

use anyhow::{bail, Result};
use spedec_report::bench::{gamma_label, SweepPoint};
pub use spedec_report::bench::{leviathan_speedup, BenchMode, ModeReport};
use spedec_report::Machine;
pub use spedec_report::Summary;
use spedec_speculative::{
    expected_tokens, generate_autoregressive, GammaChoice, GenConfig, Lm, Stats, MAX_AUTO_GAMMA,
};

use crate::spec_step::{generate_spec, resolve_step, SpecStep};

/// The report of one benchmark, with every run's statistics.
pub type BenchReport = spedec_report::bench::BenchReport<Stats>;

/// Prompts used when no `--prompts` file is given: varied registers of English prose.
pub const DEFAULT_PROMPTS: [&str; 4] = [
    "The history of the city begins in the early nineteenth century, when",
    "In machine learning, a language model is",
    "She opened the old wooden door slowly and saw",
    "The following is a list of the tallest buildings in the world:",
];

/// `--gamma`: a number of draft tokens per step in 1..=16, or `auto`.
pub fn parse_gamma(text: &str) -> Result<GammaChoice, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("auto") {
        return Ok(GammaChoice::auto());
    }
    match text.parse::<usize>() {
        Ok(g) if (1..=MAX_AUTO_GAMMA).contains(&g) => Ok(GammaChoice::Fixed(g)),
        _ => Err(format!(
            "expected a number of draft tokens per step from 1 to {MAX_AUTO_GAMMA}, or auto \
             (chosen per step), got {text:?}"
        )),
    }
}

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Settings of every run (`gen.gamma` is unused when `gammas` is non-empty).
    pub gen: GenConfig,
    /// The γ of the spec runs: one, or several for a sweep (empty: `gen.gamma`).
    pub gammas: Vec<GammaChoice>,
    pub runs: usize,
    pub warmup: usize,
    pub prompts: Vec<Vec<u32>>,
    pub prompt_texts: Vec<String>,
    /// The target and draft as the user named them, for the report.
    pub target_name: String,
    pub draft_name: String,
    /// The machine the models run on.
    pub machine: Machine,
    /// Where the spec runs' steps run (`Auto`: on the device when both models are CUDA).
    pub spec_step: SpecStep,
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

/// Runs small, target and spec (spec once per γ of `opts.gammas`); `progress` is called
/// before each generation.
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
    let gammas = if opts.gammas.is_empty() {
        vec![GammaChoice::Fixed(opts.gen.gamma)]
    } else {
        opts.gammas.clone()
    };
    let spec_step = resolve_step(opts.spec_step, target, draft)?;
    let measured = opts.runs * opts.prompts.len();
    let total = (2 + gammas.len()) * (opts.warmup + measured);
    let mut done = 0;
    let mut modes = Vec::new();
    let mut spec_runs: Vec<Vec<Stats>> = vec![Vec::new(); gammas.len()];
    for mode in [BenchMode::Small, BenchMode::Target, BenchMode::Spec] {
        let mut runs = Vec::new();
        let per_round = if mode == BenchMode::Spec {
            gammas.len()
        } else {
            1
        };
        for r in 0..opts.warmup + opts.runs {
            for (p, prompt) in opts.prompts.iter().enumerate() {
                let warm = r < opts.warmup;
                if warm && p > 0 {
                    continue; // one prompt per warm-up run is enough to warm caches
                }
                for (gi, gamma) in gammas.iter().enumerate().take(per_round) {
                    let measured_so_far = match mode {
                        BenchMode::Spec => spec_runs.iter().map(Vec::len).sum(),
                        _ => runs.len(),
                    };
                    progress(&BenchProgress {
                        mode,
                        warm_up: warm,
                        index: if warm {
                            r * per_round + gi + 1
                        } else {
                            measured_so_far + 1
                        },
                        count: per_round * if warm { opts.warmup } else { measured },
                        done,
                        total,
                    });
                    done += 1;
                    let g = match mode {
                        BenchMode::Small => generate_autoregressive(draft, prompt, &opts.gen)?,
                        BenchMode::Target => generate_autoregressive(target, prompt, &opts.gen)?,
                        BenchMode::Spec => {
                            generate_spec(target, draft, prompt, &opts.gen, gamma, spec_step)?
                        }
                    };
                    if warm {
                        continue;
                    }
                    match mode {
                        BenchMode::Spec => spec_runs[gi].push(g.stats),
                        _ => runs.push(g.stats),
                    }
                }
            }
        }
        if mode != BenchMode::Spec {
            modes.push(summarize(mode, runs));
        }
    }
    let spec_modes: Vec<ModeReport<Stats>> = spec_runs
        .into_iter()
        .map(|runs| summarize(BenchMode::Spec, runs))
        .collect();
    let median = |m: &ModeReport<Stats>, f: fn(&ModeReport<Stats>) -> Option<Summary>| {
        f(m).map(|s| s.median)
    };
    let tpot = |r: &ModeReport<Stats>| r.tpot_ms;
    let thr = |r: &ModeReport<Stats>| r.throughput_tok_s;
    let target_tpot = median(&modes[1], tpot);
    let speedup_of =
        |spec: &ModeReport<Stats>| target_tpot.zip(median(spec, tpot)).map(|(t, s)| t / s);
    let speedup_tpot = speedup_of(&spec_modes[0]);
    let speedup_throughput = median(&spec_modes[0], thr)
        .zip(median(&modes[1], thr))
        .map(|(s, t)| s / t);
    let cost_ratio = median(&modes[0], tpot).zip(target_tpot).map(|(d, t)| d / t);
    let predicted_speedup = spec_modes[0]
        .acceptance_rate
        .zip(cost_ratio)
        .map(|(alpha, c)| match gammas[0] {
            GammaChoice::Fixed(g) => leviathan_speedup(alpha, g, c),
            GammaChoice::Auto(_) => mixed_speedup(alpha, &spec_modes[0].gamma_histogram, c),
        });
    let sweep = if gammas.len() > 1 {
        gammas
            .iter()
            .zip(&spec_modes)
            .map(|(g, spec)| SweepPoint {
                gamma: g.max(),
                gamma_auto: g.is_auto(),
                speedup_tpot: speedup_of(spec),
                spec: spec.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    modes.push(spec_modes.into_iter().next().expect("at least one γ"));
    let new_tokens: Vec<f64> = modes
        .iter()
        .flat_map(|m| &m.runs)
        .chain(sweep.iter().skip(1).flat_map(|p| &p.spec.runs))
        .map(|s| s.new_tokens as f64)
        .collect();
    Ok(BenchReport {
        gamma: gammas[0].max(),
        gamma_auto: gammas[0].is_auto(),
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
        sweep,
        spec_step,
        machine: opts.machine.clone(),
    })
}

/// Leviathan et al.'s speedup for steps of varying γ (`histogram[g]` steps drafted g): the
/// expected tokens of all steps over their cost in target steps, `Σ h_g E(α, g) / Σ h_g (g·c + 1)`.
fn mixed_speedup(alpha: f64, histogram: &[usize], c: f64) -> f64 {
    let (tokens, cost) = histogram
        .iter()
        .enumerate()
        .fold((0.0, 0.0), |(t, k), (g, &n)| {
            let n = n as f64;
            (
                t + n * expected_tokens(alpha, g),
                k + n * (g as f64 * c + 1.0),
            )
        });
    if cost > 0.0 {
        tokens / cost
    } else {
        f64::NAN
    }
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
    let gamma_hist = (0..runs.first().map_or(0, |s| s.gamma_histogram.len()))
        .map(|g| runs.iter().map(|s| s.gamma_histogram[g]).sum())
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
        gamma_histogram: gamma_hist,
        draft_s: runs.iter().map(|s| s.timing.draft_s).sum(),
        target_s: runs.iter().map(|s| s.timing.target_s).sum(),
        sampling_s: runs.iter().map(|s| s.timing.sampling_s).sum(),
        prefill_s: runs.iter().map(|s| s.timing.prefill_s).sum(),
        runs,
    }
}

/// The report as a markdown table like the seed study's, plus the speculative statistics,
/// and with several γ the sweep table.
pub fn markdown(report: &BenchReport) -> String {
    let mut out = format!(
        "Speed on {}: γ = {}{}, {}, {} prompts × {} runs (+{} warm-up); median (min–max).\n\n{}",
        report.machine.description,
        gamma_label(report.gamma, report.gamma_auto),
        if report.spec_step == SpecStep::Device {
            " (spec steps on the device)"
        } else {
            ""
        },
        report.new_tokens_label(),
        report.prompts.len(),
        report.runs,
        report.warmup,
        report.tables(&report.target, &report.draft)
    );
    if !report.sweep.is_empty() {
        out += &format!(
            "\nγ sweep: {} → {}, spec runs of every γ interleaved; median (min–max) over \
             prompts × runs; the first γ is the spec row above.\n\n{}",
            report.draft,
            report.target,
            report.sweep_table()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_is_a_number_from_1_to_16_or_auto() {
        assert_eq!(parse_gamma("4"), Ok(GammaChoice::Fixed(4)));
        assert_eq!(parse_gamma("16"), Ok(GammaChoice::Fixed(16)));
        assert_eq!(parse_gamma("auto"), Ok(GammaChoice::auto()));
        assert_eq!(parse_gamma("AUTO"), Ok(GammaChoice::auto()));
        for bad in ["0", "17", "x", "", "-1", "2.5"] {
            let err = parse_gamma(bad).unwrap_err();
            assert!(
                err.starts_with("expected a number of draft tokens per step from 1 to 16, or auto"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_mixed_speedup_is_leviathan_s_for_a_single_gamma() {
        for (alpha, g, c) in [(0.7, 3, 0.1), (0.0, 1, 0.5), (1.0, 5, 0.02)] {
            let mut hist = vec![0; g + 1];
            hist[g] = 7;
            let want = leviathan_speedup(alpha, g, c);
            assert!((mixed_speedup(alpha, &hist, c) - want).abs() < 1e-12);
        }
        // Half the steps at γ 1, half at γ 3: (E1 + E3) / ((c + 1) + (3c + 1)).
        let (e1, e3) = (expected_tokens(0.5, 1), expected_tokens(0.5, 3));
        let want = (e1 + e3) / (1.1 + 1.3);
        assert!((mixed_speedup(0.5, &[0, 4, 0, 4], 0.1) - want).abs() < 1e-12);
    }
}
