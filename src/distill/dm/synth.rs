//! Synthesis for `dm` (post-processing of a [`Release`]): synthetic images from noise
//! matched to the released noisy means under the public feature nets, the smooth start, the
//! dark floor, and the run-time estimate.
//!
//! # Privacy
//! Reads only the released (noisy) statistics, the public nets and the public seed: free
//! post-processing. It never sees a private record.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::features::{base_len, emb_len, embed, embed_vjp, lift, nets, rff_angles, rff_matrix};
use super::{augment, nn_err, DmParams, Release};
use crate::dataset::Shape;
use crate::distill::{Error, SyntheticSet};
use crate::nn::Net;
use crate::progress::{self, Event, Sink};

/// The matching loss Σ_c ‖mean_i normalise(f(x_ci)) − t_c‖² of one net and its gradient
/// w.r.t. the (shifted) synthetic inputs `x` (class-major, `ipc` per class).
pub(crate) fn net_loss_grad(
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
pub(crate) fn blur(img: &[f32], shape: Shape, sigma: f64) -> Vec<f32> {
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
pub(crate) fn apply_floor(data: &mut [f32], floor: f64) {
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
    synthesise_guided(rel, shape, classes, ipc, p, nets, trained, None, seed, sink)
}

/// The DP teacher's guidance of the synthesis: its cross-entropy on the (augmented) synthetic
/// images against their classes, its gradient rescaled to `weight` times the matching
/// gradient's norm (post-processing of the teacher's releases).
#[derive(Debug, Clone, Copy)]
pub struct Guide<'a> {
    /// The teacher.
    pub teacher: &'a crate::distill::teacher::Teacher,
    /// Relative weight (0 = none).
    pub weight: f64,
}

/// [`synthesise`] with the teacher's guidance term.
///
/// # Errors
/// `distill-cancelled`, `distill-compute`.
#[allow(clippy::too_many_arguments)]
pub fn synthesise_guided(
    rel: &Release,
    shape: Shape,
    classes: usize,
    ipc: usize,
    p: &DmParams,
    nets: &[Net],
    trained: &[bool],
    guide: Option<Guide<'_>>,
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
        if let Some(g) = guide.filter(|g| g.weight > 0.0) {
            let pixels: Vec<f32> = x.iter().map(|v| v + 0.5).collect();
            let (_, gt) = g.teacher.loss_and_input_grads(&pixels, &syn_labels)?;
            let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            let (nm, nt) = (norm(&grad_x), norm(&gt));
            if nt > 0.0 && nm > 0.0 {
                let k = (g.weight * nm / nt) as f32;
                grad_x.iter_mut().zip(&gt).for_each(|(a, b)| *a += k * b);
            }
        }
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
            soft_labels: None,
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
    // DP-SGD warm-up: per-sample gradients of the expected batch, per step (the mechanism's
    // clipping and sums cost a small fraction of them).
    let warm = match (&p.warmup, p.sample_rate) {
        (Some(w), Some(q)) => {
            let y: Vec<u32> = (0..b).map(|i| (i % classes.max(2)) as u32).collect();
            let grads =
                |x: &[f32], y: &[u32]| crate::nn::per_sample_grads(&nets[0], x, y).map_err(nn_err);
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
    use super::super::testutil::{params, toy};
    use super::*;
    use crate::nn::Activation;

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
}
