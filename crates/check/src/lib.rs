//! spedec-check: verification of the engine, kept apart from the product crates.
//!
//! - [`reference`]: a CPU reference beside every CUDA kernel (f32/f64, straightforward).
//! - [`emulator`]: the CUDA sources (`kernels/*.cu`) compiled for the host against a small
//!   emulation of the CUDA execution model — the one test backend, used by the kernel checks
//!   and by the model's forward on machines without a GPU.
//! - [`backend`]: [`CheckBackend`], the check-only calls (poisoning, timing, argmax, softmax)
//!   as an extension of `spedec_cuda::KernelBackend`, for the device and the emulator.
//! - [`kernels`]: every kernel against its reference at Pythia shapes, batch invariance.
//! - [`sampling_reference`], [`sampler`], [`sampler_check`]: the device sampler
//!   (`kernels/sampling.cu`) — its CPU reference (the CPU sampler with the device's Philox
//!   uniforms), its calls on a backend, and its self-check (part of [`kernels::run_checks`]).
//! - [`compare`], [`fixtures`]: the one logits comparison, and the HF golden fixtures.
//! - [`distribution`]: the χ² goodness-of-fit of sampled token sequences against an exact
//!   distribution (the speculative-sampling checks).
//! - [`device_bench`]: GPU timings against references: the read-bandwidth probe and our
//!   linears against cuBLAS with the weights rotated past the L2.
//! - `spedec gpu-check`'s harness: [`run`] with [`Options`]; the sections live in
//!   `sections/` and build on [`env`] and [`report`] below them.
//!
//! `spedec gpu-check`: the CUDA backend checked and timed on a GPU machine in one go.
//! Sections (each can run alone, in its own process, so a crash in one cannot take the
//! others down; `scripts/gpu-check.sh` does that):
//! - `kernels`: every kernel against its CPU reference at Pythia-70m / 2.8b shapes
//!   ([`kernels::run_checks`]), and our linears against cuBLAS with the weights rotated past
//!   the L2 ([`device_bench::linears_vs_cublas`]);
//! - `logits`: CUDA vs CPU logits on the fixture models and `synthetic:pythia-70m`, and vs
//!   the fixtures' HF goldens;
//! - `consistency`: prefill vs token-by-token vs truncate + re-decode, and graphs vs direct
//!   launches, bit-identical on CUDA;
//! - `speculative`: greedy speculative == greedy autoregressive token for token (2.8b
//!   target with 70m draft, and self-draft with acceptance exactly 1);
//! - `timing`: copy and read bandwidth ([`device_bench::read_bandwidth`], the floor), decode / verify / prefill step times against the bandwidth
//!   floor, a speculative run end to end and Leviathan's predicted speedups;
//! - `hf` (with an HF folder): logits and speed against HF transformers on shared weights
//!   (the folder `scripts/hf_reference.py` writes).
//!
//! Every check sends a PASS / FAIL (timings INFO) line to the caller's [`Lines`] at once and
//! lands in `OUT/gpu-check-<section>.json`; the merge `OUT/gpu-check.json`, a short table and
//! `OUT/gpu-check.md` (that table and the linears-vs-cuBLAS table) come last. Without a CUDA device [`run`] returns [`Ran::Skipped`]; on the CPU it runs the
//! same harness on the CPU model (a dry run of the checks themselves).
//!
//! Tolerances: CUDA logits are compared with `|a − b| <= atol + rtol·|ref|`,
//! atol = rtol = 2e-2 ([`LOGIT_TOL`]), the largest difference always reported. The CUDA path
//! stores activations in f16 (relative rounding 2⁻¹¹ ≈ 4.9e-4 per store, ~10 stores per
//! layer) while the references run in f32; an emulation of exactly those f16 stores differed
//! from the f32 model by at most 1.3e-3 (70m) and 3.6e-3 (2.8b) on logits up to ±5
//! (measured at 18f95e5; `tests/engine_emulation.rs`, `f16_error_at_pythia_shapes`), so 2e-2
//! leaves a 5× margin and still catches any wiring error (those give O(1) differences).

pub mod backend;
pub mod compare;
pub mod device_bench;
pub mod distribution;
pub mod emulator;
pub mod env;
pub mod fixtures;
pub mod kernels;
mod options;
pub mod reference;
pub mod report;
pub mod sampler;
pub mod sampler_check;
pub mod sampling_reference;
mod sections;

use anyhow::{bail, Result};
pub use backend::CheckBackend;
pub use compare::{compare, Diff};
pub use options::{LinearKernel, Options, Section};
pub use report::{merge, summary_table, Lines, Merged, Status};

use env::Env;
use report::Recorder;

/// Absolute and relative tolerance of CUDA (f16 activations) vs f32 logits; see the module
/// docs for the reasoning.
pub const LOGIT_TOL: f64 = 2e-2;

/// How a run ended (failures are errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// Every requested check passed.
    Passed,
    /// Only the device was opened (`probe`): its description.
    Probed(String),
    /// Nothing ran: no usable CUDA device, for this reason.
    Skipped(String),
}

/// Run the check; an error when any check failed (after every section has run).
pub fn run(args: Options, lines: Lines) -> Result<Ran> {
    let sections: Vec<Section> = if args.only.is_empty() {
        Section::ALL
            .into_iter()
            .filter(|&s| s != Section::Hf || args.hf_dir.is_some())
            .collect()
    } else {
        args.only.clone()
    };
    let names: Vec<String> = sections.iter().map(|s| s.name().to_string()).collect();
    if args.summarize {
        return finish(&args, &names, &lines);
    }
    if args.on_gpu {
        if spedec_cuda::context::device_count() > 0 && !spedec_cuda::nvrtc_available() {
            bail!(
                "a CUDA device is present but {}",
                spedec_cuda::nvrtc::NO_NVRTC
            );
        }
        if !spedec_cuda::gpu_available() {
            return Ok(Ran::Skipped(format!("no CUDA device ({})", why_no_gpu())));
        }
    }
    let on_gpu = args.on_gpu;
    let env = Env::new(args.clone(), on_gpu, lines.clone())?;
    if args.probe {
        return Ok(Ran::Probed(env.device_name.clone()));
    }
    for s in &sections {
        if let Err(e) = run_section(&env, *s) {
            lines(&format!("section {} could not run: {e:#}", s.name()));
        }
    }
    if !args.only.is_empty() {
        // Part of a scripted run: the script merges and prints the summary at the end.
        let merged = merge(&args.out, &names)?;
        if !merged.all_passed {
            bail!("gpu-check {}: some checks failed", names.join(","));
        }
        return Ok(Ran::Passed);
    }
    finish(&args, &names, &lines)
}

fn finish(args: &Options, names: &[String], lines: &Lines) -> Result<Ran> {
    let merged = merge(&args.out, names)?;
    let md = args.out.join("gpu-check.md");
    spedec_report::write_atomic(&md, report::markdown(&merged).as_bytes())?;
    lines(summary_table(&merged).trim_end());
    lines(&format!(
        "results: {}",
        args.out.join("gpu-check.json").display()
    ));
    lines(&format!("tables: {}", md.display()));
    if !merged.all_passed {
        bail!(
            "gpu-check: {} check(s) failed, {} section(s) missing",
            merged.failed,
            merged.missing.len()
        );
    }
    Ok(Ran::Passed)
}

/// Why no CUDA device is usable, in words.
fn why_no_gpu() -> &'static str {
    if !spedec_cuda::driver_available() {
        "no CUDA driver library"
    } else {
        "the driver sees no device"
    }
}

fn run_section(env: &Env, s: Section) -> Result<()> {
    let mut rec = Recorder::new(&env.args.out, s.name(), &env.device_name, env.lines.clone())?;
    match s {
        Section::Kernels => sections::correctness::kernels(env, &mut rec),
        Section::Logits => sections::correctness::logits(env, &mut rec),
        Section::Consistency => sections::correctness::consistency(env, &mut rec),
        Section::Speculative => {
            sections::correctness::speculative(env, &mut rec);
            sections::sampled::sampled(env, &mut rec);
        }
        Section::Timing => sections::timing::timing(env, &mut rec),
        Section::Hf => sections::hf::hf(env, &mut rec),
    }
    rec.finish()?;
    Ok(())
}
