//! `retort access [show]` and `retort access set`: who may read and write the workspace — the
//! owner, the compliance group, the service group (see `crate::access` for the model).

use serde_json::json;

use super::{Ctx, Report};
use crate::access::{self, Access, Area, Groups, Scope};
use crate::identity;
use crate::Result;

/// Arguments of `retort access`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// What to do (default: show).
    #[command(subcommand)]
    pub cmd: Option<AccessCmd>,
}

/// `access` subcommands.
#[derive(Debug, clap::Subcommand)]
#[non_exhaustive]
pub enum AccessCmd {
    /// The owner, the groups, and every file or folder whose permissions differ from the
    /// model (more open or more closed).
    Show,
    /// Set the workspace's groups and give every file and folder exactly the permissions of
    /// the model (audited; only the workspace owner may). Use it to add the groups to an
    /// existing workspace, or after restoring a backup that lost its modes.
    Set {
        /// The compliance group: reads the audit log, checkpoints, ledger, policy, packages.
        #[arg(long, value_name = "GROUP")]
        compliance_group: Option<String>,
        /// The service group: the user running `retort serve` (writes the audit log).
        #[arg(long, value_name = "GROUP")]
        service_group: Option<String>,
        /// Remove the compliance group.
        #[arg(long, conflicts_with = "compliance_group")]
        no_compliance_group: bool,
        /// Remove the service group.
        #[arg(long, conflicts_with = "service_group")]
        no_service_group: bool,
    },
}

/// Run `retort access`.
///
/// # Errors
/// Workspace and audit errors; `access-not-owner`, `access-group-unknown`,
/// `access-groups-same`, `access-chown-failed`.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    match args.cmd.unwrap_or(AccessCmd::Show) {
        AccessCmd::Show => show(ctx),
        AccessCmd::Set {
            compliance_group,
            service_group,
            no_compliance_group,
            no_service_group,
        } => {
            // No flag: the groups stay, the model is applied again.
            set(ctx, |a: &mut Access| {
                if let Some(g) = compliance_group {
                    a.compliance_group = Some(g);
                }
                if let Some(g) = service_group {
                    a.service_group = Some(g);
                }
                if no_compliance_group {
                    a.compliance_group = None;
                }
                if no_service_group {
                    a.service_group = None;
                }
            })
        }
    }
}

fn group_line(role: &str, name: &Option<String>, gid: Option<u32>) -> String {
    match (name, gid) {
        (Some(n), Some(g)) => format!("  {role:<17} {n} (gid {g})\n"),
        _ => format!("  {role:<17} none\n"),
    }
}

fn show(ctx: &mut Ctx) -> Result<Report> {
    let ws = ctx.open_audited("access.show", "workspace")?;
    let groups = ws.groups()?;
    let cfg = ws.config().access.clone();
    let owner = access::owner_name(ws.root()).unwrap_or_else(|| "unknown".into());
    let checked = access::check(ws.root(), &groups, Scope::All)?;
    ctx.detail("findings", checked.findings.len());
    let mut h = format!(
        "workspace {}\n  owner             {owner}\n",
        ws.root().display()
    );
    h += &group_line("compliance group", &cfg.compliance_group, groups.compliance);
    h += &group_line("service group", &cfg.service_group, groups.service);
    h += "model (folders / files):\n";
    for (name, area) in [
        ("workspace folder", Area::Root),
        ("datasets/, runs/ (private)", Area::Private),
        ("keys/", Area::Keys),
        ("keys/audit.key.pem", Area::AuditKey),
        ("config, policies/, ledger/, packages/", Area::Shared),
        ("audit/, audit/checkpoints/", Area::Audit),
    ] {
        let d = access::want(area, true, &groups);
        let f = access::want(area, false, &groups);
        let grp = |w: access::Want| {
            w.gid
                .map_or(String::new(), |g| format!(" {}", identity::group_name(g)))
        };
        h += &format!(
            "  {name:<38} {:04o}{:<14} {:04o}{}\n",
            d.mode,
            grp(d),
            f.mode,
            grp(f)
        );
    }
    if checked.findings.is_empty() {
        h += "every file and folder matches the model\n";
    } else {
        h += &format!(
            "{} path(s) differ from the model (`retort access set` gives them the model's permissions):\n",
            checked.findings.len()
        );
        for f in &checked.findings {
            let what = match (f.is_wider(), f.narrower != 0) {
                (true, _) => "more open than the model",
                (false, true) => "more closed than the model",
                _ => "group or set-group-id bit differs",
            };
            h += &format!(
                "  {:<48} {what} (model {:04o}{})\n",
                f.describe(),
                f.want.mode,
                f.want
                    .gid
                    .map_or(String::new(), |g| format!(" {}", identity::group_name(g)))
            );
        }
    }
    for u in &checked.unreadable {
        h += &format!("  not checked (you may not read it): {}\n", u.display());
    }
    let findings: Vec<_> = checked
        .findings
        .iter()
        .map(|f| {
            json!({
                "path": f.path, "area": f.area, "dir": f.dir,
                "mode": format!("{:04o}", f.mode), "group": identity::group_name(f.gid),
                "model_mode": format!("{:04o}", f.want.mode),
                "model_group": f.want.gid.map(identity::group_name),
                "wider": f.is_wider(), "narrower": f.narrower != 0,
            })
        })
        .collect();
    Ok(Report::new(
        h,
        json!({
            "workspace": ws.root(),
            "owner": owner,
            "compliance_group": cfg.compliance_group,
            "service_group": cfg.service_group,
            "findings": findings,
            "unreadable": checked.unreadable,
        }),
    ))
}

fn set(ctx: &mut Ctx, change: impl FnOnce(&mut Access)) -> Result<Report> {
    let mut ws = ctx.open_audited("access.set", "workspace")?;
    if !access::is_owner(ws.root()) {
        return Err(access::Error::NotOwner {
            path: ws.root().to_path_buf(),
            owner: access::owner_name(ws.root()).unwrap_or_else(|| "its owner".into()),
        }
        .into());
    }
    let _lock = ws.lock(crate::workspace::DEFAULT_LOCK_WAIT)?;
    let mut new = ws.config().access.clone();
    change(&mut new);
    let groups = Groups::resolve(&new)?;
    ctx.detail("compliance_group", new.compliance_group.clone());
    ctx.detail("service_group", new.service_group.clone());
    // The folders first (their groups and set-group-id bits), then the config in them.
    let changes = access::apply(ws.root(), &groups)?;
    ws.config_mut().access = new.clone();
    ws.save_config()?;
    ctx.detail("changed", changes.len());
    let mut h = String::new();
    h += &group_line("compliance group", &new.compliance_group, groups.compliance);
    h += &group_line("service group", &new.service_group, groups.service);
    h += &format!(
        "{} file(s) and folder(s) given the model's permissions{}\n",
        changes.len(),
        if changes.is_empty() {
            " (all matched already)"
        } else {
            ""
        }
    );
    for c in changes.iter().take(20) {
        h += &format!("  {}\n", c.describe());
    }
    if changes.len() > 20 {
        h += &format!("  … and {} more\n", changes.len() - 20);
    }
    Ok(Report::new(
        h,
        json!({
            "compliance_group": new.compliance_group,
            "service_group": new.service_group,
            "changed": changes.len(),
        }),
    ))
}
