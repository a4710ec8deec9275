//! What every module error shares: the [`Coded`] trait (a stable kebab-case `code()`, an optional
//! `hint()` telling the user what to do, and a `class()`), the [`Class`] that maps to the process
//! exit code in one place ([`Class::exit_code`]), and [`IoError`] (an I/O error with its path).
//!
//! This module is a leaf: it imports nothing from the crate, so every module can use it without
//! an import cycle. The top-level error that wraps each module's error is
//! [`crate::cli::error::Error`] (re-exported as `retort::Error`); library modules outside `cli/`
//! return their own errors, never that one.

use std::path::PathBuf;

/// What kind of failure an error is; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Class {
    /// Bad input, I/O, anything the user can fix by changing the input: exit 1.
    Input,
    /// The command line itself is wrong: exit 2.
    Usage,
    /// Refused by policy or budget: exit 3.
    Refused,
    /// A signature, digest or audit-chain check failed: exit 4.
    Verification,
}

impl Class {
    /// The process exit code for this class: 1 input or I/O, 2 usage, 3 refused, 4 verification.
    pub fn exit_code(self) -> u8 {
        match self {
            Class::Input => 1,
            Class::Usage => 2,
            Class::Refused => 3,
            Class::Verification => 4,
        }
    }
}

/// Implemented by every module error: stable code, hint, class.
pub trait Coded: std::error::Error {
    /// A stable kebab-case code (goes into audit records and `--json` output).
    fn code(&self) -> &'static str;
    /// What the user can do about it, if anything useful can be said.
    fn hint(&self) -> Option<String> {
        None
    }
    /// The class, which decides the exit code.
    fn class(&self) -> Class {
        Class::Input
    }
}

/// An I/O error with the path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct IoError {
    /// What was being done ("reading", "writing", "creating directory", ...).
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    /// Wrap an `io::Error` with the operation and path.
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IoError {
            op,
            path: path.into(),
            source,
        }
    }
}

impl Coded for IoError {
    fn code(&self) -> &'static str {
        match self.source.kind() {
            std::io::ErrorKind::NotFound => "io-not-found",
            std::io::ErrorKind::PermissionDenied => "io-permission-denied",
            k if is_disk_full(k) => "io-disk-full",
            _ => "io-error",
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self.source.kind() {
            std::io::ErrorKind::NotFound => format!("check that {} exists", self.path.display()),
            std::io::ErrorKind::PermissionDenied => format!(
                "check the permissions of {} for the user running retort",
                self.path.display()
            ),
            k if is_disk_full(k) => format!(
                "free space on the file system holding {} (or raise the file-size limit), then run the command again: Retort writes whole files or nothing, so nothing was left half-written",
                self.path.display()
            ),
            _ => format!(
                "check the disk (space, permissions) holding {}",
                self.path.display()
            ),
        })
    }
}

/// A full disk, an exhausted quota or a file-size limit (`RLIMIT_FSIZE`).
pub fn is_disk_full(kind: std::io::ErrorKind) -> bool {
    matches!(
        kind,
        std::io::ErrorKind::StorageFull
            | std::io::ErrorKind::QuotaExceeded
            | std::io::ErrorKind::FileTooLarge
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_design_exit_codes() {
        assert_eq!(Class::Input.exit_code(), 1);
        assert_eq!(Class::Usage.exit_code(), 2);
        assert_eq!(Class::Refused.exit_code(), 3);
        assert_eq!(Class::Verification.exit_code(), 4);
    }
}
