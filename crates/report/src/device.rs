//! [`Device`]: where a run goes — `auto`, `cpu` or `cuda` — parsed from and printed as those
//! names by both command-line tools.

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
}
