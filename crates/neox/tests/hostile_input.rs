//! Hostile input: seeded mutations of real files (the fixtures' safetensors files and
//! configs, a shard index, a `pytorch_model.bin` and its pickle) fed to the loaders for a time budget each. Every input must give
//! `Ok` or an error: never a panic, an abort, or an allocation sized by an unchecked field
//! (an abort would kill this test binary, so it fails too).
//!
//! Budget per target: `SPEDEC_FUZZ_SECONDS` (default 6); the seed of the mutations:
//! `SPEDEC_FUZZ_SEED` (default fixed, so CI runs the same inputs each time). A longer run:
//! `SPEDEC_FUZZ_SECONDS=600 cargo test --release -p spedec-neox --test hostile_input -- --nocapture`.
//! A crashing input is saved under the test's temporary folder and named in the failure.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spedec_neox::checkpoint::ShardIndex;
use spedec_neox::pytorch::state_dict_from_bytes;
use spedec_neox::{Config, Weights};

fn visible(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/fixtures/golden")
        .join(name)
}

const FOLDERS: [&str; 4] = [
    "parallel-f16",
    "parallel-f32",
    "sequential-bf16",
    "sequential-f16",
];

/// SplitMix64: a small seeded generator (the test must not depend on a platform RNG).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn budget() -> Duration {
    let secs = std::env::var("SPEDEC_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

fn seed() -> u64 {
    std::env::var("SPEDEC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5bd1_e995)
}

/// Values that break parsers: limits, signs, JSON structure.
const INTERESTING_BYTES: [u8; 12] = [
    0, 1, 0x7f, 0x80, 0xff, b'9', b'-', b'"', b'{', b'}', b',', b'[',
];
const INTERESTING_NUMBERS: [&str; 7] = [
    "18446744073709551615",
    "99999999999999999999999",
    "-1",
    "0",
    "4294967296",
    "1e308",
    "9223372036854775807",
];

/// `seed` with 1–4 random edits, most of them inside `hot` (the part a parser reads first).
fn mutate(rng: &mut Rng, seed: &[u8], hot: &Range<usize>) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if v.is_empty() {
            break;
        }
        let at = if rng.below(10) < 8 && hot.end.min(v.len()) > hot.start {
            hot.start + rng.below(hot.end.min(v.len()) - hot.start)
        } else {
            rng.below(v.len())
        };
        match rng.below(7) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v[at] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())],
            2 => v.truncate(at),
            3 => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            4 => {
                let from = rng.below(v.len());
                let piece: Vec<u8> = v[from..(from + 1 + rng.below(32)).min(v.len())].to_vec();
                v.splice(at..at, piece);
            }
            5 => {
                // A run of digits replaced by an extreme number.
                let start = (0..=at).rev().take_while(|&i| v[i].is_ascii_digit()).last();
                if let Some(start) = start {
                    let end = (at..v.len())
                        .find(|&i| !v[i].is_ascii_digit())
                        .unwrap_or(v.len());
                    let n = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())];
                    v.splice(start..end, n.bytes());
                }
            }
            _ => {
                // The safetensors header length: random, huge or just past the end.
                if v.len() >= 8 {
                    let n: u64 = match rng.below(3) {
                        0 => rng.next(),
                        1 => u64::MAX - rng.below(4) as u64,
                        _ => (v.len() - 8 + rng.below(3)) as u64,
                    };
                    v[..8].copy_from_slice(&n.to_le_bytes());
                }
            }
        }
    }
    v
}

/// Feeds mutations of `seeds` (bytes and their hot range) to `f` for the budget; fails on the
/// first panic, saving that input. Returns (inputs tried, inputs refused with an error).
fn fuzz(
    target: &str,
    seeds: &[(Vec<u8>, Range<usize>)],
    f: impl Fn(&[u8]) -> bool,
) -> (usize, usize) {
    let mut rng = Rng(seed() ^ target.len() as u64);
    let (start, budget) = (Instant::now(), budget());
    let (mut tried, mut refused) = (0, 0);
    while tried == 0 || start.elapsed() < budget {
        let (seed, hot) = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, hot);
        match catch_unwind(AssertUnwindSafe(|| f(&input))) {
            Ok(ok) => refused += usize::from(!ok),
            Err(_) => {
                let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join(format!("fuzz-crash-{target}-{tried}.bin"));
                std::fs::write(&path, &input).unwrap();
                panic!(
                    "{target}: input {tried} panicked; saved as {}",
                    path.display()
                );
            }
        }
        tried += 1;
    }
    visible(&format!(
        "{target}: {tried} inputs in {:.1} s, {refused} refused with an error, 0 panics",
        start.elapsed().as_secs_f64()
    ));
    (tried, refused)
}

/// The header range of a safetensors file (its length field and JSON).
fn header_range(bytes: &[u8]) -> Range<usize> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    0..8 + n
}

#[test]
fn mutated_safetensors_files_never_panic() {
    let (mut tried, mut refused) = (0, 0);
    for folder in FOLDERS {
        let dir = golden_dir(folder);
        let config = Config::from_file(&dir.join("config.json")).unwrap();
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        // The seed loads as it is.
        Weights::from_bytes(bytes.clone(), &config).unwrap_or_else(|e| panic!("{folder}: {e:#}"));
        let hot = header_range(&bytes);
        let (t, r) = fuzz(
            &format!("safetensors ({folder})"),
            &[(bytes, hot)],
            |input| Weights::from_bytes(input.to_vec(), &config).is_ok(),
        );
        (tried, refused) = (tried + t, refused + r);
    }
    assert!(refused > tried / 2, "most mutations must be refused");
}

#[test]
fn mutated_configs_never_panic() {
    let seeds: Vec<(Vec<u8>, Range<usize>)> = FOLDERS
        .iter()
        .map(|f| {
            let bytes = std::fs::read(golden_dir(f).join("config.json")).unwrap();
            let hot = 0..bytes.len();
            (bytes, hot)
        })
        .collect();
    let (tried, refused) = fuzz("config", &seeds, |input| {
        Config::from_json_str(&String::from_utf8_lossy(input)).is_ok()
    });
    assert!(refused > 0 && refused < tried, "{refused} of {tried}");
}

#[test]
fn mutated_shard_indexes_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let mut map = BTreeMap::new();
    for (k, name) in ["gpt_neox.embed_in.weight", "embed_out.weight"]
        .iter()
        .enumerate()
    {
        let file = format!("model-{:05}-of-00002.safetensors", k + 1);
        std::fs::write(tmp.path().join(&file), b"").unwrap();
        map.insert(name.to_string(), file);
    }
    let text = serde_json::to_vec(&serde_json::json!({
        "metadata": { "total_size": 12345 }, "weight_map": map
    }))
    .unwrap();
    let path = tmp.path().join("model.safetensors.index.json");
    ShardIndex::parse(std::str::from_utf8(&text).unwrap(), &path).unwrap();
    let hot = 0..text.len();
    let (_, refused) = fuzz("shard-index", &[(text, hot)], |input| {
        ShardIndex::parse(&String::from_utf8_lossy(input), &path).is_ok()
    });
    assert!(refused > 0);
}

fn pytorch_fixture() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fixtures/pytorch/parallel-f16.bin"),
    )
    .unwrap()
}

#[test]
fn mutated_pytorch_archives_never_panic() {
    let bytes = pytorch_fixture();
    state_dict_from_bytes(&bytes).unwrap();
    // The zip's directory sits at the end, the pickle (the first member) at the start.
    let hot = bytes.len().saturating_sub(4096)..bytes.len();
    let (_, refused) = fuzz("pytorch-zip", &[(bytes, hot)], |input| {
        state_dict_from_bytes(input).is_ok()
    });
    assert!(refused > 0);
}

#[test]
fn mutated_state_dict_pickles_never_panic() {
    // Each mutated pickle goes back into the archive beside the real storages, so the
    // unpickler (not the zip's checksums) sees it.
    let real = pytorch_fixture();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&real[..])).unwrap();
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..zip.len() {
        let mut m = zip.by_index(i).unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut m, &mut v).unwrap();
        members.push((m.name().to_string(), v));
    }
    let pickle = members
        .iter()
        .find(|(n, _)| n.ends_with("data.pkl"))
        .unwrap()
        .1
        .clone();
    let rezip = |pickle: &[u8]| {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in &members {
            w.start_file(name.as_str(), stored).unwrap();
            let data = if name.ends_with("data.pkl") {
                pickle
            } else {
                bytes
            };
            std::io::Write::write_all(&mut w, data).unwrap();
        }
        w.finish().unwrap().into_inner()
    };
    state_dict_from_bytes(&rezip(&pickle)).unwrap();
    let hot = 0..pickle.len();
    let (_, refused) = fuzz("state-dict-pickle", &[(pickle, hot)], |input| {
        state_dict_from_bytes(&rezip(input)).is_ok()
    });
    assert!(refused > 0);
}
