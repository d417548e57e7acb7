//! What `spedec gpu-check` is asked to do: the [`Section`]s and the [`Options`] of a run.

use std::path::PathBuf;

use serde::Serialize;
pub use spedec_cuda::LinearKernel;

/// The sections of the check, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    /// Every section, in the order they run.
    pub const ALL: [Section; 6] = [
        Section::Kernels,
        Section::Logits,
        Section::Consistency,
        Section::Speculative,
        Section::Timing,
        Section::Hf,
    ];

    /// The section called `name` (its lower-case name).
    pub fn from_name(name: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Lower-case name, as in the result files.
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
}

/// What to check and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// Folder for the results: gpu-check-<section>.json per section and gpu-check.json.
    pub out: PathBuf,
    /// Folder written by scripts/hf_reference.py: enables the `hf` section.
    pub hf_dir: Option<PathBuf>,
    /// Sections to run (empty: all; `hf` only with `hf_dir`).
    pub only: Vec<Section>,
    /// Run nothing: merge the section files and summarize.
    pub summarize: bool,
    /// Only open the device (compiling the kernels) and name it.
    pub probe: bool,
    /// Fewer tokens and repeats.
    pub quick: bool,
    /// Check the CUDA backend (true) or run the harness on the CPU model (false).
    pub on_gpu: bool,
    /// Target model of the speculative and timing sections.
    pub target: String,
    /// Draft model of the speculative, consistency, logits and timing sections.
    pub draft: String,
    /// Folder of the fixture models (subfolders with config.json + model.safetensors, and
    /// optionally golden.safetensors with HF logits).
    pub fixtures: PathBuf,
    /// The linear kernel of the CUDA models the sections build (the CPU model ignores it).
    pub linear: LinearKernel,
}
