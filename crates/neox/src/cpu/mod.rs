//! CPU kernels: the matmul family and the per-row ops of the forward pass.

pub mod matmul;
pub mod ops;
pub mod packed;

/// Which instruction set the CPU kernels use.
///
/// Opaque: a value can only come from run-time detection ([`Isa::detect`], [`Isa::avx2`],
/// [`Isa::avx512`], [`Isa::available`]) or be the always-safe [`Isa::portable`], so holding an
/// AVX2 `Isa` proves that this CPU has AVX2, FMA and F16C, and an AVX-512 one that it also has
/// AVX-512F. The kernels' `unsafe` calls into `#[target_feature]` code rely on exactly that.
///
/// All sets give the same bits: every output is the same FMA chain in the same order, only
/// the vector width that computes neighbouring outputs together differs. The same holds for
/// the one tuning choice a value carries, whether one-row (decode) tiles prefetch their
/// weight stream ([`Isa::one_row_prefetch`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Isa {
    kind: Kind,
    one_row_prefetch: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 with AVX2, FMA and F16C (only built after detecting all three).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86-64 with AVX-512F besides AVX2, FMA and F16C: the matmul on 16-wide registers (the
    /// per-row ops stay on their AVX2 build).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The best kernels this CPU supports. `SPEDEC_CPU_KERNELS=portable` forces the fallback
    /// and `=avx2` caps the choice at AVX2 (for comparisons on an AVX-512 host); other values
    /// are ignored.
    pub fn detect() -> Isa {
        match std::env::var("SPEDEC_CPU_KERNELS").as_deref() {
            Ok("portable") => Isa::portable(),
            Ok("avx2") => Isa::avx2().unwrap_or_else(Isa::portable),
            _ => Isa::avx512()
                .or_else(Isa::avx2)
                .unwrap_or_else(Isa::portable),
        }
    }

    /// The plain-Rust kernels, which run on any CPU.
    pub fn portable() -> Isa {
        Isa::new(Kind::Portable)
    }

    /// `kind` with its default one-row prefetch: on for AVX-512 on Intel, off otherwise.
    /// Measured with the 2.8b shapes, in one process, alternating: on a Sapphire Rapids guest
    /// the AVX-512 decode step went 216 / 232 → 197 / 223 ms with it; on an AMD EPYC Zen 4
    /// guest 188–195 → 233–278 ms (and the AVX2 set's 170–192 → 212–238 ms); on an AMD EPYC
    /// Zen 5 guest no tile variant tried (prefetch 4 KiB or 1 KiB ahead, 8 or 2 panels) beat
    /// the tile without it; the AVX2 set was tuned without it on Zen 3.
    fn new(kind: Kind) -> Isa {
        #[cfg(target_arch = "x86_64")]
        let one_row_prefetch = kind == Kind::Avx512 && cpu_vendor() == *b"GenuineIntel";
        #[cfg(not(target_arch = "x86_64"))]
        let one_row_prefetch = false;
        Isa {
            kind,
            one_row_prefetch,
        }
    }

    /// This set with one-row tiles prefetching (`on`) or not; the bits are the same either
    /// way (for comparisons in one process; [`Isa::detect`] picks the measured default).
    pub fn with_one_row_prefetch(self, on: bool) -> Isa {
        Isa {
            one_row_prefetch: on && self.kind != Kind::Portable,
            ..self
        }
    }

    /// Whether one-row matmul tiles (decode, a draft's steps) ask for their weights ahead in
    /// software. Tiles of 2–6 rows always do and prefill tiles never do (their weight slices
    /// come from L1); the portable kernels never prefetch.
    pub fn one_row_prefetch(self) -> bool {
        self.one_row_prefetch
    }

    /// The AVX2 kernels, when this CPU has AVX2, FMA and F16C (`None` otherwise, and on
    /// other architectures). Ignores `SPEDEC_CPU_KERNELS`.
    pub fn avx2() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Some(Isa::new(Kind::Avx2));
        }
        None
    }

    /// The AVX-512 kernels, when this CPU has AVX-512F as well as AVX2, FMA and F16C (`None`
    /// otherwise, and on other architectures). Ignores `SPEDEC_CPU_KERNELS`.
    pub fn avx512() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        if Isa::avx2().is_some() && is_x86_feature_detected!("avx512f") {
            return Some(Isa::new(Kind::Avx512));
        }
        None
    }

    /// Every kernel set this CPU can run, portable first (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        std::iter::once(Isa::portable())
            .chain(Isa::avx2())
            .chain(Isa::avx512())
            .collect()
    }

    /// `"portable"`, `"avx2"` or `"avx512"`.
    pub fn name(self) -> &'static str {
        match self.kind {
            Kind::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => "avx512",
        }
    }

    /// Whether AVX2, FMA and F16C are present (the AVX2 and AVX-512 sets; only detection
    /// builds those values), so the AVX2 builds of the kernels may run.
    pub fn is_avx2(self) -> bool {
        self.kind != Kind::Portable
    }

    /// Whether these are the AVX-512 kernels — and so whether AVX-512F is present too.
    pub fn is_avx512(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self.kind == Kind::Avx512 {
            return true;
        }
        false
    }
}

/// The CPU's vendor string from `cpuid` leaf 0 (`GenuineIntel`, `AuthenticAMD`, …).
#[cfg(target_arch = "x86_64")]
fn cpu_vendor() -> [u8; 12] {
    // SAFETY: `cpuid` leaf 0 exists on every x86-64 CPU.
    #[allow(unused_unsafe)]
    let r = unsafe { std::arch::x86_64::__cpuid(0) };
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&r.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&r.edx.to_le_bytes());
    v[8..].copy_from_slice(&r.ecx.to_le_bytes());
    v
}

/// `Portable`, `Avx2` or `Avx512` (as when `Isa` was an enum: reports print it).
impl std::fmt::Debug for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.kind, f)
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
        assert!(!portable.with_one_row_prefetch(true).one_row_prefetch());
        assert_eq!(
            (portable.name(), format!("{portable:?}")),
            ("portable", "Portable".into())
        );
        let available = Isa::available();
        assert_eq!(available[0], portable);
        match Isa::avx2() {
            Some(avx2) => {
                assert!(avx2.is_avx2() && !avx2.one_row_prefetch());
                let on = avx2.with_one_row_prefetch(true);
                assert!(on.one_row_prefetch() && on != avx2 && on.name() == "avx2");
                assert_eq!((avx2.name(), format!("{avx2:?}")), ("avx2", "Avx2".into()));
                assert_eq!(&available[..2], [portable, avx2]);
                #[cfg(target_arch = "x86_64")]
                assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
                match Isa::avx512() {
                    Some(avx512) => {
                        assert!(avx512.is_avx2() && avx512.is_avx512() && !avx2.is_avx512());
                        assert_eq!(avx512.name(), "avx512");
                        assert_eq!(available, [portable, avx2, avx512]);
                        #[cfg(target_arch = "x86_64")]
                        assert!(is_x86_feature_detected!("avx512f"));
                    }
                    None => {
                        println!("no AVX-512F here: the AVX-512 kernels are not tested");
                        assert_eq!(available.len(), 2);
                    }
                }
            }
            None => {
                println!("no AVX2 + FMA + F16C here: only the portable kernels");
                assert_eq!(available, [portable]);
            }
        }
        assert!(available.contains(&Isa::detect()));
    }
}
