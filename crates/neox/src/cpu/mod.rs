//! CPU kernels: the matmul family and the per-row ops of the forward pass.

pub mod matmul;
pub mod ops;
pub mod packed;

/// Which instruction set the CPU kernels use, detected once at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
}

impl Isa {
    /// The best kernels this CPU supports; `SPEDEC_CPU_KERNELS=portable` forces the fallback.
    pub fn detect() -> Isa {
        if std::env::var("SPEDEC_CPU_KERNELS").is_ok_and(|v| v == "portable") {
            return Isa::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2;
        }
        Isa::Portable
    }

    /// Every kernel set this CPU can run (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            out.push(Isa::Avx2);
        }
        out
    }
}

/// Whether two results agree bit for bit (tests of batch invariance and of kernel sets).
#[cfg(test)]
pub(crate) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}
