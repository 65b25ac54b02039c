//! Image data: ImageFolder scanning, idx files, transforms and the threaded loader.
//!
//! - [`image_folder`]: torchvision-style `root/<class>/<image>` trees and unlabelled folders.
//! - [`idx`]: MNIST-style idx files (gzipped or not).
//! - [`decode`]: image files to 8-bit luma or RGB buffers.
//! - [`jpeg`]: JPEGs through libjpeg-turbo, whole or only the region a crop keeps.
//! - [`transform`]: eval transform, train augmentations, normalisation to CHW `f32`.
//! - [`augment`]: the weak and strong (RandAugment-style) views for self-training.
//! - [`loader`]: worker threads that decode, augment and batch in order, with a decoded-image
//!   cache.
//! - [`export`]: writing Fashion-MNIST idx files out as an ImageFolder of PNGs (the bundled
//!   `data/fashion-*` sets).

use std::path::PathBuf;

pub mod augment;
pub mod decode;
pub mod export;
pub mod idx;
pub mod image_folder;
pub mod jpeg;
pub mod loader;
pub mod transform;

pub use decode::decode_image;
pub use export::{
    export_bundled_fashion, export_fashion_mnist, ExportReport, ExportSpec, FASHION_CLASSES,
};
pub use idx::{read_idx_images, read_idx_labels, IdxImages};
pub use image_folder::{check_same_classes, is_image_file, scan_unlabelled, ImageFolder, Sample};
pub use loader::{Batch, BatchIter, Loader};
pub use transform::{sample_rng, AugmentKind, Preprocess, U8Image, IMAGENET_MEAN, IMAGENET_STD};

/// Everything that can go wrong reading, decoding or writing data. Every variant names the
/// path at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be read, listed or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A dataset root that does not exist.
    #[error("{path}: no such file or directory")]
    NotFound { path: PathBuf },
    /// A dataset root that is a file, not a directory.
    #[error("{path}: not a directory")]
    NotADirectory { path: PathBuf },
    /// An ImageFolder root without any class sub-folder.
    #[error("{path}: no class folders (expected one sub-folder of images per class)")]
    NoClasses { path: PathBuf },
    /// A class folder without any image file.
    #[error("{path}: class folder `{class}` contains no images (extensions: {exts})", exts = image_folder::IMAGE_EXTENSIONS.join(", "))]
    EmptyClass { path: PathBuf, class: String },
    /// A folder of unlabelled images without any image file.
    #[error("{path}: no images found (extensions: {exts})", exts = image_folder::IMAGE_EXTENSIONS.join(", "))]
    NoImages { path: PathBuf },
    /// A directory tree nested deeper than we are willing to follow (probably a symlink loop).
    #[error("{path}: directories nested more than {max_depth} levels deep (symlink loop?)")]
    TooDeep { path: PathBuf, max_depth: usize },
    /// Train and val folders whose class sub-folders differ.
    #[error(
        "train {train} and val {val} have different classes: {}",
        describe_missing(missing_in_val, missing_in_train)
    )]
    ClassMismatch {
        train: PathBuf,
        val: PathBuf,
        /// Classes of train with no folder in val.
        missing_in_val: Vec<String>,
        /// Classes of val with no folder in train.
        missing_in_train: Vec<String>,
    },
    /// A malformed idx file.
    #[error("{path}: not a valid idx file: {message}")]
    Idx { path: PathBuf, message: String },
    /// An image that could not be decoded.
    #[error("{path}: cannot decode image: {source}")]
    Decode {
        path: PathBuf,
        source: image::ImageError,
    },
    /// A JPEG that libjpeg-turbo could not decode.
    #[error("{path}: cannot decode JPEG: {message}")]
    Jpeg { path: PathBuf, message: String },
    /// An image that could not be encoded or written.
    #[error("{path}: cannot write image: {source}")]
    Encode {
        path: PathBuf,
        source: image::ImageError,
    },
    /// Preprocessing settings that cannot work (channels, size, mean/std).
    #[error("invalid preprocessing: {message}")]
    InvalidPreprocess { message: String },
    /// An export that cannot be done as asked (unknown class, too few images, ...).
    #[error("{path}: {message}")]
    Export { path: PathBuf, message: String },
}

fn describe_missing(missing_in_val: &[String], missing_in_train: &[String]) -> String {
    let mut parts = Vec::new();
    if !missing_in_val.is_empty() {
        parts.push(format!("missing from val: {}", missing_in_val.join(", ")));
    }
    if !missing_in_train.is_empty() {
        parts.push(format!(
            "missing from train: {}",
            missing_in_train.join(", ")
        ));
    }
    parts.join("; ")
}

impl DataError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> DataError {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
