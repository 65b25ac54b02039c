//! `wick export`: a run's best model (the EMA average when the run validated with one) as a
//! plain safetensors file with its model card, usable as `model.pretrained` by another run and
//! by `wick predict` without further flags.

use std::path::{Path, PathBuf};

use crate::engine::checkpoint::{self, CheckpointError};
use crate::predict::{PredictError, TrainedRun};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Run(#[from] PredictError),
    #[error(transparent)]
    Write(#[from] CheckpointError),
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Exported {
    pub tensors: usize,
    /// The checkpoint the weights came from.
    pub checkpoint: PathBuf,
    pub best_epoch: u32,
    pub best_val_acc: f64,
}

pub fn export_run(run_dir: &Path, out: &Path) -> Result<Exported, ExportError> {
    let run = TrainedRun::open(run_dir)?;
    let tensors = checkpoint::export_weights(&run.checkpoint, &run.card(), out)?;
    Ok(Exported {
        tensors,
        checkpoint: run.checkpoint.path.clone(),
        best_epoch: run.checkpoint.state.best_epoch,
        best_val_acc: run.checkpoint.state.best_val_acc,
    })
}
