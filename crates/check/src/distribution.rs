//! Goodness of fit of sampled outcomes against an exact distribution (χ²), for the
//! speculative-sampling checks: outcomes are token sequences, the exact distribution comes
//! from the target's own logits.

use std::collections::HashMap;

use anyhow::{ensure, Result};
use spedec_lm::Lm;
use spedec_sampling::{process, Sampler, SamplingParams};
use spedec_speculative::{generate_speculative_on, GammaChoice, GenConfig, SpecEngine};

/// A χ² test's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChiSquare {
    /// The statistic over the outcome bins (expected counts below 5 pooled into one bin).
    pub stat: f64,
    /// Degrees of freedom: bins − 1.
    pub df: usize,
    /// Samples that fell on outcomes of probability 0 (any is a failure).
    pub impossible: usize,
}

impl ChiSquare {
    /// χ² of `counts` (outcome → samples, `n` in all) against `exact` (outcome → probability).
    pub fn of(counts: &HashMap<Vec<u32>, usize>, exact: &HashMap<Vec<u32>, f64>, n: usize) -> Self {
        let impossible = counts
            .iter()
            .filter(|(k, _)| exact.get(*k).is_none_or(|&p| p <= 0.0))
            .map(|(_, c)| c)
            .sum();
        let mut keys: Vec<&Vec<u32>> = exact.keys().filter(|k| exact[*k] > 0.0).collect();
        keys.sort();
        let (mut stat, mut bins) = (0.0, 0usize);
        let (mut pooled_e, mut pooled_o) = (0.0, 0.0);
        for k in keys {
            let e = exact[k] * n as f64;
            let o = *counts.get(k).unwrap_or(&0) as f64;
            if e < 5.0 {
                pooled_e += e;
                pooled_o += o;
            } else {
                stat += (o - e) * (o - e) / e;
                bins += 1;
            }
        }
        if pooled_e > 0.0 {
            stat += (pooled_o - pooled_e) * (pooled_o - pooled_e) / pooled_e;
            bins += 1;
        }
        ChiSquare {
            stat,
            df: bins.saturating_sub(1),
            impossible,
        }
    }

    /// About six standard deviations above the χ² mean (df + 6·√(2·df)): a correct sampler
    /// essentially never exceeds it.
    pub fn threshold(&self) -> f64 {
        self.df as f64 + 6.0 * (2.0 * self.df as f64).sqrt()
    }

    /// Whether the samples fit: nothing impossible and the statistic under the threshold.
    pub fn passes(&self) -> bool {
        self.impossible == 0 && self.stat <= self.threshold()
    }
}

/// The target's exact joint of its first `depth` sampled tokens after `prompt` (each
/// position processed by `params`), from `target`'s own logits: one forward per prefix with
/// mass, so keep the support small (top-k).
pub fn exact_joint(
    target: &mut dyn Lm,
    prompt: &[u32],
    params: &SamplingParams,
    depth: usize,
) -> Result<HashMap<Vec<u32>, f64>> {
    let mut frontier = vec![(Vec::<u32>::new(), 1.0f64)];
    for _ in 0..depth {
        let mut next = Vec::new();
        for (prefix, mass) in frontier {
            target.truncate(0)?;
            let mut seq = prompt.to_vec();
            seq.extend(&prefix);
            let row = target.forward_last(&seq)?;
            let dist = process(row.last(), params)?;
            for (t, &q) in dist.iter().enumerate() {
                if q > 0.0 {
                    let mut k = prefix.clone();
                    k.push(t as u32);
                    next.push((k, mass * q));
                }
            }
        }
        frontier = next;
    }
    Ok(frontier.into_iter().collect())
}

/// What [`sample_joint`] saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// First-`depth`-token sequences and how often each came out.
    pub counts: HashMap<Vec<u32>, usize>,
    /// Accepted over drafted tokens, over all runs.
    pub acceptance: f64,
}

/// `runs` speculative generations of `new` tokens after `prompt` on `engine` (seeds 0..runs,
/// fixed γ = `gamma`), counting their first `depth` tokens.
pub fn sample_joint(
    engine: &mut dyn SpecEngine,
    prompt: &[u32],
    params: &SamplingParams,
    gamma: usize,
    new: usize,
    depth: usize,
    runs: usize,
) -> Result<Sampled> {
    ensure!(
        depth <= new,
        "a joint of {depth} tokens from generations of {new}"
    );
    let mut counts = HashMap::new();
    let (mut drafted, mut accepted) = (0, 0);
    for seed in 0..runs as u64 {
        let cfg = GenConfig {
            max_new_tokens: new,
            gamma,
            sampler: Sampler::Random(*params),
            seed,
            stop_at_eos: false,
        };
        let g = generate_speculative_on(engine, prompt, &cfg, &GammaChoice::Fixed(gamma))?;
        ensure!(
            g.tokens.len() >= depth,
            "a generation of {} tokens, {depth} expected",
            g.tokens.len()
        );
        drafted += g.stats.drafted;
        accepted += g.stats.accepted;
        *counts.entry(g.tokens[..depth].to_vec()).or_insert(0) += 1;
    }
    Ok(Sampled {
        counts,
        acceptance: accepted as f64 / drafted.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(u32, f64)]) -> HashMap<Vec<u32>, f64> {
        pairs.iter().map(|&(k, p)| (vec![k], p)).collect()
    }

    #[test]
    fn exact_counts_pass_and_skewed_counts_fail() {
        let exact = map(&[(0, 0.5), (1, 0.3), (2, 0.2)]);
        let good: HashMap<Vec<u32>, usize> =
            [(vec![0], 500), (vec![1], 300), (vec![2], 200)].into();
        let c = ChiSquare::of(&good, &exact, 1000);
        assert_eq!((c.stat, c.df, c.impossible), (0.0, 2, 0));
        assert!(c.passes());
        let bad: HashMap<Vec<u32>, usize> = [(vec![0], 300), (vec![1], 300), (vec![2], 400)].into();
        assert!(!ChiSquare::of(&bad, &exact, 1000).passes());
        let impossible: HashMap<Vec<u32>, usize> = [(vec![0], 999), (vec![7], 1)].into();
        let c = ChiSquare::of(&impossible, &exact, 1000);
        assert_eq!(c.impossible, 1);
        assert!(!c.passes());
    }
}
