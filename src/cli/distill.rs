//! `retort distill`: check the policy, reserve the run's full privacy cost in the ledger (fail
//! closed), log intent, read the training split, distill with a progress bar, write the run
//! directory atomically and commit. Ctrl-C ends cleanly: the run is marked `cancelled` and
//! stays charged.

use std::time::Instant;

use super::plan::{check, DistillArgs};
use super::{Ctx, Report};
use crate::distill::rundir::{self, PolicyRef, RunRecord, Status};
use crate::progress::Event;
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
/// `cancelled` on Ctrl-C (the run stays charged and is marked cancelled).
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    let t0 = Instant::now();
    let ws = ctx.open_audited("distill", &args.run.dataset)?;
    let _lock = ws.lock(DEFAULT_LOCK_WAIT)?;
    // 1. Plan from public metadata, check the policy and the budget. Nothing is written yet.
    let c = check(&ws, &args.run, ctx)?;
    let plan = c.plan.clone();
    ctx.detail("method", plan.method.as_str());
    ctx.detail("epsilon", c.report.epsilon);
    ctx.detail("delta", plan.delta);
    ctx.detail("ipc", plan.ipc as u64);
    if let Some(l) = &c.policy {
        ctx.detail("policy_sha256", l.sha256.clone());
    }
    if let crate::policy::Decision::Refuse(r) = c.decision {
        return Err(crate::policy::Error::Refused(r).into());
    }
    let policy = c.policy.as_ref().map(|l| PolicyRef {
        name: l.name.clone(),
        sha256: l.sha256.clone(),
    });
    // 2. Reserve the full cost before reading anything private (fails closed, exit 3).
    let run_id = crate::workspace::new_id("run");
    ctx.set_object(&run_id);
    ctx.detail("dataset", plan.dataset.clone());
    let cap = c
        .policy
        .as_ref()
        .map(|l| l.policy.dataset_epsilon_cap(&plan.dataset));
    let reservation = crate::ledger::Ledger::open(&ws, &plan.dataset)?.reserve(
        &run_id,
        &plan.events,
        plan.delta,
        cap,
    )?;
    // 3. Intent, then the running record.
    ctx.intent(
        &ws,
        "distill.run",
        &run_id,
        serde_json::json!({
            "dataset": plan.dataset,
            "method": plan.method.as_str(),
            "epsilon": c.report.epsilon,
            "delta": plan.delta,
            "events": plan.events,
        }),
    )?;
    let mut rec = RunRecord::start(&run_id, &plan, policy);
    rec.privacy.epsilon = c.report.epsilon;
    rec.privacy.epsilon_rdp = Some(c.report.epsilon_rdp);
    rec.privacy.epsilon_pld = Some(c.report.epsilon_pld);
    rec.privacy.accountant = c.report.accountant.to_string();
    rundir::write_record_only(&ws, &rec)?;
    ctx.say(format!(
        "run {run_id}: reserved epsilon {:.4} (delta {:e}) on dataset {:?}; reading the training split",
        c.report.epsilon, plan.delta, plan.dataset
    ));
    // 4. Read the private training split and distill.
    let t_read = Instant::now();
    let result = crate::dataset::open(&ws, &plan.dataset)
        .and_then(|s| s.load(crate::dataset::Split::Train))
        .map_err(crate::Error::from)
        .and_then(|train| {
            let read_s = t_read.elapsed().as_secs_f64();
            let bar = Bar::new(ctx.show_progress());
            let sink = |e: Event<'_>| bar.event(e);
            let mut allowance = crate::dp::mechanism::Allowance::new(&plan.events)?;
            crate::distill::run(
                &plan,
                &crate::dp::mechanism::Records::new(&train),
                &mut allowance,
                &sink,
            )
            .map(|o| (o, read_s))
            .map_err(|e| match e {
                crate::distill::Error::Cancelled => crate::Error::Cancelled,
                other => other.into(),
            })
        });
    let finish = |rec: &mut RunRecord, status: Status| {
        rec.status = status;
        rec.finished = Some(crate::workspace::now_rfc3339());
        rec.seconds = t0.elapsed().as_secs_f64();
    };
    match result {
        Ok((outcome, read_s)) => {
            finish(&mut rec, Status::Completed);
            rec.timings = serde_json::json!({
                "read_seconds": read_s,
                "private_seconds": outcome.private_seconds,
                "synthesis_seconds": outcome.synthesis_seconds,
                "total_seconds": rec.seconds,
            });
            rec.diagnostics = outcome.diagnostics.clone();
            let dir = match rundir::write_completed(&ws, &rec, &outcome.synthetic) {
                Ok(d) => d,
                Err(e) => {
                    finish(&mut rec, Status::Failed);
                    let _ = rundir::write_record_only(&ws, &rec);
                    return Err(e);
                }
            };
            reservation.commit()?;
            ctx.detail("status", "completed");
            ctx.detail("seconds", rec.seconds);
            let human = format!(
                "run {run_id} completed in {}: {} synthetic images ({} per class) in {}\n  epsilon {:.4}, delta {:e} ({}), charged to dataset {:?}\n",
                super::plan::fmt_duration(rec.seconds),
                outcome.synthetic.len(),
                plan.ipc,
                dir.display(),
                c.report.epsilon,
                plan.delta,
                c.report.accountant,
                plan.dataset
            );
            Ok(Report::new(
                human,
                serde_json::json!({
                    "run": run_id,
                    "epsilon": c.report.epsilon,
                    "delta": plan.delta,
                    "seconds": rec.seconds,
                    "dir": dir,
                    "method": plan.method.as_str(),
                    "dataset": plan.dataset,
                }),
            ))
        }
        Err(e) => {
            // The reservation stays charged whatever happened after it.
            let status = if matches!(e, crate::Error::Cancelled) {
                Status::Cancelled
            } else {
                Status::Failed
            };
            finish(&mut rec, status);
            let _ = rundir::write_record_only(&ws, &rec);
            let _ = reservation.cancel();
            ctx.detail(
                "status",
                if status == Status::Cancelled {
                    "cancelled"
                } else {
                    "failed"
                },
            );
            Err(e)
        }
    }
}

/// An indicatif progress bar fed by the library's progress events.
struct Bar {
    bar: Option<indicatif::ProgressBar>,
}

impl Bar {
    fn new(show: bool) -> Bar {
        Bar {
            bar: show.then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                b
            }),
        }
    }

    fn event(&self, e: Event<'_>) {
        let Some(b) = &self.bar else { return };
        match e {
            Event::Start { label, total } => {
                b.reset();
                b.set_length(total);
                b.set_position(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg:32} [{bar:30}] {pos}/{len} ({elapsed} elapsed, ETA {eta})",
                    )
                    .expect("invariant: template is valid")
                    .progress_chars("=> "),
                );
                b.set_message(label.to_string());
            }
            Event::Advance(n) => b.inc(n),
            Event::Message(m) => b.println(m),
            Event::Finish => b.finish(),
        }
    }
}
