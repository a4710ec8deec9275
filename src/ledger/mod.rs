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

use serde::{Deserialize, Serialize};

use crate::dp::accountant::{self, EpsilonReport};
use crate::dp::DpEvent;
use crate::workspace::{self, Workspace};

mod change;
pub mod check;
mod error;
pub mod file;
pub mod log;
pub mod migrate;
mod rebuild;

pub(crate) use change::lock;
#[cfg(test)]
pub(crate) use change::test_hooks;
pub use change::Reservation;
pub use check::{check_all, Finding, MismatchKind, Sync};
pub use error::Error;
pub use migrate::{migrate, Migrated};
pub use rebuild::{rebuild, Rebuilt};

use check::compare;
use file::OnDisk;
use log::LogView;

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

fn total(events: &[DpEvent], delta: f64) -> Result<EpsilonReport, Error> {
    Ok(accountant::epsilon(events, delta)?)
}

/// (name, fingerprint) of every stored dataset that has a version-2 fingerprint and that this
/// user may read (datasets are owner-only: a compliance officer sees none, and finds the
/// budget through the ledger files and the log instead).
pub(crate) fn stored_fingerprints(ws: &Workspace) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for s in readable_datasets(ws)? {
        if s.meta.has_v2_fingerprint() {
            let name = s
                .dir
                .file_name()
                .map_or_else(|| s.meta.name.clone(), |n| n.to_string_lossy().into_owned());
            out.push((name, s.meta.fingerprint));
        }
    }
    Ok(out)
}

/// The stored datasets this user may read (all of them for the owner; none for a user who may
/// not read `datasets/`).
pub(crate) fn readable_datasets(ws: &Workspace) -> Result<Vec<crate::dataset::Stored>, Error> {
    let names = match crate::dataset::list(ws) {
        Ok(n) => n,
        Err(e) if e.is_permission_denied() => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in names {
        match crate::dataset::open(ws, &name) {
            Ok(s) => out.push(s),
            Err(e) if e.is_permission_denied() => {}
            Err(e) => return Err(e.into()),
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
    /// `ledger-not-found`, `name-invalid` (a malformed name: usage), `ledger-not-migrated`,
    /// `ledger-log-unverified`, I/O.
    pub fn find(ws: &Workspace, key: &str) -> Result<Ledger, Error> {
        migrate::require_migrated(ws)?;
        if file::is_fingerprint(key) {
            for s in readable_datasets(ws)? {
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
        workspace::validate_name(key)?;
        match crate::dataset::open(ws, key) {
            Ok(s) => return Ledger::open(ws, &s.meta),
            Err(crate::dataset::Error::NotFound { .. }) => {}
            // Not readable by this user (a compliance officer): found through the log below.
            Err(e) if e.is_permission_denied() => {}
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

    /// The δ budgets are shown at when the caller names none: the smallest δ of the ledger's
    /// runs, else `max_delta` (the policy's), else 1e-5. `retort budget` and the compliance
    /// report both use it, so they show the same total.
    ///
    /// # Errors
    /// As [`Ledger::check`].
    pub fn default_delta(&self, max_delta: Option<f64>) -> Result<f64, Error> {
        Ok(self
            .runs()?
            .iter()
            .map(|r| r.delta)
            .reduce(f64::min)
            .or(max_delta)
            .unwrap_or(1e-5))
    }

    /// [`Ledger::summary`] at [`Ledger::default_delta`].
    ///
    /// # Errors
    /// As [`Ledger::summary`].
    pub fn summary_default(&self, max_delta: Option<f64>) -> Result<Summary, Error> {
        self.summary(self.default_delta(max_delta)?)
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

#[cfg(test)]
mod tests;
