//! Format readers (IDX, image folders, DICOM, Parquet) into the canonical dataset
//! ([`crate::dataset::NewDataset`]), with de-identification.
//!
//! Guarantees:
//! - Only pixels and labels leave a reader: no header field, EXIF/PNG text chunk, DICOM
//!   attribute, UID, date or name reaches the dataset (see [`deid`] for DICOM).
//! - Every image is converted to one shape C×H×W (channels by `--channels` or what the
//!   images are; size by `--size` with a stated filter, or the images' common size).
//! - One bad file fails the whole read unless `skip_invalid` is set; then it is listed in
//!   [`Outcome::skipped`] with a stable reason code. Nothing is stored by this module: the
//!   caller stores the result with [`crate::dataset::store`] (atomic), so a failed ingest leaves
//!   nothing behind.
//! - The train/test split keeps the source's official split (IDX `train-*`/`t10k-*`) or is
//!   drawn per class with a uniformly random permutation from a ChaCha20 stream keyed by the
//!   OS CSPRNG ([`crate::random::random_bytes`]); never from a user seed.
//! - Never panics on input; third-party decoders run behind `catch_unwind` as a last defence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dataset::NewDataset;
use crate::progress::{Event, Sink};

mod assemble;
pub mod deid;
pub mod dicom;
mod error;
pub mod idx;
pub mod images;
pub mod parquet;
mod pixels;

pub use assemble::random_split;
pub use error::{Error, Result};

/// Source formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// MNIST-style IDX files (raw or gzip).
    Idx,
    /// A folder `ROOT/<class>/*.{png,jpg,jpeg}`.
    Images,
    /// DICOM files in class folders, or a folder plus a labels CSV.
    Dicom,
    /// A Parquet table with a label and an image column.
    Parquet,
}

impl Format {
    /// The name used on the command line and in metadata.
    pub fn name(self) -> &'static str {
        match self {
            Format::Idx => "idx",
            Format::Images => "images",
            Format::Dicom => "dicom",
            Format::Parquet => "parquet",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Format, String> {
        Ok(match s {
            "idx" => Format::Idx,
            "images" => Format::Images,
            "dicom" => Format::Dicom,
            "parquet" => Format::Parquet,
            _ => {
                return Err(format!(
                    "unknown format {s:?} (auto, idx, images, dicom, parquet)"
                ))
            }
        })
    }
}

/// Image extensions the `images` reader accepts (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Guess the format of `src` from its contents: a Parquet file (`PAR1`), IDX files (magic or
/// `*-ubyte*` names), DICOM (`DICM` preamble or `.dcm`), or image class folders.
///
/// # Errors
/// `ingest-source-missing`, `ingest-unreadable`, `ingest-format-unknown`.
pub fn detect(src: &Path) -> Result<Format> {
    let meta = std::fs::metadata(src).map_err(|e| Error::io(src, e))?;
    if meta.is_file() {
        return sniff_file(src).ok_or_else(|| Error::UnknownFormat { path: src.into() });
    }
    let entries = list_dir(src)?;
    let mut votes = [0usize; 4];
    let mut look = |p: &Path| {
        if let Some(f) = sniff_file(p) {
            votes[f as usize] += 1;
        } else if has_ext(p, &IMAGE_EXTENSIONS) {
            votes[Format::Images as usize] += 1;
        }
    };
    for e in &entries {
        if e.is_dir() {
            for f in list_dir(e)?.iter().filter(|p| p.is_file()).take(8) {
                look(f);
            }
        } else {
            look(e);
        }
    }
    let best = (0..4).max_by_key(|&i| votes[i]).unwrap_or(0);
    if votes[best] == 0 {
        return Err(Error::UnknownFormat { path: src.into() });
    }
    Ok([Format::Idx, Format::Images, Format::Dicom, Format::Parquet][best])
}

fn sniff_file(p: &Path) -> Option<Format> {
    use std::io::Read;
    let mut head = [0u8; 132];
    let n = std::fs::File::open(p)
        .and_then(|mut f| {
            let mut n = 0;
            while n < head.len() {
                match f.read(&mut head[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            Ok(n)
        })
        .ok()?;
    let head = &head[..n];
    let name = p.file_name()?.to_string_lossy().to_ascii_lowercase();
    if head.starts_with(b"PAR1") {
        Some(Format::Parquet)
    } else if head.len() >= 132 && &head[128..132] == b"DICM" || has_ext(p, &["dcm", "dicom"]) {
        Some(Format::Dicom)
    } else if (head.len() >= 4 && head[0] == 0 && head[1] == 0 && head[2] == 8)
        || name.contains("-ubyte")
        || name.contains("idx1")
        || name.contains("idx3")
    {
        Some(Format::Idx)
    } else {
        None
    }
}

/// True if `p`'s extension is one of `exts` (case-insensitive).
pub(crate) fn has_ext(p: &Path, exts: &[&str]) -> bool {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| exts.contains(&e.as_str()))
}

/// Sorted entries of a directory, without hidden ones.
/// Whether `dir` holds a file (not hidden) within `depth` levels (stops at the first).
fn has_files(dir: &Path, depth: usize) -> Result<bool> {
    for p in list_dir(dir)? {
        if p.is_file() || (depth > 1 && p.is_dir() && has_files(&p, depth - 1)?) {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(crate) fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        if !e.file_name().to_string_lossy().starts_with('.') {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

/// What the caller asks of an ingest.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The format (`None`: [`detect`]).
    pub format: Option<Format>,
    /// Resize every image to `(h, w)` (triangle filter); `None`: keep the common size.
    pub size: Option<(usize, usize)>,
    /// Held-out fraction for a random split (`None`: 0.2, or the official split if any).
    pub test_fraction: Option<f64>,
    /// List bad files and go on instead of failing.
    pub skip_invalid: bool,
    /// Output channels (1 or 3; `None`: what the images are).
    pub channels: Option<usize>,
    /// DICOM: a CSV mapping file names (relative to the source folder) to class names.
    pub labels: Option<PathBuf>,
    /// Class names for integer labels (IDX, Parquet without names), index = label.
    pub class_names: Option<Vec<String>>,
}

impl Options {
    /// Check the values that are wrong in themselves (`--channels`, `--test-fraction`,
    /// `--size`), before anything is read.
    ///
    /// # Errors
    /// `ingest-option-invalid` (exit 2).
    pub fn check(&self) -> Result<()> {
        let opts = self;
        if let Some(c) = opts.channels {
            if c != 1 && c != 3 {
                return Err(Error::BadOption {
                    what: format!("--channels {c}: only 1 and 3 are supported"),
                });
            }
        }
        if let Some(f) = opts.test_fraction {
            if !(f > 0.0 && f < 1.0) {
                return Err(Error::BadOption {
                    what: format!("--test-fraction {f}: it must be between 0 and 1 (exclusive)"),
                });
            }
        }
        if let Some((h, w)) = opts.size {
            if h == 0 || w == 0 || h > 4096 || w > 4096 {
                return Err(Error::BadOption {
                    what: format!("--size {h}x{w}: height and width must be 1 to 4096"),
                });
            }
        }
        Ok(())
    }
}

/// Default held-out fraction of a random split.
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

/// A file that was left out (with `skip_invalid`).
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The file (shown to the operator only; never audited: file names can hold PHI).
    pub path: PathBuf,
    /// Stable reason code (the error's code).
    pub code: &'static str,
    /// The reason in words.
    pub reason: String,
}

/// The result of reading a source.
#[derive(Debug)]
pub struct Outcome {
    /// The dataset to store.
    pub dataset: NewDataset,
    /// The format read.
    pub format: Format,
    /// Files read successfully.
    pub read: usize,
    /// Files left out, with reasons.
    pub skipped: Vec<Skipped>,
    /// DICOM: what de-identification dropped (counts only).
    pub dicom: Option<deid::Inventory>,
}

impl Outcome {
    /// Skipped files per reason code (what goes into audit details).
    pub fn reason_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for s in &self.skipped {
            *m.entry(s.code).or_insert(0) += 1;
        }
        m
    }
}

/// One decoded image, any channel count and size, before normalisation.
#[derive(Clone)]
pub struct Raw {
    /// Channels (1 or 3).
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// `c*h*w` bytes, row-major C,H,W.
    pub pixels: Vec<u8>,
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Raw({}x{}x{})", self.c, self.h, self.w)
    }
}

impl Raw {
    /// From an `image` crate image: gray/gray-alpha → 1 channel, colour → 3 (alpha dropped).
    pub fn from_dynamic(img: &image::DynamicImage) -> Raw {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if img.color().has_color() {
            let rgb = img.to_rgb8();
            let mut pixels = vec![0u8; 3 * h * w];
            for (i, p) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    pixels[c * h * w + i] = p.0[c];
                }
            }
            Raw { c: 3, h, w, pixels }
        } else {
            Raw {
                c: 1,
                h,
                w,
                pixels: img.to_luma8().into_raw(),
            }
        }
    }

    /// Convert to `c` channels (RGB → gray with ITU-R BT.601 luma; gray → RGB by copying) and
    /// resize to `(h, w)` with the triangle (bilinear, area-aware when shrinking) filter.
    pub fn normalize(self, c: usize, size: (usize, usize)) -> Raw {
        let mut r = self;
        if r.c != c {
            let plane = r.h * r.w;
            r.pixels = if c == 1 {
                (0..plane)
                    .map(|i| {
                        let (rd, g, b) = (
                            r.pixels[i] as f32,
                            r.pixels[plane + i] as f32,
                            r.pixels[2 * plane + i] as f32,
                        );
                        (0.299 * rd + 0.587 * g + 0.114 * b)
                            .round()
                            .clamp(0.0, 255.0) as u8
                    })
                    .collect()
            } else {
                r.pixels.repeat(3)
            };
            r.c = c;
        }
        if (r.h, r.w) != size {
            let plane = r.h * r.w;
            let mut out = Vec::with_capacity(c * size.0 * size.1);
            for ch in 0..c {
                let buf = image::GrayImage::from_raw(
                    r.w as u32,
                    r.h as u32,
                    r.pixels[ch * plane..(ch + 1) * plane].to_vec(),
                )
                .expect("invariant: plane has w*h bytes");
                let small = image::imageops::resize(
                    &buf,
                    size.1 as u32,
                    size.0 as u32,
                    image::imageops::FilterType::Triangle,
                );
                out.extend_from_slice(small.as_raw());
            }
            r.pixels = out;
            r.h = size.0;
            r.w = size.1;
        }
        r
    }
}

/// Which split an item belongs to, when the source says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Train,
    Test,
    Any,
}

/// One labelled image from a reader.
pub(crate) struct Item {
    pub raw: Raw,
    pub label: u32,
    pub part: Part,
    pub path: PathBuf,
}

/// What a reader hands to [`assemble`].
pub(crate) struct Collected {
    pub items: Vec<Item>,
    pub classes: Vec<String>,
    pub read: usize,
    pub skipped: Vec<Skipped>,
    pub notes: Vec<String>,
    /// Where class folders / labels live (for messages).
    pub root: PathBuf,
    /// DICOM: what de-identification dropped (counts).
    pub dicom: Option<deid::Inventory>,
}

impl Collected {
    pub fn new(root: &Path) -> Collected {
        Collected {
            items: Vec::new(),
            classes: Vec::new(),
            read: 0,
            skipped: Vec::new(),
            notes: Vec::new(),
            root: root.into(),
            dicom: None,
        }
    }

    /// Record a per-file failure: fail, or (with `skip`) list it and go on.
    pub fn fail_or_skip(&mut self, skip: bool, e: Error) -> Result<()> {
        if !skip {
            return Err(e);
        }
        self.skipped.push(Skipped {
            path: e.path().map(Path::to_path_buf).unwrap_or_default(),
            code: e.code_str(),
            reason: match &e {
                Error::Dicom { what, .. } => what.clone(),
                _ => e.what(),
            },
        });
        Ok(())
    }
}

/// Read `src` into a dataset (not stored).
///
/// # Privacy
/// Reads private data; returns it to the caller, who stores it in the workspace. Only pixels
/// and labels are kept.
///
/// # Errors
/// An [`Error`] naming the file at fault and the fix; `cancelled` on Ctrl-C.
///
/// # Panics
/// Never.
pub fn read(src: &Path, opts: &Options, progress: Sink<'_>) -> Result<Outcome> {
    opts.check()?;
    if !src.exists() {
        return Err(Error::SourceMissing { path: src.into() });
    }
    if src.is_dir() && !has_files(src, 32)? {
        return Err(Error::EmptySource { path: src.into() });
    }
    let format = match opts.format {
        Some(f) => f,
        None => detect(src)?,
    };
    let collected = match format {
        Format::Idx => idx::read(src, opts, progress)?,
        Format::Images => images::read(src, opts, progress)?,
        Format::Dicom => dicom::read(src, opts, progress)?,
        Format::Parquet => parquet::read(src, opts, progress)?,
    };
    let outcome = assemble::assemble(collected, format, opts)?;
    Ok(outcome)
}

/// Report progress of `done` more files.
pub(crate) fn advance(progress: Sink<'_>, n: u64) {
    progress(Event::Advance(n));
}

/// Run a third-party decoder, turning a panic into `None` (defence in depth: a malformed file
/// must never take the process down).
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// Build class names for integer labels `0..=max`: given names, or the numbers.
pub(crate) fn class_names_for(
    max_label: u32,
    given: Option<&Vec<String>>,
    source: &Path,
) -> Result<Vec<String>> {
    let k = max_label as usize + 1;
    match given {
        Some(n) if n.len() < k => Err(Error::ClassNames {
            path: source.into(),
            given: n.len(),
            needed: k,
        }),
        Some(n) => Ok(n.clone()),
        None => Ok((0..k).map(|i| i.to_string()).collect()),
    }
}

#[cfg(test)]
mod tests;
