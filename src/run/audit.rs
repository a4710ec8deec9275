//! The audit-only handle of the run lifecycle: `retort privacy audit` runs the real
//! distillation code once, without a reservation, on a dataset ingested with `--audit-only`,
//! with canaries planted among its records, and turns how well an attacker tells the
//! included canaries from the others into an empirical lower bound on ε
//! ([`crate::dp::one_run`], Steinke, Nasr & Jagielski 2023).
//!
//! ```text
//! AuditOnly::open(ws, name) ── refused (exit 3) unless the dataset is marked audit-only
//!   ─▶ m canaries (OS-keyed patterns, a class of their own), each included with probability ½
//!      (OS-keyed coin flips)
//!   ─▶ distill::plan on the public metadata (record count fixed before the coin flips)
//!   ─▶ distill::run over data + included canaries: every release goes through the one
//!      mechanism, whose white-box observer (mechanism::Probe) scores every canary against the
//!      released noisy sums
//!   ─▶ black-box score from the synthetic set alone ─▶ ε lower bound, AUROC, TPR@1%FPR per
//!      score ─▶ audits/<id>.json + the audit-log record
//! ```
//!
//! # Canaries
//! Each canary is an out-of-distribution binary pattern: white noise blurred by a Gaussian of
//! [`CANARY_BLUR`] pixels and thresholded at zero, so pixels are 0 or 255 in blobs a few
//! pixels wide. Blobs survive the small shifts, scalings and rotations of the augmentations
//! (a pattern of independent pixels would not), and independent patterns are nearly
//! orthogonal to one another and to centred photographs, in pixels and in the features of
//! random ConvNets. They get a class of their own (`canary`), so their rows enter a sum with
//! no data rows in it (the neighbouring relation — add or remove one image of any label — is
//! unchanged). A canary's white-box score is the joint ridge estimate of its inclusion from
//! every released sum ([`crate::dp::mechanism`]'s `Probe`).
//!
//! # Privacy
//! Nothing here touches a private dataset: [`AuditOnly::open`] refuses any dataset not marked
//! audit-only (ingested by the operator with `--audit-only`, audited), and such a dataset can
//! never be planned, distilled or packaged. The audit spends no budget (there is no ledger
//! reservation; the mechanism's allowance is built from the plan's events so it still runs
//! exactly the planned releases). The inclusion coin flips and the canaries come from the OS,
//! never from a seed.

use std::path::PathBuf;
use std::time::Instant;

use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Error;
use crate::audit::Session;
use crate::dataset::{FloatImages, Images, Shape, Split, Stored};
use crate::distill::{self, Method, Request};
use crate::dp::mechanism::{Allowance, Probe, Records};
use crate::dp::one_run::{self, ScoreAudit};
use crate::dp::{accountant, Delta, Epsilon};
use crate::progress::Sink;
use crate::workspace::Workspace;

/// Default number of canaries (see docs/privacy.md, "Empirical audit": with 1,000 canaries
/// the largest bound any audit can show at 95 % is about 5.4 with the union over the
/// guess counts).
pub const DEFAULT_CANARIES: usize = 1000;
/// Blur (pixels) of the canary patterns before thresholding.
pub const CANARY_BLUR: f64 = 1.5;
/// Confidence of the reported bounds.
pub const CONFIDENCE: f64 = 0.95;
/// dm synthesis iterations of an audit unless `--iterations` says otherwise: the white-box
/// score reads only the releases, and the full default synthesis (1500 iterations over the
/// canaries' class too) would take an audit past ten minutes on two cores.
pub const AUDIT_DM_ITERATIONS: usize = 150;
/// Name of the canaries' class.
pub const CANARY_CLASS: &str = "canary";

/// What to audit.
#[derive(Debug, Clone)]
pub struct AuditRequest {
    /// The claimed ε the run is planned for.
    pub epsilon: Epsilon,
    /// δ.
    pub delta: Delta,
    /// Method (`None`: the default for the dataset).
    pub method: Option<Method>,
    /// Canaries planted (each included with probability ½).
    pub canaries: usize,
    /// Synthetic images per class of the run.
    pub ipc: usize,
    /// Synthesis (dm) or outer (gm) iterations; `None`: the method's default.
    pub iterations: Option<usize>,
}

/// One score's result, named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedScore {
    /// `white-box` or `black-box`.
    pub score: String,
    /// The audit of that score.
    #[serde(flatten)]
    pub audit: ScoreAudit,
}

/// The result of one privacy audit (also `audits/<id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditResult {
    /// Audit id.
    pub id: String,
    /// The dataset audited.
    pub dataset: String,
    /// Method.
    pub method: String,
    /// The claimed ε (the run's target).
    pub epsilon: f64,
    /// ε of the run's events by the accountants (at most the claimed ε).
    pub epsilon_accounted: f64,
    /// δ.
    pub delta: f64,
    /// Canaries planted.
    pub canaries: usize,
    /// How many were included (public: audit-only data).
    pub included: usize,
    /// Confidence of the bounds.
    pub confidence: f64,
    /// Mechanism releases the white-box observer saw.
    pub releases: u64,
    /// White-box, then black-box.
    pub scores: Vec<NamedScore>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// RFC 3339 time of the audit.
    pub created: String,
}

/// An audit-only dataset, opened: the only way to run the distillation code without a
/// reservation.
#[derive(Debug)]
pub struct AuditOnly<'w> {
    ws: &'w Workspace,
    stored: Stored,
}

impl<'w> AuditOnly<'w> {
    /// Open dataset `name` for auditing.
    ///
    /// # Errors
    /// `run-not-audit-only` (exit 3) for a dataset not ingested with `--audit-only`; dataset
    /// errors.
    pub fn open(ws: &'w Workspace, name: &str) -> Result<AuditOnly<'w>, Error> {
        let stored = crate::dataset::open(ws, name)?;
        if !stored.meta.audit_only {
            return Err(Error::NotAuditOnly {
                dataset: stored.meta.name.clone(),
            });
        }
        Ok(AuditOnly { ws, stored })
    }

    /// Run the audit: plant canaries, distill once, score, bound. Logs the intent before
    /// reading the dataset and puts the result in the session's final record; writes
    /// `audits/<id>.json`. Spends no budget.
    ///
    /// # Errors
    /// `run-audit-parameter`, distill planning and run errors, dataset, audit and I/O errors.
    pub fn audit(
        self,
        req: &AuditRequest,
        session: &mut Session,
        sink: Sink<'_>,
    ) -> Result<(AuditResult, PathBuf), Error> {
        let t0 = Instant::now();
        let m = req.canaries;
        if !(20..=100_000).contains(&m) {
            return Err(Error::AuditParameter {
                name: "canaries",
                why: format!("{m} is not between 20 and 100000"),
            });
        }
        let meta = &self.stored.meta;
        let k = meta.classes.len();
        // Plan on public values only: the record count is fixed at data + m/2 before the coin
        // flips, so no parameter depends on which canaries were included.
        let mut pmeta = meta.clone();
        pmeta.classes.push(CANARY_CLASS.into());
        pmeta.train_count = meta.train_count + m / 2;
        pmeta.per_class_train.push(m / 2);
        let request = Request {
            epsilon: req.epsilon,
            delta: req.delta,
            utility_share: 0.0,
            teacher: Some(false),
            ipc: req.ipc,
            method: req.method,
            iterations: req.iterations,
            seed: None,
        };
        let mut plan = distill::plan(&pmeta, &request)?;
        // dm's synthesis is post-processing: only the black-box score depends on its length,
        // so unless asked the audit runs a short one (the releases are the planned ones).
        if let (None, distill::plan::Params::Dm(p)) = (req.iterations, &mut plan.params) {
            p.iterations = p.iterations.min(AUDIT_DM_ITERATIONS);
        }
        let delta = plan.delta.get();
        let accounted = accountant::epsilon(&plan.events, delta)?.epsilon;
        let id = crate::workspace::new_id("audit");
        session.set_object(&meta.name);
        session.detail("audit", id.clone());
        session.detail("dataset", meta.name.clone());
        session.detail("method", plan.method.as_str());
        session.detail("epsilon", req.epsilon.get());
        session.detail("delta", delta);
        session.detail("canaries", m as u64);
        session.intent(
            "privacy.audit",
            &meta.name,
            json!({
                "audit": id,
                "method": plan.method.as_str(),
                "epsilon": req.epsilon.get(),
                "epsilon_accounted": accounted,
                "delta": delta,
                "canaries": m,
                "events": plan.events,
                "budget": "none: audit-only dataset, no reservation",
            }),
        )?;
        // Canaries and coin flips from the OS.
        let mut rng = os_rng()?;
        let canaries = make_canaries(meta.shape, m, k as u32, &mut rng);
        let included: Vec<bool> = (0..m).map(|_| rng.gen::<bool>()).collect();
        let mut train = self.stored.load(Split::Train)?;
        let first = train.len();
        let planted: Vec<usize> = (0..m).filter(|&j| included[j]).collect();
        for &j in &planted {
            train.push(canaries.image(j), k as u32);
        }
        plan.records = train.len();
        let probe = Probe::new(canaries.clone(), first, planted);
        let mut allowance = Allowance::new(&plan.events)?;
        let outcome = distill::run(
            &plan,
            &Records::probed(&train, &probe),
            &mut allowance,
            sink,
        )?;
        drop(train);
        let (white, releases) = probe.scores();
        let black = black_box_scores(&canaries, &outcome.synthetic, k as u32);
        let scores = vec![
            NamedScore {
                score: "white-box".into(),
                audit: one_run::audit(&white, &included, delta, CONFIDENCE),
            },
            NamedScore {
                score: "black-box".into(),
                audit: one_run::audit(&black, &included, delta, CONFIDENCE),
            },
        ];
        let result = AuditResult {
            id: id.clone(),
            dataset: meta.name.clone(),
            method: plan.method.as_str().into(),
            epsilon: req.epsilon.get(),
            epsilon_accounted: accounted,
            delta,
            canaries: m,
            included: included.iter().filter(|&&b| b).count(),
            confidence: CONFIDENCE,
            releases,
            scores,
            seconds: t0.elapsed().as_secs_f64(),
            created: crate::workspace::now_rfc3339(),
        };
        let dir = self.ws.root().join("audits");
        crate::workspace::create_dir_all(&dir)?;
        let path = dir.join(format!("{id}.json"));
        let bytes = serde_json::to_vec_pretty(&result).expect("invariant: result serializes");
        crate::workspace::atomic_write(&path, &bytes)?;
        session.detail("epsilon_accounted", accounted);
        session.detail("releases", releases);
        session.detail(
            "scores",
            serde_json::to_value(&result.scores).expect("invariant: scores serialize"),
        );
        session.detail("seconds", result.seconds);
        Ok((result, path))
    }
}

fn os_rng() -> Result<ChaCha20Rng, Error> {
    let seed = zeroize::Zeroizing::new(
        crate::keys::try_random_bytes::<32>().map_err(|_| crate::dp::Error::Rng)?,
    );
    Ok(ChaCha20Rng::from_seed(*seed))
}

/// `m` canary images of `shape` labelled `label`: per channel, white noise blurred by a
/// Gaussian of [`CANARY_BLUR`] pixels, thresholded at zero (0 or 255).
pub(crate) fn make_canaries(shape: Shape, m: usize, label: u32, rng: &mut impl Rng) -> Images {
    let (h, w) = (shape.h, shape.w);
    let kernel = gaussian_kernel(CANARY_BLUR);
    let r = kernel.len() / 2;
    let mut out = Images::new(shape);
    let mut px = vec![0u8; shape.len()];
    for _ in 0..m {
        for ch in 0..shape.c {
            let noise: Vec<f64> = (0..h * w)
                .map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal))
                .collect();
            // Separable blur with reflection at the borders.
            let at = |i: isize, n: usize| -> usize {
                let n = n as isize;
                let j = if i < 0 {
                    -i - 1
                } else if i >= n {
                    2 * n - i - 1
                } else {
                    i
                };
                j.clamp(0, n - 1) as usize
            };
            let mut tmp = vec![0f64; h * w];
            for y in 0..h {
                for x in 0..w {
                    tmp[y * w + x] = kernel
                        .iter()
                        .enumerate()
                        .map(|(t, kv)| {
                            kv * noise[y * w + at(x as isize + t as isize - r as isize, w)]
                        })
                        .sum();
                }
            }
            for y in 0..h {
                for x in 0..w {
                    let v: f64 = kernel
                        .iter()
                        .enumerate()
                        .map(|(t, kv)| {
                            kv * tmp[at(y as isize + t as isize - r as isize, h) * w + x]
                        })
                        .sum();
                    px[ch * h * w + y * w + x] = if v > 0.0 { 255 } else { 0 };
                }
            }
        }
        out.push(&px, label);
    }
    out
}

fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    k.into_iter().map(|v| v / s).collect()
}

/// The black-box score of every canary, from the synthetic set alone: the largest cosine, in
/// pixel space and centred on the mean canary, between the canary and a synthetic image of
/// the canaries' class (0 when that class has no synthetic image).
pub(crate) fn black_box_scores(canaries: &Images, synthetic: &FloatImages, label: u32) -> Vec<f64> {
    let d = canaries.shape.len();
    let n = canaries.len();
    let mut mean = vec![0f64; d];
    let rows: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            canaries
                .image(j)
                .iter()
                .map(|&v| v as f64 / 255.0)
                .collect()
        })
        .collect();
    for r in &rows {
        mean.iter_mut()
            .zip(r)
            .for_each(|(a, b)| *a += b / n.max(1) as f64);
    }
    let centred = |v: &[f64]| -> Vec<f64> {
        let c: Vec<f64> = v.iter().zip(&mean).map(|(a, b)| a - b).collect();
        let norm = c.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        c.into_iter().map(|x| x / norm).collect()
    };
    let syn: Vec<Vec<f64>> = (0..synthetic.labels.len())
        .filter(|&i| synthetic.labels[i] == label)
        .map(|i| {
            let v: Vec<f64> = synthetic.data[i * d..(i + 1) * d]
                .iter()
                .map(|&x| x as f64)
                .collect();
            centred(&v)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let c = centred(r);
            syn.iter()
                .map(|s| c.iter().zip(s).map(|(a, b)| a * b).sum::<f64>())
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .map(|s| if s.is_finite() { s } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests;
