//! Transforms from a decoded 8-bit image to the normalised CHW `f32` the model sees.
//!
//! Building blocks work on [`U8Image`] (interleaved HWC bytes) and are reusable: [`resize`],
//! [`resize_shorter`], [`crop`], [`center_crop`], [`hflip`], [`pad_crop`],
//! [`random_resized_crop`], [`normalize_into`]. [`Preprocess`] strings them together per
//! [`AugmentKind`]; the RandAugment-style ops live in [`super::augment`].
//!
//! Randomness always comes from a [`ChaCha8Rng`] made by [`sample_rng`] from (seed, epoch,
//! sample index, ...), so a sample's augmentation does not depend on which worker thread ran it.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::augment::{strong_augment, weak_augment};
use super::decode::{decode_bytes, decode_image, jpeg_error, jpeg_header};
use super::jpeg;
use super::DataError;
use crate::config::Augment;

/// An 8-bit image, `height` rows of `width` pixels of `channels` interleaved bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct U8Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    /// `height * width * channels` bytes, row-major, channels interleaved.
    pub data: Vec<u8>,
}

impl U8Image {
    /// An image filled with `value`.
    pub fn filled(width: usize, height: usize, channels: usize, value: u8) -> U8Image {
        U8Image {
            width,
            height,
            channels,
            data: vec![value; width * height * channels],
        }
    }

    /// Builds an image from raw bytes, checking the length.
    pub fn from_raw(
        width: usize,
        height: usize,
        channels: usize,
        data: Vec<u8>,
    ) -> Option<U8Image> {
        (data.len() == width * height * channels).then_some(U8Image {
            width,
            height,
            channels,
            data,
        })
    }

    /// Bytes held (for the loader's cache budget).
    pub fn byte_len(&self) -> usize {
        self.data.len()
    }

    /// The pixel at (x, y): `channels` bytes.
    ///
    /// # Panics
    /// When (x, y) is outside the image, like slice indexing.
    pub fn pixel(&self, x: usize, y: usize) -> &[u8] {
        let i = (y * self.width + x) * self.channels;
        &self.data[i..i + self.channels]
    }
}

/// Which transform a batch gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AugmentKind {
    /// The eval transform: resize the shorter side to `round(size / 0.875)` and centre-crop
    /// (images already `size` x `size` are used as they are).
    Eval,
    /// Train-time augmentation as configured.
    Train(Augment),
    /// The "weak" view for self-training: eval transform, horizontal flip, and a random
    /// translation of up to 12.5% of the size (pad with black and crop), as FixMatch.
    Weak,
    /// The "strong" view: the weak view, then two random RandAugment-style ops with random
    /// magnitudes, then Cutout (see [`super::augment::strong_augment`]).
    Strong,
}

impl AugmentKind {
    /// A number that keeps the random streams of different kinds apart.
    fn stream_tag(self) -> u64 {
        match self {
            AugmentKind::Eval => 0,
            AugmentKind::Train(Augment::None) => 1,
            AugmentKind::Train(Augment::FlipCrop) => 2,
            AugmentKind::Train(Augment::RandomResizedCrop) => 3,
            AugmentKind::Weak => 4,
            // The training option is the same transform as the view, so the same stream.
            AugmentKind::Strong | AugmentKind::Train(Augment::Strong) => 5,
        }
    }
}

/// The random generator for one sample: a function of the run seed, the epoch, the sample's
/// index in the dataset, the augmentation kind and `repeat` (how many times this index came
/// earlier in the same epoch's order, so that repeats get different augmentations).
pub fn sample_rng(
    seed: u64,
    epoch: u64,
    index: usize,
    kind: AugmentKind,
    repeat: u64,
) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&(index as u64).to_le_bytes());
    key[24..32].copy_from_slice(&kind.stream_tag().to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(repeat);
    rng
}

/// Preprocessing settings: what the model's input looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// 1 (greyscale) or 3 (RGB).
    pub channels: usize,
    /// Square output size in pixels.
    pub size: usize,
    /// Per-channel mean, in [0, 1] units (`channels` values).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (`channels` positive values).
    pub std: Vec<f32>,
}

/// ImageNet statistics (torchvision's), for pretrained RGB models.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet statistics (torchvision's), for pretrained RGB models.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl Preprocess {
    /// Checked constructor (see [`Preprocess::validate`]).
    pub fn new(
        channels: usize,
        size: usize,
        mean: Vec<f32>,
        std: Vec<f32>,
    ) -> Result<Preprocess, DataError> {
        let p = Preprocess {
            channels,
            size,
            mean,
            std,
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks channels (1 or 3), size (> 0) and that mean/std have one finite value per
    /// channel, std positive.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |message: String| Err(DataError::InvalidPreprocess { message });
        if self.channels != 1 && self.channels != 3 {
            return bad(format!("channels must be 1 or 3, got {}", self.channels));
        }
        if self.size == 0 {
            return bad("size must be at least 1 pixel".to_string());
        }
        if self.mean.len() != self.channels || self.std.len() != self.channels {
            return bad(format!(
                "mean and std need one value per channel ({}), got {} and {}",
                self.channels,
                self.mean.len(),
                self.std.len()
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return bad(format!("mean {:?} is not finite", self.mean));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return bad(format!("std {:?} must be positive", self.std));
        }
        Ok(())
    }

    /// Floats per output image (`channels * size * size`).
    pub fn image_len(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// Decodes `path` to this preprocessing's channel count.
    pub fn decode(&self, path: &Path) -> Result<U8Image, DataError> {
        decode_image(path, self.channels)
    }

    /// Decodes `path` and augments it for `kind` in one go: the same image as
    /// [`Preprocess::decode`] then [`Preprocess::augment`] with the same generator, but a
    /// RandomResizedCrop of a JPEG decodes only the rows and columns the crop keeps.
    pub fn decode_augment(
        &self,
        path: &Path,
        kind: AugmentKind,
        rng: &mut ChaCha8Rng,
    ) -> Result<U8Image, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        if kind == AugmentKind::Train(Augment::RandomResizedCrop) {
            if let Some(header) = jpeg_header(path, &bytes)? {
                return jpeg_random_resized_crop_flip(path, &bytes, header, self, rng);
            }
        }
        let img = decode_bytes(path, &bytes, self.channels)?;
        Ok(self.augment(&img, kind, rng))
    }

    /// The augmented (or eval) `size` x `size` image for `kind`.
    pub fn augment(&self, img: &U8Image, kind: AugmentKind, rng: &mut ChaCha8Rng) -> U8Image {
        let size = self.size;
        match kind {
            AugmentKind::Eval | AugmentKind::Train(Augment::None) => eval_transform(img, size),
            AugmentKind::Train(Augment::FlipCrop) => {
                let mut out = eval_transform(img, size);
                if rng.random_bool(0.5) {
                    hflip(&mut out);
                }
                random_pad_crop(&out, 2, rng)
            }
            AugmentKind::Train(Augment::RandomResizedCrop) => {
                random_resized_crop_flip(img, size, rng)
            }
            AugmentKind::Weak => weak_augment(&eval_transform(img, size), rng),
            AugmentKind::Strong | AugmentKind::Train(Augment::Strong) => {
                let weak = weak_augment(&eval_transform(img, size), rng);
                strong_augment(&weak, rng)
            }
        }
    }

    /// Augments `img` and writes the normalised CHW floats into `out` (`image_len()` long).
    pub fn apply_into(
        &self,
        img: &U8Image,
        kind: AugmentKind,
        rng: &mut ChaCha8Rng,
        out: &mut [f32],
    ) -> Result<(), DataError> {
        self.validate()?;
        let aug = self.augment(img, kind, rng);
        normalize_into(&aug, &self.mean, &self.std, out)
    }

    /// Augments `img` and returns the normalised CHW floats.
    pub fn apply(
        &self,
        img: &U8Image,
        kind: AugmentKind,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<f32>, DataError> {
        let mut out = vec![0.0; self.image_len()];
        self.apply_into(img, kind, rng, &mut out)?;
        Ok(out)
    }
}

/// The eval transform: an image already `size` x `size` is used as is; otherwise resize the
/// shorter side to `round(size / 0.875)` (bilinear) and centre-crop `size` x `size`.
pub fn eval_transform(img: &U8Image, size: usize) -> U8Image {
    if img.width == size && img.height == size {
        return img.clone();
    }
    let shorter = (size as f64 / 0.875).round() as usize;
    center_crop(&resize_shorter(img, shorter), size)
}

/// Resizes so that the shorter side is `shorter`, keeping the aspect ratio (the longer side is
/// truncated, as torchvision's `Resize(int)`).
pub fn resize_shorter(img: &U8Image, shorter: usize) -> U8Image {
    let (w, h) = (img.width, img.height);
    if w == 0 || h == 0 {
        return img.clone();
    }
    let (nw, nh) = if w <= h {
        (shorter, (shorter * h / w).max(1))
    } else {
        ((shorter * w / h).max(1), shorter)
    };
    resize(img, nw, nh)
}

/// Bilinear resize to `width` x `height`, antialiased when shrinking (the triangle filter's
/// support grows with the scale factor, as PIL's and torchvision's `antialias=True`).
pub fn resize(img: &U8Image, width: usize, height: usize) -> U8Image {
    if (img.width, img.height) == (width, height) {
        return img.clone();
    }
    let full = CropBox {
        x: 0,
        y: 0,
        width: img.width,
        height: img.height,
    };
    resize_region(img, full, width, height)
}

/// [`resize`] of the window `b` of `img` (which must lie inside `img`) without copying the
/// window out first: the same numbers as `resize(&crop(img, b…), width, height)`.
///
/// Separable: a horizontal pass over the window's rows into `f32`, then a vertical pass that
/// accumulates whole rows (vectorised; AVX2 when the CPU has it), rounded to `u8` at the end.
pub fn resize_region(img: &U8Image, b: CropBox, width: usize, height: usize) -> U8Image {
    resize_region_flip(img, b, width, height, false)
}

/// [`resize_region`], mirrored left-right when `flip` (at no cost: the horizontal filter runs
/// backwards), the same pixels as [`resize_region`] followed by [`hflip`].
pub fn resize_region_flip(
    img: &U8Image,
    b: CropBox,
    width: usize,
    height: usize,
    flip: bool,
) -> U8Image {
    let c = img.channels;
    if b.width == 0 || b.height == 0 || width == 0 || height == 0 {
        return U8Image::filled(width, height, c, 0);
    }
    debug_assert!(b.x + b.width <= img.width && b.y + b.height <= img.height);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { resize_region_avx2(img, b, width, height, flip) };
    }
    resize_region_generic(img, b, width, height, flip)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resize_region_avx2(
    img: &U8Image,
    b: CropBox,
    width: usize,
    height: usize,
    flip: bool,
) -> U8Image {
    resize_region_generic(img, b, width, height, flip)
}

#[inline(always)]
fn resize_region_generic(
    img: &U8Image,
    b: CropBox,
    width: usize,
    height: usize,
    flip: bool,
) -> U8Image {
    let c = img.channels;
    let mut hx = filter_weights(b.width, width);
    if flip {
        hx.reverse();
    }
    let vy = filter_weights(b.height, height);
    let stride = width * c;
    // Horizontal pass over the rows the vertical filter reads (all of them, in practice).
    let mut tmp = vec![0f32; stride * b.height];
    let mut src_row = vec![0f32; b.width * c];
    for y in 0..b.height {
        let off = ((b.y + y) * img.width + b.x) * c;
        for (d, &v) in src_row.iter_mut().zip(&img.data[off..off + b.width * c]) {
            *d = f32::from(v);
        }
        let dst = &mut tmp[y * stride..(y + 1) * stride];
        match c {
            3 => horizontal::<3>(&src_row, &hx, dst),
            1 => horizontal::<1>(&src_row, &hx, dst),
            _ => horizontal_any(&src_row, &hx, c, dst),
        }
    }
    let mut data = vec![0u8; stride * height];
    let mut acc = vec![0f32; stride];
    for (y, (start, weights)) in vy.iter().enumerate() {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (k, &w) in weights.iter().enumerate() {
            let row = &tmp[(start + k) * stride..(start + k + 1) * stride];
            for (a, &t) in acc.iter_mut().zip(row) {
                *a += w * t;
            }
        }
        for (d, &a) in data[y * stride..(y + 1) * stride].iter_mut().zip(&acc) {
            // `round()` of a value in [0, 255] (half away from zero), without a libm call.
            *d = (a.clamp(0.0, 255.0) + 0.5) as u8;
        }
    }
    U8Image {
        width,
        height,
        channels: c,
        data,
    }
}

/// One row of the horizontal pass for `C` channels: `dst[x*C + ch] = sum_k w_k src[(start+k)*C + ch]`.
#[inline(always)]
fn horizontal<const C: usize>(src: &[f32], hx: &[(usize, Vec<f32>)], dst: &mut [f32]) {
    for ((start, weights), out) in hx.iter().zip(dst.chunks_exact_mut(C)) {
        let mut acc = [0f32; C];
        let taps = &src[start * C..(start + weights.len()) * C];
        for (w, px) in weights.iter().zip(taps.chunks_exact(C)) {
            for ch in 0..C {
                acc[ch] += w * px[ch];
            }
        }
        out.copy_from_slice(&acc);
    }
}

fn horizontal_any(src: &[f32], hx: &[(usize, Vec<f32>)], c: usize, dst: &mut [f32]) {
    for (x, (start, weights)) in hx.iter().enumerate() {
        for ch in 0..c {
            let mut acc = 0f32;
            for (k, w) in weights.iter().enumerate() {
                acc += w * src[(start + k) * c + ch];
            }
            dst[x * c + ch] = acc;
        }
    }
}

/// For each output position: the first input position and the normalised triangle-filter
/// weights (PIL's `precompute_coeffs` with the bilinear filter).
fn filter_weights(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the triangle filter's support is 1
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0) as usize).min(in_size - 1);
            let hi = ((center + support + 0.5).floor() as usize).clamp(lo + 1, in_size);
            let mut weights: Vec<f64> = (lo..hi)
                .map(|x| {
                    let t = (x as f64 - center + 0.5) / filter_scale;
                    (1.0 - t.abs()).max(0.0)
                })
                .collect();
            let total: f64 = weights.iter().sum();
            if total > 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            } else {
                // Cannot happen for a sane size, but never divide by zero.
                weights.iter_mut().for_each(|w| *w = 0.0);
                weights[0] = 1.0;
            }
            (lo, weights.into_iter().map(|w| w as f32).collect())
        })
        .collect()
}

/// The `width` x `height` window whose top-left corner is at (x, y) in `img`; parts outside
/// `img` are filled with `fill`.
pub fn crop(img: &U8Image, x: isize, y: isize, width: usize, height: usize, fill: u8) -> U8Image {
    let c = img.channels;
    let mut out = U8Image::filled(width, height, c, fill);
    // Overlap of [x, x + width) with [0, img.width), in source coordinates.
    let sx0 = x.max(0);
    let sx1 = (x + width as isize).min(img.width as isize);
    if sx1 <= sx0 {
        return out;
    }
    let (sx0, sx1) = (sx0 as usize, sx1 as usize);
    let dx0 = (sx0 as isize - x) as usize;
    let run = (sx1 - sx0) * c;
    for oy in 0..height {
        let sy = y + oy as isize;
        if sy < 0 || sy >= img.height as isize {
            continue;
        }
        let src = (sy as usize * img.width + sx0) * c;
        let dst = (oy * width + dx0) * c;
        out.data[dst..dst + run].copy_from_slice(&img.data[src..src + run]);
    }
    out
}

/// Centre crop to `size` x `size` (torchvision: offsets `round((h - size) / 2)`); an image
/// smaller than `size` is padded with black.
pub fn center_crop(img: &U8Image, size: usize) -> U8Image {
    let off = |n: usize| ((n as f64 - size as f64) / 2.0).round() as isize;
    crop(img, off(img.width), off(img.height), size, size, 0)
}

/// Mirrors the image left-right, in place.
pub fn hflip(img: &mut U8Image) {
    let c = img.channels;
    let w = img.width;
    if w < 2 {
        return;
    }
    for row in img.data.chunks_exact_mut(w * c) {
        for x in 0..w / 2 {
            for ch in 0..c {
                row.swap(x * c + ch, (w - 1 - x) * c + ch);
            }
        }
    }
}

/// Pads `pad` black pixels on every side and crops back to the original size with the window
/// at (`dx`, `dy`) in the padded image (each in `0..=2 * pad`; `pad, pad` is the identity).
pub fn pad_crop(img: &U8Image, pad: usize, dx: usize, dy: usize) -> U8Image {
    crop(
        img,
        dx as isize - pad as isize,
        dy as isize - pad as isize,
        img.width,
        img.height,
        0,
    )
}

/// [`pad_crop`] at a uniformly random offset: a translation of up to `pad` pixels each way.
pub fn random_pad_crop(img: &U8Image, pad: usize, rng: &mut ChaCha8Rng) -> U8Image {
    let dx = rng.random_range(0..=2 * pad);
    let dy = rng.random_range(0..=2 * pad);
    pad_crop(img, pad, dx, dy)
}

/// A crop window: top-left corner and size, inside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// torchvision's `RandomResizedCrop.get_params`: up to 10 tries of an area fraction uniform in
/// `scale` and a log-uniform aspect ratio in `ratio`; then a centre crop clamped to `ratio`.
pub fn random_resized_crop_box(
    width: usize,
    height: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut ChaCha8Rng,
) -> CropBox {
    let area = (width * height) as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    // Empty or non-finite ranges (never ours) go straight to the fallback instead of panicking
    // in `random_range`.
    let tries = if scale.0.is_finite()
        && scale.1.is_finite()
        && scale.0 <= scale.1
        && log_lo.is_finite()
        && log_hi.is_finite()
        && log_lo <= log_hi
    {
        10
    } else {
        0
    };
    for _ in 0..tries {
        let target_area = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let w = (target_area * aspect).sqrt().round() as usize;
        let h = (target_area / aspect).sqrt().round() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let y = rng.random_range(0..=height - h);
            let x = rng.random_range(0..=width - w);
            return CropBox {
                x,
                y,
                width: w,
                height: h,
            };
        }
    }
    // Fallback: centre crop of the whole image, clamped to the ratio range.
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (width, ((width as f64 / ratio.0).round() as usize).max(1))
    } else if in_ratio > ratio.1 {
        (((height as f64 * ratio.1).round() as usize).max(1), height)
    } else {
        (width, height)
    };
    CropBox {
        x: (width - w.min(width)) / 2,
        y: (height - h.min(height)) / 2,
        width: w.min(width),
        height: h.min(height),
    }
}

/// RandomResizedCrop (scale 0.08–1, ratio 3/4–4/3) resized to `size` x `size`, bilinear.
/// No flip: callers add it.
pub fn random_resized_crop(img: &U8Image, size: usize, rng: &mut ChaCha8Rng) -> U8Image {
    if img.width == 0 || img.height == 0 {
        return U8Image::filled(size, size, img.channels, 0);
    }
    let b = random_resized_crop_box(
        img.width,
        img.height,
        (0.08, 1.0),
        (3.0 / 4.0, 4.0 / 3.0),
        rng,
    );
    if (b.width, b.height) == (size, size) {
        return crop(img, b.x as isize, b.y as isize, size, size, 0);
    }
    resize_region(img, b, size, size)
}

/// [`random_resized_crop`] followed by a horizontal flip with probability 1/2 (drawn after the
/// crop box, as torchvision's `RandomResizedCrop` then `RandomHorizontalFlip`), the flip folded
/// into the resize.
pub fn random_resized_crop_flip(img: &U8Image, size: usize, rng: &mut ChaCha8Rng) -> U8Image {
    if img.width == 0 || img.height == 0 {
        let out = U8Image::filled(size, size, img.channels, 0);
        rng.random_bool(0.5);
        return out;
    }
    let b = random_resized_crop_box(
        img.width,
        img.height,
        (0.08, 1.0),
        (3.0 / 4.0, 4.0 / 3.0),
        rng,
    );
    let flip = rng.random_bool(0.5);
    crop_resize_flip(img, b, size, flip)
}

/// [`random_resized_crop_flip`] of a JPEG, decoding only the crop: the box is drawn from the
/// header's size with the same generator draws, so the result is the same image.
fn jpeg_random_resized_crop_flip(
    path: &Path,
    bytes: &[u8],
    header: jpeg::Header,
    p: &Preprocess,
    rng: &mut ChaCha8Rng,
) -> Result<U8Image, DataError> {
    let size = p.size;
    let b = random_resized_crop_box(
        header.width,
        header.height,
        (0.08, 1.0),
        (3.0 / 4.0, 4.0 / 3.0),
        rng,
    );
    let flip = rng.random_bool(0.5);
    let Some(window) = jpeg::decode_region_window(bytes, header, p.channels, b)
        .map_err(|m| jpeg_error(path, m))?
    else {
        // A file libjpeg leaves to the image crate: decode it all, crop as usual.
        let img = decode_bytes(path, bytes, p.channels)?;
        return Ok(crop_resize_flip(&img, b, size, flip));
    };
    Ok(crop_resize_flip(&window.image, window.region, size, flip))
}

/// The window `b` of `img` resized to `size` x `size`, mirrored when `flip`.
fn crop_resize_flip(img: &U8Image, b: CropBox, size: usize, flip: bool) -> U8Image {
    if (b.width, b.height) == (size, size) {
        let mut out = crop(img, b.x as isize, b.y as isize, size, size, 0);
        if flip {
            hflip(&mut out);
        }
        return out;
    }
    resize_region_flip(img, b, size, size, flip)
}

/// Writes `(x / 255 - mean[c]) / std[c]` in CHW order into `out`.
pub fn normalize_into(
    img: &U8Image,
    mean: &[f32],
    std: &[f32],
    out: &mut [f32],
) -> Result<(), DataError> {
    let c = img.channels;
    let plane = img.width * img.height;
    if mean.len() != c || std.len() != c || out.len() != c * plane {
        return Err(DataError::InvalidPreprocess {
            message: format!(
                "normalising a {}x{}x{c} image needs {c} means and stds and {} outputs, got {}, {} and {}",
                img.width,
                img.height,
                c * plane,
                mean.len(),
                std.len(),
                out.len()
            ),
        });
    }
    let scale: Vec<f32> = std.iter().map(|s| 1.0 / (255.0 * s)).collect();
    let bias: Vec<f32> = mean.iter().zip(std).map(|(m, s)| -m / s).collect();
    if c == 3 {
        // One pass over the interleaved pixels, writing the three planes.
        let (r, gb) = out.split_at_mut(plane);
        let (g, b) = gb.split_at_mut(plane);
        for (((px, r), g), b) in img.data.chunks_exact(3).zip(r).zip(g).zip(b) {
            *r = f32::from(px[0]) * scale[0] + bias[0];
            *g = f32::from(px[1]) * scale[1] + bias[1];
            *b = f32::from(px[2]) * scale[2] + bias[2];
        }
        return Ok(());
    }
    for ch in 0..c {
        let dst = &mut out[ch * plane..(ch + 1) * plane];
        for (d, px) in dst.iter_mut().zip(img.data.chunks_exact(c)) {
            *d = f32::from(px[ch]) * scale[ch] + bias[ch];
        }
    }
    Ok(())
}

/// [`normalize_into`] into a new vector.
pub fn normalize(img: &U8Image, mean: &[f32], std: &[f32]) -> Result<Vec<f32>, DataError> {
    let mut out = vec![0.0; img.data.len()];
    normalize_into(img, mean, std, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: usize, h: usize, c: usize) -> U8Image {
        let mut data = Vec::with_capacity(w * h * c);
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    data.push((x * 7 + y * 13 + ch * 50) as u8);
                }
            }
        }
        U8Image::from_raw(w, h, c, data).expect("raw")
    }

    fn rng(n: u64) -> ChaCha8Rng {
        sample_rng(1, 0, n as usize, AugmentKind::Train(Augment::FlipCrop), 0)
    }

    #[test]
    fn eval_keeps_exact_size_images() {
        let img = gradient(28, 28, 1);
        assert_eq!(eval_transform(&img, 28), img);
    }

    #[test]
    fn eval_resizes_shorter_side_then_centre_crops() {
        // 64x32 at size 28: shorter side to 32 -> 64x32 unchanged, centre crop 28x28 at (18, 2).
        let img = gradient(64, 32, 3);
        let out = eval_transform(&img, 28);
        assert_eq!((out.width, out.height, out.channels), (28, 28, 3));
        assert_eq!(out, crop(&img, 18, 2, 28, 28, 0));
        // A 100x50 image at size 224: shorter side 256, longer 512, crop 224.
        let big = eval_transform(&gradient(100, 50, 1), 224);
        assert_eq!((big.width, big.height), (224, 224));
    }

    #[test]
    fn resize_shorter_truncates_longer_side() {
        let out = resize_shorter(&gradient(30, 20, 1), 37);
        assert_eq!((out.width, out.height), (55, 37)); // 37 * 30 / 20 = 55.5 -> 55
        let out = resize_shorter(&gradient(20, 30, 1), 10);
        assert_eq!((out.width, out.height), (10, 15));
    }

    #[test]
    fn resize_constant_stays_constant_and_halving_averages() {
        let flat = U8Image::filled(17, 9, 3, 200);
        let out = resize(&flat, 5, 31);
        assert!(out.data.iter().all(|&v| v == 200));
        // Halving a 4x1 row [0, 100, 200, 40], worked by hand with PIL's precompute_coeffs:
        // scale 2, support 2; output 0 has centre 1.0, inputs 0..3 with triangle weights
        // .75, .75, .25 (/1.75) -> 71.4; output 1 has centre 3.0, inputs 1..4 with weights
        // .25, .75, .75 -> 117.1.
        let row = U8Image::from_raw(4, 1, 1, vec![0, 100, 200, 40]).expect("raw");
        let out = resize(&row, 2, 1);
        assert_eq!(out.data, vec![71, 117]);
    }

    #[test]
    fn upscale_interpolates_linearly() {
        let row = U8Image::from_raw(2, 1, 1, vec![0, 200]).expect("raw");
        let out = resize(&row, 4, 1);
        // Output centres at 0.25, 0.75, 1.25, 1.75 input px: 0, 50, 150, 200.
        assert_eq!(out.data, vec![0, 50, 150, 200]);
    }

    #[test]
    fn crop_pads_outside_with_fill() {
        let img = gradient(3, 3, 1);
        let out = crop(&img, -1, -1, 3, 3, 9);
        assert_eq!(out.data, vec![9, 9, 9, 9, 0, 7, 9, 13, 20]);
        let out = crop(&img, 5, 0, 2, 2, 4);
        assert_eq!(out.data, vec![4; 4]);
        assert_eq!(center_crop(&img, 5).data[0], 0);
        assert_eq!(center_crop(&img, 1).data, vec![20]);
    }

    #[test]
    fn hflip_mirrors_rows() {
        let mut img = U8Image::from_raw(3, 1, 2, vec![1, 2, 3, 4, 5, 6]).expect("raw");
        hflip(&mut img);
        assert_eq!(img.data, vec![5, 6, 3, 4, 1, 2]);
    }

    #[test]
    fn pad_crop_translates_with_black() {
        let img = gradient(4, 4, 1);
        assert_eq!(pad_crop(&img, 2, 2, 2), img);
        let moved = pad_crop(&img, 2, 0, 2); // content shifts right by 2
        assert_eq!(moved.pixel(0, 0), &[0]);
        assert_eq!(moved.pixel(1, 1), &[0]);
        assert_eq!(moved.pixel(2, 1), img.pixel(0, 1));
        assert_eq!(moved.pixel(3, 3), img.pixel(1, 3));
    }

    #[test]
    fn random_resized_crop_box_is_inside_and_plausible() {
        let mut r = rng(3);
        for _ in 0..500 {
            let b = random_resized_crop_box(64, 48, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut r);
            assert!(b.width >= 1 && b.height >= 1);
            assert!(b.x + b.width <= 64 && b.y + b.height <= 48, "{b:?}");
            let frac = (b.width * b.height) as f64 / (64.0 * 48.0);
            assert!(frac >= 0.06, "{b:?}");
        }
        // Broken ranges fall back instead of panicking.
        let b = random_resized_crop_box(10, 10, (1.0, 0.5), (-1.0, f64::NAN), &mut r);
        assert_eq!((b.width, b.height), (10, 10));
        // Impossible scale: always falls back to the centre crop, clamped to the ratio.
        let b = random_resized_crop_box(100, 10, (2.0, 2.0), (0.75, 4.0 / 3.0), &mut r);
        assert_eq!(
            b,
            CropBox {
                x: 43,
                y: 0,
                width: 13,
                height: 10
            }
        );
        let out = random_resized_crop(&gradient(50, 40, 3), 24, &mut r);
        assert_eq!((out.width, out.height, out.channels), (24, 24, 3));
    }

    #[test]
    fn normalize_is_chw() {
        let img = U8Image::from_raw(2, 1, 3, vec![0, 255, 51, 255, 0, 102]).expect("raw");
        let out = normalize(&img, &[0.0, 0.5, 0.2], &[1.0, 0.5, 0.2]).expect("normalize");
        let want = [0.0, 1.0, 1.0, -1.0, 0.0, 1.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-5, "{out:?}");
        }
        assert!(normalize(&img, &[0.0], &[1.0]).is_err());
    }

    #[test]
    fn preprocess_validation() {
        assert!(Preprocess::new(3, 32, vec![0.5; 3], vec![0.5; 3]).is_ok());
        let msg = Preprocess::new(2, 32, vec![0.5; 2], vec![0.5; 2])
            .expect_err("channels")
            .to_string();
        assert!(msg.contains("channels"), "{msg}");
        assert!(Preprocess::new(1, 0, vec![0.5], vec![0.5]).is_err());
        assert!(Preprocess::new(3, 32, vec![0.5], vec![0.5]).is_err());
        assert!(Preprocess::new(1, 32, vec![0.5], vec![0.0]).is_err());
        assert!(Preprocess::new(1, 32, vec![f32::NAN], vec![1.0]).is_err());
    }

    #[test]
    fn resize_region_and_folded_flip_match_crop_resize_hflip() {
        for c in [1, 3] {
            let img = gradient(57, 41, c);
            let b = CropBox {
                x: 5,
                y: 3,
                width: 37,
                height: 29,
            };
            let window = crop(&img, 5, 3, 37, 29, 0);
            for (w, h) in [(24, 24), (50, 40), (37, 29)] {
                let plain = resize(&window, w, h);
                assert_eq!(resize_region(&img, b, w, h), plain);
                let mut flipped = plain.clone();
                hflip(&mut flipped);
                assert_eq!(resize_region_flip(&img, b, w, h, true), flipped);
            }
        }
        // The fused transform draws the same numbers as crop-then-flip.
        let img = gradient(90, 70, 3);
        for seed in 0..20 {
            let mut r1 = rng(seed);
            let mut expected = random_resized_crop(&img, 32, &mut r1);
            if r1.random_bool(0.5) {
                hflip(&mut expected);
            }
            assert_eq!(random_resized_crop_flip(&img, 32, &mut rng(seed)), expected);
        }
    }

    #[test]
    fn decode_augment_is_decode_then_augment() {
        // On real JPEGs (region-decoded for RandomResizedCrop) and a PNG (decoded whole).
        let dir = tempfile::tempdir().expect("tempdir");
        let png = dir.path().join("g.png");
        let g = gradient(45, 38, 3);
        image::RgbImage::from_raw(45, 38, g.data.clone())
            .expect("rgb")
            .save(&png)
            .expect("save");
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg");
        let files = [
            fixtures.join("astronaut-321x243-q90.jpg"),
            fixtures.join("coffee-242x161-progressive.jpg"),
            fixtures.join("coffee-242x161-grey.jpg"),
            fixtures.join("astronaut-64x48-cmyk.jpg"),
            png,
        ];
        let kinds = [
            AugmentKind::Train(Augment::RandomResizedCrop),
            AugmentKind::Eval,
            AugmentKind::Strong,
        ];
        for channels in [1, 3] {
            for size in [24, 64] {
                let p = Preprocess::new(channels, size, vec![0.5; channels], vec![0.25; channels])
                    .expect("preprocess");
                for file in &files {
                    let img = p.decode(file).expect("decode");
                    for kind in kinds {
                        for seed in 0..12 {
                            let mut r1 = sample_rng(seed, 0, 0, kind, 0);
                            let mut r2 = sample_rng(seed, 0, 0, kind, 0);
                            let want = p.augment(&img, kind, &mut r1);
                            let got = p.decode_augment(file, kind, &mut r2).expect("fused");
                            assert_eq!(got, want, "{file:?} {kind:?} {channels}ch seed {seed}");
                            // Same number of draws: the next numbers agree too.
                            assert_eq!(r1.random::<u64>(), r2.random::<u64>());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_kind_gives_the_right_shape_and_is_deterministic() {
        let p = Preprocess::new(3, 24, vec![0.5; 3], vec![0.25; 3]).expect("preprocess");
        let img = gradient(40, 30, 3);
        let kinds = [
            AugmentKind::Eval,
            AugmentKind::Train(Augment::None),
            AugmentKind::Train(Augment::FlipCrop),
            AugmentKind::Train(Augment::RandomResizedCrop),
            AugmentKind::Weak,
            AugmentKind::Strong,
            AugmentKind::Train(Augment::Strong),
        ];
        for kind in kinds {
            let a = p
                .apply(&img, kind, &mut sample_rng(7, 2, 5, kind, 0))
                .expect("apply");
            let b = p
                .apply(&img, kind, &mut sample_rng(7, 2, 5, kind, 0))
                .expect("apply");
            assert_eq!(a.len(), 3 * 24 * 24);
            assert_eq!(a, b, "{kind:?} not deterministic");
        }
        // Eval ignores the generator.
        let e1 = p.apply(&img, AugmentKind::Eval, &mut rng(1)).expect("eval");
        let e2 = p.apply(&img, AugmentKind::Eval, &mut rng(2)).expect("eval");
        assert_eq!(e1, e2);
    }

    #[test]
    fn the_strong_training_option_is_the_strong_view() {
        // A Noisy-Student run trains under exactly the noise FixMatch's strong view adds.
        let p = Preprocess::new(1, 16, vec![0.5], vec![0.25]).expect("preprocess");
        let img = gradient(16, 16, 1);
        let train = AugmentKind::Train(Augment::Strong);
        let mut differs_from_eval = false;
        for i in 0..16 {
            let a = p.augment(&img, train, &mut sample_rng(3, 1, i, train, 0));
            let b = p.augment(
                &img,
                AugmentKind::Strong,
                &mut sample_rng(3, 1, i, AugmentKind::Strong, 0),
            );
            assert_eq!(a, b, "sample {i}");
            differs_from_eval |= a != eval_transform(&img, 16);
        }
        assert!(
            differs_from_eval,
            "the strong option left every image as it was"
        );
    }

    #[test]
    fn flip_crop_varies_and_is_a_flip_plus_translation() {
        let p = Preprocess::new(1, 8, vec![0.0], vec![1.0]).expect("preprocess");
        let img = gradient(8, 8, 1);
        let kind = AugmentKind::Train(Augment::FlipCrop);
        let mut distinct = std::collections::HashSet::new();
        for i in 0..64 {
            let out = p.augment(&img, kind, &mut sample_rng(0, 0, i, kind, 0));
            // Every output is some flip + translation of the input with black borders.
            let mut found = false;
            for flip in [false, true] {
                let mut base = img.clone();
                if flip {
                    hflip(&mut base);
                }
                for dx in 0..=4 {
                    for dy in 0..=4 {
                        found |= pad_crop(&base, 2, dx, dy) == out;
                    }
                }
            }
            assert!(found, "sample {i} is not a flip + pad-crop");
            distinct.insert(out.data);
        }
        assert!(
            distinct.len() > 10,
            "only {} distinct outputs",
            distinct.len()
        );
    }

    #[test]
    fn sample_rng_separates_streams() {
        let k = AugmentKind::Weak;
        let draw = |mut r: ChaCha8Rng| r.random::<u64>();
        let base = draw(sample_rng(1, 2, 3, k, 0));
        assert_eq!(base, draw(sample_rng(1, 2, 3, k, 0)));
        assert_ne!(base, draw(sample_rng(2, 2, 3, k, 0)));
        assert_ne!(base, draw(sample_rng(1, 3, 3, k, 0)));
        assert_ne!(base, draw(sample_rng(1, 2, 4, k, 0)));
        assert_ne!(base, draw(sample_rng(1, 2, 3, AugmentKind::Strong, 0)));
        assert_ne!(base, draw(sample_rng(1, 2, 3, k, 1)));
    }
}
