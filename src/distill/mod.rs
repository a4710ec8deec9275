//! Distillation methods under differential privacy: gradient matching (gm), distribution matching (dm).
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
    pub const CODES: &'static [&'static str] = &["distill-error"];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        "distill-error"
    }
    fn class(&self) -> Class {
        Class::Input
    }
}
