//! The run directory `runs/<id>/`: `synthetic.parquet` (partner format), `contact_sheet.png`,
//! `run.json` (the [`RunRecord`]), the internal `teacher.json` of a run with a DP teacher, and
//! after `eval` the internal `eval.json` and the released `utility.json`. A completed run is built in a temporary directory and renamed into place, so
//! `runs/<id>/` is either complete or holds only the `run.json` of a run that did not complete
//! (running, cancelled, failed, crashed), so its charge stays explainable.

use std::path::{Path, PathBuf};

use super::record::RunRecord;
use super::Error;
use crate::distill::SyntheticSet;
use crate::workspace::{atomic_write, create_dir_all, publish_dir, Workspace};

/// Directory of run `id`.
pub fn dir_of(ws: &Workspace, id: &str) -> PathBuf {
    ws.runs_dir().join(id)
}

/// Write a completed run: `synthetic.parquet`, `contact_sheet.png`, `run.json`, built in a
/// temporary directory and renamed into `runs/<id>/`.
///
/// # Errors
/// I/O and format errors (nothing new is left at `runs/<id>/` on error).
pub(crate) fn write_completed(
    ws: &Workspace,
    rec: &RunRecord,
    set: &SyntheticSet,
    teacher: Option<&crate::distill::teacher::Teacher>,
) -> Result<PathBuf, Error> {
    let final_dir = dir_of(ws, &rec.id);
    let tmp = ws.runs_dir().join(format!(".{}.tmp", rec.id));
    if tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    create_dir_all(&tmp)?;
    let result = (|| -> Result<(), Error> {
        crate::dataset::write_synthetic_parquet(&tmp.join("synthetic.parquet"), set, &rec.classes)?;
        let png = crate::dataset::contact_sheet_png(set, &rec.classes, None);
        atomic_write(&tmp.join("contact_sheet.png"), &png)?;
        atomic_write(&tmp.join("run.json"), &rec.to_json())?;
        if let Some(t) = teacher {
            t.write(&tmp.join(crate::distill::teacher::FILE))?;
        }
        if final_dir.exists() {
            // Only the stub of this run (written at reservation) can be here: ids are fresh.
            std::fs::remove_dir_all(&final_dir)
                .map_err(|e| crate::error::IoError::new("removing", &final_dir, e))?;
        }
        publish_dir(&tmp, &final_dir)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|_| final_dir)
}

/// Write (or overwrite) only `runs/<id>/run.json`, for a run that is running or ended early.
///
/// # Errors
/// I/O.
pub(crate) fn write_record(ws: &Workspace, rec: &RunRecord) -> Result<PathBuf, Error> {
    let dir = dir_of(ws, &rec.id);
    create_dir_all(&dir)?;
    atomic_write(&dir.join("run.json"), &rec.to_json())?;
    Ok(dir)
}

/// Read and validate `runs/<id>/run.json`.
///
/// # Errors
/// `run-not-found`, `run-invalid`, `name-invalid` (a malformed id: usage), I/O.
pub fn read(ws: &Workspace, id: &str) -> Result<RunRecord, Error> {
    crate::workspace::validate_name(id)?;
    read_at(&dir_of(ws, id).join("run.json"), id)
}

fn read_at(p: &Path, id: &str) -> Result<RunRecord, Error> {
    let bytes = match std::fs::read(p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                run: id.into(),
                path: p.into(),
            })
        }
        Err(e) => return Err(crate::error::IoError::new("reading", p, e).into()),
    };
    let r: RunRecord = serde_json::from_slice(&bytes).map_err(|e| Error::Invalid {
        path: p.into(),
        why: format!("not the run.json format: {e}"),
    })?;
    r.validate().map_err(|why| Error::Invalid {
        path: p.into(),
        why,
    })?;
    if r.id != id {
        return Err(Error::Invalid {
            path: p.into(),
            why: format!("it names run {:?}, not {id:?}", r.id),
        });
    }
    Ok(r)
}

/// A run directory's id and its record, or why the record cannot be read.
pub type Listed = (String, Result<RunRecord, Error>);

/// Every run directory of the workspace, oldest id first, each with its record or the reason
/// it cannot be read (a compliance report must show an unreadable record, never skip it).
///
/// # Errors
/// I/O on the `runs/` directory itself.
pub fn list(ws: &Workspace) -> Result<Vec<Listed>, Error> {
    let dir = ws.runs_dir();
    let rd = match std::fs::read_dir(&dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(crate::error::IoError::new("reading", &dir, e).into()),
    };
    let mut ids = Vec::new();
    for e in rd {
        let e = e.map_err(|e| crate::error::IoError::new("reading", &dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.path().is_dir() {
            continue;
        }
        ids.push(name);
    }
    ids.sort();
    Ok(ids
        .into_iter()
        .map(|id| {
            let r = read_at(&dir.join(&id).join("run.json"), &id);
            (id, r)
        })
        .collect())
}
