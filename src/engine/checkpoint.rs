//! Checkpoints: one safetensors file holding the model weights (`model.<name>`, BN running
//! stats included), the optimizer state (`optim.<name>`) and, in the file's metadata under
//! `wick`, the JSON [`TrainState`] (epoch, step, round, pseudo-label set, seed, resolved config).
//!
//! One file means one atomic unit: written to a temporary name, fsynced, renamed, and the
//! directory fsynced, so a crash leaves either the old set of checkpoints or the new one.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

const STATE_KEY: &str = "wick";
const MODEL_PREFIX: &str = "model.";
const OPTIM_PREFIX: &str = "optim.";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable checkpoint: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot serialise checkpoint: {0}")]
    Serialise(String),
}

impl CheckpointError {
    /// The file the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            CheckpointError::Io { path, .. } | CheckpointError::Corrupt { path, .. } => Some(path),
            CheckpointError::Serialise(_) => None,
        }
    }
}

/// One adopted pseudo-label: an index into the training pool and its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PseudoLabel {
    pub index: usize,
    pub label: u32,
    pub confidence: f32,
}

/// The round and pseudo-label set an epoch was planned with (its order and targets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochPlan {
    pub round: u32,
    pub pseudo: Vec<PseudoLabel>,
}

/// Everything besides tensors that resuming needs. Everything the runner carries from one
/// batch to the next is here or derived from it (data order and augmentation come from the
/// seed, the epoch and the sample index), so a resumed run is the uninterrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs fully completed.
    pub epoch: u32,
    /// Batches completed in the epoch after `epoch` (0 on an epoch boundary).
    pub batch_in_epoch: u32,
    pub global_step: u64,
    /// Pseudo-label rounds run so far (automatic and manual).
    pub round: u32,
    /// Automatic rounds run so far.
    pub auto_rounds: u32,
    /// Epochs completed since the latest round.
    pub epochs_in_round: u32,
    pub threshold: f32,
    pub base_lr: f64,
    pub best_val_acc: f64,
    pub best_epoch: u32,
    pub supervised_val_acc: Option<f64>,
    pub pseudo: Vec<PseudoLabel>,
    pub seed: u64,
    /// Training images processed and seconds spent training, for throughput figures.
    pub images_seen: u64,
    pub train_seconds: f64,
    /// Sums for the epoch in progress (mid-epoch checkpoints).
    pub epoch_loss_sum: f64,
    pub epoch_correct: u64,
    pub epoch_seen: u64,
    /// The resolved config this run was started with.
    pub config_toml: String,
    /// Set when a pseudo-label round ran in the middle of the epoch in progress: what that
    /// epoch started with (it finishes with the order and targets it began with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_plan: Option<EpochPlan>,
    /// Self-training state beyond the round counters and `pseudo` (soft targets, the plateau
    /// trigger's phase, the online mode's tallies); empty in checkpoints written before it.
    #[serde(default)]
    pub ssl: crate::engine::rounds::SslState,
}

/// A checkpoint read back from disk.
pub struct Checkpoint {
    pub path: PathBuf,
    pub state: TrainState,
    pub model: HashMap<String, Tensor>,
    pub optim: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// The weights the run validated with: the EMA average (kept in the optimizer state under
    /// `ema.<name>`, see [`crate::engine::ema`]) when the run had one, else the model's. The
    /// student's own weights (`model`) are what training resumes from; a prediction or an export
    /// wants the model whose accuracy the run reported.
    pub fn evaluated_model(&self) -> HashMap<String, Tensor> {
        let average: Option<HashMap<String, Tensor>> = self
            .model
            .keys()
            .map(|name| {
                let t = self
                    .optim
                    .get(&format!("{}{name}", crate::engine::ema::PREFIX))?;
                Some((name.clone(), t.clone()))
            })
            .collect();
        average.unwrap_or_else(|| self.model.clone())
    }
}

/// File name of the periodic checkpoint after `global_step` steps.
pub fn step_file_name(global_step: u64) -> String {
    format!("step-{global_step:010}.safetensors")
}

pub const BEST_FILE: &str = "best.safetensors";

/// Serialises and atomically writes a checkpoint.
pub fn save(
    path: &Path,
    state: &TrainState,
    model: &[(String, Tensor)],
    optim: &[(String, Tensor)],
) -> Result<(), CheckpointError> {
    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(model.len() + optim.len());
    for (name, t) in model {
        tensors.push((
            format!("{MODEL_PREFIX}{name}"),
            t.to_device(&Device::Cpu).map_err(ser)?,
        ));
    }
    for (name, t) in optim {
        tensors.push((
            format!("{OPTIM_PREFIX}{name}"),
            t.to_device(&Device::Cpu).map_err(ser)?,
        ));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let json = serde_json::to_string(state).map_err(ser)?;
    let meta = HashMap::from([(STATE_KEY.to_string(), json)]);
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(ser)?;
    write_atomic(path, &bytes)
}

fn ser(e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Serialise(e.to_string())
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the complete new one:
/// temporary name in the same directory, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Reads and checks a checkpoint file.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |message: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(STATE_KEY))
        .ok_or_else(|| corrupt(format!("no `{STATE_KEY}` metadata")))?;
    let state: TrainState = serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
    let all = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| corrupt(e.to_string()))?;
    let mut model = HashMap::new();
    let mut optim = HashMap::new();
    for (name, t) in all {
        if let Some(n) = name.strip_prefix(MODEL_PREFIX) {
            model.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix(OPTIM_PREFIX) {
            optim.insert(n.to_string(), t);
        } else {
            return Err(corrupt(format!("unexpected tensor `{name}`")));
        }
    }
    if model.is_empty() {
        return Err(corrupt("no model tensors".into()));
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        state,
        model,
        optim,
    })
}

/// Periodic checkpoints in `dir`, newest (highest step) first.
pub fn list_steps(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, p)| p).collect()
}

/// The newest checkpoint in `dir` that reads back cleanly; the ones skipped on the way (torn or
/// corrupt) are returned with their errors so the caller can warn about them.
pub fn newest_valid(dir: &Path, device: &Device) -> (Option<Checkpoint>, Vec<CheckpointError>) {
    let mut skipped = Vec::new();
    for path in list_steps(dir) {
        match load(&path, device) {
            Ok(c) => return (Some(c), skipped),
            Err(e) => skipped.push(e),
        }
    }
    (None, skipped)
}

/// Deletes all but the newest `keep` periodic checkpoints (`best.safetensors` is separate).
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    for old in list_steps(dir).into_iter().skip(keep.max(1)) {
        std::fs::remove_file(old)?;
    }
    Ok(())
}

/// The checkpoint to use a finished run's model from: `best.safetensors`, else the newest valid.
pub fn best_or_latest(checkpoints: &Path, device: &Device) -> Result<Checkpoint, CheckpointError> {
    let best = checkpoints.join(BEST_FILE);
    if best.is_file() {
        return load(&best, device);
    }
    match newest_valid(checkpoints, device) {
        (Some(c), _) => Ok(c),
        (None, mut skipped) if !skipped.is_empty() => Err(skipped.remove(0)),
        (None, _) => Err(CheckpointError::Io {
            path: checkpoints.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no checkpoint found"),
        }),
    }
}

/// Writes a checkpoint's evaluated weights ([`Checkpoint::evaluated_model`]: the EMA average when
/// the run had one; BN running stats included, optimizer state left out) as
/// a plain safetensors file with the model's own tensor names, loadable as `model.pretrained`,
/// with `card` in its metadata (for `wick predict`).
pub fn export_weights(
    ckpt: &Checkpoint,
    card: &crate::model::card::ModelCard,
    out: &Path,
) -> Result<usize, CheckpointError> {
    let model = ckpt.evaluated_model();
    let mut tensors: Vec<(&String, &Tensor)> = model.iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    let bytes = safetensors::serialize(
        tensors.iter().map(|(n, t)| (n.as_str(), *t)),
        Some(card.to_metadata()),
    )
    .map_err(ser)?;
    write_atomic(out, &bytes)?;
    Ok(tensors.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> TrainState {
        TrainState {
            epoch: 2,
            batch_in_epoch: 0,
            global_step: 40,
            round: 1,
            auto_rounds: 1,
            epochs_in_round: 0,
            threshold: 0.9,
            base_lr: 0.1,
            best_val_acc: 0.8,
            best_epoch: 2,
            supervised_val_acc: Some(0.7),
            pseudo: vec![PseudoLabel {
                index: 7,
                label: 2,
                confidence: 0.97,
            }],
            seed: 1,
            images_seen: 100,
            train_seconds: 1.5,
            epoch_loss_sum: 0.0,
            epoch_correct: 0,
            epoch_seen: 0,
            config_toml: "seed = 1\n".into(),
            epoch_plan: Some(EpochPlan {
                round: 0,
                pseudo: Vec::new(),
            }),
            ssl: Default::default(),
        }
    }

    #[test]
    fn round_trip_and_newest_valid_skips_torn_files() {
        let dir = tempfile::tempdir().unwrap();
        let w = Tensor::arange(0f32, 6., &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let m = Tensor::ones(3, candle_core::DType::F32, &Device::Cpu).unwrap();
        let p1 = dir.path().join(step_file_name(40));
        save(
            &p1,
            &state(),
            &[("fc.weight".into(), w.clone())],
            &[("fc.weight.momentum".into(), m)],
        )
        .unwrap();
        let back = load(&p1, &Device::Cpu).unwrap();
        assert_eq!(back.state, state());
        assert_eq!(
            back.model["fc.weight"].to_vec2::<f32>().unwrap(),
            w.to_vec2::<f32>().unwrap()
        );
        assert_eq!(back.optim.len(), 1);

        // A newer but torn checkpoint: skipped, the older one is used.
        let p2 = dir.path().join(step_file_name(60));
        let bytes = std::fs::read(&p1).unwrap();
        std::fs::write(&p2, &bytes[..bytes.len() / 2]).unwrap();
        let (found, skipped) = newest_valid(dir.path(), &Device::Cpu);
        assert_eq!(found.unwrap().path, p1);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].to_string().contains("step-0000000060"));

        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    }

    #[test]
    fn the_evaluated_model_is_the_ema_average_when_the_run_kept_one() {
        let t = |v: f32| Tensor::new(&[v], &Device::Cpu).unwrap();
        let value = |m: &HashMap<String, Tensor>, k: &str| m[k].to_vec1::<f32>().unwrap()[0];
        let mut ckpt = Checkpoint {
            path: PathBuf::from("c.safetensors"),
            state: state(),
            model: HashMap::from([("fc.weight".into(), t(1.0)), ("fc.bias".into(), t(2.0))]),
            optim: HashMap::from([("fc.weight.momentum".into(), t(9.0))]),
        };
        // No average: the model's own weights.
        assert_eq!(value(&ckpt.evaluated_model(), "fc.weight"), 1.0);
        // An average of only part of the model is not a model: still the student's.
        ckpt.optim.insert("ema.fc.weight".into(), t(3.0));
        assert_eq!(value(&ckpt.evaluated_model(), "fc.weight"), 1.0);
        // A full average is what the run validated with.
        ckpt.optim.insert("ema.fc.bias".into(), t(4.0));
        let m = ckpt.evaluated_model();
        assert_eq!((value(&m, "fc.weight"), value(&m, "fc.bias")), (3.0, 4.0));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for s in [1u64, 5, 3, 9] {
            std::fs::write(dir.path().join(step_file_name(s)), b"x").unwrap();
        }
        prune(dir.path(), 2).unwrap();
        let left: Vec<_> = list_steps(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![step_file_name(9), step_file_name(5)]);
    }
}
