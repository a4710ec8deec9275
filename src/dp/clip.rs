//! Per-sample L2 clipping: every per-sample contribution is scaled to norm at most `C` before
//! any sum (SECURITY.md, "Differential privacy").

/// The factor `min(1, C / norm)` that clips a vector of L2 norm `norm` to at most `c`.
/// A zero or non-finite norm gives 0 for non-finite (the sample is dropped) and 1 for zero.
pub fn clip_factor(norm: f64, c: f64) -> f64 {
    if !norm.is_finite() {
        0.0
    } else if norm <= c {
        1.0
    } else {
        c / norm
    }
}

/// Clip `v` in place to L2 norm at most `c`; returns the original norm.
pub fn clip_in_place(v: &mut [f32], c: f64) -> f64 {
    let norm = v
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    let f = clip_factor(norm, c) as f32;
    if f != 1.0 {
        v.iter_mut().for_each(|x| *x *= f);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_norm_at_most_c() {
        let mut v = vec![3.0f32, 4.0];
        assert_eq!(clip_in_place(&mut v, 1.0), 5.0);
        let n = (v[0] * v[0] + v[1] * v[1]).sqrt();
        assert!((n - 1.0).abs() < 1e-6);
        let mut w = vec![0.1f32, 0.1];
        clip_in_place(&mut w, 1.0);
        assert_eq!(w, vec![0.1, 0.1]);
        assert_eq!(clip_factor(f64::NAN, 1.0), 0.0);
    }
}
