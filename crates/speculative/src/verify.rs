//! One speculative step as small pure functions: draw a draft token, then verify a run of drafts
//! against the target's logits rows (accept with min(1, p/q), replace from the residual on the
//! first rejection, bonus token from the last row when all are accepted).

use anyhow::{Context, Result};
use spedec_lm::Logits;
use spedec_sampling::{acceptance_probability, argmax, process, residual, softmax, Sampler};

use crate::decide::{Decisions, Fault};

/// A draft token and the distribution the verifier must use as its q.
pub(crate) struct Draft {
    pub token: u32,
    /// Processed draft distribution (empty in greedy mode, where it is not needed).
    pub q: Vec<f64>,
}

/// Draws the next token from one logits row: argmax for greedy, the processed distribution
/// otherwise.
pub(crate) fn choose(row: &[f32], sampler: &Sampler, decisions: &mut dyn Decisions) -> Result<u32> {
    Ok(match sampler {
        Sampler::Greedy => argmax(row)?,
        Sampler::Random(params) => decisions.categorical(&process(row, params)?)?,
    })
}

/// Draws a draft token from a draft logits row and keeps the q the verifier needs.
pub(crate) fn draw_draft(
    row: &[f32],
    sampler: &Sampler,
    decisions: &mut dyn Decisions,
    fault: Fault,
) -> Result<Draft> {
    match sampler {
        Sampler::Greedy => Ok(Draft {
            token: argmax(row)?,
            q: Vec::new(),
        }),
        Sampler::Random(params) => {
            let q = process(row, params)?;
            let token = decisions.categorical(&q)?;
            let q = if fault == Fault::RawDraftQ {
                softmax(row)?
            } else {
                q
            };
            Ok(Draft { token, q })
        }
    }
}

/// What a verify step decided: the first `accepted` drafts are kept, then `next` follows
/// (the correction after a rejection, or the bonus token when all drafts were accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub accepted: usize,
    pub next: u32,
}

/// Verifies `drafts` against target rows `0..=drafts.len()` (row i scores draft i; the last row
/// gives the bonus token). Target distributions are processed lazily: rows after the first
/// rejection are never touched.
pub(crate) fn verify(
    target: &Logits,
    drafts: &[Draft],
    sampler: &Sampler,
    decisions: &mut dyn Decisions,
    fault: Fault,
) -> Result<Verdict> {
    let gamma = drafts.len();
    anyhow::ensure!(
        target.rows() == gamma + 1,
        "verify needs {} target rows, got {}",
        gamma + 1,
        target.rows()
    );
    let params = match sampler {
        Sampler::Greedy => {
            for (i, d) in drafts.iter().enumerate() {
                let best = argmax(target.row(i))?;
                if best != d.token {
                    return Ok(Verdict {
                        accepted: i,
                        next: best,
                    });
                }
            }
            return Ok(Verdict {
                accepted: gamma,
                next: argmax(target.row(gamma))?,
            });
        }
        Sampler::Random(params) => params,
    };
    let target_dist = |i: usize| -> Result<Vec<f64>> {
        let row = target.row(i);
        Ok(if fault == Fault::RawTargetP {
            softmax(row)?
        } else {
            process(row, params)?
        })
    };
    for (i, d) in drafts.iter().enumerate() {
        let p = target_dist(i)?;
        let x = d.token as usize;
        let (px, qx) = (p[x], d.q[x]);
        if decisions.bernoulli(acceptance_probability(px, qx)) {
            continue;
        }
        let replacement = if fault == Fault::ResidualFromP {
            p
        } else {
            residual(&p, &d.q)?
        };
        let next = decisions
            .categorical(&replacement)
            .with_context(|| format!("drawing the replacement for rejected draft {i}"))?;
        return Ok(Verdict { accepted: i, next });
    }
    let next = decisions.categorical(&target_dist(gamma)?)?;
    Ok(Verdict {
        accepted: gamma,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use spedec_sampling::{SamplingError, SamplingParams};

    /// Replays fixed answers and records what it was asked.
    struct Script {
        accepts: Vec<bool>,
        tokens: Vec<u32>,
        asked_probs: Vec<f64>,
        asked_dists: Vec<Vec<f64>>,
    }

    impl Decisions for Script {
        fn categorical(&mut self, dist: &[f64]) -> Result<u32, SamplingError> {
            self.asked_dists.push(dist.to_vec());
            Ok(self.tokens.remove(0))
        }
        fn bernoulli(&mut self, prob: f64) -> bool {
            self.asked_probs.push(prob);
            self.accepts.remove(0)
        }
    }

    fn script(accepts: &[bool], tokens: &[u32]) -> Script {
        Script {
            accepts: accepts.to_vec(),
            tokens: tokens.to_vec(),
            asked_probs: vec![],
            asked_dists: vec![],
        }
    }

    fn ln(ps: &[f64]) -> Vec<f32> {
        ps.iter().map(|p| p.ln() as f32).collect()
    }

    fn rows(rs: &[&[f64]]) -> Logits {
        let data: Vec<f32> = rs.iter().flat_map(|r| ln(r)).collect();
        Logits::new(data, rs.len(), rs[0].len())
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    const T1: Sampler = Sampler::Random(SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
    });

    #[test]
    fn greedy_accepts_matching_prefix_then_corrects() {
        let target = rows(&[&[0.1, 0.7, 0.2], &[0.6, 0.3, 0.1], &[0.2, 0.2, 0.6]]);
        let d = |t| Draft {
            token: t,
            q: vec![],
        };
        let mut s = script(&[], &[]);
        let v = verify(
            &target,
            &[d(1), d(2)],
            &Sampler::Greedy,
            &mut s,
            Fault::None,
        )
        .unwrap();
        assert_eq!(
            v,
            Verdict {
                accepted: 1,
                next: 0
            }
        );
        let v = verify(
            &target,
            &[d(1), d(0)],
            &Sampler::Greedy,
            &mut s,
            Fault::None,
        )
        .unwrap();
        assert_eq!(
            v,
            Verdict {
                accepted: 2,
                next: 2
            }
        );
        let v = verify(
            &target,
            &[d(0), d(0)],
            &Sampler::Greedy,
            &mut s,
            Fault::None,
        )
        .unwrap();
        assert_eq!(
            v,
            Verdict {
                accepted: 0,
                next: 1
            }
        );
    }

    #[test]
    fn random_asks_min_one_ratio_and_uses_the_residual() {
        let p0 = [0.5, 0.25, 0.25];
        let target = rows(&[&p0, &[0.2, 0.2, 0.6]]);
        let q = vec![0.25, 0.5, 0.25];
        // Draft token 1: p/q = 0.5. Rejected: replacement from norm(max(0, p − q)) = [1, 0, 0].
        let mut s = script(&[false], &[0]);
        let drafts = [Draft {
            token: 1,
            q: q.clone(),
        }];
        let v = verify(&target, &drafts, &T1, &mut s, Fault::None).unwrap();
        assert_eq!(
            v,
            Verdict {
                accepted: 0,
                next: 0
            }
        );
        assert!((s.asked_probs[0] - 0.5).abs() < 1e-6);
        assert!(close(&s.asked_dists[0], &[1.0, 0.0, 0.0]));
        // With the fault, the replacement comes from p.
        let mut s = script(&[false], &[0]);
        verify(&target, &drafts, &T1, &mut s, Fault::ResidualFromP).unwrap();
        assert!(close(&s.asked_dists[0], &p0));
    }

    #[test]
    fn random_bonus_comes_from_the_last_row() {
        let target = rows(&[&[0.5, 0.25, 0.25], &[0.2, 0.2, 0.6]]);
        let mut s = script(&[true], &[2]);
        let drafts = [Draft {
            token: 0,
            q: vec![0.4, 0.3, 0.3],
        }];
        let v = verify(&target, &drafts, &T1, &mut s, Fault::None).unwrap();
        assert_eq!(
            v,
            Verdict {
                accepted: 1,
                next: 2
            }
        );
        assert_eq!(s.asked_probs, vec![1.0]);
        assert!(close(&s.asked_dists[0], &[0.2, 0.2, 0.6]));
    }

    #[test]
    fn row_count_mismatch_is_an_error() {
        let target = rows(&[&[0.5, 0.5]]);
        let drafts = [Draft {
            token: 0,
            q: vec![0.5, 0.5],
        }];
        assert!(verify(&target, &drafts, &T1, &mut script(&[], &[]), Fault::None).is_err());
    }
}
