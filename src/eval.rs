//! Evaluation: train fresh classifiers on a synthetic set, test them on the dataset's held-out
//! split, and put the figure beside baselines in one report (`runs/<id>/eval.json`).
//!
//! The protocol is the distillation literature's (DC/DSA/DM/PSG `evaluate_synset`): several
//! randomly initialised ConvNet-3s trained from scratch with SGD + momentum and crop/scale/
//! rotate augmentation, mean ± std of their test accuracy. Baselines:
//! - **random real** — the same number of real training images per class, drawn at random
//!   (a *non-private reference*: real pixels, never released);
//! - **all real** — the whole training split (the *non-private ceiling*), with training capped
//!   at a number of steps so it stays affordable on a 2-core host (the report says how much);
//! - **DP-SGD** (optional) — a classifier trained directly on the real data with DP-SGD at the
//!   run's (ε, δ): what a partner could have been given instead.
//!
//! # Privacy
//! The synthetic figure reads only the synthetic set (public once released) and the held-out
//! test split, which is used for evaluation only and marked as such. The random-real and
//! all-real baselines read the private training split without noise: they are internal
//! reference figures, labelled `"private": false`, and must never go into a package; the CLI
//! logs an intent record before reading the training split and `--no-baselines` skips them.

mod train;

pub(crate) use train::noisy_clipped_mean;
pub use train::{accuracy, train, train_dp, DpSgd, Labels, Model, Recipe};

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::dataset::{FloatImages, Images};
use crate::error::{Class, Coded};
use crate::progress::Sink;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The run cannot be evaluated (missing, unfinished, damaged).
    #[error("run {run:?} cannot be evaluated: {why}")]
    Run {
        /// The run id.
        run: String,
        /// What is wrong.
        why: String,
    },
    /// Training or testing a model failed.
    #[error("evaluation failed: {what}")]
    Engine {
        /// What failed.
        what: String,
    },
    /// The synthetic set does not fit the dataset it claims to come from.
    #[error("run {run:?}: the synthetic set does not match dataset {dataset:?}: {why}")]
    Mismatch {
        /// The run id.
        run: String,
        /// The dataset.
        dataset: String,
        /// What differs.
        why: String,
    },
    /// The neural-network engine failed (its own code).
    #[error(transparent)]
    Nn(#[from] crate::nn::Error),
    /// A privacy parameter, the accountant or the mechanism failed (its own code).
    #[error(transparent)]
    Dp(#[from] crate::dp::Error),
    /// Cancellation was requested (Ctrl-C).
    #[error(transparent)]
    Cancelled(#[from] crate::progress::Cancelled),
}

/// Results of this module.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] = &["eval-run", "eval-mismatch", "eval-engine"];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Run { .. } => "eval-run",
            Error::Mismatch { .. } => "eval-mismatch",
            Error::Engine { .. } => "eval-engine",
            Error::Nn(e) => e.code(),
            Error::Dp(e) => e.code(),
            Error::Cancelled(e) => e.code(),
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Run { .. } => "list runs in the workspace's runs/ directory; only a completed `retort distill` run can be evaluated".into(),
            Error::Mismatch { .. } => "the run directory was modified or belongs to another dataset; re-run `retort distill`".into(),
            Error::Engine { .. } => "check the model options (--model, --width); if they are valid this is a bug, please report it".into(),
            Error::Nn(e) => return e.hint(),
            Error::Dp(e) => return e.hint(),
            Error::Cancelled(e) => return e.hint(),
        })
    }
    fn class(&self) -> Class {
        match self {
            Error::Nn(e) => e.class(),
            Error::Dp(e) => e.class(),
            Error::Cancelled(e) => e.class(),
            _ => Class::Input,
        }
    }
}

/// Accuracy of several fresh models trained on one training set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Score {
    /// Mean test accuracy over the models (0..1).
    pub accuracy: f64,
    /// Standard deviation over the models (population, as the literature reports it).
    pub accuracy_std: f64,
    /// Each model's test accuracy.
    pub accuracies: Vec<f64>,
    /// Mean per-class test accuracy (index = label; NaN → null for classes absent from the
    /// test split).
    pub per_class: Vec<Option<f64>>,
    /// Training images.
    pub train_images: usize,
    /// SGD steps per model.
    pub steps: usize,
    /// Mean training time per model, seconds.
    pub train_seconds: f64,
}

/// Train `models` fresh networks (seeds `seed`, `seed+1`, …) on `train_set` with `recipe`
/// and test each on `test`.
///
/// # Errors
/// `nn-*`, `cancelled`.
pub fn score(
    recipe: &Recipe,
    train_set: &FloatImages,
    test: &FloatImages,
    classes: usize,
    models: usize,
    seed: u64,
    progress: Sink<'_>,
) -> Result<Score> {
    let (accs, per, present, secs) = train_and_test(test, classes, models, seed, |s| {
        train(recipe, train_set, classes, s, progress)
    })?;
    Ok(summarise(
        accs,
        per,
        present,
        train_set.len(),
        recipe.steps_for(train_set.len()),
        secs,
    ))
}

/// Train `models` fresh networks (seeds `seed`, `seed+1`, …) on `train_set` with `recipe`, and
/// return them with the mean training seconds per model.
///
/// # Errors
/// `nn-*`, `cancelled`.
pub fn train_models(
    recipe: &Recipe,
    train_set: &FloatImages,
    classes: usize,
    models: usize,
    seed: u64,
    progress: Sink<'_>,
    mut on_model: impl FnMut(usize),
) -> Result<(Vec<crate::nn::Net>, f64)> {
    let mut nets = Vec::with_capacity(models.max(1));
    let t = Instant::now();
    for m in 0..models.max(1) {
        on_model(m);
        nets.push(train(
            recipe,
            train_set,
            classes,
            seed.wrapping_add(m as u64),
            progress,
        )?);
    }
    Ok((nets, t.elapsed().as_secs_f64() / models.max(1) as f64))
}

/// Test trained `nets` on `test`: their [`Score`] (mean ± std over the nets, per class).
///
/// # Errors
/// `nn-shape`.
pub fn score_nets(
    nets: &[crate::nn::Net],
    train_images: usize,
    steps: usize,
    train_seconds: f64,
    test: &FloatImages,
    classes: usize,
) -> Result<Score> {
    let mut accs = Vec::new();
    let mut per = vec![0f64; classes];
    let mut present = vec![true; classes];
    for net in nets {
        let (acc, pc) = accuracy(net, test, classes)?;
        accs.push(acc);
        for (k, v) in pc.into_iter().enumerate() {
            if v.is_nan() {
                present[k] = false;
            } else {
                per[k] += v;
            }
        }
    }
    let n = nets.len().max(1) as f64;
    Ok(summarise(
        accs,
        per,
        present,
        train_images,
        steps,
        train_seconds * n,
    ))
}

/// For each image of `pixels` (row-major, `nets`' input shape), the fraction of `nets` that
/// classify it as `labels[i]`.
///
/// # Errors
/// `nn-shape`.
pub fn correct_fractions(
    nets: &[crate::nn::Net],
    pixels: &[f32],
    labels: &[u32],
) -> Result<Vec<f32>> {
    let mut right = vec![0u32; labels.len()];
    for net in nets {
        let logits = net.logits(pixels)?;
        let k = net.classes().max(1);
        for (i, row) in logits.chunks_exact(k).enumerate() {
            let pred = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (j, &v)| {
                    if v > bv {
                        (j, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0;
            if labels.get(i).is_some_and(|&l| l as usize == pred) {
                right[i] += 1;
            }
        }
    }
    let n = nets.len().max(1) as f32;
    Ok(right.into_iter().map(|r| r as f32 / n).collect())
}

/// Accuracies, per-class accuracy sums, which classes the test set has, training seconds.
type Trained = (Vec<f64>, Vec<f64>, Vec<bool>, f64);

/// Train `models` networks with `train_one(seed)` (seeds `seed`, `seed+1`, …), test each on
/// `test`; returns the accuracies, the per-class sums, which classes the test set has, and the
/// training seconds.
fn train_and_test(
    test: &FloatImages,
    classes: usize,
    models: usize,
    seed: u64,
    mut train_one: impl FnMut(u64) -> Result<crate::nn::Net>,
) -> Result<Trained> {
    let mut accs = Vec::new();
    let mut per = vec![0f64; classes];
    let mut present = vec![true; classes];
    let mut secs = 0f64;
    for m in 0..models.max(1) {
        let t = Instant::now();
        let net = train_one(seed.wrapping_add(m as u64))?;
        secs += t.elapsed().as_secs_f64();
        let (acc, pc) = accuracy(&net, test, classes)?;
        accs.push(acc);
        for (k, v) in pc.into_iter().enumerate() {
            if v.is_nan() {
                present[k] = false;
            } else {
                per[k] += v;
            }
        }
    }
    Ok((accs, per, present, secs))
}

pub(crate) fn summarise(
    accs: Vec<f64>,
    per: Vec<f64>,
    present: Vec<bool>,
    images: usize,
    steps: usize,
    secs: f64,
) -> Score {
    let n = accs.len().max(1) as f64;
    let mean = accs.iter().sum::<f64>() / n;
    let std = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n).sqrt();
    Score {
        accuracy: mean,
        accuracy_std: std,
        per_class: per
            .iter()
            .zip(&present)
            .map(|(v, &p)| p.then_some(v / n))
            .collect(),
        accuracies: accs,
        train_images: images,
        steps,
        train_seconds: secs / n,
    }
}

/// A planned DP-SGD baseline: the training settings and the privacy event it spends.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DpBaselinePlan {
    /// Training settings (q, σ, steps, C, lr, momentum).
    pub dp: DpSgd,
    /// What the run spends, for the ledger (reserve it before calling [`dp_baseline`]).
    pub event: crate::dp::DpEvent,
    /// The accountant's ε for `event` at `delta` (≤ the target).
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
}

/// Plan a DP-SGD classifier on `n_train` real images at (`epsilon`, `delta`): Poisson rate
/// `expected_batch / n_train`, `steps` steps, clip `clip`, and the smallest noise multiplier the
/// accountant (min of RDP and PLD) allows for the target.
///
/// # Errors
/// `dp-*` if the target cannot be met or an input is invalid.
pub fn plan_dp_baseline(
    epsilon: f64,
    delta: f64,
    n_train: usize,
    expected_batch: usize,
    steps: u64,
    clip: f32,
) -> Result<DpBaselinePlan> {
    let q = (expected_batch as f64 / n_train.max(1) as f64).min(1.0);
    let sigma = crate::dp::calibrate::noise_multiplier(epsilon, delta, q, steps)?;
    let event = crate::dp::DpEvent::poisson_gaussian(q, sigma, steps);
    let report = crate::dp::accountant::epsilon(std::slice::from_ref(&event), delta)?;
    Ok(DpBaselinePlan {
        dp: DpSgd {
            q,
            sigma,
            steps,
            clip,
            lr: 0.1,
            momentum: 0.9,
        },
        event,
        epsilon: report.epsilon,
        delta,
    })
}

/// Train `models` DP-SGD classifiers on the real training split as `plan` says and test them.
///
/// # Privacy
/// Each model reads the private training split through [`train_dp`] (the one mechanism) and
/// spends `plan.event`, charged step by step to `allowance`, which the caller builds from the
/// ledger's reservation of `models` × `plan.event` (budget is reserved before
/// private data is read; a step the allowance does not cover is refused before it reads).
/// The result is then a differentially private figure, unlike the other baselines.
///
/// # Errors
/// `nn-*`, `cancelled`, `dp-allowance-exceeded`, `dp-rng-failed`.
#[allow(clippy::too_many_arguments)]
pub fn dp_baseline(
    plan: &DpBaselinePlan,
    model: Model,
    data: &crate::dp::mechanism::Records<'_>,
    allowance: &mut crate::dp::mechanism::Allowance,
    test: &FloatImages,
    classes: usize,
    models: usize,
    seed: u64,
    progress: Sink<'_>,
) -> Result<Score> {
    let (accs, per, present, secs) = train_and_test(test, classes, models, seed, |s| {
        train_dp(model, &plan.dp, data, allowance, classes, s, progress)
    })?;
    Ok(summarise(
        accs,
        per,
        present,
        data.len(),
        plan.dp.steps as usize,
        secs,
    ))
}

/// `per_class[k]` real training images of class `k`, drawn at random (seeded, non-private
/// RNG; fewer if the class has fewer).
///
/// # Privacy
/// Returns private pixels: for the non-private reference baseline only.
pub fn random_per_class(train_set: &Images, per_class: &[usize], seed: u64) -> FloatImages {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx = Vec::new();
    for (k, &want) in per_class.iter().enumerate() {
        let mut of: Vec<usize> = (0..train_set.len())
            .filter(|&i| train_set.labels[i] as usize == k)
            .collect();
        of.shuffle(&mut rng);
        idx.extend(of.into_iter().take(want));
    }
    train_set.select(&idx).to_float()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Shape;

    #[test]
    fn summary_statistics() {
        let s = summarise(
            vec![0.5, 0.7],
            vec![1.0, 0.4, 0.0],
            vec![true, true, false],
            10,
            5,
            4.0,
        );
        assert!((s.accuracy - 0.6).abs() < 1e-12);
        assert!((s.accuracy_std - 0.1).abs() < 1e-12);
        assert_eq!(s.per_class, vec![Some(0.5), Some(0.2), None]);
        assert_eq!(s.train_seconds, 2.0);
    }

    #[test]
    fn dp_baseline_meets_the_target_and_learns_at_large_epsilon() {
        let plan = plan_dp_baseline(1.0, 1e-5, 60_000, 256, 1000, 1.0).unwrap();
        assert!(plan.epsilon <= 1.0 + 1e-9, "eps {}", plan.epsilon);
        assert!(
            plan.dp.sigma > 0.5 && plan.dp.sigma < 5.0,
            "sigma {}",
            plan.dp.sigma
        );
        assert!(plan_dp_baseline(-1.0, 1e-5, 100, 10, 10, 1.0).is_err());
        // two separable classes, many records, generous epsilon: DP-SGD must learn them
        let shape = Shape { c: 1, h: 8, w: 8 };
        let mut train = Images::new(shape);
        for i in 0..400 {
            let label = (i % 2) as u32;
            let img: Vec<u8> = (0..64)
                .map(|p| if (p < 32) == (label == 0) { 230 } else { 26 })
                .collect();
            train.push(&img, label);
        }
        let set = train.to_float();
        let mut plan = plan_dp_baseline(50.0, 1e-5, set.len(), 100, 40, 1.0).unwrap();
        plan.dp.lr = 0.05;
        let model = Model::Mlp { hidden: 8 };
        let data = crate::dp::mechanism::Records::new(&train);
        let mut allowance =
            crate::dp::mechanism::Allowance::new(std::slice::from_ref(&plan.event)).unwrap();
        let s = dp_baseline(
            &plan,
            model,
            &data,
            &mut allowance,
            &set,
            2,
            1,
            3,
            &crate::progress::silent,
        )
        .unwrap();
        assert!(s.accuracy > 0.9, "accuracy {}", s.accuracy);
        assert!(
            allowance.is_exhausted(),
            "one model spends exactly its event"
        );
    }

    #[test]
    fn random_per_class_draws_the_asked_counts() {
        let shape = Shape { c: 1, h: 2, w: 2 };
        let mut imgs = Images::new(shape);
        for i in 0..30u8 {
            imgs.push(&[i; 4], (i % 3) as u32);
        }
        let s = random_per_class(&imgs, &[2, 5, 20], 1);
        assert_eq!(s.per_class(3), vec![2, 5, 10]);
        assert_ne!(
            random_per_class(&imgs, &[2, 2, 2], 1).data,
            random_per_class(&imgs, &[2, 2, 2], 2).data
        );
    }
}
