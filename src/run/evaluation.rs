//! Evaluating a completed run, and the release boundary of its utility figures.
//!
//! Two records, kept apart on purpose:
//! - `runs/<id>/eval.json` ([`EvalRecord`]) — **internal**: exact accuracies on the held-out
//!   split, per class, and the non-private baselines (random real, all real) and the DP-SGD
//!   baseline. It stays in the workspace; the package builder never reads it.
//! - `runs/<id>/utility.json` ([`UtilityRelease`]) — **released**: the run's planned `utility`
//!   share spent once, at the first `eval`, on one Gaussian release of the evaluation models'
//!   per-class correct counts and the per-class test counts (the models trained with the labels
//!   a partner would use: the soft labels when the set has them, which its `recipe.labels`
//!   says; the hard-label figure stays internal), charged to the dataset's ledger
//!   before the held-out split is read for it. Every package of the run carries these figures
//!   and the package's stated (ε, δ) composes them with the run's events.
//!
//! # Privacy (the utility release)
//! Neighbouring relation: add or remove one image of the dataset (the held-out split is part
//! of it). The evaluation models are trained on the synthetic set only (a released output)
//! with public seeds, so they are post-processing. Each test image contributes the vector
//! `[f, 1, f·e_c, e_c]` (total correct, total count, per-class correct, per-class count), where
//! `f ∈ [0, 1]` is the fraction of models that classify it correctly and `e_c` the one-hot
//! vector of its class: L2 norm at most 2, so the vector of sums has L2 sensitivity 2. Noise:
//! opendp's exact discrete Gaussian with scale σ·2 (`DpEvent::Gaussian{σ, 1}`, σ from the
//! plan's utility share). Accuracies are post-processing of the noisy sums.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Completed, Error};
use crate::audit::Session;
use crate::dataset::{FloatImages, Split};
use crate::dp::mechanism::{Allowance, Records};
use crate::dp::split::Share;
use crate::dp::DpEvent;
use crate::eval::{Labels, Model, Recipe, Score};
use crate::ledger::Ledger;
use crate::progress::Sink;
use crate::workspace::{atomic_write, Workspace};

/// `eval.json` / `utility.json` format version.
pub const EVAL_VERSION: u32 = 2;

/// L2 sensitivity of the utility release's per-record vector (see the module's Privacy section).
pub const UTILITY_SENSITIVITY: f64 = 2.0;

/// How much work `eval` puts into its models when the caller does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Effort {
    /// Sized to the set: about [`SCALED_SAMPLES_PER_MODEL`] training images seen per model
    /// (so a small synthetic set gets more epochs, a large one fewer), two models of width 32,
    /// and an all-real ceiling of about ten passes over the training split (at most 200
    /// steps). The demo set evaluates in well under a minute on two cores.
    Scaled,
    /// The standard recipe of the distillation literature as far as a 2-core host allows:
    /// three models of width 128, 300 epochs, a 200-step all-real ceiling.
    Full,
}

/// Training images (with repeats) each model of a [`Effort::Scaled`] evaluation sees.
pub const SCALED_SAMPLES_PER_MODEL: usize = 6000;

/// The caller's explicit choices; `None` takes the effort's default.
#[derive(Debug, Clone, Default)]
pub struct EffortChoice {
    /// The effort (default [`Effort::Scaled`]).
    pub effort: Option<Effort>,
    /// `convnet` (default) or `mlp`.
    pub model: Option<String>,
    /// ConvNet channels or MLP hidden units.
    pub width: Option<usize>,
    /// Models per training set.
    pub models: Option<usize>,
    /// Epochs on the synthetic set.
    pub epochs: Option<usize>,
    /// Steps of the all-real ceiling.
    pub ceiling_steps: Option<usize>,
}

/// The effort's settings for a run: `(width, models, epochs, ceiling_steps)` for a synthetic
/// set of `synthetic` images distilled from `train` training images (public metadata).
pub fn effort_settings(
    effort: Effort,
    synthetic: usize,
    train: usize,
) -> (usize, usize, usize, usize) {
    match effort {
        Effort::Full => (128, 3, 300, 200),
        Effort::Scaled => {
            let epochs = (SCALED_SAMPLES_PER_MODEL / synthetic.max(1)).clamp(20, 300);
            let ceiling = (10 * train).div_ceil(256).clamp(20, 200);
            (32, 2, epochs, ceiling)
        }
    }
}

/// What `eval` trains and compares.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The recipe for models trained on the synthetic set (and on the random-real baseline).
    pub recipe: Recipe,
    /// Fresh models per training set.
    pub models: usize,
    /// First model's initialisation seed (public).
    pub seed: u64,
    /// Compute the non-private baselines (random real, all real; internal only).
    pub baselines: bool,
    /// SGD steps of the all-real ceiling (one model).
    pub ceiling_steps: usize,
    /// Train a DP-SGD classifier on the training split at the run's (ε, δ) with this many steps
    /// (charged to the ledger; internal only).
    pub dp_baseline_steps: Option<u64>,
    /// How the settings were chosen, in words (printed, and kept in `eval.json`).
    pub effort: String,
    /// Also train MLPs with this many hidden units on the synthetic set (same recipe and
    /// labels; an internal figure showing gains are not specific to the evaluation net).
    pub also_mlp: Option<usize>,
}

/// Hidden units of the MLP that `retort eval --also-mlp` trains.
pub const ALSO_MLP_HIDDEN: usize = 256;

/// The synthetic set's score under another architecture (INTERNAL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtherModel {
    /// The figures.
    #[serde(flatten)]
    pub score: Score,
    /// The architecture.
    pub model: Model,
    /// The labels it was trained on (those of `accuracy`).
    pub labels: Labels,
    /// The network, described.
    pub network: String,
}

/// The run's DP teacher on the held-out split (INTERNAL: it reads private test images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherScore {
    /// Held-out accuracy of its hard predictions.
    pub accuracy: f64,
    /// Per class, in the run's class order (`null` for a class without test images).
    pub per_class: Vec<Option<f64>>,
    /// ε of the teacher's share alone (at the run's δ).
    pub epsilon: f64,
    /// The model, in words.
    pub model: String,
}

impl EvalOptions {
    /// Options for evaluating `run`: the effort's settings sized to the run's synthetic set and
    /// its dataset's training split (public metadata: the record count), with the caller's
    /// explicit choices on top.
    ///
    /// # Errors
    /// `dataset-not-found` when the run's dataset is gone.
    pub fn for_run(
        ws: &Workspace,
        run: &Completed,
        choice: &EffortChoice,
        seed: u64,
        baselines: bool,
        dp_baseline_steps: Option<u64>,
    ) -> Result<EvalOptions, Error> {
        let rec = run.record();
        let train = crate::dataset::open(ws, &rec.dataset)?.meta.train_count;
        let synthetic = rec.ipc * rec.classes.len();
        let effort = choice.effort.unwrap_or(Effort::Scaled);
        let (w, m, e, c) = effort_settings(effort, synthetic, train);
        let width = choice.width.unwrap_or(w);
        let models = choice.models.unwrap_or(m);
        let epochs = choice.epochs.unwrap_or(e);
        let ceiling_steps = choice.ceiling_steps.unwrap_or(c);
        let model = model_of(choice.model.as_deref().unwrap_or("convnet"), width);
        let explicit = [
            choice.width.map(|_| "width"),
            choice.models.map(|_| "models"),
            choice.epochs.map(|_| "epochs"),
            choice.ceiling_steps.map(|_| "ceiling steps"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
        let mut words = match effort {
            Effort::Scaled => format!(
                "scaled to the set ({synthetic} synthetic images, {train} real training images)"
            ),
            Effort::Full => "full (the standard recipe)".to_string(),
        };
        words += &format!(
            ": {models} model(s) of width {width}, {epochs} epochs, all-real ceiling {ceiling_steps} steps"
        );
        if !explicit.is_empty() {
            words += &format!(" ({} as given)", explicit.join(", "));
        }
        Ok(EvalOptions {
            recipe: Recipe::standard(model, epochs),
            models,
            seed,
            baselines,
            ceiling_steps,
            dp_baseline_steps,
            effort: words,
            also_mlp: None,
        })
    }
}

/// A baseline and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The figures.
    #[serde(flatten)]
    pub score: Score,
    /// Whether the figure is differentially private (charged to the ledger).
    pub private: bool,
    /// What it is, in words.
    pub what: String,
    /// Extra facts (`capped` training, `ledger_run`, `plan`).
    #[serde(flatten)]
    pub notes: serde_json::Map<String, serde_json::Value>,
}

/// One class's held-out accuracy under each training set (INTERNAL, like the baselines: exact
/// figures on the held-out split, never packaged). `None` where the class has no held-out
/// image or the training set was not evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerClass {
    /// The class name.
    pub class: String,
    /// Models trained on the synthetic set.
    pub synthetic: Option<f64>,
    /// Models trained on the same number of random real images per class (non-private).
    pub random_real: Option<f64>,
    /// The all-real ceiling (non-private), when measured.
    pub all_real: Option<f64>,
    /// The DP-SGD baseline, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_sgd: Option<f64>,
}

/// Per-class accuracies of `synthetic` and each baseline, one row per class of `classes`.
pub fn per_class(
    classes: &[String],
    synthetic: &Score,
    baselines: &std::collections::BTreeMap<String, Baseline>,
) -> Vec<PerClass> {
    let of = |sc: Option<&Score>, k: usize| sc.and_then(|s| s.per_class.get(k).copied().flatten());
    let base = |name: &str| baselines.get(name).map(|b| &b.score);
    classes
        .iter()
        .enumerate()
        .map(|(k, class)| PerClass {
            class: class.clone(),
            synthetic: of(Some(synthetic), k),
            random_real: of(base("random_real"), k),
            all_real: of(base("all_real"), k),
            dp_sgd: of(base("dp_sgd"), k),
        })
        .collect()
}

/// `runs/<id>/eval.json`: the INTERNAL evaluation record (never packaged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Format version.
    pub version: u32,
    /// The run.
    pub run: String,
    /// The dataset.
    pub dataset: String,
    /// Mean accuracy of the models trained on the synthetic set with the labels a partner
    /// would use (`labels`: soft when the set has them, else hard) (exact, internal).
    pub accuracy: f64,
    /// Its standard deviation over the models.
    pub accuracy_std: f64,
    /// The labels `accuracy`, `synthetic` and `recipe` use (absent in records made before soft
    /// labels: hard).
    #[serde(default)]
    pub labels: Labels,
    /// Mean accuracy of models trained on the synthetic set's hard labels (absent in records
    /// made before soft labels, where it is `accuracy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_hard: Option<f64>,
    /// Mean accuracy of models trained on its soft labels, when the set has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_soft: Option<f64>,
    /// Held-out images the figures were measured on (internal).
    pub test_images: usize,
    /// The recipe, models and seed.
    pub recipe: Recipe,
    /// Models per training set.
    pub models: usize,
    /// First seed.
    pub seed: u64,
    /// The evaluation network, described.
    pub network: String,
    /// The synthetic set's score (with `labels`).
    pub synthetic: Score,
    /// The score of models trained on the hard labels, when `synthetic` is the soft-label one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic_hard: Option<Score>,
    /// Baselines by name (`random_real`, `all_real`, `dp_sgd`).
    pub baselines: std::collections::BTreeMap<String, Baseline>,
    /// The run's DP teacher on the held-out split, when the run trained one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<TeacherScore>,
    /// The synthetic set under other architectures, by name (`mlp`), when asked.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub other_models: std::collections::BTreeMap<String, OtherModel>,
    /// Per-class accuracy of the synthetic set beside each baseline's (absent in records made
    /// before; the same figures as each score's `per_class`, by class name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_class: Vec<PerClass>,
    /// Synthetic vs all-real size and training time, when the synthetic set is the smaller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<serde_json::Value>,
    /// How the evaluation's settings were chosen, in words (absent in records made before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// When.
    pub evaluated: String,
    /// Retort version.
    pub retort_version: String,
}

/// The mechanism of a utility release, as stated in `utility.json` and the privacy report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UtilityMechanism {
    /// `gaussian`.
    pub kind: String,
    /// The noise sampler (`opendp-exact-discrete-gaussian`).
    pub sampler: String,
    /// L2 sensitivity of the released vector.
    pub sensitivity: f64,
    /// Noise multiplier σ (noise std = σ × sensitivity).
    pub noise_multiplier: f64,
    /// Noise standard deviation on every released coordinate.
    pub noise_std: f64,
    /// The event charged.
    pub event: DpEvent,
    /// What each coordinate is.
    pub coordinates: String,
}

/// `runs/<id>/utility.json`: the RELEASED utility figures (what packages carry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UtilityRelease {
    /// Format version.
    pub version: u32,
    /// The run.
    pub run: String,
    /// The ledger id the release was charged under.
    pub ledger_id: String,
    /// When it was released.
    pub released: String,
    /// The share of the run's budget it spent.
    pub share: Share,
    /// The mechanism.
    pub mechanism: UtilityMechanism,
    /// The evaluation protocol (public parameters).
    pub recipe: Recipe,
    /// Models whose predictions were counted.
    pub models: usize,
    /// Noisy total of correct predictions (mean over the models).
    pub noisy_correct: f64,
    /// Noisy number of held-out images.
    pub noisy_count: f64,
    /// Noisy correct count per class.
    pub noisy_correct_per_class: Vec<f64>,
    /// Noisy held-out count per class.
    pub noisy_count_per_class: Vec<f64>,
    /// Accuracy: noisy correct / noisy count, clamped to [0, 1] (post-processing).
    pub accuracy: f64,
    /// Approximate standard deviation of `accuracy` due to the noise (post-processing).
    pub accuracy_noise_std: f64,
    /// Per-class accuracy (post-processing), `null` where the noisy count is below three noise
    /// standard deviations (too few images for the noise).
    pub per_class_accuracy: Vec<Option<f64>>,
}

/// What `eval` produced.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The internal record (written to `eval.json`).
    pub record: EvalRecord,
    /// The released utility figures, if the run plans them.
    pub utility: Option<UtilityRelease>,
    /// Whether this `eval` made the release (false: an earlier one did, it is reused).
    pub released_now: bool,
    /// Why there is no utility release, when there is none.
    pub no_release_reason: Option<String>,
}

/// Phases of an evaluation, for progress lines.
pub type PhaseSink<'a> = &'a (dyn Fn(&str) + Sync);

/// Evaluate `run`: train models on its synthetic set, score them on the held-out split
/// (internal), compute the requested baselines (internal), make the run's utility release if
/// it plans one and none was made, and write `eval.json` (and `utility.json`).
///
/// # Privacy
/// Non-private baselines read the training split: an intent record says so before reading and
/// their figures stay internal. The DP-SGD baseline and the utility release are charged to the
/// ledger before they read anything.
///
/// # Errors
/// Dataset, ledger (refusals exit 3), audit, engine errors; `run-eval-cancelled` on Ctrl-C
/// (naming what the evaluation had charged before it stopped, if anything).
pub fn evaluate(
    ws: &Workspace,
    run: &Completed,
    opts: &EvalOptions,
    session: &mut Session,
    phase: PhaseSink<'_>,
    sink: Sink<'_>,
) -> Result<Evaluation, Error> {
    let mut charged = Vec::new();
    evaluate_charging(ws, run, opts, session, phase, sink, &mut charged).map_err(|e| match e {
        Error::Cancelled { .. } => Error::EvalCancelled {
            run: run.id().to_string(),
            charged,
        },
        e => e,
    })
}

fn evaluate_charging(
    ws: &Workspace,
    run: &Completed,
    opts: &EvalOptions,
    session: &mut Session,
    phase: PhaseSink<'_>,
    sink: Sink<'_>,
    charged: &mut Vec<String>,
) -> Result<Evaluation, Error> {
    let rec = run.record();
    let syn = run.synthetic()?;
    let stored = crate::dataset::open(ws, &rec.dataset)?;
    let classes = rec.classes.len();
    if stored.num_classes() != classes {
        return Err(Error::Mismatch {
            run: rec.id.clone(),
            dataset: rec.dataset.clone(),
            why: format!(
                "the run has {classes} classes, the dataset {}",
                stored.num_classes()
            ),
        });
    }
    let test = stored.load(Split::Test)?.to_float();
    session.detail("dataset", rec.dataset.clone());
    // The labels a partner would use: soft when the set has them (docs/partners.md). Those
    // models make `accuracy` and the utility release; the hard-label figure is measured
    // beside them (training twice only when there are soft labels).
    let hard = opts.recipe.with_labels(Labels::Hard);
    let labels = if syn.soft_labels.is_some() {
        Labels::Soft
    } else {
        Labels::Hard
    };
    let partner = opts.recipe.with_labels(labels);
    let train_scored = |recipe: &Recipe, what: &str| {
        let (nets, secs) =
            crate::eval::train_models(recipe, &syn, classes, opts.models, opts.seed, sink, |m| {
                phase(&format!("{what}, model {}/{}", m + 1, opts.models))
            })?;
        let steps = recipe.steps_for(syn.len());
        let score = crate::eval::score_nets(&nets, syn.len(), steps, secs, &test, classes)?;
        Ok::<_, crate::eval::Error>((nets, score))
    };
    let (nets, synthetic, synthetic_hard) = match labels {
        Labels::Soft => {
            phase("synthetic set, soft labels");
            let (nets, soft) =
                train_scored(&partner, "synthetic set, soft labels").map_err(wrap)?;
            phase("synthetic set, hard labels");
            let (_, h) = train_scored(&hard, "synthetic set, hard labels").map_err(wrap)?;
            (nets, soft, Some(h))
        }
        _ => {
            phase("synthetic set");
            let (nets, h) = train_scored(&hard, "synthetic set").map_err(wrap)?;
            (nets, h, None)
        }
    };
    let mut other_models = std::collections::BTreeMap::new();
    if let Some(hidden) = opts.also_mlp {
        let model = Model::Mlp { hidden };
        let recipe = Recipe {
            model,
            ..partner.clone()
        };
        let what = format!("synthetic set, MLP ({} labels)", labels.as_str());
        phase(&what);
        let (_, score) = train_scored(&recipe, &what).map_err(wrap)?;
        let network = crate::nn::Net::zeroed(model.arch(syn.shape, classes))
            .map(|n| n.describe())
            .unwrap_or_default();
        other_models.insert(
            "mlp".to_string(),
            OtherModel {
                score,
                model,
                labels,
                network,
            },
        );
    }
    let mut baselines = std::collections::BTreeMap::new();
    let mut full: Option<(Score, usize)> = None;
    if opts.baselines {
        let (rnd, all) = non_private_baselines(ws, run, opts, session, &test, phase, sink)?;
        full = Some((all.score.clone(), stored.meta.train_count));
        baselines.insert("random_real".to_string(), rnd);
        baselines.insert("all_real".to_string(), all);
    }
    if let Some(steps) = opts.dp_baseline_steps {
        phase("DP-SGD baseline");
        let b = dp_sgd_baseline(ws, run, opts, steps, session, &test, sink, charged)?;
        baselines.insert("dp_sgd".to_string(), b);
    }
    let teacher = teacher_score(run, rec, &test, phase)?;
    let (utility, released_now, no_release_reason) =
        utility_release(ws, run, &nets, &partner, session, phase, charged)?;
    let network = crate::nn::Net::zeroed(opts.recipe.model.arch(syn.shape, classes))
        .map(|n| n.describe())
        .unwrap_or_default();
    let record = EvalRecord {
        version: EVAL_VERSION,
        run: rec.id.clone(),
        dataset: rec.dataset.clone(),
        accuracy: synthetic.accuracy,
        accuracy_std: synthetic.accuracy_std,
        labels,
        accuracy_hard: Some(synthetic_hard.as_ref().unwrap_or(&synthetic).accuracy),
        accuracy_soft: (labels == Labels::Soft).then_some(synthetic.accuracy),
        test_images: test.len(),
        recipe: partner.clone(),
        models: opts.models,
        seed: opts.seed,
        network,
        compression: compression(&synthetic, syn.len(), full.as_ref(), &stored),
        effort: Some(opts.effort.clone()),
        per_class: per_class(&rec.classes, &synthetic, &baselines),
        synthetic,
        synthetic_hard,
        baselines,
        teacher,
        other_models,
        evaluated: crate::workspace::now_rfc3339(),
        retort_version: crate::VERSION.into(),
    };
    let bytes = serde_json::to_vec_pretty(&record).expect("invariant: eval record serializes");
    atomic_write(&run.dir().join("eval.json"), &bytes)?;
    session.detail("accuracy", record.accuracy);
    session.detail("labels", labels.as_str());
    session.detail("accuracy_hard", record.accuracy_hard);
    session.detail("accuracy_soft", record.accuracy_soft);
    session.detail("models", opts.models);
    session.detail("baselines", opts.baselines);
    session.detail("utility_released_now", released_now);
    Ok(Evaluation {
        record,
        utility,
        released_now,
        no_release_reason,
    })
}

/// The run's teacher (`teacher.json`) on the held-out split, when it has one.
fn teacher_score(
    run: &Completed,
    rec: &super::RunRecord,
    test: &FloatImages,
    phase: &dyn Fn(&str),
) -> Result<Option<TeacherScore>, Error> {
    let path = run.dir().join(crate::distill::teacher::FILE);
    if !path.is_file() {
        return Ok(None);
    }
    phase("DP teacher on the held-out split");
    let t = crate::distill::teacher::Teacher::read(&path)?;
    let (accuracy, per) = t.accuracy(test)?;
    let epsilon = rec
        .shares()
        .iter()
        .find(|s| s.name == crate::distill::plan::TEACHER)
        .map_or(f64::NAN, |s| s.epsilon);
    Ok(Some(TeacherScore {
        accuracy,
        per_class: per
            .into_iter()
            .map(|v| v.is_finite().then_some(v))
            .collect(),
        epsilon,
        model: crate::distill::teacher::MODEL.into(),
    }))
}

fn wrap(e: crate::eval::Error) -> Error {
    match e {
        crate::eval::Error::Cancelled(_) => Error::Cancelled { run: "eval".into() },
        crate::eval::Error::Dp(e) => e.into(),
        other => other.into(),
    }
}

#[allow(clippy::too_many_arguments)]
fn non_private_baselines(
    ws: &Workspace,
    run: &Completed,
    opts: &EvalOptions,
    session: &mut Session,
    test: &FloatImages,
    phase: PhaseSink<'_>,
    sink: Sink<'_>,
) -> Result<(Baseline, Baseline), Error> {
    let rec = run.record();
    session.intent(
        "eval.read-train",
        &rec.id,
        json!({"dataset": rec.dataset, "purpose": "non-private reference baselines (random real, all real); internal only, never released"}),
    )?;
    let stored = crate::dataset::open(ws, &rec.dataset)?;
    let train = stored.load(Split::Train)?;
    let classes = rec.classes.len();
    let per_class = vec![rec.ipc; classes];
    let rand_set = crate::eval::random_per_class(&train, &per_class, opts.seed ^ 0x5eed);
    phase("random real");
    let rnd = crate::eval::score(
        &opts.recipe.with_labels(Labels::Hard),
        &rand_set,
        test,
        classes,
        opts.models,
        opts.seed,
        sink,
    )
    .map_err(wrap)?;
    let full = train.to_float();
    let mut ceiling = opts.recipe.with_labels(Labels::Hard);
    ceiling.epochs = usize::MAX / 2;
    ceiling.max_steps = Some(opts.ceiling_steps.max(1));
    phase("all real");
    let fs =
        crate::eval::score(&ceiling, &full, test, classes, 1, opts.seed, sink).map_err(wrap)?;
    let epochs = fs.steps as f64 * ceiling.batch as f64 / full.len().max(1) as f64;
    Ok((
        Baseline {
            score: rnd,
            private: false,
            what: "the same number of real training images per class, drawn at random: a NON-PRIVATE reference (real pixels); internal only".into(),
            notes: Default::default(),
        },
        Baseline {
            notes: [(
                "capped".to_string(),
                json!({"steps": fs.steps, "batch": ceiling.batch, "epochs": epochs, "models": 1,
                "why": "training on all data is capped so it stays affordable on a 2-core host; the ceiling is therefore an underestimate"}),
            )]
            .into_iter()
            .collect(),
            score: fs,
            private: false,
            what: "all real training images: the NON-PRIVATE ceiling; internal only".into(),
        },
    ))
}

#[allow(clippy::too_many_arguments)]
fn dp_sgd_baseline(
    ws: &Workspace,
    run: &Completed,
    opts: &EvalOptions,
    steps: u64,
    session: &mut Session,
    test: &FloatImages,
    sink: Sink<'_>,
    charged: &mut Vec<String>,
) -> Result<Baseline, Error> {
    let rec = run.record();
    let stored = crate::dataset::open(ws, &rec.dataset)?;
    let plan = crate::eval::plan_dp_baseline(
        rec.epsilon.get(),
        rec.delta.get(),
        stored.meta.train_count,
        256,
        steps,
        1.0,
    )
    .map_err(wrap)?;
    let loaded = crate::policy::load_active(ws, None)?;
    let cap = loaded.policy.dataset_epsilon_cap(&rec.dataset);
    let id = crate::workspace::new_id("evaldp");
    let reservation = Ledger::open(ws, &stored.meta)?.reserve(
        session.actor(),
        &id,
        "eval-dp-baseline",
        std::slice::from_ref(&plan.event),
        rec.delta.get(),
        Some(cap),
    )?;
    charged.push(id.clone());
    session.intent(
        "eval.dp-baseline",
        &id,
        json!({"run": rec.id, "dataset": rec.dataset, "epsilon": plan.epsilon, "delta": rec.delta,
            "events": [plan.event], "policy": {"name": loaded.name, "sha256": loaded.sha256}}),
    )?;
    session.detail("dp_baseline_ledger_run", id.clone());
    let result = stored
        .load(Split::Train)
        .map_err(Error::from)
        .and_then(|train| {
            let mut allowance = Allowance::new(std::slice::from_ref(&plan.event))?;
            crate::eval::dp_baseline(
                &plan,
                opts.recipe.model,
                &Records::new(&train),
                &mut allowance,
                test,
                rec.classes.len(),
                1,
                opts.seed,
                sink,
            )
            .map_err(wrap)
        });
    match result {
        Ok(score) => {
            reservation.commit(session.actor())?;
            Ok(Baseline {
                score,
                private: true,
                what: "a DP-SGD classifier trained directly on the real training split at the run's (epsilon, delta); one model; charged to the ledger; internal only".into(),
                notes: [
                    ("ledger_run".to_string(), json!(id)),
                    ("plan".to_string(), json!(plan)),
                ]
                .into_iter()
                .collect(),
            })
        }
        Err(e) => {
            let _ = reservation.cancel(session.actor());
            Err(e)
        }
    }
}

/// The ledger id of run `run`'s utility release.
pub fn utility_ledger_id(run: &str) -> String {
    format!("{run}-utility")
}

/// Read `runs/<id>/utility.json` if the run has one.
///
/// # Errors
/// `run-invalid` when it exists but does not parse; I/O.
pub fn read_utility(run: &Completed) -> Result<Option<UtilityRelease>, Error> {
    let p = run.dir().join("utility.json");
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Invalid {
                path: p,
                why: format!("not the utility.json format: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::error::IoError::new("reading", &p, e).into()),
    }
}

type UtilityOutcome = (Option<UtilityRelease>, bool, Option<String>);

fn utility_release(
    ws: &Workspace,
    run: &Completed,
    nets: &[crate::nn::Net],
    recipe: &Recipe,
    session: &mut Session,
    phase: PhaseSink<'_>,
    charged: &mut Vec<String>,
) -> Result<UtilityOutcome, Error> {
    let rec = run.record();
    let Some(share) = run.eval_share(crate::distill::plan::UTILITY) else {
        return Ok((
            None,
            false,
            Some(
                "the run planned no utility share (the policy's budget.utility_share was 0)".into(),
            ),
        ));
    };
    if let Some(u) = read_utility(run)? {
        return Ok((Some(u), false, None));
    }
    let ledger = Ledger::of_run(ws, &rec.id)?;
    let ledger_id = utility_ledger_id(&rec.id);
    if ledger.runs()?.iter().any(|r| r.run == ledger_id) {
        // Charged but never written (a crash between the two): releasing again would spend
        // the share twice, so packages of this run carry no utility figures.
        return Ok((
            None,
            false,
            Some("the utility release was charged earlier but not written (interrupted); it is not made twice".into()),
        ));
    }
    let [DpEvent::Gaussian { sigma, count: 1 }] = share.events.as_slice() else {
        return Err(Error::Invalid {
            path: run.dir().join("run.json"),
            why: "the utility share is not one Gaussian release".into(),
        });
    };
    let sigma = *sigma;
    let loaded = crate::policy::load_active(ws, None)?;
    let cap = loaded.policy.dataset_epsilon_cap(&rec.dataset);
    let reservation = ledger.reserve(
        session.actor(),
        &ledger_id,
        "eval-utility",
        &share.events,
        rec.delta.get(),
        Some(cap),
    )?;
    charged.push(ledger_id.clone());
    session.intent(
        "eval.utility-release",
        &ledger_id,
        json!({"run": rec.id, "dataset": rec.dataset, "events": share.events, "epsilon": share.epsilon,
               "delta": rec.delta, "sensitivity": UTILITY_SENSITIVITY}),
    )?;
    phase("utility release (held-out figures for partners)");
    let result = release_counts(ws, run, nets, &share, sigma);
    let noisy = match result {
        Ok(v) => v,
        Err(e) => {
            // Marked cancelled in the ledger; the charge stands (fail closed).
            let _ = reservation.cancel(session.actor());
            return Err(e);
        }
    };
    let k = rec.classes.len();
    let noise_std = sigma * UTILITY_SENSITIVITY;
    let (nc, nn) = (noisy[0], noisy[1]);
    let per_c: Vec<f64> = noisy[2..2 + k].to_vec();
    let per_n: Vec<f64> = noisy[2 + k..2 + 2 * k].to_vec();
    let accuracy = (nc / nn.max(1.0)).clamp(0.0, 1.0);
    let accuracy_noise_std = noise_std * (1.0 + accuracy * accuracy).sqrt() / nn.max(1.0);
    let per_class_accuracy = per_c
        .iter()
        .zip(&per_n)
        .map(|(&c, &n)| (n >= 3.0 * noise_std).then(|| (c / n).clamp(0.0, 1.0)))
        .collect();
    let u = UtilityRelease {
        version: 1,
        run: rec.id.clone(),
        ledger_id: ledger_id.clone(),
        released: crate::workspace::now_rfc3339(),
        share: share.clone(),
        mechanism: UtilityMechanism {
            kind: "gaussian".into(),
            sampler: "opendp-exact-discrete-gaussian".into(),
            sensitivity: UTILITY_SENSITIVITY,
            noise_multiplier: sigma,
            noise_std,
            event: share.events[0].clone(),
            coordinates: "[total correct, total count, correct per class…, count per class…] over the held-out split; correct = the fraction of the evaluation models right on the image".into(),
        },
        recipe: recipe.clone(),
        models: nets.len(),
        noisy_correct: nc,
        noisy_count: nn,
        noisy_correct_per_class: per_c,
        noisy_count_per_class: per_n,
        accuracy,
        accuracy_noise_std,
        per_class_accuracy,
    };
    let bytes = serde_json::to_vec_pretty(&u).expect("invariant: utility release serializes");
    atomic_write(&run.dir().join("utility.json"), &bytes)?;
    reservation.commit(session.actor())?;
    Ok((Some(u), true, None))
}

/// The noisy vector `[Σf, n, Σf·e_c…, Σe_c…]` over the held-out split (see the module's
/// Privacy section), released through the one mechanism ([`crate::dp::mechanism`]): every
/// held-out record's row `[f, 1, f·e_c, e_c]` (norm ≤ 2 = the clip norm), one sum, opendp's
/// exact Gaussian sampler, charged to an allowance of exactly the utility share's events.
fn release_counts(
    ws: &Workspace,
    run: &Completed,
    nets: &[crate::nn::Net],
    share: &Share,
    sigma: f64,
) -> Result<Vec<f64>, Error> {
    use crate::dp::mechanism::{Batch, GaussianSum, Grouping, MechError, Noise, Sampling};
    let rec = run.record();
    let k = rec.classes.len();
    let stored = crate::dataset::open(ws, &rec.dataset)?;
    let test = stored.load(Split::Test)?;
    let dim = 2 + 2 * k;
    let mechanism = GaussianSum {
        sampling: Sampling::Everyone,
        grouping: Grouping::Single,
        clip: crate::dp::ClipNorm::new(UTILITY_SENSITIVITY)?,
        sigma: crate::dp::NoiseMultiplier::new(sigma)?,
        noise: Noise::Exact,
        chunk: 512,
    };
    let mut allowance = Allowance::new(&share.events)?;
    let row = |b: &mut Batch<'_>| -> crate::eval::Result<Vec<f32>> {
        let f = crate::eval::correct_fractions(nets, b.pixels, b.labels)?;
        let mut rows = vec![0f32; b.labels.len() * dim];
        for (i, (&label, fi)) in b.labels.iter().zip(&f).enumerate() {
            let c = label as usize;
            if c >= k {
                continue;
            }
            let fi = fi.clamp(0.0, 1.0);
            let r = &mut rows[i * dim..(i + 1) * dim];
            r[0] = fi;
            r[1] = 1.0;
            r[2 + c] = fi;
            r[2 + k + c] = 1.0;
        }
        Ok(rows)
    };
    let released = mechanism
        .release(
            &mut allowance,
            &Records::new(&test),
            dim,
            &row,
            &crate::progress::silent,
        )
        .map_err(|e| match e {
            MechError::Dp(e) => e.into(),
            MechError::Record(e) => wrap(e),
            MechError::Cancelled => Error::Cancelled { run: "eval".into() },
        })?;
    Ok(released
        .sums
        .into_iter()
        .next()
        .expect("invariant: Grouping::Single releases one sum"))
}

fn compression(
    syn: &Score,
    syn_n: usize,
    full: Option<&(Score, usize)>,
    stored: &crate::dataset::Stored,
) -> Option<serde_json::Value> {
    let full_n = stored.meta.train_count;
    if syn_n >= full_n {
        return None;
    }
    let full_bytes = (full_n * stored.meta.shape.len()) as u64;
    let syn_bytes = (syn_n * stored.meta.shape.len() * 4) as u64;
    let mut v = json!({
        "synthetic_images": syn_n,
        "synthetic_bytes_f32": syn_bytes,
        "full_images": full_n,
        "full_bytes": full_bytes,
        "full_bytes_note": "training split as stored (8-bit pixels)",
        "images_ratio": syn_n as f64 / full_n.max(1) as f64,
        "synthetic_train_seconds_per_model": syn.train_seconds,
    });
    if let Some((fs, n)) = full {
        let per_step = fs.train_seconds / fs.steps.max(1) as f64;
        let epoch = per_step * n.div_ceil(256) as f64;
        v["full_train_seconds_capped"] = fs.train_seconds.into();
        v["full_train_seconds_per_epoch_estimated"] = epoch.into();
        v["accuracy_ratio"] = (syn.accuracy / fs.accuracy.max(1e-12)).into();
    }
    Some(v)
}

/// Read the internal `eval.json` of a run, if it has one.
///
/// # Errors
/// `run-invalid`, I/O.
pub fn read_eval(run: &Completed) -> Result<Option<EvalRecord>, Error> {
    let p = run.dir().join("eval.json");
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Invalid {
                path: p,
                why: format!("not the eval.json format: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::error::IoError::new("reading", &p, e).into()),
    }
}

/// The model `--model`/`--width` name.
pub fn model_of(name: &str, width: usize) -> Model {
    match name {
        "mlp" => Model::Mlp { hidden: width },
        _ => Model::ConvNet { width },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(per_class: Vec<Option<f64>>) -> Score {
        Score {
            accuracy: 0.5,
            accuracy_std: 0.0,
            accuracies: vec![0.5],
            per_class,
            train_images: 20,
            steps: 1,
            train_seconds: 0.0,
        }
    }

    /// See: issue 21 (imbalance). The per-class rows put each class's synthetic accuracy
    /// beside the baselines', by class name, with gaps where a figure does not exist.
    #[test]
    fn per_class_rows_pair_the_training_sets() {
        let classes: Vec<String> = ["a", "b", "rare"].map(String::from).to_vec();
        let syn = score(vec![Some(0.9), Some(0.8), Some(0.1)]);
        let mut baselines = std::collections::BTreeMap::new();
        let base = |pc| Baseline {
            score: score(pc),
            private: false,
            what: "reference".into(),
            notes: Default::default(),
        };
        baselines.insert(
            "random_real".to_string(),
            base(vec![Some(0.7), Some(0.6), Some(0.5)]),
        );
        baselines.insert("all_real".to_string(), base(vec![Some(0.95), None]));
        let rows = per_class(&classes, &syn, &baselines);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].class, "rare");
        assert_eq!(
            (
                rows[2].synthetic,
                rows[2].random_real,
                rows[2].all_real,
                rows[2].dp_sgd
            ),
            (Some(0.1), Some(0.5), None, None)
        );
        assert_eq!(rows[0].all_real, Some(0.95));
        // Without baselines: only the synthetic column.
        let alone = per_class(&classes, &syn, &Default::default());
        assert!(alone
            .iter()
            .all(|r| r.random_real.is_none() && r.all_real.is_none()));
        // The JSON row names its columns; dp_sgd only when measured.
        let j = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(j["class"], "a");
        assert_eq!(j["random_real"], 0.7);
        assert!(j.get("dp_sgd").is_none());
    }

    /// See: issue 20. The default effort grows with a small synthetic set and shrinks with a
    /// large one; `Full` is the standard recipe whatever the set.
    #[test]
    fn effort_scales_with_the_set() {
        // The demo: 40 synthetic images, 300 real ones.
        assert_eq!(effort_settings(Effort::Scaled, 40, 300), (32, 2, 150, 20));
        // A large synthetic set: few epochs, never below 20.
        assert_eq!(effort_settings(Effort::Scaled, 4000, 60_000).2, 20);
        // A tiny one: never above 300.
        assert_eq!(effort_settings(Effort::Scaled, 4, 60_000).2, 300);
        // The ceiling: about ten passes, at most 200 steps.
        assert_eq!(effort_settings(Effort::Scaled, 100, 60_000).3, 200);
        assert_eq!(effort_settings(Effort::Scaled, 100, 2560).3, 100);
        for n in [1, 40, 100_000] {
            assert_eq!(effort_settings(Effort::Full, n, n), (128, 3, 300, 200));
        }
    }
}
