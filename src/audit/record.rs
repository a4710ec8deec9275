//! Audit records and their canonical JSON form.

use serde::{Deserialize, Serialize};

/// The outcome of an audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Outcome {
    /// Logged before a sensitive action; its outcome follows in a later record.
    Intent,
    /// The action succeeded.
    Ok,
    /// Refused by policy or budget (`reason` holds the stable code).
    Refused,
    /// Failed (`reason` holds the stable code).
    Error,
}

impl Outcome {
    /// The lowercase name used in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Intent => "intent",
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

/// A record as the caller describes it; `seq`, `ts` and `prev` are filled in on append.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Who: `user:<login>` or `partner:<name>` or `system`.
    pub actor: String,
    /// What: dotted verb, e.g. `dataset.ingest`, `run.distill`, `package.create`.
    pub action: String,
    /// On what: a dataset name, run id, package id, key name… never PHI.
    pub object: String,
    /// The outcome.
    pub outcome: Outcome,
    /// Stable reason code for refusals and errors.
    pub reason: Option<String>,
    /// Free-form details (no PHI).
    pub details: serde_json::Value,
}

impl NewRecord {
    /// A record with empty details.
    pub fn new(actor: &str, action: &str, object: &str, outcome: Outcome) -> NewRecord {
        NewRecord {
            actor: actor.into(),
            action: action.into(),
            object: object.into(),
            outcome,
            reason: None,
            details: serde_json::Value::Object(Default::default()),
        }
    }
    /// Set details.
    pub fn details(mut self, details: serde_json::Value) -> NewRecord {
        self.details = details;
        self
    }
    /// Set the reason code.
    pub fn reason(mut self, reason: &str) -> NewRecord {
        self.reason = Some(reason.into());
        self
    }
}

/// A stored record: one line of a segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Sequence number from 0, no gaps, continuing across segments.
    pub seq: u64,
    /// RFC 3339 UTC time.
    pub ts: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub object: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Stable reason code (refused / error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Details.
    pub details: serde_json::Value,
    /// Lowercase hex SHA-256 of the previous line's bytes (without `\n`); 64 zeros first.
    pub prev: String,
}

impl Record {
    /// The canonical JSON line (sorted keys, no insignificant whitespace, no trailing newline).
    pub fn canonical_line(&self) -> String {
        let v = serde_json::to_value(self).expect("invariant: records serialize");
        canonical_json(&v)
    }
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, serde_json's escaping
/// and number formatting. `serde_json::Value` without `preserve_order` keeps maps sorted, so this
/// is its compact serialization; the function makes the rule explicit and testable.
pub fn canonical_json(v: &serde_json::Value) -> String {
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sort(&m[k]));
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sort(v)).expect("invariant: JSON values serialize")
}

/// The `prev` value of the first record.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 of a line's bytes (without `\n`), lowercase hex.
pub fn line_hash(line: &[u8]) -> String {
    crate::digest::sha256_hex(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_is_sorted_and_compact() {
        let r = Record {
            seq: 0,
            ts: "2026-01-01T00:00:00Z".into(),
            actor: "user:a".into(),
            action: "x.y".into(),
            object: "o".into(),
            outcome: Outcome::Refused,
            reason: Some("budget-exceeded".into()),
            details: serde_json::json!({"z": 1, "a": {"d": 2, "b": [3, {"y": 1, "x": 2}]}}),
            prev: GENESIS_PREV.into(),
        };
        let line = r.canonical_line();
        assert_eq!(
            line,
            r#"{"action":"x.y","actor":"user:a","details":{"a":{"b":[3,{"x":2,"y":1}],"d":2},"z":1},"object":"o","outcome":"refused","prev":"0000000000000000000000000000000000000000000000000000000000000000","reason":"budget-exceeded","seq":0,"ts":"2026-01-01T00:00:00Z"}"#
        );
        let back: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.canonical_line(), line);
    }

    #[test]
    fn floats_survive_a_parse_and_reserialize() {
        // serde_json needs `float_roundtrip` for this: without it "0.00001" parses to a
        // neighbouring f64 and a re-serialized record no longer matches its own bytes.
        for x in [
            1e-5,
            0.9998373760159455,
            5.276691436767578,
            1e-300,
            123456.789,
        ] {
            let v = serde_json::json!({ "x": x });
            let s = canonical_json(&v);
            let back: serde_json::Value = serde_json::from_str(&s).unwrap();
            assert_eq!(canonical_json(&back), s, "{x}");
        }
    }
}
