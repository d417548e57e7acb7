//! Where a speculative generation's steps run: on the GPU's device step (logits, sampling and
//! the decision stay on the device) when both models are CUDA models, else on the host.

use anyhow::{bail, Result};
use spedec_speculative::{GammaChoice, GenConfig, Generation, Lm};

pub use spedec_report::SpecStep;

/// `Auto` becomes `Device` when both models are CUDA models, else `Host`; `Device` with a
/// model that is not on CUDA is an error (the CLI words the flag).
pub fn resolve_step(step: SpecStep, target: &mut dyn Lm, draft: &mut dyn Lm) -> Result<SpecStep> {
    let both = is_cuda(target) && is_cuda(draft);
    Ok(match step {
        SpecStep::Host => SpecStep::Host,
        SpecStep::Auto if both => SpecStep::Device,
        SpecStep::Auto => SpecStep::Host,
        SpecStep::Device if both => SpecStep::Device,
        SpecStep::Device => bail!(
            "a speculative step on the device needs both models on CUDA (this build: {})",
            if cfg!(feature = "cuda") {
                "the target or the draft runs on the CPU"
            } else {
                "no CUDA backend"
            }
        ),
    })
}

#[cfg(feature = "cuda")]
fn is_cuda(lm: &mut dyn Lm) -> bool {
    lm.as_any_mut()
        .is_some_and(|a| a.is::<spedec_neox::CudaModel>())
}

#[cfg(not(feature = "cuda"))]
fn is_cuda(_lm: &mut dyn Lm) -> bool {
    false
}

/// One speculative generation of `target` drafted by `draft`, its steps where `step` says
/// (resolved by [`resolve_step`]).
pub fn generate_spec(
    target: &mut dyn Lm,
    draft: &mut dyn Lm,
    prompt: &[u32],
    cfg: &GenConfig,
    gamma: &GammaChoice,
    step: SpecStep,
) -> Result<Generation> {
    match resolve_step(step, target, draft)? {
        SpecStep::Device => device(target, draft, prompt, cfg, gamma),
        _ => spedec_speculative::generate_speculative_with_gamma(target, draft, prompt, cfg, gamma),
    }
}

#[cfg(feature = "cuda")]
fn device(
    target: &mut dyn Lm,
    draft: &mut dyn Lm,
    prompt: &[u32],
    cfg: &GenConfig,
    gamma: &GammaChoice,
) -> Result<Generation> {
    use spedec_neox::CudaModel;
    let missing = || anyhow::anyhow!("internal: a device step without a CUDA model");
    let t = target
        .as_any_mut()
        .and_then(|a| a.downcast_mut::<CudaModel>())
        .ok_or_else(missing)?;
    let d = draft
        .as_any_mut()
        .and_then(|a| a.downcast_mut::<CudaModel>())
        .ok_or_else(missing)?;
    let mut engine = t.device_spec(d)?;
    spedec_speculative::generate_speculative_on(&mut engine, prompt, cfg, gamma)
}

#[cfg(not(feature = "cuda"))]
fn device(
    _target: &mut dyn Lm,
    _draft: &mut dyn Lm,
    _prompt: &[u32],
    _cfg: &GenConfig,
    _gamma: &GammaChoice,
) -> Result<Generation> {
    bail!("this spedec was built without CUDA")
}
