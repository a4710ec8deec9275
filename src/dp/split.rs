//! The budget split: a run's ε divided among named releases, composed by the accountant.
//!
//! A run may release several things computed from private data: the main release of its
//! method (`main`), the held-out utility figures released at `eval` time (`utility`), and
//! later a DP teacher or a coarse start. Each is a [`Share`]: its own events, its own ε alone,
//! and the stage at which the ledger charges it. The planner calibrates the shares so that the
//! composition of **all** of them (RDP and PLD composition hold for adaptively chosen
//! mechanisms) meets the run's target ε at its δ; `plan`, the run record and the privacy report
//! show them share by share, so no spend is implicit (SmartNoise's hidden
//! `preprocessor_eps` is the failure this avoids).
//!
//! # Privacy
//! Add/remove-one-image neighbouring relation. The composed ε of the shares is an upper bound
//! on the privacy loss of everything the run releases; a share that is never released (a run
//! that is never evaluated) only makes the bound conservative.

use serde::{Deserialize, Serialize};

use super::accountant;
use super::event::DpEvent;
use super::{calibrate, Error};

/// When the ledger charges a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Stage {
    /// Charged by `distill`, before the training split is read.
    Distill,
    /// Charged by `eval`, before the held-out split's figures are released.
    Eval,
}

/// One named release of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// `main`, `utility`, `teacher`, `start`, …
    pub name: String,
    /// When it is charged.
    pub stage: Stage,
    /// The fraction of the run's target ε planned for this share alone (the shares' fractions
    /// sum to 1; the composed ε of the shares is what meets the target).
    pub fraction: f64,
    /// Its privacy events.
    pub events: Vec<DpEvent>,
    /// ε of this share alone at the run's δ (by the reported accountant).
    pub epsilon: f64,
    /// What it releases, in plain words.
    pub what: String,
}

/// The composed ε report of several shares at `delta`.
///
/// # Errors
/// `dp-invalid-parameter`, `dp-unsupported-event`, `dp-accounting-failed`.
pub fn composed(shares: &[Share], delta: f64) -> Result<accountant::EpsilonReport, Error> {
    let all: Vec<DpEvent> = shares.iter().flat_map(|s| s.events.clone()).collect();
    accountant::epsilon(&all, delta)
}

/// The smallest noise multiplier σ for `steps` Poisson-subsampled Gaussian steps at rate `q`
/// such that those steps composed with the `fixed` events (other shares of the same run) have
/// a reported ε of at most `target_epsilon` at `delta`.
///
/// # Privacy
/// The returned σ meets the target for the composition (the upper end of the final bracket is
/// returned).
///
/// # Errors
/// `dp-invalid-parameter`, `dp-calibration-failed` (the fixed events alone use up the target, or
/// σ would exceed 10⁴).
pub fn noise_multiplier_beside(
    target_epsilon: f64,
    delta: f64,
    q: f64,
    steps: u64,
    fixed: &[DpEvent],
) -> Result<f64, Error> {
    let alone = calibrate::noise_multiplier(target_epsilon, delta, q, steps)?;
    if fixed.is_empty() {
        return Ok(alone);
    }
    let ok = |s: f64| -> Result<bool, Error> {
        let mut ev = fixed.to_vec();
        ev.push(DpEvent::poisson_gaussian(q, s, steps));
        Ok(accountant::epsilon(&ev, delta)?.epsilon <= target_epsilon)
    };
    let fail = || Error::CalibrationFailed {
        target: target_epsilon,
        delta,
        max_sigma: 1e4,
    };
    // Adding events only raises ε, so the answer is at least σ alone.
    let mut lo = alone;
    let mut hi = alone * 1.05;
    while !ok(hi)? {
        lo = hi;
        hi *= 1.5;
        if hi > 1e4 {
            return Err(fail());
        }
    }
    while (hi - lo) > 5e-4 * hi {
        let mid = 0.5 * (lo + hi);
        if ok(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beside_meets_the_composed_target_and_costs_more_noise() {
        let fixed = vec![DpEvent::gaussian(30.0, 1)];
        let alone = calibrate::noise_multiplier(1.0, 1e-5, 0.01, 500).unwrap();
        let s = noise_multiplier_beside(1.0, 1e-5, 0.01, 500, &fixed).unwrap();
        assert!(s > alone, "{s} vs {alone}");
        let mut ev = fixed.clone();
        ev.push(DpEvent::poisson_gaussian(0.01, s, 500));
        let e = accountant::epsilon(&ev, 1e-5).unwrap().epsilon;
        assert!(e <= 1.0 + 1e-9 && e > 0.98, "{e}");
        // A small side release costs little noise (ε composes sub-additively for Gaussians).
        assert!(s < alone * 1.1, "{s} vs {alone}");
    }

    #[test]
    fn fail_fixed_events_that_use_up_the_target() {
        let fixed = vec![DpEvent::gaussian(0.5, 1)];
        assert!(noise_multiplier_beside(1.0, 1e-5, 0.01, 100, &fixed).is_err());
    }
}
