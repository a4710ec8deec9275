//! Deleting a stored dataset (`retort datasets delete`): the pixels go, the history stays.
//!
//! # Guarantees
//! - **Atomic.** The directory is renamed to a hidden name in one step (so the dataset is
//!   either listed whole or gone), then removed; a removal that fails half-way leaves only a
//!   hidden directory, which the next deletion sweeps away, and the command reports it.
//! - **Audited first.** An intent record (`dataset.delete`, with the keyed fingerprint and the
//!   record counts, never file names) is appended before anything is removed; if the log
//!   cannot take it, nothing is removed.
//! - **History kept.** The ledger (keyed by the images' fingerprint), the audit log, the runs
//!   and the packages are not touched: `retort budget NAME` still finds the dataset's spend
//!   by its old name, and re-ingesting the same images under any name resumes it.
//! - **Not while running.** A run on the dataset that is still running refuses the deletion
//!   (`dataset-in-use`); runs whose process died were marked `crashed` when the workspace was
//!   opened.

use std::fs;

use serde::Serialize;
use serde_json::json;

use super::{open, Error, Result};
use crate::audit::Session;
use crate::error::IoError;
use crate::workspace::{sync_dir, validate_name, Workspace, DEFAULT_LOCK_WAIT};

/// What a deletion removed and what it kept.
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    /// The dataset.
    pub name: String,
    /// Its keyed fingerprint (the ledger's key: the budget history stays under it).
    pub fingerprint: String,
    /// Training images removed.
    pub train_count: usize,
    /// Held-out images removed.
    pub test_count: usize,
    /// Runs made from it (kept: their synthetic sets are released outputs).
    pub runs_kept: Vec<String>,
}

/// Delete dataset `name`: its pixels, labels and metadata (the whole `datasets/<name>/`).
/// Takes the workspace lock.
///
/// # Errors
/// `dataset-name` (usage), `dataset-not-found`, `dataset-in-use`, `workspace-locked`, audit
/// errors (nothing removed), I/O.
pub fn delete(ws: &Workspace, session: &mut Session, name: &str) -> Result<Deleted> {
    validate_name(name)?;
    let _lock = ws.lock(DEFAULT_LOCK_WAIT)?;
    let stored = open(ws, name)?;
    let runs = crate::run::dir::list(ws).map_err(|e| match e {
        crate::run::Error::Io(e) => Error::Io(e),
        e => Error::Invalid {
            name: name.into(),
            why: format!("the runs on it cannot be listed: {e}"),
        },
    })?;
    let mut runs_kept = Vec::new();
    for (_, r) in runs {
        let Ok(r) = r else { continue };
        if r.dataset != name {
            continue;
        }
        if r.status == crate::run::Status::Running {
            return Err(Error::InUse {
                name: name.into(),
                run: r.id,
            });
        }
        runs_kept.push(r.id);
    }
    let m = &stored.meta;
    session.detail("fingerprint", m.fingerprint.clone());
    session.detail("train_count", m.train_count);
    session.detail("test_count", m.test_count);
    session.detail("runs_kept", runs_kept.len());
    session.intent(
        "dataset.delete",
        name,
        json!({
            "fingerprint": m.fingerprint,
            "train_count": m.train_count,
            "test_count": m.test_count,
            "runs_kept": runs_kept,
            "kept": "ledger and audit history (keyed by the fingerprint), runs, packages",
        }),
    )?;
    let parent = ws.datasets_dir();
    sweep(&parent);
    let tomb = parent.join(format!(
        ".{name}.deleted-{}",
        crate::digest::hex(&crate::keys::random_bytes::<4>())
    ));
    fs::rename(&stored.dir, &tomb).map_err(|e| IoError::new("removing", &stored.dir, e))?;
    sync_dir(&parent).map_err(|e| IoError::new("syncing", &parent, e))?;
    fs::remove_dir_all(&tomb).map_err(|e| IoError::new("removing", &tomb, e))?;
    sync_dir(&parent).map_err(|e| IoError::new("syncing", &parent, e))?;
    Ok(Deleted {
        name: name.into(),
        fingerprint: m.fingerprint.clone(),
        train_count: m.train_count,
        test_count: m.test_count,
        runs_kept,
    })
}

/// Remove what earlier deletions left behind (a hidden `.<name>.deleted-*` directory whose
/// removal failed). Best effort: what cannot be removed now is tried again next time.
fn sweep(datasets: &std::path::Path) {
    let Ok(rd) = fs::read_dir(datasets) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with('.') && n.contains(".deleted-") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}
