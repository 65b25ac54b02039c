//! JPEG decoding through libjpeg-turbo (the C shim `jpeg_region.c`), whole or by region.
//!
//! Why not the `image` crate for JPEGs: libjpeg-turbo is what PIL (and so torchvision
//! pipelines) decode with, so wick sees the same pixels as the PyTorch reference, it is faster,
//! and it can decode just the rows and iMCU columns that a RandomResizedCrop keeps
//! ([`decode_region_window`]).
//!
//! Every function answers `Ok(None)` when the file is one the shim leaves to the `image` crate:
//! CMYK/YCCK JPEGs, files on which libjpeg warns about corrupt data, or builds without libjpeg
//! ([`AVAILABLE`] false). Errors are libjpeg's message, for the caller to put a path on.

use super::decode::rgb_to_luma;
use super::transform::{CropBox, U8Image};

/// Whether this build has the libjpeg-turbo shim (see build.rs).
pub const AVAILABLE: bool = cfg!(not(wick_no_libjpeg));

/// A JPEG's size and component count, from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub width: usize,
    pub height: usize,
    /// 1 (greyscale), 3 (YCbCr/RGB) or 4 (CMYK/YCCK).
    pub components: usize,
}

/// A decoded band of a JPEG: `image` holds whole rows of the band, and `region` is where the
/// requested rectangle lies inside it (the band is wider: iMCU-aligned, plus context columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRegion {
    pub image: U8Image,
    pub region: CropBox,
}

/// Whether `bytes` start like a JPEG (SOI marker then another marker).
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// The JPEG's headers, or `None` when the shim is not built in.
pub fn read_header(bytes: &[u8]) -> Result<Option<Header>, String> {
    ffi::header(bytes)
}

/// Decodes the whole image to `channels` (1 or 3) channels.
pub fn decode(bytes: &[u8], channels: usize) -> Result<Option<U8Image>, String> {
    let Some(header) = read_header(bytes)? else {
        return Ok(None);
    };
    let all = CropBox {
        x: 0,
        y: 0,
        width: header.width,
        height: header.height,
    };
    Ok(decode_region_window(bytes, header, channels, all)?.map(|d| d.image))
}

/// Decodes the rectangle `region` (inside the image) to `channels` (1 or 3) channels: exactly
/// the pixels that a full decode would have there.
pub fn decode_region(
    bytes: &[u8],
    header: Header,
    channels: usize,
    region: CropBox,
) -> Result<Option<U8Image>, String> {
    let Some(window) = decode_region_window(bytes, header, channels, region)? else {
        return Ok(None);
    };
    let r = window.region;
    if (r.width, r.height) == (window.image.width, window.image.height) {
        return Ok(Some(window.image));
    }
    Ok(Some(super::transform::crop(
        &window.image,
        r.x as isize,
        r.y as isize,
        r.width,
        r.height,
        0,
    )))
}

/// Decodes the band of rows and iMCU columns that holds `region`, without cutting it out (the
/// resize reads the window in place).
pub fn decode_region_window(
    bytes: &[u8],
    header: Header,
    channels: usize,
    region: CropBox,
) -> Result<Option<DecodedRegion>, String> {
    if channels != 1 && channels != 3 {
        return Err(format!("channels must be 1 or 3, got {channels}"));
    }
    if header.components == 4 {
        return Ok(None);
    }
    // Colour JPEGs become grey through RGB, with PIL's luma formula (libjpeg's own grey output
    // is the Y plane, which differs from PIL's `convert("L")` by rounding).
    let decode_channels = if header.components == 1 { channels } else { 3 };
    let Some((band, band_x)) = ffi::decode_region(bytes, header, decode_channels, region)? else {
        return Ok(None);
    };
    let image = if decode_channels == channels {
        band
    } else {
        U8Image {
            width: band.width,
            height: band.height,
            channels: 1,
            data: band
                .data
                .chunks_exact(3)
                .map(|p| rgb_to_luma(p[0], p[1], p[2]))
                .collect(),
        }
    };
    Ok(Some(DecodedRegion {
        image,
        region: CropBox {
            x: region.x - band_x,
            y: 0,
            width: region.width,
            height: region.height,
        },
    }))
}

#[cfg(not(wick_no_libjpeg))]
mod ffi {
    use std::ffi::{c_char, c_int, c_uchar, c_ulong, CStr};

    use super::{CropBox, Header, U8Image};

    const OK: c_int = 0;
    const FALLBACK: c_int = 1;
    const MESSAGE_LEN: usize = 200;

    extern "C" {
        fn wick_jpeg_header(
            buf: *const c_uchar,
            len: c_ulong,
            width: *mut c_int,
            height: *mut c_int,
            components: *mut c_int,
            msg: *mut c_char,
            msg_len: usize,
        ) -> c_int;
        #[allow(clippy::too_many_arguments)]
        fn wick_jpeg_decode_region(
            buf: *const c_uchar,
            len: c_ulong,
            channels: c_int,
            x: c_int,
            y: c_int,
            w: c_int,
            h: c_int,
            out: *mut c_uchar,
            out_cap: usize,
            out_x: *mut c_int,
            out_width: *mut c_int,
            msg: *mut c_char,
            msg_len: usize,
        ) -> c_int;
    }

    fn message(buf: &[c_char; MESSAGE_LEN]) -> String {
        // SAFETY: the shim always NUL-terminates inside the buffer (and it starts zeroed).
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
        let text = text.to_string_lossy();
        if text.is_empty() {
            "libjpeg failed without a message".to_string()
        } else {
            text.into_owned()
        }
    }

    fn int(v: usize, what: &str) -> Result<c_int, String> {
        c_int::try_from(v).map_err(|_| format!("{what} {v} too large"))
    }

    pub(super) fn header(bytes: &[u8]) -> Result<Option<Header>, String> {
        let (mut w, mut h, mut c) = (0, 0, 0);
        let mut msg = [0 as c_char; MESSAGE_LEN];
        // SAFETY: the shim reads `len` bytes of `buf` and writes the three ints and at most
        // `msg_len` bytes of `msg`.
        let status = unsafe {
            wick_jpeg_header(
                bytes.as_ptr(),
                bytes.len() as c_ulong,
                &mut w,
                &mut h,
                &mut c,
                msg.as_mut_ptr(),
                MESSAGE_LEN,
            )
        };
        match status {
            OK => Ok(Some(Header {
                width: w as usize,
                height: h as usize,
                components: c as usize,
            })),
            FALLBACK => Ok(None),
            _ => Err(message(&msg)),
        }
    }

    /// The decoded band and its first column in the image.
    pub(super) fn decode_region(
        bytes: &[u8],
        header: Header,
        channels: usize,
        r: CropBox,
    ) -> Result<Option<(U8Image, usize)>, String> {
        if r.width == 0
            || r.height == 0
            || r.x + r.width > header.width
            || r.y + r.height > header.height
        {
            return Err(format!(
                "region {}x{} at ({}, {}) outside the {}x{} image",
                r.width, r.height, r.x, r.y, header.width, header.height
            ));
        }
        let cap = r
            .height
            .checked_mul(header.width)
            .and_then(|n| n.checked_mul(channels))
            .ok_or_else(|| format!("{}x{} image too large", header.width, header.height))?;
        // Not zeroed: the shim writes every byte of the rows it reports before we read them.
        let mut data: Vec<u8> = Vec::with_capacity(cap);
        let (mut band_x, mut band_w) = (0, 0);
        let mut msg = [0 as c_char; MESSAGE_LEN];
        // SAFETY: `data` has room for `cap` bytes and the shim writes at most `cap`; it reads
        // `len` bytes of `buf`, writes the two ints and at most `msg_len` bytes of `msg`.
        let status = unsafe {
            wick_jpeg_decode_region(
                bytes.as_ptr(),
                bytes.len() as c_ulong,
                int(channels, "channels")?,
                int(r.x, "x")?,
                int(r.y, "y")?,
                int(r.width, "width")?,
                int(r.height, "height")?,
                data.as_mut_ptr(),
                cap,
                &mut band_x,
                &mut band_w,
                msg.as_mut_ptr(),
                MESSAGE_LEN,
            )
        };
        match status {
            OK => {
                let (band_x, band_w) = (band_x as usize, band_w as usize);
                let len = r.height * band_w * channels;
                assert!(len <= cap && band_x <= r.x && r.x + r.width <= band_x + band_w);
                // SAFETY: on success the shim wrote `height` rows of `band_w * channels` bytes.
                unsafe { data.set_len(len) };
                let image = U8Image::from_raw(band_w, r.height, channels, data)
                    .expect("length checked above");
                Ok(Some((image, band_x)))
            }
            FALLBACK => Ok(None),
            _ => Err(message(&msg)),
        }
    }
}

/// Builds without libjpeg: every call hands the file to the `image` crate.
#[cfg(wick_no_libjpeg)]
mod ffi {
    use super::{CropBox, Header, U8Image};

    pub(super) fn header(_bytes: &[u8]) -> Result<Option<Header>, String> {
        Ok(None)
    }

    pub(super) fn decode_region(
        _bytes: &[u8],
        _header: Header,
        _channels: usize,
        _r: CropBox,
    ) -> Result<Option<(U8Image, usize)>, String> {
        Ok(None)
    }
}

#[cfg(all(test, not(wick_no_libjpeg)))]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::data::decode::decode_image;
    use crate::data::transform::crop;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jpeg")
            .join(name)
    }

    fn fnv1a(data: &[u8]) -> String {
        let mut h: u64 = 0xcbf29ce484222325;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("{h:016x}")
    }

    const PHOTOS: [&str; 3] = [
        "astronaut-321x243-q90.jpg",
        "coffee-242x161-progressive.jpg",
        "coffee-242x161-grey.jpg",
    ];

    #[test]
    fn decodes_exactly_like_pillow() {
        let text = std::fs::read_to_string(fixture("pillow.json")).expect("pillow.json");
        let want: serde_json::Value = serde_json::from_str(&text).expect("json");
        for name in PHOTOS {
            let w = &want[name];
            let rgb = decode_image(&fixture(name), 3).expect("rgb");
            assert_eq!(
                (rgb.width as u64, rgb.height as u64),
                (w["width"].as_u64().unwrap(), w["height"].as_u64().unwrap()),
                "{name}"
            );
            assert_eq!(
                fnv1a(&rgb.data),
                w["rgb_fnv1a"].as_str().unwrap(),
                "{name} RGB"
            );
            let grey = decode_image(&fixture(name), 1).expect("grey");
            assert_eq!(
                fnv1a(&grey.data),
                w["l_fnv1a"].as_str().unwrap(),
                "{name} L"
            );
        }
    }

    #[test]
    fn cmyk_falls_back_to_the_image_crate() {
        let bytes = std::fs::read(fixture("astronaut-64x48-cmyk.jpg")).expect("read");
        let header = read_header(&bytes).expect("header").expect("built in");
        assert_eq!(header.components, 4);
        assert_eq!(decode(&bytes, 3).expect("decode"), None);
        let img = decode_image(&fixture("astronaut-64x48-cmyk.jpg"), 3).expect("fallback");
        assert_eq!((img.width, img.height, img.channels), (64, 48, 3));
    }

    #[test]
    fn a_region_is_the_same_pixels_as_the_whole_decode() {
        for name in PHOTOS {
            let bytes = std::fs::read(fixture(name)).expect("read");
            let header = read_header(&bytes).expect("header").expect("built in");
            for channels in [1, 3] {
                let whole = decode(&bytes, channels).expect("decode").expect("jpeg");
                let (w, h) = (header.width, header.height);
                // On and off the 16-pixel iMCU grid, at the edges, one pixel, the whole image.
                let boxes = [
                    (0, 0, w, h),
                    (0, 0, 1, 1),
                    (w - 1, h - 1, 1, 1),
                    (16, 16, 32, 32),
                    (15, 17, 33, 31),
                    (1, 1, w - 2, h - 2),
                    (w - 40, 3, 40, 50),
                    (7, h - 9, 100, 9),
                    (47, 63, 17, 80),
                    (100, 0, 13, h),
                ];
                for (x, y, bw, bh) in boxes {
                    let b = CropBox {
                        x,
                        y,
                        width: bw,
                        height: bh,
                    };
                    let region = decode_region(&bytes, header, channels, b)
                        .expect("region")
                        .expect("jpeg");
                    let want = crop(&whole, x as isize, y as isize, bw, bh, 0);
                    assert_eq!(region, want, "{name} {channels}ch box {b:?}");
                }
            }
        }
    }

    #[test]
    fn the_window_decodes_less_than_the_whole_width() {
        let bytes = std::fs::read(fixture(PHOTOS[0])).expect("read");
        let header = read_header(&bytes).expect("header").expect("built in");
        let b = CropBox {
            x: 150,
            y: 100,
            width: 40,
            height: 30,
        };
        let window = decode_region_window(&bytes, header, 3, b)
            .expect("window")
            .expect("jpeg");
        assert_eq!(window.image.height, 30);
        assert!(
            window.image.width < header.width / 2,
            "{}",
            window.image.width
        );
        let r = window.region;
        assert!(r.x + r.width <= window.image.width);
        assert_eq!((r.width, r.height), (40, 30));
    }

    #[test]
    fn bad_input_is_an_error_that_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broken.jpg");
        // A JPEG start, then garbage: libjpeg fails at once (no warning, no fallback).
        std::fs::write(&path, b"\xff\xd8\xff\xe0garbage that is not a JPEG").expect("write");
        let msg = decode_image(&path, 3).expect_err("broken").to_string();
        assert!(msg.contains("broken.jpg"), "{msg}");
        // A region outside the image.
        let bytes = std::fs::read(fixture(PHOTOS[1])).expect("read");
        let header = read_header(&bytes).expect("header").expect("built in");
        let outside = CropBox {
            x: 200,
            y: 0,
            width: 100,
            height: 10,
        };
        let msg = decode_region(&bytes, header, 3, outside).expect_err("outside");
        assert!(msg.contains("outside"), "{msg}");
        assert!(decode(&bytes, 2).is_err());
    }

    #[test]
    fn a_truncated_file_never_passes_silently_as_complete() {
        // libjpeg warns on a truncated file (and would pad it with grey); wick then lets the
        // image crate decide, so the outcome is whatever that decoder says, never libjpeg's
        // padded guess presented as the real image.
        let bytes = std::fs::read(fixture(PHOTOS[0])).expect("read");
        let cut = &bytes[..bytes.len() / 2];
        assert_eq!(decode(cut, 3).expect("warning is a fallback"), None);
    }
}
