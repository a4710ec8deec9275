//! `ingest::Error`: every failure names the input at fault (path, and line for CSV) and has a
//! stable `ingest-` code and a hint that says what to do.
//!
//! [`Error::what`] is the message without any path: file and folder names can hold PHI
//! (patient names are common in DICOM file names), so audit records use it instead of the
//! full message.

use std::path::{Path, PathBuf};

use crate::error::{Class, Coded};

/// Why a DICOM file was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a readable DICOM Part 10 file (no preamble/meta group, broken encoding).
    Unreadable,
    /// The transfer syntax cannot be decoded by this build (JPEG-LS, 12-bit JPEG, …).
    TransferSyntax,
    /// Burned In Annotation (0028,0301) = YES, or a SOP class that often carries burned-in text
    /// without an explicit NO: text in the pixels that de-identification cannot remove.
    BurnedIn,
    /// Recognizable Visual Features (0028,0302) = YES, or a class that photographs the patient
    /// without an explicit NO: a face (or similar) that de-identification cannot remove.
    VisualFeatures,
    /// No pixel data (SR, RT plan, waveform, encapsulated document, …).
    NoPixelData,
    /// The pixel data is truncated or does not decode.
    PixelData,
    /// A pixel layout this reader does not handle (photometric interpretation, bit depth).
    Unsupported,
}

impl Refusal {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Unreadable => "ingest-dicom-unreadable",
            Refusal::TransferSyntax => "ingest-dicom-transfer-syntax",
            Refusal::BurnedIn => "ingest-dicom-burned-in",
            Refusal::VisualFeatures => "ingest-dicom-recognizable-features",
            Refusal::NoPixelData => "ingest-dicom-no-pixel-data",
            Refusal::PixelData => "ingest-dicom-pixel-data",
            Refusal::Unsupported => "ingest-dicom-unsupported",
        }
    }
    /// A fixed description (for audit records: no decoder text, which could quote a value).
    pub fn summary(self) -> &'static str {
        match self {
            Refusal::Unreadable => "a DICOM file is not a readable Part 10 file",
            Refusal::TransferSyntax => {
                "a DICOM file has a transfer syntax this build cannot decode"
            }
            Refusal::BurnedIn => "a DICOM file may carry burned-in annotation",
            Refusal::VisualFeatures => {
                "a DICOM file may show recognizable visual features of the patient"
            }
            Refusal::NoPixelData => "a DICOM object has no pixel data",
            Refusal::PixelData => "a DICOM file's pixel data is damaged or truncated",
            Refusal::Unsupported => "a DICOM file has an unsupported pixel layout",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Refusal::Unreadable => "export the object again as a DICOM Part 10 file (with the 128-byte preamble, DICM and a file meta group), or leave it out with --skip-invalid",
            Refusal::TransferSyntax => "transcode it to an uncompressed or JPEG 2000 transfer syntax (e.g. `gdcmconv --raw` or `dcmdjpls`), or leave it out with --skip-invalid",
            Refusal::BurnedIn => "burned-in text may identify the patient and cannot be removed here; ingest a de-identified export instead (pixels cleaned, Burned In Annotation (0028,0301) set to NO), or leave the file out with --skip-invalid",
            Refusal::VisualFeatures => "a face or other recognizable feature cannot be removed here; ingest a de-identified export instead (de-faced or cropped, with Recognizable Visual Features (0028,0302) set to NO: PS3.15's Clean Recognizable Visual Features Option), or leave the file out with --skip-invalid",
            Refusal::NoPixelData => "only image objects can be ingested; remove non-image objects (SR, RT plans, documents) or use --skip-invalid",
            Refusal::PixelData => "the pixel data is damaged or truncated; re-export the file from the archive, or leave it out with --skip-invalid",
            Refusal::Unsupported => "convert the image to MONOCHROME2 or RGB with 8 or 16 bits, or leave it out with --skip-invalid",
        }
    }
}

/// Errors of the ingest readers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source path does not exist.
    #[error("{path}: no such file or directory")]
    SourceMissing {
        /// The source given.
        path: PathBuf,
    },
    /// A file or directory could not be read.
    #[error("{path}: cannot read: {source}")]
    Unreadable {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The format could not be guessed.
    #[error("{path}: cannot tell the format of this source")]
    UnknownFormat {
        /// The source.
        path: PathBuf,
    },
    /// The source folder holds no files (nor do its subfolders).
    #[error("{path}: the folder is empty (no files in it or in its subfolders)")]
    EmptySource {
        /// The folder.
        path: PathBuf,
    },
    /// A label value outside the classes (e.g. 255 among labels 0..9).
    #[error("{path}: label {label} of record {record} is out of range: there are {classes} classes (labels 0 to {})", classes.saturating_sub(1))]
    LabelOutOfRange {
        /// The labels file.
        path: PathBuf,
        /// 0-based record index of its first occurrence.
        record: usize,
        /// The label value.
        label: u32,
        /// Classes (the labels used without a gap from 0, or the class names given).
        classes: usize,
    },
    /// An option value is out of range or does not apply.
    #[error("{what}")]
    BadOption {
        /// What is wrong.
        what: String,
    },
    /// An option that is valid in itself but does not apply to this source (e.g.
    /// `--test-fraction` for a source with an official split).
    #[error("{path}: {what}")]
    NotApplicable {
        /// The source.
        path: PathBuf,
        /// What does not apply, and why.
        what: String,
    },
    /// An IDX file is malformed (magic, dimensions, truncated, trailing bytes).
    #[error("{path}: {what}")]
    Idx {
        /// The IDX file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// An IDX image file and its label file disagree on the count.
    #[error("{images} holds {images_count} images but {labels} holds {labels_count} labels")]
    IdxCountMismatch {
        /// The image file.
        images: PathBuf,
        /// The label file.
        labels: PathBuf,
        /// Images in it.
        images_count: usize,
        /// Labels in it.
        labels_count: usize,
    },
    /// The IDX folder does not hold image/label pairs.
    #[error("{path}: {what}")]
    IdxPairs {
        /// The folder.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// An image file does not decode.
    #[error("{path}: {what}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A DICOM file was refused.
    #[error("{path}: {what}")]
    Dicom {
        /// The file.
        path: PathBuf,
        /// Why, as a stable kind.
        refusal: Refusal,
        /// Why, in words (no header values).
        what: String,
    },
    /// Images have different channel counts and `--channels` was not given.
    #[error("{first} has {first_channels} channel(s) but {other} has {other_channels}")]
    MixedChannels {
        /// The first image.
        first: PathBuf,
        /// Its channels.
        first_channels: usize,
        /// An image that differs.
        other: PathBuf,
        /// Its channels.
        other_channels: usize,
    },
    /// Images have different sizes and `--size` was not given.
    #[error("{first} is {}x{} (HxW) but {other} is {}x{}", first_size.0, first_size.1, other_size.0, other_size.1)]
    MixedSizes {
        /// The first image.
        first: PathBuf,
        /// Its (h, w).
        first_size: (usize, usize),
        /// An image that differs.
        other: PathBuf,
        /// Its (h, w).
        other_size: (usize, usize),
    },
    /// A class has no images.
    #[error("{path}: class {class:?} has no images")]
    EmptyClass {
        /// The source.
        path: PathBuf,
        /// The class.
        class: String,
    },
    /// Only one class was found.
    #[error("{path}: only one class ({class:?}) was found; at least two are needed")]
    OneClass {
        /// The source.
        path: PathBuf,
        /// The class.
        class: String,
    },
    /// No image could be read.
    #[error("{path}: no images were found ({skipped} file(s) skipped as invalid)")]
    NoImages {
        /// The source.
        path: PathBuf,
        /// Files skipped.
        skipped: usize,
    },
    /// The labels CSV is malformed or names a missing file.
    #[error("{path}:{line}: {what}")]
    Labels {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// Fewer class names than labels.
    #[error("{path}: labels go up to {} but {given} class name(s) were given", needed - 1)]
    ClassNames {
        /// The source.
        path: PathBuf,
        /// Names given.
        given: usize,
        /// Names needed.
        needed: usize,
    },
    /// A Parquet table cannot be read as images and labels.
    #[error("{path}: {what}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Reading was cancelled (Ctrl-C); nothing was stored.
    #[error(transparent)]
    Cancelled(#[from] crate::progress::Cancelled),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Result for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] = &[
        "ingest-source-missing",
        "ingest-unreadable",
        "ingest-format-unknown",
        "ingest-source-empty",
        "ingest-label-out-of-range",
        "ingest-option-invalid",
        "ingest-option-not-applicable",
        "ingest-idx-invalid",
        "ingest-idx-count-mismatch",
        "ingest-idx-pairs",
        "ingest-image-invalid",
        "ingest-dicom-unreadable",
        "ingest-dicom-transfer-syntax",
        "ingest-dicom-burned-in",
        "ingest-dicom-recognizable-features",
        "ingest-dicom-no-pixel-data",
        "ingest-dicom-pixel-data",
        "ingest-dicom-unsupported",
        "ingest-mixed-channels",
        "ingest-mixed-sizes",
        "ingest-empty-class",
        "ingest-one-class",
        "ingest-no-images",
        "ingest-labels-invalid",
        "ingest-class-names",
        "ingest-parquet-invalid",
        "ingest-error",
    ];

    /// A refused DICOM file.
    pub(crate) fn dicom(path: &Path, refusal: Refusal, what: impl Into<String>) -> Error {
        Error::Dicom {
            path: path.into(),
            refusal,
            what: what.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::SourceMissing { path: path.into() }
        } else {
            Error::Unreadable {
                path: path.into(),
                source,
            }
        }
    }

    /// The stable code.
    pub fn code_str(&self) -> &'static str {
        match self {
            Error::SourceMissing { .. } => "ingest-source-missing",
            Error::Unreadable { .. } => "ingest-unreadable",
            Error::UnknownFormat { .. } => "ingest-format-unknown",
            Error::EmptySource { .. } => "ingest-source-empty",
            Error::LabelOutOfRange { .. } => "ingest-label-out-of-range",
            Error::BadOption { .. } => "ingest-option-invalid",
            Error::NotApplicable { .. } => "ingest-option-not-applicable",
            Error::Idx { .. } => "ingest-idx-invalid",
            Error::IdxCountMismatch { .. } => "ingest-idx-count-mismatch",
            Error::IdxPairs { .. } => "ingest-idx-pairs",
            Error::Image { .. } => "ingest-image-invalid",
            Error::Dicom { refusal, .. } => refusal.code(),
            Error::MixedChannels { .. } => "ingest-mixed-channels",
            Error::MixedSizes { .. } => "ingest-mixed-sizes",
            Error::EmptyClass { .. } => "ingest-empty-class",
            Error::OneClass { .. } => "ingest-one-class",
            Error::NoImages { .. } => "ingest-no-images",
            Error::Labels { .. } => "ingest-labels-invalid",
            Error::ClassNames { .. } => "ingest-class-names",
            Error::Parquet { .. } => "ingest-parquet-invalid",
            Error::Cancelled(c) => c.code(),
            Error::Other(_) => "ingest-error",
        }
    }

    /// The file the error is about, if one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::SourceMissing { path }
            | Error::Unreadable { path, .. }
            | Error::UnknownFormat { path }
            | Error::EmptySource { path }
            | Error::NotApplicable { path, .. }
            | Error::LabelOutOfRange { path, .. }
            | Error::Idx { path, .. }
            | Error::IdxPairs { path, .. }
            | Error::Image { path, .. }
            | Error::Dicom { path, .. }
            | Error::EmptyClass { path, .. }
            | Error::OneClass { path, .. }
            | Error::NoImages { path, .. }
            | Error::Labels { path, .. }
            | Error::ClassNames { path, .. }
            | Error::Parquet { path, .. } => Some(path),
            Error::IdxCountMismatch { images, .. } => Some(images),
            Error::MixedChannels { other, .. } | Error::MixedSizes { other, .. } => Some(other),
            Error::BadOption { .. } | Error::Cancelled(_) | Error::Other(_) => None,
        }
    }

    /// The message without any file or folder name (for audit records: names can hold PHI);
    /// for DICOM a fixed text per refusal kind, so no decoder message (which might quote a
    /// header value) reaches the audit log.
    pub fn what(&self) -> String {
        match self {
            Error::SourceMissing { .. } => "the source does not exist".into(),
            Error::Unreadable { source, .. } => {
                format!("a file or folder cannot be read: {}", source.kind())
            }
            Error::UnknownFormat { .. } => "cannot tell the format of the source".into(),
            Error::EmptySource { .. } => "the source folder is empty".into(),
            Error::LabelOutOfRange {
                record,
                label,
                classes,
                ..
            } => format!("label {label} of record {record} is out of range of {classes} classes"),
            Error::Dicom { refusal, .. } => refusal.summary().into(),
            Error::Idx { what, .. }
            | Error::IdxPairs { what, .. }
            | Error::Image { what, .. }
            | Error::Parquet { what, .. }
            | Error::BadOption { what }
            | Error::NotApplicable { what, .. } => what.clone(),
            Error::Labels { line, what, .. } => format!("labels CSV line {line}: {what}"),
            Error::IdxCountMismatch {
                images_count,
                labels_count,
                ..
            } => format!("{images_count} images but {labels_count} labels"),
            Error::MixedChannels {
                first_channels,
                other_channels,
                ..
            } => format!("images have {first_channels} and {other_channels} channels"),
            Error::MixedSizes {
                first_size,
                other_size,
                ..
            } => format!(
                "images are {}x{} and {}x{}",
                first_size.0, first_size.1, other_size.0, other_size.1
            ),
            Error::EmptyClass { .. } => "a class has no images".into(),
            Error::OneClass { .. } => "only one class was found".into(),
            Error::NoImages { skipped, .. } => {
                format!("no images were found ({skipped} skipped as invalid)")
            }
            Error::ClassNames { given, needed, .. } => {
                format!("{given} class names given, {needed} needed")
            }
            Error::Cancelled(c) => c.to_string(),
            Error::Other(s) => s.clone(),
        }
    }
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        self.code_str()
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::SourceMissing { .. } => "check the path given as SRC".into(),
            Error::Unreadable { path, .. } => format!("check that {} exists and is readable by the user running retort", path.display()),
            Error::UnknownFormat { .. } => "give the format with --format idx|images|dicom|parquet".into(),
            Error::EmptySource { .. } => "put the data in the folder first: class folders of images (SRC/<class>/*.png), IDX pairs (train-images-*/train-labels-*), DICOM files (with --labels CSV) or a Parquet file".into(),
            Error::LabelOutOfRange { classes, .. } => format!("labels must run from 0 to {} without gaps: fix or remove the records with that label, or give one name per label value with --class-names", classes.saturating_sub(1)),
            Error::BadOption { .. } => "see `retort ingest --help` for the accepted values".into(),
            Error::NotApplicable { .. } => "leave the option out for this source".into(),
            Error::Idx { .. } => "use the original IDX files (raw or .gz) as published; a damaged download must be fetched again".into(),
            Error::IdxCountMismatch { .. } => "each images file must be paired with the labels file of the same set (train-* with train-*, t10k-* with t10k-*)".into(),
            Error::IdxPairs { .. } => "put matching `train-images-*`/`train-labels-*` (and optionally `t10k-images-*`/`t10k-labels-*`) IDX files in the folder".into(),
            Error::Image { .. } => "re-save the image as PNG or JPEG, remove it, or leave bad files out with --skip-invalid".into(),
            Error::Dicom { refusal, .. } => refusal.hint().into(),
            Error::MixedChannels { .. } => "choose the channel count with --channels 1 (gray) or --channels 3 (RGB)".into(),
            Error::MixedSizes { .. } => "choose one size with --size HxW (e.g. --size 64x64); images are resized to it".into(),
            Error::EmptyClass { .. } => "add images to that class, or remove the class (folder or label) from the source".into(),
            Error::OneClass { .. } => "a dataset needs at least two classes: add a folder (or labels) for another class".into(),
            Error::NoImages { .. } => "check that SRC holds class folders with images (ROOT/<class>/*.png), IDX pairs, DICOM files or a Parquet table, and that --format matches".into(),
            Error::Labels { .. } => "the labels CSV has one `file,class` line per image (a header line `file,label` is allowed); file names are relative to SRC".into(),
            Error::ClassNames { .. } => "give one name per label with --class-names (comma-separated, in label order)".into(),
            Error::Parquet { .. } => "the table needs a label column (integer or string, named `label`) and an image column (`image`: PNG/JPEG bytes, or a fixed-size list of floats in [0,1] or u8 with `retort.shape` = \"C,H,W\" metadata)".into(),
            Error::Cancelled(c) => return c.hint(),
            Error::Other(_) => return None,
        })
    }
    fn class(&self) -> Class {
        match self {
            Error::BadOption { .. } => Class::Usage,
            _ => Class::Input,
        }
    }
}
