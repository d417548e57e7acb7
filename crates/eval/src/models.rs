//! Opening models for the CLI: a model folder or `synthetic:…` spec becomes a boxed [`Lm`].

use anyhow::{bail, Result};
use spedec_neox::{Config, CpuModel, Isa, ModelFiles, Tokenizer};
use spedec_report::machine::host_cpu;
use spedec_report::{Gpu, Machine};
use spedec_speculative::Lm;

pub use spedec_report::Device;

/// `Auto` becomes `Cuda` when a CUDA device is usable here, else `Cpu`; the others stay.
pub fn resolve(device: Device) -> Device {
    match device {
        Device::Auto if cuda_usable() => Device::Cuda,
        Device::Auto => Device::Cpu,
        d => d,
    }
}

/// Whether this build has the CUDA backend and a usable GPU (driver, device, NVRTC).
fn cuda_usable() -> bool {
    #[cfg(feature = "cuda")]
    return spedec_cuda::gpu_available();
    #[cfg(not(feature = "cuda"))]
    false
}

/// This host, with the threads of the CPU pool this process runs (all cores unless the
/// pool was made smaller), and the GPU a CUDA run uses.
fn machine(gpu: Option<Gpu>) -> Machine {
    Machine::new(host_cpu(), rayon::current_num_threads(), gpu)
}

/// This host as a CPU run sees it (see [`machine`]).
pub fn host_machine() -> Machine {
    machine(None)
}

/// A model ready to run, with what the CLI needs to know about it.
pub struct LoadedModel {
    /// The folder or spec the user gave.
    pub name: String,
    pub config: Config,
    pub tokenizer: Tokenizer,
    /// Bytes of weights one decode step reads.
    pub bytes_per_token: usize,
    pub lm: Box<dyn Lm>,
    /// Where it runs (`Cpu` or `Cuda`, never `Auto`).
    pub device: Device,
    /// The machine it runs on: the host CPU, and for `Cuda` the GPU.
    pub machine: Machine,
}

/// Opens `spec` on the CPU with a KV cache of `context` positions (default: the model's max
/// positions, at most `KvCursor::DEFAULT_CONTEXT_CAP`).
pub fn load_model(spec: &str, context: Option<usize>) -> Result<LoadedModel> {
    load_model_on(spec, context, Device::Cpu)
}

/// Opens `spec` on `device` with a KV cache of `context` positions (default: the model's max
/// positions, at most `KvCursor::DEFAULT_CONTEXT_CAP`). On CUDA the weights are uploaded as f16 (bf16 / f32 checkpoints are rounded)
/// and the host copy is dropped; `--device cuda` without a driver is the error
/// "no CUDA driver found (use --device cpu)".
pub fn load_model_on(spec: &str, context: Option<usize>, device: Device) -> Result<LoadedModel> {
    match resolve(device) {
        Device::Cuda => load_cuda(spec, context),
        _ => {
            let files = ModelFiles::open(spec)?;
            let bytes_per_token = files.weights.bytes_per_token();
            let model = CpuModel::new(files.config.clone(), files.weights, context, Isa::detect())?;
            Ok(LoadedModel {
                name: files.name,
                config: files.config,
                tokenizer: files.tokenizer,
                bytes_per_token,
                lm: Box::new(model),
                device: Device::Cpu,
                machine: host_machine(),
            })
        }
    }
}

/// The CUDA half of [`load_model_on`].
#[cfg(feature = "cuda")]
fn load_cuda(spec: &str, context: Option<usize>) -> Result<LoadedModel> {
    use spedec_neox::cuda_model::shared_gpu;
    use spedec_neox::{CudaModel, CudaOptions};

    // The device first: no point reading gigabytes of weights without one.
    let gpu = shared_gpu().map_err(cpu_advice)?;
    let (name, driver, memory_bytes) = gpu.device_info();
    let machine = machine(Some(Gpu {
        name,
        driver,
        memory_bytes: memory_bytes as u64,
    }));
    let files = ModelFiles::open(spec)?;
    let options = CudaOptions {
        capacity: context,
        ..CudaOptions::default()
    };
    let model = CudaModel::new(gpu, &files.config, &files.weights, &options).map_err(cpu_advice)?;
    Ok(LoadedModel {
        name: files.name,
        config: files.config,
        tokenizer: files.tokenizer,
        bytes_per_token: model.bytes_per_token(),
        lm: Box::new(model),
        device: Device::Cuda,
        machine,
    })
}

/// Without the `cuda` feature there is no CUDA backend to load onto.
#[cfg(not(feature = "cuda"))]
fn load_cuda(_spec: &str, _context: Option<usize>) -> Result<LoadedModel> {
    bail!("this spedec was built without CUDA (cargo feature `cuda`); use --device cpu")
}

/// A failure to set up the CUDA device or model, with the CLI's way around it.
#[cfg(feature = "cuda")]
fn cpu_advice(err: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!("{err:#} (use --device cpu)")
}

/// Refuses a draft that cannot propose tokens for `target`: a different vocabulary size or a
/// different tokenizer.
pub fn check_draft(target: &LoadedModel, draft: &LoadedModel) -> Result<()> {
    if target.config.vocab_size != draft.config.vocab_size {
        bail!(
            "draft {} has vocab_size {} but target {} has {}: a draft must share the target's \
             vocabulary",
            draft.name,
            draft.config.vocab_size,
            target.name,
            target.config.vocab_size
        );
    }
    if target.tokenizer.fingerprint() != draft.tokenizer.fingerprint() {
        bail!(
            "draft {} and target {} have different tokenizers (their token tables differ): a \
             draft must use the target's tokenizer",
            draft.name,
            target.name
        );
    }
    Ok(())
}
