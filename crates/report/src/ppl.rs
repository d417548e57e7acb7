//! The report of `spedec ppl --json`: token-level perplexity of the target and, with a draft,
//! of the draft and of the speculative sampler, with the windows the text was cut into.
//!
//! Windows of `context` tokens start every `stride` tokens; each window scores only the tokens
//! after the previous window's end, so (for stride < context) every token but the first is
//! scored exactly once, with at least `context − stride` tokens of history once the first
//! window is passed. `chunked` is the same with `stride = context` (non-overlapping windows;
//! the first token of each window is not scored).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::Machine;

/// How long texts are split into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Overlapping windows every `stride` tokens (HF's perplexity guide).
    Strided,
    /// Non-overlapping windows of `context` tokens.
    Chunked,
}

named_enum!(Method, "window method", { Strided => "strided", Chunked => "chunked" });

/// Window settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Windows {
    pub method: Method,
    /// Window length in tokens.
    pub context: usize,
    /// Tokens from one window's start to the next's.
    pub stride: usize,
}

impl Windows {
    /// Validates and fills in the defaults (stride = context / 2 for strided; chunked windows
    /// take no other stride than their length).
    pub fn new(method: Method, context: usize, stride: Option<usize>) -> Result<Self> {
        if context < 2 {
            bail!("a window must hold at least 2 tokens, got {context}");
        }
        let stride = match method {
            Method::Chunked => {
                if let Some(s) = stride.filter(|&s| s != context) {
                    bail!("chunked windows step by their length ({context}), not by {s}");
                }
                context
            }
            Method::Strided => stride.unwrap_or(context / 2),
        };
        if stride == 0 || stride > context {
            bail!("the stride must be between 1 and the window length {context}, got {stride}");
        }
        Ok(Windows {
            method,
            context,
            stride,
        })
    }

    /// `(begin, end, first_scored)` of every window over `n` tokens: the window holds tokens
    /// `begin..end` and scores targets `first_scored..end`.
    pub fn spans(&self, n: usize) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        let mut prev_end = 0;
        let mut begin = 0;
        while begin < n {
            let end = (begin + self.context).min(n);
            out.push((begin, end, prev_end.max(begin + 1)));
            prev_end = end;
            if end == n {
                break;
            }
            begin += self.stride;
        }
        out
    }
}

/// The scores of one perplexity run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PplScores {
    /// Tokens scored.
    pub tokens: usize,
    /// Mean target NLL (nats).
    pub nll: f64,
    /// Target perplexity.
    pub ppl: f64,
    /// Draft mean NLL and perplexity, with a draft.
    pub draft_nll: Option<f64>,
    pub draft_ppl: Option<f64>,
    /// Speculative sampler's mean NLL and perplexity, with a draft (equals `ppl`).
    pub spec_nll: Option<f64>,
    pub spec_ppl: Option<f64>,
    pub windows: Windows,
    pub num_windows: usize,
    pub seconds: f64,
    /// Tokens processed (window tokens, overlaps counted) per second.
    pub tokens_per_second: f64,
}

/// The whole report: the scores, what was scored and the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PplReport {
    #[serde(flatten)]
    pub scores: PplScores,
    /// The target model as given.
    pub model: String,
    /// The draft model as given, if any.
    pub draft: Option<String>,
    /// The scored text file.
    pub text: String,
    #[serde(flatten)]
    pub machine: Machine,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_windows_score_every_token_once() {
        for (n, ctx, stride) in [(10, 4, 2), (10, 4, 4), (9, 4, 3), (3, 8, 4), (100, 16, 5)] {
            let w = Windows::new(Method::Strided, ctx, Some(stride)).unwrap();
            let mut scored = vec![0; n];
            for (b, e, f) in w.spans(n) {
                assert!(e - b <= ctx && f > b);
                for count in &mut scored[f..e] {
                    *count += 1;
                }
            }
            assert_eq!(scored[0], 0);
            if stride < ctx {
                assert!(
                    scored[1..].iter().all(|&c| c == 1),
                    "{n} {ctx} {stride}: {scored:?}"
                );
            } else {
                // stride = context is the chunked method: each window's first token is unscored.
                for (t, &c) in scored.iter().enumerate() {
                    assert_eq!(c, usize::from(t % ctx != 0), "{n} {ctx}: {scored:?}");
                }
            }
        }
    }

    #[test]
    fn chunked_windows_skip_each_first_token() {
        let w = Windows::new(Method::Chunked, 4, None).unwrap();
        assert_eq!(w.spans(10), vec![(0, 4, 1), (4, 8, 5), (8, 10, 9)]);
    }

    #[test]
    fn bad_windows_are_refused() {
        assert!(Windows::new(Method::Strided, 1, None).is_err());
        assert!(Windows::new(Method::Strided, 8, Some(9)).is_err());
        assert!(Windows::new(Method::Strided, 8, Some(0)).is_err());
        assert!(Windows::new(Method::Chunked, 8, Some(4)).is_err());
        assert!(Windows::new(Method::Chunked, 8, Some(8)).is_ok());
        assert_eq!(Windows::new(Method::Strided, 8, None).unwrap().stride, 4);
        assert_eq!("Chunked".parse::<Method>().unwrap(), Method::Chunked);
        assert!("sliding".parse::<Method>().is_err());
    }

    #[test]
    fn reports_keep_their_flat_fields() {
        let json = serde_json::json!({
            "tokens": 299, "nll": 2.0, "ppl": 7.389, "draft_nll": null, "draft_ppl": null,
            "spec_nll": null, "spec_ppl": null,
            "windows": {"method": "strided", "context": 64, "stride": 32},
            "num_windows": 9, "seconds": 1.5, "tokens_per_second": 400.0,
            "model": "m", "draft": null, "text": "t.txt"
        });
        let r: PplReport = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(r.scores.windows.stride, 32);
        assert!(r.machine.description.is_empty());
        let back = serde_json::to_value(&r).unwrap();
        for (k, v) in json.as_object().unwrap() {
            assert_eq!(&back[k], v, "{k}");
        }
    }
}
