//! What a package says about itself: the partner-facing privacy report, the `SHA256SUMS` list,
//! and the workspace's package index entry (`packages/<id>.meta.json`).
//!
//! # Privacy
//! The report is built from the typed run record ([`RunRecord`]), the run's released utility
//! figures ([`UtilityRelease`], never the internal `eval.json`) and the ledger's accounting;
//! every field is either public (parameters, shapes, class names, ids, times, version, the keyed
//! dataset fingerprint) or the output of an accounted mechanism, and [`super::boundary`] checks
//! that before anything is signed. The stated (ε, δ) is the composition of every share whose
//! output the package carries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::dp::accountant::EpsilonReport;
use crate::run::evaluation::UtilityRelease;
use crate::run::RunRecord;

fn fmt_delta(d: f64) -> String {
    format!("{d:e}")
}

/// What the privacy report is made from.
#[derive(Debug, Clone, Copy)]
pub struct ReportInputs<'a> {
    /// The run.
    pub run: &'a RunRecord,
    /// Its released utility figures, if any.
    pub utility: Option<&'a UtilityRelease>,
    /// The composition of every share the package carries (the stated guarantee).
    pub guarantee: &'a EpsilonReport,
    /// The dataset's budget as the ledger reports it.
    pub budget: &'a Value,
    /// The columns of the package's `synthetic.parquet`.
    pub columns: &'a [String],
}

/// The shares whose output a package of `run` carries, which its stated guarantee composes:
/// the shares charged at `distill` (when their events are exactly the run's charged events,
/// as `distill` records them; otherwise only `main`, as records made before the split say) and
/// the utility share when the package carries its release.
pub fn covered_shares(run: &RunRecord, utility: Option<&UtilityRelease>) -> Vec<String> {
    let shares = run.shares();
    let distill: Vec<&crate::dp::split::Share> = shares
        .iter()
        .filter(|s| s.stage == crate::dp::split::Stage::Distill)
        .collect();
    let charged: Vec<crate::dp::DpEvent> = distill
        .iter()
        .flat_map(|s| s.events.iter().cloned())
        .collect();
    let mut out: Vec<String> = if charged == run.events {
        distill.iter().map(|s| s.name.clone()).collect()
    } else {
        vec![crate::distill::plan::MAIN.to_string()]
    };
    out.extend(utility.map(|u| u.share.name.clone()));
    out
}

/// `data/privacy_report.json`: the guarantee in numbers and in plain words.
pub fn privacy_report(inp: &ReportInputs<'_>) -> Value {
    let run = inp.run;
    let p = &run.privacy;
    let g = inp.guarantee;
    let delta = run.delta.get();
    let released = covered_shares(run, inp.utility);
    let soft = inp
        .columns
        .iter()
        .any(|c| c == crate::dataset::SOFT_LABEL_COLUMN);
    let shares: Vec<Value> = run
        .shares()
        .into_iter()
        .map(|s| {
            let carried = released.contains(&s.name);
            json!({
                "name": s.name, "stage": s.stage, "fraction": s.fraction, "epsilon": s.epsilon,
                "events": s.events, "what": s.what, "in_this_package": carried,
            })
        })
        .collect();
    let mut words = vec![
        format!(
            "This package was produced with ({:.4}, {})-differential privacy with respect to adding or removing one image of the hospital's data set: that bound covers everything in it (the synthetic images{}).",
            g.epsilon,
            fmt_delta(delta),
            match (soft, inp.utility.is_some()) {
                (true, true) => ", their soft labels and the utility figures",
                (true, false) => " and their soft labels",
                (false, true) => " and the utility figures",
                (false, false) => "",
            }
        ),
        format!(
            "Informally: whatever anyone does with it, the chance of any outcome changes by at most a factor of e^{:.4} ≈ {:.3} (plus a probability of at most {} of a larger change) whether or not any single patient image was used.",
            g.epsilon,
            g.epsilon.exp(),
            fmt_delta(delta)
        ),
        match p.sampling_rate {
            Some(q) => format!(
                "Main release ({}): {} Poisson-subsampled Gaussian mechanisms — each samples every training image independently with probability {}, clips each image's contribution to L2 norm {}, and adds Gaussian noise with standard deviation {} × {} to the sums.",
                run.method, p.steps, q, p.clip_norm, p.noise_multiplier, p.clip_norm
            ),
            None => format!(
                "Main release ({}): one Gaussian release — each training image's contribution is clipped to L2 norm {}, the contributions are summed per class, and Gaussian noise with standard deviation {} × {} is added once; the synthetic images are then fitted to the noisy sums without touching the data again.",
                run.method, p.clip_norm, p.noise_multiplier, p.clip_norm
            ),
        },
        "The synthetic images start from random noise, never from real images; the noise comes from an OS-seeded generator whose seed is never stored or published.".to_string(),
        format!(
            "The run's budget was split into named shares that compose (see `shares`); epsilon is the {} accountant's bound on their composition (RDP and PLD are both sound upper bounds; the smaller is reported).",
            g.accountant
        ),
    ];
    if soft {
        let share =
            super::boundary::column_share(crate::dataset::SOFT_LABEL_COLUMN).unwrap_or("teacher");
        let eps = run
            .shares()
            .into_iter()
            .find(|s| s.name == share)
            .map(|s| format!(", epsilon {:.4} alone", s.epsilon))
            .unwrap_or_default();
        words.push(format!(
            "The synthetic set's `soft_label` column gives, for each synthetic image, a probability vector over the classes from a classifier trained on the hospital's training split under differential privacy (the {share:?} share{eps}); it is released by that share, covered by the bound above, and `label` stays the hard class (docs/partners.md shows how to train with it)."
        ));
    }
    words.push(match inp.utility {
        Some(u) => format!(
            "Utility figures were measured by the hospital on its held-out split (never used for training) and released through a Gaussian mechanism (noise std {:.1} on each count, epsilon {:.4} alone): accuracy {:.3} ± {:.3} from the noise.",
            u.mechanism.noise_std, u.share.epsilon, u.accuracy, u.accuracy_noise_std
        ),
        None => "No utility figures: the run's held-out accuracy was not released.".to_string(),
    });
    words.push(format!(
        "All runs on the same images compose: the source data set has spent epsilon {} in total after this run by the {} accountant (at delta {}); see `dataset_budget`.",
        inp.budget
            .get("epsilon_after_this_run")
            .and_then(Value::as_f64)
            .map(|e| format!("{e:.4}"))
            .unwrap_or_else(|| "?".into()),
        inp.budget.get("accountant").and_then(Value::as_str).unwrap_or("?"),
        fmt_delta(delta)
    ));
    let (hyper, _) = run.public_hyperparameters();
    let utility = inp.utility.map(|u| {
        let per_class: serde_json::Map<String, Value> = run
            .classes
            .iter()
            .zip(&u.per_class_accuracy)
            .map(|(c, a)| (c.clone(), json!(a)))
            .collect();
        json!({
            "how_released": "one Gaussian release over the held-out split (opendp exact discrete Gaussian); figures below are post-processing of the noisy counts",
            "accuracy": u.accuracy,
            "accuracy_noise_std": u.accuracy_noise_std,
            "per_class_accuracy": per_class,
            "noisy_correct": u.noisy_correct,
            "noisy_count": u.noisy_count,
            "noisy_correct_per_class": u.noisy_correct_per_class,
            "noisy_count_per_class": u.noisy_count_per_class,
            "mechanism": u.mechanism,
            "epsilon": u.share.epsilon,
            "models": u.models,
            "recipe": u.recipe,
        })
    });
    let mut report = json!({
        "version": 2,
        "run": run.id,
        "method": run.method,
        "guarantee": {
            "definition": "(epsilon, delta)-differential privacy",
            "epsilon": g.epsilon,
            "delta": delta,
            "epsilon_target": run.epsilon,
            "epsilon_rdp": g.epsilon_rdp,
            "epsilon_pld": g.epsilon_pld,
            "accountant": g.accountant,
            "neighbouring": p.neighbouring,
            "unit": "one image of the hospital's data set",
            "covers": released,
        },
        "shares": shares,
        "mechanism": {
            "name": if p.sampling_rate.is_some() { "Poisson-subsampled Gaussian mechanism (DP-SGD-style steps)" } else { "Gaussian mechanism (one release)" },
            "noise_multiplier": p.noise_multiplier,
            "sampling_rate": p.sampling_rate,
            "steps": p.steps,
            "clip_norm": p.clip_norm,
            "events": run.events,
            "hyperparameters": hyper,
        },
        "dataset": {
            "fingerprint": {"hmac-sha256": run.dataset_fingerprint},
            "fingerprint_note": "keyed with a secret that never leaves the hospital: it identifies the source images to the hospital, it is not a hash anyone else can recompute",
        },
        "dataset_budget": inp.budget,
        "utility": utility,
        "synthetic": {
            "shape": run.shape,
            "classes": run.classes,
            "images_per_class": run.ipc,
            "rows": run.ipc * run.classes.len(),
            "columns": super::boundary::describe_columns(inp.columns),
        },
        "policy": run.policy,
        "plain_words": words,
    });
    report["release_boundary"] = super::boundary::describe(&report);
    report
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
