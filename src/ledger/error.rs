//! The ledger's errors, each with a stable code, a hint and a class (exit code).

use std::path::PathBuf;

use crate::dp;
use crate::error::{Class, Coded, IoError};
use crate::workspace;

/// Errors of the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The new run would take the dataset over its cap.
    #[error(
        "budget exceeded for dataset {dataset}: this run needs epsilon {requested:.4}, {spent:.4} is already spent, \
         the total would be {total_after:.4} against a cap of {cap:.4}"
    )]
    BudgetExceeded {
        /// The dataset.
        dataset: String,
        /// ε of the new run alone (at the ledger's δ).
        requested: f64,
        /// ε already spent (all earlier runs, by the accountant).
        spent: f64,
        /// ε of all runs including the new one (by the accountant).
        total_after: f64,
        /// The cap.
        cap: f64,
    },
    /// The ledger disagrees with the audit log: missing, rolled back, edited, or holding
    /// records the log never saw.
    #[error(
        "the privacy ledger of dataset {dataset} does not match the audit log ({kind}): {detail}; \
         nothing was changed"
    )]
    LogMismatch {
        /// The dataset name(s) the ledger belongs to.
        dataset: String,
        /// Its fingerprint.
        fingerprint: String,
        /// `missing`, `rolled-back`, `edited`, `unlogged`, `unreadable`, `log-inconsistent`.
        kind: &'static str,
        /// What differs.
        detail: String,
    },
    /// The audit log itself does not verify, so the ledger cannot be checked against it (or
    /// rebuilt from it).
    #[error(
        "the audit log does not verify ({why}), so the privacy ledger cannot be checked against it"
    )]
    LogUnverified {
        /// What is wrong with the log.
        why: String,
    },
    /// No stored dataset, ledger or logged ledger history goes by this name.
    #[error("no dataset and no budget history named {name:?} in the workspace")]
    NotFound {
        /// The name (or fingerprint).
        name: String,
    },
    /// The workspace still has a version-1 ledger or dataset fingerprint.
    #[error("dataset {dataset} has not been migrated to the version-2 ledger yet")]
    NotMigrated {
        /// The dataset.
        dataset: String,
    },
    /// A version-1 ledger file cannot be parsed (migration refuses it).
    #[error("ledger {path} is malformed: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A run id is already in the ledger.
    #[error("run {run} is already in the ledger of dataset {dataset}")]
    DuplicateRun {
        /// The run.
        run: String,
        /// The dataset.
        dataset: String,
    },
    /// Another process holds the ledger lock.
    #[error("the ledger is locked by another process (dataset {dataset})")]
    Locked {
        /// The dataset.
        dataset: String,
    },
    /// Bad privacy parameters (δ, events, cap).
    #[error(transparent)]
    Dp(#[from] dp::Error),
    /// File-system error.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Bad dataset or run name.
    #[error(transparent)]
    Name(#[from] workspace::Error),
    /// The audit log could not be read or written (a change is then not made).
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
    /// A stored dataset could not be read (migration, lookup by name).
    #[error(transparent)]
    Dataset(#[from] crate::dataset::Error),
    /// The workspace HMAC secret could not be read (migration).
    #[error(transparent)]
    Keys(#[from] crate::keys::Error),
}

impl Error {
    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] = &[
        "budget-exceeded",
        "ledger-log-mismatch",
        "ledger-log-unverified",
        "ledger-not-found",
        "ledger-not-migrated",
        "ledger-corrupt",
        "ledger-duplicate-run",
        "ledger-locked",
    ];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::BudgetExceeded { .. } => "budget-exceeded",
            Error::LogMismatch { .. } => "ledger-log-mismatch",
            Error::LogUnverified { .. } => "ledger-log-unverified",
            Error::NotFound { .. } => "ledger-not-found",
            Error::NotMigrated { .. } => "ledger-not-migrated",
            Error::Corrupt { .. } => "ledger-corrupt",
            Error::DuplicateRun { .. } => "ledger-duplicate-run",
            Error::Locked { .. } => "ledger-locked",
            Error::Dp(e) => e.code(),
            Error::Io(e) => e.code(),
            Error::Name(e) => e.code(),
            Error::Audit(e) => e.code(),
            Error::Dataset(e) => e.code(),
            Error::Keys(e) => e.code(),
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            Error::BudgetExceeded { cap, spent, .. } => Some(format!(
                "the remaining budget is {:.4}; ask for a smaller epsilon (more noise, fewer steps) or have the policy's cap reviewed (see `retort budget`)",
                (cap - spent).max(0.0)
            )),
            Error::LogMismatch { dataset, .. } => Some(format!(
                "someone changed the ledger outside retort: keep the workspace as it is (it is evidence) and tell your compliance officer; \
                 then restore ledger/ from a backup taken after the last change, or rebuild it from the audit log with \
                 `retort budget rebuild {}` (audited); `retort audit verify` lists every ledger",
                dataset.split(", ").next().unwrap_or(dataset)
            )),
            Error::LogUnverified { .. } => Some(
                "run `retort audit verify` for the findings and report them to your compliance officer; the ledger is checked again once the log verifies".into(),
            ),
            Error::NotFound { .. } => Some(
                "list datasets with `retort datasets list` and budgets with `retort budget`".into(),
            ),
            Error::NotMigrated { .. } => Some(
                "run any retort command that writes (e.g. `retort budget`) once as the workspace owner: it migrates the workspace, audited".into(),
            ),
            Error::Corrupt { path, .. } => Some(format!(
                "restore {} from backup; Retort will not run against a ledger it cannot read",
                path.display()
            )),
            Error::DuplicateRun { .. } => Some("use a fresh run id".into()),
            Error::Locked { .. } => Some("wait for the other command to finish its ledger change and retry".into()),
            Error::Dp(e) => e.hint(),
            Error::Io(e) => e.hint(),
            Error::Name(e) => e.hint(),
            Error::Audit(e) => e.hint(),
            Error::Dataset(e) => e.hint(),
            Error::Keys(e) => e.hint(),
        }
    }
    fn class(&self) -> Class {
        match self {
            Error::BudgetExceeded { .. } => Class::Refused,
            Error::LogMismatch { .. } | Error::LogUnverified { .. } => Class::Verification,
            Error::Dp(e) => e.class(),
            Error::Io(e) => e.class(),
            Error::Name(e) => e.class(),
            Error::Audit(e) => e.class(),
            Error::Dataset(e) => e.class(),
            Error::Keys(e) => e.class(),
            _ => Class::Input,
        }
    }
}
