//! Views for self-training: [`weak_augment`] (flip + translation) and [`strong_augment`]
//! (RandAugment-style ops with random magnitudes, then Cutout), in the spirit of FixMatch's
//! `RandAugmentMC`. Each op is a reusable function on a [`U8Image`].
//!
//! Geometric ops (rotate, shear, translate) sample the nearest neighbour and fill uncovered
//! pixels with the image's background: the mean of its border pixels. FixMatch fills with grey
//! (128), which suits CIFAR's photographs but frames a Fashion-MNIST garment (black background)
//! in a grey band that no real image has.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::transform::{hflip, random_pad_crop, U8Image};

/// Grey used to fill Cutout squares.
pub const FILL_GREY: u8 = 128;

/// The RandAugment op pool of [`strong_augment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Identity,
    AutoContrast,
    Brightness,
    Color,
    Contrast,
    Equalize,
    Posterize,
    Rotate,
    Sharpness,
    ShearX,
    ShearY,
    Solarize,
    TranslateX,
    TranslateY,
}

impl Op {
    /// Every op, in a fixed order (the draw indexes into it).
    pub const ALL: [Op; 14] = [
        Op::Identity,
        Op::AutoContrast,
        Op::Brightness,
        Op::Color,
        Op::Contrast,
        Op::Equalize,
        Op::Posterize,
        Op::Rotate,
        Op::Sharpness,
        Op::ShearX,
        Op::ShearY,
        Op::Solarize,
        Op::TranslateX,
        Op::TranslateY,
    ];

    /// Applies the op at `magnitude` in [0, 1] (0 = weakest, 1 = strongest); `signed` in
    /// [-1, 1] is `magnitude` with a random sign for ops that go both ways.
    pub fn apply(self, img: &U8Image, signed: f32) -> U8Image {
        let m = signed.abs().min(1.0);
        let s = signed.clamp(-1.0, 1.0);
        match self {
            Op::Identity => img.clone(),
            Op::AutoContrast => autocontrast(img),
            Op::Brightness => brightness(img, 1.0 + 0.9 * s),
            Op::Color => color(img, 1.0 + 0.9 * s),
            Op::Contrast => contrast(img, 1.0 + 0.9 * s),
            Op::Equalize => equalize(img),
            Op::Posterize => posterize(img, 8 - (4.0 * m).round() as u32),
            Op::Rotate => rotate(img, 30.0 * s),
            Op::Sharpness => sharpness(img, 1.0 + 0.9 * s),
            Op::ShearX => shear_x(img, 0.3 * s),
            Op::ShearY => shear_y(img, 0.3 * s),
            Op::Solarize => solarize(img, 256 - (256.0 * m).round() as u32),
            Op::TranslateX => translate(img, 0.3 * s * img.width as f32, 0.0),
            Op::TranslateY => translate(img, 0.0, 0.3 * s * img.height as f32),
        }
    }
}

/// The weak view: random horizontal flip, then a random translation of up to 12.5% of the
/// size (at least 2 px) with black padding.
pub fn weak_augment(img: &U8Image, rng: &mut ChaCha8Rng) -> U8Image {
    let mut out = img.clone();
    if rng.random_bool(0.5) {
        hflip(&mut out);
    }
    let pad = (img.width.max(img.height) / 8).max(2);
    random_pad_crop(&out, pad, rng)
}

/// The strong view of an (already weakly augmented) image: two ops drawn uniformly from
/// [`Op::ALL`] (with replacement), each with a magnitude uniform in [0, 1] and a random sign,
/// then Cutout of a grey square of a quarter of the side at a random centre.
pub fn strong_augment(img: &U8Image, rng: &mut ChaCha8Rng) -> U8Image {
    let mut out = img.clone();
    for _ in 0..2 {
        let op = Op::ALL[rng.random_range(0..Op::ALL.len())];
        let magnitude: f32 = rng.random_range(0.0..=1.0);
        let signed = if rng.random_bool(0.5) {
            magnitude
        } else {
            -magnitude
        };
        out = op.apply(&out, signed);
    }
    let side = ((img.width.min(img.height) as f32) / 4.0).round().max(1.0) as usize;
    let cx = rng.random_range(0..img.width.max(1));
    let cy = rng.random_range(0..img.height.max(1));
    cutout(&mut out, cx, cy, side, FILL_GREY);
    out
}

/// Fills a `side` x `side` square centred at (cx, cy), clipped to the image, with `fill`.
pub fn cutout(img: &mut U8Image, cx: usize, cy: usize, side: usize, fill: u8) {
    let half = side / 2;
    let x0 = cx.saturating_sub(half);
    let y0 = cy.saturating_sub(half);
    let x1 = (x0 + side).min(img.width);
    let y1 = (y0 + side).min(img.height);
    let c = img.channels;
    for y in y0..y1 {
        let row = y * img.width * c;
        img.data[row + x0 * c..row + x1 * c].fill(fill);
    }
}

/// Per channel, maps the darkest value to 0 and the brightest to 255 (PIL `autocontrast`).
pub fn autocontrast(img: &U8Image) -> U8Image {
    let c = img.channels;
    let mut out = img.clone();
    for ch in 0..c {
        let values = img.data.iter().skip(ch).step_by(c);
        let (lo, hi) = values.fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if hi <= lo {
            continue;
        }
        let scale = 255.0 / f32::from(hi - lo);
        for v in out.data.iter_mut().skip(ch).step_by(c) {
            *v = (f32::from(*v - lo) * scale).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Blends `img` with `other` as PIL's `ImageEnhance`: `other + factor * (img - other)`.
fn blend(img: &U8Image, other: &[u8], factor: f32) -> U8Image {
    let mut out = img.clone();
    for (v, &o) in out.data.iter_mut().zip(other) {
        let (a, b) = (f32::from(*v), f32::from(o));
        *v = (b + factor * (a - b)).round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// Brightness: blend with black (`factor` 1 is the identity).
pub fn brightness(img: &U8Image, factor: f32) -> U8Image {
    blend(img, &vec![0; img.data.len()], factor)
}

/// Luma of every pixel (the pixel itself for greyscale).
fn luma(img: &U8Image) -> Vec<u8> {
    if img.channels == 3 {
        img.data
            .chunks_exact(3)
            .map(|p| super::decode::rgb_to_luma(p[0], p[1], p[2]))
            .collect()
    } else {
        img.data.clone()
    }
}

/// Saturation: blend with the greyscale image (identity on greyscale images).
pub fn color(img: &U8Image, factor: f32) -> U8Image {
    if img.channels != 3 {
        return img.clone();
    }
    let grey: Vec<u8> = luma(img).into_iter().flat_map(|l| [l, l, l]).collect();
    blend(img, &grey, factor)
}

/// Contrast: blend with the mean luma (PIL's `ImageEnhance.Contrast`).
pub fn contrast(img: &U8Image, factor: f32) -> U8Image {
    let l = luma(img);
    let mean = if l.is_empty() {
        0.0
    } else {
        l.iter().map(|&v| f64::from(v)).sum::<f64>() / l.len() as f64
    };
    let m = (mean + 0.5).floor().clamp(0.0, 255.0) as u8;
    blend(img, &vec![m; img.data.len()], factor)
}

/// Histogram equalisation per channel (PIL's `ImageOps.equalize`).
pub fn equalize(img: &U8Image) -> U8Image {
    let c = img.channels;
    let mut out = img.clone();
    for ch in 0..c {
        let mut hist = [0usize; 256];
        for &v in img.data.iter().skip(ch).step_by(c) {
            hist[usize::from(v)] += 1;
        }
        let nonzero: Vec<usize> = hist.iter().copied().filter(|&h| h > 0).collect();
        let Some(&last) = nonzero.last() else {
            continue;
        };
        if nonzero.len() <= 1 {
            continue;
        }
        let step = (nonzero.iter().sum::<usize>() - last) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0u8; 256];
        let mut n = step / 2;
        for (i, entry) in lut.iter_mut().enumerate() {
            *entry = (n / step).min(255) as u8;
            n += hist[i];
        }
        for v in out.data.iter_mut().skip(ch).step_by(c) {
            *v = lut[usize::from(*v)];
        }
    }
    out
}

/// Keeps the top `bits` bits of every value (1..=8).
pub fn posterize(img: &U8Image, bits: u32) -> U8Image {
    let bits = bits.clamp(1, 8);
    let mask = !((1u16 << (8 - bits)) - 1) as u8;
    let mut out = img.clone();
    out.data.iter_mut().for_each(|v| *v &= mask);
    out
}

/// Inverts every value at or above `threshold` (0..=256; 256 is the identity).
pub fn solarize(img: &U8Image, threshold: u32) -> U8Image {
    let mut out = img.clone();
    out.data.iter_mut().for_each(|v| {
        if u32::from(*v) >= threshold {
            *v = 255 - *v;
        }
    });
    out
}

/// Sharpness: blend with PIL's SMOOTH-filtered image (3x3 kernel 1,1,1/1,5,1/1,1,1 over 13;
/// border pixels unfiltered). `factor` > 1 sharpens, < 1 blurs.
pub fn sharpness(img: &U8Image, factor: f32) -> U8Image {
    let (w, h, c) = (img.width, img.height, img.channels);
    let mut smooth = img.data.clone();
    if w >= 3 && h >= 3 {
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                for ch in 0..c {
                    let mut acc = 0u32;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let weight = if dx == 1 && dy == 1 { 5 } else { 1 };
                            let v = img.data[((y + dy - 1) * w + (x + dx - 1)) * c + ch];
                            acc += weight * u32::from(v);
                        }
                    }
                    smooth[(y * w + x) * c + ch] = ((acc + 6) / 13) as u8;
                }
            }
        }
    }
    blend(img, &smooth, factor)
}

/// Resamples with an inverse map: output pixel centre (x, y) reads the input at
/// `map(x, y)` (pixel-centre coordinates, nearest neighbour), the [`border_fill`] outside.
fn remap(img: &U8Image, map: impl Fn(f32, f32) -> (f32, f32)) -> U8Image {
    let (w, h, c) = (img.width, img.height, img.channels);
    let fill = border_fill(img);
    let mut out = U8Image {
        width: w,
        height: h,
        channels: c,
        data: fill.iter().copied().cycle().take(w * h * c).collect(),
    };
    for y in 0..h {
        for x in 0..w {
            let (sx, sy) = map(x as f32 + 0.5, y as f32 + 0.5);
            let (ix, iy) = (sx.floor(), sy.floor());
            if ix >= 0.0 && iy >= 0.0 && (ix as usize) < w && (iy as usize) < h {
                let src = (iy as usize * w + ix as usize) * c;
                let dst = (y * w + x) * c;
                out.data[dst..dst + c].copy_from_slice(&img.data[src..src + c]);
            }
        }
    }
    out
}

/// The per-channel mean of the outermost rows and columns: the background that uncovered
/// pixels of a geometric op continue.
pub fn border_fill(img: &U8Image) -> Vec<u8> {
    let (w, h, c) = (img.width, img.height, img.channels);
    let mut sum = vec![0u64; c];
    let mut n = 0u64;
    for y in 0..h {
        for x in 0..w {
            if y == 0 || x == 0 || y + 1 == h || x + 1 == w {
                let p = (y * w + x) * c;
                for (ch, s) in sum.iter_mut().enumerate() {
                    *s += u64::from(img.data[p + ch]);
                }
                n += 1;
            }
        }
    }
    sum.iter()
        .map(|&s| (s + n / 2).checked_div(n).map_or(FILL_GREY, |v| v as u8))
        .collect()
}

/// Rotates by `degrees` (counter-clockwise on screen) about the centre.
pub fn rotate(img: &U8Image, degrees: f32) -> U8Image {
    let (cx, cy) = (img.width as f32 / 2.0, img.height as f32 / 2.0);
    let (sin, cos) = degrees.to_radians().sin_cos();
    // Inverse map: rotate the output position back by the angle. With y pointing down, a
    // counter-clockwise rotation on screen is a clockwise one in these coordinates.
    remap(img, |x, y| {
        let (dx, dy) = (x - cx, y - cy);
        (cx + cos * dx - sin * dy, cy + sin * dx + cos * dy)
    })
}

/// Horizontal shear about the centre row: the input at `x + shear * (y - cy)`.
pub fn shear_x(img: &U8Image, shear: f32) -> U8Image {
    let cy = img.height as f32 / 2.0;
    remap(img, |x, y| (x + shear * (y - cy), y))
}

/// Vertical shear about the centre column.
pub fn shear_y(img: &U8Image, shear: f32) -> U8Image {
    let cx = img.width as f32 / 2.0;
    remap(img, |x, y| (x, y + shear * (x - cx)))
}

/// Moves the content by (`dx`, `dy`) pixels, rounded.
pub fn translate(img: &U8Image, dx: f32, dy: f32) -> U8Image {
    let (dx, dy) = (dx.round(), dy.round());
    remap(img, |x, y| (x - dx, y - dy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::transform::{sample_rng, AugmentKind};

    fn img(w: usize, h: usize, c: usize) -> U8Image {
        let data = (0..w * h * c).map(|i| (i * 37 % 251) as u8).collect();
        U8Image::from_raw(w, h, c, data).expect("raw")
    }

    #[test]
    fn identity_magnitudes_leave_image_alone() {
        let im = img(9, 7, 3);
        for op in Op::ALL {
            let out = op.apply(&im, 0.0);
            assert_eq!((out.width, out.height, out.channels), (9, 7, 3), "{op:?}");
            if !matches!(op, Op::AutoContrast | Op::Equalize) {
                assert_eq!(out, im, "{op:?} at magnitude 0");
            }
        }
    }

    #[test]
    fn point_ops() {
        let im = U8Image::from_raw(4, 1, 1, vec![10, 20, 200, 130]).expect("raw");
        assert_eq!(posterize(&im, 4).data, vec![0, 16, 192, 128]);
        assert_eq!(solarize(&im, 128).data, vec![10, 20, 55, 125]);
        assert_eq!(autocontrast(&im).data, vec![0, 13, 255, 161]);
        assert_eq!(brightness(&im, 0.5).data, vec![5, 10, 100, 65]);
        // Mean is 90: contrast 0 gives flat grey at the mean.
        assert_eq!(contrast(&im, 0.0).data, vec![90; 4]);
        let eq = equalize(&img(16, 16, 1));
        assert_eq!(eq.data.len(), 256);
        let flat = U8Image::filled(4, 4, 3, 77);
        assert_eq!(equalize(&flat), flat);
        assert_eq!(autocontrast(&flat), flat);
    }

    #[test]
    fn geometric_ops() {
        let im = img(6, 6, 1);
        let moved = translate(&im, 2.0, 0.0);
        assert_eq!(moved.pixel(0, 3), border_fill(&im).as_slice());
        assert_eq!(moved.pixel(2, 3), im.pixel(0, 3));
        // A quarter turn of a square image moves the top-right corner to the top-left.
        let turned = rotate(&im, 90.0);
        assert_eq!(turned.pixel(0, 0), im.pixel(5, 0));
        assert_eq!(rotate(&im, 360.0), im);
        let sheared = shear_x(&im, 0.5);
        assert_eq!(sheared.pixel(2, 3), im.pixel(2, 3)); // the centre row stays
        let sheared = shear_y(&im, 0.5);
        assert_eq!(sheared.pixel(3, 1), im.pixel(3, 1)); // the centre column stays
    }

    #[test]
    fn uncovered_pixels_continue_the_background() {
        // A bright square on a black background (Fashion-MNIST-like): rotating and shifting it
        // uncovers black, not grey.
        let mut im = U8Image::filled(8, 8, 1, 0);
        for y in 2..6 {
            for x in 2..6 {
                im.data[y * 8 + x] = 200;
            }
        }
        assert_eq!(border_fill(&im), vec![0]);
        let turned = rotate(&im, 30.0);
        assert_eq!(turned.pixel(0, 0), &[0]);
        assert_eq!(translate(&im, 0.0, 3.0).pixel(4, 0), &[0]);
        // Per channel: the border's mean, rounded.
        let mut rgb = U8Image::filled(3, 3, 3, 0);
        for p in 0..9 {
            rgb.data[p * 3] = 10;
            rgb.data[p * 3 + 1] = if p == 0 { 9 } else { 0 };
            rgb.data[p * 3 + 2] = 255;
        }
        assert_eq!(border_fill(&rgb), vec![10, 1, 255]);
    }

    #[test]
    fn cutout_fills_a_clipped_square() {
        let mut im = U8Image::filled(8, 8, 1, 0);
        cutout(&mut im, 0, 0, 4, FILL_GREY);
        let filled = im.data.iter().filter(|&&v| v == FILL_GREY).count();
        assert_eq!(filled, 16); // clipped at the corner: rows 0..4, cols 0..4
        let mut im = U8Image::filled(8, 8, 3, 0);
        cutout(&mut im, 4, 4, 2, FILL_GREY);
        assert_eq!(im.pixel(3, 3), &[FILL_GREY; 3]);
        assert_eq!(im.pixel(4, 4), &[FILL_GREY; 3]);
        assert_eq!(im.pixel(5, 5), &[0; 3]);
    }

    #[test]
    fn strong_view_is_deterministic_and_differs_from_weak() {
        let im = img(28, 28, 1);
        let k = AugmentKind::Strong;
        let a = strong_augment(&im, &mut sample_rng(3, 1, 4, k, 0));
        let b = strong_augment(&im, &mut sample_rng(3, 1, 4, k, 0));
        assert_eq!(a, b);
        assert_eq!((a.width, a.height, a.channels), (28, 28, 1));
        // Cutout alone guarantees a 7x7 grey square (clipped at most to 4x4 in a corner).
        let mut differ = 0;
        for i in 0..20 {
            let s = strong_augment(&im, &mut sample_rng(3, 1, i, k, 0));
            differ += usize::from(s != im);
        }
        assert_eq!(differ, 20);
        let w = weak_augment(&im, &mut sample_rng(3, 1, 4, AugmentKind::Weak, 0));
        assert_eq!((w.width, w.height), (28, 28));
    }
}
