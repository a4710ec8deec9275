//! `retort privacy audit`: an empirical lower bound on ε for one run of the real distillation
//! code on a dataset ingested with `--audit-only` (parse → [`crate::run::audit::AuditOnly`] →
//! render). Spends no budget; writes `audits/<id>.json` and the audit-log record.

use serde_json::json;

use super::progress::Bar;
use super::{Ctx, Report};
use crate::distill::Method;
use crate::run::audit::{AuditOnly, AuditRequest, DEFAULT_CANARIES};
use crate::workspace::DEFAULT_LOCK_WAIT;
use crate::Result;

/// Arguments of `retort privacy audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The dataset to audit (ingested with --audit-only: public or test data only).
    #[arg(long, value_name = "NAME")]
    pub dataset: String,
    /// The claimed epsilon: the run is planned and calibrated for it.
    #[arg(long)]
    pub epsilon: f64,
    /// delta of the claim and of the bound.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Method to audit: dm or gm (default: the dataset's default method).
    #[arg(long, value_parser = super::plan::parse_method)]
    pub method: Option<Method>,
    /// Canaries planted, each included with probability 1/2 (20 to 100000).
    #[arg(long, default_value_t = DEFAULT_CANARIES)]
    pub canaries: usize,
    /// Synthetic images per class of the audited run.
    #[arg(long, default_value_t = 10)]
    pub ipc: usize,
    /// Synthesis (dm) or outer (gm) iterations of the audited run (default: gm's own; for dm
    /// 150, since only the black-box score depends on the synthesis).
    #[arg(long)]
    pub iterations: Option<usize>,
}

/// Run `retort privacy audit`.
///
/// # Errors
/// `run-not-audit-only` (exit 3) for a dataset not ingested with --audit-only;
/// `run-audit-parameter` and `usage` (exit 2); dataset, distill and audit errors.
pub fn run(a: AuditArgs, ctx: &mut Ctx) -> Result<Report> {
    let ws = ctx.open_audited("privacy.audit", &a.dataset)?;
    let (epsilon, delta) = super::plan::privacy_target(
        a.epsilon,
        a.delta,
        "give the claimed epsilon to audit, e.g. --epsilon 1",
        "give delta below 1/n, e.g. --delta 1e-5",
    )?;
    let _lock = ws.lock(DEFAULT_LOCK_WAIT)?;
    let handle = AuditOnly::open(&ws, &a.dataset)?;
    let req = AuditRequest {
        epsilon,
        delta,
        method: a.method,
        canaries: a.canaries,
        ipc: a.ipc,
        iterations: a.iterations,
    };
    ctx.say(format!(
        "auditing dataset {:?} at claimed epsilon {} with {} canaries (no budget is spent)",
        a.dataset, a.epsilon, a.canaries
    ));
    let bar = Bar::new(ctx.show_progress());
    let sink = |e: crate::progress::Event<'_>| bar.event(e);
    let (r, path) = handle.audit(&req, ctx.session_required()?, &sink)?;
    let mut human = format!(
        "privacy audit {} of dataset {:?}, method {}: claimed epsilon {} (accounted {:.4}), delta {:e}\n  {} canaries ({} included), {} releases observed, {:.1} s\n",
        r.id, r.dataset, r.method, r.epsilon, r.epsilon_accounted, r.delta, r.canaries, r.included, r.releases, r.seconds
    );
    for s in &r.scores {
        human.push_str(&format!(
            "  {:<9}  epsilon lower bound {:.3} at {:.0}% ({} of {} guesses right)  AUROC {:.3}  TPR at 1% FPR {:.3}\n",
            s.score,
            s.audit.epsilon_lower_bound,
            r.confidence * 100.0,
            s.audit.correct,
            s.audit.guesses,
            s.audit.auroc,
            s.audit.tpr_at_1pct_fpr
        ));
    }
    human.push_str(&format!(
        "A lower bound above the claimed epsilon means a bug; one below it is not a proof of privacy (docs/privacy.md).\nresult: {}\n",
        path.display()
    ));
    let scores: Vec<serde_json::Value> = r
        .scores
        .iter()
        .map(|s| {
            json!({
                "score": s.score,
                "epsilon_lower_bound": s.audit.epsilon_lower_bound,
                "guesses": s.audit.guesses,
                "correct": s.audit.correct,
                "auroc": s.audit.auroc,
                "tpr_at_1pct_fpr": s.audit.tpr_at_1pct_fpr,
            })
        })
        .collect();
    Ok(Report::new(
        human,
        json!({
            "epsilon": r.epsilon,
            "delta": r.delta,
            "canaries": r.canaries,
            "scores": scores,
        }),
    ))
}
