//! The run lifecycle, as types: the library — not the command line — owns how a run spends
//! budget and what it may read.
//!
//! ```text
//! plan(ws, request) ─▶ Planned ──reserve(session)──▶ Reserved ──distill(sink)──▶ Completed
//!   public metadata,      policy decided,              ledger charged,               │
//!   ledger and policy     nothing written              intent logged,         Cancelled / Failed
//!   read, nothing spent                                run.json "running"     (still charged)
//! ```
//!
//! # Guarantees
//! - **Charge before read.** Only [`Reserved`] opens the training split, and a `Reserved` exists
//!   only after the ledger durably charged the plan's events (fail closed, refused with exit 3
//!   over the cap) and the audit log holds the intent.
//! - **Spend what was charged.** The mechanism's allowance is built from the reserved events;
//!   a release the reservation does not cover is refused before it reads anything.
//! - **Publish only what was charged.** [`Completed::open`] is the only way to a finished run
//!   for `eval` and the package builder; it checks the run's status and that the ledger holds
//!   its charge with the same events as its record.
//! - **Every end is recorded.** A run that stops after its reservation (error, Ctrl-C) is
//!   marked `failed` or `cancelled` and stays charged; one whose process died is found
//!   `running` and marked `crashed` by a later command.
//! - **One record schema.** [`record::RunRecord`] is the only reader of `run.json`.

pub mod audit;
pub mod crashed;
pub mod dir;
pub mod evaluation;
pub mod overview;
pub mod record;

mod lifecycle;

pub use crashed::{mark_crashed, Crashed};
pub use lifecycle::{plan, Completed, Planned, Reserved};
pub use overview::{overview, Overview};
pub use record::{PolicyRef, Privacy, RunRecord, Status, RUN_VERSION};

use std::path::PathBuf;

use crate::error::{Class, Coded, IoError};

/// Errors of the run lifecycle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No run with this id in the workspace.
    #[error("no run named {run:?} in the workspace (looked for {path})")]
    NotFound {
        /// The run id given.
        run: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// `run.json` is not in the agreed format.
    #[error("{path}: {why}")]
    Invalid {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The run did not complete, so it has nothing to evaluate or publish.
    #[error(
        "run {run:?} has status {status:?}; only a completed run can be evaluated or packaged"
    )]
    Incomplete {
        /// The run id.
        run: String,
        /// Its status.
        status: String,
    },
    /// The ledger holds no charge for the run (or a different one): no ledger event backs its
    /// privacy claim.
    #[error(
        "run {run:?} is not charged to its dataset's privacy ledger ({why}); refusing to use it"
    )]
    NotCharged {
        /// The run id.
        run: String,
        /// What is missing or differs.
        why: String,
    },
    /// The synthetic set does not fit the dataset the run names.
    #[error("run {run:?}: the synthetic set does not match dataset {dataset:?}: {why}")]
    Mismatch {
        /// The run.
        run: String,
        /// The dataset.
        dataset: String,
        /// What differs.
        why: String,
    },
    /// The policy refused the run.
    #[error(transparent)]
    Policy(#[from] crate::policy::Error),
    /// The ledger refused or failed.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::Error),
    /// The dataset cannot be read.
    #[error(transparent)]
    Dataset(#[from] crate::dataset::Error),
    /// Planning or distilling failed.
    #[error(transparent)]
    Distill(#[from] crate::distill::Error),
    /// Evaluation failed.
    #[error(transparent)]
    Eval(#[from] crate::eval::Error),
    /// The audit log cannot be written (the action is refused).
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
    /// The privacy engine refused (allowance, accounting).
    #[error(transparent)]
    Dp(#[from] crate::dp::Error),
    /// A file-system error.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The run was cancelled (Ctrl-C); it stays charged.
    #[error("run {run} cancelled by the user")]
    Cancelled {
        /// The run id.
        run: String,
    },
    /// `eval` was cancelled (Ctrl-C). What it had charged before (its utility release, a
    /// DP-SGD baseline) stays charged; the run itself is unchanged.
    #[error("evaluation of run {run} cancelled by the user")]
    EvalCancelled {
        /// The run id.
        run: String,
        /// Ledger ids the evaluation had charged before it stopped (empty: nothing).
        charged: Vec<String>,
    },
    /// A run id that is not a valid name (a usage error).
    #[error(transparent)]
    Name(#[from] crate::workspace::Error),
    /// The dataset was ingested for privacy auditing only (`--audit-only`): it can be audited,
    /// never planned, distilled or packaged.
    #[error("dataset {dataset:?} was ingested for privacy auditing only (--audit-only); it cannot be planned or distilled")]
    AuditOnly {
        /// The dataset.
        dataset: String,
    },
    /// A privacy audit was asked of a dataset not marked audit-only: the audit plants canaries
    /// and runs without a reservation, which only public or test data may undergo.
    #[error("dataset {dataset:?} is not marked audit-only; a privacy audit runs only on data ingested with --audit-only")]
    NotAuditOnly {
        /// The dataset.
        dataset: String,
    },
    /// The audit's parameters are out of range.
    #[error("invalid privacy audit parameter {name}: {why}")]
    AuditParameter {
        /// Which parameter.
        name: &'static str,
        /// What is wrong.
        why: String,
    },
}

impl Error {
    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] = &[
        "run-not-found",
        "run-invalid",
        "run-incomplete",
        "run-not-charged",
        "run-mismatch",
        "run-cancelled",
        "run-eval-cancelled",
        // Not an error: the reason code of the `run.crashed` audit record (crashed.rs).
        "run-crashed",
        "run-audit-only",
        "run-not-audit-only",
        "run-audit-parameter",
    ];

    fn inner(&self) -> Option<&dyn Coded> {
        Some(match self {
            Error::Policy(e) => e,
            Error::Ledger(e) => e,
            Error::Dataset(e) => e,
            Error::Distill(e) => e,
            Error::Eval(e) => e,
            Error::Audit(e) => e,
            Error::Dp(e) => e,
            Error::Io(e) => e,
            Error::Name(e) => e,
            _ => return None,
        })
    }
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "run-not-found",
            Error::Invalid { .. } => "run-invalid",
            Error::Incomplete { .. } => "run-incomplete",
            Error::NotCharged { .. } => "run-not-charged",
            Error::Mismatch { .. } => "run-mismatch",
            Error::Cancelled { .. } => "run-cancelled",
            Error::EvalCancelled { .. } => "run-eval-cancelled",
            Error::AuditOnly { .. } => "run-audit-only",
            Error::NotAuditOnly { .. } => "run-not-audit-only",
            Error::AuditParameter { .. } => "run-audit-parameter",
            _ => self.inner().map_or("run-error", |e| e.code()),
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            Error::NotFound { .. } => Some("list the workspace's runs with `retort runs list`".into()),
            Error::Invalid { .. } => Some("the run record was changed outside Retort; restore runs/<id>/ from backup".into()),
            Error::Incomplete { .. } => Some("only a run that `retort distill` completed can be evaluated or packaged; start a new run".into()),
            Error::NotCharged { .. } => Some("the ledger and the run disagree: run `retort audit verify` and `retort budget`, and report it to your compliance officer".into()),
            Error::Mismatch { .. } => Some("the run directory was modified or belongs to another dataset; re-run `retort distill`".into()),
            Error::Cancelled { .. } => Some("the run stays charged to the budget (`retort budget`); start a new run with `retort distill`".into()),
            Error::EvalCancelled { charged, run } if charged.is_empty() => Some(format!(
                "nothing was charged and nothing was written; run `retort eval {run}` again to finish it"
            )),
            Error::EvalCancelled { charged, run } => Some(format!(
                "what the evaluation reserved before it stopped ({}) stays charged (`retort budget`); run `retort eval {run}` again to finish it",
                charged.join(", ")
            )),
            Error::AuditOnly { dataset } => Some(format!("audit it with `retort privacy audit --dataset {dataset} --epsilon E`; to distill these images, ingest them again under another name without --audit-only")),
            Error::NotAuditOnly { .. } => Some("ingest public or test data (e.g. Fashion-MNIST) with `retort ingest SRC --name N --audit-only` and audit that; never audit a private dataset".into()),
            Error::AuditParameter { name, .. } => Some(format!("fix --{name} (see `retort privacy audit --help`)")),
            _ => self.inner().and_then(|e| e.hint()),
        }
    }
    fn class(&self) -> Class {
        match self {
            Error::NotCharged { .. } | Error::AuditOnly { .. } | Error::NotAuditOnly { .. } => {
                Class::Refused
            }
            Error::AuditParameter { .. } => Class::Usage,
            Error::NotFound { .. }
            | Error::Invalid { .. }
            | Error::Incomplete { .. }
            | Error::Mismatch { .. }
            | Error::Cancelled { .. }
            | Error::EvalCancelled { .. } => Class::Input,
            _ => self.inner().map_or(Class::Input, |e| e.class()),
        }
    }
}
