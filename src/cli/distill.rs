//! `retort distill`: plan, reserve (the library charges the ledger first, fail closed, and logs
//! the intent), distill with a progress bar, report. Ctrl-C ends cleanly: the run is marked
//! `cancelled` and stays charged.

use super::plan::{check, fmt_duration, DistillArgs};
use super::progress::Bar;
use super::{Ctx, Report};
use crate::workspace::DEFAULT_LOCK_WAIT;
use crate::Result;

/// Arguments of `retort distill`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to distill.
    #[command(flatten)]
    pub run: DistillArgs,
}

/// Run `retort distill`.
///
/// # Errors
/// Refused by policy or budget (exit 3, nothing written or charged); dataset and I/O errors;
/// `run-cancelled` on Ctrl-C (the run stays charged and is marked cancelled).
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    let ws = ctx.open_audited("distill", &args.run.dataset)?;
    let _lock = ws.lock(DEFAULT_LOCK_WAIT)?;
    let planned = check(&ws, &args.run, ctx)?;
    ctx.detail("forecast", planned.forecast().verdict.as_str());
    ctx.say(format!("utility forecast: {}", planned.forecast().summary));
    for w in &planned.plan().warnings {
        ctx.say(format!("warning: {w}"));
    }
    if let Some(w) = super::plan::forecast_warning(planned.forecast()) {
        ctx.say(format!("warning: {w}"));
    }
    let reserved = planned.reserve(ctx.session_required()?)?;
    let (id, plan) = (reserved.id().to_string(), reserved.plan().clone());
    ctx.say(format!(
        "run {id}: reserved epsilon {:.4} (delta {:e}) on dataset {:?}; reading the training split",
        plan.shares.first().map_or(plan.epsilon, |s| s.epsilon),
        plan.delta.get(),
        plan.dataset
    ));
    let bar = Bar::new(ctx.show_progress());
    let sink = |e: crate::progress::Event<'_>| bar.event(e);
    let result = reserved.distill(&sink);
    ctx.detail(
        "status",
        match &result {
            Ok(_) => "completed",
            Err(crate::run::Error::Cancelled { .. }) => "cancelled",
            Err(_) => "failed",
        },
    );
    let done = result?;
    let rec = done.record();
    ctx.detail("seconds", rec.seconds);
    let human = format!(
        "run {id} completed in {}: {} synthetic images ({} per class) in {}\n  epsilon {:.4} charged now, delta {:e} ({}), to dataset {:?}\n",
        fmt_duration(rec.seconds),
        rec.ipc * rec.classes.len(),
        rec.ipc,
        done.dir().display(),
        rec.privacy.epsilon,
        rec.delta.get(),
        rec.privacy.accountant,
        rec.dataset
    );
    Ok(Report::new(
        human,
        serde_json::json!({
            "run": id,
            "epsilon": rec.privacy.epsilon,
            "epsilon_run_total": plan.epsilon,
            "delta": rec.delta,
            "seconds": rec.seconds,
            "dir": done.dir(),
            "method": rec.method.as_str(),
            "dataset": rec.dataset,
            "shares": rec.shares,
        }),
    ))
}
