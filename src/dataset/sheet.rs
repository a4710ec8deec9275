//! Contact sheets: a PNG grid of images, one row (or more, when wrapped) per class, each row
//! labelled with the class name in a tiny built-in bitmap font (no font files).
//!
//! Small images are upscaled (nearest neighbour) so a 28×28 image is visible; large ones are
//! downsampled to at most 128 px. Works for u8 [`Images`] and [`FloatImages`], 1 or 3 channels.

use super::{FloatImages, Images, Shape};

/// Images a contact sheet can be drawn from.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum SheetImages<'a> {
    /// 8-bit images.
    U8(&'a Images),
    /// Float images in [0, 1].
    F32(&'a FloatImages),
}

impl<'a> From<&'a Images> for SheetImages<'a> {
    fn from(i: &'a Images) -> Self {
        SheetImages::U8(i)
    }
}

impl<'a> From<&'a FloatImages> for SheetImages<'a> {
    fn from(i: &'a FloatImages) -> Self {
        SheetImages::F32(i)
    }
}

impl SheetImages<'_> {
    fn shape(&self) -> Shape {
        match self {
            SheetImages::U8(i) => i.shape,
            SheetImages::F32(i) => i.shape,
        }
    }
    fn labels(&self) -> &[u32] {
        match self {
            SheetImages::U8(i) => &i.labels,
            SheetImages::F32(i) => &i.labels,
        }
    }
    /// Value `k` of image `i` as a byte.
    fn byte(&self, i: usize, k: usize) -> u8 {
        match self {
            SheetImages::U8(s) => s.pixels[i * s.shape.len() + k],
            SheetImages::F32(s) => super::synthetic::unit_to_u8(s.data[i * s.shape.len() + k]),
        }
    }
}

/// Most images drawn per class (the sheet must stay a reasonable size).
pub const MAX_PER_CLASS: usize = 256;
/// Images per row before a class wraps onto another row.
pub const MAX_COLUMNS: usize = 16;
const PAD: usize = 4;
const TEXT_SCALE: usize = 2;
const MAX_LABEL_CHARS: usize = 20;
const BACKGROUND: [u8; 3] = [32, 32, 40];
const TEXT: [u8; 3] = [235, 235, 235];

/// Draw a contact sheet of `set` and encode it as PNG: one row per class (in label order, wrapped
/// after [`MAX_COLUMNS`] images), labelled with `classes[label]`. At most `per_class` images of
/// each class are drawn (`None`: every image, up to [`MAX_PER_CLASS`]); they are taken in the
/// set's order. Labels without a class name are drawn as `class-N`.
///
/// # Privacy
/// The sheet shows the images themselves: for a stored (private) dataset it is as sensitive as
/// the data and stays in the workspace unless the operator moves it.
///
/// # Panics
/// Never (the sheet's size is bounded by the constants above).
pub fn contact_sheet_png<'a>(
    set: impl Into<SheetImages<'a>>,
    classes: &[String],
    per_class: Option<usize>,
) -> Vec<u8> {
    let set = set.into();
    let shape = set.shape();
    let limit = per_class.unwrap_or(MAX_PER_CLASS).min(MAX_PER_CLASS);
    let labels = set.labels();
    let k = classes
        .len()
        .max(labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0))
        .max(1);
    let mut chosen: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &l) in labels.iter().enumerate() {
        let v = &mut chosen[l as usize];
        if v.len() < limit {
            v.push(i);
        }
    }
    // Cell size: upscale small images to about 64 px, downsample big ones to 128 px.
    let (h, w) = (shape.h.max(1), shape.w.max(1));
    let big = h.max(w);
    let (ch, cw) = if big < 64 {
        let s = 64usize.div_ceil(big).min(8);
        (h * s, w * s)
    } else if big > 128 {
        ((h * 128 / big).max(1), (w * 128 / big).max(1))
    } else {
        (h, w)
    };
    let names: Vec<String> = (0..k)
        .map(|c| {
            let n = classes
                .get(c)
                .cloned()
                .unwrap_or_else(|| format!("class-{c}"));
            n.chars().take(MAX_LABEL_CHARS).collect()
        })
        .collect();
    let glyph_w = 4 * TEXT_SCALE;
    let glyph_h = 6 * TEXT_SCALE;
    let label_w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0) * glyph_w + 2 * PAD;
    let cols = chosen
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .clamp(1, MAX_COLUMNS);
    let row_h = ch.max(glyph_h) + PAD;
    let rows_of = |n: usize| n.div_ceil(cols).max(1);
    let total_rows: usize = chosen.iter().map(|v| rows_of(v.len())).sum();
    let width = label_w + cols * (cw + PAD) + PAD;
    let height = total_rows * row_h + PAD;
    let mut canvas = vec![0u8; width * height * 3];
    for px in canvas.chunks_exact_mut(3) {
        px.copy_from_slice(&BACKGROUND);
    }
    let mut y0 = PAD;
    for (c, idx) in chosen.iter().enumerate() {
        draw_text(
            &mut canvas,
            width,
            PAD,
            y0 + (ch.saturating_sub(glyph_h)) / 2,
            &names[c],
        );
        for (j, &i) in idx.iter().enumerate() {
            let x = label_w + (j % cols) * (cw + PAD);
            let y = y0 + (j / cols) * row_h;
            draw_image(&mut canvas, width, x, y, (ch, cw), &set, i);
        }
        y0 += rows_of(idx.len()) * row_h;
    }
    let mut out = Vec::new();
    let enc = image::codecs::png::PngEncoder::new(&mut out);
    image::ImageEncoder::write_image(
        enc,
        &canvas,
        width as u32,
        height as u32,
        image::ExtendedColorType::Rgb8,
    )
    .expect("invariant: an in-memory RGB8 buffer of the stated size encodes");
    out
}

fn draw_image(
    canvas: &mut [u8],
    width: usize,
    x0: usize,
    y0: usize,
    (ch, cw): (usize, usize),
    set: &SheetImages<'_>,
    i: usize,
) {
    let s = set.shape();
    let plane = s.h * s.w;
    for y in 0..ch {
        let sy = y * s.h / ch;
        for x in 0..cw {
            let sx = x * s.w / cw;
            let at = sy * s.w + sx;
            let rgb = if s.c >= 3 {
                [
                    set.byte(i, at),
                    set.byte(i, plane + at),
                    set.byte(i, 2 * plane + at),
                ]
            } else {
                let g = set.byte(i, at);
                [g, g, g]
            };
            let o = ((y0 + y) * width + x0 + x) * 3;
            canvas[o..o + 3].copy_from_slice(&rgb);
        }
    }
}

fn draw_text(canvas: &mut [u8], width: usize, x0: usize, y0: usize, text: &str) {
    let height = canvas.len() / (3 * width);
    for (n, ch) in text.chars().enumerate() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) == 0 {
                    continue;
                }
                for dy in 0..TEXT_SCALE {
                    for dx in 0..TEXT_SCALE {
                        let x = x0 + n * 4 * TEXT_SCALE + col * TEXT_SCALE + dx;
                        let y = y0 + row * TEXT_SCALE + dy;
                        if x < width && y < height {
                            let o = (y * width + x) * 3;
                            canvas[o..o + 3].copy_from_slice(&TEXT);
                        }
                    }
                }
            }
        }
    }
}

/// A 3×5 glyph: five rows, bit 2 = left column. Lower case is drawn as upper case.
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        'A' => [0b010, 0b101, 0b111, 0b101, 0b101],
        'B' => [0b110, 0b101, 0b110, 0b101, 0b110],
        'C' => [0b011, 0b100, 0b100, 0b100, 0b011],
        'D' => [0b110, 0b101, 0b101, 0b101, 0b110],
        'E' => [0b111, 0b100, 0b110, 0b100, 0b111],
        'F' => [0b111, 0b100, 0b110, 0b100, 0b100],
        'G' => [0b011, 0b100, 0b101, 0b101, 0b011],
        'H' => [0b101, 0b101, 0b111, 0b101, 0b101],
        'I' => [0b111, 0b010, 0b010, 0b010, 0b111],
        'J' => [0b001, 0b001, 0b001, 0b101, 0b010],
        'K' => [0b101, 0b101, 0b110, 0b101, 0b101],
        'L' => [0b100, 0b100, 0b100, 0b100, 0b111],
        'M' => [0b101, 0b111, 0b111, 0b101, 0b101],
        'N' => [0b110, 0b101, 0b101, 0b101, 0b101],
        'O' => [0b010, 0b101, 0b101, 0b101, 0b010],
        'P' => [0b110, 0b101, 0b110, 0b100, 0b100],
        'Q' => [0b010, 0b101, 0b101, 0b110, 0b011],
        'R' => [0b110, 0b101, 0b110, 0b101, 0b101],
        'S' => [0b011, 0b100, 0b010, 0b001, 0b110],
        'T' => [0b111, 0b010, 0b010, 0b010, 0b010],
        'U' => [0b101, 0b101, 0b101, 0b101, 0b111],
        'V' => [0b101, 0b101, 0b101, 0b101, 0b010],
        'W' => [0b101, 0b101, 0b111, 0b111, 0b101],
        'X' => [0b101, 0b101, 0b010, 0b101, 0b101],
        'Y' => [0b101, 0b101, 0b010, 0b010, 0b010],
        'Z' => [0b111, 0b001, 0b010, 0b100, 0b111],
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b110, 0b001, 0b010, 0b100, 0b111],
        '3' => [0b110, 0b001, 0b010, 0b001, 0b110],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b110, 0b001, 0b110],
        '6' => [0b011, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b110],
        '-' => [0b000, 0b000, 0b111, 0b000, 0b000],
        '_' => [0b000, 0b000, 0b000, 0b000, 0b111],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        ',' => [0b000, 0b000, 0b000, 0b010, 0b100],
        ':' => [0b000, 0b010, 0b000, 0b010, 0b000],
        '/' => [0b001, 0b001, 0b010, 0b100, 0b100],
        '(' => [0b010, 0b100, 0b100, 0b100, 0b010],
        ')' => [0b010, 0b001, 0b001, 0b001, 0b010],
        '+' => [0b000, 0b010, 0b111, 0b010, 0b000],
        '\'' => [0b010, 0b010, 0b000, 0b000, 0b000],
        ' ' => [0; 5],
        _ => [0b110, 0b001, 0b010, 0b000, 0b010], // '?'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png: &[u8]) -> image::RgbImage {
        image::load_from_memory_with_format(png, image::ImageFormat::Png)
            .unwrap()
            .to_rgb8()
    }

    #[test]
    fn one_row_per_class_upscaled_and_labelled() {
        let shape = Shape { c: 1, h: 28, w: 28 };
        let mut s = Images::new(shape);
        for i in 0..6u32 {
            s.push(&vec![200; shape.len()], i % 3);
        }
        let classes: Vec<String> = ["a", "bb", "T-shirt/top"].map(String::from).to_vec();
        let img = decode(&contact_sheet_png(&s, &classes, None));
        // 28 px upscaled 3× = 84 px cells; 3 classes, one row each; 2 columns.
        let row_h = 84 + PAD;
        assert_eq!(img.height() as usize, 3 * row_h + PAD);
        let label_w = 11 * 4 * TEXT_SCALE + 2 * PAD;
        assert_eq!(img.width() as usize, label_w + 2 * (84 + PAD) + PAD);
        // The image pixels are drawn where the layout says.
        assert_eq!(
            img.get_pixel(label_w as u32 + 10, PAD as u32 + 10).0,
            [200; 3]
        );
        // Some text pixels exist in the label column of every row.
        for r in 0..3 {
            let y0 = PAD + r * row_h;
            let text = (y0..y0 + row_h - PAD)
                .flat_map(|y| (0..label_w).map(move |x| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x as u32, y as u32).0 == TEXT)
                .count();
            assert!(text > 10, "row {r} has no label");
        }
    }

    #[test]
    fn float_rgb_and_per_class_limit() {
        let shape = Shape { c: 3, h: 2, w: 2 };
        let mut s = FloatImages::new(shape);
        for _ in 0..40 {
            // red everywhere
            s.push(
                &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                1,
            );
        }
        let png = contact_sheet_png(&s, &["x".into(), "y".into()], Some(20));
        let img = decode(&png);
        // class 0 is empty (one blank row), class 1 has 20 images wrapped over 2 rows.
        let cell = 2 * 8; // 2 px upscaled by the maximum factor 8
        let row_h = cell.max(6 * TEXT_SCALE) + PAD;
        assert_eq!(img.height() as usize, 3 * row_h + PAD);
        let label_w = 4 * TEXT_SCALE + 2 * PAD;
        assert_eq!(
            img.width() as usize,
            label_w + MAX_COLUMNS * (cell + PAD) + PAD
        );
        let y = (PAD + row_h + 2) as u32;
        assert_eq!(img.get_pixel(label_w as u32 + 1, y).0, [255, 0, 0]);
    }

    #[test]
    fn large_images_are_downsampled_and_empty_sets_draw() {
        let shape = Shape {
            c: 1,
            h: 300,
            w: 150,
        };
        let mut s = Images::new(shape);
        s.push(&vec![9; shape.len()], 0);
        let img = decode(&contact_sheet_png(&s, &["big".into()], Some(4)));
        assert_eq!(img.height() as usize, 128 + PAD + PAD);
        let empty = Images::new(Shape { c: 1, h: 4, w: 4 });
        assert!(!contact_sheet_png(&empty, &[], None).is_empty());
    }
}
