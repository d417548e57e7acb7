//! [`Machine`]: the machine a run used — the host CPU always, and for a CUDA run the GPU with
//! its driver — with the one-line description reports carry as `machine`.
//!
//! In a report the fields are flattened beside the report's own: `machine` (the description,
//! as before), `cpu`, `cpu_threads`, `device` (`cpu` or `cuda`) and, for CUDA runs, `gpu`.

use serde::{Deserialize, Serialize};

use crate::Device;

/// The GPU of a CUDA run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// Device name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// CUDA driver version, e.g. `12.8` (empty when unknown).
    #[serde(default)]
    pub driver: String,
    /// Device memory in bytes (0 when unknown).
    #[serde(default)]
    pub memory_bytes: u64,
}

/// The machine a run used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// One line naming the device the run used: `<cpu>, N threads (CPU)` for a CPU run,
    /// `<gpu> (CUDA driver X.Y, N GiB); host <cpu>, N threads` for a CUDA run. Empty in reports
    /// of spedec versions that did not record one.
    #[serde(rename = "machine", default)]
    pub description: String,
    /// The host CPU's model name.
    #[serde(default)]
    pub cpu: String,
    /// Threads the run's CPU work had: the host's hardware threads, unless the run was
    /// given fewer.
    #[serde(default)]
    pub cpu_threads: usize,
    /// `cpu` or `cuda`: where the models ran.
    #[serde(default = "cpu_device")]
    pub device: Device,
    /// The GPU, for CUDA runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
}

fn cpu_device() -> Device {
    Device::Cpu
}

impl Machine {
    /// A run on `gpu` (a CUDA run) or, without one, on the CPU `cpu` with `cpu_threads`.
    pub fn new(cpu: String, cpu_threads: usize, gpu: Option<Gpu>) -> Machine {
        let host = format!("{cpu}, {cpu_threads} threads");
        let description = match &gpu {
            None => format!("{host} (CPU)"),
            Some(g) => {
                let mut details = vec!["CUDA".to_string()];
                if !g.driver.is_empty() {
                    details[0] += &format!(" driver {}", g.driver);
                }
                if g.memory_bytes > 0 {
                    details.push(format!(
                        "{:.0} GiB",
                        g.memory_bytes as f64 / (1u64 << 30) as f64
                    ));
                }
                format!("{} ({}); host {host}", g.name, details.join(", "))
            }
        };
        Machine {
            description,
            device: if gpu.is_some() {
                Device::Cuda
            } else {
                Device::Cpu
            },
            cpu,
            cpu_threads,
            gpu,
        }
    }

    /// A CPU run on this host.
    pub fn host() -> Machine {
        Machine::new(host_cpu(), host_threads(), None)
    }

    /// A CUDA run on `gpu` of this host.
    pub fn cuda(gpu: Gpu) -> Machine {
        Machine::new(host_cpu(), host_threads(), Some(gpu))
    }
}

/// This host's CPU model name from /proc/cpuinfo (the architecture where there is none).
pub fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// This host's hardware threads (1 when unknown).
pub fn host_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_name_the_device_used() {
        let cpu = Machine::new("AMD EPYC".into(), 2, None);
        assert_eq!(cpu.description, "AMD EPYC, 2 threads (CPU)");
        assert_eq!(cpu.device, Device::Cpu);
        let gpu = Gpu {
            name: "NVIDIA H200".into(),
            driver: "12.8".into(),
            memory_bytes: 150_754_820_096,
        };
        let cuda = Machine::new("Intel(R) Xeon(R) Processor".into(), 16, Some(gpu.clone()));
        assert_eq!(
            cuda.description,
            "NVIDIA H200 (CUDA driver 12.8, 140 GiB); host Intel(R) Xeon(R) Processor, 16 threads"
        );
        assert_eq!(cuda.device, Device::Cuda);
        let unknown = Gpu {
            driver: String::new(),
            memory_bytes: 0,
            ..gpu
        };
        assert_eq!(
            Machine::new("x".into(), 1, Some(unknown)).description,
            "NVIDIA H200 (CUDA); host x, 1 threads"
        );
        assert!(Machine::host().description.ends_with("threads (CPU)"));
    }

    #[test]
    fn old_reports_with_only_the_string_still_read() {
        let m: Machine =
            serde_json::from_str(r#"{"machine": "AMD EPYC, 2 threads (CPU)"}"#).unwrap();
        assert_eq!(m.description, "AMD EPYC, 2 threads (CPU)");
        assert_eq!((m.device, m.gpu), (Device::Cpu, None));
        let none: Machine = serde_json::from_str("{}").unwrap();
        assert!(none.description.is_empty());
        let json = serde_json::to_value(Machine::new("c".into(), 4, None)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"machine": "c, 4 threads (CPU)", "cpu": "c", "cpu_threads": 4, "device": "cpu"})
        );
    }
}
