//! The release boundary: every value a package carries is declared, here, as **public**
//! (parameters, shapes, class names, ids, times, software version, the keyed dataset
//! fingerprint — what SECURITY.md lists as public metadata), **released** (the output of an
//! accounted mechanism, named by its share in the run's budget split), or **derived** (text or
//! digests computed only from public and released values). The package builder checks the
//! privacy report and the provenance statement against these rules before anything is signed
//! and refuses (`package-unreleased-field`) a value no rule covers; [`check_package`] walks a
//! built package (report, statement, Parquet schema and metadata, file list) for tests and
//! audits.
//!
//! # Privacy
//! The rules are the proof obligation of the package's stated (ε, δ): a field matching a
//! `Released` rule must name a share the report's `guarantee.covers` lists (so its mechanism is
//! in the composition), and no field may match nothing.

use std::path::Path;

use serde_json::{json, Map, Value};

/// How a value may leave the hospital.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Public by construction or by policy; the reason.
    Public(&'static str),
    /// The output of the named share's accounted mechanism (or post-processing of it).
    Released(&'static str),
    /// Computed only from public and released values; how.
    Derived(&'static str),
}

/// A rule: a path pattern (`/`-separated; `*` one segment, `**` any rest) and its kind.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The pattern.
    pub pattern: &'static str,
    /// The kind.
    pub kind: Kind,
}

const fn public(pattern: &'static str, why: &'static str) -> Rule {
    Rule {
        pattern,
        kind: Kind::Public(why),
    }
}

const fn released(pattern: &'static str, share: &'static str) -> Rule {
    Rule {
        pattern,
        kind: Kind::Released(share),
    }
}

const fn derived(pattern: &'static str, how: &'static str) -> Rule {
    Rule {
        pattern,
        kind: Kind::Derived(how),
    }
}

const PARAMS: &str = "a parameter of the run, chosen by the operator or from public metadata";
const ACCOUNTING: &str =
    "privacy accounting: parameters of the mechanisms and the accountants' bounds on them";

/// Every field of `data/privacy_report.json`.
pub const REPORT: &[Rule] = &[
    public("version", "format version"),
    public("run", "the run id (public metadata)"),
    public("method", PARAMS),
    public("guarantee/**", ACCOUNTING),
    public("shares/**", ACCOUNTING),
    public("mechanism/**", PARAMS),
    public(
        "dataset/**",
        "the keyed dataset fingerprint (HMAC with a secret that never leaves the hospital; public metadata by SECURITY.md)",
    ),
    public(
        "dataset_budget/**",
        "the ledger's accounting: events of the dataset's runs (their parameters) composed, and run counts",
    ),
    public("utility", "absent utility figures"),
    public("utility/how_released", "a description"),
    released("utility/accuracy", "utility"),
    released("utility/accuracy_noise_std", "utility"),
    released("utility/per_class_accuracy/*", "utility"),
    released("utility/noisy_correct", "utility"),
    released("utility/noisy_count", "utility"),
    released("utility/noisy_correct_per_class/*", "utility"),
    released("utility/noisy_count_per_class/*", "utility"),
    public("utility/mechanism/**", ACCOUNTING),
    public("utility/epsilon", ACCOUNTING),
    public("utility/models", PARAMS),
    public("utility/recipe/**", PARAMS),
    public(
        "synthetic/columns/**",
        "what each column of data/synthetic.parquet is and which share releases it (this classification)",
    ),
    public(
        "synthetic/**",
        "the synthetic set's shape, class names (public metadata) and size (a parameter)",
    ),
    public("policy/**", "the policy's name and SHA-256"),
    derived(
        "plain_words/*",
        "sentences written from the public and released fields of this report",
    ),
    public("release_boundary/**", "this classification"),
];

/// Every field of the in-toto statement (`provenance.intoto.jsonl`'s payload).
pub const STATEMENT: &[Rule] = &[
    public("_type", "format"),
    public("predicateType", "format"),
    derived(
        "subject/**",
        "the names and SHA-256 digests of the package's data files (released bytes)",
    ),
    public("predicate/buildDefinition/buildType", "format"),
    public("predicate/buildDefinition/externalParameters/**", PARAMS),
    public(
        "predicate/buildDefinition/internalParameters/**",
        ACCOUNTING,
    ),
    public(
        "predicate/buildDefinition/resolvedDependencies/**",
        "the keyed dataset fingerprint and the Retort binary's name, version and digest",
    ),
    public(
        "predicate/runDetails/**",
        "builder id, software version, run id and times, the audit checkpoint's digest",
    ),
];

/// A value no rule covers, or a released value whose share the package does not account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{document} field {path} is {why}")]
pub struct Violation {
    /// Which document (`privacy_report.json`, the statement, the Parquet file).
    pub document: String,
    /// The field's path (`/`-separated, array indices as numbers).
    pub path: String,
    /// Why it is refused.
    pub why: String,
}

fn matches(pattern: &str, path: &[String]) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let mut i = 0;
    for (k, p) in pat.iter().enumerate() {
        if *p == "**" {
            return k == pat.len() - 1 && i < path.len();
        }
        match path.get(i) {
            Some(seg) if *p == "*" || p == seg => i += 1,
            _ => return false,
        }
    }
    i == path.len()
}

fn classify<'r>(rules: &'r [Rule], path: &[String]) -> Option<&'r Rule> {
    rules.iter().find(|r| matches(r.pattern, path))
}

/// Every leaf of `v` with its path (an empty object or array is a leaf; so is null).
pub fn leaves(v: &Value) -> Vec<(Vec<String>, &Value)> {
    fn walk<'a>(v: &'a Value, at: &mut Vec<String>, out: &mut Vec<(Vec<String>, &'a Value)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    at.push(k.clone());
                    walk(x, at, out);
                    at.pop();
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for (i, x) in a.iter().enumerate() {
                    at.push(i.to_string());
                    walk(x, at, out);
                    at.pop();
                }
            }
            _ => out.push((at.clone(), v)),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Check every leaf of `doc` against `rules`; `covers` are the shares the package accounts.
///
/// # Errors
/// The first [`Violation`].
pub fn check(
    document: &str,
    doc: &Value,
    rules: &[Rule],
    covers: &[String],
) -> Result<(), Violation> {
    for (path, _) in leaves(doc) {
        let bad = |why: String| Violation {
            document: document.into(),
            path: format!("/{}", path.join("/")),
            why,
        };
        match classify(rules, &path) {
            None => {
                return Err(bad(
                    "neither declared public nor the output of an accounted mechanism".into(),
                ))
            }
            Some(Rule {
                kind: Kind::Released(share),
                ..
            }) if !covers.iter().any(|c| c == share) => {
                return Err(bad(format!(
                    "released by share {share:?}, which the package's guarantee does not cover"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The shares a report's guarantee covers (`guarantee.covers`).
pub fn covers(report: &Value) -> Vec<String> {
    report["guarantee"]["covers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The `release_boundary` section of a report: for each rule that matches a field of it, how
/// that field was released — figure by figure.
pub fn describe(report: &Value) -> Value {
    let paths: Vec<Vec<String>> = leaves(report).into_iter().map(|(p, _)| p).collect();
    let mut public = Map::new();
    let mut released = Map::new();
    let mut derived = Map::new();
    for r in REPORT {
        if r.pattern.starts_with("release_boundary") || !paths.iter().any(|p| matches(r.pattern, p))
        {
            continue;
        }
        let key = format!("/{}", r.pattern);
        match r.kind {
            Kind::Public(why) => {
                public.insert(key, json!(why));
            }
            Kind::Released(share) => {
                released.insert(
                    key,
                    json!(format!("output of the accounted {share:?} share")),
                );
            }
            Kind::Derived(how) => {
                derived.insert(key, json!(how));
            }
        }
    }
    json!({
        "rule": "every field is public, released by an accounted mechanism of a share listed in guarantee.covers, or derived only from those",
        "public": public,
        "released": released,
        "derived": derived,
    })
}

/// Parquet columns a package's `synthetic.parquet` may hold, and why each may leave.
pub const PARQUET_COLUMNS: &[(&str, Kind)] = &[
    (
        "label",
        Kind::Public("the synthetic image's class (a parameter: ipc per class)"),
    ),
    ("label_name", Kind::Public("class names (public metadata)")),
    ("image", Kind::Released("main")),
    ("soft_label", Kind::Released("teacher")),
];

/// Parquet key-value metadata keys a package may carry.
pub const PARQUET_METADATA: &[&str] = &[
    "retort.shape",
    "retort.version",
    "retort.classes",
    "retort.soft_label",
    "ARROW:schema",
];

/// Check the columns and key-value metadata keys of a package's `synthetic.parquet`: every
/// column declared in [`PARQUET_COLUMNS`] (a released one only when `covers` lists its share),
/// every key in [`PARQUET_METADATA`].
///
/// # Errors
/// The first [`Violation`].
pub fn check_parquet(cols: &[String], keys: &[String], covers: &[String]) -> Result<(), Violation> {
    let v = |path: &str, why: String| Violation {
        document: super::SYNTHETIC.into(),
        path: path.into(),
        why,
    };
    for c in cols {
        match PARQUET_COLUMNS.iter().find(|(n, _)| n == c) {
            None => return Err(v(c, "an undeclared column".into())),
            Some((_, Kind::Released(share))) if !covers.iter().any(|x| x == share) => {
                return Err(v(
                    c,
                    format!(
                        "released by share {share:?}, which the package's guarantee does not cover"
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    for k in keys {
        if !PARQUET_METADATA.contains(&k.as_str()) {
            return Err(v(k, "an undeclared metadata key".into()));
        }
    }
    Ok(())
}

/// For each of `cols` that [`PARQUET_COLUMNS`] declares: how it may leave, in words (the
/// privacy report's `synthetic.columns`).
pub fn describe_columns(cols: &[String]) -> Value {
    let mut out = Map::new();
    for c in cols {
        if let Some((_, kind)) = PARQUET_COLUMNS.iter().find(|(n, _)| n == c) {
            let words = match kind {
                Kind::Public(why) => format!("public: {why}"),
                Kind::Released(share) => {
                    format!("released: output of the accounted {share:?} share")
                }
                Kind::Derived(how) => format!("derived: {how}"),
            };
            out.insert(c.clone(), json!(words));
        }
    }
    Value::Object(out)
}

/// The share that releases Parquet column `col`, if it is a released one.
pub fn column_share(col: &str) -> Option<&'static str> {
    PARQUET_COLUMNS.iter().find_map(|(n, k)| match k {
        Kind::Released(share) if *n == col => Some(*share),
        _ => None,
    })
}

/// Walk a built package directory: the report and the statement against their rules, the
/// Parquet columns and metadata keys, and the file list.
///
/// # Errors
/// The first [`Violation`] (unreadable files are violations too).
pub fn check_package(dir: &Path) -> Result<(), Violation> {
    let v = |document: &str, path: &str, why: String| Violation {
        document: document.into(),
        path: path.into(),
        why,
    };
    let read = |rel: &str| {
        std::fs::read(dir.join(rel)).map_err(|e| v(rel, "", format!("unreadable: {e}")))
    };
    let report: Value = serde_json::from_slice(&read(super::PRIVACY_REPORT)?)
        .map_err(|e| v(super::PRIVACY_REPORT, "", format!("not JSON: {e}")))?;
    let cov = covers(&report);
    check("privacy_report.json", &report, REPORT, &cov)?;
    let env_line = read(super::PROVENANCE)?;
    let env = super::Envelope::parse_line(&env_line)
        .map_err(|e| v(super::PROVENANCE, "", format!("not a DSSE envelope: {e}")))?;
    let payload = super::dsse::decode_b64(&env.payload)
        .ok_or_else(|| v(super::PROVENANCE, "", "the payload is not base64".into()))?;
    let stmt: Value = serde_json::from_slice(&payload)
        .map_err(|e| v(super::PROVENANCE, "", format!("payload not JSON: {e}")))?;
    check("the provenance statement", &stmt, STATEMENT, &cov)?;
    let pq = dir.join(super::SYNTHETIC);
    let (cols, keys) = crate::dataset::parquet_columns_and_metadata(&pq)
        .map_err(|e| v(super::SYNTHETIC, "", e.to_string()))?;
    check_parquet(&cols, &keys, &cov)?;
    let known = [
        super::SYNTHETIC,
        super::PRIVACY_REPORT,
        super::CONTACT_SHEET,
        super::PROVENANCE,
        super::CHECKPOINT,
        super::SUMS,
        super::SUMS_SIG,
        super::PUB_PEM,
        super::PUB_SIGNIFY,
    ];
    for f in files_under(dir).map_err(|e| v("package", "", e.to_string()))? {
        if !known.contains(&f.as_str()) {
            return Err(v("package", &f, "an undeclared file".into()));
        }
    }
    Ok(())
}

fn files_under(dir: &Path) -> std::io::Result<Vec<String>> {
    fn walk(d: &Path, pre: &str, out: &mut Vec<String>) -> std::io::Result<()> {
        for e in std::fs::read_dir(d)? {
            let e = e?;
            let name = format!("{pre}{}", e.file_name().to_string_lossy());
            if e.file_type()?.is_dir() {
                walk(&e.path(), &format!("{name}/"), out)?;
            } else {
                out.push(name);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('/').map(str::to_string).collect()
    }

    #[test]
    fn patterns() {
        assert!(matches("a/**", &p("a/b/c")));
        assert!(!matches("a/**", &p("a")));
        assert!(matches("a/*", &p("a/0")));
        assert!(!matches("a/*", &p("a/0/1")));
        assert!(matches("a", &p("a")));
        assert!(!matches("a", &p("a/b")));
    }

    #[test]
    fn fail_unreleased_field_in_a_report() {
        // See: issue 19 (release boundary).
        let covers = vec!["main".to_string(), "utility".to_string()];
        let ok = json!({"version": 2, "run": "r", "utility": {"accuracy": 0.8, "noisy_count": 99.5},
                        "guarantee": {"covers": ["main", "utility"]}});
        check("r", &ok, REPORT, &covers).unwrap();
        for (bad, field) in [
            (
                json!({"utility": {"accuracy_exact": 0.81}}),
                "/utility/accuracy_exact",
            ),
            (
                json!({"baselines": {"all_real": 0.9}}),
                "/baselines/all_real",
            ),
            (json!({"dataset_counts": [10, 20]}), "/dataset_counts/0"),
        ] {
            let e = check("r", &bad, REPORT, &covers).unwrap_err();
            assert_eq!(e.path, field);
        }
        // A released figure whose share the guarantee does not cover is refused too.
        let e = check("r", &ok, REPORT, &["main".to_string()]).unwrap_err();
        assert!(e.why.contains("does not cover"), "{e}");
    }

    /// See: issue 22. A `soft_label` column leaves only with the `teacher` share covered;
    /// undeclared columns and keys never.
    #[test]
    fn fail_parquet_column_without_its_share() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cols = s(&["label", "label_name", "image", "soft_label"]);
        let keys = s(&["retort.shape", "retort.soft_label", "ARROW:schema"]);
        check_parquet(&cols, &keys, &s(&["main", "teacher"])).unwrap();
        let e = check_parquet(&cols, &keys, &s(&["main", "utility"])).unwrap_err();
        assert_eq!(e.path, "soft_label");
        assert!(
            e.why.contains("\"teacher\"") && e.why.contains("does not cover"),
            "{e}"
        );
        let e = check_parquet(&cols[..3], &keys, &s(&["utility"])).unwrap_err();
        assert_eq!(e.path, "image");
        let e = check_parquet(&s(&["label", "logits"]), &keys, &s(&["main"])).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.why.as_str()),
            ("logits", "an undeclared column")
        );
        let e =
            check_parquet(&cols[..3], &s(&["retort.teacher_accuracy"]), &s(&["main"])).unwrap_err();
        assert_eq!(e.why, "an undeclared metadata key");
        let d = describe_columns(&cols);
        assert!(d["soft_label"].as_str().unwrap().contains("\"teacher\""));
        assert!(d["label"].as_str().unwrap().starts_with("public"));
        assert_eq!(column_share("soft_label"), Some("teacher"));
        assert_eq!(column_share("label"), None);
    }

    #[test]
    fn describe_lists_the_rules_that_apply() {
        let r = json!({"version": 2, "utility": {"accuracy": 0.5}, "plain_words": ["x"]});
        let d = describe(&r);
        assert!(d["released"]["/utility/accuracy"].is_string());
        assert!(d["public"]["/version"].is_string());
        assert!(d["derived"]["/plain_words/*"].is_string());
        assert!(d["public"].get("/policy/**").is_none());
    }
}
