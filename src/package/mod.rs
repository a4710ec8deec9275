//! Signed packages: manifest, in-toto statement, DSSE envelope, SHA256SUMS + signify, verification.
//!
//! (Being built: see the issue that owns this module.)

use crate::error::{Class, Coded};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] = &["package-error"];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        "package-error"
    }
    fn class(&self) -> Class {
        Class::Input
    }
}

/// Verification failures (exit 4).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A verification step failed.
    #[error("verification failed: {0}")]
    Failed(String),
}

impl VerifyError {
    /// Stable codes of verification failures.
    pub const CODES: &'static [&'static str] = &["verify-failed"];
}

impl Coded for VerifyError {
    fn code(&self) -> &'static str {
        "verify-failed"
    }
    fn class(&self) -> Class {
        Class::Verification
    }
}
