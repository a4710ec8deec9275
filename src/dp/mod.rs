//! The privacy engine: validated types, Poisson sampling, clipping, secure Gaussian noise, accountants (RDP, PLD), calibration.
//!
//! (Being built: see the issue that owns this module.)

pub mod clip;
pub mod noise;
pub mod sample;

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
    pub const CODES: &'static [&'static str] = &["dp-error"];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        "dp-error"
    }
    fn class(&self) -> Class {
        Class::Input
    }
}
