//! MNIST-style idx files, gzipped or not (detected by the gzip magic bytes, not by the name).
//!
//! Format: two zero bytes, a type byte (`0x08` = unsigned byte, the only one we read), the
//! number of dimensions, then one big-endian `u32` per dimension, then the data. Images are
//! `[count, rows, cols]`, labels `[count]`.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::DataError;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const TYPE_U8: u8 = 0x08;

/// Images from an idx3 file, row-major, one byte per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    /// `count * rows * cols` bytes, image after image.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// The pixels of image `i`, or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let len = self.rows * self.cols;
        let start = i.checked_mul(len)?;
        self.pixels.get(start..start.checked_add(len)?)
    }
}

/// Reads an idx3 image file (magic `0x00000803`).
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let bytes = read_maybe_gzip(path)?;
    let (dims, data) = parse(path, &bytes, 3)?;
    Ok(IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels: data.to_vec(),
    })
}

/// Reads an idx1 label file (magic `0x00000801`).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = read_maybe_gzip(path)?;
    let (_, data) = parse(path, &bytes, 1)?;
    Ok(data.to_vec())
}

/// The whole file, gunzipped if it starts with the gzip magic.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if raw.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| idx_error(path, format!("corrupt gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Checks the header for `want_dims` dimensions of unsigned bytes and returns the dimensions
/// and exactly the data they describe.
fn parse<'a>(
    path: &Path,
    bytes: &'a [u8],
    want_dims: usize,
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let header_len = 4 + 4 * want_dims;
    let Some(magic) = bytes.get(..4) else {
        return Err(idx_error(
            path,
            format!(
                "file is {} bytes, shorter than the 4-byte magic",
                bytes.len()
            ),
        ));
    };
    let expected = [0, 0, TYPE_U8, want_dims as u8];
    if magic != expected {
        return Err(idx_error(
            path,
            format!(
                "magic number {:02x}{:02x}{:02x}{:02x}, expected {:02x}{:02x}{:02x}{:02x} \
                 (unsigned bytes, {want_dims} dimension{})",
                magic[0],
                magic[1],
                magic[2],
                magic[3],
                expected[0],
                expected[1],
                expected[2],
                expected[3],
                if want_dims == 1 { "" } else { "s" }
            ),
        ));
    }
    if bytes.len() < header_len {
        return Err(idx_error(
            path,
            format!(
                "file is {} bytes, shorter than its {header_len}-byte header",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected_len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| idx_error(path, format!("dimensions {dims:?} overflow")))?;
    let data = &bytes[header_len..];
    if data.len() != expected_len {
        return Err(idx_error(
            path,
            format!(
                "dimensions {dims:?} need {expected_len} data bytes, file has {}",
                data.len()
            ),
        ));
    }
    Ok((dims, data))
}

fn idx_error(path: &Path, message: String) -> DataError {
    DataError::Idx {
        path: PathBuf::from(path),
        message,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Writes an idx file with the given dims and data (test helper).
    pub(crate) fn write_idx(path: &Path, dims: &[u32], data: &[u8], gzip: bool) {
        let mut bytes = vec![0, 0, TYPE_U8, dims.len() as u8];
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(data);
        if gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&bytes).expect("gzip");
            bytes = enc.finish().expect("gzip");
        }
        std::fs::write(path, bytes).expect("write idx");
    }

    #[test]
    fn reads_small_files_plain_and_gzipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        for gzip in [false, true] {
            // The name says nothing about compression: detection is by content.
            let img = dir.path().join(format!("images-{gzip}.bin"));
            let lab = dir.path().join(format!("labels-{gzip}.bin"));
            write_idx(&img, &[2, 3, 4], &pixels, gzip);
            write_idx(&lab, &[2], &[7, 9], gzip);
            let images = read_idx_images(&img).expect("images");
            assert_eq!((images.count, images.rows, images.cols), (2, 3, 4));
            assert_eq!(images.pixels, pixels);
            assert_eq!(images.image(1).expect("second"), &pixels[12..24]);
            assert!(images.image(2).is_none());
            assert_eq!(read_idx_labels(&lab).expect("labels"), vec![7, 9]);
        }
    }

    #[test]
    fn rejects_bad_magic_and_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lab = dir.path().join("labels.idx");
        write_idx(&lab, &[2], &[1, 2], false);
        let err = read_idx_images(&lab).expect_err("labels are not images");
        let msg = err.to_string();
        assert!(msg.contains("labels.idx") && msg.contains("magic"), "{msg}");

        let short = dir.path().join("short.idx");
        write_idx(&short, &[2, 2, 2], &[0; 7], true);
        let msg = read_idx_images(&short).expect_err("short").to_string();
        assert!(msg.contains("short.idx") && msg.contains("need 8"), "{msg}");

        let tiny = dir.path().join("tiny.idx");
        std::fs::write(&tiny, [0u8, 0]).expect("write");
        let msg = read_idx_labels(&tiny).expect_err("tiny").to_string();
        assert!(msg.contains("tiny.idx"), "{msg}");

        let truncated_header = dir.path().join("hdr.idx");
        std::fs::write(&truncated_header, [0u8, 0, 8, 3, 0, 0]).expect("write");
        let msg = read_idx_images(&truncated_header)
            .expect_err("header")
            .to_string();
        assert!(msg.contains("header"), "{msg}");

        let bad_gz = dir.path().join("bad.gz");
        std::fs::write(&bad_gz, [0x1f, 0x8b, 1, 2, 3]).expect("write");
        let msg = read_idx_labels(&bad_gz).expect_err("gzip").to_string();
        assert!(msg.contains("bad.gz") && msg.contains("gzip"), "{msg}");

        let missing = dir.path().join("missing.idx");
        let msg = read_idx_labels(&missing).expect_err("missing").to_string();
        assert!(msg.contains("missing.idx"), "{msg}");
    }

    /// The Debian package `dataset-fashion-mnist` puts the real files here.
    pub(crate) const FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

    pub(crate) fn fashion_dir() -> Option<PathBuf> {
        let dir = PathBuf::from(FASHION_DIR);
        if dir.join("t10k-labels-idx1-ubyte.gz").is_file() {
            Some(dir)
        } else {
            println!("skipped: {FASHION_DIR} not found (apt install dataset-fashion-mnist)");
            None
        }
    }

    #[test]
    fn reads_real_fashion_mnist_t10k() {
        let Some(dir) = fashion_dir() else { return };
        let images = read_idx_images(&dir.join("t10k-images-idx3-ubyte.gz")).expect("images");
        let labels = read_idx_labels(&dir.join("t10k-labels-idx1-ubyte.gz")).expect("labels");
        assert_eq!((images.count, images.rows, images.cols), (10_000, 28, 28));
        assert_eq!(images.pixels.len(), 10_000 * 28 * 28);
        assert_eq!(labels.len(), 10_000);
        let mut counts = [0usize; 10];
        for &l in &labels {
            counts[l as usize] += 1;
        }
        assert_eq!(counts, [1000; 10]);
        // The first test image is an ankle boot (label 9), as in every Fashion-MNIST loader.
        assert_eq!(labels[0], 9);
        // Background is black, the item is brighter.
        let first = images.image(0).expect("first");
        assert_eq!(first[0], 0);
        assert!(first.iter().any(|&p| p > 200));
    }

    #[test]
    fn reads_real_fashion_mnist_train_labels() {
        let Some(dir) = fashion_dir() else { return };
        let labels = read_idx_labels(&dir.join("train-labels-idx1-ubyte.gz")).expect("labels");
        assert_eq!(labels.len(), 60_000);
        let mut counts = [0usize; 10];
        for &l in &labels {
            counts[l as usize] += 1;
        }
        assert_eq!(counts, [6000; 10]);
    }
}
