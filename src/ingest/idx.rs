//! MNIST-style IDX files, raw or gzip: a folder holding `<set>-images-*` / `<set>-labels-*`
//! pairs. `train-*` + `t10k-*` (or `test-*`) keep that official split; a single pair gets a
//! random split.
//!
//! IDX layout: magic `00 00 <type> <ndims>` (type 0x08 = unsigned byte is the only one
//! accepted), then `ndims` big-endian u32 dimensions, then the data, row-major. Images are
//! `n×h×w` (or `n×h×w×c` with c = 1 or 3); labels are `n`. Truncated data, trailing bytes,
//! wrong magic and implausible sizes are errors naming the file.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{
    advance, class_names_for, list_dir, Collected, Error, Item, Options, Part, Raw, Result,
};
use crate::progress::{Event, Sink};

/// Largest decompressed IDX file accepted (4 GiB).
pub const MAX_BYTES: u64 = 1 << 32;

/// A parsed IDX header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Element type code (0x08 = u8).
    pub dtype: u8,
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Byte offset of the data.
    pub data_offset: usize,
}

impl Header {
    /// Number of elements (product of the dimensions), if it fits.
    pub fn elements(&self) -> Option<usize> {
        self.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
}

/// Parse an IDX header and check that the data that follows has exactly the declared size.
///
/// # Errors
/// A description of what is wrong (the caller adds the path).
///
/// # Panics
/// Never.
pub fn parse_header(bytes: &[u8]) -> std::result::Result<Header, String> {
    if bytes.len() < 4 {
        return Err(format!(
            "too short for an IDX header ({} bytes)",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "wrong magic number {:02x}{:02x}{:02x}{:02x} (an IDX file starts with 0000)",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    let dtype = bytes[2];
    if dtype != 0x08 {
        return Err(format!(
            "element type 0x{dtype:02x} is not supported (only 0x08, unsigned byte)"
        ));
    }
    let nd = bytes[3] as usize;
    if nd == 0 || nd > 4 {
        return Err(format!("{nd} dimensions (1 to 4 are supported)"));
    }
    let data_offset = 4 + 4 * nd;
    if bytes.len() < data_offset {
        return Err("truncated in the header".into());
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let h = Header {
        dtype,
        dims,
        data_offset,
    };
    let n = h
        .elements()
        .filter(|&n| n as u64 <= MAX_BYTES)
        .ok_or_else(|| format!("dimensions {:?} are implausibly large", h.dims))?;
    let have = bytes.len() - data_offset;
    if have < n {
        return Err(format!(
            "truncated: the header declares {n} bytes of data ({:?}) but only {have} follow",
            h.dims
        ));
    }
    if have > n {
        return Err(format!(
            "{} trailing bytes after the {n} bytes the header declares ({:?})",
            have - n,
            h.dims
        ));
    }
    Ok(h)
}

/// Read a file, decompressing gzip (by its magic bytes), at most [`MAX_BYTES`].
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .take(MAX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::Idx {
                path: path.into(),
                what: format!("gzip data is damaged: {e}"),
            })?;
        if out.len() as u64 > MAX_BYTES {
            return Err(Error::Idx {
                path: path.into(),
                what: "decompresses to more than 4 GiB".into(),
            });
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Images of an IDX image file: (n, c, h, w, data after the header, HWC when c = 3).
struct ImageFile {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    bytes: Vec<u8>,
    offset: usize,
}

fn parse_images(path: &Path, bytes: Vec<u8>) -> Result<ImageFile> {
    let bad = |what: String| Error::Idx {
        path: path.into(),
        what,
    };
    let h = parse_header(&bytes).map_err(bad)?;
    let (n, ih, iw, c) = match h.dims[..] {
        [n, ih, iw] => (n, ih, iw, 1),
        [n, ih, iw, c] if c == 1 || c == 3 => (n, ih, iw, c),
        _ => {
            return Err(bad(format!(
                "dimensions {:?} are not images (n×h×w or n×h×w×c with c = 1 or 3); is this a labels file?",
                h.dims
            )))
        }
    };
    if ih == 0 || iw == 0 {
        return Err(bad(format!("images of size {ih}x{iw}")));
    }
    Ok(ImageFile {
        n,
        c,
        h: ih,
        w: iw,
        offset: h.data_offset,
        bytes,
    })
}

fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    let bad = |what: String| Error::Idx {
        path: path.into(),
        what,
    };
    let h = parse_header(bytes).map_err(bad)?;
    if h.dims.len() != 1 {
        return Err(bad(format!(
            "dimensions {:?} are not labels (one dimension); is this an images file?",
            h.dims
        )));
    }
    Ok(bytes[h.data_offset..].to_vec())
}

/// Find `(set, images file, labels file)` pairs in a folder.
fn pairs(dir: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    let mut images = std::collections::BTreeMap::new();
    let mut labels = std::collections::BTreeMap::new();
    for p in list_dir(dir)?.into_iter().filter(|p| p.is_file()) {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let (key, is_images) = if let Some(i) = name.find("-images") {
            (name[..i].to_string(), true)
        } else if let Some(i) = name.find("-labels") {
            (name[..i].to_string(), false)
        } else {
            continue;
        };
        let map = if is_images { &mut images } else { &mut labels };
        if let Some(prev) = map.insert(key.clone(), p.clone()) {
            return Err(Error::IdxPairs {
                path: dir.into(),
                what: format!(
                    "two files for the same set {key:?}: {} and {}",
                    prev.display(),
                    p.display()
                ),
            });
        }
    }
    let mut out = Vec::new();
    for (k, img) in &images {
        match labels.get(k) {
            Some(l) => out.push((k.clone(), img.clone(), l.clone())),
            None => {
                return Err(Error::IdxPairs {
                    path: dir.into(),
                    what: format!("{} has no matching `{k}-labels-*` file", img.display()),
                })
            }
        }
    }
    if let Some((k, l)) = labels.iter().find(|(k, _)| !images.contains_key(*k)) {
        return Err(Error::IdxPairs {
            path: dir.into(),
            what: format!("{} has no matching `{k}-images-*` file", l.display()),
        });
    }
    if out.is_empty() {
        return Err(Error::IdxPairs {
            path: dir.into(),
            what: "no `*-images-*` / `*-labels-*` IDX files found".into(),
        });
    }
    Ok(out)
}

/// Read an IDX folder.
pub(crate) fn read(src: &Path, opts: &Options, progress: Sink<'_>) -> Result<Collected> {
    if src.is_file() {
        return Err(Error::IdxPairs {
            path: src.into(),
            what: "is a single file; IDX ingest reads a folder of images/labels pairs".into(),
        });
    }
    let sets = pairs(src)?;
    let part_of = |key: &str| -> Result<Part> {
        if sets.len() == 1 {
            return Ok(Part::Any);
        }
        match key {
            "train" => Ok(Part::Train),
            "t10k" | "test" => Ok(Part::Test),
            other => Err(Error::IdxPairs {
                path: src.into(),
                what: format!(
                    "several sets found, and {other:?} is neither `train` nor `t10k`/`test`"
                ),
            }),
        }
    };
    if sets.len() > 2 {
        return Err(Error::IdxPairs {
            path: src.into(),
            what: format!("{} sets found; expected `train` and `t10k`", sets.len()),
        });
    }
    let mut col = Collected::new(src);
    // First occurrence (labels file, record) of every label value.
    let mut seen: std::collections::BTreeMap<u32, (PathBuf, usize)> = Default::default();
    let mut shape: Option<(PathBuf, (usize, usize, usize))> = None;
    for (key, ipath, lpath) in &sets {
        let part = part_of(key)?;
        let imgs = parse_images(ipath, read_maybe_gz(ipath)?)?;
        let labels = parse_labels(lpath, &read_maybe_gz(lpath)?)?;
        if imgs.n != labels.len() {
            return Err(Error::IdxCountMismatch {
                images: ipath.clone(),
                labels: lpath.clone(),
                images_count: imgs.n,
                labels_count: labels.len(),
            });
        }
        match &shape {
            Some((first, s)) if *s != (imgs.c, imgs.h, imgs.w) => {
                return Err(Error::MixedSizes {
                    first: first.clone(),
                    first_size: (s.1, s.2),
                    other: ipath.clone(),
                    other_size: (imgs.h, imgs.w),
                })
            }
            Some(_) => {}
            None => shape = Some((ipath.clone(), (imgs.c, imgs.h, imgs.w))),
        }
        progress(Event::Start {
            label: "reading IDX images",
            total: imgs.n as u64,
        });
        let len = imgs.c * imgs.h * imgs.w;
        let data = &imgs.bytes[imgs.offset..];
        col.items.reserve(imgs.n);
        for (i, &l) in labels.iter().enumerate() {
            if i % 4096 == 0 {
                crate::progress::check()?;
                advance(progress, 4096.min((imgs.n - i) as u64));
            }
            let px = &data[i * len..(i + 1) * len];
            let pixels = if imgs.c == 3 {
                // HWC → CHW.
                let plane = imgs.h * imgs.w;
                let mut v = vec![0u8; len];
                for (k, &b) in px.iter().enumerate() {
                    v[(k % 3) * plane + k / 3] = b;
                }
                v
            } else {
                px.to_vec()
            };
            seen.entry(u32::from(l))
                .or_insert_with(|| (lpath.clone(), i));
            col.items.push(Item {
                raw: Raw {
                    c: imgs.c,
                    h: imgs.h,
                    w: imgs.w,
                    pixels,
                },
                label: l as u32,
                part,
                path: ipath.clone(),
            });
        }
        progress(Event::Finish);
        col.read += 2;
    }
    col.classes = dense_classes(&seen, opts.class_names.as_ref(), src)?;
    if sets.len() == 2 {
        col.notes
            .push("official IDX split kept (train-* for training, t10k-* held out)".into());
    }
    Ok(col)
}

/// The class names for the label values `seen` (each with where it first occurs): the names
/// given, or `0..K` for labels used from 0 without a gap. A label beyond them (e.g. 255 among
/// 0..9, a common "unlabelled" marker) is reported as out of range, not as empty classes.
fn dense_classes(
    seen: &std::collections::BTreeMap<u32, (PathBuf, usize)>,
    given: Option<&Vec<String>>,
    src: &Path,
) -> Result<Vec<String>> {
    let classes = match given {
        Some(n) => n.len(),
        None => (0..).take_while(|l| seen.contains_key(l)).count(),
    };
    if classes == 0 {
        // No label 0 at all: the classes as numbered, so the missing ones are named.
        let max = seen.keys().next_back().copied().unwrap_or(0);
        return class_names_for(max, given, src);
    }
    if let Some((&label, (path, record))) = seen.range(classes as u32..).next_back() {
        return Err(Error::LabelOutOfRange {
            path: path.clone(),
            record: *record,
            label,
            classes,
        });
    }
    Ok(match given {
        Some(n) => n.clone(),
        None => (0..classes).map(|i| i.to_string()).collect(),
    })
}

/// Fuzzing hook: parse arbitrary bytes as an IDX images file and a labels file.
#[cfg(fuzzing)]
pub fn fuzz_idx(data: &[u8]) {
    let p = Path::new("fuzz.idx");
    if let Ok(h) = parse_header(data) {
        assert!(h.data_offset + h.elements().unwrap_or(0) == data.len());
    }
    let _ = parse_images(p, data.to_vec());
    let _ = parse_labels(p, data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn header_accepts_exact_and_rejects_the_rest() {
        let good = idx(&[2, 2, 3], &[0; 12]);
        let h = parse_header(&good).unwrap();
        assert_eq!(h.dims, vec![2, 2, 3]);
        assert_eq!(h.data_offset, 16);
        assert!(parse_header(&good[..good.len() - 1])
            .unwrap_err()
            .contains("truncated"));
        let mut long = good.clone();
        long.push(0);
        assert!(parse_header(&long).unwrap_err().contains("trailing"));
        let mut magic = good.clone();
        magic[0] = 1;
        assert!(parse_header(&magic).unwrap_err().contains("magic"));
        let mut ty = good.clone();
        ty[2] = 0x0d;
        assert!(parse_header(&ty).unwrap_err().contains("type"));
        assert!(parse_header(&idx(&[u32::MAX, u32::MAX, 2], &[])).is_err());
    }

    #[test]
    fn hwc_images_and_label_files_are_told_apart() {
        let p = Path::new("x");
        let f = parse_images(p, idx(&[1, 1, 2, 3], &[1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!((f.n, f.c, f.h, f.w), (1, 3, 1, 2));
        assert!(parse_images(p, idx(&[3], &[0, 1, 2])).is_err());
        assert!(parse_labels(p, &idx(&[1, 2, 2], &[0; 4])).is_err());
    }

    proptest! {
        /// Whatever the bytes, the parser returns (no panic), and when it accepts, the data is
        /// exactly the declared size.
        #[test]
        fn header_parser_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(h) = parse_header(&bytes) {
                prop_assert_eq!(h.data_offset + h.elements().unwrap(), bytes.len());
                prop_assert_eq!(h.dtype, 8);
            }
        }

        /// Any well-formed file parses back to its dimensions; any cut or extension is refused.
        #[test]
        fn header_round_trip(dims in proptest::collection::vec(1u32..5, 1..4), cut in 1usize..8) {
            let n: usize = dims.iter().map(|&d| d as usize).product();
            let f = idx(&dims, &vec![7; n]);
            let h = parse_header(&f).unwrap();
            prop_assert_eq!(h.dims, dims.iter().map(|&d| d as usize).collect::<Vec<_>>());
            let cut = cut.min(f.len());
            prop_assert!(parse_header(&f[..f.len() - cut]).is_err());
            let mut longer = f.clone();
            longer.extend(std::iter::repeat_n(0u8, cut));
            prop_assert!(parse_header(&longer).is_err());
        }
    }
}
