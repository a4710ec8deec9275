//! # Retort
//!
//! Retort lets a hospital share what its sensitive image data teaches without sharing the data.
//! It ingests images (DICOM, PNG/JPEG folders, Parquet tables, IDX files) into a workspace,
//! distills them into a few synthetic images per class under differential privacy (DP-SGD with
//! Poisson subsampling, per-sample clipping and Gaussian noise from an OS-seeded CSPRNG), charges
//! every run to a durable per-dataset privacy ledger *before* reading private data, enforces the
//! hospital's policy, signs the synthetic output with an in-toto/DSSE provenance manifest
//! (Ed25519), records every action in a hash-chained audit log with signed checkpoints, and
//! exports or serves (mutual TLS) the signed package to partners, who verify it offline.
//!
//! What it guarantees, and its limits, are in `SECURITY.md`; the on-disk formats and command
//! line are in `README.md` and `docs/`. The binary `retort` is a thin shell
//! over [`cli`]; tests and examples use the library directly.

// `deny`, not `forbid`: `nn::gemm` (one bounds-checked call into the `gemm` crate) opts out.
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::exhaustive_enums)]

pub mod access;
pub mod audit;
pub mod cli;
pub mod dataset;
pub mod demo;
pub mod digest;
pub mod distill;
pub mod dp;
pub mod error;
pub mod eval;
pub mod identity;
pub mod ingest;
pub mod keys;
pub mod ledger;
pub mod nn;
pub mod package;
pub mod policy;
pub mod progress;
pub mod random;
pub mod run;
pub mod serve;
pub mod workspace;

pub use cli::error::{Error, Result};

/// Retort's version (from Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
