//! Float image sets and the partner-facing synthetic Parquet format (`docs/ingest.md`).
//!
//! `synthetic.parquet` has three columns — `label: int32`, `label_name: utf8`,
//! `image: fixed_size_list<float32>[C*H*W]` (row-major C,H,W, values in 0..=1) — and key-value
//! metadata `retort.shape = "C,H,W"`, `retort.version` (the Retort version that wrote it) and
//! `retort.classes` (a JSON array of every class name, so classes without rows survive a round
//! trip). The metadata is stored both in the Arrow schema and in the Parquet footer, so pyarrow,
//! pandas and polars see it without Retort. The file is written atomically.
//!
//! Optional fourth column `soft_label: fixed_size_list<float32>[K]` (K = the number of classes
//! in `retort.classes`): each row a probability vector from the run's DP teacher (finite,
//! non-negative, summing to 1 within [`SOFT_LABEL_TOLERANCE`]); `label` stays the hard class.
//! When present, the metadata key `retort.soft_label` describes it ([`soft_label_description`]).
//! Both the writer and the reader refuse rows that are not probability vectors.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, Int32Array, RecordBatch};
use arrow_array::{StringArray, StringViewArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::ChunkReader;

use super::{Error, Images, Result, Shape};
use crate::error::IoError;

/// Metadata key holding `"C,H,W"`.
pub const SHAPE_KEY: &str = "retort.shape";
/// Metadata key holding the Retort version that wrote the file.
pub const VERSION_KEY: &str = "retort.version";
/// Metadata key holding every class name as a JSON array (index = label).
pub const CLASSES_KEY: &str = "retort.classes";
/// Metadata key describing the optional `soft_label` column (a JSON object).
pub const SOFT_LABEL_KEY: &str = "retort.soft_label";
/// Name of the optional soft-label column.
pub const SOFT_LABEL_COLUMN: &str = "soft_label";
/// How far a soft-label row's sum may be from 1.
pub const SOFT_LABEL_TOLERANCE: f64 = 1e-3;

/// The value of [`SOFT_LABEL_KEY`]: what the `soft_label` column is and how to train with it.
pub fn soft_label_description() -> String {
    serde_json::json!({
        "meaning": "probability vector over retort.classes (index = label) from the run's DP teacher; label stays the hard class",
        "train": "cross-entropy against these probabilities, temperature 1",
        "share": "teacher",
    })
    .to_string()
}

/// Check that `soft` holds `n` probability vectors of length `k`: every value finite and
/// non-negative, every row summing to 1 within [`SOFT_LABEL_TOLERANCE`].
///
/// # Errors
/// A sentence naming the first bad row.
pub fn check_soft_labels(soft: &[f32], n: usize, k: usize) -> std::result::Result<(), String> {
    if k == 0 || soft.len() != n.saturating_mul(k) {
        return Err(format!(
            "soft labels hold {} values, not {n} rows of {k} class probabilities",
            soft.len()
        ));
    }
    for (i, row) in soft.chunks_exact(k).enumerate() {
        if let Some(v) = row.iter().find(|v| !v.is_finite() || **v < 0.0) {
            return Err(format!(
                "soft label row {i} holds {v}: probabilities must be finite and non-negative"
            ));
        }
        let sum: f64 = row.iter().map(|&v| v as f64).sum();
        if (sum - 1.0).abs() > SOFT_LABEL_TOLERANCE {
            return Err(format!(
                "soft label row {i} sums to {sum}, not 1 (within {SOFT_LABEL_TOLERANCE})"
            ));
        }
    }
    Ok(())
}

/// Float images (values in [0, 1]) with labels: synthetic sets and normalised views.
#[derive(Clone, PartialEq)]
pub struct FloatImages {
    /// Shape of every image.
    pub shape: Shape,
    /// `n * shape.len()` values, row-major C,H,W per image.
    pub data: Vec<f32>,
    /// One label per image, `0..classes`.
    pub labels: Vec<u32>,
    /// Optional soft labels: `n × K` probabilities, row-major (row `i` is image `i`'s
    /// probability vector over the `K` classes, index = label), from the run's DP teacher.
    /// `labels` stays the hard class. `None` for sets without them (and for views where they
    /// mean nothing).
    pub soft_labels: Option<Vec<f32>>,
}

impl std::fmt::Debug for FloatImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloatImages")
            .field("shape", &self.shape)
            .field("n", &self.labels.len())
            .field("soft_labels", &self.soft_labels.is_some())
            .finish()
    }
}

impl FloatImages {
    /// Empty set of this shape.
    pub fn new(shape: Shape) -> FloatImages {
        FloatImages {
            shape,
            data: Vec::new(),
            labels: Vec::new(),
            soft_labels: None,
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
    /// Values of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.shape.len();
        &self.data[i * n..(i + 1) * n]
    }
    /// Append one image with a hard label only. A set with soft labels loses them (a row
    /// without a probability vector would make them inconsistent): use [`FloatImages::push_soft`]
    /// for those.
    pub fn push(&mut self, values: &[f32], label: u32) {
        debug_assert_eq!(values.len(), self.shape.len());
        self.data.extend_from_slice(values);
        self.labels.push(label);
        self.soft_labels = None;
    }
    /// Append one image with its hard label and its probability vector `soft` (length K). The
    /// first image of an empty set starts the soft labels; a set whose earlier images have none
    /// (or whose rows have another length) keeps none.
    pub fn push_soft(&mut self, values: &[f32], label: u32, soft: &[f32]) {
        let keep = match &self.soft_labels {
            None => self.is_empty(),
            Some(s) => s.len() == self.len() * soft.len(),
        };
        let mut s = self.soft_labels.take().unwrap_or_default();
        self.push(values, label);
        if keep {
            s.extend_from_slice(soft);
            self.soft_labels = Some(s);
        }
    }
    /// Number of classes of the soft labels (`K`), if the set has them and they fit it.
    pub fn soft_classes(&self) -> Option<usize> {
        let s = self.soft_labels.as_ref()?;
        (!self.is_empty() && s.len().is_multiple_of(self.len())).then(|| s.len() / self.len())
    }
    /// Image `i`'s probability vector, if the set has soft labels.
    pub fn soft_label(&self, i: usize) -> Option<&[f32]> {
        let k = self.soft_classes()?;
        self.soft_labels.as_ref()?.get(i * k..(i + 1) * k)
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
    /// The u8 set (values clamped to [0, 1], rounded to the nearest of 256 levels; NaN → 0).
    pub fn to_u8(&self) -> Images {
        Images {
            shape: self.shape,
            pixels: self.data.iter().map(|&v| unit_to_u8(v)).collect(),
            labels: self.labels.clone(),
        }
    }
}

impl Images {
    /// The float set (each byte / 255).
    pub fn to_float(&self) -> FloatImages {
        FloatImages {
            shape: self.shape,
            data: self.pixels.iter().map(|&b| b as f32 / 255.0).collect(),
            labels: self.labels.clone(),
            soft_labels: None,
        }
    }
}

/// A value in [0, 1] as a byte (clamped; NaN → 0).
pub fn unit_to_u8(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

fn format_error(path: &Path, why: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// The Arrow schema of the synthetic format for images of `shape`, with the `soft_label`
/// column (K = `classes.len()`) when `soft` is true.
pub fn synthetic_schema(shape: Shape, classes: &[String], soft: bool) -> Schema {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let mut fields = vec![
        Field::new("label", DataType::Int32, false),
        Field::new("label_name", DataType::Utf8, false),
        Field::new(
            "image",
            DataType::FixedSizeList(item.clone(), shape.len() as i32),
            false,
        ),
    ];
    if soft {
        fields.push(Field::new(
            SOFT_LABEL_COLUMN,
            DataType::FixedSizeList(item, classes.len() as i32),
            false,
        ));
    }
    Schema::new_with_metadata(fields, metadata_map(shape, classes, soft))
}

fn metadata_map(shape: Shape, classes: &[String], soft: bool) -> HashMap<String, String> {
    let mut m = HashMap::from([
        (
            SHAPE_KEY.to_string(),
            format!("{},{},{}", shape.c, shape.h, shape.w),
        ),
        (
            VERSION_KEY.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            CLASSES_KEY.to_string(),
            serde_json::to_string(classes).expect("invariant: strings serialize"),
        ),
    ]);
    if soft {
        m.insert(SOFT_LABEL_KEY.to_string(), soft_label_description());
    }
    m
}

/// Write `set` as `synthetic.parquet` (the partner format, `docs/ingest.md`) at `path`, atomically.
///
/// With `set.soft_labels`, the file gets the `soft_label` column (K = `classes.len()`) and
/// the `retort.soft_label` metadata.
///
/// # Errors
/// `dataset-invalid` if a label has no class name, the buffer does not match the shape, the
/// shape is empty, or the soft labels are not `n` probability vectors over the classes; I/O
/// errors with the path.
///
/// # Panics
/// Never.
pub fn write_synthetic_parquet(path: &Path, set: &FloatImages, classes: &[String]) -> Result<()> {
    let invalid = |why: &str| Error::Invalid {
        name: path.display().to_string(),
        why: why.into(),
    };
    if set.shape.is_empty() || set.shape.len() > i32::MAX as usize {
        return Err(invalid("the image shape is empty or too large"));
    }
    if set.data.len() != set.len() * set.shape.len() {
        return Err(invalid("the value buffer does not match the image count"));
    }
    if set.labels.iter().any(|&l| l as usize >= classes.len()) {
        return Err(invalid("a label has no class name"));
    }
    if let Some(soft) = &set.soft_labels {
        if classes.len() > i32::MAX as usize {
            return Err(invalid("too many classes for soft labels"));
        }
        check_soft_labels(soft, set.len(), classes.len()).map_err(|e| invalid(&e))?;
    }
    let soft = set.soft_labels.is_some();
    let schema = Arc::new(synthetic_schema(set.shape, classes, soft));
    let labels = Int32Array::from_iter_values(set.labels.iter().map(|&l| l as i32));
    let names = StringArray::from_iter_values(set.labels.iter().map(|&l| &classes[l as usize]));
    let values: Vec<f32> = set
        .data
        .iter()
        .map(|&v| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) })
        .collect();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let images = FixedSizeListArray::try_new(
        item.clone(),
        set.shape.len() as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )
    .map_err(|e| invalid(&e.to_string()))?;
    let mut columns = vec![
        Arc::new(labels) as ArrayRef,
        Arc::new(names),
        Arc::new(images),
    ];
    if let Some(s) = &set.soft_labels {
        let soft = FixedSizeListArray::try_new(
            item,
            classes.len() as i32,
            Arc::new(Float32Array::from(s.clone())),
            None,
        )
        .map_err(|e| invalid(&e.to_string()))?;
        columns.push(Arc::new(soft));
    }
    let batch =
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| invalid(&e.to_string()))?;
    let kv = metadata_map(set.shape, classes, soft)
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, v))
        .collect();
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .set_key_value_metadata(Some(kv))
        .build();
    crate::workspace::atomic_write_with(path, 0o644, |f| {
        let mut w = ArrowWriter::try_new(f, schema, Some(props)).map_err(std::io::Error::other)?;
        w.write(&batch).map_err(std::io::Error::other)?;
        w.close().map_err(std::io::Error::other)?;
        Ok(())
    })?;
    Ok(())
}

/// The column names and the key-value metadata keys of a Parquet file (for the release
/// boundary's walk of a package).
///
/// # Errors
/// `dataset-format`, I/O.
pub fn parquet_columns_and_metadata(path: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let file = File::open(path).map_err(|e| IoError::new("reading", path, e))?;
    columns_and_metadata(path, file)
}

/// [`parquet_columns_and_metadata`] of a file's bytes in memory (`name` names it in errors).
///
/// # Errors
/// `dataset-format`.
pub fn parquet_columns_and_metadata_of(
    name: &Path,
    bytes: &[u8],
) -> Result<(Vec<String>, Vec<String>)> {
    columns_and_metadata(name, bytes::Bytes::copy_from_slice(bytes))
}

fn columns_and_metadata<T: ChunkReader + 'static>(
    path: &Path,
    src: T,
) -> Result<(Vec<String>, Vec<String>)> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(src)
        .map_err(|e| format_error(path, format!("not a readable Parquet file: {e}")))?;
    let cols = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut keys: Vec<String> = builder.schema().metadata().keys().cloned().collect();
    if let Some(kv) = builder.metadata().file_metadata().key_value_metadata() {
        keys.extend(kv.iter().map(|k| k.key.clone()));
    }
    keys.sort();
    keys.dedup();
    Ok((cols, keys))
}

/// Read a synthetic Parquet file written by [`write_synthetic_parquet`] (strict: the three
/// columns with their types and `retort.shape`; the optional `soft_label` column, when
/// present, must be a non-null `fixed_size_list<float32>[K]` with K the number of classes and
/// every row a probability vector). Returns the images (with their soft labels) and the class
/// names.
///
/// # Errors
/// `dataset-format` naming the file and what is wrong; I/O errors.
///
/// # Panics
/// Never.
pub fn read_synthetic_parquet(path: &Path) -> Result<(FloatImages, Vec<String>)> {
    let file = File::open(path).map_err(|e| IoError::new("reading", path, e))?;
    read_synthetic(path, file)
}

/// [`read_synthetic_parquet`] of a file's bytes in memory (`name` names it in errors).
///
/// # Errors
/// `dataset-format` naming `name` and what is wrong.
pub fn read_synthetic_parquet_of(name: &Path, bytes: &[u8]) -> Result<(FloatImages, Vec<String>)> {
    read_synthetic(name, bytes::Bytes::copy_from_slice(bytes))
}

fn read_synthetic<T: ChunkReader + 'static>(
    path: &Path,
    src: T,
) -> Result<(FloatImages, Vec<String>)> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(src)
        .map_err(|e| format_error(path, format!("not a readable Parquet file: {e}")))?;
    let meta = builder.schema().metadata().clone();
    let shape = meta
        .get(SHAPE_KEY)
        .and_then(|s| parse_shape(s))
        .ok_or_else(|| format_error(path, format!("missing or malformed {SHAPE_KEY} metadata")))?;
    let declared: Option<Vec<String>> = meta
        .get(CLASSES_KEY)
        .and_then(|s| serde_json::from_str(s).ok());
    let mut soft: Option<(usize, Vec<f32>)> =
        match builder.schema().field_with_name(SOFT_LABEL_COLUMN) {
            Err(_) => None,
            Ok(f) => match f.data_type() {
                DataType::FixedSizeList(item, k)
                    if *item.data_type() == DataType::Float32 && *k > 0 =>
                {
                    Some((*k as usize, Vec::new()))
                }
                DataType::FixedSizeList(..) => {
                    return Err(format_error(
                        path,
                        "`soft_label` items are not float32 (or its rows are empty)",
                    ))
                }
                _ => return Err(format_error(path, "`soft_label` is not a fixed-size list")),
            },
        };
    let reader = builder
        .build()
        .map_err(|e| format_error(path, e.to_string()))?;
    let mut set = FloatImages::new(shape);
    let mut seen: Vec<Option<String>> = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| format_error(path, e.to_string()))?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| format_error(path, format!("no `{name}` column")))
        };
        let (labels, names, images) = (col("label")?, col("label_name")?, col("image")?);
        let labels = labels
            .as_any()
            .downcast_ref::<Int32Array>()
            .ok_or_else(|| format_error(path, "`label` is not int32"))?;
        let names = string_values(names.as_ref())
            .ok_or_else(|| format_error(path, "`label_name` is not utf8"))?;
        let images = images
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .ok_or_else(|| format_error(path, "`image` is not a fixed-size list"))?;
        if images.value_length() as usize != shape.len() {
            return Err(format_error(
                path,
                format!(
                    "`image` has {} values per row but {SHAPE_KEY} says {}",
                    images.value_length(),
                    shape.len()
                ),
            ));
        }
        let values = images
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| format_error(path, "`image` items are not float32"))?;
        if labels.null_count() + images.null_count() + values.null_count() > 0 {
            return Err(format_error(path, "null labels or images"));
        }
        if let Some((k, acc)) = &mut soft {
            let col = col(SOFT_LABEL_COLUMN)?;
            let (got, rows) = soft_column(path, col.as_ref())?;
            if got != *k {
                return Err(format_error(
                    path,
                    "`soft_label` changes length between batches",
                ));
            }
            acc.extend(rows);
        }
        for (row, name) in names.iter().enumerate() {
            let l = labels.value(row);
            let Ok(l) = u32::try_from(l) else {
                return Err(format_error(path, format!("negative label {l}")));
            };
            let name = name.ok_or_else(|| format_error(path, "null label_name"))?;
            if seen.len() <= l as usize {
                if l as usize > 1_000_000 {
                    return Err(format_error(
                        path,
                        format!("label {l} is implausibly large"),
                    ));
                }
                seen.resize(l as usize + 1, None);
            }
            match &seen[l as usize] {
                Some(n) if n != name => {
                    return Err(format_error(
                        path,
                        format!("label {l} has two names ({n:?} and {name:?})"),
                    ))
                }
                Some(_) => {}
                None => seen[l as usize] = Some(name.to_string()),
            }
            let off = images.value_offset_at(row);
            set.push(&values.values()[off..off + shape.len()], l);
        }
    }
    let classes = match declared {
        Some(c) if c.len() >= seen.len() => {
            for (i, n) in seen.iter().enumerate() {
                if let Some(n) = n {
                    if c[i] != *n {
                        return Err(format_error(
                            path,
                            format!("label {i} is named {n:?} but {CLASSES_KEY} says {:?}", c[i]),
                        ));
                    }
                }
            }
            c
        }
        _ => seen
            .into_iter()
            .enumerate()
            .map(|(i, n)| n.unwrap_or_else(|| format!("class-{i}")))
            .collect(),
    };
    if let Some((k, values)) = soft {
        if k != classes.len() {
            return Err(format_error(
                path,
                format!(
                    "`soft_label` has {k} probabilities per row but there are {} classes",
                    classes.len()
                ),
            ));
        }
        check_soft_labels(&values, set.len(), k).map_err(|e| format_error(path, e))?;
        set.soft_labels = Some(values);
    }
    Ok((set, classes))
}

/// The `soft_label` column of one batch: its row length and its values, row by row.
fn soft_column(path: &Path, col: &dyn Array) -> Result<(usize, Vec<f32>)> {
    let list = col
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .ok_or_else(|| format_error(path, "`soft_label` is not a fixed-size list"))?;
    let values = list
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| format_error(path, "`soft_label` items are not float32"))?;
    if list.null_count() + values.null_count() > 0 {
        return Err(format_error(path, "null soft labels"));
    }
    let k = usize::try_from(list.value_length()).unwrap_or(0);
    if k == 0 {
        return Err(format_error(path, "`soft_label` rows are empty"));
    }
    let mut out = Vec::with_capacity(list.len() * k);
    for row in 0..list.len() {
        let off = list.value_offset_at(row);
        out.extend_from_slice(&values.values()[off..off + k]);
    }
    Ok((k, out))
}

/// Utf8, LargeUtf8 or Utf8View values as an iterator of options.
pub(crate) fn string_values(a: &dyn Array) -> Option<Vec<Option<&str>>> {
    if let Some(s) = a.as_any().downcast_ref::<StringArray>() {
        return Some(s.iter().collect());
    }
    if let Some(s) = a.as_any().downcast_ref::<arrow_array::LargeStringArray>() {
        return Some(s.iter().collect());
    }
    if let Some(s) = a.as_any().downcast_ref::<StringViewArray>() {
        return Some(s.iter().collect());
    }
    None
}

/// Parse `"C,H,W"` (C in 1 or 3, H and W in 1..=65535).
pub fn parse_shape(s: &str) -> Option<Shape> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    match v[..] {
        [c, h, w] if (c == 1 || c == 3) && (1..=65535).contains(&h) && (1..=65535).contains(&w) => {
            Some(Shape { c, h, w })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (FloatImages, Vec<String>) {
        let shape = Shape { c: 3, h: 4, w: 5 };
        let mut s = FloatImages::new(shape);
        for i in 0..7u32 {
            let v: Vec<f32> = (0..shape.len())
                .map(|k| ((k as u32 * 7 + i * 13) % 101) as f32 / 100.0)
                .collect();
            s.push(&v, i % 3);
        }
        (
            s,
            vec![
                "alpha".into(),
                "beta gamma".into(),
                "T-shirt/top".into(),
                "unused".into(),
            ],
        )
    }

    #[test]
    fn synthetic_parquet_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("synthetic.parquet");
        let (s, classes) = sample();
        write_synthetic_parquet(&p, &s, &classes).unwrap();
        let (back, cl) = read_synthetic_parquet(&p).unwrap();
        assert_eq!(back, s);
        assert_eq!(cl, classes);
        // Only the final file is left (atomic write).
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn out_of_range_values_are_clamped_and_bad_labels_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.parquet");
        let shape = Shape { c: 1, h: 1, w: 2 };
        let mut s = FloatImages::new(shape);
        s.push(&[-1.0, 2.0], 0);
        write_synthetic_parquet(&p, &s, &["a".into()]).unwrap();
        assert_eq!(read_synthetic_parquet(&p).unwrap().0.data, vec![0.0, 1.0]);
        s.labels[0] = 1;
        assert!(matches!(
            write_synthetic_parquet(&d.path().join("t.parquet"), &s, &["a".into()]),
            Err(Error::Invalid { .. })
        ));
        assert!(!d.path().join("t.parquet").exists());
    }

    /// `sample()` with soft labels over its four classes (each row a probability vector).
    fn soft_sample() -> (FloatImages, Vec<String>) {
        let (mut s, classes) = sample();
        let k = classes.len();
        let mut soft = Vec::new();
        for i in 0..s.len() {
            let mut row: Vec<f32> = (0..k).map(|j| ((i * 3 + j * 5) % 7) as f32 + 0.5).collect();
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= sum);
            soft.extend(row);
        }
        s.soft_labels = Some(soft);
        (s, classes)
    }

    #[test]
    fn soft_labels_round_trip_with_their_description() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("synthetic.parquet");
        let (s, classes) = soft_sample();
        write_synthetic_parquet(&p, &s, &classes).unwrap();
        let (back, cl) = read_synthetic_parquet(&p).unwrap();
        assert_eq!(back, s);
        assert_eq!(cl, classes);
        assert_eq!(back.soft_classes(), Some(4));
        assert_eq!(back.soft_label(2), s.soft_label(2));
        let (cols, keys) = parquet_columns_and_metadata(&p).unwrap();
        assert_eq!(cols, ["label", "label_name", "image", "soft_label"]);
        assert!(keys.contains(&SOFT_LABEL_KEY.to_string()), "{keys:?}");
        // Without soft labels: neither the column nor the key.
        let (h, _) = sample();
        write_synthetic_parquet(&p, &h, &classes).unwrap();
        let (cols, keys) = parquet_columns_and_metadata(&p).unwrap();
        assert_eq!(cols, ["label", "label_name", "image"]);
        assert!(!keys.contains(&SOFT_LABEL_KEY.to_string()));
        assert_eq!(read_synthetic_parquet(&p).unwrap().0.soft_labels, None);
    }

    #[test]
    fn push_keeps_soft_labels_consistent() {
        let shape = Shape { c: 1, h: 1, w: 2 };
        let mut s = FloatImages::new(shape);
        s.push_soft(&[0.1, 0.2], 0, &[0.9, 0.1]);
        s.push_soft(&[0.3, 0.4], 1, &[0.2, 0.8]);
        assert_eq!(s.soft_labels, Some(vec![0.9, 0.1, 0.2, 0.8]));
        assert_eq!(s.soft_label(1), Some(&[0.2, 0.8][..]));
        // A row of another length, or a hard-only push, drops them.
        let mut t = s.clone();
        t.push_soft(&[0.5, 0.6], 0, &[1.0]);
        assert_eq!(t.soft_labels, None);
        s.push(&[0.5, 0.6], 0);
        assert_eq!((s.soft_labels.clone(), s.len()), (None, 3));
        // Once dropped they do not come back half-filled.
        s.push_soft(&[0.5, 0.6], 0, &[1.0, 0.0]);
        assert_eq!(s.soft_labels, None);
        assert_eq!(FloatImages::new(shape).soft_classes(), None);
    }

    #[test]
    fn fail_soft_labels_that_are_not_probability_vectors() {
        let d = tempfile::tempdir().unwrap();
        let (good, classes) = soft_sample();
        let k = classes.len();
        let mut cases: Vec<(&str, FloatImages)> = Vec::new();
        let mut wrong_k = good.clone();
        wrong_k.soft_labels = Some(vec![0.5; good.len() * (k - 2)]);
        cases.push(("wrong K", wrong_k));
        let mut negative = good.clone();
        let row = &mut negative.soft_labels.as_mut().unwrap()[k..2 * k];
        row.copy_from_slice(&[1.25, -0.25, 0.0, 0.0]);
        cases.push(("negative", negative));
        let mut not_one = good.clone();
        not_one.soft_labels.as_mut().unwrap()[3 * k] += 0.01;
        cases.push(("sum not 1", not_one));
        let mut nan = good.clone();
        nan.soft_labels.as_mut().unwrap()[0] = f32::NAN;
        cases.push(("NaN", nan));
        for (what, set) in cases {
            let p = d.path().join("bad.parquet");
            match write_synthetic_parquet(&p, &set, &classes) {
                Err(Error::Invalid { why, .. }) => {
                    assert!(why.contains("soft label"), "{what}: {why}")
                }
                other => panic!("{what}: {other:?}"),
            }
            assert!(!p.exists(), "{what}: nothing half-written");
        }
        // A hand-made file with bad soft labels is refused by the reader the same way.
        let p = d.path().join("hand.parquet");
        let mut bad = good.clone();
        bad.soft_labels.as_mut().unwrap()[k] = -0.5;
        bad.soft_labels.as_mut().unwrap()[k + 1] += 0.5;
        write_raw(
            &p,
            &good,
            &classes,
            bad.soft_labels.as_ref().unwrap(),
            k,
            true,
        );
        match read_synthetic_parquet(&p) {
            Err(Error::Format { why, .. }) => assert!(why.contains("row 1"), "{why}"),
            other => panic!("{other:?}"),
        }
        // K other than the number of classes.
        write_raw(&p, &good, &classes, &vec![0.5; good.len() * 2], 2, true);
        match read_synthetic_parquet(&p) {
            Err(Error::Format { why, .. }) => assert!(why.contains("4 classes"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Items that are not float32.
        write_raw(
            &p,
            &good,
            &classes,
            good.soft_labels.as_ref().unwrap(),
            k,
            false,
        );
        match read_synthetic_parquet(&p) {
            Err(Error::Format { why, .. }) => assert!(why.contains("not float32"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// Write `set`'s three columns plus a `soft_label` column of `soft` (row length `k`,
    /// float32 or float64 items) with arrow directly, bypassing the writer's checks.
    fn write_raw(
        p: &Path,
        set: &FloatImages,
        classes: &[String],
        soft: &[f32],
        k: usize,
        f32_items: bool,
    ) {
        let tmp = p.with_extension("tmp");
        write_synthetic_parquet(
            &tmp,
            &FloatImages {
                soft_labels: None,
                ..set.clone()
            },
            classes,
        )
        .unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&tmp).unwrap()).unwrap();
        let meta = builder.schema().metadata().clone();
        let batch = builder.build().unwrap().next().unwrap().unwrap();
        let (ty, values): (DataType, ArrayRef) = if f32_items {
            (
                DataType::Float32,
                Arc::new(Float32Array::from(soft.to_vec())),
            )
        } else {
            let v: Vec<f64> = soft.iter().map(|&x| x as f64).collect();
            (
                DataType::Float64,
                Arc::new(arrow_array::Float64Array::from(v)),
            )
        };
        let item = Arc::new(Field::new("item", ty, false));
        let list = FixedSizeListArray::try_new(item.clone(), k as i32, values, None).unwrap();
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(
            SOFT_LABEL_COLUMN,
            DataType::FixedSizeList(item, k as i32),
            false,
        ));
        let schema = Arc::new(Schema::new_with_metadata(fields, meta));
        let mut cols = batch.columns().to_vec();
        cols.push(Arc::new(list));
        let out = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let mut w = ArrowWriter::try_new(File::create(p).unwrap(), schema, None).unwrap();
        w.write(&out).unwrap();
        w.close().unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Any set, with or without soft labels, reads back exactly as written.
        #[test]
        fn synthetic_parquet_round_trips(
            n in 0usize..6,
            k in 1usize..5,
            seed in proptest::prelude::any::<u64>(),
            soft in proptest::prelude::any::<bool>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let shape = Shape { c: 1, h: 2, w: 3 };
            let mut set = FloatImages::new(shape);
            for _ in 0..n {
                let img: Vec<f32> = (0..6).map(|_| rng.gen_range(0.0f32..=1.0)).collect();
                let label = rng.gen_range(0..k as u32);
                if soft {
                    let mut p: Vec<f32> = (0..k).map(|_| rng.gen_range(0.0f32..1.0)).collect();
                    p[label as usize] += 1.0;
                    let sum: f32 = p.iter().sum();
                    p.iter_mut().for_each(|v| *v /= sum);
                    set.push_soft(&img, label, &p);
                } else {
                    set.push(&img, label);
                }
            }
            if soft && n == 0 {
                set.soft_labels = Some(Vec::new());
            }
            let classes: Vec<String> = (0..k).map(|i| format!("c{i}")).collect();
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("s.parquet");
            write_synthetic_parquet(&p, &set, &classes).unwrap();
            let (back, cl) = read_synthetic_parquet(&p).unwrap();
            proptest::prop_assert_eq!(cl, classes);
            proptest::prop_assert_eq!(&back.labels, &set.labels);
            proptest::prop_assert_eq!(&back.data, &set.data);
            proptest::prop_assert_eq!(&back.soft_labels, &set.soft_labels);
        }
    }

    #[test]
    fn garbage_is_a_format_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.parquet");
        std::fs::write(&p, b"PAR1 this is not parquet").unwrap();
        assert!(matches!(
            read_synthetic_parquet(&p),
            Err(Error::Format { .. })
        ));
    }

    #[test]
    fn shape_parser() {
        assert_eq!(parse_shape("1,28,28"), Some(Shape { c: 1, h: 28, w: 28 }));
        assert_eq!(parse_shape("3, 32, 32"), Some(Shape { c: 3, h: 32, w: 32 }));
        for bad in ["", "2,2,2", "1,0,4", "1,2", "1,2,3,4", "a,b,c", "1,-2,3"] {
            assert_eq!(parse_shape(bad), None, "{bad}");
        }
    }

    /// The file (with soft labels) loads in pyarrow, without Retort, with the documented schema
    /// and metadata, and the docs' numpy recipes work on it.
    #[test]
    fn loads_in_pyarrow_when_available() {
        let ok = std::process::Command::new("python3")
            .args(["-c", "import pyarrow"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIPPED: python3 with pyarrow is not installed");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("synthetic.parquet");
        let (s, classes) = soft_sample();
        write_synthetic_parquet(&p, &s, &classes).unwrap();
        let script = r#"
import sys, json, pyarrow.parquet as pq, pyarrow as pa
t = pq.read_table(sys.argv[1])
assert t.schema.field("label").type == pa.int32(), t.schema
assert t.schema.field("label_name").type == pa.string(), t.schema
ty = t.schema.field("image").type
assert pa.types.is_fixed_size_list(ty) and ty.list_size == 60 and ty.value_type == pa.float32(), ty
md = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
fmd = {k.decode(): v.decode() for k, v in pq.read_metadata(sys.argv[1]).metadata.items()}
assert md["retort.shape"] == "3,4,5" and fmd["retort.shape"] == "3,4,5", (md, fmd)
assert "retort.version" in md
rows = t.to_pylist()
try:  # the loading recipe in docs/ingest.md
    import numpy as np
    c, h, w = map(int, t.schema.metadata[b"retort.shape"].split(b","))
    x = np.stack(t.column("image").to_numpy(zero_copy_only=False)).reshape(-1, c, h, w)
    assert x.shape == (7, 3, 4, 5) and x.dtype == np.float32, x.shape
    # the soft-label recipe in docs/partners.md
    soft = np.stack(t.column("soft_label").to_numpy(zero_copy_only=False))
    assert soft.shape == (7, 4) and soft.dtype == np.float32, soft.shape
    assert np.allclose(soft.sum(1), 1.0, atol=1e-3) and (soft >= 0).all()
except ImportError:
    pass
st = t.schema.field("soft_label").type
assert pa.types.is_fixed_size_list(st) and st.list_size == 4 and st.value_type == pa.float32(), st
assert not t.schema.field("soft_label").nullable
desc = json.loads(md["retort.soft_label"])
assert desc["share"] == "teacher" and "temperature 1" in desc["train"], desc
assert json.loads(fmd["retort.soft_label"]) == desc
print(json.dumps([len(rows), rows[1]["label"], rows[1]["label_name"], rows[1]["image"][5], rows[1]["soft_label"][2]]))
"#;
        let out = std::process::Command::new("python3")
            .args(["-c", script, p.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pyarrow failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v[0], 7);
        assert_eq!(v[1], 1);
        assert_eq!(v[2], "beta gamma");
        assert!((v[3].as_f64().unwrap() - s.image(1)[5] as f64).abs() < 1e-7);
        assert!((v[4].as_f64().unwrap() - s.soft_label(1).unwrap()[2] as f64).abs() < 1e-7);
    }
}
