//! Token-level perplexity of a text, with HF's strided sliding window.
//!
//! Windows of `context` tokens start every `stride` tokens; each window scores only the tokens
//! after the previous window's end, so (for stride < context) every token but the first is
//! scored exactly once, with
//! at least `context − stride` tokens of history once the first window is passed. `chunked` is
//! the same with `stride = context` (non-overlapping windows; the first token of each window is
//! not scored). No BOS is added. With a draft, each scored token also gets the draft's NLL and
//! the NLL of the speculative sampler's emission probability.

use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;
use spedec_sampling::{Sampler, SamplingParams};
use spedec_speculative::{token_nll, Lm, NllTotals};

/// How long texts are split into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Overlapping windows every `stride` tokens (HF's perplexity guide).
    Strided,
    /// Non-overlapping windows of `context` tokens.
    Chunked,
}

/// Window settings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Windows {
    pub method: Method,
    pub context: usize,
    pub stride: usize,
}

impl Windows {
    /// Validates and fills in the defaults (stride = context / 2 for strided).
    pub fn new(method: Method, context: usize, stride: Option<usize>) -> Result<Self> {
        if context < 2 {
            bail!("--context must be at least 2 tokens, got {context}");
        }
        let stride = match method {
            Method::Chunked => {
                if stride.is_some_and(|s| s != context) {
                    bail!("--stride cannot be set with --method chunked (its stride is --context)");
                }
                context
            }
            Method::Strided => stride.unwrap_or(context / 2),
        };
        if stride == 0 || stride > context {
            bail!("--stride must be between 1 and --context ({context}), got {stride}");
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

/// Result of a perplexity run.
#[derive(Debug, Clone, Serialize)]
pub struct PplReport {
    /// Tokens scored (the text's tokens minus one).
    pub tokens: usize,
    /// Mean target NLL (nats).
    pub nll: f64,
    /// Target perplexity.
    pub ppl: f64,
    /// Draft mean NLL and perplexity, with `--draft`.
    pub draft_nll: Option<f64>,
    pub draft_ppl: Option<f64>,
    /// Speculative sampler's mean NLL and perplexity, with `--draft` (equals `ppl`).
    pub spec_nll: Option<f64>,
    pub spec_ppl: Option<f64>,
    pub windows: Windows,
    pub num_windows: usize,
    pub seconds: f64,
    /// Tokens processed (window tokens, overlaps counted) per second.
    pub tokens_per_second: f64,
}

/// Tokens per forward call: logits of a whole 2048-token window would take 400 MB.
const CHUNK: usize = 256;

/// Scores `ids` with `target` (and `draft`); `progress(done, total)` is called per chunk.
pub fn perplexity<T: Lm + ?Sized, D: Lm + ?Sized>(
    target: &mut T,
    mut draft: Option<&mut D>,
    ids: &[u32],
    windows: Windows,
    mut progress: impl FnMut(usize, usize),
) -> Result<PplReport> {
    if ids.len() < 2 {
        bail!(
            "the text has {} token(s); perplexity needs at least 2",
            ids.len()
        );
    }
    if windows.context > target.max_len() {
        bail!(
            "--context {} exceeds the target's context length {}",
            windows.context,
            target.max_len()
        );
    }
    if let Some(d) = draft.as_deref() {
        if windows.context > d.max_len() {
            bail!(
                "--context {} exceeds the draft's context length {}",
                windows.context,
                d.max_len()
            );
        }
        if d.vocab_size() != target.vocab_size() {
            bail!(
                "draft vocab_size {} differs from the target's {}",
                d.vocab_size(),
                target.vocab_size()
            );
        }
    }
    let sampler = Sampler::Random(SamplingParams::default());
    let spans = windows.spans(ids.len());
    let total: usize = spans.iter().map(|(b, e, _)| e - b).sum();
    let start = Instant::now();
    let mut totals = NllTotals::default();
    let mut done = 0;
    for &(begin, end, first_scored) in &spans {
        target.truncate(0)?;
        if let Some(d) = draft.as_deref_mut() {
            d.truncate(0)?;
        }
        let mut at = begin;
        while at < end {
            let stop = (at + CHUNK).min(end);
            let chunk = &ids[at..stop];
            let t_logits = target.forward(chunk)?;
            let d_logits = match draft.as_deref_mut() {
                Some(d) => Some(d.forward(chunk)?),
                None => None,
            };
            // Row r (position at + r) predicts token at + r + 1.
            for r in 0..chunk.len() {
                let next = at + r + 1;
                if next < first_scored || next >= end {
                    continue;
                }
                let t_row = t_logits.row(r);
                let nll = match &d_logits {
                    Some(dl) => token_nll(t_row, dl.row(r), ids[next], &sampler)?,
                    None => token_nll(t_row, t_row, ids[next], &sampler)?,
                };
                totals.add(nll);
            }
            done += chunk.len();
            progress(done, total);
            at = stop;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let n = totals.tokens as f64;
    let has_draft = draft.is_some();
    let mean = |s: f64| s / n;
    Ok(PplReport {
        tokens: totals.tokens,
        nll: mean(totals.target),
        ppl: mean(totals.target).exp(),
        draft_nll: has_draft.then(|| mean(totals.draft)),
        draft_ppl: has_draft.then(|| mean(totals.draft).exp()),
        spec_nll: has_draft.then(|| mean(totals.spec)),
        spec_ppl: has_draft.then(|| mean(totals.spec).exp()),
        windows,
        num_windows: spans.len(),
        seconds,
        tokens_per_second: total as f64 / seconds.max(1e-9),
    })
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
        assert_eq!(Windows::new(Method::Strided, 8, None).unwrap().stride, 4);
    }
}
