//! Neural networks: trainable small CNN, ResNet and EfficientNet-Lite, weight loading.
//!
//! Every model is built from a [`candle_nn::VarBuilder`] (normally backed by a
//! [`candle_nn::VarMap`], so that all tensors, BatchNorm running statistics included, are saved
//! with it) and implements [`Classifier`]. The train flag is passed explicitly and reaches every
//! BatchNorm.

pub mod autocast;
pub mod batchnorm;
pub mod card;
pub mod efficientnet;
pub mod init;
pub mod layers;
pub mod resnet;
pub mod weights;
pub mod wick_cnn;

use std::path::PathBuf;

use candle_core::Tensor;

pub use batchnorm::BatchNorm2d;
pub use weights::{load_weights, LoadReport};

/// An image classifier: `[N, C, H, W]` images in, `[N, classes]` logits out.
pub trait Classifier: Send {
    /// Logits `[N, classes]`. With `freeze_backbone`, the backbone runs in eval mode and its
    /// output is detached, so no gradient flows into it (and its BatchNorm statistics do not
    /// move); the head still sees `train`.
    fn forward_t(
        &self,
        x: &Tensor,
        train: bool,
        freeze_backbone: bool,
    ) -> candle_core::Result<Tensor>;

    /// Prefix of the classifier head's parameter names (`"fc"`, `"_fc"`).
    fn head_prefix(&self) -> &'static str;
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown architecture {arch:?}; expected one of {known:?}")]
    UnknownArch {
        arch: String,
        known: &'static [&'static str],
    },
    #[error("invalid model shape for {arch}: {message}")]
    InvalidShape { arch: String, message: String },
    #[error("building {arch}: {source}")]
    Build {
        arch: String,
        source: Box<candle_core::Error>,
    },
    #[error("cannot read weights file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("weights file {path}: tensor `{name}` is missing (the model has shape {shape:?})")]
    Missing {
        path: PathBuf,
        name: String,
        shape: Vec<usize>,
    },
    #[error("weights file {path}: tensor `{name}` (shape {shape:?}) is not part of the model")]
    Unexpected {
        path: PathBuf,
        name: String,
        shape: Vec<usize>,
    },
    #[error(
        "weights file {path}: tensor `{name}` has shape {checkpoint:?} in the file but {model:?} in the model"
    )]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        checkpoint: Vec<usize>,
        model: Vec<usize>,
    },
    #[error("weights file {path}: cannot load tensor `{name}`: {source}")]
    Tensor {
        path: PathBuf,
        name: String,
        source: Box<candle_core::Error>,
    },
}

/// Builds a model by architecture name (see [`crate::config::ARCHES`]), creating its variables
/// through `vb` (fresh initialisation when `vb` is backed by an empty `VarMap`).
pub fn build(
    arch: &str,
    in_channels: usize,
    num_classes: usize,
    vb: candle_nn::VarBuilder,
) -> Result<Box<dyn Classifier>, ModelError> {
    if in_channels == 0 || num_classes == 0 {
        return Err(ModelError::InvalidShape {
            arch: arch.to_string(),
            message: format!(
                "in_channels ({in_channels}) and num_classes ({num_classes}) must be at least 1"
            ),
        });
    }
    let built: candle_core::Result<Box<dyn Classifier>> = match arch {
        "wick-cnn" => wick_cnn::WickCnn::new(in_channels, num_classes, vb)
            .map(|m| Box::new(m) as Box<dyn Classifier>),
        "efficientnet-lite0" => efficientnet::EfficientNetLite::lite0(in_channels, num_classes, vb)
            .map(|m| Box::new(m) as Box<dyn Classifier>),
        other => match resnet::config(other) {
            Some((kind, depths)) => resnet::ResNet::new(kind, depths, in_channels, num_classes, vb)
                .map(|m| Box::new(m) as Box<dyn Classifier>),
            None => {
                return Err(ModelError::UnknownArch {
                    arch: other.to_string(),
                    known: crate::config::ARCHES,
                })
            }
        },
    };
    built.map_err(|source| ModelError::Build {
        arch: arch.to_string(),
        source: Box::new(source),
    })
}

/// Whether a parameter belongs to the backbone, i.e. is not part of the head `head_prefix`
/// (`"fc"` matches `fc.weight` and `fc.bias`, not `fc2.weight`).
pub fn is_backbone(name: &str, head_prefix: &str) -> bool {
    !(name == head_prefix
        || name
            .strip_prefix(head_prefix)
            .is_some_and(|rest| rest.starts_with('.')))
}

/// Whether a parameter is exempt from weight decay: every bias, and BatchNorm weights (modules
/// named `bn*`, `_bn*`, or torchvision's `downsample.1`). [`crate::engine::optim::param_groups`]
/// also exempts any other 1-D parameter.
pub fn is_no_decay(name: &str) -> bool {
    let mut parts = name.rsplit('.');
    let leaf = parts.next().unwrap_or("");
    let module = parts.next().unwrap_or("");
    if leaf == "bias" {
        return true;
    }
    if leaf == "weight" {
        let parent = parts.next().unwrap_or("");
        return module.starts_with("bn")
            || module.starts_with("_bn")
            || (parent == "downsample" && module == "1");
    }
    false
}

/// Whether a variable is a trainable parameter: false for BatchNorm running statistics and
/// `num_batches_tracked`.
pub fn is_trainable(name: &str) -> bool {
    !(name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked"))
}

#[cfg(test)]
mod tests;
