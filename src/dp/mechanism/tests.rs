//! Tests of the one mechanism: noise scale, Poisson batch sizes, clipping (property test),
//! grouping, the allowance's refusal, the exact and float samplers, and the test-only flaws.

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::*;
use crate::error::{Class, Coded};

type Rows = Result<Vec<f32>, std::convert::Infallible>;

/// `n` records of 8×8 pixels, labels `i % classes`, pixel values from the index.
fn images(n: usize, classes: u32) -> Images {
    let shape = Shape { c: 1, h: 8, w: 8 };
    let mut im = Images::new(shape);
    for i in 0..n {
        let px: Vec<u8> = (0..64).map(|j| ((i * 7 + j) % 256) as u8).collect();
        im.push(&px, i as u32 % classes);
    }
    im
}

fn mech(
    sampling: Sampling,
    grouping: Grouping,
    clip: f64,
    sigma: f64,
    noise: Noise,
) -> GaussianSum {
    GaussianSum {
        sampling,
        grouping,
        clip: ClipNorm::new(clip).unwrap(),
        sigma: NoiseMultiplier::new(sigma).unwrap(),
        noise,
        chunk: 16,
    }
}

fn allow(m: &GaussianSum, times: u64) -> Allowance {
    Allowance::new(&vec![m.event(); times as usize]).unwrap()
}

fn std_of(v: &[f64]) -> f64 {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// The noise has std σ·C per coordinate (statistical, fixed tolerance: 20,000 coordinates
/// give a standard error of 0.5 % on the std; the tolerance is 2 %).
#[test]
fn noise_has_std_sigma_times_c() {
    let im = images(10, 2);
    let data = Records::new(&im);
    let m = mech(Sampling::Everyone, Grouping::Single, 0.5, 2.0, Noise::Float);
    let dim = 20_000;
    let f = |b: &mut Batch<'_>| -> Rows { Ok(vec![0.0; b.len() * dim]) };
    let r = m
        .release(&mut allow(&m, 1), &data, dim, &f, &crate::progress::silent)
        .unwrap();
    assert_eq!(r.sampler, FLOAT_SAMPLER);
    let s = std_of(&r.sums[0]);
    assert!((s - 1.0).abs() < 0.02, "std {s}, want 1.0");
    let mean = r.sums[0].iter().sum::<f64>() / dim as f64;
    assert!(mean.abs() < 0.03, "mean {mean}");
}

/// Poisson sampling keeps each record with probability q: the batch sizes are Binomial(n, q)
/// (mean nq, variance nq(1−q)), read from a count coordinate summed with negligible noise.
#[test]
fn poisson_batch_sizes_are_binomial() {
    let (n, q) = (20_000usize, 0.05);
    let im = images(n, 3);
    let data = Records::new(&im);
    let m = mech(
        Sampling::Poisson(SampleRate::new(q).unwrap()),
        Grouping::Single,
        2.0,
        1e-9,
        Noise::Float,
    );
    let f = |b: &mut Batch<'_>| -> Rows { Ok(vec![1.0; b.len()]) };
    let mut a = allow(&m, 30);
    let sizes: Vec<f64> = (0..30)
        .map(|_| {
            let r = m
                .release(&mut a, &data, 1, &f, &crate::progress::silent)
                .unwrap();
            // Rows of 1 below C, noise std 2e-9: the sum is the batch size.
            let size = r.sums[0][0].round();
            assert!((r.sums[0][0] - size).abs() < 1e-6);
            size
        })
        .collect();
    assert!(a.is_exhausted());
    let mean = sizes.iter().sum::<f64>() / sizes.len() as f64;
    // mean 1000, std 30.8 per draw, 5.6 for the mean of 30: ±25 is 4.4 standard errors.
    assert!((mean - 1000.0).abs() < 25.0, "mean batch {mean}");
    let sd = std_of(&sizes);
    assert!(
        (15.0..50.0).contains(&sd),
        "batch size std {sd}, want ~30.8"
    );
}

/// Rows with huge, tiny, subnormal or non-finite values for the clipping property test.
fn row_strategy() -> impl Strategy<Value = Vec<f32>> {
    let value = prop_oneof![
        4 => -10.0f32..10.0,
        1 => 1e30f32..3.4e38,
        1 => -3.4e38f32..-1e30,
        1 => -1e-38f32..1e-38,
        1 => 1e-45f32..1e-40,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(0.0f32),
    ];
    prop_oneof![
        3 => proptest::collection::vec(value, 1..300),
        1 => proptest::collection::vec(-1e3f32..1e3, 1..300),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Every clipped row's norm, recomputed in f64 from the stored f32 values, is at most C;
    /// a row with a NaN or infinite value becomes zero.
    #[test]
    fn every_clipped_row_is_at_most_c(
        rows in proptest::collection::vec(row_strategy(), 1..6),
        c in prop_oneof![1e-6f64..1e-3, 1e-3f64..10.0, 10.0f64..1e6],
    ) {
        let dim = rows.iter().map(Vec::len).max().unwrap();
        let mut buf: Vec<f32> = rows
            .iter()
            .flat_map(|r| r.iter().copied().chain(std::iter::repeat(0.0)).take(dim))
            .collect();
        let before = buf.clone();
        for row in buf.chunks_mut(dim) {
            clip::clip_in_place(row, c);
        }
        // The mechanism sums exactly these values (without writing them back).
        let factors = clip_factors(&before, dim, c, Path::Sound);
        let group_of: Vec<usize> = (0..rows.len()).collect();
        let mut sums = vec![vec![0f64; dim]; rows.len()];
        add_clipped_rows(&mut sums, &before, dim, &group_of, &factors);
        for (s, row) in sums.iter().zip(buf.chunks(dim)) {
            prop_assert!(s.iter().zip(row).all(|(a, &b)| *a == b as f64), "sum differs from the clipped row");
        }
        for (got, was) in buf.chunks(dim).zip(before.chunks(dim)) {
            let n = clip::norm(got);
            prop_assert!(n <= c, "clipped norm {n} > C {c}");
            if was.iter().any(|x| !x.is_finite()) {
                prop_assert!(got.iter().all(|&x| x == 0.0), "non-finite row not dropped");
            } else if clip::norm(was) <= c * clip::CLIP_MARGIN {
                prop_assert_eq!(got, was, "a row within C must be unchanged");
            }
        }
    }
}

/// Through a whole release (noise 1e-12·C): one record's row with norm far above C comes out
/// with norm at most C; a NaN row contributes nothing.
#[test]
fn a_release_sums_clipped_rows() {
    let im = images(2, 1);
    let data = Records::new(&im);
    let m = mech(
        Sampling::Everyone,
        Grouping::Single,
        0.7,
        1e-12,
        Noise::Float,
    );
    let f = |b: &mut Batch<'_>| -> Rows {
        let mut v = Vec::new();
        for &l in b.labels.iter().take(1) {
            v.extend([3e30f32 + l as f32, -4e30, 1.0]);
        }
        v.extend(std::iter::repeat_n(f32::NAN, 3 * (b.len() - 1)));
        Ok(v)
    };
    let r = m
        .release(&mut allow(&m, 1), &data, 3, &f, &crate::progress::silent)
        .unwrap();
    let n = r.sums[0].iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(n <= 0.7 && n > 0.7 * 0.999_99, "norm {n}");
}

/// ByClass: a record's row lands in its own label's sum only; a label outside the groups is an
/// error, not a silent drop.
#[test]
fn per_class_sums_land_in_the_records_class() {
    let im = images(30, 3); // labels 0, 1, 2, 0, 1, 2, ...
    let data = Records::new(&im);
    let m = mech(
        Sampling::Everyone,
        Grouping::ByClass(4),
        10.0,
        1e-12,
        Noise::Float,
    );
    // Row = [label, 1]: the class sums are [10·label, 10] for labels 0..2 and zero for 3.
    let f = |b: &mut Batch<'_>| -> Rows {
        Ok(b.labels.iter().flat_map(|&l| [l as f32, 1.0]).collect())
    };
    let r = m
        .release(&mut allow(&m, 1), &data, 2, &f, &crate::progress::silent)
        .unwrap();
    assert_eq!(r.sums.len(), 4);
    for (g, s) in r.sums.iter().enumerate() {
        let want = if g < 3 {
            [10.0 * g as f64, 10.0]
        } else {
            [0.0, 0.0]
        };
        assert!(
            (s[0] - want[0]).abs() < 1e-6 && (s[1] - want[1]).abs() < 1e-6,
            "group {g}: {s:?}"
        );
    }
    let m2 = mech(
        Sampling::Everyone,
        Grouping::ByClass(2),
        10.0,
        1.0,
        Noise::Float,
    );
    let e = m2
        .release(&mut allow(&m2, 1), &data, 2, &f, &crate::progress::silent)
        .unwrap_err();
    assert!(matches!(
        e,
        MechError::Dp(Error::LabelOutOfRange {
            label: 2,
            groups: 2
        })
    ));
}

/// The allowance is charged before anything is read: a release it does not cover is refused
/// with `dp-allowance-exceeded` (exit class Refused), the per-record function is never called,
/// and the allowance is unchanged.
#[test]
fn fail_release_beyond_the_allowance_reads_nothing() {
    let im = images(50, 2);
    let data = Records::new(&im);
    let calls = AtomicUsize::new(0);
    let f = |b: &mut Batch<'_>| -> Rows {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(vec![0.5; b.len() * 4])
    };
    let q = SampleRate::new(0.1).unwrap();
    let m = mech(
        Sampling::Poisson(q),
        Grouping::ByClass(2),
        1.0,
        1.5,
        Noise::Float,
    );
    let mut a = Allowance::new(&[DpEvent::poisson_gaussian(0.1, 1.5, 1)]).unwrap();
    // Another σ, another q, a one-shot release: not covered.
    for other in [
        mech(
            Sampling::Poisson(q),
            Grouping::ByClass(2),
            1.0,
            1.4,
            Noise::Float,
        ),
        mech(
            Sampling::Poisson(SampleRate::new(0.2).unwrap()),
            Grouping::ByClass(2),
            1.0,
            1.5,
            Noise::Float,
        ),
        mech(
            Sampling::Everyone,
            Grouping::ByClass(2),
            1.0,
            1.5,
            Noise::Float,
        ),
    ] {
        let e = other
            .release(&mut a, &data, 4, &f, &crate::progress::silent)
            .unwrap_err();
        let MechError::Dp(e) = e else { panic!("{e:?}") };
        assert_eq!(e.code(), "dp-allowance-exceeded");
        assert_eq!(e.class(), Class::Refused);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "the function ran");
        assert_eq!(a.unspent(), vec![DpEvent::poisson_gaussian(0.1, 1.5, 1)]);
    }
    // The covered one runs once; a second is refused the same way.
    m.release(&mut a, &data, 4, &f, &crate::progress::silent)
        .unwrap();
    let seen = calls.load(Ordering::SeqCst);
    assert!(a.is_exhausted());
    assert!(m
        .release(&mut a, &data, 4, &f, &crate::progress::silent)
        .is_err());
    assert_eq!(calls.load(Ordering::SeqCst), seen);
    assert_eq!(a.spent(), vec![DpEvent::poisson_gaussian(0.1, 1.5, 1)]);
}

#[test]
fn allowance_counts_atoms_as_the_accountants_do() {
    let mut a = Allowance::new(&[
        DpEvent::Composed {
            events: vec![
                DpEvent::poisson_gaussian(0.01, 2.0, 3),
                DpEvent::gaussian(1.0, 1),
            ],
        },
        DpEvent::poisson_gaussian(0.01, 2.0, 2),
    ])
    .unwrap();
    assert_eq!(
        a.unspent(),
        vec![
            DpEvent::poisson_gaussian(0.01, 2.0, 5),
            DpEvent::gaussian(1.0, 1)
        ]
    );
    // A Poisson sample at q = 1 is the same mechanism as a release over every record.
    a.charge(&DpEvent::poisson_gaussian(1.0, 1.0, 1)).unwrap();
    a.charge(&DpEvent::poisson_gaussian(0.01, 2.0, 4)).unwrap();
    assert!(a.charge(&DpEvent::poisson_gaussian(0.01, 2.0, 2)).is_err());
    // A composed charge is all or nothing.
    let both = DpEvent::Composed {
        events: vec![
            DpEvent::poisson_gaussian(0.01, 2.0, 1),
            DpEvent::gaussian(1.0, 1),
        ],
    };
    assert!(a.charge(&both).is_err());
    assert_eq!(a.unspent(), vec![DpEvent::poisson_gaussian(0.01, 2.0, 1)]);
    a.charge(&DpEvent::poisson_gaussian(0.01, 2.0, 1)).unwrap();
    assert!(a.is_exhausted());
    assert!(Allowance::new(&[DpEvent::gaussian(-1.0, 1)]).is_err());
}

/// `Noise::Auto` draws small releases with opendp's exact Gaussian and large ones with the
/// float sampler; both centre on the true sums with std σ·C.
#[test]
fn one_shot_exact_and_float_paths() {
    let im = images(40, 2);
    let data = Records::new(&im);
    let f = |b: &mut Batch<'_>| -> Rows {
        Ok(b.labels
            .iter()
            .flat_map(|&l| vec![0.01 * (l + 1) as f32; 500])
            .collect())
    };
    let auto = Noise::Auto {
        exact_max_coords: 1000,
    };
    let m = mech(Sampling::Everyone, Grouping::ByClass(2), 1.0, 0.5, auto);
    for (dim, want) in [(500, EXACT_SAMPLER), (501, FLOAT_SAMPLER)] {
        let g = |b: &mut Batch<'_>| -> Rows {
            let mut v = f(b)?;
            if dim == 501 {
                v = v
                    .chunks(500)
                    .flat_map(|r| r.iter().copied().chain([0.0]))
                    .collect();
            }
            Ok(v)
        };
        let r = m
            .release(&mut allow(&m, 1), &data, dim, &g, &crate::progress::silent)
            .unwrap();
        assert_eq!(r.sampler, want, "dim {dim}");
        assert_eq!(r.event, DpEvent::gaussian(0.5, 1));
        for (c, s) in r.sums.iter().enumerate() {
            // 20 records per class, row norm 0.01·(c+1)·√500 < 1: unclipped.
            let truth = 20.0 * 0.01 * (c + 1) as f64;
            let resid: Vec<f64> = s[..500].iter().map(|x| x - truth).collect();
            let mean = resid.iter().sum::<f64>() / 500.0;
            let sd = std_of(&resid);
            assert!(mean.abs() < 0.1, "{want} class {c}: mean residual {mean}");
            assert!((sd - 0.5).abs() < 0.08, "{want} class {c}: std {sd}");
        }
    }
    let exact = mech(Sampling::Everyone, Grouping::Single, 1.0, 0.5, Noise::Exact);
    let one = |b: &mut Batch<'_>| -> Rows { Ok(vec![0.0; b.len()]) };
    let r = exact
        .release(
            &mut allow(&exact, 1),
            &data,
            1,
            &one,
            &crate::progress::silent,
        )
        .unwrap();
    assert_eq!(r.sampler, EXACT_SAMPLER);
}

#[test]
fn fail_bad_parameters_and_row_shapes() {
    let im = images(5, 2);
    let data = Records::new(&im);
    let f = |b: &mut Batch<'_>| -> Rows { Ok(vec![0.0; b.len() * 3 + 1]) };
    let m = mech(Sampling::Everyone, Grouping::Single, 1.0, 1.0, Noise::Float);
    let mut a = allow(&m, 3);
    let e = m
        .release(&mut a, &data, 3, &f, &crate::progress::silent)
        .unwrap_err();
    assert!(matches!(e, MechError::Dp(Error::RowShape { .. })), "{e:?}");
    // Invalid parameters are refused before the charge.
    let before = a.unspent();
    for bad in [
        GaussianSum {
            chunk: 0,
            ..m.clone()
        },
        GaussianSum {
            grouping: Grouping::ByClass(0),
            ..m.clone()
        },
    ] {
        let e = bad
            .release(&mut a, &data, 3, &f, &crate::progress::silent)
            .unwrap_err();
        assert!(
            matches!(e, MechError::Dp(Error::InvalidParameter { .. })),
            "{e:?}"
        );
    }
    assert!(m
        .release(&mut a, &data, 0, &f, &crate::progress::silent)
        .is_err());
    assert_eq!(a.unspent(), before);
    // The function's own error comes back as Record.
    let boom = |_: &mut Batch<'_>| -> Result<Vec<f32>, &'static str> { Err("boom") };
    let e = m
        .release(&mut a, &data, 3, &boom, &crate::progress::silent)
        .unwrap_err();
    assert!(matches!(e, MechError::Record("boom")));
}

/// The per-record function sees pixels in [0, 1], the labels, and chunks of at most `chunk`;
/// record randomness differs between releases (OS-keyed).
#[test]
fn batches_carry_unit_pixels_labels_and_fresh_randomness() {
    use rand::Rng;
    let im = images(40, 4);
    let data = Records::new(&im);
    let m = mech(
        Sampling::Everyone,
        Grouping::ByClass(4),
        1e6,
        1e-12,
        Noise::Float,
    );
    let f = |b: &mut Batch<'_>| -> Rows {
        assert!(b.len() <= 16 && !b.is_empty());
        assert_eq!(b.pixels.len(), b.len() * 64);
        assert!(b.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
        let draw: f32 = b.rng.gen();
        Ok(b.labels
            .iter()
            .enumerate()
            .flat_map(|(i, _)| [b.pixels[i * 64] * 255.0, draw])
            .collect())
    };
    let a = m
        .release(&mut allow(&m, 1), &data, 2, &f, &crate::progress::silent)
        .unwrap();
    let b = m
        .release(&mut allow(&m, 1), &data, 2, &f, &crate::progress::silent)
        .unwrap();
    // First pixel of record i is (7i) % 256; class g holds i ≡ g (mod 4).
    for g in 0..4 {
        let want: f64 = (0..40)
            .filter(|i| i % 4 == g)
            .map(|i| ((i * 7) % 256) as f64)
            .sum();
        assert!((a.sums[g][0] - want).abs() < 1e-3, "class {g}");
    }
    assert_ne!(a.sums[0][1], b.sums[0][1]);
    assert!(
        !format!("{data:?}").contains('['),
        "Records' Debug must not show pixels"
    );
}

/// The test-only flaws: unclipped rows and scaled noise are visible in the output, while
/// charging the same event.
#[test]
fn flawed_mechanisms_are_detectably_broken() {
    let im = images(1, 1);
    let data = Records::new(&im);
    let big = |b: &mut Batch<'_>| -> Rows { Ok(vec![3.0; b.len() * 4]) };
    let m = mech(
        Sampling::Everyone,
        Grouping::Single,
        1.0,
        1e-12,
        Noise::Float,
    );
    let r = m
        .flawed_release(Flaw::NoClip, &mut allow(&m, 1), &data, 4, &big)
        .unwrap();
    assert!((r.sums[0][0] - 3.0).abs() < 1e-9, "unclipped row expected");
    let zero = |b: &mut Batch<'_>| -> Rows { Ok(vec![0.0; b.len() * 4000]) };
    let m = mech(Sampling::Everyone, Grouping::Single, 1.0, 1.0, Noise::Float);
    let r = m
        .flawed_release(Flaw::NoiseScale(0.1), &mut allow(&m, 1), &data, 4000, &zero)
        .unwrap();
    assert_eq!(r.event, DpEvent::gaussian(1.0, 1));
    let s = std_of(&r.sums[0]);
    assert!((s - 0.1).abs() < 0.01, "std {s}");
}

/// A release over a feature table sums the clipped transform rows of the sampled records,
/// exactly as a per-record function computing the transform itself would.
#[test]
fn feature_release_equals_the_transform_inside_the_per_record_function() {
    let im = images(40, 2);
    let data = Records::new(&im);
    let t = |px: &[f32], out: &mut Vec<f32>| {
        out.push(px.iter().sum::<f32>() / 64.0);
        out.push(px[0] - px[63]);
    };
    let feats = data.features(2, &t, &crate::progress::silent).unwrap();
    assert_eq!(feats.dim(), 2);
    let fdata = data.with_features(&feats).unwrap();
    assert_eq!(fdata.row_len(), 2);
    let m = mech(
        Sampling::Everyone,
        Grouping::ByClass(2),
        10.0,
        1e-6,
        Noise::Float,
    );
    let from_features = |b: &mut Batch<'_>| -> Rows { Ok(b.pixels.to_vec()) };
    let inline = |b: &mut Batch<'_>| -> Rows {
        let mut out = Vec::new();
        for px in b.pixels.chunks(64) {
            t(px, &mut out);
        }
        Ok(out)
    };
    let a = m
        .release(
            &mut allow(&m, 1),
            &fdata,
            2,
            &from_features,
            &crate::progress::silent,
        )
        .unwrap();
    let b = m
        .release(
            &mut allow(&m, 1),
            &data,
            2,
            &inline,
            &crate::progress::silent,
        )
        .unwrap();
    for (x, y) in a.sums.concat().iter().zip(b.sums.concat()) {
        assert!((x - y).abs() < 1e-3, "{x} vs {y}");
    }
    // A transform of the wrong length is refused; so is a table of other records.
    let bad = |_: &[f32], out: &mut Vec<f32>| out.push(1.0);
    assert!(data.features(2, &bad, &crate::progress::silent).is_err());
    let other = images(10, 2);
    assert!(Records::new(&other).with_features(&feats).is_err());
}
