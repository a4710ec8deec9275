//! The feature side of `dm`: the random feature nets, their embeddings, and the random
//! Fourier lift. Everything here is a public function of public weights (the initialisation
//! seed and fixed projection seeds); it never sees a private record except as the argument
//! of the per-record function that [`super::release`] hands to the mechanism.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{nn_err, DmParams};
use crate::dataset::Shape;
use crate::distill::Error;
use crate::nn::Net;

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
pub(crate) fn emb_len(net: &Net, p: &DmParams) -> usize {
    base_len(net, p) * if p.second_moments { 2 } else { 1 } + 2 * p.rff
}

/// The public projection of the random Fourier features: `rff × b` entries drawn from
/// N(0, 1/ℓ_r²) by a fixed generator (data-independent; cached per shape), row r's bandwidth
/// ℓ_r = `rff_bandwidth` · 2^(r mod scales − (scales − 1)/2).
pub(crate) fn rff_matrix(b: usize, p: &DmParams) -> std::sync::Arc<Vec<f32>> {
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
pub(crate) fn rff_angles(u: &[f32], b: usize, scale: f32, w: &[f32], d: usize) -> Vec<f32> {
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
pub(crate) fn base_len(net: &Net, p: &DmParams) -> usize {
    net.feature_len() + if p.block_means { net.means_len() } else { 0 }
}

/// Normalise each raw embedding row of `e` (length `b`) to norm `scale` and, with second
/// moments, append its squares divided by `scale`, the whole row times 1/√2: every output
/// row has norm at most `scale`. Returns the rows and the raw norms.
pub(crate) fn lift(e: &mut [f32], b: usize, scale: f32, p: &DmParams) -> (Vec<f32>, Vec<f32>) {
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
pub(crate) fn embed(net: &Net, x: &[f32], p: &DmParams) -> Result<Vec<f32>, Error> {
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
pub(crate) fn embed_vjp(net: &Net, x: &[f32], d: &[f32], p: &DmParams) -> Result<Vec<f32>, Error> {
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
pub(crate) fn normalise_rows(e: &mut [f32], f: usize, scale: f32) -> Vec<f32> {
    e.chunks_mut(f)
        .map(|row| {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            let k = if n > 0.0 { scale / n } else { 0.0 };
            row.iter_mut().for_each(|x| *x *= k);
            n
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::params;
    use super::*;

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
}
