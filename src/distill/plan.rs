//! Planning a distillation from public metadata only: the method, its parameters, the noise
//! multiplier calibrated to the target (ε, δ), the exact privacy events the run will spend, and
//! an estimated run time from a short benchmark on random (non-private) data.

use serde::{Deserialize, Serialize};

use super::teacher::{self, TeacherParams};
use super::{dm, gm, DpEvent, Error, Method};
use crate::dataset::{Meta, Shape};
use crate::dp::split::{Share, Stage};
use crate::dp::{Delta, Epsilon};

/// The name of a run's main release in its budget split.
pub const MAIN: &str = "main";
/// The name of the held-out utility release in a run's budget split.
pub const UTILITY: &str = "utility";
/// The name of the DP teacher's release in a run's budget split.
pub const TEACHER: &str = "teacher";
/// Whether a run trains a DP teacher when the request does not say. Off: without guidance its
/// soft labels lowered the independent evaluator's accuracy on the full Fashion-MNIST at ε = 1
/// from 0.789 (hard labels) to 0.771; with guidance 0.5 (the teacher's default) two
/// distillations gave 0.798 and 0.786 with either label kind, against 0.770 to 0.789 for
/// distillations without a teacher — about one point, at half again the run time (26 minutes
/// instead of 18 on 2 cores; docs/distill.md, "DP teacher and soft labels"). It stays opt-in
/// (`--teacher`) until the gain is shown on another dataset.
pub const TEACHER_BY_DEFAULT: bool = false;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Target ε of the whole run (all its shares composed).
    pub epsilon: Epsilon,
    /// δ.
    pub delta: Delta,
    /// The share of the target planned for the held-out utility release (policy
    /// `budget.utility_share`; 0 = none).
    pub utility_share: f64,
    /// Train a DP teacher for soft labels: `Some(true)` / `Some(false)`, or `None` for the
    /// default ([`TEACHER_BY_DEFAULT`]).
    pub teacher: Option<bool>,
    /// Synthetic images per class.
    pub ipc: usize,
    /// Method; `None` = the default for this dataset.
    pub method: Option<Method>,
    /// Synthesis iterations (dm) or outer iterations (gm); `None` = size-aware default.
    pub iterations: Option<usize>,
    /// Non-private initialisation seed (feature nets, synthetic init, augmentation); `None` =
    /// drawn from the OS. Never seeds privacy noise or sampling.
    pub seed: Option<u64>,
}

/// Method-specific parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "method", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Params {
    /// Distribution matching.
    Dm(dm::DmParams),
    /// Gradient matching.
    Gm(gm::GmParams),
}

/// A planned run: everything needed to reserve, run and record it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    /// Dataset name.
    pub dataset: String,
    /// The dataset's keyed fingerprint (HMAC, from its metadata).
    pub dataset_fingerprint: String,
    /// Training record count: **public metadata** by policy (used for q and δ < 1/n).
    pub records: usize,
    /// Class names: **public metadata**.
    pub classes: Vec<String>,
    /// Image shape: **public metadata**.
    pub shape: Shape,
    /// Method.
    pub method: Method,
    /// Why this method (when it was chosen by default) or "requested".
    pub method_reason: String,
    /// Synthetic images per class.
    pub ipc: usize,
    /// Target ε of the whole run (every share composed).
    pub epsilon_target: Epsilon,
    /// δ.
    pub delta: Delta,
    /// The budget split: every release of the run, with its events and its ε alone. The
    /// composition of all shares meets `epsilon_target`.
    pub shares: Vec<Share>,
    /// Calibrated noise multiplier σ of the main release (noise std = σ·C).
    pub noise_multiplier: f64,
    /// Poisson sampling rate q (gm; `None` for dm's full-data release).
    pub sampling_rate: Option<f64>,
    /// Noisy releases (gm: Poisson-sampled steps; dm: 1, or one per net when per-net sampled).
    pub steps: u64,
    /// Clip norm C.
    pub clip_norm: f64,
    /// The events `distill` charges (the shares of stage `distill`): what the ledger reserves
    /// before the training split is read.
    pub events: Vec<DpEvent>,
    /// ε of ALL shares composed (distill and eval stages), by the tight accountant.
    pub epsilon: f64,
    /// Which accountant gave `epsilon`.
    pub accountant: String,
    /// Method parameters.
    pub params: Params,
    /// The DP teacher, when the run trains one (its share is in `shares`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<TeacherPlan>,
    /// Non-private initialisation seed.
    pub seed: u64,
    /// Which dataset metadata the plan read (all public by policy).
    pub public_metadata: Vec<String>,
    /// Warnings for the operator.
    pub warnings: Vec<String>,
}

/// A planned DP teacher ([`super::teacher`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TeacherPlan {
    /// Its parameters.
    pub params: TeacherParams,
    /// Its noise multiplier σ (calibrated to its fraction of the target alone).
    pub noise_multiplier: f64,
    /// Its Poisson sampling rate q.
    pub sampling_rate: f64,
    /// Its DP-SGD steps.
    pub steps: u64,
    /// The model, in words.
    pub model: String,
    /// Its features, in words.
    pub features: String,
    /// Why it is on ("requested" or the default's reason).
    pub reason: String,
}

fn bad(name: &str, why: impl Into<String>) -> Error {
    Error::BadParameter {
        name: name.into(),
        why: why.into(),
    }
}

/// Plan a run from the dataset's public metadata. Reads no pixels, spends nothing.
///
/// # Errors
/// `distill-bad-parameter` (ε, δ, ipc, iterations out of range), `distill-dataset` (no
/// training images, a class without images, images smaller than 8×8), `distill-calibration`.
pub fn plan(meta: &Meta, req: &Request) -> Result<Plan, Error> {
    if req.epsilon.get() <= 0.0 {
        return Err(bad("epsilon", "must be a positive finite number"));
    }
    if !(req.utility_share.is_finite() && (0.0..=0.5).contains(&req.utility_share)) {
        return Err(bad("utility-share", "must be between 0 and 0.5"));
    }
    let (epsilon, delta) = (req.epsilon.get(), req.delta.get());
    if req.ipc == 0 || req.ipc > 1000 {
        return Err(bad("ipc", "must be between 1 and 1000"));
    }
    if req.iterations == Some(0) {
        return Err(bad("iterations", "must be at least 1"));
    }
    let n = meta.train_count;
    let k = meta.classes.len();
    let ds_err = |why: &str| Error::Dataset {
        dataset: meta.name.clone(),
        why: why.into(),
    };
    if n == 0 || k < 2 {
        return Err(ds_err("it needs training images of at least two classes"));
    }
    if meta.shape.h < 8 || meta.shape.w < 8 {
        return Err(ds_err("images must be at least 8x8"));
    }
    let mut warnings = usefulness_warnings(meta, req.ipc);
    if delta >= 1.0 / n as f64 {
        warnings.push(format!(
            "delta {} is not below 1/n = {:.3e}: a mechanism could publish one record outright",
            delta,
            1.0 / n as f64
        ));
    }
    let (method, reason) = match req.method {
        Some(m) => (m, "requested".to_string()),
        None => {
            let (m, why) = Method::default_for(n, k);
            (m, why.to_string())
        }
    };
    let seed = match req.seed {
        Some(s) => s,
        None => u64::from_le_bytes(crate::keys::try_random_bytes::<8>().map_err(|_| Error::Rng)?),
    };
    let utility = utility_share(epsilon * req.utility_share, delta)?.map(|mut u| {
        u.fraction = req.utility_share;
        u
    });
    let teacher = teacher_share(meta, req, epsilon, delta)?;
    let fixed: Vec<DpEvent> = utility
        .iter()
        .chain(teacher.as_ref().map(|t| &t.1))
        .flat_map(|u| u.events.clone())
        .collect();
    let (params, sigma, q, steps, clip, events, eps, accountant) = match method {
        Method::Dm => {
            let mut p = dm::DmParams::defaults(n, k);
            if let Some(it) = req.iterations {
                p.iterations = it;
            }
            p.validate()?;
            let (sigma, q, steps, events, eps, acct) = dm_privacy(&p, epsilon, delta, &fixed)?;
            let clip = p.clip_norm;
            (Params::Dm(p), sigma, q, steps, clip, events, eps, acct)
        }
        Method::Gm => {
            let mut p = gm::GmParams::defaults(n, k, req.ipc);
            if let Some(it) = req.iterations {
                p.outer = it;
            }
            p.validate()?;
            let q = (p.expected_batch as f64 / n as f64).min(1.0);
            let steps = p.steps();
            let sigma = calibrate_main(epsilon, delta, q, steps, &fixed)?;
            let events = vec![DpEvent::poisson_gaussian(q, sigma, steps)];
            let (eps, acct) = composed_epsilon(&events, &fixed, epsilon, delta)?;
            let clip = p.clip_norm;
            (
                Params::Gm(p),
                sigma,
                Some(q),
                steps,
                clip,
                events,
                eps,
                acct,
            )
        }
    };
    let others: Vec<Share> = teacher
        .as_ref()
        .map(|t| t.1.clone())
        .into_iter()
        .chain(utility)
        .collect();
    let shares = shares(method, &events, others, epsilon, delta)?;
    let mut events = events;
    if let Some((_, t)) = &teacher {
        events.extend(t.events.iter().cloned());
    }
    Ok(Plan {
        dataset: meta.name.clone(),
        dataset_fingerprint: meta.fingerprint.clone(),
        records: n,
        classes: meta.classes.clone(),
        shape: meta.shape,
        method,
        method_reason: reason,
        ipc: req.ipc,
        epsilon_target: req.epsilon,
        delta: req.delta,
        shares,
        noise_multiplier: sigma,
        sampling_rate: q,
        steps,
        clip_norm: clip,
        events,
        epsilon: eps,
        accountant,
        params,
        teacher: teacher.map(|t| t.0),
        seed,
        public_metadata: vec![
            "train_count (record count)".into(),
            "class names".into(),
            "image shape".into(),
            "test_count (held-out record count)".into(),
        ],
        warnings,
    })
}

/// Held-out images per class (on average) below which `plan` warns that an evaluation cannot
/// measure much: with fewer, one image moves a class's accuracy by more than 10 points.
pub const MIN_TEST_PER_CLASS: usize = 10;

/// Warnings that a request cannot give a useful result, from public metadata alone (the
/// record counts of the two splits and the number of classes; never per-class counts).
pub fn usefulness_warnings(meta: &Meta, ipc: usize) -> Vec<String> {
    let (n, k, t) = (meta.train_count, meta.classes.len().max(1), meta.test_count);
    let mut w = Vec::new();
    let avg = n as f64 / k as f64;
    if ipc as f64 > avg {
        w.push(format!(
            "--ipc {ipc} is above the average class size ({n} training images / {k} classes = {avg:.1}): the synthetic set would hold more images per class than the real one, so it cannot be smaller than the data it stands for; ask for fewer images per class"
        ));
    }
    if t == 0 {
        w.push(
            "the dataset has no held-out images: `retort eval` cannot measure the run's utility; re-ingest with --test-fraction (e.g. 0.2)".into(),
        );
    } else if t < MIN_TEST_PER_CLASS * k {
        w.push(format!(
            "the held-out split has only {t} images for {k} classes ({:.1} per class on average): an accuracy measured on it is too coarse to judge the run (one image moves it by {:.0} points overall); re-ingest with a larger --test-fraction",
            t as f64 / k as f64,
            100.0 / t as f64
        ));
    }
    w
}

/// σ, q, steps, events, achieved ε (all shares composed) and accountant of a `dm` release.
type DmPrivacy = (f64, Option<f64>, u64, Vec<DpEvent>, f64, String);

fn calibration_failed(epsilon: f64, delta: f64, steps: u64) -> Error {
    Error::Calibration {
        epsilon,
        delta,
        steps,
    }
}

/// The smallest σ for the main release's `steps` Poisson-sampled Gaussian steps at rate `q`
/// such that they, composed with the run's `fixed` other shares, meet the target.
fn calibrate_main(
    epsilon: f64,
    delta: f64,
    q: f64,
    steps: u64,
    fixed: &[DpEvent],
) -> Result<f64, Error> {
    crate::dp::split::noise_multiplier_beside(epsilon, delta, q, steps, fixed)
        .map_err(|_| calibration_failed(epsilon, delta, steps))
}

/// ε (and the accountant reporting it) of `events` composed with the run's other shares.
fn composed_epsilon(
    events: &[DpEvent],
    fixed: &[DpEvent],
    epsilon: f64,
    delta: f64,
) -> Result<(f64, String), Error> {
    let mut all = events.to_vec();
    all.extend(fixed.iter().cloned());
    let steps = events.len() as u64;
    let r = crate::dp::accountant::epsilon(&all, delta)
        .map_err(|_| calibration_failed(epsilon, delta, steps))?;
    Ok((r.epsilon, r.accountant.to_string()))
}

fn dm_privacy(
    p: &dm::DmParams,
    epsilon: f64,
    delta: f64,
    fixed: &[DpEvent],
) -> Result<DmPrivacy, Error> {
    let (sigma, q, steps, events) = match p.sample_rate {
        // One release per net over its own Poisson sample, plus the DP-SGD warm-up's steps
        // (same q and σ): `nets + warm-up` Poisson-sampled steps.
        Some(q) => {
            let steps = p.nets as u64 + p.warmup.as_ref().map_or(0, |w| w.total_steps());
            let sigma = calibrate_main(epsilon, delta, q, steps, fixed)?;
            (
                sigma,
                Some(q),
                steps,
                vec![DpEvent::poisson_gaussian(q, sigma, steps)],
            )
        }
        // One Gaussian release over every record (PLD for one Gaussian = the exact analytic
        // curve, cross-checked in tests).
        None => {
            let sigma = calibrate_main(epsilon, delta, 1.0, 1, fixed)?;
            (sigma, None, 1, vec![DpEvent::gaussian(sigma, 1)])
        }
    };
    let (eps, acct) = composed_epsilon(&events, fixed, epsilon, delta)?;
    Ok((sigma, q, steps, events, eps, acct))
}

/// The held-out utility release: one Gaussian mechanism (sensitivity-normalised) whose ε alone
/// at `delta` is `epsilon_share`; `None` when the share is 0.
fn utility_share(epsilon_share: f64, delta: f64) -> Result<Option<Share>, Error> {
    if epsilon_share <= 0.0 {
        return Ok(None);
    }
    let fail = || calibration_failed(epsilon_share, delta, 1);
    let sigma = crate::dp::calibrate::gaussian_noise_multiplier(epsilon_share, delta, 1)
        .map_err(|_| fail())?;
    let events = vec![DpEvent::gaussian(sigma, 1)];
    let eps = crate::dp::accountant::epsilon(&events, delta)
        .map_err(|_| fail())?
        .epsilon;
    Ok(Some(Share {
        name: UTILITY.into(),
        stage: Stage::Eval,
        fraction: 0.0,
        events,
        epsilon: eps,
        what: "held-out utility figures: per-class correct counts of the evaluation models and \
               per-class test counts, one Gaussian release over the held-out split, charged at \
               `retort eval`"
            .into(),
    }))
}

/// The budget split of a plan: the main release, then the others (the teacher, the utility
/// release) as planned; the main release's fraction is what the others leave.
fn shares(
    method: Method,
    main_events: &[DpEvent],
    others: Vec<Share>,
    epsilon: f64,
    delta: f64,
) -> Result<Vec<Share>, Error> {
    let main_eps = crate::dp::accountant::epsilon(main_events, delta)
        .map_err(|_| calibration_failed(epsilon, delta, 1))?
        .epsilon;
    let mut out = vec![Share {
        name: MAIN.into(),
        stage: Stage::Distill,
        fraction: 1.0 - others.iter().map(|s| s.fraction).sum::<f64>(),
        events: main_events.to_vec(),
        epsilon: main_eps,
        what: format!("the {method} method's release of the training split"),
    }];
    out.extend(others);
    Ok(out)
}

/// The DP teacher's plan and share, when the run trains one: σ calibrated so that its steps
/// alone spend its fraction of the target.
fn teacher_share(
    meta: &Meta,
    req: &Request,
    epsilon: f64,
    delta: f64,
) -> Result<Option<(TeacherPlan, Share)>, Error> {
    let n = meta.train_count;
    let why_not = teacher::unsupported(n, meta.shape);
    let asked = req.teacher.is_some();
    let reason = match (req.teacher.unwrap_or(TEACHER_BY_DEFAULT), &why_not) {
        (false, _) => return Ok(None),
        (true, Some(why)) if asked => return Err(bad("teacher", why.clone())),
        (true, Some(_)) => return Ok(None),
        (true, None) if asked => "requested".to_string(),
        (true, None) => "on by default".to_string(),
    };
    teacher_plan(TeacherParams::defaults(n), n, epsilon, delta, reason).map(Some)
}

/// The teacher's plan and share for `params` on `n` records: σ calibrated so that its steps
/// alone spend `params.fraction` of the target ε.
fn teacher_plan(
    params: TeacherParams,
    n: usize,
    epsilon: f64,
    delta: f64,
    reason: String,
) -> Result<(TeacherPlan, Share), Error> {
    params.validate()?;
    let (q, steps) = (params.sample_rate(n), params.steps(n));
    let eps_alone = epsilon * params.fraction;
    let sigma = crate::dp::calibrate::noise_multiplier(eps_alone, delta, q, steps)
        .map_err(|_| calibration_failed(eps_alone, delta, steps))?;
    let events = teacher::events(&params, n, sigma);
    let eps = crate::dp::accountant::epsilon(&events, delta)
        .map_err(|_| calibration_failed(eps_alone, delta, steps))?
        .epsilon;
    let share = Share {
        name: TEACHER.into(),
        stage: Stage::Distill,
        fraction: params.fraction,
        events,
        epsilon: eps,
        what: format!(
            "the DP teacher ({}) trained on the training split; the package carries only the \
             soft labels computed from it",
            teacher::MODEL
        ),
    };
    let plan = TeacherPlan {
        params,
        noise_multiplier: sigma,
        sampling_rate: q,
        steps,
        model: teacher::MODEL.into(),
        features: teacher::FEATURES.into(),
        reason,
    };
    Ok((plan, share))
}

impl Plan {
    /// Re-derive the privacy fields (σ, q, steps, events, ε) after `dm` parameters were
    /// changed programmatically (measurement harnesses); gm plans are unchanged.
    ///
    /// # Errors
    /// `distill-bad-parameter`, `distill-calibration`.
    pub fn recalibrate(&mut self) -> Result<(), Error> {
        if let Params::Dm(p) = &self.params {
            p.validate()?;
            let fixed: Vec<DpEvent> = self
                .shares
                .iter()
                .filter(|s| s.name != MAIN)
                .flat_map(|s| s.events.clone())
                .collect();
            let (epsilon, delta) = (self.epsilon_target.get(), self.delta.get());
            let (sigma, q, steps, events, eps, acct) = dm_privacy(p, epsilon, delta, &fixed)?;
            self.clip_norm = p.clip_norm;
            self.noise_multiplier = sigma;
            self.sampling_rate = q;
            self.steps = steps;
            let others: Vec<Share> = self
                .shares
                .iter()
                .filter(|s| s.name != MAIN)
                .cloned()
                .collect();
            let mut all = events.clone();
            for s in others.iter().filter(|s| s.stage == Stage::Distill) {
                all.extend(s.events.iter().cloned());
            }
            self.shares = shares(self.method, &events, others, epsilon, delta)?;
            self.events = all;
            self.epsilon = eps;
            self.accountant = acct;
        }
        Ok(())
    }

    /// Replace the teacher's parameters (or drop the teacher with `None`) and re-derive its
    /// share and the main release's calibration (measurement harnesses).
    ///
    /// # Errors
    /// `distill-bad-parameter`, `distill-calibration`.
    pub fn set_teacher(&mut self, params: Option<TeacherParams>) -> Result<(), Error> {
        let (epsilon, delta) = (self.epsilon_target.get(), self.delta.get());
        self.shares.retain(|s| s.name != TEACHER);
        self.teacher = None;
        if let Some(params) = params {
            let (t, share) =
                teacher_plan(params, self.records, epsilon, delta, "requested".into())?;
            // The teacher's share sits before the utility share, as `plan` orders them.
            let at = self.shares.iter().position(|s| s.name == UTILITY);
            self.shares.insert(at.unwrap_or(self.shares.len()), share);
            self.teacher = Some(t);
        }
        self.recalibrate()
    }

    /// The hyper-parameters as JSON (for run.json and the manifest).
    pub fn hyperparameters(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.params).expect("invariant: params serialize");
        if let (Some(t), Some(m)) = (&self.teacher, v.as_object_mut()) {
            m.insert(
                "teacher".into(),
                serde_json::json!({
                    "model": t.model,
                    "features": t.features,
                    "params": t.params,
                    "noise_multiplier": t.noise_multiplier,
                    "sampling_rate": t.sampling_rate,
                    "steps": t.steps,
                }),
            );
        }
        v
    }

    /// Estimated run time in seconds, from timing a few units of the run's work on random
    /// (non-private) images of the planned shape: the method's releases and synthesis, and the
    /// DP teacher's training and its guidance of the synthesis when the plan has one.
    ///
    /// # Errors
    /// `distill-compute`.
    pub fn estimate_seconds(&self) -> Result<f64, Error> {
        let k = self.classes.len();
        let (method, guided) = match &self.params {
            Params::Dm(p) => (
                dm::estimate_seconds(p, self.shape, self.records, k, self.ipc)?,
                // The teacher guides the DM synthesis (every iteration, every image).
                Some((k * self.ipc, p.iterations)),
            ),
            Params::Gm(p) => (gm::estimate_seconds(p, self)?, None),
        };
        let teacher = match &self.teacher {
            Some(t) => teacher::estimate_seconds(&t.params, self.shape, self.records, k, guided)?,
            None => 0.0,
        };
        Ok(method + teacher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(n: usize) -> Meta {
        let mut m = Meta::for_test(
            "d",
            Shape { c: 1, h: 28, w: 28 },
            vec![n / 3; 3],
            vec![10; 3],
        );
        m.classes = vec!["a".into(), "b".into(), "c".into()];
        m.train_count = n;
        m
    }

    fn eps(x: f64) -> Epsilon {
        Epsilon::new(x).unwrap()
    }

    fn req(method: Option<Method>) -> Request {
        Request {
            epsilon: eps(1.0),
            delta: Delta::new(1e-5).unwrap(),
            utility_share: 0.0,
            // The main release alone; the teacher's tests ask for the default explicitly.
            teacher: Some(false),
            ipc: 10,
            method,
            iterations: None,
            seed: Some(3),
        }
    }

    #[test]
    fn default_dm_plan_is_one_poisson_sampled_release_per_net() {
        let p = plan(&meta(30_000), &req(None)).unwrap();
        assert_eq!(p.method, Method::Dm);
        let Params::Dm(dm) = &p.params else {
            panic!("dm plan expected")
        };
        let q = dm.sample_rate.expect("per-net release by default");
        assert_eq!(p.sampling_rate, Some(q));
        // 10,000 records per class: a large set, so the DP-SGD warm-up is on and its steps
        // are accounted with the releases.
        let warm = dm.warmup.as_ref().expect("warm-up on large sets");
        assert_eq!(p.steps, dm.nets as u64 + warm.total_steps());
        let small = plan(&meta(3_000), &req(None)).unwrap();
        let Params::Dm(sdm) = &small.params else {
            panic!("dm plan expected")
        };
        assert!(sdm.warmup.is_none());
        assert_eq!(small.steps, sdm.nets as u64);
        // Large sets start the synthesis from smoother noise than mid-sized ones, and get a
        // dark floor on the finished images.
        assert!(dm.init_smooth > sdm.init_smooth && sdm.init_smooth > 0.0);
        assert!(dm.floor > 0.0 && sdm.floor == 0.0);
        // Both match random Fourier features and synthesise at length (large sets longest);
        // sets of at most 2,000 images go without Fourier features but keep the smooth start
        // and the synthesis length of the mid-sized sets (the demo's speed is its own choice:
        // `demo --iterations`).
        assert!(dm.rff > 0 && sdm.rff > 0);
        assert!(dm.iterations >= sdm.iterations && sdm.iterations >= 1500);
        let demo = plan(&meta(1_200), &req(None)).unwrap();
        let Params::Dm(ddm) = &demo.params else {
            panic!("dm plan expected")
        };
        assert_eq!(ddm.rff, 0);
        assert_eq!(
            (
                ddm.init_smooth,
                ddm.init_std,
                ddm.iterations,
                ddm.nets_per_iteration
            ),
            (
                sdm.init_smooth,
                sdm.init_std,
                sdm.iterations,
                sdm.nets_per_iteration
            )
        );
        assert_eq!(
            p.events,
            vec![DpEvent::poisson_gaussian(q, p.noise_multiplier, p.steps)]
        );
        assert!(p.epsilon <= 1.0 + 1e-9 && p.epsilon > 0.99, "{}", p.epsilon);
    }

    #[test]
    fn one_shot_dm_plan_is_one_gaussian_calibrated_to_the_target() {
        let mut p = plan(&meta(30_000), &req(None)).unwrap();
        if let Params::Dm(dm) = &mut p.params {
            dm.sample_rate = None;
            dm.warmup = None;
        }
        p.recalibrate().unwrap();
        assert_eq!(p.method, Method::Dm);
        assert_eq!(p.sampling_rate, None);
        assert_eq!(p.steps, 1);
        assert_eq!(p.events, vec![DpEvent::gaussian(p.noise_multiplier, 1)]);
        assert!(p.epsilon <= 1.0 + 1e-9, "{}", p.epsilon);
        // The tight accountant agrees with the exact analytic curve of one Gaussian mechanism.
        let exact = crate::dp::analytic::gaussian_sigma(1.0, 1e-5);
        assert!(
            (p.noise_multiplier - exact).abs() / exact < 0.02,
            "sigma {} vs analytic {exact}",
            p.noise_multiplier
        );
        assert!(
            p.noise_multiplier >= exact * (1.0 - 1e-3),
            "calibration below the exact curve"
        );
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn budget_split_composes_to_the_target_share_by_share() {
        // See: issue 19 (budget split). A utility share is planned beside the main release;
        // the main release is calibrated so that both compose to the target.
        for method in [Method::Dm, Method::Gm] {
            let alone = plan(&meta(30_000), &req(Some(method))).unwrap();
            let p = plan(
                &meta(30_000),
                &Request {
                    utility_share: 0.1,
                    teacher: Some(false),
                    ..req(Some(method))
                },
            )
            .unwrap();
            assert_eq!(p.shares.len(), 2);
            assert_eq!(p.shares[0].name, MAIN);
            assert_eq!(p.shares[0].stage, Stage::Distill);
            assert_eq!(p.shares[0].events, p.events);
            let u = &p.shares[1];
            assert_eq!((u.name.as_str(), u.stage), (UTILITY, Stage::Eval));
            assert!((u.epsilon - 0.1).abs() < 0.005, "{}", u.epsilon);
            assert!((p.shares[0].fraction + u.fraction - 1.0).abs() < 1e-12);
            let all = crate::dp::split::composed(&p.shares, 1e-5).unwrap().epsilon;
            assert!(all <= 1.0 + 1e-9 && all > 0.99, "{all}");
            assert!((p.epsilon - all).abs() < 1e-9);
            // The main release pays for the share with a little more noise.
            assert!(p.noise_multiplier > alone.noise_multiplier);
            assert!(p.noise_multiplier < alone.noise_multiplier * 1.05);
            assert!(p.shares[0].epsilon < 1.0);
        }
        // A plan without a utility share has one share: the main release.
        let p = plan(&meta(30_000), &req(None)).unwrap();
        assert_eq!(p.shares.len(), 1);
        assert!((p.shares[0].epsilon - p.epsilon).abs() < 1e-9);
    }

    #[test]
    fn gm_plan_is_poisson_sampled_steps() {
        let p = plan(&meta(30_000), &req(Some(Method::Gm))).unwrap();
        let q = p.sampling_rate.unwrap();
        assert!((q - 256.0 / 30_000.0).abs() < 1e-12);
        assert_eq!(
            p.events,
            vec![DpEvent::poisson_gaussian(q, p.noise_multiplier, p.steps)]
        );
        assert!(p.epsilon <= 1.0 + 1e-9);
    }

    #[test]
    fn per_net_dm_plan_is_poisson_sampled_steps_one_per_net() {
        let mut p = plan(&meta(30_000), &req(Some(Method::Dm))).unwrap();
        let Params::Dm(dm) = &mut p.params else {
            panic!("dm plan expected")
        };
        dm.sample_rate = Some(0.1);
        dm.nets = 40;
        dm.warmup = None;
        p.recalibrate().unwrap();
        assert_eq!(p.sampling_rate, Some(0.1));
        assert_eq!(p.steps, 40);
        assert_eq!(
            p.events,
            vec![DpEvent::poisson_gaussian(0.1, p.noise_multiplier, 40)]
        );
        assert!(p.epsilon <= 1.0 + 1e-9 && p.epsilon > 0.99, "{}", p.epsilon);
        // Amplification by sampling: 40 releases at q = 0.1 need less noise per release than
        // 40 full-data releases composed.
        let full = crate::dp::calibrate::noise_multiplier(1.0, 1e-5, 1.0, 40).unwrap();
        assert!(p.noise_multiplier < full);
        // A bad rate is refused.
        if let Params::Dm(dm) = &mut p.params {
            dm.sample_rate = Some(1.5);
        }
        assert!(p.recalibrate().is_err());
    }

    #[test]
    fn dp_sgd_warm_up_steps_are_accounted_with_the_releases() {
        let mut p = plan(&meta(30_000), &req(Some(Method::Dm))).unwrap();
        let Params::Dm(dm) = &mut p.params else {
            panic!("dm plan expected")
        };
        dm.sample_rate = Some(0.1);
        dm.nets = 40;
        dm.warmup = Some(dm::Warmup {
            trajectories: 2,
            steps: 30,
            lr: 0.5,
            momentum: 0.9,
            trained_fraction: 0.5,
            ce_weight: 0.0,
        });
        p.recalibrate().unwrap();
        assert_eq!(p.steps, 40 + 2 * 30);
        assert_eq!(
            p.events,
            vec![DpEvent::poisson_gaussian(0.1, p.noise_multiplier, 100)]
        );
        assert!(p.epsilon <= 1.0 + 1e-9 && p.epsilon > 0.99, "{}", p.epsilon);
        // More steps at the same target need more noise than the releases alone.
        let releases_only = crate::dp::calibrate::noise_multiplier(1.0, 1e-5, 0.1, 40).unwrap();
        assert!(p.noise_multiplier > releases_only);
        // The warm-up needs per-net releases.
        if let Params::Dm(dm) = &mut p.params {
            dm.sample_rate = None;
        }
        assert!(p.recalibrate().is_err());
    }

    #[test]
    fn fail_bad_requests() {
        let m = meta(300);
        for r in [
            Request {
                epsilon: eps(0.0),
                ..req(None)
            },
            Request {
                utility_share: 0.9,
                ..req(None)
            },
            Request {
                utility_share: f64::NAN,
                ..req(None)
            },
            Request {
                ipc: 0,
                ..req(None)
            },
            Request {
                iterations: Some(0),
                ..req(None)
            },
        ] {
            assert!(
                matches!(plan(&m, &r), Err(Error::BadParameter { .. })),
                "{r:?}"
            );
        }
        let mut tiny = meta(0);
        tiny.train_count = 0;
        assert!(matches!(
            plan(&tiny, &req(None)),
            Err(Error::Dataset { .. })
        ));
        // delta not below 1/n is flagged.
        let p = plan(
            &meta(300),
            &Request {
                delta: Delta::new(0.01).unwrap(),
                ..req(None)
            },
        )
        .unwrap();
        assert_eq!(p.warnings.len(), 1);
    }

    /// See: issue 20 (honest output): ipc above the class size and a held-out split too small
    /// to evaluate are flagged from public counts alone.
    #[test]
    fn plan_warns_when_the_request_cannot_be_useful() {
        assert!(usefulness_warnings(&meta(300), 10).is_empty());
        // 300 / 3 = 100 per class: ipc 101 is above it.
        let w = usefulness_warnings(&meta(300), 101);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("average class size") && w[0].contains("100.0"),
            "{w:?}"
        );
        assert!(usefulness_warnings(&meta(300), 100).is_empty());
        let mut m = meta(300);
        m.test_count = 0;
        assert!(usefulness_warnings(&m, 10)[0].contains("no held-out images"));
        m.test_count = 2;
        let w = usefulness_warnings(&m, 10);
        assert!(w[0].contains("only 2 images for 3 classes"), "{w:?}");
        m.test_count = 3 * MIN_TEST_PER_CLASS;
        assert!(usefulness_warnings(&m, 10).is_empty());
        // The plan carries them.
        let mut m = meta(300);
        m.test_count = 2;
        let p = plan(
            &m,
            &Request {
                ipc: 200,
                ..req(None)
            },
        )
        .unwrap();
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    }

    /// A tiny two-class set of 40 12x12 images and a plan for it (`iterations`, ipc 2).
    fn tiny(method: Method, iterations: usize) -> (Plan, crate::dataset::Images) {
        let mut m = meta(40);
        m.shape = Shape { c: 1, h: 12, w: 12 };
        m.classes = vec!["a".into(), "b".into()];
        let p = plan(
            &m,
            &Request {
                iterations: Some(iterations),
                ipc: 2,
                ..req(Some(method))
            },
        )
        .unwrap();
        let mut train = crate::dataset::Images::new(m.shape);
        for i in 0..40u32 {
            let px: Vec<u8> = (0..144u32)
                .map(|j| ((i * 7 + j * (i % 2 + 1)) % 256) as u8)
                .collect();
            train.push(&px, i % 2);
        }
        (p, train)
    }

    #[test]
    fn gm_runs_end_to_end_on_a_tiny_set() {
        // 2 classes of 12x12 images; a tiny network and few steps: checks the mechanics
        // (sampling, per-class clipped sums, noise, matching, shapes), not utility.
        let (mut p, train) = tiny(Method::Gm, 2);
        if let Params::Gm(g) = &mut p.params {
            g.width = 4;
            g.depth = 2;
            g.inner = 2;
            g.net_steps = 2;
        }
        let mut allowance = crate::dp::mechanism::Allowance::new(&p.events).unwrap();
        let out = super::super::run(
            &p,
            &crate::dp::mechanism::Records::new(&train),
            &mut allowance,
            &crate::progress::silent,
        )
        .unwrap();
        assert_eq!(out.synthetic.labels, vec![0, 0, 1, 1]);
        assert_eq!(out.synthetic.data.len(), 4 * 144);
        assert!(out.synthetic.data.iter().all(|x| (0.0..=1.0).contains(x)));
        assert_eq!(out.events, p.events);
        // The images moved away from their noise start.
        assert!(out.diagnostics["matching_distance_last"]
            .as_f64()
            .unwrap()
            .is_finite());
    }

    #[test]
    fn dm_with_warm_up_and_class_term_runs_end_to_end_on_a_tiny_set() {
        // The warm-up path of `run` (DP-SGD snapshots as feature nets, the class term in the
        // synthesis): mechanics and accounting, not utility.
        let (mut p, train) = tiny(Method::Dm, 3);
        if let Params::Dm(d) = &mut p.params {
            d.nets = 4;
            d.width = 4;
            d.depth = 2;
            d.warmup = Some(dm::Warmup {
                trajectories: 2,
                steps: 3,
                lr: 0.5,
                momentum: 0.9,
                trained_fraction: 0.5,
                ce_weight: 0.5,
            });
        }
        p.recalibrate().unwrap();
        assert_eq!(p.steps, 4 + 2 * 3);
        let mut allowance = crate::dp::mechanism::Allowance::new(&p.events).unwrap();
        let out = super::super::run(
            &p,
            &crate::dp::mechanism::Records::new(&train),
            &mut allowance,
            &crate::progress::silent,
        )
        .unwrap();
        assert_eq!(out.synthetic.labels, vec![0, 0, 1, 1]);
        assert!(out.synthetic.data.iter().all(|x| (0.0..=1.0).contains(x)));
        assert_eq!(
            out.events,
            vec![DpEvent::poisson_gaussian(
                p.sampling_rate.unwrap(),
                p.noise_multiplier,
                10
            )]
        );
        assert!(out.diagnostics["matching_loss_last"]
            .as_f64()
            .unwrap()
            .is_finite());
    }

    /// A request with the teacher left to the default.
    fn dflt() -> Request {
        Request {
            teacher: None,
            ..req(None)
        }
    }

    /// A request for the teacher.
    fn on() -> Request {
        Request {
            teacher: Some(true),
            ..req(None)
        }
    }

    /// Off by default (`TEACHER_BY_DEFAULT`); asked for, the teacher is its own share of the
    /// split and is composed with the main release to the target; `--no-teacher` drops it.
    #[test]
    fn teacher_share_is_planned_and_composed_with_the_main_release() {
        let d = plan(&meta(30_000), &dflt()).unwrap();
        assert_eq!(d.teacher.is_some(), TEACHER_BY_DEFAULT);
        let big = plan(&meta(30_000), &on()).unwrap();
        let t = big.teacher.as_ref().expect("teacher asked for");
        let names: Vec<&str> = big.shares.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [MAIN, TEACHER]);
        let share = &big.shares[1];
        assert_eq!(
            share.events,
            vec![DpEvent::poisson_gaussian(
                t.sampling_rate,
                t.noise_multiplier,
                t.steps
            )]
        );
        assert!((share.epsilon - 0.5).abs() < 0.01, "{}", share.epsilon);
        // The charged events are the main release's and the teacher's; all composed meet 1.
        assert!(big.events.contains(&share.events[0]));
        assert!(
            big.epsilon <= 1.0 + 1e-9 && big.epsilon > 0.95,
            "{}",
            big.epsilon
        );
        assert!((big.shares[0].fraction - 0.5).abs() < 1e-12);
        // Without it the main release gets more of the budget: less noise.
        let off = plan(
            &meta(30_000),
            &Request {
                teacher: Some(false),
                ..req(None)
            },
        )
        .unwrap();
        assert!(off.teacher.is_none() && off.shares.len() == 1);
        assert!(off.noise_multiplier < big.noise_multiplier);
        // Small sets too, when asked.
        let forced = plan(
            &meta(3_000),
            &Request {
                teacher: Some(true),
                ..req(None)
            },
        )
        .unwrap();
        assert!(forced.teacher.is_some());
        // The teacher's parameters are in the hyper-parameters the manifest publishes.
        assert!(big.hyperparameters()["teacher"]["steps"].as_u64() == Some(t.steps));
        // With a utility share too, all three compose to the target.
        let three = plan(
            &meta(30_000),
            &Request {
                utility_share: 0.1,
                ..on()
            },
        )
        .unwrap();
        let names: Vec<&str> = three.shares.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [MAIN, TEACHER, UTILITY]);
        assert!(three.epsilon <= 1.0 + 1e-9, "{}", three.epsilon);
        assert!((three.shares[2].fraction - 0.1).abs() < 1e-12);
        assert!((three.shares[0].fraction - 0.4).abs() < 1e-12);
    }

    /// A feature table beyond the teacher's memory cap: refused when asked for, off by default.
    #[test]
    fn fail_a_teacher_whose_features_do_not_fit() {
        let m = meta(200_000);
        let e = plan(
            &m,
            &Request {
                teacher: Some(true),
                ..req(None)
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("teacher"), "{e}");
        assert!(plan(&m, &dflt()).unwrap().teacher.is_none());
    }
}
