//! The in-toto Statement v1 with an SLSA Provenance v1 predicate describing a distill run.
//!
//! ```text
//! _type          https://in-toto.io/Statement/v1
//! subject        every file under data/ with its sha256, sorted by name
//! predicateType  https://slsa.dev/provenance/v1
//! predicate      buildDefinition: buildType (a Retort distill run), externalParameters (method,
//!                every public hyper-parameter, epsilon, delta, ipc, policy, partner),
//!                internalParameters (the DP parameters and events as accounted),
//!                resolvedDependencies (the dataset as a keyed HMAC fingerprint; Retort itself)
//!                runDetails: builder (id, version), metadata (invocationId = run id,
//!                startedOn/finishedOn of the run), byproducts (the audit checkpoint)
//! ```
//!
//! # Determinism
//! The statement is a function of the run directory, the partner, the signing key, the Retort
//! binary and these documented fields, which change from one packaging to the next:
//! `predicate.runDetails.metadata.retort_packagedOn` (when the package was made) and
//! `predicate.runDetails.byproducts` (the audit checkpoint, which grows with the log). In the
//! privacy report, `dataset_budget.epsilon_now`, `runs_now` and `remaining` reflect the ledger
//! at packaging time, so they change when other runs on the same dataset happen in between.
//!
//! # Privacy
//! Never the noise seed, never PHI, never real-data counts per class; the dataset appears only
//! as `{"hmac-sha256": <fingerprint>}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::run::RunRecord;

/// The in-toto Statement v1 type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The SLSA provenance v1 predicate type.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// Retort's SLSA build type: a differentially private distill run.
pub const BUILD_TYPE: &str = "https://retort.invalid/slsa/distill-run/v1";
/// Prefix of Retort's SLSA builder id (followed by the workspace id).
pub const BUILDER_PREFIX: &str = "https://retort.invalid/slsa/builder/workspace/";

/// A subject: a file of the package and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// Relative path inside the package (forward slashes, no `./`).
    pub name: String,
    /// `{"sha256": "<lowercase hex>"}`.
    pub digest: BTreeMap<String, String>,
}

/// An in-toto Statement v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// `https://in-toto.io/Statement/v1`.
    #[serde(rename = "_type")]
    pub type_: String,
    /// The files it covers.
    pub subject: Vec<Subject>,
    /// `https://slsa.dev/provenance/v1`.
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The SLSA predicate.
    pub predicate: Value,
}

/// What goes into the predicate besides the run itself.
#[derive(Debug, Clone)]
pub struct ProvenanceInputs<'a> {
    /// The partner receiving the package.
    pub partner: &'a str,
    /// The workspace id (names the builder).
    pub workspace_id: &'a str,
    /// SHA-256 of the Retort binary that made the package, if known.
    pub retort_digest: Option<&'a str>,
    /// When the package is made (RFC 3339): a documented non-deterministic field.
    pub packaged_on: &'a str,
    /// SHA-256 of the audit checkpoint included in the package, if any.
    pub checkpoint_sha256: Option<&'a str>,
    /// The package's stated guarantee: the composition of every share it carries.
    pub guarantee: &'a crate::dp::accountant::EpsilonReport,
    /// The shares the guarantee covers.
    pub covers: &'a [String],
    /// The columns of the package's `synthetic.parquet`.
    pub columns: &'a [String],
}

impl Statement {
    /// The statement for a run: `subjects` maps `data/…` names to their SHA-256.
    pub fn for_run(
        run: &RunRecord,
        subjects: &BTreeMap<String, String>,
        inp: &ProvenanceInputs<'_>,
    ) -> Statement {
        let (hyper, _) = run.public_hyperparameters();
        let p = &run.privacy;
        let mut retort = json!({
            "name": "retort",
            "uri": format!("pkg:cargo/retort@{}", crate::VERSION),
        });
        if let Some(d) = inp.retort_digest {
            retort["digest"] = json!({ "sha256": d });
        }
        let byproducts: Vec<Value> = inp
            .checkpoint_sha256
            .map(|d| {
                json!({"name": super::CHECKPOINT, "digest": {"sha256": d},
                       "annotations": {"retort_note": "newest signed audit-log checkpoint at export (C2SP signed note)"}})
            })
            .into_iter()
            .collect();
        let predicate = json!({
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "method": run.method,
                    "epsilon": run.epsilon,
                    "delta": run.delta,
                    "ipc": run.ipc,
                    "hyperparameters": hyper,
                    "policy": run.policy,
                    "partner": inp.partner,
                },
                "internalParameters": {
                    "privacy": {
                        "epsilon": p.epsilon,
                        "epsilon_rdp": p.epsilon_rdp,
                        "epsilon_pld": p.epsilon_pld,
                        "accountant": p.accountant,
                        "noise_multiplier": p.noise_multiplier,
                        "sampling_rate": p.sampling_rate,
                        "steps": p.steps,
                        "clip_norm": p.clip_norm,
                        "neighbouring": p.neighbouring,
                    },
                    "events": run.events,
                    "shares": run.shares(),
                    "guarantee": {
                        "epsilon": inp.guarantee.epsilon,
                        "delta": run.delta,
                        "accountant": inp.guarantee.accountant,
                        "covers": inp.covers,
                    },
                    "shape": run.shape,
                    "classes": run.classes,
                    "synthetic_columns": super::boundary::describe_columns(inp.columns),
                },
                "resolvedDependencies": [
                    {
                        "name": "dataset",
                        "digest": { "hmac-sha256": run.dataset_fingerprint },
                        "annotations": {
                            "retort_fingerprint": "HMAC-SHA256 keyed with the hospital's workspace secret: not a hash of the data, not recomputable outside the hospital",
                        },
                    },
                    retort,
                ],
            },
            "runDetails": {
                "builder": {
                    "id": format!("{BUILDER_PREFIX}{}", inp.workspace_id),
                    "version": { "retort": crate::VERSION },
                },
                "metadata": {
                    "invocationId": run.id,
                    "startedOn": run.started,
                    "finishedOn": run.finished,
                    "retort_packagedOn": inp.packaged_on,
                },
                "byproducts": byproducts,
            },
        });
        Statement {
            type_: STATEMENT_TYPE.into(),
            subject: subjects
                .iter()
                .map(|(n, d)| Subject {
                    name: n.clone(),
                    digest: BTreeMap::from([("sha256".to_string(), d.clone())]),
                })
                .collect(),
            predicate_type: PREDICATE_TYPE.into(),
            predicate,
        }
    }

    /// Compact JSON bytes (the DSSE payload).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("invariant: statement serializes")
    }

    /// Parse a payload whose signature has already been verified, and check its shape: the
    /// in-toto and SLSA types, at least one subject, safe subject names, lowercase sha256
    /// digests, no duplicate names, the SLSA required fields.
    ///
    /// # Errors
    /// A sentence saying what is wrong.
    pub fn from_verified_payload(bytes: &[u8]) -> Result<Statement, String> {
        let s: Statement = serde_json::from_slice(bytes)
            .map_err(|e| format!("the signed payload is not an in-toto statement: {e}"))?;
        if s.type_ != STATEMENT_TYPE {
            return Err(format!("_type is {:?}, expected {STATEMENT_TYPE}", s.type_));
        }
        if s.predicate_type != PREDICATE_TYPE {
            return Err(format!(
                "predicateType is {:?}, expected {PREDICATE_TYPE}",
                s.predicate_type
            ));
        }
        if s.subject.is_empty() {
            return Err("the statement has no subjects".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for sub in &s.subject {
            if !super::export::safe_rel_path(&sub.name) {
                return Err(format!(
                    "subject name {:?} is not a safe relative path",
                    sub.name
                ));
            }
            if !seen.insert(sub.name.as_str()) {
                return Err(format!("subject {} is listed twice", sub.name));
            }
            match sub.digest.get("sha256") {
                Some(h) if is_lower_hex64(h) => {}
                _ => {
                    return Err(format!(
                        "subject {} has no lowercase sha256 digest",
                        sub.name
                    ))
                }
            }
        }
        let p = &s.predicate;
        if p.pointer("/buildDefinition/buildType")
            .and_then(Value::as_str)
            .is_none()
            || !p
                .pointer("/buildDefinition/externalParameters")
                .is_some_and(Value::is_object)
            || p.pointer("/runDetails/builder/id")
                .and_then(Value::as_str)
                .is_none()
        {
            return Err("the SLSA predicate lacks buildDefinition.buildType, externalParameters or runDetails.builder.id".into());
        }
        Ok(s)
    }

    /// Subject name → sha256.
    pub fn subject_digests(&self) -> BTreeMap<&str, &str> {
        self.subject
            .iter()
            .filter_map(|s| Some((s.name.as_str(), s.digest.get("sha256")?.as_str())))
            .collect()
    }

    /// The SHA-256 the statement records for the audit-checkpoint byproduct, if any.
    pub fn checkpoint_digest(&self) -> Option<&str> {
        self.predicate
            .pointer("/runDetails/byproducts")?
            .as_array()?
            .iter()
            .find(|b| b.get("name").and_then(Value::as_str) == Some(super::CHECKPOINT))?
            .pointer("/digest/sha256")?
            .as_str()
    }
}

/// True for 64 lowercase hex digits.
pub fn is_lower_hex64(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stmt(subjects: &BTreeMap<String, String>) -> Statement {
        Statement {
            type_: STATEMENT_TYPE.into(),
            subject: subjects
                .iter()
                .map(|(n, d)| Subject {
                    name: n.clone(),
                    digest: BTreeMap::from([("sha256".to_string(), d.clone())]),
                })
                .collect(),
            predicate_type: PREDICATE_TYPE.into(),
            predicate: json!({"buildDefinition": {"buildType": BUILD_TYPE, "externalParameters": {}},
                              "runDetails": {"builder": {"id": "x"}}}),
        }
    }

    #[test]
    fn fail_malformed_statements() {
        let h = "a".repeat(64);
        let good = stmt(&BTreeMap::from([("data/x".to_string(), h.clone())]));
        assert!(Statement::from_verified_payload(&good.to_bytes()).is_ok());
        let mut cases = Vec::new();
        let mut s = good.clone();
        s.type_ = "https://in-toto.io/Statement/v0.1".into();
        cases.push(s);
        let mut s = good.clone();
        s.predicate_type = "https://slsa.dev/provenance/v0.2".into();
        cases.push(s);
        let mut s = good.clone();
        s.subject.clear();
        cases.push(s);
        let mut s = good.clone();
        s.subject[0].name = "../x".into();
        cases.push(s);
        let mut s = good.clone();
        s.subject[0].digest = BTreeMap::from([("sha256".to_string(), h.to_uppercase())]);
        cases.push(s);
        let mut s = good.clone();
        s.subject.push(s.subject[0].clone());
        cases.push(s);
        let mut s = good.clone();
        s.predicate = json!({});
        cases.push(s);
        for c in cases {
            assert!(
                Statement::from_verified_payload(&c.to_bytes()).is_err(),
                "{c:?}"
            );
        }
        assert!(Statement::from_verified_payload(b"[1,2]").is_err());
    }

    proptest! {
        #[test]
        fn statement_roundtrip(subjects in proptest::collection::btree_map("data/[a-z0-9_.-]{1,16}", "[0-9a-f]{64}", 1..8)) {
            prop_assume!(subjects.keys().all(|n| crate::package::export::safe_rel_path(n)));
            let s = stmt(&subjects);
            let back = Statement::from_verified_payload(&s.to_bytes()).unwrap();
            prop_assert_eq!(&back, &s);
            prop_assert_eq!(back.to_bytes(), s.to_bytes());
            let d = back.subject_digests();
            for (n, h) in &subjects {
                prop_assert_eq!(d.get(n.as_str()).copied(), Some(h.as_str()));
            }
        }
    }
}
