//! Timing helpers behind `retort bench dp-step`: the DP-SGD step through the one mechanism on
//! random data, and the machine's measured matrix-multiply rate for the floating-point floor.
//!
//! Nothing here touches real data: the images are uniform noise from a fixed, non-private seed.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::gemm::{matmul, View};
use super::{Net, Result};
use crate::dataset::{Images, Shape};
use crate::dp::mechanism::{Allowance, Batch, GaussianSum, Grouping, Noise, Records, Sampling};

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

fn config(why: impl std::fmt::Display) -> super::Error {
    super::Error::Config {
        why: why.to_string(),
    }
}

/// Time `reps` DP steps (after one warm-up) of `net` on `batch` random images, through the
/// same path training takes ([`crate::dp::mechanism::GaussianSum::release`] over
/// [`super::per_sample_grads`], in chunks of [`super::per_sample_chunk`]): per-sample
/// gradients, clipping to C = 1, the sum, Gaussian noise (σ = 1, from `dp::noise`) and an SGD
/// update — what Opacus's `optimizer.step()` after `loss.backward()` does. Every record is in
/// every step (a release over all `batch` records), so the batch size is fixed.
///
/// # Errors
/// `nn-*` errors from the engine; a mechanism failure (e.g. the OS random source) is reported
/// as `nn-config`.
pub fn dp_step(net: &mut Net, batch: usize, reps: usize) -> Result<StepTimes> {
    let mut rng = ChaCha8Rng::seed_from_u64(0xbe4c);
    let d = net.input_len();
    let k = net.classes() as u32;
    let side = (d as f64).sqrt() as usize;
    let shape = if side * side == d {
        Shape {
            c: 1,
            h: side,
            w: side,
        }
    } else {
        Shape { c: 1, h: 1, w: d }
    };
    let mut images = Images::new(shape);
    for _ in 0..batch {
        let px: Vec<u8> = (0..d).map(|_| rng.gen()).collect();
        images.push(&px, rng.gen_range(0..k));
    }
    let data = Records::new(&images);
    let mech = GaussianSum {
        sampling: Sampling::Everyone,
        grouping: Grouping::Single,
        clip: crate::dp::ClipNorm::new(1.0).map_err(config)?,
        sigma: crate::dp::NoiseMultiplier::new(1.0).map_err(config)?,
        noise: Noise::Float,
        chunk: super::per_sample_chunk(),
    };
    let mut allowance =
        Allowance::new(&[crate::dp::DpEvent::gaussian(1.0, reps as u64 + 1)]).map_err(config)?;
    let mut ms = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let t = Instant::now();
        let grads = |b: &mut Batch<'_>| {
            let (pixels, labels, out) = (b.pixels, b.labels, b.buffer());
            super::per_sample_grads_into(net, pixels, labels, out)
        };
        let released = mech
            .release(
                &mut allowance,
                &data,
                net.num_params(),
                &grads,
                &crate::progress::silent,
            )
            .map_err(|e| match e {
                crate::dp::MechError::Record(e) => e,
                other => config(other),
            })?;
        let lr = 0.01 / batch as f64;
        net.params_mut()
            .iter_mut()
            .zip(&released.sums[0])
            .for_each(|(p, g)| *p -= (lr * g) as f32);
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
