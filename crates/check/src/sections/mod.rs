//! The sections of `spedec gpu-check`; each takes the shared [`Env`](crate::env::Env) and a
//! [`Recorder`](crate::report::Recorder) and records one line per check.

pub(crate) mod correctness;
pub(crate) mod hf;
pub(crate) mod sampled;
pub(crate) mod timing;
