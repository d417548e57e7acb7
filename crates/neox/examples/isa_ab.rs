//! Kernel-set variants compared in one process, on one packed model: rounds that alternate
//! the variants, each timing consecutive decode steps over a growing cache and then verify(5)
//! steps, as `spedec bench-kernels` does. Every variant gives the same bits, which the run
//! checks (the logits' checksum of each round). A tuning aid, not the committed benchmark.
//!
//! `cargo run --release -p spedec-neox --example isa_ab -- MODEL [ROUNDS] [STEPS]`, MODEL a
//! folder or `synthetic:pythia-2.8b:f16`; variants: every set this CPU has past portable,
//! with one-row prefetch off and on.
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use spedec_lm::Lm;
use spedec_neox::{cpu::Isa, model::CpuModel, ModelFiles};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let spec = args
        .first()
        .context("usage: isa_ab MODEL [ROUNDS] [STEPS]")?;
    let rounds: usize = args.get(1).map_or(Ok(2), |a| a.parse())?;
    let steps: usize = args.get(2).map_or(Ok(16), |a| a.parse())?;
    let files = ModelFiles::open(spec)?;
    let vocab = files.config.vocab_size as u32;
    let variants: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|isa| isa.is_avx2())
        .flat_map(|isa| [false, true].map(|on| isa.with_one_row_prefetch(on)))
        .collect();
    ensure!(!variants.is_empty(), "no vector kernel set on this CPU");
    let mut model = CpuModel::new(files.config, files.weights, Some(512), variants[0])?;
    let (start, verify_steps, verify_rows) = (18, 6, 5);
    ensure!(
        start + 2 + steps + verify_rows * verify_steps <= 512,
        "too many steps"
    );
    let token = |p: usize| (p as u32).wrapping_mul(7919) % vocab;
    println!("variant                 decode ms (median, min)   verify(5) ms   checksum");
    for round in 1..=rounds {
        for &isa in &variants {
            model.set_isa(isa);
            model.truncate(0)?;
            model.forward(&(0..start).map(token).collect::<Vec<_>>())?;
            let mut pos = start;
            let mut sum = 0.0f64;
            let mut step = |model: &mut CpuModel, rows: usize| -> Result<f64> {
                let ids: Vec<u32> = (pos..pos + rows).map(token).collect();
                let t = Instant::now();
                let logits = model.forward(&ids)?;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                sum += logits.row(rows - 1).iter().map(|&x| x as f64).sum::<f64>();
                pos += rows;
                Ok(ms)
            };
            let mut decode = Vec::new();
            for i in 0..2 + steps {
                let ms = step(&mut model, 1)?;
                if i >= 2 {
                    decode.push(ms);
                }
            }
            let mut verify = Vec::new();
            for _ in 0..verify_steps {
                verify.push(step(&mut model, verify_rows)?);
            }
            let min = decode.iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "round {round} {:>6} pf={:<5}  {:>8.2} {:>8.2}          {:>8.2}   {sum:.6}",
                isa.name(),
                isa.one_row_prefetch(),
                median(decode),
                min,
                median(verify[1..].to_vec()),
            );
        }
    }
    Ok(())
}
