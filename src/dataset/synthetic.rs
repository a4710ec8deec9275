//! Float image sets and the partner-facing synthetic Parquet format (`docs/ingest.md`).
//!
//! `synthetic.parquet` has three columns — `label: int32`, `label_name: utf8`,
//! `image: fixed_size_list<float32>[C*H*W]` (row-major C,H,W, values in 0..=1) — and key-value
//! metadata `retort.shape = "C,H,W"`, `retort.version` (the Retort version that wrote it) and
//! `retort.classes` (a JSON array of every class name, so classes without rows survive a round
//! trip). The metadata is stored both in the Arrow schema and in the Parquet footer, so pyarrow,
//! pandas and polars see it without Retort. The file is written atomically.

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

use super::{Error, Images, Result, Shape};
use crate::error::IoError;

/// Metadata key holding `"C,H,W"`.
pub const SHAPE_KEY: &str = "retort.shape";
/// Metadata key holding the Retort version that wrote the file.
pub const VERSION_KEY: &str = "retort.version";
/// Metadata key holding every class name as a JSON array (index = label).
pub const CLASSES_KEY: &str = "retort.classes";

/// Float images (values in [0, 1]) with labels: synthetic sets and normalised views.
#[derive(Clone, PartialEq)]
pub struct FloatImages {
    /// Shape of every image.
    pub shape: Shape,
    /// `n * shape.len()` values, row-major C,H,W per image.
    pub data: Vec<f32>,
    /// One label per image, `0..classes`.
    pub labels: Vec<u32>,
}

impl std::fmt::Debug for FloatImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloatImages")
            .field("shape", &self.shape)
            .field("n", &self.labels.len())
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
    /// Append one image.
    pub fn push(&mut self, values: &[f32], label: u32) {
        debug_assert_eq!(values.len(), self.shape.len());
        self.data.extend_from_slice(values);
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

/// The Arrow schema of the synthetic format for images of `shape`.
pub fn synthetic_schema(shape: Shape, classes: &[String]) -> Schema {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let fields = vec![
        Field::new("label", DataType::Int32, false),
        Field::new("label_name", DataType::Utf8, false),
        Field::new(
            "image",
            DataType::FixedSizeList(item, shape.len() as i32),
            false,
        ),
    ];
    Schema::new_with_metadata(fields, metadata_map(shape, classes))
}

fn metadata_map(shape: Shape, classes: &[String]) -> HashMap<String, String> {
    HashMap::from([
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
    ])
}

/// Write `set` as `synthetic.parquet` (the partner format, `docs/ingest.md`) at `path`, atomically.
///
/// # Errors
/// `dataset-invalid` if a label has no class name, the buffer does not match the shape, or the
/// shape is empty; I/O errors with the path.
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
    let schema = Arc::new(synthetic_schema(set.shape, classes));
    let labels = Int32Array::from_iter_values(set.labels.iter().map(|&l| l as i32));
    let names = StringArray::from_iter_values(set.labels.iter().map(|&l| &classes[l as usize]));
    let values: Vec<f32> = set
        .data
        .iter()
        .map(|&v| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) })
        .collect();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let images = FixedSizeListArray::try_new(
        item,
        set.shape.len() as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )
    .map_err(|e| invalid(&e.to_string()))?;
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(labels) as ArrayRef,
            Arc::new(names),
            Arc::new(images),
        ],
    )
    .map_err(|e| invalid(&e.to_string()))?;
    let kv = metadata_map(set.shape, classes)
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
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
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
/// columns with their types and `retort.shape`). Returns the images and the class names.
///
/// # Errors
/// `dataset-format` naming the file and what is wrong; I/O errors.
///
/// # Panics
/// Never.
pub fn read_synthetic_parquet(path: &Path) -> Result<(FloatImages, Vec<String>)> {
    let file = File::open(path).map_err(|e| IoError::new("reading", path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format_error(path, format!("not a readable Parquet file: {e}")))?;
    let meta = builder.schema().metadata().clone();
    let shape = meta
        .get(SHAPE_KEY)
        .and_then(|s| parse_shape(s))
        .ok_or_else(|| format_error(path, format!("missing or malformed {SHAPE_KEY} metadata")))?;
    let declared: Option<Vec<String>> = meta
        .get(CLASSES_KEY)
        .and_then(|s| serde_json::from_str(s).ok());
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
    Ok((set, classes))
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

    /// The file loads in pyarrow, without Retort, with the documented schema and metadata.
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
        let (s, classes) = sample();
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
except ImportError:
    pass
print(json.dumps([len(rows), rows[1]["label"], rows[1]["label_name"], rows[1]["image"][5]]))
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
    }
}
