//! DICOM pixel arithmetic: sample extraction (bits stored, sign), the VOI LUT function
//! (PS3.3 C.11.2.1.2), min-max normalisation and palette colour lookup.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_pixeldata::PixelRepresentation;

use super::deid::DecodeView;
use super::error::Refusal;
use super::{Error, Raw};

/// Samples of a frame as f64 (little-endian as decoded; masked to bits stored; sign-extended
/// when signed).
pub(crate) fn samples(
    frame: &[u8],
    ba: usize,
    bs: u16,
    rep: PixelRepresentation,
) -> Option<Vec<f64>> {
    let bs = (bs as u32).clamp(1, ba as u32);
    let signed = rep == PixelRepresentation::Signed;
    let conv = |v: u32| -> f64 {
        let mask = if bs >= 32 { u32::MAX } else { (1u32 << bs) - 1 };
        let v = v & mask;
        if signed && bs < 32 && v & (1 << (bs - 1)) != 0 {
            (v as i64 - (1i64 << bs)) as f64
        } else if signed && bs == 32 {
            v as i32 as f64
        } else {
            v as f64
        }
    };
    Some(match ba {
        8 => frame.iter().map(|&b| conv(b as u32)).collect(),
        16 => frame
            .chunks_exact(2)
            .map(|c| conv(u16::from_le_bytes([c[0], c[1]]) as u32))
            .collect(),
        32 => frame
            .chunks_exact(4)
            .map(|c| conv(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => return None,
    })
}

/// The VOI LUT function (PS3.3 C.11.2.1.2/3) mapping to [0, 1].
pub(crate) fn voi(x: f64, c: f64, w: f64, sigmoid: bool) -> f64 {
    if sigmoid {
        1.0 / (1.0 + (-4.0 * (x - c) / w).exp())
    } else if x <= c - 0.5 - (w - 1.0) / 2.0 {
        0.0
    } else if x > c - 0.5 + (w - 1.0) / 2.0 {
        1.0
    } else {
        (x - (c - 0.5)) / (w - 1.0) + 0.5
    }
}

pub(crate) fn min_max(v: &[f64]) -> Vec<f64> {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![0.0; v.len()];
    }
    v.iter().map(|&x| (x - lo) / (hi - lo)).collect()
}

pub(crate) fn palette(
    path: &Path,
    view: &DecodeView<'_>,
    idx: &[f64],
    h: usize,
    w: usize,
) -> Result<Raw, Error> {
    let bad = |what: &str| {
        Error::dicom(
            path,
            Refusal::Unsupported,
            format!("palette colour: {what}"),
        )
    };
    let tables = [
        (
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
    ];
    let n = h * w;
    let mut pixels = vec![0u8; 3 * n];
    for (c, (dt, tt)) in tables.into_iter().enumerate() {
        let desc = view
            .ints(dt)
            .filter(|d| d.len() == 3)
            .ok_or_else(|| bad("no table descriptor"))?;
        let entries = if desc[0] == 0 {
            65536
        } else {
            (desc[0] as usize) & 0xffff
        };
        let first = desc[1];
        let bits = desc[2];
        let table: Vec<u16> = view
            .ints(tt)
            .ok_or_else(|| bad("no table data"))?
            .into_iter()
            .map(|v| v.clamp(0, 65535) as u16)
            .collect();
        if table.len() < entries || entries == 0 {
            return Err(bad("table data is shorter than its descriptor"));
        }
        let shift = if bits > 8 { bits - 8 } else { 0 };
        for i in 0..n {
            let k = (idx[i] as i64 - first).clamp(0, entries as i64 - 1) as usize;
            pixels[c * n + i] = (table[k] >> shift).min(255) as u8;
        }
    }
    Ok(Raw { c: 3, h, w, pixels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voi_linear_and_sigmoid() {
        // PS3.3 C.11.2.1.2.1 example: c = 2048, w = 4096.
        assert_eq!(voi(-10.0, 2048.0, 4096.0, false), 0.0);
        assert_eq!(voi(5000.0, 2048.0, 4096.0, false), 1.0);
        assert!((voi(2047.5, 2048.0, 4096.0, false) - 0.5).abs() < 1e-9);
        assert!((voi(40.0, 40.0, 400.0, true) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn samples_mask_and_sign_extend() {
        // 12 bits stored in 16, signed: 0x0fff = -1, 0x0800 = -2048; high bits ignored.
        let f = [0xff, 0xff, 0x00, 0x08, 0x01, 0x00];
        let v = samples(&f, 16, 12, PixelRepresentation::Signed).unwrap();
        assert_eq!(v, vec![-1.0, -2048.0, 1.0]);
        let u = samples(&f, 16, 12, PixelRepresentation::Unsigned).unwrap();
        assert_eq!(u, vec![4095.0, 2048.0, 1.0]);
    }

    #[test]
    fn min_max_of_flat_is_zero() {
        assert_eq!(min_max(&[3.0, 3.0]), vec![0.0, 0.0]);
        assert_eq!(min_max(&[1.0, 3.0]), vec![0.0, 1.0]);
    }
}
