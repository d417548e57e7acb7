//! How many tokens to draft per step: a fixed γ, or `auto` — chosen before each step from
//! what the earlier steps of the run measured.
//!
//! The automatic choice maximises expected tokens per second (Leviathan et al. 2023, with the
//! measured verify cost in place of "one target step"):
//!
//! ```text
//! rate(γ) = E(γ) / (γ·t_draft + t_verify(γ + 1)),   E(γ) = (1 − α^(γ+1)) / (1 − α)
//! ```
//!
//! over γ ∈ [1, `max`], where
//! - α is the running acceptance estimate: accepted / *examined* drafts (a draft after the
//!   first rejection is never examined, so it says nothing about α), forgetting exponentially
//!   over about `alpha_window` examined drafts (each new one multiplies the past's weight by
//!   `1 − 1/alpha_window`), started from a prior of `prior_weight` examined drafts at
//!   `prior_alpha`;
//! - `t_draft` is the running mean of one draft step (a draft forward and the draw from its
//!   logits), forgetting over about `cost_window` steps;
//! - `t_verify(k)` is a line `a + b·k` fitted (weighted least squares, `a, b ≥ 0`) through
//!   the running mean time (same forgetting) of verify calls by row count k: the target
//!   forward of k rows, the acceptance decisions and the cache rollback. While only one row
//!   count has been measured, the verify is taken as flat (the memory-bound case): optimistic
//!   about longer drafts, so the next steps measure a second row count. (A first version took
//!   one draft step per extra row as the slope; with a draft of a third of the target's cost
//!   that prior made the second step γ = 1 and kept short drafts for many steps — measured in
//!   a CPU sweep on synthetic pythia-160m.)
//!
//! Before any step is measured, γ = `start`. After that the policy keeps its γ until another
//! one promises at least `switch_gain` more tokens per second under the same estimates. Near
//! the optimum the rate is flat in γ (neighbours within 1–3 %), while one noisy verify timing
//! moves the fitted slope by a factor of several; without that margin the choice wandered to
//! shorter drafts than the best fixed γ (a CPU sweep on synthetic pythia-160m, first 6 layers
//! as draft: mean γ 2.7 where γ = 3–4 was best). [`GammaPolicy`] holds no clock: the engine feeds
//! it [`StepObservation`]s, so the choice is a pure function of the run's past — greedy output
//! stays the target's greedy output; a random sample, though, then depends on timing.

use serde::Serialize;

/// The largest γ `auto` may pick (and the most rows of a verify it keeps costs for, + 1).
pub const MAX_AUTO_GAMMA: usize = 16;

/// How the speculative engine chooses the number of draft tokens of each step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GammaChoice {
    /// The same γ (≥ 1) every step.
    Fixed(usize),
    /// Chosen per step from the measured acceptance and costs.
    Auto(AutoGamma),
}

impl GammaChoice {
    /// The automatic choice with its default settings.
    pub fn auto() -> Self {
        GammaChoice::Auto(AutoGamma::default())
    }

    /// The largest γ a step may use.
    pub fn max(&self) -> usize {
        match self {
            GammaChoice::Fixed(g) => *g,
            GammaChoice::Auto(a) => a.max,
        }
    }

    /// Whether γ is chosen automatically.
    pub fn is_auto(&self) -> bool {
        matches!(self, GammaChoice::Auto(_))
    }
}

/// Settings of the automatic γ (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AutoGamma {
    /// Largest γ considered, 1..=[`MAX_AUTO_GAMMA`].
    pub max: usize,
    /// γ of the first step, before anything has been measured.
    pub start: usize,
    /// Examined drafts the acceptance estimate remembers, ≥ 1 (infinite: never forget).
    pub alpha_window: f64,
    /// Steps the cost estimates remember, ≥ 1 (infinite: never forget).
    pub cost_window: f64,
    /// Acceptance assumed before any draft has been examined.
    pub prior_alpha: f64,
    /// Weight of that prior, in examined drafts.
    pub prior_weight: f64,
    /// Relative gain in expected tokens per second another γ must promise over the current
    /// one before the policy switches to it, ≥ 0.
    pub switch_gain: f64,
}

impl Default for AutoGamma {
    fn default() -> Self {
        AutoGamma {
            max: MAX_AUTO_GAMMA,
            start: 4,
            alpha_window: 64.0,
            cost_window: 16.0,
            prior_alpha: 0.5,
            prior_weight: 2.0,
            switch_gain: 0.02,
        }
    }
}

impl AutoGamma {
    /// Checks the ranges (an error names the setting and what it must be).
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=MAX_AUTO_GAMMA).contains(&self.max),
            "auto gamma: max must be in 1..={MAX_AUTO_GAMMA}, got {}",
            self.max
        );
        anyhow::ensure!(
            (1..=self.max).contains(&self.start),
            "auto gamma: start must be in 1..={}, got {}",
            self.max,
            self.start
        );
        anyhow::ensure!(
            self.alpha_window >= 1.0 && self.cost_window >= 1.0,
            "auto gamma: alpha_window and cost_window must be at least 1, got {} and {}",
            self.alpha_window,
            self.cost_window
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.prior_alpha) && self.prior_weight >= 0.0,
            "auto gamma: prior_alpha must be in [0, 1] and prior_weight ≥ 0, got {} and {}",
            self.prior_alpha,
            self.prior_weight
        );
        anyhow::ensure!(
            self.switch_gain >= 0.0,
            "auto gamma: switch_gain must be at least 0, got {}",
            self.switch_gain
        );
        Ok(())
    }
}

/// What one speculative step did and cost, as the engine measured it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepObservation {
    /// Draft tokens proposed (≥ 1).
    pub drafted: usize,
    /// How many of them were accepted (≤ `drafted`).
    pub accepted: usize,
    /// Draft forward calls of the step (each followed by one draw).
    pub draft_calls: usize,
    /// Seconds of those calls and draws.
    pub draft_s: f64,
    /// Rows of the verify call (`drafted + 1`).
    pub verify_rows: usize,
    /// Seconds of the verify call, its decisions and the cache rollback.
    pub verify_s: f64,
}

/// Expected tokens a step emits with γ drafts at acceptance α: `Σ_{i=0..=γ} α^i`.
pub fn expected_tokens(alpha: f64, gamma: usize) -> f64 {
    let alpha = alpha.clamp(0.0, 1.0);
    (0..=gamma).map(|i| alpha.powi(i as i32)).sum()
}

/// The γ in `1..=max` (max ≥ 1) with the most expected tokens per second, given acceptance
/// `alpha`, the cost of one draft step and the cost of a verify of k rows. Ties go to the
/// smaller γ.
pub fn best_gamma(alpha: f64, t_draft: f64, t_verify: impl Fn(usize) -> f64, max: usize) -> usize {
    let mut best = (1, f64::NEG_INFINITY);
    for gamma in 1..=max.max(1) {
        let rate = token_rate(alpha, t_draft, &t_verify, gamma);
        if rate > best.1 * (1.0 + 1e-12) {
            best = (gamma, rate);
        }
    }
    best.0
}

/// Expected tokens per second of steps of γ drafts: `E(γ) / (γ·t_draft + t_verify(γ + 1))`
/// (infinite for a zero cost).
pub fn token_rate(alpha: f64, t_draft: f64, t_verify: impl Fn(usize) -> f64, gamma: usize) -> f64 {
    let cost = gamma as f64 * t_draft + t_verify(gamma + 1);
    if cost > 0.0 {
        expected_tokens(alpha, gamma) / cost
    } else {
        f64::INFINITY
    }
}

/// A running mean with exponential forgetting.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Mean {
    sum: f64,
    weight: f64,
}

impl Mean {
    fn add(&mut self, value: f64, weight: f64, decay: f64) {
        self.sum = self.sum * decay + value * weight;
        self.weight = self.weight * decay + weight;
    }

    fn get(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.sum / self.weight)
    }
}

/// The automatic choice's state over one run: fed after each step, asked before the next.
#[derive(Debug, Clone)]
pub struct GammaPolicy {
    cfg: AutoGamma,
    /// Weight the past keeps per examined draft (acceptance) and per step (costs).
    alpha_decay: f64,
    cost_decay: f64,
    /// Decayed accepted and examined drafts.
    accepted: f64,
    examined: f64,
    /// Seconds per draft step.
    draft: Mean,
    /// Seconds per verify call, by row count (index k for k rows).
    verify: Vec<Mean>,
    /// The γ the last [`GammaPolicy::choose`] returned (`start` before the first).
    current: usize,
}

/// `1 − 1/window` for a window ≥ 1 (NaN or below 1: 0, remember nothing but the last).
fn decay_of(window: f64) -> f64 {
    if window >= 1.0 {
        1.0 - 1.0 / window
    } else {
        0.0
    }
}

impl GammaPolicy {
    /// A policy that has measured nothing yet (`cfg` should be valid: see
    /// [`AutoGamma::validate`]; out-of-range values are clamped).
    pub fn new(cfg: AutoGamma) -> Self {
        let max = cfg.max.clamp(1, MAX_AUTO_GAMMA);
        GammaPolicy {
            cfg: AutoGamma {
                max,
                start: cfg.start.clamp(1, max),
                prior_alpha: cfg.prior_alpha.clamp(0.0, 1.0),
                prior_weight: cfg.prior_weight.max(0.0),
                ..cfg
            },
            alpha_decay: decay_of(cfg.alpha_window),
            cost_decay: decay_of(cfg.cost_window),
            accepted: 0.0,
            examined: 0.0,
            draft: Mean::default(),
            verify: vec![Mean::default(); max + 2],
            current: cfg.start.clamp(1, max),
        }
    }

    /// Takes in one step. Steps with no draft (or whose numbers make no sense) are ignored.
    pub fn observe(&mut self, obs: &StepObservation) {
        if obs.drafted == 0 || obs.accepted > obs.drafted {
            return;
        }
        // Drafts are examined in order up to and including the first rejected one.
        let examined = obs.accepted + usize::from(obs.accepted < obs.drafted);
        for j in 0..examined {
            self.accepted =
                self.accepted * self.alpha_decay + f64::from(u8::from(j < obs.accepted));
            self.examined = self.examined * self.alpha_decay + 1.0;
        }
        let decay = self.cost_decay;
        for m in &mut self.verify {
            m.sum *= decay;
            m.weight *= decay;
        }
        if obs.draft_calls > 0 && obs.draft_s.is_finite() && obs.draft_s >= 0.0 {
            let calls = obs.draft_calls as f64;
            self.draft.add(obs.draft_s / calls, calls, decay);
        }
        if obs.verify_s.is_finite() && obs.verify_s >= 0.0 {
            if let Some(m) = self.verify.get_mut(obs.verify_rows) {
                m.sum += obs.verify_s;
                m.weight += 1.0;
            }
        }
    }

    /// The acceptance estimate α.
    pub fn alpha(&self) -> f64 {
        let c = &self.cfg;
        let den = self.examined + c.prior_weight;
        if den > 0.0 {
            (self.accepted + c.prior_alpha * c.prior_weight) / den
        } else {
            c.prior_alpha
        }
    }

    /// Seconds of one draft step, once measured.
    pub fn draft_cost(&self) -> Option<f64> {
        self.draft.get()
    }

    /// `(a, b)` of the verify cost line `a + b·rows`, once a verify has been measured.
    pub fn verify_line(&self) -> Option<(f64, f64)> {
        let points: Vec<(f64, f64, f64)> = self
            .verify
            .iter()
            .enumerate()
            .filter_map(|(k, m)| m.get().map(|t| (k as f64, t, m.weight)))
            .collect();
        match points.as_slice() {
            [] => None,
            [(_, t, _)] => Some((*t, 0.0)),
            _ => Some(fit_line(&points)),
        }
    }

    /// Seconds of a verify of `rows` rows, once a verify has been measured.
    pub fn verify_cost(&self, rows: usize) -> Option<f64> {
        self.verify_line().map(|(a, b)| a + b * rows as f64)
    }

    /// The γ of the next step, in `1..=max` (before clipping to the run's budget and
    /// contexts): the current one, unless the best under the estimates promises more than
    /// `switch_gain` above it.
    pub fn choose(&mut self) -> usize {
        if let (Some(t_draft), Some((a, b))) = (self.draft_cost(), self.verify_line()) {
            let alpha = self.alpha();
            let verify = |rows: usize| a + b * rows as f64;
            let best = best_gamma(alpha, t_draft, verify, self.cfg.max);
            let gain = token_rate(alpha, t_draft, verify, best)
                / token_rate(alpha, t_draft, verify, self.current);
            if gain > 1.0 + self.cfg.switch_gain {
                self.current = best;
            }
        }
        self.current
    }
}

/// Weighted least-squares line `t = a + b·k` through `(k, t, weight)` points (at least two
/// distinct k), with `a, b ≥ 0`: a negative slope becomes flat (the weighted mean), a negative
/// intercept a line through the origin.
fn fit_line(points: &[(f64, f64, f64)]) -> (f64, f64) {
    let w: f64 = points.iter().map(|p| p.2).sum();
    let mk = points.iter().map(|p| p.0 * p.2).sum::<f64>() / w;
    let mt = points.iter().map(|p| p.1 * p.2).sum::<f64>() / w;
    let skk: f64 = points.iter().map(|p| p.2 * (p.0 - mk).powi(2)).sum();
    let skt: f64 = points.iter().map(|p| p.2 * (p.0 - mk) * (p.1 - mt)).sum();
    let b = if skk > 0.0 { skt / skk } else { 0.0 };
    if b <= 0.0 {
        return (mt.max(0.0), 0.0);
    }
    let a = mt - b * mk;
    if a >= 0.0 {
        return (a, b);
    }
    let num: f64 = points.iter().map(|p| p.2 * p.0 * p.1).sum();
    let den: f64 = points.iter().map(|p| p.2 * p.0 * p.0).sum();
    (0.0, (num / den).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e-3;

    #[test]
    fn expected_tokens_follows_the_geometric_sum() {
        assert_eq!(expected_tokens(0.0, 5), 1.0);
        assert_eq!(expected_tokens(1.0, 5), 6.0);
        let closed = (1.0 - 0.6f64.powi(4)) / (1.0 - 0.6);
        assert!((expected_tokens(0.6, 3) - closed).abs() < 1e-12);
    }

    #[test]
    fn cheap_draft_and_high_acceptance_give_a_large_gamma() {
        // Draft 1 % of a verify, verify flat in the rows: γ grows with α.
        let flat = |_: usize| 10.0 * MS;
        assert_eq!(best_gamma(0.99, 0.1 * MS, flat, 16), 16);
        let g9 = best_gamma(0.9, 0.1 * MS, flat, 16);
        let g7 = best_gamma(0.7, 0.1 * MS, flat, 16);
        assert!(g9 >= 10 && g7 < g9 && g7 >= 4, "α 0.9 → {g9}, α 0.7 → {g7}");
    }

    #[test]
    fn no_acceptance_gives_gamma_one() {
        let flat = |_: usize| 10.0 * MS;
        assert_eq!(best_gamma(0.0, 0.1 * MS, flat, 16), 1);
        assert_eq!(best_gamma(0.02, 1.0 * MS, flat, 16), 1);
    }

    #[test]
    fn a_verify_cost_linear_in_rows_keeps_gamma_small() {
        // α = 0.8, draft 0.5 ms. Flat 10 ms verify: long drafts pay. Verify 2.5 ms per row
        // (compute-bound target): the marginal row costs as much as the tokens it may bring.
        let flat = best_gamma(0.8, 0.5 * MS, |_| 10.0 * MS, 16);
        let linear = best_gamma(0.8, 0.5 * MS, |k| 2.5 * MS * k as f64, 16);
        assert!(flat >= 6, "flat verify: γ {flat}");
        assert!(linear <= 3, "linear verify: γ {linear}");
        // The exact argmax by brute force, for the linear table.
        let rate = |g: usize| expected_tokens(0.8, g) / (g as f64 * 0.5 + 2.5 * (g + 1) as f64);
        let want = (1..=16)
            .max_by(|&a, &b| rate(a).total_cmp(&rate(b)))
            .unwrap();
        assert_eq!(linear, want);
    }

    #[test]
    fn gamma_is_capped_by_max() {
        assert_eq!(best_gamma(1.0, 0.0, |_| 1.0, 3), 3);
        assert_eq!(best_gamma(1.0, 0.0, |_| 1.0, 0), 1);
    }

    fn step(drafted: usize, accepted: usize, t_draft: f64, t_verify: f64) -> StepObservation {
        StepObservation {
            drafted,
            accepted,
            draft_calls: drafted,
            draft_s: drafted as f64 * t_draft,
            verify_rows: drafted + 1,
            verify_s: t_verify,
        }
    }

    #[test]
    fn the_policy_starts_at_start_then_follows_the_measurements() {
        let mut p = GammaPolicy::new(AutoGamma::default());
        assert_eq!(p.choose(), 4);
        assert_eq!(p.alpha(), 0.5);
        // Every draft accepted, a cheap draft and a flat verify: γ climbs to the cap.
        for _ in 0..40 {
            let g = p.choose();
            p.observe(&step(g, g, 0.1 * MS, 10.0 * MS));
        }
        assert!(p.alpha() > 0.95, "α {}", p.alpha());
        assert_eq!(p.choose(), MAX_AUTO_GAMMA);
        // Then nothing is accepted any more: γ falls back to 1.
        for _ in 0..300 {
            let g = p.choose();
            p.observe(&step(g, 0, 0.1 * MS, 10.0 * MS));
        }
        assert!(p.alpha() < 0.05, "α {}", p.alpha());
        assert_eq!(p.choose(), 1);
    }

    #[test]
    fn the_policy_keeps_its_gamma_unless_another_promises_more_than_the_margin() {
        // α ≈ 0.87, draft 4.5 ms, verify 10 ms + 0.2 ms per row: γ = 3 and 4 are within 1 %.
        let alpha = 0.87;
        let verify = |k: usize| (10.0 + 0.2 * k as f64) * MS;
        let rate = |g| token_rate(alpha, 4.5 * MS, verify, g);
        assert!(
            (rate(3) / rate(4) - 1.0).abs() < 0.02,
            "{} {}",
            rate(3),
            rate(4)
        );
        assert!(rate(3) / rate(1) > 1.05);
        let cfg = AutoGamma {
            prior_weight: 0.0,
            alpha_window: f64::INFINITY,
            cost_window: f64::INFINITY,
            ..AutoGamma::default()
        };
        let feed = |p: &mut GammaPolicy, g: usize| {
            // 87 of every 100 examined drafts accepted.
            for i in 0..1000 {
                let accepted = usize::from(i % 100 < 87);
                p.observe(&StepObservation {
                    drafted: 1,
                    accepted,
                    draft_calls: 1,
                    draft_s: 4.5 * MS,
                    verify_rows: 2,
                    verify_s: verify(2),
                });
            }
            for rows in [g + 1, 6] {
                p.observe(&StepObservation {
                    drafted: rows - 1,
                    accepted: rows - 1,
                    draft_calls: rows - 1,
                    draft_s: (rows - 1) as f64 * 4.5 * MS,
                    verify_rows: rows,
                    verify_s: verify(rows),
                });
            }
        };
        // Starting at 4 or at 3 (within the margin of each other), the policy stays there.
        for start in [3, 4] {
            let mut p = GammaPolicy::new(AutoGamma { start, ..cfg });
            feed(&mut p, start);
            assert_eq!(p.choose(), start, "α {}", p.alpha());
        }
        // Starting at 1, more than 5 % below the best: it moves to the best.
        let mut p = GammaPolicy::new(AutoGamma { start: 1, ..cfg });
        feed(&mut p, 1);
        let best = best_gamma(p.alpha(), 4.5 * MS, verify, MAX_AUTO_GAMMA);
        assert!(best > 1);
        assert_eq!(p.choose(), best);
        // With no margin it always takes the best.
        let mut p = GammaPolicy::new(AutoGamma {
            start: 4,
            switch_gain: 0.0,
            ..cfg
        });
        feed(&mut p, 4);
        let best = best_gamma(
            p.alpha(),
            p.draft_cost().unwrap(),
            |k| p.verify_cost(k).unwrap(),
            16,
        );
        assert_eq!(p.choose(), best);
    }

    #[test]
    fn acceptance_counts_only_examined_drafts() {
        let cfg = AutoGamma {
            prior_weight: 0.0,
            alpha_window: f64::INFINITY,
            ..AutoGamma::default()
        };
        let mut p = GammaPolicy::new(cfg);
        // 2 of 4 accepted: 3 examined (the third rejected, the fourth never looked at).
        p.observe(&step(4, 2, MS, MS));
        assert!((p.alpha() - 2.0 / 3.0).abs() < 1e-12);
        p.observe(&step(4, 4, MS, MS));
        assert!((p.alpha() - 6.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn the_verify_line_is_fitted_through_the_measured_row_counts() {
        let cfg = AutoGamma {
            cost_window: f64::INFINITY,
            ..AutoGamma::default()
        };
        let mut p = GammaPolicy::new(cfg);
        assert_eq!(p.verify_cost(5), None);
        // One row count: taken as flat.
        p.observe(&step(4, 1, 0.5 * MS, 12.0 * MS));
        assert_eq!(p.verify_line(), Some((12.0 * MS, 0.0)));
        // t = 8 ms + 1 ms per row, measured at 3 and 7 rows.
        let mut p = GammaPolicy::new(cfg);
        for rows in [3, 7, 3, 7] {
            p.observe(&step(rows - 1, 0, MS, (8.0 + rows as f64) * MS));
        }
        let (a, b) = p.verify_line().unwrap();
        assert!(
            (a - 8.0 * MS).abs() < 1e-9 && (b - MS).abs() < 1e-9,
            "{a} {b}"
        );
        assert!((p.verify_cost(17).unwrap() - 25.0 * MS).abs() < 1e-9);
    }

    #[test]
    fn fitted_lines_are_never_negative() {
        // Falling times: flat at the weighted mean.
        assert_eq!(fit_line(&[(2.0, 4.0, 1.0), (4.0, 2.0, 1.0)]), (3.0, 0.0));
        // Steep line with a negative intercept: through the origin instead.
        let (a, b) = fit_line(&[(2.0, 1.0, 1.0), (4.0, 5.0, 1.0)]);
        assert_eq!(a, 0.0);
        assert!((b - 22.0 / 20.0).abs() < 1e-12);
    }

    #[test]
    fn bad_observations_are_ignored() {
        let mut p = GammaPolicy::new(AutoGamma::default());
        p.observe(&step(0, 0, MS, MS));
        p.observe(&step(2, 3, MS, MS));
        assert_eq!((p.alpha(), p.draft_cost()), (0.5, None));
        let mut nan = step(2, 1, MS, MS);
        nan.draft_s = f64::NAN;
        nan.verify_rows = 99;
        p.observe(&nan);
        assert_eq!((p.draft_cost(), p.verify_line()), (None, None));
    }

    #[test]
    fn settings_are_checked() {
        assert!(AutoGamma::default().validate().is_ok());
        for bad in [
            AutoGamma {
                max: 17,
                ..AutoGamma::default()
            },
            AutoGamma {
                start: 0,
                ..AutoGamma::default()
            },
            AutoGamma {
                cost_window: 0.5,
                ..AutoGamma::default()
            },
            AutoGamma {
                prior_alpha: 1.5,
                ..AutoGamma::default()
            },
            AutoGamma {
                switch_gain: -0.1,
                ..AutoGamma::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
