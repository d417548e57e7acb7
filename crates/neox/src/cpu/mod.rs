//! CPU kernels: the matmul family and the per-row ops of the forward pass.

pub mod matmul;
pub mod ops;
pub mod packed;

/// Which instruction set the CPU kernels use.
///
/// Opaque: a value can only come from run-time detection ([`Isa::detect`], [`Isa::avx2`],
/// [`Isa::available`]) or be the always-safe [`Isa::portable`], so holding an AVX2 `Isa` proves
/// that this CPU has AVX2, FMA and F16C. The kernels' `unsafe` calls into
/// `#[target_feature]` code rely on exactly that.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Isa(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 with AVX2, FMA and F16C (only built after detecting all three).
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The best kernels this CPU supports; `SPEDEC_CPU_KERNELS=portable` forces the fallback.
    pub fn detect() -> Isa {
        if std::env::var("SPEDEC_CPU_KERNELS").is_ok_and(|v| v == "portable") {
            return Isa::portable();
        }
        Isa::avx2().unwrap_or_else(Isa::portable)
    }

    /// The plain-Rust kernels, which run on any CPU.
    pub fn portable() -> Isa {
        Isa(Kind::Portable)
    }

    /// The AVX2 kernels, when this CPU has AVX2, FMA and F16C (`None` otherwise, and on
    /// other architectures). Ignores `SPEDEC_CPU_KERNELS`.
    pub fn avx2() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Some(Isa(Kind::Avx2));
        }
        None
    }

    /// Every kernel set this CPU can run, portable first (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        std::iter::once(Isa::portable())
            .chain(Isa::avx2())
            .collect()
    }

    /// `"portable"` or `"avx2"`.
    pub fn name(self) -> &'static str {
        match self.0 {
            Kind::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => "avx2",
        }
    }

    /// Whether these are the AVX2 kernels — and so, since only detection builds that value,
    /// whether AVX2, FMA and F16C are present.
    pub fn is_avx2(self) -> bool {
        self.0 != Kind::Portable
    }
}

/// `Portable` or `Avx2` (as when `Isa` was an enum: reports print it).
impl std::fmt::Debug for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

/// Whether two results agree bit for bit (tests of batch invariance and of kernel sets).
#[cfg(test)]
pub(crate) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[cfg(test)]
mod tests {
    use super::Isa;

    #[test]
    fn kernel_sets_come_from_detection() {
        let portable = Isa::portable();
        assert!(!portable.is_avx2());
        assert_eq!(
            (portable.name(), format!("{portable:?}")),
            ("portable", "Portable".into())
        );
        let available = Isa::available();
        assert_eq!(available[0], portable);
        match Isa::avx2() {
            Some(avx2) => {
                assert!(avx2.is_avx2());
                assert_eq!((avx2.name(), format!("{avx2:?}")), ("avx2", "Avx2".into()));
                assert_eq!(available, [portable, avx2]);
                #[cfg(target_arch = "x86_64")]
                assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
            }
            None => {
                println!("no AVX2 + FMA + F16C here: only the portable kernels");
                assert_eq!(available, [portable]);
            }
        }
        assert!(available.contains(&Isa::detect()));
    }
}
