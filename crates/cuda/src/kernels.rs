//! The CUDA C sources of `kernels/*.cu`, embedded at build time, and their entry points.
//!
//! Every file is compiled as its own NVRTC program with `common.cuh` supplied as an
//! in-memory header, so nothing but the NVRTC library is needed (no CUDA toolkit headers).

/// One `kernels/*.cu` file.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// File name under `kernels/`, e.g. `"linear.cu"`.
    pub file: &'static str,
    /// The CUDA C text.
    pub source: &'static str,
    /// `extern "C"` entry points it defines (`<op>_<dtype>`).
    pub entry_points: &'static [&'static str],
}

/// The shared header every kernel file includes as `"common.cuh"`.
pub const COMMON_HEADER: (&str, &str) = ("common.cuh", include_str!("../../../kernels/common.cuh"));

/// Every kernel file, in a fixed order.
pub static KERNEL_SOURCES: &[KernelSource] = &[
    KernelSource {
        file: "embedding.cu",
        source: include_str!("../../../kernels/embedding.cu"),
        entry_points: &["embedding_f16", "positions_i32"],
    },
    KernelSource {
        file: "layernorm.cu",
        source: include_str!("../../../kernels/layernorm.cu"),
        entry_points: &["add_layernorm_f16"],
    },
    KernelSource {
        file: "linear.cu",
        source: include_str!("../../../kernels/linear.cu"),
        entry_points: &["linear_f16"],
    },
    KernelSource {
        file: "linear_tc.cu",
        source: include_str!("../../../kernels/linear_tc.cu"),
        entry_points: &["linear_tc16_f16", "linear_tc128_f16"],
    },
    KernelSource {
        file: "rotary.cu",
        source: include_str!("../../../kernels/rotary.cu"),
        entry_points: &["rotary_kv_f16"],
    },
    KernelSource {
        file: "attention.cu",
        source: include_str!("../../../kernels/attention.cu"),
        entry_points: &["attention_f16"],
    },
    KernelSource {
        file: "logits.cu",
        source: include_str!("../../../kernels/logits.cu"),
        entry_points: &["argmax_f32", "softmax_f32"],
    },
    KernelSource {
        file: "sampling.cu",
        source: include_str!("../../../kernels/sampling.cu"),
        entry_points: &[
            "sample_process_f32",
            "sample_draw_f32",
            "sample_pick_f32",
            "spec_verify_f32",
            "philox_uniform_f32",
        ],
    },
    KernelSource {
        file: "probe.cu",
        source: include_str!("../../../kernels/probe.cu"),
        entry_points: &["read_probe_f16"],
    },
];

/// Launch constants shared with the `.cu` files (kept in one place on the Rust side; a unit
/// test checks each against its `#define`).
pub mod consts {
    /// `EMB_THREADS` in embedding.cu.
    pub const EMB_THREADS: u32 = 256;
    /// `LN_THREADS` in layernorm.cu.
    pub const LN_THREADS: u32 = 256;
    /// `LIN_THREADS` in linear.cu.
    pub const LIN_THREADS: u32 = 256;
    /// `LIN_COLS` in linear.cu: output columns per block.
    pub const LIN_COLS: u32 = 4;
    /// `LIN_MAX_M` in linear.cu.
    pub const LIN_MAX_M: usize = 16;
    /// `ATT_SPLIT` in attention.cu: keys per split and threads per block of pass 1.
    pub const ATT_SPLIT: u32 = 128;
    /// `ATT_MAX_M` in attention.cu.
    pub const ATT_MAX_M: usize = 16;
    /// `ATT_MAX_HD` in attention.cu.
    pub const ATT_MAX_HD: usize = 128;
    /// `VOCAB_THREADS` in logits.cu.
    pub const VOCAB_THREADS: u32 = 1024;
    /// `SAMPLE_THREADS` in sampling.cu: threads per row of the sampler kernels.
    pub const SAMPLE_THREADS: u32 = 1024;
    /// `PHILOX_THREADS` in sampling.cu.
    pub const PHILOX_THREADS: u32 = 256;
    /// `PROBE_THREADS` in probe.cu: threads per block of the read-bandwidth probe.
    pub const PROBE_THREADS: u32 = 256;
}

/// The kernel source that defines `entry_point`, if any.
pub fn source_of(entry_point: &str) -> Option<&'static KernelSource> {
    KERNEL_SOURCES
        .iter()
        .find(|k| k.entry_points.contains(&entry_point))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn define(src: &str, name: &str) -> Option<u64> {
        src.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some("#define") && it.next() == Some(name))
                .then(|| it.next().and_then(|v| v.parse().ok()))
                .flatten()
        })
    }

    #[test]
    fn every_kernel_file_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("kernels/ exists")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cu"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = KERNEL_SOURCES.iter().map(|k| k.file.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "kernels/*.cu and KERNEL_SOURCES differ");
    }

    #[test]
    fn entry_points_are_defined_and_named_op_dtype() {
        for k in KERNEL_SOURCES {
            for e in k.entry_points {
                assert!(
                    k.source.contains(&format!("{e}(")),
                    "{e} not defined in {}",
                    k.file
                );
                assert!(
                    ["_f16", "_f32", "_i32"].iter().any(|d| e.ends_with(d)),
                    "{e} is not <op>_<dtype>"
                );
                assert_eq!(source_of(e).map(|s| s.file), Some(k.file));
            }
        }
    }

    #[test]
    fn launch_constants_match_the_sources() {
        let src = |f: &str| KERNEL_SOURCES.iter().find(|k| k.file == f).unwrap().source;
        use consts::*;
        assert_eq!(
            define(src("embedding.cu"), "EMB_THREADS"),
            Some(EMB_THREADS as u64)
        );
        assert_eq!(
            define(src("layernorm.cu"), "LN_THREADS"),
            Some(LN_THREADS as u64)
        );
        assert_eq!(
            define(src("linear.cu"), "LIN_THREADS"),
            Some(LIN_THREADS as u64)
        );
        assert_eq!(define(src("linear.cu"), "LIN_COLS"), Some(LIN_COLS as u64));
        assert_eq!(
            define(src("linear.cu"), "LIN_MAX_M"),
            Some(LIN_MAX_M as u64)
        );
        assert_eq!(
            define(src("attention.cu"), "ATT_SPLIT"),
            Some(ATT_SPLIT as u64)
        );
        assert_eq!(
            define(src("attention.cu"), "ATT_MAX_M"),
            Some(ATT_MAX_M as u64)
        );
        assert_eq!(
            define(src("attention.cu"), "ATT_MAX_HD"),
            Some(ATT_MAX_HD as u64)
        );
        assert_eq!(
            define(src("logits.cu"), "VOCAB_THREADS"),
            Some(VOCAB_THREADS as u64)
        );
    }

    #[test]
    fn probe_constants_match_the_source() {
        let src = source_of("read_probe_f16").unwrap().source;
        assert_eq!(
            define(src, "PROBE_THREADS"),
            Some(consts::PROBE_THREADS as u64)
        );
    }

    #[test]
    fn sampler_constants_match_the_source() {
        let src = source_of("sample_process_f32").unwrap().source;
        assert_eq!(
            define(src, "SAMPLE_THREADS"),
            Some(consts::SAMPLE_THREADS as u64)
        );
        assert_eq!(
            define(src, "PHILOX_THREADS"),
            Some(consts::PHILOX_THREADS as u64)
        );
    }
}
