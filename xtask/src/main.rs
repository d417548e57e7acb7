//! Project tasks, run as `cargo xtask <task>`. Each task lives in its own
//! module; `main` only parses the command line and dispatches.

mod bench;
mod common;
mod download;
mod plot;
mod ppl;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "SpeDec project tasks",
    version
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Download Pythia models (Hugging Face hub) and the WikiText-2 / PG-19 test texts
    Download(download::Args),
    /// Speed of small, target and speculative decoding (spedec bench): TTFT, TPOT, throughput,
    /// acceptance; γ and draft sweeps with a plot
    Bench(bench::Args),
    /// Perplexity of small, target and speculative decoding on WikiText-2 or PG-19 (spedec ppl)
    Ppl(ppl::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.task {
        Task::Download(args) => download::run(args),
        Task::Bench(args) => bench::run(args),
        Task::Ppl(args) => ppl::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // spedec has printed its own one-line error.
        Err(err) if err.is::<common::AlreadyReported>() => ExitCode::FAILURE,
        Err(err) => {
            // One line: the error and its causes, outermost first.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
