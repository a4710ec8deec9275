//! The command line: argument parsing (clap derive), dispatch, auditing of every command that
//! opens a workspace, and rendering (human text or `--json`, `error:` + `hint:`).
//!
//! Each subcommand lives in its own file with its `Args` and a `run` function returning a
//! [`Report`]; this file holds only what they share.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::access as perms;
use crate::access::Scope;
use crate::audit::{AuditLog, Ended, NewRecord, Outcome, ReadOnly, ReadOnlyAction, Session};
use crate::workspace::Workspace;
use crate::{Error, Result};

pub mod access;
pub mod audit;
pub mod bench;
pub mod budget;
pub mod datasets;
pub mod demo;
pub mod distill;
pub mod error;
pub mod eval;
pub mod ingest;
pub mod init;
pub mod keys;
pub mod package;
pub mod plan;
pub mod policy;
pub mod privacy;
pub mod privacy_audit;
pub mod progress;
pub mod render;
pub mod runs;
pub mod serve;
pub mod verify;

/// Default workspace directory when neither `--workspace` nor `RETORT_WORKSPACE` is given.
pub const DEFAULT_WORKSPACE: &str = "./retort-workspace";

/// Retort: differentially private dataset distillation with signed provenance.
#[derive(Debug, Parser)]
#[command(name = "retort", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Workspace directory [default: ./retort-workspace].
    #[arg(long, global = true, env = "RETORT_WORKSPACE", value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Print one JSON object as the last line of stdout (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// Policy file to use instead of the workspace's active policy (see policies/README.md).
    #[arg(long, global = true, env = "RETORT_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Print less (repeat for even less).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// Print more (repeat for debug output).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
pub enum Command {
    /// Create a workspace: config, keys, HMAC secret, default policy, ledger, audit log.
    Init(init::Args),
    /// Run the whole pipeline end to end on embedded demo data.
    Demo(demo::Args),
    /// Read, validate, de-identify and store a dataset.
    Ingest(ingest::Args),
    /// List stored datasets, show one (with a contact sheet), or delete one.
    Datasets(datasets::Args),
    /// List runs (with status: running, completed, cancelled, failed, crashed) or show one.
    Runs(runs::Args),
    /// The privacy accountant as a calculator.
    Privacy(privacy::Args),
    /// Dry run of a distillation: noise, steps, epsilon, policy decision; spends nothing.
    Plan(plan::Args),
    /// Reserve budget, distill a dataset into a few synthetic images per class.
    Distill(distill::Args),
    /// Train fresh models on a run's synthetic set and test on the held-out split.
    Eval(eval::Args),
    /// Privacy budget per dataset: spent, reserved, remaining.
    Budget(budget::Args),
    /// Build a signed package of a run for a partner.
    Package(package::Args),
    /// Verify a package (partner side): signature, digests, manifest.
    Verify(verify::Args),
    /// The compliance officer's view of the audit log.
    Audit(audit::Args),
    /// The package-signing and audit keys.
    Keys(keys::Args),
    /// Validate, show and edit the policy.
    Policy(policy::Args),
    /// Benchmarks.
    Bench(bench::Args),
    /// Serve packages to partners over mutual TLS.
    Serve(serve::Args),
    /// Who may read and write the workspace: show or set its groups and permissions.
    Access(access::Args),
}

impl Command {
    /// The audit action name of this command.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Init(_) => "init",
            Command::Demo(_) => "demo",
            Command::Ingest(_) => "ingest",
            Command::Datasets(_) => "datasets",
            Command::Runs(_) => "runs",
            Command::Privacy(_) => "privacy",
            Command::Plan(_) => "plan",
            Command::Distill(_) => "distill",
            Command::Eval(_) => "eval",
            Command::Budget(_) => "budget",
            Command::Package(_) => "package",
            Command::Verify(_) => "verify",
            Command::Audit(_) => "audit",
            Command::Keys(_) => "keys",
            Command::Policy(_) => "policy",
            Command::Bench(_) => "bench",
            Command::Serve(_) => "serve",
            Command::Access(_) => "access",
        }
    }
}

/// What a command returns: text for people, JSON for scripts.
#[derive(Debug, Default)]
pub struct Report {
    /// Human-readable output (printed unless `--json`).
    pub human: String,
    /// The `--json` object (printed as the last stdout line with `--json`).
    pub json: serde_json::Value,
}

impl Report {
    /// A report from text and JSON.
    pub fn new(human: impl Into<String>, json: serde_json::Value) -> Report {
        Report {
            human: human.into(),
            json,
        }
    }
}

/// Shared state of one command invocation.
#[derive(Debug)]
pub struct Ctx {
    /// `--workspace` / `RETORT_WORKSPACE`, if given.
    pub workspace_arg: Option<PathBuf>,
    /// `--json`.
    pub json: bool,
    /// `-q` count.
    pub quiet: u8,
    /// `-v` count.
    pub verbose: u8,
    /// `--policy` override, if given.
    pub policy: Option<PathBuf>,
    /// Who runs this: `user:NAME` or `user:NAME (login LOGIN)`, from the kernel
    /// ([`crate::identity`]).
    pub actor: String,
    session: Option<Session>,
    /// Why a read-only command runs unlogged (the documented exception for compliance reads), if it does.
    unlogged: Option<String>,
    /// Whether the workspace's private data was checked in this command (once per command).
    access_checked: bool,
}

impl Ctx {
    /// A context for tests and embedding.
    pub fn new(workspace: Option<PathBuf>, json: bool) -> Ctx {
        Ctx {
            workspace_arg: workspace,
            json,
            quiet: 0,
            verbose: 0,
            policy: None,
            actor: current_actor(),
            session: None,
            unlogged: None,
            access_checked: false,
        }
    }

    /// The workspace directory (argument, env or default).
    pub fn workspace_path(&self) -> PathBuf {
        self.workspace_arg
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_WORKSPACE))
    }

    /// Open the workspace and begin this command's audit session: when it ends, a record with
    /// `action`, `object`, the outcome and the details set with [`Ctx::detail`] is appended.
    /// Private data readable beyond the owner is tightened (the owner) or warned about (anyone
    /// else); a workspace from before the ledger was bound to the log is migrated (the owner).
    ///
    /// # Errors
    /// Workspace errors; audit errors (fail closed: a command whose outcome could not be
    /// recorded is refused before acting).
    pub fn open_audited(&mut self, action: &str, object: &str) -> Result<Workspace> {
        let ws = Workspace::open(&self.workspace_path())?;
        self.session = Some(Session::begin(&ws, &self.actor, action, object)?);
        self.check_access(&ws)?;
        // Workspaces from before the ledger was bound to the log: migrated once, audited, by
        // the owner (nobody else may write the ledger or the datasets). Runs whose process died
        // are marked `crashed` (audited; they stay charged), also by the owner.
        if perms::is_owner(ws.root()) {
            crate::ledger::migrate(&ws, &self.actor)?;
            match crate::run::mark_crashed(&ws, &self.actor) {
                Ok(found) => {
                    for c in found {
                        self.say(format!(
                            "note: run {} (dataset {}) was still marked running but its process is gone; it is now marked crashed and stays charged (`retort runs show {}`)",
                            c.run, c.dataset, c.run
                        ));
                    }
                }
                Err(e) => {
                    tracing::warn!("runs whose process died could not be marked crashed: {e}")
                }
            }
        }
        Ok(ws)
    }

    /// Open the workspace for a read-only command: audited like [`Ctx::open_audited`] when
    /// this user can write the log; otherwise (a compliance officer) it runs unlogged and says
    /// so, on stderr and as `"unlogged"` in the `--json` object (the documented exception). Nothing
    /// is migrated or changed for a user who cannot write the log.
    ///
    /// # Errors
    /// Workspace errors.
    pub fn open_read_only(&mut self, what: ReadOnlyAction, object: &str) -> Result<Workspace> {
        let ws = Workspace::open(&self.workspace_path())?;
        match Session::begin_read_only(&ws, &self.actor, what, object) {
            ReadOnly::Logged(s) => {
                self.session = Some(s);
                self.check_access(&ws)?;
                if what == ReadOnlyAction::Budget && perms::is_owner(ws.root()) {
                    crate::ledger::migrate(&ws, &self.actor)?;
                }
            }
            ReadOnly::Unlogged { why } => {
                self.say(format!(
                    "note: this `{}` is not recorded in the audit log: it only reads, and you cannot write the log ({why}); compliance users' read-only commands run unlogged",
                    what.action()
                ));
                self.unlogged = Some(why);
                self.check_access(&ws)?;
            }
        }
        Ok(ws)
    }

    /// Once per command: find private data (datasets, runs, keys) readable beyond the model of
    /// [`crate::access`]. The owner, in an audited command, tightens it (only ever removing
    /// permissions) and records what changed; anyone else is warned.
    fn check_access(&mut self, ws: &Workspace) -> Result<()> {
        if std::mem::replace(&mut self.access_checked, true) {
            return Ok(());
        }
        let groups = match ws.groups() {
            Ok(g) => g,
            Err(e) => {
                self.warn(format!(
                    "the workspace's [access] groups cannot be used on this host ({e}); its permissions were not checked"
                ));
                return Ok(());
            }
        };
        let checked = perms::check(ws.root(), &groups, Scope::Private)?;
        let wide: Vec<perms::Finding> = checked.wider().cloned().collect();
        if wide.is_empty() {
            return Ok(());
        }
        let some = |v: Vec<String>| {
            let n = v.len();
            let mut s = v.into_iter().take(3).collect::<Vec<_>>().join(", ");
            if n > 3 {
                s += &format!(" and {} more", n - 3);
            }
            s
        };
        match &self.session {
            Some(session) if perms::is_owner(ws.root()) => {
                let changes = perms::tighten(ws.root(), &wide)?;
                let list: Vec<String> = changes.iter().map(|c| c.describe()).collect();
                session.record(
                    NewRecord::new("", "workspace.permissions", "private-data", Outcome::Ok)
                        .details(serde_json::json!({
                            "tightened": changes.len(),
                            "changes": list.iter().take(50).collect::<Vec<_>>(),
                        })),
                )?;
                self.warn(format!(
                    "private data was readable beyond the workspace owner; tightened {} path(s): {} (recorded in the audit log)",
                    changes.len(),
                    some(list)
                ));
            }
            _ => self.warn(format!(
                "private data in this workspace is readable beyond its owner: {}; the owner's next retort command tightens it (see `retort access --help`)",
                some(wide.iter().map(|f| f.describe()).collect())
            )),
        }
        Ok(())
    }

    /// Begin auditing in an already open workspace (whose log the caller checked or creates).
    pub fn audit_in(&mut self, ws: &Workspace, action: &str, object: &str) {
        self.session = Some(Session::new(ws, &self.actor, action, object));
    }

    /// The audit session of this command, if a workspace was opened for auditing.
    pub fn session(&mut self) -> Option<&mut Session> {
        self.session.as_mut()
    }

    /// The audit session, which a command that acts on private data or budget must have.
    ///
    /// # Errors
    /// `usage` when the command did not open its workspace with [`Ctx::open_audited`] (a bug).
    pub fn session_required(&mut self) -> Result<&mut Session> {
        self.session.as_mut().ok_or_else(|| Error::Usage {
            message: "internal: this command needs an audit session".into(),
            hint: Some("this is a bug; please report it with the command line".into()),
        })
    }

    /// Change the object of the final audit record (e.g. once a run id is known).
    pub fn set_object(&mut self, object: &str) {
        if let Some(s) = &mut self.session {
            s.set_object(object);
        }
    }

    /// Add a detail to the final audit record (no PHI!).
    pub fn detail(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        if let Some(s) = &mut self.session {
            s.detail(key, value);
        }
    }

    /// Log intent before a sensitive action. Fails closed: if the record cannot be written the
    /// caller must not act.
    ///
    /// # Errors
    /// Audit errors.
    pub fn intent(
        &self,
        ws: &Workspace,
        action: &str,
        object: &str,
        details: serde_json::Value,
    ) -> Result<()> {
        match &self.session {
            Some(s) => s.intent(action, object, details)?,
            None => {
                AuditLog::new(ws.audit_dir()).append(
                    NewRecord::new(&self.actor, action, object, Outcome::Intent).details(details),
                )?;
            }
        }
        Ok(())
    }

    /// Append an extra record now (e.g. a policy change inside a larger command).
    ///
    /// # Errors
    /// Audit errors.
    pub fn record(&self, ws: &Workspace, rec: NewRecord) -> Result<()> {
        AuditLog::new(ws.audit_dir()).append(rec)?;
        Ok(())
    }

    /// Print a progress line for people (stderr, so `--json` stdout stays clean), unless `-q`.
    pub fn say(&self, line: impl AsRef<str>) {
        if self.quiet == 0 {
            eprintln!("{}", line.as_ref());
        }
    }

    /// Print a warning for people (stderr, plain text), unless `-qq`.
    pub fn warn(&self, line: impl AsRef<str>) {
        if self.quiet < 2 {
            eprintln!("warning: {}", line.as_ref());
        }
    }

    /// Why this read-only command runs unlogged, if it does.
    pub fn unlogged(&self) -> Option<&str> {
        self.unlogged.as_deref()
    }

    /// Whether progress bars should be drawn.
    pub fn show_progress(&self) -> bool {
        self.quiet == 0 && !self.json
    }

    /// Append the final audit record (if a session was begun) and the end-of-command
    /// checkpoint. An audit failure turns success into an error.
    fn finish(&mut self, result: Result<Report>) -> Result<Report> {
        let Some(session) = self.session.take() else {
            return match (result, &self.unlogged) {
                (Ok(mut r), Some(why)) => {
                    if let Some(o) = r.json.as_object_mut() {
                        o.insert("unlogged".into(), why.clone().into());
                    }
                    Ok(r)
                }
                (r, _) => r,
            };
        };
        let ended = match &result {
            Ok(_) => session.finish(&Ended::Ok),
            Err(e) => session.finish(&Ended::Failed {
                error: e,
                message: e.audit_message(),
            }),
        };
        match (result, ended) {
            (Ok(_), Err(e)) => Err(e.into()),
            (Err(e), Err(a)) => {
                tracing::warn!("audit record or checkpoint not written: {a}");
                Err(e)
            }
            (r, Ok(())) => r,
        }
    }
}

/// The audit actor of this process: `user:NAME` or `user:NAME (login LOGIN)`, from the
/// kernel (effective uid, login uid), never from `$USER` ([`crate::identity`]).
pub fn current_actor() -> String {
    crate::identity::Identity::current().actor()
}

fn dispatch(cmd: Command, ctx: &mut Ctx) -> Result<Report> {
    match cmd {
        Command::Init(a) => init::run(a, ctx),
        Command::Demo(a) => demo::run(a, ctx),
        Command::Ingest(a) => ingest::run(a, ctx),
        Command::Datasets(a) => datasets::run(a, ctx),
        Command::Runs(a) => runs::run(a, ctx),
        Command::Privacy(a) => privacy::run(a, ctx),
        Command::Plan(a) => plan::run(a, ctx),
        Command::Distill(a) => distill::run(a, ctx),
        Command::Eval(a) => eval::run(a, ctx),
        Command::Budget(a) => budget::run(a, ctx),
        Command::Package(a) => package::run(a, ctx),
        Command::Verify(a) => verify::run(a, ctx),
        Command::Audit(a) => audit::run(a, ctx),
        Command::Keys(a) => keys::run(a, ctx),
        Command::Policy(a) => policy::run(a, ctx),
        Command::Bench(a) => bench::run(a, ctx),
        Command::Serve(a) => serve::run(a, ctx),
        Command::Access(a) => access::run(a, ctx),
    }
}

/// Run one parsed command with a context: dispatch, then audit the outcome.
///
/// # Errors
/// Whatever the command returns.
pub fn run_command(cmd: Command, ctx: &mut Ctx) -> Result<Report> {
    let r = dispatch(cmd, ctx);
    ctx.finish(r)
}

/// The binary's entry point: parse, run, render, return the exit code.
pub fn main_entry(args: Vec<OsString>) -> u8 {
    let json = wants_json(&args);
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => return render::clap_error(&e, json),
    };
    init_tracing(cli.verbose, cli.quiet);
    let _ = ctrlc::set_handler(|| {
        if crate::progress::is_cancelled() {
            // Second Ctrl-C: the user insists. Nothing half-written can be left behind
            // because every file is written atomically.
            eprintln!("\ninterrupted again; stopping now");
            std::process::abort();
        }
        eprintln!("\ninterrupt received: finishing cleanly (press Ctrl-C again to abort)");
        crate::progress::request_cancel();
    });
    let mut ctx = Ctx {
        workspace_arg: cli.workspace.clone(),
        json: cli.json,
        quiet: cli.quiet,
        verbose: cli.verbose,
        policy: cli.policy.clone(),
        actor: current_actor(),
        session: None,
        unlogged: None,
        access_checked: false,
    };
    let result = run_command(cli.command, &mut ctx);
    render::emit(&ctx, result)
}

/// Whether `--json` is among the arguments (before a `--`), for errors clap reports before
/// the arguments are parsed.
fn wants_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

fn init_tracing(verbose: u8, quiet: u8) {
    let level = match (quiet, verbose) {
        (q, _) if q > 0 => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RETORT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("retort={level}")));
    // No colour codes off a terminal (journald, log files, pipes).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .without_time()
        .try_init();
}

/// Resolve a path argument relative to the current directory for messages.
pub fn display(p: &Path) -> String {
    p.display().to_string()
}

/// A usage error (exit 2) with a hint.
pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Error {
    Error::Usage {
        message: message.into(),
        hint: Some(hint.into()),
    }
}
