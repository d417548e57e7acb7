//! `spedec bench-kernels`: CPU decode against the memory-bandwidth floor.
//!
//! Measures, in one process and one time window: the machine's read bandwidth (the best of a
//! few read patterns, [`crate::bandwidth`]), each matmul of one layer at M = 1 (time and
//! achieved GB/s), the decode step, a (γ+1) = 5-token verify and a 128-token prefill — each
//! with warm-up, repeats, median and min–max — and the ratio of the decode step to the floor
//! `bytes of weights read per token / read bandwidth`.
//!
//! Decode and verify are timed as they run in use: consecutive steps over a growing cache (as
//! llama-bench's `tg` and as a draft model), with the probe before the timed stretch, so the
//! weights stay as warm as they are in a real run.

use std::time::Instant;

use anyhow::{ensure, Result};
use spedec_neox::cpu::matmul::linear;
use spedec_neox::cpu::packed::{PackedLayer, PackedMatrix};
use spedec_neox::{CpuModel, Isa, ModelFiles};
pub use spedec_report::kernels::{KernelReport, Timed};
use spedec_report::{Machine, Summary};
use spedec_speculative::Lm;

use crate::bandwidth::Probe;

/// Tokens in the cache before the first timed step.
const START: usize = 16;
/// Cache capacity of the benchmark model.
const CONTEXT: usize = 1024;
/// The most consecutive decode steps a run may ask for.
pub const MAX_STEPS: usize = 512;

fn time_it(warmup: usize, repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<Summary> {
    for _ in 0..warmup {
        f()?;
    }
    let mut ms = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Summary::of(&ms).expect("at least one repeat"))
}

/// Runs the whole kernel benchmark on `spec`; `machine` (this host's CPU) goes into the report.
///
/// Order: matmuls, then the bandwidth probe, then `steps` consecutive decode steps (after
/// `warmup` untimed ones) and `repeats` consecutive verify(5) steps over the growing cache,
/// then the prefill.
pub fn run(
    spec: &str,
    warmup: usize,
    repeats: usize,
    steps: usize,
    machine: Machine,
    mut log: impl FnMut(&str),
) -> Result<KernelReport> {
    ensure!(
        (1..=MAX_STEPS).contains(&steps),
        "decode steps must be 1 ..= {MAX_STEPS}, got {steps}"
    );
    ensure!(repeats >= 1, "repeats must be at least 1");
    log(&format!("loading {spec}"));
    let files = ModelFiles::open(spec)?;
    let isa = Isa::detect();
    let config = files.config.clone();
    let dtype = files.weights.embed_out.dtype();
    let mut model = CpuModel::new(files.config, files.weights, Some(CONTEXT), isa)?;
    let bytes_per_token = model.weights().bytes_per_token();

    log("timing matmuls at M = 1 (each call on the next layer's matrix, as in decode)");
    let weights = model.weights();
    let mut ops = Vec::new();
    type Pick = fn(&PackedLayer) -> &PackedMatrix;
    let per_layer: [(&str, Pick); 4] = [
        ("query_key_value", |l| &l.query_key_value.weight),
        ("attention.dense", |l| &l.dense.weight),
        ("dense_h_to_4h", |l| &l.dense_h_to_4h.weight),
        ("dense_4h_to_h", |l| &l.dense_4h_to_h.weight),
    ];
    for (name, pick) in per_layer {
        let mats: Vec<&PackedMatrix> = weights.layers.iter().map(pick).collect();
        ops.push(time_op(isa, name, &mats, warmup, repeats)?);
    }
    ops.push(time_op(
        isa,
        "embed_out",
        &[&weights.embed_out],
        warmup,
        repeats * 4,
    )?);

    let vocab = config.vocab_size as u32;
    let token = |i: usize| (i as u32).wrapping_mul(7919) % vocab;
    let prompt: Vec<u32> = (0..128).map(token).collect();

    log("timing read bandwidth (best of the probe's settings)");
    const PROBE_BYTES: usize = 1 << 30;
    let (bw, probe) = {
        let probe = Probe::new(PROBE_BYTES)?;
        probe.best(repeats.clamp(3, 5))
    };
    let floor_ms = bytes_per_token as f64 / (bw.median * 1e9) * 1e3;

    // Decode then verify, consecutive over one growing cache: position START onwards.
    let verify_rows = 5;
    let context = CONTEXT.min(config.max_position_embeddings);
    let needed = START + warmup + steps + verify_rows * (warmup + repeats);
    ensure!(
        needed <= context,
        "{steps} decode steps with {warmup} warm-up and {repeats} repeats need {needed} \
         positions; the benchmark's context is {context}"
    );
    log(&format!(
        "timing {steps} consecutive decode steps, then {repeats} consecutive verify(5) steps"
    ));
    model.truncate(0)?;
    model.forward(&prompt[..START])?;
    let mut pos = START;
    let mut timed_step = |rows: usize| -> Result<f64> {
        let ids: Vec<u32> = (pos..pos + rows).map(token).collect();
        let t = Instant::now();
        model.forward(&ids)?;
        pos += rows;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let mut dec = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let ms = timed_step(1)?;
        if i >= warmup {
            dec.push(ms);
        }
    }
    let mut ver = Vec::with_capacity(repeats);
    for i in 0..warmup + repeats {
        let ms = timed_step(verify_rows)?;
        if i >= warmup {
            ver.push(ms);
        }
    }
    let decode = Summary::of(&dec).expect("steps >= 1");
    let verify = Summary::of(&ver).expect("repeats >= 1");
    let step_timing = format!(
        "{steps} consecutive decode steps from position {} (after {warmup} untimed), then \
         {repeats} consecutive verify(5) steps keeping their tokens (after {warmup} untimed); \
         the probe ran before, outside the timed stretch",
        START + warmup
    );

    log("timing a 128-token prefill (last position's logits only, as llama-bench pp128)");
    let prefill = time_it(warmup.min(1), repeats.clamp(1, 3), || {
        model.truncate(0)?;
        model.forward_last(&prompt)?;
        Ok(())
    })?;
    Ok(KernelReport {
        model: spec.to_string(),
        dtype: format!("{dtype:?}"),
        isa: format!("{isa:?}"),
        threads: rayon::current_num_threads(),
        read_bandwidth_gb_s: bw,
        probe,
        bytes_per_token,
        floor_ms,
        step_timing,
        ops,
        decode_vs_floor: decode.median / floor_ms,
        verify5_vs_decode: verify.median / decode.median,
        prefill_tok_s: 128.0 / (prefill.median * 1e-3),
        decode_tok_s: 1e3 / decode.median,
        decode: Timed::new("decode step (1 token)", decode, bytes_per_token),
        verify5: Timed::new("verify (5 tokens)", verify, bytes_per_token),
        prefill128: Timed::new("prefill (128 tokens)", prefill, 0),
        machine,
    })
}

/// Times `linear` at M = 1, cycling through `mats` (one call per matrix, like a decode step
/// walking the layers, so caches do not flatter the figure); per-call milliseconds.
fn time_op(
    isa: Isa,
    name: &str,
    mats: &[&PackedMatrix],
    warmup: usize,
    repeats: usize,
) -> Result<Timed> {
    let (n, k) = (mats[0].rows(), mats[0].cols());
    let x = vec![0.01f32; k];
    let mut y = vec![0.0f32; n];
    let ms = time_it(warmup, repeats, || {
        for w in mats {
            linear(isa, &x, 1, w, None, &mut y);
        }
        Ok(())
    })?;
    let ms = ms.scaled(1.0 / mats.len() as f64);
    // Bytes as stored (what the floor counts), not the padded panels.
    let bytes = n * k * mats[0].dtype().size();
    Ok(Timed::new(name, ms, bytes))
}

/// A markdown table of the report.
pub fn markdown(r: &KernelReport) -> String {
    let machine = &r.machine.description;
    let mut out = format!(
        "{} ({} weights) on {machine}, kernels {}, {} threads; median (min–max) of repeats after \
         warm-up. Matmul rows: M = 1, time per call while cycling through every layer's matrix. \
         Steps: {}.\n\n\
         Read bandwidth {:.1} GB/s ({:.1}–{:.1}; best probe setting: {} streams per thread, \
         prefetch {}; transparent huge pages: {}); weights read per token {:.3} GB; floor \
         {:.2} ms/token.\n\n",
        r.model,
        r.dtype,
        r.isa,
        r.threads,
        r.step_timing,
        r.read_bandwidth_gb_s.median,
        r.read_bandwidth_gb_s.min,
        r.read_bandwidth_gb_s.max,
        r.probe.setting.streams,
        match r.probe.setting.prefetch_bytes {
            0 => "none".to_string(),
            b => format!("{b} B ahead"),
        },
        r.probe
            .transparent_huge_pages
            .as_deref()
            .unwrap_or("unknown"),
        r.bytes_per_token as f64 / 1e9,
        r.floor_ms
    );
    out += "| op / step | ms (median) | min–max | GB/s |\n|---|---|---|---|\n";
    for t in r.ops.iter().chain([&r.decode, &r.verify5, &r.prefill128]) {
        out += &format!(
            "| {} | {:.3} | {:.3}–{:.3} | {} |\n",
            t.name,
            t.ms.median,
            t.ms.min,
            t.ms.max,
            t.gb_s.map_or("—".into(), |g| format!("{g:.1}"))
        );
    }
    out += &format!(
        "\ndecode / floor = {:.2}× and verify(5) / decode = {:.2}× (ratios of medians); \
         decode {:.1} tokens/s; prefill {:.1} tokens/s\n",
        r.decode_vs_floor, r.verify5_vs_decode, r.decode_tok_s, r.prefill_tok_s
    );
    out
}
