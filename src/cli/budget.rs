//! `retort budget [DATASET]`: spent / reserved / remaining ε per dataset, with the runs behind
//! it, after checking every ledger against the audit log (a mismatch is exit 4). Read-only: it
//! never changes the ledger.
//!
//! `retort budget rebuild DATASET`: the audited recovery path, rebuilding a ledger from the
//! audit log (after restoring a backup, or when `budget` reports a mismatch).

use serde_json::json;

use super::render::eps;
use super::{Ctx, Report};
use crate::ledger::{self, Ledger, RunState, Summary};
use crate::workspace::Workspace;
use crate::Result;

/// Arguments of `retort budget`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Recovery.
    #[command(subcommand)]
    pub cmd: Option<BudgetCmd>,
    /// The dataset: a stored dataset, or a deleted one with budget history (all ledgers when
    /// omitted; a dataset named "rebuild": `retort budget -- rebuild`).
    pub dataset: Option<String>,
    /// delta for the totals [default: the smallest delta of the dataset's runs, else the
    /// policy's max_delta, else 1e-5].
    #[arg(long)]
    pub delta: Option<f64>,
}

/// `budget` subcommands.
#[derive(Debug, clap::Subcommand)]
#[non_exhaustive]
pub enum BudgetCmd {
    /// Rebuild a dataset's ledger from the audit log (audited): after restoring a backup whose
    /// ledger is older than its log, or when `budget` reports that the ledger does not match
    /// the log. Refused unless the audit log verifies.
    Rebuild {
        /// The dataset (a deleted dataset's name, or a ledger fingerprint, also work).
        dataset: String,
    },
}

/// The dataset cap and max delta from the active policy (or `--policy`). A missing or invalid
/// policy means "cap unknown", which only affects the *display* of the remaining budget; the
/// ledger itself is enforced at `distill` time against the loaded policy, which fails closed.
fn policy_limits(ws: &Workspace, ctx: &Ctx, dataset: &str) -> (Option<f64>, Option<f64>) {
    match crate::policy::load_active(ws, ctx.policy.as_deref()) {
        Ok(loaded) => (
            Some(loaded.policy.dataset_epsilon_cap(dataset)),
            Some(loaded.policy.max_delta()),
        ),
        Err(e) => {
            tracing::warn!("budget: the policy could not be loaded, so no cap is shown: {e}");
            (None, None)
        }
    }
}

fn one(
    ws: &Workspace,
    ctx: &Ctx,
    l: &Ledger,
    delta: Option<f64>,
) -> Result<(Summary, Option<f64>)> {
    let (cap, max_delta) = policy_limits(ws, ctx, l.dataset());
    let summary = match delta {
        Some(d) => l.summary(d)?,
        None => l.summary_default(max_delta)?,
    };
    Ok((summary, cap))
}

fn human(s: &Summary, cap: Option<f64>) -> String {
    let mut out = format!("Dataset {} (totals at delta = {:e})\n", s.dataset, s.delta);
    let others: Vec<&str> = s
        .names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != s.dataset)
        .collect();
    if !others.is_empty() {
        out += &format!(
            "  the same images were also used as: {} (the budget follows the images)\n",
            others.join(", ")
        );
    }
    out += &format!(
        "  spent (finished runs)      {}\n  reserved (runs in flight)  {}\n  {:<26} {}   (plain sum of runs: {})\n",
        eps(s.epsilon_committed),
        eps(s.epsilon_reserved),
        format!("total (by {})", s.accountant.to_uppercase()),
        eps(s.epsilon),
        eps(s.plain_sum)
    );
    match cap {
        Some(c) => {
            out += &format!(
                "  cap (policy)               {}\n  remaining                  {}\n",
                eps(c),
                eps((c - s.epsilon).max(0.0))
            )
        }
        None => out += "  cap, remaining             unknown (no readable policy with [budget] dataset_epsilon_cap)\n",
    }
    if s.pending_repair {
        out += "  note: the ledger lags the audit log by its last change (a command stopped in between); it is counted above and the next reservation repairs the file\n";
    }
    if s.runs.is_empty() {
        out += "  no runs yet\n";
    }
    for r in &s.runs {
        let state = match r.state {
            RunState::Reserved => "reserved (running: charged)",
            RunState::Committed => "committed",
            _ => "cancelled or crashed (charged)",
        };
        out += &format!(
            "  - {}  epsilon {} at delta {:e}  {}  since {}\n",
            r.run,
            eps(r.epsilon),
            r.delta,
            state,
            r.reserved_at
        );
    }
    out
}

fn to_json(s: &Summary, cap: Option<f64>) -> serde_json::Value {
    json!({
        "dataset": s.dataset,
        "fingerprint": s.fingerprint,
        "names": s.names,
        "delta": s.delta,
        "spent": s.epsilon_committed + 0.0,
        "reserved": s.epsilon_reserved + 0.0,
        "total": s.epsilon,
        "epsilon_rdp": s.epsilon_rdp,
        "epsilon_pld": s.epsilon_pld,
        "accountant": s.accountant,
        "plain_sum": s.plain_sum,
        "cap": cap,
        "remaining": cap.map(|c| (c - s.epsilon).max(0.0)),
        "pending_repair": s.pending_repair,
        "runs": s.runs,
    })
}

/// Run `retort budget`.
///
/// # Errors
/// Workspace errors; `ledger-log-mismatch` and `ledger-log-unverified` (exit 4) when a ledger
/// does not match the audit log; `ledger-not-found`, `name-invalid`, `dp-invalid-parameter`.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    if let Some(BudgetCmd::Rebuild { dataset }) = args.cmd {
        return rebuild(&dataset, ctx);
    }
    if let Some(d) = args.delta {
        crate::dp::Delta::new(d).map_err(|_| {
            super::usage(
                format!("--delta {d} is not strictly between 0 and 1"),
                "give the delta to compute the totals at, e.g. --delta 1e-5",
            )
        })?;
    }
    if let Some(d) = &args.dataset {
        if !crate::ledger::file::is_fingerprint(d) {
            crate::workspace::validate_name(d)?;
        }
    }
    let object = args.dataset.clone().unwrap_or_else(|| "*".into());
    // Read-only: a compliance officer, who cannot write the log, gets it unlogged (and told).
    let ws = ctx.open_read_only(crate::audit::ReadOnlyAction::Budget, &object)?;
    let ledgers = match &args.dataset {
        Some(d) => vec![Ledger::find(&ws, d)?],
        None => {
            let findings = ledger::check_all(&ws)?;
            ctx.detail("ledgers", findings.len());
            let mut v = Vec::new();
            for f in &findings {
                v.push(Ledger::find(&ws, &f.fingerprint)?);
            }
            v
        }
    };
    let mut text = String::new();
    let mut items = Vec::new();
    for l in &ledgers {
        let (s, cap) = one(&ws, ctx, l, args.delta)?;
        if args.dataset.is_some() {
            ctx.detail("epsilon_total", s.epsilon);
            ctx.detail("delta", s.delta);
            ctx.detail("fingerprint", s.fingerprint.clone());
        }
        text += &human(&s, cap);
        items.push(to_json(&s, cap));
    }
    if ledgers.is_empty() {
        text += "No dataset has spent any privacy budget yet.\n";
    } else {
        text += "\nEpsilon bounds how much any one image can change what the outputs reveal: every outcome is at most \
                 e^epsilon times more or less likely with or without that image (except with probability delta). \
                 Spends add up across runs (the total above is the accountant over all runs, tighter than the plain sum). \
                 Every ledger was checked against the signed audit log.\n";
    }
    let json = match &args.dataset {
        Some(_) => items.pop().unwrap_or_default(),
        None => json!({ "datasets": items }),
    };
    Ok(Report::new(text, json))
}

fn rebuild(dataset: &str, ctx: &mut Ctx) -> Result<Report> {
    let ws = ctx.open_audited("budget.rebuild", dataset)?;
    let r = ledger::rebuild(&ws, dataset, &ctx.actor)?;
    ctx.detail("fingerprint", r.fingerprint.clone());
    ctx.detail("action", r.action);
    ctx.detail("found", r.found);
    ctx.detail("record_count", r.records);
    let human = match r.action {
        "unchanged" => format!(
            "the ledger of {dataset} already matches the audit log ({} record(s)); nothing changed\n",
            r.records
        ),
        "repaired" => format!(
            "the ledger of {dataset} lagged the audit log by its last change (a command stopped in between); repaired from the log ({} record(s))\n",
            r.records
        ),
        _ => format!(
            "the ledger of {dataset} was {} ({} record(s) in the file); rebuilt from the audit log with {} record(s){}\n\
             the rebuild is in the audit log (ledger.rebuild); `retort budget {dataset}` shows the budget\n",
            r.found,
            r.ledger_records_before
                .map_or("no readable file".into(), |n| n.to_string()),
            r.records,
            r.kept_as
                .as_ref()
                .map_or(String::new(), |p| format!("; the replaced file is kept as {}", p.display())),
        ),
    };
    let json = serde_json::to_value(&r).expect("invariant: rebuild report serializes");
    Ok(Report::new(human, json))
}
