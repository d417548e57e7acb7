//! The rejection-sampling math of speculative decoding (Leviathan et al. 2023, Chen et al. 2023).
//!
//! A draft token `x ~ q` is accepted with probability `min(1, p(x) / q(x))`; on rejection the
//! replacement is drawn from the residual `norm(max(0, p − q))`. The token emitted is then
//! distributed exactly as `p`:
//! `P(x) = min(p, q)(x) + (1 − Σ min(p, q)) · norm(max(0, p − q))(x) = p(x)`,
//! because `Σ max(0, p − q) = 1 − Σ min(p, q)`.
//!
//! `p` and `q` here are the *processed* distributions (same temperature / top-k / top-p).

use crate::error::SamplingError;

/// Checks that `d` has finite, non-negative entries and positive mass.
pub(crate) fn check_distribution(d: &[f64]) -> Result<f64, SamplingError> {
    if d.is_empty() {
        return Err(SamplingError::BadDistribution("empty".into()));
    }
    let mut sum = 0.0;
    for (i, &x) in d.iter().enumerate() {
        if !(x.is_finite() && x >= 0.0) {
            return Err(SamplingError::BadDistribution(format!("entry {i} is {x}")));
        }
        sum += x;
    }
    if sum <= 0.0 || !sum.is_finite() {
        return Err(SamplingError::BadDistribution(format!(
            "total mass is {sum}"
        )));
    }
    Ok(sum)
}

fn check_pair(p: &[f64], q: &[f64]) -> Result<(), SamplingError> {
    if p.len() != q.len() {
        return Err(SamplingError::LengthMismatch {
            left: p.len(),
            right: q.len(),
        });
    }
    check_distribution(p)?;
    check_distribution(q)?;
    Ok(())
}

/// `min(1, p(x) / q(x))`, the probability of accepting a draft token `x`. A token the draft could
/// not have proposed (`q(x) = 0`) counts as accepted with probability 1 (never reached in use).
pub fn acceptance_probability(p_x: f64, q_x: f64) -> f64 {
    if p_x >= q_x {
        1.0
    } else {
        p_x / q_x
    }
}

/// `Σ min(p, q)`: the overlap mass, i.e. the probability a draft token is accepted.
pub fn overlap(p: &[f64], q: &[f64]) -> Result<f64, SamplingError> {
    check_pair(p, q)?;
    Ok(overlap_mass(p, q))
}

/// `Σ min(p, q)` in index order, of distributions already checked.
fn overlap_mass(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(a, b)| a.min(*b)).sum()
}

/// `norm(max(0, p − q))`, the distribution a replacement is drawn from after a rejection.
///
/// Fallback: when `max(0, p − q)` is zero everywhere, `p <= q` everywhere and, both summing
/// to 1, `p = q`. Then every draft token has `p(x)/q(x) = 1` and is accepted, so a rejection —
/// and this residual — is reached with probability 0 (in floating point, only through rounding
/// of nearly equal `p` and `q`). The residual is then defined as `p` itself (normalised), which
/// keeps the sampler well defined and is the limit of the exact algorithm.
pub fn residual(p: &[f64], q: &[f64]) -> Result<Vec<f64>, SamplingError> {
    check_pair(p, q)?;
    let mut r: Vec<f64> = p.iter().zip(q).map(|(a, b)| (a - b).max(0.0)).collect();
    let mass: f64 = r.iter().sum();
    if mass > 0.0 {
        r.iter_mut().for_each(|x| *x /= mass);
    } else {
        let total: f64 = p.iter().sum();
        r.iter_mut().zip(p).for_each(|(x, a)| *x = a / total);
    }
    Ok(r)
}

/// The probability that one speculative step emits `token` in place of a draft proposal:
/// `min(p, q)(x) + (1 − Σ min(p, q)) · norm(max(0, p − q))(x)`. Equals `p(x)` up to rounding;
/// computing it from the parts is the empirical losslessness check behind "spec perplexity".
pub fn emission_probability(p: &[f64], q: &[f64], token: usize) -> Result<f64, SamplingError> {
    if token >= p.len() {
        return Err(SamplingError::TokenOutOfRange {
            token,
            vocab: p.len(),
        });
    }
    // `overlap` and `residual(p, q)[token]` with their sums in their order, without building
    // the residual (a vocabulary-sized allocation per scored token).
    check_pair(p, q)?;
    let accept_mass = overlap_mass(p, q);
    let mass: f64 = p.iter().zip(q).map(|(a, b)| (a - b).max(0.0)).sum();
    let res = if mass > 0.0 {
        (p[token] - q[token]).max(0.0) / mass
    } else {
        p[token] / p.iter().sum::<f64>()
    };
    Ok(p[token].min(q[token]) + (1.0 - accept_mass) * res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptance_probability_is_min_one_ratio() {
        assert_eq!(acceptance_probability(0.3, 0.6), 0.5);
        assert_eq!(acceptance_probability(0.6, 0.3), 1.0);
        assert_eq!(acceptance_probability(0.2, 0.2), 1.0);
        assert_eq!(acceptance_probability(0.0, 0.5), 0.0);
        assert_eq!(acceptance_probability(0.1, 0.0), 1.0);
    }

    #[test]
    fn overlap_and_residual_hand_computed() {
        let p = [0.5, 0.25, 0.25, 0.0];
        let q = [0.25, 0.5, 0.0, 0.25];
        assert_eq!(overlap(&p, &q).unwrap(), 0.5);
        // max(0, p − q) = [0.25, 0, 0.25, 0], mass 0.5 = 1 − overlap.
        assert_eq!(residual(&p, &q).unwrap(), vec![0.5, 0.0, 0.5, 0.0]);
        // Reverse roles.
        assert_eq!(residual(&q, &p).unwrap(), vec![0.0, 0.5, 0.0, 0.5]);
    }

    #[test]
    fn residual_sums_to_one_and_has_no_mass_where_q_covers_p() {
        let p = [0.1, 0.2, 0.3, 0.4];
        let q = [0.4, 0.3, 0.2, 0.1];
        let r = residual(&p, &q).unwrap();
        assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert_eq!(&r[..2], &[0.0, 0.0]);
        assert!((r[2] - 0.25).abs() < 1e-15 && (r[3] - 0.75).abs() < 1e-15);
    }

    #[test]
    fn emission_probability_is_its_parts() {
        let p = [0.1, 0.2, 0.3, 0.4];
        let q = [0.4, 0.3, 0.2, 0.1];
        for (p, q) in [(&p, &q), (&q, &p), (&p, &p)] {
            let (a, r) = (overlap(p, q).unwrap(), residual(p, q).unwrap());
            for x in 0..4 {
                let want = p[x].min(q[x]) + (1.0 - a) * r[x];
                assert_eq!(
                    emission_probability(p, q, x).unwrap().to_bits(),
                    want.to_bits()
                );
            }
        }
        assert!(emission_probability(&p, &[0.5, 0.5, f64::NAN, 0.0], 0).is_err());
    }

    #[test]
    fn residual_falls_back_to_p_when_p_equals_q() {
        let p = [0.25, 0.75];
        assert_eq!(residual(&p, &p).unwrap(), vec![0.25, 0.75]);
        assert_eq!(overlap(&p, &p).unwrap(), 1.0);
    }

    #[test]
    fn emission_probability_equals_p() {
        let p = [0.1, 0.2, 0.3, 0.4];
        let q = [0.4, 0.3, 0.2, 0.1];
        for (x, &px) in p.iter().enumerate() {
            assert!((emission_probability(&p, &q, x).unwrap() - px).abs() < 1e-15);
        }
        assert!(emission_probability(&p, &q, 4).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(matches!(
            overlap(&[1.0], &[0.5, 0.5]),
            Err(SamplingError::LengthMismatch { .. })
        ));
        assert!(residual(&[f64::NAN, 1.0], &[0.5, 0.5]).is_err());
        assert!(residual(&[-0.1, 1.1], &[0.5, 0.5]).is_err());
        assert!(residual(&[0.0, 0.0], &[0.5, 0.5]).is_err());
        assert!(residual(&[], &[]).is_err());
    }
}
