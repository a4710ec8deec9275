//! What `runs show` says about one run: its record, and what happened to it afterwards
//! (evaluated, utility figures released, packaged, what the ledger charged for it), read from
//! the run directory, the package index and the ledger. Read-only.

use serde::Serialize;

use super::evaluation::{utility_ledger_id, EvalRecord, UtilityRelease};
use super::record::RunRecord;
use super::{dir, Error};
use crate::ledger::{Ledger, RunEntry};
use crate::package::manifest::PackageMeta;
use crate::workspace::Workspace;

/// A file of the run that exists but cannot be read as its format (shown, never skipped).
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    /// The file.
    pub path: String,
    /// Why.
    pub why: String,
}

/// One run and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// The run record.
    pub record: RunRecord,
    /// `runs/<id>/`.
    pub dir: String,
    /// The internal evaluation (`eval.json`), if `eval` ran.
    pub evaluation: Option<EvalRecord>,
    /// The released utility figures (`utility.json`), if made.
    pub utility: Option<UtilityRelease>,
    /// Packages built from the run (the workspace's package index).
    pub packages: Vec<PackageMeta>,
    /// What the ledger charged for the run: its own reservation and its utility release.
    pub charges: Vec<RunEntry>,
    /// Why the ledger could not be read, if it could not (the charges are then unknown).
    pub ledger_error: Option<String>,
    /// Files of the run (or index entries) that exist but do not parse.
    pub unreadable: Vec<Unreadable>,
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    unreadable: &mut Vec<Unreadable>,
) -> Option<T> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            unreadable.push(Unreadable {
                path: path.display().to_string(),
                why: e.to_string(),
            });
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            unreadable.push(Unreadable {
                path: path.display().to_string(),
                why: e.to_string(),
            });
            None
        }
    }
}

/// Run `id` with its evaluation, release, packages and ledger charges.
///
/// # Errors
/// `run-not-found`, `run-invalid` (its `run.json`), `name-invalid`; a damaged `eval.json`,
/// `utility.json`, package index entry or ledger is reported in the overview, not as an error.
pub fn overview(ws: &Workspace, id: &str) -> Result<Overview, Error> {
    let record = dir::read(ws, id)?;
    let run_dir = dir::dir_of(ws, id);
    let mut unreadable = Vec::new();
    let evaluation = read_json::<EvalRecord>(&run_dir.join("eval.json"), &mut unreadable);
    let utility = read_json::<UtilityRelease>(&run_dir.join("utility.json"), &mut unreadable);
    let mut packages = Vec::new();
    if let Ok(rd) = std::fs::read_dir(ws.packages_dir()) {
        let mut names: Vec<_> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".meta.json") && !n.starts_with('.'))
            .collect();
        names.sort();
        for n in names {
            if let Some(m) = read_json::<PackageMeta>(&ws.packages_dir().join(&n), &mut unreadable)
            {
                if m.run == record.id {
                    packages.push(m);
                }
            }
        }
    }
    let (charges, ledger_error) = match Ledger::of_run(ws, &record.id).and_then(|l| l.runs()) {
        Ok(runs) => {
            let utility_id = utility_ledger_id(&record.id);
            (
                runs.into_iter()
                    .filter(|e| e.run == record.id || e.run == utility_id)
                    .collect(),
                None,
            )
        }
        Err(crate::ledger::Error::NotFound { .. }) => (
            Vec::new(),
            Some("no ledger holds a reservation for this run".into()),
        ),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Ok(Overview {
        record,
        dir: run_dir.display().to_string(),
        evaluation,
        utility,
        packages,
        charges,
        ledger_error,
        unreadable,
    })
}
