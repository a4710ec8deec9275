//! The embedded demo dataset: procedurally drawn "phantom" images (nothing downloaded, nothing
//! copied), four classes of 28×28 grayscale shapes with random position, size, contrast,
//! background shading and noise. It stands in for a small hospital cohort in `retort demo`.
//!
//! The generator's randomness is not private (the images are synthetic), so it uses a fixed
//! initialisation seed: the demo is the same on every machine.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dataset::{Images, NewDataset, Shape, SplitInfo};
use crate::error::IoError;

/// Class names of the demo set.
pub const CLASSES: [&str; 4] = ["disc", "ring", "cross", "twin"];
/// Image side.
pub const SIDE: usize = 28;
/// Seed of the (non-private) demo-data generator.
const DEMO_INIT_SEED: u64 = 0x5e70_47d3;

/// Generate the demo dataset with `train_per_class` / `test_per_class` images per class.
pub fn generate(train_per_class: usize, test_per_class: usize) -> NewDataset {
    let mut rng = ChaCha8Rng::seed_from_u64(DEMO_INIT_SEED);
    let shape = Shape {
        c: 1,
        h: SIDE,
        w: SIDE,
    };
    let mut make = |per_class: usize| {
        let mut set = Images::new(shape);
        for i in 0..per_class * CLASSES.len() {
            let class = (i % CLASSES.len()) as u32;
            set.push(&draw(class, &mut rng), class);
        }
        set
    };
    let train = make(train_per_class);
    let test = make(test_per_class);
    NewDataset {
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        train,
        test,
        source_format: "demo".into(),
        split: SplitInfo::Official,
        notes: vec!["procedurally generated phantom images (retort demo); not patient data".into()],
    }
}

/// Write a generated set as an image folder `ROOT/<class>/<n>.png` (train and test images
/// together; `retort ingest` draws its own random split), the layout hospitals export.
///
/// # Errors
/// I/O errors, with the path.
pub fn write_png_folder(ds: &NewDataset, root: &std::path::Path) -> Result<(), IoError> {
    let mut n = 0usize;
    for set in [&ds.train, &ds.test] {
        for i in 0..set.len() {
            let class = &ds.classes[set.labels[i] as usize];
            let dir = root.join(class);
            crate::workspace::create_dir_all(&dir)?;
            let img = image::GrayImage::from_raw(SIDE as u32, SIDE as u32, set.image(i).to_vec())
                .expect("invariant: demo images are SIDE x SIDE grayscale");
            let path = dir.join(format!("{n:05}.png"));
            let mut bytes = Vec::new();
            img.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(|e| IoError::new("encoding", &path, std::io::Error::other(e)))?;
            crate::workspace::atomic_write(&path, &bytes)?;
            n += 1;
        }
    }
    Ok(())
}

/// Draw one phantom of `class`.
fn draw(class: u32, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let s = SIDE as f32;
    let cx = rng.gen_range(0.35..0.65) * s;
    let cy = rng.gen_range(0.35..0.65) * s;
    let r = rng.gen_range(0.18..0.30) * s;
    let aspect = rng.gen_range(0.75..1.3f32);
    let angle = rng.gen_range(0.0..std::f32::consts::PI);
    let fg = rng.gen_range(0.55..0.95f32);
    let bg = rng.gen_range(0.0..0.25f32);
    let (gx, gy) = (
        rng.gen_range(-0.006..0.006f32),
        rng.gen_range(-0.006..0.006f32),
    );
    let noise = rng.gen_range(0.02..0.08f32);
    let (ca, sa) = (angle.cos(), angle.sin());
    // Second blob for "twin".
    let sep = rng.gen_range(0.45..0.7) * r;
    let mut out = Vec::with_capacity(SIDE * SIDE);
    for y in 0..SIDE {
        for x in 0..SIDE {
            let (px, py) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            // Rotated, anisotropic coordinates.
            let u = (px * ca + py * sa) / aspect;
            let v = (-px * sa + py * ca) * aspect;
            let d = (u * u + v * v).sqrt();
            let inside = match class {
                0 => soft(r - d),
                1 => soft(r - d) * soft(d - 0.6 * r),
                2 => {
                    let bar = 0.22 * r;
                    (soft(bar - u.abs()) * soft(r - v.abs()))
                        .max(soft(bar - v.abs()) * soft(r - u.abs()))
                }
                _ => {
                    let d1 = ((u - sep) * (u - sep) + v * v).sqrt();
                    let d2 = ((u + sep) * (u + sep) + v * v).sqrt();
                    soft(0.45 * r - d1).max(soft(0.45 * r - d2))
                }
            };
            let shade = bg + gx * (x as f32 - 14.0) + gy * (y as f32 - 14.0);
            let n: f32 = rng.gen_range(-1.0..1.0f32) + rng.gen_range(-1.0..1.0f32);
            let val = shade + (fg - shade) * inside + noise * n;
            out.push((val.clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    out
}

/// A smooth step over about one pixel.
fn soft(x: f32) -> f32 {
    (x + 0.5).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_is_deterministic_balanced_and_varied() {
        let a = generate(5, 2);
        let b = generate(5, 2);
        assert_eq!(a.train, b.train);
        assert_eq!(a.train.per_class(4), vec![5; 4]);
        assert_eq!(a.test.per_class(4), vec![2; 4]);
        // Images are not all the same, and not blank.
        assert_ne!(a.train.image(0), a.train.image(4));
        assert!(a.train.image(0).iter().any(|&p| p > 100));
    }
}
