//! Migrating a workspace written before the ledger was bound to the log (audited, idempotent,
//! crash-safe).
//!
//! 1. Every dataset whose `dataset.json` carries a version-1 fingerprint gets its version-2
//!    fingerprint ([`crate::dataset::fingerprint`]), the old one kept as `fingerprint_v1`; a
//!    `dataset.migrate` record is logged before `dataset.json` is replaced (atomically).
//! 2. Every version-1 ledger (`ledger/<dataset>.json`) becomes part of the version-2 ledger of
//!    its dataset's fingerprint: a `ledger.migrate` intent carrying the full migrated records
//!    (the baseline the log-derived spend starts from), then the file (atomically), then the
//!    digest record, then the version-1 file is moved to `ledger/migrated-v1/` (evidence).
//!    A version-1 ledger whose dataset is no longer stored keeps its history under an
//!    *orphan* key (an HMAC of its name in its own domain): `budget NAME` still finds it, but
//!    it cannot be bound to images any more.
//!
//! Rerunning after a crash at any point neither loses nor doubles records: a version-1 file
//! whose migration (name, SHA-256) is already in the log is not logged again, and a file that
//! lags that migration is repaired like any other crash window.

use serde_json::json;

use super::file::{self, V1File};
use super::log::{self, DATASET_MIGRATE, MIGRATE};
use super::{Error, Ledger};
use crate::audit::Outcome;
use crate::dataset;
use crate::workspace::Workspace;

/// What a migration did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Migrated {
    /// Datasets given a version-2 fingerprint: (name, fingerprint, fingerprint_v1).
    pub datasets: Vec<(String, String, String)>,
    /// Version-1 ledgers converted: (name, fingerprint, records).
    pub ledgers: Vec<(String, String, usize)>,
}

impl Migrated {
    /// Whether nothing needed migrating.
    pub fn is_empty(&self) -> bool {
        self.datasets.is_empty() && self.ledgers.is_empty()
    }
}

/// The domain tag of orphan keys (version-1 ledgers whose dataset is gone).
const ORPHAN_TAG: &[u8] = b"retort.ledger-orphan-v1\0";

/// Datasets still carrying a version-1 fingerprint, among those this user may read (a
/// compliance officer reads none; a version-1 *ledger*, which is what holds spend, is still
/// found by [`require_migrated`]).
fn pending_datasets(ws: &Workspace) -> Result<Vec<dataset::Stored>, Error> {
    Ok(super::readable_datasets(ws)?
        .into_iter()
        .filter(|s| !s.meta.has_v2_fingerprint())
        .collect())
}

/// Fail (without writing) when the workspace still needs migrating: for read-only paths.
///
/// # Errors
/// `ledger-not-migrated`, I/O.
pub fn require_migrated(ws: &Workspace) -> Result<(), Error> {
    if let Some((name, _)) = file::list_v1(&ws.ledger_dir())?.into_iter().next() {
        return Err(Error::NotMigrated { dataset: name });
    }
    if let Some(s) = pending_datasets(ws)?.into_iter().next() {
        return Err(Error::NotMigrated {
            dataset: s.meta.name,
        });
    }
    Ok(())
}

/// Migrate the workspace if it needs it (a no-op that writes nothing otherwise). Call it when
/// a command that may write opens the workspace.
///
/// # Privacy
/// Reads the pixels of datasets being migrated, to fingerprint them under the workspace key.
///
/// # Errors
/// `ledger-corrupt` (a version-1 file that does not parse: fail closed), `ledger-log-mismatch`
/// (the version-2 ledger it would join disagrees with the log), `ledger-locked`, dataset,
/// audit and I/O errors.
pub fn migrate(ws: &Workspace, actor: &str) -> Result<Migrated, Error> {
    let mut done = Migrated::default();
    let datasets = pending_datasets(ws)?;
    let v1 = file::list_v1(&ws.ledger_dir())?;
    if datasets.is_empty() && v1.is_empty() {
        return Ok(done);
    }
    let _lock = super::lock(ws)?;
    // 1. Datasets (again under the lock: another process may have done it meanwhile).
    for s in pending_datasets(ws)? {
        let mut s = s;
        let v2 = dataset::compute_fingerprint(ws, &s)?;
        let v1fp = s.meta.fingerprint.clone();
        log::append(
            ws,
            actor,
            DATASET_MIGRATE,
            &s.meta.name,
            Outcome::Ok,
            json!({"dataset": s.meta.name, "fingerprint": v2, "fingerprint_v1": v1fp}),
        )?;
        s.meta.fingerprint = v2.clone();
        s.meta.fingerprint_v1 = Some(v1fp.clone());
        s.meta.version = dataset::META_VERSION;
        dataset::rewrite_meta(&s)?;
        done.datasets.push((s.meta.name.clone(), v2, v1fp));
    }
    // 2. Version-1 ledgers.
    for (name, path) in file::list_v1(&ws.ledger_dir())? {
        let n = migrate_ledger(ws, actor, &name, &path)?;
        done.ledgers.push(n);
    }
    Ok(done)
}

fn migrate_ledger(
    ws: &Workspace,
    actor: &str,
    name: &str,
    path: &std::path::Path,
) -> Result<(String, String, usize), Error> {
    let bytes = std::fs::read(path).map_err(|e| crate::error::IoError::new("reading", path, e))?;
    let sha = crate::digest::sha256_hex(&bytes);
    let corrupt = |why: String| Error::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let v1: V1File = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if v1.version != 1 {
        return Err(corrupt(format!("unknown version {}", v1.version)));
    }
    if v1.dataset != name {
        return Err(corrupt(format!("it belongs to dataset {}", v1.dataset)));
    }
    let fp = match dataset::open(ws, name) {
        Ok(s) => s.meta.fingerprint,
        Err(dataset::Error::NotFound { .. }) => orphan_key(ws, name)?,
        Err(e) => return Err(e.into()),
    };
    let records: Vec<super::Record> = v1.records.into_iter().map(|r| r.upgrade(name)).collect();
    for r in &records {
        if let super::Record::Reserve { events, .. } = r {
            for e in events {
                e.validate().map_err(|e| corrupt(e.to_string()))?;
            }
        }
    }
    let ledger = Ledger::with_fingerprint(ws, &fp, name);
    // The ledger it joins must agree with the log first (this also repairs the crash window
    // of an earlier try: its migration logged, the file not written).
    let view = ledger.sync_for_write(actor)?;
    if !view
        .migrated_v1
        .contains_key(&(name.to_string(), sha.clone()))
    {
        ledger.apply_change(
            actor,
            &view,
            MIGRATE,
            records.clone(),
            json!({"from": format!("ledger/{name}.json"), "v1_sha256": sha}),
        )?;
    }
    let dir = ws.ledger_dir().join(file::MIGRATED_V1_DIR);
    crate::workspace::create_dir_all(&dir)?;
    let mut target = dir.join(format!("{name}.json"));
    let mut k = 1;
    while target.exists() {
        k += 1;
        target = dir.join(format!("{name}.{k}.json"));
    }
    std::fs::rename(path, &target).map_err(|e| crate::error::IoError::new("moving", path, e))?;
    crate::workspace::sync_dir(&ws.ledger_dir())
        .map_err(|e| crate::error::IoError::new("syncing", ws.ledger_dir(), e))?;
    tracing::info!(
        "ledger of {name} migrated to {fp} ({} record(s))",
        records.len()
    );
    Ok((name.to_string(), fp, records.len()))
}

/// The key of a version-1 ledger whose dataset is not stored any more.
fn orphan_key(ws: &Workspace, name: &str) -> Result<String, Error> {
    let secret =
        crate::keys::HmacSecret::load(&crate::keys::KeyPaths::in_dir(&ws.keys_dir()).hmac)?;
    let mut msg = ORPHAN_TAG.to_vec();
    msg.extend_from_slice(name.as_bytes());
    Ok(secret.mac_hex(&msg))
}
