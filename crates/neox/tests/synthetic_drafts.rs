//! Synthetic draft pairs: `noise=σ` and `layers=N` derive a draft from a synthetic target.
//! The target's own bits never change; σ = 0 (and all layers) is the target bit for bit; the
//! first N layers and the embeddings are the target's; the noise has the documented scale and
//! its own seed; and the measured acceptance of the draft falls as σ grows.

use std::collections::HashMap;

use spedec_neox::{CpuModel, Isa, Lm, ModelFiles, Tokenizer};

/// FNV-1a of a byte string.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The tensors of `spec` as a written `model.safetensors` holds them: name → (dtype, bytes).
fn tensors(spec: &str) -> HashMap<String, (String, Vec<u8>)> {
    let files = ModelFiles::open(spec).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    files
        .write_dir(tmp.path(), Tokenizer::pythia_json())
        .unwrap();
    let data = std::fs::read(tmp.path().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&data).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = format!("{:?}", view.dtype());
            (name, (dtype, view.data().to_vec()))
        })
        .collect()
}

/// One fingerprint of all tensors (names sorted).
fn fingerprint(t: &HashMap<String, (String, Vec<u8>)>) -> u64 {
    let mut names: Vec<&String> = t.keys().collect();
    names.sort();
    let mut all = Vec::new();
    for n in names {
        all.extend(n.as_bytes());
        all.extend(t[n].0.as_bytes());
        all.extend(&t[n].1);
    }
    fnv(&all)
}

fn f16_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect()
}

/// Fingerprints of the plain specs, taken with the code before noisy drafts existed: golden
/// and bit-identity tests elsewhere depend on these exact weights.
#[test]
fn plain_synthetic_weights_keep_their_bits() {
    for (spec, want) in [
        ("synthetic:pythia-14m:seed=5", 0xcff9_c1f1_c637_34a5_u64),
        ("synthetic:pythia-14m:bf16:seed=3", 0x5dca_81ac_377a_1681),
        ("synthetic:pythia-14m:f32", 0xf613_3901_d3ae_114e),
    ] {
        let got = fingerprint(&tensors(spec));
        assert_eq!(got, want, "{spec}: fingerprint {got:#018x}");
    }
}

#[test]
fn zero_noise_and_all_layers_are_the_target_bit_for_bit() {
    let target = tensors("synthetic:pythia-14m:seed=2");
    for spec in [
        "synthetic:pythia-14m:seed=2:noise=0",
        "synthetic:pythia-14m:noise=0.0:noise-seed=9:seed=2",
        "synthetic:pythia-14m:seed=2:layers=6",
        "synthetic:pythia-14m:seed=2:logit-scale=1",
        "synthetic:pythia-14m:seed=2:layer-decay=1:logit-scale=1.0",
    ] {
        assert!(tensors(spec) == target, "{spec} differs from its target");
    }
}

#[test]
fn layers_keep_the_first_blocks_and_the_embeddings() {
    let target = tensors("synthetic:pythia-14m:seed=4");
    let files = ModelFiles::open("synthetic:pythia-14m:seed=4:layers=2").unwrap();
    assert_eq!(files.config.num_layers, 2);
    assert_eq!(files.weights.layers.len(), 2);
    let draft = tensors("synthetic:pythia-14m:seed=4:layers=2");
    for (name, t) in &draft {
        assert!(target.get(name) == Some(t), "{name} is not the target's");
    }
    let dropped: Vec<&String> = target.keys().filter(|n| !draft.contains_key(*n)).collect();
    assert!(!dropped.is_empty());
    assert!(
        dropped.iter().all(|n| {
            let layer = n
                .strip_prefix("gpt_neox.layers.")
                .and_then(|r| r.split('.').next());
            layer
                .and_then(|l| l.parse::<usize>().ok())
                .is_some_and(|l| l >= 2)
        }),
        "only layers 2.. may be dropped: {dropped:?}"
    );
    for name in [
        "gpt_neox.embed_in.weight",
        "embed_out.weight",
        "gpt_neox.final_layer_norm.weight",
    ] {
        assert!(draft.contains_key(name), "{name} missing");
    }
    // Noise on top of the kept layers: every kept tensor moves, the shapes stay.
    let noisy = tensors("synthetic:pythia-14m:seed=4:layers=2:noise=0.1");
    assert_eq!(noisy.len(), draft.len());
    for (name, (dtype, bytes)) in &noisy {
        assert_eq!((dtype, bytes.len()), (&draft[name].0, draft[name].1.len()));
        assert_ne!(bytes, &draft[name].1, "{name} got no noise");
    }
}

#[test]
fn noise_has_the_documented_scale_and_its_own_seed() {
    let target = tensors("synthetic:pythia-14m:seed=1");
    let noisy = tensors("synthetic:pythia-14m:seed=1:noise=0.5");
    let other = tensors("synthetic:pythia-14m:seed=1:noise=0.5:noise-seed=1");
    assert!(
        noisy == tensors("synthetic:pythia-14m:seed=1:noise=0.5"),
        "not deterministic"
    );
    // (tensor, the std it is drawn with): matrices and linear biases 0.02, LayerNorm weights
    // 0.1 (around 1), LayerNorm biases 0.05. Noise std must be σ times that.
    for (name, drawn_std) in [
        ("embed_out.weight", 0.02),
        ("gpt_neox.layers.3.mlp.dense_h_to_4h.weight", 0.02),
        ("gpt_neox.layers.3.mlp.dense_h_to_4h.bias", 0.02),
        ("gpt_neox.layers.0.input_layernorm.weight", 0.1),
        ("gpt_neox.layers.0.input_layernorm.bias", 0.05),
    ] {
        let t = f16_values(&target[name].1);
        let a = f16_values(&noisy[name].1);
        let b = f16_values(&other[name].1);
        let n = t.len() as f64;
        let diff =
            |x: &[f32]| -> Vec<f64> { x.iter().zip(&t).map(|(x, t)| f64::from(x - t)).collect() };
        let (da, db) = (diff(&a), diff(&b));
        let mean = da.iter().sum::<f64>() / n;
        let std = (da.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
        let want = 0.5 * drawn_std;
        // Standard error of a std estimate is std/√(2n); allow 6 of them plus f16 rounding.
        let tol = want * (6.0 / (2.0 * n).sqrt()) + 1e-4;
        println!("{name}: noise std {std:.6} (want {want:.6} ± {tol:.6}), mean {mean:+.6}, n {n}");
        assert!(
            (std - want).abs() <= tol,
            "{name}: noise std {std}, want {want}"
        );
        assert!(
            mean.abs() <= 6.0 * want / n.sqrt() + 1e-4,
            "{name}: noise mean {mean}"
        );
        // Two noise seeds give uncorrelated noise.
        let corr = da.iter().zip(&db).map(|(x, y)| x * y).sum::<f64>() / n / (std * std);
        assert!(
            corr.abs() < 6.0 / n.sqrt() + 0.01,
            "{name}: noise seeds correlate ({corr})"
        );
    }
}

/// Per-position agreement of a draft with its target along the target's greedy continuation:
/// greedy acceptance (argmax equal) and the random-sampling acceptance Σ min(p, q) at T = 1.
fn acceptance(
    target: &mut CpuModel,
    draft: &mut CpuModel,
    prompt: &[u32],
    new: usize,
) -> (f64, f64) {
    // The target's greedy continuation, then both models score it in one call.
    let mut seq = prompt.to_vec();
    target.truncate(0).unwrap();
    let mut logits = target.forward(prompt).unwrap();
    for _ in 0..new {
        let next = argmax(logits.last());
        seq.push(next);
        logits = target.forward(&[next]).unwrap();
    }
    target.truncate(0).unwrap();
    draft.truncate(0).unwrap();
    let scored = &seq[..seq.len() - 1];
    let (p, q) = (
        target.forward(scored).unwrap(),
        draft.forward(scored).unwrap(),
    );
    let (mut greedy, mut sampled) = (0.0, 0.0);
    for i in prompt.len() - 1..scored.len() {
        let (pr, qr) = (p.row(i), q.row(i));
        greedy += f64::from(u8::from(argmax(pr) == argmax(qr)));
        let (ps, qs) = (softmax(pr), softmax(qr));
        sampled += ps.iter().zip(&qs).map(|(a, b)| a.min(*b)).sum::<f64>();
    }
    let rows = (scored.len() + 1 - prompt.len()) as f64;
    (greedy / rows, sampled / rows)
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .unwrap() as u32
}

fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = row.iter().map(|&x| f64::from(x - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

/// Top-1 probability and entropy (nats) of a logits row.
fn peakedness(row: &[f32]) -> (f64, f64) {
    let p = softmax(row);
    let top = p.iter().copied().fold(0.0, f64::max);
    let h = -p
        .iter()
        .filter(|&&x| x > 0.0)
        .map(|x| x * x.ln())
        .sum::<f64>();
    (top, h)
}

fn model(spec: &str) -> CpuModel {
    let files = ModelFiles::open(spec).unwrap();
    CpuModel::new(files.config, files.weights, Some(64), Isa::detect()).unwrap()
}

/// Greedy and sampled acceptance of noisy and truncated drafts of `base`; returns the noise
/// rows `(σ, greedy, sampled)`.
fn measure(base: &str) -> Vec<(f64, f64, f64)> {
    let mut target = model(base);
    let prompt = Tokenizer::pythia()
        .encode("The history of the city begins")
        .unwrap();
    let last = target.forward(&prompt).unwrap();
    let (top, h) = peakedness(last.last());
    println!(
        "{base}: top-1 probability {top:.4}, entropy {h:.3} nats (uniform: {:.3})",
        (50304f64).ln()
    );
    let mut rows = Vec::new();
    for noise in [0.0, 0.05, 0.2, 0.5, 1.0] {
        let mut draft = model(&format!("{base}:noise={noise}"));
        let (g, s) = acceptance(&mut target, &mut draft, &prompt, 24);
        println!("  noise={noise}: greedy acceptance {g:.3}, sampled (T=1) acceptance {s:.3}");
        rows.push((noise, g, s));
    }
    rows
}

/// Greedy and sampled acceptance of the first-N-layers drafts of `base`, N = 1..=5.
fn measure_layers(base: &str) -> Vec<(f64, f64)> {
    let mut target = model(base);
    let prompt = Tokenizer::pythia()
        .encode("The history of the city begins")
        .unwrap();
    (1..=5)
        .map(|n| {
            let mut draft = model(&format!("{base}:layers={n}"));
            let (g, s) = acceptance(&mut target, &mut draft, &prompt, 24);
            println!("{base}:layers={n}: greedy acceptance {g:.3}, sampled (T=1) {s:.3}");
            (g, s)
        })
        .collect()
}

/// Without layer decay a truncated draft is far; with it, acceptance grows with the layers
/// kept and is high by the last ones.
#[test]
fn layer_decay_makes_truncated_drafts_near() {
    let plain = measure_layers("synthetic:pythia-70m:seed=1:logit-scale=8");
    let decayed = measure_layers("synthetic:pythia-70m:seed=1:logit-scale=8:layer-decay=0.5");
    assert!(plain[3].0 < 0.5, "{plain:?}");
    assert!(decayed[4].0 > 0.7 && decayed[4].1 > 0.7, "{decayed:?}");
    assert!(decayed[4].1 > decayed[0].1 + 0.2, "{decayed:?}");
    for (p, d) in plain.iter().zip(&decayed).skip(1) {
        assert!(
            d.1 > p.1,
            "decay must bring truncated drafts nearer: {plain:?} {decayed:?}"
        );
    }
}

#[test]
fn acceptance_falls_as_noise_grows() {
    let plain = measure("synthetic:pythia-70m:seed=1");
    let peaked = measure("synthetic:pythia-70m:seed=1:logit-scale=8");
    for rows in [&plain, &peaked] {
        assert_eq!(rows[0].1, 1.0, "σ = 0 must accept every greedy draft");
        assert!(
            (rows[0].2 - 1.0).abs() < 1e-9,
            "σ = 0: sampled acceptance {}",
            rows[0].2
        );
        for w in rows.windows(2) {
            assert!(
                w[1].2 < w[0].2,
                "sampled acceptance must fall with σ: {rows:?}"
            );
            assert!(
                w[1].1 <= w[0].1,
                "greedy acceptance must not rise with σ: {rows:?}"
            );
        }
        let (_, g_last, s_last) = rows[rows.len() - 1];
        assert!(
            g_last < 0.5 && s_last < 0.9,
            "σ = 1 should be far: {rows:?}"
        );
    }
    // The default weights are near-uniform: sampled acceptance stays high even at σ = 1.
    // logit-scale=8 makes it track σ (between 0 and 1, not pinned near 1).
    assert!(plain[4].2 > 0.6, "{plain:?}");
    assert!(peaked[4].2 < 0.5 && peaked[1].2 > 0.5, "{peaked:?}");
}
