//! [`Device`]: where a run goes — `auto`, `cpu` or `cuda` — parsed from and printed as those
//! names by both command-line tools; [`SpecStep`]: where a speculative step runs — `auto`,
//! `host` or `device`.

use serde::{Deserialize, Serialize};

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when a GPU is usable (driver, device and NVRTC), else the CPU.
    #[default]
    Auto,
    /// The CPU engine (f32 activations).
    Cpu,
    /// An NVIDIA GPU (f16 weights and activations).
    Cuda,
}

named_enum!(Device, "device", { Auto => "auto", Cpu => "cpu", Cuda => "cuda" });

/// Where a speculative step's sampling and decision run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecStep {
    /// On the device when both models run on CUDA, else on the host.
    #[default]
    Auto,
    /// On the host: every forward returns its logits, `spedec-sampling` draws and decides.
    Host,
    /// On the GPU: logits, sampling and the decision stay there, the host reads back a few
    /// integers a step (both models on CUDA).
    Device,
}

named_enum!(SpecStep, "speculative step", { Auto => "auto", Host => "host", Device => "device" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let all = [Device::Auto, Device::Cpu, Device::Cuda];
        for (d, &name) in all.into_iter().zip(Device::NAMES) {
            assert_eq!(d.to_string(), name);
            assert_eq!(name.parse::<Device>().unwrap(), d);
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{name}\""));
        }
        assert_eq!("CUDA".parse::<Device>().unwrap(), Device::Cuda);
        let err = "gpu".parse::<Device>().unwrap_err().to_string();
        assert!(err.contains("expected auto, cpu, cuda"), "{err}");
        assert_eq!(Device::default(), Device::Auto);
    }

    #[test]
    fn spec_step_names_round_trip() {
        let all = [SpecStep::Auto, SpecStep::Host, SpecStep::Device];
        for (d, &name) in all.into_iter().zip(SpecStep::NAMES) {
            assert_eq!(d.to_string(), name);
            assert_eq!(name.parse::<SpecStep>().unwrap(), d);
        }
        assert!("gpu".parse::<SpecStep>().is_err());
    }
}
