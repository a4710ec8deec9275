//! Distribution matching under differential privacy (`dm`).
//!
//! 1. **Release (private, one Gaussian mechanism).** A fixed, public set of `nets` random
//!    ConvNets ([`super::features`]) embeds every training image, averaged over `augment`
//!    random shifts. Each net's embedding is normalised to L2 norm `1/sqrt(nets)`, so the
//!    concatenation `u` has norm at most 1; the record's vector is `v = [alpha·u, beta]` with
//!    `alpha² + beta² = 1`, then clipped to `C` (a no-op by construction, kept as the rule says).
//!    The vectors are summed per class. Adding or removing one image changes exactly one class
//!    sum by a vector of norm at most `C`, so the whole matrix of class sums (classes × (D+1))
//!    has L2 sensitivity `C`, and adding N(0, σ²C²) to every coordinate **once** is one
//!    Gaussian mechanism: DpEvent `{"kind":"gaussian","sigma":σ,"count":1}`.
//! 2. **Post-processing (free).** The last coordinate of each noisy class sum divided by `beta`
//!    is a noisy class count released by the same mechanism; the noisy class mean of `u` is the
//!    noisy sum divided by `alpha` × that count (never by a private count). Synthetic images
//!    (initialised from noise, never from real images) are optimised with Adam so that the mean
//!    of their normalised embeddings under the same nets, with fresh random shifts (siamese
//!    augmentation), matches those noisy means; pixels are clamped to [0, 1].
//!
//! # Privacy
//! Neighbouring relation: add or remove one image. The random shifts are drawn i.i.d. per
//! record, independently of the data; conditioned on them the sensitivity is `C`, and a mixture
//! over the same (data-independent) augmentation distribution keeps the (ε, δ) bound. Mechanism: Gaussian, sensitivity `C`,
//! noise from [`crate::dp::noise::SecureGaussian`] (OS-keyed ChaCha20). Nothing else reads the
//! private images. The class counts used by the synthesis are the noisy released ones.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::features::{batch_tensor, normalise_rows, shift_batch, tensor_2d, FeatureNet};
use super::{Error, SyntheticSet};
use crate::dataset::{Images, Shape};
use crate::progress::{self, Event, Sink};

/// Hyper-parameters of `dm` (all public; recorded in `run.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DmParams {
    /// Number of random feature nets in the release.
    pub nets: usize,
    /// Channels of each feature net.
    pub width: usize,
    /// Blocks of each feature net.
    pub depth: usize,
    /// Random shifts averaged per real image before clipping.
    pub augment: usize,
    /// Maximum shift in pixels (real and synthetic side).
    pub max_shift: usize,
    /// Synthesis iterations (post-processing).
    pub iterations: usize,
    /// Nets used per synthesis iteration (drawn at random among `nets`).
    pub nets_per_iteration: usize,
    /// Adam learning rate on pixels.
    pub lr: f64,
    /// Standard deviation of the noise the synthetic pixels start from (around 0.5).
    pub init_std: f64,
    /// Weight of the count coordinate (`beta`; `alpha = sqrt(1 - beta²)`).
    pub count_weight: f64,
    /// Clip norm `C` of each record's vector.
    pub clip_norm: f64,
    /// Real images per embedding batch.
    pub batch: usize,
}

impl DmParams {
    /// The defaults, sized to the public record count `n` and class count.
    pub fn defaults(n: usize, classes: usize) -> DmParams {
        let per_class = n / classes.max(1);
        // Small cohorts: fewer feature coordinates (noise on a class mean grows as sqrt(D)/n).
        let nets = if per_class >= 3000 {
            16
        } else if per_class >= 1000 {
            10
        } else {
            6
        };
        DmParams {
            nets,
            width: 32,
            depth: 3,
            augment: 1,
            max_shift: 2,
            iterations: if n <= 5000 { 300 } else { 600 },
            nets_per_iteration: 4,
            lr: 0.01,
            init_std: 0.1,
            count_weight: 0.3,
            clip_norm: 1.0,
            batch: 500,
        }
    }

    /// Checks the values are usable.
    ///
    /// # Errors
    /// `distill-bad-parameter`.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Error::BadParameter {
            name: what.into(),
            why: "must be positive".into(),
        };
        if self.nets == 0 {
            return Err(bad("nets"));
        }
        if self.width == 0 || self.depth == 0 {
            return Err(bad("width/depth"));
        }
        if self.augment == 0 || self.batch == 0 || self.nets_per_iteration == 0 {
            return Err(bad("augment/batch/nets_per_iteration"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(bad("lr"));
        }
        if !(self.count_weight > 0.0 && self.count_weight < 1.0) {
            return Err(Error::BadParameter {
                name: "count_weight".into(),
                why: "must be in (0, 1)".into(),
            });
        }
        if !(self.clip_norm > 0.0 && self.clip_norm.is_finite()) {
            return Err(bad("clip_norm"));
        }
        Ok(())
    }
}

/// The feature nets of a run (public, from the initialisation seed).
pub fn nets(p: &DmParams, shape: Shape, seed: u64) -> Vec<FeatureNet> {
    (0..p.nets as u64)
        .map(|k| FeatureNet::random(seed, k, shape, p.width, p.depth))
        .collect()
}

/// The noisy release: per class, the noisy mean of the normalised embeddings and the noisy
/// count (both post-processing of one Gaussian mechanism).
#[derive(Debug, Clone)]
pub struct Release {
    /// `classes × dim` noisy means (row-major).
    pub means: Vec<f64>,
    /// Noisy class counts (clamped to at least 1, post-processing).
    pub counts: Vec<f64>,
    /// Embedding dimension.
    pub dim: usize,
}

fn candle(e: candle_core::Error) -> Error {
    Error::Compute {
        what: e.to_string(),
    }
}

/// Clipped per-class sums of the records' vectors (before noise). Private: crate-only.
pub(crate) fn class_sums(
    train: &Images,
    classes: usize,
    p: &DmParams,
    nets: &[FeatureNet],
    aug_seed: u64,
    sink: Sink<'_>,
) -> Result<(Vec<f64>, usize), Error> {
    let shape = train.shape;
    let dims: Vec<usize> = nets.iter().map(|n| n.dim(shape)).collect();
    let dim: usize = dims.iter().sum();
    let width = dim + 1;
    let alpha = (1.0 - p.count_weight * p.count_weight).sqrt();
    let per_net = 1.0 / (nets.len() as f64).sqrt();
    let mut sums = vec![0f64; classes * width];
    let mut rng = ChaCha8Rng::seed_from_u64(aug_seed);
    let n = train.len();
    sink(Event::Start {
        label: "embedding (private)",
        total: n as u64,
    });
    let mut start = 0;
    while start < n {
        progress::check().map_err(|_| Error::Cancelled)?;
        let end = (start + p.batch).min(n);
        let imgs: Vec<&[u8]> = (start..end).map(|i| train.image(i)).collect();
        let b = imgs.len();
        // u: [b, dim] accumulated over augmentations.
        let mut u = vec![0f32; b * dim];
        for _ in 0..p.augment {
            let x = batch_tensor(&imgs, shape, p.max_shift, &mut rng).map_err(candle)?;
            let mut off = 0;
            for (net, &d) in nets.iter().zip(&dims) {
                let e = normalise_rows(&net.embed(&x).map_err(candle)?, per_net)
                    .map_err(candle)?
                    .to_vec2::<f32>()
                    .map_err(candle)?;
                for (i, row) in e.iter().enumerate() {
                    let dst = &mut u[i * dim + off..i * dim + off + d];
                    for (a, v) in dst.iter_mut().zip(row) {
                        *a += v / p.augment as f32;
                    }
                }
                off += d;
            }
        }
        for i in 0..b {
            let mut v: Vec<f32> = u[i * dim..(i + 1) * dim]
                .iter()
                .map(|x| x * alpha as f32)
                .collect();
            v.push(p.count_weight as f32);
            crate::dp::clip::clip_in_place(&mut v, p.clip_norm);
            let c = train.labels[start + i] as usize;
            let dst = &mut sums[c * width..(c + 1) * width];
            for (s, x) in dst.iter_mut().zip(&v) {
                *s += *x as f64;
            }
        }
        sink(Event::Advance(b as u64));
        start = end;
    }
    sink(Event::Finish);
    Ok((sums, dim))
}

/// Run the private release: clipped class sums plus one draw of N(0, σ²C²) per coordinate.
///
/// # Privacy
/// One Gaussian mechanism with L2 sensitivity `p.clip_norm` under add/remove-one-image; the
/// caller must have reserved `DpEvent::Gaussian { sigma, count: 1 }` in the ledger.
///
/// # Errors
/// `distill-cancelled`, `distill-compute`, `distill-rng`.
pub fn release(
    train: &Images,
    classes: usize,
    p: &DmParams,
    nets: &[FeatureNet],
    sigma: f64,
    aug_seed: u64,
    sink: Sink<'_>,
) -> Result<Release, Error> {
    let (mut sums, dim) = class_sums(train, classes, p, nets, aug_seed, sink)?;
    let mut noise = crate::dp::noise::SecureGaussian::from_os().map_err(|_| Error::Rng)?;
    noise.add_noise_f64(&mut sums, sigma * p.clip_norm);
    Ok(post_process(&sums, classes, dim, p))
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

/// Optimise `ipc` synthetic images per class to match the released means (post-processing).
///
/// # Errors
/// `distill-cancelled`, `distill-compute`.
pub fn synthesise(
    rel: &Release,
    shape: Shape,
    classes: usize,
    ipc: usize,
    p: &DmParams,
    nets: &[FeatureNet],
    seed: u64,
    sink: Sink<'_>,
) -> Result<(SyntheticSet, Vec<f64>), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x51_7e_5e));
    let n_syn = classes * ipc;
    let init = seeded_init((n_syn, shape.c, shape.h, shape.w), p.init_std, &mut rng)
        .map_err(candle)?;
    let syn = Var::from_tensor(&init).map_err(candle)?;
    let mut opt = AdamW::new(
        vec![syn.clone()],
        ParamsAdamW {
            lr: p.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .map_err(candle)?;
    let dims: Vec<usize> = nets.iter().map(|n| n.dim(shape)).collect();
    let offs: Vec<usize> = dims
        .iter()
        .scan(0, |s, &d| {
            let o = *s;
            *s += d;
            Some(o)
        })
        .collect();
    let target = tensor_2d(&rel.means, classes, rel.dim).map_err(candle)?;
    let per_net = 1.0 / (nets.len() as f64).sqrt();
    let k_iter = p.nets_per_iteration.min(nets.len());
    let mut losses = Vec::with_capacity(p.iterations);
    sink(Event::Start {
        label: "synthesis (post-processing)",
        total: p.iterations as u64,
    });
    for it in 0..p.iterations {
        progress::check().map_err(|_| Error::Cancelled)?;
        // Cosine learning-rate decay.
        let frac = it as f64 / p.iterations.max(1) as f64;
        opt.set_learning_rate(p.lr * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos()));
        let chosen = rand::seq::index::sample(&mut rng, nets.len(), k_iter);
        let x = shift_batch(syn.as_tensor(), p.max_shift, &mut rng).map_err(candle)?;
        let mut loss: Option<Tensor> = None;
        for k in chosen.iter() {
            let e = normalise_rows(&nets[k].embed(&x).map_err(candle)?, per_net).map_err(candle)?;
            let m = e
                .reshape((classes, ipc, dims[k]))
                .and_then(|t| t.mean(1))
                .map_err(candle)?;
            let t = target.narrow(1, offs[k], dims[k]).map_err(candle)?;
            let l = (m - t)
                .and_then(|d| d.sqr())
                .and_then(|d| d.sum_all())
                .map_err(candle)?;
            loss = Some(match loss {
                None => l,
                Some(acc) => (acc + l).map_err(candle)?,
            });
        }
        let loss = loss.expect("invariant: at least one net per iteration");
        losses.push(loss.to_scalar::<f32>().map_err(candle)? as f64);
        opt.backward_step(&loss).map_err(candle)?;
        let clamped = syn.as_tensor().clamp(0f32, 1f32).map_err(candle)?;
        syn.set(&clamped).map_err(candle)?;
        sink(Event::Advance(1));
    }
    sink(Event::Finish);
    let pixels = syn
        .as_tensor()
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle)?;
    let labels = (0..n_syn).map(|i| (i / ipc) as u32).collect();
    Ok((
        SyntheticSet {
            shape,
            data: pixels,
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
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let b = 64usize;
    let imgs: Vec<Vec<u8>> = (0..b)
        .map(|i| (0..shape.len()).map(|j| ((i * 31 + j * 7) % 256) as u8).collect())
        .collect();
    let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
    let net = FeatureNet::random(1, 0, shape, p.width, p.depth);
    let x = batch_tensor(&refs, shape, p.max_shift, &mut rng).map_err(candle)?;
    net.embed(&x).map_err(candle)?; // warm-up
    let t = std::time::Instant::now();
    normalise_rows(&net.embed(&x).map_err(candle)?, 1.0).map_err(candle)?;
    let per_image_net = t.elapsed().as_secs_f64() / b as f64;
    let embed = per_image_net * records as f64 * (p.nets * p.augment) as f64;
    // Two synthesis iterations with one net each, on the planned number of synthetic images.
    let mut q = p.clone();
    q.iterations = 2;
    q.nets = p.nets_per_iteration.min(p.nets);
    q.nets_per_iteration = q.nets;
    let nets = nets(&q, shape, 1);
    let dim: usize = nets.iter().map(|n| n.dim(shape)).sum();
    let rel = Release {
        means: vec![0.0; classes * dim],
        counts: vec![1.0; classes],
        dim,
    };
    let t = std::time::Instant::now();
    synthesise(&rel, shape, classes, ipc, &q, &nets, 1, &progress::silent)?;
    let per_iter = t.elapsed().as_secs_f64() / 2.0;
    Ok(embed + per_iter * p.iterations as f64)
}

/// Synthetic pixels start from noise N(0.5, std²) clamped to [0, 1], from the seeded
/// (non-private) initialisation stream; never from real images.
fn seeded_init(
    dims: (usize, usize, usize, usize),
    std: f64,
    rng: &mut ChaCha8Rng,
) -> candle_core::Result<Tensor> {
    use rand_distr::{Distribution, Normal};
    let normal = Normal::new(0.5f32, std as f32).expect("invariant: std is positive and finite");
    let v: Vec<f32> = (0..dims.0 * dims.1 * dims.2 * dims.3)
        .map(|_| normal.sample(rng).clamp(0.0, 1.0))
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
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
            iterations: 40,
            nets_per_iteration: 2,
            lr: 0.03,
            init_std: 0.1,
            count_weight: 0.3,
            clip_norm: 1.0,
            batch: 7,
        }
    }

    #[test]
    fn every_record_vector_is_within_the_clip_norm() {
        // One record alone: its class sum is its vector; the norm must be <= C.
        let im = toy(1).select(&[0]);
        let p = params();
        let nets = nets(&p, im.shape, 3);
        let (sums, dim) = class_sums(&im, 2, &p, &nets, 1, &progress::silent).unwrap();
        let norm: f64 = sums.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(norm <= p.clip_norm + 1e-6, "norm {norm}");
        assert!(norm > 0.9, "the vector should be nearly unit length, got {norm}");
        // The other class's sum is untouched: the record touches only its class.
        assert!(sums[dim + 1..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn sums_of_neighbours_differ_by_at_most_c() {
        // Augmentations are i.i.d. per record, so neighbours are compared under the same
        // (coupled) augmentation draws; with shifts off the coupling is the identity.
        let im = toy(5);
        let mut p = params();
        p.max_shift = 0;
        let nets = nets(&p, im.shape, 3);
        let (a, _) = class_sums(&im, 2, &p, &nets, 9, &progress::silent).unwrap();
        let idx: Vec<usize> = (0..im.len() - 1).collect();
        let (b, _) = class_sums(&im.select(&idx), 2, &p, &nets, 9, &progress::silent).unwrap();
        let d: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
        assert!(d <= p.clip_norm + 1e-6, "sensitivity exceeded: {d}");
    }

    #[test]
    fn noiseless_counts_are_recovered_and_synthesis_lowers_the_loss() {
        let im = toy(6);
        let p = params();
        let nets = nets(&p, im.shape, 3);
        let (sums, dim) = class_sums(&im, 2, &p, &nets, 9, &progress::silent).unwrap();
        let rel = post_process(&sums, 2, dim, &p);
        assert!((rel.counts[0] - 6.0).abs() < 1e-4 && (rel.counts[1] - 6.0).abs() < 1e-4);
        let (set, losses) =
            synthesise(&rel, im.shape, 2, 2, &p, &nets, 5, &progress::silent).unwrap();
        assert_eq!(set.labels, vec![0, 0, 1, 1]);
        assert!(set.data.iter().all(|&x| (0.0..=1.0).contains(&x)));
        let first: f64 = losses[..5].iter().sum();
        let last: f64 = losses[losses.len() - 5..].iter().sum();
        assert!(last < first, "loss did not fall: {first} -> {last}");
    }
}
