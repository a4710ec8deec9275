//! Rényi-DP accountant for the Poisson-subsampled Gaussian (Mironov, Talwar & Zhang 2019) and the
//! plain Gaussian, with the improved RDP → (ε, δ) conversion (Balle et al. 2020; Canonne, Kamath &
//! Steinke 2020), following Google dp_accounting's `rdp_privacy_accountant` closely: the same
//! default orders (1.1 … 10.9 by 0.1, 11 … 63, 128, 256, 512, 1024), the closed form at integer
//! orders and the two-sided erfc series at fractional orders.
//!
//! # Privacy
//! RDP composes additively over (adaptively chosen) mechanisms, so the composed curve is the sum
//! of the per-event curves; the conversion is a valid upper bound at every order, and we take the
//! minimum. Orders at which the fractional series does not converge numerically are *excluded*
//! (as dp_accounting does), which can only make the bound larger, never unsound.

use super::super::event::Atom;
use super::super::Error;

/// dp_accounting's default RDP orders.
pub fn default_orders() -> Vec<f64> {
    let mut v: Vec<f64> = (11..=109).map(|i| i as f64 / 10.0).collect();
    v.extend((11..=63).map(|i| i as f64));
    v.extend([128.0, 256.0, 512.0, 1024.0]);
    v
}

fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x > y { (x, y) } else { (y, x) };
    if b == f64::NEG_INFINITY {
        return a;
    }
    a + (b - a).exp().ln_1p()
}

/// `ln(exp(x) - exp(y))`; `None` when the result would be negative (numerical failure).
fn log_sub(x: f64, y: f64) -> Option<f64> {
    if x < y {
        return None;
    }
    if y == f64::NEG_INFINITY {
        return Some(x);
    }
    if x == y {
        return Some(f64::NEG_INFINITY);
    }
    let d = (x - y).exp_m1();
    if d.is_infinite() {
        return Some(x);
    }
    Some(d.ln() + y)
}

/// `ln(erfc(x))`, accurate in the far right tail where `erfc` underflows.
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x < 20.0 {
        libm::erfc(x).ln()
    } else {
        // Asymptotic expansion: erfc(x) = e^{-x²}/(x√π) · (1 - 1/(2x²) + 3/(4x⁴) - 15/(8x⁶) + …)
        let r = 1.0 / (2.0 * x * x);
        let series = 1.0 - r + 3.0 * r * r - 15.0 * r * r * r + 105.0 * r * r * r * r;
        -x * x - (x * std::f64::consts::PI.sqrt()).ln() + series.ln()
    }
}

fn ln_binom_int(n: u64, k: u64) -> f64 {
    libm::lgamma(n as f64 + 1.0) - libm::lgamma(k as f64 + 1.0) - libm::lgamma((n - k) as f64 + 1.0)
}

fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let mut log_a = f64::NEG_INFINITY;
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    for i in 0..=alpha {
        let fi = i as f64;
        let c = ln_binom_int(alpha, i) + fi * lq + (alpha - i) as f64 * l1q;
        log_a = log_add(log_a, c + (fi * fi - fi) / (2.0 * sigma * sigma));
    }
    log_a / (alpha as f64 - 1.0)
}

/// The fractional-order series; `None` if it fails to converge (the order is then excluded).
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> Option<f64> {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let s2 = std::f64::consts::SQRT_2 * sigma;
    let mut log_coef = 0.0f64; // ln |binom(alpha, 0)|
    let mut positive = true;
    for i in 0..100_000u32 {
        let fi = f64::from(i);
        if i > 0 {
            let factor = (alpha - fi + 1.0) / fi;
            if factor == 0.0 {
                break;
            }
            log_coef += factor.abs().ln();
            if factor < 0.0 {
                positive = !positive;
            }
        }
        let j = alpha - fi;
        let log_t0 = log_coef + fi * lq + j * l1q;
        let log_t1 = log_coef + j * lq + fi * l1q;
        let log_e0 = 0.5f64.ln() + log_erfc((fi - z0) / s2);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / s2);
        let log_s0 = log_t0 + (fi * fi - fi) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        if positive {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0)?;
            log_a1 = log_sub(log_a1, log_s1)?;
        }
        if log_s0.max(log_s1) < -30.0 {
            let r = log_add(log_a0, log_a1) / (alpha - 1.0);
            return r.is_finite().then_some(r);
        }
    }
    None
}

/// Per-step RDP of the Poisson-subsampled Gaussian at order `alpha` (`q = 1`: plain Gaussian).
/// Returns +∞ where the order must be excluded.
pub fn rdp_subsampled_gaussian(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let r = if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha).unwrap_or(f64::INFINITY)
    };
    if r.is_nan() || r < 0.0 {
        // Rounding noise at tiny values: RDP is never negative.
        if r.is_nan() {
            f64::INFINITY
        } else {
            0.0
        }
    } else {
        r
    }
}

/// The composed RDP curve of `atoms` at `orders`.
pub(crate) fn curve(atoms: &[Atom], orders: &[f64]) -> Vec<f64> {
    orders
        .iter()
        .map(|&a| {
            atoms
                .iter()
                .map(|at| at.times as f64 * rdp_subsampled_gaussian(at.q, at.sigma, a))
                .sum()
        })
        .collect()
}

/// Improved RDP → (ε, δ) conversion; returns (ε, optimal order).
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::NAN);
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if r.is_nan() || r.is_infinite() {
            f64::INFINITY
        } else if delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    (best.0.max(0.0), best.1)
}

/// ε at `delta` of the composition of `atoms` by the RDP accountant, with the winning order.
///
/// # Errors
/// `dp-invalid-parameter` for a bad δ.
pub(crate) fn epsilon(atoms: &[Atom], delta: f64) -> Result<(f64, f64), Error> {
    super::super::Delta::new(delta)?;
    let orders = default_orders();
    let rdp = curve(atoms, &orders);
    Ok(epsilon_from_rdp(&orders, &rdp, delta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_closed_form() {
        assert_eq!(rdp_subsampled_gaussian(1.0, 2.0, 3.0), 3.0 / 8.0);
        // q=0 costs nothing
        assert_eq!(rdp_subsampled_gaussian(0.0, 2.0, 3.0), 0.0);
    }

    #[test]
    fn log_erfc_is_continuous_at_switch() {
        let a = libm::erfc(20.0).ln();
        let b = log_erfc(20.0);
        assert!((a - b).abs() < 0.01, "{a} {b}");
        assert!((log_erfc(0.0)).abs() < 1e-15);
        assert!(log_erfc(40.0) < -1600.0);
    }

    #[test]
    fn orders_match_dp_accounting() {
        let o = default_orders();
        assert_eq!(o.len(), 99 + 53 + 4);
        assert_eq!(o[0], 1.1);
        assert_eq!(*o.last().unwrap(), 1024.0);
    }
}
