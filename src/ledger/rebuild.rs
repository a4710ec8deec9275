//! The audited recovery path: rebuild a ledger file from the audit log (after restoring a
//! backup whose ledger is older than its log, or after the ledger was deleted or edited).
//!
//! Steps: 1. verify the whole audit log (chain and every checkpoint): a log that does not
//! verify is refused (`ledger-log-unverified`, exit 4), since it is the source; 2. take the
//! ledger lock and find the ledger; 3. compare: in sync → nothing to do; crash window → the
//! usual repair; otherwise 4. log `ledger.rebuild` (intent: what was found, the replaced
//! file's digest and where it is kept), 5. move the replaced file to `ledger/replaced/`
//! (evidence, never deleted), 6. write the file from the log, 7. log `ledger.update`.
//! The rebuilt ledger holds exactly what the log records: it adds and drops no spend.

use serde::Serialize;
use serde_json::json;

use super::check::{self, compare};
use super::file::{self, OnDisk};
use super::log::{self, REBUILD};
use super::{Error, Ledger, Sync};
use crate::audit::Outcome;
use crate::workspace::Workspace;

/// What [`rebuild`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Rebuilt {
    /// The dataset name it was asked for.
    pub dataset: String,
    /// The ledger's fingerprint.
    pub fingerprint: String,
    /// `unchanged` (already in sync), `repaired` (crash window) or `rebuilt`.
    pub action: &'static str,
    /// What was found before: `ok`, `pending-repair`, or the mismatch kind.
    pub found: &'static str,
    /// Records in the file before (`None`: no readable file).
    pub ledger_records_before: Option<usize>,
    /// Records in the file now (= the log's).
    pub records: usize,
    /// Where the replaced file was kept, if there was one.
    pub kept_as: Option<std::path::PathBuf>,
}

/// Rebuild the ledger known by `key` (dataset name, deleted dataset's name, or fingerprint)
/// from the audit log, audited.
///
/// # Errors
/// `ledger-log-unverified` (exit 4) when the log or a checkpoint does not verify;
/// `ledger-not-found` when the log has no history for it; `ledger-locked`; audit and I/O errors.
pub fn rebuild(ws: &Workspace, key: &str, actor: &str) -> Result<Rebuilt, Error> {
    // 1. The log must verify: it is the source.
    let rep = crate::audit::verify::verify(ws, &Default::default())?;
    if !rep.intact {
        return Err(Error::LogUnverified {
            why: format!(
                "{} error finding(s), {} checkpoint(s) not ok; `retort audit verify` lists them",
                rep.errors,
                rep.checkpoints.iter().filter(|c| c.status != "ok").count()
            ),
        });
    }
    // 2. Lock, find.
    let _lock = super::lock(ws)?;
    let ledger = Ledger::find(ws, key)?;
    let fp = ledger.fingerprint().to_string();
    let view = log::replay(ws)?;
    view.require_intact()?;
    let Some(logged) = view.ledgers.get(&fp).filter(|l| !l.records.is_empty()) else {
        return Err(Error::NotFound { name: key.into() });
    };
    let dir = ws.ledger_dir();
    let disk = file::read(&dir, &fp)?;
    let before = match &disk {
        OnDisk::Parsed { file, .. } => Some(file.records.len()),
        _ => None,
    };
    let n = logged.records.len();
    let mut out = Rebuilt {
        dataset: key.to_string(),
        fingerprint: fp.clone(),
        action: "unchanged",
        found: "ok",
        ledger_records_before: before,
        records: n,
        kept_as: None,
    };
    // 3. Compare.
    match compare(&fp, &disk, Some(logged)) {
        Sync::InSync => Ok(out),
        Sync::PendingRepair { .. } => {
            ledger.sync_for_write(actor)?;
            out.action = "repaired";
            out.found = "pending-repair";
            Ok(out)
        }
        Sync::Mismatch { kind, detail, .. } => {
            out.found = kind.as_str();
            // 4. Log what is done, before doing it.
            let kept = match disk {
                OnDisk::Missing => None,
                _ => {
                    let d = dir.join(file::REPLACED_DIR);
                    let stamp = crate::workspace::now_rfc3339().replace(':', "");
                    Some((d.clone(), d.join(format!("{fp}.{stamp}.json"))))
                }
            };
            log::append(
                ws,
                actor,
                REBUILD,
                &fp,
                Outcome::Intent,
                json!({
                    "fingerprint": fp,
                    "dataset": ledger.dataset(),
                    "names": check::names(&fp, &disk, Some(logged), &[]),
                    "record_count": n,
                    "found": kind.as_str(),
                    "found_detail": detail,
                    "ledger_record_count": before,
                    "replaced_sha256": disk.sha256(),
                    "kept_as": kept.as_ref().map(|(_, p)| p.strip_prefix(ws.root()).unwrap_or(p).display().to_string()),
                }),
            )?;
            // 5. Keep the replaced file.
            if let Some((d, p)) = &kept {
                crate::workspace::create_dir_all(d)?;
                let src = file::path(&dir, &fp);
                std::fs::rename(&src, p)
                    .map_err(|e| crate::error::IoError::new("moving", &src, e))?;
                out.kept_as = Some(p.clone());
            }
            // 6, 7. Write from the log, log the digest.
            let sha = file::write(&dir, &fp, &logged.records)?;
            log::confirm(ws, actor, &fp, ledger.dataset(), n, &sha, REBUILD)?;
            out.action = "rebuilt";
            Ok(out)
        }
    }
}
