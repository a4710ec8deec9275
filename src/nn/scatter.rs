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
    /// Plans for the padded grid and for the subsampled one (`ph/2^J × pw/2^J`).
    full: Plans,
    small: Plans,
    /// In-place scratch every plan fits in.
    scratch_len: usize,
}

/// Forward and inverse plans for the rows and the columns of one grid.
struct Plans {
    fw: Arc<dyn Fft<f32>>,
    fh: Arc<dyn Fft<f32>>,
    iw: Arc<dyn Fft<f32>>,
    ih: Arc<dyn Fft<f32>>,
}

impl Plans {
    fn new(planner: &mut FftPlanner<f32>, h: usize, w: usize) -> Plans {
        Plans {
            fw: planner.plan_fft_forward(w),
            fh: planner.plan_fft_forward(h),
            iw: planner.plan_fft_inverse(w),
            ih: planner.plan_fft_inverse(h),
        }
    }

    fn scratch_len(&self) -> usize {
        [&self.fw, &self.fh, &self.iw, &self.ih]
            .iter()
            .map(|p| p.get_inplace_scratch_len())
            .max()
            .unwrap_or(0)
    }

    /// Unnormalised 2-D DFT of the `h × w` row-major `buf` in place (rows in one batch, then
    /// the columns through a transposed copy in `t`).
    fn fft2(
        &self,
        buf: &mut [Complex32],
        inverse: bool,
        t: &mut Vec<Complex32>,
        s: &mut [Complex32],
    ) {
        let (rows, cols) = if inverse {
            (&self.iw, &self.ih)
        } else {
            (&self.fw, &self.fh)
        };
        let (w, h) = (rows.len(), cols.len());
        rows.process_with_scratch(buf, &mut s[..rows.get_inplace_scratch_len()]);
        t.resize(buf.len(), Complex32::new(0.0, 0.0));
        for a in 0..h {
            for b in 0..w {
                t[b * h + a] = buf[a * w + b];
            }
        }
        cols.process_with_scratch(t, &mut s[..cols.get_inplace_scratch_len()]);
        for b in 0..w {
            for a in 0..h {
                buf[a * w + b] = t[b * h + a];
            }
        }
    }
}

/// Per-thread buffers of one transform call.
struct Work {
    t: Vec<Complex32>,
    s: Vec<Complex32>,
    small: Vec<Complex32>,
}

/// What [`Scattering::forward`] computed on the way, kept for the vector–Jacobian product
/// (per channel, complex maps on the padded grid): the order-1 wavelet responses `z1`
/// (`J·L`) and the order-2 responses `z2` (`L²`).
struct Tape {
    z1: Vec<Vec<Complex32>>,
    z2: Vec<Vec<Complex32>>,
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
        let full = Plans::new(&mut planner, ph, pw);
        let small = Plans::new(&mut planner, ph / s, pw / s);
        let scratch_len = full.scratch_len().max(small.scratch_len());
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
            full,
            small,
            scratch_len,
        })
    }

    /// Output channels (`c × 81`).
    pub fn out_channels(&self) -> usize {
        self.c * CHANNELS
    }

    /// Output values per image.
    pub fn out_len(&self) -> usize {
        self.out_channels() * self.oh * self.ow
    }

    /// Input values per image.
    pub fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        (self.oh, self.ow)
    }

    fn work(&self) -> Work {
        let zero = Complex32::new(0.0, 0.0);
        Work {
            t: Vec::with_capacity(self.ph * self.pw),
            s: vec![zero; self.scratch_len],
            small: Vec::with_capacity(self.ph * self.pw),
        }
    }

    fn fft2(&self, buf: &mut [Complex32], inverse: bool, wk: &mut Work) {
        self.full.fft2(buf, inverse, &mut wk.t, &mut wk.s);
    }

    /// Low-pass by φ, subsample by 2^J (periodisation in the Fourier domain), crop: `oh × ow`
    /// values appended to `out`.
    fn lowpass(&self, spec: &[Complex32], out: &mut Vec<f32>, wk: &mut Work) {
        let s = 1 << J;
        let (sh, sw) = (self.ph / s, self.pw / s);
        let mut small = std::mem::take(&mut wk.small);
        small.clear();
        small.resize(sh * sw, Complex32::new(0.0, 0.0));
        for a in 0..self.ph {
            let row = (a % sh) * sw;
            for b in 0..self.pw {
                let i = a * self.pw + b;
                small[row + (b % sw)] += spec[i] * self.phi[i];
            }
        }
        self.small.fft2(&mut small, true, &mut wk.t, &mut wk.s);
        // Normalisation: the full forward DFT and the small inverse one.
        let scale = 1.0 / (self.ph * self.pw) as f32;
        let (t, l) = (self.top / s, self.left / s);
        for a in t..t + self.oh {
            for b in l..l + self.ow {
                out.push(small[a * sw + b].re * scale);
            }
        }
        wk.small = small;
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
        self.scatter(img, None, &mut self.work())
    }

    /// [`Scattering::forward`], keeping in `tapes` (one per channel) what its
    /// vector–Jacobian product needs.
    fn scatter(&self, img: &[f32], mut tapes: Option<&mut Vec<Tape>>, wk: &mut Work) -> Vec<f32> {
        let n = self.ph * self.pw;
        let inv = 1.0 / n as f32;
        let mut out = Vec::with_capacity(self.out_len());
        let zero = Complex32::new(0.0, 0.0);
        let mut x = vec![zero; n];
        let mut u = vec![zero; n];
        let mut v = vec![zero; n];
        let hw = self.h * self.w;
        for ch in img.chunks_exact(hw).take(self.c) {
            let mut tape = Tape {
                z1: Vec::new(),
                z2: Vec::new(),
            };
            let keep = tapes.is_some();
            self.pad(ch, &mut x);
            self.fft2(&mut x, false, wk);
            self.lowpass(&x, &mut out, wk);
            let mut first: Vec<Vec<Complex32>> = Vec::new();
            let mut order2 = Vec::new();
            for (k, psi) in self.psi.iter().enumerate() {
                for i in 0..n {
                    u[i] = x[i] * psi[i];
                }
                self.fft2(&mut u, true, wk);
                if keep {
                    tape.z1.push(u.iter().map(|z| z * inv).collect());
                }
                for z in u.iter_mut() {
                    *z = Complex32::new(z.norm() * inv, 0.0);
                }
                self.fft2(&mut u, false, wk);
                self.lowpass(&u, &mut out, wk);
                if k / L == 0 {
                    first.push(u.clone());
                }
            }
            for u1 in &first {
                for psi in &self.psi[L..2 * L] {
                    for i in 0..n {
                        v[i] = u1[i] * psi[i];
                    }
                    self.fft2(&mut v, true, wk);
                    if keep {
                        tape.z2.push(v.iter().map(|z| z * inv).collect());
                    }
                    for z in v.iter_mut() {
                        *z = Complex32::new(z.norm() * inv, 0.0);
                    }
                    self.fft2(&mut v, false, wk);
                    self.lowpass(&v, &mut order2, wk);
                }
            }
            out.extend(order2);
            if let Some(t) = tapes.as_deref_mut() {
                t.push(tape);
            }
        }
        out
    }

    /// Add to `spec` the spectrum of `C_φ y`, where `y` is `g` (`oh × ow`) placed back on the
    /// subsampled positions of the padded grid: `Re(ifft(spec))` is then the adjoint of
    /// [`Scattering::lowpass`] (as a function of a real map) applied to `g`. The spectrum of a
    /// map that is zero off the 2^J-subsampled grid is the small grid's spectrum tiled, so
    /// only a small DFT is needed.
    fn add_lowpass_adjoint(&self, g: &[f32], spec: &mut [Complex32], wk: &mut Work) {
        let s = 1 << J;
        let (sh, sw) = (self.ph / s, self.pw / s);
        let (t, l) = (self.top / s, self.left / s);
        let mut small = std::mem::take(&mut wk.small);
        small.clear();
        small.resize(sh * sw, Complex32::new(0.0, 0.0));
        for a in 0..self.oh {
            for b in 0..self.ow {
                small[(t + a) * sw + l + b] = Complex32::new(g[a * self.ow + b], 0.0);
            }
        }
        self.small.fft2(&mut small, false, &mut wk.t, &mut wk.s);
        let inv = 1.0 / (self.ph * self.pw) as f32;
        for a in 0..self.ph {
            let row = (a % sh) * sw;
            for b in 0..self.pw {
                let i = a * self.pw + b;
                spec[i] += small[row + (b % sw)] * (self.phi[i] * inv);
            }
        }
        wk.small = small;
    }

    /// `Re(ifft(spec))` into `out` (the spectrum is consumed).
    fn real_inverse(&self, spec: &mut [Complex32], out: &mut [f32], wk: &mut Work) {
        self.fft2(spec, true, wk);
        out.iter_mut().zip(spec.iter()).for_each(|(o, z)| *o = z.re);
    }

    /// Through a modulus `|z|` and back through the filter `ψ` (self-adjoint; real Fourier
    /// transform): add to `acc` the spectrum of `C_ψ(z · g / |z|)` (zero where `|z| = 0`).
    fn add_modulus_adjoint(
        &self,
        z: &[Complex32],
        g: &[f32],
        psi: &[f32],
        acc: &mut [Complex32],
        buf: &mut [Complex32],
        wk: &mut Work,
    ) {
        for ((b, z), &gv) in buf.iter_mut().zip(z).zip(g) {
            let m = z.norm();
            *b = if m > 0.0 {
                z * (gv / m)
            } else {
                Complex32::new(0.0, 0.0)
            };
        }
        self.fft2(buf, false, wk);
        let inv = 1.0 / buf.len() as f32;
        for ((a, b), &f) in acc.iter_mut().zip(buf.iter()).zip(psi) {
            *a += b * (f * inv);
        }
    }

    /// The vector–Jacobian product of [`Scattering::forward`]: the gradient with respect to
    /// the image `img` of `⟨grad, forward(img)⟩` (moduli differentiated where non-zero).
    pub fn vjp(&self, img: &[f32], grad: &[f32]) -> Vec<f32> {
        self.forward_vjp(img, |_| grad.to_vec()).1
    }

    /// The forward transform of `img` and the gradient with respect to `img` of
    /// `⟨g, forward(img)⟩`, where `g = grad_of(&forward(img))`: one pass that keeps the
    /// forward's intermediate maps for the backward one (about half the work of
    /// [`Scattering::forward`] followed by [`Scattering::vjp`]).
    pub fn forward_vjp(
        &self,
        img: &[f32],
        grad_of: impl FnOnce(&[f32]) -> Vec<f32>,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut wk = self.work();
        let mut tapes = Vec::with_capacity(self.c);
        let out = self.scatter(img, Some(&mut tapes), &mut wk);
        let grad = grad_of(&out);
        assert_eq!(grad.len(), out.len(), "the gradient has the output's size");
        let n = self.ph * self.pw;
        let hw = self.h * self.w;
        let per = self.oh * self.ow;
        let zero = Complex32::new(0.0, 0.0);
        let mut res = vec![0f32; self.in_len()];
        let (mut gx_spec, mut gu1_spec, mut gu2_spec) =
            (vec![zero; n], vec![zero; n], vec![zero; n]);
        let mut buf = vec![zero; n];
        let (mut gu1, mut gu2, mut gx) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        for (ci, tape) in tapes.iter().enumerate() {
            let g = &grad[ci * CHANNELS * per..(ci + 1) * CHANNELS * per];
            gx_spec.fill(zero);
            // Order 0.
            self.add_lowpass_adjoint(&g[..per], &mut gx_spec, &mut wk);
            for (k, psi) in self.psi.iter().enumerate() {
                // dL/du1: the order-1 output, and order 2 for the first scale.
                gu1_spec.fill(zero);
                self.add_lowpass_adjoint(&g[(1 + k) * per..(2 + k) * per], &mut gu1_spec, &mut wk);
                if k / L == 0 {
                    for (l, psi2) in self.psi[L..2 * L].iter().enumerate() {
                        let at = 1 + J * L + k * L + l;
                        gu2_spec.fill(zero);
                        self.add_lowpass_adjoint(
                            &g[at * per..(at + 1) * per],
                            &mut gu2_spec,
                            &mut wk,
                        );
                        self.real_inverse(&mut gu2_spec, &mut gu2, &mut wk);
                        self.add_modulus_adjoint(
                            &tape.z2[k * L + l],
                            &gu2,
                            psi2,
                            &mut gu1_spec,
                            &mut buf,
                            &mut wk,
                        );
                    }
                }
                self.real_inverse(&mut gu1_spec, &mut gu1, &mut wk);
                self.add_modulus_adjoint(&tape.z1[k], &gu1, psi, &mut gx_spec, &mut buf, &mut wk);
            }
            self.real_inverse(&mut gx_spec, &mut gx, &mut wk);
            // The adjoint of the reflect padding: fold the padded grid back onto the image.
            let o = &mut res[ci * hw..(ci + 1) * hw];
            for a in 0..self.ph {
                let y = reflect(a as i64 - self.top as i64, self.h);
                for b in 0..self.pw {
                    let xx = reflect(b as i64 - self.left as i64, self.w);
                    o[y * self.w + xx] += gx[a * self.pw + b];
                }
            }
        }
        (out, res)
    }

    /// Scatter `n` images (row-major, [`Scattering::in_len`] each), in parallel.
    pub fn forward_batch(&self, x: &[f32]) -> Vec<f32> {
        let per = self.in_len();
        x.par_chunks(per)
            .map_init(|| self.work(), |wk, img| self.scatter(img, None, wk))
            .flatten_iter()
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
mod tests;
