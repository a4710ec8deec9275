//! Poisson subsampling: each record is included independently with probability `q`, as the
//! accountants assume (SECURITY.md, "Differential privacy"). The coin flips come from an OS-keyed ChaCha20 stream.

use super::noise::SecureGaussian;

/// Poisson sampler keyed from the OS CSPRNG.
#[derive(Debug)]
pub struct PoissonSampler {
    src: SecureGaussian,
}

impl PoissonSampler {
    /// A fresh sampler keyed from the OS.
    ///
    /// # Errors
    /// `rng-failed`.
    pub fn from_os() -> Result<PoissonSampler, crate::keys::Error> {
        Ok(PoissonSampler {
            src: SecureGaussian::from_os()?,
        })
    }

    /// Indices `0..n` each kept independently with probability `q` (the batch size is random).
    pub fn sample(&mut self, n: usize, q: f64) -> Vec<usize> {
        (0..n).filter(|_| self.src.uniform() < q).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_size_is_binomial() {
        let mut s = PoissonSampler::from_os().unwrap();
        let n = 100_000;
        let q = 0.01;
        let sizes: Vec<usize> = (0..20).map(|_| s.sample(n, q).len()).collect();
        let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        // mean 1000, std ~31.5 per draw, ~7 for the mean of 20
        assert!((mean - 1000.0).abs() < 40.0, "mean batch {mean}");
        assert!(sizes.iter().any(|&k| k != sizes[0]), "batch size must vary");
    }
}
