//! `retort policy check FILE | show | add-partner NAME | remove-partner NAME | activate FILE`:
//! validate a policy before deploying it, print the active one in plain words, register or
//! remove a partner, or replace the active policy (audited policy changes, with the old and new
//! SHA-256).

use std::path::PathBuf;

use super::{Ctx, Report};
use crate::audit::{NewRecord, Outcome};
use crate::policy::{self, Loaded, NewPartner, Policy};
use crate::workspace::{atomic_write, DEFAULT_LOCK_WAIT};
use crate::Result;

/// Arguments of `retort policy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub cmd: PolicyCmd,
}

/// `policy` subcommands.
#[derive(Debug, clap::Subcommand)]
#[non_exhaustive]
pub enum PolicyCmd {
    /// Validate a policy file (no workspace needed): errors name file:line:column.
    Check {
        /// The policy file.
        file: PathBuf,
        /// Treat warnings (entries that never match) as errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Print the active policy (or --policy FILE) in plain words, with its SHA-256.
    Show,
    /// Add a partner to the workspace's active policy (audited, with old and new SHA-256).
    AddPartner {
        /// Partner name (as in `retort package --partner NAME`).
        name: String,
        /// The partner's mTLS client certificate (PEM); its SHA-256 lets it use `retort serve`.
        #[arg(long, value_name = "PEM")]
        client_cert: Option<PathBuf>,
        /// The partner's Ed25519 public key (SPKI PEM, signify/minisign, or raw base64/hex).
        #[arg(long, value_name = "PEM")]
        signing_key: Option<PathBuf>,
        /// Restrict the partner to these datasets (repeatable; default: any dataset).
        #[arg(long = "dataset", value_name = "NAME")]
        datasets: Vec<String>,
        /// Free text describing the partner (no PHI).
        #[arg(long)]
        description: Option<String>,
    },
    /// Remove a partner from the workspace's active policy (audited, with old and new SHA-256).
    /// `retort serve` stops answering its client certificate at once; packages already built
    /// for it stay in the workspace.
    RemovePartner {
        /// Partner name (as `retort policy show` lists it).
        name: String,
    },
    /// Replace the workspace's active policy with FILE after validating it (audited, with old
    /// and new SHA-256).
    Activate {
        /// The new policy file (checked with the same rules as `policy check`).
        file: PathBuf,
    },
}

/// Run `retort policy`.
///
/// # Errors
/// Policy errors (exit 1) with file:line:column; workspace and audit errors.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    match args.cmd {
        PolicyCmd::Check {
            file,
            deny_warnings,
        } => check(&file, deny_warnings, ctx),
        PolicyCmd::Show => show(ctx),
        PolicyCmd::AddPartner {
            name,
            client_cert,
            signing_key,
            datasets,
            description,
        } => add_partner(
            NewPartnerArgs {
                name,
                client_cert,
                signing_key,
                datasets,
                description,
            },
            ctx,
        ),
        PolicyCmd::RemovePartner { name } => remove_partner(&name, ctx),
        PolicyCmd::Activate { file } => activate(&file, ctx),
    }
}

fn warnings_text(l: &Loaded) -> String {
    l.warnings
        .iter()
        .map(|w| format!("warning: {w}\n"))
        .collect()
}

fn check(file: &std::path::Path, deny_warnings: bool, ctx: &mut Ctx) -> Result<Report> {
    let loaded = policy::load_file(file)?;
    for w in &loaded.warnings {
        ctx.say(format!("warning: {w}"));
    }
    if deny_warnings && !loaded.warnings.is_empty() {
        return Err(policy::Error::Warnings {
            path: file.to_path_buf(),
            count: loaded.warnings.len(),
        }
        .into());
    }
    let human = format!(
        "ok: {} is a valid Retort policy ({:?}, sha256 {}){}\n",
        file.display(),
        loaded.name,
        loaded.sha256,
        if loaded.warnings.is_empty() {
            String::new()
        } else {
            format!(", {} warning(s) above", loaded.warnings.len())
        }
    );
    Ok(Report::new(
        human,
        serde_json::json!({
            "file": file.display().to_string(),
            "valid": true,
            "name": loaded.name,
            "sha256": loaded.sha256,
            "warnings": loaded.warnings.iter().map(|w| w.to_json()).collect::<Vec<_>>(),
        }),
    ))
}

fn show(ctx: &mut Ctx) -> Result<Report> {
    let ws = ctx.open_audited("policy.show", "policy")?;
    let loaded = policy::load_active(&ws, ctx.policy.as_deref())?;
    ctx.set_object(&loaded.name);
    ctx.detail("policy", loaded.identity_json());
    let mut human = format!(
        "policy {:?}  sha256 {}\n  file: {}{}\n",
        loaded.name,
        loaded.sha256,
        loaded.path.display(),
        if ctx.policy.is_some() {
            "  (--policy override)"
        } else {
            ""
        }
    );
    human.push_str(&describe(&loaded.policy));
    human.push_str(&warnings_text(&loaded));
    Ok(Report::new(
        human,
        serde_json::json!({
            "name": loaded.name,
            "sha256": loaded.sha256,
            "path": loaded.path.display().to_string(),
            "policy": summary_json(&loaded.policy),
            "warnings": loaded.warnings.iter().map(|w| w.to_json()).collect::<Vec<_>>(),
        }),
    ))
}

/// The policy in plain words (what `policy show` prints).
pub fn describe(p: &Policy) -> String {
    let mut s = String::new();
    if let Some(d) = p.description() {
        s.push_str(&format!("  {d}\n"));
    }
    s.push_str(&format!(
        "budget\n  each dataset may spend at most epsilon {} in total over all its runs\n",
        p.dataset_epsilon_cap("")
    ));
    for r in p.dataset_rules() {
        if let Some(c) = r.epsilon_cap {
            s.push_str(&format!("    except dataset {:?}: at most {c}\n", r.name));
        }
    }
    s.push_str(&format!(
        "  one run may spend at most epsilon {}\n  delta may be at most {}, and below {}/n for a dataset of n records\n",
        p.run_epsilon_cap(),
        policy::fmt_num(p.max_delta()),
        p.max_delta_times_records()
    ));
    s.push_str(&format!(
        "distillation\n  methods allowed: {}\n  at most {} synthetic images per class\n",
        p.methods().join(", "),
        p.max_images_per_class()
    ));
    if let Some(f) = p.min_forecast() {
        s.push_str(&format!(
            "  a run whose utility forecast is below {f} is refused (`retort plan` shows the forecast)\n"
        ));
    }
    if p.public_class_counts() {
        s.push_str("privacy\n  per-class training counts are public metadata: the utility forecast speaks of the smallest class\n");
    }
    s.push_str("ingest\n  DICOM is always de-identified at ingest\n");
    s.push_str("export\n");
    if p.export_restricted() {
        s.push_str(&format!(
            "  only these OS users may build packages: {}\n  and members of these groups: {}\n",
            or_none(p.export_users()),
            or_none(p.export_groups())
        ));
    } else {
        s.push_str("  anyone who can run retort on this workspace may build packages\n");
    }
    if p.partners().is_empty() {
        s.push_str("partners\n  none: no package can be built for anyone (add one with `retort policy add-partner`)\n");
    } else {
        s.push_str("partners\n");
        for pt in p.partners() {
            s.push_str(&format!("  {}", pt.name));
            if let Some(d) = &pt.description {
                s.push_str(&format!(" ({d})"));
            }
            s.push('\n');
            match &pt.client_cert_sha256 {
                Some(fp) => s.push_str(&format!(
                    "    may fetch from `retort serve` with the client certificate SHA256 {fp}\n"
                )),
                None => s.push_str("    has no client certificate: cannot use `retort serve`\n"),
            }
            if let Some(k) = &pt.signing_key {
                s.push_str(&format!(
                    "    its Ed25519 public key: SHA256 {}\n",
                    k.fingerprint()
                ));
            }
            match &pt.datasets {
                Some(ds) => s.push_str(&format!("    datasets: {}\n", ds.join(", "))),
                None => s.push_str("    datasets: any\n"),
            }
        }
    }
    s
}

fn or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The policy's values as JSON (for `policy show --json`).
pub fn summary_json(p: &Policy) -> serde_json::Value {
    serde_json::json!({
        "dataset_epsilon_cap": p.dataset_epsilon_cap(""),
        "dataset_rules": p.dataset_rules().iter().map(|r| serde_json::json!({"name": r.name, "epsilon_cap": r.epsilon_cap})).collect::<Vec<_>>(),
        "run_epsilon_cap": p.run_epsilon_cap(),
        "max_delta": p.max_delta(),
        "max_delta_times_records": p.max_delta_times_records(),
        "methods": p.methods(),
        "max_images_per_class": p.max_images_per_class(),
        "min_forecast": p.min_forecast(),
        "public_class_counts": p.public_class_counts(),
        "require_dicom_deidentification": p.require_dicom_deidentification(),
        "export_users": p.export_users(),
        "export_groups": p.export_groups(),
        "partners": p.partners().iter().map(|pt| serde_json::json!({
            "name": pt.name,
            "client_cert_sha256": pt.client_cert_sha256,
            "signing_key_sha256": pt.signing_key.map(|k| k.fingerprint()),
            "datasets": pt.datasets,
        })).collect::<Vec<_>>(),
    })
}

struct NewPartnerArgs {
    name: String,
    client_cert: Option<PathBuf>,
    signing_key: Option<PathBuf>,
    datasets: Vec<String>,
    description: Option<String>,
}

fn read_text(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| crate::error::IoError::new("reading", path, e).into())
}

fn add_partner(a: NewPartnerArgs, ctx: &mut Ctx) -> Result<Report> {
    if ctx.policy.is_some() {
        return Err(super::usage(
            "`policy add-partner` edits the workspace's active policy and cannot be combined with --policy",
            "drop --policy (and unset RETORT_POLICY); to edit another file, change it by hand and run `retort policy check FILE`",
        ));
    }
    crate::workspace::validate_name(&a.name)?;
    for d in &a.datasets {
        crate::workspace::validate_name(d)?;
    }
    let ws = ctx.open_audited("policy.add-partner", &a.name)?;
    // Read and check the inputs before taking the lock or touching anything.
    let client_cert_sha256 = match &a.client_cert {
        Some(p) => Some(policy::cert_fingerprint(&read_text(p)?, p)?),
        None => None,
    };
    let signing_key = match &a.signing_key {
        Some(p) => Some(
            crate::keys::PublicKey::parse(&read_text(p)?, &p.display().to_string()).map_err(
                |e| policy::Error::BadSigningKey {
                    path: p.clone(),
                    why: e.to_string(),
                },
            )?,
        ),
        None => None,
    };
    if let Some(fp) = &client_cert_sha256 {
        ctx.detail("client_cert_sha256", fp.clone());
    }
    if let Some(k) = &signing_key {
        ctx.detail("signing_key_sha256", k.fingerprint());
    }
    let partner = NewPartner {
        name: a.name.clone(),
        description: a.description.clone(),
        client_cert_sha256: client_cert_sha256.clone(),
        signing_key,
        datasets: (!a.datasets.is_empty()).then(|| a.datasets.clone()),
    };
    let _lock = ws.lock(DEFAULT_LOCK_WAIT)?;
    ctx.detail("policy_path", ws.policy_path().display().to_string());
    let change = policy::add_partner_to_workspace(&ws, &ctx.actor, &partner)?;
    ctx.detail("old_sha256", change.old_sha256.clone());
    ctx.detail("new_sha256", change.new_sha256.clone());
    let (old_sha, new_sha, path) = (&change.old_sha256, &change.new_sha256, &change.path);
    let human = format!(
        "added partner {:?} to policy {:?} ({})\n  client certificate: {}\n  policy sha256: {} -> {}\n",
        a.name,
        change.name,
        path.display(),
        client_cert_sha256
            .as_deref()
            .map(|f| format!("SHA256 {f}"))
            .unwrap_or_else(|| "none (the partner cannot use `retort serve`)".into()),
        old_sha,
        new_sha
    );
    Ok(Report::new(
        human,
        serde_json::json!({
            "partner": a.name,
            "policy": change.name,
            "path": path.display().to_string(),
            "client_cert_sha256": client_cert_sha256,
            "signing_key_sha256": partner.signing_key.map(|k| k.fingerprint()),
            "old_sha256": old_sha,
            "new_sha256": new_sha,
        }),
    ))
}

fn remove_partner(name: &str, ctx: &mut Ctx) -> Result<Report> {
    if ctx.policy.is_some() {
        return Err(super::usage(
            "`policy remove-partner` edits the workspace's active policy and cannot be combined with --policy",
            "drop --policy (and unset RETORT_POLICY); to edit another file, change it by hand and run `retort policy check FILE`",
        ));
    }
    crate::workspace::validate_name(name)?;
    let ws = ctx.open_audited("policy.remove-partner", name)?;
    let _lock = ws.lock(DEFAULT_LOCK_WAIT)?;
    ctx.detail("policy_path", ws.policy_path().display().to_string());
    let change = policy::remove_partner_from_workspace(&ws, &ctx.actor, name)?;
    ctx.detail("old_sha256", change.old_sha256.clone());
    ctx.detail("new_sha256", change.new_sha256.clone());
    let human = format!(
        "removed partner {:?} from policy {:?} ({})\n  no new package can be built for it, and `retort serve` no longer answers its client certificate\n  packages already built for it stay in {}\n  policy sha256: {} -> {}\n",
        name,
        change.name,
        change.path.display(),
        ws.packages_dir().display(),
        change.old_sha256,
        change.new_sha256
    );
    Ok(Report::new(
        human,
        serde_json::json!({
            "partner": name,
            "policy": change.name,
            "path": change.path.display().to_string(),
            "old_sha256": change.old_sha256,
            "new_sha256": change.new_sha256,
        }),
    ))
}

fn activate(file: &std::path::Path, ctx: &mut Ctx) -> Result<Report> {
    let ws = ctx.open_audited("policy.activate", &file.display().to_string())?;
    // Validate first: an invalid file never becomes the active policy.
    let new = policy::load_file(file)?;
    ctx.set_object(&new.name);
    let bytes = std::fs::read(file)
        .map_err(|e| policy::Error::Read(crate::error::IoError::new("reading", file, e)))?;
    if crate::digest::sha256_hex(&bytes) != new.sha256 {
        return Err(super::usage(
            format!("{} changed while it was being checked", file.display()),
            "run the command again once the file is no longer being edited",
        ));
    }
    let _lock = ws.lock(DEFAULT_LOCK_WAIT)?;
    let path = ws.policy_path();
    let old_sha = match std::fs::read(&path) {
        Ok(b) => Some(crate::digest::sha256_hex(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(policy::Error::Read(crate::error::IoError::new("reading", &path, e)).into())
        }
    };
    ctx.detail("old_sha256", old_sha.clone());
    ctx.detail("new_sha256", new.sha256.clone());
    let details = serde_json::json!({
        "change": "activate",
        "source": file.display().to_string(),
        "old_sha256": old_sha,
        "new_sha256": new.sha256,
        "policy_path": path.display().to_string(),
    });
    ctx.intent(&ws, "policy.change", &new.name, details.clone())?;
    atomic_write(&path, &bytes)?;
    ctx.record(
        &ws,
        NewRecord::new(&ctx.actor, "policy.change", &new.name, Outcome::Ok).details(details),
    )?;
    for w in &new.warnings {
        ctx.say(format!("warning: {w}"));
    }
    Ok(Report::new(
        format!(
            "active policy is now {:?} (sha256 {}, was {})\n  file: {}\n",
            new.name,
            new.sha256,
            old_sha.as_deref().unwrap_or("none"),
            path.display()
        ),
        serde_json::json!({
            "policy": new.name,
            "path": path.display().to_string(),
            "old_sha256": old_sha,
            "new_sha256": new.sha256,
        }),
    ))
}
