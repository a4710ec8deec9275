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
