//! `retort plan`: a dry run of a distillation. Reads only the dataset's public metadata (record
//! count, class names, shape), spends nothing, and shows the sampling rate, steps, calibrated
//! noise multiplier, ε by each accountant, the policy decision and an estimated run time.

use super::{Ctx, Report};
use crate::distill::{self, Method, Plan};
use crate::workspace::Workspace;
use crate::Result;

/// Arguments shared by `retort plan` and `retort distill`.
#[derive(Debug, Clone, clap::Args)]
pub struct DistillArgs {
    /// Dataset to distill (see `retort datasets list`).
    #[arg(long, value_name = "NAME")]
    pub dataset: String,
    /// Target epsilon of this run.
    #[arg(long)]
    pub epsilon: f64,
    /// Delta of this run (must be below 1/n for the dataset's n training records).
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Synthetic images per class.
    #[arg(long, default_value_t = 10)]
    pub ipc: usize,
    /// Method: `dm` (distribution matching, default) or `gm` (gradient matching under DP-SGD).
    #[arg(long, value_parser = parse_method)]
    pub method: Option<Method>,
    /// dm: synthesis iterations; gm: outer iterations (default: sized to the dataset).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Seed of the NON-private initialisation only (random feature nets, synthetic start,
    /// augmentation). Privacy noise and sampling are always keyed from the OS.
    #[arg(long)]
    pub seed: Option<u64>,
}

fn parse_method(s: &str) -> std::result::Result<Method, String> {
    s.parse::<Method>().map_err(|e| e.to_string())
}

impl DistillArgs {
    /// The library request.
    pub fn request(&self) -> distill::Request {
        distill::Request {
            epsilon: self.epsilon,
            delta: self.delta,
            ipc: self.ipc,
            method: self.method,
            iterations: self.iterations,
            seed: self.seed,
        }
    }
}

/// Arguments of `retort plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to plan.
    #[command(flatten)]
    pub run: DistillArgs,
    /// Skip the short timing benchmark (no run-time estimate).
    #[arg(long)]
    pub no_benchmark: bool,
}

/// The policy and budget view of a planned run.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The plan.
    pub plan: Plan,
    /// ε by RDP and PLD of the run's events.
    pub report: crate::dp::accountant::EpsilonReport,
    /// The dataset's total ε including this run (accountant over all its ledger events).
    pub dataset_total_after: f64,
    /// The dataset's total before this run.
    pub dataset_total_before: f64,
    /// The policy used, if any.
    pub policy: Option<crate::policy::Loaded>,
    /// The decision.
    pub decision: crate::policy::Decision,
}

/// Plan a run and check it against the ledger and the policy; reads no pixels, writes nothing.
///
/// # Errors
/// Dataset, policy, ledger and parameter errors.
pub fn check(ws: &Workspace, args: &DistillArgs, ctx: &Ctx) -> Result<Checked> {
    let stored = crate::dataset::open(ws, &args.dataset)?;
    let plan = distill::plan(&stored.meta, &args.request())?;
    let report = crate::dp::accountant::epsilon(&plan.events, plan.delta)?;
    let ledger = crate::ledger::Ledger::open(ws, &stored.meta)?;
    let mut all = ledger.all_events()?;
    let before = crate::dp::accountant::epsilon(&all, plan.delta)?.epsilon;
    all.extend(plan.events.iter().cloned());
    let after = crate::dp::accountant::epsilon(&all, plan.delta)?.epsilon;
    let loaded = crate::policy::load_active(ws, ctx.policy.as_deref())?;
    let decision = loaded.policy.decide(&crate::policy::Request::Distill(
        crate::policy::DistillRequest {
            dataset: &plan.dataset,
            records: plan.records as u64,
            method: plan.method.as_str(),
            epsilon: report.epsilon,
            delta: plan.delta,
            ipc: plan.ipc as u32,
            dataset_total_epsilon: after,
        },
    ));
    Ok(Checked {
        plan,
        report,
        dataset_total_after: after,
        dataset_total_before: before,
        policy: Some(loaded),
        decision,
    })
}

/// Human text describing a plan.
pub fn describe(c: &Checked, estimate: Option<f64>) -> String {
    let p = &c.plan;
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line(format!(
        "plan for dataset {:?}: method {} ({}), {} images per class",
        p.dataset, p.method, p.method_reason, p.ipc
    ));
    line(format!(
        "  public metadata read: {} training records, {} classes ({}), shape {}x{}x{}; no pixels read, nothing spent",
        p.records,
        p.classes.len(),
        p.classes.join(", "),
        p.shape.c,
        p.shape.h,
        p.shape.w
    ));
    match p.sampling_rate {
        Some(q) if p.method == crate::distill::Method::Dm => {
            let (nets, warmup) = match &p.params {
                crate::distill::plan::Params::Dm(d) => (d.nets, d.warmup.clone()),
                _ => (p.steps as usize, None),
            };
            if let Some(w) = warmup {
                line(format!(
                    "  mechanism: DP-SGD warm-up of {} feature nets, {} steps each (Poisson q = {:.5}, expected batch {:.0}, per-sample gradients clipped to C = {}, one Gaussian mechanism per step); then {} feature nets ({:.0}% DP-SGD snapshots, the rest random), each released over its own Poisson sample at the same q: clipped per-class embedding sums, one Gaussian mechanism per net; {} steps in all",
                    w.trajectories,
                    w.steps,
                    q,
                    q * p.records as f64,
                    p.clip_norm,
                    nets,
                    100.0 * w.trained_fraction,
                    p.steps
                ));
            } else {
                line(format!(
                    "  mechanism: {} feature nets, each released over its own Poisson sample at q = {:.5} (expected {:.0} records): clipped per-class embedding sums (C = {}), one Gaussian mechanism per net",
                    p.steps,
                    q,
                    q * p.records as f64,
                    p.clip_norm
                ));
            }
        }
        Some(q) => line(format!(
            "  mechanism: {} Poisson-sampled steps at q = {:.5} (expected batch {:.0}), per-class clipped sums (C = {}), one Gaussian mechanism per step",
            p.steps,
            q,
            q * p.records as f64,
            p.clip_norm
        )),
        None => line(format!(
            "  mechanism: ONE Gaussian release of clipped per-class embedding sums over all {} records (C = {})",
            p.records, p.clip_norm
        )),
    }
    line(format!(
        "  noise multiplier sigma = {:.4} (calibrated to epsilon {} at delta {:e})",
        p.noise_multiplier, p.epsilon_target, p.delta
    ));
    line(format!(
        "  epsilon of this run: {:.4} (RDP {:.4}, PLD {:.4}; reported: {})",
        c.report.epsilon, c.report.epsilon_rdp, c.report.epsilon_pld, c.report.accountant
    ));
    line(format!(
        "  dataset budget: {:.4} spent before, {:.4} after this run",
        c.dataset_total_before, c.dataset_total_after
    ));
    match &c.decision {
        crate::policy::Decision::Refuse(r) => line(format!(
            "  policy {}: REFUSED ({}): {}\n  hint: {}",
            c.policy.as_ref().map(|l| l.name.as_str()).unwrap_or("-"),
            r.code,
            r.message,
            r.hint
        )),
        _ => line(format!(
            "  policy {}: allowed",
            c.policy.as_ref().map(|l| l.name.as_str()).unwrap_or("-")
        )),
    }
    if let Some(e) = estimate {
        line(format!(
            "  estimated run time: {} (from a short benchmark on random data)",
            fmt_duration(e)
        ));
    }
    for w in &p.warnings {
        line(format!("  warning: {w}"));
    }
    s
}

/// `1 h 02 min`, `3 min 20 s`, `12 s`.
pub fn fmt_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// JSON for a plan.
pub fn plan_json(c: &Checked, estimate: Option<f64>) -> serde_json::Value {
    let p = &c.plan;
    serde_json::json!({
        "dataset": p.dataset,
        "method": p.method,
        "method_reason": p.method_reason,
        "ipc": p.ipc,
        "records": p.records,
        "public_metadata": p.public_metadata,
        "classes": p.classes,
        "epsilon_target": p.epsilon_target,
        "delta": p.delta,
        "noise_multiplier": p.noise_multiplier,
        "sampling_rate": p.sampling_rate,
        "steps": p.steps,
        "clip_norm": p.clip_norm,
        "events": p.events,
        "epsilon": c.report.epsilon,
        "epsilon_rdp": c.report.epsilon_rdp,
        "epsilon_pld": c.report.epsilon_pld,
        "accountant": c.report.accountant,
        "dataset_epsilon_before": c.dataset_total_before,
        "dataset_epsilon_after": c.dataset_total_after,
        "policy": c.policy.as_ref().map(|l| serde_json::json!({"name": l.name, "sha256": l.sha256})),
        "decision": match &c.decision {
            crate::policy::Decision::Refuse(r) => serde_json::json!({"allowed": false, "code": r.code, "message": r.message, "hint": r.hint}),
            _ => serde_json::json!({"allowed": true}),
        },
        "estimated_seconds": estimate,
        "hyperparameters": p.hyperparameters(),
        "warnings": p.warnings,
        "spent": 0,
    })
}

/// Run `retort plan`.
///
/// # Errors
/// Dataset, policy, ledger and parameter errors. A policy refusal is *shown*, not an error.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    let ws = ctx.open_audited("plan", &args.run.dataset)?;
    let c = check(&ws, &args.run, ctx)?;
    let estimate = if args.no_benchmark {
        None
    } else {
        Some(c.plan.estimate_seconds()?)
    };
    ctx.detail("method", c.plan.method.as_str());
    ctx.detail("epsilon", c.report.epsilon);
    ctx.detail("delta", c.plan.delta);
    ctx.detail("allowed", c.decision.is_allowed());
    Ok(Report::new(describe(&c, estimate), plan_json(&c, estimate)))
}
