//! The run directory `runs/<id>/` (DESIGN, BRIEF-COMMON "Run directory"): `synthetic.parquet`
//! (partner format), `contact_sheet.png`, `run.json` (every parameter, the privacy events,
//! timings, version). A completed run is built in a temporary directory and renamed into place,
//! so `runs/<id>/` is either complete or absent; a run that did not complete (cancelled,
//! failed) gets a directory holding only its `run.json`, so its charge stays explainable.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DpEvent, Error, Method, Plan, SyntheticSet};
use crate::dataset::Shape;
use crate::workspace::{atomic_write, create_dir_all, publish_dir, Workspace};

/// `run.json` format version.
pub const RUN_VERSION: u32 = 1;

/// Run status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// In progress.
    Running,
    /// Finished; the synthetic set is written.
    Completed,
    /// Stopped by the user (stays charged).
    Cancelled,
    /// Stopped by an error after the reservation (stays charged).
    Failed,
}

/// The privacy block of `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Privacy {
    /// The reported ε (the smaller of the accountants' sound bounds).
    pub epsilon: f64,
    /// ε by RDP, when computed.
    pub epsilon_rdp: Option<f64>,
    /// ε by PLD (or the exact analytic curve for one Gaussian), when computed.
    pub epsilon_pld: Option<f64>,
    /// Which accountant gave `epsilon`.
    pub accountant: String,
    /// Noise multiplier σ.
    pub noise_multiplier: f64,
    /// Poisson sampling rate (`null` for a full-data release).
    pub sampling_rate: Option<f64>,
    /// Noisy releases.
    pub steps: u64,
    /// Clip norm.
    pub clip_norm: f64,
    /// Always `add-remove-one-image`.
    pub neighbouring: String,
}

/// The policy a run relied on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyRef {
    /// Policy name.
    pub name: String,
    /// SHA-256 of the policy file.
    pub sha256: String,
}

/// `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// Format version.
    pub version: u32,
    /// Run id.
    pub id: String,
    /// Dataset name.
    pub dataset: String,
    /// Keyed fingerprint of the dataset (HMAC).
    pub dataset_fingerprint: String,
    /// Method.
    pub method: Method,
    /// Status.
    pub status: Status,
    /// Images per class.
    pub ipc: usize,
    /// Target ε.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// The guarantee.
    pub privacy: Privacy,
    /// Events charged to the ledger.
    pub events: Vec<DpEvent>,
    /// Method hyper-parameters.
    pub hyperparameters: serde_json::Value,
    /// Non-private initialisation seed (feature nets, synthetic init, augmentation). It never
    /// seeds privacy noise or sampling.
    pub init_seed: u64,
    /// Policy relied on.
    pub policy: Option<PolicyRef>,
    /// `[c, h, w]`.
    pub shape: Vec<usize>,
    /// Class names.
    pub classes: Vec<String>,
    /// Public metadata read before the reservation.
    pub public_metadata: Vec<String>,
    /// Start time (RFC 3339).
    pub started: String,
    /// End time (RFC 3339), if ended.
    pub finished: Option<String>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Seconds by phase.
    pub timings: serde_json::Value,
    /// Method diagnostics.
    pub diagnostics: serde_json::Value,
    /// Retort version.
    pub retort_version: String,
}

impl RunRecord {
    /// A record for a run about to start.
    pub fn start(id: &str, plan: &Plan, policy: Option<PolicyRef>) -> RunRecord {
        RunRecord {
            version: RUN_VERSION,
            id: id.into(),
            dataset: plan.dataset.clone(),
            dataset_fingerprint: plan.dataset_fingerprint.clone(),
            method: plan.method,
            status: Status::Running,
            ipc: plan.ipc,
            epsilon: plan.epsilon_target,
            delta: plan.delta,
            privacy: Privacy {
                epsilon: plan.epsilon,
                epsilon_rdp: None,
                epsilon_pld: None,
                accountant: plan.accountant.clone(),
                noise_multiplier: plan.noise_multiplier,
                sampling_rate: plan.sampling_rate,
                steps: plan.steps,
                clip_norm: plan.clip_norm,
                neighbouring: "add-remove-one-image".into(),
            },
            events: plan.events.clone(),
            hyperparameters: plan.hyperparameters(),
            init_seed: plan.seed,
            policy,
            shape: plan.shape.to_vec(),
            classes: plan.classes.clone(),
            public_metadata: plan.public_metadata.clone(),
            started: crate::workspace::now_rfc3339(),
            finished: None,
            seconds: 0.0,
            timings: serde_json::json!({}),
            diagnostics: serde_json::json!({}),
            retort_version: crate::VERSION.into(),
        }
    }

    fn json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("invariant: run record serializes");
        v.push(b'\n');
        v
    }
}

/// Directory of run `id`.
pub fn dir_of(ws: &Workspace, id: &str) -> PathBuf {
    ws.runs_dir().join(id)
}

/// Write a completed run: `synthetic.parquet`, `contact_sheet.png`, `run.json`, built in a
/// temporary directory and renamed into `runs/<id>/`.
///
/// # Errors
/// I/O and format errors (nothing is left at `runs/<id>/` on error).
pub fn write_completed(
    ws: &Workspace,
    rec: &RunRecord,
    set: &SyntheticSet,
) -> crate::Result<PathBuf> {
    let final_dir = dir_of(ws, &rec.id);
    let tmp = ws.runs_dir().join(format!(".{}.tmp", rec.id));
    if tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    create_dir_all(&tmp)?;
    let result = (|| -> crate::Result<()> {
        write_parquet(&tmp.join("synthetic.parquet"), set, &rec.classes)?;
        let png = contact_sheet(set, &rec.classes);
        atomic_write(&tmp.join("contact_sheet.png"), &png)?;
        atomic_write(&tmp.join("run.json"), &rec.json())?;
        if final_dir.exists() {
            // Only an interrupted-run stub can be here (ids are fresh); replace it.
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

/// Write (or overwrite) only `runs/<id>/run.json`, for a run that is running, cancelled or
/// failed.
///
/// # Errors
/// I/O.
pub fn write_record_only(ws: &Workspace, rec: &RunRecord) -> crate::Result<PathBuf> {
    let dir = dir_of(ws, &rec.id);
    create_dir_all(&dir)?;
    atomic_write(&dir.join("run.json"), &rec.json())?;
    Ok(dir)
}

/// Read `runs/<id>/run.json`.
///
/// # Errors
/// `distill-run`.
pub fn read_record(ws: &Workspace, id: &str) -> Result<RunRecord, Error> {
    crate::workspace::validate_name(id).map_err(|_| Error::Run {
        run: id.into(),
        why: "not a valid run id".into(),
    })?;
    read_record_at(&dir_of(ws, id).join("run.json"), id)
}

fn read_record_at(p: &Path, id: &str) -> Result<RunRecord, Error> {
    let bytes = std::fs::read(p).map_err(|e| Error::Run {
        run: id.into(),
        why: format!("cannot read {}: {e}", p.display()),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Run {
        run: id.into(),
        why: format!("{} is not a valid run.json: {e}", p.display()),
    })
}

/// The shape in the partner Parquet metadata form `"C,H,W"`.
pub fn shape_string(s: Shape) -> String {
    format!("{},{},{}", s.c, s.h, s.w)
}

fn write_parquet(path: &Path, set: &SyntheticSet, classes: &[String]) -> crate::Result<()> {
    crate::dataset::write_synthetic_parquet(path, set, classes)?;
    Ok(())
}

fn contact_sheet(set: &SyntheticSet, classes: &[String]) -> Vec<u8> {
    crate::dataset::contact_sheet_png(set, classes, None)
}
