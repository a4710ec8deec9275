//! Distribution matching under differential privacy (`dm`).
//!
//! 1. **Release (private).** A fixed, public set of `nets` randomly initialised ConvNets
//!    (never trained; weights from the non-private initialisation seed) embeds training
//!    images ([`crate::nn::Net::embed`]: the flattened final feature map, followed when
//!    `block_means` is set by the per-channel spatial means of the earlier blocks,
//!    [`crate::nn::Net::embed_with_means`]), averaged over `augment` random augmentations
//!    (shifts, or one of shift / scale / rotate: [`augment::Family`]). A record's vector is
//!    `v = [alpha·u, beta]` with `alpha² + beta² = 1` (norm 1 up to f32 rounding); the one
//!    mechanism ([`crate::dp::mechanism`]) clips it below `C` with its rounding margin (at
//!    `C = 1` a scaling by at most 1 − 10⁻⁶) and sums the vectors per class. Adding or
//!    removing one image changes exactly one class sum by a vector of norm below `C`, so the
//!    matrix of class sums has L2 sensitivity `C`. Two ways to release it:
//!    - **per net** (`sample_rate = Some(q)`, the default): each net's release is over its own
//!      Poisson sample of the records (rate `q`, OS-keyed), with that net's embedding
//!      normalised to norm 1 as `u`, plus N(0, σ²C²) per coordinate: `nets` Poisson-sampled
//!      Gaussian mechanisms, accounted exactly as DP-SGD steps,
//!      `{"kind":"poisson-sampled-gaussian","q":q,"sigma":σ,"steps":nets}` ([`release::release_per_net`]).
//!      Hundreds of feature nets for the private compute of a few full passes.
//!    - **one shot** (`sample_rate = None`): every record under all nets at once, each net's
//!      part normalised to `1/sqrt(nets)` so their concatenation `u` has norm at most 1, plus
//!      N(0, σ²C²) per coordinate **once**: one Gaussian mechanism,
//!      `{"kind":"gaussian","sigma":σ,"count":1}` ([`release::release`]).
//! 2. **Post-processing (free).** The last coordinate of a noisy class sum divided by `beta` is
//!    a noisy class count released by the same mechanism (per net: pooled over the nets); the
//!    noisy class mean of `u` is the noisy sum divided by `alpha` × that count (never by a
//!    private count). Synthetic images (from noise, white or spatially smooth, never from
//!    real images) are optimised with Adam so that the mean of their normalised embeddings
//!    under the same nets, with fresh random augmentations of the same family (siamese
//!    augmentation), matches the noisy means; pixels are clamped to [0, 1] and
//!    may be optimised at a lower resolution (`downscale`, bilinear upsampling to the stored
//!    size). The pixel gradient is first order ([`crate::nn::Net::embed_vjp`]).
//!
//! # Privacy
//! Neighbouring relation: add or remove one image. The real side's random augmentations are
//! drawn i.i.d. per record from an OS-keyed generator (never from the public `--seed`: with a
//! known seed, removing a record would shift the draws of every later record and the
//! sensitivity argument would fail). Coupling neighbours so that common records get the same
//! draw, the sensitivity conditioned on the draws is `C`, and the mixture over the
//! data-independent augmentation distribution keeps the (ε, δ) bound. Noise:
//! [`crate::dp::noise::SecureGaussian`] (OS-keyed ChaCha20), or opendp's exact Gaussian when
//! the release is small enough (see [`release::release`]).

//!
//! # Files
//! The module is split along the privacy boundary:
//! - `mod.rs` — [`DmParams`], [`Warmup`], their defaults and validation (public parameters);
//! - [`features`] — the random feature nets, embeddings and the random Fourier lift: public
//!   functions of public weights;
//! - [`release`] — the ONLY file that touches private records: it builds the per-record
//!   function and calls [`crate::dp::mechanism::GaussianSum::release`] for the per-net and
//!   one-shot releases and the DP-SGD warm-up, then post-processes the noisy sums into a
//!   [`Release`] of noisy means and counts;
//! - [`synth`] — synthesis from a [`Release`] (post-processing), blur, floor, run-time estimate.

pub mod features;
pub mod release;
pub mod synth;
#[cfg(test)]
mod testutil;

use serde::{Deserialize, Serialize};

use super::augment;
use super::Error;
use crate::dataset::Shape;
use crate::nn::{Activation, Arch, ConvNetConfig};

pub use features::nets;
pub use release::{post_process, post_process_per_net, Release};
pub use synth::{estimate_seconds, synthesise, synthesise_guided, Guide};

/// Hyper-parameters of `dm` (all public; recorded in `run.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DmParams {
    /// Number of random feature nets in the release (per-net releases: one Poisson-sampled
    /// Gaussian mechanism each).
    pub nets: usize,
    /// Channels of each feature net.
    pub width: usize,
    /// Blocks of each feature net.
    pub depth: usize,
    /// Random shifts averaged per real image before clipping.
    pub augment: usize,
    /// Maximum shift in pixels (real and synthetic side).
    pub max_shift: usize,
    /// The augmentation family (real and synthetic side alike): shifts only, or one of
    /// shift / scale / rotate per image.
    #[serde(default)]
    pub augmentation: augment::Family,
    /// Also release (and match) the per-channel spatial means of every block but the last
    /// ([`crate::nn::Net::embed_with_means`]): low-dimensional texture statistics.
    #[serde(default)]
    pub block_means: bool,
    /// Weight of the block means relative to the final feature map (before each net's
    /// embedding is normalised).
    #[serde(default = "one_f")]
    pub means_weight: f64,
    /// Optimise the synthetic images at 1/`downscale` of the resolution (bilinear upsampling
    /// to the stored size): fewer free pixels to absorb noise; 1 = full resolution.
    #[serde(default = "one")]
    pub downscale: usize,
    /// Also release (and match) the per-class means of the squared normalised features
    /// (diagonal second moments): the spread of each class, not only its centre.
    #[serde(default)]
    pub second_moments: bool,
    /// Also release (and match) `rff` random Fourier features of each normalised embedding
    /// (cos and sin pairs of a fixed public Gaussian projection, bandwidth `rff_bandwidth`):
    /// class means of a Gaussian-kernel feature map, i.e. a kernel MMD between the synthetic
    /// images and the class, which sees the spread of the class and not only its centre
    /// (0 = off).
    #[serde(default)]
    pub rff: usize,
    /// Bandwidth of the Gaussian kernel of the random Fourier features, on unit-norm
    /// embeddings.
    #[serde(default = "half")]
    pub rff_bandwidth: f64,
    /// Share of each record's norm given to the Fourier features (the linear embedding keeps
    /// `sqrt(1 - rff_weight²)`).
    #[serde(default = "half_sqrt")]
    pub rff_weight: f64,
    /// Bandwidths of the Fourier features: the projection's rows are shared in turn among
    /// `rff_scales` kernels whose bandwidths step by factors of two around `rff_bandwidth`
    /// (3: ℓ/2, ℓ, 2ℓ), a sum of Gaussian kernels that sees both fine and coarse structure.
    #[serde(default = "one")]
    pub rff_scales: usize,
    /// `None`: ONE release over every record and all nets together (one Gaussian mechanism).
    /// `Some(q)`: one release per net, each over its own Poisson sample of the records at rate
    /// `q` (the nets' releases compose as `nets` Poisson-sampled Gaussian steps, as in DP-SGD):
    /// many more feature nets for the same private compute.
    #[serde(default)]
    pub sample_rate: Option<f64>,
    /// Train some of the feature nets on the real data with DP-SGD before the releases
    /// (per-net releases only; the DP-SGD steps use the same Poisson rate and noise multiplier
    /// and are accounted with the releases). `None`: every net stays at its random init.
    #[serde(default)]
    pub warmup: Option<Warmup>,
    /// Synthesis iterations (post-processing).
    pub iterations: usize,
    /// Nets used per synthesis iteration (drawn at random among `nets`).
    pub nets_per_iteration: usize,
    /// Adam learning rate on pixels.
    pub lr: f64,
    /// Standard deviation of the noise the synthetic pixels start from (around 0.5).
    pub init_std: f64,
    /// Spatial smoothness of the starting noise: white noise blurred by a Gaussian of this
    /// many pixels, then scaled to standard deviation `init_std` around 0.5 per image (0 =
    /// white noise). Data-independent: the start is public randomness from `--seed`.
    #[serde(default)]
    pub init_smooth: f64,
    /// Dark floor of the finished images: each pixel becomes `max(0, (x − floor) / (1 − floor))`,
    /// zeroing the faint texture the matching leaves in the background and stretching the rest
    /// back to [0, 1] (data-independent post-processing; 0 = off).
    #[serde(default)]
    pub floor: f64,
    /// Weight of the count coordinate (`beta`; `alpha = sqrt(1 - beta²)`).
    pub count_weight: f64,
    /// Clip norm `C` of each record's vector.
    pub clip_norm: f64,
    /// Real images per embedding batch.
    pub batch: usize,
    /// Activation of the feature nets (ReLU as in the literature; GELU is smooth).
    pub activation: Activation,
    /// Release through opendp's exact (discrete) Gaussian when the release has at most this
    /// many coordinates; above it, the OS-keyed floating-point sampler.
    pub exact_max_coords: usize,
}

/// DP-SGD training of feature nets on the real data (accounted), whose snapshots then serve
/// as feature nets: features of partly trained networks separate the classes better than random
/// ones (IDM, Zhao et al. 2023, trains them on real data without privacy).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Warmup {
    /// Independently initialised nets trained with DP-SGD.
    pub trajectories: usize,
    /// DP-SGD steps per trajectory (each one Poisson-sampled Gaussian mechanism).
    pub steps: usize,
    /// Learning rate of DP-SGD (on the clipped mean gradient).
    pub lr: f64,
    /// Momentum of DP-SGD.
    pub momentum: f64,
    /// Fraction of the feature nets that are snapshots of the trajectories (the rest stay
    /// random).
    pub trained_fraction: f64,
    /// Weight of the class term in the synthesis: the cross-entropy of the trained snapshots'
    /// classifier heads on the synthetic images, its gradient rescaled to `ce_weight` times the
    /// matching gradient's norm in each iteration (0 = off).
    pub ce_weight: f64,
}

impl Warmup {
    /// Total DP-SGD steps (privacy steps in addition to the releases).
    pub fn total_steps(&self) -> u64 {
        (self.trajectories * self.steps) as u64
    }
}

fn one() -> usize {
    1
}

fn one_f() -> f64 {
    1.0
}

fn half() -> f64 {
    0.5
}

fn half_sqrt() -> f64 {
    std::f64::consts::FRAC_1_SQRT_2
}

/// Feature nets of the default release on large sets (≥ 3,000 records per class).
const NETS_LARGE: usize = 512;
/// Default random Fourier features per net ([`DmParams::rff`]) on all but demo-sized sets.
const RFF: usize = 512;
/// Synthesis iterations of the defaults on large sets (≥ 3,000 records per class).
const LONG_SYNTHESIS: usize = 3000;
/// Default dark floor of the finished images ([`DmParams::floor`]).
const FLOOR: f64 = 0.1;
/// Expected records in each net's Poisson sample under the defaults.
const RECORDS_PER_NET: f64 = 2500.0;

impl DmParams {
    /// The defaults, sized to the public record count `n` and class count.
    pub fn defaults(n: usize, classes: usize) -> DmParams {
        let per_class = n / classes.max(1);
        // One release per net over a Poisson sample (docs/distill.md, "Measured"): many more
        // feature nets for the same private compute. Each net's release costs noise ∝ sqrt(nets)
        // relative to the class sizes, so small cohorts get fewer nets.
        let nets = if n <= 2000 {
            64
        } else if per_class >= 3000 {
            NETS_LARGE
        } else if per_class >= 1000 {
            256
        } else {
            128
        };
        let large = per_class >= 3000 && n > 2000;
        let small = n <= 2000;
        // About RECORDS_PER_NET records per net's sample (at most all of them).
        let q = (RECORDS_PER_NET / n.max(1) as f64).min(1.0);
        DmParams {
            nets,
            width: 32,
            depth: 3,
            augment: 1,
            max_shift: 2,
            // Measured on a 500/class Fashion-MNIST subset at epsilon 1 (docs/distill.md):
            // block means +2.7 points over the final map alone (mean of two runs); a
            // half-resolution parametrisation and a heavier means weight (3) were worse.
            augmentation: augment::Family::Affine,
            block_means: true,
            means_weight: 1.0,
            downscale: 1,
            second_moments: false,
            // 512 random Fourier features of every net's embedding beside it (a Gaussian-kernel
            // MMD): on the full Fashion-MNIST set 0.794 against 0.772 at epsilon 10 and 0.777
            // against 0.762 +- 0.009 at epsilon 1 (docs/distill.md). Not on sets of at most 2,000
            // images: on the demo's 300 per class at epsilon 1 0.673 with them against 0.681
            // without, at a quarter more synthesis time.
            rff: if small { 0 } else { RFF },
            rff_bandwidth: half(),
            rff_weight: half_sqrt(),
            rff_scales: 1,
            sample_rate: Some(q),
            // Large sets: a DP-SGD warm-up trains 4 feature nets for 100 steps each at the
            // releases' q and σ, and half the feature nets are their snapshots. Measured on
            // Fashion-MNIST at epsilon 1 (docs/distill.md): +1 to +1.5 points on the full set; on
            // 500 per class the extra steps raise σ and cost 5 points, so smaller sets go without.
            warmup: large.then_some(Warmup {
                trajectories: 4,
                steps: 100,
                lr: 0.5,
                momentum: 0.9,
                trained_fraction: 0.5,
                ce_weight: 0.0,
            }),
            // 1500 synthesis iterations over 8 nets each, small sets included (on 500 per class at
            // epsilon 10 this and the smooth start below gave 0.762 and 0.753 against
            // 0.723-0.726 with 600 x 4 and white noise; on the demo's 300 per class at epsilon
            // 1, 0.68 against 0.555 with the 150 x 2 white-noise start small sets had before;
            // docs/distill.md, "Small cohorts"), large sets 3000 (full Fashion-MNIST: 0.787
            // against 0.780 +- 0.004 at epsilon 1, 0.801 against 0.791 +- 0.004 at epsilon 10;
            // about 18 minutes for 60,000 images on two cores). The cost of the synthesis
            // grows with the synthetic set (classes x ipc), not with the cohort.
            iterations: if large { LONG_SYNTHESIS } else { 1500 },
            nets_per_iteration: 8,
            lr: 0.01,
            // Start from spatially smooth noise: blur 3 px, std 0.35 on large sets (+1.3 points on
            // the full Fashion-MNIST set at epsilon 1), blur 2 px, std 0.3 on the others.
            init_std: if large { 0.35 } else { 0.3 },
            init_smooth: if large { 3.0 } else { 2.0 },
            // Large sets: a dark floor of 0.1 on the finished images (+0.7 and +0.5 points on two
            // saved full Fashion-MNIST sets at epsilon 1, docs/distill.md); neutral on 500 per
            // class, so off there.
            floor: if large { FLOOR } else { 0.0 },
            count_weight: 0.3,
            clip_norm: 1.0,
            batch: 500,
            exact_max_coords: 200_000,
            activation: Activation::Relu,
        }
    }

    /// Checks the values are usable.
    ///
    /// # Errors
    /// `distill-bad-parameter`.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str, why: &str| Error::BadParameter {
            name: what.into(),
            why: why.into(),
        };
        if self.nets == 0 || self.width == 0 || self.depth == 0 {
            return Err(bad("nets/width/depth", "must be positive"));
        }
        if !(self.means_weight > 0.0 && self.means_weight.is_finite()) {
            return Err(bad("means_weight", "must be positive"));
        }
        if !(1..=4).contains(&self.downscale) {
            return Err(bad("downscale", "must be 1 to 4"));
        }
        if let Some(q) = self.sample_rate {
            if !(q > 0.0 && q <= 1.0) {
                return Err(bad("sample_rate", "must be in (0, 1]"));
            }
        }
        if let Some(w) = &self.warmup {
            if self.sample_rate.is_none() {
                return Err(bad(
                    "warmup",
                    "DP-SGD warm-up needs per-net releases (a sample rate)",
                ));
            }
            if w.trajectories == 0 || w.steps == 0 {
                return Err(bad("warmup", "trajectories and steps must be positive"));
            }
            if !(w.lr > 0.0 && w.lr.is_finite() && (0.0..1.0).contains(&w.momentum)) {
                return Err(bad("warmup", "lr must be positive and momentum in [0, 1)"));
            }
            if !((0.0..=1.0).contains(&w.trained_fraction) && w.ce_weight >= 0.0) {
                return Err(bad(
                    "warmup",
                    "trained_fraction must be in [0, 1] and ce_weight non-negative",
                ));
            }
        }
        if self.augment == 0 || self.batch == 0 || self.nets_per_iteration == 0 {
            return Err(bad("augment/batch/nets_per_iteration", "must be positive"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && self.init_std > 0.0) {
            return Err(bad("lr", "must be positive"));
        }
        if !(0.0..=8.0).contains(&self.init_smooth) {
            return Err(bad(
                "init_smooth",
                "must be a blur of 0 (white noise) to 8 pixels",
            ));
        }
        if self.rff > 0 {
            if self.second_moments {
                return Err(bad("rff", "cannot be combined with second_moments"));
            }
            if self.rff > 8192 {
                return Err(bad("rff", "must be at most 8192 features"));
            }
            if !(self.rff_bandwidth > 0.0 && self.rff_bandwidth.is_finite()) {
                return Err(bad("rff_bandwidth", "must be positive"));
            }
            if !(self.rff_weight > 0.0 && self.rff_weight < 1.0) {
                return Err(bad("rff_weight", "must be in (0, 1)"));
            }
            if self.rff_scales == 0 || self.rff_scales > 8 || self.rff_scales > self.rff {
                return Err(bad(
                    "rff_scales",
                    "must be between 1 and 8 and at most the number of features",
                ));
            }
        }
        if !(0.0..=0.5).contains(&self.floor) {
            return Err(bad("floor", "must be in [0, 0.5]"));
        }
        if !(self.count_weight > 0.0 && self.count_weight < 1.0) {
            return Err(bad("count_weight", "must be in (0, 1)"));
        }
        if !(self.clip_norm > 0.0 && self.clip_norm.is_finite()) {
            return Err(bad("clip_norm", "must be positive"));
        }
        Ok(())
    }

    pub(crate) fn arch(&self, shape: Shape, classes: usize) -> Arch {
        Arch::ConvNet(ConvNetConfig {
            channels: shape.c,
            height: shape.h,
            width: shape.w,
            classes: classes.max(2),
            net_width: self.width,
            depth: self.depth,
            activation: self.activation,
        })
    }
}

pub(crate) fn nn_err(e: crate::nn::Error) -> Error {
    Error::Compute {
        what: e.to_string(),
    }
}
