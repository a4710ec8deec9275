//! opendp's exact Gaussian measurement for one-shot releases, and its zCDP → (ε, δ) conversion
//! (used as a cross-check of our own accountants in tests).
//!
//! # Privacy
//! [`gaussian_release`] uses `opendp::measurements::make_gaussian` on
//! `VectorDomain<AtomDomain<f64>>` with the L2 distance: every input is rounded exactly to a
//! multiple of 2^-1074 and integer *discrete Gaussian* noise (Canonne, Kamath & Steinke 2020) is
//! added with exact arithmetic, then rounded back. Its guarantee is ρ-zCDP with
//! ρ = (Δ₂/scale)²/2 (opendp's privacy map, "contrib": proven in opendp's repository but not yet
//! vetted by its committee). It is immune to the floating-point attacks on float samplers
//! (Mironov 2012). The event it costs is `DpEvent::Gaussian { sigma, count: 1 }`, which our
//! accountants bound at least as tightly as the zCDP conversion.
//!
//! Randomness: this build uses opendp with `default-features = false`, i.e. *without*
//! `use-openssl`. opendp then draws its bits from `rand 0.7`'s `thread_rng()` (ChaCha-based,
//! seeded and periodically reseeded from the OS through `getrandom`), which opendp's own
//! documentation calls "non-secure" because it is not an audited CSPRNG API. Retort's own
//! noise path (`dp::noise`) uses ChaCha20 keyed by ring's `SystemRandom`.
//!
//! Speed: about 2×10⁴ samples/s (default k), so use it for low-dimensional statistics only.

use opendp::combinators::{make_fix_delta, make_zCDP_to_approxDP};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;

use super::Error;

fn ex(e: opendp::error::Error) -> Error {
    Error::Exact(e.to_string())
}

/// Release `values + N_Z(0, (sigma·l2_sensitivity)²)` with opendp's exact discrete Gaussian.
///
/// # Privacy
/// ρ-zCDP with ρ = 1/(2σ²) under add/remove of one record whose influence on `values` is at most
/// `l2_sensitivity` in L2 norm; account it as `DpEvent::Gaussian { sigma, count: 1 }`.
///
/// # Errors
/// `dp-invalid-parameter` for a non-positive or non-finite σ or sensitivity;
/// `dp-exact-failed` if opendp refuses (e.g. non-finite values).
pub fn gaussian_release(
    values: &[f64],
    l2_sensitivity: f64,
    sigma: f64,
) -> Result<Vec<f64>, Error> {
    let sens = super::ClipNorm::new(l2_sensitivity)
        .map_err(|_| Error::invalid("l2 sensitivity", l2_sensitivity, "finite and > 0"))?;
    let sigma = super::NoiseMultiplier::new(sigma)?;
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid("released value", *v, "finite"));
    }
    let scale = sigma.get() * sens.get();
    let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L2Distance::<f64>::default(),
        scale,
        None,
    )
    .map_err(ex)?;
    m.invoke(&values.to_vec()).map_err(ex)
}

/// opendp's ρ of the exact Gaussian at noise multiplier σ (sensitivity 1).
///
/// # Errors
/// `dp-exact-failed`.
pub fn gaussian_rho(sigma: f64) -> Result<f64, Error> {
    let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L2Distance::<f64>::default(),
        sigma,
        None,
    )
    .map_err(ex)?;
    m.map(&1.0).map_err(ex)
}

/// ε at δ of the exact Gaussian (σ, sensitivity 1) through opendp's zCDP → approximate-DP
/// conversion (Canonne, Kamath & Steinke 2020): a sound but looser (≈7–10 %) bound than the PLD.
///
/// # Errors
/// `dp-invalid-parameter`, `dp-exact-failed`.
pub fn zcdp_epsilon(sigma: f64, delta: f64) -> Result<f64, Error> {
    super::NoiseMultiplier::new(sigma)?;
    super::Delta::new(delta)?;
    let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L2Distance::<f64>::default(),
        sigma,
        None,
    )
    .map_err(ex)?;
    let approx = make_zCDP_to_approxDP(m).map_err(ex)?;
    let fixed = make_fix_delta(&approx, delta).map_err(ex)?;
    let (eps, _d) = fixed.map(&1.0).map_err(ex)?;
    Ok(eps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rho_and_conversion_match_reference() {
        assert!((gaussian_rho(1.0).unwrap() - 0.5).abs() < 1e-12);
        let e = zcdp_epsilon(1.0, 1e-5).unwrap();
        assert!((e - 4.7283869849).abs() < 1e-6, "{e}");
    }

    #[test]
    fn release_adds_noise_of_the_right_scale() {
        let v = vec![0.0; 2000];
        let out = gaussian_release(&v, 1.0, 2.0).unwrap();
        let var = out.iter().map(|x| x * x).sum::<f64>() / out.len() as f64;
        assert!((var.sqrt() - 2.0).abs() < 0.2, "std {}", var.sqrt());
        assert!(gaussian_release(&v, 0.0, 1.0).is_err());
        assert!(gaussian_release(&[f64::NAN], 1.0, 1.0).is_err());
    }
}
