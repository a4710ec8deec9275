//! The keyed dataset fingerprint (version 2): the privacy ledger is keyed by it, so the budget
//! follows the images, not the name they were ingested under.
//!
//! # Definition
//! For every image `i` (training and test split alike):
//!
//! ```text
//! d_i = SHA-256( "retort.image.v2\0" ‖ c ‖ h ‖ w ‖ pixels_i ‖ len(class_i) ‖ class_i )
//! ```
//!
//! with `c, h, w` and `len` as u64 little-endian, `pixels_i` the stored 8-bit row-major C,H,W
//! bytes and `class_i` the image's class **name** (UTF-8; names, not label numbers, so a
//! re-ingest that numbers the classes differently still matches). Then
//!
//! ```text
//! fingerprint = HMAC-SHA256( workspace secret, "retort.dataset-fingerprint.v2\0" ‖ n ‖ sort(d_1 … d_n) )
//! ```
//!
//! over the digests sorted bytewise, duplicates kept (a multiset). The result does not depend
//! on the order of the images or on how they were split into train and test, so re-ingesting
//! the same images under any name, with a fresh random split, gives the same fingerprint and
//! resumes their spent budget.
//!
//! # What it does not do
//! Any change to the stored bytes gives a different fingerprint: a subset, a superset, one
//! changed pixel or label, or the same pictures resized or converted (`--size`, channels) are
//! different datasets to the ledger, with a fresh budget. Composition across overlapping sets
//! is not tracked (SECURITY.md says so); the log shows every ingest with its fingerprint.
//!
//! # Privacy
//! Keyed with the workspace secret: without it the fingerprint is not a hash anyone can test
//! a guessed image set against. It is public metadata (SECURITY.md) and enters packages.

use crate::digest::hex;
use crate::keys::HmacSecret;

use super::{Images, Shape};

/// Domain tag of the per-image digest.
pub const IMAGE_TAG: &[u8] = b"retort.image.v2\0";
/// Domain tag of the dataset fingerprint.
pub const DATASET_TAG: &[u8] = b"retort.dataset-fingerprint.v2\0";

/// The SHA-256 digest of one image with its class name (see the module docs).
pub fn image_digest(shape: Shape, pixels: &[u8], class: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(IMAGE_TAG);
    for d in [shape.c, shape.h, shape.w] {
        ctx.update(&(d as u64).to_le_bytes());
    }
    ctx.update(pixels);
    ctx.update(&(class.len() as u64).to_le_bytes());
    ctx.update(class.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The per-image digests of every image in `splits`, sorted (a multiset, duplicates kept).
///
/// Returns `None` when a label has no class name or a pixel buffer does not match its shape.
pub fn sorted_digests(classes: &[String], splits: &[&Images]) -> Option<Vec<[u8; 32]>> {
    let mut v = Vec::with_capacity(splits.iter().map(|s| s.len()).sum());
    for s in splits {
        if s.pixels.len() != s.len() * s.shape.len() {
            return None;
        }
        for i in 0..s.len() {
            let class = classes.get(s.labels[i] as usize)?;
            v.push(image_digest(s.shape, s.image(i), class));
        }
    }
    v.sort_unstable();
    Some(v)
}

/// The keyed fingerprint (lowercase hex) of the images in `splits` (see the module docs).
///
/// Returns `None` when a label has no class name or a pixel buffer does not match its shape.
pub fn fingerprint_v2(
    secret: &HmacSecret,
    classes: &[String],
    splits: &[&Images],
) -> Option<String> {
    let digests = sorted_digests(classes, splits)?;
    let mut mac = secret.context();
    mac.update(DATASET_TAG);
    mac.update(&(digests.len() as u64).to_le_bytes());
    for d in &digests {
        mac.update(d);
    }
    Some(hex(mac.sign().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret() -> HmacSecret {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        std::fs::write(&p, "ab".repeat(32)).unwrap();
        HmacSecret::load(&p).unwrap()
    }

    const SHAPE: Shape = Shape { c: 1, h: 2, w: 2 };

    fn images(items: &[([u8; 4], u32)]) -> Images {
        let mut im = Images::new(SHAPE);
        for (p, l) in items {
            im.push(p, *l);
        }
        im
    }

    fn classes() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn known_properties() {
        let s = secret();
        let all = images(&[([1, 2, 3, 4], 0), ([5, 6, 7, 8], 1), ([9, 9, 9, 9], 2)]);
        let fp = fingerprint_v2(&s, &classes(), &[&all]).unwrap();
        assert_eq!(fp.len(), 64);
        // Another split of the same images, in another order.
        let train = images(&[([9, 9, 9, 9], 2), ([1, 2, 3, 4], 0)]);
        let test = images(&[([5, 6, 7, 8], 1)]);
        assert_eq!(
            fingerprint_v2(&s, &classes(), &[&train, &test]).unwrap(),
            fp
        );
        // Class names, not numbers: renumbered classes with the same names match.
        let renum = images(&[([1, 2, 3, 4], 2), ([5, 6, 7, 8], 0), ([9, 9, 9, 9], 1)]);
        let names = vec!["b".to_string(), "c".into(), "a".into()];
        assert_eq!(fingerprint_v2(&s, &names, &[&renum]).unwrap(), fp);
        // A subset is another dataset.
        let sub = images(&[([1, 2, 3, 4], 0), ([5, 6, 7, 8], 1)]);
        assert_ne!(fingerprint_v2(&s, &classes(), &[&sub]).unwrap(), fp);
        // A duplicate image counts (multiset).
        let dup = images(&[
            ([1, 2, 3, 4], 0),
            ([1, 2, 3, 4], 0),
            ([5, 6, 7, 8], 1),
            ([9, 9, 9, 9], 2),
        ]);
        assert_ne!(fingerprint_v2(&s, &classes(), &[&dup]).unwrap(), fp);
        // Another secret, another fingerprint.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s2");
        std::fs::write(&p, "cd".repeat(32)).unwrap();
        let other = HmacSecret::load(&p).unwrap();
        assert_ne!(fingerprint_v2(&other, &classes(), &[&all]).unwrap(), fp);
        // A label without a class name is refused.
        let bad = images(&[([1, 2, 3, 4], 7)]);
        assert!(fingerprint_v2(&s, &classes(), &[&bad]).is_none());
    }

    fn set() -> impl Strategy<Value = Vec<([u8; 4], u32)>> {
        proptest::collection::vec((any::<[u8; 4]>(), 0u32..3), 1..12)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Invariant under permutation and re-splitting; changes with one pixel or one label.
        #[test]
        fn invariant_under_order_and_split_sensitive_to_content(
            items in set(), seed in any::<u64>(), cut in 0usize..12,
            which in 0usize..12, byte in 0usize..4, flip in 1u8..=255, relabel in 1u32..3,
        ) {
            let s = secret();
            let fp = fingerprint_v2(&s, &classes(), &[&images(&items)]).unwrap();
            // Permute (Fisher-Yates with a test RNG) and split anywhere.
            let mut perm = items.clone();
            let mut x = seed | 1;
            for i in (1..perm.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                perm.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let k = cut % (perm.len() + 1);
            let (a, b) = perm.split_at(k);
            prop_assert_eq!(&fingerprint_v2(&s, &classes(), &[&images(b), &images(a)]).unwrap(), &fp);
            // One pixel changed.
            let i = which % items.len();
            let mut px = items.clone();
            px[i].0[byte] ^= flip;
            prop_assert_ne!(&fingerprint_v2(&s, &classes(), &[&images(&px)]).unwrap(), &fp);
            // One label changed.
            let mut lb = items.clone();
            lb[i].1 = (lb[i].1 + relabel) % 3;
            prop_assert_ne!(&fingerprint_v2(&s, &classes(), &[&images(&lb)]).unwrap(), &fp);
        }
    }
}
