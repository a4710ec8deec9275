//! What a package says about itself: the run it comes from (`run.json`, `eval.json` as the
//! distill and eval commands write them), the partner-facing privacy report, the `SHA256SUMS`
//! list, and the workspace's package index entry (`packages/<id>.meta.json`).
//!
//! # Privacy
//! Only fields that are public by construction are copied from the run: the DP parameters and
//! events (what the accountant composed), the hyper-parameters minus anything named like a seed
//! or secret, the shape and class names, the keyed dataset fingerprint. Utility figures come from
//! the held-out split and are marked as such; strings in `eval.json` other than class names are
//! dropped, so a free-text field cannot carry private text out.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{Error, Result};

/// The DP parameters of a run (`run.json` → `privacy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPrivacy {
    /// The reported epsilon (the smaller of the accountants' bounds).
    pub epsilon: f64,
    /// Epsilon by the RDP accountant.
    #[serde(default)]
    pub epsilon_rdp: Option<f64>,
    /// Epsilon by the PLD accountant.
    #[serde(default)]
    pub epsilon_pld: Option<f64>,
    /// Which accountant gave `epsilon`.
    pub accountant: String,
    /// Noise multiplier sigma (std = sigma × clip norm).
    pub noise_multiplier: f64,
    /// Poisson sampling rate q; `None` for a one-shot release over the whole dataset (no
    /// subsampling, the `dm` method's default).
    #[serde(default)]
    pub sampling_rate: Option<f64>,
    /// Number of noisy steps.
    pub steps: u64,
    /// Per-sample clipping norm C.
    pub clip_norm: f64,
    /// Neighbouring relation (`add-remove-one-image`).
    pub neighbouring: String,
}

/// The policy a run was decided under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// Policy name.
    pub name: String,
    /// SHA-256 of the policy file.
    pub sha256: String,
}

/// `runs/<id>/run.json` (BRIEF-COMMON "Run directory"), the fields a package uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunJson {
    /// Format version.
    pub version: u32,
    /// Run id.
    pub id: String,
    /// Dataset name (workspace-internal; never published in the package).
    pub dataset: String,
    /// Keyed fingerprint (HMAC-SHA256 with the workspace secret) of the dataset.
    pub dataset_fingerprint: String,
    /// `gm` or `dm`.
    pub method: String,
    /// `running`, `completed`, `cancelled` or `failed`.
    pub status: String,
    /// Images per class.
    pub ipc: u64,
    /// Target epsilon.
    pub epsilon: f64,
    /// Delta.
    pub delta: f64,
    /// What the accountant reports for this run.
    pub privacy: RunPrivacy,
    /// The run's DP events (DpEvent JSON), as charged to the ledger.
    #[serde(default)]
    pub events: Vec<Value>,
    /// Hyper-parameters.
    #[serde(default)]
    pub hyperparameters: Map<String, Value>,
    /// The policy, if one decided the run.
    #[serde(default)]
    pub policy: Option<PolicyRef>,
    /// `[c, h, w]`.
    pub shape: Vec<usize>,
    /// Class names (index = label).
    pub classes: Vec<String>,
    /// RFC 3339 start time.
    pub started: String,
    /// RFC 3339 finish time.
    #[serde(default)]
    pub finished: Option<String>,
    /// Wall-clock seconds.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Retort version that made the run.
    #[serde(default)]
    pub retort_version: Option<String>,
}

impl RunJson {
    /// Read and validate `run.json` of a completed run.
    ///
    /// # Errors
    /// `package-run-not-found`, `package-run-invalid`, `package-run-incomplete`.
    pub fn load(path: &Path, run: &str) -> Result<RunJson> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::RunNotFound {
                    run: run.into(),
                    path: path.into(),
                })
            }
            Err(e) => return Err(crate::error::IoError::new("reading", path, e).into()),
        };
        let r: RunJson = serde_json::from_slice(&bytes).map_err(|e| Error::RunInvalid {
            path: path.into(),
            why: format!("not the run.json format: {e}"),
        })?;
        r.validate(path)?;
        if r.status != "completed" {
            return Err(Error::RunIncomplete {
                run: run.into(),
                status: r.status,
            });
        }
        Ok(r)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |why: String| Error::RunInvalid {
            path: path.into(),
            why,
        };
        let p = &self.privacy;
        let pos = |x: f64| x.is_finite() && x > 0.0;
        if !pos(p.epsilon) || !pos(self.delta) || self.delta >= 1.0 {
            return Err(bad(format!(
                "epsilon {} and delta {} must be positive (delta below 1)",
                p.epsilon, self.delta
            )));
        }
        if !(pos(p.noise_multiplier)
            && pos(p.clip_norm)
            && p.sampling_rate.is_none_or(|q| pos(q) && q <= 1.0))
        {
            return Err(bad(
                "noise multiplier, clip norm and sampling rate must be positive (rate at most 1)"
                    .into(),
            ));
        }
        if self.dataset_fingerprint.len() != 64
            || crate::workspace::unhex(&self.dataset_fingerprint).is_none()
        {
            return Err(bad("dataset_fingerprint is not a 64-hex-digit HMAC".into()));
        }
        if self.shape.len() != 3 || self.shape.contains(&0) || self.classes.is_empty() {
            return Err(bad("shape must be [c,h,w] and classes non-empty".into()));
        }
        Ok(())
    }

    /// Hyper-parameters safe to publish: keys naming a seed or secret are dropped.
    pub fn public_hyperparameters(&self) -> (Map<String, Value>, Vec<String>) {
        let mut keep = Map::new();
        let mut dropped = Vec::new();
        for (k, v) in &self.hyperparameters {
            let l = k.to_ascii_lowercase();
            if l.contains("seed") || l.contains("secret") {
                dropped.push(k.clone());
            } else {
                keep.insert(k.clone(), v.clone());
            }
        }
        (keep, dropped)
    }
}

/// Utility figures from `eval.json`, reduced to numbers (and class-name keys).
pub fn sanitize_eval(v: &Value) -> Value {
    fn numbers_only(v: &Value) -> Option<Value> {
        match v {
            Value::Number(_) | Value::Bool(_) => Some(v.clone()),
            Value::Array(a) => Some(Value::Array(a.iter().filter_map(numbers_only).collect())),
            Value::Object(o) => Some(Value::Object(
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), numbers_only(v)?)))
                    .collect(),
            )),
            Value::String(_) | Value::Null => None,
        }
    }
    let mut out = Map::new();
    if let Value::Object(o) = v {
        for k in [
            "accuracy",
            "accuracy_std",
            "per_class",
            "baselines",
            "models",
            "epochs",
        ] {
            if let Some(x) = o.get(k).and_then(numbers_only) {
                out.insert(k.into(), x);
            }
        }
    }
    Value::Object(out)
}

/// Read `eval.json` if present.
///
/// # Errors
/// `package-run-invalid` when it exists but is not JSON.
pub fn load_eval(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::RunInvalid {
                path: path.into(),
                why: format!("eval.json is not JSON: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::error::IoError::new("reading", path, e).into()),
    }
}

fn fmt_delta(d: f64) -> String {
    format!("{d:e}")
}

/// `data/privacy_report.json`: the guarantee in numbers and in plain words.
///
/// `budget` is the dataset's budget after this run as the ledger reports it (`None` when the
/// ledger is not available in this build); `eval` the raw `eval.json`, if the run was evaluated.
pub fn privacy_report(run: &RunJson, eval: Option<&Value>, budget: Option<&Value>) -> Value {
    let p = &run.privacy;
    let words = vec![
        format!(
            "This synthetic data set was produced with ({:.4}, {})-differential privacy with respect to adding or removing one image of the hospital's training split.",
            p.epsilon,
            fmt_delta(run.delta)
        ),
        format!(
            "Informally: whatever anyone does with it, the chance of any outcome changes by at most a factor of e^{:.4} ≈ {:.3} (plus a probability of at most {} of a larger change) whether or not any single patient image was used.",
            p.epsilon,
            p.epsilon.exp(),
            fmt_delta(run.delta)
        ),
        match p.sampling_rate {
            Some(q) => format!(
                "Mechanism: DP-SGD ({}) — each step samples every training image independently with probability {}, clips each image's contribution to L2 norm {}, adds Gaussian noise with standard deviation {} × {} to the sum; {} steps. Epsilon is the {} accountant's bound (RDP and PLD are both sound upper bounds; the smaller is reported).",
                run.method, q, p.clip_norm, p.noise_multiplier, p.clip_norm, p.steps, p.accountant
            ),
            None => format!(
                "Mechanism: a one-shot Gaussian release ({}) — each training image's contribution (a vector of random-network features) is clipped to L2 norm {}, the contributions are summed per class, and Gaussian noise with standard deviation {} × {} is added once to all class sums together ({} release(s)); the synthetic images are then fitted to the noisy sums without touching the data again. Epsilon is the {} accountant's bound (RDP and PLD are both sound upper bounds; the smaller is reported).",
                run.method, p.clip_norm, p.noise_multiplier, p.clip_norm, p.steps, p.accountant
            ),
        },
        "The synthetic images start from random noise, never from real images; the noise comes from an OS-seeded generator whose seed is never stored or published.".to_string(),
        match budget {
            Some(b) => format!(
                "All runs on the same data compose: after this run the source data set has spent epsilon {} in total by the {} accountant (at delta {}); see `dataset_budget`.",
                b.get("epsilon_after_this_run").and_then(Value::as_f64).map(|e| format!("{e:.4}")).unwrap_or_else(|| "?".into()),
                b.get("accountant").and_then(Value::as_str).unwrap_or("?"),
                fmt_delta(run.delta)
            ),
            None => "The dataset's total budget across runs is not included: this build of Retort has no ledger to report it.".to_string(),
        },
        match eval {
            Some(_) => "Utility figures were measured by the hospital on its held-out test split, which the synthetic data never saw; they are not part of the differential privacy guarantee above, which covers the training split.".to_string(),
            None => "No utility figures: the run was not evaluated before packaging.".to_string(),
        },
    ];
    let (hyper, _) = run.public_hyperparameters();
    json!({
        "version": 1,
        "run": run.id,
        "method": run.method,
        "guarantee": {
            "definition": "(epsilon, delta)-differential privacy",
            "epsilon": p.epsilon,
            "delta": run.delta,
            "epsilon_target": run.epsilon,
            "epsilon_rdp": p.epsilon_rdp,
            "epsilon_pld": p.epsilon_pld,
            "accountant": p.accountant,
            "neighbouring": p.neighbouring,
            "unit": "one image of the hospital's training split",
        },
        "mechanism": {
            "name": "DP-SGD: Poisson-subsampled Gaussian mechanism",
            "noise_multiplier": p.noise_multiplier,
            "sampling_rate": p.sampling_rate,
            "steps": p.steps,
            "clip_norm": p.clip_norm,
            "events": run.events,
            "hyperparameters": hyper,
        },
        "dataset": {
            "fingerprint": {"hmac-sha256": run.dataset_fingerprint},
            "fingerprint_note": "keyed with a secret that never leaves the hospital: it identifies the source data set to the hospital, it is not a hash anyone else can recompute",
        },
        "dataset_budget": budget.cloned(),
        "utility": eval.map(|e| {
            let mut u = sanitize_eval(e);
            if let Value::Object(m) = &mut u {
                m.insert("measured_on".into(), json!("the hospital's held-out test split (never used for training or tuning)"));
                m.insert("differentially_private".into(), json!(false));
            }
            u
        }),
        "synthetic": {
            "shape": run.shape,
            "classes": run.classes,
            "images_per_class": run.ipc,
            "rows": run.ipc * run.classes.len() as u64,
        },
        "policy": run.policy,
        "plain_words": words,
    })
}

/// The privacy claims a verifier reads back from `privacy_report.json`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Claims {
    /// Epsilon.
    pub epsilon: f64,
    /// Delta.
    pub delta: f64,
}

/// Read and check the claims: epsilon finite and positive, delta in (0, 1).
///
/// # Errors
/// A sentence saying what is wrong.
pub fn parse_claims(bytes: &[u8]) -> std::result::Result<Claims, String> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("privacy_report.json is not JSON: {e}"))?;
    let g = v
        .get("guarantee")
        .ok_or("privacy_report.json has no `guarantee`")?;
    let eps = g.get("epsilon").and_then(Value::as_f64);
    let delta = g.get("delta").and_then(Value::as_f64);
    match (eps, delta) {
        (Some(e), Some(d)) if e.is_finite() && e > 0.0 && d > 0.0 && d < 1.0 => Ok(Claims {
            epsilon: e,
            delta: d,
        }),
        _ => Err(format!(
            "guarantee.epsilon {:?} / guarantee.delta {:?}: both must be present, epsilon positive, delta in (0, 1)",
            g.get("epsilon"),
            g.get("delta")
        )),
    }
}

/// `SHA256SUMS` bytes: BSD-style `SHA256 (path) = hex` lines, sorted bytewise by path.
pub fn sums(entries: &BTreeMap<String, String>) -> String {
    entries
        .iter()
        .map(|(p, h)| format!("SHA256 ({p}) = {h}\n"))
        .collect()
}

/// Parse `SHA256SUMS` strictly: every line `SHA256 (path) = <64 lowercase hex>`, safe relative
/// paths, no duplicates.
///
/// # Errors
/// A sentence naming the first bad line.
pub fn parse_sums(bytes: &[u8]) -> std::result::Result<BTreeMap<String, String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "SHA256SUMS is not UTF-8".to_string())?;
    if !text.ends_with('\n') {
        return Err("SHA256SUMS does not end with a newline".into());
    }
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let bad = || format!("SHA256SUMS line {}: not `SHA256 (path) = hex`", i + 1);
        let rest = line.strip_prefix("SHA256 (").ok_or_else(bad)?;
        let (path, hash) = rest.rsplit_once(") = ").ok_or_else(bad)?;
        if hash.len() != 64
            || !hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        if !super::export::safe_rel_path(path) {
            return Err(format!("SHA256SUMS line {}: unsafe path {path:?}", i + 1));
        }
        if out.insert(path.to_string(), hash.to_string()).is_some() {
            return Err(format!("SHA256SUMS lists {path} twice"));
        }
    }
    if out.is_empty() {
        return Err("SHA256SUMS is empty".into());
    }
    Ok(out)
}

/// `packages/<id>.meta.json`: the workspace's index entry for a package (read by `serve`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageMeta {
    /// Package id.
    pub id: String,
    /// Run id.
    pub run: String,
    /// Dataset name (workspace-internal).
    pub dataset: String,
    /// Partner name.
    pub partner: String,
    /// Epsilon of the run.
    pub epsilon: f64,
    /// Delta of the run.
    pub delta: f64,
    /// RFC 3339 creation time.
    pub created: String,
    /// Total bytes of the package's files.
    pub size_bytes: u64,
    /// Relative paths of the package's files, sorted.
    pub files: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sums_layout() {
        let mut m = BTreeMap::new();
        m.insert("data/b".to_string(), "a".repeat(64));
        m.insert("audit-checkpoint.txt".to_string(), "0".repeat(64));
        let s = sums(&m);
        assert_eq!(
            s,
            format!(
                "SHA256 (audit-checkpoint.txt) = {}\nSHA256 (data/b) = {}\n",
                "0".repeat(64),
                "a".repeat(64)
            )
        );
        assert_eq!(parse_sums(s.as_bytes()).unwrap(), m);
    }

    #[test]
    fn fail_bad_sums() {
        let h = "a".repeat(64);
        for bad in [
            String::new(),
            format!("SHA256 (x) = {h}"),
            format!("SHA256 (../x) = {h}\n"),
            format!("SHA256 (/etc/passwd) = {h}\n"),
            format!("SHA256 (x) = {}\n", "A".repeat(64)),
            format!("SHA256 (x) = {h}\nSHA256 (x) = {h}\n"),
            format!("MD5 (x) = {h}\n"),
            format!("{h}  x\n"),
        ] {
            assert!(parse_sums(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn claims() {
        let ok = br#"{"guarantee":{"epsilon":1.5,"delta":1e-5}}"#;
        assert_eq!(
            parse_claims(ok).unwrap(),
            Claims {
                epsilon: 1.5,
                delta: 1e-5
            }
        );
        for bad in [
            &br#"{"guarantee":{"epsilon":0,"delta":1e-5}}"#[..],
            br#"{"guarantee":{"epsilon":1,"delta":1}}"#,
            br#"{"guarantee":{"epsilon":-1,"delta":1e-5}}"#,
            br#"{"guarantee":{"epsilon":"1","delta":1e-5}}"#,
            br#"{"guarantee":{"delta":1e-5}}"#,
            br#"{}"#,
            b"not json",
        ] {
            assert!(parse_claims(bad).is_err());
        }
    }

    #[test]
    fn eval_strings_dropped() {
        let e = json!({"accuracy": 0.8, "per_class": {"a": 0.7}, "note": "patient X", "baselines": {"real": 0.9, "who": "dr y"}});
        let s = sanitize_eval(&e);
        assert_eq!(
            s,
            json!({"accuracy": 0.8, "per_class": {"a": 0.7}, "baselines": {"real": 0.9}})
        );
    }

    proptest! {
        #[test]
        fn sums_roundtrip(entries in proptest::collection::btree_map("[a-z0-9_.-]{1,12}(/[a-z0-9_-]{1,12}){0,2}", "[0-9a-f]{64}", 1..12)) {
            let entries: BTreeMap<String, String> = entries.into_iter().filter(|(p, _)| crate::package::export::safe_rel_path(p)).collect();
            prop_assume!(!entries.is_empty());
            let s = sums(&entries);
            prop_assert_eq!(parse_sums(s.as_bytes()).unwrap(), entries);
        }

        #[test]
        fn parse_sums_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_sums(&b);
        }
    }
}
