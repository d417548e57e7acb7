//! spedec-sampling: turning logits into the distribution a token is drawn from, and drawing it.
//!
//! - [`Sampler`] / [`SamplingParams`]: greedy, or temperature → top-k → top-p (HF semantics).
//! - [`process`], [`softmax`], [`argmax`]: logits (`f32`) → processed distribution (`Vec<f64>`).
//! - [`residual`], [`overlap`], [`acceptance_probability`], [`emission_probability`]: the
//!   rejection-sampling math of speculative decoding.
//! - [`Rng`], [`derive_seed`], [`sample_categorical`]: a portable, seeded random stream and
//!   inverse-CDF sampling.
//! - [`philox`]: Philox4x32-10, the counter-based generator the device sampler uses (keyed by
//!   the seed, counter = position, stream, index), and its 24-bit uniforms.
//!
//! Every function on a user path returns `Result<_, SamplingError>`; nothing panics on bad input.

mod error;
mod exp;
mod params;
pub mod philox;
mod process;
mod rejection;
mod rng;

pub use error::SamplingError;
pub use params::{Sampler, SamplingParams};
pub use process::{argmax, one_hot, process, softmax};
pub use rejection::{acceptance_probability, emission_probability, overlap, residual};
pub use rng::{derive_seed, sample_categorical, uniform_from_u64, Rng};
