//! Gradient matching under DP-SGD (`gm`).

use serde::{Deserialize, Serialize};

use super::{Error, Outcome, Plan};
use crate::dataset::Images;
use crate::progress::Sink;

/// Hyper-parameters of `gm` (all public; recorded in `run.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GmParams {
    /// Outer iterations (a fresh random network each).
    pub outer: usize,
    /// Inner steps per outer iteration (one Poisson sample and one Gaussian mechanism each).
    pub inner: usize,
    /// Expected Poisson batch size (q = expected_batch / n).
    pub expected_batch: usize,
    /// Per-sample clip norm C.
    pub clip_norm: f64,
    /// Network width.
    pub width: usize,
    /// Learning rate on synthetic pixels.
    pub lr_img: f64,
    /// Network training steps on the synthetic set between outer iterations (free).
    pub net_steps: usize,
    /// Network learning rate on the synthetic set.
    pub lr_net: f64,
    /// Finite-difference step (relative) of the Hessian-vector product.
    pub fd_eps: f64,
    /// Maximum shift of the siamese augmentation.
    pub max_shift: usize,
}

impl GmParams {
    /// Defaults sized to the public record count.
    pub fn defaults(n: usize, _classes: usize, _ipc: usize) -> GmParams {
        GmParams {
            outer: if n <= 5000 { 20 } else { 100 },
            inner: 10,
            expected_batch: 256.min(n.max(1)),
            clip_norm: 1.0,
            width: 32,
            lr_img: 0.1,
            net_steps: 10,
            lr_net: 0.01,
            fd_eps: 0.01,
            max_shift: 2,
        }
    }

    /// Total Poisson-sampled steps.
    pub fn steps(&self) -> u64 {
        (self.outer * self.inner) as u64
    }

    /// Checks the values are usable.
    ///
    /// # Errors
    /// `distill-bad-parameter`.
    pub fn validate(&self) -> Result<(), Error> {
        if self.outer == 0 || self.inner == 0 || self.expected_batch == 0 || self.width == 0 {
            return Err(Error::BadParameter {
                name: "iterations".into(),
                why: "gm needs at least one outer iteration, inner step and sample".into(),
            });
        }
        Ok(())
    }
}

/// Calibrate σ for `steps` Poisson-sampled Gaussian steps.
///
/// # Errors
/// `distill-calibration`.
pub fn calibrate(epsilon: f64, delta: f64, _q: f64, steps: u64) -> Result<(f64, f64, String), Error> {
    Err(Error::Calibration {
        epsilon,
        delta,
        steps,
    })
}

/// Estimated seconds.
///
/// # Errors
/// `distill-compute`.
pub fn estimate_seconds(_p: &GmParams, _plan: &Plan) -> Result<f64, Error> {
    Ok(0.0)
}

/// Run gm.
///
/// # Errors
/// `distill-compute`.
pub fn run(_plan: &Plan, _p: &GmParams, _train: &Images, _sink: Sink<'_>) -> Result<Outcome, Error> {
    Err(Error::Compute {
        what: "gm is not wired yet".into(),
    })
}
