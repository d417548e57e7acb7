//! The correctness sections of `spedec gpu-check`: kernels, logits, consistency, speculative.

use anyhow::{bail, ensure, Result};
use serde_json::{json, Value};
use spedec_neox::{Config, CpuModel, Isa, Lm, Tokenizer, Weights};
use spedec_speculative::{
    generate_autoregressive, generate_speculative, GammaChoice, GenConfig, Sampler,
};

use crate::compare::{compare, diff_outcome, skipped, to_json};
use crate::device_bench;
use crate::env::{generate_on_device, test_tokens, Env, Model};
use crate::fixtures::{fixture_dirs, read_golden};
use crate::kernels::{all_passed, format_table, run_checks, CheckOptions, PYTHIA_2_8B, PYTHIA_70M};
use crate::report::{Outcome, Recorder, Status};
use crate::LOGIT_TOL;
use spedec_report::kernels::linear_table_md;

/// The prompt of the speculative checks.
pub(crate) const PROMPT: &str =
    "The history of the city begins in the early nineteenth century, when";

/// (a) Every kernel against its CPU reference at Pythia-70m and 2.8b shapes.
pub(crate) fn kernels(env: &Env, rec: &mut Recorder) {
    let Some(gpu) = env.gpu.clone() else {
        rec.check("kernel self-check", || Ok(skipped("needs a GPU")));
        return;
    };
    rec.check("kernel self-check (70m, 2.8b shapes; M = 1, 5, 16)", || {
        env.say(&gpu.describe());
        for r in gpu.resources() {
            env.say(&format!("  {r}"));
        }
        let opts = CheckOptions {
            timing_reps: env.pick(10, 3),
            ..CheckOptions::default()
        };
        let results = run_checks(&gpu, &opts)?;
        env.say(format_table(&results).trim_end());
        let failed = results.iter().filter(|r| !r.pass).count();
        let rows: Vec<Value> = results
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "shape": r.shape, "max_abs": r.max_abs, "max_rel": r.max_rel,
                    "atol": r.atol, "rtol": r.rtol, "pass": r.pass, "time_us": r.time_us,
                    "note": r.note,
                })
            })
            .collect();
        let resources: Vec<String> = gpu.resources().iter().map(|r| r.to_string()).collect();
        Ok(Outcome::new(
            Status::of(all_passed(&results)),
            format!("{} passed, {failed} failed", results.len() - failed),
            json!({ "device": gpu.describe(), "target": gpu.target(), "resources": resources,
                    "results": rows }),
        ))
    });
    linears_vs_cublas(env, rec, &gpu);
}

/// Our linears (SIMT at M ≤ 16, tensor cores) against cuBLAS at Pythia-70m / 2.8b shapes
/// and M = 1, 5, 16, 128, 2048, weights rotated past the L2 (`device_bench`): INFO with the
/// table, FAIL where cuBLAS cannot be loaded (our times still reported) or disagrees with us.
fn linears_vs_cublas(env: &Env, rec: &mut Recorder, gpu: &std::sync::Arc<spedec_cuda::GpuContext>) {
    rec.check(
        "linears vs cuBLAS (70m, 2.8b; M = 1, 5, 16, 128, 2048; weights rotated past L2)",
        || {
            let bench = device_bench::linears_vs_cublas(
                gpu,
                &[PYTHIA_70M, PYTHIA_2_8B],
                env.pick(5, 2),
            )?;
            env.say(linear_table_md(&bench.rows).trim_end());
            let worst = bench
                .rows
                .iter()
                .filter_map(|r| r.ratio.map(|q| (q, r)))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let mut detail = match &bench.cublas {
                Ok(v) => format!("{} rows against cuBLAS {v}", bench.rows.len()),
                Err(e) => format!("{} rows, ours only: {e}", bench.rows.len()),
            };
            if let Some((q, r)) = worst {
                let _ = std::fmt::Write::write_fmt(
                    &mut detail,
                    format_args!(
                        "; slowest vs cuBLAS: {} {} M={} {} {:.2}×",
                        r.model, r.matrix, r.m, r.kernel, q
                    ),
                );
            }
            if !bench.mismatches.is_empty() {
                detail = format!("ours and cuBLAS disagree: {}; {detail}", bench.mismatches.join(", "));
            }
            let ok = bench.cublas.is_ok() && bench.mismatches.is_empty();
            Ok(Outcome::new(
                if ok { Status::Info } else { Status::Fail },
                detail,
                json!({ "cublas": bench.cublas.as_ref().ok(), "cublas_error": bench.cublas.as_ref().err(),
                        "cublas_call": device_bench::CUBLAS_CALL,
                        "working_set_bytes": device_bench::WORKING_SET_BYTES,
                        "timing": "CUDA events around up to 32 calls queued behind a 1 GiB read probe, each call on the next weight copy; median of the runs",
                        "max_abs_vs_cublas": bench.max_abs_vs_cublas, "mismatches": bench.mismatches,
                        "rows": bench.rows }),
            ))
        },
    );
}

/// (b) CUDA vs CPU logits on the fixtures (and vs their HF goldens) and on the draft model.
pub(crate) fn logits(env: &Env, rec: &mut Recorder) {
    let dirs = match fixture_dirs(&env.args.fixtures) {
        Ok(d) => d,
        Err(e) => {
            rec.check("fixture models", || Err(e));
            Vec::new()
        }
    };
    for dir in dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let golden = dir.join("golden.safetensors");
        let golden = if golden.is_file() {
            read_golden(&golden).ok()
        } else {
            None
        };
        let mut device_logits: Option<(Vec<f32>, usize)> = None;
        rec.check(&format!("fixture {name}: cuda vs cpu logits"), || {
            let config = Config::from_file(&dir.join("config.json"))?;
            let weights = Weights::load(&dir.join("model.safetensors"), &config)?;
            let ids = match &golden {
                Some((ids, _)) => ids.clone(),
                None => test_tokens(24, config.vocab_size, 3),
            };
            let mut cpu = CpuModel::new(config.clone(), weights.clone(), None, Isa::detect())?;
            let want = cpu.forward(&ids)?;
            let mut dev = env.build(&config, &weights, None)?;
            let got = dev.lm().forward(&ids)?;
            let d = compare(
                got.as_slice(),
                want.as_slice(),
                config.vocab_size,
                LOGIT_TOL,
                LOGIT_TOL,
            )?;
            device_logits = Some((got.into_vec(), config.vocab_size));
            Ok(diff_outcome(&d, json!({ "tokens": ids.len() })))
        });
        if let (Some((_, hf)), Some((got, vocab))) = (&golden, &device_logits) {
            rec.check(&format!("fixture {name}: cuda vs HF golden logits"), || {
                let d = compare(got, hf, *vocab, LOGIT_TOL, LOGIT_TOL)?;
                Ok(diff_outcome(&d, Value::Null))
            });
        }
    }
    let spec = env.args.draft.clone();
    rec.check(&format!("{spec}: cuda vs cpu logits (40 tokens)"), || {
        let (files, mut dev) = env.open(&spec, Some(256))?;
        let ids = test_tokens(40, files.config.vocab_size, 5);
        let got = dev.lm().forward(&ids)?;
        let mut cpu = CpuModel::new(
            files.config.clone(),
            files.weights,
            Some(256),
            Isa::detect(),
        )?;
        let want = cpu.forward(&ids)?;
        let d = compare(
            got.as_slice(),
            want.as_slice(),
            files.config.vocab_size,
            LOGIT_TOL,
            LOGIT_TOL,
        )?;
        Ok(diff_outcome(&d, json!({ "tokens": ids.len() })))
    });
}

/// First (row, col) where two logits buffers differ bitwise, with the largest difference.
fn bitwise(a: &[f32], b: &[f32], vocab: usize) -> Result<Option<(usize, usize, f64)>> {
    ensure!(
        a.len() == b.len(),
        "lengths differ: {} vs {}",
        a.len(),
        b.len()
    );
    let first = a
        .iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits());
    Ok(first.map(|i| {
        let max = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .fold(0.0, f64::max);
        (i / vocab, i % vocab, max)
    }))
}

fn bitwise_outcome(a: &[f32], b: &[f32], vocab: usize, what: &str) -> Result<Outcome> {
    Ok(match bitwise(a, b, vocab)? {
        None => Outcome::new(
            Status::Pass,
            format!("bit-identical over {} rows", a.len() / vocab),
            json!({ "rows": a.len() / vocab, "identical": true }),
        ),
        Some((r, c, max)) => Outcome::new(
            Status::Fail,
            format!("{what}: first difference at row {r} col {c}, max|Δ| {max:.3e}"),
            json!({ "identical": false, "row": r, "col": c, "max_abs": max }),
        ),
    })
}

/// (c) Prefill vs token-by-token vs truncate + re-decode, and graphs vs direct launches:
/// bit-identical on the device.
pub(crate) fn consistency(env: &Env, rec: &mut Recorder) {
    let runs = [
        (env.args.draft.clone(), env.pick(150, 40)),
        (env.args.target.clone(), env.pick(140, 24)),
    ];
    for (spec, n) in runs {
        let mut model: Option<(Model, usize, Vec<u32>, Vec<f32>)> = None;
        rec.check(&format!("{spec}: prefill of {n} == token by token"), || {
            let (files, mut m) = env.open(&spec, Some(256))?;
            let vocab = files.config.vocab_size;
            let ids = test_tokens(n, vocab, 11);
            let prefill = m.lm().forward(&ids)?.into_vec();
            m.lm().truncate(0)?;
            let mut one = Vec::with_capacity(prefill.len());
            for &t in &ids {
                one.extend(m.lm().forward(&[t])?.into_vec());
            }
            let out = bitwise_outcome(&prefill, &one, vocab, "token by token");
            model = Some((m, vocab, ids, prefill));
            out
        });
        let Some((mut m, vocab, ids, prefill)) = model else {
            continue;
        };
        rec.check(
            &format!("{spec}: truncate to {} + re-decode in 5-row steps", n / 2),
            || {
                let keep = n / 2;
                m.lm().truncate(keep)?;
                let mut redo = prefill[..keep * vocab].to_vec();
                for chunk in ids[keep..].chunks(5) {
                    redo.extend(m.lm().forward(chunk)?.into_vec());
                }
                ensure!(
                    m.lm().len() == n,
                    "cache length {} after re-decode, expected {n}",
                    m.lm().len()
                );
                bitwise_outcome(&prefill, &redo, vocab, "re-decode")
            },
        );
        rec.check(&format!("{spec}: CUDA graphs == direct launches"), || {
            let Some(before) = m.graph_stats() else {
                return Ok(skipped("no graphs on the CPU"));
            };
            m.set_graphs(false);
            m.lm().truncate(0)?;
            let mut eager = m.lm().forward(&ids[..n - 8])?.into_vec();
            for &t in &ids[n - 8..] {
                eager.extend(m.lm().forward(&[t])?.into_vec());
            }
            m.set_graphs(true);
            let mut out = bitwise_outcome(&prefill, &eager, vocab, "direct launches")?;
            let used = before.enabled && before.captured > 0 && before.replays > 0;
            if !used {
                out.status = Status::Fail;
                out.detail = format!(
                    "graphs were not used: {} captured, {} replays, disabled: {}; {}",
                    before.captured,
                    before.replays,
                    before.disabled_reason.as_deref().unwrap_or("no"),
                    out.detail
                );
            } else {
                out.detail = format!(
                    "{} ({} graphs captured, {} replays, {} direct steps)",
                    out.detail, before.captured, before.replays, before.eager_steps
                );
            }
            if let Value::Object(map) = &mut out.data {
                map.insert("graphs".into(), to_json(&before));
            }
            Ok(out)
        });
        rec.check(
            &format!("{spec}: concurrent branches == one stream"),
            || concurrent_branches_agree(&mut m, &ids, &prefill, vocab),
        );
    }
}

/// Steps of 5 rows over `ids` with the residual branches on two streams, with graphs and
/// with direct launches, against the one-stream `prefill` logits.
fn concurrent_branches_agree(
    m: &mut Model,
    ids: &[u32],
    prefill: &[f32],
    vocab: usize,
) -> Result<Outcome> {
    let Some(cuda) = m.cuda_mut() else {
        return Ok(skipped("one stream on the CPU"));
    };
    cuda.set_concurrent_branches(true)?;
    let steps = |m: &mut Model| -> Result<Vec<f32>> {
        m.lm().truncate(0)?;
        let mut out = Vec::with_capacity(prefill.len());
        for chunk in ids.chunks(5) {
            out.extend(m.lm().forward(chunk)?.into_vec());
        }
        Ok(out)
    };
    let graphed = steps(m);
    m.set_graphs(false);
    let direct = steps(m);
    m.set_graphs(true);
    if let Some(cuda) = m.cuda_mut() {
        cuda.set_concurrent_branches(false)?;
    }
    let graphed = bitwise_outcome(prefill, &graphed?, vocab, "with graphs")?;
    if graphed.status != Status::Pass {
        return Ok(graphed);
    }
    let mut out = bitwise_outcome(prefill, &direct?, vocab, "with direct launches")?;
    out.detail = format!("graphs and direct launches: {}", out.detail);
    Ok(out)
}

/// (d) Greedy speculative == greedy autoregressive, token for token.
pub(crate) fn speculative(env: &Env, rec: &mut Recorder) {
    let tokenizer = Tokenizer::pythia();
    let prompt = match tokenizer.encode(PROMPT) {
        Ok(p) => p,
        Err(e) => {
            rec.check("tokenize the prompt", || Err(e));
            return;
        }
    };
    let new = env.pick(64, 24);
    let cfg = GenConfig {
        max_new_tokens: new,
        gamma: 4,
        sampler: Sampler::Greedy,
        seed: 0,
        stop_at_eos: false,
    };
    let (target_spec, draft_spec) = (env.args.target.clone(), env.args.draft.clone());
    let mut draft: Option<Model> = None;
    // The target and its greedy output, kept for the device check (a 2.8b load takes seconds).
    let mut target: Option<(Model, Vec<u32>)> = None;
    rec.check(
        &format!("greedy spec == greedy AR ({target_spec} ← {draft_spec}, γ=4, {new} tokens)"),
        || {
            let (_, mut t) = env.open(&target_spec, Some(512))?;
            let (_, mut d) = env.open(&draft_spec, Some(512))?;
            let ar = generate_autoregressive(t.lm(), &prompt, &cfg)?;
            let spec = generate_speculative(t.lm(), d.lm(), &prompt, &cfg)?;
            draft = Some(d);
            let out = same_tokens(&ar.tokens, &spec.tokens, &spec.stats, None);
            target = Some((t, ar.tokens));
            out
        },
    );
    rec.check(
        &format!(
            "greedy spec on the device == greedy AR ({target_spec} ← {draft_spec}, γ = 4 and 15)"
        ),
        || {
            let (mut t, ar_tokens) = match target.take() {
                Some(kept) => kept,
                None => {
                    let (_, mut t) = env.open(&target_spec, Some(512))?;
                    let ar = generate_autoregressive(t.lm(), &prompt, &cfg)?;
                    (t, ar.tokens)
                }
            };
            let mut d = match draft.take() {
                Some(d) => d,
                None => env.open(&draft_spec, Some(512))?.1,
            };
            let mut out = None;
            for gamma in [4, 15] {
                let choice = GammaChoice::Fixed(gamma);
                let Some(spec) = generate_on_device(&mut t, &mut d, &prompt, &cfg, &choice)? else {
                    draft = Some(d);
                    return Ok(skipped("the device step needs both models on CUDA"));
                };
                let o = same_tokens(&ar_tokens, &spec.tokens, &spec.stats, None)?;
                let failed = o.status == Status::Fail;
                out = Some(o);
                if failed {
                    break;
                }
            }
            draft = Some(d);
            out.ok_or_else(|| anyhow::anyhow!("no device run"))
        },
    );
    rec.check(
        &format!("greedy self-draft ({draft_spec} ← itself): identical, acceptance 1"),
        || {
            let mut d = match draft.take() {
                Some(d) => d,
                None => env.open(&draft_spec, Some(512))?.1,
            };
            let (_, mut d2) = env.open(&draft_spec, Some(512))?;
            let ar = generate_autoregressive(d.lm(), &prompt, &cfg)?;
            let spec = generate_speculative(d.lm(), d2.lm(), &prompt, &cfg)?;
            same_tokens(&ar.tokens, &spec.tokens, &spec.stats, Some(1.0))
        },
    );
}

fn same_tokens(
    ar: &[u32],
    spec: &[u32],
    stats: &spedec_speculative::Stats,
    want_acceptance: Option<f64>,
) -> Result<Outcome> {
    let rate = stats.acceptance_rate.unwrap_or(0.0);
    let diverge = ar.iter().zip(spec).position(|(a, b)| a != b);
    let mut ok = ar.len() == spec.len() && diverge.is_none();
    let mut detail = match diverge {
        None if ar.len() == spec.len() => format!("{} tokens identical", ar.len()),
        None => format!("lengths differ: AR {} vs spec {}", ar.len(), spec.len()),
        Some(i) => format!(
            "first difference at token {i}: AR {} vs spec {}",
            ar[i], spec[i]
        ),
    };
    detail += &format!(
        "; acceptance {:.3} over {} verify steps, {:.2} tokens/step",
        rate,
        stats.verify_steps,
        stats.mean_accepted_length.unwrap_or(0.0)
    );
    if let Some(want) = want_acceptance {
        if rate != want {
            ok = false;
            detail += &format!(" (expected exactly {want})");
        }
    }
    if ar.is_empty() {
        bail!("no tokens generated");
    }
    Ok(Outcome::new(
        Status::of(ok),
        detail,
        json!({ "ar_tokens": ar, "spec_tokens": spec, "stats": to_json(stats) }),
    ))
}
