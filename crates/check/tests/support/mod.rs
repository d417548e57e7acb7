//! What the test files of this crate share: visible output and the emulator (or a skip).

use std::io::Write;
use std::path::Path;

use spedec_check::emulator::HostEmulator;

/// A line on stderr that `cargo test` shows even when the test passes.
pub fn visible(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The host emulation of the kernels, or `None` (printing why `test` is skipped) where no C++
/// compiler is found.
pub fn emulator_or_skip(test: &str) -> Option<HostEmulator> {
    match HostEmulator::new(Path::new(env!("CARGO_TARGET_TMPDIR"))) {
        Ok(Some(emu)) => Some(emu),
        Ok(None) => {
            visible(&format!(
                "{test}: skipped: no C++ compiler (or not x86-64 Linux)"
            ));
            None
        }
        Err(e) => panic!("{e:#}"),
    }
}
