//! `retort package RUN --partner NAME [--out DIR] [--tar]`: build the signed package of a
//! completed, charged run for a partner the policy allows (the library checks every rule:
//! `retort::package::create`), publish it in the workspace and optionally copy it out.

use std::path::PathBuf;

use serde_json::json;

use super::{Ctx, Report};
use crate::package::create::{create, Request};
use crate::workspace::{validate_name, DEFAULT_LOCK_WAIT};
use crate::Result;

/// Arguments of `retort package`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run to package (an id as `retort runs list` shows it).
    pub run: String,
    /// The partner receiving the package (must be allowed by the policy).
    #[arg(long, value_name = "NAME")]
    pub partner: String,
    /// Also copy the package out to DIR/<id>/ (or DIR/<id>.tar with --tar).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// With --out: write one plain POSIX tar instead of a directory.
    #[arg(long, requires = "out")]
    pub tar: bool,
}

/// Run `retort package`.
///
/// # Errors
/// Policy refusals and uncharged runs (exit 3), run, ledger, key and I/O errors; audit
/// failures refuse the action before anything is written.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    validate_name(&args.run)?;
    validate_name(&args.partner)?;
    let ws = ctx.open_audited("package.create", &args.run)?;
    let _lock = ws.lock(DEFAULT_LOCK_WAIT)?;
    let policy = ctx.policy.clone();
    let c = create(
        &ws,
        &Request {
            run: &args.run,
            partner: &args.partner,
            out: args.out.as_deref(),
            tar: args.tar,
            policy_override: policy.as_deref(),
        },
        ctx.session_required()?,
    )?;
    let pkg = &c.package;
    let fp = &c.key_sha256;
    let mut human = format!(
        "package {} for partner {}\n  run:        {} (epsilon {:.4} delta {:e}{})\n  path:       {}\n  files:      {}\n  key:        ed25519 SHA256 {fp}\n",
        pkg.id,
        args.partner,
        c.run.id,
        c.built.epsilon,
        c.built.delta,
        if c.utility { ", with released utility figures" } else { ", no utility figures" },
        pkg.dir.display(),
        pkg.meta.files.join(", "),
    );
    if let Some(p) = &c.exported {
        human.push_str(&format!("  exported:   {}\n", p.display()));
    }
    human.push_str(&format!(
        "partner check: retort verify {} --key {fp}\n",
        c.exported.as_ref().unwrap_or(&pkg.dir).display()
    ));
    Ok(Report::new(
        human,
        json!({
            "package": pkg.id,
            "path": pkg.dir,
            "meta": pkg.meta_path,
            "export": c.exported,
            "partner": args.partner,
            "run": c.run.id,
            "epsilon": c.built.epsilon,
            "delta": c.built.delta,
            "key_sha256": fp,
            "files": pkg.meta.files,
            "checkpoint": true,
            "utility": c.utility,
        }),
    ))
}
