//! The report of `spedec bench` (`--json FILE`): small (draft alone), target (alone) and
//! speculative decoding, each with TTFT and TPOT in milliseconds and throughput in tokens/s
//! (median and range over prompts × measured runs), the speculative statistics and the
//! speedups; and the tables both `spedec` and `cargo xtask bench` print from it.

use serde::{Deserialize, Serialize};

use crate::{fmt_opt, Machine, SpecStep, Summary};

/// The three modes of the seed study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// The draft model alone, autoregressive.
    Small,
    /// The target model alone, autoregressive.
    Target,
    /// Speculative decoding (draft proposes, target verifies).
    Spec,
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

/// Results of one mode. `R` is the type of one run's statistics: spedec's own, or any JSON
/// value for readers that only pass them on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeReport<R = serde_json::Value> {
    pub mode: BenchMode,
    /// Time to first token, ms.
    pub ttft_ms: Option<Summary>,
    /// Time per output token after the first, ms.
    pub tpot_ms: Option<Summary>,
    /// New tokens per second of a run's total time.
    pub throughput_tok_s: Option<Summary>,
    /// Speculative only: accepted / drafted over all measured runs.
    pub acceptance_rate: Option<f64>,
    /// Speculative only: tokens emitted per verify step (bonus token counted).
    pub mean_accepted_length: Option<f64>,
    /// Speculative only: acceptance rate of draft position i.
    #[serde(default)]
    pub acceptance_per_position: Vec<Option<f64>>,
    /// Speculative only: verify steps by accepted drafts, 0..=γ.
    #[serde(default)]
    pub accepted_length_histogram: Vec<usize>,
    /// Speculative only: verify steps by drafted tokens (the γ each step used), 0..=γ; with
    /// `--gamma auto`, the distribution of the chosen γ.
    #[serde(default)]
    pub gamma_histogram: Vec<usize>,
    /// Seconds spent in draft forward / target forward / sampling / prefill, summed over
    /// measured runs.
    #[serde(default)]
    pub draft_s: f64,
    #[serde(default)]
    pub target_s: f64,
    #[serde(default)]
    pub sampling_s: f64,
    #[serde(default)]
    pub prefill_s: f64,
    /// Every measured run's statistics, for later analysis.
    #[serde(default = "Vec::new")]
    pub runs: Vec<R>,
}

/// The whole benchmark report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport<R = serde_json::Value> {
    /// The γ of `modes`' spec runs; with `gamma_auto`, the largest the choice may pick.
    pub gamma: usize,
    /// Whether the spec runs of `modes` chose γ per step (`--gamma auto`).
    #[serde(default)]
    pub gamma_auto: bool,
    /// New tokens each run was asked for.
    pub max_new_tokens: usize,
    /// New tokens the measured runs actually made (fewer than asked when the context filled
    /// up); absent in reports written before it was recorded.
    #[serde(default)]
    pub new_tokens: Option<Summary>,
    pub runs: usize,
    pub warmup: usize,
    pub prompts: Vec<String>,
    /// Small, target and spec, in that order.
    pub modes: Vec<ModeReport<R>>,
    /// Median target TPOT / median spec TPOT.
    pub speedup_tpot: Option<f64>,
    /// Median spec throughput / median target throughput.
    pub speedup_throughput: Option<f64>,
    /// Draft/target cost ratio c = median small TPOT / median target TPOT.
    pub cost_ratio: Option<f64>,
    /// Leviathan et al. (2023): (1 − α^(γ+1)) / ((1 − α)(γc + 1)), with α the measured
    /// acceptance rate.
    pub predicted_speedup: Option<f64>,
    /// The target model as given (a folder or a synthetic spec).
    #[serde(default)]
    pub target: String,
    /// The draft model as given.
    #[serde(default)]
    pub draft: String,
    /// With several `--gamma` values: the spec runs of each, in the order given (the first is
    /// also `modes`' spec entry); empty for a single γ.
    #[serde(default)]
    pub sweep: Vec<SweepPoint<R>>,
    /// Where the spec runs' steps ran: `host` (logits back to the host every forward) or
    /// `device` (sampling and decision on the GPU); `host` in reports written before it was
    /// recorded.
    #[serde(default = "host_step")]
    pub spec_step: SpecStep,
    #[serde(flatten)]
    pub machine: Machine,
}

fn host_step() -> SpecStep {
    SpecStep::Host
}

/// The spec runs of one γ (fixed or auto) of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint<R = serde_json::Value> {
    /// The fixed γ, or with `gamma_auto` the largest the choice may pick.
    pub gamma: usize,
    #[serde(default)]
    pub gamma_auto: bool,
    /// Median target TPOT / median spec TPOT of this γ.
    pub speedup_tpot: Option<f64>,
    pub spec: ModeReport<R>,
}

impl<R> SweepPoint<R> {
    /// `4`, or `auto (≤ 16)`.
    pub fn label(&self) -> String {
        gamma_label(self.gamma, self.gamma_auto)
    }
}

/// `4`, or `auto (≤ 16)`.
pub fn gamma_label(gamma: usize, auto: bool) -> String {
    if auto {
        format!("auto (≤ {gamma})")
    } else {
        gamma.to_string()
    }
}

/// Mean γ of a γ histogram (index = γ), if any step was counted.
pub fn mean_gamma(histogram: &[usize]) -> Option<f64> {
    let steps: usize = histogram.iter().sum();
    let drafted: usize = histogram.iter().enumerate().map(|(g, n)| g * n).sum();
    (steps > 0).then(|| drafted as f64 / steps as f64)
}

impl<R> BenchReport<R> {
    /// Whether some measured run stopped before `max_new_tokens`.
    pub fn stopped_early(&self) -> bool {
        self.new_tokens
            .is_some_and(|s| s.min < self.max_new_tokens as f64)
    }

    /// What the runs generated, for a table's title: `200 new tokens`, or when runs stopped
    /// early `3–9 new tokens (200 asked; the context filled up)`.
    pub fn new_tokens_label(&self) -> String {
        match self.new_tokens {
            Some(s) if self.stopped_early() => {
                let made = if s.min == s.max {
                    format!("{}", s.min)
                } else {
                    format!("{}–{}", s.min, s.max)
                };
                format!(
                    "{made} new tokens ({} asked; the context filled up)",
                    self.max_new_tokens
                )
            }
            _ => format!("{} new tokens", self.max_new_tokens),
        }
    }

    /// The report of `mode`, if measured.
    pub fn mode(&self, mode: BenchMode) -> Option<&ModeReport<R>> {
        self.modes.iter().find(|m| m.mode == mode)
    }

    /// The median TPOT (ms) of `mode`.
    pub fn median_tpot_ms(&self, mode: BenchMode) -> Option<f64> {
        self.mode(mode)?.tpot_ms.map(|s| s.median)
    }

    /// The seed study's speed table (TTFT and TPOT in ms, throughput in tokens/s; cells are
    /// median (min–max)) and the table of speculative statistics, in markdown; `target` and
    /// `draft` label the rows.
    pub fn tables(&self, target: &str, draft: &str) -> String {
        let cell = |s: Option<Summary>| s.map_or("—".to_string(), |s| s.cell(2));
        let mut out = String::from(
            "| model / mode | TTFT (ms) | TPOT (ms) | throughput (tokens/s) |\n|---|---|---|---|\n",
        );
        for (mode, label) in [
            (BenchMode::Small, format!("{draft} (small)")),
            (BenchMode::Target, format!("{target} (target)")),
            (BenchMode::Spec, "speculative decoding (spec)".to_string()),
        ] {
            let m = self.mode(mode);
            out += &format!(
                "| {label} | {} | {} | {} |\n",
                cell(m.and_then(|m| m.ttft_ms)),
                cell(m.and_then(|m| m.tpot_ms)),
                cell(m.and_then(|m| m.throughput_tok_s))
            );
        }
        let spec = self.mode(BenchMode::Spec);
        let times = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}×"));
        let per_pos: Vec<String> = spec
            .map(|s| {
                s.acceptance_per_position
                    .iter()
                    .map(|v| fmt_opt(*v, 3))
                    .collect()
            })
            .unwrap_or_default();
        let histogram: Vec<String> = spec
            .map(|s| {
                s.accepted_length_histogram
                    .iter()
                    .map(usize::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let rows = [
            ("speedup, TPOT (target / spec)", times(self.speedup_tpot)),
            (
                "speedup, throughput (spec / target)",
                times(self.speedup_throughput),
            ),
            (
                "acceptance rate α (accepted / drafted)",
                fmt_opt(spec.and_then(|s| s.acceptance_rate), 3),
            ),
            (
                "mean accepted length (tokens per verify step)",
                fmt_opt(spec.and_then(|s| s.mean_accepted_length), 3),
            ),
            ("acceptance by draft position 1..γ", per_pos.join(", ")),
            ("verify steps by accepted drafts 0..γ", histogram.join(", ")),
            (
                "cost ratio c (small TPOT / target TPOT)",
                fmt_opt(self.cost_ratio, 4),
            ),
            (
                "predicted speedup (Leviathan et al., from α, γ, c)",
                times(self.predicted_speedup),
            ),
        ];
        out += "\n| statistic | value |\n|---|---|\n";
        for (name, value) in rows {
            out += &format!("| {name} | {value} |\n");
        }
        let parts = spec.map_or([0.0; 4], |s| {
            [s.draft_s, s.target_s, s.sampling_s, s.prefill_s]
        });
        let sum: f64 = parts.iter().sum();
        if sum > 0.0 {
            let pct: Vec<String> = parts
                .iter()
                .map(|p| format!("{:.0}%", 100.0 * p / sum))
                .collect();
            out += &format!(
                "| spec time: draft / verify / sampling / prefill | {} |\n",
                pct.join(" / ")
            );
        }
        if let Some(s) = spec.filter(|_| self.gamma_auto) {
            let hist: Vec<String> = s.gamma_histogram.iter().map(usize::to_string).collect();
            out += &format!(
                "| γ chosen per step (auto): verify steps by γ 0..{} | {} |\n",
                self.gamma,
                hist.join(", ")
            );
            out += &format!(
                "| mean γ (auto) | {} |\n",
                fmt_opt(mean_gamma(&s.gamma_histogram), 2)
            );
        }
        out
    }

    /// With several γ: one row per γ — spec TPOT and throughput (median (min–max)), α, tokens
    /// per verify step, mean γ, the speedup over the target, and each TPOT against the best
    /// fixed γ's (`+3.1%`: that much slower). Empty without a sweep.
    pub fn sweep_table(&self) -> String {
        if self.sweep.is_empty() {
            return String::new();
        }
        let best = self
            .sweep
            .iter()
            .filter(|p| !p.gamma_auto)
            .filter_map(|p| p.spec.tpot_ms.map(|s| s.median))
            .min_by(f64::total_cmp);
        let cell = |s: Option<Summary>| s.map_or("—".to_string(), |s| s.cell(2));
        let mut out = String::from(
            "| γ | spec TPOT (ms) | spec throughput (tokens/s) | α | tokens / verify | mean γ | \
             speedup (target / spec TPOT) | TPOT vs best fixed γ |\n|---|---|---|---|---|---|---|---|\n",
        );
        for p in &self.sweep {
            let s = &p.spec;
            let versus = match (s.tpot_ms, best) {
                (Some(t), Some(b)) if b > 0.0 => format!("{:+.1}%", 100.0 * (t.median / b - 1.0)),
                _ => "—".to_string(),
            };
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {versus} |\n",
                p.label(),
                cell(s.tpot_ms),
                cell(s.throughput_tok_s),
                fmt_opt(s.acceptance_rate, 3),
                fmt_opt(s.mean_accepted_length, 3),
                fmt_opt(mean_gamma(&s.gamma_histogram), 2),
                p.speedup_tpot
                    .map_or("—".to_string(), |v| format!("{v:.3}×")),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary(median: f64, min: f64, max: f64) -> serde_json::Value {
        json!({"median": median, "min": min, "max": max, "n": 4})
    }

    /// A report as an older spedec wrote it (no structured machine fields).
    fn report() -> serde_json::Value {
        let mode = |name: &str, ttft: f64, alpha: Option<f64>| {
            json!({"mode": name, "ttft_ms": summary(ttft, ttft - 2.5, ttft + 7.5),
                   "tpot_ms": summary(9.0, 8.5, 9.5), "throughput_tok_s": summary(111.0, 100.0, 115.0),
                   "acceptance_rate": alpha, "mean_accepted_length": alpha.map(|_| 2.5),
                   "acceptance_per_position": if alpha.is_some() { json!([0.8, null]) } else { json!([]) },
                   "accepted_length_histogram": if alpha.is_some() { json!([1, 2, 3]) } else { json!([]) },
                   "draft_s": 2.0, "target_s": 6.0, "sampling_s": 1.0, "prefill_s": 1.0,
                   "runs": [{"new_tokens": 8}]})
        };
        json!({
            "gamma": 2, "max_new_tokens": 8, "runs": 1, "warmup": 0, "prompts": ["a"],
            "modes": [mode("small", 12.5, None), mode("target", 1406.1, None), mode("spec", 957.0, Some(0.75))],
            "speedup_tpot": 2.491, "speedup_throughput": null, "cost_ratio": 0.0337,
            "predicted_speedup": 1.5, "target": "t", "draft": "d",
            "machine": "AMD EPYC, 2 threads (CPU)"
        })
    }

    #[test]
    fn reports_read_old_json_and_write_it_back_with_the_machine_fields() {
        let r: BenchReport = serde_json::from_value(report()).unwrap();
        assert_eq!(r.machine.description, "AMD EPYC, 2 threads (CPU)");
        assert_eq!(r.median_tpot_ms(BenchMode::Target), Some(9.0));
        let back = serde_json::to_value(&r).unwrap();
        let mut want = report();
        for (k, v) in [
            ("cpu", json!("")),
            ("cpu_threads", json!(0)),
            ("device", json!("cpu")),
            ("new_tokens", json!(null)),
            ("gamma_auto", json!(false)),
            ("sweep", json!([])),
            ("spec_step", json!("host")),
        ] {
            want[k] = v;
        }
        for m in want["modes"].as_array_mut().unwrap() {
            m["gamma_histogram"] = json!([]);
        }
        assert_eq!(back, want);
    }

    #[test]
    fn titles_say_what_the_runs_generated() {
        let mut r: BenchReport = serde_json::from_value(report()).unwrap();
        assert_eq!(r.new_tokens_label(), "8 new tokens");
        r.new_tokens = Summary::of(&[8.0, 8.0]);
        assert!(!r.stopped_early());
        assert_eq!(r.new_tokens_label(), "8 new tokens");
        r.new_tokens = Summary::of(&[3.0, 6.0, 5.0]);
        assert!(r.stopped_early());
        assert_eq!(
            r.new_tokens_label(),
            "3–6 new tokens (8 asked; the context filled up)"
        );
        r.new_tokens = Summary::of(&[3.0]);
        assert_eq!(
            r.new_tokens_label(),
            "3 new tokens (8 asked; the context filled up)"
        );
    }

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
    fn tables_use_ms_for_ttft_and_tpot() {
        let r: BenchReport = serde_json::from_value(report()).unwrap();
        let md = r.tables("pythia-2.8b", "pythia-70m");
        for needle in [
            "| model / mode | TTFT (ms) | TPOT (ms) | throughput (tokens/s) |",
            "| pythia-70m (small) | 12.50 (10.00–20.00) | 9.00 (8.50–9.50) | 111.00 (100.00–115.00) |",
            "| pythia-2.8b (target) | 1406.10 (1403.60–1413.60) |",
            "| speedup, TPOT (target / spec) | 2.491× |",
            "| speedup, throughput (spec / target) | — |",
            "| acceptance rate α (accepted / drafted) | 0.750 |",
            "| acceptance by draft position 1..γ | 0.800, — |",
            "| verify steps by accepted drafts 0..γ | 1, 2, 3 |",
            "| cost ratio c (small TPOT / target TPOT) | 0.0337 |",
            "| predicted speedup (Leviathan et al., from α, γ, c) | 1.500× |",
            "| spec time: draft / verify / sampling / prefill | 20% / 60% / 10% / 10% |",
        ] {
            assert!(md.contains(needle), "`{needle}` missing from:\n{md}");
        }
    }

    #[test]
    fn auto_gamma_and_sweeps_get_their_rows() {
        let mut r: BenchReport = serde_json::from_value(report()).unwrap();
        assert!(!r.tables("t", "d").contains("auto"));
        assert_eq!(r.sweep_table(), "");
        r.gamma_auto = true;
        r.gamma = 3;
        r.modes[2].gamma_histogram = vec![0, 1, 2, 1];
        let md = r.tables("t", "d");
        for needle in [
            "| γ chosen per step (auto): verify steps by γ 0..3 | 0, 1, 2, 1 |",
            "| mean γ (auto) | 2.00 |",
        ] {
            assert!(md.contains(needle), "`{needle}` missing from:\n{md}");
        }
        let point = |gamma, auto, tpot: f64| SweepPoint {
            gamma,
            gamma_auto: auto,
            speedup_tpot: Some(9.0 / tpot),
            spec: ModeReport {
                tpot_ms: Summary::of(&[tpot]),
                ..r.modes[2].clone()
            },
        };
        r.sweep = vec![
            point(2, false, 5.0),
            point(4, false, 4.0),
            point(16, true, 4.1),
        ];
        let md = r.sweep_table();
        for needle in [
            "| 2 | 5.00 (5.00–5.00) |",
            "| +25.0% |",
            "| 4 | 4.00 (4.00–4.00) |",
            "| 2.250× | +0.0% |",
            "| auto (≤ 16) | 4.10 (4.10–4.10) |",
            "| 0.750 | 2.500 | 2.00 | 2.195× | +2.5% |",
        ] {
            assert!(md.contains(needle), "`{needle}` missing from:\n{md}");
        }
        assert_eq!(mean_gamma(&[]), None);
        let back: BenchReport = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
