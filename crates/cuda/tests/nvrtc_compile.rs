//! Every kernel file compiles through NVRTC for sm_80 and sm_90, with the ptxas resource
//! report printed. Runs for real in CI: with `CI` set (or `SPEDEC_REQUIRE_NVRTC=1`) a missing
//! NVRTC library fails the test; elsewhere it prints `skipped: no NVRTC library`.

use std::io::Write;

use spedec_cuda::kernels::KERNEL_SOURCES;
use spedec_cuda::nvrtc::{self, compile_all, compile_source, nvrtc_available};

/// Write past the test harness's output capture, so the line shows in a plain `cargo test`.
fn visible(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Whether this test may skip when NVRTC is missing.
fn nvrtc_or_skip(test: &str) -> bool {
    if nvrtc_available() {
        return true;
    }
    if env_set("CI") || env_set("SPEDEC_REQUIRE_NVRTC") {
        panic!(
            "{test}: NVRTC is required here (CI or SPEDEC_REQUIRE_NVRTC set): {}",
            nvrtc::NO_NVRTC
        );
    }
    visible(&format!("{test}: skipped: no NVRTC library"));
    false
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    if !nvrtc_or_skip("every_kernel_compiles_for_sm80_and_sm90") {
        return;
    }
    let (major, minor) = nvrtc::nvrtc_version().expect("nvrtc version");
    visible(&format!("NVRTC {major}.{minor}; ptxas resource report:"));
    let mut spills = Vec::new();
    for arch in ["sm_80", "sm_90"] {
        let compiled = compile_all(arch).unwrap_or_else(|e| panic!("{e:#}"));
        for (src, c) in KERNEL_SOURCES.iter().zip(&compiled) {
            assert_eq!(src.file, c.file);
            assert!(
                c.cubin.as_ref().is_some_and(|b| !b.is_empty()),
                "{} {arch}: no cubin",
                c.file
            );
            for entry in src.entry_points {
                assert!(
                    c.ptx.contains(&format!(".entry {entry}(")),
                    "{entry} missing from PTX"
                );
                let r = c
                    .resources
                    .iter()
                    .find(|r| r.kernel == *entry)
                    .unwrap_or_else(|| panic!("{entry}: no ptxas report in log:\n{}", c.log));
                assert_eq!(r.arch, arch);
                assert!(r.registers > 0, "{entry}: no register count");
                visible(&format!(
                    "  {r}   (kernels/{}, PTX ISA {})",
                    c.file,
                    c.ptx_isa().unwrap_or("?")
                ));
                if r.spill_stores > 0 || r.spill_loads > 0 {
                    spills.push(r.to_string());
                }
            }
        }
    }
    assert!(
        spills.is_empty(),
        "kernels spill registers:\n{}",
        spills.join("\n")
    );
}

#[test]
fn compute_targets_give_ptx_only() {
    if !nvrtc_or_skip("compute_targets_give_ptx_only") {
        return;
    }
    let k = &KERNEL_SOURCES[0];
    let c = compile_source(k.file, k.source, "compute_80").unwrap_or_else(|e| panic!("{e:#}"));
    assert!(c.cubin.is_none());
    assert!(c.resources.is_empty());
    assert!(c.ptx.contains(".target sm_80"));
}

#[test]
fn compile_errors_carry_the_log() {
    if !nvrtc_or_skip("compile_errors_carry_the_log") {
        return;
    }
    let src = "#include \"common.cuh\"\nextern \"C\" __global__ void broken_f16() { undeclared_thing = 1; }\n";
    let err = compile_source("broken.cu", src, "sm_90")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broken.cu") && err.contains("undeclared_thing"),
        "{err}"
    );
    let bad_arch = compile_source("x.cu", "", "gfx90a")
        .unwrap_err()
        .to_string();
    assert!(bad_arch.contains("bad NVRTC target"), "{bad_arch}");
}

#[test]
fn tensor_core_linear_compiles_to_mma_sync_and_cp_async() {
    if !nvrtc_or_skip("tensor_core_linear_compiles_to_mma_sync_and_cp_async") {
        return;
    }
    let k = KERNEL_SOURCES
        .iter()
        .find(|k| k.file == "linear_tc.cu")
        .expect("linear_tc.cu registered");
    for arch in ["sm_80", "sm_90"] {
        let c = compile_source(k.file, k.source, arch).unwrap_or_else(|e| panic!("{e:#}"));
        for needle in [
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
            "cp.async.cg.shared.global",
            "cp.async.wait_group",
        ] {
            assert!(
                c.ptx.contains(needle),
                "{arch}: {needle} missing from the PTX"
            );
        }
        assert!(
            !c.ptx.contains("trap;"),
            "{arch}: the sm_80+ path was not taken"
        );
    }
}
