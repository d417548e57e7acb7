//! `spedec gpu-check`: the command-line face of `spedec_check::run` (options, printing,
//! exit status). The sections themselves live in the verification crate `spedec-check`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use spedec_check::{LinearKernel, Options, Ran, Section};

use crate::models::Device;

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
    #[arg(long, value_delimiter = ',', value_parser = section_parser())]
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
    #[arg(long, default_value = "cuda", value_parser = device_parser())]
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
    /// Linear kernel of the CUDA models: simt (CUDA cores, the default) or tc (tensor
    /// cores, sm_80+); the kernels section checks both either way.
    #[arg(long, default_value = "simt", value_parser = linear_parser())]
    pub linear: LinearKernel,
}

fn linear_parser() -> impl TypedValueParser<Value = LinearKernel> {
    PossibleValuesParser::new(["simt", "tc"]).map(|s| {
        if s == "tc" {
            LinearKernel::TensorCore
        } else {
            LinearKernel::Simt
        }
    })
}

fn section_parser() -> impl TypedValueParser<Value = Section> {
    let names: Vec<&'static str> = Section::ALL.iter().map(|s| s.name()).collect();
    PossibleValuesParser::new(names)
        .map(|s| Section::from_name(&s).expect("one of the listed names"))
}

fn device_parser() -> impl TypedValueParser<Value = Device> {
    PossibleValuesParser::new(["cpu", "cuda"])
        .map(|s| s.parse::<Device>().expect("one of the listed names"))
}

/// Run the check, printing its lines to stdout; an error (exit 1) when a check failed.
pub fn run(args: GpuCheckArgs) -> Result<()> {
    let options = Options {
        out: args.out,
        hf_dir: args.hf_dir,
        only: args.only,
        summarize: args.summarize,
        probe: args.probe,
        quick: args.quick,
        on_gpu: args.device == Device::Cuda,
        target: args.target,
        draft: args.draft,
        fixtures: args.fixtures,
        linear: args.linear,
    };
    match spedec_check::run(options, Arc::new(|line: &str| println!("{line}")))? {
        Ran::Passed => {}
        Ran::Probed(device) => println!("device: {device}"),
        Ran::Skipped(why) => println!("skipped: {why}"),
    }
    Ok(())
}
