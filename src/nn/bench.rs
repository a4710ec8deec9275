//! Timing helpers behind `retort bench dp-step`: the clipped per-sample gradient step on random
//! data, and the machine's measured matrix-multiply rate for the floating-point floor.
//!
//! Nothing here touches real data: the images are uniform noise from a fixed, non-private seed.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::gemm::{matmul, View};
use super::{clipped_grad_sums, Grouping, Net, Result};

/// Timings of one benchmark run (milliseconds per step).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepTimes {
    /// Each timed step, in order.
    pub ms: Vec<f64>,
    /// The median.
    pub median_ms: f64,
    /// The fastest.
    pub min_ms: f64,
}

/// Time `reps` DP steps (after one warm-up) of `net` on `batch` random images: per-sample
/// gradients, clipping to C = 1, the sum, Gaussian noise (σ = 1, from `dp::noise`) and an SGD
/// update — what Opacus's `optimizer.step()` after `loss.backward()` does.
///
/// # Errors
/// `nn-*` errors from the engine; the noise source failing is reported as `nn-config`.
pub fn dp_step(net: &mut Net, batch: usize, reps: usize) -> Result<StepTimes> {
    let mut rng = ChaCha8Rng::seed_from_u64(0xbe4c);
    let d = net.input_len();
    let k = net.classes() as u32;
    let x: Vec<f32> = (0..batch * d).map(|_| rng.gen_range(0.0..1.0)).collect();
    let labels: Vec<u32> = (0..batch).map(|_| rng.gen_range(0..k)).collect();
    let mut noise =
        crate::dp::noise::SecureGaussian::from_os().map_err(|e| super::Error::Config {
            why: format!("noise source: {e}"),
        })?;
    let mut ms = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let t = Instant::now();
        let mut s = clipped_grad_sums(net, &x, &labels, 1.0, Grouping::Single)?;
        let g = &mut s.sums[0];
        noise.add_noise(g, 1.0);
        let lr = 0.01 / batch as f32;
        net.params_mut()
            .iter_mut()
            .zip(g.iter())
            .for_each(|(p, g)| *p -= lr * g);
        if rep > 0 {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut sorted = ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median_ms = if sorted.is_empty() {
        0.0
    } else if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        0.5 * (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2])
    };
    Ok(StepTimes {
        min_ms: sorted.first().copied().unwrap_or(0.0),
        median_ms,
        ms,
    })
}

/// The machine's f32 matrix-multiply rate in GFLOP/s with the current rayon pool: every
/// thread multiplies its own `size × size` matrices with the same single-threaded kernel the
/// engine uses (that is how the engine uses the cores). Best of `reps` rounds.
pub fn matmul_gflops(size: usize, reps: usize) -> f64 {
    let threads = rayon::current_num_threads();
    let a: Vec<f32> = (0..size * size).map(|i| ((i % 97) as f32) * 0.01).collect();
    let b: Vec<f32> = (0..size * size).map(|i| ((i % 89) as f32) * 0.01).collect();
    let mut best = 0f64;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        (0..threads).into_par_iter().for_each(|_| {
            let mut c = vec![0f32; size * size];
            matmul(
                &mut c,
                View::rm(&a, size, size),
                View::rm(&b, size, size),
                1.0,
                false,
            );
            std::hint::black_box(&c);
        });
        let s = t.elapsed().as_secs_f64();
        let flops = 2.0 * (size as f64).powi(3) * threads as f64;
        best = best.max(flops / s / 1e9);
    }
    best
}
