//! One audited command, as a library type: the records a command writes (intent before a
//! sensitive action, the outcome after it, extra records in between) and the end-of-command
//! checkpoint. The CLI opens a [`Session`] per command; library callers (tests, embedding
//! programs) use the same type, so the audit trail does not depend on going through `cli/`.
//!
//! # Guarantees
//! - **Fail closed.** [`Session::begin`] checks that the log can take a record before the
//!   command does anything; [`Session::intent`] returns an error when the record cannot be
//!   written durably, and the caller must then not act.
//! - **One outcome per session.** [`Session::finish`] consumes the session and appends exactly
//!   one outcome record (`ok`, `refused` or `error` with the stable reason code), then seals a
//!   signed checkpoint over the whole log. A session dropped without `finish` (a panic, a
//!   killed process) leaves its intent records without an outcome, which `audit verify` and
//!   `runs list` report.
//! - **The one exception** (SECURITY.md "Workspace permissions"): the read-only commands of
//!   [`ReadOnlyAction`] (`audit verify|show|report`, `budget`), run by a user who cannot write
//!   the log — a compliance officer, who may read the workspace but not write its log — run
//!   unlogged, and [`Session::begin_read_only`] says why so the caller can tell the user. No
//!   other action can be begun without a session.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{AuditLog, NewRecord, Outcome, Result};
use crate::error::{Class, Coded};
use crate::workspace::Workspace;

/// An audited command in progress.
#[derive(Debug)]
pub struct Session {
    root: PathBuf,
    actor: String,
    action: String,
    object: String,
    details: Map<String, Value>,
}

impl Session {
    /// Begin a session on `ws`: check that the audit log is writable now and that the audit
    /// key can seal the end-of-command checkpoint (fail closed: a command whose outcome could
    /// not be recorded and sealed is refused before it acts), and remember what the final
    /// record will say.
    ///
    /// # Errors
    /// `audit-append-failed`, `audit-tail-damaged`, `audit-key-unusable`.
    pub fn begin(ws: &Workspace, actor: &str, action: &str, object: &str) -> Result<Session> {
        super::writable(ws)?;
        Ok(Session::new(ws, actor, action, object))
    }

    /// Begin a read-only command: a logged session like any other when this user can write
    /// the log and seal a checkpoint ([`super::writable`]); otherwise [`ReadOnly::Unlogged`]
    /// with the reason, and the command runs without writing anything to the log.
    pub fn begin_read_only(
        ws: &Workspace,
        actor: &str,
        what: ReadOnlyAction,
        object: &str,
    ) -> ReadOnly {
        match super::writable(ws) {
            Ok(()) => ReadOnly::Logged(Session::new(ws, actor, what.action(), object)),
            Err(super::Error::AppendFailed { path, source }) => ReadOnly::Unlogged {
                why: format!("{}: {source}", path.display()),
            },
            Err(e) => ReadOnly::Unlogged { why: e.to_string() },
        }
    }

    /// A session without the writability check, for a caller that already made it (or that
    /// creates the log, as `init` does). Writing still fails closed.
    pub fn new(ws: &Workspace, actor: &str, action: &str, object: &str) -> Session {
        Session {
            root: ws.root().to_path_buf(),
            actor: actor.into(),
            action: action.into(),
            object: object.into(),
            details: Map::new(),
        }
    }

    /// The actor every record of this session names.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The action of the final record.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// Change the object of the final record (e.g. once a run id is known).
    pub fn set_object(&mut self, object: &str) {
        self.object = object.into();
    }

    /// Add a detail to the final record (no PHI: no file names, no patient data).
    pub fn detail(&mut self, key: &str, value: impl Into<Value>) {
        self.details.insert(key.into(), value.into());
    }

    fn log(&self) -> AuditLog {
        AuditLog::new(self.root.join("audit"))
    }

    /// Log the intent of a sensitive action before doing it.
    ///
    /// # Errors
    /// Audit errors: the caller must not act.
    pub fn intent(&self, action: &str, object: &str, details: Value) -> Result<()> {
        self.log()
            .append(NewRecord::new(&self.actor, action, object, Outcome::Intent).details(details))
            .map(drop)
    }

    /// Append a record now (e.g. a policy change inside a larger command). The actor is the
    /// session's unless the record names another.
    ///
    /// # Errors
    /// Audit errors.
    pub fn record(&self, mut rec: NewRecord) -> Result<()> {
        if rec.actor.is_empty() {
            rec.actor = self.actor.clone();
        }
        self.log().append(rec).map(drop)
    }

    /// End the session: append the outcome record for `result` (its stable code and the
    /// message `audit_message` gives for errors) and seal a checkpoint over the whole log.
    ///
    /// An `ok` outcome that cannot be recorded is an error (the caller must report failure);
    /// when the command already failed, the command's own error is what the caller reports.
    ///
    /// # Errors
    /// Audit errors.
    pub fn finish(self, outcome: &Ended<'_>) -> Result<()> {
        let (out, reason, message) = match outcome {
            Ended::Ok => (Outcome::Ok, None, None),
            Ended::Failed { error, message } => {
                let o = if error.class() == Class::Refused {
                    Outcome::Refused
                } else {
                    Outcome::Error
                };
                (o, Some(error.code()), Some(message.clone()))
            }
        };
        let mut details = self.details;
        if let Some(m) = message {
            details.insert("error".into(), Value::String(m));
        }
        let mut rec = NewRecord::new(&self.actor, &self.action, &self.object, out)
            .details(Value::Object(details));
        rec.reason = reason.map(str::to_string);
        let log = AuditLog::new(self.root.join("audit"));
        let appended = log.append(rec);
        let sealed = Workspace::open(&self.root)
            .ok()
            .map(|ws| super::checkpoint::seal(&ws).map(drop));
        appended?;
        if let Some(s) = sealed {
            s?;
        }
        Ok(())
    }
}

/// The read-only commands that may run unlogged for a user who cannot write the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadOnlyAction {
    /// `retort audit verify`.
    AuditVerify,
    /// `retort audit show`.
    AuditShow,
    /// `retort audit report`.
    AuditReport,
    /// `retort budget` (not `budget rebuild`, which writes).
    Budget,
}

impl ReadOnlyAction {
    /// The audit action name of its record, when it is logged.
    pub fn action(self) -> &'static str {
        match self {
            ReadOnlyAction::AuditVerify => "audit.verify",
            ReadOnlyAction::AuditShow => "audit.show",
            ReadOnlyAction::AuditReport => "audit.report",
            ReadOnlyAction::Budget => "budget",
        }
    }
}

/// How a read-only command begins.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadOnly {
    /// This user can write the log: the command is audited as usual.
    Logged(Session),
    /// This user cannot write the log: the command runs unlogged.
    Unlogged {
        /// Why the log cannot take a record (for the user).
        why: String,
    },
}

/// How a session's command ended, for its outcome record.
#[derive(Debug)]
#[non_exhaustive]
pub enum Ended<'a> {
    /// It succeeded.
    Ok,
    /// It failed or was refused.
    Failed {
        /// The error (its code and class decide the record's reason and outcome).
        error: &'a dyn Coded,
        /// The message for the record (no PHI: ingest errors drop file names).
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("refused for a test")]
    struct Refusal;
    impl Coded for Refusal {
        fn code(&self) -> &'static str {
            "test-refused"
        }
        fn class(&self) -> Class {
            Class::Refused
        }
    }

    #[test]
    fn intent_then_outcome_records_and_a_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::create(&d.path().join("ws"), "t").unwrap();
        crate::keys::KeyPaths::in_dir(&ws.keys_dir())
            .create_all()
            .unwrap();
        let mut s = Session::begin(&ws, "user:t", "thing.do", "x").unwrap();
        s.intent("thing.do", "x", serde_json::json!({"a": 1}))
            .unwrap();
        s.detail("b", 2);
        s.set_object("y");
        let e = Refusal;
        s.finish(&Ended::Failed {
            error: &e,
            message: e.to_string(),
        })
        .unwrap();
        let mut recs = Vec::new();
        super::super::show::for_each(ws.audit_dir(), &Default::default(), |r, _| {
            recs.push(r.clone());
            true
        })
        .unwrap();
        let last = recs.last().unwrap();
        assert_eq!(last.action, "thing.do");
        assert_eq!(last.object, "y");
        assert_eq!(last.outcome, Outcome::Refused);
        assert_eq!(last.reason.as_deref(), Some("test-refused"));
        assert_eq!(last.details["b"], 2);
        assert!(recs.iter().any(|r| r.outcome == Outcome::Intent));
        assert!(super::super::checkpoint::latest(&ws).unwrap().is_some());
    }

    #[test]
    fn read_only_commands_run_unlogged_only_where_the_log_cannot_take_a_record() {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::create(&d.path().join("ws"), "t").unwrap();
        let keys = crate::keys::KeyPaths::in_dir(&ws.keys_dir());
        keys.create_all().unwrap();
        let logged = Session::begin_read_only(&ws, "user:t", ReadOnlyAction::Budget, "*");
        let ReadOnly::Logged(s) = logged else {
            panic!("{logged:?}")
        };
        assert_eq!(s.action, "budget");
        // Without the audit key no checkpoint can seal a record: a read runs unlogged, saying
        // why; every other command is refused before it acts.
        std::fs::remove_file(&keys.audit_key).unwrap();
        match Session::begin_read_only(&ws, "user:t", ReadOnlyAction::AuditVerify, "audit-log") {
            ReadOnly::Unlogged { why } => assert!(why.contains("audit.key.pem"), "{why}"),
            other => panic!("{other:?}"),
        }
        let refused = Session::begin(&ws, "user:t", "distill", "x").unwrap_err();
        assert_eq!(refused.code(), "audit-key-unusable");
    }
}
