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
use spedec_neox::cpu::matmul::linear;
use spedec_neox::cpu::packed::{HugeBuffer, PackedLayer, PackedMatrix};
use spedec_neox::{CpuModel, Isa, ModelFiles};
pub use spedec_report::kernels::{KernelReport, Timed};
use spedec_report::{Machine, Summary};
use spedec_speculative::Lm;

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

/// A read-bandwidth probe: every thread folds its share of a buffer far larger than the
/// caches, allocated like the packed weights (2 MiB aligned, transparent huge pages advised).
pub struct Probe {
    buf: HugeBuffer,
}

impl Probe {
    pub fn new(bytes: usize) -> Result<Self> {
        let mut buf = HugeBuffer::zeroed(bytes)?;
        buf.as_mut_slice().fill(1); // touch every page before timing
        Ok(Probe { buf })
    }

    /// One timed pass, in GB/s.
    pub fn gb_s(&mut self) -> f64 {
        let threads = rayon::current_num_threads();
        let chunk = self.buf.as_slice().len().div_ceil(threads * 4);
        // Bytes actually read: each chunk's four streams cover whole 128-byte rows.
        let bytes: usize = self
            .buf
            .as_slice()
            .chunks(chunk)
            .map(|c| c.len() / 512 * 512)
            .sum();
        let t = Instant::now();
        let total: u64 = self.buf.as_slice().par_chunks(chunk).map(xor_lanes).sum();
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(total);
        bytes as f64 / secs / 1e9
    }
}

/// Folds a chunk as four streams read side by side (like the decode kernel's four panels),
/// 128 bytes from each in turn, with sixteen independent 64-bit lanes; built for AVX2 where the
/// CPU has it so the loads are 256 bits wide.
fn xor_lanes(x: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: avx2 was detected.
        return unsafe { xor_lanes_avx2(x) };
    }
    xor_streams(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn xor_lanes_avx2(x: &[u8]) -> u64 {
    xor_streams(x)
}

#[inline(always)]
fn xor_streams(x: &[u8]) -> u64 {
    let quarter = x.len() / 4 / 128 * 128;
    let streams: [&[u8]; 4] = std::array::from_fn(|i| &x[i * quarter..(i + 1) * quarter]);
    let mut acc = [0u64; 16];
    for at in (0..quarter).step_by(128) {
        for s in streams {
            for (l, a) in acc.iter_mut().enumerate() {
                let at = at + l * 8;
                *a ^= u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
            }
        }
    }
    acc.iter().fold(0, |a, b| a ^ b)
}

/// Runs the whole kernel benchmark on `spec`; `machine` (this host's CPU) goes into the report.
///
/// The bandwidth probe, the decode step and the verify step are timed in interleaved rounds
/// (probe, decode, verify, probe, …) so that a shared machine's drifting bandwidth affects all
/// three alike; the ratios are medians of per-round ratios.
pub fn run(
    spec: &str,
    warmup: usize,
    repeats: usize,
    machine: Machine,
    mut log: impl FnMut(&str),
) -> Result<KernelReport> {
    log(&format!("loading {spec}"));
    let files = ModelFiles::open(spec)?;
    let isa = Isa::detect();
    let config = files.config.clone();
    let dtype = files.weights.embed_out.dtype();
    let mut model = CpuModel::new(files.config, files.weights, Some(512), isa)?;
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

    let prompt: Vec<u32> = (0..128u32)
        .map(|i| (i * 7919) % config.vocab_size as u32)
        .collect();
    log("timing read bandwidth, decode and verify in interleaved rounds");
    const PROBE_BYTES: usize = 1 << 30;
    let mut probe = Probe::new(PROBE_BYTES)?;
    model.forward(&prompt[..16])?;
    let mut step = |rows: usize| -> Result<f64> {
        model.truncate(16)?;
        let t = Instant::now();
        model.forward(&prompt[16..16 + rows])?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..warmup {
        probe.gb_s();
        step(1)?;
        step(5)?;
    }
    let (mut bw, mut dec, mut ver, mut vs_floor, mut vs_dec) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..repeats {
        let g = probe.gb_s();
        let d = step(1)?;
        let v = step(5)?;
        let floor = bytes_per_token as f64 / (g * 1e9) * 1e3;
        bw.push(g);
        dec.push(d);
        ver.push(v);
        vs_floor.push(d / floor);
        vs_dec.push(v / d);
    }
    drop(probe);
    let bw = Summary::of(&bw).expect("repeats >= 1");
    let decode = Summary::of(&dec).expect("repeats >= 1");
    let verify = Summary::of(&ver).expect("repeats >= 1");
    let floor_ms = bytes_per_token as f64 / (bw.median * 1e9) * 1e3;

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
        bytes_per_token,
        floor_ms,
        ops,
        decode_vs_floor: Summary::of(&vs_floor).expect("repeats >= 1").median,
        verify5_vs_decode: Summary::of(&vs_dec).expect("repeats >= 1").median,
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
         Probe, decode and verify alternate round by round.\n\n\
         Read bandwidth {:.1} GB/s ({:.1}–{:.1}); weights read per token {:.3} GB; floor {:.2} ms/token.\n\n",
        r.model,
        r.dtype,
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
        "\ndecode / floor = {:.2}× and verify(5) / decode = {:.2}× (medians of per-round ratios); \
         decode {:.1} tokens/s; prefill {:.1} tokens/s\n",
        r.decode_vs_floor, r.verify5_vs_decode, r.decode_tok_s, r.prefill_tok_s
    );
    out
}
