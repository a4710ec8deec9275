//! DICOM: `ROOT/<class>/*.dcm` (also `.dicom` or no extension), or `ROOT` plus a labels CSV
//! (`file,class` per line, file names relative to `ROOT`).
//!
//! Per file, in order (the first failing step refuses the file with its reason):
//! 1. open as DICOM Part 10 (preamble, `DICM`, file meta group);
//! 2. the transfer syntax must be one this build decodes ([`SUPPORTED_TRANSFER_SYNTAXES`]):
//!    JPEG-LS, 12-bit JPEG, video and unknown syntaxes are refused;
//! 3. what the pixels may show: refused for burned-in text per
//!    [`super::deid::DecodeView::burned_in`], then for recognizable visual features per
//!    [`super::deid::DecodeView::visual_features`];
//! 4. decode the pixel data (dicom-pixeldata), **first frame only** of multi-frame objects;
//! 5. monochrome: modality rescale (slope/intercept), then the first VOI window (linear or
//!    sigmoid, PS3.3 C.11.2.1.2) or, without a window, min-max of the frame; MONOCHROME1 is
//!    inverted; palette colour is looked up in its tables; RGB/YBR_FULL become RGB.
//!
//! Only the pixels and the label leave this module (see [`super::deid`]).

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{DecodedPixelData, PixelDecoder, VoiLutFunction};
use rayon::prelude::*;

use super::deid::{DecodeView, Inventory, PixelRisk};
use super::error::Refusal;
use super::images::class_folders;
use super::pixels::{min_max, palette, samples, voi};
use super::{guarded, has_ext, list_dir, Collected, Error, Item, Options, Part, Raw, Result};
use crate::progress::{Event, Sink};

/// Transfer syntaxes decoded by this build (uncompressed, deflate, JPEG baseline/lossless,
/// JPEG 2000, RLE).
pub const SUPPORTED_TRANSFER_SYNTAXES: &[(&str, &str)] = &[
    ("1.2.840.10008.1.2", "Implicit VR Little Endian"),
    ("1.2.840.10008.1.2.1", "Explicit VR Little Endian"),
    ("1.2.840.10008.1.2.2", "Explicit VR Big Endian"),
    (
        "1.2.840.10008.1.2.1.99",
        "Deflated Explicit VR Little Endian",
    ),
    ("1.2.840.10008.1.2.4.50", "JPEG Baseline (8-bit)"),
    ("1.2.840.10008.1.2.4.57", "JPEG Lossless"),
    ("1.2.840.10008.1.2.4.70", "JPEG Lossless SV1"),
    ("1.2.840.10008.1.2.4.90", "JPEG 2000 Lossless"),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000"),
    ("1.2.840.10008.1.2.5", "RLE Lossless"),
];

/// Transfer syntaxes refused by name (so the reason says what they are).
pub const REFUSED_TRANSFER_SYNTAXES: &[(&str, &str)] = &[
    ("1.2.840.10008.1.2.4.51", "JPEG Extended (12-bit)"),
    ("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless"),
    ("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless"),
    ("1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Lossless"),
    ("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2"),
    ("1.2.840.10008.1.2.4.94", "JPIP Referenced"),
    ("1.2.840.10008.1.2.4.95", "JPIP Referenced Deflate"),
    ("1.2.840.10008.1.2.4.100", "MPEG2 video"),
    ("1.2.840.10008.1.2.4.102", "MPEG-4 video"),
    (
        "1.2.840.10008.1.2.4.201",
        "High-Throughput JPEG 2000 Lossless",
    ),
    (
        "1.2.840.10008.1.2.4.202",
        "High-Throughput JPEG 2000 RPCL Lossless",
    ),
    ("1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000"),
];

/// How one file was read (counts for the notes; no header values).
#[derive(Debug, Clone, Copy, Default)]
pub struct FileNotes {
    /// Frames in the object (only the first is taken).
    pub frames: u32,
    /// MONOCHROME1 inverted.
    pub inverted: bool,
    /// A VOI window from the header was applied (else min-max).
    pub windowed: bool,
    /// A palette colour lookup was applied.
    pub palette: bool,
}

/// Read and decode one DICOM file to pixels (de-identified: pixels only).
///
/// # Errors
/// `Error::Dicom` with the refusal reason.
///
/// # Panics
/// Never (decoder panics are caught and become `ingest-dicom-pixel-data`).
pub fn read_file(path: &Path) -> Result<(Raw, FileNotes, Inventory), Error> {
    let obj = guarded(|| dicom_object::open_file(path))
        .ok_or_else(|| {
            Error::dicom(
                path,
                Refusal::Unreadable,
                "the DICOM parser failed on this file",
            )
        })?
        .map_err(|e| {
            Error::dicom(
                path,
                Refusal::Unreadable,
                format!(
                    "not a readable DICOM Part 10 file ({})",
                    first_line(&e.to_string())
                ),
            )
        })?;
    decode_object(path, &obj)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Decode an opened object (see [`read_file`]).
///
/// # Errors
/// `Error::Dicom` with the refusal reason.
pub fn decode_object(
    path: &Path,
    obj: &DefaultDicomObject,
) -> Result<(Raw, FileNotes, Inventory), Error> {
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .trim()
        .to_string();
    if !SUPPORTED_TRANSFER_SYNTAXES.iter().any(|(u, _)| *u == ts) {
        let name = REFUSED_TRANSFER_SYNTAXES
            .iter()
            .find(|(u, _)| *u == ts)
            .map(|(_, n)| *n)
            .unwrap_or("an unknown transfer syntax");
        return Err(Error::dicom(
            path,
            Refusal::TransferSyntax,
            format!("transfer syntax {ts} ({name}) cannot be decoded by this build"),
        ));
    }
    let view = DecodeView::new(obj);
    match view.pixel_risk() {
        Some(PixelRisk::BurnedIn(why)) => {
            return Err(Error::dicom(
                path,
                Refusal::BurnedIn,
                format!("refused: {why}"),
            ))
        }
        Some(PixelRisk::VisualFeatures(why)) => {
            return Err(Error::dicom(
                path,
                Refusal::VisualFeatures,
                format!("refused: {why}"),
            ))
        }
        None => {}
    }
    if !view.has(tags::PIXEL_DATA) {
        return Err(Error::dicom(
            path,
            Refusal::NoPixelData,
            "the object has no pixel data",
        ));
    }
    if view.has(tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA) {
        return Err(Error::dicom(
            path,
            Refusal::Unsupported,
            "segmented palette colour tables are not supported",
        ));
    }
    if ts == "1.2.840.10008.1.2.5" && view.int(tags::BITS_ALLOCATED).unwrap_or(0) > 16 {
        return Err(Error::dicom(
            path,
            Refusal::Unsupported,
            "RLE with more than 16 bits allocated is not supported",
        ));
    }
    let decoded = guarded(|| obj.decode_pixel_data().map(|d| d.to_owned()))
        .ok_or_else(|| {
            Error::dicom(
                path,
                Refusal::PixelData,
                "the pixel decoder failed on this file",
            )
        })?
        .map_err(|e| {
            Error::dicom(
                path,
                Refusal::PixelData,
                format!("pixel data does not decode: {}", first_line(&e.to_string())),
            )
        })?;
    let inv = Inventory::of(obj);
    let (raw, notes) = guarded(|| to_raw(path, &decoded, &view)).ok_or_else(|| {
        Error::dicom(
            path,
            Refusal::PixelData,
            "pixel conversion failed on this file",
        )
    })??;
    Ok((raw, notes, inv))
}

/// Convert the first frame to 8-bit pixels.
fn to_raw(
    path: &Path,
    d: &DecodedPixelData<'_>,
    view: &DecodeView<'_>,
) -> Result<(Raw, FileNotes), Error> {
    let (h, w) = (d.rows() as usize, d.columns() as usize);
    let spp = d.samples_per_pixel() as usize;
    if h == 0 || w == 0 {
        return Err(Error::dicom(
            path,
            Refusal::PixelData,
            "the image has no rows or columns",
        ));
    }
    let frame = d.frame_data(0).map_err(|_| {
        Error::dicom(
            path,
            Refusal::PixelData,
            "the pixel data is shorter than one frame (truncated?)",
        )
    })?;
    let mut notes = FileNotes {
        frames: d.number_of_frames().max(1),
        ..FileNotes::default()
    };
    let ba = d.bits_allocated() as usize;
    if !matches!(ba, 1..=32) || spp == 0 {
        return Err(Error::dicom(
            path,
            Refusal::Unsupported,
            format!("{ba} bits allocated"),
        ));
    }
    let samples = samples(frame, ba, d.bits_stored(), d.pixel_representation())
        .ok_or_else(|| Error::dicom(path, Refusal::Unsupported, format!("{ba} bits allocated")))?;
    let pi = d.photometric_interpretation().as_str().to_string();
    let n = h * w;
    if samples.len() < n * spp {
        return Err(Error::dicom(
            path,
            Refusal::PixelData,
            "the frame is shorter than its geometry",
        ));
    }
    let raw = match (spp, pi.as_str()) {
        (1, "MONOCHROME1") | (1, "MONOCHROME2") => {
            let vals = &samples[..n];
            let r = d.rescale().ok().and_then(|r| r.first().copied());
            let (slope, intercept) = r.map(|r| (r.slope, r.intercept)).unwrap_or((1.0, 0.0));
            let modality: Vec<f64> = vals.iter().map(|&v| v * slope + intercept).collect();
            let window = d
                .window()
                .ok()
                .flatten()
                .and_then(|w| w.first().copied())
                .filter(|w| w.width.is_finite() && w.center.is_finite() && w.width >= 1.0);
            let sigmoid = matches!(
                d.voi_lut_function()
                    .ok()
                    .flatten()
                    .and_then(|f| f.first().copied()),
                Some(VoiLutFunction::Sigmoid)
            );
            let unit: Vec<f64> = match window {
                Some(wl) => {
                    notes.windowed = true;
                    modality
                        .iter()
                        .map(|&x| voi(x, wl.center, wl.width, sigmoid))
                        .collect()
                }
                None => min_max(&modality),
            };
            notes.inverted = pi == "MONOCHROME1";
            let pixels = unit
                .iter()
                .map(|&u| {
                    let u = if notes.inverted { 1.0 - u } else { u };
                    (u * 255.0).round().clamp(0.0, 255.0) as u8
                })
                .collect();
            Raw { c: 1, h, w, pixels }
        }
        (1, "PALETTE COLOR") => {
            notes.palette = true;
            palette(path, view, &samples[..n], h, w)?
        }
        (3, "RGB") | (3, "YBR_FULL") => {
            let interleaved = d.planar_configuration() as u16 == 0;
            let max = ((1u64 << d.bits_stored().clamp(1, 32)) - 1) as f64;
            let at = |i: usize, c: usize| -> f64 {
                let v = if interleaved {
                    samples[3 * i + c]
                } else {
                    samples[c * n + i]
                };
                v / max * 255.0
            };
            let mut pixels = vec![0u8; 3 * n];
            for i in 0..n {
                let (a, b, c) = (at(i, 0), at(i, 1), at(i, 2));
                let rgb = if pi == "YBR_FULL" {
                    let (cb, cr) = (b - 128.0, c - 128.0);
                    [
                        a + 1.402 * cr,
                        a - 0.344136 * cb - 0.714136 * cr,
                        a + 1.772 * cb,
                    ]
                } else {
                    [a, b, c]
                };
                for (k, v) in rgb.into_iter().enumerate() {
                    pixels[k * n + i] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
            Raw { c: 3, h, w, pixels }
        }
        _ => {
            return Err(Error::dicom(
                path,
                Refusal::Unsupported,
                format!(
                "photometric interpretation {pi} with {spp} sample(s) per pixel is not supported"
            ),
            ))
        }
    };
    Ok((raw, notes))
}

/// DICOM files of a class folder: `.dcm`, `.dicom` or no extension.
fn is_dicom_name(p: &Path) -> bool {
    p.extension().is_none() || has_ext(p, &["dcm", "dicom"])
}

/// Parse a labels CSV: `file,class` lines, an optional header, `#` comments.
fn labels_csv(csv: &Path, root: &Path) -> Result<Vec<(PathBuf, String)>, Error> {
    let text = std::fs::read_to_string(csv).map_err(|e| Error::io(csv, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: String| Error::Labels {
            path: csv.into(),
            line: line_no,
            what,
        };
        let mut parts = line.splitn(2, ',');
        let (f, c) = match (parts.next(), parts.next()) {
            (Some(f), Some(c)) => (f.trim().trim_matches('"'), c.trim().trim_matches('"')),
            _ => return Err(bad("expected `file,class`".into())),
        };
        if out.is_empty()
            && f.eq_ignore_ascii_case("file")
            && ["label", "class"].contains(&c.to_ascii_lowercase().as_str())
        {
            continue;
        }
        if f.is_empty() || c.is_empty() {
            return Err(bad("empty file name or class".into()));
        }
        let rel = Path::new(f);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(bad(
                "file names must be relative to SRC, without `..`".into()
            ));
        }
        let p = root.join(rel);
        if !p.is_file() {
            return Err(bad(format!("{} does not exist", p.display())));
        }
        out.push((p, c.to_string()));
    }
    if out.is_empty() {
        return Err(Error::Labels {
            path: csv.into(),
            line: 1,
            what: "no `file,class` lines".into(),
        });
    }
    Ok(out)
}

/// Read a DICOM source.
pub(crate) fn read(src: &Path, opts: &Options, progress: Sink<'_>) -> Result<Collected> {
    let files: Vec<(PathBuf, String)> = match &opts.labels {
        Some(csv) => labels_csv(csv, src)?,
        None => {
            if !src.is_dir() {
                return Err(Error::NoImages {
                    path: src.into(),
                    skipped: 0,
                });
            }
            let folders = class_folders(src, &is_dicom_name)?;
            if folders.iter().all(|f| f.1.is_empty()) && !list_dir(src)?.iter().any(|p| p.is_file())
            {
                return Err(Error::NoImages {
                    path: src.into(),
                    skipped: 0,
                });
            }
            folders
                .into_iter()
                .flat_map(|(c, fs)| fs.into_iter().map(move |f| (f, c.clone())))
                .collect()
        }
    };
    let mut classes: Vec<String> = files.iter().map(|f| f.1.clone()).collect();
    classes.sort();
    classes.dedup();
    let mut col = Collected::new(src);
    col.classes = classes.clone();
    progress(Event::Start {
        label: "decoding DICOM",
        total: files.len() as u64,
    });
    let mut inv = Inventory::default();
    let (mut multi, mut inverted, mut windowed, mut minmax, mut pal) = (0, 0, 0, 0, 0);
    // Decode in parallel, a chunk at a time (bounded memory, Ctrl-C checked per chunk).
    for chunk in files.chunks(16) {
        crate::progress::check()?;
        let decoded: Vec<_> = chunk
            .par_iter()
            .map(|(path, class)| (path.clone(), class, read_file(path)))
            .collect();
        for (path, class, r) in decoded {
            let label = classes.binary_search(class).unwrap_or(0) as u32;
            match r {
                Ok((raw, n, i)) => {
                    inv.add(i);
                    col.read += 1;
                    multi += usize::from(n.frames > 1);
                    inverted += usize::from(n.inverted);
                    pal += usize::from(n.palette);
                    if raw.c == 1 && !n.palette {
                        if n.windowed {
                            windowed += 1;
                        } else {
                            minmax += 1;
                        }
                    }
                    col.items.push(Item {
                        raw,
                        label,
                        part: Part::Any,
                        path,
                    });
                }
                Err(e) => col.fail_or_skip(opts.skip_invalid, e)?,
            }
        }
        progress(Event::Advance(chunk.len() as u64));
    }
    progress(Event::Finish);
    // Empty classes (all files refused) are reported by `assemble`.
    col.notes.push(format!(
        "DICOM de-identified: pixels and labels only; {} identifying and {} private attribute(s) dropped",
        inv.identifying, inv.private
    ));
    if multi > 0 {
        col.notes.push(format!(
            "first frame taken of {multi} multi-frame object(s); other frames ignored"
        ));
    }
    if inverted > 0 {
        col.notes
            .push(format!("{inverted} MONOCHROME1 image(s) inverted"));
    }
    col.notes.push(format!(
        "grayscale: {windowed} windowed with the header's VOI window after rescale, {minmax} min-max normalised; {pal} palette colour"
    ));
    col.dicom = Some(inv);
    Ok(col)
}

/// Fuzzing hook: parse arbitrary bytes as a DICOM Part 10 file and decode it.
#[cfg(fuzzing)]
pub fn fuzz_dicom(data: &[u8]) {
    let p = Path::new("fuzz.dcm");
    let start = if data.len() >= 132 && &data[128..132] == b"DICM" {
        128
    } else {
        0
    };
    if let Ok(obj) = dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(&data[start..])
    {
        let _ = decode_object(p, &obj);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_csv_rules() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.dcm"), b"x").unwrap();
        let csv = d.path().join("l.csv");
        std::fs::write(&csv, "file,label\na.dcm,lung\n").unwrap();
        assert_eq!(labels_csv(&csv, d.path()).unwrap().len(), 1);
        std::fs::write(&csv, "a.dcm,lung\nmissing.dcm,lung\n").unwrap();
        match labels_csv(&csv, d.path()) {
            Err(Error::Labels { line: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        std::fs::write(&csv, "../a.dcm,x\n").unwrap();
        assert!(labels_csv(&csv, d.path()).is_err());
        std::fs::write(&csv, "just-a-name\n").unwrap();
        assert!(labels_csv(&csv, d.path()).is_err());
    }
}
