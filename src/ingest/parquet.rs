//! Parquet tables: a label column (`label`: any integer type or a string) and an image column
//! (`image`: encoded PNG/JPEG bytes, or a list / fixed-size list of float (values in 0..=1) or
//! u8 with the shape in the `retort.shape = "C,H,W"` metadata). Retort's own
//! `synthetic.parquet` is one such table (its `label_name` column or `retort.classes` metadata
//! gives the class names).

use std::collections::BTreeMap;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{images::decode_bytes, Collected, Error, Item, Options, Part, Raw, Result};
use crate::dataset::{parse_shape, string_values, unit_to_u8, Shape, CLASSES_KEY, SHAPE_KEY};
use crate::progress::{Event, Sink};

/// Largest table read (bytes).
pub const MAX_BYTES: u64 = 8 << 30;

fn bad(path: &Path, what: impl Into<String>) -> Error {
    Error::Parquet {
        path: path.into(),
        what: what.into(),
    }
}

/// Integer values of any integer array.
fn int_values(a: &dyn Array) -> Option<Vec<Option<i64>>> {
    macro_rules! try_ty {
        ($($t:ty),*) => {$(
            if let Some(p) = a.as_primitive_opt::<$t>() {
                return Some(p.iter().map(|v| v.and_then(|v| i64::try_from(v).ok())).collect());
            }
        )*};
    }
    try_ty!(
        Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type
    );
    None
}

/// Labels as indices plus class names.
enum Labels {
    Ints(Vec<Option<i64>>),
    Strings(Vec<Option<String>>),
}

fn labels_of(a: &dyn Array) -> Option<Labels> {
    if let Some(v) = int_values(a) {
        return Some(Labels::Ints(v));
    }
    string_values(a)
        .map(|v| Labels::Strings(v.into_iter().map(|s| s.map(str::to_string)).collect()))
}

/// One row's image.
fn image_at(col: &ArrayRef, row: usize, shape: Option<Shape>) -> Result<Raw, String> {
    if col.is_null(row) {
        return Err("the image is null".into());
    }
    match col.data_type() {
        DataType::Binary => decode_bytes(col.as_binary::<i32>().value(row)),
        DataType::LargeBinary => decode_bytes(col.as_binary::<i64>().value(row)),
        DataType::BinaryView => decode_bytes(col.as_binary_view().value(row)),
        DataType::FixedSizeList(..) | DataType::List(_) | DataType::LargeList(_) => {
            let values = match col.data_type() {
                DataType::FixedSizeList(..) => col.as_fixed_size_list().value(row),
                DataType::List(_) => col.as_list::<i32>().value(row),
                _ => col.as_list::<i64>().value(row),
            };
            let shape = shape.ok_or(format!(
                "a list image column needs `{SHAPE_KEY}` = \"C,H,W\" metadata"
            ))?;
            if values.len() != shape.len() {
                return Err(format!(
                    "the image has {} values but {SHAPE_KEY} says {} ({},{},{})",
                    values.len(),
                    shape.len(),
                    shape.c,
                    shape.h,
                    shape.w
                ));
            }
            if values.null_count() > 0 {
                return Err("the image has null values".into());
            }
            let pixels: Vec<u8> = if let Some(f) = values.as_primitive_opt::<Float32Type>() {
                f.values().iter().map(|&v| unit_to_u8(v)).collect()
            } else if let Some(f) = values.as_primitive_opt::<Float64Type>() {
                f.values().iter().map(|&v| unit_to_u8(v as f32)).collect()
            } else if let Some(u) = values.as_primitive_opt::<UInt8Type>() {
                u.values().to_vec()
            } else {
                return Err(format!(
                    "image values of type {} are not supported (float32, float64 or uint8)",
                    values.data_type()
                ));
            };
            Ok(Raw {
                c: shape.c,
                h: shape.h,
                w: shape.w,
                pixels,
            })
        }
        other => Err(format!(
            "the `image` column has type {other}; expected binary (PNG/JPEG) or a list of numbers"
        )),
    }
}

/// Read a table from bytes (`path` is for messages).
pub(crate) fn read_bytes(
    path: &Path,
    data: bytes::Bytes,
    opts: &Options,
    progress: Sink<'_>,
) -> Result<Collected> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| bad(path, format!("not a readable Parquet file: {e}")))?;
    let meta = builder.schema().metadata().clone();
    let shape = match meta.get(SHAPE_KEY) {
        Some(s) => Some(parse_shape(s).ok_or_else(|| {
            bad(
                path,
                format!("{SHAPE_KEY} = {s:?} is not \"C,H,W\" with C = 1 or 3"),
            )
        })?),
        None => None,
    };
    let declared: Option<Vec<String>> = meta
        .get(CLASSES_KEY)
        .and_then(|s| serde_json::from_str(s).ok());
    let schema = builder.schema().clone();
    for col in ["label", "image"] {
        if schema.field_with_name(col).is_err() {
            let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(bad(
                path,
                format!("no `{col}` column (columns: {})", have.join(", ")),
            ));
        }
    }
    let total = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let reader = builder.build().map_err(|e| bad(path, e.to_string()))?;
    progress(Event::Start {
        label: "reading Parquet rows",
        total,
    });
    let mut col = Collected::new(path);
    let mut raw_labels: Vec<(Raw, LabelKey)> = Vec::new();
    let mut names: BTreeMap<i64, String> = BTreeMap::new();
    let mut row0 = 0usize;
    for batch in reader {
        crate::progress::check()?;
        let batch: RecordBatch = batch.map_err(|e| bad(path, e.to_string()))?;
        let labels = batch
            .column_by_name("label")
            .expect("invariant: checked above");
        let images = batch
            .column_by_name("image")
            .expect("invariant: checked above");
        let labels = labels_of(labels.as_ref()).ok_or_else(|| {
            bad(
                path,
                format!(
                    "the `label` column has type {}; expected an integer or a string",
                    labels.data_type()
                ),
            )
        })?;
        let label_names = batch.column_by_name("label_name").and_then(|a| {
            string_values(a.as_ref()).map(|v| {
                v.into_iter()
                    .map(|s| s.map(str::to_string))
                    .collect::<Vec<_>>()
            })
        });
        for row in 0..batch.num_rows() {
            let at = row0 + row + 1;
            let key = match &labels {
                Labels::Ints(v) => v[row].map(LabelKey::Int),
                Labels::Strings(v) => v[row].clone().map(LabelKey::Name),
            };
            let r = key
                .ok_or_else(|| "the label is null or out of range".to_string())
                .and_then(|k| image_at(images, row, shape).map(|raw| (raw, k)));
            match r {
                Ok((raw, k)) => {
                    if let (LabelKey::Int(l), Some(Some(n))) =
                        (&k, label_names.as_ref().map(|v| v[row].clone()))
                    {
                        if let Some(prev) = names.insert(*l, n.clone()) {
                            if prev != n {
                                return Err(bad(
                                    path,
                                    format!("row {at}: label {l} is named both {prev:?} and {n:?}"),
                                ));
                            }
                        }
                    }
                    col.read += 1;
                    raw_labels.push((raw, k));
                }
                Err(what) => {
                    col.fail_or_skip(opts.skip_invalid, bad(path, format!("row {at}: {what}")))?
                }
            }
        }
        row0 += batch.num_rows();
        progress(Event::Advance(batch.num_rows() as u64));
    }
    progress(Event::Finish);
    // Class names and label indices.
    let is_int = raw_labels
        .iter()
        .any(|(_, k)| matches!(k, LabelKey::Int(_)));
    let classes: Vec<String> = if is_int {
        let mut max = -1i64;
        for (_, k) in &raw_labels {
            if let LabelKey::Int(l) = k {
                if *l < 0 || *l > 65535 {
                    return Err(bad(path, format!("label {l} is out of range (0 to 65535)")));
                }
                max = max.max(*l);
            }
        }
        let k = (max + 1) as usize;
        if let Some(given) = &opts.class_names {
            super::class_names_for(max.max(0) as u32, Some(given), path)?
        } else if let Some(d) = declared.filter(|d| d.len() >= k) {
            d
        } else {
            (0..k as i64)
                .map(|i| names.get(&i).cloned().unwrap_or_else(|| i.to_string()))
                .collect()
        }
    } else {
        let mut v: Vec<String> = raw_labels
            .iter()
            .filter_map(|(_, k)| match k {
                LabelKey::Name(n) => Some(n.clone()),
                LabelKey::Int(_) => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    for (raw, k) in raw_labels {
        let label = match k {
            LabelKey::Int(l) => l as u32,
            LabelKey::Name(n) => classes.binary_search(&n).unwrap_or(0) as u32,
        };
        col.items.push(Item {
            raw,
            label,
            part: Part::Any,
            path: path.into(),
        });
    }
    col.classes = classes;
    Ok(col)
}

enum LabelKey {
    Int(i64),
    Name(String),
}

/// Read a Parquet file.
pub(crate) fn read(src: &Path, opts: &Options, progress: Sink<'_>) -> Result<Collected> {
    let file = if src.is_dir() {
        let tables: Vec<_> = super::list_dir(src)?
            .into_iter()
            .filter(|p| super::has_ext(p, &["parquet"]))
            .collect();
        match &tables[..] {
            [one] => one.clone(),
            _ => {
                return Err(bad(
                    src,
                    format!(
                        "holds {} .parquet files; give the one to ingest as SRC",
                        tables.len()
                    ),
                ))
            }
        }
    } else {
        src.to_path_buf()
    };
    let len = std::fs::metadata(&file)
        .map_err(|e| Error::io(&file, e))?
        .len();
    if len > MAX_BYTES {
        return Err(bad(&file, "larger than 8 GiB"));
    }
    let data = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
    read_bytes(&file, bytes::Bytes::from(data), opts, progress)
}

/// Fuzzing hook: read arbitrary bytes as a Parquet table.
#[cfg(fuzzing)]
pub fn fuzz_parquet(data: &[u8]) {
    let opts = Options {
        skip_invalid: true,
        ..Options::default()
    };
    let _ = read_bytes(
        Path::new("fuzz.parquet"),
        bytes::Bytes::copy_from_slice(data),
        &opts,
        &crate::progress::silent,
    );
}
