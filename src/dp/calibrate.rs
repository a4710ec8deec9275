//! Calibration: the smallest noise multiplier σ meeting a target (ε, δ), and the inverse helpers a
//! planner needs. Bisection over the forward accountant: first on the fast RDP bound (which
//! brackets the answer from above, since RDP ≥ PLD), then on the reported ε = min(RDP, PLD).
//!
//! # Privacy
//! The returned σ always satisfies the target by the accountant (the upper end of the final
//! bracket is returned, never the lower), so using it cannot exceed the target.

use super::accountant;
use super::event::DpEvent;
use super::{Delta, Epsilon, Error, SampleRate};

const MAX_SIGMA: f64 = 1e4;
const REL_TOL: f64 = 5e-4;

fn check(target: f64, delta: f64, q: f64) -> Result<(), Error> {
    Epsilon::new(target)?;
    if target <= 0.0 {
        return Err(Error::invalid("epsilon", target, "finite and > 0"));
    }
    Delta::new(delta)?;
    SampleRate::new(q)?;
    Ok(())
}

fn bisect(mut lo: f64, mut hi: f64, ok: impl Fn(f64) -> Result<bool, Error>) -> Result<f64, Error> {
    while (hi - lo) > REL_TOL * hi {
        let mid = 0.5 * (lo + hi);
        if ok(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// The smallest σ whose RDP ε meets the target (an upper bound for the tight σ).
///
/// # Errors
/// `dp-invalid-parameter`, `dp-calibration-failed`.
pub fn noise_multiplier_rdp(
    target_epsilon: f64,
    delta: f64,
    q: f64,
    steps: u64,
) -> Result<f64, Error> {
    check(target_epsilon, delta, q)?;
    let ok = |s: f64| -> Result<bool, Error> {
        Ok(
            accountant::epsilon_rdp(&[DpEvent::poisson_gaussian(q, s, steps)], delta)?
                <= target_epsilon,
        )
    };
    let mut hi = 1.0;
    while !ok(hi)? {
        hi *= 2.0;
        if hi > MAX_SIGMA {
            return Err(Error::CalibrationFailed {
                target: target_epsilon,
                delta,
                max_sigma: MAX_SIGMA,
            });
        }
    }
    let mut lo = hi / 2.0;
    while ok(lo)? {
        hi = lo;
        lo /= 2.0;
        if lo < 1e-3 {
            return Ok(hi);
        }
    }
    bisect(lo, hi, ok)
}

/// The smallest noise multiplier σ for `steps` Poisson-subsampled Gaussian steps at rate `q`
/// whose reported ε (min of RDP and PLD) at `delta` is at most `target_epsilon`.
///
/// # Privacy
/// Add/remove-one relation; the returned σ meets the target.
///
/// # Errors
/// `dp-invalid-parameter` for bad inputs; `dp-calibration-failed` if σ would exceed 10⁴.
pub fn noise_multiplier(target_epsilon: f64, delta: f64, q: f64, steps: u64) -> Result<f64, Error> {
    let hi = noise_multiplier_rdp(target_epsilon, delta, q, steps)?;
    if steps == 0 {
        return Ok(hi);
    }
    let ok = |s: f64| -> Result<bool, Error> {
        Ok(
            accountant::epsilon(&[DpEvent::poisson_gaussian(q, s, steps)], delta)?.epsilon
                <= target_epsilon,
        )
    };
    let (mut lo, mut hi) = (hi * 0.85, hi);
    while ok(lo)? {
        hi = lo;
        lo *= 0.85;
        if lo < 1e-3 {
            return Ok(hi);
        }
    }
    bisect(lo, hi, ok)
}

/// The smallest σ for `count` plain Gaussian releases (sensitivity-normalised) meeting the target:
/// one-shot releases such as a noisy statistic.
///
/// # Errors
/// As [`noise_multiplier`].
pub fn gaussian_noise_multiplier(
    target_epsilon: f64,
    delta: f64,
    count: u64,
) -> Result<f64, Error> {
    noise_multiplier(target_epsilon, delta, 1.0, count)
}

/// The largest number of steps (≤ `limit`) at rate `q` and noise `sigma` whose reported ε stays
/// within the target; 0 if not even one step does.
///
/// # Errors
/// `dp-invalid-parameter`.
pub fn max_steps(
    target_epsilon: f64,
    delta: f64,
    q: f64,
    sigma: f64,
    limit: u64,
) -> Result<u64, Error> {
    check(target_epsilon, delta, q)?;
    super::NoiseMultiplier::new(sigma)?;
    let ok = |t: u64| -> Result<bool, Error> {
        Ok(
            accountant::epsilon(&[DpEvent::poisson_gaussian(q, sigma, t)], delta)?.epsilon
                <= target_epsilon,
        )
    };
    if ok(limit)? {
        return Ok(limit);
    }
    let (mut lo, mut hi) = (0u64, limit); // ok(lo), !ok(hi)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if ok(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibrated_sigma_meets_target_and_is_tight() {
        let s = noise_multiplier(1.0, 1e-5, 0.01, 1000).unwrap();
        let e = accountant::epsilon(&[DpEvent::poisson_gaussian(0.01, s, 1000)], 1e-5).unwrap();
        assert!(e.epsilon <= 1.0);
        let e2 =
            accountant::epsilon(&[DpEvent::poisson_gaussian(0.01, s * 0.99, 1000)], 1e-5).unwrap();
        assert!(e2.epsilon > 1.0);
    }

    #[test]
    fn fail_bad_target() {
        assert!(noise_multiplier(0.0, 1e-5, 0.01, 10).is_err());
        assert!(noise_multiplier(f64::NAN, 1e-5, 0.01, 10).is_err());
        assert!(noise_multiplier(1.0, 2.0, 0.01, 10).is_err());
    }
}
