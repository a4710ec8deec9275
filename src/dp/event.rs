//! The accounting vocabulary: what a mechanism cost, in a form accountants consume and the ledger
//! stores (so every spend can be recomputed and audited later).
//!
//! The serde shape is fixed by the cross-module contract:
//! `{"kind":"poisson-sampled-gaussian","q":f64,"sigma":f64,"steps":u64}`,
//! `{"kind":"gaussian","sigma":f64,"count":u64}`, `{"kind":"composed","events":[...]}`.
//! `sigma` is the noise multiplier: noise std = sigma × L2 sensitivity.

use serde::{Deserialize, Serialize};

use super::Error;

/// One privacy event under the add/remove-one neighbouring relation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DpEvent {
    /// `steps` DP-SGD steps: each record Poisson-sampled with probability `q`, per-sample clipping
    /// to norm C, Gaussian noise of std `sigma`·C on the sum.
    PoissonSampledGaussian {
        /// Sampling rate in (0, 1].
        q: f64,
        /// Noise multiplier (> 0).
        sigma: f64,
        /// Number of steps.
        steps: u64,
    },
    /// `count` releases of the plain Gaussian mechanism, sensitivity-normalised (std = `sigma` × Δ₂).
    Gaussian {
        /// Noise multiplier (> 0).
        sigma: f64,
        /// How many times it is applied.
        count: u64,
    },
    /// Composition of several events (adaptive composition holds for both accountants).
    Composed {
        /// The parts.
        events: Vec<DpEvent>,
    },
}

/// The most compositions of one (q, sigma) pair the accountants accept.
pub const MAX_TIMES: u64 = 1_000_000_000;
/// The largest noise multiplier the accountants accept.
pub const MAX_SIGMA: f64 = 1e6;

/// A flattened elementary event: the per-step subsampled Gaussian (q, sigma) applied `times` times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Atom {
    pub q: f64,
    pub sigma: f64,
    pub times: u64,
}

impl DpEvent {
    /// DP-SGD: `steps` Poisson-subsampled Gaussian steps.
    pub fn poisson_gaussian(q: f64, sigma: f64, steps: u64) -> DpEvent {
        DpEvent::PoissonSampledGaussian { q, sigma, steps }
    }

    /// `count` plain Gaussian releases.
    pub fn gaussian(sigma: f64, count: u64) -> DpEvent {
        DpEvent::Gaussian { sigma, count }
    }

    /// Check every parameter.
    ///
    /// # Errors
    /// `dp-invalid-parameter` for NaN/infinite/out-of-range values.
    pub fn validate(&self) -> Result<(), Error> {
        self.atoms().map(|_| ())
    }

    /// The events flattened to (q, sigma, times) atoms, merging identical (q, sigma) pairs.
    pub(crate) fn atoms(&self) -> Result<Vec<Atom>, Error> {
        let mut out: Vec<Atom> = Vec::new();
        self.collect(&mut out)?;
        Ok(out)
    }

    fn collect(&self, out: &mut Vec<Atom>) -> Result<(), Error> {
        let mut push = |q: f64, sigma: f64, times: u64| -> Result<(), Error> {
            super::SampleRate::new(q)?;
            super::NoiseMultiplier::new(sigma)?;
            if sigma > MAX_SIGMA {
                return Err(Error::UnsupportedEvent(format!(
                    "noise multiplier {sigma} is above {MAX_SIGMA:e}"
                )));
            }
            if times == 0 {
                return Ok(());
            }
            let total = match out.iter().position(|a| a.q == q && a.sigma == sigma) {
                Some(i) => {
                    out[i].times = out[i].times.saturating_add(times);
                    out[i].times
                }
                None => {
                    out.push(Atom { q, sigma, times });
                    times
                }
            };
            if total > MAX_TIMES {
                return Err(Error::UnsupportedEvent(format!(
                    "{total} compositions of one mechanism (at most {MAX_TIMES:e} are supported)"
                )));
            }
            Ok(())
        };
        match self {
            DpEvent::PoissonSampledGaussian { q, sigma, steps } => push(*q, *sigma, *steps),
            DpEvent::Gaussian { sigma, count } => push(1.0, *sigma, *count),
            DpEvent::Composed { events } => {
                for e in events {
                    e.collect(out)?;
                }
                Ok(())
            }
        }
    }
}

/// Flatten a list of events.
pub(crate) fn atoms_of(events: &[DpEvent]) -> Result<Vec<Atom>, Error> {
    DpEvent::Composed {
        events: events.to_vec(),
    }
    .atoms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_shape_is_the_contract() {
        let e = DpEvent::Composed {
            events: vec![
                DpEvent::poisson_gaussian(0.01, 1.1, 1000),
                DpEvent::gaussian(2.0, 3),
            ],
        };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(
            s,
            r#"{"kind":"composed","events":[{"kind":"poisson-sampled-gaussian","q":0.01,"sigma":1.1,"steps":1000},{"kind":"gaussian","sigma":2.0,"count":3}]}"#
        );
        let back: DpEvent = serde_json::from_str(&s).unwrap();
        assert_eq!(back, e);
        let atoms = back.atoms().unwrap();
        assert_eq!(atoms.len(), 2);
        assert_eq!(atoms[1].q, 1.0);
    }

    #[test]
    fn fail_bad_parameters() {
        assert!(DpEvent::poisson_gaussian(0.0, 1.0, 1).validate().is_err());
        assert!(DpEvent::poisson_gaussian(0.1, f64::NAN, 1)
            .validate()
            .is_err());
        assert!(DpEvent::gaussian(-1.0, 1).validate().is_err());
        assert!(DpEvent::poisson_gaussian(0.1, 1.0, 0).validate().is_ok());
        assert!(DpEvent::poisson_gaussian(0.1, 1.0, u64::MAX)
            .validate()
            .is_err());
        assert!(DpEvent::gaussian(1e300, 1).validate().is_err());
    }
}
