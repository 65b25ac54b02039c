//! Writes Fashion-MNIST idx files out as ImageFolder trees of greyscale 28x28 PNGs: the
//! bundled `data/fashion-target` and `data/fashion-source` datasets.
//!
//! The output is deterministic: the first N images of each selected class in file order,
//! named by their index in the idx file, PNG-encoded with fixed settings, so a re-run writes
//! byte-identical files.
//!
//! Intended CLI (wired up in `main.rs`):
//!
//! ```text
//! wick data fashion-mnist --out data --idx-dir /usr/share/datasets/fashion-mnist
//! ```
//!
//! which calls [`export_bundled_fashion`]`(idx_dir, out)` and writes `out/fashion-target` and
//! `out/fashion-source`. The idx files come from the Debian package `dataset-fashion-mnist`.

use std::fs;
use std::path::{Path, PathBuf};

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};

use super::idx::{read_idx_images, read_idx_labels, IdxImages};
use super::DataError;

/// Fashion-MNIST class names by label, made safe as folder names.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt_top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle_boot",
];

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    /// Class names from [`FASHION_CLASSES`].
    pub classes: Vec<String>,
    /// Images per class taken from the idx *train* files into `train/`.
    pub train_per_class: usize,
    /// Images per class taken from the idx *t10k* files into `val/`.
    pub val_per_class: usize,
    /// Replace existing `train/` and `val/` folders under the output directory (otherwise a
    /// non-empty one is an error).
    pub overwrite: bool,
}

impl ExportSpec {
    /// The bundled target task: T-shirt_top, Trouser, Pullover, Dress, Coat; 1000 train and
    /// 200 val images per class.
    pub fn fashion_target() -> ExportSpec {
        ExportSpec::bundled(&FASHION_CLASSES[..5])
    }

    /// The bundled source task: Sandal, Shirt, Sneaker, Bag, Ankle_boot; 1000 train and 200
    /// val images per class.
    pub fn fashion_source() -> ExportSpec {
        ExportSpec::bundled(&FASHION_CLASSES[5..])
    }

    fn bundled(classes: &[&str]) -> ExportSpec {
        ExportSpec {
            classes: classes.iter().map(|c| c.to_string()).collect(),
            train_per_class: 1000,
            val_per_class: 200,
            overwrite: true,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub out_dir: PathBuf,
    /// The exported classes, in the spec's order.
    pub classes: Vec<String>,
    /// Images written per class (same order as `classes`) under `train/`.
    pub train_counts: Vec<usize>,
    /// Images written per class under `val/`.
    pub val_counts: Vec<usize>,
    /// Total PNG bytes written.
    pub bytes: u64,
}

/// One split of the idx data: images and their labels.
struct Split {
    images: IdxImages,
    labels: Vec<u8>,
    images_path: PathBuf,
}

/// Both splits, read once.
struct FashionMnist {
    train: Split,
    test: Split,
}

impl FashionMnist {
    fn load(src_dir: &Path) -> Result<FashionMnist, DataError> {
        Ok(FashionMnist {
            train: load_split(src_dir, "train")?,
            test: load_split(src_dir, "t10k")?,
        })
    }
}

/// `<dir>/<name>.gz` if it exists, else `<dir>/<name>` (its absence is reported by the read).
fn idx_path(dir: &Path, name: &str) -> PathBuf {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        gz
    } else {
        dir.join(name)
    }
}

fn load_split(dir: &Path, prefix: &str) -> Result<Split, DataError> {
    let images_path = idx_path(dir, &format!("{prefix}-images-idx3-ubyte"));
    let labels_path = idx_path(dir, &format!("{prefix}-labels-idx1-ubyte"));
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if labels.len() != images.count {
        return Err(DataError::Idx {
            path: labels_path,
            message: format!(
                "{} labels for {} images in {}",
                labels.len(),
                images.count,
                images_path.display()
            ),
        });
    }
    if let Some(bad) = labels
        .iter()
        .find(|&&l| usize::from(l) >= FASHION_CLASSES.len())
    {
        return Err(DataError::Idx {
            path: labels_path,
            message: format!("label {bad} is not a Fashion-MNIST class (0-9)"),
        });
    }
    Ok(Split {
        images,
        labels,
        images_path,
    })
}

/// Exports `spec` from the idx files in `src_dir` to `out_dir/{train,val}/<Class>/<index>.png`
/// (`<index>`: the image's position in its idx file, zero-padded to 5 digits).
pub fn export_fashion_mnist(
    src_dir: &Path,
    out_dir: &Path,
    spec: &ExportSpec,
) -> Result<ExportReport, DataError> {
    let labels = class_labels(src_dir, spec)?;
    let data = FashionMnist::load(src_dir)?;
    export_loaded(&data, out_dir, spec, &labels)
}

/// Exports both bundled datasets, [`ExportSpec::fashion_target`] to `out_root/fashion-target`
/// and [`ExportSpec::fashion_source`] to `out_root/fashion-source`, replacing their `train/`
/// and `val/` folders.
pub fn export_bundled_fashion(
    src_dir: &Path,
    out_root: &Path,
) -> Result<Vec<ExportReport>, DataError> {
    let data = FashionMnist::load(src_dir)?;
    [
        ("fashion-target", ExportSpec::fashion_target()),
        ("fashion-source", ExportSpec::fashion_source()),
    ]
    .iter()
    .map(|(name, spec)| {
        let labels = class_labels(src_dir, spec)?;
        export_loaded(&data, &out_root.join(name), spec, &labels)
    })
    .collect()
}

/// The label of each class of the spec; unknown or repeated names are errors.
fn class_labels(src_dir: &Path, spec: &ExportSpec) -> Result<Vec<usize>, DataError> {
    let mut labels = Vec::with_capacity(spec.classes.len());
    for name in &spec.classes {
        let Some(label) = FASHION_CLASSES.iter().position(|c| c == name) else {
            return Err(DataError::Export {
                path: src_dir.to_path_buf(),
                message: format!(
                    "unknown Fashion-MNIST class `{name}` (known: {})",
                    FASHION_CLASSES.join(", ")
                ),
            });
        };
        if labels.contains(&label) {
            return Err(DataError::Export {
                path: src_dir.to_path_buf(),
                message: format!("class `{name}` listed twice"),
            });
        }
        labels.push(label);
    }
    if labels.is_empty() {
        return Err(DataError::Export {
            path: src_dir.to_path_buf(),
            message: "no classes selected".to_string(),
        });
    }
    Ok(labels)
}

fn export_loaded(
    data: &FashionMnist,
    out_dir: &Path,
    spec: &ExportSpec,
    labels: &[usize],
) -> Result<ExportReport, DataError> {
    let mut report = ExportReport {
        out_dir: out_dir.to_path_buf(),
        classes: spec.classes.clone(),
        train_counts: Vec::new(),
        val_counts: Vec::new(),
        bytes: 0,
    };
    for (split, folder, per_class) in [
        (&data.train, "train", spec.train_per_class),
        (&data.test, "val", spec.val_per_class),
    ] {
        let dir = out_dir.join(folder);
        prepare_dir(&dir, spec.overwrite)?;
        for (name, &label) in spec.classes.iter().zip(labels) {
            let picked: Vec<usize> = split
                .labels
                .iter()
                .enumerate()
                .filter(|&(_, &l)| usize::from(l) == label)
                .map(|(i, _)| i)
                .take(per_class)
                .collect();
            if picked.len() < per_class {
                return Err(DataError::Export {
                    path: split.images_path.clone(),
                    message: format!(
                        "only {} images of class `{name}`, {per_class} asked for",
                        picked.len()
                    ),
                });
            }
            let class_dir = dir.join(name);
            fs::create_dir_all(&class_dir).map_err(|e| DataError::io(&class_dir, e))?;
            for &i in &picked {
                let path = class_dir.join(format!("{i:05}.png"));
                report.bytes += write_grey_png(&path, &split.images, i)?;
            }
            match folder {
                "train" => report.train_counts.push(picked.len()),
                _ => report.val_counts.push(picked.len()),
            }
        }
    }
    Ok(report)
}

/// Makes `dir` ready to receive an export: missing, empty, or removed when `overwrite`.
fn prepare_dir(dir: &Path, overwrite: bool) -> Result<(), DataError> {
    if !dir.exists() {
        return fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e));
    }
    let non_empty = fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .next()
        .is_some();
    if non_empty {
        if !overwrite {
            return Err(DataError::Export {
                path: dir.to_path_buf(),
                message: "already exists and is not empty (ask to overwrite)".to_string(),
            });
        }
        fs::remove_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    Ok(())
}

/// Encodes image `i` as an 8-bit greyscale PNG (best compression, adaptive filtering: fixed
/// settings, so the bytes are reproducible) and writes it; returns the bytes written.
fn write_grey_png(path: &Path, images: &IdxImages, i: usize) -> Result<u64, DataError> {
    let Some(pixels) = images.image(i) else {
        return Err(DataError::Export {
            path: path.to_path_buf(),
            message: format!("image {i} is past the end of the idx file"),
        });
    };
    let png = encode_grey_png(pixels, images.cols, images.rows).map_err(|e| DataError::Encode {
        path: path.to_path_buf(),
        source: e,
    })?;
    fs::write(path, &png).map_err(|e| DataError::io(path, e))?;
    Ok(png.len() as u64)
}

/// PNG bytes of a greyscale image.
pub fn encode_grey_png(
    pixels: &[u8],
    width: usize,
    height: usize,
) -> Result<Vec<u8>, image::ImageError> {
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Best, FilterType::Adaptive)
        .write_image(pixels, width as u32, height as u32, ExtendedColorType::L8)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::tests::{fashion_dir, write_idx};
    use crate::data::image_folder::ImageFolder;
    use crate::data::transform::U8Image;

    /// A fake Fashion-MNIST: `per_class` 2x3 images per label in each split, label-major
    /// interleaved (labels 0, 1, ..., 9, 0, 1, ...), pixel values derived from the index.
    fn fake_idx(dir: &Path, per_class: usize) {
        for prefix in ["train", "t10k"] {
            let count = 10 * per_class;
            let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
            let pixels: Vec<u8> = (0..count * 6).map(|p| (p * 3 % 256) as u8).collect();
            write_idx(
                &dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
                &[count as u32, 2, 3],
                &pixels,
                true,
            );
            // Labels not gzipped: both forms are found.
            write_idx(
                &dir.join(format!("{prefix}-labels-idx1-ubyte")),
                &[count as u32],
                &labels,
                false,
            );
        }
    }

    fn spec(classes: &[&str], train: usize, val: usize) -> ExportSpec {
        ExportSpec {
            classes: classes.iter().map(|c| c.to_string()).collect(),
            train_per_class: train,
            val_per_class: val,
            overwrite: false,
        }
    }

    fn all_files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let bytes = fs::read(&path).expect("read");
                    out.push((path.strip_prefix(root).expect("rel").to_path_buf(), bytes));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn exports_an_image_folder_deterministically() {
        let src = tempfile::tempdir().expect("tempdir");
        fake_idx(src.path(), 5);
        let out = tempfile::tempdir().expect("tempdir");
        let s = spec(&["Trouser", "Ankle_boot"], 3, 2);
        let report = export_fashion_mnist(src.path(), out.path(), &s).expect("export");
        assert_eq!(report.train_counts, vec![3, 3]);
        assert_eq!(report.val_counts, vec![2, 2]);

        let train = ImageFolder::scan(&out.path().join("train")).expect("scan");
        assert_eq!(train.classes, vec!["Ankle_boot", "Trouser"]);
        assert_eq!(train.class_counts(), vec![3, 3]);
        // First Trouser (label 1) images in file order: 1, 11, 21.
        let names: Vec<String> = train
            .samples
            .iter()
            .filter(|s| s.label == Some(1))
            .map(|s| {
                s.path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, vec!["00001.png", "00011.png", "00021.png"]);
        let val = ImageFolder::scan(&out.path().join("val")).expect("scan");
        assert_eq!(val.class_counts(), vec![2, 2]);

        // Pixels survive the round trip.
        let png = out.path().join("train/Trouser/00011.png");
        let img = crate::data::decode::decode_image(&png, 1).expect("decode");
        let want: Vec<u8> = (11 * 6..12 * 6).map(|p| (p * 3 % 256) as u8).collect();
        assert_eq!(img, U8Image::from_raw(3, 2, 1, want).expect("raw"));

        // Non-empty output is refused without overwrite; with it, the bytes are identical.
        let err = export_fashion_mnist(src.path(), out.path(), &s).expect_err("exists");
        assert!(err.to_string().contains("not empty"), "{err}");
        let before = all_files(out.path());
        let again = ExportSpec {
            overwrite: true,
            ..s.clone()
        };
        export_fashion_mnist(src.path(), out.path(), &again).expect("export again");
        assert_eq!(before, all_files(out.path()));
    }

    #[test]
    fn export_errors_name_the_problem() {
        let src = tempfile::tempdir().expect("tempdir");
        fake_idx(src.path(), 2);
        let out = tempfile::tempdir().expect("tempdir");
        let msg = export_fashion_mnist(src.path(), out.path(), &spec(&["Hat"], 1, 1))
            .expect_err("unknown")
            .to_string();
        assert!(msg.contains("Hat") && msg.contains("Trouser"), "{msg}");
        let msg = export_fashion_mnist(src.path(), out.path(), &spec(&["Bag"], 3, 1))
            .expect_err("too few")
            .to_string();
        assert!(
            msg.contains("only 2") && msg.contains("train-images"),
            "{msg}"
        );
        let empty = tempfile::tempdir().expect("tempdir");
        let msg = export_fashion_mnist(empty.path(), out.path(), &spec(&["Bag"], 1, 1))
            .expect_err("missing files")
            .to_string();
        assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
    }

    #[test]
    fn exports_real_fashion_mnist_subset() {
        let Some(src) = fashion_dir() else { return };
        let out = tempfile::tempdir().expect("tempdir");
        let s = spec(&["Sneaker", "Coat"], 4, 3);
        export_fashion_mnist(&src, out.path(), &s).expect("export");
        let train = ImageFolder::scan(&out.path().join("train")).expect("scan");
        assert_eq!(train.classes, vec!["Coat", "Sneaker"]);
        assert_eq!(train.class_counts(), vec![4, 4]);
        let val = ImageFolder::scan(&out.path().join("val")).expect("scan");
        assert_eq!(val.class_counts(), vec![3, 3]);
        // Every PNG decodes to 28x28 and matches the idx pixels.
        let images = read_idx_images(&src.join("t10k-images-idx3-ubyte.gz")).expect("idx");
        for sample in &val.samples {
            let img = crate::data::decode::decode_image(&sample.path, 1).expect("decode");
            let stem = sample.path.file_stem().expect("stem").to_string_lossy();
            let index: usize = stem.parse().expect("index");
            assert_eq!((img.width, img.height), (28, 28));
            assert_eq!(img.data, images.image(index).expect("image"));
        }
    }

    /// Writes the bundled datasets (`data/fashion-target`, `data/fashion-source`) to
    /// `$WICK_EXPORT_OUT` from `$WICK_IDX_DIR` (default: the Debian package's folder):
    ///
    /// ```text
    /// WICK_EXPORT_OUT=$PWD/data cargo test --lib generate_bundled -- --ignored
    /// ```
    #[test]
    #[ignore = "writes the bundled datasets; run by hand with WICK_EXPORT_OUT set"]
    fn generate_bundled_fashion_data() {
        let out = std::env::var_os("WICK_EXPORT_OUT").expect("set WICK_EXPORT_OUT");
        let src = std::env::var_os("WICK_IDX_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(crate::data::idx::tests::FASHION_DIR));
        let reports = export_bundled_fashion(&src, Path::new(&out)).expect("export");
        for r in &reports {
            println!(
                "{}: classes {:?}, train {:?}, val {:?}, {} PNG bytes",
                r.out_dir.display(),
                r.classes,
                r.train_counts,
                r.val_counts,
                r.bytes
            );
        }
    }
}
