//! `Planned → Reserved → Completed | Cancelled | Failed`: the typestates of a distillation run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use super::dir;
use super::record::{PolicyRef, RunRecord, Status};
use super::Error;
use crate::audit::Session;
use crate::dataset::{FloatImages, Split, Stored};
use crate::distill::forecast::{self, Forecast};
use crate::distill::{self, Plan, Request};
use crate::dp::accountant::{self, EpsilonReport};
use crate::dp::mechanism::{Allowance, Records};
use crate::dp::split::Stage;
use crate::ledger::{Ledger, Reservation};
use crate::policy::{Decision, DistillRequest, Loaded};
use crate::progress::Sink;
use crate::workspace::Workspace;

/// A run planned from public metadata, with the policy's decision and the budget it would
/// leave. Nothing is written or spent.
#[derive(Debug)]
pub struct Planned<'w> {
    ws: &'w Workspace,
    stored: Stored,
    plan: Plan,
    forecast: Forecast,
    policy: Loaded,
    decision: Decision,
    charged: EpsilonReport,
    total: EpsilonReport,
    dataset_before: f64,
    dataset_after: f64,
}

/// Plan a run on `ws`: read the dataset's public metadata (record count, class names, shape),
/// the active policy (or `policy_override`) and the ledger; calibrate the noise to the target
/// with the policy's budget split; decide. Reads no pixels, writes nothing.
///
/// The request's `utility_share` is replaced by the policy's `budget.utility_share`.
///
/// # Errors
/// `run-audit-only` (exit 3) for a dataset ingested with `--audit-only`; dataset, policy
/// (load), ledger and parameter errors. A policy *refusal* is not an error
/// here: it is [`Planned::decision`] (so `plan` can show it); [`Planned::reserve`] refuses.
pub fn plan<'w>(
    ws: &'w Workspace,
    dataset: &str,
    request: &Request,
    policy_override: Option<&Path>,
) -> Result<Planned<'w>, Error> {
    let stored = crate::dataset::open(ws, dataset)?;
    if stored.meta.audit_only {
        return Err(Error::AuditOnly {
            dataset: stored.meta.name.clone(),
        });
    }
    let policy = crate::policy::load_active(ws, policy_override)?;
    let mut req = request.clone();
    req.utility_share = policy.policy.utility_share();
    let mut plan = distill::plan(&stored.meta, &req)?;
    if policy.policy.public_class_counts() {
        plan.public_metadata.push(
            "per-class training counts (policy privacy.public_class_counts; for the utility forecast)"
                .into(),
        );
    }
    let delta = plan.delta.get();
    let charged = accountant::epsilon(&plan.events, delta)?;
    let all_events: Vec<_> = plan.shares.iter().flat_map(|s| s.events.clone()).collect();
    let total = accountant::epsilon(&all_events, delta)?;
    let ledger = Ledger::open(ws, &stored.meta)?;
    let mut spent = ledger.all_events()?;
    let dataset_before = accountant::epsilon(&spent, delta)?.epsilon;
    spent.extend(all_events);
    let dataset_after = accountant::epsilon(&spent, delta)?.epsilon;
    let forecast = forecast::forecast(&plan, &stored.meta, policy.policy.public_class_counts())?;
    let decision = decide(&policy, &plan, &forecast, total.epsilon, dataset_after);
    Ok(Planned {
        ws,
        stored,
        plan,
        forecast,
        policy,
        decision,
        charged,
        total,
        dataset_before,
        dataset_after,
    })
}

/// The policy's decision on a plan with its forecast, the run's total ε and the dataset's total
/// after it.
fn decide(
    policy: &Loaded,
    plan: &Plan,
    forecast: &Forecast,
    epsilon: f64,
    dataset_after: f64,
) -> Decision {
    policy
        .policy
        .decide(&crate::policy::Request::Distill(DistillRequest {
            dataset: &plan.dataset,
            records: plan.records as u64,
            method: plan.method.as_str(),
            epsilon,
            delta: plan.delta.get(),
            ipc: u32::try_from(plan.ipc).unwrap_or(u32::MAX),
            dataset_total_epsilon: dataset_after,
            forecast: Some(forecast),
        }))
}

impl<'w> Planned<'w> {
    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The run's utility forecast (public values only; `privacy.public_class_counts` makes it
    /// speak of the smallest class).
    pub fn forecast(&self) -> &Forecast {
        &self.forecast
    }

    /// Mutable access to the plan for measurement harnesses that change method parameters;
    /// call [`Plan::recalibrate`] after changing them. The policy decision is re-made at
    /// [`Planned::reserve`].
    pub fn plan_mut(&mut self) -> &mut Plan {
        &mut self.plan
    }

    /// The policy's decision on this run.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The policy the decision was made under.
    pub fn policy(&self) -> &Loaded {
        &self.policy
    }

    /// ε of the events charged at `distill` (both accountants).
    pub fn charged(&self) -> &EpsilonReport {
        &self.charged
    }

    /// ε of every share of the run composed (both accountants).
    pub fn total(&self) -> &EpsilonReport {
        &self.total
    }

    /// The dataset's composed ε before and after this run (all shares).
    pub fn dataset_budget(&self) -> (f64, f64) {
        (self.dataset_before, self.dataset_after)
    }

    /// Charge the plan's `distill` events to the dataset's ledger (fail closed: over the cap is
    /// refused with exit 3 and nothing is written), log the intent, write `run.json` as
    /// `running`. After this, the run is charged whatever happens.
    ///
    /// # Errors
    /// `policy-*` refusals (exit 3), `budget-exceeded`, ledger and audit errors (nothing read).
    pub fn reserve(self, session: &mut Session) -> Result<Reserved<'w>, Error> {
        let mut this = self;
        // A plan changed after planning is decided again.
        this.recheck()?;
        if let Decision::Refuse(r) = &this.decision {
            return Err(crate::policy::Error::Refused(r.clone()).into());
        }
        let plan = &this.plan;
        let delta = plan.delta.get();
        let run_id = crate::workspace::new_id("run");
        session.set_object(&run_id);
        session.detail("dataset", plan.dataset.clone());
        session.detail("method", plan.method.as_str());
        session.detail("epsilon", this.total.epsilon);
        session.detail("delta", delta);
        session.detail("ipc", plan.ipc as u64);
        session.detail("policy_sha256", this.policy.sha256.clone());
        let cap = this.policy.policy.dataset_epsilon_cap(&plan.dataset);
        let reservation = Ledger::open(this.ws, &this.stored.meta)?.reserve(
            session.actor(),
            &run_id,
            "distill",
            &plan.events,
            delta,
            Some(cap),
        )?;
        session.intent(
            "distill.run",
            &run_id,
            json!({
                "dataset": plan.dataset,
                "method": plan.method.as_str(),
                "epsilon": this.charged.epsilon,
                "epsilon_run_total": this.total.epsilon,
                "delta": delta,
                "events": plan.events,
                "shares": plan.shares,
            }),
        )?;
        let policy = Some(PolicyRef {
            name: this.policy.name.clone(),
            sha256: this.policy.sha256.clone(),
        });
        let rec = RunRecord::start(&run_id, plan, &this.charged, policy);
        dir::write_record(this.ws, &rec)?;
        Ok(Reserved {
            ws: this.ws,
            stored: this.stored,
            plan: this.plan,
            rec,
            reservation,
            actor: session.actor().to_string(),
            t0: Instant::now(),
        })
    }

    fn recheck(&mut self) -> Result<(), Error> {
        let delta = self.plan.delta.get();
        let charged = accountant::epsilon(&self.plan.events, delta)?;
        if charged.epsilon == self.charged.epsilon {
            return Ok(());
        }
        let all: Vec<_> = self
            .plan
            .shares
            .iter()
            .flat_map(|s| s.events.clone())
            .collect();
        self.total = accountant::epsilon(&all, delta)?;
        self.charged = charged;
        let mut spent = Ledger::open(self.ws, &self.stored.meta)?.all_events()?;
        spent.extend(all);
        self.dataset_after = accountant::epsilon(&spent, delta)?.epsilon;
        self.forecast = forecast::forecast(
            &self.plan,
            &self.stored.meta,
            self.policy.policy.public_class_counts(),
        )?;
        self.decision = decide(
            &self.policy,
            &self.plan,
            &self.forecast,
            self.total.epsilon,
            self.dataset_after,
        );
        Ok(())
    }
}

/// A charged run: the only state that can read the training split.
#[derive(Debug)]
pub struct Reserved<'w> {
    ws: &'w Workspace,
    stored: Stored,
    plan: Plan,
    rec: RunRecord,
    reservation: Reservation,
    actor: String,
    t0: Instant,
}

impl<'w> Reserved<'w> {
    /// The run id.
    pub fn id(&self) -> &str {
        &self.rec.id
    }

    /// The plan being run.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Read the training split and distill it, then write the run directory and commit the
    /// ledger record. On any error after the reservation the run is marked `failed` (or
    /// `cancelled` on Ctrl-C) and stays charged.
    ///
    /// # Privacy
    /// The training split is read here and only here, after the reservation; the method spends
    /// exactly the reserved events through the one mechanism.
    ///
    /// # Errors
    /// `run-cancelled`, dataset, distill, I/O and ledger errors (the run stays charged).
    pub fn distill(self, sink: Sink<'_>) -> Result<Completed, Error> {
        let Reserved {
            ws,
            stored,
            plan,
            mut rec,
            reservation,
            actor,
            t0,
        } = self;
        let t_read = Instant::now();
        let result = stored
            .load(Split::Train)
            .map_err(Error::from)
            .and_then(|train| {
                let read_s = t_read.elapsed().as_secs_f64();
                let mut allowance = Allowance::new(&plan.events)?;
                distill::run(&plan, &Records::new(&train), &mut allowance, sink)
                    .map(|o| (o, read_s))
                    .map_err(|e| match e {
                        distill::Error::Cancelled => Error::Cancelled {
                            run: rec.id.clone(),
                        },
                        other => other.into(),
                    })
            });
        let end = |rec: &mut RunRecord, status: Status| {
            rec.status = status;
            rec.finished = Some(crate::workspace::now_rfc3339());
            rec.seconds = t0.elapsed().as_secs_f64();
            rec.pid = None;
            rec.pid_started = None;
        };
        match result {
            Ok((outcome, read_s)) => {
                end(&mut rec, Status::Completed);
                rec.timings = json!({
                    "read_seconds": read_s,
                    "private_seconds": outcome.private_seconds,
                    "synthesis_seconds": outcome.synthesis_seconds,
                    "total_seconds": rec.seconds,
                });
                rec.diagnostics = outcome.diagnostics.clone();
                let dir = match dir::write_completed(
                    ws,
                    &rec,
                    &outcome.synthetic,
                    outcome.teacher.as_ref(),
                ) {
                    Ok(d) => d,
                    Err(e) => {
                        end(&mut rec, Status::Failed);
                        let _ = dir::write_record(ws, &rec);
                        let _ = reservation.cancel(&actor);
                        return Err(e);
                    }
                };
                reservation.commit(&actor)?;
                Ok(Completed {
                    record: rec,
                    dir,
                    synthetic: Some(outcome.synthetic),
                })
            }
            Err(e) => {
                let status = if matches!(e, Error::Cancelled { .. }) {
                    Status::Cancelled
                } else {
                    Status::Failed
                };
                end(&mut rec, status);
                let _ = dir::write_record(ws, &rec);
                let _ = reservation.cancel(&actor);
                Err(e)
            }
        }
    }
}

/// A completed run whose charge the ledger holds: what `eval` and the package builder take.
#[derive(Debug, Clone)]
pub struct Completed {
    record: RunRecord,
    dir: PathBuf,
    synthetic: Option<FloatImages>,
}

impl Completed {
    /// Open a finished run: its record must read and validate, its status be `completed`, and
    /// the dataset's ledger must hold its charge with the same events as its record.
    ///
    /// # Errors
    /// `run-not-found`, `run-invalid`, `run-incomplete`, `run-not-charged` (exit 3), ledger
    /// errors.
    pub fn open(ws: &Workspace, id: &str) -> Result<Completed, Error> {
        let record = dir::read(ws, id)?;
        if record.status != Status::Completed {
            return Err(Error::Incomplete {
                run: id.into(),
                status: record.status.as_str().into(),
            });
        }
        let not_charged = |why: String| Error::NotCharged {
            run: id.into(),
            why,
        };
        let ledger = match Ledger::of_run(ws, &record.id) {
            Ok(l) => l,
            Err(crate::ledger::Error::NotFound { .. }) => {
                return Err(not_charged("no ledger holds a reservation for it".into()))
            }
            Err(e) => return Err(e.into()),
        };
        let runs = ledger.runs()?;
        let entry = runs
            .iter()
            .find(|r| r.run == record.id)
            .ok_or_else(|| not_charged("the ledger has no reservation for it".into()))?;
        if entry.events != record.events {
            return Err(not_charged(
                "the ledger charged other events than the run record states".into(),
            ));
        }
        Ok(Completed {
            dir: dir::dir_of(ws, id),
            record,
            synthetic: None,
        })
    }

    /// The run record.
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// The run id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// `runs/<id>/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The synthetic set (from memory right after `distill`, else from `synthetic.parquet`),
    /// checked against the run's shape and classes.
    ///
    /// # Errors
    /// `run-mismatch`, dataset (Parquet) errors.
    pub fn synthetic(&self) -> Result<FloatImages, Error> {
        let set = match &self.synthetic {
            Some(s) => s.clone(),
            None => crate::dataset::read_synthetic_parquet(&self.dir.join("synthetic.parquet"))?.0,
        };
        let r = &self.record;
        let bad = |why: String| Error::Mismatch {
            run: r.id.clone(),
            dataset: r.dataset.clone(),
            why,
        };
        let s = set.shape;
        if [s.c, s.h, s.w].as_slice() != r.shape.as_slice() {
            return Err(bad(format!(
                "images are {}x{}x{}, the run's are {:?}",
                s.c, s.h, s.w, r.shape
            )));
        }
        if set.is_empty() {
            return Err(bad("the synthetic set is empty".into()));
        }
        if let Some(l) = set.labels.iter().find(|&&l| l as usize >= r.classes.len()) {
            return Err(bad(format!(
                "label {l} but the run has {} classes",
                r.classes.len()
            )));
        }
        Ok(set)
    }

    /// The planned share of stage `eval` named `name`, if any.
    pub fn eval_share(&self, name: &str) -> Option<crate::dp::split::Share> {
        self.record.share(name).filter(|s| s.stage == Stage::Eval)
    }
}
