//! Comparing numbers against their references: [`compare`] gives the one [`Diff`] of two
//! logits (or any `[rows, width]`) buffers, with `|a − b| <= atol + rtol·|ref|` per element
//! and the largest difference always reported; [`diff_outcome`] turns it into a report line.

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::reference::argmax;
use crate::report::{Outcome, Status};

/// Comparison of a buffer `[rows, width]` with its reference.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// Largest |a − b| (NaN when a value is NaN where the reference is not).
    pub max_abs: f64,
    /// Largest |a − b| / |ref| over non-zero references.
    pub max_rel: f64,
    /// (row, col) of the largest |a − b|.
    pub worst: (usize, usize),
    /// Elements outside `atol + rtol·|ref|` (a NaN or infinity the reference lacks counts).
    pub bad: usize,
    /// Flat index of the first such element.
    pub first_bad: Option<usize>,
    /// Rows whose argmax agrees.
    pub argmax_agree: usize,
    pub rows: usize,
    pub atol: f64,
    pub rtol: f64,
    pub pass: bool,
}

impl Diff {
    /// One line: largest difference, tolerance, argmax agreement.
    pub fn line(&self) -> String {
        format!(
            "max|Δ| {:.3e} at row {} col {} (max rel {:.2e}), {} outside atol {:.0e} + rtol {:.0e}·|ref|, argmax agrees {}/{}",
            self.max_abs,
            self.worst.0,
            self.worst.1,
            self.max_rel,
            self.bad,
            self.atol,
            self.rtol,
            self.argmax_agree,
            self.rows
        )
    }
}

/// Compare `got` with `want` (the reference), both `[rows, width]`: every element must
/// satisfy `|a − b| <= atol + rtol·|b|`; a NaN matches only a NaN and an infinity only an
/// infinity of the reference.
pub fn compare(got: &[f32], want: &[f32], width: usize, atol: f64, rtol: f64) -> Result<Diff> {
    if got.len() != want.len() || width == 0 || !got.len().is_multiple_of(width) {
        bail!(
            "shape mismatch: {} vs {} values (rows of {width})",
            got.len(),
            want.len()
        );
    }
    let mut d = Diff {
        max_abs: 0.0,
        max_rel: 0.0,
        worst: (0, 0),
        bad: 0,
        first_bad: None,
        argmax_agree: 0,
        rows: got.len() / width,
        atol,
        rtol,
        pass: true,
    };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g as f64, w as f64);
        let (within, diff) = if w.is_nan() {
            (g.is_nan(), 0.0)
        } else if g.is_nan() {
            (false, f64::NAN)
        } else if g.is_infinite() || w.is_infinite() {
            (g == w, if g == w { 0.0 } else { f64::INFINITY })
        } else {
            let diff = (g - w).abs();
            (diff <= atol + rtol * w.abs(), diff)
        };
        if !within {
            d.bad += 1;
            d.first_bad.get_or_insert(i);
        }
        if diff > d.max_abs || diff.is_nan() && !d.max_abs.is_nan() {
            d.max_abs = diff;
            d.worst = (i / width, i % width);
        }
        if w != 0.0 && w.is_finite() && diff / w.abs() > d.max_rel {
            d.max_rel = diff / w.abs();
        }
    }
    for (g, w) in got.chunks(width).zip(want.chunks(width)) {
        if argmax(g) == argmax(w) {
            d.argmax_agree += 1;
        }
    }
    d.pass = d.bad == 0;
    Ok(d)
}

/// A PASS / FAIL outcome from a [`Diff`].
pub fn diff_outcome(d: &Diff, extra: Value) -> Outcome {
    let mut data = serde_json::to_value(d).unwrap_or(Value::Null);
    if let (Value::Object(m), Value::Object(e)) = (&mut data, extra) {
        m.extend(e);
    }
    Outcome::new(Status::of(d.pass), d.line(), data)
}

/// JSON of anything serializable (Null on failure).
pub fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Data of a skipped item.
pub fn skipped(why: &str) -> Outcome {
    Outcome::new(
        Status::Info,
        format!("skipped: {why}"),
        json!({ "skipped": why }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_reports_the_largest_difference() {
        let want = [1.0f32, 2.0, 3.0, 4.0];
        let got = [1.0f32, 2.01, 3.0, 3.5];
        let d = compare(&got, &want, 2, 2e-2, 2e-2).unwrap();
        assert_eq!(d.worst, (1, 1));
        assert!((d.max_abs - 0.5).abs() < 1e-6);
        assert_eq!(d.bad, 1);
        assert!(!d.pass);
        assert_eq!(d.argmax_agree, 2);
        let nan = [f32::NAN, 2.0, 3.0, 4.0];
        let d = compare(&nan, &want, 2, 1.0, 1.0).unwrap();
        assert!(!d.pass && d.max_abs.is_nan());
        assert!(compare(&got[..3], &want, 2, 1.0, 1.0).is_err());
        assert_eq!(d.first_bad, Some(0));
        // A NaN or infinity matches only the same in the reference.
        assert!(
            compare(
                &[f32::NAN, f32::INFINITY],
                &[f32::NAN, f32::INFINITY],
                2,
                0.0,
                0.0
            )
            .unwrap()
            .pass
        );
        assert!(!compare(&[f32::INFINITY], &[1.0], 1, 1.0, 1.0).unwrap().pass);
        assert!(compare(&[1.0005], &[1.0], 1, 0.0, 1e-3).unwrap().pass);
    }
}
