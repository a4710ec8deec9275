//! The per-dataset privacy-budget ledger: reserve before reading private data, commit after.
//!
//! # Guarantees
//! - **Durable and append-only.** Each dataset has one file, `ledger/<dataset>.json`, holding an
//!   ordered list of records (`reserve`, `commit`, `cancel`). A change appends one record and
//!   rewrites the file atomically (temp file, fsync, rename, fsync of the directory) *before*
//!   the call returns. Existing records are never edited or removed.
//! - **Fails closed.** A reservation is refused (`budget-exceeded`, exit 3) when the dataset's
//!   total *including the new run* would exceed the cap; an unreadable or malformed ledger is an
//!   error, never an empty budget.
//! - **A crashed or cancelled run stays charged.** The charge is the `reserve` record; `commit`
//!   and `cancel` only change the run's state label.
//! - **The total is the accountant applied to all events of all runs** (RDP and PLD composition
//!   hold for adaptively chosen mechanisms), at the caller's (policy's) δ; the plain sum of
//!   per-run ε is reported beside it.
//! - **Reading never mutates** (no lock file, no directory is created by reading).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dp::accountant::{self, EpsilonReport};
use crate::dp::{self, DpEvent};
use crate::error::{Class, Coded, IoError};
use crate::workspace::{self, Workspace};

/// How long `reserve` waits for another process reserving on the same dataset.
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
    /// The ledger file cannot be parsed.
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
    #[error("the ledger of dataset {dataset} is locked by another process")]
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
}

impl Error {
    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] = &[
        "budget-exceeded",
        "ledger-corrupt",
        "ledger-duplicate-run",
        "ledger-locked",
    ];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::BudgetExceeded { .. } => "budget-exceeded",
            Error::Corrupt { .. } => "ledger-corrupt",
            Error::DuplicateRun { .. } => "ledger-duplicate-run",
            Error::Locked { .. } => "ledger-locked",
            Error::Dp(e) => e.code(),
            Error::Io(e) => e.code(),
            Error::Name(e) => e.code(),
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            Error::BudgetExceeded { cap, spent, .. } => Some(format!(
                "the remaining budget is {:.4}; ask for a smaller epsilon (more noise, fewer steps) or have the policy's cap reviewed (see `retort budget`)",
                (cap - spent).max(0.0)
            )),
            Error::Corrupt { path, .. } => Some(format!(
                "restore {} from backup; Retort will not run against a ledger it cannot read",
                path.display()
            )),
            Error::DuplicateRun { .. } => Some("use a fresh run id".into()),
            Error::Locked { .. } => Some("wait for the other run to finish reserving and retry".into()),
            Error::Dp(e) => e.hint(),
            Error::Io(e) => e.hint(),
            Error::Name(e) => e.hint(),
        }
    }
    fn class(&self) -> Class {
        match self {
            Error::BudgetExceeded { .. } => Class::Refused,
            Error::Dp(e) => e.class(),
            Error::Io(e) => e.class(),
            Error::Name(e) => e.class(),
            _ => Class::Input,
        }
    }
}

/// One record of the ledger file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Record {
    /// A run's full cost, charged before it reads private data.
    Reserve {
        /// The run id.
        run: String,
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    dataset: String,
    records: Vec<Record>,
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

/// The budget of one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The dataset.
    pub dataset: String,
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
    /// The runs, oldest first.
    pub runs: Vec<RunEntry>,
}

/// A dataset's ledger.
#[derive(Debug, Clone)]
pub struct Ledger {
    dataset: String,
    path: PathBuf,
    lock_path: PathBuf,
}

/// A run's charge, durable on disk. Dropping it leaves the run charged and `reserved`.
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

fn total(events: &[DpEvent], delta: f64) -> Result<EpsilonReport, Error> {
    Ok(accountant::epsilon(events, delta)?)
}

impl Ledger {
    /// The ledger of `dataset` in `ws` (reading creates nothing).
    ///
    /// # Errors
    /// `name-invalid`.
    pub fn open(ws: &Workspace, dataset: &str) -> Result<Ledger, Error> {
        workspace::validate_name(dataset)?;
        let dir = ws.ledger_dir();
        Ok(Ledger {
            dataset: dataset.to_string(),
            path: dir.join(format!("{dataset}.json")),
            lock_path: dir.join(format!(".{dataset}.lock")),
        })
    }

    /// The dataset.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// The ledger file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn read(&self) -> Result<File, Error> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(File {
                    version: 1,
                    dataset: self.dataset.clone(),
                    records: Vec::new(),
                })
            }
            Err(e) => return Err(IoError::new("reading", &self.path, e).into()),
        };
        let corrupt = |why: String| Error::Corrupt {
            path: self.path.clone(),
            why,
        };
        let f: File = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if f.version != 1 {
            return Err(corrupt(format!("unknown version {}", f.version)));
        }
        if f.dataset != self.dataset {
            return Err(corrupt(format!("it belongs to dataset {}", f.dataset)));
        }
        for r in &f.records {
            if let Record::Reserve { events, .. } = r {
                for e in events {
                    e.validate().map_err(|e| corrupt(e.to_string()))?;
                }
            }
        }
        Ok(f)
    }

    fn write(&self, f: &File) -> Result<(), Error> {
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        workspace::create_dir_all(dir)?;
        let mut bytes = serde_json::to_vec_pretty(f).map_err(|e| Error::Corrupt {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        bytes.push(b'\n');
        workspace::atomic_write(&self.path, &bytes)?;
        Ok(())
    }

    /// All runs, oldest first.
    ///
    /// # Errors
    /// `ledger-corrupt`, I/O.
    pub fn runs(&self) -> Result<Vec<RunEntry>, Error> {
        Ok(runs_of(&self.read()?))
    }

    /// Every event of every run (what the total is computed over).
    ///
    /// # Errors
    /// As [`Ledger::runs`].
    pub fn all_events(&self) -> Result<Vec<DpEvent>, Error> {
        Ok(self.runs()?.into_iter().flat_map(|r| r.events).collect())
    }

    /// Charge `run`'s `events` to the dataset, durably, before the run reads private data.
    ///
    /// The total after this run (accountant over all events of all runs, at `delta`) is checked
    /// against `dataset_cap`; over the cap is refused (`budget-exceeded`, exit 3) and nothing is
    /// written.
    ///
    /// # Privacy
    /// Fail closed: the record is on disk (fsynced) when this returns `Ok`.
    ///
    /// # Errors
    /// `budget-exceeded`, `ledger-duplicate-run`, `ledger-locked`, `ledger-corrupt`,
    /// `dp-invalid-parameter`, I/O.
    pub fn reserve(
        &self,
        run: &str,
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
        workspace::create_dir_all(self.lock_path.parent().unwrap_or(std::path::Path::new(".")))?;
        let _lock = workspace::lock_file(&self.lock_path, LOCK_WAIT).map_err(|e| match e {
            workspace::LockError::Io(e) => Error::Io(e),
            _ => Error::Locked {
                dataset: self.dataset.clone(),
            },
        })?;
        let mut f = self.read()?;
        let runs = runs_of(&f);
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
        f.records.push(Record::Reserve {
            run: run.into(),
            events: events.to_vec(),
            delta,
            epsilon: requested,
            at: workspace::now_rfc3339(),
        });
        self.write(&f)?;
        Ok(Reservation {
            ledger: self.clone(),
            run: run.into(),
            epsilon: requested,
            total_after,
        })
    }

    fn finish(&self, run: &str, commit: bool) -> Result<(), Error> {
        let _lock = workspace::lock_file(&self.lock_path, LOCK_WAIT).map_err(|e| match e {
            workspace::LockError::Io(e) => Error::Io(e),
            _ => Error::Locked {
                dataset: self.dataset.clone(),
            },
        })?;
        let mut f = self.read()?;
        let at = workspace::now_rfc3339();
        f.records.push(if commit {
            Record::Commit {
                run: run.into(),
                at,
            }
        } else {
            Record::Cancel {
                run: run.into(),
                at,
            }
        });
        self.write(&f)
    }

    /// The dataset's budget at `delta`: total by the accountant over all events of all runs, the
    /// plain sum beside it, committed vs still-reserved, and the runs.
    ///
    /// # Errors
    /// `ledger-corrupt`, `dp-invalid-parameter`, I/O.
    pub fn summary(&self, delta: f64) -> Result<Summary, Error> {
        let runs = self.runs()?;
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
            delta,
            epsilon: t.epsilon,
            epsilon_rdp: t.epsilon_rdp,
            epsilon_pld: t.epsilon_pld,
            accountant: t.accountant,
            plain_sum,
            epsilon_committed: committed.min(t.epsilon),
            epsilon_reserved: (t.epsilon - committed).max(0.0),
            runs,
        })
    }
}

fn runs_of(f: &File) -> Vec<RunEntry> {
    let mut runs: Vec<RunEntry> = Vec::new();
    for r in &f.records {
        match r {
            Record::Reserve {
                run,
                events,
                delta,
                epsilon,
                at,
            } => runs.push(RunEntry {
                run: run.clone(),
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

    /// Mark the run completed (durably).
    ///
    /// # Errors
    /// I/O, `ledger-locked`, `ledger-corrupt`.
    pub fn commit(self) -> Result<(), Error> {
        self.ledger.finish(&self.run, true)
    }

    /// Mark the run cancelled (durably). It stays charged.
    ///
    /// # Errors
    /// As [`Reservation::commit`].
    pub fn cancel(self) -> Result<(), Error> {
        self.ledger.finish(&self.run, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ws() -> (tempfile::TempDir, Workspace) {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::create(&d.path().join("ws"), "test").unwrap();
        (d, ws)
    }

    #[test]
    fn reserve_commit_cancel_and_summary() {
        let (_d, ws) = ws();
        let l = Ledger::open(&ws, "mnist").unwrap();
        assert_eq!(l.summary(1e-5).unwrap().epsilon, 0.0);
        let ev = vec![DpEvent::poisson_gaussian(0.01, 1.1, 1000)];
        let r = l.reserve("run-1", &ev, 1e-5, Some(10.0)).unwrap();
        assert!(r.epsilon > 1.0 && r.epsilon < 2.0);
        r.commit().unwrap();
        let r2 = l.reserve("run-2", &ev, 1e-5, Some(10.0)).unwrap();
        r2.cancel().unwrap();
        let r3 = l.reserve("run-3", &ev, 1e-5, None).unwrap();
        drop(r3); // crashed: stays charged and reserved
        let s = l.summary(1e-5).unwrap();
        assert_eq!(s.runs.len(), 3);
        assert_eq!(s.runs[0].state, RunState::Committed);
        assert_eq!(s.runs[1].state, RunState::Cancelled);
        assert_eq!(s.runs[2].state, RunState::Reserved);
        let three =
            accountant::epsilon(&[DpEvent::poisson_gaussian(0.01, 1.1, 3000)], 1e-5).unwrap();
        assert!((s.epsilon - three.epsilon).abs() < 1e-9);
        assert!(s.plain_sum > s.epsilon);
        assert!(s.epsilon_reserved > 0.0 && s.epsilon_committed > 0.0);
        assert!(matches!(
            l.reserve("run-1", &ev, 1e-5, None),
            Err(Error::DuplicateRun { .. })
        ));
    }

    #[test]
    fn fail_over_cap_is_refused_and_writes_nothing() {
        let (_d, ws) = ws();
        let l = Ledger::open(&ws, "d").unwrap();
        let ev = vec![DpEvent::poisson_gaussian(0.01, 1.1, 1000)];
        l.reserve("a", &ev, 1e-5, Some(2.0))
            .unwrap()
            .commit()
            .unwrap();
        let before = std::fs::read(l.path()).unwrap();
        let e = l.reserve("b", &ev, 1e-5, Some(2.0)).unwrap_err();
        assert_eq!(e.code(), "budget-exceeded");
        assert_eq!(e.class(), Class::Refused);
        assert!(e.to_string().contains("cap"));
        assert_eq!(std::fs::read(l.path()).unwrap(), before);
    }

    #[test]
    fn fail_invalid_inputs() {
        let (_d, ws) = ws();
        assert!(Ledger::open(&ws, "../x").is_err());
        let l = Ledger::open(&ws, "d").unwrap();
        let ev = vec![DpEvent::gaussian(1.0, 1)];
        assert!(l.reserve("r", &ev, 0.0, None).is_err());
        assert!(l.reserve("r", &ev, 1e-5, Some(-1.0)).is_err());
        assert!(l.reserve("r", &ev, 1e-5, Some(f64::NAN)).is_err());
        assert!(l
            .reserve("r", &[DpEvent::gaussian(-1.0, 1)], 1e-5, None)
            .is_err());
        assert!(!l.path().exists());
        std::fs::write(l.path(), b"{not json").unwrap();
        assert_eq!(l.summary(1e-5).unwrap_err().code(), "ledger-corrupt");
        assert_eq!(
            l.reserve("r", &ev, 1e-5, None).unwrap_err().code(),
            "ledger-corrupt"
        );
    }

    #[test]
    fn reading_never_mutates() {
        let (_d, ws) = ws();
        let l = Ledger::open(&ws, "d").unwrap();
        let list = |p: &std::path::Path| {
            let mut v: Vec<_> = std::fs::read_dir(p)
                .map(|r| r.map(|e| e.unwrap().file_name()).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let before = list(&ws.ledger_dir());
        l.summary(1e-5).unwrap();
        l.runs().unwrap();
        assert_eq!(list(&ws.ledger_dir()), before);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn no_reserve_sequence_exceeds_cap(cap in 0.5f64..6.0,
                                           runs in proptest::collection::vec((0.001f64..0.1, 0.8f64..5.0, 1u64..300), 1..6)) {
            let (_d, ws) = ws();
            let l = Ledger::open(&ws, "d").unwrap();
            for (i, (q, s, t)) in runs.iter().enumerate() {
                let _ = l.reserve(&format!("r{i}"), &[DpEvent::poisson_gaussian(*q, *s, *t)], 1e-5, Some(cap));
                let total = l.summary(1e-5).unwrap().epsilon;
                prop_assert!(total <= cap + 1e-12, "total {total} over cap {cap}");
            }
        }
    }
}
