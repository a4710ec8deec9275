//! `retort init`: create a workspace.

use super::{Ctx, Report};
use crate::keys::{KeyPaths, SigningKey};
use crate::workspace::{atomic_write, Workspace};
use crate::Result;

/// Arguments of `retort init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Site name, used as the origin of audit checkpoints (e.g. "st-example-radiology").
    #[arg(long, default_value = "retort")]
    pub site: String,
    /// Policy template to start from: default, strict or research (see policies/README.md).
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub policy_template: String,
    /// Group of the compliance officers: may read the audit log, checkpoints, ledger, policy
    /// and packages, not the datasets, runs or keys (default: none, the workspace is yours
    /// alone).
    #[arg(long, value_name = "GROUP")]
    pub compliance_group: Option<String>,
    /// Group of the user that runs `retort serve` (e.g. the systemd unit's `Group=`): may
    /// append to the audit log and read the audit key, nothing private.
    #[arg(long, value_name = "GROUP")]
    pub service_group: Option<String>,
}

/// Create the workspace, keys, HMAC secret and active policy.
///
/// # Errors
/// `workspace-exists`, `workspace-not-empty`, key and I/O errors. On failure, a workspace
/// directory this call created is removed again, so nothing half-made is left.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    let root = ctx.workspace_path();
    let existed = root.exists();
    let made = create(&root, &args);
    let ws = match made {
        Ok(ws) => ws,
        Err(e) => {
            if !existed
                && !matches!(
                    e,
                    crate::Error::Workspace(crate::workspace::Error::AlreadyExists { .. })
                )
            {
                let _ = std::fs::remove_dir_all(&root);
            }
            return Err(e);
        }
    };
    ctx.audit_in(&ws, "workspace.init", &ws.config().workspace_id);
    let kp = KeyPaths::in_dir(&ws.keys_dir());
    let pkg = SigningKey::load(&kp.package_key)?.public();
    let aud = SigningKey::load(&kp.audit_key)?.public();
    ctx.detail("package_key_sha256", pkg.fingerprint());
    ctx.detail("audit_key_sha256", aud.fingerprint());
    ctx.detail("site", ws.config().site.clone());
    let access = ws.config().access.clone();
    ctx.detail("compliance_group", access.compliance_group.clone());
    ctx.detail("service_group", access.service_group.clone());
    let who = match (&access.compliance_group, &access.service_group) {
        (None, None) => "you alone (add groups with `retort access set`)".to_string(),
        (c, s) => format!(
            "you; compliance group {}; service group {}",
            c.as_deref().unwrap_or("none"),
            s.as_deref().unwrap_or("none")
        ),
    };
    let human = format!(
        "created workspace {}\n  site:                 {}\n  package-signing key:  SHA256 {}\n  audit key:            SHA256 {}\n  policy:               {} (from template {:?})\n  access:               {}\nnext: retort ingest <SRC> --name <NAME> --workspace {}\n",
        root.display(),
        ws.config().site,
        pkg.fingerprint(),
        aud.fingerprint(),
        ws.policy_path().display(),
        args.policy_template,
        who,
        root.display()
    );
    Ok(Report::new(
        human,
        serde_json::json!({
            "workspace": root,
            "workspace_id": ws.config().workspace_id,
            "package_key_sha256": pkg.fingerprint(),
            "audit_key_sha256": aud.fingerprint(),
            "policy": ws.policy_path(),
            "compliance_group": access.compliance_group,
            "service_group": access.service_group,
        }),
    ))
}

fn create(root: &std::path::Path, args: &Args) -> Result<Workspace> {
    crate::workspace::validate_name(&args.site)?;
    let template = crate::policy::template(&args.policy_template).ok_or_else(|| {
        super::usage(
            format!("unknown policy template {:?}", args.policy_template),
            "use one of: default, strict, research",
        )
    })?;
    let access = crate::access::Access {
        compliance_group: args.compliance_group.clone(),
        service_group: args.service_group.clone(),
    };
    let ws = Workspace::create_with(root, &args.site, &access)?;
    let _lock = ws.lock(crate::workspace::DEFAULT_LOCK_WAIT)?;
    KeyPaths::in_dir(&ws.keys_dir()).create_all()?;
    atomic_write(&ws.policy_path(), template.as_bytes())?;
    Ok(ws)
}
