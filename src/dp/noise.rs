//! Gaussian noise for private releases: the only source of privacy noise in Retort.
//!
//! # Privacy
//! Samples come from a ChaCha20 stream cipher keyed with 32 bytes from the operating system's
//! CSPRNG (ring's `SystemRandom`, i.e. `getrandom`). There is deliberately no constructor that
//! takes a seed: no user, test or log can fix or learn the noise. The normal deviates are drawn
//! with the ziggurat method (`rand_distr::StandardNormal`) in f64 and scaled; this is a
//! floating-point sampler, with the known caveats (Mironov 2012) described in SECURITY.md.

use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;

/// A Gaussian noise source keyed from the OS CSPRNG. Not `Clone`, no `Debug` of its state.
pub struct SecureGaussian {
    rng: ChaCha20Rng,
}

impl std::fmt::Debug for SecureGaussian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecureGaussian { .. }")
    }
}

impl SecureGaussian {
    /// A fresh generator keyed from the OS.
    ///
    /// # Errors
    /// `rng-failed` if the OS random source fails.
    pub fn from_os() -> Result<SecureGaussian, crate::keys::Error> {
        let seed = zeroize::Zeroizing::new(crate::keys::try_random_bytes::<32>()?);
        Ok(SecureGaussian {
            rng: ChaCha20Rng::from_seed(*seed),
        })
    }

    /// Add N(0, std²) independently to every coordinate.
    pub fn add_noise(&mut self, buf: &mut [f32], std: f64) {
        for x in buf.iter_mut() {
            let z: f64 = self.rng.sample(StandardNormal);
            *x = (*x as f64 + std * z) as f32;
        }
    }

    /// Add N(0, std²) to f64 coordinates.
    pub fn add_noise_f64(&mut self, buf: &mut [f64], std: f64) {
        for x in buf.iter_mut() {
            let z: f64 = self.rng.sample(StandardNormal);
            *x += std * z;
        }
    }

    /// One uniform f64 in [0, 1) from the same keyed stream (for Poisson sampling).
    pub(crate) fn uniform(&mut self) -> f64 {
        self.rng.gen::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_right() {
        let mut g = SecureGaussian::from_os().unwrap();
        let mut v = vec![0f32; 200_000];
        g.add_noise(&mut v, 2.0);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.03, "std {}", var.sqrt());
    }

    #[test]
    fn two_generators_differ() {
        let mut a = vec![0f32; 8];
        let mut b = vec![0f32; 8];
        SecureGaussian::from_os().unwrap().add_noise(&mut a, 1.0);
        SecureGaussian::from_os().unwrap().add_noise(&mut b, 1.0);
        assert_ne!(a, b);
    }
}
