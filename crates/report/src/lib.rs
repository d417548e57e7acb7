//! spedec-report: the typed JSON reports that `spedec bench`, `spedec ppl` and
//! `spedec bench-kernels` write and `cargo xtask` reads, the machine a run used, the device
//! names both command-line tools accept, and atomic file writes.
//!
//! Units are fixed by the field names and used everywhere, in JSON and in tables: times of a
//! token (`ttft_ms`, `tpot_ms`, kernel `ms`) in milliseconds, totals (`*_s`, `seconds`) in
//! seconds, rates in tokens/s or GB/s.

/// `NAMES`, `as_str`, `Display` and `FromStr` (any case) for a fieldless enum whose variants
/// are written as the given lower-case names.
macro_rules! named_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The names `from_str` accepts, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The variant's name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = anyhow::Error;

            fn from_str(s: &str) -> anyhow::Result<$ty> {
                [$($ty::$variant),+]
                    .into_iter()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "unknown {} `{s}`; expected {}",
                            $what,
                            $ty::NAMES.join(", ")
                        )
                    })
            }
        }
    };
}

pub mod bench;
pub mod device;
pub mod kernels;
pub mod machine;
pub mod ppl;
pub mod summary;
pub mod write;

pub use device::{Device, SpecStep};
pub use machine::{Gpu, Machine};
pub use summary::{fmt_opt, format_bytes, Summary};
pub use write::{check_writable, write_atomic, write_atomic_with};
