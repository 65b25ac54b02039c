//! `wick convert`: turn PyTorch checkpoints (`.pth`, zip or legacy pickle) into safetensors, so
//! pretrained backbones load fast and without a pickle reader.

use std::path::Path;

use crate::engine::checkpoint::{write_atomic, CheckpointError};
use crate::model::{self, ModelError};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Write(#[from] CheckpointError),
    #[error("cannot serialise {path}: {message}")]
    Serialise { path: String, message: String },
}

/// Reads every tensor of `input` (as `load_weights` would: `module.` prefixes stripped,
/// `num_batches_tracked` kept out) and writes them to `output` as safetensors, atomically.
/// Returns the number of tensors and their total element count.
pub fn convert(input: &Path, output: &Path) -> Result<(usize, usize), ConvertError> {
    let tensors = model::weights::read_checkpoint(input)?;
    let kept: Vec<(&String, &candle_core::Tensor)> = tensors
        .iter()
        .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
        .collect();
    let elements = kept.iter().map(|(_, t)| t.elem_count()).sum();
    let bytes =
        safetensors::serialize(kept.iter().map(|(n, t)| (n.as_str(), *t)), None).map_err(|e| {
            ConvertError::Serialise {
                path: output.display().to_string(),
                message: e.to_string(),
            }
        })?;
    write_atomic(output, &bytes)?;
    Ok((kept.len(), elements))
}
