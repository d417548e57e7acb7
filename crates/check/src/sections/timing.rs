//! The timing section of `spedec gpu-check`: a copy-bandwidth probe, step times of the draft
//! and the target against the bandwidth floor, and a speculative run end to end with
//! Leviathan et al.'s predicted speedups.
//!
//! Each step time is the wall time of one `forward` call as the generators see it: ids and
//! positions copied in, the step's launches (a graph replay), the logits copied out,
//! synchronised. Warm-up calls first, then repeats; median and min–max are reported. The
//! floor of a step is `bytes_per_token / bandwidth`: the f16 weights must be read once per
//! step, at best at the read bandwidth of the read-only probe (`kernels/probe.cu`, the best
//! of a few block counts over 1 GiB); without a GPU, the copy bandwidth (read + write bytes
//! over time, the usual "effective bandwidth" of a copy), which is measured on both.

use std::time::Instant;

use anyhow::{anyhow, ensure, Result};
use serde_json::{json, Value};
use spedec_neox::Tokenizer;
use spedec_speculative::{
    generate_autoregressive, generate_speculative, GammaChoice, GenConfig, Lm, Sampler,
};

use spedec_report::bench::leviathan_speedup;
use spedec_report::Summary;

use super::correctness::PROMPT;
use crate::compare::{skipped, to_json};
use crate::device_bench::read_bandwidth;
use crate::env::{generate_on_device, test_tokens, Env, Model};
use crate::report::{ms, summarize, Outcome, Recorder, Status};

/// Draft tokens per verify step in the timing runs (the seed study's γ).
const GAMMA: usize = 4;
/// Rows of the long verify step (γ = 15).
const VERIFY_LONG: usize = 16;
/// The longer context of the decode / verify steps.
const LONG_CONTEXT: usize = 1536;
/// Prompt lengths of the prefill timings.
const PREFILLS: [usize; 2] = [128, 2048];

/// Measured copy bandwidth in GB/s (10⁹ bytes/s), counting read + write bytes.
fn copy_bandwidth(env: &Env, reps: usize) -> Result<(f64, Summary, usize)> {
    let mut times = Vec::new();
    let bytes;
    match &env.gpu {
        Some(gpu) => {
            bytes = 1usize << 30;
            let src = gpu.zeros::<u8>(bytes)?;
            let mut dst = gpu.zeros::<u8>(bytes)?;
            gpu.synchronize()?;
            for i in 0..reps + 3 {
                let t0 = Instant::now();
                gpu.stream()
                    .memcpy_dtod(&src, &mut dst)
                    .map_err(|e| anyhow::anyhow!("device-to-device copy: {e:?}"))?;
                gpu.synchronize()?;
                if i >= 3 {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        None => {
            bytes = 1usize << 28;
            let src = vec![1u8; bytes];
            let mut dst = vec![0u8; bytes];
            for i in 0..reps + 1 {
                let t0 = Instant::now();
                dst.copy_from_slice(&src);
                std::hint::black_box(&mut dst);
                if i >= 1 {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
    }
    let s = summarize(&times)?;
    let gbps = 2.0 * bytes as f64 / (s.median * 1e-3) / 1e9;
    Ok((gbps, s, bytes))
}

/// Times of `forward(tokens)` at a fixed cache length (the cache is rolled back each time).
fn time_forward(lm: &mut dyn Lm, tokens: &[u32], warmup: usize, reps: usize) -> Result<Summary> {
    let base = lm.len();
    let mut times = Vec::with_capacity(reps);
    for i in 0..warmup + reps {
        let t0 = Instant::now();
        let logits = lm.forward(tokens)?;
        let dt = t0.elapsed().as_secs_f64() * 1e3;
        ensure!(logits.rows() == tokens.len(), "wrong number of logits rows");
        lm.truncate(base)?;
        if i >= warmup {
            times.push(dt);
        }
    }
    summarize(&times)
}

/// Median time of `lm.forward_last(tokens)` (a prefill that unembeds only its last row, as
/// generation asks for), each run from the same cache length.
fn time_forward_last(
    lm: &mut dyn Lm,
    tokens: &[u32],
    warmup: usize,
    reps: usize,
) -> Result<Summary> {
    let base = lm.len();
    let mut times = Vec::with_capacity(reps);
    for i in 0..warmup + reps {
        let t0 = Instant::now();
        let logits = lm.forward_last(tokens)?;
        let dt = t0.elapsed().as_secs_f64() * 1e3;
        ensure!(
            logits.rows() == 1,
            "forward_last returned {} rows",
            logits.rows()
        );
        lm.truncate(base)?;
        if i >= warmup {
            times.push(dt);
        }
    }
    summarize(&times)
}

/// Leviathan et al.'s speedup ([`leviathan_speedup`]) with the measured step times (a verify
/// step costs `t_verify`, not one decode step): t_target · E / (γ · t_draft + t_verify).
fn measured_speedup(alpha: f64, gamma: usize, t_draft: f64, t_target: f64, t_verify: f64) -> f64 {
    // Expected tokens per step: the speedup with free drafts (c = 0).
    let expected = leviathan_speedup(alpha, gamma, 0.0);
    t_target * expected / (gamma as f64 * t_draft + t_verify)
}

struct Timed {
    decode: Summary,
    verify: Summary,
}

/// Decode and verify(γ+1) step times with the parallel residual's branches on two streams
/// (see `CudaModel::set_concurrent_branches`), against the one-stream decode measured just
/// before in the same process (`decode`).
fn branch_times(
    m: &mut Model,
    prompt: &[u32],
    reps: usize,
    decode: Option<&Summary>,
) -> Result<Outcome> {
    let cuda = m.cuda_mut().ok_or_else(|| anyhow!("not a CUDA model"))?;
    cuda.set_concurrent_branches(true)?;
    let timed = (|| {
        let d = time_forward(m.lm(), &[prompt[5]], 5, reps)?;
        let v = time_forward(m.lm(), &prompt[..GAMMA + 1], 5, reps)?;
        Ok::<_, anyhow::Error>((d, v))
    })();
    if let Some(cuda) = m.cuda_mut() {
        cuda.set_concurrent_branches(false)?;
    }
    let (d, v) = timed?;
    let vs = decode
        .map(|one| format!(" ({:.3}× the one-stream decode)", d.median / one.median))
        .unwrap_or_default();
    Ok(Outcome::new(
        Status::Info,
        format!("decode {}{vs}; verify {}", ms(&d), ms(&v)),
        json!({ "decode_ms": to_json(&d), "verify_ms": to_json(&v), "verify_rows": GAMMA + 1,
                "one_stream_decode_ms": decode.map(to_json) }),
    ))
}

/// Step times of one model: decode (graphs, then direct launches) and verify of γ+1 and 16
/// tokens at context 32, decode and verify(γ+1) at context 1536, prefill of 128 and 2048
/// tokens (only the last row unembedded, as generation asks).
fn model_steps(
    env: &Env,
    rec: &mut Recorder,
    label: &str,
    m: &mut Model,
    bandwidth: Option<f64>,
) -> Option<Timed> {
    let vocab = m.lm().vocab_size();
    let prompt = test_tokens(32, vocab, 21);
    let bytes = m.bytes_per_token();
    let reps = env.pick(if label.contains("2.8b") { 30 } else { 60 }, 5);
    let floor = |s: &Summary| -> (String, Value) {
        match bandwidth {
            Some(bw) => {
                let floor_ms = bytes as f64 / (bw * 1e9) * 1e3;
                (
                    format!(
                        ", floor {floor_ms:.3} ms ({:.2} GB at {bw:.0} GB/s) → {:.2}× floor",
                        bytes as f64 / 1e9,
                        s.median / floor_ms
                    ),
                    json!({ "floor_ms": floor_ms, "ratio_to_floor": s.median / floor_ms }),
                )
            }
            None => (String::new(), Value::Null),
        }
    };
    let mut decode = None;
    rec.check(&format!("{label}: decode step (1 token, graphs)"), || {
        m.lm().truncate(0)?;
        m.lm().forward(&prompt)?;
        let s = time_forward(m.lm(), &[prompt[5]], 5, reps)?;
        let (text, f) = floor(&s);
        decode = Some(s);
        Ok(Outcome::new(
            Status::Info,
            format!("{}{text}", ms(&s)),
            json!({ "ms": to_json(&s), "bytes_per_token": bytes, "floor": f,
                    "context": prompt.len(), "graphs": to_json(&m.graph_stats()) }),
        ))
    });
    if m.graph_stats().is_some() {
        rec.check(
            &format!("{label}: decode step (1 token, direct launches)"),
            || {
                m.set_graphs(false);
                let s = time_forward(m.lm(), &[prompt[5]], 3, reps);
                m.set_graphs(true);
                let s = s?;
                Ok(Outcome::new(
                    Status::Info,
                    ms(&s),
                    json!({ "ms": to_json(&s) }),
                ))
            },
        );
    }
    if m.cuda_mut().is_some() {
        rec.check(
            &format!(
                "{label}: decode and verify({}) with concurrent branches (graphs)",
                GAMMA + 1
            ),
            || branch_times(m, &prompt, reps, decode.as_ref()),
        );
    }
    let mut verify = None;
    rec.check(
        &format!("{label}: verify step ({} tokens, graphs)", GAMMA + 1),
        || {
            let s = time_forward(m.lm(), &prompt[..GAMMA + 1], 5, reps)?;
            let (text, f) = floor(&s);
            verify = Some(s);
            Ok(Outcome::new(
                Status::Info,
                format!("{}{text}", ms(&s)),
                json!({ "ms": to_json(&s), "floor": f }),
            ))
        },
    );
    rec.check(
        &format!("{label}: verify step ({VERIFY_LONG} tokens, graphs)"),
        || {
            let s = time_forward(m.lm(), &prompt[..VERIFY_LONG], 3, reps)?;
            let (text, f) = floor(&s);
            Ok(Outcome::new(
                Status::Info,
                format!("{}{text}", ms(&s)),
                json!({ "ms": to_json(&s), "floor": f, "rows": VERIFY_LONG }),
            ))
        },
    );
    rec.check(
        &format!(
            "{label}: decode and verify({}) at context {LONG_CONTEXT}",
            GAMMA + 1
        ),
        || {
            m.lm().truncate(0)?;
            let long = test_tokens(LONG_CONTEXT, vocab, 23);
            m.lm().forward_last(&long)?;
            let d = time_forward(m.lm(), &[long[7]], 3, reps)?;
            let v = time_forward(m.lm(), &long[..GAMMA + 1], 3, reps)?;
            let (text, f) = floor(&d);
            Ok(Outcome::new(
                Status::Info,
                format!("decode {}{text}; verify {}", ms(&d), ms(&v)),
                json!({ "context": LONG_CONTEXT, "decode_ms": to_json(&d), "floor": f,
                        "verify_ms": to_json(&v), "verify_rows": GAMMA + 1 }),
            ))
        },
    );
    for n in PREFILLS {
        rec.check(
            &format!("{label}: prefill of {n} tokens (last row's logits)"),
            || {
                m.lm().truncate(0)?;
                let ids = test_tokens(n, vocab, 22);
                let s = time_forward_last(m.lm(), &ids, 1, env.pick(3, 1))?;
                Ok(Outcome::new(
                    Status::Info,
                    format!("{} ({:.0} tokens/s)", ms(&s), n as f64 / (s.median * 1e-3)),
                    json!({ "ms": to_json(&s), "tokens": n, "logits_rows": 1 }),
                ))
            },
        );
    }
    Some(Timed {
        decode: decode?,
        verify: verify?,
    })
}

/// (e) Timing: bandwidth, step times, speculative end to end, predicted speedups.
pub(crate) fn timing(env: &Env, rec: &mut Recorder) {
    let mut bandwidth = None;
    rec.check("copy bandwidth (device-to-device, ≥ 1 GiB)", || {
        let (gbps, s, bytes) = copy_bandwidth(env, env.pick(20, 3))?;
        bandwidth = Some(gbps);
        Ok(Outcome::new(
            Status::Info,
            format!(
                "{gbps:.0} GB/s (read + write) copying {:.2} GB: {}",
                bytes as f64 / 1e9,
                ms(&s)
            ),
            json!({ "gb_per_s": gbps, "bytes": bytes, "ms": to_json(&s) }),
        ))
    });
    // The floor: the read-only probe where there is a GPU (weights are only read), else the
    // copy bandwidth.
    match env.gpu.clone() {
        Some(gpu) => {
            rec.check("read bandwidth (read-only kernel over 1 GiB, best block count)", || {
                let r = read_bandwidth(&gpu, env.pick(10, 3))?;
                bandwidth = Some(r.gb_s);
                let tried: Vec<String> = r
                    .tried
                    .iter()
                    .map(|(b, g)| format!("{b} blocks {g:.0}"))
                    .collect();
                Ok(Outcome::new(
                    Status::Info,
                    format!(
                        "{:.0} GB/s reading {:.2} GB with {} blocks: {} (tried {}); the floor below",
                        r.gb_s,
                        r.bytes as f64 / 1e9,
                        r.blocks,
                        ms(&r.ms),
                        tried.join(", ")
                    ),
                    json!({ "gb_per_s": r.gb_s, "bytes": r.bytes, "blocks": r.blocks,
                            "ms": to_json(&r.ms),
                            "tried": r.tried.iter().map(|(b, g)| json!({ "blocks": b, "gb_per_s": g })).collect::<Vec<_>>(),
                            "floor_basis": "read" }),
                ))
            });
        }
        None => {
            rec.check("read bandwidth (read-only kernel)", || {
                Ok(skipped(
                    "needs a GPU; the floor below uses the copy bandwidth",
                ))
            });
        }
    }
    let (draft_spec, target_spec) = (env.args.draft.clone(), env.args.target.clone());
    let mut models = Vec::new();
    for spec in [&draft_spec, &target_spec] {
        let mut loaded = None;
        rec.check(&format!("load {spec}"), || {
            let t0 = Instant::now();
            let (files, m) = env.open(spec, Some(PREFILLS[1]))?;
            let s = t0.elapsed().as_secs_f64();
            loaded = Some(m);
            Ok(Outcome::new(
                Status::Info,
                format!(
                    "{:.1} s ({} layers, d = {})",
                    s, files.config.num_layers, files.config.hidden_size
                ),
                json!({ "seconds": s }),
            ))
        });
        models.push(loaded);
    }
    let mut timed = Vec::new();
    for (spec, m) in [&draft_spec, &target_spec]
        .into_iter()
        .zip(models.iter_mut())
    {
        let t = match m {
            Some(m) => model_steps(env, rec, spec, m, bandwidth),
            None => None,
        };
        timed.push(t);
    }
    let (Some(Some(draft_t)), Some(Some(target_t))) = (timed.first(), timed.get(1)) else {
        rec.check("speculative timing", || {
            anyhow::bail!("step times of the draft or the target are missing")
        });
        return;
    };
    let c = draft_t.decode.median / target_t.decode.median;
    let (td, tt, tv) = (
        draft_t.decode.median,
        target_t.decode.median,
        target_t.verify.median,
    );
    rec.check(&format!("predicted speedup (Leviathan, γ = {GAMMA})"), || {
        let rows: Vec<Value> = [0.5, 0.6, 0.7, 0.8]
            .iter()
            .map(|&a| {
                json!({ "alpha": a, "leviathan": leviathan_speedup(a, GAMMA, c),
                        "with_measured_verify": measured_speedup(a, GAMMA, td, tt, tv) })
            })
            .collect();
        let text: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "α={}: {:.2}× ({:.2}×)",
                    r["alpha"], r["leviathan"].as_f64().unwrap_or(0.0),
                    r["with_measured_verify"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        Ok(Outcome::new(
            Status::Info,
            format!("c = {c:.4}; {} [in brackets: with the measured {}-token verify]", text.join(", "), GAMMA + 1),
            json!({ "c": c, "gamma": GAMMA, "t_draft_ms": td, "t_target_ms": tt, "t_verify_ms": tv,
                    "predicted": rows }),
        ))
    });
    let [Some(draft), Some(target)] = &mut models[..] else {
        return;
    };
    rec.check(&format!("end to end: {target_spec} AR vs spec with {draft_spec} (greedy, γ = {GAMMA})"), || {
        let prompt = Tokenizer::pythia().encode(PROMPT)?;
        let new = env.pick(128, 16);
        let cfg = GenConfig {
            max_new_tokens: new,
            gamma: GAMMA,
            sampler: Sampler::Greedy,
            seed: 0,
            stop_at_eos: false,
        };
        let runs = env.pick(3, 1);
        let (mut ar_tpot, mut spec_tpot, mut draft_tpot) = (Vec::new(), Vec::new(), Vec::new());
        let mut device_tpot = Vec::new();
        let (mut last, mut last_device) = (None, None);
        let gamma = GammaChoice::Fixed(GAMMA);
        for i in 0..runs + 1 {
            let ar = generate_autoregressive(target.lm(), &prompt, &cfg)?;
            let dr = generate_autoregressive(draft.lm(), &prompt, &cfg)?;
            let sp = generate_speculative(target.lm(), draft.lm(), &prompt, &cfg)?;
            ensure!(ar.tokens == sp.tokens, "speculative output differs from autoregressive");
            let dv = generate_on_device(target, draft, &prompt, &cfg, &gamma)?;
            if let Some(dv) = &dv {
                ensure!(ar.tokens == dv.tokens, "device speculative output differs from autoregressive");
            }
            if i > 0 {
                ar_tpot.push(ar.stats.timing.tpot_s.unwrap_or(f64::NAN) * 1e3);
                draft_tpot.push(dr.stats.timing.tpot_s.unwrap_or(f64::NAN) * 1e3);
                spec_tpot.push(sp.stats.timing.tpot_s.unwrap_or(f64::NAN) * 1e3);
                if let Some(dv) = &dv {
                    device_tpot.push(dv.stats.timing.tpot_s.unwrap_or(f64::NAN) * 1e3);
                }
            }
            last = Some(sp.stats);
            last_device = dv.map(|g| g.stats);
        }
        let device = match (&last_device, summarize(&device_tpot)) {
            (Some(st), Ok(dt)) => {
                let t = &st.timing;
                let step_s = t.draft_s + t.target_s + t.sampling_s;
                let per_step = st.mean_accepted_length.unwrap_or(f64::NAN);
                // (γ·t_draft + t_verify(γ+1)) / E[tokens per step], at the run's acceptance.
                let model_ms = (GAMMA as f64 * td + tv) / per_step;
                json!({ "tpot_ms": to_json(&dt), "stats": to_json(st),
                        "split": { "draft_s": t.draft_s, "verify_s": t.target_s,
                                   "rest_s": t.sampling_s,
                                   "rest_fraction": t.sampling_s / step_s },
                        "cost_model_tpot_ms": model_ms,
                        "measured_over_model": dt.median / model_ms })
            }
            _ => Value::Null,
        };
        let stats = last.ok_or_else(|| anyhow::anyhow!("no run"))?;
        let (a, s, d) = (summarize(&ar_tpot)?, summarize(&spec_tpot)?, summarize(&draft_tpot)?);
        let alpha = stats.acceptance_rate.unwrap_or(0.0);
        let predicted = leviathan_speedup(alpha, GAMMA, c);
        let device_text = match &device {
            Value::Null => String::new(),
            v => format!(
                "; steps on the device: TPOT {:.3} ms ({:.2}× the cost model), the rest {:.1} % \
                 of the step",
                v["tpot_ms"]["median"].as_f64().unwrap_or(f64::NAN),
                v["measured_over_model"].as_f64().unwrap_or(f64::NAN),
                100.0 * v["split"]["rest_fraction"].as_f64().unwrap_or(f64::NAN)
            ),
        };
        Ok(Outcome::new(
            Status::Info,
            format!(
                "TPOT target {:.3} ms, draft {:.3} ms, spec {:.3} ms → measured speedup {:.2}×; \
                 acceptance {alpha:.3} (random weights), Leviathan at that α: {predicted:.2}×{device_text}",
                a.median, d.median, s.median, a.median / s.median
            ),
            json!({ "tpot_ms": { "target": to_json(&a), "draft": to_json(&d), "spec": to_json(&s) },
                    "speedup": a.median / s.median, "acceptance": alpha,
                    "predicted_at_measured_alpha": predicted, "new_tokens": new, "runs": runs,
                    "spec_stats": to_json(&stats), "device_step": device }),
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leviathan_formula() {
        // α = 0: one token per step, the drafts cost γc.
        assert!((leviathan_speedup(0.0, 4, 0.05) - 1.0 / 1.2).abs() < 1e-12);
        // α = 1, free drafts: γ + 1 tokens per step.
        assert!((leviathan_speedup(1.0, 4, 0.0) - 5.0).abs() < 1e-12);
        // Paper's example range: α = 0.8, γ = 4, c = 0.05 → 3.36 / 1.2 = 2.8.
        let s = leviathan_speedup(0.8, 4, 0.05);
        assert!((s - (1.0 - 0.8f64.powi(5)) / 0.2 / 1.2).abs() < 1e-12);
        // With a verify step as cheap as a decode step the two agree.
        let m = measured_speedup(0.7, 4, 0.05, 1.0, 1.0);
        assert!((m - leviathan_speedup(0.7, 4, 0.05)).abs() < 1e-12);
    }
}
