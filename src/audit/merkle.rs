//! RFC 6962 (Certificate Transparency) Merkle tree hash over the audit log's lines.
//!
//! `MTH({}) = SHA-256()`, leaf = `SHA-256(0x00 ‖ line)`, node = `SHA-256(0x01 ‖ left ‖ right)`,
//! and a tree of `n` leaves splits at the largest power of two smaller than `n` (RFC 6962 §2.1,
//! RFC 9162 §2.1.1). The leaf input is a line's bytes without its `\n`.
//!
//! [`Frontier`] is the incremental form: it keeps the roots of the perfect subtrees that make
//! up the current size (one per set bit of the size, at most 64), so appending a leaf costs
//! O(1) amortised and the root at the current size costs O(log n). That lets `verify` compute
//! the root at every checkpoint's size in one pass, and lets the end-of-command checkpoint
//! extend a cached state instead of rehashing the whole log.

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::digest::{hex, unhex};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ data)`: the hash of one leaf.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[0]);
    c.update(data);
    to_hash(c)
}

/// `SHA-256(0x01 ‖ left ‖ right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[1]);
    c.update(left);
    c.update(right);
    to_hash(c)
}

/// `SHA-256()`: the root of the empty tree.
pub fn empty_root() -> Hash {
    to_hash(Context::new(&SHA256))
}

fn to_hash(c: Context) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(c.finish().as_ref());
    h
}

/// The Merkle tree hash of a list of entries, by the recursive definition (reference
/// implementation for tests; use [`Frontier`] for logs).
pub fn mth<T: AsRef<[u8]>>(entries: &[T]) -> Hash {
    match entries.len() {
        0 => empty_root(),
        1 => leaf_hash(entries[0].as_ref()),
        n => {
            let k = largest_power_of_two_below(n);
            node_hash(&mth(&entries[..k]), &mth(&entries[k..]))
        }
    }
}

fn largest_power_of_two_below(n: usize) -> usize {
    debug_assert!(n > 1);
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// Incremental RFC 6962 tree: the roots of the perfect subtrees covering the leaves so far,
/// largest (leftmost) first. Subtree `i` has `2^h` leaves where the `h` are the set bits of
/// `size`, in decreasing order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (height, root) pairs, heights strictly decreasing.
    stack: Vec<(u32, Hash)>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a leaf given as its line bytes.
    pub fn push_entry(&mut self, data: &[u8]) {
        self.push_leaf_hash(leaf_hash(data));
    }

    /// Append a leaf given as its leaf hash.
    pub fn push_leaf_hash(&mut self, h: Hash) {
        let mut cur = (0u32, h);
        while let Some(&(height, left)) = self.stack.last() {
            if height != cur.0 {
                break;
            }
            self.stack.pop();
            cur = (height + 1, node_hash(&left, &cur.1));
        }
        self.stack.push(cur);
        self.size += 1;
    }

    /// The Merkle tree hash of the leaves so far: fold the perfect subtrees from the right,
    /// `node(S1, node(S2, … Sm))`, which is exactly RFC 6962's split rule.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }

    /// Serialisable form (for the checkpoint cache).
    pub fn to_state(&self) -> FrontierState {
        FrontierState {
            size: self.size,
            subtrees: self.stack.iter().map(|(_, h)| hex(h)).collect(),
        }
    }

    /// Rebuild from the serialisable form; `None` if it is inconsistent (wrong number of
    /// subtrees for the size, bad hex).
    pub fn from_state(s: &FrontierState) -> Option<Frontier> {
        let heights: Vec<u32> = (0..64u32).rev().filter(|b| s.size >> b & 1 == 1).collect();
        if heights.len() != s.subtrees.len() {
            return None;
        }
        let mut stack = Vec::with_capacity(heights.len());
        for (h, text) in heights.into_iter().zip(&s.subtrees) {
            let bytes = unhex(text)?;
            let hash: Hash = bytes.try_into().ok()?;
            stack.push((h, hash));
        }
        Some(Frontier {
            size: s.size,
            stack,
        })
    }
}

/// A [`Frontier`] as JSON: the size and the perfect-subtree roots (hex, largest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontierState {
    /// Number of leaves.
    pub size: u64,
    /// Perfect-subtree roots, hex, largest first.
    pub subtrees: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Vectors: ../shared/reference/provenance.md §3.2 (TESTED there against a reference model,
    // matching RFC 6962).
    #[test]
    fn rfc6962_known_answers() {
        let none: [&[u8]; 0] = [];
        assert_eq!(
            hex(&mth(&none)),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&mth(&[b""])),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(
            hex(&mth(&[b"a", b"b", b"c"])),
            "36642e73c2540ab121e3a6bf9545b0a24982cd830eb13d3cd19de3ce6c021ec1"
        );
    }

    #[test]
    fn frontier_matches_recursive_definition_for_every_size() {
        let entries: Vec<Vec<u8>> = (0..70u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut f = Frontier::new();
        assert_eq!(f.root(), mth::<Vec<u8>>(&[]));
        for (i, e) in entries.iter().enumerate() {
            f.push_entry(e);
            assert_eq!(f.root(), mth(&entries[..=i]), "size {}", i + 1);
            let back = Frontier::from_state(&f.to_state()).unwrap();
            assert_eq!(back, f);
        }
    }

    #[test]
    fn fail_inconsistent_state_is_rejected() {
        let bad = FrontierState {
            size: 3,
            subtrees: vec![hex(&[0u8; 32])],
        };
        assert!(Frontier::from_state(&bad).is_none());
        let bad_hex = FrontierState {
            size: 1,
            subtrees: vec!["zz".into()],
        };
        assert!(Frontier::from_state(&bad_hex).is_none());
    }

    proptest! {
        #[test]
        fn frontier_equals_mth(entries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..40)) {
            let mut f = Frontier::new();
            for e in &entries {
                f.push_entry(e);
            }
            prop_assert_eq!(f.root(), mth(&entries));
        }
    }
}
