//! Integer shifts with edge replication and their adjoint: the differentiable (siamese)
//! augmentation used on both the real and the synthetic side. Digits and medical images are
//! never flipped (laterality).

use rand::Rng;

use crate::dataset::Shape;

/// Shift one image by `(dy, dx)` pixels with edge replication, writing into `out`.
pub fn shift_into(img: &[f32], shape: Shape, dy: i64, dx: i64, out: &mut [f32]) {
    let (h, w) = (shape.h as i64, shape.w as i64);
    for c in 0..shape.c as i64 {
        for y in 0..h {
            let sy = (y + dy).clamp(0, h - 1);
            for x in 0..w {
                let sx = (x + dx).clamp(0, w - 1);
                out[((c * h + y) * w + x) as usize] = img[((c * h + sy) * w + sx) as usize];
            }
        }
    }
}

/// Add the adjoint of [`shift_into`] applied to `g` (gradient w.r.t. the shifted image) into
/// `acc` (gradient w.r.t. the original image).
pub fn shift_adjoint_add(g: &[f32], shape: Shape, dy: i64, dx: i64, acc: &mut [f32]) {
    let (h, w) = (shape.h as i64, shape.w as i64);
    for c in 0..shape.c as i64 {
        for y in 0..h {
            let sy = (y + dy).clamp(0, h - 1);
            for x in 0..w {
                let sx = (x + dx).clamp(0, w - 1);
                acc[((c * h + sy) * w + sx) as usize] += g[((c * h + y) * w + x) as usize];
            }
        }
    }
}

/// One random offset pair in `±max`.
pub fn draw(rng: &mut impl Rng, max: usize) -> (i64, i64) {
    if max == 0 {
        return (0, 0);
    }
    let m = max as i64;
    (rng.gen_range(-m..=m), rng.gen_range(-m..=m))
}

/// Shift every image of `x` by its own offset.
pub fn shift_each(x: &[f32], shape: Shape, offs: &[(i64, i64)]) -> Vec<f32> {
    let d = shape.len();
    let mut out = vec![0f32; x.len()];
    for (i, &(dy, dx)) in offs.iter().enumerate() {
        shift_into(
            &x[i * d..(i + 1) * d],
            shape,
            dy,
            dx,
            &mut out[i * d..(i + 1) * d],
        );
    }
    out
}

/// The adjoint of [`shift_each`].
pub fn shift_each_adjoint(g: &[f32], shape: Shape, offs: &[(i64, i64)]) -> Vec<f32> {
    let d = shape.len();
    let mut out = vec![0f32; g.len()];
    for (i, &(dy, dx)) in offs.iter().enumerate() {
        shift_adjoint_add(
            &g[i * d..(i + 1) * d],
            shape,
            dy,
            dx,
            &mut out[i * d..(i + 1) * d],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjoint_is_the_transpose() {
        let shape = Shape { c: 2, h: 5, w: 4 };
        let x: Vec<f32> = (0..80).map(|i| (i as f32 * 0.37).sin()).collect();
        let y: Vec<f32> = (0..80).map(|i| (i as f32 * 0.91).cos()).collect();
        let offs = [(1, -2), (-1, 0)];
        let sx = shift_each(&x, shape, &offs);
        let aty = shift_each_adjoint(&y, shape, &offs);
        let lhs: f32 = sx.iter().zip(&y).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&aty).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-4, "<Sx,y> {lhs} != <x,S'y> {rhs}");
        assert_eq!(shift_each(&x, shape, &[(0, 0), (0, 0)]), x);
    }
}
