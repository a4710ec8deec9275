//! The command line: argument parsing (clap derive), dispatch, auditing of every command that
//! opens a workspace, and rendering (human text or `--json`, `error:` + `hint:`).
//!
//! Each subcommand lives in its own file with its `Args` and a `run` function returning a
//! [`Report`]; this file holds only what they share.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::audit::{AuditLog, Ended, NewRecord, Outcome, Session};
use crate::workspace::Workspace;
use crate::{Error, Result};

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
    /// Policy file to use instead of the workspace's active policy (DESIGN §4 "Policy").
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
    /// List stored datasets or show one (with a contact sheet).
    Datasets(datasets::Args),
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
}

impl Command {
    /// The audit action name of this command.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Init(_) => "init",
            Command::Demo(_) => "demo",
            Command::Ingest(_) => "ingest",
            Command::Datasets(_) => "datasets",
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
    /// Who runs this (`user:<login>`).
    pub actor: String,
    session: Option<Session>,
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
    ///
    /// # Errors
    /// Workspace errors; audit errors (fail closed: a command whose outcome could not be
    /// recorded is refused before acting).
    pub fn open_audited(&mut self, action: &str, object: &str) -> Result<Workspace> {
        let ws = Workspace::open(&self.workspace_path())?;
        self.session = Some(Session::begin(&ws, &self.actor, action, object)?);
        // Workspaces from before the ledger was bound to the log: migrated once, audited.
        crate::ledger::migrate(&ws, &self.actor)?;
        Ok(ws)
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

    /// Whether progress bars should be drawn.
    pub fn show_progress(&self) -> bool {
        self.quiet == 0 && !self.json
    }

    /// Append the final audit record (if a session was begun) and the end-of-command
    /// checkpoint. An audit failure turns success into an error.
    fn finish(&mut self, result: Result<Report>) -> Result<Report> {
        let Some(session) = self.session.take() else {
            return result;
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

/// `user:<login>` from the environment (USER, LOGNAME), else `user:unknown`.
pub fn current_actor() -> String {
    let who = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("user:{who}")
}

fn dispatch(cmd: Command, ctx: &mut Ctx) -> Result<Report> {
    match cmd {
        Command::Init(a) => init::run(a, ctx),
        Command::Demo(a) => demo::run(a, ctx),
        Command::Ingest(a) => ingest::run(a, ctx),
        Command::Datasets(a) => datasets::run(a, ctx),
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
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
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
    };
    let result = run_command(cli.command, &mut ctx);
    render::emit(&ctx, result)
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
