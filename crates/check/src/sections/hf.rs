//! The `hf` section of `spedec gpu-check`: spedec against HF transformers on shared weights.
//!
//! `scripts/hf_reference.py` writes `reference.json` into the HF folder:
//!
//! ```json
//! { "torch": "…", "transformers": "…", "device": "…",
//!   "tokens": [..],                       // the sequence whose logits were saved
//!   "prompt_tokens": [..],                // prompt of the timing and greedy runs
//!   "models": [ { "role": "draft" | "target", "name": "pythia-70m", "dir": "pythia-70m",
//!                 "vocab": 50304, "rows": T,
//!                 "logits_fp32": "pythia-70m.fp32.bin",   // raw little-endian f32 [T, vocab]
//!                 "logits_fp16": "pythia-70m.fp16.bin",   // HF fp16 forward, widened to f32
//!                 "decode_ms_per_token": {"median", "min", "max", "n"},
//!                 "new_tokens": N, "greedy_tokens": [..] } ],
//!   "assisted": { "ms_per_token": {…}, "new_tokens": N, "num_assistant_tokens": 4 } }
//! ```
//!
//! Each model folder (config.json, model.safetensors, tokenizer.json) is loaded by spedec
//! and run on the device: logits against HF's fp32 forward (PASS / FAIL at the f16
//! tolerance, with HF's own fp16 error beside it for scale), greedy tokens against HF's
//! fp16 greedy tokens (INFO: both are f16 approximations, so a late divergence is expected),
//! and decode / assisted-generation speed against HF's.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use spedec_neox::ModelFiles;
use spedec_speculative::{
    generate_autoregressive, generate_speculative, GammaChoice, GenConfig, Sampler,
};

use crate::compare::{compare, diff_outcome, skipped, to_json};
use crate::env::{generate_on_device, Env, Model};
use crate::report::{summarize, Outcome, Recorder, Status};
use crate::LOGIT_TOL;

/// Raw little-endian f32 values.
fn read_f32(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        bytes.len().is_multiple_of(4),
        "{}: not a whole number of f32",
        path.display()
    );
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn ids(v: &Value, what: &str) -> Result<Vec<u32>> {
    v.as_array()
        .with_context(|| format!("reference.json: {what} is not a list"))?
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .with_context(|| format!("reference.json: bad token in {what}"))
        })
        .collect()
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v[key]
        .as_str()
        .with_context(|| format!("reference.json: missing string {key:?}"))
}

/// (f) Logits and speed against HF transformers.
pub(crate) fn hf(env: &Env, rec: &mut Recorder) {
    let Some(dir) = env.args.hf_dir.clone() else {
        rec.check("HF comparison", || {
            Ok(skipped("no HF reference folder given"))
        });
        return;
    };
    let reference: Value = match std::fs::read_to_string(dir.join("reference.json"))
        .with_context(|| format!("cannot read {}", dir.join("reference.json").display()))
        .and_then(|t| serde_json::from_str(&t).context("reference.json is not valid JSON"))
    {
        Ok(v) => v,
        Err(e) => {
            rec.check("read the HF reference", || Err(e));
            return;
        }
    };
    rec.check("HF reference", || {
        Ok(Outcome::new(
            Status::Info,
            format!(
                "torch {}, transformers {}, on {}",
                reference["torch"].as_str().unwrap_or("?"),
                reference["transformers"].as_str().unwrap_or("?"),
                reference["device"].as_str().unwrap_or("?")
            ),
            json!({ "torch": reference["torch"], "transformers": reference["transformers"],
                    "device": reference["device"], "assisted": reference["assisted"] }),
        ))
    });
    let entries: Vec<Value> = reference["models"].as_array().cloned().unwrap_or_default();
    let mut draft: Option<Model> = None;
    let mut target: Option<Model> = None;
    for entry in &entries {
        let name = entry["name"].as_str().unwrap_or("?").to_string();
        let role = entry["role"].as_str().unwrap_or("").to_string();
        let mut loaded: Option<Model> = None;
        rec.check(&format!("{name}: spedec vs HF fp32 logits (shared weights)"), || {
            let folder = dir.join(str_field(entry, "dir")?);
            let files = ModelFiles::from_dir(&folder)?;
            let vocab = files.config.vocab_size;
            let tokens = ids(&reference["tokens"], "tokens")?;
            let cap = files.config.max_position_embeddings.min(1024);
            let mut m = env.build(&files.config, &files.weights, Some(cap))?;
            drop(files);
            let got = m.lm().forward(&tokens)?.into_vec();
            let want32 = read_f32(&dir.join(str_field(entry, "logits_fp32")?))?;
            let d = compare(&got, &want32, vocab, LOGIT_TOL, LOGIT_TOL)?;
            let mut extra = json!({ "tokens": tokens.len() });
            let mut context = String::new();
            if let Some(f16) = entry["logits_fp16"].as_str() {
                let want16 = read_f32(&dir.join(f16))?;
                let hf16 = compare(&want16, &want32, vocab, LOGIT_TOL, LOGIT_TOL)?;
                let ours16 = compare(&got, &want16, vocab, LOGIT_TOL, LOGIT_TOL)?;
                context = format!(
                    "; for scale: HF fp16 vs HF fp32 max|Δ| {:.3e}, spedec vs HF fp16 max|Δ| {:.3e}",
                    hf16.max_abs, ours16.max_abs
                );
                extra = json!({ "tokens": tokens.len(), "hf_fp16_vs_fp32": to_json(&hf16),
                                "spedec_vs_hf_fp16": to_json(&ours16) });
            }
            let mut out = diff_outcome(&d, extra);
            out.detail += &context;
            m.lm().truncate(0)?;
            loaded = Some(m);
            Ok(out)
        });
        let Some(mut m) = loaded else { continue };
        let prompt = ids(&reference["prompt_tokens"], "prompt_tokens").unwrap_or_default();
        if let (Some(greedy), false) = (entry["greedy_tokens"].as_array(), prompt.is_empty()) {
            rec.check(&format!("{name}: greedy tokens vs HF fp16 greedy"), || {
                let hf_tokens = ids(&Value::Array(greedy.clone()), "greedy_tokens")?;
                ensure!(!hf_tokens.is_empty(), "no HF greedy tokens");
                let cfg = GenConfig {
                    max_new_tokens: hf_tokens.len(),
                    gamma: 1,
                    sampler: Sampler::Greedy,
                    seed: 0,
                    stop_at_eos: false,
                };
                let ours = generate_autoregressive(m.lm(), &prompt, &cfg)?.tokens;
                let same = ours
                    .iter()
                    .zip(&hf_tokens)
                    .take_while(|(a, b)| a == b)
                    .count();
                Ok(Outcome::new(
                    Status::Info,
                    format!(
                        "first {same} of {} tokens identical (both f16 forwards; a divergence \
                         after near-ties is expected)",
                        hf_tokens.len()
                    ),
                    json!({ "identical_prefix": same, "ours": ours, "hf": hf_tokens }),
                ))
            });
        }
        if let Some(hf_ms) = entry["decode_ms_per_token"]["median"].as_f64() {
            rec.check(&format!("{name}: decode speed vs HF fp16 generate"), || {
                ensure!(!prompt.is_empty(), "no prompt tokens");
                let new = entry["new_tokens"].as_u64().unwrap_or(64) as usize;
                let cfg = GenConfig {
                    max_new_tokens: new,
                    gamma: 1,
                    sampler: Sampler::Greedy,
                    seed: 0,
                    stop_at_eos: false,
                };
                let mut per_token = Vec::new();
                for i in 0..env.pick(4, 2) {
                    let t0 = Instant::now();
                    let g = generate_autoregressive(m.lm(), &prompt, &cfg)?;
                    let ms = t0.elapsed().as_secs_f64() * 1e3 / g.tokens.len().max(1) as f64;
                    if i > 0 {
                        per_token.push(ms);
                    }
                }
                let s = summarize(&per_token)?;
                Ok(Outcome::new(
                    Status::Info,
                    format!(
                        "spedec {:.3} ms/token vs HF {hf_ms:.3} ms/token → {:.1}× ({new} tokens, prefill included in both)",
                        s.median,
                        hf_ms / s.median
                    ),
                    json!({ "spedec_ms_per_token": to_json(&s), "hf_ms_per_token": entry["decode_ms_per_token"],
                            "speedup": hf_ms / s.median }),
                ))
            });
        }
        match role.as_str() {
            "draft" => draft = Some(m),
            "target" => target = Some(m),
            _ => {}
        }
    }
    let assisted = &reference["assisted"];
    let Some(hf_ms) = assisted["ms_per_token"]["median"].as_f64() else {
        return;
    };
    rec.check("speculative vs HF assisted generation", || {
        let (Some(t), Some(d)) = (target.as_mut(), draft.as_mut()) else {
            bail!("the draft or the target model did not load");
        };
        let prompt = ids(&reference["prompt_tokens"], "prompt_tokens")?;
        let new = assisted["new_tokens"].as_u64().unwrap_or(64) as usize;
        let gamma = assisted["num_assistant_tokens"].as_u64().unwrap_or(4) as usize;
        let cfg = GenConfig {
            max_new_tokens: new,
            gamma,
            sampler: Sampler::Greedy,
            seed: 0,
            stop_at_eos: false,
        };
        // The host step and, with both models on CUDA, the device step, alternating.
        let (mut per_token, mut device_per_token) = (Vec::new(), Vec::new());
        let (mut stats, mut device_stats) = (None, None);
        let choice = GammaChoice::Fixed(gamma);
        for i in 0..env.pick(4, 2) {
            let t0 = Instant::now();
            let g = generate_speculative(t.lm(), d.lm(), &prompt, &cfg)?;
            let ms = t0.elapsed().as_secs_f64() * 1e3 / g.tokens.len().max(1) as f64;
            let t1 = Instant::now();
            let dv = generate_on_device(t, d, &prompt, &cfg, &choice)?;
            let dms = t1.elapsed().as_secs_f64() * 1e3;
            if let Some(dv) = &dv {
                ensure!(dv.tokens == g.tokens, "the device step's greedy tokens differ from the host step's");
            }
            if i > 0 {
                per_token.push(ms);
                if let Some(dv) = &dv {
                    device_per_token.push(dms / dv.tokens.len().max(1) as f64);
                }
            }
            stats = Some(g.stats);
            device_stats = dv.map(|g| g.stats);
        }
        let s = summarize(&per_token)?;
        let dev = summarize(&device_per_token).ok();
        let rate = stats.as_ref().and_then(|s| s.acceptance_rate).unwrap_or(0.0);
        let device_text = dev
            .as_ref()
            .map(|v| {
                format!(
                    "; steps on the device {:.3} ms/token → {:.1}×",
                    v.median,
                    hf_ms / v.median
                )
            })
            .unwrap_or_default();
        Ok(Outcome::new(
            Status::Info,
            format!(
                "spedec spec {:.3} ms/token vs HF assisted {hf_ms:.3} ms/token → {:.1}× (γ = {gamma}, \
                 acceptance {rate:.3}; random weights){device_text}",
                s.median,
                hf_ms / s.median
            ),
            json!({ "spedec_ms_per_token": to_json(&s), "hf": assisted, "speedup": hf_ms / s.median,
                    "stats": to_json(&stats),
                    "device_step": dev.as_ref().map(|v| json!({
                        "ms_per_token": to_json(v), "speedup": hf_ms / v.median,
                        "stats": to_json(&device_stats) })) }),
        ))
    });
}
