//! Changing a ledger: the write protocol (intent in the log, then the file, then its digest),
//! the crash-window repair, and reservations with their commit and cancel.

use std::time::Duration;

use serde_json::json;

use super::file;
use super::log::{self, LogView};
use super::{runs_of, total, Error, Ledger, Record, Sync};
use crate::audit::Outcome;
use crate::dp::{self, DpEvent};
#[cfg(test)]
use crate::error::IoError;
use crate::workspace::{self, Workspace};

/// How long a change waits for another process changing a ledger.
const LOCK_WAIT: Duration = Duration::from_secs(30);

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
    // Readable like the ledger (the folder caps the mode); only the owner takes it.
    let l = workspace::lock_file_mode(&dir.join(file::LOCK_FILE), LOCK_WAIT, 0o640).map_err(
        |e| match e {
            workspace::LockError::Io(e) => Error::Io(e),
            _ => Error::Locked {
                dataset: "*".into(),
            },
        },
    )?;
    Ok(LedgerLock { _lock: l })
}

impl Ledger {
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
                    "record_count": log_records,
                    "ledger_record_count": ledger_records,
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
            json!({"run": run, "purpose": purpose, "epsilon": requested, "delta": delta,
                   "total_after": total_after, "budget_spent": total_after}),
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

    /// Mark a reserved run whose process died (see [`crate::run::crashed`]) as cancelled,
    /// logged then written. It stays charged: a cancel never refunds.
    ///
    /// # Errors
    /// As [`Reservation::cancel`].
    pub(crate) fn cancel_orphan(&self, actor: &str, run: &str) -> Result<(), Error> {
        self.finish(actor, run, false)
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
