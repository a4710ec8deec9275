//! Distribution matching under differential privacy (`dm`).
//!
//! 1. **Release (private).** A fixed, public set of `nets` randomly initialised ConvNets
//!    (never trained; weights from the non-private initialisation seed) embeds training
//!    images ([`crate::nn::Net::embed`]: the flattened final feature map, followed when
//!    `block_means` is set by the per-channel spatial means of the earlier blocks,
//!    [`crate::nn::Net::embed_with_means`]), averaged over `augment` random augmentations
//!    (shifts, or one of shift / scale / rotate: [`augment::Family`]). A record's vector is
//!    `v = [alpha·u, beta]` with `alpha² + beta² = 1`, clipped to `C` (a no-op by
//!    construction, kept as the rule says), and the vectors are summed per class. Adding or
//!    removing one image changes exactly one class sum by a vector of norm at most `C`, so the
//!    matrix of class sums has L2 sensitivity `C`. Two ways to release it:
//!    - **per net** (`sample_rate = Some(q)`, the default): each net's release is over its own
//!      Poisson sample of the records (rate `q`, OS-keyed), with that net's embedding
//!      normalised to norm 1 as `u`, plus N(0, σ²C²) per coordinate: `nets` Poisson-sampled
//!      Gaussian mechanisms, accounted exactly as DP-SGD steps,
//!      `{"kind":"poisson-sampled-gaussian","q":q,"sigma":σ,"steps":nets}` ([`release_per_net`]).
//!      Hundreds of feature nets for the private compute of a few full passes.
//!    - **one shot** (`sample_rate = None`): every record under all nets at once, each net's
//!      part normalised to `1/sqrt(nets)` so their concatenation `u` has norm at most 1, plus
//!      N(0, σ²C²) per coordinate **once**: one Gaussian mechanism,
//!      `{"kind":"gaussian","sigma":σ,"count":1}` ([`release`]).
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
//! the release is small enough (see [`release`]).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::augment;
use super::{Error, SyntheticSet};
use crate::dataset::{Images, Shape};
use crate::nn::{Activation, Arch, ConvNetConfig, Net};
use crate::progress::{self, Event, Sink};

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
            // against 0.762 +- 0.009 at epsilon 1 (docs/distill.md).
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
            // Small sets (e.g. the demo) get a short synthesis so a run stays well under a minute;
            // the rest 1500 iterations over 8 nets each (on 500 per class at epsilon 10 this and
            // the smooth start below gave 0.762 and 0.753 against 0.723-0.726 with 600 x 4 and
            // white noise; docs/distill.md), large sets 3000 (full Fashion-MNIST: 0.787 against
            // 0.780 +- 0.004 at epsilon 1, 0.801 against 0.791 +- 0.004 at epsilon 10; about
            // 18 minutes for 60,000 images on two cores).
            iterations: if small {
                150
            } else if large {
                LONG_SYNTHESIS
            } else {
                1500
            },
            nets_per_iteration: if small { 2 } else { 8 },
            lr: 0.01,
            // Start from spatially smooth noise: blur 3 px, std 0.35 on large sets (+1.3 points on
            // the full Fashion-MNIST set at epsilon 1), blur 2 px, std 0.3 on the others (with
            // the longer synthesis above); the demo-sized sets keep white noise.
            init_std: if large {
                0.35
            } else if small {
                0.1
            } else {
                0.3
            },
            init_smooth: if large {
                3.0
            } else if small {
                0.0
            } else {
                2.0
            },
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

    fn arch(&self, shape: Shape, classes: usize) -> Arch {
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

fn nn_err(e: crate::nn::Error) -> Error {
    Error::Compute {
        what: e.to_string(),
    }
}

/// The feature nets of a run (public: from the initialisation seed only).
///
/// # Errors
/// `distill-compute` if the architecture cannot be built for this shape.
pub fn nets(p: &DmParams, shape: Shape, classes: usize, seed: u64) -> Result<Vec<Net>, Error> {
    (0..p.nets as u64)
        .map(|k| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(seed ^ (k + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            Net::new(p.arch(shape, classes), &mut rng).map_err(nn_err)
        })
        .collect()
}

/// Length of one net's embedding under `p`.
fn emb_len(net: &Net, p: &DmParams) -> usize {
    base_len(net, p) * if p.second_moments { 2 } else { 1 } + 2 * p.rff
}

/// The public projection of the random Fourier features: `rff × b` entries drawn from
/// N(0, 1/ℓ_r²) by a fixed generator (data-independent; cached per shape), row r's bandwidth
/// ℓ_r = `rff_bandwidth` · 2^(r mod scales − (scales − 1)/2).
fn rff_matrix(b: usize, p: &DmParams) -> std::sync::Arc<Vec<f32>> {
    use rand_distr::Distribution;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Cache = Mutex<HashMap<(usize, usize, u64, usize), Arc<Vec<f32>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (b, p.rff, p.rff_bandwidth.to_bits(), p.rff_scales);
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(key)
        .or_insert_with(|| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(0x0f0f_f1e5 ^ ((b as u64) << 32) ^ p.rff as u64);
            let scales = p.rff_scales.max(1);
            let centre = (scales as f64 - 1.0) / 2.0;
            Arc::new(
                (0..p.rff * b)
                    .map(|i| {
                        let ell = p.rff_bandwidth * 2f64.powf((i / b % scales) as f64 - centre);
                        let z: f32 = rand_distr::StandardNormal.sample(&mut rng);
                        z / ell as f32
                    })
                    .collect(),
            )
        })
        .clone()
}

/// Projections `a = W û` (`rff` per row) of unit-direction rows `u / scale`.
fn rff_angles(u: &[f32], b: usize, scale: f32, w: &[f32], d: usize) -> Vec<f32> {
    let rows = u.len() / b;
    let mut a = vec![0f32; rows * d];
    crate::nn::gemm::matmul(
        &mut a,
        crate::nn::gemm::View::rm(u, rows, b),
        crate::nn::gemm::View::rm(w, d, b).t(),
        1.0 / scale,
        false,
    );
    a
}

/// Length of one net's raw embedding (before the optional squares).
fn base_len(net: &Net, p: &DmParams) -> usize {
    net.feature_len() + if p.block_means { net.means_len() } else { 0 }
}

/// Normalise each raw embedding row of `e` (length `b`) to norm `scale` and, with second
/// moments, append its squares divided by `scale`, the whole row times 1/√2: every output
/// row has norm at most `scale`. Returns the rows and the raw norms.
fn lift(e: &mut [f32], b: usize, scale: f32, p: &DmParams) -> (Vec<f32>, Vec<f32>) {
    let norms = normalise_rows(e, b, scale);
    if p.rff > 0 {
        // v = [h1·u, (h2·s/√D)·cos(a), (h2·s/√D)·sin(a)], a = W u/s: ‖v‖ = s exactly.
        let d = p.rff;
        let w = rff_matrix(b, p);
        let a = rff_angles(e, b, scale, &w, d);
        let h2 = p.rff_weight as f32;
        let h1 = (1.0 - h2 * h2).sqrt();
        let kz = h2 * scale / (d as f32).sqrt();
        let mut out = Vec::with_capacity(e.len() / b * (b + 2 * d));
        for (row, ar) in e.chunks(b).zip(a.chunks(d)) {
            out.extend(row.iter().map(|v| v * h1));
            out.extend(ar.iter().map(|t| kz * t.cos()));
            out.extend(ar.iter().map(|t| kz * t.sin()));
        }
        return (out, norms);
    }
    if !p.second_moments {
        return (e.to_vec(), norms);
    }
    let h = std::f32::consts::FRAC_1_SQRT_2;
    let mut out = Vec::with_capacity(e.len() * 2);
    for row in e.chunks(b) {
        out.extend(row.iter().map(|v| v * h));
        out.extend(row.iter().map(|v| v * v / scale * h));
    }
    (out, norms)
}

/// One net's embedding of a batch under `p`.
fn embed(net: &Net, x: &[f32], p: &DmParams) -> Result<Vec<f32>, Error> {
    if !p.block_means {
        return net.embed(x).map_err(nn_err);
    }
    let mut e = net.embed_with_means(x).map_err(nn_err)?;
    scale_means(net, &mut e, p.means_weight as f32);
    Ok(e)
}

/// Multiply the block-mean part of every row of `e` by `w`.
fn scale_means(net: &Net, e: &mut [f32], w: f32) {
    let f = net.feature_len();
    let m = net.means_len();
    if w != 1.0 {
        for row in e.chunks_mut(f + m) {
            row[f..].iter_mut().for_each(|v| *v *= w);
        }
    }
}

/// The input gradient of a loss on [`embed`].
fn embed_vjp(net: &Net, x: &[f32], d: &[f32], p: &DmParams) -> Result<Vec<f32>, Error> {
    if p.block_means {
        let mut d = d.to_vec();
        scale_means(net, &mut d, p.means_weight as f32);
        net.embed_with_means_vjp(x, &d)
    } else {
        net.embed_vjp(x, d)
    }
    .map(|(_, dx)| dx)
    .map_err(nn_err)
}

/// Normalise each `f`-long row of `e` to L2 norm `scale` in place; returns the original norms.
fn normalise_rows(e: &mut [f32], f: usize, scale: f32) -> Vec<f32> {
    e.chunks_mut(f)
        .map(|row| {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            let k = if n > 0.0 { scale / n } else { 0.0 };
            row.iter_mut().for_each(|x| *x *= k);
            n
        })
        .collect()
}

/// The noisy release after post-processing: per class, the noisy mean of the normalised
/// embeddings and the noisy count.
#[derive(Debug, Clone)]
pub struct Release {
    /// `classes × dim` noisy means (row-major).
    pub means: Vec<f64>,
    /// Noisy class counts (clamped to at least 1, post-processing).
    pub counts: Vec<f64>,
    /// Embedding dimension.
    pub dim: usize,
}

/// Clipped per-class sums of the records' vectors (before noise), `classes × (dim + 1)`.
/// Private: crate-only.
pub(crate) fn class_sums(
    train: &Images,
    classes: usize,
    p: &DmParams,
    nets: &[Net],
    aug_seed: u64,
    sink: Sink<'_>,
) -> Result<(Vec<f64>, usize), Error> {
    let n = train.len();
    let all: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(aug_seed);
    sink(Event::Start {
        label: "embedding (private)",
        total: n as u64,
    });
    let per_net = 1.0 / (nets.len() as f32).sqrt();
    let out = sums_over(train, &all, classes, p, nets, per_net, &mut rng, &mut |b| {
        sink(Event::Advance(b))
    })?;
    sink(Event::Finish);
    Ok(out)
}

/// Clipped per-class sums over the records `idx`: each record's embedding under every net of
/// `nets`, each net's part normalised to `per_net`, as `[alpha·u, beta]` clipped to `C`.
/// `tick(b)` is called after each batch of `b` records.
#[allow(clippy::too_many_arguments)]
fn sums_over(
    train: &Images,
    idx: &[usize],
    classes: usize,
    p: &DmParams,
    nets: &[Net],
    per_net: f32,
    rng: &mut ChaCha8Rng,
    tick: &mut dyn FnMut(u64),
) -> Result<(Vec<f64>, usize), Error> {
    let shape = train.shape;
    let d = shape.len();
    let feat: Vec<usize> = nets.iter().map(|n| emb_len(n, p)).collect();
    let dim: usize = feat.iter().sum();
    let width = dim + 1;
    let alpha = (1.0 - p.count_weight * p.count_weight).sqrt();
    let mut sums = vec![0f64; classes * width];
    let mut x = Vec::new();
    for chunk in idx.chunks(p.batch) {
        progress::check().map_err(|_| Error::Cancelled)?;
        let b = chunk.len();
        let mut raw = Vec::with_capacity(b * d);
        for &i in chunk {
            raw.extend(train.image(i).iter().map(|&v| v as f32 / 255.0 - 0.5));
        }
        let mut u = vec![0f32; b * dim];
        for _ in 0..p.augment {
            let warps: Vec<augment::Warp> = (0..b)
                .map(|_| augment::Warp::draw(rng, p.augmentation, p.max_shift))
                .collect();
            x.clear();
            x.extend(augment::warp_each(&raw, shape, &warps));
            let mut off = 0;
            for (net, &f) in nets.iter().zip(&feat) {
                let mut e = embed(net, &x, p)?;
                let (e, _) = lift(&mut e, base_len(net, p), per_net, p);
                for i in 0..b {
                    let dst = &mut u[i * dim + off..i * dim + off + f];
                    for (a, v) in dst.iter_mut().zip(&e[i * f..(i + 1) * f]) {
                        *a += v / p.augment as f32;
                    }
                }
                off += f;
            }
        }
        for (i, &rec) in chunk.iter().enumerate() {
            let mut v: Vec<f32> = u[i * dim..(i + 1) * dim]
                .iter()
                .map(|x| x * alpha as f32)
                .collect();
            v.push(p.count_weight as f32);
            crate::dp::clip::clip_in_place(&mut v, p.clip_norm);
            let c = train.labels[rec] as usize;
            for (s, x) in sums[c * width..(c + 1) * width].iter_mut().zip(&v) {
                *s += *x as f64;
            }
        }
        tick(b as u64);
    }
    Ok((sums, dim))
}

/// The per-net private release (`sample_rate = Some(q)`): for each net, a fresh Poisson sample
/// of the records at rate `q` (OS-keyed), the clipped class sums of that net's normalised
/// embeddings (`[alpha·u, beta]`, norm ≤ `C`), plus N(0, σ²C²) on every coordinate.
///
/// # Privacy
/// Each net's release is one Poisson-sampled Gaussian mechanism with L2 sensitivity `C` under
/// add/remove-one-image (a record touches one class sum of that net, by a vector of norm at
/// most `C`); the `nets` releases compose exactly as `nets` DP-SGD steps. The caller must have
/// reserved `{"kind":"poisson-sampled-gaussian","q":q,"sigma":σ,"steps":nets}`.
/// Post-processing: the class counts are pooled over every net's noisy count coordinate (each
/// estimates `q·n_c`), and each net's noisy mean is its noisy sum over `alpha` × that pooled
/// count — no private count is used.
///
/// # Errors
/// `distill-cancelled`, `distill-compute`, `distill-rng`.
#[allow(clippy::too_many_arguments)]
pub fn release_per_net(
    train: &Images,
    classes: usize,
    p: &DmParams,
    nets: &[Net],
    q: f64,
    sigma: f64,
    sink: Sink<'_>,
) -> Result<(Release, &'static str), Error> {
    // The real side's augmentations are part of the mechanism: drawn from an OS-keyed
    // generator (never the public seed), so they are i.i.d. per record and unknown.
    let mut rng =
        ChaCha8Rng::from_seed(crate::keys::try_random_bytes::<32>().map_err(|_| Error::Rng)?);
    let mut sampler = crate::dp::sample::PoissonSampler::from_os().map_err(|_| Error::Rng)?;
    let mut noise = crate::dp::noise::SecureGaussian::from_os().map_err(|_| Error::Rng)?;
    sink(Event::Start {
        label: "embedding (private, one Poisson sample per net)",
        total: nets.len() as u64,
    });
    let mut noisy: Vec<(Vec<f64>, usize)> = Vec::with_capacity(nets.len());
    for net in nets {
        progress::check().map_err(|_| Error::Cancelled)?;
        let idx = sampler.sample(train.len(), q);
        let (mut sums, f) = sums_over(
            train,
            &idx,
            classes,
            p,
            std::slice::from_ref(net),
            1.0,
            &mut rng,
            &mut |_| {},
        )?;
        noise.add_noise_f64(&mut sums, sigma * p.clip_norm);
        noisy.push((sums, f));
        sink(Event::Advance(1));
    }
    sink(Event::Finish);
    Ok((
        post_process_per_net(&noisy, classes, p),
        "chacha20-float-gaussian",
    ))
}

/// DP-SGD warm-up (`p.warmup`): train `trajectories` nets (each starting from one of the
/// public random inits, `nets[t]`) on the real records, and put evenly spaced snapshots of
/// their trajectories in place of the first `trained_fraction × nets` feature nets. Returns
/// which nets are trained snapshots.
///
/// Each step Poisson-samples the records at rate `q` (OS-keyed), clips every per-sample
/// gradient of the cross-entropy to `C` ([`crate::nn::clipped_grad_sums`]), sums, adds
/// N(0, σ²C²) per coordinate (OS-keyed) and divides by the *expected* batch `q·n`, then takes
/// an SGD step with momentum. Inputs are scaled as in the releases (`v/255 − 0.5`).
///
/// # Privacy
/// Every step is one Poisson-sampled Gaussian mechanism with sensitivity `C`, the same `q`
/// and `σ` as the per-net releases: the caller must have reserved
/// `{"kind":"poisson-sampled-gaussian","q":q,"sigma":σ,"steps":nets + trajectories × steps}`
/// (see `plan`). The snapshots are post-processing of the noisy steps.
///
/// # Errors
/// `distill-cancelled`, `distill-compute`, `distill-rng`.
#[allow(clippy::too_many_arguments)]
pub fn warm_up(
    train: &Images,
    p: &DmParams,
    nets: &mut [Net],
    q: f64,
    sigma: f64,
    sink: Sink<'_>,
) -> Result<Vec<bool>, Error> {
    let mut trained = vec![false; nets.len()];
    let Some(w) = &p.warmup else {
        return Ok(trained);
    };
    let total = ((w.trained_fraction * nets.len() as f64).round() as usize).min(nets.len());
    let t = w.trajectories.min(nets.len());
    if total == 0 || t == 0 {
        return Ok(trained);
    }
    let mut sampler = crate::dp::sample::PoissonSampler::from_os().map_err(|_| Error::Rng)?;
    let mut noise = crate::dp::noise::SecureGaussian::from_os().map_err(|_| Error::Rng)?;
    let n = train.len();
    let d = train.shape.len();
    let expected = (q * n as f64).max(1.0) as f32;
    let clip = p.clip_norm as f32;
    sink(Event::Start {
        label: "DP-SGD warm-up (private)",
        total: (t * w.steps) as u64,
    });
    let mut snapshots: Vec<Net> = Vec::with_capacity(total);
    for (traj, init) in nets.iter().enumerate().take(t) {
        // Snapshots this trajectory contributes, at evenly spaced steps (the last at the end).
        let share = total / t + usize::from(traj < total % t);
        let at: Vec<usize> = (1..=share)
            .map(|j| (j * w.steps).div_ceil(share.max(1)))
            .collect();
        let mut net = init.clone();
        let mut velocity = vec![0f32; net.num_params()];
        let mut next = 0;
        for step in 1..=w.steps {
            progress::check().map_err(|_| Error::Cancelled)?;
            let idx = sampler.sample(n, q);
            let mut x = Vec::with_capacity(idx.len() * d);
            for &i in &idx {
                x.extend(train.image(i).iter().map(|&v| v as f32 / 255.0 - 0.5));
            }
            let y: Vec<u32> = idx.iter().map(|&i| train.labels[i]).collect();
            let g = crate::eval::noisy_clipped_mean(
                &net, &x, &y, clip, sigma, expected, &mut noise, p.batch,
            )
            .map_err(nn_err)?;
            let lr = w.lr as f32;
            let mom = w.momentum as f32;
            for ((v, gi), th) in velocity.iter_mut().zip(&g).zip(net.params_mut()) {
                *v = mom * *v + gi;
                *th -= lr * *v;
            }
            while next < at.len() && at[next] == step {
                snapshots.push(net.clone());
                next += 1;
            }
            sink(Event::Advance(1));
        }
    }
    sink(Event::Finish);
    for (k, snap) in snapshots.into_iter().enumerate() {
        nets[k] = snap;
        trained[k] = true;
    }
    Ok(trained)
}

/// Per-net noisy sums → pooled noisy counts and per-net noisy means, concatenated in net order
/// and scaled by `1/sqrt(nets)` to the layout [`synthesise`] matches (post-processing only).
pub fn post_process_per_net(noisy: &[(Vec<f64>, usize)], classes: usize, p: &DmParams) -> Release {
    let alpha = (1.0 - p.count_weight * p.count_weight).sqrt();
    let k = noisy.len().max(1) as f64;
    let counts: Vec<f64> = (0..classes)
        .map(|c| {
            let s: f64 = noisy.iter().map(|(v, f)| v[c * (f + 1) + f]).sum();
            (s / (p.count_weight * k)).max(1.0)
        })
        .collect();
    let dim: usize = noisy.iter().map(|(_, f)| f).sum();
    let scale = 1.0 / k.sqrt();
    let mut means = vec![0f64; classes * dim];
    for c in 0..classes {
        let mut off = 0;
        for (v, f) in noisy {
            for j in 0..*f {
                means[c * dim + off + j] = v[c * (f + 1) + j] / (alpha * counts[c]) * scale;
            }
            off += f;
        }
    }
    Release { means, counts, dim }
}

/// The private release: clipped class sums plus one draw of N(0, σ²C²) per coordinate.
///
/// # Privacy
/// One Gaussian mechanism with L2 sensitivity `p.clip_norm` under add/remove-one-image; the
/// caller must have reserved `{"kind":"gaussian","sigma":σ,"count":1}` in the ledger. Releases
/// of at most `p.exact_max_coords` coordinates use opendp's exact discrete Gaussian
/// ([`crate::dp::exact::gaussian_release`], immune to floating-point attacks); larger ones the
/// OS-keyed ChaCha20 floating-point sampler ([`crate::dp::noise::SecureGaussian`]).
///
/// # Errors
/// `distill-cancelled`, `distill-compute`, `distill-rng`.
pub fn release(
    train: &Images,
    classes: usize,
    p: &DmParams,
    nets: &[Net],
    sigma: f64,
    sink: Sink<'_>,
) -> Result<(Release, &'static str), Error> {
    // The real side's augmentations are part of the mechanism: keyed from the OS, never from
    // the public seed (see the module's Privacy section).
    let aug_seed =
        u64::from_le_bytes(crate::keys::try_random_bytes::<8>().map_err(|_| Error::Rng)?);
    let (mut sums, dim) = class_sums(train, classes, p, nets, aug_seed, sink)?;
    let sampler = if sums.len() <= p.exact_max_coords {
        sums = crate::dp::exact::gaussian_release(&sums, p.clip_norm, sigma).map_err(|e| {
            Error::Compute {
                what: format!("exact Gaussian release: {e}"),
            }
        })?;
        "opendp-exact-discrete-gaussian"
    } else {
        let mut noise = crate::dp::noise::SecureGaussian::from_os().map_err(|_| Error::Rng)?;
        noise.add_noise_f64(&mut sums, sigma * p.clip_norm);
        "chacha20-float-gaussian"
    };
    Ok((post_process(&sums, classes, dim, p), sampler))
}

/// Noisy sums → noisy means and counts (post-processing only).
pub fn post_process(sums: &[f64], classes: usize, dim: usize, p: &DmParams) -> Release {
    let alpha = (1.0 - p.count_weight * p.count_weight).sqrt();
    let width = dim + 1;
    let mut means = vec![0f64; classes * dim];
    let mut counts = vec![0f64; classes];
    for c in 0..classes {
        let row = &sums[c * width..(c + 1) * width];
        let count = (row[dim] / p.count_weight).max(1.0);
        counts[c] = count;
        for j in 0..dim {
            means[c * dim + j] = row[j] / (alpha * count);
        }
    }
    Release { means, counts, dim }
}

/// The matching loss Σ_c ‖mean_i normalise(f(x_ci)) − t_c‖² of one net and its gradient
/// w.r.t. the (shifted) synthetic inputs `x` (class-major, `ipc` per class).
fn net_loss_grad(
    net: &Net,
    x: &[f32],
    target: &[f64],
    (classes, ipc): (usize, usize),
    scale: f32,
    p: &DmParams,
) -> Result<(f64, Vec<f32>), Error> {
    let f = emb_len(net, p);
    let b = base_len(net, p);
    let mut e = embed(net, x, p)?;
    let (v, norms) = lift(&mut e, b, scale, p);
    // `e` now holds the normalised rows u (norm `scale`); `v` the matched rows.
    let rows = classes * ipc;
    let mut loss = 0f64;
    // dL/dv for every row of class c: 2 (mean_c − t_c) / ipc.
    let mut gv = vec![0f64; classes * f];
    for c in 0..classes {
        let diff = &mut gv[c * f..(c + 1) * f];
        for i in 0..ipc {
            let r = c * ipc + i;
            for (dj, val) in diff.iter_mut().zip(&v[r * f..(r + 1) * f]) {
                *dj += *val as f64 / ipc as f64;
            }
        }
        for (dj, t) in diff.iter_mut().zip(&target[c * f..(c + 1) * f]) {
            *dj -= t;
            loss += *dj * *dj;
            *dj *= 2.0 / ipc as f64;
        }
    }
    // dL/du per row. Squares: v = [u, u∘u/s]/√2 ⇒ dL/du = (g₁ + 2u∘g₂/s)/√2. Fourier features:
    // v = [h1·u, k·cos(a), k·sin(a)], a = W u/s, k = h2·s/√D ⇒
    // dL/du = h1·g₁ + (h2/√D)·Wᵀ(−sin(a)∘g_cos + cos(a)∘g_sin).
    let mut gu = vec![0f32; rows * b];
    let h = std::f64::consts::FRAC_1_SQRT_2;
    for r in 0..rows {
        let g = &gv[(r / ipc) * f..(r / ipc + 1) * f];
        let u = &e[r * b..(r + 1) * b];
        for j in 0..b {
            gu[r * b + j] = if p.rff > 0 {
                (1.0 - p.rff_weight * p.rff_weight).sqrt() * g[j]
            } else if p.second_moments {
                h * (g[j] + 2.0 * u[j] as f64 * g[b + j] / scale as f64)
            } else {
                g[j]
            } as f32;
        }
    }
    if p.rff > 0 {
        let d = p.rff;
        let w = rff_matrix(b, p);
        let a = rff_angles(&e, b, scale, &w, d);
        let kz = p.rff_weight / (d as f64).sqrt();
        let mut cm = vec![0f32; rows * d];
        for r in 0..rows {
            let g = &gv[(r / ipc) * f..(r / ipc + 1) * f];
            for k in 0..d {
                let t = a[r * d + k] as f64;
                cm[r * d + k] = (kz * (-t.sin() * g[b + k] + t.cos() * g[b + d + k])) as f32;
            }
        }
        crate::nn::gemm::matmul(
            &mut gu,
            crate::nn::gemm::View::rm(&cm, rows, d),
            crate::nn::gemm::View::rm(&w, d, b),
            1.0,
            true,
        );
    }
    // u = s·e/|e| ⇒ dL/de = (s/|e|)(g − û(û·g)), û = u/s.
    let mut d_feat = vec![0f32; e.len()];
    for r in 0..rows {
        let nrm = norms[r];
        if nrm <= 0.0 {
            continue;
        }
        let u = &e[r * b..(r + 1) * b];
        let g = &gu[r * b..(r + 1) * b];
        let ug: f64 = u
            .iter()
            .zip(g)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum::<f64>()
            / scale as f64;
        for j in 0..b {
            let uh = u[j] as f64 / scale as f64;
            d_feat[r * b + j] = ((scale as f64 / nrm as f64) * (g[j] as f64 - uh * ug)) as f32;
        }
    }
    let dx = embed_vjp(net, x, &d_feat, p)?;
    Ok((loss, dx))
}

/// Separable Gaussian blur (standard deviation `sigma` pixels, edges clamped) of one image.
fn blur(img: &[f32], shape: Shape, sigma: f64) -> Vec<f32> {
    let r = (3.0 * sigma).ceil() as i64;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-((i * i) as f64) / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let ks: f32 = k.iter().sum();
    let (h, w) = (shape.h as i64, shape.w as i64);
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0f32; src.len()];
        for c in 0..shape.c as i64 {
            for y in 0..h {
                for x in 0..w {
                    let acc: f32 = k
                        .iter()
                        .enumerate()
                        .map(|(j, kv)| {
                            let o = j as i64 - r;
                            let (yy, xx) = if horizontal {
                                (y, (x + o).clamp(0, w - 1))
                            } else {
                                ((y + o).clamp(0, h - 1), x)
                            };
                            kv * src[((c * h + yy) * w + xx) as usize]
                        })
                        .sum();
                    out[((c * h + y) * w + x) as usize] = acc / ks;
                }
            }
        }
        out
    };
    pass(&pass(img, true), false)
}

/// The dark floor ([`DmParams::floor`]): `x ↦ max(0, (x − floor) / (1 − floor))`.
fn apply_floor(data: &mut [f32], floor: f64) {
    if floor > 0.0 {
        let (t, k) = (floor as f32, 1.0 / (1.0 - floor as f32));
        data.iter_mut()
            .for_each(|x| *x = ((*x - t) * k).clamp(0.0, 1.0));
    }
}

/// Optimise `ipc` synthetic images per class to match the released means (post-processing).
/// Returns the set and the per-iteration matching losses.
///
/// # Errors
/// `distill-cancelled`, `distill-compute`.
#[allow(clippy::too_many_arguments)]
pub fn synthesise(
    rel: &Release,
    shape: Shape,
    classes: usize,
    ipc: usize,
    p: &DmParams,
    nets: &[Net],
    trained: &[bool],
    seed: u64,
    sink: Sink<'_>,
) -> Result<(SyntheticSet, Vec<f64>), Error> {
    use rand_distr::Distribution;
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x51_7e_5e));
    let n_syn = classes * ipc;
    let normal =
        rand_distr::Normal::new(0.5f32, p.init_std as f32).map_err(|_| Error::BadParameter {
            name: "init_std".into(),
            why: "must be positive and finite".into(),
        })?;
    // Optimised at `low` resolution, stored at `shape` (bilinear upsampling).
    let low = Shape {
        c: shape.c,
        h: shape.h.div_ceil(p.downscale),
        w: shape.w.div_ceil(p.downscale),
    };
    // Synthetic pixels start from noise, never from real images.
    let mut syn: Vec<f32> = if p.init_smooth > 0.0 {
        (0..n_syn)
            .flat_map(|_| {
                let white: Vec<f32> = (0..low.len())
                    .map(|_| rand_distr::StandardNormal.sample(&mut rng))
                    .collect();
                let field = blur(&white, low, p.init_smooth);
                let mean = field.iter().sum::<f32>() / field.len() as f32;
                let var =
                    field.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / field.len() as f32;
                let k = p.init_std as f32 / var.sqrt().max(1e-6);
                field
                    .into_iter()
                    .map(move |f| (0.5 + k * (f - mean)).clamp(0.0, 1.0))
            })
            .collect()
    } else {
        (0..n_syn * low.len())
            .map(|_| normal.sample(&mut rng).clamp(0.0, 1.0))
            .collect()
    };
    let (mut m1, mut m2) = (vec![0f32; syn.len()], vec![0f32; syn.len()]);
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let feat: Vec<usize> = nets.iter().map(|n| emb_len(n, p)).collect();
    let offs: Vec<usize> = feat
        .iter()
        .scan(0, |s, &f| {
            let o = *s;
            *s += f;
            Some(o)
        })
        .collect();
    let scale = 1.0 / (nets.len() as f32).sqrt();
    let k_iter = p.nets_per_iteration.min(nets.len());
    let ce_weight = p.warmup.as_ref().map_or(0.0, |w| w.ce_weight) as f32;
    let syn_labels: Vec<u32> = (0..n_syn).map(|i| (i / ipc) as u32).collect();
    let mut losses = Vec::with_capacity(p.iterations);
    sink(Event::Start {
        label: "synthesis (post-processing)",
        total: p.iterations as u64,
    });
    for it in 0..p.iterations {
        progress::check().map_err(|_| Error::Cancelled)?;
        let lr =
            (p.lr * 0.5 * (1.0 + (std::f64::consts::PI * it as f64 / p.iterations as f64).cos()))
                as f32;
        let warps: Vec<augment::Warp> = (0..n_syn)
            .map(|_| augment::Warp::draw(&mut rng, p.augmentation, p.max_shift))
            .collect();
        let full = augment::resize(&syn, low, shape);
        let x: Vec<f32> = augment::warp_each(&full, shape, &warps)
            .into_iter()
            .map(|v| v - 0.5)
            .collect();
        let mut grad_x = vec![0f32; x.len()];
        let mut grad_ce = vec![0f32; if ce_weight > 0.0 { x.len() } else { 0 }];
        let mut loss = 0f64;
        for k in rand::seq::index::sample(&mut rng, nets.len(), k_iter).iter() {
            let f = feat[k];
            let target: Vec<f64> = (0..classes)
                .flat_map(|c| {
                    rel.means[c * rel.dim + offs[k]..c * rel.dim + offs[k] + f]
                        .iter()
                        .copied()
                })
                .collect();
            let (l, dx) = net_loss_grad(&nets[k], &x, &target, (classes, ipc), scale, p)?;
            loss += l;
            grad_x.iter_mut().zip(&dx).for_each(|(a, b)| *a += b);
            // Class term: the trained snapshot's classifier should label the images as their
            // class (post-processing of the DP-SGD steps).
            if ce_weight > 0.0 && trained.get(k).copied().unwrap_or(false) {
                let g = nets[k]
                    .loss_and_input_grads(&x, &syn_labels)
                    .map_err(nn_err)?;
                grad_ce
                    .iter_mut()
                    .zip(&g.input_grads)
                    .for_each(|(a, b)| *a += b);
            }
        }
        losses.push(loss);
        // The class term's weight is relative: its gradient is rescaled to `ce_weight` times
        // the matching gradient's norm (the two losses have unrelated scales).
        if ce_weight > 0.0 {
            let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            let (nm, nc) = (norm(&grad_x), norm(&grad_ce));
            if nc > 0.0 && nm > 0.0 {
                let k = (ce_weight as f64 * nm / nc) as f32;
                grad_x
                    .iter_mut()
                    .zip(&grad_ce)
                    .for_each(|(a, b)| *a += k * b);
            }
            grad_ce.iter_mut().for_each(|v| *v = 0.0);
        }
        let g = augment::resize_adjoint(
            &augment::warp_each_adjoint(&grad_x, shape, &warps),
            low,
            shape,
        );
        let t = (it + 1) as i32;
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for (((s, a), v), gi) in syn.iter_mut().zip(&mut m1).zip(&mut m2).zip(&g) {
            *a = b1 * *a + (1.0 - b1) * gi;
            *v = b2 * *v + (1.0 - b2) * gi * gi;
            *s = (*s - lr * (*a / c1) / ((*v / c2).sqrt() + eps)).clamp(0.0, 1.0);
        }
        sink(Event::Advance(1));
    }
    sink(Event::Finish);
    let labels = (0..n_syn).map(|i| (i / ipc) as u32).collect();
    let mut data = augment::resize(&syn, low, shape);
    apply_floor(&mut data, p.floor);
    Ok((
        SyntheticSet {
            shape,
            data,
            labels,
        },
        losses,
    ))
}

/// Estimated seconds for a run: time the embedding of random images under one net and two
/// synthesis iterations, then scale to the planned work.
///
/// # Errors
/// `distill-compute`.
pub fn estimate_seconds(
    p: &DmParams,
    shape: Shape,
    records: usize,
    classes: usize,
    ipc: usize,
) -> Result<f64, Error> {
    let b = 64usize;
    let x: Vec<f32> = (0..b * shape.len())
        .map(|j| ((j * 7919) % 256) as f32 / 255.0 - 0.5)
        .collect();
    let mut q = p.clone();
    q.nets = p.nets_per_iteration.min(p.nets);
    q.iterations = 2;
    let nets = nets(&q, shape, classes, 1)?;
    embed(&nets[0], &x[..shape.len()], &q)?; // warm-up
    let t = std::time::Instant::now();
    embed(&nets[0], &x, &q)?;
    let per_image_net = t.elapsed().as_secs_f64() / b as f64;
    let embed =
        per_image_net * records as f64 * p.sample_rate.unwrap_or(1.0) * (p.nets * p.augment) as f64;
    // DP-SGD warm-up: per-sample clipped gradients of the expected batch, per step.
    let warm = match (&p.warmup, p.sample_rate) {
        (Some(w), Some(q)) => {
            let y: Vec<u32> = (0..b).map(|i| (i % classes.max(2)) as u32).collect();
            let grads = |x: &[f32], y: &[u32]| {
                crate::nn::clipped_grad_sums(&nets[0], x, y, 1.0, crate::nn::Grouping::Single)
                    .map_err(nn_err)
            };
            grads(&x[..shape.len()], &y[..1])?; // warm-up
            let t = std::time::Instant::now();
            grads(&x, &y)?;
            let per_sample = t.elapsed().as_secs_f64() / b as f64;
            per_sample * q * records as f64 * w.total_steps() as f64
        }
        _ => 0.0,
    };
    let dim: usize = nets.iter().map(|n| emb_len(n, p)).sum();
    let rel = Release {
        means: vec![0.0; classes * dim],
        counts: vec![1.0; classes],
        dim,
    };
    let t = std::time::Instant::now();
    synthesise(
        &rel,
        shape,
        classes,
        ipc,
        &q,
        &nets,
        &[],
        1,
        &progress::silent,
    )?;
    let per_iter = t.elapsed().as_secs_f64() / 2.0;
    Ok(warm + embed + per_iter * p.iterations as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n_per: usize) -> Images {
        // Two classes: bright left half vs bright right half.
        let shape = Shape { c: 1, h: 12, w: 12 };
        let mut im = Images::new(shape);
        for i in 0..2 * n_per {
            let c = (i % 2) as u32;
            let px: Vec<u8> = (0..144)
                .map(|j| {
                    let x = j % 12;
                    let on = if c == 0 { x < 6 } else { x >= 6 };
                    if on {
                        200 + (i % 50) as u8
                    } else {
                        (i % 30) as u8
                    }
                })
                .collect();
            im.push(&px, c);
        }
        im
    }

    fn params() -> DmParams {
        DmParams {
            nets: 3,
            width: 8,
            depth: 2,
            augment: 2,
            max_shift: 1,
            augmentation: augment::Family::Affine,
            block_means: true,
            means_weight: 2.0,
            downscale: 1,
            second_moments: false,
            rff: 0,
            rff_bandwidth: 0.5,
            rff_weight: 0.7,
            rff_scales: 1,
            sample_rate: None,
            warmup: None,
            iterations: 40,
            nets_per_iteration: 2,
            lr: 0.03,
            init_std: 0.1,
            init_smooth: 0.0,
            floor: 0.0,
            count_weight: 0.3,
            clip_norm: 1.0,
            batch: 7,
            exact_max_coords: 10_000,
            activation: Activation::Relu,
        }
    }

    #[test]
    fn warm_up_trains_snapshots_that_learn_the_classes() {
        let im = toy(100);
        let mut p = params();
        p.nets = 4;
        p.sample_rate = Some(0.5);
        p.warmup = Some(Warmup {
            trajectories: 2,
            steps: 30,
            lr: 0.5,
            momentum: 0.5,
            trained_fraction: 0.5,
            ce_weight: 0.0,
        });
        p.validate().unwrap();
        let mut ns = nets(&p, im.shape, 2, 1).unwrap();
        let before = ns.clone();
        let trained = warm_up(&im, &p, &mut ns, 0.5, 0.5, &progress::silent).unwrap();
        assert_eq!(trained, vec![true, true, false, false]);
        // The untrained nets keep their public random init; the snapshots moved.
        assert_eq!(ns[2].params(), before[2].params());
        assert_eq!(ns[3].params(), before[3].params());
        assert_ne!(ns[0].params(), before[0].params());
        assert_ne!(ns[1].params(), before[1].params());
        // Each trajectory's final snapshot separates the two classes.
        let x: Vec<f32> = (0..im.len())
            .flat_map(|i| im.image(i).iter().map(|&v| v as f32 / 255.0 - 0.5))
            .collect();
        for net in &ns[..2] {
            let logits = net.logits(&x).unwrap();
            let right = logits
                .chunks(net.classes())
                .zip(&im.labels)
                .filter(|(l, &y)| (l[1] > l[0]) == (y == 1))
                .count();
            assert!(
                right as f64 / im.len() as f64 > 0.9,
                "{right} of {}",
                im.len()
            );
        }
        // No warm-up: nothing changes.
        p.warmup = None;
        let mut ns2 = before.clone();
        let t = warm_up(&im, &p, &mut ns2, 0.5, 0.5, &progress::silent).unwrap();
        assert_eq!(t, vec![false; 4]);
        assert_eq!(ns2[0].params(), before[0].params());
    }

    #[test]
    fn blur_keeps_constants_and_spreads_a_point_symmetrically() {
        let shape = Shape { c: 1, h: 9, w: 9 };
        let flat = blur(&[0.7; 81], shape, 1.5);
        assert!(flat.iter().all(|v| (v - 0.7).abs() < 1e-6));
        let mut point = vec![0f32; 81];
        point[4 * 9 + 4] = 1.0;
        let b = blur(&point, shape, 1.0);
        assert!((b.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(b[40] > b[41] && b[41] > b[42] && b[42] > 0.0);
        assert!((b[41] - b[39]).abs() < 1e-7 && (b[31] - b[49]).abs() < 1e-7);
        assert!((b[31] - b[41]).abs() < 1e-7);
    }

    #[test]
    fn smooth_start_is_spatially_correlated_with_the_requested_spread() {
        let im = toy(20);
        let nets = nets(&params(), im.shape, 2, 1).unwrap();
        let dim: usize = nets.iter().map(|n| emb_len(n, &params())).sum();
        let rel = Release {
            means: vec![0.0; 2 * dim],
            counts: vec![1.0; 2],
            dim,
        };
        // One iteration with a negligible step: the output is the starting point.
        let start = |smooth: f64| {
            let mut p = params();
            p.iterations = 1;
            p.lr = 1e-9;
            p.init_std = 0.2;
            p.init_smooth = smooth;
            let (set, _) =
                synthesise(&rel, im.shape, 2, 4, &p, &nets, &[], 3, &progress::silent).unwrap();
            set.data
        };
        // Mean correlation of horizontally adjacent pixels, and mean per-image std.
        let stats = |d: &[f32]| {
            let (mut corr, mut sd) = (0.0, 0.0);
            for img in d.chunks(144) {
                let m = img.iter().sum::<f32>() / 144.0;
                let v = img.iter().map(|x| (x - m).powi(2)).sum::<f32>() / 144.0;
                let c: f32 = (0..12)
                    .flat_map(|y| (0..11).map(move |x| (y, x)))
                    .map(|(y, x)| (img[y * 12 + x] - m) * (img[y * 12 + x + 1] - m))
                    .sum::<f32>()
                    / 132.0;
                corr += c / v / 8.0;
                sd += v.sqrt() / 8.0;
            }
            (corr, sd)
        };
        let mut bad = params();
        bad.init_smooth = 1e9;
        assert!(bad.validate().is_err());
        bad.init_smooth = f64::NAN;
        assert!(bad.validate().is_err());
        let (c_white, s_white) = stats(&start(0.0));
        let (c_smooth, s_smooth) = stats(&start(2.0));
        assert!(c_white.abs() < 0.25, "white noise correlation {c_white}");
        assert!(c_smooth > 0.6, "smooth correlation {c_smooth}");
        assert!((s_white - 0.2).abs() < 0.03, "white std {s_white}");
        assert!((s_smooth - 0.2).abs() < 0.03, "smooth std {s_smooth}");
    }

    #[test]
    fn every_record_vector_is_within_the_clip_norm() {
        // One record alone: its class sum is its vector; the norm must be <= C.
        // With Fourier features too: each net's row keeps its norm (cos² + sin² = 1).
        for rff in [0, 24] {
            let im = toy(1).select(&[0]);
            let mut p = params();
            p.rff = rff;
            let nets = nets(&p, im.shape, 2, 3).unwrap();
            let (sums, dim) = class_sums(&im, 2, &p, &nets, 1, &progress::silent).unwrap();
            assert_eq!(dim, nets.len() * (base_len(&nets[0], &p) + 2 * rff));
            let norm: f64 = sums.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!(norm <= p.clip_norm + 1e-6, "norm {norm}");
            assert!(
                norm > 0.9,
                "the vector should be nearly unit length, got {norm}"
            );
            // The other class's sum is untouched: the record touches only its class.
            assert!(sums[dim + 1..].iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn sums_of_neighbours_differ_by_at_most_c() {
        // Augmentations are i.i.d. per record, so neighbours are compared under the same
        // (coupled) augmentation draws; with shifts off the coupling is the identity.
        let im = toy(5);
        let mut p = params();
        p.max_shift = 0;
        p.augmentation = augment::Family::Shift;
        let nets = nets(&p, im.shape, 2, 3).unwrap();
        let (a, _) = class_sums(&im, 2, &p, &nets, 9, &progress::silent).unwrap();
        for drop in [0, 4, im.len() - 1] {
            let idx: Vec<usize> = (0..im.len()).filter(|&i| i != drop).collect();
            let (b, _) = class_sums(&im.select(&idx), 2, &p, &nets, 9, &progress::silent).unwrap();
            let d: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(d <= p.clip_norm + 1e-6, "sensitivity exceeded: {d}");
        }
    }

    #[test]
    fn matching_gradient_matches_finite_difference() {
        for (second_moments, rff) in [(false, 0), (true, 0), (false, 16)] {
            check_matching_gradient(second_moments, rff);
        }
    }

    fn check_matching_gradient(second_moments: bool, rff: usize) {
        // GELU: smooth, so finite differences converge (ReLU kinks make them unreliable).
        let mut p = params();
        p.second_moments = second_moments;
        p.rff = rff;
        p.rff_scales = if rff > 0 { 2 } else { 1 };
        p.activation = Activation::Gelu;
        let shape = Shape { c: 1, h: 12, w: 12 };
        let nets = nets(&p, shape, 2, 5).unwrap();
        let net = &nets[0];
        let f = emb_len(net, &p);
        let target: Vec<f64> = (0..2 * f).map(|j| ((j % 7) as f64 - 3.0) * 0.01).collect();
        let x: Vec<f32> = (0..4 * 144)
            .map(|j| ((j * 37 % 101) as f32) / 101.0 - 0.5)
            .collect();
        let (_, g) = net_loss_grad(net, &x, &target, (2, 2), 0.5, &p).unwrap();
        // Directional derivatives along a few fixed directions (robust to ReLU kinks).
        for k in 0..4 {
            let r: Vec<f32> = (0..x.len())
                .map(|j| (((j * 131 + k * 977) % 17) as f32 - 8.0) / 8.0)
                .collect();
            let h = 1e-3f32;
            let at = |t: f32| {
                let xs: Vec<f32> = x.iter().zip(&r).map(|(a, b)| a + t * b).collect();
                net_loss_grad(net, &xs, &target, (2, 2), 0.5, &p).unwrap().0
            };
            let fd = (at(h) - at(-h)) / (2.0 * h as f64);
            let an: f64 = g.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!(
                (fd - an).abs() <= 0.05 * fd.abs().max(an.abs()) + 1e-6,
                "direction {k}: analytic {an} vs finite difference {fd}"
            );
        }
    }

    #[test]
    fn noiseless_counts_are_recovered_and_synthesis_lowers_the_loss() {
        let im = toy(6);
        let p = params();
        let nets = nets(&p, im.shape, 2, 3).unwrap();
        let (sums, dim) = class_sums(&im, 2, &p, &nets, 9, &progress::silent).unwrap();
        let rel = post_process(&sums, 2, dim, &p);
        assert!((rel.counts[0] - 6.0).abs() < 1e-4 && (rel.counts[1] - 6.0).abs() < 1e-4);
        let (set, losses) =
            synthesise(&rel, im.shape, 2, 2, &p, &nets, &[], 5, &progress::silent).unwrap();
        assert_eq!(set.labels, vec![0, 0, 1, 1]);
        assert!(set.data.iter().all(|&x| (0.0..=1.0).contains(&x)));
        let first: f64 = losses[..5].iter().sum();
        let last: f64 = losses[losses.len() - 5..].iter().sum();
        assert!(
            last < 0.7 * first,
            "loss did not fall enough: {first} -> {last}"
        );
    }

    #[test]
    fn floor_zeroes_faint_pixels_and_stretches_the_rest() {
        let mut v = vec![0.0f32, 0.05, 0.1, 0.55, 1.0];
        apply_floor(&mut v, 0.1);
        let want = [0.0f32, 0.0, 0.0, 0.5, 1.0];
        for (g, w) in v.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{v:?}");
        }
        let mut same = vec![0.0f32, 0.3, 1.0];
        apply_floor(&mut same, 0.0);
        assert_eq!(same, vec![0.0, 0.3, 1.0]);
        let mut bad = params();
        bad.floor = 0.9;
        assert!(bad.validate().is_err());
        bad.floor = f64::NAN;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn fourier_features_are_validated_and_keep_the_embedding_norm() {
        let mut p = params();
        p.rff = 32;
        p.validate().unwrap();
        for (sm, bw, w) in [(true, 0.5, 0.7), (false, 0.0, 0.7), (false, 0.5, 1.0)] {
            let mut bad = p.clone();
            (bad.second_moments, bad.rff_bandwidth, bad.rff_weight) = (sm, bw, w);
            assert!(bad.validate().is_err(), "{sm} {bw} {w}");
        }
        // Every lifted row has the norm of the normalised embedding, whatever the input.
        let mut e: Vec<f32> = (0..3 * 10).map(|j| ((j * 13 % 7) as f32) - 2.5).collect();
        let (v, _) = lift(&mut e, 10, 0.25, &p);
        assert_eq!(v.len(), 3 * (10 + 2 * 32));
        for row in v.chunks(10 + 2 * 32) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 0.25).abs() < 1e-5, "{n}");
        }
        // The projection is public and fixed: the same for every call.
        assert_eq!(*rff_matrix(10, &p), *rff_matrix(10, &p));
        // Several bandwidths: rows take ℓ/2, ℓ, 2ℓ in turn (spread 1/ℓ_r), norms still kept.
        for bad_scales in [0, 9, 33] {
            let mut bad = p.clone();
            bad.rff_scales = bad_scales;
            assert!(bad.validate().is_err(), "{bad_scales}");
        }
        let mut m = p.clone();
        (m.rff, m.rff_scales) = (300, 3);
        m.validate().unwrap();
        let w = rff_matrix(40, &m);
        for (k, ell) in [0.25f64, 0.5, 1.0].into_iter().enumerate() {
            let (mut ss, mut count) = (0.0f64, 0usize);
            for row in w.chunks(40).skip(k).step_by(3) {
                ss += row.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
                count += row.len();
            }
            let sd = (ss / count as f64).sqrt();
            assert!(
                (sd * ell - 1.0).abs() < 0.05,
                "scale {k}: sd {sd}, bandwidth {ell}"
            );
        }
        assert_ne!(
            *w,
            *rff_matrix(
                40,
                &DmParams {
                    rff_scales: 1,
                    ..m.clone()
                }
            )
        );
        let mut e: Vec<f32> = (0..3 * 40).map(|j| ((j * 13 % 7) as f32) - 2.5).collect();
        let (v, _) = lift(&mut e, 40, 0.5, &m);
        for row in v.chunks(40 + 2 * 300) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 0.5).abs() < 1e-5, "{n}");
        }
    }

    #[test]
    fn per_net_release_without_noise_recovers_counts_and_the_one_shot_means() {
        // q = 1 and sigma = 0: every net sees every record, so the per-net release must equal
        // the one-shot release's means and counts (same nets, same per-net scale 1/sqrt(K)).
        let im = toy(6);
        let mut p = params();
        p.augmentation = augment::Family::Shift;
        p.max_shift = 0;
        let nets = nets(&p, im.shape, 2, 3).unwrap();
        let (per, sampler) =
            release_per_net(&im, 2, &p, &nets, 1.0, 0.0, &progress::silent).unwrap();
        assert_eq!(sampler, "chacha20-float-gaussian");
        let (sums, dim) = class_sums(&im, 2, &p, &nets, 1, &progress::silent).unwrap();
        let one = post_process(&sums, 2, dim, &p);
        assert_eq!(per.dim, one.dim);
        for c in 0..2 {
            assert!((per.counts[c] - 6.0).abs() < 1e-4, "{:?}", per.counts);
        }
        for (a, b) in per.means.iter().zip(&one.means) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn real_side_augmentations_are_keyed_from_the_os_not_the_seed() {
        // Same nets, same data, no noise, every record: only the augmentation draws can differ
        // between two releases, and they must (they are part of the mechanism).
        let im = toy(6);
        let p = params();
        let nets = nets(&p, im.shape, 2, 3).unwrap();
        let run = || {
            release_per_net(&im, 2, &p, &nets, 1.0, 0.0, &progress::silent)
                .unwrap()
                .0
                .means
        };
        assert_ne!(run(), run());
    }

    #[test]
    fn per_net_release_samples_each_net_independently() {
        // q = 1/2: each net's noiseless count estimates q·n_c; the pooled count is near it and
        // the nets' sample sizes differ (independent Poisson samples, not one shared batch).
        let im = toy(200);
        let mut p = params();
        p.nets = 4;
        p.batch = 64;
        let nets = nets(&p, im.shape, 2, 3).unwrap();
        let mut sampler = crate::dp::sample::PoissonSampler::from_os().unwrap();
        let sizes: Vec<usize> = (0..8).map(|_| sampler.sample(400, 0.5).len()).collect();
        assert!(sizes.iter().any(|&s| s != sizes[0]), "{sizes:?}");
        let (rel, _) = release_per_net(&im, 2, &p, &nets, 0.5, 0.0, &progress::silent).unwrap();
        for c in 0..2 {
            assert!(
                (70.0..130.0).contains(&rel.counts[c]),
                "pooled count {} far from q·n_c = 100",
                rel.counts[c]
            );
        }
        // Every net's noiseless mean has norm at most 1/sqrt(K) (normalised embeddings).
        let f = rel.dim / p.nets;
        for c in 0..2 {
            for k in 0..p.nets {
                let m = &rel.means[c * rel.dim + k * f..c * rel.dim + (k + 1) * f];
                let n: f64 = m.iter().map(|x| x * x).sum::<f64>().sqrt();
                assert!(n <= 0.5 * 1.15 + 1e-6 && n > 0.1, "net {k} class {c}: {n}");
            }
        }
    }

    #[test]
    fn exact_release_is_used_for_small_releases() {
        let im = toy(3);
        let p = params();
        let nets = nets(&p, im.shape, 2, 3).unwrap();
        let (_, sampler) = release(&im, 2, &p, &nets, 1.0, &progress::silent).unwrap();
        assert_eq!(sampler, "opendp-exact-discrete-gaussian");
    }
}
