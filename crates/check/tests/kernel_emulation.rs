//! The kernels' logic on a CPU: the same self-check as on a GPU (`kernels::run_checks_on`)
//! on the host emulation of `kernels/*.cu`, at reduced shapes with the real head dims (64
//! and 80), M = 1, 5, 16. Prints `skipped: no C++ compiler` where none is found.

mod support;

use spedec_check::kernels::{self, CheckOptions, ModelShape};
use support::{emulator_or_skip, visible};

/// Reduced shapes with Pythia's real head geometries (70m: 64-dim heads, 2.8b: 80-dim).
const EMU_64: ModelShape = ModelShape {
    name: "emu hd64",
    hidden: 128,
    heads: 2,
    head_dim: 64,
    intermediate: 512,
    vocab: 1000,
    rotary_dims: 16,
    max_pos: 300,
};
const EMU_80: ModelShape = ModelShape {
    name: "emu hd80",
    hidden: 240,
    heads: 3,
    head_dim: 80,
    intermediate: 960,
    vocab: 1003,
    rotary_dims: 20,
    max_pos: 260,
};

#[test]
fn kernels_match_the_cpu_reference_under_host_emulation() {
    let Some(mut emu) = emulator_or_skip("kernels_match_the_cpu_reference_under_host_emulation")
    else {
        return;
    };
    let opts = CheckOptions {
        models: vec![EMU_64, EMU_80],
        rows: vec![1, 5, 16],
        seed: 7,
        timing_reps: 0,
    };
    let results = kernels::run_checks_on(&mut emu, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    visible(&kernels::format_table(&results));
    assert!(
        kernels::all_passed(&results),
        "emulated kernels disagree with the reference (table above)"
    );
}

#[test]
fn read_probe_sums_match_the_cpu_under_host_emulation() {
    use spedec_check::CheckBackend;
    use spedec_cuda::KernelBackend;
    let Some(mut emu) = emulator_or_skip("read_probe_sums_match_the_cpu_under_host_emulation")
    else {
        return;
    };
    // No models: only the model-free checks run, i.e. the probe at 1, 3 and 7 blocks.
    let opts = CheckOptions {
        models: vec![],
        rows: vec![1],
        seed: 11,
        timing_reps: 0,
    };
    let results = kernels::run_checks_on(&mut emu, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    visible(&kernels::format_table(&results));
    let probe: Vec<_> = results
        .iter()
        .filter(|r| r.name == "read_probe_f16")
        .collect();
    assert_eq!(probe.len(), 3, "one probe row per block count");
    assert!(
        probe.iter().all(|r| r.pass),
        "probe sums differ (table above)"
    );
    // A length that is not whole 16-byte vectors is an error, not a panic.
    let buf = emu.upload(&[half::f16::ZERO; 12]).unwrap();
    let mut sums = emu.upload(&[0u32; 2]).unwrap();
    let err = emu.read_probe(&buf, &mut sums, 2).unwrap_err();
    assert!(format!("{err:#}").contains("multiple of 8"), "{err:#}");
    assert!(emu.read_probe(&buf, &mut sums, 0).is_err());
}
