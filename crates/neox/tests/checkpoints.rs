//! Checkpoint layouts: a sharded safetensors set loads to the same bits as the single file,
//! and every broken variant (a shard missing, a tensor in the wrong shard, an index that
//! points outside its folder, a header with an out-of-range offset, a NaN in the weights, a
//! `pytorch_model.bin`-only folder, a file given as the folder) is one error naming the
//! culprit; a `pytorch_model.bin` converts to the same tensors, and hostile ones (a pickle
//! that calls `os.system`, truncated or incomplete archives) are refused, running nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use spedec_neox::checkpoint::check_header;
use spedec_neox::pytorch::convert_to_safetensors;
use spedec_neox::{CpuModel, Isa, Lm, ModelFiles, Tokenizer};

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/fixtures/golden")
        .join(name)
}

fn err_of<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

/// A model folder with config, tokenizer and, unless `sharded` is `None`, the fixture's
/// `model.safetensors`; with `Some(n)`, its tensors split round-robin over `n` shards plus an
/// index instead.
fn folder(sharded: Option<usize>) -> tempfile::TempDir {
    let src = golden_dir("parallel-f16");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    std::fs::write(tmp.path().join("tokenizer.json"), Tokenizer::pythia_json()).unwrap();
    let Some(n) = sharded else {
        std::fs::copy(
            src.join("model.safetensors"),
            tmp.path().join("model.safetensors"),
        )
        .unwrap();
        return tmp;
    };
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let mut weight_map = BTreeMap::new();
    for k in 0..n {
        let file = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
        let mine: Vec<(String, TensorView)> = names
            .iter()
            .skip(k)
            .step_by(n)
            .map(|name| (name.to_string(), st.tensor(name).unwrap()))
            .collect();
        for (name, _) in &mine {
            weight_map.insert(name.clone(), file.clone());
        }
        safetensors::tensor::serialize_to_file(mine, None, &tmp.path().join(&file)).unwrap();
    }
    write_index(tmp.path(), &weight_map);
    tmp
}

fn write_index(dir: &Path, weight_map: &BTreeMap<String, String>) {
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map });
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
}

fn read_index(dir: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(v["weight_map"].clone()).unwrap()
}

fn logits(dir: &Path) -> Vec<f32> {
    let files = ModelFiles::open(dir.to_str().unwrap()).unwrap();
    let mut model = CpuModel::new(files.config, files.weights, None, Isa::detect()).unwrap();
    model.forward(&[3, 14, 159, 265, 358]).unwrap().into_vec()
}

#[test]
fn sharded_checkpoints_give_the_single_files_bits() {
    let want = logits(folder(None).path());
    for n in [1, 2, 3] {
        let got = logits(folder(Some(n)).path());
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{n} shards: logits differ from the single file"
        );
    }
}

#[test]
fn broken_shard_sets_name_the_culprit() {
    // A shard missing.
    let tmp = folder(Some(2));
    std::fs::remove_file(tmp.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = err_of(ModelFiles::open(tmp.path().to_str().unwrap()));
    assert!(
        err.contains("lists model-00002-of-00002.safetensors, which is missing"),
        "{err}"
    );

    // A tensor the index places in the other shard.
    let tmp = folder(Some(2));
    let mut map = read_index(tmp.path());
    let (name, file) = map
        .iter()
        .next()
        .map(|(n, f)| (n.clone(), f.clone()))
        .unwrap();
    let other = map.values().find(|f| **f != file).unwrap().clone();
    map.insert(name.clone(), other.clone());
    write_index(tmp.path(), &map);
    let err = err_of(ModelFiles::open(tmp.path().to_str().unwrap()));
    assert!(
        err.contains(&format!(
            "tensor {name:?} is in shard {file}, but the index lists it in {other}"
        )),
        "{err}"
    );

    // A tensor of a shard that the index does not list.
    let tmp = folder(Some(2));
    let mut map = read_index(tmp.path());
    map.remove(&name);
    write_index(tmp.path(), &map);
    let err = err_of(ModelFiles::open(tmp.path().to_str().unwrap()));
    assert!(err.contains("is not in the index"), "{err}");

    // An index that points outside its folder, or is not an index at all.
    let tmp = folder(Some(2));
    let mut map = read_index(tmp.path());
    map.insert(name.clone(), "../model.safetensors".into());
    write_index(tmp.path(), &map);
    let err = err_of(ModelFiles::open(tmp.path().to_str().unwrap()));
    assert!(err.contains("is not a .safetensors file name"), "{err}");
    std::fs::write(tmp.path().join("model.safetensors.index.json"), b"[1, 2]").unwrap();
    let err = err_of(ModelFiles::open(tmp.path().to_str().unwrap()));
    assert!(err.contains("weight_map"), "{err}");
}

#[test]
fn folders_without_safetensors_and_files_as_folders_are_named() {
    let tmp = folder(None);
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    std::fs::write(tmp.path().join("pytorch_model.bin"), b"PK").unwrap();
    let err = err_of(ModelFiles::open(tmp.path().to_str().unwrap()));
    assert!(err.contains("has only pytorch_model.bin"), "{err}");

    let file = tmp.path().join("config.json");
    let err = err_of(ModelFiles::open(file.to_str().unwrap()));
    assert!(err.contains("is not a folder"), "{err}");
}

/// The fixture's bytes with the header rewritten by `edit` (the data section unchanged).
fn with_header(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Vec<u8> {
    let bytes = std::fs::read(golden_dir("parallel-f16").join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

#[test]
fn header_errors_name_the_broken_tensor() {
    assert!(check_header(&with_header(|_| {})).is_ok());
    let broken = "gpt_neox.layers.0.mlp.dense_4h_to_h.weight";
    // An end offset past the data section.
    let bytes = with_header(|h| h[broken]["data_offsets"][1] = serde_json::json!(1u64 << 40));
    let err = format!("{:#}", check_header(&bytes).unwrap_err());
    assert!(err.contains(broken) && err.contains("outside"), "{err}");
    // A size that does not match dtype × shape.
    let bytes = with_header(|h| h[broken]["shape"] = serde_json::json!([128, 511]));
    let err = format!("{:#}", check_header(&bytes).unwrap_err());
    assert!(err.contains(broken) && err.contains("needs"), "{err}");
    // A shape whose element count overflows.
    let bytes = with_header(|h| h[broken]["shape"] = serde_json::json!([u64::MAX, 3]));
    let err = format!("{:#}", check_header(&bytes).unwrap_err());
    assert!(err.contains(broken) && err.contains("overflows"), "{err}");
    // An unknown dtype, and a header length past the end of the file.
    let bytes = with_header(|h| h[broken]["dtype"] = serde_json::json!("F128"));
    let err = format!("{:#}", check_header(&bytes).unwrap_err());
    assert!(err.contains(broken) && err.contains("F128"), "{err}");
    let err = format!("{:#}", check_header(&u64::MAX.to_le_bytes()).unwrap_err());
    assert!(err.contains("header length"), "{err}");
}

#[test]
fn non_finite_weights_name_the_tensor() {
    let tmp = folder(None);
    let path = tmp.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let name = "gpt_neox.layers.1.attention.dense.weight";
    let begin = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    // Element 7 becomes an f16 NaN.
    let at = 8 + n + begin + 7 * 2;
    bytes[at..at + 2].copy_from_slice(&0x7e00u16.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = err_of(ModelFiles::open(tmp.path().to_str().unwrap()));
    assert!(
        err.contains(name) && err.contains("NaN or infinity at element 7"),
        "{err}"
    );
}

/// The committed `pytorch_model.bin` fixture (`scripts/make_pytorch_fixture.py` from the
/// parallel-f16 fixture, with a transposed view and the bool / 0-d buffers older
/// checkpoints carry).
fn pytorch_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures/pytorch/parallel-f16.bin")
}

#[test]
fn pytorch_bin_converts_to_the_same_tensors_and_logits() {
    let tmp = folder(None);
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let out = tmp.path().join("model.safetensors");
    let n = convert_to_safetensors(&pytorch_fixture(), &out).unwrap();
    assert_eq!(n, 28 + 4, "parameters plus two buffers per layer");
    // Every parameter has the safetensors fixture's bytes, the transposed one included.
    let want = std::fs::read(golden_dir("parallel-f16").join("model.safetensors")).unwrap();
    let want = SafeTensors::deserialize(&want).unwrap();
    let got = std::fs::read(&out).unwrap();
    let got = SafeTensors::deserialize(&got).unwrap();
    for name in want.names() {
        let (a, b) = (got.tensor(name).unwrap(), want.tensor(name).unwrap());
        assert_eq!(
            (a.dtype(), a.shape(), a.data()),
            (b.dtype(), b.shape(), b.data()),
            "{name}"
        );
    }
    let bias = got.tensor("gpt_neox.layers.1.attention.bias").unwrap();
    assert_eq!(
        (bias.dtype(), bias.shape()),
        (safetensors::Dtype::BOOL, &[1, 1, 4, 4][..])
    );
    assert_eq!(
        got.tensor("gpt_neox.layers.0.attention.masked_bias")
            .unwrap()
            .shape(),
        &[] as &[usize]
    );
    // And the converted folder runs to the same bits.
    let reference = logits(folder(None).path());
    assert!(logits(tmp.path())
        .iter()
        .zip(&reference)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

/// A zip of `members` (name, bytes), all stored.
fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in members {
        w.start_file(*name, stored).unwrap();
        std::io::Write::write_all(&mut w, bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn hostile_pytorch_files_are_refused_without_running_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("pytorch_model.bin");
    let out = tmp.path().join("model.safetensors");
    let refused = |bytes: &[u8]| -> String {
        std::fs::write(&bin, bytes).unwrap();
        let err = format!("{:#}", convert_to_safetensors(&bin, &out).unwrap_err());
        assert!(!out.exists(), "no output after a refusal");
        err
    };
    // `pickle.dumps` of a call to os.system('touch pwned') (protocol 2).
    let evil = b"\x80\x02cposix\nsystem\nq\x00X\x0b\x00\x00\x00touch pwnedq\x01\x85q\x02Rq\x03.";
    let err = refused(&zip_of(&[("archive/data.pkl", evil)]));
    assert!(
        err.contains("posix.system") && err.contains("refused"),
        "{err}"
    );
    assert!(!Path::new("pwned").exists());
    // Not a zip, a zip without data.pkl, and a truncated archive.
    assert!(refused(b"\x80\x02}q\x00.").contains("not a zip archive"));
    assert!(refused(&zip_of(&[("archive/version", b"3\n")])).contains("no data.pkl"));
    let real = std::fs::read(pytorch_fixture()).unwrap();
    for cut in [real.len() / 3, real.len() - 100] {
        let err = refused(&real[..cut]);
        assert!(err.contains("invalid PyTorch checkpoint"), "{err}");
    }
    // A storage member missing, and one with fewer bytes than its tensor needs.
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(real.clone())).unwrap();
    let pickle = {
        // torch.save names the archive's folder after the file (`parallel-f16/data.pkl`).
        let name = zip
            .file_names()
            .find(|n| n.ends_with("/data.pkl"))
            .unwrap()
            .to_string();
        let mut m = zip.by_name(&name).unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut m, &mut v).unwrap();
        v
    };
    let err = refused(&zip_of(&[("archive/data.pkl", &pickle)]));
    assert!(
        err.contains("storage of tensor") && err.contains("archive/data/0"),
        "{err}"
    );
    let err = refused(&zip_of(&[
        ("archive/data.pkl", &pickle),
        ("archive/data/0", b"\x00\x01"),
    ]));
    assert!(err.contains("storage 0 has 2 bytes"), "{err}");
    // No output file was ever created, and the original is untouched.
    assert_eq!(std::fs::read(pytorch_fixture()).unwrap(), real);
}
