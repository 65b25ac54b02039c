//! Decoding image files into 8-bit [`U8Image`] buffers with 1 (luma) or 3 (RGB) channels.
//!
//! The format is detected from the file's content (a PNG named `.jpg` still decodes).
//! Conversions follow PIL, which torchvision pipelines use:
//! - greyscale to RGB replicates the grey value;
//! - RGB to greyscale is ITU-R 601-2 luma, `L = R*299/1000 + G*587/1000 + B*114/1000`
//!   (PIL's `convert("L")`, torchvision's `Grayscale`), rounded;
//! - alpha is dropped (not composited), as PIL's `convert("RGB")`;
//! - palette images are expanded by the decoder; 16-bit and float samples are scaled to 8 bits
//!   with rounding.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageReader};

use super::jpeg;
use super::transform::U8Image;
use super::DataError;

/// Decodes the image at `path` into `channels` (1 or 3) 8-bit channels.
pub fn decode_image(path: &Path, channels: usize) -> Result<U8Image, DataError> {
    check_channels(channels)?;
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_bytes(path, &bytes, channels)
}

/// [`decode_image`] of a file already read into memory (`path` names it in errors). JPEGs go
/// through libjpeg-turbo (see [`super::jpeg`]), everything else through the `image` crate.
pub fn decode_bytes(path: &Path, bytes: &[u8], channels: usize) -> Result<U8Image, DataError> {
    check_channels(channels)?;
    if jpeg::AVAILABLE && jpeg::is_jpeg(bytes) {
        if let Some(img) = jpeg::decode(bytes, channels).map_err(|m| jpeg_error(path, m))? {
            return Ok(img);
        }
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    let img = reader.decode().map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        source: e,
    })?;
    if channels == 3 {
        // Moves the buffer when the decoder already produced 8-bit RGB: no copy.
        let (width, height) = (img.width() as usize, img.height() as usize);
        return Ok(U8Image {
            width,
            height,
            channels,
            data: img.into_rgb8().into_raw(),
        });
    }
    from_dynamic(&img, channels)
}

/// The JPEG headers of `bytes` when they are a JPEG that libjpeg-turbo will decode (`None`:
/// not a JPEG, no libjpeg in this build, or a kind left to the `image` crate such as CMYK).
pub fn jpeg_header(path: &Path, bytes: &[u8]) -> Result<Option<jpeg::Header>, DataError> {
    if !jpeg::AVAILABLE || !jpeg::is_jpeg(bytes) {
        return Ok(None);
    }
    let header = jpeg::read_header(bytes).map_err(|m| jpeg_error(path, m))?;
    Ok(header.filter(|h| h.components != 4))
}

/// libjpeg's message, with the file's path.
pub fn jpeg_error(path: &Path, message: String) -> DataError {
    DataError::Jpeg {
        path: path.to_path_buf(),
        message,
    }
}

/// Converts a decoded image to `channels` (1 or 3) 8-bit channels.
pub fn from_dynamic(img: &DynamicImage, channels: usize) -> Result<U8Image, DataError> {
    check_channels(channels)?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data = if channels == 3 {
        img.to_rgb8().into_raw()
    } else if img.color().has_color() {
        let rgb = img.to_rgb8().into_raw();
        rgb.chunks_exact(3)
            .map(|p| rgb_to_luma(p[0], p[1], p[2]))
            .collect()
    } else {
        img.to_luma8().into_raw()
    };
    Ok(U8Image {
        width,
        height,
        channels,
        data,
    })
}

/// PIL's ITU-R 601-2 luma in fixed point (`L24` in PIL's `Convert.c`), rounded.
pub fn rgb_to_luma(r: u8, g: u8, b: u8) -> u8 {
    let l = u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000;
    (l >> 16) as u8
}

fn check_channels(channels: usize) -> Result<(), DataError> {
    if channels == 1 || channels == 3 {
        Ok(())
    } else {
        Err(DataError::InvalidPreprocess {
            message: format!("channels must be 1 or 3, got {channels}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};

    fn save(img: &DynamicImage, path: &Path) {
        img.save(path).expect("save test image");
    }

    #[test]
    fn luma_matches_pil() {
        assert_eq!(rgb_to_luma(0, 0, 0), 0);
        assert_eq!(rgb_to_luma(255, 255, 255), 255);
        // PIL: Image.new("RGB", (1, 1), (255, 0, 0)).convert("L").getpixel((0, 0)) == 76
        assert_eq!(rgb_to_luma(255, 0, 0), 76);
        assert_eq!(rgb_to_luma(0, 255, 0), 150);
        assert_eq!(rgb_to_luma(0, 0, 255), 29);
        assert_eq!(rgb_to_luma(10, 20, 30), 18);
    }

    #[test]
    fn grey_png_to_one_and_three_channels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.png");
        let img = ImageBuffer::from_fn(3, 2, |x, y| Luma([(x * 10 + y * 100) as u8]));
        save(&DynamicImage::ImageLuma8(img), &path);
        let one = decode_image(&path, 1).expect("decode");
        assert_eq!((one.width, one.height, one.channels), (3, 2, 1));
        assert_eq!(one.data, vec![0, 10, 20, 100, 110, 120]);
        let three = decode_image(&path, 3).expect("decode");
        assert_eq!(three.channels, 3);
        assert_eq!(&three.data[..6], &[0, 0, 0, 10, 10, 10]);
    }

    #[test]
    fn rgba_drops_alpha_and_rgb_to_luma() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.png");
        let img = ImageBuffer::from_fn(2, 1, |x, _| {
            if x == 0 {
                Rgba([255u8, 0, 0, 0])
            } else {
                Rgba([0u8, 0, 255, 255])
            }
        });
        save(&DynamicImage::ImageRgba8(img), &path);
        let rgb = decode_image(&path, 3).expect("decode");
        assert_eq!(rgb.data, vec![255, 0, 0, 0, 0, 255]);
        let grey = decode_image(&path, 1).expect("decode");
        assert_eq!(grey.data, vec![76, 29]);
    }

    #[test]
    fn sixteen_bit_is_scaled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.png");
        let img = ImageBuffer::from_fn(3, 1, |x, _| Luma([[0u16, 0x8080, 0xffff][x as usize]]));
        save(&DynamicImage::ImageLuma16(img), &path);
        let grey = decode_image(&path, 1).expect("decode");
        assert_eq!(grey.data, vec![0, 128, 255]);
        let rgb16 = ImageBuffer::from_fn(1, 1, |_, _| Rgb([0xffffu16, 0, 0x8080]));
        let path16 = dir.path().join("e.png");
        save(&DynamicImage::ImageRgb16(rgb16), &path16);
        assert_eq!(
            decode_image(&path16, 3).expect("rgb16").data,
            vec![255, 0, 128]
        );
        let la = ImageBuffer::from_fn(1, 1, |_, _| LumaA([7u8, 0]));
        let path_la = dir.path().join("f.png");
        save(&DynamicImage::ImageLumaA8(la), &path_la);
        assert_eq!(decode_image(&path_la, 3).expect("la").data, vec![7, 7, 7]);
    }

    /// A PNG chunk: length, type, data, CRC over type and data.
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }

    #[test]
    fn palette_png_is_expanded() {
        use std::io::Write;
        // A 2x1 indexed PNG (palette: red, blue), built by hand: `image` cannot write one.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&2u32.to_be_bytes());
        ihdr.extend_from_slice(&1u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 3, 0, 0, 0]); // 8-bit, indexed
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(&mut png, b"PLTE", &[255, 0, 0, 0, 0, 255]);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&[0, 1, 0]).expect("zlib"); // filter 0, then indices 1, 0
        chunk(&mut png, b"IDAT", &z.finish().expect("zlib"));
        chunk(&mut png, b"IEND", &[]);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.png");
        std::fs::write(&path, png).expect("write");
        let rgb = decode_image(&path, 3).expect("decode");
        assert_eq!(rgb.data, vec![0, 0, 255, 255, 0, 0]);
        assert_eq!(decode_image(&path, 1).expect("grey").data, vec![29, 76]);
    }

    #[test]
    fn content_not_extension_decides_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let png_path = dir.path().join("real.png");
        let img = ImageBuffer::from_fn(1, 1, |_, _| Luma([9u8]));
        save(&DynamicImage::ImageLuma8(img), &png_path);
        let misnamed = dir.path().join("misnamed.jpg");
        std::fs::copy(&png_path, &misnamed).expect("copy");
        assert_eq!(decode_image(&misnamed, 1).expect("decode").data, vec![9]);
    }

    #[test]
    fn corrupt_and_missing_files_name_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not a png").expect("write");
        let msg = decode_image(&bad, 3).expect_err("corrupt").to_string();
        assert!(msg.contains("bad.png"), "{msg}");
        let missing = dir.path().join("missing.png");
        let msg = decode_image(&missing, 3).expect_err("missing").to_string();
        assert!(msg.contains("missing.png"), "{msg}");
        let msg = decode_image(&bad, 2).expect_err("channels").to_string();
        assert!(msg.contains("channels"), "{msg}");
    }
}
