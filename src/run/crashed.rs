//! Runs whose process died: a `run.json` that says `running` although the `distill` that wrote
//! it is gone (killed with `kill -9`, out of memory, power loss). The next command that opens
//! the workspace for writing finds them and marks them `crashed`.
//!
//! # Guarantees
//! - **Still charged.** A crashed run keeps its ledger reservation: the ledger records it as
//!   cancelled (a cancel never refunds), so `budget` no longer counts it as "in flight".
//! - **Audited first.** A `run.crashed` record (outcome `error`, reason `run-crashed`) is
//!   appended before the run record or the ledger changes; if the log cannot take it, nothing
//!   changes (fail closed) and a later command tries again.
//! - **Never a live run.** A run is crashed only when its process is gone: no process with its
//!   pid, a process that is not a `retort` (its pid was reused), or one that started at
//!   another time than the one recorded. Where the process table cannot be read (no `/proc`),
//!   nothing is marked. Detection runs only while no other command holds the workspace lock
//!   (a running `distill` holds it), so it never races a run that is finishing.

use serde_json::json;

use super::record::{RunRecord, Status};
use super::{dir, Error};
use crate::audit::{AuditLog, NewRecord, Outcome};
use crate::ledger::{Ledger, RunState};
use crate::workspace::Workspace;

/// A run found dead and marked `crashed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crashed {
    /// The run id.
    pub run: String,
    /// Its dataset.
    pub dataset: String,
    /// The pid its record named.
    pub pid: Option<u32>,
}

/// The start time of process `pid` in clock ticks since boot (`/proc/<pid>/stat`, field 22),
/// or `None` when it cannot be read.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that wrote a `running` record is certainly gone. `None` when this host
/// cannot tell (no `/proc`), in which case the run is left as it is.
pub fn process_gone(rec: &RunRecord) -> Option<bool> {
    if !std::path::Path::new("/proc/self/stat").exists() {
        return None;
    }
    let Some(pid) = rec.pid else {
        // A running record without a pid was written by a Retort that did not record one;
        // it cannot be told from a live run.
        return None;
    };
    if pid == std::process::id() {
        return Some(false);
    }
    let comm = match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(c) => c,
        Err(_) => return Some(true),
    };
    if !comm.trim_end().starts_with("retort") {
        return Some(true);
    }
    match (rec.pid_started, process_start(pid)) {
        (Some(want), Some(got)) => Some(want != got),
        (_, None) => Some(true),
        (None, Some(_)) => Some(false),
    }
}

/// Find runs recorded as `running` whose process is gone and mark them `crashed`: an audit
/// record `run.crashed`, then `run.json` (status, end time), then the ledger (the reservation
/// is cancelled: it stays charged). Does nothing while another command holds the workspace
/// lock. Unreadable run records are left for `runs list` to show.
///
/// # Errors
/// Audit, I/O and ledger errors; what was marked before the error stays marked.
pub fn mark_crashed(ws: &Workspace, actor: &str) -> Result<Vec<Crashed>, Error> {
    let candidates: Vec<RunRecord> = dir::list(ws)?
        .into_iter()
        .filter_map(|(_, r)| r.ok())
        .filter(|r| r.status == Status::Running && process_gone(r) == Some(true))
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let Ok(_lock) = ws.lock(std::time::Duration::ZERO) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for rec in candidates {
        // Read again under the lock: the run may have ended since.
        let Ok(mut rec) = dir::read(ws, &rec.id) else {
            continue;
        };
        if rec.status != Status::Running || process_gone(&rec) != Some(true) {
            continue;
        }
        AuditLog::new(ws.audit_dir()).append(
            NewRecord::new(actor, "run.crashed", &rec.id, Outcome::Error)
                .reason("run-crashed")
                .details(json!({
                    "dataset": rec.dataset,
                    "method": rec.method.as_str(),
                    "pid": rec.pid,
                    "started": rec.started,
                    "epsilon": rec.privacy.epsilon,
                    "why": "run.json said running, but the process that ran it is gone; it stays charged",
                })),
        )?;
        let pid = rec.pid;
        rec.status = Status::Crashed;
        rec.finished = Some(crate::workspace::now_rfc3339());
        rec.pid = None;
        rec.pid_started = None;
        dir::write_record(ws, &rec)?;
        if let Ok(ledger) = Ledger::of_run(ws, &rec.id) {
            let reserved = ledger
                .runs()?
                .iter()
                .any(|e| e.run == rec.id && e.state == RunState::Reserved);
            if reserved {
                ledger.cancel_orphan(actor, &rec.id)?;
            }
        }
        out.push(Crashed {
            run: rec.id.clone(),
            dataset: rec.dataset.clone(),
            pid,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_a_start_time_and_is_alive() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let me = std::process::id();
        assert!(process_start(me).is_some());
        let mut r: RunRecord = serde_json::from_value(super::super::record::tests::v1()).unwrap();
        r.status = Status::Running;
        r.pid = Some(me);
        r.pid_started = process_start(me);
        assert_eq!(process_gone(&r), Some(false));
    }

    #[test]
    fn fail_dead_reused_or_foreign_pids_are_gone() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let mut r: RunRecord = serde_json::from_value(super::super::record::tests::v1()).unwrap();
        r.status = Status::Running;
        // pid_max is at most 2^22: this pid never exists.
        r.pid = Some(u32::MAX - 1);
        assert_eq!(process_gone(&r), Some(true));
        // pid 1 is init/systemd (or the container's entry point), not retort.
        r.pid = Some(1);
        let comm = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
        if !comm.starts_with("retort") {
            assert_eq!(process_gone(&r), Some(true));
        }
        // No pid: cannot tell.
        r.pid = None;
        assert_eq!(process_gone(&r), None);
    }
}
