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

/// Which augmentations the siamese augmentation draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Family {
    /// Integer shifts in `±max_shift` only.
    #[default]
    Shift,
    /// One of, chosen at random per image: a shift in `±max_shift` px, an independent scale of
    /// each axis in [0.8, 1.2], or a rotation in ±15° (DSA's crop / scale / rotate, never flips).
    Affine,
}

/// An affine resampling of an image: the output pixel at `p` reads the input at
/// `A·(p − centre) + centre + t` with bilinear interpolation, coordinates clamped to the image
/// (edge replication, like [`shift_into`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warp {
    a: [f32; 4],
    t: [f32; 2],
}

impl Warp {
    /// The identity.
    pub const IDENTITY: Warp = Warp {
        a: [1.0, 0.0, 0.0, 1.0],
        t: [0.0, 0.0],
    };

    /// A shift by whole pixels (the output at `p` reads the input at `p + (dy, dx)`).
    pub fn shift(dy: i64, dx: i64) -> Warp {
        Warp {
            t: [dy as f32, dx as f32],
            ..Warp::IDENTITY
        }
    }

    /// One random warp from `family`.
    pub fn draw(rng: &mut impl Rng, family: Family, max_shift: usize) -> Warp {
        let shift = |rng: &mut _| {
            let (dy, dx) = draw(rng, max_shift);
            Warp::shift(dy, dx)
        };
        match family {
            Family::Shift => shift(rng),
            Family::Affine => match rng.gen_range(0..3) {
                0 => shift(rng),
                1 => {
                    let sy = 1.0 / rng.gen_range(0.8f32..1.2);
                    let sx = 1.0 / rng.gen_range(0.8f32..1.2);
                    Warp {
                        a: [sy, 0.0, 0.0, sx],
                        ..Warp::IDENTITY
                    }
                }
                _ => {
                    let r = rng.gen_range(-15f32..15.0).to_radians();
                    Warp {
                        a: [r.cos(), -r.sin(), r.sin(), r.cos()],
                        ..Warp::IDENTITY
                    }
                }
            },
        }
    }

    /// The four bilinear taps (index into one channel, weight) of output pixel `(y, x)`.
    fn taps(&self, h: usize, w: usize, y: usize, x: usize) -> [(usize, f32); 4] {
        let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
        let (dy, dx) = (y as f32 - cy, x as f32 - cx);
        let sy = (self.a[0] * dy + self.a[1] * dx + cy + self.t[0]).clamp(0.0, h as f32 - 1.0);
        let sx = (self.a[2] * dy + self.a[3] * dx + cx + self.t[1]).clamp(0.0, w as f32 - 1.0);
        let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
        let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
        let (fy, fx) = (sy - y0 as f32, sx - x0 as f32);
        [
            (y0 * w + x0, (1.0 - fy) * (1.0 - fx)),
            (y0 * w + x1, (1.0 - fy) * fx),
            (y1 * w + x0, fy * (1.0 - fx)),
            (y1 * w + x1, fy * fx),
        ]
    }

    /// Resample `img` into `out`.
    pub fn apply(&self, img: &[f32], shape: Shape, out: &mut [f32]) {
        let (h, w) = (shape.h, shape.w);
        for y in 0..h {
            for x in 0..w {
                let taps = self.taps(h, w, y, x);
                for c in 0..shape.c {
                    let src = &img[c * h * w..(c + 1) * h * w];
                    out[(c * h + y) * w + x] = taps.iter().map(|&(j, k)| k * src[j]).sum();
                }
            }
        }
    }

    /// Add the adjoint of [`Warp::apply`] applied to `g` into `acc`.
    pub fn adjoint_add(&self, g: &[f32], shape: Shape, acc: &mut [f32]) {
        let (h, w) = (shape.h, shape.w);
        for y in 0..h {
            for x in 0..w {
                let taps = self.taps(h, w, y, x);
                for c in 0..shape.c {
                    let gv = g[(c * h + y) * w + x];
                    let dst = &mut acc[c * h * w..(c + 1) * h * w];
                    for &(j, k) in &taps {
                        dst[j] += k * gv;
                    }
                }
            }
        }
    }
}

/// Warp every image of `x` by its own warp.
pub fn warp_each(x: &[f32], shape: Shape, warps: &[Warp]) -> Vec<f32> {
    let d = shape.len();
    let mut out = vec![0f32; x.len()];
    for (i, wp) in warps.iter().enumerate() {
        wp.apply(&x[i * d..(i + 1) * d], shape, &mut out[i * d..(i + 1) * d]);
    }
    out
}

/// The adjoint of [`warp_each`].
pub fn warp_each_adjoint(g: &[f32], shape: Shape, warps: &[Warp]) -> Vec<f32> {
    let d = shape.len();
    let mut out = vec![0f32; g.len()];
    for (i, wp) in warps.iter().enumerate() {
        wp.adjoint_add(&g[i * d..(i + 1) * d], shape, &mut out[i * d..(i + 1) * d]);
    }
    out
}

/// Bilinear resize of `n` images from `from` to `to` (same channels; pixel centres aligned,
/// coordinates clamped): a fixed linear map, used to optimise synthetic images at a lower
/// resolution than they are stored.
pub fn resize(x: &[f32], from: Shape, to: Shape) -> Vec<f32> {
    let n = x.len() / from.len().max(1);
    let mut out = vec![0f32; n * to.len()];
    let taps = resize_taps(from, to);
    for i in 0..n {
        let src = &x[i * from.len()..(i + 1) * from.len()];
        let dst = &mut out[i * to.len()..(i + 1) * to.len()];
        for c in 0..to.c {
            let s = &src[c * from.h * from.w..(c + 1) * from.h * from.w];
            for (j, t) in taps.iter().enumerate() {
                dst[c * to.h * to.w + j] = t.iter().map(|&(k, wt)| wt * s[k]).sum();
            }
        }
    }
    out
}

/// The adjoint of [`resize`]: gradients w.r.t. the `to`-sized images → w.r.t. the `from`-sized.
pub fn resize_adjoint(g: &[f32], from: Shape, to: Shape) -> Vec<f32> {
    let n = g.len() / to.len().max(1);
    let mut out = vec![0f32; n * from.len()];
    let taps = resize_taps(from, to);
    for i in 0..n {
        let src = &g[i * to.len()..(i + 1) * to.len()];
        let dst = &mut out[i * from.len()..(i + 1) * from.len()];
        for c in 0..to.c {
            let d = &mut dst[c * from.h * from.w..(c + 1) * from.h * from.w];
            for (j, t) in taps.iter().enumerate() {
                let gv = src[c * to.h * to.w + j];
                for &(k, wt) in t {
                    d[k] += wt * gv;
                }
            }
        }
    }
    out
}

fn resize_taps(from: Shape, to: Shape) -> Vec<[(usize, f32); 4]> {
    let (fy, fx) = (from.h as f32 / to.h as f32, from.w as f32 / to.w as f32);
    let mut taps = Vec::with_capacity(to.h * to.w);
    for y in 0..to.h {
        for x in 0..to.w {
            let sy = ((y as f32 + 0.5) * fy - 0.5).clamp(0.0, from.h as f32 - 1.0);
            let sx = ((x as f32 + 0.5) * fx - 0.5).clamp(0.0, from.w as f32 - 1.0);
            let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(from.h - 1), (x0 + 1).min(from.w - 1));
            let (ay, ax) = (sy - y0 as f32, sx - x0 as f32);
            taps.push([
                (y0 * from.w + x0, (1.0 - ay) * (1.0 - ax)),
                (y0 * from.w + x1, (1.0 - ay) * ax),
                (y1 * from.w + x0, ay * (1.0 - ax)),
                (y1 * from.w + x1, ay * ax),
            ]);
        }
    }
    taps
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

    #[test]
    fn warps_agree_with_shifts_and_have_a_true_adjoint() {
        use rand::SeedableRng;
        let shape = Shape { c: 2, h: 7, w: 6 };
        let d = shape.len();
        let x: Vec<f32> = (0..2 * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let y: Vec<f32> = (0..2 * d).map(|i| (i as f32 * 0.91).cos()).collect();
        let offs = [(1, -2), (-2, 1)];
        let ws: Vec<Warp> = offs.iter().map(|&(a, b)| Warp::shift(a, b)).collect();
        let a = warp_each(&x, shape, &ws);
        let b = shift_each(&x, shape, &offs);
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-6));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            let ws = [
                Warp::draw(&mut rng, Family::Affine, 2),
                Warp::draw(&mut rng, Family::Affine, 2),
            ];
            let sx = warp_each(&x, shape, &ws);
            let aty = warp_each_adjoint(&y, shape, &ws);
            let lhs: f32 = sx.iter().zip(&y).map(|(a, b)| a * b).sum();
            let rhs: f32 = x.iter().zip(&aty).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-3, "<Wx,y> {lhs} != <x,W'y> {rhs}");
        }
        assert_eq!(warp_each(&x, shape, &[Warp::IDENTITY; 2]), x);
    }

    #[test]
    fn resize_keeps_constants_and_has_a_true_adjoint() {
        let (from, to) = (Shape { c: 2, h: 7, w: 5 }, Shape { c: 2, h: 14, w: 10 });
        let ones = vec![0.7f32; 3 * from.len()];
        assert!(resize(&ones, from, to)
            .iter()
            .all(|v| (v - 0.7).abs() < 1e-6));
        let x: Vec<f32> = (0..3 * from.len())
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let y: Vec<f32> = (0..3 * to.len()).map(|i| (i as f32 * 0.91).cos()).collect();
        let rx = resize(&x, from, to);
        let aty = resize_adjoint(&y, from, to);
        let lhs: f32 = rx.iter().zip(&y).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&aty).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-3, "<Rx,y> {lhs} != <x,R'y> {rhs}");
        assert_eq!(resize(&x, from, from), x);
    }
}
