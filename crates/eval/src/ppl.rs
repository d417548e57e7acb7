//! Token-level perplexity of a text, with HF's strided sliding window.
//!
//! The text is cut into [`Windows`] (see `spedec_report::ppl` for how they cover it); no BOS
//! is added. With a draft, each scored token also gets the draft's NLL and the NLL of the
//! speculative sampler's emission probability. Without one only the target's distribution
//! is computed (the draft and spec fields of a token then repeat the target's NLL, unreported).

use std::time::Instant;

use anyhow::{bail, Result};
use rayon::prelude::*;
pub use spedec_report::ppl::{Method, PplReport, PplScores, Windows};
use spedec_sampling::{Sampler, SamplingParams};
use spedec_speculative::{target_nll, token_nll, Lm, NllTotals, TokenNll};

/// Tokens per forward call: logits of a whole 2048-token window would take 400 MB. 128 rows'
/// logits (26 MB) stay below glibc's largest mmap threshold (32 MiB), so each call reuses the
/// last one's freed block; 256 rows' (51 MB) were a fresh mapping, zeroed page by page, every
/// call (70m, context 2048, chunked, Zen 5: 5.0 s -> 3.8 s over 8,192 tokens).
const CHUNK: usize = 128;

/// Scores `ids` with `target` (and `draft`); `progress(scored, total)` is called per chunk,
/// counting scored tokens (each once, however many windows hold it).
pub fn perplexity<T: Lm + ?Sized, D: Lm + ?Sized>(
    target: &mut T,
    mut draft: Option<&mut D>,
    ids: &[u32],
    windows: Windows,
    mut progress: impl FnMut(usize, usize),
) -> Result<PplScores> {
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
    let processed: usize = spans.iter().map(|(b, e, _)| e - b).sum();
    let total: usize = spans
        .iter()
        .map(|&(_, e, first)| e.saturating_sub(first))
        .sum();
    let start = Instant::now();
    let mut totals = NllTotals::default();
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
            // Row r (position at + r) predicts token at + r + 1. Rows are scored in parallel
            // (a row's distribution is a vocabulary of f64 exponentials; one thread scoring a
            // 256-row chunk took as long as the 70m forward of it) and summed in row order.
            let rows: Vec<TokenNll> = (0..chunk.len())
                .into_par_iter()
                .filter(|r| (first_scored..end).contains(&(at + r + 1)))
                .map(|r| {
                    let (t_row, next) = (t_logits.row(r), ids[at + r + 1]);
                    match &d_logits {
                        Some(dl) => token_nll(t_row, dl.row(r), next, &sampler),
                        None => target_nll(t_row, next, &sampler).map(|t| TokenNll {
                            target: t,
                            draft: t,
                            spec: t,
                        }),
                    }
                })
                .collect::<Result<_>>()?;
            for nll in rows {
                totals.add(nll);
            }
            progress(totals.tokens, total);
            at = stop;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let n = totals.tokens as f64;
    let has_draft = draft.is_some();
    let mean = |s: f64| s / n;
    Ok(PplScores {
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
        tokens_per_second: processed as f64 / seconds.max(1e-9),
    })
}
