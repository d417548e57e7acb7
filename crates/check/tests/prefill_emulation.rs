//! The CUDA engine's layer-major prefill (`cuda_model::Engine`: inputs longer than one
//! 16-row step run each layer over all rows, one matrix product per linear) on the host
//! emulation of the CUDA kernels, for both linear kernels (SIMT on the sequential residual,
//! tensor-core on the parallel one). Checks, on a tiny synthetic model: a prefill of
//! P ∈ {17, 40} rows — 40 also over several layer-major chunks of a smaller chunk size —
//! gives logits bit-identical to token-by-token decoding and to 16-row steps, for every row;
//! the attention of 40 rows runs as one launch a layer (three 16-query chunks), and,
//! with the backend's slice lowered to 24 queries, as two with the same bits;
//! `forward_last` gives the bits of the last row; a prefill after a rollback still matches;
//! and the logits stay within the f16 tolerance of the CPU model. Prints `skipped: no C++
//! compiler` where the emulation cannot be built.

mod support;

use spedec_check::compare::compare;
use spedec_check::emulator::HostEmulator;
use spedec_cuda::{LinearKernel, ATT_PREFILL_ROWS};
use spedec_neox::cuda_model::{Engine, MAX_ROWS, PREFILL_ROWS};
use spedec_neox::synthetic::{synthetic_weights, SyntheticSpec};
use spedec_neox::{Config, CpuModel, Isa, Lm, Weights};
use support::{emulator_or_skip, visible};

/// Tolerance of the f16 path against the f32 CPU model on these fixtures (as in
/// `engine_emulation.rs`: logits up to about ±5, f16 stores of relative error 2⁻¹¹).
const FIXTURE_TOL: f64 = 2e-2;

/// Tokens of the longest prompt; shorter prompts are its prefixes.
const LONGEST: usize = 40;

/// A prefill chunk size smaller than the prompts, so 40 rows run as chunks of 17, 17, 6
/// (query chunks of 16 + 1 inside each) and a chunk's attention reads earlier chunks' K/V.
const SMALL_CHUNK: usize = 17;

/// A lowered attention slice (the backend's `prefill_attention_rows`): 40 queries run as
/// 24 (chunks of 16 + 8 in one launch) + 16.
const ATT_SLICE: usize = 24;

/// Rows `rows` of `[.., vocab]` logits.
fn rows(all: &[f32], vocab: usize, rows: std::ops::Range<usize>) -> &[f32] {
    &all[rows.start * vocab..rows.end * vocab]
}

/// First row where `got` and `want` (both `[.., vocab]`) differ in any bit, with the largest
/// difference, or `None` when they are identical.
fn first_difference(got: &[f32], want: &[f32], vocab: usize) -> Option<String> {
    assert_eq!(got.len(), want.len(), "logits of different shapes");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    if bits(got) == bits(want) {
        return None;
    }
    let row = got
        .chunks(vocab)
        .zip(want.chunks(vocab))
        .position(|(a, b)| bits(a) != bits(b))
        .expect("some row differs");
    let max = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    Some(format!("first differing row {row}, max |diff| {max:e}"))
}

fn assert_same(what: &str, got: &[f32], want: &[f32], vocab: usize) {
    if let Some(diff) = first_difference(got, want, vocab) {
        panic!("{what}: not bit-identical: {diff}");
    }
}

/// A tiny GPT-NeoX (d = 64, 2 heads of 32 with 8 rotary dims, 2 layers, I = 256, vocab
/// 256) with seeded synthetic f16 weights, its unembedding scaled so logits spread over ±10
/// (a tolerance check on near-zero logits would prove little). The emulation runs every CUDA
/// thread as a fiber, so the smaller the model the more prompts the test can afford.
fn tiny_model(parallel: bool) -> (Config, Weights) {
    let mut config = Config::pythia("pythia-14m").unwrap();
    config.hidden_size = 64;
    config.num_layers = 2;
    config.num_heads = 2;
    config.intermediate_size = 256;
    config.vocab_size = 256;
    config.max_position_embeddings = 64;
    config.use_parallel_residual = parallel;
    config.validate().unwrap();
    let spec = SyntheticSpec {
        seed: 13,
        logit_scale: 40.0,
        ..SyntheticSpec::default()
    };
    let weights = synthetic_weights(&config, &spec);
    (config, weights)
}

/// The model on the emulator with `kernel` (cache of 64 positions).
fn engine(
    emu: HostEmulator,
    config: &Config,
    weights: &Weights,
    kernel: LinearKernel,
) -> Engine<HostEmulator> {
    let mut engine = Engine::new(emu, config, weights, Some(64)).unwrap();
    engine.set_linear_kernel(kernel).unwrap();
    assert_eq!(engine.linear_kernel(), kernel);
    engine
}

/// Every check of the module on the tiny model with one residual style and linear kernel.
fn check_prefill(parallel: bool, kernel: LinearKernel) {
    let style = if parallel { "parallel" } else { "sequential" };
    let test = format!("prefill_emulation {style} {kernel:?}");
    let Some(emu) = emulator_or_skip(&test) else {
        return;
    };
    let t0 = std::time::Instant::now();
    let (config, weights) = tiny_model(parallel);
    let vocab = config.vocab_size;
    let ids: Vec<u32> = (0..LONGEST as u32)
        .map(|i| (i * 7919 + 13) % vocab as u32)
        .collect();
    let mut e = engine(emu, &config, &weights, kernel);
    assert_eq!(e.prefill_rows(), PREFILL_ROWS);

    // The reference: one token per step (the graph-step path, M = 1).
    let mut one_by_one = Vec::with_capacity(LONGEST * vocab);
    for &t in &ids {
        one_by_one.extend(e.forward(&[t]).unwrap().into_vec());
    }
    assert_eq!(e.prefill_chunks(), 0, "single tokens must run as steps");

    // Today's path: 16-row steps.
    e.truncate(0).unwrap();
    let mut steps = Vec::with_capacity(LONGEST * vocab);
    for chunk in ids.chunks(MAX_ROWS) {
        steps.extend(e.forward(chunk).unwrap().into_vec());
    }
    assert_eq!(e.prefill_chunks(), 0, "16-row inputs must run as steps");
    assert_same(
        &format!("{test}: 16-row steps vs token by token"),
        &steps,
        &one_by_one,
        vocab,
    );

    // Layer-major prefills in one chunk (the default chunk size, capped by the capacity 64).
    let mut chunks = 0;
    for p in [17, LONGEST] {
        e.truncate(0).unwrap();
        let got = e.forward(&ids[..p]).unwrap();
        chunks += 1;
        assert_eq!(e.prefill_chunks(), chunks, "{p} rows must run layer-major");
        assert_eq!((got.rows(), got.vocab()), (p, vocab));
        assert_eq!(e.len(), p);
        assert_same(
            &format!("{test}: prefill of {p} vs token by token"),
            got.as_slice(),
            rows(&one_by_one, vocab, 0..p),
            vocab,
        );
        e.truncate(0).unwrap();
        let last = e.forward_last(&ids[..p]).unwrap();
        chunks += 1;
        assert_eq!((last.rows(), last.vocab()), (1, vocab));
        assert_eq!(e.len(), p);
        assert_same(
            &format!("{test}: forward_last of {p} vs the last row"),
            last.as_slice(),
            rows(&one_by_one, vocab, p - 1..p),
            vocab,
        );
    }

    // The attention of a chunk in few launches: one per layer for 40 queries at the
    // default slice, two per layer (24 + 16) at a lowered one; the same bits either way.
    let layers = config.num_layers as u64;
    for (slice, pairs) in [(ATT_PREFILL_ROWS, 1), (ATT_SLICE, 2)] {
        e.backend_mut().set_prefill_attention_rows(slice).unwrap();
        e.truncate(0).unwrap();
        let before = e.backend().attention_launches();
        let got = e.forward(&ids).unwrap().into_vec();
        assert_eq!(
            e.backend().attention_launches() - before,
            layers * pairs,
            "{test}: attention launches of a {LONGEST}-row prefill at slice {slice}"
        );
        assert_same(
            &format!("{test}: prefill of {LONGEST} with attention slices of {slice}"),
            &got,
            &one_by_one,
            vocab,
        );
    }
    e.backend_mut()
        .set_prefill_attention_rows(ATT_PREFILL_ROWS)
        .unwrap();

    // Several chunks: 40 rows as 17 + 17 + 6.
    e.set_prefill_rows(SMALL_CHUNK).unwrap();
    e.truncate(0).unwrap();
    let before = e.prefill_chunks();
    let got = e.forward(&ids).unwrap().into_vec();
    assert_eq!(
        e.prefill_chunks() - before,
        LONGEST.div_ceil(SMALL_CHUNK) as u64
    );
    assert_same(
        &format!("{test}: prefill of {LONGEST} in chunks of {SMALL_CHUNK} vs token by token"),
        &got,
        &one_by_one,
        vocab,
    );
    e.truncate(0).unwrap();
    let last = e.forward_last(&ids).unwrap().into_vec();
    assert_same(
        &format!("{test}: forward_last of {LONGEST} in chunks of {SMALL_CHUNK}"),
        &last,
        rows(&one_by_one, vocab, LONGEST - 1..LONGEST),
        vocab,
    );

    // Rollback: a prefill after a truncate overwrites the stale cache positions.
    e.truncate(0).unwrap();
    e.forward(&ids[..30]).unwrap();
    e.truncate(7).unwrap();
    let redo = e.forward(&ids[7..]).unwrap().into_vec(); // 33 rows: chunks of 17 + 16 from 7
    assert_eq!(e.len(), LONGEST);
    assert_same(
        &format!("{test}: prefill after truncate(7) vs token by token"),
        &redo,
        rows(&one_by_one, vocab, 7..LONGEST),
        vocab,
    );
    // ... and one from a position inside an earlier chunk.
    e.truncate(20).unwrap();
    let tail = e.forward(&ids[20..]).unwrap().into_vec(); // 20 rows: chunks of 17 + 3
    assert_same(
        &format!("{test}: prefill after truncate(20)"),
        &tail,
        rows(&one_by_one, vocab, 20..LONGEST),
        vocab,
    );

    // Against the f32 CPU model, with the f16 tolerance.
    let mut cpu = CpuModel::new(config, weights, Some(64), Isa::detect()).unwrap();
    let want = cpu.forward(&ids).unwrap();
    let d = compare(&got, want.as_slice(), vocab, FIXTURE_TOL, FIXTURE_TOL).unwrap();
    visible(&format!(
        "{test}: layer-major prefill of {LONGEST} bit-identical to token by token; vs CPU \
         model {} ({:.1} s emulated)",
        d.line(),
        t0.elapsed().as_secs_f64()
    ));
    assert!(d.pass, "{test}: vs CPU model: {}", d.line());
}

// One residual style per kernel keeps the run near a minute on two cores; the engine's
// residual wiring does not depend on the kernel.
#[test]
fn simt_prefill_is_bit_identical_to_decoding() {
    check_prefill(false, LinearKernel::Simt);
}

#[test]
fn tensor_core_prefill_is_bit_identical_to_decoding() {
    check_prefill(true, LinearKernel::TensorCore);
}

#[test]
fn prefill_rows_must_be_positive() {
    let Some(emu) = emulator_or_skip("prefill_rows_must_be_positive") else {
        return;
    };
    let (config, weights) = tiny_model(true);
    let mut e = Engine::new(emu, &config, &weights, Some(20)).unwrap();
    let err = e.set_prefill_rows(0).unwrap_err();
    assert!(err.to_string().contains("at least one row"), "{err}");
    assert_eq!(e.prefill_rows(), PREFILL_ROWS);
    // A prompt past the capacity is refused before anything runs.
    let err = e.forward(&[1; 21]).unwrap_err();
    assert!(err.to_string().contains("context too long"), "{err}");
    assert_eq!((e.len(), e.prefill_chunks()), (0, 0));
}
