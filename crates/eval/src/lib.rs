//! spedec-eval: the pieces behind the `spedec` command-line tool.

pub mod bench;
pub mod generate;
pub mod models;
pub mod ppl;
