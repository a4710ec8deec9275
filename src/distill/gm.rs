//! Gradient matching under DP-SGD (`gm`), the DC/DSA family (Zhao et al. 2021) made private.
//!
//! - Synthetic images start from noise (never from real images), `ipc` per class.
//! - Each outer iteration draws a fresh randomly initialised ConvNet (GELU, so the
//!   finite-difference Hessian-vector product below is the true derivative).
//! - Each inner step is ONE release of the one mechanism
//!   ([`crate::dp::mechanism::GaussianSum::release`]): it Poisson-samples the real data
//!   (each record with probability q, OS-keyed), runs the per-record function — the
//!   per-sample gradients of the shifted records ([`crate::nn::per_sample_grads`]) — clips each
//!   below C and forms one clipped sum **per class** (`Grouping::ByClass`). A record touches
//!   only its class's sum, so the vector of all class sums has L2 sensitivity C, and adding
//!   N(0, σ²C²) to every coordinate is ONE Gaussian mechanism per step: `steps` of them compose
//!   as the event `{"kind":"poisson-sampled-gaussian","q","sigma","steps"}`, each charged to the
//!   run's allowance before the step reads a record.
//! - The synthetic images of each class are updated to match their class's noisy gradient under
//!   the layer-wise cosine distance (Σ over output rows of 1 − cos; 1-row groups such as norm
//!   parameters are skipped). It is scale-free, so no private count is ever divided by.
//! - The matching gradient w.r.t. the synthetic pixels is first order: with v = ∂M/∂g_syn,
//!   dM/dx ≈ [∇ₓL(θ+εv) − ∇ₓL(θ−εv)]/2ε ([`crate::nn::Net::input_grad_hvp_fd`]).
//! - Differentiable siamese augmentation: one random integer shift (edge-replicated) per step,
//!   applied to the real batch and to the synthetic batch alike; the synthetic gradient is
//!   mapped back through the shift's adjoint.
//! - Between outer iterations the network is trained on the synthetic images only (free).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Error, Outcome, Plan, SyntheticSet};
use crate::dataset::Shape;
use crate::dp::mechanism::{Allowance, Batch, GaussianSum, Grouping, Noise, Records, Sampling};
use crate::dp::{ClipNorm, NoiseMultiplier, SampleRate};
use crate::nn::{Activation, Arch, ConvNetConfig, Net};
use crate::progress::{self, Event, Sink};

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
    /// Network width (channels).
    pub width: usize,
    /// Network depth (conv blocks).
    pub depth: usize,
    /// SGD learning rate on synthetic pixels.
    pub lr_img: f64,
    /// SGD momentum on synthetic pixels.
    pub momentum: f64,
    /// Network training steps on the synthetic set between outer iterations (free).
    pub net_steps: usize,
    /// Network learning rate on the synthetic set.
    pub lr_net: f64,
    /// Finite-difference step (absolute, along the unit direction) of the HVP.
    pub fd_eps: f64,
    /// Maximum shift of the siamese augmentation.
    pub max_shift: usize,
    /// Standard deviation of the noise the synthetic pixels start from (around 0.5).
    pub init_std: f64,
}

impl GmParams {
    /// Defaults sized to the public record count.
    pub fn defaults(n: usize, _classes: usize, _ipc: usize) -> GmParams {
        GmParams {
            // 80 × 10 steps keeps a 60,000-image run inside 30 minutes on 2 cores: a measured
            // 100-step run on Fashion-MNIST took 171 s (docs/distill.md), so 800 steps ≈ 23 min.
            outer: if n <= 5000 { 20 } else { 80 },
            inner: 10,
            expected_batch: 256.min(n.max(1)),
            clip_norm: 1.0,
            width: 64,
            depth: 3,
            lr_img: 0.1,
            momentum: 0.5,
            net_steps: 10,
            lr_net: 0.01,
            fd_eps: 0.01,
            max_shift: 2,
            init_std: 0.2,
        }
    }

    /// Total Poisson-sampled steps (= Gaussian mechanisms).
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
        if !(self.clip_norm > 0.0 && self.clip_norm.is_finite() && self.fd_eps > 0.0) {
            return Err(Error::BadParameter {
                name: "clip_norm".into(),
                why: "must be positive and finite".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn arch(&self, shape: Shape, classes: usize) -> Arch {
        Arch::ConvNet(ConvNetConfig {
            channels: shape.c,
            height: shape.h,
            width: shape.w,
            classes,
            net_width: self.width,
            depth: self.depth,
            activation: Activation::Gelu,
        })
    }
}

/// Calibrate σ for `steps` Poisson-sampled Gaussian steps at rate `q` (tight accountant).
/// Returns `(sigma, epsilon achieved, accountant)`.
///
/// # Errors
/// `distill-calibration`.
pub fn calibrate(
    epsilon: f64,
    delta: f64,
    q: f64,
    steps: u64,
) -> Result<(f64, f64, String), Error> {
    let fail = || Error::Calibration {
        epsilon,
        delta,
        steps,
    };
    let sigma =
        crate::dp::calibrate::noise_multiplier(epsilon, delta, q, steps).map_err(|_| fail())?;
    let rep =
        crate::dp::accountant::epsilon(&[super::DpEvent::poisson_gaussian(q, sigma, steps)], delta)
            .map_err(|_| fail())?;
    Ok((sigma, rep.epsilon, rep.accountant.to_string()))
}

fn nn_err(e: crate::nn::Error) -> Error {
    Error::Compute {
        what: e.to_string(),
    }
}

fn shift(x: &[f32], shape: Shape, dy: i64, dx: i64) -> Vec<f32> {
    super::augment::shift_each(x, shape, &vec![(dy, dx); x.len() / shape.len()])
}

fn shift_adjoint(g: &[f32], shape: Shape, dy: i64, dx: i64) -> Vec<f32> {
    super::augment::shift_each_adjoint(g, shape, &vec![(dy, dx); g.len() / shape.len()])
}

/// Layer-wise cosine matching distance between the synthetic gradient `gs` and the (noisy) real
/// gradient `gr`, and its gradient w.r.t. `gs`. Groups with one row are skipped.
pub(crate) fn cosine_match(
    groups: &[crate::nn::ParamGroup],
    gs: &[f32],
    gr: &[f32],
) -> (f64, Vec<f32>) {
    let mut v = vec![0f32; gs.len()];
    let mut dist = 0f64;
    for g in groups.iter().filter(|g| g.rows > 1) {
        for r in 0..g.rows {
            let lo = g.offset + r * g.cols;
            let a = &gs[lo..lo + g.cols];
            let b = &gr[lo..lo + g.cols];
            let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
            for (&x, &y) in a.iter().zip(b) {
                ab += x as f64 * y as f64;
                aa += x as f64 * x as f64;
                bb += y as f64 * y as f64;
            }
            let (na, nb) = (aa.sqrt() + 1e-12, bb.sqrt() + 1e-12);
            let cos = ab / (na * nb);
            dist += 1.0 - cos;
            // d(1 - cos)/da = -(b/(|a||b|) - cos·a/|a|²)
            for ((vi, &x), &y) in v[lo..lo + g.cols].iter_mut().zip(a).zip(b) {
                *vi = (-(y as f64 / (na * nb) - cos * x as f64 / (na * na))) as f32;
            }
        }
    }
    (dist, v)
}

/// Estimated seconds: time one clipped per-sample step on random data of the planned batch and
/// one synthetic matching pass, scale to the planned steps.
///
/// # Errors
/// `distill-compute`.
pub fn estimate_seconds(p: &GmParams, plan: &Plan) -> Result<f64, Error> {
    let k = plan.classes.len();
    let shape = plan.shape;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let net = Net::new(p.arch(shape, k), &mut rng).map_err(nn_err)?;
    let b = p.expected_batch.clamp(1, 64);
    let x: Vec<f32> = (0..b * shape.len()).map(|_| rng.gen::<f32>()).collect();
    let labels: Vec<u32> = (0..b).map(|i| (i % k) as u32).collect();
    let t = std::time::Instant::now();
    let rows = crate::nn::per_sample_grads(&net, &x, &labels).map_err(nn_err)?;
    rows.chunks(net.num_params()).for_each(|r| {
        std::hint::black_box(crate::dp::clip::norm(r));
    });
    let per_real = t.elapsed().as_secs_f64() / b as f64;
    let xs = &x[..plan.ipc.min(b) * shape.len()];
    let ls = &labels[..plan.ipc.min(b)];
    let t = std::time::Instant::now();
    let lg = net.loss_and_grads(xs, ls).map_err(nn_err)?;
    net.input_grad_hvp_fd(xs, ls, &lg.param_grads, p.fd_eps as f32)
        .map_err(nn_err)?;
    let per_class_syn = t.elapsed().as_secs_f64();
    let step = per_real * p.expected_batch as f64 + per_class_syn * k as f64;
    Ok(step * p.steps() as f64 + per_class_syn / 3.0 * (p.outer * p.net_steps) as f64)
}

/// Run `gm` on the private training split.
///
/// # Privacy
/// Spends exactly `plan.events` = `steps` Poisson-sampled Gaussian mechanisms at (q, σ), each
/// one release of the one mechanism charged to `allowance` before it reads a record; the
/// synthetic side (matching, network training) is post-processing of the noisy class sums.
///
/// # Errors
/// `dp-allowance-exceeded` (nothing read), `distill-cancelled`, `distill-compute`, `dp-*`.
pub fn run(
    plan: &Plan,
    p: &GmParams,
    data: &Records<'_>,
    allowance: &mut Allowance,
    sink: Sink<'_>,
) -> Result<Outcome, Error> {
    let shape = plan.shape;
    let k = plan.classes.len();
    let ipc = plan.ipc;
    let d = shape.len();
    let q = plan.sampling_rate.ok_or_else(|| Error::Compute {
        what: "gm plan without a sampling rate".into(),
    })?;
    let mech = GaussianSum {
        sampling: Sampling::Poisson(SampleRate::new(q)?),
        grouping: Grouping::ByClass(k),
        clip: ClipNorm::new(p.clip_norm)?,
        sigma: NoiseMultiplier::new(plan.noise_multiplier)?,
        noise: Noise::Float,
        chunk: crate::nn::per_sample_chunk(),
    };
    let mut init_rng = ChaCha8Rng::seed_from_u64(plan.seed);
    // Synthetic images from noise.
    let normal = rand_distr::Normal::new(0.5f32, p.init_std as f32).expect("invariant: std > 0");
    let mut syn: Vec<f32> = (0..k * ipc * d)
        .map(|_| rand_distr::Distribution::sample(&normal, &mut init_rng).clamp(0.0, 1.0))
        .collect();
    let syn_labels: Vec<u32> = (0..k * ipc).map(|i| (i / ipc) as u32).collect();
    let mut mom = vec![0f32; syn.len()];
    let t_start = std::time::Instant::now();
    let mut private_seconds = 0.0;
    let mut last_dist = Vec::new();
    sink(Event::Start {
        label: "gradient matching (private)",
        total: plan.steps,
    });
    for _outer in 0..p.outer {
        let mut net = Net::new(p.arch(shape, k), &mut init_rng).map_err(nn_err)?;
        let groups = net.groups();
        for _inner in 0..p.inner {
            progress::check().map_err(|_| Error::Cancelled)?;
            // The siamese shift is public (from the seed), the same for every record.
            let dy = init_rng.gen_range(-(p.max_shift as i64)..=p.max_shift as i64);
            let dx = init_rng.gen_range(-(p.max_shift as i64)..=p.max_shift as i64);
            // One Poisson sample, one Gaussian mechanism over all class sums.
            let t = std::time::Instant::now();
            let grads = |b: &mut Batch<'_>| -> Result<Vec<f32>, Error> {
                let (xb, labels) = (shift(b.pixels, shape, dy, dx), b.labels);
                crate::nn::per_sample_grads_into(&net, &xb, labels, b.buffer()).map_err(nn_err)
            };
            let released =
                mech.release(allowance, data, net.num_params(), &grads, &progress::silent)?;
            let sums: Vec<Vec<f32>> = released
                .sums
                .iter()
                .map(|s| s.iter().map(|&v| v as f32).collect())
                .collect();
            private_seconds += t.elapsed().as_secs_f64();
            // Post-processing: match each class's synthetic gradient to its noisy sum.
            last_dist.clear();
            for (c, g_real) in sums.iter().enumerate() {
                let range = c * ipc * d..(c + 1) * ipc * d;
                let xs = shift(&syn[range.clone()], shape, dy, dx);
                let ls = &syn_labels[c * ipc..(c + 1) * ipc];
                let lg = net.loss_and_param_grads(&xs, ls).map_err(nn_err)?;
                let (dist, v) = cosine_match(&groups, &lg.param_grads, g_real);
                last_dist.push(dist);
                let gx = net
                    .input_grad_hvp_fd(&xs, ls, &v, p.fd_eps as f32)
                    .map_err(nn_err)?;
                let gx = shift_adjoint(&gx, shape, dy, dx);
                for ((s, m), g) in syn[range.clone()].iter_mut().zip(&mut mom[range]).zip(&gx) {
                    *m = p.momentum as f32 * *m + g;
                    *s = (*s - p.lr_img as f32 * *m).clamp(0.0, 1.0);
                }
            }
            sink(Event::Advance(1));
        }
        // Train the network on the synthetic images (free post-processing).
        for _ in 0..p.net_steps {
            let lg = net
                .loss_and_param_grads(&syn, &syn_labels)
                .map_err(nn_err)?;
            for (w, g) in net.params_mut().iter_mut().zip(&lg.param_grads) {
                *w -= p.lr_net as f32 * g;
            }
        }
    }
    sink(Event::Finish);
    let total = t_start.elapsed().as_secs_f64();
    Ok(Outcome {
        synthetic: SyntheticSet {
            shape,
            data: syn,
            labels: syn_labels,
            soft_labels: None,
        },
        events: plan.events.clone(),
        private_seconds,
        synthesis_seconds: total - private_seconds,
        diagnostics: serde_json::json!({
            "matching_distance_last": last_dist.iter().sum::<f64>() / last_dist.len().max(1) as f64,
        }),
        teacher: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_gradient_matches_finite_difference() {
        let groups = vec![crate::nn::ParamGroup {
            name: "w".into(),
            offset: 0,
            rows: 2,
            cols: 3,
        }];
        let gs = vec![0.3f32, -0.2, 0.5, 0.1, 0.4, -0.3];
        let gr = vec![0.1f32, 0.2, 0.3, -0.5, 0.2, 0.1];
        let (_, v) = cosine_match(&groups, &gs, &gr);
        for i in 0..6 {
            let h = 1e-3f32;
            let mut p = gs.clone();
            p[i] += h;
            let mut m = gs.clone();
            m[i] -= h;
            let fd = (cosine_match(&groups, &p, &gr).0 - cosine_match(&groups, &m, &gr).0)
                / (2.0 * h as f64);
            assert!(
                (fd - v[i] as f64).abs() < 1e-3,
                "coordinate {i}: {fd} vs {}",
                v[i]
            );
        }
        // Identical directions: distance 0; scale-free.
        let scaled: Vec<f32> = gr.iter().map(|x| x * 7.0).collect();
        assert!(cosine_match(&groups, &scaled, &gr).0.abs() < 1e-6);
    }
}
