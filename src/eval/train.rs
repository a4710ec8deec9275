//! Training fresh classifiers for evaluation: mini-batch SGD with momentum and weight decay,
//! a step decay of the learning rate at half time, and the distillation literature's
//! augmentation (one of crop / scale / rotate per image, never flips: digits and medical
//! laterality are not mirror-symmetric). Also DP-SGD training for the private baseline.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Error, Result};
use crate::dataset::{FloatImages, Shape};
use crate::dp::mechanism::{
    Allowance, Batch, GaussianSum, Grouping, MechError, Noise, Records, Sampling,
};
use crate::dp::{ClipNorm, NoiseMultiplier, SampleRate};
use crate::nn::{Activation, Arch, ConvNetConfig, MlpConfig, Net};
use crate::progress::{Event, Sink};

/// Which network evaluation trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Model {
    /// The distillation ConvNet-3 (instance norm, ReLU, average pooling).
    ConvNet {
        /// Channels per layer (128 in the literature).
        width: usize,
    },
    /// An MLP with one hidden layer.
    Mlp {
        /// Hidden units.
        hidden: usize,
    },
}

impl Model {
    /// The architecture for images of `shape` and `classes` classes.
    pub fn arch(self, shape: Shape, classes: usize) -> Arch {
        match self {
            Model::ConvNet { width } => Arch::ConvNet(ConvNetConfig {
                net_width: width,
                ..ConvNetConfig::standard(shape.c, shape.h, shape.w, classes)
            }),
            Model::Mlp { hidden } => Arch::Mlp(MlpConfig {
                inputs: shape.len(),
                hidden: vec![hidden],
                classes,
                activation: Activation::Relu,
            }),
        }
    }
}

/// Which labels the models are trained on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Labels {
    /// Cross-entropy against the hard class (`label`).
    #[default]
    Hard,
    /// Cross-entropy against the set's soft labels (probability vectors, temperature 1): the
    /// partner recipe for a set that has them (docs/partners.md).
    Soft,
}

impl Labels {
    /// `hard` or `soft`.
    pub fn as_str(self) -> &'static str {
        match self {
            Labels::Hard => "hard",
            Labels::Soft => "soft",
        }
    }
}

/// The training recipe.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recipe {
    /// Network.
    pub model: Model,
    /// Passes over the training set.
    pub epochs: usize,
    /// Stop after this many SGD steps even if epochs remain (keeps the all-data ceiling
    /// affordable).
    pub max_steps: Option<usize>,
    /// Mini-batch size.
    pub batch: usize,
    /// Learning rate (×0.1 after half the steps).
    pub lr: f32,
    /// Momentum.
    pub momentum: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Crop/scale/rotate augmentation.
    pub augment: bool,
    /// Hard or soft labels (absent in records made before soft labels: hard).
    #[serde(default)]
    pub labels: Labels,
}

impl Recipe {
    /// The distillation-evaluation recipe (DC/DSA/PSG `evaluate_synset`): SGD, momentum 0.9,
    /// weight decay 5e-4, lr 0.01 decayed ×0.1 at half time, batch 256, augmentation on.
    /// The literature trains 1000 epochs on MNIST-like sets; `epochs` is the caller's choice.
    pub fn standard(model: Model, epochs: usize) -> Recipe {
        Recipe {
            model,
            epochs,
            max_steps: None,
            batch: 256,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            augment: true,
            labels: Labels::Hard,
        }
    }

    /// The same recipe with `labels`.
    pub fn with_labels(&self, labels: Labels) -> Recipe {
        Recipe {
            labels,
            ..self.clone()
        }
    }

    /// Total SGD steps for a training set of `n` images.
    pub fn steps_for(&self, n: usize) -> usize {
        let per_epoch = n.div_ceil(self.batch.max(1)).max(1);
        let total = per_epoch.saturating_mul(self.epochs);
        self.max_steps.map_or(total, |m| total.min(m))
    }
}

/// SGD with momentum and weight decay (PyTorch's formulation).
struct Sgd {
    velocity: Vec<f32>,
    momentum: f32,
    weight_decay: f32,
}

impl Sgd {
    fn new(n: usize, momentum: f32, weight_decay: f32) -> Sgd {
        Sgd {
            velocity: vec![0.0; n],
            momentum,
            weight_decay,
        }
    }
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        for ((p, &g), v) in params.iter_mut().zip(grads).zip(&mut self.velocity) {
            let g = g + self.weight_decay * *p;
            *v = self.momentum * *v + g;
            *p -= lr * *v;
        }
    }
}

/// Train a fresh network (initialised from `seed`) on `set`: on its hard labels, or with
/// [`Labels::Soft`] on its soft labels (each augmented image keeps its image's probability
/// vector).
///
/// # Privacy
/// Non-private: use it on synthetic data, or on real data only for baselines labelled as
/// non-private references that are never released.
///
/// # Errors
/// `nn-*` for shapes and labels; `eval-engine` for [`Labels::Soft`] on a set without soft
/// labels over `classes` classes; `cancelled` on Ctrl-C.
pub fn train(
    recipe: &Recipe,
    set: &FloatImages,
    classes: usize,
    seed: u64,
    progress: Sink<'_>,
) -> Result<Net> {
    let soft = match recipe.labels {
        Labels::Hard => None,
        Labels::Soft => match set.soft_labels.as_deref() {
            Some(s) if set.soft_classes() == Some(classes) => Some(s),
            _ => {
                return Err(Error::Engine {
                    what: format!(
                    "soft-label training needs a set with soft labels over its {classes} classes"
                ),
                })
            }
        },
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut net = Net::new(recipe.model.arch(set.shape, classes), &mut rng)?;
    let n = set.len();
    let steps = recipe.steps_for(n);
    let d = set.shape.len();
    let mut sgd = Sgd::new(net.num_params(), recipe.momentum, recipe.weight_decay);
    let mut order: Vec<usize> = (0..n).collect();
    let mut pos = n;
    let mut x = Vec::with_capacity(recipe.batch * d);
    let mut y = Vec::with_capacity(recipe.batch);
    let mut t = Vec::with_capacity(if soft.is_some() {
        recipe.batch * classes
    } else {
        0
    });
    let mut img = vec![0f32; d];
    progress(Event::Start {
        label: "training",
        total: steps as u64,
    });
    for step in 0..steps {
        crate::progress::check()?;
        x.clear();
        y.clear();
        t.clear();
        while y.len() < recipe.batch.min(n) {
            if pos >= n {
                order.shuffle(&mut rng);
                pos = 0;
            }
            let i = order[pos];
            pos += 1;
            if recipe.augment {
                augment(set.image(i), set.shape, &mut rng, &mut img);
                x.extend_from_slice(&img);
            } else {
                x.extend_from_slice(set.image(i));
            }
            y.push(set.labels[i]);
            if let Some(s) = soft {
                t.extend_from_slice(&s[i * classes..(i + 1) * classes]);
            }
            // one pass over a small set per step, as the literature's loaders do
            if pos >= n && n <= recipe.batch {
                break;
            }
        }
        let g = match soft {
            None => net.loss_and_param_grads(&x, &y)?,
            Some(_) => net.soft_loss_and_param_grads(&x, &t)?,
        };
        let lr = if step * 2 < steps {
            recipe.lr
        } else {
            recipe.lr * 0.1
        };
        sgd.step(net.params_mut(), &g.param_grads, lr);
        progress(Event::Advance(1));
    }
    progress(Event::Finish);
    Ok(net)
}

/// DP-SGD settings for the private baseline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DpSgd {
    /// Poisson sampling rate.
    pub q: f64,
    /// Noise multiplier σ.
    pub sigma: f64,
    /// Steps.
    pub steps: u64,
    /// Clip norm C.
    pub clip: f32,
    /// Learning rate.
    pub lr: f32,
    /// Momentum.
    pub momentum: f32,
}

/// Train a fresh network with DP-SGD on the private records `data`: each step is one release
/// of the one mechanism — a Poisson sample at rate `q` (OS-keyed), the per-sample gradients
/// ([`crate::nn::per_sample_grads`]) clipped below `clip`, summed, plus N(0, σ²C²) per
/// coordinate — divided by the *expected* batch size qN (never the realised one, which is
/// data-dependent) ([`noisy_clipped_mean`]).
///
/// # Privacy
/// Each step is charged to `allowance` as `PoissonSampledGaussian { q, σ, steps: 1 }` before
/// it reads a record (refused with `dp-allowance-exceeded` otherwise); the model is
/// (ε, δ)-DP for the accountant's ε of `PoissonSampledGaussian { q, σ, steps }` under
/// add/remove-one-image. The initialisation seed is public.
///
/// # Errors
/// `nn-*`, `cancelled`, `dp-allowance-exceeded`, `dp-rng-failed`, other `dp-*`.
pub fn train_dp(
    model: Model,
    dp: &DpSgd,
    data: &Records<'_>,
    allowance: &mut Allowance,
    classes: usize,
    seed: u64,
    progress: Sink<'_>,
) -> Result<Net> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut net = Net::new(model.arch(data.shape(), classes), &mut rng)?;
    let mech = GaussianSum {
        sampling: Sampling::Poisson(SampleRate::new(dp.q)?),
        grouping: Grouping::Single,
        clip: ClipNorm::new(dp.clip as f64)?,
        sigma: NoiseMultiplier::new(dp.sigma)?,
        noise: Noise::Float,
        chunk: crate::nn::per_sample_chunk(),
    };
    let expected = (dp.q * data.len() as f64).max(1.0) as f32;
    let mut sgd = Sgd::new(net.num_params(), dp.momentum, 0.0);
    progress(Event::Start {
        label: "DP-SGD baseline",
        total: dp.steps,
    });
    for step in 0..dp.steps {
        crate::progress::check()?;
        let g =
            noisy_clipped_mean(&net, &mech, allowance, data, 0.0, expected).map_err(mech_err)?;
        let lr = if step * 2 < dp.steps {
            dp.lr
        } else {
            dp.lr * 0.1
        };
        sgd.step(net.params_mut(), &g, lr);
        progress(Event::Advance(1));
    }
    progress(Event::Finish);
    Ok(net)
}

fn mech_err(e: MechError<crate::nn::Error>) -> Error {
    match e {
        MechError::Dp(e) => e.into(),
        MechError::Record(e) => e.into(),
        MechError::Cancelled => crate::progress::Cancelled.into(),
    }
}

/// One DP-SGD gradient through the one mechanism: `mech` (a Poisson-sampled, single-group
/// release) over the per-sample gradients of `net` on the records' pixels plus `offset`
/// (−0.5 for the feature nets' inputs, 0 for the evaluation models'), divided by the
/// *expected* batch size (never the realised one).
///
/// # Privacy
/// One release of the mechanism, charged to `allowance` before it reads a record.
///
/// # Errors
/// The mechanism's errors; `nn-*` from the gradients as [`MechError::Record`].
pub(crate) fn noisy_clipped_mean(
    net: &Net,
    mech: &GaussianSum,
    allowance: &mut Allowance,
    data: &Records<'_>,
    offset: f32,
    expected: f32,
) -> std::result::Result<Vec<f32>, MechError<crate::nn::Error>> {
    let grads = |b: &mut Batch<'_>| -> crate::nn::Result<Vec<f32>> {
        let (pixels, labels, out) = (b.pixels, b.labels, b.buffer());
        if offset == 0.0 {
            crate::nn::per_sample_grads_into(net, pixels, labels, out)
        } else {
            let x: Vec<f32> = pixels.iter().map(|&v| v + offset).collect();
            crate::nn::per_sample_grads_into(net, &x, labels, out)
        }
    };
    let r = mech.release(
        allowance,
        data,
        net.num_params(),
        &grads,
        &crate::progress::silent,
    )?;
    Ok(r.sums[0].iter().map(|&s| s as f32 / expected).collect())
}

/// Augment one image: one of a random crop (shift up to 4 px), scale (±20 %) or rotation
/// (±15°), chosen at random, by inverse mapping with bilinear interpolation (outside → 0).
pub(crate) fn augment(src: &[f32], shape: Shape, rng: &mut ChaCha8Rng, out: &mut [f32]) {
    let (h, w) = (shape.h as f32, shape.w as f32);
    let (cy, cx) = ((h - 1.0) / 2.0, (w - 1.0) / 2.0);
    // inverse affine map: src = A·(dst − c) + c + t
    let (mut a, mut b, mut c, mut dd, mut ty, mut tx) = (1f32, 0f32, 0f32, 1f32, 0f32, 0f32);
    match rng.gen_range(0..3) {
        0 => {
            ty = rng.gen_range(-4..=4) as f32;
            tx = rng.gen_range(-4..=4) as f32;
        }
        1 => {
            let sy = 1.0 / rng.gen_range(0.8f32..1.2);
            let sx = 1.0 / rng.gen_range(0.8f32..1.2);
            a = sy;
            dd = sx;
        }
        _ => {
            let t = rng.gen_range(-15f32..15.0).to_radians();
            (a, b, c, dd) = (t.cos(), -t.sin(), t.sin(), t.cos());
        }
    }
    let hw = shape.h * shape.w;
    for ch in 0..shape.c {
        let s = &src[ch * hw..(ch + 1) * hw];
        let o = &mut out[ch * hw..(ch + 1) * hw];
        for yy in 0..shape.h {
            for xx in 0..shape.w {
                let (dy, dx) = (yy as f32 - cy, xx as f32 - cx);
                let sy = a * dy + b * dx + cy + ty;
                let sx = c * dy + dd * dx + cx + tx;
                o[yy * shape.w + xx] = bilinear(s, shape.h, shape.w, sy, sx);
            }
        }
    }
}

fn bilinear(s: &[f32], h: usize, w: usize, y: f32, x: f32) -> f32 {
    let (y0, x0) = (y.floor(), x.floor());
    let (fy, fx) = (y - y0, x - x0);
    let px = |yy: f32, xx: f32| -> f32 {
        if yy < 0.0 || xx < 0.0 || yy >= h as f32 || xx >= w as f32 {
            0.0
        } else {
            s[yy as usize * w + xx as usize]
        }
    };
    (1.0 - fy) * ((1.0 - fx) * px(y0, x0) + fx * px(y0, x0 + 1.0))
        + fy * ((1.0 - fx) * px(y0 + 1.0, x0) + fx * px(y0 + 1.0, x0 + 1.0))
}

/// Accuracy overall and per class of `net` on `set`.
///
/// # Errors
/// `nn-shape`.
pub fn accuracy(net: &Net, set: &FloatImages, classes: usize) -> Result<(f64, Vec<f64>)> {
    let mut right = vec![0usize; classes];
    let mut total = vec![0usize; classes];
    // in slices, to bound memory on large test sets
    let d = set.shape.len();
    for start in (0..set.len()).step_by(1024) {
        let end = (start + 1024).min(set.len());
        let logits = net.logits(&set.data[start * d..end * d])?;
        for (j, row) in logits.chunks_exact(classes).enumerate() {
            let label = set.labels[start + j] as usize;
            let pred = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0;
            if let Some(t) = total.get_mut(label) {
                *t += 1;
                if pred == label {
                    right[label] += 1;
                }
            }
        }
    }
    let all: usize = total.iter().sum();
    let acc = right.iter().sum::<usize>() as f64 / all.max(1) as f64;
    let per = right
        .iter()
        .zip(&total)
        .map(|(&r, &t)| {
            if t == 0 {
                f64::NAN
            } else {
                r as f64 / t as f64
            }
        })
        .collect();
    Ok((acc, per))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn augmentation_keeps_shape_and_mass_roughly() {
        let shape = Shape { c: 1, h: 28, w: 28 };
        let mut src = vec![0f32; 784];
        for y in 10..18 {
            for x in 10..18 {
                src[y * 28 + x] = 1.0;
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut out = vec![0f32; 784];
        for _ in 0..20 {
            augment(&src, shape, &mut rng, &mut out);
            let m: f32 = out.iter().sum();
            assert!((30.0..100.0).contains(&m), "mass {m}");
            assert!(out.iter().all(|v| (0.0..=1.0 + 1e-6).contains(v)));
        }
    }

    #[test]
    fn training_learns_a_separable_toy_problem() {
        // two classes: bright top half vs bright bottom half
        let shape = Shape { c: 1, h: 12, w: 12 };
        let mut set = FloatImages::new(shape);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for i in 0..40 {
            let label = (i % 2) as u32;
            let img: Vec<f32> = (0..144)
                .map(|p| {
                    let top = p / 12 < 6;
                    let on = if label == 0 { top } else { !top };
                    (if on { 0.8 } else { 0.1 }) + rng.gen_range(-0.1..0.1)
                })
                .collect();
            set.push(&img, label);
        }
        let mut r = Recipe::standard(Model::ConvNet { width: 8 }, 30);
        r.augment = false;
        r.lr = 0.05;
        let net = train(&r, &set, 2, 7, &crate::progress::silent).unwrap();
        let (acc, per) = accuracy(&net, &set, 2).unwrap();
        assert!(acc > 0.95, "accuracy {acc}");
        assert_eq!(per.len(), 2);
        let mlp = train(
            &Recipe {
                model: Model::Mlp { hidden: 16 },
                ..r.clone()
            },
            &set,
            2,
            7,
            &crate::progress::silent,
        )
        .unwrap();
        assert!(accuracy(&mlp, &set, 2).unwrap().0 > 0.95);
    }

    /// See: issue 22. Soft labels carry what hard labels cannot: every image's hard label is
    /// class 0, but its soft label puts 0.9 on the right class, so only soft-label training
    /// separates the classes. Soft training on a set without soft labels is an error.
    #[test]
    fn soft_label_training_follows_the_probabilities() {
        let shape = Shape { c: 1, h: 12, w: 12 };
        let mut set = FloatImages::new(shape);
        let mut truth = Vec::new();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for i in 0..40 {
            let class = i % 2;
            let img: Vec<f32> = (0..144)
                .map(|p| {
                    let top = p / 12 < 6;
                    let on = if class == 0 { top } else { !top };
                    (if on { 0.8 } else { 0.1 }) + rng.gen_range(-0.1..0.1)
                })
                .collect();
            let soft = if class == 0 { [0.9, 0.1] } else { [0.1, 0.9] };
            set.push_soft(&img, 0, &soft);
            truth.push(class as u32);
        }
        let mut r = Recipe::standard(Model::Mlp { hidden: 16 }, 30);
        r.augment = false;
        r.lr = 0.05;
        let mut test = set.clone();
        test.labels = truth;
        let hard = train(&r, &set, 2, 7, &crate::progress::silent).unwrap();
        assert!(accuracy(&hard, &test, 2).unwrap().0 <= 0.5 + 1e-9);
        let soft = train(
            &r.with_labels(Labels::Soft),
            &set,
            2,
            7,
            &crate::progress::silent,
        )
        .unwrap();
        assert!(accuracy(&soft, &test, 2).unwrap().0 > 0.95);
        set.soft_labels = None;
        assert!(matches!(
            train(
                &r.with_labels(Labels::Soft),
                &set,
                2,
                7,
                &crate::progress::silent
            ),
            Err(Error::Engine { .. })
        ));
    }
}
