//! Integration tests of the generators against small deterministic test models.

mod cache;
mod common;
mod engine;
mod errors;
mod exact;
mod greedy;
mod ppl;
mod statistical;
mod stats;
