//! The ledger as the audit log records it: every ledger change is logged *before* the file is
//! written, with the records it adds, so each ledger's content can be replayed from the log
//! alone.
//!
//! Record kinds (action, outcome, `details`; `object` is the fingerprint, except for
//! `dataset.migrate`, whose object is the dataset name):
//! - `ledger.reserve` / `ledger.commit` / `ledger.cancel`, intent: `{fingerprint, dataset,
//!   run, index, records, …}` — the change: `records` (one ledger record, in full) are
//!   appended at position `index`; a reserve also carries `purpose`, `epsilon`, `total_after`;
//! - `ledger.migrate`, intent: `{fingerprint, dataset, index, records, from, v1_sha256}` — the
//!   baseline: every record of a version-1 ledger, appended at `index`;
//! - `ledger.repair`, intent: `{fingerprint, dataset, record_count, ledger_record_count,
//!   file_sha256, why}` — the file lagged the log by its last change (a crash between intent
//!   and write) and is rewritten from the log (adds no content);
//! - `ledger.rebuild`, intent: `{fingerprint, dataset, names, record_count, found,
//!   found_detail, ledger_record_count, replaced_sha256, kept_as}` — the audited recovery
//!   (adds no content);
//! - `ledger.update`, ok: `{fingerprint, dataset, record_count, sha256, cause}` — after every
//!   file write: the new file's digest and record count, so the signed checkpoints cover it;
//! - `dataset.migrate`, ok: `{dataset, fingerprint, fingerprint_v1}`.
//!
//! Replay only ever appends: no record kind removes or replaces content, so records forged
//! onto the end of the log can add spend but never take it back.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::{Error, Record};
use crate::audit::read::{scan, seg_name, ChainCheck, Severity};
use crate::audit::{AuditLog, NewRecord, Outcome};
use crate::workspace::Workspace;

/// `ledger.reserve`.
pub const RESERVE: &str = "ledger.reserve";
/// `ledger.commit`.
pub const COMMIT: &str = "ledger.commit";
/// `ledger.cancel`.
pub const CANCEL: &str = "ledger.cancel";
/// `ledger.migrate`.
pub const MIGRATE: &str = "ledger.migrate";
/// `ledger.repair`.
pub const REPAIR: &str = "ledger.repair";
/// `ledger.rebuild`.
pub const REBUILD: &str = "ledger.rebuild";
/// `ledger.update`.
pub const UPDATE: &str = "ledger.update";
/// `dataset.migrate`.
pub const DATASET_MIGRATE: &str = "dataset.migrate";

/// Every audit action the ledger writes, for docs and tests.
pub const ACTIONS: &[&str] = &[
    RESERVE,
    COMMIT,
    CANCEL,
    MIGRATE,
    REPAIR,
    REBUILD,
    UPDATE,
    DATASET_MIGRATE,
];

/// One logged content change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `seq` of its intent record.
    pub seq: u64,
    /// Position of its first record.
    pub start: usize,
    /// How many records it appended.
    pub count: usize,
}

/// The last `ledger.update` of a ledger: what the file was confirmed to be.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirmed {
    /// `seq` of the update record.
    pub seq: u64,
    /// Record count of the file written.
    pub records: usize,
    /// SHA-256 of the file written.
    pub sha256: String,
}

/// One ledger as the log records it.
#[derive(Debug, Clone, Default)]
pub struct LogLedger {
    /// The content: every record the log's changes appended, in order.
    pub records: Vec<Record>,
    /// The changes, in order.
    pub changes: Vec<Change>,
    /// The last digest record.
    pub confirmed: Option<Confirmed>,
    /// Dataset names seen in its records and changes.
    pub names: BTreeSet<String>,
    /// `seq` of the newest record about it.
    pub last_seq: u64,
    /// Ledger records in the log that do not fit (a position out of order, an unreadable
    /// record): the log itself is inconsistent.
    pub anomalies: Vec<String>,
}

/// Every ledger the log knows, and what the migration needs.
#[derive(Debug, Clone, Default)]
pub struct LogView {
    /// By fingerprint.
    pub ledgers: BTreeMap<String, LogLedger>,
    /// Version-1 files already migrated: (dataset name, SHA-256 of the file) → fingerprint.
    pub migrated_v1: BTreeMap<(String, String), String>,
    /// Error findings of the chain check (0 for an intact chain).
    pub chain_errors: usize,
    /// The first of them, in words.
    pub first_error: Option<String>,
}

impl LogView {
    /// The fingerprints whose records name `dataset`, newest use first.
    pub fn by_name(&self, dataset: &str) -> Vec<String> {
        let mut v: Vec<(&String, u64)> = self
            .ledgers
            .iter()
            .filter(|(_, l)| l.names.contains(dataset))
            .map(|(fp, l)| (fp, l.last_seq))
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.1));
        v.into_iter().map(|(fp, _)| fp.clone()).collect()
    }

    /// The fingerprint whose records reserve `run`.
    pub fn by_run(&self, run: &str) -> Option<String> {
        self.ledgers
            .iter()
            .find(|(_, l)| {
                l.records
                    .iter()
                    .any(|r| matches!(r, Record::Reserve { run: r, .. } if r == run))
            })
            .map(|(fp, _)| fp.clone())
    }

    /// Fail closed on a log whose chain does not verify.
    ///
    /// # Errors
    /// `ledger-log-unverified`.
    pub fn require_intact(&self) -> Result<(), Error> {
        match self.chain_errors {
            0 => Ok(()),
            n => Err(Error::LogUnverified {
                why: format!(
                    "{n} error finding(s) in the audit log, the first: {}",
                    self.first_error.as_deref().unwrap_or("?")
                ),
            }),
        }
    }
}

/// Replay the workspace's audit log: every ledger's content, changes and last digest.
///
/// # Errors
/// I/O reading the log. A damaged chain is not an error here: it is counted in
/// [`LogView::chain_errors`] for the caller to refuse.
pub fn replay(ws: &Workspace) -> Result<LogView, Error> {
    let log = AuditLog::new(ws.audit_dir());
    let segs = log.segments()?;
    let names: Vec<String> = segs.iter().map(|p| seg_name(p)).collect();
    let mut check = ChainCheck::new();
    let mut findings = Vec::new();
    let mut view = LogView::default();
    scan(&segs, 0, 0, |e| {
        let rec = check.check(&names[e.segment], e.line_no, e.bytes, e.torn, &mut findings);
        if let Some(r) = rec {
            apply(&mut view, &r);
        }
        Ok(())
    })?;
    let errors: Vec<_> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    view.chain_errors = errors.len();
    view.first_error = errors
        .first()
        .map(|f| format!("{} at {}:{}: {}", f.code, f.segment, f.line, f.message));
    Ok(view)
}

fn apply(view: &mut LogView, r: &crate::audit::Record) {
    if !r.action.starts_with("ledger.") {
        return;
    }
    let d = &r.details;
    let Some(fp) = d.get("fingerprint").and_then(Value::as_str) else {
        return;
    };
    let l = view.ledgers.entry(fp.to_string()).or_default();
    l.last_seq = r.seq;
    if let Some(n) = d.get("dataset").and_then(Value::as_str) {
        l.names.insert(n.to_string());
    }
    match (r.action.as_str(), r.outcome) {
        (RESERVE | COMMIT | CANCEL | MIGRATE, Outcome::Intent) => {
            let index = d.get("index").and_then(Value::as_u64);
            let records = d
                .get("records")
                .cloned()
                .map(serde_json::from_value::<Vec<Record>>);
            match (index, records) {
                (Some(i), Some(Ok(recs))) if i as usize == l.records.len() => {
                    l.changes.push(Change {
                        seq: r.seq,
                        start: l.records.len(),
                        count: recs.len(),
                    });
                    for rec in &recs {
                        if let Record::Reserve { dataset, .. } = rec {
                            l.names.insert(dataset.clone());
                        }
                    }
                    l.records.extend(recs);
                    if r.action == MIGRATE {
                        let from = d.get("dataset").and_then(Value::as_str);
                        let sha = d.get("v1_sha256").and_then(Value::as_str);
                        if let (Some(from), Some(sha)) = (from, sha) {
                            view.migrated_v1
                                .insert((from.to_string(), sha.to_string()), fp.to_string());
                        }
                    }
                }
                (Some(i), Some(Ok(_))) => l.anomalies.push(format!(
                    "seq {}: a {} at position {i}, but the log has {} record(s) before it",
                    r.seq,
                    r.action,
                    l.records.len()
                )),
                _ => l.anomalies.push(format!(
                    "seq {}: a {} whose records cannot be read",
                    r.seq, r.action
                )),
            }
        }
        (UPDATE, Outcome::Ok) => {
            let records = d.get("record_count").and_then(Value::as_u64);
            let sha = d.get("sha256").and_then(Value::as_str);
            if let (Some(n), Some(sha)) = (records, sha) {
                l.confirmed = Some(Confirmed {
                    seq: r.seq,
                    records: n as usize,
                    sha256: sha.to_string(),
                });
            }
        }
        _ => {}
    }
}

/// Append one ledger audit record; fails closed (the caller must not act without it).
///
/// # Errors
/// Audit errors.
pub(crate) fn append(
    ws: &Workspace,
    actor: &str,
    action: &str,
    fingerprint: &str,
    outcome: Outcome,
    details: Value,
) -> Result<(), Error> {
    AuditLog::new(ws.audit_dir())
        .append(NewRecord::new(actor, action, fingerprint, outcome).details(details))?;
    Ok(())
}

/// The digest record that follows every file write.
///
/// # Errors
/// Audit errors.
pub(crate) fn confirm(
    ws: &Workspace,
    actor: &str,
    fingerprint: &str,
    dataset: &str,
    records: usize,
    sha256: &str,
    cause: &str,
) -> Result<(), Error> {
    append(
        ws,
        actor,
        UPDATE,
        fingerprint,
        Outcome::Ok,
        json!({
            "fingerprint": fingerprint,
            "dataset": dataset,
            "record_count": records,
            "sha256": sha256,
            "cause": cause,
        }),
    )
}
