//! Part of the `speculative` section: sampled speculative decoding with the steps on the
//! device follows the target's own distribution — the empirical joint of the first two
//! tokens of many seeded generations against the exact joint computed from the target's
//! logits (χ², [`crate::distribution`]), at two temperature / top-k / top-p settings, with a
//! near draft (acceptance around one half) and an unrelated one.
//!
//! The models are synthetic with Pythia-70m's shapes (vocabulary 50,304, so the device
//! sampler runs at its real width): the target, a noisy copy of it and another seed. That the
//! same χ² test fails with a deliberate fault is shown on the host emulation
//! (`tests/device_spec_emulation.rs`), which shares this module's code.

use anyhow::ensure;
use serde_json::json;
use spedec_sampling::SamplingParams;

use crate::compare::skipped;
use crate::distribution::{exact_joint, sample_joint, ChiSquare};
use crate::env::{test_tokens, Env};
use crate::report::{Outcome, Recorder, Status};

/// The synthetic target and its drafts (logits scaled so the distributions are not flat).
const TARGET: &str = "synthetic:pythia-70m:seed=1:logit-scale=8";
const NEAR: &str = "synthetic:pythia-70m:seed=1:logit-scale=8:noise=0.3:noise-seed=2";
const UNRELATED: &str = "synthetic:pythia-70m:seed=7:logit-scale=8";

/// The χ² checks (GPU only: on the CPU there is no device step to test).
pub(crate) fn sampled(env: &Env, rec: &mut Recorder) {
    let runs = env.pick(2000, 300);
    // (settings, tokens per generation, γ): the joint of the first two tokens; γ = 2 keeps
    // both drafts of the step in play for the later tokens.
    let cases = [
        (SamplingParams::new(1.0, 4, 1.0), 4, 2),
        (SamplingParams::new(0.8, 6, 0.8), 3, 1),
    ];
    for (params, new, gamma) in cases {
        let Ok(params) = params else {
            rec.check("sampling settings", || {
                anyhow::bail!("bad built-in settings")
            });
            return;
        };
        for (name, draft_spec) in [("near", NEAR), ("unrelated", UNRELATED)] {
            let label = format!(
                "sampled spec on the device follows the target (χ², T={} k={} p={}, {name} \
                 draft, γ = {gamma}, {runs} runs)",
                params.temperature, params.top_k, params.top_p
            );
            rec.check(&label, || {
                let (_, mut target) = env.open(TARGET, Some(64))?;
                let (_, mut draft) = env.open(draft_spec, Some(64))?;
                if target.cuda_mut().is_none() || draft.cuda_mut().is_none() {
                    return Ok(skipped("the device step needs CUDA"));
                }
                let vocab = target.lm().vocab_size();
                let prompt = test_tokens(8, vocab, 3);
                let exact = exact_joint(target.lm(), &prompt, &params, 2)?;
                let (Some(t), Some(d)) = (target.cuda_mut(), draft.cuda_mut()) else {
                    return Ok(skipped("the device step needs CUDA"));
                };
                let mut engine = t.device_spec(d)?;
                let s = sample_joint(&mut engine, &prompt, &params, gamma, new, 2, runs)?;
                ensure!(!s.counts.is_empty(), "no samples");
                let chi = ChiSquare::of(&s.counts, &exact, runs);
                Ok(Outcome::new(
                    Status::of(chi.passes()),
                    format!(
                        "χ² {:.1} with {} dof (threshold {:.1}), {} impossible; acceptance {:.3}",
                        chi.stat,
                        chi.df,
                        chi.threshold(),
                        chi.impossible,
                        s.acceptance
                    ),
                    json!({ "chi2": chi.stat, "df": chi.df, "threshold": chi.threshold(),
                            "impossible": chi.impossible, "acceptance": s.acceptance,
                            "runs": runs, "outcomes": exact.len() }),
                ))
            });
        }
    }
}
