//! `runs/<id>/run.json`: the ONE run record schema. Every reader (the run lifecycle, `eval`,
//! the package builder, the compliance report, `runs list`) imports this type; nothing reads
//! `run.json` untyped.
//!
//! Version 2 adds the budget split (`shares`) and the `crashed` status; version-1 records (made
//! before the split existed) read as one `main` share holding their events.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::distill::{DpEvent, Method, Plan};
use crate::dp::split::{Share, Stage};
use crate::dp::{Delta, Epsilon};

/// The current `run.json` format version.
pub const RUN_VERSION: u32 = 2;

/// Where a run is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// Reserved and in progress.
    Running,
    /// Finished; the synthetic set is written.
    Completed,
    /// Stopped by the user (stays charged).
    Cancelled,
    /// Stopped by an error after the reservation (stays charged).
    Failed,
    /// Found `running` by a later command although its process is gone (stays charged).
    Crashed,
}

impl Status {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
            Status::Crashed => "crashed",
        }
    }
}

/// The main release's mechanism parameters and the ε charged at `distill` (`run.json` →
/// `privacy`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Privacy {
    /// ε of the events charged at `distill` (the smaller of the accountants' sound bounds).
    pub epsilon: f64,
    /// The same by RDP, when computed.
    #[serde(default)]
    pub epsilon_rdp: Option<f64>,
    /// The same by PLD, when computed.
    #[serde(default)]
    pub epsilon_pld: Option<f64>,
    /// Which accountant gave `epsilon`.
    pub accountant: String,
    /// Noise multiplier σ of the main release.
    pub noise_multiplier: f64,
    /// Poisson sampling rate (`null` for a one-shot release over every record).
    #[serde(default)]
    pub sampling_rate: Option<f64>,
    /// Noisy releases of the main release.
    pub steps: u64,
    /// Clip norm C.
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
    /// Format version (1 or 2).
    pub version: u32,
    /// Run id.
    pub id: String,
    /// Dataset name (workspace-internal; never published).
    pub dataset: String,
    /// Keyed fingerprint of the dataset (HMAC-SHA256 with the workspace secret).
    pub dataset_fingerprint: String,
    /// Method.
    pub method: Method,
    /// Status.
    pub status: Status,
    /// Images per class.
    pub ipc: usize,
    /// Target ε of the whole run (every share composed).
    pub epsilon: Epsilon,
    /// δ.
    pub delta: Delta,
    /// The main release and the ε charged at `distill`.
    pub privacy: Privacy,
    /// Events charged to the ledger at `distill`.
    pub events: Vec<DpEvent>,
    /// The budget split: every planned release of the run (version 2; a version-1 record
    /// reads as one `main` share).
    #[serde(default)]
    pub shares: Vec<Share>,
    /// Method hyper-parameters.
    pub hyperparameters: Value,
    /// Non-private initialisation seed (feature nets, synthetic init, augmentation of the
    /// synthetic side). It never seeds privacy noise or sampling, and is never published.
    #[serde(default)]
    pub init_seed: u64,
    /// Policy relied on.
    #[serde(default)]
    pub policy: Option<PolicyRef>,
    /// `[c, h, w]`.
    pub shape: Vec<usize>,
    /// Class names.
    pub classes: Vec<String>,
    /// Public metadata read before the reservation.
    #[serde(default)]
    pub public_metadata: Vec<String>,
    /// Start time (RFC 3339).
    pub started: String,
    /// End time (RFC 3339), if ended.
    #[serde(default)]
    pub finished: Option<String>,
    /// Wall-clock seconds.
    #[serde(default)]
    pub seconds: f64,
    /// Seconds by phase.
    #[serde(default)]
    pub timings: Value,
    /// Method diagnostics (internal; never published).
    #[serde(default)]
    pub diagnostics: Value,
    /// Retort version.
    #[serde(default)]
    pub retort_version: String,
    /// Process id of the `distill` that runs it (to detect a crash: `running` with no such
    /// process). Internal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Start time of that process (clock ticks since boot, from `/proc`), so that a later
    /// process given the same pid is not taken for the run. Internal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_started: Option<u64>,
}

impl RunRecord {
    /// A record for a run about to start; `charged` is the accountants' report of the events
    /// `distill` charges (`plan.events`).
    pub fn start(
        id: &str,
        plan: &Plan,
        charged: &crate::dp::accountant::EpsilonReport,
        policy: Option<PolicyRef>,
    ) -> RunRecord {
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
                epsilon: charged.epsilon,
                epsilon_rdp: Some(charged.epsilon_rdp),
                epsilon_pld: Some(charged.epsilon_pld),
                accountant: charged.accountant.to_string(),
                noise_multiplier: plan.noise_multiplier,
                sampling_rate: plan.sampling_rate,
                steps: plan.steps,
                clip_norm: plan.clip_norm,
                neighbouring: "add-remove-one-image".into(),
            },
            events: plan.events.clone(),
            shares: plan.shares.clone(),
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
            pid: Some(std::process::id()),
            pid_started: super::crashed::process_start(std::process::id()),
        }
    }

    /// The budget split, with version-1 records read as one `main` share of their events.
    pub fn shares(&self) -> Vec<Share> {
        if !self.shares.is_empty() {
            return self.shares.clone();
        }
        vec![Share {
            name: crate::distill::plan::MAIN.into(),
            stage: Stage::Distill,
            fraction: 1.0,
            events: self.events.clone(),
            epsilon: self.privacy.epsilon,
            what: format!("the {} method's release of the training split", self.method),
        }]
    }

    /// The share named `name`, if planned.
    pub fn share(&self, name: &str) -> Option<Share> {
        self.shares().into_iter().find(|s| s.name == name)
    }

    /// Check the record's invariants (what a reader may rely on).
    ///
    /// # Errors
    /// A sentence naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.version == 0 || self.version > RUN_VERSION {
            return Err(format!(
                "unknown run.json version {} (this Retort reads 1 to {RUN_VERSION})",
                self.version
            ));
        }
        let p = &self.privacy;
        let pos = |x: f64| x.is_finite() && x > 0.0;
        if !pos(p.epsilon) || !pos(self.epsilon.get()) {
            return Err(format!(
                "epsilon {} (target {}) must be positive",
                p.epsilon, self.epsilon
            ));
        }
        if !(pos(p.noise_multiplier)
            && pos(p.clip_norm)
            && p.sampling_rate.is_none_or(|q| pos(q) && q <= 1.0))
        {
            return Err(
                "noise multiplier, clip norm and sampling rate must be positive (rate at most 1)"
                    .into(),
            );
        }
        for e in self
            .events
            .iter()
            .chain(self.shares.iter().flat_map(|s| &s.events))
        {
            e.validate()
                .map_err(|e| format!("a privacy event is invalid: {e}"))?;
        }
        if self.dataset_fingerprint.len() != 64
            || crate::digest::unhex(&self.dataset_fingerprint).is_none()
        {
            return Err("dataset_fingerprint is not a 64-hex-digit HMAC".into());
        }
        if self.shape.len() != 3 || self.shape.contains(&0) || self.classes.is_empty() {
            return Err("shape must be [c,h,w] and classes non-empty".into());
        }
        Ok(())
    }

    /// Hyper-parameters safe to publish: keys naming a seed or secret are dropped (the
    /// initialisation seed is public by design but never needed by a partner).
    pub fn public_hyperparameters(&self) -> (Map<String, Value>, Vec<String>) {
        let mut keep = Map::new();
        let mut dropped = Vec::new();
        if let Value::Object(h) = &self.hyperparameters {
            for (k, v) in h {
                let l = k.to_ascii_lowercase();
                if l.contains("seed") || l.contains("secret") {
                    dropped.push(k.clone());
                } else {
                    keep.insert(k.clone(), v.clone());
                }
            }
        }
        (keep, dropped)
    }

    /// The pretty JSON bytes written to `run.json`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("invariant: run record serializes");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A version-1 `run.json` as Retort 0.1 wrote it (no shares, no status `crashed`).
    pub(crate) fn v1() -> Value {
        serde_json::json!({
            "version": 1, "id": "run-20261129-0badcafe", "dataset": "phantoms",
            "dataset_fingerprint": "5f".repeat(32),
            "method": "gm", "status": "completed", "ipc": 2, "epsilon": 1.0, "delta": 1e-5,
            "privacy": {"epsilon": 0.97, "epsilon_rdp": 1.02, "epsilon_pld": 0.97, "accountant": "pld",
                        "noise_multiplier": 1.1, "sampling_rate": 0.01, "steps": 500, "clip_norm": 1.0,
                        "neighbouring": "add-remove-one-image"},
            "events": [{"kind": "poisson-sampled-gaussian", "q": 0.01, "sigma": 1.1, "steps": 500}],
            "hyperparameters": {"lr_images": 0.1, "noise_seed": 1234},
            "init_seed": 7,
            "policy": {"name": "default", "sha256": "ab".repeat(32)},
            "shape": [1, 4, 4], "classes": ["a", "b"], "public_metadata": [],
            "started": "2026-11-29T10:00:00Z", "finished": "2026-11-29T10:05:00Z", "seconds": 300.0,
            "timings": {}, "diagnostics": {}, "retort_version": "0.1.0"
        })
    }

    #[test]
    fn version_1_reads_as_one_main_share() {
        let r: RunRecord = serde_json::from_value(v1()).unwrap();
        r.validate().unwrap();
        let s = r.shares();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "main");
        assert_eq!(s[0].events, r.events);
        assert!(r.share("utility").is_none());
        let (h, dropped) = r.public_hyperparameters();
        assert!(h.contains_key("lr_images") && dropped == vec!["noise_seed".to_string()]);
        let back: RunRecord = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn fail_invalid_records() {
        for (k, v) in [
            ("version", serde_json::json!(9)),
            ("dataset_fingerprint", serde_json::json!("xyz")),
            ("shape", serde_json::json!([1, 0, 4])),
            ("classes", serde_json::json!([])),
        ] {
            let mut j = v1();
            j[k] = v;
            let r: RunRecord = serde_json::from_value(j).unwrap();
            assert!(r.validate().is_err(), "{k}");
        }
        let mut j = v1();
        j["epsilon"] = serde_json::json!(-1.0);
        assert!(serde_json::from_value::<RunRecord>(j).is_err());
        let mut j = v1();
        j["events"] = serde_json::json!([{"kind": "gaussian", "sigma": -1.0, "count": 1}]);
        let r: RunRecord = serde_json::from_value(j).unwrap();
        assert!(r.validate().is_err());
    }
}
