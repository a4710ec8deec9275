//! A fixed two-dimensional scattering transform (Mallat 2012; Bruna & Mallat 2013): cascades of
//! Morlet wavelet convolutions and moduli, averaged by a Gaussian low-pass and subsampled.
//! With `J = 2` scales and `L = 8` orientations an `h × w` channel becomes 81 channels of
//! `ceil(h/4) × ceil(w/4)`: 1 of order 0, `J·L = 16` of order 1, `L²·J(J−1)/2 = 64` of order 2.
//!
//! The filters are fixed and data-independent (the Morlet filter bank of the scattering
//! literature, built as in kymatio: periodised Gabor filters with zero mean, slant 4/L,
//! σ = 0.8·2^j, ξ = 3π/4·2^-j), so the transform of private images costs nothing in privacy
//! by itself; Tramèr & Boneh ("Differentially Private Learning Needs Better Features", ICLR
//! 2021) train DP-SGD linear models on these features. Convolutions are products in the
//! Fourier domain on a reflect-padded grid; all second-order maps are computed at full
//! resolution (no intermediate subsampling), which changes aliasing slightly, not the
//! features' nature.

use std::sync::Arc;

use rayon::prelude::*;
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

/// Scales `J`.
pub const J: usize = 2;
/// Orientations `L`.
pub const L: usize = 8;
/// Output channels per input channel: 1 + J·L + L²·J(J−1)/2.
pub const CHANNELS: usize = 1 + J * L + L * L * J * (J - 1) / 2;

/// A scattering transform for images of one shape (precomputed filters and FFT plans).
pub struct Scattering {
    c: usize,
    h: usize,
    w: usize,
    /// Padded grid (square-free: height and width padded separately).
    ph: usize,
    pw: usize,
    /// Where the image sits in the padded grid.
    top: usize,
    left: usize,
    /// Output size after subsampling by 2^J and cropping.
    oh: usize,
    ow: usize,
    /// Fourier-domain filters (real), `ph × pw`, row-major: ψ for (j, θ) at `j * L + θ`.
    psi: Vec<Vec<f32>>,
    phi: Vec<f32>,
    fft_w: Arc<dyn Fft<f32>>,
    fft_h: Arc<dyn Fft<f32>>,
    ifft_w: Arc<dyn Fft<f32>>,
    ifft_h: Arc<dyn Fft<f32>>,
    ifft_sw: Arc<dyn Fft<f32>>,
    ifft_sh: Arc<dyn Fft<f32>>,
}

impl std::fmt::Debug for Scattering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scattering")
            .field("shape", &(self.c, self.h, self.w))
            .field("out", &(self.out_channels(), self.oh, self.ow))
            .finish_non_exhaustive()
    }
}

/// Index `i` reflected into `0..n` (whole-sample symmetric, without repeating the edge).
fn reflect(i: i64, n: usize) -> usize {
    let n = n as i64;
    let mut i = i;
    while i < 0 || i >= n {
        i = if i < 0 { -i } else { 2 * (n - 1) - i };
    }
    i as usize
}

fn padded(n: usize) -> usize {
    let s = 1 << J;
    ((n + s) / s + 1) * s
}

/// The spatial Gabor filter of kymatio's filter bank, periodised on an `m × n` grid.
#[allow(clippy::too_many_arguments)]
fn gabor(m: usize, n: usize, sigma: f64, theta: f64, xi: f64, slant: f64) -> Vec<(f64, f64)> {
    let (c, s) = (theta.cos(), theta.sin());
    // curv = R · diag(1, slant²) · Rᵀ / (2σ²)
    let d = [[1.0, 0.0], [0.0, slant * slant]];
    let r = [[c, -s], [s, c]];
    let mut rd = [[0.0; 2]; 2];
    for i in 0..2 {
        for k in 0..2 {
            rd[i][k] = r[i][0] * d[0][k] + r[i][1] * d[1][k];
        }
    }
    let mut curv = [[0.0; 2]; 2];
    for i in 0..2 {
        for k in 0..2 {
            curv[i][k] = (rd[i][0] * r[k][0] + rd[i][1] * r[k][1]) / (2.0 * sigma * sigma);
        }
    }
    let mut out = vec![(0.0, 0.0); m * n];
    for ex in -2i64..=2 {
        for ey in -2i64..=2 {
            for a in 0..m {
                for b in 0..n {
                    let x = a as f64 + (ex * m as i64) as f64;
                    let y = b as f64 + (ey * n as i64) as f64;
                    let arg_r = -(curv[0][0] * x * x
                        + (curv[0][1] + curv[1][0]) * x * y
                        + curv[1][1] * y * y);
                    let arg_i = (x * c + y * s) * xi;
                    let e = arg_r.exp();
                    out[a * n + b].0 += e * arg_i.cos();
                    out[a * n + b].1 += e * arg_i.sin();
                }
            }
        }
    }
    let norm = 2.0 * std::f64::consts::PI * sigma * sigma / slant;
    for v in &mut out {
        v.0 /= norm;
        v.1 /= norm;
    }
    out
}

/// The real part of the 2-D DFT of a complex `m × n` signal (naive, only at construction).
fn dft_real(m: usize, n: usize, x: &[(f64, f64)]) -> Vec<f32> {
    let tau = 2.0 * std::f64::consts::PI;
    let mut out = vec![0f32; m * n];
    // Separable: rows then columns, in f64.
    let mut tmp = vec![(0.0f64, 0.0f64); m * n];
    for a in 0..m {
        for k in 0..n {
            let mut acc = (0.0, 0.0);
            for b in 0..n {
                let ang = -tau * (k * b) as f64 / n as f64;
                let (c, s) = (ang.cos(), ang.sin());
                let v = x[a * n + b];
                acc.0 += v.0 * c - v.1 * s;
                acc.1 += v.0 * s + v.1 * c;
            }
            tmp[a * n + k] = acc;
        }
    }
    for k in 0..n {
        for kk in 0..m {
            let mut re = 0.0;
            for a in 0..m {
                let ang = -tau * (kk * a) as f64 / m as f64;
                let v = tmp[a * n + k];
                re += v.0 * ang.cos() - v.1 * ang.sin();
            }
            out[kk * n + k] = re as f32;
        }
    }
    out
}

fn morlet(m: usize, n: usize, sigma: f64, theta: f64, xi: f64, slant: f64) -> Vec<f32> {
    let wv = gabor(m, n, sigma, theta, xi, slant);
    let mo = gabor(m, n, sigma, theta, 0.0, slant);
    let (sw, sm): (f64, f64) = (
        wv.iter().map(|v| v.0).sum::<f64>(),
        mo.iter().map(|v| v.0).sum::<f64>(),
    );
    let k = sw / sm;
    let zero_mean: Vec<(f64, f64)> = wv
        .iter()
        .zip(&mo)
        .map(|(a, b)| (a.0 - k * b.0, a.1 - k * b.1))
        .collect();
    dft_real(m, n, &zero_mean)
}

impl Scattering {
    /// The transform for images of `c × h × w` (each channel scattered separately).
    ///
    /// # Errors
    /// `nn-not-positive` for images smaller than 8 × 8 or without channels.
    pub fn new(c: usize, h: usize, w: usize) -> super::Result<Scattering> {
        if c == 0 || h < 8 || w < 8 {
            return Err(super::Error::NotPositive {
                what: "scattering input size (at least 1 x 8 x 8)",
                value: (c.min(h).min(w)) as f64,
            });
        }
        let (ph, pw) = (padded(h), padded(w));
        let (top, left) = ((ph - h) / 2, (pw - w) / 2);
        let s = 1 << J;
        let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
        let slant = 4.0 / L as f64;
        let mut psi = Vec::with_capacity(J * L);
        for j in 0..J {
            for t in 0..L {
                let theta = ((L as i64 - (L / 2) as i64 - 1) - t as i64) as f64
                    * std::f64::consts::PI
                    / L as f64;
                let sigma = 0.8 * 2f64.powi(j as i32);
                let xi = 3.0 / 4.0 * std::f64::consts::PI / 2f64.powi(j as i32);
                psi.push(morlet(ph, pw, sigma, theta, xi, slant));
            }
        }
        let phi_s = gabor(ph, pw, 0.8 * 2f64.powi(J as i32), 0.0, 0.0, 1.0);
        let phi = dft_real(ph, pw, &phi_s);
        let mut planner = FftPlanner::<f32>::new();
        Ok(Scattering {
            c,
            h,
            w,
            ph,
            pw,
            top,
            left,
            oh,
            ow,
            psi,
            phi,
            fft_w: planner.plan_fft_forward(pw),
            fft_h: planner.plan_fft_forward(ph),
            ifft_w: planner.plan_fft_inverse(pw),
            ifft_h: planner.plan_fft_inverse(ph),
            ifft_sw: planner.plan_fft_inverse(pw / s),
            ifft_sh: planner.plan_fft_inverse(ph / s),
        })
    }

    /// Output channels (`c × 81`).
    pub fn out_channels(&self) -> usize {
        self.c * CHANNELS
    }

    /// Length of one image's output (`channels × oh × ow`).
    pub fn out_len(&self) -> usize {
        self.out_channels() * self.oh * self.ow
    }

    /// Length of one input image.
    pub fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Output spatial size.
    pub fn out_hw(&self) -> (usize, usize) {
        (self.oh, self.ow)
    }

    fn fft2(&self, buf: &mut [Complex32], inverse: bool) {
        let (ph, pw) = (self.ph, self.pw);
        let (fw, fh) = if inverse {
            (&self.ifft_w, &self.ifft_h)
        } else {
            (&self.fft_w, &self.fft_h)
        };
        for row in buf.chunks_exact_mut(pw) {
            fw.process(row);
        }
        let mut col = vec![Complex32::new(0.0, 0.0); ph];
        for b in 0..pw {
            for a in 0..ph {
                col[a] = buf[a * pw + b];
            }
            fh.process(&mut col);
            for a in 0..ph {
                buf[a * pw + b] = col[a];
            }
        }
    }

    /// Low-pass by φ, subsample by 2^J (periodisation in the Fourier domain), crop: `oh × ow`
    /// values appended to `out`.
    fn lowpass(&self, spec: &[Complex32], out: &mut Vec<f32>) {
        let s = 1 << J;
        let (sh, sw) = (self.ph / s, self.pw / s);
        let mut small = vec![Complex32::new(0.0, 0.0); sh * sw];
        for a in 0..self.ph {
            for b in 0..self.pw {
                let i = a * self.pw + b;
                small[(a % sh) * sw + (b % sw)] += spec[i] * self.phi[i];
            }
        }
        for row in small.chunks_exact_mut(sw) {
            self.ifft_sw.process(row);
        }
        let mut col = vec![Complex32::new(0.0, 0.0); sh];
        for b in 0..sw {
            for a in 0..sh {
                col[a] = small[a * sw + b];
            }
            self.ifft_sh.process(&mut col);
            for a in 0..sh {
                small[a * sw + b] = col[a];
            }
        }
        // Normalisation: the full forward DFT and the small inverse one.
        let scale = 1.0 / (self.ph * self.pw) as f32;
        let (t, l) = (self.top / s, self.left / s);
        for a in t..t + self.oh {
            for b in l..l + self.ow {
                out.push(small[a * sw + b].re * scale);
            }
        }
    }

    /// Reflect-pad one `h × w` channel into the padded grid.
    fn pad(&self, ch: &[f32], buf: &mut [Complex32]) {
        for a in 0..self.ph {
            let y = reflect(a as i64 - self.top as i64, self.h);
            for b in 0..self.pw {
                let x = reflect(b as i64 - self.left as i64, self.w);
                buf[a * self.pw + b] = Complex32::new(ch[y * self.w + x], 0.0);
            }
        }
    }

    /// Scatter one image (`c × h × w`, row-major): `c × 81 × oh × ow` values, channel-major,
    /// order 0, then order 1 by (j, θ), then order 2 by (θ1, θ2) with j1 = 0, j2 = 1.
    pub fn forward(&self, img: &[f32]) -> Vec<f32> {
        let n = self.ph * self.pw;
        let mut out = Vec::with_capacity(self.out_len());
        let mut x = vec![Complex32::new(0.0, 0.0); n];
        let mut u = vec![Complex32::new(0.0, 0.0); n];
        let mut v = vec![Complex32::new(0.0, 0.0); n];
        let hw = self.h * self.w;
        for ch in img.chunks_exact(hw).take(self.c) {
            self.pad(ch, &mut x);
            self.fft2(&mut x, false);
            self.lowpass(&x, &mut out);
            let mut first: Vec<Vec<Complex32>> = Vec::new();
            let mut order2 = Vec::new();
            for (k, psi) in self.psi.iter().enumerate() {
                for i in 0..n {
                    u[i] = x[i] * psi[i];
                }
                self.fft2(&mut u, true);
                let inv = 1.0 / n as f32;
                for z in u.iter_mut() {
                    *z = Complex32::new(z.norm() * inv, 0.0);
                }
                self.fft2(&mut u, false);
                self.lowpass(&u, &mut out);
                if k / L == 0 {
                    first.push(u.clone());
                }
            }
            for u1 in &first {
                for psi in &self.psi[L..2 * L] {
                    for i in 0..n {
                        v[i] = u1[i] * psi[i];
                    }
                    self.fft2(&mut v, true);
                    let inv = 1.0 / n as f32;
                    for z in v.iter_mut() {
                        *z = Complex32::new(z.norm() * inv, 0.0);
                    }
                    self.fft2(&mut v, false);
                    self.lowpass(&v, &mut order2);
                }
            }
            out.extend(order2);
        }
        out
    }

    /// `C_h(u) = ifft(fft(u) · h) / N` in place: circular convolution with the filter whose
    /// (real) Fourier transform is `h`. Self-adjoint, since `h` is real.
    fn conv(&self, u: &mut [Complex32], h: &[f32]) {
        self.fft2(u, false);
        let inv = 1.0 / u.len() as f32;
        for (z, &f) in u.iter_mut().zip(h) {
            *z *= f * inv;
        }
        self.fft2(u, true);
    }

    /// The adjoint of [`Scattering::lowpass`] applied to the spectrum of a real map `u`
    /// (`lowpass(fft(u)) = Re(crop(subsample(C_φ u)))`): the gradient with respect to `u` of
    /// `⟨g, lowpass(fft(u))⟩`, added to `acc` (real, padded grid).
    fn lowpass_adjoint(&self, g: &[f32], acc: &mut [f32]) {
        let s = 1 << J;
        let (t, l) = (self.top / s, self.left / s);
        let mut y = vec![Complex32::new(0.0, 0.0); self.ph * self.pw];
        for a in 0..self.oh {
            for b in 0..self.ow {
                y[(s * (t + a)) * self.pw + s * (l + b)] = Complex32::new(g[a * self.ow + b], 0.0);
            }
        }
        self.conv(&mut y, &self.phi);
        acc.iter_mut().zip(&y).for_each(|(a, z)| *a += z.re);
    }

    /// The vector–Jacobian product of [`Scattering::forward`]: the gradient with respect to
    /// the image `img` of `⟨grad, forward(img)⟩` (moduli differentiated where non-zero).
    pub fn vjp(&self, img: &[f32], grad: &[f32]) -> Vec<f32> {
        let n = self.ph * self.pw;
        let hw = self.h * self.w;
        let per = self.oh * self.ow;
        let mut out = vec![0f32; self.in_len()];
        for (ci, ch) in img.chunks_exact(hw).take(self.c).enumerate() {
            let g = &grad[ci * CHANNELS * per..(ci + 1) * CHANNELS * per];
            let mut x = vec![Complex32::new(0.0, 0.0); n];
            self.pad(ch, &mut x);
            let mut gx = vec![0f32; n];
            // Order 0.
            self.lowpass_adjoint(&g[..per], &mut gx);
            for (k, psi) in self.psi.iter().enumerate() {
                // Forward: z1 = C_ψ x, u1 = |z1|.
                let mut z1 = x.clone();
                self.conv(&mut z1, psi);
                let u1: Vec<f32> = z1.iter().map(|z| z.norm()).collect();
                // dL/du1: order-1 output, and order 2 for the first scale.
                let mut gu1 = vec![0f32; n];
                self.lowpass_adjoint(&g[(1 + k) * per..(2 + k) * per], &mut gu1);
                if k / L == 0 {
                    for (l, psi2) in self.psi[L..2 * L].iter().enumerate() {
                        let at = 1 + J * L + k * L + l;
                        let mut z2: Vec<Complex32> =
                            u1.iter().map(|&v| Complex32::new(v, 0.0)).collect();
                        self.conv(&mut z2, psi2);
                        let mut gu2 = vec![0f32; n];
                        self.lowpass_adjoint(&g[at * per..(at + 1) * per], &mut gu2);
                        // d|z|: g · z / |z|, then back through C_ψ2 (self-adjoint), real part.
                        for (z, &gv) in z2.iter_mut().zip(&gu2) {
                            let m = z.norm();
                            *z = if m > 0.0 {
                                *z * (gv / m)
                            } else {
                                Complex32::new(0.0, 0.0)
                            };
                        }
                        self.conv(&mut z2, psi2);
                        gu1.iter_mut().zip(&z2).for_each(|(a, z)| *a += z.re);
                    }
                }
                for (z, &gv) in z1.iter_mut().zip(&gu1) {
                    let m = z.norm();
                    *z = if m > 0.0 {
                        *z * (gv / m)
                    } else {
                        Complex32::new(0.0, 0.0)
                    };
                }
                self.conv(&mut z1, psi);
                gx.iter_mut().zip(&z1).for_each(|(a, z)| *a += z.re);
            }
            // The adjoint of the reflect padding: fold the padded grid back onto the image.
            let o = &mut out[ci * hw..(ci + 1) * hw];
            for a in 0..self.ph {
                let y = reflect(a as i64 - self.top as i64, self.h);
                for b in 0..self.pw {
                    let xx = reflect(b as i64 - self.left as i64, self.w);
                    o[y * self.w + xx] += gx[a * self.pw + b];
                }
            }
        }
        out
    }

    /// Scatter `n` images (row-major, [`Scattering::in_len`] each), in parallel.
    pub fn forward_batch(&self, x: &[f32]) -> Vec<f32> {
        let per = self.in_len();
        x.par_chunks(per)
            .flat_map_iter(|img| self.forward(img))
            .collect()
    }
}

/// Per-sample group normalisation of scattering features (`groups` groups of consecutive
/// channels, each to zero mean and unit variance over its values): the data-independent
/// normalisation Tramèr & Boneh use, computed from the record alone.
pub fn group_norm(feat: &mut [f32], per_image: usize, groups: usize) {
    let g = (per_image / groups.max(1)).max(1);
    for img in feat.chunks_exact_mut(per_image) {
        for grp in img.chunks_mut(g) {
            let n = grp.len() as f32;
            let mean = grp.iter().sum::<f32>() / n;
            let var = grp.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var.sqrt() + 1e-5);
            grp.iter_mut().for_each(|v| *v = (*v - mean) * inv);
        }
    }
}

/// The vector–Jacobian product of [`group_norm`] for one image: given the image's features
/// `x` before normalisation and `grad` with respect to the normalised ones, the gradient with
/// respect to `x`.
pub fn group_norm_vjp(x: &[f32], grad: &[f32], groups: usize) -> Vec<f32> {
    let g = (x.len() / groups.max(1)).max(1);
    let mut out = vec![0f32; x.len()];
    for ((xs, gs), os) in x.chunks(g).zip(grad.chunks(g)).zip(out.chunks_mut(g)) {
        let n = xs.len() as f64;
        let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let sd = var.sqrt();
        let r = 1.0 / (sd + 1e-5);
        let gm = gs.iter().map(|&v| v as f64).sum::<f64>() / n;
        let gx: f64 = xs
            .iter()
            .zip(gs)
            .map(|(&a, &b)| (a as f64 - mean) * b as f64)
            .sum();
        for ((o, &a), &b) in os.iter_mut().zip(xs).zip(gs) {
            let t = if sd > 0.0 {
                r * r * (a as f64 - mean) / (n * sd) * gx
            } else {
                0.0
            };
            *o = (r * (b as f64 - gm) - t) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
}
