//! Comparing a ledger file with the content the audit log records for it.
//!
//! The only legal divergence is the file lagging the log by the log's last change with no
//! digest record confirming that change: a crash (or a failed write) between the intent record
//! and the file write. It is repaired by the next change (audited `ledger.repair`) and counted
//! as spent meanwhile. A crash after the write but before the digest record leaves the file
//! equal to the log's content, which is in sync. Everything else is a mismatch, exit 4.

use serde::Serialize;

use super::file::{self, OnDisk};
use super::log::{LogLedger, LogView};
use super::{Error, Record};
use crate::workspace::Workspace;

/// How a ledger file differs from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum MismatchKind {
    /// The file is missing although the log has records for it.
    Missing,
    /// The file has fewer records than the log (an older copy put back).
    RolledBack,
    /// A record (or the file's bytes) differs from what the log recorded.
    Edited,
    /// The file holds records the log never saw.
    Unlogged,
    /// The file is not a readable version-2 ledger.
    Unreadable,
    /// The log's own ledger records do not fit together (written by hand).
    LogInconsistent,
}

impl MismatchKind {
    /// The stable kebab-case name (JSON, audit details).
    pub fn as_str(self) -> &'static str {
        match self {
            MismatchKind::Missing => "missing",
            MismatchKind::RolledBack => "rolled-back",
            MismatchKind::Edited => "edited",
            MismatchKind::Unlogged => "unlogged",
            MismatchKind::Unreadable => "unreadable",
            MismatchKind::LogInconsistent => "log-inconsistent",
        }
    }
}

/// The state of one ledger against the log.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Sync {
    /// The file is exactly the log's content (or neither exists).
    InSync,
    /// The file lags the log by its last change, unconfirmed: a crash between intent and
    /// write. Still charged; the next change repairs it (`ledger.repair`).
    PendingRepair {
        /// Records in the file.
        ledger_records: usize,
        /// Records in the log.
        log_records: usize,
    },
    /// Anything else: refused, exit 4.
    Mismatch {
        /// What differs.
        kind: MismatchKind,
        /// Records in the file (`None`: no readable file).
        ledger_records: Option<usize>,
        /// Records in the log.
        log_records: usize,
        /// What differs, in words.
        detail: String,
    },
}

/// Compare the file on disk with the log's content.
pub fn compare(fingerprint: &str, disk: &OnDisk, log: Option<&LogLedger>) -> Sync {
    let empty = LogLedger::default();
    let log = log.unwrap_or(&empty);
    let n = log.records.len();
    let mismatch = |kind, ledger_records, detail: String| Sync::Mismatch {
        kind,
        ledger_records,
        log_records: n,
        detail,
    };
    if let Some(a) = log.anomalies.first() {
        return mismatch(
            MismatchKind::LogInconsistent,
            None,
            format!("the audit log's ledger records do not fit together ({a})"),
        );
    }
    // The file may lag by the last change only if no digest record confirmed that change.
    let lagging_ok = |m: usize| {
        log.changes.last().is_some_and(|c| {
            c.start == m
                && c.start + c.count == n
                && log.confirmed.as_ref().is_none_or(|u| u.seq < c.seq)
        })
    };
    let (file, bytes) = match disk {
        OnDisk::Missing if n == 0 => return Sync::InSync,
        OnDisk::Missing if lagging_ok(0) => {
            return Sync::PendingRepair {
                ledger_records: 0,
                log_records: n,
            }
        }
        OnDisk::Missing => {
            return mismatch(
                MismatchKind::Missing,
                None,
                format!("the ledger file is missing, but the audit log records {n} ledger record(s) for it"),
            )
        }
        OnDisk::Unreadable { why, .. } => {
            return mismatch(
                MismatchKind::Unreadable,
                None,
                format!("the ledger file cannot be read ({why}); the audit log records {n} ledger record(s)"),
            )
        }
        OnDisk::Parsed { file, bytes } => (file, bytes),
    };
    let m = file.records.len();
    if let Some(i) = (0..m.min(n)).find(|&i| file.records[i] != log.records[i]) {
        return mismatch(
            MismatchKind::Edited,
            Some(m),
            format!(
                "record {} differs from the audit log: {}",
                i + 1,
                differs(&file.records[i], &log.records[i])
            ),
        );
    }
    if m < n {
        if lagging_ok(m) {
            return Sync::PendingRepair {
                ledger_records: m,
                log_records: n,
            };
        }
        return mismatch(
            MismatchKind::RolledBack,
            Some(m),
            format!(
                "the ledger has {m} record(s) but the audit log records {n}: {} record(s) were removed (an older copy put back, or the file edited)",
                n - m
            ),
        );
    }
    if m > n {
        return mismatch(
            MismatchKind::Unlogged,
            Some(m),
            format!(
                "the ledger has {m} record(s) but the audit log records only {n}: {} record(s) were never logged",
                m - n
            ),
        );
    }
    if *bytes != file::render(fingerprint, &log.records) {
        return mismatch(
            MismatchKind::Edited,
            Some(m),
            "the records match the audit log but the file's bytes do not (it was edited outside retort)".into(),
        );
    }
    Sync::InSync
}

/// What differs between two records, in words (field names only; no values needed).
fn differs(file: &Record, log: &Record) -> String {
    match (file, log) {
        (
            Record::Reserve {
                run: r1,
                dataset: d1,
                purpose: p1,
                events: e1,
                delta: x1,
                epsilon: y1,
                at: a1,
            },
            Record::Reserve {
                run: r2,
                dataset: d2,
                purpose: p2,
                events: e2,
                delta: x2,
                epsilon: y2,
                at: a2,
            },
        ) => {
            let mut f = Vec::new();
            if r1 != r2 {
                f.push("run");
            }
            if d1 != d2 {
                f.push("dataset");
            }
            if p1 != p2 {
                f.push("purpose");
            }
            if e1 != e2 {
                f.push("events");
            }
            if x1 != x2 {
                f.push("delta");
            }
            if y1 != y2 {
                f.push("epsilon");
            }
            if a1 != a2 {
                f.push("time");
            }
            format!("reservation of run {r2}: {} changed", f.join(", "))
        }
        _ => format!(
            "the log has {}, the file has {}",
            describe(log),
            describe(file)
        ),
    }
}

fn describe(r: &Record) -> String {
    match r {
        Record::Reserve { run, .. } => format!("a reservation of run {run}"),
        Record::Commit { run, .. } => format!("a commit of run {run}"),
        Record::Cancel { run, .. } => format!("a cancellation of run {run}"),
    }
}

/// One ledger's verdict, for `audit verify` and `budget`.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The keyed dataset fingerprint the ledger belongs to.
    pub fingerprint: String,
    /// Dataset names that spent from it or are stored with it now.
    pub names: Vec<String>,
    /// Names among them stored in the workspace now.
    pub stored: Vec<String>,
    /// `ok`, `pending-repair` or `mismatch`.
    pub status: &'static str,
    /// For a mismatch: `missing`, `rolled-back`, `edited`, `unlogged`, `unreadable`,
    /// `log-inconsistent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Records in the ledger file (`None`: no readable file).
    pub ledger_records: Option<usize>,
    /// Records the audit log holds for it.
    pub log_records: usize,
    /// In words.
    pub message: String,
}

impl Finding {
    /// Whether this finding fails verification.
    pub fn is_mismatch(&self) -> bool {
        self.status == "mismatch"
    }
}

/// Every finding status, for docs and tests.
pub const FINDING_STATUSES: &[&str] = &["ok", "pending-repair", "mismatch"];

/// Build the finding for one ledger.
pub fn finding(fingerprint: &str, names: Vec<String>, stored: Vec<String>, sync: &Sync) -> Finding {
    let (status, kind, ledger_records, log_records, message) = match sync {
        Sync::InSync => ("ok", None, None, 0, String::new()),
        Sync::PendingRepair {
            ledger_records,
            log_records,
        } => (
            "pending-repair",
            None,
            Some(*ledger_records),
            *log_records,
            format!(
                "the ledger lags the audit log by its last change ({ledger_records} of {log_records} record(s)): a command stopped between logging the change and writing the file; the change counts as spent and the next reservation repairs the file (ledger.repair)"
            ),
        ),
        Sync::Mismatch {
            kind,
            ledger_records,
            log_records,
            detail,
        } => (
            "mismatch",
            Some(kind.as_str()),
            *ledger_records,
            *log_records,
            detail.clone(),
        ),
    };
    Finding {
        fingerprint: fingerprint.to_string(),
        names,
        stored,
        status,
        kind,
        ledger_records,
        log_records,
        message,
    }
}

/// Compare every ledger with the log: every ledger file, every ledger the log records, and
/// the ledger of every stored dataset that has either. Read-only.
///
/// # Errors
/// `ledger-log-unverified` (the log's chain is damaged), `ledger-not-migrated`, I/O.
pub fn check_all(ws: &Workspace) -> Result<Vec<Finding>, Error> {
    super::migrate::require_migrated(ws)?;
    let (view, disks) = consistent_read(ws, None)?;
    view.require_intact()?;
    let stored = super::stored_fingerprints(ws)?;
    let mut out = Vec::new();
    for (fp, disk) in &disks {
        let log = view.ledgers.get(fp);
        let sync = compare(fp, disk, log);
        let mut f = finding(
            fp,
            names(fp, disk, log, &stored),
            stored_names(fp, &stored),
            &sync,
        );
        if let Sync::InSync = sync {
            f.ledger_records = Some(log.map_or(0, |l| l.records.len()));
            f.log_records = log.map_or(0, |l| l.records.len());
        }
        out.push(f);
    }
    Ok(out)
}

/// The names of a ledger: from the log, the file, and the datasets stored with it.
pub fn names(
    fp: &str,
    disk: &OnDisk,
    log: Option<&LogLedger>,
    stored: &[(String, String)],
) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let mut add = |n: &str| {
        if !v.iter().any(|x| x == n) {
            v.push(n.to_string());
        }
    };
    if let OnDisk::Parsed { file, .. } = disk {
        file.names.iter().for_each(|n| add(n));
    }
    if let Some(l) = log {
        l.names.iter().for_each(|n| add(n));
    }
    for (name, f) in stored {
        if f == fp {
            add(name);
        }
    }
    v
}

/// The stored datasets (name) whose fingerprint is `fp`.
pub fn stored_names(fp: &str, stored: &[(String, String)]) -> Vec<String> {
    stored
        .iter()
        .filter(|(_, f)| f == fp)
        .map(|(n, _)| n.clone())
        .collect()
}

/// Read the ledger files and the log so that they agree in time: files first, then the log,
/// then the files again, retried while a writer changed a file in between (a change logs its
/// intent before it writes, so a file read before the log can only lag it, never lead it).
/// `only`: one fingerprint; `None`: every ledger file, every ledger in the log and every
/// stored dataset's ledger.
///
/// # Errors
/// I/O.
pub fn consistent_read(
    ws: &Workspace,
    only: Option<&str>,
) -> Result<(LogView, Vec<(String, OnDisk)>), Error> {
    let dir = ws.ledger_dir();
    let mut tries = 0;
    loop {
        let keys = |view: Option<&LogView>| -> Result<Vec<String>, Error> {
            Ok(match only {
                Some(fp) => vec![fp.to_string()],
                None => {
                    let mut k: std::collections::BTreeSet<String> =
                        file::list(&dir)?.into_iter().collect();
                    if let Some(v) = view {
                        k.extend(v.ledgers.keys().cloned());
                    }
                    k.into_iter().collect()
                }
            })
        };
        let first: Vec<(String, OnDisk)> = keys(None)?
            .into_iter()
            .map(|fp| file::read(&dir, &fp).map(|d| (fp, d)))
            .collect::<Result<_, _>>()?;
        let view = super::log::replay(ws)?;
        let mut second = Vec::new();
        for fp in keys(Some(&view))? {
            second.push((fp.clone(), file::read(&dir, &fp)?));
        }
        let stable = second.iter().all(|(fp, d)| {
            first
                .iter()
                .find(|(f, _)| f == fp)
                .map_or(matches!(d, OnDisk::Missing), |(_, d0)| d0.same_as(d))
        });
        tries += 1;
        if stable || tries >= 5 {
            return Ok((view, second));
        }
        std::thread::sleep(std::time::Duration::from_millis(20 * tries));
    }
}
