//! The report of `spedec bench-kernels --json FILE`: CPU matmul, decode, verify and prefill
//! times (ms per call, median and range) against the memory-bandwidth floor; and the rows of
//! `spedec gpu-check`'s linears against cuBLAS ([`LinearVsCublas`], [`linear_table_md`]).

use serde::{Deserialize, Serialize};

use crate::{Machine, Summary};

/// One timed item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timed {
    pub name: String,
    /// Milliseconds per call.
    pub ms: Summary,
    /// Weight bytes read per call (0 where not meaningful).
    pub bytes: usize,
    /// Achieved GB/s at the median time.
    pub gb_s: Option<f64>,
}

impl Timed {
    /// `name` timed at `ms` per call, reading `bytes` of weights per call.
    pub fn new(name: &str, ms: Summary, bytes: usize) -> Timed {
        let gb_s = (bytes > 0).then(|| bytes as f64 / (ms.median * 1e-3) / 1e9);
        Timed {
            name: name.to_string(),
            ms,
            bytes,
            gb_s,
        }
    }
}

/// One read pattern of the bandwidth probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSetting {
    /// Independent sequential streams per thread, read one 64-byte line each in turn.
    pub streams: usize,
    /// Software prefetch distance in bytes (0: none).
    pub prefetch_bytes: usize,
}

/// One setting the probe tried, with its median.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeTried {
    pub setting: ProbeSetting,
    pub median_gb_s: f64,
}

/// How the read bandwidth (the floor's denominator) was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeDetails {
    /// The setting with the best median: `read_bandwidth_gb_s` is its passes.
    pub setting: ProbeSetting,
    /// The kernel's transparent-huge-page mode (`always` / `madvise` / `never`); the buffer
    /// is advised for huge pages.
    pub transparent_huge_pages: Option<String>,
    pub buffer_bytes: usize,
    /// Timed passes per setting.
    pub passes: usize,
    pub tried: Vec<ProbeTried>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelReport {
    pub model: String,
    /// Stored weight dtype.
    pub dtype: String,
    pub isa: String,
    /// Threads the kernels ran on.
    pub threads: usize,
    /// Read bandwidth of the probe's best setting (see `probe`).
    pub read_bandwidth_gb_s: Summary,
    pub probe: ProbeDetails,
    pub bytes_per_token: usize,
    /// bytes_per_token / median bandwidth, in ms.
    pub floor_ms: f64,
    /// How the decode and verify steps were timed (consecutive steps over a growing cache,
    /// the probe outside the timed stretch).
    pub step_timing: String,
    pub ops: Vec<Timed>,
    pub decode: Timed,
    pub verify5: Timed,
    pub prefill128: Timed,
    /// Median decode step / floor.
    pub decode_vs_floor: f64,
    /// Median verify(5) step / median decode step.
    pub verify5_vs_decode: f64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    #[serde(flatten)]
    pub machine: Machine,
}

/// One row of `spedec gpu-check`'s linears against cuBLAS: one weight matrix of a model at M
/// rows, run by one of our kernels and by cuBLAS at the same shape, each call on the next of
/// `copies` copies of the weight (a working set of `working_set_bytes`, larger than the L2),
/// so neither side reads its weights from cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearVsCublas {
    /// Model whose shape this is, e.g. "2.8b".
    pub model: String,
    /// The matrix, e.g. "qkv".
    pub matrix: String,
    /// Output features N (rows of W [n, k]).
    pub n: usize,
    /// Input features K.
    pub k: usize,
    /// Rows M of x [m, k].
    pub m: usize,
    /// Our kernel: "simt" (`linear_f16`) or "tc" (`linear_tc*_f16`).
    pub kernel: String,
    /// Our median µs per call.
    pub ours_us: f64,
    /// cuBLAS's median µs per call (None where cuBLAS could not be loaded).
    pub cublas_us: Option<f64>,
    /// ours_us / cublas_us (above 1: slower than cuBLAS).
    pub ratio: Option<f64>,
    /// Bytes a call must move at least: W, x and y (y twice for `+=`).
    pub bytes: usize,
    /// `bytes` over our median time, in GB/s (10⁹ bytes/s).
    pub gb_s: f64,
    /// 2·m·n·k over our median time, in TFLOP/s.
    pub tflop_s: f64,
    /// The same for cuBLAS.
    pub cublas_gb_s: Option<f64>,
    pub cublas_tflop_s: Option<f64>,
    /// Copies of W the calls rotate through, and their total bytes.
    pub copies: usize,
    pub working_set_bytes: usize,
}

/// Bytes a linear y [m, n] = x [m, k] · Wᵀ must move at least: the f16 weight and input, the
/// output of `out_bytes` per element, read too when it accumulates (`+=`).
pub fn linear_bytes(m: usize, n: usize, k: usize, out_bytes: usize, accumulate: bool) -> usize {
    2 * n * k + 2 * m * k + m * n * out_bytes * if accumulate { 2 } else { 1 }
}

/// GB/s (10⁹ bytes/s) of `bytes` moved in `us` microseconds.
pub fn gb_per_s(bytes: usize, us: f64) -> f64 {
    bytes as f64 / (us * 1e-6) / 1e9
}

/// TFLOP/s of a linear of m × n × k (2·m·n·k flops) done in `us` microseconds.
pub fn tflop_per_s(m: usize, n: usize, k: usize, us: f64) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64 / (us * 1e-6) / 1e12
}

impl LinearVsCublas {
    /// The row of `matrix` [n, k] of `model` at m rows: our median `ours_us`, cuBLAS's
    /// `cublas_us`, the derived ratio and rates; `out_bytes` / `accumulate` as in
    /// [`linear_bytes`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: &str,
        matrix: &str,
        (m, n, k): (usize, usize, usize),
        kernel: &str,
        ours_us: f64,
        cublas_us: Option<f64>,
        (out_bytes, accumulate): (usize, bool),
        copies: usize,
    ) -> LinearVsCublas {
        let bytes = linear_bytes(m, n, k, out_bytes, accumulate);
        LinearVsCublas {
            model: model.to_string(),
            matrix: matrix.to_string(),
            n,
            k,
            m,
            kernel: kernel.to_string(),
            ours_us,
            cublas_us,
            ratio: cublas_us.map(|c| ours_us / c),
            bytes,
            gb_s: gb_per_s(bytes, ours_us),
            tflop_s: tflop_per_s(m, n, k, ours_us),
            cublas_gb_s: cublas_us.map(|c| gb_per_s(bytes, c)),
            cublas_tflop_s: cublas_us.map(|c| tflop_per_s(m, n, k, c)),
            copies,
            working_set_bytes: copies * 2 * n * k,
        }
    }
}

/// The rows as a Markdown table: matrix, M, kernel, ours µs, cuBLAS µs, ratio, our GB/s, our
/// TFLOP/s (and cuBLAS's GB/s, TFLOP/s); "–" where cuBLAS did not run.
pub fn linear_table_md(rows: &[LinearVsCublas]) -> String {
    use std::fmt::Write as _;
    let dash =
        |v: Option<f64>, digits: usize| v.map_or("–".to_string(), |v| format!("{v:.digits$}"));
    let mut s = String::from(
        "| matrix | M | kernel | ours µs | cuBLAS µs | ratio | our GB/s | our TFLOP/s | cuBLAS GB/s | cuBLAS TFLOP/s |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} {} [{}×{}] | {} | {} | {:.1} | {} | {} | {:.0} | {:.2} | {} | {} |",
            r.model,
            r.matrix,
            r.n,
            r.k,
            r.m,
            r.kernel,
            r.ours_us,
            dash(r.cublas_us, 1),
            dash(r.ratio, 2),
            r.gb_s,
            r.tflop_s,
            dash(r.cublas_gb_s, 0),
            dash(r.cublas_tflop_s, 2),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gb_s_is_at_the_median() {
        let ms = Summary::of(&[2.0, 1.0, 4.0]).unwrap();
        let t = Timed::new("x", ms, 2_000_000);
        assert!((t.gb_s.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(Timed::new("y", ms, 0).gb_s, None);
    }

    #[test]
    fn linear_rows_derive_ratio_and_rates() {
        // 2.8b embed_out at M = 1, f32 out: 2·50304·2560 + 2·2560 + 4·50304 bytes.
        let (m, n, k) = (1, 50304, 2560);
        let bytes = 2 * n * k + 2 * k + 4 * n;
        assert_eq!(linear_bytes(m, n, k, 4, false), bytes);
        assert_eq!(linear_bytes(m, n, k, 4, true), bytes + 4 * n);
        let r = LinearVsCublas::new(
            "2.8b",
            "embed_out",
            (m, n, k),
            "tc",
            100.0,
            Some(50.0),
            (4, false),
            4,
        );
        assert_eq!(r.ratio, Some(2.0));
        assert!((r.gb_s - bytes as f64 / 100e-6 / 1e9).abs() < 1e-9);
        assert!((r.cublas_gb_s.unwrap() - 2.0 * r.gb_s).abs() < 1e-9);
        // 2·1·50304·2560 flops in 100 µs = 2.575 TFLOP/s.
        assert!((r.tflop_s - 2.0 * 50304.0 * 2560.0 / 100e-6 / 1e12).abs() < 1e-9);
        assert_eq!(r.working_set_bytes, 4 * 2 * n * k);
        // 1 GB in 1 ms is 1000 GB/s; 1 TFLOP in 1 s is 1 TFLOP/s.
        assert!((gb_per_s(1_000_000_000, 1000.0) - 1000.0).abs() < 1e-9);
        assert!((tflop_per_s(1000, 1000, 500, 1e6) - 1e-3).abs() < 1e-15);
        let none = LinearVsCublas::new(
            "70m",
            "qkv",
            (5, 1536, 512),
            "simt",
            4.0,
            None,
            (2, false),
            171,
        );
        assert_eq!((none.ratio, none.cublas_gb_s), (None, None));
        let md = linear_table_md(&[r, none]);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 4, "{md}");
        assert!(lines[0].starts_with("| matrix | M | kernel | ours µs | cuBLAS µs | ratio"));
        assert!(
            lines[2].starts_with("| 2.8b embed_out [50304×2560] | 1 | tc | 100.0 | 50.0 | 2.00 |"),
            "{}",
            lines[2]
        );
        assert!(lines[3].contains("| 4.0 | – | – |"), "{}", lines[3]);
    }
}
