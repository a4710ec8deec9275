//! `retort package RUN --partner NAME [--out DIR] [--tar]`: check that the partner may receive
//! packages, build the signed package of a completed run, publish it in the workspace
//! (`packages/<id>/` + `packages/<id>.meta.json`, where `retort serve` finds it) and optionally
//! copy it out.

use std::path::PathBuf;

use serde_json::json;

use super::{Ctx, Report};
use crate::keys::{KeyPaths, SigningKey};
use crate::package::manifest::{load_eval, RunJson};
use crate::package::sign::{build_package, export_copy, file_sha256, publish, BuildInputs};
use crate::policy::{self, OsIdentity, PackageRequest, Request};
use crate::workspace::{validate_name, Workspace, DEFAULT_LOCK_WAIT};
use crate::Result;

/// Arguments of `retort package`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run to package (an id under runs/, as `retort distill` printed it).
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
/// `policy-partner-not-allowed` and other policy refusals (exit 3), run errors, key and I/O errors; audit failures
/// refuse the action before anything is written.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    validate_name(&args.run)?;
    validate_name(&args.partner)?;
    let ws = ctx.open_audited("package.create", &args.run)?;
    ctx.detail("run", args.run.clone());
    ctx.detail("partner", args.partner.clone());

    let _lock = ws.lock(DEFAULT_LOCK_WAIT)?;
    let run_dir = ws.runs_dir().join(&args.run);
    let run = RunJson::load(&run_dir.join("run.json"), &args.run)?;
    let loaded = check_policy(&ws, ctx, &args.partner, &run)?;
    let budget = dataset_budget(&ws, &run, loaded.policy.dataset_epsilon_cap(&run.dataset))?;
    let eval = load_eval(&run_dir.join("eval.json"))?;
    let read = |name: &str| -> Result<Vec<u8>> {
        let p = run_dir.join(name);
        std::fs::read(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => crate::package::Error::RunFileMissing {
                run: args.run.clone(),
                path: p.clone(),
            }
            .into(),
            _ => crate::error::IoError::new("reading", &p, e).into(),
        })
    };
    let synthetic = read("synthetic.parquet")?;
    let contact_sheet = read("contact_sheet.png")?;
    crate::progress::check()?;

    let id = crate::workspace::new_id("pkg");
    ctx.set_object(&id);
    ctx.detail("package", id.clone());
    ctx.intent(
        &ws,
        "package.create",
        &id,
        json!({"run": args.run, "partner": args.partner, "epsilon": run.privacy.epsilon, "delta": run.delta}),
    )?;

    let key = SigningKey::load(&KeyPaths::in_dir(&ws.keys_dir()).package_key)?;
    let checkpoint = audit_checkpoint(&ws)?;
    let retort_digest = std::env::current_exe()
        .ok()
        .and_then(|p| file_sha256(&p).ok());
    let created = crate::workspace::now_rfc3339();
    let built = build_package(&BuildInputs {
        run: &run,
        synthetic: &synthetic,
        contact_sheet: &contact_sheet,
        eval: eval.as_ref(),
        budget: budget.as_ref(),
        checkpoint: checkpoint.as_deref(),
        partner: &args.partner,
        workspace_id: &ws.config().workspace_id,
        retort_digest: retort_digest.as_deref(),
        packaged_on: &created,
        key: &key,
    });
    crate::progress::check()?;
    let pkg = publish(
        &ws.packages_dir(),
        &id,
        &built,
        &run,
        &args.partner,
        &created,
    )?;
    ctx.detail("envelope_sha256", built.envelope_sha256.clone());
    ctx.detail("key_sha256", key.public().fingerprint());
    ctx.detail("checkpoint", checkpoint.is_some());

    let exported = match &args.out {
        Some(out) => {
            let mtime = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
            let p = export_copy(&pkg, out, args.tar, mtime)?;
            ctx.detail("exported_to", p.display().to_string());
            Some(p)
        }
        None => None,
    };

    let fp = key.public().fingerprint();
    let mut human = format!(
        "package {id} for partner {}\n  run:        {} (epsilon {} delta {:e})\n  path:       {}\n  files:      {}\n  key:        ed25519 SHA256 {fp}\n",
        args.partner,
        run.id,
        built.epsilon,
        built.delta,
        pkg.dir.display(),
        pkg.meta.files.join(", "),
    );
    if let Some(p) = &exported {
        human.push_str(&format!("  exported:   {}\n", p.display()));
    }
    human.push_str(&format!(
        "partner check: retort verify {} --key {fp}\n",
        exported.as_ref().unwrap_or(&pkg.dir).display()
    ));
    Ok(Report::new(
        human,
        json!({
            "package": id,
            "path": pkg.dir,
            "meta": pkg.meta_path,
            "export": exported,
            "partner": args.partner,
            "run": run.id,
            "epsilon": built.epsilon,
            "delta": built.delta,
            "key_sha256": fp,
            "files": pkg.meta.files,
            "checkpoint": checkpoint.is_some(),
        }),
    ))
}

/// The active policy must allow this partner to receive this run (and this user to export).
///
/// # Errors
/// Policy load errors (fail closed), `policy-*` refusals (exit 3).
pub fn check_policy(
    ws: &Workspace,
    ctx: &mut Ctx,
    partner: &str,
    run: &RunJson,
) -> Result<policy::Loaded> {
    let loaded = policy::load_active(ws, ctx.policy.as_deref())?;
    ctx.detail("policy", loaded.identity_json());
    let who = OsIdentity::current();
    loaded
        .policy
        .decide(&Request::Package(PackageRequest {
            partner,
            dataset: &run.dataset,
            method: &run.method,
            epsilon: run.privacy.epsilon,
            delta: run.delta,
            ipc: u32::try_from(run.ipc).unwrap_or(u32::MAX),
            exporter: &who,
        }))
        .into_result()?;
    Ok(loaded)
}

/// Write a signed audit checkpoint for this export (it announces itself in the log) and return
/// it: the package carries it as `audit-checkpoint.txt`, so partners become witnesses of the log.
fn audit_checkpoint(ws: &Workspace) -> Result<Option<Vec<u8>>> {
    let cp = crate::audit::checkpoint::write_checkpoint(ws)?;
    Ok(Some(cp.text.into_bytes()))
}

/// The dataset's budget after this run, from the ledger, for the privacy report: the
/// accountant's total over every run up to and including this one (at this run's delta), the
/// plain sum beside it, the total now (later runs included), the policy cap and what remains.
///
/// # Errors
/// `package-run-not-charged` (exit 3) when the ledger has no entry for the run: a release that
/// no ledger event backs is never published. Ledger and accountant errors.
fn dataset_budget(ws: &Workspace, run: &RunJson, cap: f64) -> Result<Option<serde_json::Value>> {
    use crate::dp::accountant;
    let ledger = match crate::ledger::Ledger::of_run(ws, &run.id) {
        Ok(l) => l,
        Err(crate::ledger::Error::NotFound { .. }) => {
            return Err(crate::package::Error::RunNotCharged {
                run: run.id.clone(),
            }
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    let runs = ledger.runs()?;
    let Some(pos) = runs.iter().position(|r| r.run == run.id) else {
        return Err(crate::package::Error::RunNotCharged {
            run: run.id.clone(),
        }
        .into());
    };
    let upto = &runs[..=pos];
    let events: Vec<_> = upto.iter().flat_map(|r| r.events.clone()).collect();
    let after = accountant::epsilon(&events, run.delta)?;
    let per_run: Vec<_> = upto.iter().map(|r| r.events.clone()).collect();
    let plain = accountant::plain_sum(&per_run, run.delta)?;
    let now = ledger.summary(run.delta)?;
    Ok(Some(json!({
        "delta": run.delta,
        "accountant": after.accountant,
        "epsilon_after_this_run": after.epsilon,
        "epsilon_rdp_after_this_run": after.epsilon_rdp,
        "epsilon_pld_after_this_run": after.epsilon_pld,
        "plain_sum_after_this_run": plain,
        "runs_counted": upto.len(),
        "epsilon_now": now.epsilon,
        "runs_now": now.runs.len(),
        "cap": cap,
        "remaining": (cap - now.epsilon).max(0.0),
        "this_run_state": upto[pos].state,
        "note": "all runs on the same data compose: this is the accountant applied to every run's privacy events, not the sum of their epsilons (the plain sum is shown beside it)",
    })))
}
