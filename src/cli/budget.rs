//! `retort budget [DATASET]`: spent / reserved / remaining ε per dataset, with the runs behind it.
//! Read-only: it never changes the ledger.

use serde_json::json;

use super::{Ctx, Report};
use crate::ledger::{Ledger, RunState, Summary};
use crate::workspace::Workspace;
use crate::Result;

/// Arguments of `retort budget`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset (all datasets with a ledger when omitted).
    pub dataset: Option<String>,
    /// delta for the totals [default: the smallest delta of the dataset's runs, else the
    /// policy's max_delta, else 1e-5].
    #[arg(long)]
    pub delta: Option<f64>,
}

/// The dataset cap and max delta from the active policy, read directly from its TOML.
///
/// ADAPTER (dp helper): the policy module (issue owner: policy) exposes
/// `Policy::dataset_epsilon_cap(name)`; until the branches are merged this reads the same keys
/// (`[budget] dataset_epsilon_cap`, `max_delta`, `[datasets.NAME] epsilon_cap`). A missing or
/// unreadable policy means "cap unknown", which only affects the *display* of the remaining
/// budget; the ledger itself is enforced at `distill` time against the loaded policy.
fn policy_limits(ws: &Workspace, ctx: &Ctx, dataset: &str) -> (Option<f64>, Option<f64>) {
    let path = ctx.policy.clone().unwrap_or_else(|| ws.policy_path());
    let Ok(text) = std::fs::read_to_string(&path) else {
        return (None, None);
    };
    let Ok(v) = text.parse::<toml::Table>() else {
        return (None, None);
    };
    let budget = v.get("budget");
    let get = |t: Option<&toml::Value>, k: &str| {
        t.and_then(|t| t.get(k))
            .and_then(|x| x.as_float().or(x.as_integer().map(|i| i as f64)))
    };
    let per_dataset = v.get("datasets").and_then(|d| d.get(dataset));
    let cap = get(per_dataset, "epsilon_cap").or(get(budget, "dataset_epsilon_cap"));
    (cap, get(budget, "max_delta"))
}

fn datasets(ws: &Workspace) -> Result<Vec<String>> {
    let dir = ws.ledger_dir();
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(crate::error::IoError::new("reading", dir, e).into()),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(d) = name.strip_suffix(".json") {
            if !d.starts_with('.') {
                out.push(d.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn one(
    ws: &Workspace,
    ctx: &Ctx,
    dataset: &str,
    delta: Option<f64>,
) -> Result<(Summary, Option<f64>)> {
    let l = Ledger::open(ws, dataset)?;
    let runs = l.runs()?;
    let (cap, max_delta) = policy_limits(ws, ctx, dataset);
    let delta = delta
        .or_else(|| runs.iter().map(|r| r.delta).reduce(f64::min))
        .or(max_delta)
        .unwrap_or(1e-5);
    Ok((l.summary(delta)?, cap))
}

fn human(s: &Summary, cap: Option<f64>) -> String {
    let mut out = format!("Dataset {} (totals at delta = {:e})\n", s.dataset, s.delta);
    out += &format!(
        "  spent (finished runs)      {:.4}\n  reserved (runs in flight)  {:.4}\n  total (by {})           {:.4}   (plain sum of runs: {:.4})\n",
        s.epsilon_committed,
        s.epsilon_reserved,
        s.accountant.to_uppercase(),
        s.epsilon,
        s.plain_sum
    );
    match cap {
        Some(c) => {
            out += &format!(
                "  cap (policy)               {:.4}\n  remaining                  {:.4}\n",
                c,
                (c - s.epsilon).max(0.0)
            )
        }
        None => out += "  cap, remaining             unknown (no readable policy with [budget] dataset_epsilon_cap)\n",
    }
    if s.runs.is_empty() {
        out += "  no runs yet\n";
    }
    for r in &s.runs {
        let state = match r.state {
            RunState::Reserved => "reserved (running or crashed: charged)",
            RunState::Committed => "committed",
            RunState::Cancelled => "cancelled (charged)",
        };
        out += &format!(
            "  - {}  epsilon {:.4} at delta {:e}  {}  since {}\n",
            r.run, r.epsilon, r.delta, state, r.reserved_at
        );
    }
    out
}

fn to_json(s: &Summary, cap: Option<f64>) -> serde_json::Value {
    json!({
        "dataset": s.dataset,
        "delta": s.delta,
        "spent": s.epsilon_committed,
        "reserved": s.epsilon_reserved,
        "total": s.epsilon,
        "epsilon_rdp": s.epsilon_rdp,
        "epsilon_pld": s.epsilon_pld,
        "accountant": s.accountant,
        "plain_sum": s.plain_sum,
        "cap": cap,
        "remaining": cap.map(|c| (c - s.epsilon).max(0.0)),
        "runs": s.runs,
    })
}

/// Run `retort budget`.
///
/// # Errors
/// Workspace errors, `ledger-corrupt`, `name-invalid`, `dp-invalid-parameter`.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    let object = args.dataset.clone().unwrap_or_else(|| "*".into());
    let ws = ctx.open_audited("budget", &object)?;
    if let Some(d) = args.delta {
        crate::dp::Delta::new(d)?;
    }
    let names = match &args.dataset {
        Some(d) => vec![d.clone()],
        None => datasets(&ws)?,
    };
    let mut text = String::new();
    let mut items = Vec::new();
    for n in &names {
        let (s, cap) = one(&ws, ctx, n, args.delta)?;
        if args.dataset.is_some() {
            ctx.detail("epsilon_total", s.epsilon);
            ctx.detail("delta", s.delta);
        }
        text += &human(&s, cap);
        items.push(to_json(&s, cap));
    }
    if names.is_empty() {
        text += "No dataset has spent any privacy budget yet.\n";
    }
    text += "\nEpsilon bounds how much any one image can change what the outputs reveal: every outcome is at most \
             e^epsilon times more or less likely with or without that image (except with probability delta). \
             Spends add up across runs (the total above is the accountant over all runs, tighter than the plain sum).\n";
    let json = match &args.dataset {
        Some(_) => items.pop().unwrap_or_default(),
        None => json!({ "datasets": items }),
    };
    Ok(Report::new(text, json))
}
