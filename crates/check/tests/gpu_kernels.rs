//! Kernels against the CPU reference on a real GPU (all shapes of Pythia 70m and 2.8b,
//! M = 1, 5, 16), batch invariance, and launcher shape checks. Prints
//! `skipped: no CUDA device` where there is no driver or device.

use std::io::Write;

use half::f16;
use std::sync::Arc;

use spedec_check::kernels;
use spedec_cuda::{gpu_available, AttnScratch, AttnShape, GpuContext, LayerNormOut, LinearOut};

fn visible(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn gpu_or_skip(test: &str) -> Option<GpuContext> {
    if !gpu_available() {
        visible(&format!("{test}: skipped: no CUDA device"));
        return None;
    }
    Some(GpuContext::new(0).unwrap_or_else(|e| panic!("{e:#}")))
}

#[test]
fn kernels_match_the_cpu_reference() {
    let Some(gpu) = gpu_or_skip("kernels_match_the_cpu_reference") else {
        return;
    };
    visible(&gpu.describe());
    for r in gpu.resources() {
        visible(&format!("  {r}"));
    }
    let results = kernels::run_checks(&Arc::new(gpu), &kernels::CheckOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    visible(&kernels::format_table(&results));
    assert!(
        kernels::all_passed(&results),
        "some kernel checks failed (table above)"
    );
}

#[test]
fn launchers_reject_bad_shapes() {
    let Some(gpu) = gpu_or_skip("launchers_reject_bad_shapes") else {
        return;
    };
    let x = gpu.zeros::<f16>(17 * 64).unwrap();
    let w = gpu.zeros::<f16>(32 * 64).unwrap();
    let mut y = gpu.zeros::<f16>(17 * 32).unwrap();
    // M = 17 rows is over the limit; K not a multiple of 8; weight of the wrong length.
    assert!(gpu
        .linear_f16(&x, &w, None, LinearOut::F16(&mut y), 17, 32, 64)
        .is_err());
    assert!(gpu
        .linear_f16(&x, &w, None, LinearOut::F16(&mut y), 1, 32, 60)
        .is_err());
    assert!(gpu
        .linear_f16(&x, &w, None, LinearOut::F16(&mut y), 1, 31, 64)
        .is_err());
    assert!(gpu
        .linear_f16(&x, &w, None, LinearOut::F16(&mut y), 0, 32, 64)
        .is_err());
    // Misaligned x (offset by one element).
    let xv = x.slice(1..);
    assert!(gpu
        .linear_f16(&xv, &w, None, LinearOut::F16(&mut y), 1, 32, 64)
        .is_err());
    assert!(gpu
        .linear_f16(&x, &w, None, LinearOut::F16(&mut y), 16, 32, 64)
        .is_ok());

    let shape = AttnShape {
        heads: 2,
        head_dim: 64,
        rotary_dims: 16,
        rotary_base: 1e4,
        max_pos: 256,
    };
    let bad = AttnShape {
        head_dim: 60,
        ..shape
    };
    assert!(AttnScratch::new(&gpu, &bad, 4).is_err());
    assert!(AttnScratch::new(&gpu, &shape, 17).is_err());
    let mut scratch = AttnScratch::new(&gpu, &shape, 4).unwrap();
    let q = gpu.zeros::<f16>(4 * 128).unwrap();
    let kc = gpu.zeros::<f16>(shape.cache_len()).unwrap();
    let small = gpu.zeros::<f16>(shape.cache_len() - 1).unwrap();
    let pos = gpu.upload(&[0i32, 1, 2, 3]).unwrap();
    let mut out = gpu.zeros::<f16>(4 * 128).unwrap();
    assert!(gpu
        .attention_f16(&q, &small, &kc, &pos, &mut scratch, &mut out, 4, &shape)
        .is_err());
    assert!(gpu
        .attention_f16(&q, &kc, &kc, &pos, &mut scratch, &mut out, 5, &shape)
        .is_err());
    assert!(gpu
        .attention_f16(&q, &kc, &kc, &pos, &mut scratch, &mut out, 4, &shape)
        .is_ok());

    let mut xr = gpu.zeros::<f32>(2 * 64).unwrap();
    let wl = gpu.zeros::<f16>(63).unwrap();
    let mut o = gpu.zeros::<f16>(2 * 64).unwrap();
    let r = gpu.add_layernorm_f16(
        &mut xr,
        None,
        None,
        LayerNormOut {
            weight: &wl,
            bias: &wl,
            out: &mut o,
        },
        None,
        2,
        64,
        1e-5,
    );
    assert!(r.is_err());
    gpu.synchronize().unwrap();
}
