//! Tests of the engine against an independent reference: candle's autograd, one sample at a
//! time (the "naive loop of batch-1 passes"), with the narrow-before-pool workaround for
//! candle's odd-size `avg_pool2d` backward.

use super::*;
use crate::nn::{Activation, Arch, ConvNetConfig, MlpConfig, Net};
use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn conv(c: usize, h: usize, w: usize, width: usize, act: Activation) -> ConvNetConfig {
    ConvNetConfig {
        channels: c,
        height: h,
        width: w,
        classes: 4,
        net_width: width,
        depth: 3,
        activation: act,
    }
}

/// A net with non-trivial norm affine parameters (so their gradients matter).
fn net(arch: Arch, seed: u64) -> Net {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n = Net::new(arch, &mut rng).unwrap();
    for g in n.groups() {
        if g.name.starts_with("norm") {
            let shift = if g.name.ends_with("weight") { 1.0 } else { 0.0 };
            for v in &mut n.params_mut()[g.offset..g.offset + g.len()] {
                *v = shift + rng.gen_range(-0.3..0.3);
            }
        }
    }
    n
}

fn images(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * d).map(|_| rng.gen_range(0.0..1.0)).collect()
}

struct RefOut {
    loss: f32,
    dp: Vec<f32>,
    dx: Vec<f32>,
    feat: Vec<f32>,
}

/// Candle autograd on one sample. `dfeat`: if given, backpropagate `<features, dfeat>` instead
/// of the loss.
fn candle_ref(net: &Net, x: &[f32], label: u32, dfeat: Option<&[f32]>) -> RefOut {
    let dev = Device::Cpu;
    let groups = net.groups();
    let p = net.params();
    let vars: Vec<Var> = groups
        .iter()
        .map(|g| Var::from_slice(g.slice(p), (g.rows, g.cols), &dev).unwrap())
        .collect();
    let get = |name: &str| -> &Var { &vars[groups.iter().position(|g| g.name == name).unwrap()] };
    let xs;
    let (feat, logits) = match net.arch() {
        Arch::ConvNet(c) => {
            xs = Var::from_slice(x, (1, c.channels, c.height, c.width), &dev).unwrap();
            let mut h = xs.as_tensor().clone();
            let k = c.net_width;
            for l in 0..c.depth {
                let cin = if l == 0 { c.channels } else { k };
                let w = get(&format!("conv{l}.weight"))
                    .reshape((k, cin, 3, 3))
                    .unwrap();
                h = h.conv2d(&w, 1, 1, 1, 1).unwrap();
                let mean = h.mean_keepdim(3).unwrap().mean_keepdim(2).unwrap();
                let xc = h.broadcast_sub(&mean).unwrap();
                let var = xc
                    .sqr()
                    .unwrap()
                    .mean_keepdim(3)
                    .unwrap()
                    .mean_keepdim(2)
                    .unwrap();
                let xhat = xc
                    .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
                    .unwrap();
                let g = get(&format!("norm{l}.weight"))
                    .reshape((1, k, 1, 1))
                    .unwrap();
                let b = get(&format!("norm{l}.bias")).reshape((1, k, 1, 1)).unwrap();
                h = xhat.broadcast_mul(&g).unwrap().broadcast_add(&b).unwrap();
                h = match c.activation {
                    Activation::Relu => h.relu().unwrap(),
                    Activation::Gelu => h.gelu().unwrap(),
                };
                let (_, _, hh, ww) = h.dims4().unwrap();
                h = h
                    .narrow(2, 0, hh / 2 * 2)
                    .unwrap()
                    .narrow(3, 0, ww / 2 * 2)
                    .unwrap()
                    .avg_pool2d(2)
                    .unwrap();
            }
            let feat = h.flatten_all().unwrap().unsqueeze(0).unwrap();
            let logits = feat
                .matmul(&get("fc.weight").t().unwrap())
                .unwrap()
                .broadcast_add(get("fc.bias"))
                .unwrap();
            (feat, logits)
        }
        Arch::Mlp(c) => {
            xs = Var::from_slice(x, (1, c.inputs), &dev).unwrap();
            let mut h = xs.as_tensor().clone();
            let n = c.hidden.len() + 1;
            let mut feat = h.clone();
            for i in 0..n {
                h = h
                    .matmul(&get(&format!("fc{i}.weight")).t().unwrap())
                    .unwrap()
                    .broadcast_add(get(&format!("fc{i}.bias")))
                    .unwrap();
                if i + 1 < n {
                    h = match c.activation {
                        Activation::Relu => h.relu().unwrap(),
                        Activation::Gelu => h.gelu().unwrap(),
                    };
                    feat = h.clone();
                }
            }
            (feat, h)
        }
    };
    let target = Tensor::new(&[label], &dev).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &target).unwrap();
    let objective = match dfeat {
        Some(df) => {
            let d = Tensor::from_slice(df, feat.dims(), &dev).unwrap();
            (feat.clone() * d).unwrap().sum_all().unwrap()
        }
        None => loss.clone(),
    };
    let grads = objective.backward().unwrap();
    let mut dp = vec![0f32; net.num_params()];
    for (g, v) in groups.iter().zip(&vars) {
        if let Some(t) = grads.get(v) {
            let vals = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            dp[g.offset..g.offset + g.len()].copy_from_slice(&vals);
        }
    }
    let dx = grads
        .get(&xs)
        .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .unwrap_or_default();
    RefOut {
        loss: loss.to_dtype(DType::F32).unwrap().to_vec0::<f32>().unwrap(),
        dp,
        dx,
        feat: feat.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    }
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt()
}

fn archs() -> Vec<Arch> {
    vec![
        Arch::ConvNet(conv(1, 28, 28, 8, Activation::Relu)),
        Arch::ConvNet(conv(3, 32, 32, 6, Activation::Gelu)),
        Arch::ConvNet(conv(1, 29, 30, 5, Activation::Relu)),
        Arch::Mlp(MlpConfig {
            inputs: 64,
            hidden: vec![32, 16],
            classes: 4,
            activation: Activation::Gelu,
        }),
    ]
}

/// See: issue 4 — per-sample gradients agree with a naive loop of batch-1 autograd passes to
/// a relative error ≤ 1e-4, row by row.
#[test]
fn per_sample_grads_match_naive_batch1_autograd() {
    for (ai, arch) in archs().into_iter().enumerate() {
        let net = net(arch, 7 + ai as u64);
        let n = 9;
        let d = net.input_len();
        let x = images(n, d, 11 + ai as u64);
        let labels: Vec<u32> = (0..n as u32).map(|i| (i * 7 + 1) % 4).collect();
        let rows = per_sample_grads(&net, &x, &labels).unwrap();
        assert_eq!(rows.len(), n * net.num_params());
        for (i, row) in rows.chunks(net.num_params()).enumerate() {
            let r = candle_ref(&net, &x[i * d..(i + 1) * d], labels[i], None);
            let e = rel_err(row, &r.dp);
            assert!(e <= 1e-4, "arch {ai} sample {i}: rel err {e}");
        }
    }
}

/// See: issue 4, issue 19 — the DP-SGD step through the one mechanism (per-sample gradients as
/// the per-record function, clipping and per-class sums in the mechanism) agrees with
/// reference clipped sums from batch-1 autograd, for both groupings, with a clip norm in the
/// middle of the per-sample norms (some clipped, some not).
#[test]
fn mechanism_clipped_sums_match_naive_batch1_autograd() {
    use crate::dataset::{Images, Shape};
    use crate::dp::mechanism::{Allowance, Batch, GaussianSum, Grouping, Noise, Records, Sampling};
    for (ai, arch) in archs().into_iter().enumerate() {
        let net = net(arch, 7 + ai as u64);
        let n = 9;
        let d = net.input_len();
        // 8-bit records, as the mechanism reads them.
        let mut im = Images::new(Shape { c: 1, h: 1, w: d });
        let mut rng = ChaCha8Rng::seed_from_u64(11 + ai as u64);
        let labels: Vec<u32> = (0..n as u32).map(|i| (i * 7 + 1) % 4).collect();
        for &l in &labels {
            let px: Vec<u8> = (0..d).map(|_| rng.gen()).collect();
            im.push(&px, l);
        }
        let x: Vec<f32> = im.pixels.iter().map(|&v| v as f32 / 255.0).collect();
        let refs: Vec<RefOut> = (0..n)
            .map(|i| candle_ref(&net, &x[i * d..(i + 1) * d], labels[i], None))
            .collect();
        let ref_norms: Vec<f64> = refs.iter().map(|r| norm(&r.dp)).collect();
        let mut sorted = ref_norms.clone();
        sorted.sort_by(f64::total_cmp);
        let clip = sorted[n / 2];
        for grouping in [Grouping::Single, Grouping::ByClass(4)] {
            let m = GaussianSum {
                sampling: Sampling::Everyone,
                grouping,
                clip: crate::dp::ClipNorm::new(clip).unwrap(),
                sigma: crate::dp::NoiseMultiplier::new(1e-12).unwrap(),
                noise: Noise::Float,
                chunk: 4,
            };
            let mut a = Allowance::new(&[m.event()]).unwrap();
            let f = |b: &mut Batch<'_>| per_sample_grads(&net, b.pixels, b.labels);
            let got = m
                .release(
                    &mut a,
                    &Records::new(&im),
                    net.num_params(),
                    &f,
                    &crate::progress::silent,
                )
                .unwrap();
            for (k, sum) in got.sums.iter().enumerate() {
                let mut want = vec![0f32; net.num_params()];
                for i in 0..n {
                    if grouping == Grouping::Single || labels[i] as usize == k {
                        let f = (clip / ref_norms[i]).min(1.0) as f32;
                        want.iter_mut()
                            .zip(&refs[i].dp)
                            .for_each(|(a, b)| *a += f * b);
                    }
                }
                let sum: Vec<f32> = sum.iter().map(|&v| v as f32).collect();
                let e = rel_err(&sum, &want);
                assert!(e <= 1e-4, "arch {ai} {grouping:?} group {k}: rel err {e}");
            }
        }
    }
}

/// See: issue 22 (soft labels). The loss is linear in the target, so the soft-label batch
/// gradient is the target-weighted mix of the per-sample gradients under each hard label; a
/// one-hot target gives the hard-label gradient.
#[test]
fn soft_label_grads_mix_the_hard_ones() {
    for (ai, arch) in archs().into_iter().enumerate().skip(2) {
        let net = net(arch, 11 + ai as u64);
        let (n, k) = (3, 4);
        let d = net.input_len();
        let x = images(n, d, 13 + ai as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(ai as u64);
        let mut t: Vec<f32> = (0..n * k).map(|_| rng.gen_range(0.0..1.0)).collect();
        for row in t.chunks_mut(k) {
            let s: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s);
        }
        let got = net.soft_loss_and_param_grads(&x, &t).unwrap();
        let np = net.num_params();
        let mut want = vec![0f32; np];
        let mut loss = 0f32;
        for j in 0..k {
            let per = per_sample_grads(&net, &x, &vec![j as u32; n]).unwrap();
            for i in 0..n {
                let w = t[i * k + j] / n as f32;
                want.iter_mut()
                    .zip(&per[i * np..(i + 1) * np])
                    .for_each(|(a, b)| *a += w * b);
            }
            for i in 0..n {
                let one = net
                    .loss_and_param_grads(&x[i * d..(i + 1) * d], &[j as u32])
                    .unwrap();
                loss += t[i * k + j] * one.loss / n as f32;
            }
        }
        assert!(rel_err(&got.param_grads, &want) <= 1e-4, "arch {ai}");
        assert!(
            (got.loss - loss).abs() < 1e-4 * loss.abs().max(1.0),
            "arch {ai}"
        );
        // One-hot targets are the hard labels.
        let labels = [2u32, 0, 3];
        let onehot: Vec<f32> = labels
            .iter()
            .flat_map(|&l| (0..k).map(move |j| if j == l as usize { 1.0 } else { 0.0 }))
            .collect();
        let a = net.soft_loss_and_param_grads(&x, &onehot).unwrap();
        let b = net.loss_and_param_grads(&x, &labels).unwrap();
        assert!(rel_err(&a.param_grads, &b.param_grads) <= 1e-6);
        assert!(net.soft_loss_and_param_grads(&x, &t[1..]).is_err());
    }
}

#[test]
fn batch_loss_params_and_input_grads_match_autograd() {
    for (ai, arch) in archs().into_iter().enumerate() {
        let net = net(arch, 3 + ai as u64);
        let n = 5;
        let d = net.input_len();
        let x = images(n, d, 5 + ai as u64);
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 4).collect();
        let got = net.loss_and_grads(&x, &labels).unwrap();
        let mut dp = vec![0f32; net.num_params()];
        let mut dx = Vec::new();
        let mut loss = 0f32;
        for i in 0..n {
            let r = candle_ref(&net, &x[i * d..(i + 1) * d], labels[i], None);
            loss += r.loss / n as f32;
            dp.iter_mut()
                .zip(&r.dp)
                .for_each(|(a, b)| *a += b / n as f32);
            dx.extend(r.dx.iter().map(|v| v / n as f32));
        }
        assert!((got.loss - loss).abs() < 1e-4 * loss.abs().max(1.0));
        assert!(rel_err(&got.param_grads, &dp) <= 1e-4, "arch {ai} params");
        assert!(rel_err(&got.input_grads, &dx) <= 1e-4, "arch {ai} inputs");
        let only = net.loss_and_param_grads(&x, &labels).unwrap();
        assert_eq!(only.param_grads, got.param_grads);
        assert!(only.input_grads.is_empty());
        let inputs = net.loss_and_input_grads(&x, &labels).unwrap();
        assert_eq!(inputs.input_grads, got.input_grads);
    }
}

#[test]
fn embed_and_vjp_match_autograd() {
    for (ai, arch) in archs().into_iter().enumerate() {
        let net = net(arch, 21 + ai as u64);
        let n = 3;
        let d = net.input_len();
        let f = net.feature_len();
        let x = images(n, d, 8);
        let df: Vec<f32> = (0..n * f).map(|i| ((i as f32) * 0.77).sin()).collect();
        let feats = net.embed(&x).unwrap();
        let (feats2, dx) = net.embed_vjp(&x, &df).unwrap();
        assert_eq!(feats, feats2);
        for i in 0..n {
            let r = candle_ref(
                &net,
                &x[i * d..(i + 1) * d],
                0,
                Some(&df[i * f..(i + 1) * f]),
            );
            assert!(rel_err(&feats[i * f..(i + 1) * f], &r.feat) <= 1e-5);
            assert!(rel_err(&dx[i * d..(i + 1) * d], &r.dx) <= 1e-4, "arch {ai}");
        }
        let logits = net.logits(&x).unwrap();
        assert_eq!(logits.len(), n * net.classes());
    }
}

/// The finite-difference HVP with GELU matches `∂/∂x (vᵀ∇_θL)` computed independently by
/// central differences in x of the parameter gradient.
#[test]
fn gelu_fd_hvp_matches_mixed_derivative() {
    let arch = Arch::ConvNet(ConvNetConfig {
        channels: 1,
        height: 8,
        width: 8,
        classes: 3,
        net_width: 4,
        depth: 2,
        activation: Activation::Gelu,
    });
    let net = net(arch, 5);
    let n = 2;
    let d = net.input_len();
    let x = images(n, d, 9);
    let labels = [0u32, 2];
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let v: Vec<f32> = (0..net.num_params())
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let hvp = net.input_grad_hvp_fd(&x, &labels, &v, 1e-2).unwrap();
    let f = |xx: &[f32]| -> f64 {
        let g = net.loss_and_param_grads(xx, &labels).unwrap().param_grads;
        g.iter()
            .zip(&v)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    };
    let h = 1e-2f32;
    let mut want = vec![0f32; n * d];
    for (j, w) in want.iter_mut().enumerate() {
        let mut xp = x.clone();
        let mut xm = x.clone();
        xp[j] += h;
        xm[j] -= h;
        *w = ((f(&xp) - f(&xm)) / (2.0 * h as f64)) as f32;
    }
    let e = rel_err(&hvp, &want);
    assert!(e < 2e-2, "fd-hvp rel err {e}");
    assert!(net.input_grad_hvp_fd(&x, &labels, &v, 0.0).is_err());
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let net = net(Arch::ConvNet(conv(1, 28, 28, 4, Activation::Relu)), 1);
    let d = net.input_len();
    let x = images(2, d, 1);
    assert!(matches!(
        per_sample_grads(&net, &x[1..], &[0, 1]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        per_sample_grads(&net, &x, &[0]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        per_sample_grads(&net, &x, &[0, 4]),
        Err(Error::Label { .. })
    ));
    // an empty batch has no rows
    assert!(per_sample_grads(&net, &[], &[]).unwrap().is_empty());
    assert!(Net::zeroed(Arch::ConvNet(conv(1, 6, 6, 4, Activation::Relu))).is_err());
    assert!(Net::zeroed(Arch::ConvNet(conv(2, 28, 28, 0, Activation::Relu))).is_err());
    let mut n2 = net.clone();
    assert!(n2.set_params(&[1.0]).is_err());
}

/// A non-finite sample's gradient stays in its own row (the mechanism then drops the row);
/// the other rows are unaffected.
#[test]
fn non_finite_sample_stays_in_its_row() {
    let net = net(Arch::ConvNet(conv(1, 28, 28, 4, Activation::Relu)), 2);
    let d = net.input_len();
    let np = net.num_params();
    let mut x = images(2, d, 3);
    x[d + 5] = f32::NAN;
    let both = per_sample_grads(&net, &x, &[1, 1]).unwrap();
    let first = per_sample_grads(&net, &x[..d], &[1]).unwrap();
    assert_eq!(both[..np], first[..]);
    assert!(both[np..].iter().any(|v| !v.is_finite()));
    let mut row = both[np..].to_vec();
    assert_eq!(crate::dp::clip::clip_in_place(&mut row, 0.5), 0.0);
    assert!(row.iter().all(|&v| v == 0.0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Every per-sample gradient, clipped as the mechanism clips it, has L2 norm ≤ C, for any
    /// input scale and C.
    #[test]
    fn clipped_norm_is_at_most_c(
        seed in 0u64..1000,
        scale in 0.01f32..100.0,
        clip in 1e-4f64..10.0,
        label in 0u32..4,
        mlp in any::<bool>(),
    ) {
        let arch = if mlp {
            Arch::Mlp(MlpConfig { inputs: 100, hidden: vec![20], classes: 4, activation: Activation::Relu })
        } else {
            Arch::ConvNet(conv(1, 10, 10, 3, Activation::Gelu))
        };
        let net = net(arch, seed);
        let x: Vec<f32> = images(2, net.input_len(), seed + 1).iter().map(|v| v * scale).collect();
        let mut rows = per_sample_grads(&net, &x, &[label, (label + 1) % 4]).unwrap();
        for row in rows.chunks_mut(net.num_params()) {
            crate::dp::clip::clip_in_place(row, clip);
            prop_assert!(norm(row) <= clip, "norm {} > C {}", norm(row), clip);
        }
    }
}

/// `embed_with_means` starts with `embed`, ends with the block means, and its VJP is the
/// directional derivative of `<d_out, embedding(x)>` (central differences, smooth GELU net).
#[test]
fn embed_with_means_and_its_vjp_are_consistent() {
    let net = net(
        Arch::ConvNet(ConvNetConfig {
            channels: 1,
            height: 12,
            width: 12,
            classes: 3,
            net_width: 5,
            depth: 3,
            activation: Activation::Gelu,
        }),
        5,
    );
    let (n, d, f, m) = (2, net.input_len(), net.feature_len(), net.means_len());
    assert_eq!(m, 5 * 2);
    let x = images(n, d, 4);
    let e = net.embed_with_means(&x).unwrap();
    let plain = net.embed(&x).unwrap();
    for i in 0..n {
        assert_eq!(&e[i * (f + m)..i * (f + m) + f], &plain[i * f..(i + 1) * f]);
    }
    let g: Vec<f32> = (0..n * (f + m))
        .map(|i| ((i as f32) * 0.53).cos())
        .collect();
    let (e2, dx) = net.embed_with_means_vjp(&x, &g).unwrap();
    assert_eq!(e, e2);
    let v: Vec<f32> = (0..n * d).map(|i| ((i as f32) * 1.31).sin()).collect();
    let loss = |x: &[f32]| -> f64 {
        let e = net.embed_with_means(x).unwrap();
        e.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum()
    };
    let h = 1e-2f32;
    let xp: Vec<f32> = x.iter().zip(&v).map(|(a, b)| a + h * b).collect();
    let xm: Vec<f32> = x.iter().zip(&v).map(|(a, b)| a - h * b).collect();
    let fd = (loss(&xp) - loss(&xm)) / (2.0 * h as f64);
    let an: f64 = dx.iter().zip(&v).map(|(a, b)| *a as f64 * *b as f64).sum();
    assert!(
        (fd - an).abs() <= 1e-2 * an.abs().max(1e-3),
        "fd {fd} vs vjp {an}"
    );
}
