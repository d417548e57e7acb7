//! Logits → processed probability distribution: temperature, then top-k, then top-p (nucleus),
//! following the semantics of Hugging Face's `TemperatureLogitsWarper`, `TopKLogitsWarper` and
//! `TopPLogitsWarper` (in that order, as `generate` applies them).
//!
//! All arithmetic after reading the `f32` logits is in `f64`; the softmax subtracts the maximum.
//!
//! - **Temperature**: `z = logit / T`.
//! - **Top-k** (HF): every token whose score is strictly below the k-th largest score is removed,
//!   so tokens *tied* with the k-th score are all kept (more than k may survive). `k = 0` or
//!   `k >= vocab` disables it.
//! - **Top-p** (HF): HF sorts the probabilities ascending and removes every token whose ascending
//!   cumulative mass (itself included) is `<= 1 - top_p`, always keeping the most probable one.
//!   That is: keep the smallest set of most-probable tokens whose mass is `>= top_p` — a token
//!   is kept iff the mass ranked above it is `< top_p` — which is how it is computed here (in
//!   `f64`, summing from the top; HF's `f32` ascending sum can differ only when a partial sum
//!   lands within rounding of `top_p`). Reaching `top_p` exactly is enough: no further token is
//!   kept. Among exactly tied probabilities HF's order is unspecified (`torch.sort` is not
//!   stable); here ties are ranked by token id, the lower id counting as more probable (kept
//!   first). `top_p = 1` disables it (as HF skips the warper).
//! - The surviving probabilities are renormalised to sum to 1; removed tokens get exactly 0.

use crate::error::SamplingError;
use crate::exp::softmax_in_place;
use crate::params::SamplingParams;

/// Checks a logits row: non-empty, no NaN or +inf, at least one finite entry.
fn check_logits(logits: &[f32]) -> Result<(), SamplingError> {
    if logits.is_empty() {
        return Err(SamplingError::EmptyLogits);
    }
    // One branch-free pass (it vectorises), then the first bad entry only if there is one.
    let bad = |v: f32| v.is_nan() || v == f32::INFINITY;
    let (any_bad, any_finite) = logits
        .iter()
        .fold((false, false), |(b, f), &v| (b | bad(v), f | v.is_finite()));
    if any_bad {
        if let Some((index, &value)) = logits.iter().enumerate().find(|(_, &v)| bad(v)) {
            return Err(SamplingError::BadLogit { index, value });
        }
    }
    if !any_finite {
        return Err(SamplingError::AllMasked);
    }
    Ok(())
}

/// Index of the largest logit; ties go to the lowest token id.
pub fn argmax(logits: &[f32]) -> Result<u32, SamplingError> {
    check_logits(logits)?;
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    Ok(best as u32)
}

/// The distribution with all its mass on `token` (length `vocab`). An out-of-range token gives
/// an all-zero vector; [`argmax`] never produces one.
pub fn one_hot(vocab: usize, token: u32) -> Vec<f64> {
    let mut d = vec![0.0; vocab];
    if let Some(x) = d.get_mut(token as usize) {
        *x = 1.0;
    }
    d
}

/// Plain softmax of the logits (temperature 1, no filtering), in `f64`.
pub fn softmax(logits: &[f32]) -> Result<Vec<f64>, SamplingError> {
    process(logits, &SamplingParams::default())
}

/// The processed distribution: temperature, then top-k, then top-p, renormalised (see the
/// module docs for the exact rules). Length = `logits.len()`, sums to 1 up to rounding.
pub fn process(logits: &[f32], params: &SamplingParams) -> Result<Vec<f64>, SamplingError> {
    params.validate()?;
    check_logits(logits)?;
    let t = f64::from(params.temperature);
    let mut z: Vec<f64> = if t == 1.0 {
        logits.iter().map(|&l| f64::from(l)).collect()
    } else {
        logits.iter().map(|&l| f64::from(l) / t).collect()
    };
    top_k_filter(&mut z, params.top_k);
    softmax_in_place(&mut z);
    if params.top_p < 1.0 {
        top_p_filter(&mut z, f64::from(params.top_p));
    }
    Ok(z)
}

/// Sets to −inf every score strictly below the k-th largest (HF: ties with the k-th are kept).
fn top_k_filter(z: &mut [f64], k: usize) {
    if k == 0 || k >= z.len() {
        return;
    }
    let mut scratch = z.to_vec();
    // Descending order: the element at index k-1 is the k-th largest.
    let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = *kth;
    for v in z.iter_mut() {
        if *v < kth {
            *v = f64::NEG_INFINITY;
        }
    }
}

/// HF's nucleus rule on a normalised distribution (see module docs), renormalising in place:
/// walking tokens in rank order (more probable first, ties by lower id), a token is kept iff
/// the mass ranked above it is `< top_p`. `top_p` must be in (0, 1).
///
/// Cost: tokens below `(1 − top_p) / vocab` hold at most `1 − top_p` together and rank below
/// all others, so they are dropped without sorting. Of the rest, the best 64 are selected in
/// O(vocab) and sorted; only if they do not reach `top_p` are all remaining candidates sorted.
pub(crate) fn top_p_filter(probs: &mut [f64], top_p: f64) {
    let n = probs.len();
    let cutoff = (1.0 - top_p) / n as f64;
    let mut cands: Vec<(f64, u32)> = probs
        .iter()
        .enumerate()
        .filter(|(_, &p)| p >= cutoff)
        .map(|(i, &p)| (p, i as u32))
        .collect();
    let rank = |a: &(f64, u32), b: &(f64, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    // Number of leading (ranked) candidates kept, if `head` reaches top_p.
    let walk = |head: &[(f64, u32)]| {
        let mut above = 0.0;
        head.iter().position(|&(p, _)| {
            let stop = above >= top_p;
            above += p;
            stop
        })
    };
    const HEAD: usize = 64;
    let mut kept = None;
    if cands.len() > HEAD {
        cands.select_nth_unstable_by(HEAD - 1, rank);
        cands[..HEAD].sort_unstable_by(rank);
        kept = walk(&cands[..HEAD]);
    }
    let kept = kept.unwrap_or_else(|| {
        cands.sort_unstable_by(rank);
        walk(&cands).unwrap_or(cands.len())
    });
    let mass: f64 = cands[..kept].iter().map(|c| c.0).sum();
    probs.iter_mut().for_each(|p| *p = 0.0);
    for &(p, i) in &cands[..kept] {
        probs[i as usize] = p / mass;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams::new(temperature, top_k, top_p).unwrap()
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= tol,
            "got {got:?}, want {want:?}, largest difference {worst:e}"
        );
    }

    #[test]
    fn softmax_hand_computed() {
        let e = std::f64::consts::E;
        let s = 1.0 + e + e * e;
        assert_close(
            &softmax(&[0.0, 1.0, 2.0]).unwrap(),
            &[1.0 / s, e / s, e * e / s],
            1e-15,
        );
        assert_close(&softmax(&[5.0, 5.0]).unwrap(), &[0.5, 0.5], 0.0);
    }

    #[test]
    fn softmax_is_stable_for_huge_and_masked_logits() {
        assert_close(
            &softmax(&[1000.0, 1000.0, f32::NEG_INFINITY]).unwrap(),
            &[0.5, 0.5, 0.0],
            0.0,
        );
        assert_close(&softmax(&[-1000.0, -1000.0]).unwrap(), &[0.5, 0.5], 0.0);
        assert_close(&softmax(&[f32::MAX, 0.0]).unwrap(), &[1.0, 0.0], 0.0);
        let d = softmax(&[f32::MIN, f32::MAX]).unwrap();
        assert_eq!(d, vec![0.0, 1.0]);
    }

    #[test]
    fn bad_logits_are_errors() {
        assert_eq!(softmax(&[]), Err(SamplingError::EmptyLogits));
        assert!(matches!(
            softmax(&[1.0, f32::NAN]),
            Err(SamplingError::BadLogit { index: 1, .. })
        ));
        assert!(matches!(
            argmax(&[f32::INFINITY]),
            Err(SamplingError::BadLogit { index: 0, .. })
        ));
        assert_eq!(
            softmax(&[f32::NEG_INFINITY; 3]),
            Err(SamplingError::AllMasked)
        );
        assert_eq!(
            argmax(&[f32::NEG_INFINITY; 3]),
            Err(SamplingError::AllMasked)
        );
    }

    #[test]
    fn argmax_ties_go_to_lowest_id() {
        assert_eq!(argmax(&[1.0, 7.0, 7.0, 3.0]).unwrap(), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -5.0, -5.0]).unwrap(), 1);
        assert_eq!(argmax(&[2.0]).unwrap(), 0);
        assert_eq!(one_hot(3, 2), vec![0.0, 0.0, 1.0]);
    }

    #[test]
    fn temperature_scales_logits() {
        // T = 2 halves the logits: [0, 2 ln 2] -> [0, ln 2] -> [1/3, 2/3].
        let l = [0.0, (2.0 * 2f64.ln()) as f32];
        assert_close(
            &process(&l, &params(2.0, 0, 1.0)).unwrap(),
            &[1.0 / 3.0, 2.0 / 3.0],
            1e-7,
        );
        // T -> 0 tends to the one-hot argmax; T -> inf tends to uniform.
        let l = [1.0, 3.0, 2.0];
        assert_close(
            &process(&l, &params(1e-6, 0, 1.0)).unwrap(),
            &[0.0, 1.0, 0.0],
            0.0,
        );
        let hot = process(&l, &params(1e6, 0, 1.0)).unwrap();
        assert_close(&hot, &[1.0 / 3.0; 3], 1e-6);
    }

    #[test]
    fn top_k_keeps_ties_at_the_kth_value() {
        let l = [1.0, 3.0, 2.0, 3.0, 0.0];
        // k = 1: the k-th value is 3, tied twice: both kept.
        assert_close(
            &process(&l, &params(1.0, 1, 1.0)).unwrap(),
            &[0.0, 0.5, 0.0, 0.5, 0.0],
            0.0,
        );
        assert_close(
            &process(&l, &params(1.0, 2, 1.0)).unwrap(),
            &[0.0, 0.5, 0.0, 0.5, 0.0],
            0.0,
        );
        // k = 3 keeps 3, 3, 2.
        let e = std::f64::consts::E;
        let s = 2.0 * e + 1.0;
        let want = [0.0, e / s, 1.0 / s, e / s, 0.0];
        assert_close(&process(&l, &params(1.0, 3, 1.0)).unwrap(), &want, 1e-15);
        // k >= vocab and k = 0 are no-ops.
        let full = softmax(&l).unwrap();
        assert_eq!(process(&l, &params(1.0, 5, 1.0)).unwrap(), full);
        assert_eq!(process(&l, &params(1.0, 50, 1.0)).unwrap(), full);
        assert_eq!(process(&l, &params(1.0, 0, 1.0)).unwrap(), full);
    }

    #[test]
    fn top_p_boundaries_on_exact_probabilities() {
        let run = |top_p: f64| {
            let mut p = vec![0.5, 0.25, 0.125, 0.125];
            top_p_filter(&mut p, top_p);
            p
        };
        // Mass of {0, 1} is exactly 0.75: reaching p exactly is enough (smallest set with >= p).
        assert_eq!(run(0.75), vec![2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0]);
        assert_eq!(run(0.7), vec![2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0]);
        // Just above 0.75 needs a third token; of the tied pair the lower id is kept.
        assert_eq!(
            run(0.76),
            vec![0.5 / 0.875, 0.25 / 0.875, 0.125 / 0.875, 0.0]
        );
        // Exactly 0.5: the top token alone.
        assert_eq!(run(0.5), vec![1.0, 0.0, 0.0, 0.0]);
        // The most probable token is always kept, however small p is.
        assert_eq!(run(1e-9), vec![1.0, 0.0, 0.0, 0.0]);
        // Just below 1: everything with positive mass survives.
        assert_eq!(run(0.999), vec![0.5, 0.25, 0.125, 0.125]);
        // Tied top tokens: the lower id wins when only one is needed.
        let mut p = vec![0.2, 0.4, 0.4];
        top_p_filter(&mut p, 0.3);
        assert_eq!(p, vec![0.0, 1.0, 0.0]);
    }

    /// HF's rule written out literally: ascending sort, cumulative sum, remove `<= 1 - p`,
    /// keep the last (most probable).
    fn hf_top_p_kept(probs: &[f64], top_p: f64) -> Vec<bool> {
        let mut asc: Vec<usize> = (0..probs.len()).collect();
        asc.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]).then(b.cmp(&a)));
        let mut keep = vec![true; probs.len()];
        let mut cum = 0.0;
        for (j, &i) in asc.iter().enumerate() {
            cum += probs[i];
            if cum <= 1.0 - top_p && j + 1 < asc.len() {
                keep[i] = false;
            }
        }
        keep
    }

    #[test]
    fn top_p_matches_the_literal_hf_rule_on_random_distributions() {
        let mut rng = crate::Rng::new(11);
        for case in 0..400 {
            let n = 1 + (rng.next_u64() % 3000) as usize;
            let scale = [0.1, 1.0, 4.0, 12.0][case % 4];
            let logits: Vec<f32> = (0..n)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * scale) as f32)
                .collect();
            let top_p: f32 = [0.05, 0.5, 0.9, 0.99][(case / 4) % 4];
            let full = softmax(&logits).unwrap();
            let want = hf_top_p_kept(&full, f64::from(top_p));
            let got = process(&logits, &params(1.0, 0, top_p)).unwrap();
            let got_kept: Vec<bool> = got.iter().map(|&p| p > 0.0).collect();
            assert_eq!(
                got_kept, want,
                "case {case}: n {n}, scale {scale}, top_p {top_p}"
            );
            assert!((got.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn top_p_on_logits() {
        let l: Vec<f32> = [0.5f64, 0.3, 0.2].iter().map(|p| p.ln() as f32).collect();
        assert_close(
            &process(&l, &params(1.0, 0, 0.6)).unwrap(),
            &[0.625, 0.375, 0.0],
            1e-7,
        );
        assert_close(
            &process(&l, &params(1.0, 0, 0.4)).unwrap(),
            &[1.0, 0.0, 0.0],
            0.0,
        );
        assert_close(
            &process(&l, &params(1.0, 0, 0.9)).unwrap(),
            &[0.5, 0.3, 0.2],
            1e-7,
        );
        assert_close(
            &process(&l, &params(1.0, 0, 1.0)).unwrap(),
            &[0.5, 0.3, 0.2],
            1e-7,
        );
    }

    #[test]
    fn order_is_temperature_then_top_k_then_top_p() {
        let l: Vec<f32> = [0.5f64, 0.3, 0.2].iter().map(|p| p.ln() as f32).collect();
        // Top-p on the raw distribution would keep {0, 1} (0.5 < 0.6); after T = 0.5 the top
        // token has 0.25 / 0.38 = 0.658 >= 0.6 and stands alone.
        assert_close(
            &process(&l, &params(0.5, 0, 0.6)).unwrap(),
            &[1.0, 0.0, 0.0],
            0.0,
        );
        // Top-k = 2 first renormalises to [0.625, 0.375]; then top-p = 0.6 keeps only token 0.
        assert_close(
            &process(&l, &params(1.0, 2, 0.6)).unwrap(),
            &[1.0, 0.0, 0.0],
            0.0,
        );
        // T = 0.5 alone: probabilities proportional to p^2.
        let s = 0.25 + 0.09 + 0.04;
        let want = [0.25 / s, 0.09 / s, 0.04 / s];
        assert_close(&process(&l, &params(0.5, 0, 1.0)).unwrap(), &want, 1e-7);
    }

    #[test]
    fn processed_distributions_sum_to_one() {
        let l: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.01 - 5.0)
            .collect();
        for (t, k, p) in [
            (1.0, 0, 1.0),
            (0.3, 0, 1.0),
            (1.7, 40, 1.0),
            (1.0, 0, 0.9),
            (0.8, 100, 0.5),
        ] {
            let d = process(&l, &params(t, k, p)).unwrap();
            let sum: f64 = d.iter().sum();
            assert!((sum - 1.0).abs() < 1e-12, "sum {sum} for {t} {k} {p}");
            assert!(d.iter().all(|&x| (0.0..=1.0).contains(&x)));
            if k > 0 {
                assert!(d.iter().filter(|&&x| x > 0.0).count() <= k);
            }
        }
    }
}
