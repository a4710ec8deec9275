//! `retort plan`: a dry run of a distillation. Reads only the dataset's public metadata (record
//! count, class names, shape), spends nothing, and shows the sampling rate, steps, calibrated
//! noise multiplier, ε by each accountant, the policy decision and an estimated run time.

use super::{Ctx, Report};
use crate::distill::{self, Method};
use crate::dp::{Delta, Epsilon};
use crate::run::Planned;
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
    /// Train a DP teacher (a linear classifier on fixed scattering features, with its own
    /// share of epsilon) that guides the synthesis and gives the synthetic images its soft
    /// labels (default: off; see docs/distill.md for what it measured).
    #[arg(long, conflicts_with = "no_teacher")]
    pub teacher: bool,
    /// No DP teacher and no soft labels (the whole budget goes to the main release).
    #[arg(long)]
    pub no_teacher: bool,
}

pub(crate) fn parse_method(s: &str) -> std::result::Result<Method, String> {
    s.parse::<Method>().map_err(|e| e.to_string())
}

impl DistillArgs {
    /// The library request (the utility share comes from the policy at planning).
    ///
    /// # Errors
    /// `usage` (exit 2) for an epsilon or delta that is invalid in itself.
    pub fn request(&self) -> Result<distill::Request> {
        let (epsilon, delta) = privacy_target(
            self.epsilon,
            self.delta,
            "give the run's target epsilon, e.g. --epsilon 1",
            "give delta below 1/n for the dataset's n records, e.g. --delta 1e-5",
        )?;
        Ok(distill::Request {
            epsilon,
            delta,
            utility_share: 0.0,
            teacher: match (self.teacher, self.no_teacher) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            ipc: self.ipc,
            method: self.method,
            iterations: self.iterations,
            seed: self.seed,
        })
    }
}

/// `--epsilon` and `--delta` checked in themselves (a positive finite ε, δ strictly between 0
/// and 1), with the command's hints.
///
/// # Errors
/// `usage` (exit 2).
pub(crate) fn privacy_target(
    epsilon: f64,
    delta: f64,
    epsilon_hint: &str,
    delta_hint: &str,
) -> Result<(Epsilon, Delta)> {
    let e = Epsilon::new(epsilon)
        .ok()
        .filter(|e| e.get() > 0.0)
        .ok_or_else(|| {
            super::usage(
                format!("--epsilon {epsilon} is not a positive finite number"),
                epsilon_hint,
            )
        })?;
    let d = Delta::new(delta).map_err(|_| {
        super::usage(
            format!("--delta {delta} is not strictly between 0 and 1"),
            delta_hint,
        )
    })?;
    Ok((e, d))
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

/// Plan a run and check it against the ledger and the policy; reads no pixels, writes nothing.
///
/// # Errors
/// Dataset, policy, ledger and parameter errors.
pub fn check<'w>(ws: &'w Workspace, args: &DistillArgs, ctx: &Ctx) -> Result<Planned<'w>> {
    Ok(crate::run::plan(
        ws,
        &args.dataset,
        &args.request()?,
        ctx.policy.as_deref(),
    )?)
}

/// Human text describing a plan.
pub fn describe(c: &Planned<'_>, estimate: Option<f64>) -> String {
    let p = c.plan();
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
    if let Some(t) = &p.teacher {
        line(format!(
            "  teacher: {} ({}); {} DP-SGD steps at Poisson q = {:.5} (expected batch {}), per-record gradients clipped to C = {}, sigma = {:.4}; soft labels at temperature {}{}; {}",
            t.model,
            t.features,
            t.steps,
            t.sampling_rate,
            t.params.expected_batch,
            t.params.clip_norm,
            t.noise_multiplier,
            t.params.temperature,
            if t.params.guidance > 0.0 {
                format!(", guiding the synthesis (weight {})", t.params.guidance)
            } else {
                String::new()
            },
            t.reason
        ));
    }
    line(format!(
        "  noise multiplier sigma = {:.4} (calibrated so that every share below composes to epsilon {} at delta {:e})",
        p.noise_multiplier, p.epsilon_target, p.delta.get()
    ));
    line("  budget split (each share's epsilon alone; they compose, they do not add):".into());
    for sh in &p.shares {
        line(format!(
            "    {:<8} {:>3.0}%  epsilon {:.4}  charged at {}: {}",
            sh.name,
            100.0 * sh.fraction,
            sh.epsilon,
            match sh.stage {
                crate::dp::split::Stage::Distill => "distill",
                crate::dp::split::Stage::Eval => "eval",
            },
            sh.what
        ));
    }
    let t = c.total();
    line(format!(
        "  epsilon of this run (all shares composed): {:.4} (RDP {:.4}, PLD {:.4}; reported: {}); charged now by distill: {:.4}",
        t.epsilon, t.epsilon_rdp, t.epsilon_pld, t.accountant, c.charged().epsilon
    ));
    let (before, after) = c.dataset_budget();
    line(format!(
        "  dataset budget: {before:.4} spent before, {after:.4} after this run (all shares)"
    ));
    line(format!("  utility forecast: {}", c.forecast().summary));
    match c.decision() {
        crate::policy::Decision::Refuse(r) => line(format!(
            "  policy {}: REFUSED ({}): {}\n  hint: {}",
            c.policy().name,
            r.code,
            r.message,
            r.hint
        )),
        _ => line(format!("  policy {}: allowed", c.policy().name)),
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
    if let Some(w) = forecast_warning(c.forecast()) {
        line(format!("  warning: {w}"));
    }
    s
}

/// The warning of a poor forecast, if it is one.
pub fn forecast_warning(f: &crate::distill::forecast::Forecast) -> Option<String> {
    (f.verdict == crate::distill::forecast::Verdict::Poor).then(|| {
        format!(
            "the utility forecast is poor (signal-to-noise {:.1}): the noise this epsilon needs will bury most of what the data has to teach; consider {} before spending budget",
            f.snr,
            if f.advice.is_empty() { "a larger epsilon".to_string() } else { f.advice.join(", ") }
        )
    })
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
pub fn plan_json(c: &Planned<'_>, estimate: Option<f64>) -> serde_json::Value {
    let p = c.plan();
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
        "shares": p.shares,
        "teacher": p.teacher,
        "noise_multiplier": p.noise_multiplier,
        "sampling_rate": p.sampling_rate,
        "steps": p.steps,
        "clip_norm": p.clip_norm,
        "events": p.events,
        "epsilon": c.total().epsilon,
        "epsilon_rdp": c.total().epsilon_rdp,
        "epsilon_pld": c.total().epsilon_pld,
        "accountant": c.total().accountant,
        "epsilon_charged_by_distill": c.charged().epsilon,
        "dataset_epsilon_before": c.dataset_budget().0,
        "dataset_epsilon_after": c.dataset_budget().1,
        "policy": serde_json::json!({"name": c.policy().name, "sha256": c.policy().sha256}),
        "decision": match c.decision() {
            crate::policy::Decision::Refuse(r) => serde_json::json!({"allowed": false, "code": r.code, "message": r.message, "hint": r.hint}),
            _ => serde_json::json!({"allowed": true}),
        },
        "forecast": c.forecast(),
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
        Some(c.plan().estimate_seconds()?)
    };
    let (method, epsilon, delta, allowed) = (
        c.plan().method.as_str(),
        c.total().epsilon,
        c.plan().delta.get(),
        c.decision().is_allowed(),
    );
    ctx.detail("method", method);
    ctx.detail("epsilon", epsilon);
    ctx.detail("delta", delta);
    ctx.detail("allowed", allowed);
    ctx.detail("forecast", c.forecast().verdict.as_str());
    Ok(Report::new(describe(&c, estimate), plan_json(&c, estimate)))
}
