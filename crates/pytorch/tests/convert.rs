//! Conversion to safetensors: the committed `pytorch_model.bin` fixture and sharded sets
//! built from the golden fixture's tensors convert to exactly the safetensors fixture's
//! bytes, tensor by tensor; a sharded set whose index disagrees with its shards is refused,
//! leaving nothing behind.

#[path = "support/torch_zip.rs"]
mod torch_zip;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use spedec_pytorch::{
    convert_sharded, convert_to_safetensors, read_state_dict, BIN_INDEX, SAFETENSORS_INDEX,
};
use torch_zip::{torch_save, Saved};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures")
}

fn golden() -> Vec<u8> {
    std::fs::read(fixtures().join("golden/parallel-f16/model.safetensors")).unwrap()
}

fn dtype_name(d: safetensors::Dtype) -> &'static str {
    match d {
        safetensors::Dtype::F16 => "F16",
        safetensors::Dtype::BF16 => "BF16",
        safetensors::Dtype::F32 => "F32",
        safetensors::Dtype::BOOL => "BOOL",
        other => panic!("{other:?}"),
    }
}

/// Every tensor of `want` is in `got` with the same dtype, shape and bytes.
fn assert_same_tensors(got: &SafeTensors, want: &SafeTensors) {
    for name in want.names() {
        let a = got.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let b = want.tensor(name).unwrap();
        assert_eq!(
            (a.dtype(), a.shape(), a.data()),
            (b.dtype(), b.shape(), b.data()),
            "{name}"
        );
    }
}

/// Names of every file in `dir`.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn the_committed_bin_converts_to_the_safetensors_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model.safetensors");
    let n = convert_to_safetensors(&fixtures().join("pytorch/parallel-f16.bin"), &out).unwrap();
    let want = golden();
    let want = SafeTensors::deserialize(&want).unwrap();
    assert_eq!(n, want.len() + 4, "plus two buffers in each of two layers");
    let got = std::fs::read(&out).unwrap();
    assert_same_tensors(&SafeTensors::deserialize(&got).unwrap(), &want);
    assert_eq!(
        listing(tmp.path()),
        ["model.safetensors"],
        "no temporary left"
    );
}

/// The golden tensors split round-robin over `n` `.bin` shards in `dir`, with their index.
fn sharded_bin(dir: &Path, n: usize) -> BTreeMap<String, String> {
    let bytes = golden();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let views: Vec<_> = names.iter().map(|n| (*n, st.tensor(n).unwrap())).collect();
    let mut weight_map = BTreeMap::new();
    for k in 0..n {
        let file = format!("pytorch_model-{:05}-of-{n:05}.bin", k + 1);
        let mine: Vec<Saved> = views
            .iter()
            .skip(k)
            .step_by(n)
            .map(|(name, v)| Saved {
                name,
                dtype: dtype_name(v.dtype()),
                shape: v.shape(),
                data: v.data(),
            })
            .collect();
        for t in &mine {
            weight_map.insert(t.name.to_string(), file.clone());
        }
        std::fs::write(dir.join(&file), torch_save(&mine)).unwrap();
    }
    write_index(dir, &weight_map);
    weight_map
}

fn write_index(dir: &Path, weight_map: &BTreeMap<String, String>) {
    let json = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join(BIN_INDEX), json.to_string()).unwrap();
}

#[test]
fn the_test_writer_makes_what_the_reader_reads() {
    // The torch.save writer the download tests use, checked against the reader.
    let bytes = golden();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let names = st.names();
    let views: Vec<_> = names.iter().map(|n| (*n, st.tensor(n).unwrap())).collect();
    let saved: Vec<Saved> = views
        .iter()
        .map(|(name, v)| Saved {
            name,
            dtype: dtype_name(v.dtype()),
            shape: v.shape(),
            data: v.data(),
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("pytorch_model.bin");
    std::fs::write(&bin, torch_save(&saved)).unwrap();
    let tensors = read_state_dict(&bin).unwrap();
    assert_eq!(tensors.len(), saved.len());
    for (t, s) in tensors.iter().zip(&saved) {
        assert_eq!(
            (
                t.name.as_str(),
                dtype_name(t.dtype),
                &t.shape[..],
                &t.data[..]
            ),
            (s.name, s.dtype, s.shape, s.data)
        );
    }
}

#[test]
fn a_sharded_bin_converts_to_sharded_safetensors_with_the_same_tensors() {
    let src = tempfile::tempdir().unwrap();
    let bin_map = sharded_bin(src.path(), 2);
    let out = tempfile::tempdir().unwrap();
    let done = convert_sharded(&src.path().join(BIN_INDEX), out.path()).unwrap();
    assert_eq!(done.tensors, bin_map.len());
    assert_eq!(
        listing(out.path()),
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            SAFETENSORS_INDEX
        ]
    );
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&done.index).unwrap()).unwrap();
    let map = index["weight_map"].as_object().unwrap();
    assert_eq!(map.len(), bin_map.len());
    let want = golden();
    let want = SafeTensors::deserialize(&want).unwrap();
    let mut total = 0;
    for shard in &done.shards {
        let bytes = std::fs::read(shard).unwrap();
        let got = SafeTensors::deserialize(&bytes).unwrap();
        let shard_name = shard.file_name().unwrap().to_str().unwrap();
        for (name, view) in got.tensors() {
            assert_eq!(map[&name], shard_name, "{name}");
            let w = want.tensor(&name).unwrap();
            assert_eq!(
                (view.dtype(), view.shape(), view.data()),
                (w.dtype(), w.shape(), w.data()),
                "{name}"
            );
            total += 1;
        }
    }
    assert_eq!(total, want.len(), "every tensor, once");
}

#[test]
fn a_sharded_bin_that_disagrees_with_its_index_leaves_nothing() {
    let src = tempfile::tempdir().unwrap();
    let mut map = sharded_bin(src.path(), 2);
    let index = src.path().join(BIN_INDEX);
    let out = tempfile::tempdir().unwrap();
    let err_of = |index: &Path| format!("{:#}", convert_sharded(index, out.path()).unwrap_err());

    // A tensor of shard 2 listed in shard 1: found while reading shard 2, after shard 1
    // was written, which is removed again.
    let moved = map
        .iter()
        .find(|(_, f)| f.contains("00002-of"))
        .map(|(n, _)| n.clone())
        .unwrap();
    map.insert(moved.clone(), "pytorch_model-00001-of-00002.bin".into());
    write_index(src.path(), &map);
    let err = err_of(&index);
    assert!(
        err.contains(&format!("holds tensor {moved:?}"))
            && err.contains("lists in pytorch_model-00001-of-00002.bin"),
        "{err}"
    );
    assert!(listing(out.path()).is_empty(), "{:?}", listing(out.path()));

    // A tensor listed that no shard holds.
    map.insert(moved.clone(), "pytorch_model-00002-of-00002.bin".into());
    map.insert(
        "gpt_neox.extra".into(),
        "pytorch_model-00001-of-00002.bin".into(),
    );
    write_index(src.path(), &map);
    let err = err_of(&index);
    assert!(
        err.contains("lists tensor \"gpt_neox.extra\" in pytorch_model-00001-of-00002.bin, which does not hold it"),
        "{err}"
    );
    assert!(listing(out.path()).is_empty());

    // A shard missing, and an index pointing outside its folder.
    map.remove("gpt_neox.extra");
    write_index(src.path(), &map);
    std::fs::remove_file(src.path().join("pytorch_model-00002-of-00002.bin")).unwrap();
    let err = err_of(&index);
    assert!(
        err.contains("cannot open PyTorch checkpoint")
            && err.contains("pytorch_model-00002-of-00002.bin"),
        "{err}"
    );
    map.insert(moved, "../pytorch_model-00002-of-00002.bin".into());
    write_index(src.path(), &map);
    let err = err_of(&index);
    assert!(err.contains("is not a .bin file name"), "{err}");
    assert!(listing(out.path()).is_empty());
}
