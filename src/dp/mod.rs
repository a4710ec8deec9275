//! The privacy engine: validated parameter types, the accounting vocabulary ([`DpEvent`]),
//! **the one mechanism** every method releases private statistics through ([`mechanism`]),
//! its pieces (Poisson sampling, clipping, OS-keyed Gaussian noise, opendp's exact Gaussian),
//! two accountants (RDP and PLD), calibration of the noise multiplier, and the analytic
//! Gaussian curve ([`analytic`]) that cross-checks them.
//!
//! # Privacy
//! Everything here is analysed under the add/remove-one-record neighbouring relation (SECURITY.md, "Differential privacy").
//! [`mechanism::GaussianSum::release`] Poisson-samples each record with probability `q`
//! ([`sample`]) or takes every record, runs the caller's per-record function, clips every
//! per-record row to L2 norm below `C` ([`clip`]), sums per group, and adds `N(0, σ²C²)` per
//! coordinate ([`noise`] or [`exact`]). It charges its event ([`DpEvent::PoissonSampledGaussian`]
//! or [`DpEvent::Gaussian`]) to the run's [`mechanism::Allowance`] before it reads a record;
//! [`accountant`] turns a list of events into `(ε, δ)`: both accountants are sound upper bounds
//! and the reported ε is the smaller of the two.

pub mod accountant;
pub mod analytic;
pub mod calibrate;
pub mod clip;
pub mod event;
pub mod exact;
pub mod mechanism;
pub mod noise;
pub mod one_run;
pub mod sample;
pub mod split;

pub use event::DpEvent;
pub use mechanism::{Allowance, GaussianSum, MechError, Records, Released};

use crate::error::{Class, Coded};

/// Errors of the privacy engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A privacy parameter is NaN, infinite, negative or out of its range.
    #[error("invalid {name} {value}: it must be {expected}")]
    InvalidParameter {
        /// Which parameter (epsilon, delta, sigma, ...).
        name: &'static str,
        /// The value given.
        value: f64,
        /// What it must be.
        expected: &'static str,
    },
    /// An event the accountants cannot analyse (e.g. an empty composition is fine, but a
    /// zero noise multiplier is not).
    #[error("unsupported privacy event: {0}")]
    UnsupportedEvent(String),
    /// No noise multiplier up to the search limit reaches the target.
    #[error("no noise multiplier up to {max_sigma} reaches epsilon {target} at delta {delta}")]
    CalibrationFailed {
        /// Target ε.
        target: f64,
        /// δ.
        delta: f64,
        /// Largest σ tried.
        max_sigma: f64,
    },
    /// The exact (opendp) Gaussian measurement failed.
    #[error("exact Gaussian release failed: {0}")]
    Exact(String),
    /// The problem is too large for the accountant's grid.
    #[error("privacy accounting failed: {0}")]
    Accounting(String),
    /// A release was attempted that the run's reservation does not cover. Nothing was read.
    #[error("the reservation does not cover the release {requested:?}; unspent: {unspent:?}")]
    AllowanceExceeded {
        /// The event the release would cost.
        requested: DpEvent,
        /// What the reservation still allows.
        unspent: Vec<DpEvent>,
    },
    /// The operating system's random source failed (sampling, noise or record randomness).
    #[error("the operating system's random source failed")]
    Rng,
    /// The per-record function returned a buffer that is not `rows × dim` values.
    #[error("the per-record function returned {got} values, the release needs {expected}")]
    RowShape {
        /// Values expected (rows × dim).
        expected: usize,
        /// Values returned.
        got: usize,
    },
    /// A record's label is outside the release's class groups.
    #[error("record label {label} is outside the {groups} class groups of the release")]
    LabelOutOfRange {
        /// The label.
        label: u32,
        /// The number of groups.
        groups: usize,
    },
}

impl Error {
    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] = &[
        "dp-invalid-parameter",
        "dp-unsupported-event",
        "dp-calibration-failed",
        "dp-exact-failed",
        "dp-accounting-failed",
        "dp-allowance-exceeded",
        "dp-rng-failed",
        "dp-row-shape",
        "dp-label-out-of-range",
    ];

    pub(crate) fn invalid(name: &'static str, value: f64, expected: &'static str) -> Error {
        Error::InvalidParameter {
            name,
            value,
            expected,
        }
    }
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::InvalidParameter { .. } => "dp-invalid-parameter",
            Error::UnsupportedEvent(_) => "dp-unsupported-event",
            Error::CalibrationFailed { .. } => "dp-calibration-failed",
            Error::Exact(_) => "dp-exact-failed",
            Error::Accounting(_) => "dp-accounting-failed",
            Error::AllowanceExceeded { .. } => "dp-allowance-exceeded",
            Error::Rng => "dp-rng-failed",
            Error::RowShape { .. } => "dp-row-shape",
            Error::LabelOutOfRange { .. } => "dp-label-out-of-range",
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::InvalidParameter { name, expected, .. } => {
                let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                format!("give {article} {name} that is {expected}")
            }
            Error::UnsupportedEvent(_) => {
                "use a Poisson-subsampled Gaussian or plain Gaussian event with 0 < sigma <= 1e6, 0 < q <= 1 and at most 1e9 steps".into()
            }
            Error::CalibrationFailed { .. } => {
                "raise the target epsilon, lower the number of steps or the sampling rate".into()
            }
            Error::Exact(_) => "check the sensitivity and noise scale are finite and positive".into(),
            Error::Accounting(_) => {
                "the requested composition is far outside any useful privacy regime; use fewer steps or more noise".into()
            }
            Error::AllowanceExceeded { .. } => {
                "this is a bug: a method tried to spend more than the run reserved; nothing was read and the run is refused, please report it".into()
            }
            Error::Rng => "check the system's entropy source (getrandom)".into(),
            Error::RowShape { .. } | Error::LabelOutOfRange { .. } => {
                "this is a bug in the method calling the mechanism; please report it".into()
            }
        })
    }
    fn class(&self) -> Class {
        match self {
            Error::AllowanceExceeded { .. } => Class::Refused,
            // A privacy parameter wrong in itself (epsilon <= 0, q > 1, delta >= 1): usage.
            Error::InvalidParameter { .. } => Class::Usage,
            _ => Class::Input,
        }
    }
}

fn finite(name: &'static str, v: f64, expected: &'static str) -> Result<f64, Error> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::invalid(name, v, expected))
    }
}

macro_rules! newtype {
    ($(#[$m:meta])* $name:ident, $label:literal, $expected:literal, |$x:ident| $ok:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(f64);

        impl $name {
            /// Validate and wrap.
            ///
            /// # Errors
            #[doc = concat!("`dp-invalid-parameter` unless the value is ", $expected, ".")]
            pub fn new($x: f64) -> Result<$name, Error> {
                let $x = finite($label, $x, $expected)?;
                if $ok {
                    Ok($name($x))
                } else {
                    Err(Error::invalid($label, $x, $expected))
                }
            }
            /// The value.
            pub fn get(self) -> f64 {
                self.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = f64::deserialize(d)?;
                $name::new(v).map_err(serde::de::Error::custom)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

newtype!(
    /// A privacy-loss bound ε: finite and non-negative.
    Epsilon, "epsilon", "finite and >= 0", |x| x >= 0.0
);
newtype!(
    /// A failure probability δ: in the open interval (0, 1).
    Delta, "delta", "strictly between 0 and 1", |x| x > 0.0 && x < 1.0
);
newtype!(
    /// A noise multiplier σ (noise std = σ × sensitivity): finite and > 0.
    NoiseMultiplier, "sigma", "finite and > 0", |x| x > 0.0
);
newtype!(
    /// A clipping norm C: finite and > 0.
    ClipNorm, "clip norm", "finite and > 0", |x| x > 0.0
);
newtype!(
    /// A Poisson sampling rate q: in (0, 1].
    SampleRate, "sampling rate q", "in (0, 1]", |x| x > 0.0 && x <= 1.0
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_invalid_values_are_rejected() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, -1e-300] {
            assert!(Epsilon::new(v).is_err(), "epsilon {v}");
            assert!(NoiseMultiplier::new(v).is_err(), "sigma {v}");
            assert!(ClipNorm::new(v).is_err(), "clip {v}");
            assert!(SampleRate::new(v).is_err(), "q {v}");
            assert!(Delta::new(v).is_err(), "delta {v}");
        }
        assert!(Delta::new(0.0).is_err());
        assert!(Delta::new(1.0).is_err());
        assert!(SampleRate::new(0.0).is_err());
        assert!(SampleRate::new(1.5).is_err());
        assert!(NoiseMultiplier::new(0.0).is_err());
        assert_eq!(Epsilon::new(0.0).unwrap().get(), 0.0);
        assert_eq!(Delta::new(1e-5).unwrap().get(), 1e-5);
        assert_eq!(SampleRate::new(1.0).unwrap().get(), 1.0);
        let e: Result<Epsilon, _> = serde_json::from_str("-2.0");
        assert!(e.is_err());
        let e = Error::invalid("epsilon", -1.0, "finite and >= 0");
        assert_eq!(e.code(), "dp-invalid-parameter");
        assert!(e.to_string().contains("epsilon"));
    }
}
