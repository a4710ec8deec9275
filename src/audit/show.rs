//! Listing records with filters (`retort audit show`): for people, and as JSON lines (the stored
//! canonical lines, byte for byte) for scripts and SIEM import.

use std::path::PathBuf;

use time::OffsetDateTime;

use super::read::{parse_line, scan};
use super::{AuditLog, Outcome, Record, Result};

/// Which records to show. Every given condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Records at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Records at or before this time.
    pub until: Option<OffsetDateTime>,
    /// Action `A` or any action under it (`package` matches `package.create`).
    pub action: Option<String>,
    /// Records about this dataset (`object` or `details.dataset`).
    pub dataset: Option<String>,
    /// This outcome.
    pub outcome: Option<Outcome>,
}

/// Parse a time bound: RFC 3339 (`2026-11-29T10:00:00Z`) or a date (`2026-11-29`, meaning the
/// start of that day in UTC for `since` and its end for `until`).
pub fn parse_time(s: &str, end_of_day: bool) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Some(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &fmt).ok()?;
    let t = if end_of_day {
        d.with_hms(23, 59, 59).ok()?
    } else {
        d.midnight()
    };
    Some(t.assume_utc())
}

/// Parse an outcome name.
pub fn parse_outcome(s: &str) -> Option<Outcome> {
    Some(match s {
        "ok" => Outcome::Ok,
        "refused" => Outcome::Refused,
        "error" => Outcome::Error,
        "intent" => Outcome::Intent,
        _ => return None,
    })
}

impl Filter {
    /// Whether a record passes.
    pub fn matches(&self, r: &Record) -> bool {
        if self.since.is_some() || self.until.is_some() {
            let Ok(ts) =
                OffsetDateTime::parse(&r.ts, &time::format_description::well_known::Rfc3339)
            else {
                return false;
            };
            if self.since.is_some_and(|s| ts < s) || self.until.is_some_and(|u| ts > u) {
                return false;
            }
        }
        if let Some(a) = &self.action {
            let under = r
                .action
                .strip_prefix(a.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
            if !under {
                return false;
            }
        }
        if let Some(d) = &self.dataset {
            let in_details = r.details.get("dataset").and_then(|v| v.as_str()) == Some(d);
            if r.object != *d && !in_details {
                return false;
            }
        }
        if self.outcome.is_some_and(|o| o != r.outcome) {
            return false;
        }
        true
    }
}

/// Counts after a listing.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Lines read.
    pub total: u64,
    /// Records shown.
    pub shown: u64,
    /// Lines that did not parse (skipped; `audit verify` reports them).
    pub damaged: u64,
}

/// Call `f` with every matching record and its stored line, in log order. `f` returns `false`
/// to stop early (e.g. a closed pipe).
///
/// # Errors
/// I/O.
pub fn for_each(
    audit_dir: PathBuf,
    filter: &Filter,
    mut f: impl FnMut(&Record, &[u8]) -> bool,
) -> Result<Summary> {
    let log = AuditLog::new(audit_dir);
    let segs = log.segments()?;
    let mut sum = Summary::default();
    let mut stop = false;
    scan(&segs, 0, 0, |e| {
        if stop {
            return Ok(());
        }
        sum.total += 1;
        match parse_line(e.bytes) {
            Ok(r) if !e.torn => {
                if filter.matches(&r) {
                    sum.shown += 1;
                    stop = !f(&r, e.bytes);
                }
            }
            _ => sum.damaged += 1,
        }
        Ok(())
    })?;
    Ok(sum)
}

/// One record as a line for people: `seq  time  outcome  actor  action  object  [reason]  details`.
pub fn human_line(r: &Record) -> String {
    let mut s = format!(
        "{:>6}  {}  {:<8} {:<16} {:<24} {}",
        r.seq,
        r.ts,
        r.outcome.as_str(),
        r.actor,
        r.action,
        r.object
    );
    if let Some(reason) = &r.reason {
        s.push_str(&format!("  [{reason}]"));
    }
    if r.details.as_object().is_some_and(|m| !m.is_empty()) {
        s.push_str("  ");
        s.push_str(&super::record::canonical_json(&r.details));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(action: &str, object: &str, outcome: Outcome, ts: &str) -> Record {
        Record {
            seq: 0,
            ts: ts.into(),
            actor: "user:a".into(),
            action: action.into(),
            object: object.into(),
            outcome,
            reason: None,
            details: serde_json::json!({"dataset": "fmnist"}),
            prev: super::super::record::GENESIS_PREV.into(),
        }
    }

    #[test]
    fn filters() {
        let r = rec(
            "package.create",
            "pkg-1",
            Outcome::Ok,
            "2026-11-29T10:00:00Z",
        );
        assert!(Filter::default().matches(&r));
        let f = |a: &str| Filter {
            action: Some(a.into()),
            ..Default::default()
        };
        assert!(f("package").matches(&r));
        assert!(f("package.create").matches(&r));
        assert!(!f("pack").matches(&r));
        assert!(!f("package.create.x").matches(&r));
        let d = Filter {
            dataset: Some("fmnist".into()),
            ..Default::default()
        };
        assert!(d.matches(&r));
        let d2 = Filter {
            dataset: Some("other".into()),
            ..Default::default()
        };
        assert!(!d2.matches(&r));
        let t = Filter {
            since: parse_time("2026-11-29", false),
            until: parse_time("2026-11-29", true),
            ..Default::default()
        };
        assert!(t.matches(&r));
        let late = Filter {
            since: parse_time("2026-11-29T10:00:01Z", false),
            ..Default::default()
        };
        assert!(!late.matches(&r));
        let o = Filter {
            outcome: parse_outcome("refused"),
            ..Default::default()
        };
        assert!(!o.matches(&r));
        assert!(parse_time("yesterday", false).is_none());
        assert!(parse_outcome("success").is_none());
    }
}
