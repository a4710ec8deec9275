//! The append-only, hash-chained audit log (formats and checks: `docs/audit.md`).
//!
//! Every command that touches data, budget, keys or packages appends records here: intent
//! before a sensitive action, outcome after, refusals and errors included. One canonical JSON
//! line per record (sorted keys, no whitespace), `prev` = SHA-256 of the previous line's bytes,
//! one `write` per line and `fsync` before the command goes on. If a record cannot be written,
//! the action is refused (fail closed).

pub mod chain;
pub mod checkpoint;
pub mod merkle;
pub mod read;
pub mod record;
pub mod report;
pub mod session;
pub mod show;
pub mod verify;

pub use chain::AuditLog;
pub use checkpoint::Checkpoint;
pub use record::{NewRecord, Outcome, Record};
pub use session::{Ended, ReadOnly, ReadOnlyAction, Session};

use std::path::PathBuf;

use crate::error::{Class, Coded, IoError};

/// Check, without writing, that the workspace's audit log can take a record now (see
/// [`AuditLog::check_writable`]). Call it before acting, so that a command whose outcome could
/// not be recorded is refused before it does anything.
///
/// # Errors
/// `audit-append-failed`, `audit-tail-damaged`.
pub fn preflight(ws: &crate::workspace::Workspace) -> Result<()> {
    AuditLog::new(ws.audit_dir()).check_writable()
}

/// Whether this user can run an audited command now: append to the log ([`preflight`]) and
/// seal the end-of-command checkpoint (read the audit key). Writes nothing. The workspace
/// owner and the service user can; a compliance officer cannot (their read-only commands run
/// unlogged, see [`Session::begin_read_only`]).
///
/// # Errors
/// `audit-append-failed`, `audit-tail-damaged`, `audit-key-unusable`.
pub fn writable(ws: &crate::workspace::Workspace) -> Result<()> {
    preflight(ws)?;
    checkpoint::audit_key(ws).map(drop)
}

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
    /// The log does not chain (found while writing a checkpoint): nothing is signed.
    #[error("the audit log is damaged at line {index} ({segment}): {code}: {message}; no checkpoint was signed")]
    ChainBroken {
        /// The segment file name.
        segment: String,
        /// 0-based position of the line in the whole log.
        index: u64,
        /// The finding code (`chain-break`, `seq-gap`, …).
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The log no longer reproduces a checkpoint the workspace signed before.
    #[error(
        "the audit log is inconsistent with checkpoint {path}: {why}; no new checkpoint was signed"
    )]
    CheckpointInconsistent {
        /// The earlier checkpoint.
        path: PathBuf,
        /// What differs.
        why: String,
    },
    /// A checkpoint file does not parse as a signed note.
    #[error("{path} is not a valid checkpoint: {why}")]
    BadCheckpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The audit key cannot be loaded.
    #[error("the audit key cannot be used: {0}")]
    Key(#[from] crate::keys::Error),
    /// `audit verify` found the log or a checkpoint not intact.
    #[error("the audit log failed verification: {errors} finding(s), {bad_checkpoints} checkpoint(s) not ok")]
    VerifyFailed {
        /// Record-level findings of error severity.
        errors: usize,
        /// Checkpoints whose status is not `ok`.
        bad_checkpoints: usize,
    },
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
        "audit-chain-broken",
        "audit-checkpoint-inconsistent",
        "audit-checkpoint-malformed",
        "audit-key-unusable",
        "audit-verify-failed",
        "audit-io",
    ];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::AppendFailed { .. } => "audit-append-failed",
            Error::DamagedTail { .. } => "audit-tail-damaged",
            Error::Locked => "audit-locked",
            Error::ChainBroken { .. } => "audit-chain-broken",
            Error::CheckpointInconsistent { .. } => "audit-checkpoint-inconsistent",
            Error::BadCheckpoint { .. } => "audit-checkpoint-malformed",
            Error::Key(_) => "audit-key-unusable",
            Error::VerifyFailed { .. } => "audit-verify-failed",
            Error::Io(_) => "audit-io",
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::AppendFailed { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => "only the workspace owner (and the service user, for `retort serve`) may write the audit log; compliance users can run `retort audit verify|show|report` and `retort budget`, unlogged. Nothing was done".into(),
            Error::AppendFailed { .. } => "free disk space or fix permissions on the workspace's audit/ directory; nothing was done".into(),
            Error::DamagedTail { .. } => "run `retort audit verify` and report the finding to your compliance officer; do not edit the log by hand".into(),
            Error::Locked => "wait for the other retort command to finish".into(),
            Error::ChainBroken { .. } | Error::CheckpointInconsistent { .. } => "run `retort audit verify` for the full findings and report them to your compliance officer; do not edit the log or the checkpoints by hand".into(),
            Error::BadCheckpoint { .. } => "give a checkpoint file as written by retort (audit/checkpoints/checkpoint-*.txt or a package's audit-checkpoint.txt)".into(),
            Error::Key(e) => format!("the audit key keys/audit.key.pem must exist and be readable by the user running retort: the workspace owner, or the service user through the workspace's service group (`retort access set --service-group GROUP`) ({})", e.hint().unwrap_or_default()),
            Error::VerifyFailed { .. } => "read the findings above; keep the log and checkpoints as they are (they are evidence) and report to your compliance officer".into(),
            Error::Io(e) => return e.hint(),
        })
    }
    fn class(&self) -> Class {
        match self {
            Error::DamagedTail { .. }
            | Error::ChainBroken { .. }
            | Error::CheckpointInconsistent { .. }
            | Error::VerifyFailed { .. } => Class::Verification,
            _ => Class::Input,
        }
    }
}

/// Result for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
