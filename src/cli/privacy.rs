//! `retort privacy epsilon|calibrate`: the accountant as a calculator (no workspace needed);
//! `retort privacy audit`: the empirical lower bound ([`super::privacy_audit`]).

use clap::Subcommand;
use serde_json::json;

use super::{Ctx, Report};
use crate::dp::{self, accountant, calibrate, DpEvent};
use crate::Result;

/// Arguments of `retort privacy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to compute.
    #[command(subcommand)]
    pub command: Sub,
}

/// `retort privacy` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Sub {
    /// Epsilon of DP-SGD (Poisson sampling rate q, noise multiplier sigma, steps) at delta, by
    /// the RDP and PLD accountants.
    Epsilon(EpsilonArgs),
    /// The smallest noise multiplier meeting a target epsilon at delta.
    Calibrate(CalibrateArgs),
    /// Empirical lower bound on epsilon: one run of the real distillation code with planted
    /// canaries, on a dataset ingested with --audit-only (spends no budget).
    Audit(super::privacy_audit::AuditArgs),
}

/// Arguments of `retort privacy epsilon`.
#[derive(Debug, clap::Args)]
pub struct EpsilonArgs {
    /// Poisson sampling rate q in (0, 1] (expected batch size / records).
    #[arg(long)]
    pub q: f64,
    /// Noise multiplier sigma (noise std = sigma × clip norm).
    #[arg(long)]
    pub sigma: f64,
    /// Number of steps.
    #[arg(long)]
    pub steps: u64,
    /// delta in (0, 1), e.g. 1e-5 (below 1/records).
    #[arg(long)]
    pub delta: f64,
}

/// Arguments of `retort privacy calibrate`.
#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// Target epsilon (> 0).
    #[arg(long)]
    pub epsilon: f64,
    /// Poisson sampling rate q in (0, 1].
    #[arg(long)]
    pub q: f64,
    /// Number of steps.
    #[arg(long)]
    pub steps: u64,
    /// delta in (0, 1).
    #[arg(long)]
    pub delta: f64,
}

/// Plain words for what (ε, δ) means for one record.
pub fn explain(epsilon: f64, delta: f64) -> String {
    let factor = epsilon.exp();
    let factor = if factor.is_finite() && factor < 1e6 {
        format!("{factor:.3}")
    } else {
        format!("e^{epsilon:.3}")
    };
    format!(
        "What this means for one record (one image): whatever an observer concludes from the output, \
         the chance of any outcome changes by at most a factor of {factor} (e^epsilon) whether or not \
         that image was in the data, except with probability at most delta = {delta:e}. \
         Smaller epsilon is stronger protection; delta should be far below 1/number of records."
    )
}

fn fmt_eps(e: f64) -> String {
    if e.is_finite() {
        format!("{e:.4}")
    } else {
        "not computable (too large)".into()
    }
}

fn num(e: f64) -> serde_json::Value {
    if e.is_finite() {
        json!(e)
    } else {
        serde_json::Value::Null
    }
}

/// Run `retort privacy`.
///
/// # Errors
/// `dp-invalid-parameter` (exit 1) for NaN, infinite or out-of-range values;
/// `dp-calibration-failed` when no sigma up to 10^4 meets the target.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    match args.command {
        Sub::Audit(a) => super::privacy_audit::run(a, ctx),
        Sub::Epsilon(a) => {
            dp::SampleRate::new(a.q)?;
            dp::NoiseMultiplier::new(a.sigma)?;
            dp::Delta::new(a.delta)?;
            let r =
                accountant::epsilon(&[DpEvent::poisson_gaussian(a.q, a.sigma, a.steps)], a.delta)?;
            let human = format!(
                "DP-SGD with Poisson sampling q = {}, noise multiplier sigma = {}, {} steps, delta = {:e}\n\
                 (add/remove-one-image neighbouring relation)\n\
                 \n  epsilon (PLD, tight)          {}\n  epsilon (RDP, upper bound)    {}\n\
                 \nReported epsilon: {} (by the {} accountant; both are sound upper bounds, the smaller is reported).\n\n{}\n",
                a.q,
                a.sigma,
                a.steps,
                a.delta,
                fmt_eps(r.epsilon_pld),
                fmt_eps(r.epsilon_rdp),
                fmt_eps(r.epsilon),
                r.accountant.to_uppercase(),
                explain(r.epsilon, a.delta)
            );
            Ok(Report::new(
                human,
                json!({
                    "epsilon": num(r.epsilon),
                    "epsilon_rdp": num(r.epsilon_rdp),
                    "epsilon_pld": num(r.epsilon_pld),
                    "accountant": r.accountant,
                    "q": a.q, "sigma": a.sigma, "steps": a.steps, "delta": a.delta,
                    "neighbouring": "add-remove-one-image",
                }),
            ))
        }
        Sub::Calibrate(a) => {
            dp::Epsilon::new(a.epsilon)?;
            dp::SampleRate::new(a.q)?;
            dp::Delta::new(a.delta)?;
            let sigma = calibrate::noise_multiplier(a.epsilon, a.delta, a.q, a.steps)?;
            let r =
                accountant::epsilon(&[DpEvent::poisson_gaussian(a.q, sigma, a.steps)], a.delta)?;
            let human = format!(
                "Smallest noise multiplier for epsilon <= {} at delta = {:e}, q = {}, {} steps:\n\
                 \n  sigma = {:.4}   (epsilon achieved {:.4} by {}; RDP alone gives {:.4})\n\n{}\n",
                a.epsilon,
                a.delta,
                a.q,
                a.steps,
                sigma,
                r.epsilon,
                r.accountant.to_uppercase(),
                r.epsilon_rdp,
                explain(r.epsilon, a.delta)
            );
            Ok(Report::new(
                human,
                json!({
                    "sigma": sigma,
                    "epsilon_achieved": num(r.epsilon),
                    "epsilon_rdp": num(r.epsilon_rdp),
                    "epsilon_pld": num(r.epsilon_pld),
                    "accountant": r.accountant,
                    "q": a.q, "steps": a.steps, "delta": a.delta, "target_epsilon": a.epsilon,
                }),
            ))
        }
    }
}
