//! The private side of `dm`, and the ONLY `dm` file that touches private records: it builds
//! the per-record function (each record's normalised embedding under the feature nets,
//! averaged over OS-keyed augmentations, as `[alpha·u, beta]`), hands it to the one mechanism
//! ([`crate::dp::mechanism::GaussianSum::release`]) for the per-net and one-shot releases and
//! the DP-SGD warm-up, and post-processes the noisy sums into a [`Release`] of noisy class
//! means and counts.
//!
//! # Privacy
//! Private pixels reach this file only as the mechanism's [`Batch`]. Every release is charged
//! to the run's [`Allowance`] by the mechanism before it reads a record; the per-record
//! function's row for a record depends only on that record, its own augmentation draws
//! (from the mechanism's OS-keyed stream, never the public seed) and the public nets. See the
//! parent module for the sensitivity argument.

use super::features::{base_len, emb_len, embed, lift};
use super::{augment, nn_err, DmParams};
use crate::dataset::Shape;
use crate::distill::Error;
use crate::dp::mechanism::{
    Allowance, Batch, GaussianSum, Grouping, Noise, Records, Sampling, FLOAT_SAMPLER,
};
use crate::dp::{ClipNorm, NoiseMultiplier, SampleRate};
use crate::nn::Net;
use crate::progress::{self, Event, Sink};

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

fn mechanism(
    p: &DmParams,
    sampling: Sampling,
    grouping: Grouping,
    sigma: f64,
    noise: Noise,
    chunk: usize,
) -> Result<GaussianSum, Error> {
    Ok(GaussianSum {
        sampling,
        grouping,
        clip: ClipNorm::new(p.clip_norm)?,
        sigma: NoiseMultiplier::new(sigma)?,
        noise,
        chunk,
    })
}

/// The per-record function of the releases and its embedding length `dim` (rows have
/// `dim + 1` values): each record's embedding under every net of `nets`, each net's part
/// lifted and normalised to `per_net`, averaged over `augment` warps drawn i.i.d. per record
/// from the batch's OS-keyed stream, as `[alpha·u, beta]` (norm 1 up to rounding).
///
/// # Privacy
/// Row `i` depends only on record `i`, its own warps and the public nets and parameters.
pub(crate) fn record_rows<'a>(
    p: &'a DmParams,
    nets: &'a [Net],
    per_net: f32,
    shape: Shape,
) -> (
    usize,
    impl Fn(&mut Batch<'_>) -> Result<Vec<f32>, Error> + Sync + 'a,
) {
    let feat: Vec<usize> = nets.iter().map(|n| emb_len(n, p)).collect();
    let dim: usize = feat.iter().sum();
    let alpha = (1.0 - p.count_weight * p.count_weight).sqrt() as f32;
    let beta = p.count_weight as f32;
    let f = move |batch: &mut Batch<'_>| -> Result<Vec<f32>, Error> {
        let b = batch.len();
        // The nets see pixels in [-0.5, 0.5].
        let raw: Vec<f32> = batch.pixels.iter().map(|&v| v - 0.5).collect();
        let mut u = vec![0f32; b * dim];
        let mut x = Vec::new();
        for _ in 0..p.augment {
            let warps: Vec<augment::Warp> = (0..b)
                .map(|_| augment::Warp::draw(&mut *batch.rng, p.augmentation, p.max_shift))
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
        let mut rows = Vec::with_capacity(b * (dim + 1));
        for ui in u.chunks(dim.max(1)).take(b) {
            rows.extend(ui.iter().map(|x| x * alpha));
            rows.push(beta);
        }
        Ok(rows)
    };
    (dim, f)
}

/// The per-net private release (`sample_rate = Some(q)`): for each net, one mechanism release
/// over a fresh Poisson sample of the records at rate `q` (OS-keyed), of the per-class sums of
/// that net's rows `[alpha·u, beta]` (`u` normalised to norm 1), clipped below `C`, plus
/// N(0, σ²C²) on every coordinate (the OS-keyed float sampler).
///
/// # Privacy
/// Each net's release is one Poisson-sampled Gaussian mechanism with L2 sensitivity `C` under
/// add/remove-one-image (a record touches one class sum of that net, by a row of norm below
/// `C`), charged to `allowance` as `PoissonSampledGaussian { q, σ, steps: 1 }`; the `nets`
/// releases compose exactly as `nets` DP-SGD steps (Mironov, Talwar & Zhang 2019).
/// Post-processing: the class counts are pooled over every net's noisy count coordinate (each
/// estimates `q·n_c`), and each net's noisy mean is its noisy sum over `alpha` × that pooled
/// count — no private count is used.
///
/// # Errors
/// `dp-allowance-exceeded` (nothing read), `distill-cancelled`, `distill-compute`, `dp-*`.
#[allow(clippy::too_many_arguments)]
pub fn release_per_net(
    data: &Records<'_>,
    allowance: &mut Allowance,
    classes: usize,
    p: &DmParams,
    nets: &[Net],
    q: f64,
    sigma: f64,
    sink: Sink<'_>,
) -> Result<(Release, &'static str), Error> {
    let m = mechanism(
        p,
        Sampling::Poisson(SampleRate::new(q)?),
        Grouping::ByClass(classes),
        sigma,
        Noise::Float,
        p.batch,
    )?;
    sink(Event::Start {
        label: "embedding (private, one Poisson sample per net)",
        total: nets.len() as u64,
    });
    let mut noisy: Vec<(Vec<f64>, usize)> = Vec::with_capacity(nets.len());
    for net in nets {
        let (f, rows) = record_rows(p, std::slice::from_ref(net), 1.0, data.shape());
        let r = m.release(allowance, data, f + 1, &rows, &progress::silent)?;
        noisy.push((r.sums.concat(), f));
        sink(Event::Advance(1));
    }
    sink(Event::Finish);
    Ok((post_process_per_net(&noisy, classes, p), FLOAT_SAMPLER))
}

/// The one-shot private release (`sample_rate = None`): every record's rows under all nets at
/// once (each net's part normalised to `1/sqrt(nets)`), clipped below `C`, summed per class,
/// plus one draw of N(0, σ²C²) per coordinate.
///
/// # Privacy
/// One Gaussian mechanism with L2 sensitivity `C` under add/remove-one-image, charged to
/// `allowance` as `Gaussian { σ, count: 1 }`. Releases of at most `p.exact_max_coords`
/// coordinates use opendp's exact discrete Gaussian ([`crate::dp::exact::gaussian_release`],
/// immune to floating-point attacks); larger ones the OS-keyed ChaCha20 float sampler
/// ([`crate::dp::noise::SecureGaussian`]).
///
/// # Errors
/// `dp-allowance-exceeded` (nothing read), `distill-cancelled`, `distill-compute`, `dp-*`.
pub fn release(
    data: &Records<'_>,
    allowance: &mut Allowance,
    classes: usize,
    p: &DmParams,
    nets: &[Net],
    sigma: f64,
    sink: Sink<'_>,
) -> Result<(Release, &'static str), Error> {
    let m = mechanism(
        p,
        Sampling::Everyone,
        Grouping::ByClass(classes),
        sigma,
        Noise::Auto {
            exact_max_coords: p.exact_max_coords,
        },
        p.batch,
    )?;
    let per_net = 1.0 / (nets.len() as f32).sqrt();
    let (dim, rows) = record_rows(p, nets, per_net, data.shape());
    sink(Event::Start {
        label: "embedding (private)",
        total: data.len() as u64,
    });
    let r = m.release(allowance, data, dim + 1, &rows, sink)?;
    sink(Event::Finish);
    Ok((post_process(&r.sums.concat(), classes, dim, p), r.sampler))
}

/// DP-SGD warm-up (`p.warmup`): train `trajectories` nets (each starting from one of the
/// public random inits, `nets[t]`) on the real records, and put evenly spaced snapshots of
/// their trajectories in place of the first `trained_fraction × nets` feature nets. Returns
/// which nets are trained snapshots.
///
/// Each step is one mechanism release over a Poisson sample at rate `q` (OS-keyed) of the
/// per-sample cross-entropy gradients ([`crate::nn::per_sample_grads`], inputs scaled as in the
/// releases, `v/255 − 0.5`), clipped below `C`, summed, plus N(0, σ²C²) per coordinate,
/// divided by the *expected* batch `q·n` ([`crate::eval::noisy_clipped_mean`]); then an SGD
/// step with momentum.
///
/// # Privacy
/// Every step is one Poisson-sampled Gaussian mechanism with sensitivity `C`, the same `q`
/// and `σ` as the per-net releases, charged to `allowance`: the plan reserves
/// `{"kind":"poisson-sampled-gaussian","q":q,"sigma":σ,"steps":nets + trajectories × steps}`.
/// The snapshots are post-processing of the noisy steps.
///
/// # Errors
/// `dp-allowance-exceeded` (nothing read), `distill-cancelled`, `distill-compute`, `dp-*`.
#[allow(clippy::too_many_arguments)]
pub fn warm_up(
    data: &Records<'_>,
    allowance: &mut Allowance,
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
    let m = mechanism(
        p,
        Sampling::Poisson(SampleRate::new(q)?),
        Grouping::Single,
        sigma,
        Noise::Float,
        crate::nn::per_sample_chunk(),
    )?;
    let expected = (q * data.len() as f64).max(1.0) as f32;
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
            let g = crate::eval::noisy_clipped_mean(&net, &m, allowance, data, -0.5, expected)
                .map_err(|e| e.map_record(nn_err))?;
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
/// and scaled by `1/sqrt(nets)` to the layout [`super::synthesise`] matches (post-processing only).
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

#[cfg(test)]
mod tests;
