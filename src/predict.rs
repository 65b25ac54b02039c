//! `wick predict`: run a trained model on image files and rank the classes.
//!
//! Works on a run directory (its best checkpoint, its eval transform, its class names) or on a
//! plain weights file plus an architecture (pretrained weights, exported models).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde::Serialize;

use crate::config::Config;
use crate::data::{AugmentKind, Preprocess};
use crate::engine::checkpoint;
use crate::hub::read_events;
use crate::model::{self, Classifier};
use crate::protocol::Event;
use crate::rundir::RunDir;

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{0}")]
    Model(#[from] model::ModelError),
    #[error("{0}")]
    Data(#[from] crate::data::DataError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
}

/// Where the model comes from.
pub enum Source {
    /// A run directory: best checkpoint, resolved config, class names from its events.
    Run(PathBuf),
    /// A weights file with the architecture and input settings given by hand.
    Weights {
        path: PathBuf,
        arch: String,
        channels: usize,
        size: usize,
    },
}

/// One ranked class.
#[derive(Debug, Clone, Serialize)]
pub struct Ranked {
    pub class: String,
    pub index: usize,
    pub probability: f32,
}

/// The verdict on one image.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub image: String,
    pub top: Vec<Ranked>,
    /// Raw logits, in class order.
    pub logits: Vec<f32>,
}

/// A model ready to classify images.
pub struct Predictor {
    net: Box<dyn Classifier>,
    preprocess: Preprocess,
    classes: Vec<String>,
    device: Device,
}

fn head_prefix(arch: &str) -> &'static str {
    if arch.starts_with("efficientnet") {
        "_fc"
    } else {
        "fc"
    }
}

impl Predictor {
    pub fn open(source: &Source) -> Result<Predictor, PredictError> {
        let device = Device::Cpu;
        match source {
            Source::Run(dir) => {
                let run = RunDir::open(dir).map_err(|e| PredictError::Input {
                    path: dir.clone(),
                    message: e.to_string(),
                })?;
                let config = Config::load(&run.config())?;
                let classes = read_events(&run.events())
                    .ok()
                    .and_then(|events| {
                        events.into_iter().find_map(|e| match e.event {
                            Event::RunStarted { classes, .. } => Some(classes),
                            _ => None,
                        })
                    })
                    .ok_or_else(|| PredictError::Input {
                        path: run.events(),
                        message: "no RunStarted event: cannot tell the class names".into(),
                    })?;
                let ckpt = checkpoint::best_or_latest(&run.checkpoints(), &device)?;
                let varmap = VarMap::new();
                let vb = model::init::seeded_var_builder(&varmap, 0, DType::F32, &device);
                let net =
                    model::build(&config.model.arch, config.data.channels, classes.len(), vb)?;
                let data = varmap
                    .data()
                    .lock()
                    .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
                for (name, var) in data.iter() {
                    let t = ckpt.model.get(name).ok_or_else(|| PredictError::Input {
                        path: ckpt.path.clone(),
                        message: format!("checkpoint lacks tensor `{name}`"),
                    })?;
                    var.set(t)?;
                }
                drop(data);
                let (mean, std) = config.normalisation();
                Ok(Predictor {
                    net,
                    preprocess: Preprocess::new(
                        config.data.channels,
                        config.data.image_size,
                        mean,
                        std,
                    )?,
                    classes,
                    device,
                })
            }
            Source::Weights {
                path,
                arch,
                channels,
                size,
            } => {
                let tensors = model::weights::read_checkpoint(path)?;
                let head = format!("{}.weight", head_prefix(arch));
                let n =
                    tensors
                        .get(&head)
                        .map(|t| t.dims()[0])
                        .ok_or_else(|| PredictError::Input {
                            path: path.clone(),
                            message: format!("no `{head}` tensor: is --arch {arch} right?"),
                        })?;
                let varmap = VarMap::new();
                let vb = model::init::seeded_var_builder(&varmap, 0, DType::F32, &device);
                let net = model::build(arch, *channels, n, vb)?;
                model::load_weights(&varmap, path, net.head_prefix())?;
                let (mean, std) = crate::config::default_normalisation(arch, *channels);
                Ok(Predictor {
                    net,
                    preprocess: Preprocess::new(*channels, *size, mean, std)?,
                    classes: (0..n).map(|i| format!("class {i}")).collect(),
                    device,
                })
            }
        }
    }

    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Classifies one image with the eval transform; `top` classes, most likely first.
    pub fn predict(&self, image: &Path, top: usize) -> Result<Prediction, PredictError> {
        let img = self.preprocess.decode(image)?;
        let mut rng = crate::data::sample_rng(0, 0, 0, AugmentKind::Eval, 0);
        let pixels = self.preprocess.apply(&img, AugmentKind::Eval, &mut rng)?;
        let (c, s) = (self.preprocess.channels, self.preprocess.size);
        let x = Tensor::from_vec(pixels, (1, c, s, s), &self.device)?;
        let logits = self.net.forward_t(&x, false, false)?;
        let probs: Vec<f32> = candle_nn::ops::softmax(&logits, 1)?.squeeze(0)?.to_vec1()?;
        let logits: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        Ok(Prediction {
            image: image.display().to_string(),
            top: order
                .into_iter()
                .take(top)
                .map(|i| Ranked {
                    class: self.classes[i].clone(),
                    index: i,
                    probability: probs[i],
                })
                .collect(),
            logits,
        })
    }
}

/// Human-readable lines for one prediction.
pub fn format_prediction(p: &Prediction) -> String {
    let mut out = format!("{}\n", p.image);
    let width = p.top.iter().map(|r| r.class.len()).max().unwrap_or(0);
    for r in &p.top {
        out.push_str(&format!(
            "  {:<width$}  {:6.2}%\n",
            r.class,
            r.probability * 100.0
        ));
    }
    out
}
