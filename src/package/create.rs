//! Creating a package of a completed run for a partner: the library owns every rule, so a
//! caller that is not the CLI cannot skip one.
//!
//! 1. the run opens as [`Completed`] (status `completed`, its charge in the ledger);
//! 2. the policy allows this partner to receive this run and this user to export;
//! 3. the utility release, if the run made one, is charged in the ledger too;
//! 4. the stated guarantee is the accountant's composition of every share the package
//!    carries; the dataset's budget after the run comes from the ledger;
//! 5. intent is logged, a signed audit checkpoint written (the package carries it);
//! 6. the package is built (release boundary checked before signing), published atomically
//!    under `packages/<id>/`, and optionally copied out.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::sign::{build_package, export_copy, file_sha256, publish, BuildInputs, Built};
use super::{Error, PublishedPackage, Result};
use crate::audit::Session;
use crate::dp::accountant;
use crate::keys::{KeyPaths, SigningKey};
use crate::ledger::Ledger;
use crate::policy::{self, OsIdentity, PackageRequest};
use crate::run::evaluation::{read_utility, utility_ledger_id, UtilityRelease};
use crate::run::{Completed, RunRecord};
use crate::workspace::Workspace;

/// What to package.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The run id.
    pub run: &'a str,
    /// The partner receiving it.
    pub partner: &'a str,
    /// Also copy the package out to this directory.
    pub out: Option<&'a Path>,
    /// With `out`: one plain POSIX tar instead of a directory.
    pub tar: bool,
    /// A policy file to use instead of the workspace's active one.
    pub policy_override: Option<&'a Path>,
}

/// A created package.
#[derive(Debug)]
pub struct Created {
    /// The package as published in the workspace.
    pub package: PublishedPackage,
    /// The built files and the stated (ε, δ).
    pub built: Built,
    /// Where it was copied out, if asked.
    pub exported: Option<PathBuf>,
    /// The run.
    pub run: RunRecord,
    /// Whether the package carries utility figures.
    pub utility: bool,
    /// The signing key's fingerprint.
    pub key_sha256: String,
}

/// Create a package (see the module documentation for the steps).
///
/// # Errors
/// `run-*` (missing, incomplete, not charged: exit 3), `policy-*` refusals (exit 3), ledger
/// errors (a ledger that disagrees with the log: exit 4), `package-unreleased-field`, key, audit
/// and I/O errors; nothing is published on error.
pub fn create(ws: &Workspace, req: &Request<'_>, session: &mut Session) -> Result<Created> {
    session.detail("run", req.run);
    session.detail("partner", req.partner);
    let run = Completed::open(ws, req.run)?;
    let rec = run.record().clone();
    let loaded = policy::load_active(ws, req.policy_override)?;
    session.detail("policy", loaded.identity_json());
    let who = OsIdentity::current();
    let utility = read_utility(&run)?;
    let ledger = Ledger::of_run(ws, &rec.id)?;
    let runs = ledger.runs()?;
    let utility = match utility {
        Some(u)
            if runs
                .iter()
                .any(|r| r.run == u.ledger_id && r.events == u.share.events) =>
        {
            Some(u)
        }
        Some(_) => {
            return Err(crate::run::Error::NotCharged {
                run: utility_ledger_id(&rec.id),
                why: "its utility release is not charged in the ledger as stated".into(),
            }
            .into())
        }
        None => None,
    };
    let mut carried = rec.events.clone();
    if let Some(u) = &utility {
        carried.extend(u.share.events.iter().cloned());
    }
    let delta = rec.delta.get();
    let guarantee = accountant::epsilon(&carried, delta)?;
    loaded
        .policy
        .decide(&policy::Request::Package(PackageRequest {
            partner: req.partner,
            dataset: &rec.dataset,
            method: rec.method.as_str(),
            epsilon: guarantee.epsilon,
            delta,
            ipc: u32::try_from(rec.ipc).unwrap_or(u32::MAX),
            exporter: who,
        }))
        .into_result()?;
    let budget = dataset_budget(
        &ledger,
        &rec,
        utility.as_ref(),
        loaded.policy.dataset_epsilon_cap(&rec.dataset),
    )?;
    let read = |name: &str| -> Result<Vec<u8>> {
        let p = run.dir().join(name);
        std::fs::read(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::RunFileMissing {
                run: rec.id.clone(),
                path: p.clone(),
            },
            _ => crate::error::IoError::new("reading", &p, e).into(),
        })
    };
    let synthetic = read("synthetic.parquet")?;
    let contact_sheet = read("contact_sheet.png")?;
    let id = crate::workspace::new_id("pkg");
    session.set_object(&id);
    session.detail("package", id.clone());
    session.intent(
        "package.create",
        &id,
        json!({"run": rec.id, "partner": req.partner, "epsilon": guarantee.epsilon, "delta": delta,
               "utility": utility.is_some()}),
    )?;
    let key = SigningKey::load(&KeyPaths::in_dir(&ws.keys_dir()).package_key)?;
    let checkpoint = crate::audit::checkpoint::write_checkpoint(ws)?
        .text
        .into_bytes();
    let retort_digest = std::env::current_exe()
        .ok()
        .and_then(|p| file_sha256(&p).ok());
    let created = crate::workspace::now_rfc3339();
    let built = build_package(&BuildInputs {
        run: &rec,
        synthetic: &synthetic,
        contact_sheet: &contact_sheet,
        utility: utility.as_ref(),
        guarantee: &guarantee,
        budget: &budget,
        checkpoint: Some(&checkpoint),
        partner: req.partner,
        workspace_id: &ws.config().workspace_id,
        retort_digest: retort_digest.as_deref(),
        packaged_on: &created,
        key: &key,
    })?;
    let pkg = publish(&ws.packages_dir(), &id, &built, &rec, req.partner, &created)?;
    let fp = key.public().fingerprint();
    session.detail("envelope_sha256", built.envelope_sha256.clone());
    session.detail("key_sha256", fp.clone());
    session.detail("epsilon", built.epsilon);
    session.detail("checkpoint", true);
    let exported = match req.out {
        Some(out) => {
            let mtime = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
            let p = export_copy(&pkg, out, req.tar, mtime)?;
            session.detail("exported_to", p.display().to_string());
            Some(p)
        }
        None => None,
    };
    Ok(Created {
        package: pkg,
        built,
        exported,
        utility: utility.is_some(),
        run: rec,
        key_sha256: fp,
    })
}

/// The dataset's budget after this run, from the ledger: the accountant's total over every
/// charge up to and including this run's (and its utility release), the plain sum beside it,
/// the total now, the policy cap and what remains.
fn dataset_budget(
    ledger: &Ledger,
    run: &RunRecord,
    utility: Option<&UtilityRelease>,
    cap: f64,
) -> Result<Value> {
    let delta = run.delta.get();
    let runs = ledger.runs()?;
    let pos =
        runs.iter()
            .position(|r| r.run == run.id)
            .ok_or_else(|| crate::run::Error::NotCharged {
                run: run.id.clone(),
                why: "the ledger has no reservation for it".into(),
            })?;
    let mut upto: Vec<_> = runs[..=pos].to_vec();
    if let Some(u) = utility {
        if let Some(e) = runs[pos + 1..].iter().find(|r| r.run == u.ledger_id) {
            upto.push(e.clone());
        }
    }
    let events: Vec<_> = upto.iter().flat_map(|r| r.events.clone()).collect();
    let after = accountant::epsilon(&events, delta)?;
    let per_run: Vec<_> = upto.iter().map(|r| r.events.clone()).collect();
    let plain = accountant::plain_sum(&per_run, delta)?;
    let now = ledger.summary(delta)?;
    Ok(json!({
        "delta": delta,
        "accountant": after.accountant,
        "epsilon_after_this_run": after.epsilon,
        "epsilon_rdp_after_this_run": after.epsilon_rdp,
        "epsilon_pld_after_this_run": after.epsilon_pld,
        "plain_sum_after_this_run": plain,
        "charges_counted": upto.len(),
        "epsilon_now": now.epsilon,
        "charges_now": now.runs.len(),
        "cap": cap,
        "remaining": (cap - now.epsilon).max(0.0),
        "note": "all charges on the same images compose: this is the accountant applied to every charge's privacy events, not the sum of their epsilons (the plain sum is shown beside it)",
    }))
}
