//! Launchers of the device sampler (`kernels/sampling.cu`): processing (temperature → top-k →
//! top-p), the categorical draw, one row's pick (processing and draw, or argmax, in one
//! launch, routed to the models' input ids), the speculative accept / residual decision, and
//! raw Philox words. Shapes and lengths are checked before anything is enqueued; nothing synchronises.
//!
//! Random numbers: Philox4x32-10 keyed by `seed`, counter `(position, stream, index, 0)`
//! (`spedec_sampling::philox` describes the scheme and holds the CPU twin). Stream ids are
//! [`STREAM_FIRST`] .. [`STREAM_RESIDUAL`].

use anyhow::{bail, ensure, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use spedec_sampling::Sampler;

use crate::backend::PhiloxAt;
use crate::context::GpuContext;
use crate::kernels::consts::{PHILOX_THREADS, SAMPLE_THREADS};
use crate::ops::{launch_err as err, opt_ptr, opt_ptr_mut, to_i32 as i32_of, In, Out};

/// A counter as the kernels take it: the state buffer (or none) and the position (offset).
pub(crate) type CounterArgs<'a> = (Option<In<'a, i32>>, u32, u32);

/// The kernel arguments of `counter`: (state or null, position or offset, index or 0).
pub(crate) fn counter_args<'a>(
    counter: PhiloxAt<'a, dyn cudarc::driver::DevicePtr<i32> + 'a>,
) -> Result<CounterArgs<'a>> {
    Ok(match counter {
        PhiloxAt::Host { position, index } => (None, position, index),
        PhiloxAt::Device { state, offset } => {
            need("Philox step state", state.len(), 2)?;
            (Some(state), offset as u32, 0)
        }
    })
}

/// Philox stream of the first generated token (`PHILOX_STREAM_FIRST`).
pub const STREAM_FIRST: u32 = 0;
/// Philox stream of draft draws (`PHILOX_STREAM_DRAFT`).
pub const STREAM_DRAFT: u32 = 1;
/// Philox stream of acceptance tests (`PHILOX_STREAM_ACCEPT`).
pub const STREAM_ACCEPT: u32 = 2;
/// Philox stream of the residual / bonus draw (`PHILOX_STREAM_RESIDUAL`).
pub const STREAM_RESIDUAL: u32 = 3;

fn need(what: &str, have: usize, need: usize) -> Result<()> {
    ensure!(
        have >= need,
        "{what}: needs at least {need} elements, got {have}"
    );
    Ok(())
}

fn rows_cfg(m: usize, threads: u32) -> Result<LaunchConfig> {
    ensure!(
        (1..=i32::MAX as usize).contains(&m),
        "sampler: M = {m} rows, expected at least 1"
    );
    Ok(LaunchConfig {
        grid_dim: (m as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Checks the processing parameters the way `spedec_sampling::SamplingParams::validate` does.
fn check_params(temperature: f32, top_p: f32) -> Result<()> {
    ensure!(
        temperature.is_finite() && temperature > 0.0,
        "sample_process_f32: temperature {temperature} must be finite and > 0"
    );
    ensure!(
        top_p > 0.0 && top_p <= 1.0,
        "sample_process_f32: top_p {top_p} must be in (0, 1]"
    );
    Ok(())
}

impl GpuContext {
    /// The processed distribution of each row: logits f32 [m, vocab] → probs f32 [m, vocab]
    /// (temperature, then top-k keeping ties with the k-th logit, then top-p keeping tokens
    /// whose mass ranked above them is < top_p; renormalised). `top_k = 0` or `>= vocab`
    /// disables top-k, `top_p = 1` disables top-p. grid m × `SAMPLE_THREADS`.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_process_f32(
        &self,
        logits: In<f32>,
        probs: Out<f32>,
        m: usize,
        vocab: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
    ) -> Result<()> {
        check_params(temperature, top_p)?;
        ensure!(vocab > 0, "sample_process_f32: empty vocabulary");
        need("sample_process_f32 logits", logits.len(), m * vocab)?;
        need("sample_process_f32 probs", probs.len(), m * vocab)?;
        let v_i = i32_of("vocab", vocab)?;
        let k_i = if top_k >= vocab { 0 } else { top_k as i32 };
        let cfg = rows_cfg(m, SAMPLE_THREADS)?;
        let f = self.function("sample_process_f32")?;
        let s = self.stream();
        let (p_l, _g0) = logits.device_ptr(s);
        let (p_p, _g1) = probs.device_ptr_mut(s);
        let mut b = s.launch_builder(f);
        b.arg(&p_l)
            .arg(&p_p)
            .arg(&v_i)
            .arg(&temperature)
            .arg(&k_i)
            .arg(&top_p);
        // SAFETY: argument list matches sampling.cu; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(err("sample_process_f32"))?;
        Ok(())
    }

    /// One categorical draw per row by inverse CDF: probs f32 [m, vocab] (non-negative
    /// weights) → out i32 \[m\]; row r uses the uniform of counter
    /// `(position + r, stream, index, 0)` under `seed`; −1 for a row without mass.
    /// grid m × `SAMPLE_THREADS`.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_draw_f32(
        &self,
        probs: In<f32>,
        out: Out<i32>,
        m: usize,
        vocab: usize,
        seed: u64,
        position: u32,
        stream: u32,
        index: u32,
    ) -> Result<()> {
        ensure!(vocab > 0, "sample_draw_f32: empty vocabulary");
        ensure!(
            stream <= STREAM_RESIDUAL,
            "sample_draw_f32: unknown Philox stream {stream}"
        );
        need("sample_draw_f32 probs", probs.len(), m * vocab)?;
        need("sample_draw_f32 out", out.len(), m)?;
        let v_i = i32_of("vocab", vocab)?;
        let cfg = rows_cfg(m, SAMPLE_THREADS)?;
        let f = self.function("sample_draw_f32")?;
        let s = self.stream();
        let (p_p, _g0) = probs.device_ptr(s);
        let (p_o, _g1) = out.device_ptr_mut(s);
        let mut b = s.launch_builder(f);
        b.arg(&p_p)
            .arg(&p_o)
            .arg(&v_i)
            .arg(&seed)
            .arg(&position)
            .arg(&stream)
            .arg(&index);
        // SAFETY: argument list matches sampling.cu; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(err("sample_draw_f32"))?;
        Ok(())
    }

    /// The speculative decision for `gamma` drafts: target f32 [gamma + 1, vocab] processed
    /// rows (greedy: raw logits), draft f32 [gamma, vocab] processed rows (`None` when
    /// greedy), drafts i32 \[gamma\] → out i32 [gamma + 2] = accepted count a, the a accepted
    /// drafts, the next token, then −1 (out\[0\] = −1 on a bad draft id or a row without
    /// mass). Draft i sits at sequence position `position + i` (position and Philox index
    /// from `counter`). grid 1 × `SAMPLE_THREADS`.
    #[allow(clippy::too_many_arguments)]
    pub fn spec_verify_f32(
        &self,
        target: In<f32>,
        draft: Option<In<f32>>,
        drafts: In<i32>,
        out: Out<i32>,
        gamma: usize,
        vocab: usize,
        seed: u64,
        counter: PhiloxAt<'_, dyn cudarc::driver::DevicePtr<i32> + '_>,
    ) -> Result<()> {
        ensure!(vocab > 0, "spec_verify_f32: empty vocabulary");
        let (state, position, index) = counter_args(counter)?;
        need("spec_verify_f32 target", target.len(), (gamma + 1) * vocab)?;
        if let Some(q) = draft {
            need("spec_verify_f32 draft", q.len(), gamma * vocab)?;
        }
        need("spec_verify_f32 drafts", drafts.len(), gamma.max(1))?;
        need("spec_verify_f32 out", out.len(), gamma + 2)?;
        let (v_i, g_i) = (i32_of("vocab", vocab)?, i32_of("gamma", gamma)?);
        let greedy: i32 = draft.is_none().into();
        let cfg = rows_cfg(1, SAMPLE_THREADS)?;
        let f = self.function("spec_verify_f32")?;
        let s = self.stream();
        let (p_t, _g0) = target.device_ptr(s);
        let (p_q, _g1) = opt_ptr(draft, s);
        let (p_d, _g2) = drafts.device_ptr(s);
        let (p_o, _g3) = out.device_ptr_mut(s);
        let (p_s, _g4) = opt_ptr(state, s);
        let mut b = s.launch_builder(f);
        b.arg(&p_t)
            .arg(&p_q)
            .arg(&p_d)
            .arg(&p_o)
            .arg(&g_i)
            .arg(&v_i)
            .arg(&greedy)
            .arg(&seed)
            .arg(&p_s)
            .arg(&position)
            .arg(&index);
        // SAFETY: argument list matches sampling.cu; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(err("spec_verify_f32"))?;
        Ok(())
    }

    /// One token from one row, in one launch: row f32 \[vocab\] (the view starts at the row).
    /// Greedy → the argmax (lowest id on ties). `Sampler::Random(params)` → the row processed
    /// exactly as [`GpuContext::sample_process_f32`] does (the same device code, so the same
    /// bits) into `probs` f32 \[vocab\] (required), then drawn by inverse CDF as
    /// [`GpuContext::sample_draw_f32`] does with the uniform of counter
    /// `(position, stream, index, 0)` under `seed` (position and index from `counter`).
    /// Written: `token` i32 \[1\] (−1 for a row
    /// with a NaN or +inf, without a finite logit, or without mass) and, where given,
    /// `draft_input` / `verify_input` u32 \[1\] (the token, 0 for a bad row).
    /// grid 1 × `SAMPLE_THREADS`.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_pick_f32(
        &self,
        row: In<f32>,
        probs: Option<Out<f32>>,
        token: Out<i32>,
        draft_input: Option<Out<u32>>,
        verify_input: Option<Out<u32>>,
        vocab: usize,
        sampler: &Sampler,
        seed: u64,
        stream: u32,
        counter: PhiloxAt<'_, dyn cudarc::driver::DevicePtr<i32> + '_>,
    ) -> Result<()> {
        ensure!(vocab > 0, "sample_pick_f32: empty vocabulary");
        let (state, position, index) = counter_args(counter)?;
        ensure!(
            stream <= STREAM_RESIDUAL,
            "sample_pick_f32: unknown Philox stream {stream}"
        );
        need("sample_pick_f32 row", row.len(), vocab)?;
        need("sample_pick_f32 token", token.len(), 1)?;
        if let Some(d) = &draft_input {
            need("sample_pick_f32 draft_input", d.len(), 1)?;
        }
        if let Some(v) = &verify_input {
            need("sample_pick_f32 verify_input", v.len(), 1)?;
        }
        let v_i = i32_of("vocab", vocab)?;
        let (greedy, temperature, k_i, top_p) = match sampler {
            Sampler::Greedy => (1i32, 1.0f32, 0i32, 1.0f32),
            Sampler::Random(p) => {
                check_params(p.temperature, p.top_p)?;
                let Some(q) = &probs else {
                    bail!("sample_pick_f32: random sampling needs a probs row");
                };
                need("sample_pick_f32 probs", q.len(), vocab)?;
                let k_i = if p.top_k >= vocab { 0 } else { p.top_k as i32 };
                (0, p.temperature, k_i, p.top_p)
            }
        };
        let cfg = rows_cfg(1, SAMPLE_THREADS)?;
        let f = self.function("sample_pick_f32")?;
        let s = self.stream();
        let (p_r, _g0) = row.device_ptr(s);
        let mut probs = if greedy != 0 { None } else { probs };
        let (mut draft_input, mut verify_input) = (draft_input, verify_input);
        let (p_p, _g1) = opt_ptr_mut(probs.as_mut().map(|q| &mut **q as _), s);
        let (p_t, _g2) = token.device_ptr_mut(s);
        let (p_d, _g3) = opt_ptr_mut(draft_input.as_mut().map(|d| &mut **d as _), s);
        let (p_v, _g4) = opt_ptr_mut(verify_input.as_mut().map(|v| &mut **v as _), s);
        let (p_s, _g5) = opt_ptr(state, s);
        let mut b = s.launch_builder(f);
        b.arg(&p_r)
            .arg(&p_p)
            .arg(&p_t)
            .arg(&p_d)
            .arg(&p_v)
            .arg(&v_i)
            .arg(&greedy)
            .arg(&temperature)
            .arg(&k_i)
            .arg(&top_p)
            .arg(&seed)
            .arg(&p_s)
            .arg(&position)
            .arg(&stream)
            .arg(&index);
        // SAFETY: argument list matches sampling.cu; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(err("sample_pick_f32"))?;
        Ok(())
    }

    /// Raw Philox4x32-10 words for counters `(position + j, stream, index, 0)`, j < n: words
    /// u32 [n, 4], uniforms f32 \[n\] (of word 0). grid ceil(n / `PHILOX_THREADS`).
    #[allow(clippy::too_many_arguments)]
    pub fn philox_uniform_f32(
        &self,
        seed: u64,
        position: u32,
        stream: u32,
        index: u32,
        words: Out<u32>,
        uniforms: Out<f32>,
        n: usize,
    ) -> Result<()> {
        ensure!(n > 0, "philox_uniform_f32: n = 0");
        need("philox_uniform_f32 words", words.len(), 4 * n)?;
        need("philox_uniform_f32 uniforms", uniforms.len(), n)?;
        let n_i = i32_of("n", n)?;
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(PHILOX_THREADS as usize) as u32, 1, 1),
            block_dim: (PHILOX_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("philox_uniform_f32")?;
        let s = self.stream();
        let (p_w, _g0) = words.device_ptr_mut(s);
        let (p_u, _g1) = uniforms.device_ptr_mut(s);
        let mut b = s.launch_builder(f);
        b.arg(&seed)
            .arg(&position)
            .arg(&stream)
            .arg(&index)
            .arg(&p_w)
            .arg(&p_u)
            .arg(&n_i);
        // SAFETY: argument list matches sampling.cu; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(err("philox_uniform_f32"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::source_of;

    #[test]
    fn stream_ids_match_the_header() {
        let header = crate::kernels::COMMON_HEADER.1;
        let define = |name: &str| -> Option<u32> {
            header.lines().find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some("#define") && it.next() == Some(name))
                    .then(|| it.next().and_then(|v| v.parse().ok()))
                    .flatten()
            })
        };
        assert_eq!(define("PHILOX_STREAM_FIRST"), Some(STREAM_FIRST));
        assert_eq!(define("PHILOX_STREAM_DRAFT"), Some(STREAM_DRAFT));
        assert_eq!(define("PHILOX_STREAM_ACCEPT"), Some(STREAM_ACCEPT));
        assert_eq!(define("PHILOX_STREAM_RESIDUAL"), Some(STREAM_RESIDUAL));
        assert!(source_of("spec_verify_f32").is_some());
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(check_params(0.0, 1.0).is_err());
        assert!(check_params(f32::NAN, 1.0).is_err());
        assert!(check_params(1.0, 0.0).is_err());
        assert!(check_params(1.0, 1.5).is_err());
        assert!(check_params(0.7, 0.9).is_ok());
        assert!(need("x", 3, 4).is_err());
        assert!(rows_cfg(0, 1024).is_err());
    }
}
