//! `wick predict`: run a trained model on image files and rank the classes.
//!
//! Works on a run directory (its best checkpoint, its eval transform, its class names) or on a
//! weights file: one from `wick export` carries all of that in its model card; others
//! (pretrained weights) need the architecture and input settings.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde::Serialize;

use crate::config::Config;
use crate::data::{AugmentKind, Preprocess};
use crate::engine::checkpoint;
use crate::hub::read_events;
use crate::model::card::ModelCard;
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
    /// A weights file. Settings left `None` come from the file's model card (written by
    /// `wick export`), else default to an ImageNet model: resnet18, 3 channels, 224 px.
    Weights {
        path: PathBuf,
        arch: Option<String>,
        channels: Option<usize>,
        size: Option<usize>,
    },
}

/// What a run directory holds for prediction: its resolved config, class names and best (or
/// newest) checkpoint.
pub struct TrainedRun {
    pub config: Config,
    pub classes: Vec<String>,
    pub checkpoint: checkpoint::Checkpoint,
}

impl TrainedRun {
    pub fn open(dir: &Path) -> Result<TrainedRun, PredictError> {
        let run = RunDir::open(dir).map_err(|e| PredictError::Input {
            path: dir.to_path_buf(),
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
        let checkpoint = checkpoint::best_or_latest(&run.checkpoints(), &Device::Cpu)?;
        Ok(TrainedRun {
            config,
            classes,
            checkpoint,
        })
    }

    /// The card an exported copy of this run's model carries.
    pub fn card(&self) -> ModelCard {
        let (mean, std) = self.config.normalisation();
        ModelCard {
            arch: self.config.model.arch.clone(),
            channels: self.config.data.channels,
            image_size: self.config.data.image_size,
            mean,
            std,
            classes: self.classes.clone(),
        }
    }
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
                let run = TrainedRun::open(dir)?;
                let card = run.card();
                let varmap = VarMap::new();
                let vb = model::init::seeded_var_builder(&varmap, 0, DType::F32, &device);
                let net = model::build(&card.arch, card.channels, card.classes.len(), vb)?;
                let data = varmap
                    .data()
                    .lock()
                    .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
                let ckpt = &run.checkpoint;
                let weights = ckpt.evaluated_model();
                for (name, var) in data.iter() {
                    let t = weights.get(name).ok_or_else(|| PredictError::Input {
                        path: ckpt.path.clone(),
                        message: format!("checkpoint lacks tensor `{name}`"),
                    })?;
                    var.set(t)?;
                }
                drop(data);
                Ok(Predictor {
                    net,
                    preprocess: Preprocess::new(
                        card.channels,
                        card.image_size,
                        card.mean,
                        card.std,
                    )?,
                    classes: card.classes,
                    device,
                })
            }
            Source::Weights {
                path,
                arch,
                channels,
                size,
            } => {
                let card = model::card::read_card(path)?;
                let arch = arch
                    .clone()
                    .or_else(|| card.as_ref().map(|c| c.arch.clone()))
                    .unwrap_or_else(|| "resnet18".into());
                let channels = channels.or(card.as_ref().map(|c| c.channels)).unwrap_or(3);
                let size = size.or(card.as_ref().map(|c| c.image_size)).unwrap_or(224);
                // The card's normalisation and class names belong to the model it describes:
                // flags naming another architecture or channel count leave them out.
                let card = card.filter(|c| c.arch == arch && c.channels == channels);
                let tensors = model::weights::read_checkpoint(path)?;
                let head = format!("{}.weight", head_prefix(&arch));
                let n =
                    tensors
                        .get(&head)
                        .map(|t| t.dims()[0])
                        .ok_or_else(|| PredictError::Input {
                            path: path.clone(),
                            message: format!("no `{head}` tensor: is --arch {arch} right?"),
                        })?;
                let (mean, std, classes) = match card {
                    Some(c) if c.classes.len() == n => (c.mean, c.std, c.classes),
                    Some(c) => {
                        return Err(PredictError::Input {
                            path: path.clone(),
                            message: format!(
                                "model card lists {} classes but `{head}` has {n} rows",
                                c.classes.len()
                            ),
                        })
                    }
                    None => {
                        let (mean, std) = crate::config::default_normalisation(&arch, channels);
                        (mean, std, (0..n).map(|i| format!("class {i}")).collect())
                    }
                };
                let varmap = VarMap::new();
                let vb = model::init::seeded_var_builder(&varmap, 0, DType::F32, &device);
                let net = model::build(&arch, channels, n, vb)?;
                model::weights::load_tensors(&varmap, &tensors, path, net.head_prefix())?;
                Ok(Predictor {
                    net,
                    preprocess: Preprocess::new(channels, size, mean, std)?,
                    classes,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A freshly initialised 1-channel wick-cnn with `rows` output classes, saved with `card`.
    fn weights_file(dir: &Path, rows: usize, card: Option<&ModelCard>) -> PathBuf {
        let varmap = VarMap::new();
        let vb = model::init::seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
        model::build("wick-cnn", 1, rows, vb).unwrap();
        let data = varmap.data().lock().unwrap();
        let tensors: Vec<(String, Tensor)> = data
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let bytes = safetensors::serialize(
            tensors.iter().map(|(n, t)| (n.as_str(), t)),
            card.map(|c| c.to_metadata()),
        )
        .unwrap();
        let path = dir.join("m.safetensors");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn card(classes: &[&str]) -> ModelCard {
        ModelCard {
            arch: "wick-cnn".into(),
            channels: 1,
            image_size: 20,
            mean: vec![0.2],
            std: vec![0.4],
            classes: classes.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn open(
        path: &Path,
        arch: Option<&str>,
        channels: Option<usize>,
    ) -> Result<Predictor, PredictError> {
        Predictor::open(&Source::Weights {
            path: path.to_path_buf(),
            arch: arch.map(String::from),
            channels,
            size: None,
        })
    }

    #[test]
    fn a_model_card_supplies_arch_input_and_class_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = weights_file(dir.path(), 2, Some(&card(&["cat", "dog"])));
        let pred = open(&p, None, None).unwrap();
        assert_eq!(pred.classes(), ["cat", "dog"]);
        assert_eq!((pred.preprocess.channels, pred.preprocess.size), (1, 20));
        assert_eq!(
            (pred.preprocess.mean.clone(), pred.preprocess.std.clone()),
            (vec![0.2], vec![0.4])
        );
    }

    #[test]
    fn without_a_card_the_weights_need_flags_and_get_numbered_classes() {
        let dir = tempfile::tempdir().unwrap();
        let p = weights_file(dir.path(), 2, None);
        // The default (resnet18) has no `fc` of this shape's model: the error says which flag.
        let e = open(&p, None, None)
            .err()
            .expect("resnet18 default")
            .to_string();
        assert!(e.contains("m.safetensors"), "{e}");
        let pred = open(&p, Some("wick-cnn"), Some(1)).unwrap();
        assert_eq!(pred.classes(), ["class 0", "class 1"]);
        assert_eq!(pred.preprocess.size, 224);
    }

    #[test]
    fn a_card_that_disagrees_with_the_head_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = weights_file(dir.path(), 2, Some(&card(&["a", "b", "c"])));
        let e = open(&p, None, None)
            .err()
            .expect("3 names, 2 rows")
            .to_string();
        assert!(
            e.contains("m.safetensors") && e.contains("3 classes") && e.contains("2 rows"),
            "{e}"
        );
    }
}
