//! Times the CPU attention of one layer at long contexts (a perplexity window's shapes):
//! `cargo run --release -p spedec-neox --example attention_time`. Prints min / median per
//! call and a checksum of the outputs (the same on every build that keeps the bits).

use std::time::Instant;

use spedec_neox::cpu::{ops::attention, Isa};

fn main() {
    let isa = Isa::detect();
    // (name, heads, head_dim, queries, first position): a 256-row chunk at the end of a
    // 2,048-token window, and a verify(5) at position 1,536.
    for (name, heads, hd, m, start) in [
        ("70m prefill 256 @1792", 8, 64, 256, 1792),
        ("2.8b prefill 256 @1792", 32, 80, 256, 1792),
        ("2.8b verify 5 @1536", 32, 80, 5, 1536),
    ] {
        let cap = 2048;
        let val =
            |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 2003) as f32 / 1001.5 - 1.0;
        let keys: Vec<f32> = (0..heads * cap * hd).map(|i| val(i, 1)).collect();
        let values: Vec<f32> = (0..heads * cap * hd).map(|i| val(i, 2)).collect();
        let q: Vec<f32> = (0..m * heads * hd).map(|i| val(i, 3)).collect();
        let mut out = vec![0.0f32; m * heads * hd];
        let mut times = Vec::new();
        for run in 0..12 {
            let t = Instant::now();
            attention(isa, &q, &keys, &values, heads, hd, cap, start, &mut out);
            if run >= 2 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        let sum: f64 = out.iter().map(|&v| v as f64).sum();
        println!(
            "{name}: min {:.3} ms, median {:.3} ms, checksum {sum:.9e}",
            times[0],
            times[times.len() / 2]
        );
    }
}
