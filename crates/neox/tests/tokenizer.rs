//! Token ids equal Python `tokenizers` on the reference file, for samples and whole corpora.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use spedec_neox::Tokenizer;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures")
}

fn reference() -> Value {
    let text =
        std::fs::read_to_string(fixtures().join("tokenizer/reference_encodings.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn samples_match_and_round_trip() {
    let tok = Tokenizer::from_file(&fixtures().join("tokenizer/tokenizer.json")).unwrap();
    let reference = reference();
    assert_eq!(
        tok.vocab_size() as u64,
        reference["vocab_size_with_added"].as_u64().unwrap()
    );
    for sample in reference["samples"].as_array().unwrap() {
        let text = sample["text"].as_str().unwrap();
        let got = tok.encode(text).unwrap();
        assert_eq!(got, ids(&sample["ids"]), "ids of {text:?}");
        assert_eq!(
            tok.decode(&got).unwrap(),
            sample["decoded"].as_str().unwrap()
        );
    }
    // The embedded copy is the same tokenizer.
    assert_eq!(Tokenizer::pythia().fingerprint(), tok.fingerprint());
}

#[test]
fn corpora_match() {
    let tok = Tokenizer::pythia();
    for corpus in reference()["corpora"].as_array().unwrap() {
        let file = corpus["file"].as_str().unwrap();
        let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
        let got = tok.encode(&text).unwrap();
        assert_eq!(
            got.len() as u64,
            corpus["n_tokens"].as_u64().unwrap(),
            "{file}"
        );
        assert_eq!(got[..64], ids(&corpus["first_64_ids"])[..], "{file}");
        assert_eq!(
            got[got.len() - 16..],
            ids(&corpus["last_16_ids"])[..],
            "{file}"
        );
        let mut h = Sha256::new();
        for id in &got {
            h.update(id.to_le_bytes());
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, corpus["ids_sha256_le_u32"].as_str().unwrap(), "{file}");
        assert_eq!(tok.decode(&got).unwrap(), text, "{file}: decode round trip");
    }
}
