//! The canonical dataset: images of one shape C×H×W (8-bit, row-major C,H,W), integer labels
//! `0..K`, class names, and a fixed train/test split chosen at ingest.
//!
//! Stored in the workspace as `datasets/<name>/` with `dataset.json` (metadata, including the
//! SHA-256 of every data file) and raw little-endian arrays. A dataset directory is written in a
//! temporary directory and renamed into place, so it is either complete or absent.
//!
//! # Privacy
//! Pixels and labels are private. The metadata (shape, class names, record counts) is treated
//! as public by policy (SECURITY.md, "Differential privacy"); nothing else derived from the pixels is stored here except
//! a keyed fingerprint (HMAC with the workspace secret, [`fingerprint`]), which keys the
//! privacy ledger: the budget follows the images, not the name.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{hex, sha256_hex};
use crate::error::{Class, Coded, IoError};
use crate::workspace::{atomic_write, publish_dir, validate_name, Workspace};

mod delete;
pub mod fingerprint;
mod sheet;
mod synthetic;

pub use delete::{delete, Deleted};
pub use sheet::{contact_sheet_png, SheetImages, MAX_COLUMNS, MAX_PER_CLASS};
#[allow(unused_imports)]
pub(crate) use synthetic::string_values;
pub use synthetic::{
    check_soft_labels, parquet_columns_and_metadata, parquet_columns_and_metadata_of, parse_shape,
    read_synthetic_parquet, read_synthetic_parquet_of, soft_label_description, synthetic_schema,
    unit_to_u8, write_synthetic_parquet, FloatImages, CLASSES_KEY, SHAPE_KEY, SOFT_LABEL_COLUMN,
    SOFT_LABEL_KEY, SOFT_LABEL_TOLERANCE, VERSION_KEY,
};

/// Dataset errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such dataset.
    #[error("no dataset named {name:?} in the workspace")]
    NotFound {
        /// The name.
        name: String,
    },
    /// A dataset of that name exists.
    #[error("a dataset named {name:?} already exists")]
    Exists {
        /// The name.
        name: String,
    },
    /// Stored files do not match their metadata.
    #[error("dataset {name:?} is damaged: {why}")]
    Corrupt {
        /// The name.
        name: String,
        /// What does not match.
        why: String,
    },
    /// The dataset is not usable as asked (shape, classes, split).
    #[error("dataset {name:?}: {why}")]
    Invalid {
        /// The name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// A data file (e.g. a synthetic Parquet table) does not have the expected format.
    #[error("{path}: {why}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A run on the dataset is still running (`datasets delete` refuses).
    #[error("dataset {name:?} is in use by run {run}, which is still running")]
    InUse {
        /// The dataset.
        name: String,
        /// The running run.
        run: String,
    },
    /// The audit log could not take the record of a deletion (nothing was deleted).
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
    /// Name validation (or the workspace lock).
    #[error(transparent)]
    Name(#[from] crate::workspace::Error),
    /// File-system error.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl Error {
    /// Whether this user may not read the dataset: datasets are the workspace owner's alone
    /// (`crate::access`), so a compliance officer's read-only commands see them only through
    /// the ledger and the audit log.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Error::Io(e) if e.source.kind() == std::io::ErrorKind::PermissionDenied)
    }

    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] = &[
        "dataset-not-found",
        "dataset-exists",
        "dataset-corrupt",
        "dataset-invalid",
        "dataset-format",
        "dataset-in-use",
        "dataset-name",
        "dataset-io",
    ];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "dataset-not-found",
            Error::Exists { .. } => "dataset-exists",
            Error::Corrupt { .. } => "dataset-corrupt",
            Error::Invalid { .. } => "dataset-invalid",
            Error::Format { .. } => "dataset-format",
            Error::InUse { .. } => "dataset-in-use",
            Error::Audit(e) => e.code(),
            Error::Name(crate::workspace::Error::BadName { .. }) => "dataset-name",
            Error::Name(e) => e.code(),
            Error::Io(_) => "dataset-io",
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::NotFound { .. } => "list datasets with `retort datasets list`, or ingest one with `retort ingest`".into(),
            Error::Exists { .. } => "choose another --name; datasets are never overwritten (their budget history depends on them)".into(),
            Error::Corrupt { .. } => "the workspace was modified outside retort; restore it from backup or ingest the data again under a new name".into(),
            Error::Invalid { .. } => return None,
            Error::Format { .. } => "check that the file is a synthetic.parquet written by retort (label: int32, label_name: utf8, image: fixed_size_list<float32>, retort.shape metadata; optional soft_label: fixed_size_list<float32>[K] of probability vectors)".into(),
            Error::InUse { run, .. } => format!(
                "wait for run {run} to end (`retort runs show {run}`), then delete the dataset"
            ),
            Error::Audit(e) => return e.hint(),
            Error::Name(e) => return e.hint(),
            Error::Io(e) => return e.hint(),
        })
    }
    fn class(&self) -> Class {
        match self {
            Error::Name(e) => e.class(),
            Error::Audit(e) => e.class(),
            _ => Class::Input,
        }
    }
}

/// Result for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Image shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Channels (1 or 3).
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Shape {
    /// Values per image.
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    /// True if any dimension is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `[c, h, w]`.
    pub fn to_vec(&self) -> Vec<usize> {
        vec![self.c, self.h, self.w]
    }
}

/// Images and labels of one split, in memory.
#[derive(Clone, PartialEq)]
pub struct Images {
    /// Shape of every image.
    pub shape: Shape,
    /// `n * shape.len()` bytes, row-major C,H,W per image.
    pub pixels: Vec<u8>,
    /// One label per image, `0..classes`.
    pub labels: Vec<u32>,
}

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print pixels.
        f.debug_struct("Images")
            .field("shape", &self.shape)
            .field("n", &self.labels.len())
            .finish()
    }
}

impl Images {
    /// Empty set of this shape.
    pub fn new(shape: Shape) -> Images {
        Images {
            shape,
            pixels: Vec::new(),
            labels: Vec::new(),
        }
    }
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.shape.len();
        &self.pixels[i * n..(i + 1) * n]
    }
    /// Append one image.
    pub fn push(&mut self, pixels: &[u8], label: u32) {
        debug_assert_eq!(pixels.len(), self.shape.len());
        self.pixels.extend_from_slice(pixels);
        self.labels.push(label);
    }
    /// Images per class.
    pub fn per_class(&self, classes: usize) -> Vec<usize> {
        let mut v = vec![0; classes];
        for &l in &self.labels {
            if let Some(c) = v.get_mut(l as usize) {
                *c += 1;
            }
        }
        v
    }
    /// Image `i` as f32 in [0, 1].
    pub fn image_f32(&self, i: usize) -> Vec<f32> {
        self.image(i).iter().map(|&b| b as f32 / 255.0).collect()
    }
    /// The subset at these indices.
    pub fn select(&self, idx: &[usize]) -> Images {
        let mut out = Images::new(self.shape);
        out.pixels.reserve(idx.len() * self.shape.len());
        for &i in idx {
            out.push(self.image(i), self.labels[i]);
        }
        out
    }
}

/// How the train/test split was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SplitInfo {
    /// The source's own split (e.g. IDX `train-*` / `t10k-*`).
    Official,
    /// A uniformly random permutation from the OS CSPRNG, the first `test_fraction` held out
    /// (per class when `stratified`).
    Random {
        /// Fraction held out for testing.
        test_fraction: f64,
        /// Drawn per class (each class keeps `round(n * test_fraction)` test images).
        #[serde(default)]
        stratified: bool,
    },
}

/// `dataset.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Metadata format version.
    pub version: u32,
    /// Dataset name.
    pub name: String,
    /// `[c, h, w]`.
    pub shape: Shape,
    /// Class names, index = label.
    pub classes: Vec<String>,
    /// Training images (public metadata: the record count).
    pub train_count: usize,
    /// Held-out test images.
    pub test_count: usize,
    /// Training images per class.
    pub per_class_train: Vec<usize>,
    /// Test images per class.
    pub per_class_test: Vec<usize>,
    /// The source format (`idx`, `images`, `dicom`, `parquet`, `demo`).
    pub source_format: String,
    /// How the split was made.
    pub split: SplitInfo,
    /// Ingest notes (resize filter, channel conversion, frames taken, …; no PHI).
    #[serde(default)]
    pub notes: Vec<String>,
    /// RFC 3339 time of ingest.
    pub created: String,
    /// Keyed fingerprint (version 2, [`fingerprint`]): HMAC-SHA256 (workspace secret) over
    /// the sorted per-image digests, independent of order and split. The ledger is keyed by
    /// it. Never a plain hash of private data.
    pub fingerprint: String,
    /// The version-1 fingerprint of a dataset ingested before version 2 (an HMAC over the
    /// arrays in split order), kept so old run records and packages still resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint_v1: Option<String>,
    /// SHA-256 of each stored file (integrity of the workspace, not published).
    pub files: std::collections::BTreeMap<String, String>,
    /// Ingested for privacy auditing only (`retort ingest --audit-only`: public or test data):
    /// `retort privacy audit` runs on it, `plan` and `distill` refuse it, so it never reaches
    /// a package. Set by the operator at ingest (audited); absent = a normal dataset.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub audit_only: bool,
}

#[cfg(test)]
impl Meta {
    /// Public metadata for unit tests: `name`, `shape`, classes `c0, c1, …` with these
    /// per-class training and test counts, official split, audit-only off.
    pub(crate) fn for_test(
        name: &str,
        shape: Shape,
        per_class_train: Vec<usize>,
        per_class_test: Vec<usize>,
    ) -> Meta {
        Meta {
            version: 1,
            name: name.into(),
            shape,
            classes: (0..per_class_train.len())
                .map(|i| format!("c{i}"))
                .collect(),
            train_count: per_class_train.iter().sum(),
            test_count: per_class_test.iter().sum(),
            per_class_train,
            per_class_test,
            source_format: "test".into(),
            split: SplitInfo::Official,
            notes: vec![],
            created: "now".into(),
            fingerprint: "f".into(),
            fingerprint_v1: None,
            files: Default::default(),
            audit_only: false,
        }
    }
}

/// The `dataset.json` version written now: 2 = `fingerprint` is the version-2 fingerprint.
pub const META_VERSION: u32 = 2;

impl Meta {
    /// Whether `fingerprint` is the version-2 (order- and split-independent) fingerprint the
    /// ledger is keyed by; `false` for a dataset not yet migrated.
    pub fn has_v2_fingerprint(&self) -> bool {
        self.version >= 2
    }
}

/// A dataset as stored: metadata plus the two splits, loaded on demand.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its directory.
    pub dir: PathBuf,
    /// Metadata.
    pub meta: Meta,
}

const FILES: [&str; 4] = [
    "train-images.u8",
    "train-labels.u32le",
    "test-images.u8",
    "test-labels.u32le",
];

/// A dataset ready to be stored (the result of ingest).
#[derive(Debug, Clone)]
pub struct NewDataset {
    /// Class names.
    pub classes: Vec<String>,
    /// Training split.
    pub train: Images,
    /// Test split.
    pub test: Images,
    /// Source format name.
    pub source_format: String,
    /// Split info.
    pub split: SplitInfo,
    /// Notes.
    pub notes: Vec<String>,
}

/// Directory of dataset `name`.
pub fn dir_of(ws: &Workspace, name: &str) -> PathBuf {
    ws.datasets_dir().join(name)
}

/// Store a new dataset atomically (a temp directory renamed into place). Caller holds the lock.
///
/// # Errors
/// `dataset-exists`, `dataset-invalid`, I/O.
pub fn store(ws: &Workspace, name: &str, ds: &NewDataset) -> Result<Stored> {
    store_marked(ws, name, ds, false)
}

/// [`store`], marking the dataset audit-only ([`Meta::audit_only`]) when `audit_only` is set
/// (the marker is in `dataset.json` from the start: the dataset never exists unmarked).
///
/// # Errors
/// As [`store`].
pub fn store_marked(
    ws: &Workspace,
    name: &str,
    ds: &NewDataset,
    audit_only: bool,
) -> Result<Stored> {
    validate_name(name)?;
    let final_dir = dir_of(ws, name);
    if final_dir.exists() {
        return Err(Error::Exists { name: name.into() });
    }
    let k = ds.classes.len();
    let invalid = |why: String| Error::Invalid {
        name: name.into(),
        why,
    };
    if ds.train.shape != ds.test.shape {
        return Err(invalid("train and test shapes differ".into()));
    }
    for split in [&ds.train, &ds.test] {
        if split.pixels.len() != split.len() * split.shape.len() {
            return Err(invalid(
                "pixel buffer does not match the image count".into(),
            ));
        }
        if split.labels.iter().any(|&l| l as usize >= k) {
            return Err(invalid("a label is out of range of the class names".into()));
        }
    }
    let tmp = ws.datasets_dir().join(format!(
        ".{name}.tmp-{}",
        hex(&crate::keys::random_bytes::<4>())
    ));
    crate::workspace::create_dir_all(&tmp)?;
    let result = (|| -> Result<Stored> {
        let secret = load_secret(ws).map_err(|e| invalid(e.to_string()))?;
        let fingerprint = fingerprint::fingerprint_v2(&secret, &ds.classes, &[&ds.train, &ds.test])
            .ok_or_else(|| invalid("a label is out of range of the class names".into()))?;
        let mut files = std::collections::BTreeMap::new();
        let blobs: [Vec<u8>; 4] = [
            ds.train.pixels.clone(),
            labels_bytes(&ds.train.labels),
            ds.test.pixels.clone(),
            labels_bytes(&ds.test.labels),
        ];
        for (fname, bytes) in FILES.iter().zip(blobs.iter()) {
            atomic_write(&tmp.join(fname), bytes)?;
            files.insert(fname.to_string(), sha256_hex(bytes));
        }
        let meta = Meta {
            version: META_VERSION,
            name: name.into(),
            shape: ds.train.shape,
            classes: ds.classes.clone(),
            train_count: ds.train.len(),
            test_count: ds.test.len(),
            per_class_train: ds.train.per_class(k),
            per_class_test: ds.test.per_class(k),
            source_format: ds.source_format.clone(),
            split: ds.split.clone(),
            notes: ds.notes.clone(),
            created: crate::workspace::now_rfc3339(),
            fingerprint,
            fingerprint_v1: None,
            files,
            audit_only,
        };
        let json = serde_json::to_vec_pretty(&meta).expect("invariant: meta serializes");
        atomic_write(&tmp.join("dataset.json"), &json)?;
        publish_dir(&tmp, &final_dir)?;
        Ok(Stored {
            dir: final_dir.clone(),
            meta,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// The workspace HMAC secret (keys the fingerprints).
fn load_secret(ws: &Workspace) -> Result<crate::keys::HmacSecret, String> {
    crate::keys::HmacSecret::load(&crate::keys::KeyPaths::in_dir(&ws.keys_dir()).hmac)
        .map_err(|e| format!("cannot read the workspace HMAC secret: {e}"))
}

/// Recompute the version-2 fingerprint of a stored dataset from its files (both splits; each
/// file checked against its recorded digest). Used to migrate datasets ingested before
/// version 2.
///
/// # Privacy
/// Reads private pixels, to hash them under the workspace key; returns only the keyed digest.
///
/// # Errors
/// `dataset-corrupt`, `dataset-invalid` (secret unreadable), I/O.
pub fn compute_fingerprint(ws: &Workspace, stored: &Stored) -> Result<String> {
    let invalid = |why: String| Error::Invalid {
        name: stored.meta.name.clone(),
        why,
    };
    let secret = load_secret(ws).map_err(invalid)?;
    let train = stored.load(Split::Train)?;
    let test = stored.load(Split::Test)?;
    fingerprint::fingerprint_v2(&secret, &stored.meta.classes, &[&train, &test]).ok_or_else(|| {
        Error::Corrupt {
            name: stored.meta.name.clone(),
            why: "a stored label is out of range".into(),
        }
    })
}

/// Replace a stored dataset's `dataset.json` atomically (migration only: the data files and
/// their digests are unchanged).
///
/// # Errors
/// I/O.
pub fn rewrite_meta(stored: &Stored) -> Result<()> {
    let json = serde_json::to_vec_pretty(&stored.meta).expect("invariant: meta serializes");
    atomic_write(&stored.dir.join("dataset.json"), &json)?;
    Ok(())
}

fn labels_bytes(labels: &[u32]) -> Vec<u8> {
    labels.iter().flat_map(|l| l.to_le_bytes()).collect()
}

/// Names of stored datasets, sorted.
///
/// # Errors
/// I/O.
pub fn list(ws: &Workspace) -> Result<Vec<String>> {
    let dir = ws.datasets_dir();
    let mut v = Vec::new();
    for e in fs::read_dir(&dir).map_err(|e| IoError::new("reading", &dir, e))? {
        let e = e.map_err(|e| IoError::new("reading", &dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && e.path().join("dataset.json").exists() {
            v.push(name);
        }
    }
    v.sort();
    Ok(v)
}

/// Open a stored dataset's metadata (reads no pixels).
///
/// # Errors
/// `dataset-not-found`, `dataset-corrupt`, `dataset-name` (a malformed name: usage).
pub fn open(ws: &Workspace, name: &str) -> Result<Stored> {
    validate_name(name)?;
    let dir = dir_of(ws, name);
    let p = dir.join("dataset.json");
    let text = match fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound { name: name.into() })
        }
        Err(e) => return Err(IoError::new("reading", &p, e).into()),
    };
    let meta: Meta = serde_json::from_slice(&text).map_err(|e| Error::Corrupt {
        name: name.into(),
        why: format!("dataset.json: {e}"),
    })?;
    Ok(Stored { dir, meta })
}

/// Which split to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Split {
    /// Training split (private; only a run that has reserved budget reads it).
    Train,
    /// Held-out test split (evaluation only).
    Test,
}

impl Stored {
    /// Load one split's pixels and labels, checking sizes and digests.
    ///
    /// # Privacy
    /// Returns private data. Callers in `distill` must hold a ledger reservation first; `eval`
    /// reads only the test split (and, for the non-private baselines it labels as such, train).
    ///
    /// # Errors
    /// `dataset-corrupt`, I/O.
    pub fn load(&self, split: Split) -> Result<Images> {
        let (pf, lf, n) = match split {
            Split::Train => (FILES[0], FILES[1], self.meta.train_count),
            Split::Test => (FILES[2], FILES[3], self.meta.test_count),
        };
        let corrupt = |why: String| Error::Corrupt {
            name: self.meta.name.clone(),
            why,
        };
        let read = |f: &str| -> Result<Vec<u8>> {
            let p = self.dir.join(f);
            let b = fs::read(&p).map_err(|e| IoError::new("reading", &p, e))?;
            match self.meta.files.get(f) {
                Some(d) if *d == sha256_hex(&b) => Ok(b),
                _ => Err(corrupt(format!("{f} does not match its recorded SHA-256"))),
            }
        };
        let pixels = read(pf)?;
        let lb = read(lf)?;
        if pixels.len() != n * self.meta.shape.len() || lb.len() != n * 4 {
            return Err(corrupt(format!("{pf}/{lf} sizes do not match {n} images")));
        }
        let labels: Vec<u32> = lb
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if labels
            .iter()
            .any(|&l| l as usize >= self.meta.classes.len())
        {
            return Err(corrupt("a stored label is out of range".into()));
        }
        Ok(Images {
            shape: self.meta.shape,
            pixels,
            labels,
        })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.meta.classes.len()
    }
}

/// Path helper for tests and tools: the dataset directory.
pub fn path(ws_root: &Path, name: &str) -> PathBuf {
    ws_root.join("datasets").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> (tempfile::TempDir, Workspace) {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::create(&d.path().join("w"), "t").unwrap();
        crate::keys::KeyPaths::in_dir(&ws.keys_dir())
            .create_all()
            .unwrap();
        (d, ws)
    }

    fn tiny() -> NewDataset {
        let shape = Shape { c: 1, h: 2, w: 2 };
        let mut train = Images::new(shape);
        train.push(&[0, 1, 2, 3], 0);
        train.push(&[4, 5, 6, 7], 1);
        let mut test = Images::new(shape);
        test.push(&[9, 9, 9, 9], 1);
        NewDataset {
            classes: vec!["a".into(), "b".into()],
            train,
            test,
            source_format: "test".into(),
            split: SplitInfo::Official,
            notes: vec![],
        }
    }

    #[test]
    fn store_open_load_roundtrip() {
        let (_d, ws) = ws();
        let ds = tiny();
        store(&ws, "tiny", &ds).unwrap();
        let s = open(&ws, "tiny").unwrap();
        assert_eq!(s.meta.per_class_train, vec![1, 1]);
        assert_eq!(s.load(Split::Train).unwrap(), ds.train);
        assert_eq!(s.load(Split::Test).unwrap(), ds.test);
        assert_eq!(list(&ws).unwrap(), vec!["tiny".to_string()]);
        assert!(matches!(store(&ws, "tiny", &ds), Err(Error::Exists { .. })));
    }

    #[test]
    fn tampered_file_is_detected() {
        let (_d, ws) = ws();
        store(&ws, "tiny", &tiny()).unwrap();
        let p = dir_of(&ws, "tiny").join("train-images.u8");
        fs::write(&p, [0u8, 1, 2, 3, 4, 5, 6, 8]).unwrap();
        let s = open(&ws, "tiny").unwrap();
        assert!(matches!(s.load(Split::Train), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn bad_label_stores_nothing() {
        let (_d, ws) = ws();
        let mut ds = tiny();
        ds.train.labels[0] = 7;
        assert!(store(&ws, "bad", &ds).is_err());
        assert!(list(&ws).unwrap().is_empty());
        assert_eq!(fs::read_dir(ws.datasets_dir()).unwrap().count(), 0);
    }
}
