//! CPU reference of the device sampler (`kernels/sampling.cu`): the CPU sampler of
//! `spedec-sampling` (processing, `acceptance_probability`, `residual`, `sample_categorical`)
//! driven by the device's Philox uniforms (`spedec_sampling::philox`), so the CPU engine and
//! the device share one description of the algorithm and can be compared decision by decision.
//!
//! Each decision also reports its *margin*: how far the uniform lay from the threshold that
//! decided it (`|u − p/q|` for an acceptance test, the distance of `u · total` to the nearest
//! CDF boundary of the drawn token as a fraction of the total). Device and CPU may disagree
//! only where a margin is within rounding (f32 device rows against f64 CPU rows).

use anyhow::{ensure, Context, Result};
use spedec_sampling::philox::{philox_uniform, Stream};
use spedec_sampling::{
    acceptance_probability, argmax, process, residual, sample_categorical, SamplingParams,
};

/// Processed rows: logits f32 [rows, vocab] → one f64 distribution per row.
pub fn process_rows(
    logits: &[f32],
    vocab: usize,
    params: &SamplingParams,
) -> Result<Vec<Vec<f64>>> {
    ensure!(
        vocab > 0 && logits.len().is_multiple_of(vocab),
        "process_rows: {} logits are not rows of {vocab}",
        logits.len()
    );
    logits
        .chunks(vocab)
        .enumerate()
        .map(|(r, row)| process(row, params).with_context(|| format!("processing row {r}")))
        .collect()
}

/// A token drawn by the reference, with the margin of its uniform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    /// The token.
    pub token: u32,
    /// The uniform used.
    pub u: f64,
    /// Distance of `u · total` to the nearest boundary of the token's CDF interval, divided
    /// by the total mass.
    pub margin: f64,
}

/// The distance of `u · total` to the nearest end of `token`'s CDF interval (f64 prefix sums
/// in index order), as a fraction of the total.
pub fn cdf_margin(dist: &[f64], u: f64, token: u32) -> f64 {
    let total: f64 = dist.iter().sum();
    let before: f64 = dist[..token as usize].iter().sum();
    let after = before + dist[token as usize];
    let target = u * total;
    ((target - before).abs().min((after - target).abs())) / total
}

/// Inverse-CDF draw from `dist` with the uniform of `(position, stream, index)` under `seed`.
pub fn draw(dist: &[f64], seed: u64, position: u32, stream: Stream, index: u32) -> Result<Draw> {
    let u = philox_uniform(seed, position, stream, index);
    let token = sample_categorical(dist, u)?;
    Ok(Draw {
        token,
        u,
        margin: cdf_margin(dist, u, token),
    })
}

/// What one verify step decided, as the device's `spec_verify_f32` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Drafts accepted.
    pub accepted: usize,
    /// The token after them (replacement or bonus).
    pub next: u32,
    /// The smallest margin of any uniform this decision used (infinite for greedy).
    pub margin: f64,
}

impl Decision {
    /// The device's output layout: `[accepted, drafts[..accepted], next, −1 ...]`, `γ + 2` long.
    pub fn to_device_layout(&self, drafts: &[u32]) -> Vec<i32> {
        let mut out = vec![-1; drafts.len() + 2];
        out[0] = self.accepted as i32;
        for (o, &d) in out[1..].iter_mut().zip(&drafts[..self.accepted]) {
            *o = d as i32;
        }
        out[1 + self.accepted] = self.next as i32;
        out
    }
}

/// The speculative decision on processed rows: `target` γ + 1 rows `p`, `draft` γ rows `q`,
/// draft `i` at sequence position `position + i` (see `spec_verify_f32`).
pub fn verify_probs(
    target: &[Vec<f64>],
    draft: &[Vec<f64>],
    drafts: &[u32],
    seed: u64,
    position: u32,
    index: u32,
) -> Result<Decision> {
    let gamma = drafts.len();
    ensure!(
        target.len() == gamma + 1 && draft.len() == gamma,
        "verify: {gamma} drafts need {} target and {gamma} draft rows, got {} and {}",
        gamma + 1,
        target.len(),
        draft.len()
    );
    let mut margin = f64::INFINITY;
    for (i, (&d, (p, q))) in drafts.iter().zip(target.iter().zip(draft)).enumerate() {
        let pos = position + i as u32;
        let x = d as usize;
        ensure!(
            x < p.len(),
            "verify: draft {i} = {d} is outside the vocabulary"
        );
        let prob = acceptance_probability(p[x], q[x]);
        let u = philox_uniform(seed, pos, Stream::Accept, index);
        if prob < 1.0 {
            margin = margin.min((u - prob).abs());
        }
        if u < prob {
            continue;
        }
        let r = residual(p, q)?;
        let next = draw(&r, seed, pos, Stream::Residual, index)?;
        return Ok(Decision {
            accepted: i,
            next: next.token,
            margin: margin.min(next.margin),
        });
    }
    let bonus = draw(
        &target[gamma],
        seed,
        position + gamma as u32,
        Stream::Residual,
        index,
    )?;
    Ok(Decision {
        accepted: gamma,
        next: bonus.token,
        margin: margin.min(bonus.margin),
    })
}

/// Greedy verification on raw logits rows f32 [γ + 1, vocab]: accept while each draft is its
/// row's argmax (lowest id on ties), then the argmax of the next row.
pub fn verify_greedy(target_logits: &[f32], vocab: usize, drafts: &[u32]) -> Result<Decision> {
    ensure!(
        target_logits.len() == (drafts.len() + 1) * vocab,
        "verify_greedy: {} logits for {} drafts of vocabulary {vocab}",
        target_logits.len(),
        drafts.len()
    );
    let rows: Vec<&[f32]> = target_logits.chunks(vocab).collect();
    for (i, &d) in drafts.iter().enumerate() {
        let best = argmax(rows[i])?;
        if best != d {
            return Ok(Decision {
                accepted: i,
                next: best,
                margin: f64::INFINITY,
            });
        }
    }
    Ok(Decision {
        accepted: drafts.len(),
        next: argmax(rows[drafts.len()])?,
        margin: f64::INFINITY,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_and_layout() {
        let d = [0.25, 0.5, 0.25];
        assert!((cdf_margin(&d, 0.3, 1) - 0.05).abs() < 1e-15);
        assert!((cdf_margin(&d, 0.74, 1) - 0.01).abs() < 1e-15);
        let dec = Decision {
            accepted: 1,
            next: 7,
            margin: 0.0,
        };
        assert_eq!(dec.to_device_layout(&[3, 4, 5]), vec![1, 3, 7, -1, -1]);
    }

    #[test]
    fn verify_accepts_when_p_covers_q_and_rejects_when_p_is_zero() {
        // p >= q at the drafted token: always accepted; then the bonus from the last row.
        let p = vec![vec![0.5, 0.5], vec![0.0, 1.0]];
        let q = vec![vec![0.5, 0.5]];
        let dec = verify_probs(&p, &q, &[0], 1, 10, 0).unwrap();
        assert_eq!((dec.accepted, dec.next), (1, 1));
        // p(d) = 0: always rejected; the residual max(0, p − q) = [0, 0.5] gives token 1.
        let p = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
        let q = vec![vec![0.5, 0.5]];
        let dec = verify_probs(&p, &q, &[0], 1, 10, 0).unwrap();
        assert_eq!((dec.accepted, dec.next), (0, 1));
        assert!(verify_probs(&p, &q, &[5], 1, 10, 0).is_err());
    }

    #[test]
    fn greedy_stops_at_the_first_disagreement() {
        let logits = [0.0, 1.0, 2.0, 5.0, 0.0, 0.0, 0.0, 3.0, 3.0];
        let dec = verify_greedy(&logits, 3, &[2, 1]).unwrap();
        assert_eq!((dec.accepted, dec.next), (1, 0));
        // All accepted: the bonus is the last row's argmax, the lower id of a tie.
        let dec = verify_greedy(&logits, 3, &[2, 0]).unwrap();
        assert_eq!((dec.accepted, dec.next), (2, 1));
        assert!(verify_greedy(&logits[..6], 3, &[2, 0]).is_err());
    }
}
