//! Every kind of bad input gives an error that names what was wrong — never a panic.

use std::path::{Path, PathBuf};

use spedec_neox::{Config, CpuModel, Isa, Lm, ModelFiles, Tokenizer, Weights};

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/fixtures/golden")
        .join(name)
}

/// A complete model folder (golden weights + the Pythia tokenizer) in a temporary dir.
fn model_folder() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(golden_dir("parallel-f16").join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::write(tmp.path().join("tokenizer.json"), Tokenizer::pythia_json()).unwrap();
    tmp
}

fn err_of<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_good_folder_loads() {
    let tmp = model_folder();
    let files = ModelFiles::open(tmp.path().to_str().unwrap()).unwrap();
    assert_eq!(files.config.hidden_size, 128);
}

#[test]
fn missing_folder_and_files_are_named() {
    let err = err_of(ModelFiles::open("/nonexistent/model"));
    assert!(
        err.contains("/nonexistent/model") && err.contains("does not exist"),
        "{err}"
    );
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        let tmp = model_folder();
        std::fs::remove_file(tmp.path().join(f)).unwrap();
        let err = err_of(ModelFiles::open(tmp.path().to_str().unwrap()));
        assert!(err.contains(&format!("missing {f}")), "{err}");
    }
}

#[test]
fn truncated_and_corrupt_safetensors_are_refused() {
    let tmp = model_folder();
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = err_of(ModelFiles::open(tmp.path().to_str().unwrap()));
    assert!(
        err.contains("model.safetensors") && err.contains("truncated or corrupt"),
        "{err}"
    );

    std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    let err = err_of(ModelFiles::open(tmp.path().to_str().unwrap()));
    assert!(err.contains("truncated or corrupt"), "{err}");
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    let dir = golden_dir("parallel-f16");
    let mut config = Config::from_file(&dir.join("config.json")).unwrap();
    config.intermediate_size = 256;
    let err = err_of(Weights::load(&dir.join("model.safetensors"), &config));
    assert!(
        err.contains("gpt_neox.layers.0.mlp.dense_h_to_4h.weight")
            && err.contains("[512, 128]")
            && err.contains("[256, 128]"),
        "{err}"
    );
}

#[test]
fn wrong_dtype_and_missing_tensor_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.safetensors");
    let config = Config::from_file(&golden_dir("parallel-f16").join("config.json")).unwrap();
    let data = vec![0u8; 1000 * 128 * 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![1000, 128], &data)
            .unwrap();
    safetensors::tensor::serialize_to_file([("gpt_neox.embed_in.weight", view)], None, &path)
        .unwrap();
    let err = err_of(Weights::load(&path, &config));
    assert!(
        err.contains("gpt_neox.embed_in.weight") && err.contains("I32"),
        "{err}"
    );

    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1000, 128], &data)
            .unwrap();
    safetensors::tensor::serialize_to_file([("gpt_neox.embed_in.weight", view)], None, &path)
        .unwrap();
    let err = err_of(Weights::load(&path, &config));
    assert!(
        err.contains("missing tensor \"gpt_neox.layers.0.input_layernorm.weight\""),
        "{err}"
    );
}

#[test]
fn config_missing_a_key_is_named() {
    let tmp = model_folder();
    let path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"num_hidden_layers\"", "\"num_layers_typo\""),
    )
    .unwrap();
    let err = err_of(ModelFiles::open(tmp.path().to_str().unwrap()));
    assert!(
        err.contains("config.json") && err.contains("num_hidden_layers"),
        "{err}"
    );
}

#[test]
fn bad_tokens_and_long_contexts_are_refused() {
    let dir = golden_dir("parallel-f16");
    let config = Config::from_file(&dir.join("config.json")).unwrap();
    let weights = Weights::load(&dir.join("model.safetensors"), &config).unwrap();
    let mut model = CpuModel::new(config, weights, None, Isa::detect()).unwrap();
    let err = err_of(model.forward(&[5, 1000]));
    assert!(
        err.contains("token id 1000") && err.contains("1000 ids"),
        "{err}"
    );
    let err = err_of(model.forward(&[]));
    assert!(err.contains("at least one token"), "{err}");
    let err = err_of(model.forward(&vec![1; 65]));
    assert!(
        err.contains("context too long") && err.contains("64"),
        "{err}"
    );
    // Nothing was cached by the failed calls.
    assert_eq!(model.len(), 0);
}

#[test]
fn synthetic_specs_parse_and_bad_ones_are_named() {
    let files = ModelFiles::open("synthetic:pythia-14m:bf16:seed=3").unwrap();
    assert_eq!(files.config.hidden_size, 128);
    assert_eq!(files.weights.embed_out.dtype(), spedec_neox::Dtype::Bf16);
    let err = err_of(ModelFiles::open("synthetic:pythia-13m"));
    assert!(err.contains("pythia-13m"), "{err}");
    let err = err_of(ModelFiles::open("synthetic:pythia-14m:f8"));
    assert!(err.contains("\"f8\""), "{err}");
}

#[test]
fn written_folders_load_back_identically() {
    let files = ModelFiles::open("synthetic:pythia-14m:seed=5").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    files
        .write_dir(tmp.path(), Tokenizer::pythia_json())
        .unwrap();
    let back = ModelFiles::open(tmp.path().to_str().unwrap()).unwrap();
    assert_eq!(back.config, files.config);
    let mut a = CpuModel::new(files.config, files.weights, Some(16), Isa::detect()).unwrap();
    let mut b = CpuModel::new(back.config, back.weights, Some(16), Isa::detect()).unwrap();
    assert_eq!(
        a.forward(&[1, 2, 3]).unwrap(),
        b.forward(&[1, 2, 3]).unwrap()
    );
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}
