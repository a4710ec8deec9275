//! `retort runs [list | show RUN]`: the workspace's runs with their status (running,
//! completed, cancelled, failed, crashed), and one run in words: shares, events, timings, and
//! whether it was evaluated, its utility figures released and it was packaged. Runs whose
//! process died are marked `crashed` when the workspace is opened (see `Ctx::open_audited`).

use serde_json::json;

use super::render::{eps, num};
use super::{Ctx, Report};
use crate::run::{self, Overview, RunRecord};
use crate::Result;

/// Arguments of `retort runs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do (default: list).
    #[command(subcommand)]
    pub cmd: Option<Sub>,
}

/// `runs` subcommands.
#[derive(Debug, clap::Subcommand)]
#[non_exhaustive]
pub enum Sub {
    /// List runs, oldest first: id, dataset, method, status, epsilon, start time.
    List,
    /// Show one run: privacy parameters, budget shares, events, timings, and whether it was
    /// evaluated, released and packaged.
    Show {
        /// The run id (as `retort runs list` shows it).
        run: String,
    },
}

/// Run `retort runs`.
///
/// # Errors
/// `run-not-found`, `name-invalid` (exit 2), workspace and I/O errors. An unreadable run
/// record is listed with its error, not skipped.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    match args.cmd.unwrap_or(Sub::List) {
        Sub::List => list(ctx),
        Sub::Show { run } => show(ctx, &run),
    }
}

fn row_json(r: &RunRecord) -> serde_json::Value {
    json!({
        "id": r.id,
        "dataset": r.dataset,
        "method": r.method.as_str(),
        "status": r.status.as_str(),
        "epsilon": r.privacy.epsilon,
        "epsilon_target": r.epsilon,
        "delta": r.delta,
        "ipc": r.ipc,
        "started": r.started,
        "finished": r.finished,
        "seconds": r.seconds,
    })
}

fn list(ctx: &mut Ctx) -> Result<Report> {
    let ws = ctx.open_audited("run.list", "")?;
    let runs = run::dir::list(&ws)?;
    let mut human = String::new();
    let mut rows = Vec::new();
    if runs.is_empty() {
        human.push_str("no runs yet; start one with `retort distill --dataset NAME --epsilon E`\n");
    } else {
        human.push_str(&format!(
            "{:<24} {:<16} {:<6} {:<10} {:>8}  {}\n",
            "RUN", "DATASET", "METHOD", "STATUS", "EPSILON", "STARTED"
        ));
    }
    let mut unreadable = 0usize;
    for (id, rec) in &runs {
        match rec {
            Ok(r) => {
                human.push_str(&format!(
                    "{:<24} {:<16} {:<6} {:<10} {:>8}  {}\n",
                    r.id,
                    r.dataset,
                    r.method.as_str(),
                    r.status.as_str(),
                    eps(r.privacy.epsilon),
                    r.started
                ));
                rows.push(row_json(r));
            }
            Err(e) => {
                unreadable += 1;
                human.push_str(&format!("{id:<24} UNREADABLE: {e}\n"));
                rows.push(json!({
                    "id": id,
                    "status": "unreadable",
                    "error": {"code": crate::error::Coded::code(e), "message": e.to_string()},
                }));
            }
        }
    }
    if !runs.is_empty() {
        human.push_str(
            "epsilon: charged to the dataset at distill (the utility share, if any, is charged at the first eval); details with `retort runs show RUN`\n",
        );
    }
    ctx.detail("count", runs.len());
    ctx.detail("unreadable", unreadable);
    Ok(Report::new(human, json!({ "runs": rows })))
}

fn show(ctx: &mut Ctx, id: &str) -> Result<Report> {
    crate::workspace::validate_name(id)?;
    let ws = ctx.open_audited("run.show", id)?;
    let o = run::overview(&ws, id)?;
    ctx.detail("status", o.record.status.as_str());
    let json = json!({
        "run": o.record.id,
        "status": o.record.status.as_str(),
        "record": o.record,
        "dir": o.dir,
        "evaluated": o.evaluation.is_some(),
        "evaluation": o.evaluation,
        "released": o.utility.is_some(),
        "utility": o.utility,
        "packaged": !o.packages.is_empty(),
        "packages": o.packages,
        "charges": o.charges,
        "ledger_error": o.ledger_error,
        "unreadable": o.unreadable,
    });
    Ok(Report::new(human(&o), json))
}

/// An event for people: its kind and its parameters, rounded (`--json` has them exactly).
fn event_words(e: &crate::dp::DpEvent) -> String {
    let v = serde_json::to_value(e).unwrap_or_default();
    let Some(obj) = v.as_object() else {
        return v.to_string();
    };
    let kind = obj.get("kind").and_then(|k| k.as_str()).unwrap_or("event");
    let params: Vec<String> = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "kind")
        .map(|(k, v)| match v.as_f64() {
            Some(x) if v.is_f64() => format!("{k} {}", num(x, 4)),
            _ => format!("{k} {v}"),
        })
        .collect();
    format!("{kind} ({})", params.join(", "))
}

fn human(o: &Overview) -> String {
    let r = &o.record;
    let p = &r.privacy;
    let mut s = format!("run {}: {}\n", r.id, r.status.as_str().to_uppercase());
    s += &format!(
        "  dataset {}, method {}, {} images per class, {} classes ({}), shape {}\n",
        r.dataset,
        r.method.as_str(),
        r.ipc,
        r.classes.len(),
        r.classes.join(", "),
        r.shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x")
    );
    s += &format!(
        "  privacy: epsilon {} charged at distill (target {} for all shares), delta {:e}, by {}\n",
        eps(p.epsilon),
        eps(r.epsilon.get()),
        r.delta.get(),
        p.accountant.to_uppercase()
    );
    s += &format!(
        "  mechanism: noise multiplier {:.4}, {}, {} steps, clip norm {}; neighbouring relation {}\n",
        p.noise_multiplier,
        p.sampling_rate
            .map_or("one release over every record".into(), |q| format!(
                "Poisson sampling rate {}",
                num(q, 5)
            )),
        p.steps,
        p.clip_norm,
        p.neighbouring
    );
    s += "  budget shares (each alone; they compose):\n";
    for sh in r.shares() {
        s += &format!(
            "    {:<8} {:>3.0}%  epsilon {}  charged at {}: {}\n",
            sh.name,
            100.0 * sh.fraction,
            eps(sh.epsilon),
            match sh.stage {
                crate::dp::split::Stage::Distill => "distill",
                crate::dp::split::Stage::Eval => "eval",
            },
            sh.what
        );
    }
    s += &format!(
        "  events charged at distill: {} (exact values: --json)\n",
        r.events
            .iter()
            .map(event_words)
            .collect::<Vec<_>>()
            .join(", ")
    );
    s += &format!(
        "  started {}, {}\n",
        r.started,
        match &r.finished {
            Some(f) => format!("ended {f} after {}", super::plan::fmt_duration(r.seconds)),
            None => "not ended".into(),
        }
    );
    if let Some(t) = r.timings.as_object().filter(|t| !t.is_empty()) {
        let parts: Vec<String> = t
            .iter()
            .filter_map(|(k, v)| {
                v.as_f64().map(|x| {
                    format!(
                        "{} {}",
                        k.trim_end_matches("_seconds").replace('_', " "),
                        super::plan::fmt_duration(x)
                    )
                })
            })
            .collect();
        s += &format!("  timings: {}\n", parts.join(", "));
    }
    match &o.ledger_error {
        Some(e) => s += &format!("  ledger: cannot tell what was charged: {e}\n"),
        None => {
            for c in &o.charges {
                s += &format!(
                    "  ledger: {} {} epsilon {} ({}) since {}\n",
                    c.run,
                    c.purpose.as_deref().unwrap_or("distill"),
                    eps(c.epsilon),
                    match c.state {
                        crate::ledger::RunState::Reserved => "reserved: running",
                        crate::ledger::RunState::Committed => "committed",
                        _ => "cancelled: still charged",
                    },
                    c.reserved_at
                );
            }
        }
    }
    match &o.evaluation {
        Some(e) => {
            s += &format!(
                "  evaluated: yes, {} ({} model(s), {} epochs; internal accuracy {} ± {})\n",
                e.evaluated,
                e.models,
                e.recipe.epochs,
                num(e.accuracy, 3),
                num(e.accuracy_std, 3)
            )
        }
        None if r.status == crate::run::Status::Completed => {
            s += &format!("  evaluated: no (`retort eval {}`)\n", r.id)
        }
        None => s += "  evaluated: no (only a completed run can be evaluated)\n",
    }
    match &o.utility {
        Some(u) => {
            s += &format!(
                "  utility figures released: yes, {} (epsilon {}; accuracy {} ± {} noise)\n",
                u.released,
                eps(u.share.epsilon),
                num(u.accuracy, 3),
                num(u.accuracy_noise_std, 3)
            )
        }
        None => s += "  utility figures released: no\n",
    }
    if o.packages.is_empty() {
        s += "  packaged: no\n";
    }
    for pk in &o.packages {
        s += &format!(
            "  packaged: {} for partner {} on {}\n",
            pk.id, pk.partner, pk.created
        );
    }
    for u in &o.unreadable {
        s += &format!("  UNREADABLE {}: {}\n", u.path, u.why);
    }
    s += &format!("  files: {}\n", o.dir);
    s
}
