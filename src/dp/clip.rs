//! Per-record L2 clipping: every per-record contribution is scaled to norm at most `C` before
//! any sum (SECURITY.md, "Differential privacy"). Used by [`super::mechanism`], the only place private contributions are
//! summed.
//!
//! # Privacy
//! The sensitivity argument needs the norm of what is *summed* to be at most `C`, and that is a
//! vector of rounded `f32` values, not the real-valued `x · C/‖x‖`. So the factor carries a
//! margin: a row whose norm computed in f64 is `n̂` is scaled by
//! `f = min(1, C·(1 − 10⁻⁶)/n̂)`, each value as `round_f32(x · f)` (one rounding, relative error
//! at most 2⁻²⁴). Then for rows of up to 10⁸ coordinates:
//! - the true norm of the stored row is at most `C·(1 − 10⁻⁶)(1 + 6·10⁻⁹)(1 + 2⁻²⁴) < C`
//!   (the f64 sum of `d` squares and its square root are within `(d/2 + 2)·2⁻⁵³` relative of
//!   the true norm);
//! - the norm recomputed in f64 from the stored values is below `C` for the same reason.
//!
//! A row with a NaN or infinite value contributes exactly zero (all its values are set to 0):
//! it cannot poison the sum and the record still counts as touched.

/// Keeps the clipped norm strictly below `C` despite rounding (see the module docs).
pub const CLIP_MARGIN: f64 = 1.0 - 1e-6;

/// The L2 norm of `v`, accumulated in f64 over eight interleaved partial sums (which the
/// compiler vectorises; the error bound is that of a sequential sum of `d/8 + 3` terms)
/// (`+∞` or NaN if a value is not finite).
pub fn norm(v: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut it = v.chunks_exact(8);
    for c in &mut it {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += (x as f64) * (x as f64);
        }
    }
    let tail: f64 = it
        .remainder()
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum();
    (acc.iter().sum::<f64>() + tail).sqrt()
}

/// One value of a row scaled by a factor from [`clip_factor`], exactly as [`clip_in_place`]
/// stores it: the product in f64, rounded once to f32.
#[inline]
pub fn scaled(x: f32, f: f64) -> f32 {
    (x as f64 * f) as f32
}

/// The factor applied to a row of computed L2 norm `norm` so that the stored row's norm stays
/// below `c`: 0 for a non-finite norm (the row is dropped), 1 up to `c·CLIP_MARGIN`, else
/// `c·CLIP_MARGIN / norm`.
pub fn clip_factor(norm: f64, c: f64) -> f64 {
    let limit = c * CLIP_MARGIN;
    if !norm.is_finite() {
        0.0
    } else if norm <= limit {
        1.0
    } else {
        limit / norm
    }
}

/// Clip `v` in place to L2 norm below `c` (a non-finite row becomes all zeros); returns the
/// factor applied (0 for a dropped row).
pub fn clip_in_place(v: &mut [f32], c: f64) -> f64 {
    let f = clip_factor(norm(v), c);
    if f == 0.0 {
        v.fill(0.0);
    } else if f != 1.0 {
        v.iter_mut().for_each(|x| *x = scaled(*x, f));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_norm_at_most_c() {
        let mut v = vec![3.0f32, 4.0];
        let f = clip_in_place(&mut v, 1.0);
        assert!((f - 0.2 * CLIP_MARGIN).abs() < 1e-15);
        let n = norm(&v);
        assert!(n <= 1.0 && (n - 1.0).abs() < 2e-6, "{n}");
        let mut w = vec![0.1f32, 0.1];
        assert_eq!(clip_in_place(&mut w, 1.0), 1.0);
        assert_eq!(w, vec![0.1, 0.1]);
        assert_eq!(clip_factor(f64::NAN, 1.0), 0.0);
        let mut bad = vec![1.0f32, f32::NAN, 2.0];
        assert_eq!(clip_in_place(&mut bad, 1.0), 0.0);
        assert_eq!(bad, vec![0.0; 3]);
    }
}
