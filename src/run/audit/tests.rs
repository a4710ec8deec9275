//! Proof of power of the privacy audit: a deliberately flawed mechanism (noise far below the
//! calibrated σ, or clipping skipped) must make the one-run lower bound exceed the claimed ε,
//! and the sound mechanism must not — at 99.9 % confidence, so the tests are not flaky (the
//! sound one fails with probability at most 0.1 % if the mechanism is what the accountant
//! says). Small and fast: 256 canaries of 16×16 pixels, one release.

use rand_chacha::rand_core::SeedableRng;

use super::*;
use crate::dp::mechanism::{Batch, Flaw, GaussianSum, Grouping, Noise, Sampling};
use crate::dp::{ClipNorm, NoiseMultiplier};

const SIDE: usize = 16;
const D: usize = SIDE * SIDE;
const CLAIMED: f64 = 1.0;
const DELTA: f64 = 1e-5;

/// Canary `j` = row `j` of the Sylvester Hadamard matrix of order 256 as pixels (255 for +1,
/// 0 for −1): once centred, the canaries are exactly orthogonal, the audit's best case.
fn hadamard_canaries() -> Images {
    let shape = Shape {
        c: 1,
        h: SIDE,
        w: SIDE,
    };
    let mut im = Images::new(shape);
    for j in 0..D {
        let px: Vec<u8> = (0..D)
            .map(|p| {
                if (j & p).count_ones() % 2 == 0 {
                    255
                } else {
                    0
                }
            })
            .collect();
        im.push(&px, 1);
    }
    im
}

/// Outcome of one audited release: the white-box ε lower bound at 99.9 %.
fn audited_release(flaw: Option<Flaw>, row_norm: f32) -> (f64, ScoreAudit) {
    audited_release_with(flaw, row_norm, 0.0)
}

/// As [`audited_release`], each row plus `jitter` times a standard normal vector from the
/// record randomness ([`Batch::rng`], like an augmentation draw).
fn audited_release_with(flaw: Option<Flaw>, row_norm: f32, jitter: f32) -> (f64, ScoreAudit) {
    let canaries = hadamard_canaries();
    let mut rng = ChaCha20Rng::from_entropy();
    let included: Vec<bool> = (0..canaries.len()).map(|_| rng.gen::<bool>()).collect();
    // 64 data records of class 0, then the included canaries (class 1).
    let mut data = Images::new(canaries.shape);
    for i in 0..64 {
        let px: Vec<u8> = (0..D).map(|p| ((i * 31 + p * 7) % 256) as u8).collect();
        data.push(&px, 0);
    }
    let planted: Vec<usize> = (0..canaries.len()).filter(|&j| included[j]).collect();
    for &j in &planted {
        data.push(canaries.image(j), 1);
    }
    let sigma = crate::dp::analytic::gaussian_sigma(CLAIMED, DELTA);
    let m = GaussianSum {
        sampling: Sampling::Everyone,
        grouping: Grouping::ByClass(2),
        clip: ClipNorm::new(1.0).unwrap(),
        sigma: NoiseMultiplier::new(sigma).unwrap(),
        noise: Noise::Float,
        chunk: 64,
    };
    // The per-record function: centred pixels scaled to norm `row_norm` for a canary.
    let scale = row_norm * 2.0 / (D as f32).sqrt();
    let f = move |b: &mut Batch<'_>| -> Result<Vec<f32>, std::convert::Infallible> {
        let px: Vec<f32> = b.pixels.to_vec();
        Ok(px
            .iter()
            .map(|&v| {
                let z: f32 = if jitter > 0.0 {
                    b.rng.sample(rand_distr::StandardNormal)
                } else {
                    0.0
                };
                (v - 0.5) * scale + jitter * z / (D as f32).sqrt()
            })
            .collect())
    };
    let probe = Probe::new(canaries, 64, planted);
    let records = Records::probed(&data, &probe);
    let mut allowance = Allowance::new(&[m.event()]).unwrap();
    match flaw {
        None => m
            .release(&mut allowance, &records, D, &f, &crate::progress::silent)
            .map(drop)
            .unwrap(),
        Some(fl) => m
            .flawed_release(fl, &mut allowance, &records, D, &f)
            .map(drop)
            .unwrap(),
    }
    let (scores, releases) = probe.scores();
    assert_eq!(releases, 1);
    let a = one_run::audit(&scores, &included, DELTA, 0.999);
    eprintln!("flaw {flaw:?}, row norm {row_norm}: {a:?}");
    (a.epsilon_lower_bound, a)
}

#[test]
fn sound_mechanism_stays_below_the_claimed_epsilon() {
    // Rows of norm 1 (= C) and rows of norm 20 (clipped to C): the sound mechanism is
    // (1, 1e-5)-DP either way.
    for norm in [1.0, 20.0] {
        let (e, a) = audited_release(None, norm);
        assert!(
            e <= CLAIMED,
            "sound mechanism audited above its claim: {a:?}"
        );
    }
}

#[test]
fn fail_noise_far_below_sigma_is_caught() {
    let (e, a) = audited_release(Some(Flaw::NoiseScale(0.02)), 1.0);
    assert!(e > CLAIMED, "a 50x too small noise went unnoticed: {a:?}");
    assert!(a.auroc > 0.99, "{a:?}");
}

#[test]
fn fail_skipped_clipping_is_caught() {
    let (e, a) = audited_release(Some(Flaw::NoClip), 20.0);
    assert!(e > CLAIMED, "unclipped rows went unnoticed: {a:?}");
}

#[test]
fn white_box_knows_the_draws_of_the_release() {
    // Rows dominated by record randomness (an augmentation-like draw of norm 2 against a
    // pattern of norm 1): an observer that knew only the expected row would see the 128
    // included canaries' draws as noise of norm about 2·sqrt(128) in every release and could
    // not tell them apart; knowing the release's own draws, a 50x too small noise is plain.
    let (e, a) = audited_release_with(Some(Flaw::NoiseScale(0.02)), 1.0, 2.0);
    assert!(e > CLAIMED, "{a:?}");
    assert!(a.auroc > 0.85, "{a:?}");
    // The sound mechanism with the same draws stays below its claim.
    let (e, a) = audited_release_with(None, 1.0, 2.0);
    assert!(
        e <= CLAIMED,
        "sound mechanism audited above its claim: {a:?}"
    );
}

#[test]
fn canaries_are_binary_and_nearly_orthogonal() {
    let shape = Shape { c: 1, h: 28, w: 28 };
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let c = make_canaries(shape, 40, 3, &mut rng);
    assert_eq!(c.len(), 40);
    assert!(c.labels.iter().all(|&l| l == 3));
    assert!(c.pixels.iter().all(|&v| v == 0 || v == 255));
    let centred: Vec<Vec<f64>> = (0..40)
        .map(|j| c.image(j).iter().map(|&v| v as f64 / 255.0 - 0.5).collect())
        .collect();
    let mut worst = 0f64;
    for a in 0..40 {
        for b in a + 1..40 {
            let dot: f64 = centred[a].iter().zip(&centred[b]).map(|(x, y)| x * y).sum();
            let na: f64 = centred[a].iter().map(|x| x * x).sum::<f64>().sqrt();
            let nb: f64 = centred[b].iter().map(|x| x * x).sum::<f64>().sqrt();
            worst = worst.max((dot / (na * nb)).abs());
        }
    }
    assert!(worst < 0.5, "canaries too alike: cosine {worst}");
}

#[test]
fn black_box_score_finds_a_canary_copied_into_the_synthetic_set() {
    let shape = Shape { c: 1, h: 12, w: 12 };
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let c = make_canaries(shape, 30, 2, &mut rng);
    let mut syn = FloatImages::new(shape);
    let copy: Vec<f32> = c.image(7).iter().map(|&v| v as f32 / 255.0).collect();
    syn.push(&copy, 2);
    // An image of another class is ignored.
    let other: Vec<f32> = c.image(3).iter().map(|&v| v as f32 / 255.0).collect();
    syn.push(&other, 0);
    let s = black_box_scores(&c, &syn, 2);
    let best = (0..30).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
    assert_eq!(best, 7);
    assert!((s[7] - 1.0).abs() < 1e-9);
}
