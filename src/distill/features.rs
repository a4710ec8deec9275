//! Random, never-trained ConvNets used as feature extractors by distribution matching (`dm`).
//!
//! The networks are public: their weights come from a ChaCha8 stream keyed by the run's
//! non-private initialisation seed and the network index, never from data. The architecture is
//! the distillation ConvNet (conv 3×3 without bias → instance norm → ReLU → 2×2 average pool,
//! depth 3); the embedding of an image under one net is its flattened final map plus the
//! per-channel spatial means of every block's activations.
//!
//! The same code embeds real images (forward only, inside the private release) and synthetic
//! images (with autograd, to optimise the synthetic pixels). Pooling on odd sizes narrows to an
//! even size first: candle's `avg_pool2d` backward is wrong for odd inputs (perf-notes.md).
//!
//! (Adapter note for the integrator: `nn` owns the product ConvNet with hand-written per-sample
//! kernels; this module only needs forward passes and first-order input gradients, which
//! candle's autograd gives directly, so it does not depend on `nn`.)

use candle_core::{DType, Device, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dataset::Shape;

/// One random feature network.
#[derive(Debug, Clone)]
pub struct FeatureNet {
    kernels: Vec<Tensor>,
}

/// Output of one block of the forward pass.
fn block(x: &Tensor, k: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let y = x.conv2d(k, 1, 1, 1, 1)?;
    // Instance norm (per sample, per channel), no affine (weights at their identity init).
    let mean = y.mean_keepdim((2, 3))?;
    let yc = y.broadcast_sub(&mean)?;
    let var = yc.sqr()?.mean_keepdim((2, 3))?;
    let yn = yc.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
    let a = yn.relu()?;
    let chan_mean = a.mean((2, 3))?; // [B, W]
    let (_, _, h, w) = a.dims4()?;
    // Narrow odd sizes to even ones before pooling (candle's avg_pool2d backward bug).
    let a = if h % 2 == 1 { a.narrow(2, 0, h - 1)? } else { a };
    let a = if w % 2 == 1 { a.narrow(3, 0, w - 1)? } else { a };
    Ok((a.avg_pool2d(2)?, chan_mean))
}

impl FeatureNet {
    /// A random net for images of `shape`: `depth` blocks of `width` channels, weights drawn
    /// uniformly in ±1/sqrt(fan_in) (PyTorch's default conv init) from a ChaCha8 stream keyed by
    /// `(seed, index)`.
    pub fn random(seed: u64, index: u64, shape: Shape, width: usize, depth: usize) -> FeatureNet {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut kernels = Vec::with_capacity(depth);
        let mut cin = shape.c;
        for _ in 0..depth {
            let fan_in = (cin * 9) as f32;
            let bound = 1.0 / fan_in.sqrt();
            let w: Vec<f32> = (0..width * cin * 9)
                .map(|_| rng.gen_range(-bound..bound))
                .collect();
            kernels.push(
                Tensor::from_vec(w, (width, cin, 3, 3), &Device::Cpu)
                    .expect("invariant: kernel shape matches its data"),
            );
            cin = width;
        }
        FeatureNet { kernels }
    }

    /// The embedding dimension for images of `shape`.
    pub fn dim(&self, shape: Shape) -> usize {
        let width = self.kernels.first().map(|k| k.dims()[0]).unwrap_or(0);
        let (mut h, mut w) = (shape.h, shape.w);
        for _ in &self.kernels {
            h /= 2;
            w /= 2;
        }
        width * h * w + width * self.kernels.len()
    }

    /// Embeddings `[B, dim]` of images `x` `[B, C, H, W]` (values in [0, 1]).
    ///
    /// # Errors
    /// Candle shape errors (an invariant of the callers).
    pub fn embed(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.affine(1.0, -0.5)?;
        let mut parts = Vec::with_capacity(self.kernels.len() + 1);
        for k in &self.kernels {
            let (out, m) = block(&h, k)?;
            parts.push(m);
            h = out;
        }
        parts.push(h.flatten_from(1)?);
        Tensor::cat(&parts, 1)
    }
}

/// Normalise each row of `e` `[B, D]` to L2 norm `scale` (rows of norm zero stay zero).
///
/// # Errors
/// Candle errors (invariant).
pub fn normalise_rows(e: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    let n = e.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    let n = (n + 1e-12)?;
    e.broadcast_div(&n)?.affine(scale, 0.0)
}

/// A batch of images as a `[B, C, H, W]` f32 tensor in [0, 1], each shifted by an integer offset
/// in `±max_shift` (edge-replicated) drawn from `rng` when `max_shift > 0`.
pub fn batch_tensor(
    pixels: &[&[u8]],
    shape: Shape,
    max_shift: usize,
    rng: &mut ChaCha8Rng,
) -> candle_core::Result<Tensor> {
    let mut buf = Vec::with_capacity(pixels.len() * shape.len());
    for img in pixels {
        let (dy, dx) = if max_shift > 0 {
            let m = max_shift as i64;
            (rng.gen_range(-m..=m), rng.gen_range(-m..=m))
        } else {
            (0, 0)
        };
        for c in 0..shape.c {
            for y in 0..shape.h {
                let sy = (y as i64 + dy).clamp(0, shape.h as i64 - 1) as usize;
                for x in 0..shape.w {
                    let sx = (x as i64 + dx).clamp(0, shape.w as i64 - 1) as usize;
                    buf.push(img[(c * shape.h + sy) * shape.w + sx] as f32 / 255.0);
                }
            }
        }
    }
    Tensor::from_vec(buf, (pixels.len(), shape.c, shape.h, shape.w), &Device::Cpu)
}

/// Differentiable random shifts of a `[B, C, H, W]` tensor: each image is shifted by an integer
/// offset in `±max_shift` with edge replication (siamese augmentation on the synthetic side).
///
/// # Errors
/// Candle errors (invariant).
pub fn shift_batch(x: &Tensor, max_shift: usize, rng: &mut ChaCha8Rng) -> candle_core::Result<Tensor> {
    if max_shift == 0 {
        return Ok(x.clone());
    }
    let (b, _, h, w) = x.dims4()?;
    let p = x
        .pad_with_same(2, max_shift, max_shift)?
        .pad_with_same(3, max_shift, max_shift)?;
    let mut out = Vec::with_capacity(b);
    for i in 0..b {
        let oy = rng.gen_range(0..=2 * max_shift);
        let ox = rng.gen_range(0..=2 * max_shift);
        out.push(p.narrow(0, i, 1)?.narrow(2, oy, h)?.narrow(3, ox, w)?);
    }
    Tensor::cat(&out, 0)
}

/// f64 → f32 tensor helper for targets.
///
/// # Errors
/// Candle errors (invariant).
pub fn tensor_2d(v: &[f64], rows: usize, cols: usize) -> candle_core::Result<Tensor> {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_vec(f, (rows, cols), &Device::Cpu)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape { c: 1, h: 28, w: 28 }
    }

    #[test]
    fn embedding_has_the_announced_dim_and_is_deterministic() {
        let a = FeatureNet::random(7, 3, shape(), 8, 3);
        let b = FeatureNet::random(7, 3, shape(), 8, 3);
        let c = FeatureNet::random(7, 4, shape(), 8, 3);
        let x = Tensor::rand(0f32, 1f32, (2, 1, 28, 28), &Device::Cpu).unwrap();
        let ea = a.embed(&x).unwrap();
        assert_eq!(ea.dims(), &[2, a.dim(shape())]);
        assert_eq!(a.dim(shape()), 8 * 9 + 8 * 3);
        let eb = b.embed(&x).unwrap();
        let ec = c.embed(&x).unwrap();
        let d_ab = (&ea - &eb).unwrap().abs().unwrap().sum_all().unwrap();
        let d_ac = (&ea - &ec).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(d_ab.to_scalar::<f32>().unwrap(), 0.0);
        assert!(d_ac.to_scalar::<f32>().unwrap() > 1e-3);
    }

    #[test]
    fn input_gradient_matches_finite_difference() {
        // The synthetic side relies on candle's first-order input gradient through conv,
        // instance norm, ReLU and the narrowed pooling; check one coordinate numerically.
        let net = FeatureNet::random(1, 0, Shape { c: 1, h: 12, w: 12 }, 4, 2);
        let x0: Vec<f32> = (0..144).map(|i| ((i * 37 % 101) as f32) / 101.0).collect();
        let loss = |x: &Tensor| -> Tensor {
            let e = normalise_rows(&net.embed(x).unwrap(), 1.0).unwrap();
            e.narrow(1, 0, 5).unwrap().sum_all().unwrap()
        };
        let xv = candle_core::Var::from_tensor(
            &Tensor::from_vec(x0.clone(), (1, 1, 12, 12), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let g = loss(xv.as_tensor()).backward().unwrap();
        let gx = g.get(xv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for &i in &[13usize, 50, 77] {
            let h = 1e-2f32;
            let mut xp = x0.clone();
            xp[i] += h;
            let mut xm = x0.clone();
            xm[i] -= h;
            let f = |v: Vec<f32>| {
                loss(&Tensor::from_vec(v, (1, 1, 12, 12), &Device::Cpu).unwrap())
                    .to_scalar::<f32>()
                    .unwrap()
            };
            let fd = (f(xp) - f(xm)) / (2.0 * h);
            assert!(
                (fd - gx[i]).abs() <= 2e-2 * (1.0 + fd.abs()),
                "coordinate {i}: autograd {} vs finite difference {fd}",
                gx[i]
            );
        }
    }

    #[test]
    fn shifts_keep_shape() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let x = Tensor::rand(0f32, 1f32, (3, 1, 28, 28), &Device::Cpu).unwrap();
        assert_eq!(shift_batch(&x, 2, &mut rng).unwrap().dims(), &[3, 1, 28, 28]);
        let img = vec![0u8; 784];
        let t = batch_tensor(&[&img, &img], shape(), 2, &mut rng).unwrap();
        assert_eq!(t.dims(), &[2, 1, 28, 28]);
    }
}
