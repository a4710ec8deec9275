//! TEMPORARY adapter until the `dp` branch lands: the same serde shape as `dp::DpEvent`.
#![allow(missing_docs)]

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DpEvent {
    PoissonSampledGaussian { q: f64, sigma: f64, steps: u64 },
    Gaussian { sigma: f64, count: u64 },
    Composed { events: Vec<DpEvent> },
}

impl DpEvent {
    pub fn poisson_gaussian(q: f64, sigma: f64, steps: u64) -> DpEvent {
        DpEvent::PoissonSampledGaussian { q, sigma, steps }
    }
    pub fn gaussian(sigma: f64, count: u64) -> DpEvent {
        DpEvent::Gaussian { sigma, count }
    }
}

/// TEMPORARY stand-ins for `dp::exact` / `dp::calibrate` / `dp::accountant` until `dp` lands.
pub mod exact {
    pub fn gaussian_release(values: &[f64], l2: f64, sigma: f64) -> Result<Vec<f64>, String> {
        let mut v = values.to_vec();
        crate::dp::noise::SecureGaussian::from_os()
            .map_err(|e| e.to_string())?
            .add_noise_f64(&mut v, l2 * sigma);
        Ok(v)
    }
}
pub mod calibrate {
    pub fn noise_multiplier(_e: f64, _d: f64, _q: f64, _s: u64) -> Result<f64, String> {
        Err("dp::calibrate not merged yet".into())
    }
}
