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

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelReport {
    pub model: String,
    /// Stored weight dtype.
    pub dtype: String,
    pub isa: String,
    /// Threads the kernels ran on.
    pub threads: usize,
    pub read_bandwidth_gb_s: Summary,
    pub bytes_per_token: usize,
    /// bytes_per_token / median bandwidth, in ms.
    pub floor_ms: f64,
    pub ops: Vec<Timed>,
    pub decode: Timed,
    pub verify5: Timed,
    pub prefill128: Timed,
    /// Median over rounds of decode / floor (floor from the same round's probe).
    pub decode_vs_floor: f64,
    /// Median over rounds of verify(5) / decode.
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
