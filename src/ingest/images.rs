//! Image folders: `ROOT/<class>/*.{png,jpg,jpeg}`. Class names are the folder names (sorted);
//! images are decoded to pixels only — PNG text/EXIF/time chunks and JPEG APPn/COM segments
//! are never read into the dataset. Gray and gray+alpha become 1 channel, colour 3 (alpha is
//! dropped).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{
    guarded, has_ext, list_dir, Collected, Error, Item, Options, Part, Raw, Result,
    IMAGE_EXTENSIONS,
};
use crate::progress::{Event, Sink};

/// Decode one image file to pixels.
///
/// # Errors
/// `ingest-image-invalid` naming the file.
pub fn decode_file(path: &Path) -> Result<Raw, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(&bytes).map_err(|what| Error::Image {
        path: path.into(),
        what,
    })
}

/// Decode PNG or JPEG bytes to pixels (no metadata).
///
/// # Errors
/// What is wrong, in words.
pub fn decode_bytes(bytes: &[u8]) -> Result<Raw, String> {
    let fmt = image::guess_format(bytes).map_err(|_| "not a PNG or JPEG image".to_string())?;
    if !matches!(fmt, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
        return Err(format!(
            "{fmt:?} images are not supported (PNG and JPEG are)"
        ));
    }
    let img = guarded(|| image::load_from_memory_with_format(bytes, fmt))
        .ok_or_else(|| "the decoder failed on this file".to_string())?
        .map_err(|e| format!("does not decode as {fmt:?}: {e}"))?;
    if img.width() == 0 || img.height() == 0 {
        return Err("the image is empty (0 pixels)".into());
    }
    Ok(Raw::from_dynamic(&img))
}

/// Class folders of `root` with their files, sorted. Files that are not images are ignored.
pub(crate) fn class_folders(
    root: &Path,
    accept: &dyn Fn(&Path) -> bool,
) -> Result<Vec<(String, Vec<PathBuf>)>, Error> {
    let mut out = Vec::new();
    for d in list_dir(root)?.into_iter().filter(|p| p.is_dir()) {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let files: Vec<PathBuf> = list_dir(&d)?
            .into_iter()
            .filter(|p| p.is_file() && accept(p))
            .collect();
        out.push((name, files));
    }
    if out.is_empty() {
        return Err(Error::NoImages {
            path: root.into(),
            skipped: 0,
        });
    }
    Ok(out)
}

/// Read an image folder.
pub(crate) fn read(src: &Path, opts: &Options, progress: Sink<'_>) -> Result<Collected> {
    if !src.is_dir() {
        return Err(Error::NoImages {
            path: src.into(),
            skipped: 0,
        });
    }
    let folders = class_folders(src, &|p| has_ext(p, &IMAGE_EXTENSIONS))?;
    let mut col = Collected::new(src);
    let total: usize = folders.iter().map(|f| f.1.len()).sum();
    progress(Event::Start {
        label: "decoding images",
        total: total as u64,
    });
    for (label, (class, files)) in folders.into_iter().enumerate() {
        col.classes.push(class);
        for chunk in files.chunks(256) {
            crate::progress::check()?;
            let decoded: Vec<(PathBuf, Result<Raw, Error>)> = chunk
                .par_iter()
                .map(|p| (p.clone(), decode_file(p)))
                .collect();
            for (path, r) in decoded {
                match r {
                    Ok(raw) => {
                        col.read += 1;
                        col.items.push(Item {
                            raw,
                            label: label as u32,
                            part: Part::Any,
                            path,
                        });
                    }
                    Err(e) => col.fail_or_skip(opts.skip_invalid, e)?,
                }
            }
            progress(Event::Advance(chunk.len() as u64));
        }
    }
    progress(Event::Finish);
    col.notes
        .push("decoded to pixels only; image metadata (EXIF, text chunks) dropped".into());
    Ok(col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_text_chunks_do_not_survive_and_garbage_is_refused() {
        let mut plain = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut plain),
            &[10, 20, 30, 40, 50, 60],
            2,
            1,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
        let png = super::super::tests::with_text_chunk(&plain, "Patient", "DOE^JANE");
        let raw = decode_bytes(&png).unwrap();
        assert_eq!((raw.c, raw.h, raw.w), (3, 1, 2));
        assert_eq!(raw.pixels, vec![10, 40, 20, 50, 30, 60]);
        assert!(decode_bytes(b"not an image").is_err());
        assert!(decode_bytes(&png[..png.len() / 2]).is_err());
    }
}
