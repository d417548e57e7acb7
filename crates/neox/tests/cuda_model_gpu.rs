//! `CudaModel` on a real GPU: logits against the CPU model on the fixtures (both residual
//! wirings, f32 / f16 / bf16 checkpoints), prefill vs token-by-token vs truncate + re-decode
//! and CUDA graphs vs direct launches bit-identical, and errors on bad input. Prints
//! `skipped: no CUDA device` where there is no usable GPU (driver, device and NVRTC).

use std::io::Write;
use std::path::{Path, PathBuf};

use spedec_neox::cuda_model::shared_gpu;
use spedec_neox::{Config, CpuModel, CudaModel, CudaOptions, Isa, ModelFiles, Weights};

fn visible(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn gpu_or_skip(test: &str) -> bool {
    if spedec_cuda::gpu_available() {
        return true;
    }
    visible(&format!("{test}: skipped: no CUDA device"));
    false
}

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/fixtures/golden")
        .join(name)
}

fn options(capacity: Option<usize>, graphs: bool) -> CudaOptions {
    CudaOptions { capacity, graphs }
}

/// Largest |a − b| and whether all are within atol + rtol·|ref|.
fn compare(got: &[f32], want: &[f32], tol: f32) -> (f32, bool) {
    assert_eq!(got.len(), want.len());
    let mut max = 0f32;
    let mut ok = true;
    for (&a, &b) in got.iter().zip(want) {
        let d = (a - b).abs();
        max = max.max(d);
        ok &= d <= tol + tol * b.abs();
    }
    (max, ok && max.is_finite())
}

#[test]
fn cuda_logits_match_the_cpu_model_on_fixtures() {
    if !gpu_or_skip("cuda_logits_match_the_cpu_model_on_fixtures") {
        return;
    }
    let gpu = shared_gpu().unwrap();
    visible(&gpu.describe());
    for folder in [
        "parallel-f32",
        "parallel-f16",
        "parallel-bf16",
        "sequential-f32",
        "sequential-f16",
        "sequential-bf16",
    ] {
        let dir = golden_dir(folder);
        let config = Config::from_file(&dir.join("config.json")).unwrap();
        let weights = Weights::load(&dir.join("model.safetensors"), &config).unwrap();
        let ids: Vec<u32> = (0..24u32).map(|i| (i * 37 + 5) % 1000).collect();
        let mut cpu = CpuModel::new(config.clone(), weights.clone(), None, Isa::detect()).unwrap();
        let want = cpu.forward(&ids).unwrap();
        let mut cuda =
            CudaModel::new(gpu.clone(), &config, &weights, &options(None, true)).unwrap();
        let got = cuda.forward(&ids).unwrap();
        let (max, ok) = compare(got.as_slice(), want.as_slice(), 2e-2);
        visible(&format!("{folder}: CUDA vs CPU max |diff| {max:.3e}"));
        assert!(ok, "{folder}: max diff {max}");
    }
}

#[test]
fn cuda_prefill_decode_truncate_and_graphs_agree_bitwise() {
    if !gpu_or_skip("cuda_prefill_decode_truncate_and_graphs_agree_bitwise") {
        return;
    }
    let files = ModelFiles::open("synthetic:pythia-14m:seed=5").unwrap();
    let gpu = shared_gpu().unwrap();
    let mut m = CudaModel::new(
        gpu,
        &files.config,
        &files.weights,
        &options(Some(256), true),
    )
    .unwrap();
    let vocab = files.config.vocab_size;
    // 150 tokens: prefill chunks of 16 and key splits of 128 positions are both crossed.
    let ids: Vec<u32> = (0..150u32).map(|i| (i * 7919 + 13) % 50000).collect();
    let prefill = m.forward(&ids).unwrap().into_vec();
    m.truncate(0).unwrap();
    let mut one = Vec::new();
    for &t in &ids {
        one.extend(m.forward(&[t]).unwrap().into_vec());
    }
    assert!(prefill == one, "prefill vs token by token");
    m.truncate(75).unwrap();
    let mut redo = prefill[..75 * vocab].to_vec();
    for c in ids[75..].chunks(5) {
        redo.extend(m.forward(c).unwrap().into_vec());
    }
    assert!(prefill == redo, "truncate + re-decode");
    let stats = m.graph_stats();
    visible(&format!("graphs: {stats:?}"));
    assert!(
        stats.enabled && stats.captured > 0 && stats.replays > 0,
        "{stats:?}"
    );
    m.set_graphs(false);
    m.truncate(0).unwrap();
    let eager = m.forward(&ids).unwrap().into_vec();
    assert!(prefill == eager, "graphs vs direct launches");
}

#[test]
fn cuda_model_rejects_bad_input() {
    if !gpu_or_skip("cuda_model_rejects_bad_input") {
        return;
    }
    let dir = golden_dir("parallel-f16");
    let config = Config::from_file(&dir.join("config.json")).unwrap();
    let weights = Weights::load(&dir.join("model.safetensors"), &config).unwrap();
    let gpu = shared_gpu().unwrap();
    let mut m = CudaModel::new(gpu.clone(), &config, &weights, &options(Some(8), true)).unwrap();
    assert!(m.forward(&[]).is_err());
    assert!(m.forward(&[1000]).is_err());
    m.forward(&[1, 2, 3, 4, 5, 6]).unwrap();
    assert!(m.forward(&[1, 2, 3]).is_err());
    assert_eq!(m.len(), 6);
    assert!(m.truncate(7).is_err());
    assert!(CudaModel::new(gpu, &config, &weights, &options(Some(65), true)).is_err());
}
