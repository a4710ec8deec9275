use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::dataset::Images;

/// Two classes of 12×12 images: horizontal vs vertical stripes, with per-image noise.
fn stripes(n: usize, seed: u64) -> Images {
    let shape = Shape { c: 1, h: 12, w: 12 };
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut im = Images::new(shape);
    for i in 0..n {
        let label = (i % 2) as u32;
        let phase = rng.gen_range(0..4);
        let px: Vec<u8> = (0..144)
            .map(|p| {
                let (y, x) = (p / 12, p % 12);
                let t = if label == 0 { y } else { x };
                let on = (t + phase) % 4 < 2;
                let v = if on { 200.0 } else { 40.0 } + rng.gen_range(-30.0..30.0);
                v as u8
            })
            .collect();
        im.push(&px, label);
    }
    im
}

#[test]
fn gradient_rows_are_the_cross_entropy_gradient() {
    let (k, d) = (3usize, 5usize);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let w: Vec<f32> = (0..k * (d + 1)).map(|_| rng.gen_range(-0.5..0.5)).collect();
    let x: Vec<f32> = (0..d).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let label = 2u32;
    let mut r = ChaCha20Rng::seed_from_u64(2);
    let mut b = Batch::for_test(&x, std::slice::from_ref(&label), &mut r);
    let g = gradient_rows(&w, k, d, &mut b).unwrap();
    let loss = |w: &[f32]| -> f64 {
        let t = Teacher {
            shape: Shape { c: 1, h: 8, w: 8 },
            classes: k,
            dim: d,
            weights: w.to_vec(),
            temperature: 1.0,
            events: vec![],
        };
        let mut z = vec![0f32; k];
        t.logits(&x, &mut z);
        softmax(&mut z);
        -(z[label as usize] as f64).ln()
    };
    for i in 0..w.len() {
        let (mut a, mut b) = (w.clone(), w.clone());
        a[i] += 1e-3;
        b[i] -= 1e-3;
        let fd = (loss(&a) - loss(&b)) / 2e-3;
        assert!(
            (fd - g[i] as f64).abs() < 2e-3,
            "coordinate {i}: {fd} vs {}",
            g[i]
        );
    }
}

#[test]
fn trains_an_accurate_teacher_and_spends_exactly_its_events() {
    let train_set = stripes(400, 3);
    let test = stripes(200, 4).to_float();
    let mut p = TeacherParams::defaults(400);
    p.expected_batch = 100;
    p.epochs = 5.0;
    let sigma = 2.0;
    let ev = events(&p, 400, sigma);
    let mut allowance = Allowance::new(&ev).unwrap();
    let data = Records::new(&train_set);
    let t = train(
        &data,
        &mut allowance,
        &p,
        2,
        sigma,
        &crate::progress::silent,
    )
    .unwrap();
    assert!(allowance.is_exhausted());
    assert_eq!(t.events, ev);
    let pred = t.predict(&test).unwrap();
    let right = pred
        .iter()
        .zip(&test.labels)
        .filter(|(a, b)| a == b)
        .count();
    assert!(right > 180, "{right}/200 right");
    let probs = t.probabilities(&test).unwrap();
    assert_eq!(probs.len(), 400);
    for row in probs.chunks(2) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert!(row.iter().all(|v| (0.0..=1.0).contains(v)));
    }
    // A higher temperature flattens the vectors.
    let hot = t.probabilities_at(&test, 8.0).unwrap();
    let peak = |v: &[f32]| v.chunks(2).map(|r| r[0].max(r[1])).sum::<f32>();
    assert!(peak(&hot) < peak(&probs));
}

#[test]
fn fail_to_train_beyond_the_allowance() {
    let train_set = stripes(100, 5);
    let mut p = TeacherParams::defaults(100);
    p.expected_batch = 50;
    p.epochs = 2.0;
    // One step fewer than the teacher needs: the last step is refused.
    let mut short = Allowance::new(&[DpEvent::poisson_gaussian(0.5, 3.0, 3)]).unwrap();
    let data = Records::new(&train_set);
    let e = train(&data, &mut short, &p, 2, 3.0, &crate::progress::silent).unwrap_err();
    assert!(matches!(
        e,
        Error::Privacy(crate::dp::Error::AllowanceExceeded { .. })
    ));
}

#[test]
fn teacher_file_round_trips_and_rejects_bad_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape { c: 1, h: 12, w: 12 };
    let dim = feature_dim(shape).unwrap();
    let t = Teacher {
        shape,
        classes: 2,
        dim,
        weights: vec![0.5; 2 * (dim + 1)],
        temperature: 2.0,
        events: vec![DpEvent::poisson_gaussian(0.1, 2.0, 7)],
    };
    let path = dir.path().join(FILE);
    t.write(&path).unwrap();
    assert_eq!(Teacher::read(&path).unwrap(), t);
    let mut bad = t.clone();
    bad.weights.pop();
    bad.write(&path).unwrap();
    assert!(Teacher::read(&path).is_err());
    std::fs::write(&path, b"{}").unwrap();
    assert!(Teacher::read(&path).is_err());
}

#[test]
fn fail_invalid_parameters() {
    let ok = TeacherParams::defaults(1000);
    assert!(ok.validate().is_ok());
    for f in [
        |p: &mut TeacherParams| p.fraction = 1.0,
        |p: &mut TeacherParams| p.epochs = 0.0,
        |p: &mut TeacherParams| p.expected_batch = 0,
        |p: &mut TeacherParams| p.temperature = -1.0,
        |p: &mut TeacherParams| p.momentum = 1.0,
        |p: &mut TeacherParams| p.guidance = f64::NAN,
    ] {
        let mut p = ok.clone();
        f(&mut p);
        assert!(p.validate().is_err(), "{p:?}");
    }
    assert!(unsupported(10, Shape { c: 1, h: 4, w: 4 }).is_some());
    assert!(unsupported(10, Shape { c: 1, h: 28, w: 28 }).is_none());
}

#[test]
fn guidance_gradient_matches_finite_differences() {
    let shape = Shape { c: 1, h: 10, w: 10 };
    let dim = feature_dim(shape).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let t = Teacher {
        shape,
        classes: 3,
        dim,
        weights: (0..3 * (dim + 1))
            .map(|_| rng.gen_range(-0.05..0.05))
            .collect(),
        temperature: 1.0,
        events: vec![],
    };
    let x: Vec<f32> = (0..200).map(|_| rng.gen_range(0.0..1.0)).collect();
    let labels = [1u32, 2];
    let (l, g) = t.loss_and_input_grads(&x, &labels).unwrap();
    assert!(l > 0.0);
    for i in [3usize, 50, 120, 199] {
        let (mut a, mut b) = (x.clone(), x.clone());
        a[i] += 1e-2;
        b[i] -= 1e-2;
        let fd = (t.loss_and_input_grads(&a, &labels).unwrap().0
            - t.loss_and_input_grads(&b, &labels).unwrap().0)
            / 2e-2;
        assert!(
            (fd - g[i] as f64).abs() < 1e-2 * (1.0 + fd.abs()),
            "pixel {i}: {fd} vs {}",
            g[i]
        );
    }
    assert!(t.loss_and_input_grads(&x[..150], &labels).is_err());
}

/// The estimate counts the features of every record, and the guidance in proportion to the
/// synthesis it guides (none at guidance 0).
#[test]
fn estimate_grows_with_the_records_and_the_guided_synthesis() {
    let shape = Shape { c: 1, h: 12, w: 12 };
    let mut p = TeacherParams::defaults(1_000);
    let est = |p: &TeacherParams, n: usize, g: Option<(usize, usize)>| {
        estimate_seconds(p, shape, n, 2, g).unwrap()
    };
    let small = est(&p, 1_000, None);
    assert!(small > 0.0 && small.is_finite());
    assert!(est(&p, 100_000, None) > small);
    let long = est(&p, 1_000, Some((20, 100_000)));
    assert!(long > est(&p, 1_000, Some((20, 1))), "{long}");
    p.guidance = 0.0;
    // 100,000 guided iterations over 20 images would take seconds; unguided, none.
    assert!(est(&p, 1_000, Some((20, 100_000))) < long / 10.0);
    assert!(estimate_seconds(&p, Shape { c: 1, h: 4, w: 4 }, 10, 2, None).is_err());
}
