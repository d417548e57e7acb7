//! The report of `spedec bench-kernels --json FILE`: CPU matmul, decode, verify and prefill
//! times (ms per call, median and range) against the memory-bandwidth floor.

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
}
