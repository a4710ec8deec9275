//! Turning what a reader collected into a dataset: class checks, one shape (channels and
//! size), normalisation of every image, and the train/test split.

use crate::dataset::{Images, NewDataset, Shape, SplitInfo};

use super::{Collected, Error, Format, Options, Outcome, Part, Result, DEFAULT_TEST_FRACTION};

/// Check classes, settle the shape, normalise every image and split.
pub(super) fn assemble(col: Collected, format: Format, opts: &Options) -> Result<Outcome> {
    let Collected {
        items,
        classes,
        read,
        skipped,
        mut notes,
        root,
        dicom,
    } = col;
    if items.is_empty() {
        return Err(Error::NoImages {
            path: root,
            skipped: skipped.len(),
        });
    }
    let k = classes.len();
    let mut counts = vec![0usize; k];
    for it in &items {
        counts[it.label as usize] += 1;
    }
    if let Some(empty) = counts.iter().position(|&n| n == 0) {
        return Err(Error::EmptyClass {
            path: root,
            class: classes[empty].clone(),
        });
    }
    if k < 2 {
        return Err(Error::OneClass {
            path: root,
            class: classes.first().cloned().unwrap_or_default(),
        });
    }
    // Channels.
    let first = &items[0];
    let c = match opts.channels {
        Some(c) => c,
        None => {
            if let Some(o) = items.iter().find(|i| i.raw.c != first.raw.c) {
                return Err(Error::MixedChannels {
                    first: first.path.clone(),
                    first_channels: first.raw.c,
                    other: o.path.clone(),
                    other_channels: o.raw.c,
                });
            }
            first.raw.c
        }
    };
    if items.iter().any(|i| i.raw.c != c) {
        notes.push(format!(
            "converted to {c} channel(s) ({})",
            if c == 1 {
                "RGB to gray with BT.601 luma"
            } else {
                "gray copied to R, G and B"
            }
        ));
    }
    // Size.
    let size = match opts.size {
        Some(s) => s,
        None => {
            if let Some(o) = items
                .iter()
                .find(|i| (i.raw.h, i.raw.w) != (first.raw.h, first.raw.w))
            {
                return Err(Error::MixedSizes {
                    first: first.path.clone(),
                    first_size: (first.raw.h, first.raw.w),
                    other: o.path.clone(),
                    other_size: (o.raw.h, o.raw.w),
                });
            }
            (first.raw.h, first.raw.w)
        }
    };
    if items.iter().any(|i| (i.raw.h, i.raw.w) != size) {
        notes.push(format!(
            "resized to {}x{} (HxW) with a triangle (bilinear) filter; aspect ratio not kept",
            size.0, size.1
        ));
    }
    let shape = Shape {
        c,
        h: size.0,
        w: size.1,
    };
    let official = items.iter().any(|i| i.part != Part::Any);
    if official && opts.test_fraction.is_some() {
        return Err(Error::NotApplicable {
            path: root.to_path_buf(),
            what: "--test-fraction does not apply: the source carries an official train/test split, which is kept".into(),
        });
    }
    let mut all = Images::new(shape);
    all.pixels.reserve(items.len() * shape.len());
    let mut parts = Vec::with_capacity(items.len());
    for (n, it) in items.into_iter().enumerate() {
        if n % 4096 == 0 {
            crate::progress::check()?;
        }
        let raw = it.raw.normalize(c, size);
        all.push(&raw.pixels, it.label);
        parts.push(it.part);
    }
    let (train_idx, test_idx, split) = if official {
        let tr = (0..parts.len())
            .filter(|&i| parts[i] == Part::Train)
            .collect();
        let te = (0..parts.len())
            .filter(|&i| parts[i] == Part::Test)
            .collect();
        (tr, te, SplitInfo::Official)
    } else {
        let f = opts.test_fraction.unwrap_or(DEFAULT_TEST_FRACTION);
        let (tr, te) = random_split(&all.labels, k, f);
        (
            tr,
            te,
            SplitInfo::Random {
                test_fraction: f,
                stratified: true,
            },
        )
    };
    let train = all.select(&train_idx);
    let test = all.select(&test_idx);
    if let Some(cls) = train.per_class(k).iter().position(|&n| n == 0) {
        return Err(Error::EmptyClass {
            path: root,
            class: format!("{} (in the training split)", classes[cls]),
        });
    }
    if !skipped.is_empty() {
        notes.push(format!("{} file(s) skipped as invalid", skipped.len()));
    }
    Ok(Outcome {
        dataset: NewDataset {
            classes,
            train,
            test,
            source_format: format.name().into(),
            split,
            notes,
        },
        format,
        read,
        skipped,
        dicom,
    })
}

/// A stratified random split: in each class, a uniformly random permutation (ChaCha20 keyed by
/// the OS CSPRNG) and `round(n * f)` images held out, at least one when the class has two or
/// more, and never all. Returns sorted (train, test) indices.
pub fn random_split(labels: &[u32], classes: usize, f: f64) -> (Vec<usize>, Vec<usize>) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(crate::random::random_bytes::<32>());
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(v) = by_class.get_mut(l as usize) {
            v.push(i);
        }
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for mut v in by_class {
        v.shuffle(&mut rng);
        let n = v.len();
        let n_test = if n >= 2 {
            ((n as f64 * f).round() as usize).clamp(1, n - 1)
        } else {
            0
        };
        test.extend_from_slice(&v[..n_test]);
        train.extend_from_slice(&v[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}
