//! Plain-slice kernels of the hand-written forward/backward passes: im2col/col2im for 3×3
//! convolutions with padding 1, instance normalisation, activations, 2×2 average pooling (floor
//! mode, with the correct backward for odd sizes) and softmax cross-entropy.
//!
//! Layouts are row-major: an image is `[C, H, W]`, an unfolded image (`cols`) is
//! `[C·9, H·W]` with row `c·9 + ky·3 + kx`.

/// Instance-norm epsilon (PyTorch's GroupNorm default).
pub(crate) const NORM_EPS: f32 = 1e-5;

/// Unfold a `[c, h, w]` image into `cols` `[c·9, h·w]` for a 3×3 kernel with zero padding 1.
pub(crate) fn im2col(x: &[f32], c: usize, h: usize, w: usize, cols: &mut [f32]) {
    let hw = h * w;
    for ci in 0..c {
        let img = &x[ci * hw..(ci + 1) * hw];
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &mut cols[(ci * 9 + ky * 3 + kx) * hw..][..hw];
                for oy in 0..h {
                    let out = &mut row[oy * w..(oy + 1) * w];
                    let iy = oy as isize + ky as isize - 1;
                    if iy < 0 || iy >= h as isize {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &img[iy as usize * w..(iy as usize + 1) * w];
                    // ox + kx - 1 in [0, w)
                    match kx {
                        0 => {
                            out[0] = 0.0;
                            out[1..].copy_from_slice(&src[..w - 1]);
                        }
                        1 => out.copy_from_slice(src),
                        _ => {
                            out[..w - 1].copy_from_slice(&src[1..]);
                            out[w - 1] = 0.0;
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: sum `cols` `[c·9, h·w]` back into `dx` `[c, h, w]` (overwrites).
pub(crate) fn col2im(cols: &[f32], c: usize, h: usize, w: usize, dx: &mut [f32]) {
    let hw = h * w;
    dx[..c * hw].fill(0.0);
    for ci in 0..c {
        let img = &mut dx[ci * hw..(ci + 1) * hw];
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &cols[(ci * 9 + ky * 3 + kx) * hw..][..hw];
                for oy in 0..h {
                    let iy = oy as isize + ky as isize - 1;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let src = &row[oy * w..(oy + 1) * w];
                    let dst = &mut img[iy as usize * w..(iy as usize + 1) * w];
                    match kx {
                        0 => dst[..w - 1]
                            .iter_mut()
                            .zip(&src[1..])
                            .for_each(|(d, s)| *d += s),
                        1 => dst.iter_mut().zip(src).for_each(|(d, s)| *d += s),
                        _ => dst[1..]
                            .iter_mut()
                            .zip(&src[..w - 1])
                            .for_each(|(d, s)| *d += s),
                    }
                }
            }
        }
    }
}

/// Activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Activation {
    /// max(0, x): the distillation literature's default; not smooth, so a finite-difference
    /// Hessian-vector product does not converge with it.
    Relu,
    /// GELU (tanh approximation): smooth, so finite-difference second-order products work.
    Gelu,
}

impl std::str::FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "relu" => Ok(Activation::Relu),
            "gelu" => Ok(Activation::Gelu),
            _ => Err(format!("unknown activation {s:?} (expected relu or gelu)")),
        }
    }
}

const GELU_K: f32 = 0.797_884_6; // sqrt(2/pi)
const GELU_C: f32 = 0.044_715;

/// exp(x) in f32 without a libm call (profiling showed libm's tanhf/expm1f taking most of a
/// GELU network's time): x·log2(e) = n + f with |f| ≤ 1/2, 2^f by its degree-6 Taylor
/// polynomial in f·ln 2, 2^n through the exponent bits. Smooth within
/// each unit interval of n and continuous to float precision across them.
#[inline]
fn fast_exp(x: f32) -> f32 {
    let t = x.clamp(-87.0, 87.0) * std::f32::consts::LOG2_E;
    let n = t.round();
    let u = (t - n) * std::f32::consts::LN_2;
    let p = 1.0
        + u * (1.0
            + u * (0.5 + u * (1.0 / 6.0 + u * (1.0 / 24.0 + u * (1.0 / 120.0 + u / 720.0)))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// tanh(z) = 1 − 2/(e^{2z} + 1) on [`fast_exp`]; |z| > 9 is within 1e-7 of ±1.
#[inline]
fn fast_tanh(z: f32) -> f32 {
    1.0 - 2.0 / (fast_exp(2.0 * z.clamp(-9.0, 9.0)) + 1.0)
}

impl Activation {
    /// f(y).
    #[inline]
    pub(crate) fn f(self, y: f32) -> f32 {
        match self {
            Activation::Relu => y.max(0.0),
            Activation::Gelu => {
                let t = fast_tanh(GELU_K * (y + GELU_C * y * y * y));
                0.5 * y * (1.0 + t)
            }
        }
    }
    /// f'(y).
    #[inline]
    pub(crate) fn df(self, y: f32) -> f32 {
        match self {
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Gelu => {
                let t = fast_tanh(GELU_K * (y + GELU_C * y * y * y));
                0.5 * (1.0 + t) + 0.5 * y * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * y * y)
            }
        }
    }
}

/// Instance norm, in place on `z` `[c, hw]`: `z ← (z − mean)/sqrt(var + eps)` per channel
/// (biased variance); writes `1/sqrt(var + eps)` to `rstd`.
pub(crate) fn instance_norm(z: &mut [f32], c: usize, hw: usize, rstd: &mut [f32]) {
    for ch in 0..c {
        let row = &mut z[ch * hw..(ch + 1) * hw];
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / hw as f64;
        let var = row
            .iter()
            .map(|&v| (v as f64 - mean) * (v as f64 - mean))
            .sum::<f64>()
            / hw as f64;
        let r = (1.0 / (var + NORM_EPS as f64).sqrt()) as f32;
        let m = mean as f32;
        row.iter_mut().for_each(|v| *v = (*v - m) * r);
        rstd[ch] = r;
    }
}

/// Backward of affine instance norm. On entry `d` `[c, hw]` holds dL/dy where
/// `y = gamma·xhat + beta`; on exit it holds dL/dz. Writes dL/dgamma and dL/dbeta.
#[allow(clippy::too_many_arguments)]
pub(crate) fn instance_norm_backward(
    d: &mut [f32],
    xhat: &[f32],
    rstd: &[f32],
    gamma: &[f32],
    c: usize,
    hw: usize,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let inv = 1.0 / hw as f32;
    for ch in 0..c {
        let dy = &mut d[ch * hw..(ch + 1) * hw];
        let xh = &xhat[ch * hw..(ch + 1) * hw];
        let (mut sdy, mut sdyx) = (0f32, 0f32);
        for (a, b) in dy.iter().zip(xh) {
            sdy += a;
            sdyx += a * b;
        }
        dgamma[ch] = sdyx;
        dbeta[ch] = sdy;
        let g = gamma[ch];
        // dxhat = g·dy; mean(dxhat) = g·sdy/hw; mean(dxhat·xhat) = g·sdyx/hw
        let m1 = g * sdy * inv;
        let m2 = g * sdyx * inv;
        let r = rstd[ch];
        for (a, b) in dy.iter_mut().zip(xh) {
            *a = r * (g * *a - m1 - b * m2);
        }
    }
}

/// Output side of 2×2 average pooling in floor mode.
pub(crate) fn pooled(h: usize, w: usize) -> (usize, usize) {
    (h / 2, w / 2)
}

/// `out[c, i, j] = mean of act(y) over the 2×2 block (2i.., 2j..)`; the last row/column of an
/// odd-sized map is dropped (floor mode).
pub(crate) fn act_pool(y: &[f32], c: usize, h: usize, w: usize, act: Activation, out: &mut [f32]) {
    let (h2, w2) = pooled(h, w);
    for ch in 0..c {
        let m = &y[ch * h * w..(ch + 1) * h * w];
        let o = &mut out[ch * h2 * w2..(ch + 1) * h2 * w2];
        for i in 0..h2 {
            let r0 = &m[2 * i * w..][..w];
            let r1 = &m[(2 * i + 1) * w..][..w];
            for j in 0..w2 {
                o[i * w2 + j] = 0.25
                    * (act.f(r0[2 * j])
                        + act.f(r0[2 * j + 1])
                        + act.f(r1[2 * j])
                        + act.f(r1[2 * j + 1]));
            }
        }
    }
}

/// Backward of [`act_pool`]: `dy[c, p] = act'(y[c, p]) · dout[block of p] / 4`, and 0 for the
/// dropped last row/column of an odd-sized map (the case candle 0.11's `avg_pool2d` gets
/// wrong, see `docs/nn.md`).
pub(crate) fn act_pool_backward(
    dout: &[f32],
    y: &[f32],
    c: usize,
    h: usize,
    w: usize,
    act: Activation,
    dy: &mut [f32],
) {
    let (h2, w2) = pooled(h, w);
    for ch in 0..c {
        let m = &y[ch * h * w..(ch + 1) * h * w];
        let d = &mut dy[ch * h * w..(ch + 1) * h * w];
        let g = &dout[ch * h2 * w2..(ch + 1) * h2 * w2];
        d.fill(0.0);
        for i in 0..2 * h2 {
            for j in 0..2 * w2 {
                let p = i * w + j;
                d[p] = 0.25 * g[(i / 2) * w2 + j / 2] * act.df(m[p]);
            }
        }
    }
}

/// Softmax cross-entropy of one sample: returns the loss and writes `softmax − onehot` (times
/// `scale`) to `dlogits`.
pub(crate) fn softmax_xent(logits: &[f32], label: usize, scale: f32, dlogits: &mut [f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut z = 0f64;
    for (d, &l) in dlogits.iter_mut().zip(logits) {
        let e = ((l - max) as f64).exp();
        *d = e as f32;
        z += e;
    }
    for (i, d) in dlogits.iter_mut().enumerate() {
        let p = (*d as f64 / z) as f32;
        *d = scale * (p - if i == label { 1.0 } else { 0.0 });
    }
    (z.ln() + max as f64 - logits[label] as f64) as f32
}

/// Softmax cross-entropy of one sample against a target distribution `target` (soft labels,
/// temperature 1): returns `−Σ tⱼ log softmax(z)ⱼ` and writes `(Σt)·softmax − t` (times
/// `scale`) to `dlogits` (with Σt = 1 this is `softmax − t`).
pub(crate) fn softmax_soft_xent(
    logits: &[f32],
    target: &[f32],
    scale: f32,
    dlogits: &mut [f32],
) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut z = 0f64;
    for (d, &l) in dlogits.iter_mut().zip(logits) {
        let e = ((l - max) as f64).exp();
        *d = e as f32;
        z += e;
    }
    let lse = z.ln() + max as f64;
    let mass: f64 = target.iter().map(|&t| t as f64).sum();
    let mut loss = 0f64;
    for ((d, &t), &l) in dlogits.iter_mut().zip(target).zip(logits) {
        let p = *d as f64 / z;
        *d = scale * (mass * p - t as f64) as f32;
        loss += t as f64 * (lse - l as f64);
    }
    loss as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-hot target gives the hard loss and gradient; a soft one, the finite-difference
    /// gradient of its loss.
    #[test]
    fn soft_xent_is_right() {
        let z = [0.3f32, -1.2, 2.0, 0.5];
        let (mut a, mut b) = ([0f32; 4], [0f32; 4]);
        let hard = softmax_xent(&z, 2, 0.5, &mut a);
        let soft = softmax_soft_xent(&z, &[0.0, 0.0, 1.0, 0.0], 0.5, &mut b);
        assert!((hard - soft).abs() < 1e-6);
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6));
        let t = [0.1f32, 0.2, 0.6, 0.1];
        let mut g = [0f32; 4];
        softmax_soft_xent(&z, &t, 1.0, &mut g);
        for j in 0..4 {
            let (mut zp, mut zm) = (z, z);
            zp[j] += 1e-3;
            zm[j] -= 1e-3;
            let mut tmp = [0f32; 4];
            let fd = (softmax_soft_xent(&zp, &t, 1.0, &mut tmp)
                - softmax_soft_xent(&zm, &t, 1.0, &mut tmp))
                / 2e-3;
            assert!((fd - g[j]).abs() < 1e-3, "{j}: {fd} vs {}", g[j]);
        }
        // The loss is smallest at the target itself: cross-entropy = entropy there.
        let lt: Vec<f32> = t.iter().map(|v| v.ln()).collect();
        let at_t = softmax_soft_xent(&lt, &t, 1.0, &mut g);
        let entropy: f32 = t.iter().map(|v| -v * v.ln()).sum();
        assert!((at_t - entropy).abs() < 1e-5);
        assert!(g.iter().all(|v| v.abs() < 1e-6));
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> == <x, col2im(c)> for random x, c
        let (c, h, w) = (2, 5, 4);
        let x: Vec<f32> = (0..c * h * w).map(|i| (i as f32 * 0.7).sin()).collect();
        let cc: Vec<f32> = (0..c * 9 * h * w).map(|i| (i as f32 * 0.3).cos()).collect();
        let mut cols = vec![0f32; c * 9 * h * w];
        im2col(&x, c, h, w, &mut cols);
        let mut back = vec![0f32; c * h * w];
        col2im(&cc, c, h, w, &mut back);
        let lhs: f32 = cols.iter().zip(&cc).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-3, "{lhs} vs {rhs}");
        // centre tap is the identity
        assert_eq!(&cols[4 * h * w..5 * h * w], &x[..h * w]);
    }

    /// See: issue 4 — candle's avg_pool2d backward on 7×7→3×3 gives the dropped last row and
    /// column a gradient of 0.25; the right answer (floor mode) is 0. Checked against central
    /// finite differences of the forward.
    #[test]
    fn odd_size_pool_backward_is_exact() {
        let (c, h, w) = (1, 7, 7);
        // values away from ReLU's kink, of both signs
        let y: Vec<f32> = (0..h * w)
            .map(|i| {
                let s = (i as f32 * 0.37).sin();
                s.signum() * (0.05 + s.abs())
            })
            .collect();
        let dout: Vec<f32> = (0..9).map(|i| 1.0 + i as f32).collect();
        for act in [Activation::Relu, Activation::Gelu] {
            let mut dy = vec![0f32; h * w];
            act_pool_backward(&dout, &y, c, h, w, act, &mut dy);
            for i in 0..w {
                assert_eq!(dy[6 * w + i], 0.0, "dropped last row");
                assert_eq!(dy[i * w + 6], 0.0, "dropped last column");
            }
            let f = |yy: &[f32]| {
                let mut o = vec![0f32; 9];
                act_pool(yy, c, h, w, act, &mut o);
                o.iter()
                    .zip(&dout)
                    .map(|(a, b)| (a * b) as f64)
                    .sum::<f64>()
            };
            for p in 0..h * w {
                let mut yp = y.clone();
                let mut ym = y.clone();
                yp[p] += 1e-3;
                ym[p] -= 1e-3;
                let fd = (f(&yp) - f(&ym)) / 2e-3;
                assert!(
                    (fd - dy[p] as f64).abs() < 2e-3,
                    "p={p}: fd {fd} vs {}",
                    dy[p]
                );
            }
        }
    }

    #[test]
    fn fast_tanh_and_exp_match_the_library() {
        for i in -2000..=2000 {
            let z = i as f32 * 0.01;
            assert!((fast_tanh(z) - z.tanh()).abs() < 2e-7, "tanh({z})");
            let e = fast_exp(z);
            assert!((e - z.exp()).abs() <= 3e-6 * z.exp(), "exp({z}): {e}");
        }
        assert!((fast_tanh(50.0) - 1.0).abs() < 1e-7);
        assert!((fast_tanh(-50.0) + 1.0).abs() < 1e-7);
    }

    #[test]
    fn gelu_derivative_matches_finite_difference() {
        for i in -40..40 {
            let y = i as f32 * 0.1;
            let fd = (Activation::Gelu.f(y + 1e-3) - Activation::Gelu.f(y - 1e-3)) / 2e-3;
            assert!((fd - Activation::Gelu.df(y)).abs() < 2e-3);
        }
    }

    #[test]
    fn softmax_xent_is_right() {
        let mut d = vec![0f32; 3];
        let l = softmax_xent(&[1.0, 2.0, 3.0], 2, 1.0, &mut d);
        let z = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        assert!((l as f64 - (z - 3.0)).abs() < 1e-6);
        assert!(d.iter().sum::<f32>().abs() < 1e-6);
        assert!(d[2] < 0.0);
    }
}
