use super::*;

#[test]
fn shapes_and_invariances() {
    let s = Scattering::new(1, 28, 28).unwrap();
    assert_eq!(s.out_channels(), 81);
    assert_eq!(s.out_hw(), (7, 7));
    let img: Vec<f32> = (0..784).map(|i| ((i * 37) % 255) as f32 / 255.0).collect();
    let f = s.forward(&img);
    assert_eq!(f.len(), 81 * 49);
    assert!(f.iter().all(|v| v.is_finite()));
    // Order-0 channel of a constant image is that constant (φ has unit mass); the wavelet
    // channels of a constant image vanish (ψ have zero mean).
    let c = s.forward(&vec![0.5; 784]);
    assert!(
        c[..49].iter().all(|v| (v - 0.5).abs() < 1e-3),
        "{:?}",
        &c[..5]
    );
    assert!(c[49..].iter().all(|v| v.abs() < 1e-3));
    // Moduli are non-negative, so are their averages (up to rounding).
    assert!(f[49..].iter().all(|&v| v > -1e-4));
    // Stable to a one-pixel shift: far closer than to another image.
    let mut shifted = vec![0f32; 784];
    for y in 0..28 {
        for x in 1..28 {
            shifted[y * 28 + x] = img[y * 28 + x - 1];
        }
    }
    let other: Vec<f32> = (0..784).map(|i| ((i * 91) % 255) as f32 / 255.0).collect();
    let d = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>();
    let fs = s.forward(&shifted);
    let fo = s.forward(&other);
    assert!(d(&f, &fs) < d(&f, &fo), "{} vs {}", d(&f, &fs), d(&f, &fo));
    let b = s.forward_batch(&[img.clone(), other.clone()].concat());
    assert_eq!(&b[..f.len()], &f[..]);
}

/// Random projections of the output differentiate as the VJP says (central differences).
#[test]
fn vjp_matches_finite_differences() {
    use rand::{Rng, SeedableRng};
    let s = Scattering::new(1, 10, 10).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let img: Vec<f32> = (0..100).map(|_| rng.gen_range(0.0..1.0)).collect();
    let w: Vec<f32> = (0..s.out_len()).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let f = |x: &[f32]| -> f64 {
        s.forward(x)
            .iter()
            .zip(&w)
            .map(|(a, b)| (a * b) as f64)
            .sum()
    };
    let g = s.vjp(&img, &w);
    for i in [0usize, 7, 33, 55, 99] {
        let (mut a, mut b) = (img.clone(), img.clone());
        a[i] += 1e-2;
        b[i] -= 1e-2;
        let fd = (f(&a) - f(&b)) / 2e-2;
        assert!(
            (fd - g[i] as f64).abs() < 2e-2 * (1.0 + fd.abs()),
            "pixel {i}: {fd} vs {}",
            g[i]
        );
    }
    // The group norm's VJP.
    let x: Vec<f32> = (0..12).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let gy: Vec<f32> = (0..12).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let h = |x: &[f32]| -> f64 {
        let mut y = x.to_vec();
        group_norm(&mut y, 12, 3);
        y.iter().zip(&gy).map(|(a, b)| (a * b) as f64).sum()
    };
    let gx = group_norm_vjp(&x, &gy, 3);
    for i in 0..12 {
        let (mut a, mut b) = (x.clone(), x.clone());
        a[i] += 1e-3;
        b[i] -= 1e-3;
        let fd = (h(&a) - h(&b)) / 2e-3;
        assert!(
            (fd - gx[i] as f64).abs() < 1e-2,
            "feature {i}: {fd} vs {}",
            gx[i]
        );
    }
}

/// At MNIST size, along a random direction through every pixel: the VJP's inner product
/// with the direction is the directional derivative; and the forward pass that keeps its
/// tape returns exactly the forward transform.
#[test]
fn vjp_directional_derivative_at_full_size() {
    use rand::{Rng, SeedableRng};
    let s = Scattering::new(1, 28, 28).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let img: Vec<f32> = (0..784).map(|_| rng.gen_range(0.0..1.0)).collect();
    let w: Vec<f32> = (0..s.out_len()).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let dir: Vec<f32> = (0..784).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let f = |t: f32| -> f64 {
        let x: Vec<f32> = img.iter().zip(&dir).map(|(a, b)| a + t * b).collect();
        s.forward(&x)
            .iter()
            .zip(&w)
            .map(|(a, b)| (a * b) as f64)
            .sum()
    };
    let (out, g) = s.forward_vjp(&img, |o| {
        assert_eq!(o.len(), s.out_len());
        w.clone()
    });
    assert_eq!(out, s.forward(&img));
    let fd = (f(1e-3) - f(-1e-3)) / 2e-3;
    let an: f64 = g.iter().zip(&dir).map(|(a, b)| (a * b) as f64).sum();
    assert!((fd - an).abs() < 1e-2 * (1.0 + fd.abs()), "{fd} vs {an}");
    // Linear in the output gradient.
    let g2 = s.vjp(&img, &w.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
    assert!(g
        .iter()
        .zip(&g2)
        .all(|(a, b)| (2.0 * a - b).abs() < 1e-4 * (1.0 + b.abs())));
}

#[test]
fn group_norm_standardises_each_group() {
    let mut v: Vec<f32> = (0..12).map(|i| i as f32).collect();
    group_norm(&mut v, 12, 3);
    for g in v.chunks(4) {
        let m: f32 = g.iter().sum::<f32>() / 4.0;
        assert!(m.abs() < 1e-5);
    }
    assert!(Scattering::new(1, 4, 4).is_err());
}
