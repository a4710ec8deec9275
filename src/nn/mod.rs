//! Models (ConvNet, MLP) and the per-sample gradient engine.
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
    pub const CODES: &'static [&'static str] = &["nn-error"];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        "nn-error"
    }
    fn class(&self) -> Class {
        Class::Input
    }
}
