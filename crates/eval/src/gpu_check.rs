//! `spedec gpu-check`: the CUDA backend checked and timed on a GPU machine in one go.
//!
//! Sections (each can run alone with `--only`, in its own process, so a crash in one cannot
//! take the others down; `scripts/gpu-check.sh` does that):
//! - `kernels`: every kernel against its CPU reference at Pythia-70m / 2.8b shapes
//!   (`spedec_cuda::check::run_checks`);
//! - `logits`: CUDA vs CPU logits on the fixture models and `synthetic:pythia-70m`, and vs
//!   the fixtures' HF goldens;
//! - `consistency`: prefill vs token-by-token vs truncate + re-decode, and graphs vs direct
//!   launches, bit-identical on CUDA;
//! - `speculative`: greedy speculative == greedy autoregressive token for token (2.8b
//!   target with 70m draft, and self-draft with acceptance exactly 1);
//! - `timing`: copy bandwidth, decode / verify / prefill step times against the bandwidth
//!   floor, a speculative run end to end and Leviathan's predicted speedups;
//! - `hf` (with `--hf-dir`): logits and speed against HF transformers on shared weights
//!   (the folder `scripts/hf_reference.py` writes).
//!
//! Every check prints PASS / FAIL (timings INFO) at once and lands in
//! `OUT/gpu-check-<section>.json`; the merge `OUT/gpu-check.json` and a short table come last.
//! The exit status is non-zero when any check failed. Without a CUDA device it prints
//! `skipped: no CUDA device` and succeeds; `--device cpu` runs the same harness on the CPU
//! model (a dry run of the checks themselves, with smaller `--target`).
//!
//! Tolerances: CUDA logits are compared with `|a − b| <= atol + rtol·|ref|`,
//! atol = rtol = 2e-2 ([`LOGIT_TOL`]), the largest difference always printed. The CUDA path
//! stores activations in f16 (relative rounding 2⁻¹¹ ≈ 4.9e-4 per store, ~10 stores per
//! layer) while the references run in f32; a CPU emulation of exactly those f16 stores
//! (crates/neox/tests/cuda_model_emu.rs) differs from the f32 model by at most 1.3e-3
//! (70m) and 3.6e-3 (2.8b) on logits up to ±5, so 2e-2 leaves a 5× margin and still
//! catches any wiring error (those give O(1) differences).

mod correctness;
mod hf;
mod report;
mod timing;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{json, Value};
use spedec_cuda::GpuContext;
use spedec_neox::cuda_model::{shared_gpu, GraphStats};
use spedec_neox::{Config, CpuModel, CudaModel, CudaOptions, Isa, ModelFiles, Weights};
use spedec_speculative::Lm;

use crate::models::Device;
pub use report::{merge, summary_table, Merged, Status};
use report::{Outcome, Recorder};

/// Absolute and relative tolerance of CUDA (f16 activations) vs f32 logits; see the module
/// docs for the reasoning.
pub const LOGIT_TOL: f64 = 2e-2;

/// The sections of the check, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Kernels,
    Logits,
    Consistency,
    Speculative,
    Timing,
    Hf,
}

impl Section {
    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Section::Kernels => "kernels",
            Section::Logits => "logits",
            Section::Consistency => "consistency",
            Section::Speculative => "speculative",
            Section::Timing => "timing",
            Section::Hf => "hf",
        }
    }

    const ALL: [Section; 6] = [
        Section::Kernels,
        Section::Logits,
        Section::Consistency,
        Section::Speculative,
        Section::Timing,
        Section::Hf,
    ];
}

/// `spedec gpu-check` options.
#[derive(Args, Debug, Clone)]
pub struct GpuCheckArgs {
    /// Folder for the results: gpu-check-<section>.json per section and the merged
    /// gpu-check.json.
    #[arg(long, default_value = "gpu-check-out")]
    pub out: PathBuf,
    /// Folder written by scripts/hf_reference.py (HF models, logits and timings): adds the
    /// `hf` section.
    #[arg(long)]
    pub hf_dir: Option<PathBuf>,
    /// Run only these sections (comma separated) [default: all; `hf` only with --hf-dir].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Section>,
    /// Run nothing: merge the section files in --out (those of --only, default all) into
    /// gpu-check.json, print the summary table and exit non-zero on any failure.
    #[arg(long)]
    pub summarize: bool,
    /// Only open the device (compiling the kernels) and print it, or `skipped: no CUDA
    /// device`.
    #[arg(long)]
    pub probe: bool,
    /// Fewer tokens and repeats (a quick look).
    #[arg(long)]
    pub quick: bool,
    /// cuda (default) checks the CUDA backend; cpu runs the same harness on the CPU model
    /// (a dry run of the checks, for machines without a GPU).
    #[arg(long, value_enum, default_value_t = Device::Cuda)]
    pub device: Device,
    /// Target model of the speculative and timing sections.
    #[arg(long, default_value = "synthetic:pythia-2.8b")]
    pub target: String,
    /// Draft model of the speculative, consistency, logits and timing sections.
    #[arg(long, default_value = "synthetic:pythia-70m")]
    pub draft: String,
    /// Folder of the fixture models (subfolders with config.json + model.safetensors, and
    /// optionally golden.safetensors with HF logits).
    #[arg(long, default_value = "data/fixtures/golden")]
    pub fixtures: PathBuf,
}

/// Run `spedec gpu-check`; an error (printed by main, exit 1) when any check failed.
pub fn run(args: GpuCheckArgs) -> Result<()> {
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
        return finish(&args, &names);
    }
    let device = match args.device {
        Device::Cpu => Device::Cpu,
        _ => {
            if spedec_cuda::context::device_count() > 0 && !spedec_cuda::nvrtc_available() {
                bail!(
                    "a CUDA device is present but {}",
                    spedec_cuda::nvrtc::NO_NVRTC
                );
            }
            if !spedec_cuda::gpu_available() {
                println!("skipped: no CUDA device ({})", why_no_gpu());
                return Ok(());
            }
            Device::Cuda
        }
    };
    if args.probe {
        let env = Env::new(args.clone(), device)?;
        println!("device: {}", env.device_name);
        return Ok(());
    }
    let env = Env::new(args.clone(), device)?;
    for s in &sections {
        if let Err(e) = run_section(&env, *s) {
            eprintln!("section {} could not run: {e:#}", s.name());
        }
    }
    if !args.only.is_empty() {
        // Part of a scripted run: the script merges and prints the summary at the end.
        let merged = merge(&args.out, &names)?;
        if !merged.all_passed {
            bail!("gpu-check {}: some checks failed", names.join(","));
        }
        return Ok(());
    }
    finish(&args, &names)
}

fn finish(args: &GpuCheckArgs, names: &[String]) -> Result<()> {
    let merged = merge(&args.out, names)?;
    print!("{}", summary_table(&merged));
    println!("results: {}", args.out.join("gpu-check.json").display());
    if !merged.all_passed {
        bail!(
            "gpu-check: {} check(s) failed, {} section(s) missing",
            merged.failed,
            merged.missing.len()
        );
    }
    Ok(())
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
    let mut rec = Recorder::new(&env.args.out, s.name(), &env.device_name)?;
    match s {
        Section::Kernels => correctness::kernels(env, &mut rec),
        Section::Logits => correctness::logits(env, &mut rec),
        Section::Consistency => correctness::consistency(env, &mut rec),
        Section::Speculative => correctness::speculative(env, &mut rec),
        Section::Timing => timing::timing(env, &mut rec),
        Section::Hf => hf::hf(env, &mut rec),
    }
    rec.finish()?;
    Ok(())
}

/// What every section needs: the options, the device and its description.
pub(crate) struct Env {
    pub args: GpuCheckArgs,
    pub gpu: Option<Arc<GpuContext>>,
    pub device_name: String,
}

impl Env {
    fn new(args: GpuCheckArgs, device: Device) -> Result<Self> {
        let (gpu, device_name) = match device {
            Device::Cuda => {
                let gpu = shared_gpu()?;
                let name = gpu.describe();
                (Some(gpu), name)
            }
            _ => (None, "cpu (dry run of the harness)".to_string()),
        };
        Ok(Env {
            args,
            gpu,
            device_name,
        })
    }

    /// `quick` when --quick, else `full`.
    pub fn pick(&self, full: usize, quick: usize) -> usize {
        if self.args.quick {
            quick
        } else {
            full
        }
    }

    /// Build a model of `config` / `weights` on the check's device.
    pub fn build(
        &self,
        config: &Config,
        weights: &Weights,
        capacity: Option<usize>,
    ) -> Result<Model> {
        match &self.gpu {
            Some(gpu) => {
                let opts = CudaOptions {
                    capacity,
                    ..CudaOptions::default()
                };
                Ok(Model::Cuda(Box::new(CudaModel::new(
                    gpu.clone(),
                    config,
                    weights,
                    &opts,
                )?)))
            }
            None => Ok(Model::Cpu(Box::new(CpuModel::new(
                config.clone(),
                weights.clone(),
                capacity,
                Isa::detect(),
            )?))),
        }
    }

    /// Open `spec` (folder or synthetic spec) and build it on the check's device.
    pub fn open(&self, spec: &str, capacity: Option<usize>) -> Result<(ModelFiles, Model)> {
        let files = ModelFiles::open(spec)?;
        let model = self.build(&files.config, &files.weights, capacity)?;
        Ok((files, model))
    }
}

/// A model on the check's device, with the CUDA-only knobs.
pub(crate) enum Model {
    Cpu(Box<CpuModel>),
    Cuda(Box<CudaModel>),
}

impl Model {
    /// As the engine's model interface.
    pub fn lm(&mut self) -> &mut dyn Lm {
        match self {
            Model::Cpu(m) => m.as_mut(),
            Model::Cuda(m) => m.as_mut(),
        }
    }

    /// Turn CUDA graphs on or off (nothing on the CPU).
    pub fn set_graphs(&mut self, on: bool) {
        if let Model::Cuda(m) = self {
            m.set_graphs(on);
        }
    }

    /// Graph counters (CUDA only).
    pub fn graph_stats(&self) -> Option<GraphStats> {
        match self {
            Model::Cuda(m) => Some(m.graph_stats()),
            Model::Cpu(_) => None,
        }
    }

    /// Bytes of weights one decode step reads on this device.
    pub fn bytes_per_token(&self) -> usize {
        match self {
            Model::Cuda(m) => m.bytes_per_token(),
            Model::Cpu(m) => m.weights().bytes_per_token(),
        }
    }
}

/// Deterministic pseudo-random token ids in `0..vocab.min(50277)` (real Pythia token ids).
pub(crate) fn test_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let range = vocab.min(50277) as u64;
    let mut z = seed;
    (0..n)
        .map(|_| {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((x ^ (x >> 31)) % range) as u32
        })
        .collect()
}

/// Comparison of two logits buffers `[rows, vocab]`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Diff {
    pub max_abs: f64,
    pub max_rel: f64,
    /// (row, col) of the largest |a − b|.
    pub worst: (usize, usize),
    /// Elements outside `atol + rtol·|ref|` (NaN counts).
    pub bad: usize,
    /// Rows whose argmax agrees.
    pub argmax_agree: usize,
    pub rows: usize,
    pub atol: f64,
    pub rtol: f64,
    pub pass: bool,
}

impl Diff {
    /// One line: largest difference, tolerance, argmax agreement.
    pub fn line(&self) -> String {
        format!(
            "max|Δ| {:.3e} at row {} col {} (max rel {:.2e}), {} outside atol {:.0e} + rtol {:.0e}·|ref|, argmax agrees {}/{}",
            self.max_abs,
            self.worst.0,
            self.worst.1,
            self.max_rel,
            self.bad,
            self.atol,
            self.rtol,
            self.argmax_agree,
            self.rows
        )
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Compare `got` with `want` (the reference), both `[rows, vocab]`.
pub(crate) fn compare(
    got: &[f32],
    want: &[f32],
    vocab: usize,
    atol: f64,
    rtol: f64,
) -> Result<Diff> {
    if got.len() != want.len() || vocab == 0 || !got.len().is_multiple_of(vocab) {
        bail!(
            "shape mismatch: {} vs {} values (vocab {vocab})",
            got.len(),
            want.len()
        );
    }
    let mut d = Diff {
        max_abs: 0.0,
        max_rel: 0.0,
        worst: (0, 0),
        bad: 0,
        argmax_agree: 0,
        rows: got.len() / vocab,
        atol,
        rtol,
        pass: true,
    };
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let (a, b) = (a as f64, b as f64);
        let diff = (a - b).abs();
        // NaN is never within tolerance.
        let within = diff <= atol + rtol * b.abs();
        if !within {
            d.bad += 1;
        }
        if diff > d.max_abs || diff.is_nan() && !d.max_abs.is_nan() {
            d.max_abs = diff;
            d.worst = (i / vocab, i % vocab);
        }
        if b != 0.0 && diff / b.abs() > d.max_rel {
            d.max_rel = diff / b.abs();
        }
    }
    for (g, w) in got.chunks(vocab).zip(want.chunks(vocab)) {
        if argmax(g) == argmax(w) {
            d.argmax_agree += 1;
        }
    }
    d.pass = d.bad == 0;
    Ok(d)
}

/// A PASS / FAIL outcome from a [`Diff`].
pub(crate) fn diff_outcome(d: &Diff, extra: Value) -> Outcome {
    let mut data = serde_json::to_value(d).unwrap_or(Value::Null);
    if let (Value::Object(m), Value::Object(e)) = (&mut data, extra) {
        m.extend(e);
    }
    Outcome::new(Status::of(d.pass), d.line(), data)
}

/// Median, min and max of measurements.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// Of a non-empty list.
    pub fn of(values: &[f64]) -> Result<Summary> {
        if values.is_empty() {
            bail!("no measurements");
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Ok(Summary {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// "1.234 ms [1.200–1.300, n=20]".
    pub fn ms(&self) -> String {
        format!(
            "{:.3} ms [{:.3}–{:.3}, n={}]",
            self.median, self.min, self.max, self.n
        )
    }
}

/// JSON of anything serializable (Null on failure).
pub(crate) fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Data of a skipped item.
pub(crate) fn skipped(why: &str) -> Outcome {
    Outcome::new(
        Status::Info,
        format!("skipped: {why}"),
        json!({ "skipped": why }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_reports_the_largest_difference() {
        let want = [1.0f32, 2.0, 3.0, 4.0];
        let got = [1.0f32, 2.01, 3.0, 3.5];
        let d = compare(&got, &want, 2, 2e-2, 2e-2).unwrap();
        assert_eq!(d.worst, (1, 1));
        assert!((d.max_abs - 0.5).abs() < 1e-6);
        assert_eq!(d.bad, 1);
        assert!(!d.pass);
        assert_eq!(d.argmax_agree, 2);
        let nan = [f32::NAN, 2.0, 3.0, 4.0];
        let d = compare(&nan, &want, 2, 1.0, 1.0).unwrap();
        assert!(!d.pass && d.max_abs.is_nan());
        assert!(compare(&got[..3], &want, 2, 1.0, 1.0).is_err());
    }

    #[test]
    fn summary_of_measurements() {
        let s = Summary::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        assert!(Summary::of(&[]).is_err());
    }

    #[test]
    fn test_tokens_are_deterministic_and_in_range() {
        let a = test_tokens(100, 50304, 1);
        assert_eq!(a, test_tokens(100, 50304, 1));
        assert!(a.iter().all(|&t| t < 50277));
        assert!(test_tokens(10, 1000, 2).iter().all(|&t| t < 1000));
    }
}
