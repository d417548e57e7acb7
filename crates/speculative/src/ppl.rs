//! Perplexity of scored text under the target, the draft, and the speculative sampler.
//!
//! The speculative sampler emits token `x` (in place of one draft proposal) with probability
//! `min(p, q)(x) + (1 − Σ min(p, q)) · norm(max(0, p − q))(x)`, computed here from its parts
//! with `p`, `q` the processed target and draft distributions. It equals `p(x)` up to rounding,
//! so the "spec" perplexity must match the target's: an empirical check of losslessness.
//! Perplexity evaluation normally uses temperature 1 with no top-k / top-p (the raw softmax).

use anyhow::{ensure, Result};
use serde::Serialize;
use spedec_sampling::{emission_probability, Sampler};

/// Negative log-likelihoods (natural log) of one scored token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokenNll {
    /// `−ln p(x)`.
    pub target: f64,
    /// `−ln q(x)`.
    pub draft: f64,
    /// `−ln P_spec(x)`; equals `target` up to rounding.
    pub spec: f64,
}

/// NLLs of `token` given one target and one draft logits row (same position, same vocabulary),
/// both processed with `sampler`. A token of probability 0 has NLL `+inf`.
pub fn token_nll(
    target_logits: &[f32],
    draft_logits: &[f32],
    token: u32,
    sampler: &Sampler,
) -> Result<TokenNll> {
    ensure!(
        target_logits.len() == draft_logits.len(),
        "target and draft logits rows differ in width ({} vs {})",
        target_logits.len(),
        draft_logits.len()
    );
    let x = token as usize;
    ensure!(
        x < target_logits.len(),
        "token {token} is outside the vocabulary of {}",
        target_logits.len()
    );
    let p = sampler.distribution(target_logits)?;
    let q = sampler.distribution(draft_logits)?;
    let spec = emission_probability(&p, &q, x)?;
    Ok(TokenNll {
        target: -p[x].ln(),
        draft: -q[x].ln(),
        spec: -spec.ln(),
    })
}

/// `−ln p(token)` of one target logits row processed with `sampler`: [`token_nll`]'s
/// `target` (the same bits) without a draft, computing the distribution once.
pub fn target_nll(logits: &[f32], token: u32, sampler: &Sampler) -> Result<f64> {
    let x = token as usize;
    ensure!(
        x < logits.len(),
        "token {token} is outside the vocabulary of {}",
        logits.len()
    );
    Ok(-sampler.distribution(logits)?[x].ln())
}

/// Running sums of [`TokenNll`] over the scored tokens of a text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct NllTotals {
    /// Tokens scored.
    pub tokens: usize,
    /// Σ target NLL.
    pub target: f64,
    /// Σ draft NLL.
    pub draft: f64,
    /// Σ speculative NLL.
    pub spec: f64,
}

/// Token-level perplexities, `exp(mean NLL)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Perplexities {
    /// Target model.
    pub target: f64,
    /// Draft model.
    pub draft: f64,
    /// Speculative sampler (must equal `target` up to rounding).
    pub spec: f64,
}

impl NllTotals {
    /// Adds one scored token.
    pub fn add(&mut self, nll: TokenNll) {
        self.tokens += 1;
        self.target += nll.target;
        self.draft += nll.draft;
        self.spec += nll.spec;
    }

    /// Merges another total (e.g. of another window).
    pub fn merge(&mut self, other: &NllTotals) {
        self.tokens += other.tokens;
        self.target += other.target;
        self.draft += other.draft;
        self.spec += other.spec;
    }

    /// `exp(mean NLL)` for each; `None` when nothing was scored.
    pub fn perplexities(&self) -> Option<Perplexities> {
        (self.tokens > 0).then(|| {
            let n = self.tokens as f64;
            Perplexities {
                target: (self.target / n).exp(),
                draft: (self.draft / n).exp(),
                spec: (self.spec / n).exp(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_nll() {
        let t: Vec<f32> = [0.5f64, 0.25, 0.25].iter().map(|p| p.ln() as f32).collect();
        let d: Vec<f32> = [0.25f64, 0.5, 0.25].iter().map(|p| p.ln() as f32).collect();
        let s = Sampler::Random(Default::default());
        let nll = token_nll(&t, &d, 0, &s).unwrap();
        assert!((nll.target - 2f64.ln()).abs() < 1e-6);
        assert!((nll.draft - 4f64.ln()).abs() < 1e-6);
        assert!((nll.spec - nll.target).abs() < 1e-12);
        assert!(token_nll(&t, &d, 3, &s).is_err());
        assert_eq!(
            target_nll(&t, 0, &s).unwrap().to_bits(),
            nll.target.to_bits()
        );
        assert_eq!(
            target_nll(&d, 1, &s).unwrap(),
            token_nll(&t, &d, 1, &s).unwrap().draft
        );
        assert!(target_nll(&t, 3, &s).is_err());
        assert!(token_nll(&t, &d[..2], 0, &s).is_err());
    }

    #[test]
    fn totals_give_perplexity() {
        let mut tot = NllTotals::default();
        assert_eq!(tot.perplexities(), None);
        tot.add(TokenNll {
            target: 1.0,
            draft: 2.0,
            spec: 1.0,
        });
        tot.add(TokenNll {
            target: 3.0,
            draft: 2.0,
            spec: 3.0,
        });
        let ppl = tot.perplexities().unwrap();
        assert!((ppl.target - 2f64.exp()).abs() < 1e-12 && (ppl.draft - 2f64.exp()).abs() < 1e-12);
    }
}
