//! Download tests of the weight layouts against the loopback hub: a sharded safetensors repo,
//! a `pytorch_model.bin`-only repo, a sharded `.bin` repo, a repo with both safetensors and
//! `.bin`, and broken variants (a shard missing, a shard with the wrong sha256, an unsafe
//! shard name, a pickle that asks for `os.system`, a truncated storage, a truncated
//! archive). The tensors a model folder ends up with are compared byte for byte with the
//! single-safetensors fixture they were made from.

#[path = "../../../crates/pytorch/tests/support/torch_zip.rs"]
mod torch_zip;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

use super::convert::MARKER;
use super::execute;
use super::tests::hub_server::{Route, Server};
use super::tests::{
    err_text, fixture, leftovers, model_cache, plan, serve_lfs, serve_plain, sha256, COMMIT, REPO,
};
use torch_zip::{torch_save, zip_of, Saved};

fn data_fixture(path: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/fixtures")
        .join(path);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The safetensors fixture every layout is made from.
fn golden() -> Vec<u8> {
    data_fixture("golden/parallel-f16/model.safetensors")
}

/// The committed `pytorch_model.bin` of the same weights (its hash is not pinned here: the
/// fixture may be regenerated with torch).
fn golden_bin() -> Vec<u8> {
    data_fixture("pytorch/parallel-f16.bin")
}

/// Serves `bytes` as LFS file `name` of the repository at `main`.
fn serve_file(server: &Server, name: &str, bytes: Vec<u8>) -> String {
    serve_bytes_as(server, name, &bytes, bytes.clone())
}

/// Serves LFS file `name` announcing the sha256 and size of `announced`, delivering `body`.
fn serve_bytes_as(server: &Server, name: &str, announced: &[u8], body: Vec<u8>) -> String {
    let sha = sha256(announced);
    let path = format!("/{REPO}/resolve/main/{name}");
    serve_lfs(
        server,
        &path,
        COMMIT,
        &sha,
        announced.len(),
        Route::file(body, vec![]),
    );
    sha
}

fn serve_config_and_tokenizer(server: &Server) {
    for name in ["config.json", "tokenizer.json"] {
        let bytes = fixture(&format!("tiny-model/{name}"));
        serve_plain(server, REPO, "main", name, bytes);
    }
}

fn model_dir(dir: &Path) -> PathBuf {
    dir.join("data/models/pythia-70m")
}

/// Names in `dir` (none if it does not exist), sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Every tensor of the golden fixture appears in `files` (safetensors files) exactly once,
/// with the same dtype, shape and bytes; returns how many tensors the files hold in all.
fn assert_golden_tensors(files: &[PathBuf]) -> usize {
    let want = golden();
    let want = SafeTensors::deserialize(&want).unwrap();
    let mut seen = BTreeMap::new();
    let mut total = 0;
    for file in files {
        let bytes = fs::read(file).unwrap();
        let got = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in got.tensors() {
            total += 1;
            if let Ok(w) = want.tensor(&name) {
                assert_eq!(
                    (view.dtype(), view.shape(), view.data()),
                    (w.dtype(), w.shape(), w.data()),
                    "{name} in {}",
                    file.display()
                );
                assert!(seen.insert(name.clone(), ()).is_none(), "{name} twice");
            }
        }
    }
    assert_eq!(seen.len(), want.len(), "every golden tensor is there");
    total
}

/// The golden tensors split round-robin over two files of `ext` (`safetensors` or `bin`):
/// the files' names and bytes, and the index text mapping each tensor to its file.
fn split_golden(stem: &str, ext: &str) -> (Vec<(String, Vec<u8>)>, String) {
    let bytes = golden();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let mut weight_map = BTreeMap::new();
    let mut files = Vec::new();
    for k in 0..2 {
        let file = format!("{stem}-{:05}-of-00002.{ext}", k + 1);
        let mine: Vec<_> = names
            .iter()
            .skip(k)
            .step_by(2)
            .map(|n| (n.to_string(), st.tensor(n).unwrap()))
            .collect();
        for (name, _) in &mine {
            weight_map.insert(name.clone(), file.clone());
        }
        let body = if ext == "safetensors" {
            safetensors::tensor::serialize(mine, None).unwrap()
        } else {
            let dtypes: Vec<String> = mine
                .iter()
                .map(|(_, v)| format!("{:?}", v.dtype()))
                .collect();
            let saved: Vec<Saved> = mine
                .iter()
                .zip(&dtypes)
                .map(|((name, v), dtype)| Saved {
                    name,
                    dtype,
                    shape: v.shape(),
                    data: v.data(),
                })
                .collect();
            torch_save(&saved)
        };
        files.push((file, body));
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    (files, index.to_string())
}

#[test]
fn a_sharded_repo_gets_its_index_and_every_shard_each_verified() {
    let server = Server::start();
    serve_config_and_tokenizer(&server);
    let (shards, index) = split_golden("model", "safetensors");
    serve_plain(
        &server,
        REPO,
        "main",
        "model.safetensors.index.json",
        index.clone().into_bytes(),
    );
    let mut shas = Vec::new();
    for (name, bytes) in &shards {
        shas.push(serve_file(&server, name, bytes.clone()));
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(&server.base, dir.path());
    execute(&plan).unwrap();

    let out = model_dir(dir.path());
    assert_eq!(
        names_in(&out),
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json"
        ]
    );
    for (name, bytes) in &shards {
        assert!(
            is_symlink(&out.join(name)) || !cfg!(unix),
            "{name} is linked"
        );
        assert_eq!(&fs::read(out.join(name)).unwrap(), bytes, "{name}");
    }
    assert_eq!(
        fs::read_to_string(out.join("model.safetensors.index.json")).unwrap(),
        index
    );
    for sha in &shas {
        assert!(model_cache(dir.path()).join("blobs").join(sha).is_file());
    }
    let files: Vec<PathBuf> = shards.iter().map(|(n, _)| out.join(n)).collect();
    assert_golden_tensors(&files);
    // The layout was decided from the hub's answers: model.safetensors was asked for (404);
    // no .bin was.
    assert_eq!(
        server
            .requests("HEAD", &format!("/{REPO}/resolve/main/model.safetensors"))
            .len(),
        2
    );
    assert!(server
        .requests("HEAD", &format!("/{REPO}/resolve/main/pytorch_model"))
        .is_empty());
    assert!(leftovers(dir.path()).is_empty());

    // A second run downloads nothing.
    let gets = server.requests("GET", "/cdn/").len();
    execute(&plan).unwrap();
    assert_eq!(server.requests("GET", "/cdn/").len(), gets);

    // Offline, the layout is found in the cache alone.
    fs::remove_dir_all(dir.path().join("data")).unwrap();
    let requests = server.log().len();
    let mut offline = plan;
    offline.hub.offline = true;
    execute(&offline).unwrap();
    assert_eq!(server.log().len(), requests, "no request offline");
    assert_golden_tensors(&files);
}

#[test]
fn a_shard_the_hub_does_not_have_is_named_and_nothing_is_linked() {
    let server = Server::start();
    serve_config_and_tokenizer(&server);
    let (shards, index) = split_golden("model", "safetensors");
    serve_plain(
        &server,
        REPO,
        "main",
        "model.safetensors.index.json",
        index.into_bytes(),
    );
    serve_file(&server, &shards[0].0, shards[0].1.clone());
    let dir = tempfile::tempdir().unwrap();
    let msg = err_text(execute(&plan(&server.base, dir.path())));
    assert!(
        msg.starts_with(
            "EleutherAI/pythia-70m@main: model.safetensors.index.json lists the shard \
             model-00002-of-00002.safetensors, which cannot be had (EleutherAI/pythia-70m@main: \
             model-00002-of-00002.safetensors: not found (HTTP 404))"
        ),
        "{msg}"
    );
    assert!(
        names_in(&model_dir(dir.path())).is_empty(),
        "nothing linked"
    );
}

#[test]
fn a_shard_with_the_wrong_sha256_is_refused_and_nothing_is_left_under_its_name() {
    let server = Server::start();
    serve_config_and_tokenizer(&server);
    let (shards, index) = split_golden("model", "safetensors");
    serve_plain(
        &server,
        REPO,
        "main",
        "model.safetensors.index.json",
        index.into_bytes(),
    );
    serve_file(&server, &shards[0].0, shards[0].1.clone());
    let mut bad = shards[1].1.clone();
    let at = bad.len() - 7;
    bad[at] ^= 0x40;
    let sha = serve_bytes_as(&server, &shards[1].0, &shards[1].1, bad);
    let dir = tempfile::tempdir().unwrap();
    let msg = err_text(execute(&plan(&server.base, dir.path())));
    assert!(
        msg.starts_with(
            "sha256 mismatch for EleutherAI/pythia-70m@main: model-00002-of-00002.safetensors: \
             expected "
        ) && msg.contains(&sha),
        "{msg}"
    );
    let cache = model_cache(dir.path());
    assert!(!cache.join("blobs").join(&sha).exists());
    assert!(fs::symlink_metadata(cache.join("snapshots").join(COMMIT).join(&shards[1].0)).is_err());
    assert!(
        names_in(&model_dir(dir.path())).is_empty(),
        "nothing linked"
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

#[test]
fn an_index_naming_a_shard_outside_its_folder_is_refused_before_any_shard_is_fetched() {
    let server = Server::start();
    serve_config_and_tokenizer(&server);
    for shard in [
        "../model-00001-of-00001.safetensors",
        "/etc/passwd.safetensors",
    ] {
        let index = serde_json::json!({"weight_map": {"gpt_neox.embed_in.weight": shard}});
        serve_plain(
            &server,
            REPO,
            "main",
            "model.safetensors.index.json",
            index.to_string().into_bytes(),
        );
        let dir = tempfile::tempdir().unwrap();
        let msg = err_text(execute(&plan(&server.base, dir.path())));
        assert!(
            msg.starts_with(&format!(
                "EleutherAI/pythia-70m@main: model.safetensors.index.json: shard {shard:?} is \
                 not a plain .safetensors file name"
            )),
            "{msg}"
        );
        assert!(names_in(&model_dir(dir.path())).is_empty());
    }
    assert!(
        server.requests("HEAD", "/cdn/").is_empty() && server.requests("GET", "/cdn/").is_empty()
    );
}

#[test]
fn a_bin_only_repo_is_converted_once_into_a_real_model_safetensors() {
    let server = Server::start();
    serve_config_and_tokenizer(&server);
    let bin = golden_bin();
    let sha = serve_file(&server, "pytorch_model.bin", bin.clone());
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(&server.base, dir.path());
    execute(&plan).unwrap();

    let out = model_dir(dir.path());
    assert_eq!(
        names_in(&out),
        [MARKER, "config.json", "model.safetensors", "tokenizer.json"]
    );
    let converted = out.join("model.safetensors");
    assert!(!is_symlink(&converted), "a real file, not a link");
    let total = assert_golden_tensors(std::slice::from_ref(&converted));
    assert_eq!(
        total,
        SafeTensors::deserialize(&golden()).unwrap().len() + 4,
        "plus the buffers"
    );
    // The .bin stays in the HF cache, verified.
    assert_eq!(
        fs::read(model_cache(dir.path()).join("blobs").join(&sha)).unwrap(),
        bin
    );
    assert!(fs::read_to_string(out.join(MARKER)).unwrap().contains(&sha));

    // A second run finds the converted file: no download, no conversion.
    let before = fs::metadata(&converted).unwrap().modified().unwrap();
    let gets = server.requests("GET", "/cdn/").len();
    std::thread::sleep(std::time::Duration::from_millis(20));
    execute(&plan).unwrap();
    assert_eq!(server.requests("GET", "/cdn/").len(), gets);
    assert_eq!(
        fs::metadata(&converted).unwrap().modified().unwrap(),
        before
    );
    // A converted file that was removed is made again.
    fs::remove_file(&converted).unwrap();
    execute(&plan).unwrap();
    assert_golden_tensors(&[converted]);
}

#[test]
fn safetensors_win_over_a_bin_which_is_never_fetched() {
    let server = Server::start();
    serve_config_and_tokenizer(&server);
    let st = golden();
    serve_file(&server, "model.safetensors", st.clone());
    serve_file(&server, "pytorch_model.bin", golden_bin());
    let dir = tempfile::tempdir().unwrap();
    execute(&plan(&server.base, dir.path())).unwrap();
    let out = model_dir(dir.path());
    assert_eq!(
        names_in(&out),
        ["config.json", "model.safetensors", "tokenizer.json"]
    );
    assert!(is_symlink(&out.join("model.safetensors")) || !cfg!(unix));
    assert_eq!(fs::read(out.join("model.safetensors")).unwrap(), st);
    let asked: Vec<String> = server
        .log()
        .into_iter()
        .map(|l| l.target)
        .filter(|t| t.contains("pytorch_model") || t.contains(".index.json"))
        .collect();
    assert!(asked.is_empty(), "{asked:?}");
}

#[test]
fn a_sharded_bin_repo_is_converted_once_into_safetensors_shards() {
    let server = Server::start();
    serve_config_and_tokenizer(&server);
    let (shards, index) = split_golden("pytorch_model", "bin");
    serve_plain(
        &server,
        REPO,
        "main",
        "pytorch_model.bin.index.json",
        index.into_bytes(),
    );
    for (name, bytes) in &shards {
        serve_file(&server, name, bytes.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(&server.base, dir.path());
    execute(&plan).unwrap();
    let out = model_dir(dir.path());
    let converted = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    assert_eq!(
        names_in(&out),
        [
            MARKER,
            "config.json",
            converted[0],
            converted[1],
            "model.safetensors.index.json",
            "tokenizer.json"
        ]
    );
    let files: Vec<PathBuf> = converted.iter().map(|n| out.join(n)).collect();
    assert!(files.iter().all(|f| !is_symlink(f)));
    assert_golden_tensors(&files);
    let index: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(out.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        index["weight_map"].as_object().unwrap().len(),
        SafeTensors::deserialize(&golden()).unwrap().len()
    );
    let before = fs::metadata(&files[0]).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    execute(&plan).unwrap();
    assert_eq!(
        fs::metadata(&files[0]).unwrap().modified().unwrap(),
        before,
        "not converted again"
    );
}

/// Runs a download of a `.bin`-only repo serving `bin`; returns the error and checks that
/// the model folder holds no weights and no temporary file.
fn refused_bin(bin: Vec<u8>) -> String {
    let server = Server::start();
    serve_config_and_tokenizer(&server);
    serve_file(&server, "pytorch_model.bin", bin);
    let dir = tempfile::tempdir().unwrap();
    let msg = err_text(execute(&plan(&server.base, dir.path())));
    assert!(
        names_in(&model_dir(dir.path())).is_empty(),
        "{:?}",
        names_in(&model_dir(dir.path()))
    );
    msg
}

#[test]
fn a_pickle_that_asks_for_os_system_is_refused_and_nothing_is_written() {
    // `pickle.dumps` of a call to os.system('touch pwned') (protocol 2), as data.pkl.
    let evil = b"\x80\x02cposix\nsystem\nq\x00X\x0b\x00\x00\x00touch pwnedq\x01\x85q\x02Rq\x03.";
    let msg = refused_bin(zip_of(&[
        ("archive/data.pkl", evil),
        ("archive/version", b"3\n"),
    ]));
    assert!(msg.starts_with("converting "), "{msg}");
    assert!(
        msg.contains(
            "the pickle asks for posix.system, which a state dict never needs: refused \
                       (nothing was executed)"
        ),
        "{msg}"
    );
    assert!(!Path::new("pwned").exists());
}

#[test]
fn a_bin_with_a_truncated_member_or_cut_short_is_a_clear_error() {
    // The real archive, its first storage cut to half its bytes.
    let real = golden_bin();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&real[..])).unwrap();
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..zip.len() {
        let mut m = zip.by_index(i).unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut m, &mut v).unwrap();
        members.push((m.name().to_string(), v));
    }
    let (name, bytes) = members
        .iter_mut()
        .find(|(n, _)| n.ends_with("/data/0"))
        .unwrap();
    let full = bytes.len();
    bytes.truncate(full / 2);
    let name = name.clone();
    let refs: Vec<(&str, &[u8])> = members.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
    let msg = refused_bin(zip_of(&refs));
    assert!(msg.contains("invalid PyTorch checkpoint"), "{msg}");
    assert!(
        msg.contains(&format!("storage 0 has {} bytes, but", full / 2)),
        "{name}: {msg}"
    );
    // The archive itself cut short (its directory lost).
    let msg = refused_bin(real[..real.len() * 2 / 3].to_vec());
    assert!(
        msg.contains("invalid PyTorch checkpoint") && msg.contains("not a zip archive"),
        "{msg}"
    );
}

#[test]
fn a_revision_with_no_weights_at_all_names_every_layout_tried() {
    let server = Server::start();
    serve_config_and_tokenizer(&server);
    let dir = tempfile::tempdir().unwrap();
    let msg = err_text(execute(&plan(&server.base, dir.path())));
    assert!(
        msg.starts_with(
            "EleutherAI/pythia-70m@main: model.safetensors: not found (HTTP 404); nor \
             model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json \
             (the weight layouts this command reads); valid models: "
        ),
        "{msg}"
    );
    assert!(names_in(&model_dir(dir.path())).is_empty());
}
