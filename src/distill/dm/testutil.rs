//! Shared fixtures of the `dm` unit tests.

use super::{augment, DmParams};
use crate::dataset::{Images, Shape};
use crate::nn::Activation;

pub(crate) fn toy(n_per: usize) -> Images {
    // Two classes: bright left half vs bright right half.
    let shape = Shape { c: 1, h: 12, w: 12 };
    let mut im = Images::new(shape);
    for i in 0..2 * n_per {
        let c = (i % 2) as u32;
        let px: Vec<u8> = (0..144)
            .map(|j| {
                let x = j % 12;
                let on = if c == 0 { x < 6 } else { x >= 6 };
                if on {
                    200 + (i % 50) as u8
                } else {
                    (i % 30) as u8
                }
            })
            .collect();
        im.push(&px, c);
    }
    im
}

pub(crate) fn params() -> DmParams {
    DmParams {
        nets: 3,
        width: 8,
        depth: 2,
        augment: 2,
        max_shift: 1,
        augmentation: augment::Family::Affine,
        block_means: true,
        means_weight: 2.0,
        downscale: 1,
        second_moments: false,
        rff: 0,
        rff_bandwidth: 0.5,
        rff_weight: 0.7,
        rff_scales: 1,
        sample_rate: None,
        warmup: None,
        iterations: 40,
        nets_per_iteration: 2,
        lr: 0.03,
        init_std: 0.1,
        init_smooth: 0.0,
        floor: 0.0,
        count_weight: 0.3,
        clip_norm: 1.0,
        batch: 7,
        exact_max_coords: 10_000,
        activation: Activation::Relu,
    }
}
