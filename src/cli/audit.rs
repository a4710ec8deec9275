//! `retort audit verify|show|report`: the compliance officer's view of the audit log.
//!
//! These commands only read the workspace. When the user may write to the audit log they are
//! audited like every other command (record + checkpoint after the work). A compliance officer
//! with read-only access can still run them; they then say on stderr that the run is not
//! recorded, rather than fail (the officer has read access to the workspace).

use std::io::Write as _;
use std::path::PathBuf;

use super::{Ctx, Report};
use crate::audit::report;
use crate::audit::show::{self, Filter};
use crate::audit::verify::{self, VerifyReport};
use crate::keys::{KeyPaths, PublicKey};
use crate::workspace::Workspace;
use crate::Result;

/// Arguments of `retort audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub cmd: AuditCmd,
}

/// `audit` subcommands.
#[derive(Debug, clap::Subcommand)]
#[non_exhaustive]
pub enum AuditCmd {
    /// Recompute the hash chain and every checkpoint; exit 0 if intact, 4 otherwise.
    Verify {
        /// A checkpoint held outside the workspace (e.g. a package's audit-checkpoint.txt);
        /// repeat for more.
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
        /// The audit public key, pinned (SPKI PEM, signify line or hex); default: the
        /// workspace's own.
        #[arg(long, value_name = "PUBKEY")]
        key: Option<PathBuf>,
    },
    /// List records (with --json: the stored JSON lines, then a summary line).
    Show {
        /// Records at or after this time (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Records at or before this time (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only this action or actions under it (e.g. `package`).
        #[arg(long, value_name = "ACTION")]
        action: Option<String>,
        /// Only records about this dataset.
        #[arg(long, value_name = "NAME")]
        dataset: Option<String>,
        /// Only this outcome: ok, refused, error or intent.
        #[arg(long, value_name = "OUTCOME")]
        outcome: Option<String>,
    },
    /// Write a self-contained HTML report for compliance officers.
    Report {
        /// Output file.
        #[arg(long, value_name = "FILE")]
        html: PathBuf,
        /// Only activity at or after this time (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
    },
}

/// Run `audit`.
///
/// # Errors
/// Workspace and audit errors; `audit-verify-failed` (exit 4) when verification fails.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    match args.cmd {
        AuditCmd::Verify { checkpoints, key } => run_verify(ctx, checkpoints, key),
        AuditCmd::Show {
            since,
            until,
            action,
            dataset,
            outcome,
        } => {
            let filter = Filter {
                since: time_arg("--since", since.as_deref(), false)?,
                until: time_arg("--until", until.as_deref(), true)?,
                action,
                dataset,
                outcome: match outcome.as_deref() {
                    None => None,
                    Some(o) => Some(show::parse_outcome(o).ok_or_else(|| {
                        super::usage(
                            format!("--outcome {o:?} is not an outcome"),
                            "use one of: ok, refused, error, intent",
                        )
                    })?),
                },
            };
            run_show(ctx, &filter)
        }
        AuditCmd::Report { html, since } => {
            let since = time_arg("--since", since.as_deref(), false)?;
            run_report(ctx, html, since)
        }
    }
}

fn time_arg(flag: &str, v: Option<&str>, end_of_day: bool) -> Result<Option<time::OffsetDateTime>> {
    match v {
        None => Ok(None),
        Some(s) => show::parse_time(s, end_of_day).map(Some).ok_or_else(|| {
            super::usage(
                format!("{flag} {s:?} is not a time"),
                "give an RFC 3339 time like 2026-11-29T10:00:00Z or a date like 2026-11-29 (UTC)",
            )
        }),
    }
}

/// Open the workspace; audit this command if the user can write the audit log, else say why
/// it will not be recorded.
fn open(ctx: &mut Ctx, action: &str, object: &str) -> Result<Workspace> {
    let ws = Workspace::open(&ctx.workspace_path())?;
    match writable(&ws) {
        Ok(()) => ctx.audit_in(&ws, action, object),
        Err(why) => ctx.say(format!(
            "note: the audit log cannot take a record ({why}); this `{action}` only reads, so it runs, but it is not recorded in the audit log"
        )),
    }
    Ok(ws)
}

/// Whether the audit log and the audit key can be used by this user (opens, writes nothing).
fn writable(ws: &Workspace) -> std::result::Result<(), String> {
    crate::audit::preflight(ws).map_err(|e| e.to_string())?;
    let key = KeyPaths::in_dir(&ws.keys_dir()).audit_key;
    std::fs::File::open(&key)
        .map(drop)
        .map_err(|e| format!("{}: {e}", key.display()))
}

fn run_verify(ctx: &mut Ctx, external: Vec<PathBuf>, key: Option<PathBuf>) -> Result<Report> {
    let ws = open(ctx, "audit.verify", "audit-log")?;
    let key = match key {
        None => None,
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| crate::error::IoError::new("reading", &p, e))?;
            Some(PublicKey::parse(&text, &p.display().to_string())?)
        }
    };
    let rep = verify::verify(&ws, &verify::Options { external, key })?;
    // The ledgers against the log (a finding per ledger).
    let ledgers = crate::ledger::check_all(&ws);
    let mismatches: Vec<&crate::ledger::Finding> = match &ledgers {
        Ok(f) => f.iter().filter(|f| f.is_mismatch()).collect(),
        Err(_) => Vec::new(),
    };
    ctx.detail("verdict", rep.verdict);
    ctx.detail("records", rep.records);
    ctx.detail("errors", rep.errors);
    ctx.detail("checkpoints", rep.checkpoints.len());
    ctx.detail("unsealed_tail", rep.unsealed_tail);
    ctx.detail("head_sha256", rep.head_sha256.clone());
    ctx.detail("ledger_mismatches", mismatches.len());
    let mut json = serde_json::to_value(&rep).expect("invariant: report serializes");
    json["ledgers"] = ledgers_json(&ledgers);
    let intact = rep.intact && mismatches.is_empty();
    if !intact {
        json["verdict"] = "FAIL".into();
    }
    let mut human = render_verify(&ws, &rep);
    human += &render_ledgers(&ledgers);
    if intact {
        return Ok(Report::new(human, json));
    }
    if rep.intact {
        human = human.replace(
            "verdict: PASS - the log and every checkpoint are intact",
            "verdict: FAIL - the log and every checkpoint are intact, but a ledger does not match the log",
        );
    }
    // Failure: print the report, then let the error (exit 4) follow on stderr / as the last
    // JSON line.
    let mut out = std::io::stdout().lock();
    let _ = if ctx.json {
        writeln!(out, "{json}")
    } else if ctx.quiet < 2 {
        write!(out, "{human}")
    } else {
        Ok(())
    };
    let _ = out.flush();
    if let (true, Some(f)) = (rep.intact, mismatches.first()) {
        return Err(crate::ledger::Error::LogMismatch {
            dataset: f.names.join(", "),
            fingerprint: f.fingerprint.clone(),
            kind: f.kind.unwrap_or("mismatch"),
            detail: f.message.clone(),
        }
        .into());
    }
    Err(crate::audit::Error::VerifyFailed {
        errors: rep.errors,
        bad_checkpoints: rep.checkpoints.iter().filter(|c| c.status != "ok").count(),
    }
    .into())
}

/// The `ledgers` part of `audit verify --json`: counts and one finding per ledger.
fn ledgers_json(
    l: &std::result::Result<Vec<crate::ledger::Finding>, crate::ledger::Error>,
) -> serde_json::Value {
    match l {
        Ok(f) => {
            let count = |s: &str| f.iter().filter(|x| x.status == s).count();
            serde_json::json!({
                "checked": f.len(),
                "ok": count("ok"),
                "pending_repair": count("pending-repair"),
                "mismatch": count("mismatch"),
                "findings": f,
            })
        }
        Err(e) => serde_json::json!({
            "checked": 0,
            "not_checked": e.to_string(),
            "code": crate::error::Coded::code(e),
        }),
    }
}

/// The ledger lines of the verification report.
fn render_ledgers(
    l: &std::result::Result<Vec<crate::ledger::Finding>, crate::ledger::Error>,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    match l {
        Err(e) => {
            let _ = writeln!(s, "ledgers: not checked against the log: {e}");
        }
        Ok(f) => {
            let count = |st: &str| f.iter().filter(|x| x.status == st).count();
            let _ = writeln!(
                s,
                "ledgers: {} checked against the log ({} ok, {} pending repair, {} mismatch)",
                f.len(),
                count("ok"),
                count("pending-repair"),
                count("mismatch")
            );
            for x in f {
                let what = match x.kind {
                    Some(k) => format!("{} ({k})", x.status),
                    None => x.status.to_string(),
                };
                let _ = writeln!(
                    s,
                    "  {:<24} {}  ledger {} / log {} record(s){}",
                    what,
                    x.names.join(", "),
                    x.ledger_records.map_or("-".into(), |n| n.to_string()),
                    x.log_records,
                    if x.message.is_empty() {
                        String::new()
                    } else {
                        format!("\n                           {}", x.message)
                    }
                );
            }
        }
    }
    s
}

/// The verification report for people.
pub fn render_verify(ws: &Workspace, r: &VerifyReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "audit log {}  (origin {})",
        ws.audit_dir().display(),
        r.origin
    );
    let _ = writeln!(
        s,
        "verdict: {}{}",
        r.verdict,
        if r.intact {
            " - the log and every checkpoint are intact"
        } else {
            " - the log or a checkpoint is NOT intact"
        }
    );
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..{b}"),
        _ => "no readable record".into(),
    };
    let _ = writeln!(
        s,
        "records: {} ({range}), {} .. {}, {} segment(s)",
        r.records,
        r.first_ts.as_deref().unwrap_or("-"),
        r.last_ts.as_deref().unwrap_or("-"),
        r.segments.len()
    );
    let _ = writeln!(s, "head:    sha256 {}", r.head_sha256);
    let _ = writeln!(
        s,
        "root:    {} (RFC 6962 Merkle root of all {} records)",
        r.root_sha256, r.records
    );
    let _ = writeln!(
        s,
        "key:     ed25519 SHA256 {} (key ID {}, {})",
        r.key.sha256,
        r.key.key_id,
        if r.key.source == "pinned" {
            "pinned with --key"
        } else {
            "the workspace's own; pin it with --key for an independent check"
        }
    );
    let ok = r.checkpoints.iter().filter(|c| c.status == "ok").count();
    let _ = writeln!(
        s,
        "checkpoints: {} ({ok} ok, {} not ok)",
        r.checkpoints.len(),
        r.checkpoints.len() - ok
    );
    let newest_ws = r
        .checkpoints
        .iter()
        .filter(|c| c.source == "workspace" && c.status == "ok")
        .max_by_key(|c| c.size);
    for c in &r.checkpoints {
        let show = c.status != "ok"
            || c.source == "external"
            || newest_ws.is_some_and(|n| std::ptr::eq(n, c));
        if show {
            let _ = writeln!(
                s,
                "  {:<14} size {:<6} {:<9} {}{}",
                c.status,
                c.size.map_or("-".into(), |n| n.to_string()),
                c.source,
                c.path.display(),
                if c.status == "ok" {
                    String::new()
                } else {
                    format!("\n                 {}", c.message)
                }
            );
        }
    }
    if r.findings.is_empty() {
        let _ = writeln!(s, "findings: none");
    } else {
        let _ = writeln!(
            s,
            "findings: {} error(s), {} warning(s)",
            r.errors, r.warnings
        );
        for f in &r.findings {
            let _ = writeln!(
                s,
                "  {:<17} {:<8} {}:{}{}  {}",
                f.code,
                match f.severity {
                    crate::audit::read::Severity::Error => "error",
                    _ => "warning",
                },
                f.segment,
                f.line,
                f.seq.map_or(String::new(), |q| format!(" (seq {q})")),
                f.message
            );
        }
    }
    let _ = writeln!(
        s,
        "unsealed tail: {} record(s) after the newest good checkpoint (hash chain only)",
        r.unsealed_tail
    );
    let _ = writeln!(s, "coverage: {}", r.coverage);
    s
}

fn run_show(ctx: &mut Ctx, filter: &Filter) -> Result<Report> {
    let ws = open(ctx, "audit.show", "audit-log")?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let json = ctx.json;
    let quiet = ctx.quiet >= 2;
    let sum = show::for_each(ws.audit_dir(), filter, |r, line| {
        let res = if json {
            out.write_all(line).and_then(|_| out.write_all(b"\n"))
        } else if quiet {
            Ok(())
        } else {
            writeln!(out, "{}", show::human_line(r))
        };
        res.is_ok()
    })?;
    let _ = out.flush();
    drop(out);
    ctx.detail("shown", sum.shown);
    ctx.say(format!(
        "{} of {} record(s) shown{}",
        sum.shown,
        sum.total,
        if sum.damaged > 0 {
            format!(
                "; {} damaged line(s) skipped: run `retort audit verify`",
                sum.damaged
            )
        } else {
            String::new()
        }
    ));
    let mut j = serde_json::to_value(&sum).expect("invariant: summary serializes");
    j["kind"] = "summary".into();
    Ok(Report::new(String::new(), j))
}

fn run_report(ctx: &mut Ctx, html: PathBuf, since: Option<time::OffsetDateTime>) -> Result<Report> {
    let ws = open(ctx, "audit.report", "audit-log")?;
    let built = report::build(&ws, since)?;
    ctx.detail("verdict", built.verdict);
    ctx.detail("file", html.display().to_string());
    crate::workspace::atomic_write(&html, built.html.as_bytes())?;
    Ok(Report::new(
        format!(
            "wrote {} ({} bytes): integrity {}, {} dataset(s), {} export(s), {} refusal(s)/error(s)\nopen it in any browser; it needs no network\n",
            html.display(),
            built.html.len(),
            built.verdict,
            built.datasets,
            built.exports,
            built.problems
        ),
        serde_json::json!({
            "file": html,
            "bytes": built.html.len(),
            "verdict": built.verdict,
            "datasets": built.datasets,
            "exports": built.exports,
            "problems": built.problems,
        }),
    ))
}
