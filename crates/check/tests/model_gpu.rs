//! `CudaModel` on a real GPU: logits against the CPU model on the fixtures (both residual
//! wirings, f32 / f16 / bf16 checkpoints), prefill vs token-by-token vs truncate + re-decode
//! and CUDA graphs vs direct launches bit-identical, and errors on bad input. Prints
//! `skipped: no CUDA device` where there is no usable GPU (driver, device and NVRTC).

use std::io::Write;

use spedec_check::compare::compare;
use spedec_check::fixtures::{golden_root, load, GOLDEN_FOLDERS};
use spedec_neox::cuda_model::shared_gpu;
use spedec_neox::{CpuModel, CudaModel, CudaOptions, Isa, Lm, ModelFiles};

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

fn options(capacity: Option<usize>, graphs: bool) -> CudaOptions {
    CudaOptions { capacity, graphs }
}

#[test]
fn cuda_logits_match_the_cpu_model_on_fixtures() {
    if !gpu_or_skip("cuda_logits_match_the_cpu_model_on_fixtures") {
        return;
    }
    let gpu = shared_gpu().unwrap();
    visible(&gpu.describe());
    for folder in GOLDEN_FOLDERS {
        let (config, weights) = load(&golden_root().join(folder)).unwrap();
        let ids: Vec<u32> = (0..24u32).map(|i| (i * 37 + 5) % 1000).collect();
        let mut cpu = CpuModel::new(config.clone(), weights.clone(), None, Isa::detect()).unwrap();
        let want = cpu.forward(&ids).unwrap();
        let mut cuda =
            CudaModel::new(gpu.clone(), &config, &weights, &options(None, true)).unwrap();
        let got = cuda.forward(&ids).unwrap();
        let d = compare(got.as_slice(), want.as_slice(), got.vocab(), 2e-2, 2e-2).unwrap();
        visible(&format!("{folder}: CUDA vs CPU {}", d.line()));
        assert!(d.pass, "{folder}: {}", d.line());
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
    let (config, weights) = load(&golden_root().join("parallel-f16")).unwrap();
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
