//! `spedec bench-kernels`: CPU decode against the memory-bandwidth floor.
//!
//! Measures, in one process and one time window: the machine's read bandwidth (a vectorised
//! read with every core over a buffer far larger than the caches), each matmul of one layer
//! at M = 1 (time and achieved GB/s), the decode step, a (γ+1) = 5-token verify and a
//! 128-token prefill — each with warm-up, repeats, median and min–max — and the ratio of the
//! decode step to the floor `bytes of weights read per token / read bandwidth`.

use std::time::Instant;

use anyhow::Result;
use rayon::prelude::*;
use serde::Serialize;
use spedec_neox::cpu::matmul::linear;
use spedec_neox::{CpuModel, Isa, ModelFiles};

use crate::bench::Summary;

/// One timed item.
#[derive(Debug, Clone, Serialize)]
pub struct Timed {
    pub name: String,
    /// Milliseconds per call.
    pub ms: Summary,
    /// Weight bytes read per call (0 where not meaningful).
    pub bytes: usize,
    /// Achieved GB/s at the median time.
    pub gb_s: Option<f64>,
}

/// Whole report.
#[derive(Debug, Clone, Serialize)]
pub struct KernelReport {
    pub model: String,
    pub isa: String,
    pub threads: usize,
    pub read_bandwidth_gb_s: Summary,
    pub bytes_per_token: usize,
    /// bytes_per_token / median bandwidth, in ms.
    pub floor_ms: f64,
    pub ops: Vec<Timed>,
    pub decode: Timed,
    pub verify5: Timed,
    pub prefill128: Timed,
    /// decode median / floor.
    pub decode_vs_floor: f64,
    /// verify5 median / decode median.
    pub verify5_vs_decode: f64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
}

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

fn timed(name: &str, ms: Summary, bytes: usize) -> Timed {
    let gb_s = (bytes > 0).then(|| bytes as f64 / (ms.median * 1e-3) / 1e9);
    Timed {
        name: name.to_string(),
        ms,
        bytes,
        gb_s,
    }
}

/// Read bandwidth in GB/s: every thread sums its share of a `bytes`-long buffer.
pub fn read_bandwidth(bytes: usize, repeats: usize) -> Summary {
    let buf: Vec<f32> = vec![1.0; bytes / 4];
    let chunk = buf.len().div_ceil(rayon::current_num_threads() * 4);
    let mut gbs = Vec::new();
    for r in 0..=repeats {
        let t = Instant::now();
        let total: f32 = buf.par_chunks(chunk).map(sum_lanes).sum();
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(total);
        if r > 0 {
            gbs.push(bytes as f64 / secs / 1e9);
        }
    }
    Summary::of(&gbs).expect("repeats >= 1")
}

/// Sum with eight independent lanes, which compilers turn into vector adds.
fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    for c in x.chunks_exact(16) {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum()
}

/// Runs the whole kernel benchmark on `spec`.
pub fn run(
    spec: &str,
    warmup: usize,
    repeats: usize,
    mut log: impl FnMut(&str),
) -> Result<KernelReport> {
    log(&format!("loading {spec}"));
    let files = ModelFiles::open(spec)?;
    let isa = Isa::detect();
    let bytes_per_token = files.weights.bytes_per_token();
    let config = files.config.clone();
    let weights = files.weights.clone();
    let mut model = CpuModel::new(files.config, files.weights, Some(512), isa)?;

    log("measuring read bandwidth (2 GB buffer)");
    let bw = read_bandwidth(2 << 30, repeats.max(3));
    let floor_ms = bytes_per_token as f64 / (bw.median * 1e9) * 1e3;

    log("timing matmuls at M = 1");
    let layer = &weights.layers[0];
    let mut ops = Vec::new();
    for (name, lin) in [
        ("query_key_value", &layer.query_key_value.weight),
        ("attention.dense", &layer.dense.weight),
        ("dense_h_to_4h", &layer.dense_h_to_4h.weight),
        ("dense_4h_to_h", &layer.dense_4h_to_h.weight),
        ("embed_out", &weights.embed_out),
    ] {
        let x = vec![0.01f32; lin.cols()];
        let mut y = vec![0.0f32; lin.rows()];
        let ms = time_it(warmup, repeats * 4, || {
            linear(isa, &x, 1, lin, None, &mut y);
            Ok(())
        })?;
        ops.push(timed(name, ms, lin.bytes().len()));
    }

    let prompt: Vec<u32> = (0..128u32)
        .map(|i| (i * 7919) % config.vocab_size as u32)
        .collect();
    log("timing decode, verify and prefill");
    model.forward(&prompt[..16])?;
    let decode = time_it(warmup, repeats, || {
        model.truncate(16)?;
        model.forward(&prompt[16..17])?;
        Ok(())
    })?;
    let verify = time_it(warmup, repeats, || {
        model.truncate(16)?;
        model.forward(&prompt[16..21])?;
        Ok(())
    })?;
    let prefill = time_it(warmup.min(1), repeats.min(3), || {
        model.truncate(0)?;
        model.forward(&prompt)?;
        Ok(())
    })?;
    Ok(KernelReport {
        model: spec.to_string(),
        isa: format!("{isa:?}"),
        threads: rayon::current_num_threads(),
        read_bandwidth_gb_s: bw,
        bytes_per_token,
        floor_ms,
        ops,
        decode_vs_floor: decode.median / floor_ms,
        verify5_vs_decode: verify.median / decode.median,
        prefill_tok_s: 128.0 / (prefill.median * 1e-3),
        decode_tok_s: 1e3 / decode.median,
        decode: timed("decode step (1 token)", decode, bytes_per_token),
        verify5: timed("verify (5 tokens)", verify, bytes_per_token),
        prefill128: timed("prefill (128 tokens)", prefill, bytes_per_token),
    })
}

/// A markdown table of the report.
pub fn markdown(r: &KernelReport, machine: &str) -> String {
    let mut out = format!(
        "{} on {machine}, kernels {}, {} threads; median (min–max) of repeats after warm-up.\n\n\
         Read bandwidth {:.1} GB/s ({:.1}–{:.1}); weights read per token {:.3} GB; floor {:.2} ms/token.\n\n",
        r.model,
        r.isa,
        r.threads,
        r.read_bandwidth_gb_s.median,
        r.read_bandwidth_gb_s.min,
        r.read_bandwidth_gb_s.max,
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
        "\ndecode / floor = {:.2}×; verify(5) / decode = {:.2}×; decode {:.1} tokens/s; prefill {:.1} tokens/s\n",
        r.decode_vs_floor, r.verify5_vs_decode, r.decode_tok_s, r.prefill_tok_s
    );
    out
}
