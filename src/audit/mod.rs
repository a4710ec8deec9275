//! The append-only, hash-chained audit log (DESIGN §4 "Audit log").
//!
//! Every command that touches data, budget, keys or packages appends records here: intent
//! before a sensitive action, outcome after, refusals and errors included. One canonical JSON
//! line per record (sorted keys, no whitespace), `prev` = SHA-256 of the previous line's bytes,
//! one `write` per line and `fsync` before the command goes on. If a record cannot be written,
//! the action is refused (fail closed).

pub mod chain;
pub mod record;

pub use chain::AuditLog;
pub use record::{NewRecord, Outcome, Record};

use std::path::PathBuf;

use crate::error::{Class, Coded, IoError};

/// Audit errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The log could not be written: the action is refused.
    #[error("cannot write the audit log ({path}): {source}; the action was refused")]
    AppendFailed {
        /// The segment file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The tail of the log is unreadable (torn or malformed last line), so no record can be
    /// chained onto it.
    #[error("the audit log's last record in {path} is damaged ({why}); refusing to append")]
    DamagedTail {
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Another process holds the audit lock for too long.
    #[error("the audit log is locked by another process")]
    Locked,
    /// File-system error.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl Error {
    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] = &[
        "audit-append-failed",
        "audit-tail-damaged",
        "audit-locked",
        "audit-io",
    ];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::AppendFailed { .. } => "audit-append-failed",
            Error::DamagedTail { .. } => "audit-tail-damaged",
            Error::Locked => "audit-locked",
            Error::Io(_) => "audit-io",
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::AppendFailed { .. } => "free disk space or fix permissions on the workspace's audit/ directory; nothing was done".into(),
            Error::DamagedTail { .. } => "run `retort audit verify` and report the finding to your compliance officer; do not edit the log by hand".into(),
            Error::Locked => "wait for the other retort command to finish".into(),
            Error::Io(e) => return e.hint(),
        })
    }
    fn class(&self) -> Class {
        match self {
            Error::DamagedTail { .. } => Class::Verification,
            _ => Class::Input,
        }
    }
}

/// Result for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
