//! Policy files: parse, validate, decide (allow / refuse with a stable reason).
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
    pub const CODES: &'static [&'static str] = &["policy-error"];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        "policy-error"
    }
    fn class(&self) -> Class {
        Class::Input
    }
}

/// The policy templates shipped in `policies/`, embedded in the binary.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("default", include_str!("../policies/default.toml")),
    ("strict", include_str!("../policies/strict.toml")),
    ("research", include_str!("../policies/research.toml")),
];

/// The text of a shipped template by name.
pub fn template(name: &str) -> Option<&'static str> {
    TEMPLATES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}
