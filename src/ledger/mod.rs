//! The privacy-budget ledger: reserve before reading private data, commit after; bound to the
//! signed audit log so that it cannot be deleted, rolled back or edited unseen.
//!
//! # Guarantees
//! - **Budget follows the images.** A ledger belongs to a keyed dataset fingerprint
//!   ([`crate::dataset::fingerprint`]: order- and split-independent), `ledger/<fingerprint>.json`,
//!   listing the dataset names that spent from it. Re-ingesting the same images under any name
//!   resumes their spent budget; a deleted dataset's history is still found by name
//!   ([`Ledger::find`]).
//! - **Every change is logged before the file is written.** A change (reserve, commit, cancel,
//!   migration baseline) is: 1. an audit intent record carrying the records it appends;
//!   2. the file, written atomically (temp, fsync, rename, fsync of the directory); 3. a
//!   `ledger.update` record carrying the new file's SHA-256 and record count, so the signed
//!   checkpoints cover the file. The spend of a dataset is recomputable from the log alone
//!   (the record kinds are listed in [`log`]).
//! - **Checked on every read and every change.** [`Ledger::check`] compares the file with the
//!   log's content byte for byte: a missing, rolled-back, hand-edited or unlogged ledger is
//!   `ledger-log-mismatch` (exit 4), never an empty budget; a reservation against it is refused
//!   and writes nothing. The one legal divergence — the file lagging the log by its last,
//!   unconfirmed change (a crash between intent and write) — counts as spent and is repaired
//!   by the next change (`ledger.repair`). Recovery from a restored backup: [`rebuild`].
//! - **Fails closed.** A reservation over the cap is refused (`budget-exceeded`, exit 3) and
//!   writes nothing; an audit record that cannot be written aborts the change before the file.
//! - **A crashed or cancelled run stays charged.** The charge is the `reserve` record.
//! - **The total is the accountant applied to all events of all runs** (RDP and PLD
//!   composition hold for adaptively chosen mechanisms), at the caller's (policy's) δ.
//! - **Reading never mutates** (no lock, no file, no directory is created by reading); only a
//!   change repairs a crash window, audited.
//!
//! # Limits
//! The operator who holds the audit key can rewrite log, checkpoints and ledger together; only
//! a checkpoint held outside the workspace (every package carries one) detects that.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::Outcome;
use crate::dp::accountant::{self, EpsilonReport};
use crate::dp::{self, DpEvent};
use crate::error::{Class, Coded, IoError};
use crate::workspace::{self, Workspace};

pub mod check;
pub mod file;
pub mod log;
pub mod migrate;
mod rebuild;

pub use check::{check_all, Finding, MismatchKind, Sync};
pub use migrate::{migrate, Migrated};
pub use rebuild::{rebuild, Rebuilt};

use check::compare;
use file::OnDisk;
use log::LogView;

/// How long a change waits for another process changing a ledger.
const LOCK_WAIT: Duration = Duration::from_secs(30);

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

/// One record of a ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Record {
    /// A run's full cost, charged before it reads private data.
    Reserve {
        /// The run id.
        run: String,
        /// The dataset name it was reserved under.
        dataset: String,
        /// What spends it (`distill`, `eval-utility`, `eval-dp-baseline`, …; `None` for
        /// records migrated from version 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purpose: Option<String>,
        /// Its privacy events.
        events: Vec<DpEvent>,
        /// δ the run was planned at.
        delta: f64,
        /// The run's own ε at `delta` (for display; totals are recomputed from events).
        epsilon: f64,
        /// When (RFC 3339).
        at: String,
    },
    /// The run finished and released its output.
    Commit {
        /// The run id.
        run: String,
        /// When.
        at: String,
    },
    /// The run stopped early; it stays charged.
    Cancel {
        /// The run id.
        run: String,
        /// When.
        at: String,
    },
}

/// State of a run in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RunState {
    /// Reserved, not yet committed (running, or crashed: charged either way).
    Reserved,
    /// Completed.
    Committed,
    /// Cancelled (charged).
    Cancelled,
}

/// One run as the ledger sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RunEntry {
    /// The run id.
    pub run: String,
    /// The dataset name it was reserved under.
    pub dataset: String,
    /// What spent it (`None` for runs migrated from version 1).
    pub purpose: Option<String>,
    /// Its state.
    pub state: RunState,
    /// Its own ε at its δ.
    pub epsilon: f64,
    /// Its δ.
    pub delta: f64,
    /// Its events.
    pub events: Vec<DpEvent>,
    /// When it was reserved.
    pub reserved_at: String,
    /// When it was committed or cancelled.
    pub finished_at: Option<String>,
}

/// The budget of one ledger (one set of images).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The dataset name it was looked up by.
    pub dataset: String,
    /// The keyed fingerprint of the images.
    pub fingerprint: String,
    /// Every dataset name that spent from it.
    pub names: Vec<String>,
    /// δ the totals are computed at.
    pub delta: f64,
    /// Total ε of all runs by the accountant (what counts against the cap).
    pub epsilon: f64,
    /// The same by RDP.
    pub epsilon_rdp: f64,
    /// The same by PLD.
    pub epsilon_pld: f64,
    /// Which accountant gave `epsilon`.
    pub accountant: &'static str,
    /// Plain sum of per-run ε (naive composition, shown for comparison; never smaller).
    pub plain_sum: f64,
    /// Total ε of the runs that are committed or cancelled (finished).
    pub epsilon_committed: f64,
    /// `epsilon − epsilon_committed`: the part held by runs still reserved.
    pub epsilon_reserved: f64,
    /// The file lags the log by its last change (a crash): counted here, repaired by the
    /// next reservation.
    pub pending_repair: bool,
    /// The runs, oldest first.
    pub runs: Vec<RunEntry>,
}

/// The outcome of [`Ledger::check`].
#[derive(Debug, Clone)]
pub struct Checked {
    /// In sync, or lagging by a crash window (a mismatch is an error instead).
    pub sync: Sync,
    /// The content the log records (authoritative; equal to the file when in sync).
    pub records: Vec<Record>,
    /// Every dataset name of this ledger.
    pub names: Vec<String>,
}

/// The ledger of one set of images.
#[derive(Debug, Clone)]
pub struct Ledger {
    root: PathBuf,
    fingerprint: String,
    dataset: String,
}

/// A run's charge, durable on disk and in the log. Dropping it leaves the run charged and
/// `reserved`.
#[derive(Debug)]
#[must_use = "a reservation must be committed or cancelled (it stays charged either way)"]
pub struct Reservation {
    ledger: Ledger,
    run: String,
    /// The run's own ε at the reservation's δ.
    pub epsilon: f64,
    /// The dataset's total ε (accountant) including this run.
    pub total_after: f64,
}

/// Held while a ledger changes (one lock for every ledger: changes are short).
pub(crate) struct LedgerLock {
    _lock: workspace::Lock,
}

/// Take the ledger lock (creating `ledger/` and the lock file: writers only).
pub(crate) fn lock(ws: &Workspace) -> Result<LedgerLock, Error> {
    let dir = ws.ledger_dir();
    workspace::create_dir_all(&dir)?;
    let l = workspace::lock_file(&dir.join(file::LOCK_FILE), LOCK_WAIT).map_err(|e| match e {
        workspace::LockError::Io(e) => Error::Io(e),
        _ => Error::Locked {
            dataset: "*".into(),
        },
    })?;
    Ok(LedgerLock { _lock: l })
}

fn total(events: &[DpEvent], delta: f64) -> Result<EpsilonReport, Error> {
    Ok(accountant::epsilon(events, delta)?)
}

/// (name, fingerprint) of every stored dataset that has a version-2 fingerprint.
pub(crate) fn stored_fingerprints(ws: &Workspace) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for name in crate::dataset::list(ws)? {
        let s = crate::dataset::open(ws, &name)?;
        if s.meta.has_v2_fingerprint() {
            out.push((name, s.meta.fingerprint));
        }
    }
    Ok(out)
}

impl Ledger {
    /// The ledger of a stored dataset, keyed by its version-2 fingerprint (reading creates
    /// nothing).
    ///
    /// # Errors
    /// `ledger-not-migrated` for a dataset still carrying a version-1 fingerprint.
    pub fn open(ws: &Workspace, meta: &crate::dataset::Meta) -> Result<Ledger, Error> {
        if !meta.has_v2_fingerprint() || !file::is_fingerprint(&meta.fingerprint) {
            return Err(Error::NotMigrated {
                dataset: meta.name.clone(),
            });
        }
        Ok(Ledger::with_fingerprint(ws, &meta.fingerprint, &meta.name))
    }

    pub(crate) fn with_fingerprint(ws: &Workspace, fingerprint: &str, dataset: &str) -> Ledger {
        Ledger {
            root: ws.root().to_path_buf(),
            fingerprint: fingerprint.to_string(),
            dataset: dataset.to_string(),
        }
    }

    /// The ledger known by `key`: a stored dataset's name; else the name of a deleted dataset
    /// with budget history (the newest use of that name, from the log and the ledger files);
    /// else a fingerprint (version 2, or a migrated dataset's version-1 fingerprint).
    ///
    /// # Errors
    /// `ledger-not-found`, `ledger-not-migrated`, `ledger-log-unverified`, I/O.
    pub fn find(ws: &Workspace, key: &str) -> Result<Ledger, Error> {
        migrate::require_migrated(ws)?;
        if file::is_fingerprint(key) {
            for name in crate::dataset::list(ws)? {
                let s = crate::dataset::open(ws, &name)?;
                if s.meta.fingerprint_v1.as_deref() == Some(key) || s.meta.fingerprint == key {
                    return Ledger::open(ws, &s.meta);
                }
            }
            let (view, disks) = check::consistent_read(ws, Some(key))?;
            let disk = disks.first().map_or(&OnDisk::Missing, |(_, d)| d);
            let names = check::names(key, disk, view.ledgers.get(key), &[]);
            if names.is_empty() && matches!(disk, OnDisk::Missing) {
                return Err(Error::NotFound { name: key.into() });
            }
            let name = names.last().cloned().unwrap_or_else(|| key.to_string());
            return Ok(Ledger::with_fingerprint(ws, key, &name));
        }
        workspace::validate_name(key).map_err(|_| Error::NotFound { name: key.into() })?;
        match crate::dataset::open(ws, key) {
            Ok(s) => return Ledger::open(ws, &s.meta),
            Err(crate::dataset::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let view = log::replay(ws)?;
        view.require_intact()?;
        if let Some(fp) = view.by_name(key).into_iter().next() {
            return Ok(Ledger::with_fingerprint(ws, &fp, key));
        }
        for fp in file::list(&ws.ledger_dir())? {
            if let OnDisk::Parsed { file, .. } = file::read(&ws.ledger_dir(), &fp)? {
                if file.names.iter().any(|n| n == key) {
                    return Ok(Ledger::with_fingerprint(ws, &fp, key));
                }
            }
        }
        Err(Error::NotFound { name: key.into() })
    }

    /// The ledger holding the reservation of run `run` (for a package of that run).
    ///
    /// # Errors
    /// `ledger-not-found` when no ledger in the log reserved it; `ledger-log-unverified`.
    pub fn of_run(ws: &Workspace, run: &str) -> Result<Ledger, Error> {
        let view = log::replay(ws)?;
        view.require_intact()?;
        let fp = view
            .by_run(run)
            .ok_or_else(|| Error::NotFound { name: run.into() })?;
        let name = view
            .ledgers
            .get(&fp)
            .and_then(|l| {
                l.records.iter().find_map(|r| match r {
                    Record::Reserve {
                        run: r, dataset, ..
                    } if r == run => Some(dataset.clone()),
                    _ => None,
                })
            })
            .unwrap_or_else(|| fp.clone());
        Ok(Ledger::with_fingerprint(ws, &fp, &name))
    }

    /// The dataset name this ledger was opened by.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// The keyed fingerprint of the images it belongs to.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The ledger file.
    pub fn path(&self) -> PathBuf {
        file::path(&self.ledger_dir(), &self.fingerprint)
    }

    fn ledger_dir(&self) -> PathBuf {
        self.root.join("ledger")
    }

    fn ws(&self) -> Result<Workspace, Error> {
        Ok(Workspace::open(&self.root)?)
    }

    fn mismatch(&self, names: &[String], kind: MismatchKind, detail: String) -> Error {
        Error::LogMismatch {
            dataset: if names.is_empty() {
                self.dataset.clone()
            } else {
                names.join(", ")
            },
            fingerprint: self.fingerprint.clone(),
            kind: kind.as_str(),
            detail,
        }
    }

    /// Compare the ledger file with the audit log (read-only).
    ///
    /// # Errors
    /// `ledger-log-mismatch` (exit 4) for a ledger that is missing, rolled back, edited or holds
    /// records the log never saw; `ledger-log-unverified` when the log's chain is damaged; I/O.
    pub fn check(&self) -> Result<Checked, Error> {
        let ws = self.ws()?;
        let (view, disks) = check::consistent_read(&ws, Some(&self.fingerprint))?;
        self.judge(&ws, &view, &disks[0].1)
    }

    fn judge(&self, ws: &Workspace, view: &LogView, disk: &OnDisk) -> Result<Checked, Error> {
        view.require_intact()?;
        let log = view.ledgers.get(&self.fingerprint);
        let stored = stored_fingerprints(ws)?;
        let mut names = check::names(&self.fingerprint, disk, log, &stored);
        if names.is_empty() {
            names.push(self.dataset.clone());
        }
        match compare(&self.fingerprint, disk, log) {
            Sync::Mismatch { kind, detail, .. } => Err(self.mismatch(&names, kind, detail)),
            sync => Ok(Checked {
                sync,
                records: log.map(|l| l.records.clone()).unwrap_or_default(),
                names,
            }),
        }
    }

    /// All runs, oldest first (checked against the log).
    ///
    /// # Errors
    /// As [`Ledger::check`].
    pub fn runs(&self) -> Result<Vec<RunEntry>, Error> {
        Ok(runs_of(&self.check()?.records))
    }

    /// Every event of every run (what the total is computed over; checked against the log).
    ///
    /// # Errors
    /// As [`Ledger::check`].
    pub fn all_events(&self) -> Result<Vec<DpEvent>, Error> {
        Ok(self.runs()?.into_iter().flat_map(|r| r.events).collect())
    }

    /// Under the lock: check against the log and repair the crash window (audited
    /// `ledger.repair`). Returns the log's view, in sync with the file.
    pub(crate) fn sync_for_write(&self, actor: &str) -> Result<LogView, Error> {
        let ws = self.ws()?;
        let view = log::replay(&ws)?;
        let disk = file::read(&self.ledger_dir(), &self.fingerprint)?;
        let checked = self.judge(&ws, &view, &disk)?;
        if let Sync::PendingRepair {
            ledger_records,
            log_records,
        } = checked.sync
        {
            log::append(
                &ws,
                actor,
                log::REPAIR,
                &self.fingerprint,
                Outcome::Intent,
                json!({
                    "fingerprint": self.fingerprint,
                    "dataset": self.dataset,
                    "records": log_records,
                    "missing_from": ledger_records,
                    "file_sha256": disk.sha256(),
                    "why": "the file lagged the audit log by its last change (a command stopped between logging the change and writing the file)",
                }),
            )?;
            let sha = file::write(&self.ledger_dir(), &self.fingerprint, &checked.records)?;
            log::confirm(
                &ws,
                actor,
                &self.fingerprint,
                &self.dataset,
                log_records,
                &sha,
                log::REPAIR,
            )?;
            tracing::warn!(
                "ledger of {} repaired: it lagged the audit log by its last change ({ledger_records} of {log_records} records)",
                self.dataset
            );
        }
        Ok(view)
    }

    /// Under the lock, with `view` in sync: log the change (intent, carrying `records`), write
    /// the file, log its digest. Returns the new record count.
    pub(crate) fn apply_change(
        &self,
        actor: &str,
        view: &LogView,
        action: &str,
        records: Vec<Record>,
        extra: serde_json::Value,
    ) -> Result<usize, Error> {
        let ws = self.ws()?;
        let mut all = view
            .ledgers
            .get(&self.fingerprint)
            .map(|l| l.records.clone())
            .unwrap_or_default();
        let mut details = json!({
            "fingerprint": self.fingerprint,
            "dataset": self.dataset,
            "index": all.len(),
            "records": records,
        });
        if let (Some(d), serde_json::Value::Object(x)) = (details.as_object_mut(), extra) {
            d.extend(x);
        }
        log::append(
            &ws,
            actor,
            action,
            &self.fingerprint,
            Outcome::Intent,
            details,
        )?;
        #[cfg(test)]
        if test_hooks::crash_after_intent() {
            return Err(Error::Io(IoError::new(
                "writing",
                self.path(),
                std::io::Error::other("test hook: crash between intent and write"),
            )));
        }
        all.extend(records);
        let sha = file::write(&self.ledger_dir(), &self.fingerprint, &all)?;
        log::confirm(
            &ws,
            actor,
            &self.fingerprint,
            &self.dataset,
            all.len(),
            &sha,
            action,
        )?;
        Ok(all.len())
    }

    /// Charge `run`'s `events` to the ledger, durably, before the run reads private data.
    ///
    /// Steps: 1. take the ledger lock; 2. check the file against the log (a mismatch is refused,
    /// exit 4, and nothing is written; the crash window is repaired, audited); 3. the cap: the
    /// total after this run (accountant over all events of all runs, at `delta`) above
    /// `dataset_cap` is refused (exit 3) and nothing is written; 4. log `ledger.reserve`
    /// (intent, with the record); 5. write the file; 6. log `ledger.update` (its digest).
    ///
    /// # Privacy
    /// Fail closed: the record is in the log and on disk (fsynced) when this returns `Ok`.
    ///
    /// # Errors
    /// `ledger-log-mismatch`, `ledger-log-unverified`, `budget-exceeded`, `ledger-duplicate-run`,
    /// `ledger-locked`, `dp-invalid-parameter`, audit and I/O errors.
    pub fn reserve(
        &self,
        actor: &str,
        run: &str,
        purpose: &str,
        events: &[DpEvent],
        delta: f64,
        dataset_cap: Option<f64>,
    ) -> Result<Reservation, Error> {
        workspace::validate_name(run)?;
        dp::Delta::new(delta)?;
        if let Some(c) = dataset_cap {
            dp::Epsilon::new(c)?;
        }
        for e in events {
            e.validate()?;
        }
        let ws = self.ws()?;
        // Refuse a mismatching ledger, a duplicate run and an over-cap request before taking
        // the lock (which creates a file); then again under the lock, authoritatively.
        self.admit(&self.check()?.records, run, events, delta, dataset_cap)?;
        let _lock = lock(&ws)?;
        let view = self.sync_for_write(actor)?;
        let records = view
            .ledgers
            .get(&self.fingerprint)
            .map_or(&[][..], |l| &l.records[..]);
        let (requested, total_after) = self.admit(records, run, events, delta, dataset_cap)?;
        let rec = Record::Reserve {
            run: run.into(),
            dataset: self.dataset.clone(),
            purpose: Some(purpose.to_string()),
            events: events.to_vec(),
            delta,
            epsilon: requested,
            at: workspace::now_rfc3339(),
        };
        self.apply_change(
            actor,
            &view,
            log::RESERVE,
            vec![rec],
            json!({"run": run, "purpose": purpose, "epsilon": requested, "total_after": total_after}),
        )?;
        Ok(Reservation {
            ledger: self.clone(),
            run: run.into(),
            epsilon: requested,
            total_after,
        })
    }

    /// The cap and duplicate checks of a reservation against `records`: (ε of the run, total
    /// after it).
    fn admit(
        &self,
        records: &[Record],
        run: &str,
        events: &[DpEvent],
        delta: f64,
        dataset_cap: Option<f64>,
    ) -> Result<(f64, f64), Error> {
        let runs = runs_of(records);
        if runs.iter().any(|r| r.run == run) {
            return Err(Error::DuplicateRun {
                run: run.into(),
                dataset: self.dataset.clone(),
            });
        }
        let before: Vec<DpEvent> = runs.iter().flat_map(|r| r.events.clone()).collect();
        let spent = total(&before, delta)?.epsilon;
        let requested = total(events, delta)?.epsilon;
        let mut after = before;
        after.extend(events.iter().cloned());
        let total_after = total(&after, delta)?.epsilon;
        if let Some(cap) = dataset_cap {
            if total_after > cap || total_after.is_nan() {
                return Err(Error::BudgetExceeded {
                    dataset: self.dataset.clone(),
                    requested,
                    spent,
                    total_after,
                    cap,
                });
            }
        }
        Ok((requested, total_after))
    }

    fn finish(&self, actor: &str, run: &str, commit: bool) -> Result<(), Error> {
        let ws = self.ws()?;
        let _lock = lock(&ws)?;
        let view = self.sync_for_write(actor)?;
        let at = workspace::now_rfc3339();
        let (action, rec) = if commit {
            (
                log::COMMIT,
                Record::Commit {
                    run: run.into(),
                    at,
                },
            )
        } else {
            (
                log::CANCEL,
                Record::Cancel {
                    run: run.into(),
                    at,
                },
            )
        };
        self.apply_change(actor, &view, action, vec![rec], json!({"run": run}))?;
        Ok(())
    }

    /// The budget at `delta`: total by the accountant over all events of all runs, the plain
    /// sum beside it, committed vs still-reserved, and the runs. Computed from the content the
    /// audit log records, after checking the file against it.
    ///
    /// # Errors
    /// As [`Ledger::check`]; `dp-invalid-parameter`.
    pub fn summary(&self, delta: f64) -> Result<Summary, Error> {
        let checked = self.check()?;
        let runs = runs_of(&checked.records);
        let all: Vec<DpEvent> = runs.iter().flat_map(|r| r.events.clone()).collect();
        let t = total(&all, delta)?;
        let done: Vec<DpEvent> = runs
            .iter()
            .filter(|r| r.state != RunState::Reserved)
            .flat_map(|r| r.events.clone())
            .collect();
        let committed = total(&done, delta)?.epsilon;
        let per_run: Vec<Vec<DpEvent>> = runs.iter().map(|r| r.events.clone()).collect();
        let plain_sum = accountant::plain_sum(&per_run, delta)?;
        Ok(Summary {
            dataset: self.dataset.clone(),
            fingerprint: self.fingerprint.clone(),
            names: checked.names,
            delta,
            epsilon: t.epsilon,
            epsilon_rdp: t.epsilon_rdp,
            epsilon_pld: t.epsilon_pld,
            accountant: t.accountant,
            plain_sum,
            epsilon_committed: committed.min(t.epsilon),
            epsilon_reserved: (t.epsilon - committed).max(0.0),
            pending_repair: matches!(checked.sync, Sync::PendingRepair { .. }),
            runs,
        })
    }
}

fn runs_of(records: &[Record]) -> Vec<RunEntry> {
    let mut runs: Vec<RunEntry> = Vec::new();
    for r in records {
        match r {
            Record::Reserve {
                run,
                dataset,
                purpose,
                events,
                delta,
                epsilon,
                at,
            } => runs.push(RunEntry {
                run: run.clone(),
                dataset: dataset.clone(),
                purpose: purpose.clone(),
                state: RunState::Reserved,
                epsilon: *epsilon,
                delta: *delta,
                events: events.clone(),
                reserved_at: at.clone(),
                finished_at: None,
            }),
            Record::Commit { run, at } | Record::Cancel { run, at } => {
                if let Some(e) = runs.iter_mut().find(|e| &e.run == run) {
                    if e.state == RunState::Reserved {
                        e.state = if matches!(r, Record::Commit { .. }) {
                            RunState::Committed
                        } else {
                            RunState::Cancelled
                        };
                        e.finished_at = Some(at.clone());
                    }
                }
            }
        }
    }
    runs
}

impl Reservation {
    /// The run id.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The ledger it charged.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Mark the run completed (logged, then written).
    ///
    /// # Errors
    /// As [`Ledger::check`]; `ledger-locked`, audit and I/O errors. The run stays charged
    /// whatever happens.
    pub fn commit(self, actor: &str) -> Result<(), Error> {
        self.ledger.finish(actor, &self.run, true)
    }

    /// Mark the run cancelled (logged, then written). It stays charged.
    ///
    /// # Errors
    /// As [`Reservation::commit`].
    pub fn cancel(self, actor: &str) -> Result<(), Error> {
        self.ledger.finish(actor, &self.run, false)
    }
}

#[cfg(test)]
pub(crate) mod test_hooks {
    //! A crash between the intent record and the file write, for tests (thread-local, so
    //! parallel tests do not see each other's hook).
    use std::cell::Cell;

    thread_local! {
        static CRASH: Cell<bool> = const { Cell::new(false) };
    }

    /// Make the next change stop after its intent record (once).
    pub fn crash_next_change() {
        CRASH.with(|c| c.set(true));
    }

    pub(super) fn crash_after_intent() -> bool {
        CRASH.with(|c| c.replace(false))
    }
}

#[cfg(test)]
mod tests;
