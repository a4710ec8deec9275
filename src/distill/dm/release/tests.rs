//! Tests of the private side of `dm`: the per-record rows, the per-net and one-shot releases
//! through the mechanism (sensitivity, counts, sampling, samplers, the allowance) and the
//! DP-SGD warm-up.

use super::super::testutil::{params, toy};
use super::super::{nets, synthesise, Warmup};
use super::*;
use crate::dataset::Images;
use crate::dp::DpEvent;

/// A noise multiplier small enough to read the sums in tests (std 1e-9·C).
const QUIET: f64 = 1e-9;

fn allowance(events: &[DpEvent]) -> Allowance {
    Allowance::new(events).unwrap()
}

/// The clipped class sums of a one-shot release with negligible noise (float sampler):
/// `classes × (dim + 1)`, and `dim`.
fn quiet_sums(im: &Images, p: &DmParams, nets: &[Net]) -> (Vec<f64>, usize) {
    let data = Records::new(im);
    let mut a = allowance(&[DpEvent::gaussian(QUIET, 1)]);
    let per_net = 1.0 / (nets.len() as f32).sqrt();
    let (dim, rows) = record_rows(p, nets, per_net, im.shape);
    let m = mechanism(
        p,
        Sampling::Everyone,
        Grouping::ByClass(2),
        QUIET,
        Noise::Float,
        p.batch,
    )
    .unwrap();
    let r = m
        .release(&mut a, &data, dim + 1, &rows, &progress::silent)
        .unwrap();
    assert!(a.is_exhausted());
    (r.sums.concat(), dim)
}

#[test]
fn warm_up_trains_snapshots_that_learn_the_classes() {
    let im = toy(100);
    let data = Records::new(&im);
    let mut p = params();
    p.nets = 4;
    p.sample_rate = Some(0.5);
    p.warmup = Some(Warmup {
        trajectories: 2,
        steps: 30,
        lr: 0.5,
        momentum: 0.5,
        trained_fraction: 0.5,
        ce_weight: 0.0,
    });
    p.validate().unwrap();
    let mut ns = nets(&p, im.shape, 2, 1).unwrap();
    let before = ns.clone();
    let mut a = allowance(&[DpEvent::poisson_gaussian(0.5, 0.5, 60)]);
    let trained = warm_up(&data, &mut a, &p, &mut ns, 0.5, 0.5, &progress::silent).unwrap();
    assert_eq!(trained, vec![true, true, false, false]);
    assert!(a.is_exhausted(), "the warm-up spends exactly its steps");
    // The untrained nets keep their public random init; the snapshots moved.
    assert_eq!(ns[2].params(), before[2].params());
    assert_eq!(ns[3].params(), before[3].params());
    assert_ne!(ns[0].params(), before[0].params());
    assert_ne!(ns[1].params(), before[1].params());
    // Each trajectory's final snapshot separates the two classes.
    let x: Vec<f32> = (0..im.len())
        .flat_map(|i| im.image(i).iter().map(|&v| v as f32 / 255.0 - 0.5))
        .collect();
    for net in &ns[..2] {
        let logits = net.logits(&x).unwrap();
        let right = logits
            .chunks(net.classes())
            .zip(&im.labels)
            .filter(|(l, &y)| (l[1] > l[0]) == (y == 1))
            .count();
        assert!(
            right as f64 / im.len() as f64 > 0.9,
            "{right} of {}",
            im.len()
        );
    }
    // No warm-up: nothing changes, nothing is spent.
    p.warmup = None;
    let mut ns2 = before.clone();
    let mut a = allowance(&[DpEvent::poisson_gaussian(0.5, 0.5, 1)]);
    let t = warm_up(&data, &mut a, &p, &mut ns2, 0.5, 0.5, &progress::silent).unwrap();
    assert_eq!(t, vec![false; 4]);
    assert_eq!(ns2[0].params(), before[0].params());
    assert!(a.spent().is_empty());
}

#[test]
fn every_record_vector_is_within_the_clip_norm() {
    // One record alone: its class sum is its (clipped) row; the norm must be <= C.
    // With Fourier features too: each net's row keeps its norm (cos² + sin² = 1).
    for rff in [0, 24] {
        let im = toy(1).select(&[0]);
        let mut p = params();
        p.rff = rff;
        let nets = nets(&p, im.shape, 2, 3).unwrap();
        let (sums, dim) = quiet_sums(&im, &p, &nets);
        assert_eq!(dim, nets.len() * (base_len(&nets[0], &p) + 2 * rff));
        let norm: f64 = sums.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(norm <= p.clip_norm + 1e-8, "norm {norm}");
        assert!(
            norm > 0.9,
            "the vector should be nearly unit length, got {norm}"
        );
        // The other class's sum is untouched (up to the 1e-9 noise): one record, one class.
        assert!(sums[dim + 1..].iter().all(|&x| x.abs() < 1e-7));
    }
}

#[test]
fn sums_of_neighbours_differ_by_at_most_c() {
    // Augmentations are i.i.d. per record, so neighbours are compared under the same
    // (coupled) augmentation draws; with shifts off the coupling is the identity.
    let im = toy(5);
    let mut p = params();
    p.max_shift = 0;
    p.augmentation = augment::Family::Shift;
    let nets = nets(&p, im.shape, 2, 3).unwrap();
    let (a, _) = quiet_sums(&im, &p, &nets);
    for drop in [0, 4, im.len() - 1] {
        let idx: Vec<usize> = (0..im.len()).filter(|&i| i != drop).collect();
        let (b, _) = quiet_sums(&im.select(&idx), &p, &nets);
        let d: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(d <= p.clip_norm + 1e-6, "sensitivity exceeded: {d}");
    }
}

#[test]
fn noiseless_counts_are_recovered_and_synthesis_lowers_the_loss() {
    let im = toy(6);
    let p = params();
    let nets = nets(&p, im.shape, 2, 3).unwrap();
    let (sums, dim) = quiet_sums(&im, &p, &nets);
    let rel = post_process(&sums, 2, dim, &p);
    assert!((rel.counts[0] - 6.0).abs() < 1e-4 && (rel.counts[1] - 6.0).abs() < 1e-4);
    let (set, losses) =
        synthesise(&rel, im.shape, 2, 2, &p, &nets, &[], 5, &progress::silent).unwrap();
    assert_eq!(set.labels, vec![0, 0, 1, 1]);
    assert!(set.data.iter().all(|&x| (0.0..=1.0).contains(&x)));
    let first: f64 = losses[..5].iter().sum();
    let last: f64 = losses[losses.len() - 5..].iter().sum();
    assert!(
        last < 0.7 * first,
        "loss did not fall enough: {first} -> {last}"
    );
}

#[test]
fn per_net_release_without_noise_recovers_counts_and_the_one_shot_means() {
    // q = 1 and negligible noise: every net sees every record, so the per-net release must
    // equal the one-shot release's means and counts (same nets, same per-net scale 1/sqrt(K)).
    let im = toy(6);
    let data = Records::new(&im);
    let mut p = params();
    p.augmentation = augment::Family::Shift;
    p.max_shift = 0;
    let nets = nets(&p, im.shape, 2, 3).unwrap();
    let mut a = allowance(&[DpEvent::poisson_gaussian(1.0, QUIET, 3)]);
    let (per, sampler) =
        release_per_net(&data, &mut a, 2, &p, &nets, 1.0, QUIET, &progress::silent).unwrap();
    assert_eq!(sampler, "chacha20-float-gaussian");
    assert!(a.is_exhausted(), "one release per net");
    let (sums, dim) = quiet_sums(&im, &p, &nets);
    let one = post_process(&sums, 2, dim, &p);
    assert_eq!(per.dim, one.dim);
    for c in 0..2 {
        assert!((per.counts[c] - 6.0).abs() < 1e-4, "{:?}", per.counts);
    }
    for (a, b) in per.means.iter().zip(&one.means) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn real_side_augmentations_are_keyed_from_the_os_not_the_seed() {
    // Same nets, same data, no noise, every record: only the augmentation draws can differ
    // between two releases, and they must (they are part of the mechanism).
    let im = toy(6);
    let data = Records::new(&im);
    let p = params();
    let nets = nets(&p, im.shape, 2, 3).unwrap();
    let run = || {
        let mut a = allowance(&[DpEvent::poisson_gaussian(1.0, QUIET, 3)]);
        release_per_net(&data, &mut a, 2, &p, &nets, 1.0, QUIET, &progress::silent)
            .unwrap()
            .0
            .means
    };
    assert_ne!(run(), run());
}

#[test]
fn per_net_release_samples_each_net_independently() {
    // q = 1/2: each net's noiseless count estimates q·n_c; the pooled count is near it and
    // the nets' sample sizes differ (independent Poisson samples, not one shared batch).
    let im = toy(200);
    let data = Records::new(&im);
    let mut p = params();
    p.nets = 4;
    p.batch = 64;
    let nets = nets(&p, im.shape, 2, 3).unwrap();
    let mut a = allowance(&[DpEvent::poisson_gaussian(0.5, QUIET, 4)]);
    let (rel, _) =
        release_per_net(&data, &mut a, 2, &p, &nets, 0.5, QUIET, &progress::silent).unwrap();
    for c in 0..2 {
        assert!(
            (70.0..130.0).contains(&rel.counts[c]),
            "pooled count {} far from q·n_c = 100",
            rel.counts[c]
        );
    }
    // Every net's noiseless mean has norm at most 1/sqrt(K) (normalised embeddings) times
    // that net's sample size over the pooled count: about 50 ± 5 over 50 ± 2.5, so a factor
    // 1.5 is more than 5 standard deviations away (a factor 1.15 failed once, by chance).
    let f = rel.dim / p.nets;
    for c in 0..2 {
        for k in 0..p.nets {
            let m = &rel.means[c * rel.dim + k * f..c * rel.dim + (k + 1) * f];
            let n: f64 = m.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!(n <= 0.5 * 1.5 + 1e-6 && n > 0.1, "net {k} class {c}: {n}");
        }
    }
}

#[test]
fn exact_release_is_used_for_small_releases() {
    let im = toy(3);
    let data = Records::new(&im);
    let p = params();
    let nets = nets(&p, im.shape, 2, 3).unwrap();
    let mut a = allowance(&[DpEvent::gaussian(1.0, 1)]);
    let (_, sampler) = release(&data, &mut a, 2, &p, &nets, 1.0, &progress::silent).unwrap();
    assert_eq!(sampler, "opendp-exact-discrete-gaussian");
    assert!(a.is_exhausted());
}

/// A release the reservation does not cover is refused before any record is read.
#[test]
fn fail_releases_beyond_the_reservation() {
    let im = toy(3);
    let data = Records::new(&im);
    let p = params();
    let nets = nets(&p, im.shape, 2, 3).unwrap();
    // Two of the three per-net releases reserved: the third is refused.
    let mut a = allowance(&[DpEvent::poisson_gaussian(0.5, 1.0, 2)]);
    let e = release_per_net(&data, &mut a, 2, &p, &nets, 0.5, 1.0, &progress::silent).unwrap_err();
    assert_eq!(crate::error::Coded::code(&e), "dp-allowance-exceeded");
    // A one-shot release against a per-net reservation, or at another sigma: refused.
    let mut a = allowance(&[DpEvent::poisson_gaussian(0.5, 1.0, 3)]);
    assert!(release(&data, &mut a, 2, &p, &nets, 1.0, &progress::silent).is_err());
    assert!(release_per_net(&data, &mut a, 2, &p, &nets, 0.5, 1.1, &progress::silent).is_err());
    assert_eq!(a.unspent(), vec![DpEvent::poisson_gaussian(0.5, 1.0, 3)]);
}

/// The rows have norm at most 1 (exactly 1 up to rounding with one augmentation), so at
/// C = 1 the mechanism's clip scales them by at most its margin 1 − 10⁻⁶: the releases match
/// what they were before the clip had a margin.
#[test]
fn rows_are_unit_norm_so_clipping_only_applies_the_margin() {
    use rand_chacha::rand_core::SeedableRng;
    let im = toy(4);
    let pixels: Vec<f32> = im.pixels.iter().map(|&v| v as f32 / 255.0).collect();
    for (augment, rff) in [(1, 0), (1, 16), (3, 0)] {
        let mut p = params();
        (p.augment, p.rff) = (augment, rff);
        let nets = nets(&p, im.shape, 2, 3).unwrap();
        let per_net = 1.0 / (nets.len() as f32).sqrt();
        let (dim, rows) = record_rows(&p, &nets, per_net, im.shape);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1); // test-only randomness
        let mut b = Batch::for_test(&pixels, &im.labels, &mut rng);
        let out = rows(&mut b).unwrap();
        assert_eq!(out.len(), im.len() * (dim + 1));
        for row in out.chunks(dim + 1) {
            let n = crate::dp::clip::norm(row);
            assert!(n <= 1.0 + 1e-6, "augment {augment}: {n}");
            if augment == 1 {
                assert!((n - 1.0).abs() < 1e-5, "rff {rff}: {n}");
            }
            assert!((row[dim] - p.count_weight as f32).abs() < 1e-7);
        }
    }
}
