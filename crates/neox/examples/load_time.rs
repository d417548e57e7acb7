//! Load time of a model folder, three times in a row (a quick probe of the loader's checks,
//! not a benchmark); writes `synthetic:<name>` into the folder first when given one.
//! `cargo run --release -p spedec-neox --example load_time -- DIR [synthetic:pythia-410m]`.
use std::time::Instant;

use spedec_neox::{ModelFiles, Tokenizer};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().map(std::path::Path::new) else {
        anyhow::bail!("usage: load_time DIR [synthetic:pythia-…]");
    };
    if let Some(spec) = args.get(1) {
        ModelFiles::open(spec)?.write_dir(dir, Tokenizer::pythia_json())?;
    }
    for _ in 0..3 {
        let t = Instant::now();
        let files = ModelFiles::open(dir.to_str().unwrap())?;
        println!(
            "{}: loaded {} MB of weights in {:.3} s",
            dir.display(),
            files.weights.bytes_per_token() / 1_000_000,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
