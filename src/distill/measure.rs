//! **Measurement harness, not the product path.** Entry points for the repository's integration
//! measurements (`tests/it`, e.g. `distill::measure_dm_fashion`) that distill a labelled image
//! set held in memory *without a ledger*: each builds the [`Allowance`] from the plan's own
//! events and wraps the images as [`Records`] itself.
//!
//! # Privacy
//! These functions bypass the ledger and the audit log: nothing records that the images were
//! used. The CLI never calls them, and nothing released by Retort comes from them. They exist
//! because `Records` and `Allowance` can only be built inside the crate (by the run lifecycle,
//! after a reservation); use them on public benchmark data only. The mechanism itself is the
//! same one the product uses.

use super::dm::{self, DmParams, Release};
use super::{Error, Outcome, Plan};
use crate::dataset::Images;
use crate::dp::mechanism::{Allowance, Records};
use crate::dp::DpEvent;
use crate::nn::Net;
use crate::progress::Sink;

/// [`super::run`] on `train` with an allowance of exactly `plan.events` (the run spends at
/// most those; a harness that changes the parameters after planning must re-plan, or the run
/// is refused with `dp-allowance-exceeded`). Measurement only: no ledger, no audit record.
///
/// # Errors
/// As [`super::run`].
pub fn run_unaccounted(plan: &Plan, train: &Images, sink: Sink<'_>) -> Result<Outcome, Error> {
    let mut allowance = Allowance::new(&plan.events)?;
    super::run(plan, &Records::new(train), &mut allowance, sink)
}

/// `dm`'s one-shot release ([`dm::release::release`]) of `train` at noise multiplier `sigma`.
/// Measurement only: no ledger, no audit record.
///
/// # Errors
/// As [`dm::release::release`].
pub fn dm_release_unaccounted(
    train: &Images,
    classes: usize,
    p: &DmParams,
    nets: &[Net],
    sigma: f64,
    sink: Sink<'_>,
) -> Result<(Release, &'static str), Error> {
    let mut allowance = Allowance::new(&[DpEvent::gaussian(sigma, 1)])?;
    dm::release::release(
        &Records::new(train),
        &mut allowance,
        classes,
        p,
        nets,
        sigma,
        sink,
    )
}

/// `dm`'s DP-SGD warm-up ([`dm::release::warm_up`]) on `train`. Measurement only: no ledger,
/// no audit record.
///
/// # Errors
/// As [`dm::release::warm_up`].
pub fn dm_warm_up_unaccounted(
    train: &Images,
    p: &DmParams,
    nets: &mut [Net],
    q: f64,
    sigma: f64,
    sink: Sink<'_>,
) -> Result<Vec<bool>, Error> {
    let steps = p.warmup.as_ref().map_or(0, |w| w.total_steps());
    let mut allowance = Allowance::new(&[DpEvent::poisson_gaussian(q, sigma, steps)])?;
    dm::release::warm_up(
        &Records::new(train),
        &mut allowance,
        p,
        nets,
        q,
        sigma,
        sink,
    )
}

/// The DP teacher ([`super::teacher::train`]) on `train` at noise multiplier `sigma`.
/// Measurement only: no ledger, no audit record.
///
/// # Errors
/// As [`super::teacher::train`].
pub fn teacher_unaccounted(
    train: &Images,
    p: &super::teacher::TeacherParams,
    classes: usize,
    sigma: f64,
    sink: Sink<'_>,
) -> Result<super::teacher::Teacher, Error> {
    let mut allowance = Allowance::new(&super::teacher::events(p, train.len(), sigma))?;
    super::teacher::train(
        &Records::new(train),
        &mut allowance,
        p,
        classes,
        sigma,
        sink,
    )
}
