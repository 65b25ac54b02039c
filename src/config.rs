//! The run configuration: one TOML file, every field documented in README.md.
//!
//! Unknown fields are rejected (a typo must not silently fall back to a default), and every
//! error names the file, the field and, where it can be found, the line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The bundled default (`config.toml` at the repository root), embedded so that tests can check
/// it parses and `wick` can print it.
pub const DEFAULT_CONFIG: &str = include_str!("../config.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}{}: field `{field}`: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        field: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seed for weight init, data order, label split and augmentation.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// "auto", "cpu" or "cuda:N".
    #[serde(default = "default_device")]
    pub device: String,
    /// Directory under which `runs/<run-id>/` are created.
    #[serde(default = "default_runs_dir")]
    pub runs_dir: PathBuf,
    /// Human name of the run (used in the run id); defaults to the config file's stem.
    #[serde(default)]
    pub name: Option<String>,
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub self_training: SelfTrainingConfig,
    #[serde(default)]
    pub ui: UiConfig,
    /// Dashboard key bindings (see README.md, "The dashboard").
    #[serde(default)]
    pub keys: crate::ui::KeyConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// ImageFolder with one sub-folder per class.
    pub train: PathBuf,
    /// ImageFolder with the same class sub-folders as `train`.
    pub val: PathBuf,
    /// Optional folder of unlabelled images (no class folders) added to the pool.
    #[serde(default)]
    pub unlabelled: Option<PathBuf>,
    /// Keep only this many labelled images per class (seeded draw); the rest of `train` becomes
    /// the unlabelled pool with its true labels hidden. 0 keeps every label.
    #[serde(default)]
    pub labels_per_class: usize,
    /// Channels the model sees: 1 (greyscale) or 3 (RGB; greyscale images are replicated).
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// Square input size in pixels.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    /// Per-channel normalisation; one value per channel, or "imagenet" presets via `normalize`.
    #[serde(default)]
    pub mean: Option<Vec<f32>>,
    #[serde(default)]
    pub std: Option<Vec<f32>>,
    /// Train-time augmentation.
    #[serde(default)]
    pub augment: Augment,
    /// Decoding threads (0 = one per core).
    #[serde(default)]
    pub workers: usize,
    /// Keep decoded images in memory when they fit in this many MiB (0 = never cache).
    #[serde(default = "default_cache_mib")]
    pub cache_mib: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Augment {
    /// No augmentation: the eval transform.
    None,
    /// Horizontal flip and a small random translation (pad 2 and crop): for small images.
    #[default]
    FlipCrop,
    /// RandomResizedCrop(scale 0.08–1, ratio 3/4–4/3) and horizontal flip, as torchvision.
    RandomResizedCrop,
    /// Self-training's strong view: flip, translation, two RandAugment-style ops and Cutout.
    /// The noise a student trains under when it learns from pseudo-labels (Noisy Student).
    Strong,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// wick-cnn | resnet18 | resnet34 | resnet50 | efficientnet-lite0
    #[serde(default = "default_arch")]
    pub arch: String,
    /// Pretrained weights (safetensors or PyTorch .pth); empty or absent trains from scratch.
    #[serde(default)]
    pub pretrained: Option<PathBuf>,
    /// "none": fine-tune everything; "backbone": train only the new head.
    #[serde(default)]
    pub freeze: Freeze,
    /// Learning-rate multiplier for the backbone (the head uses 1.0).
    #[serde(default = "one")]
    pub backbone_lr_mult: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Freeze {
    #[default]
    None,
    Backbone,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default)]
    pub optimizer: OptimizerKind,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default)]
    pub schedule: Schedule,
    /// Epochs of linear warm-up from lr/10 (fractional allowed).
    #[serde(default)]
    pub warmup_epochs: f64,
    /// For `schedule = "step"`: multiply by `gamma` every `step_epochs`.
    #[serde(default = "default_step_epochs")]
    pub step_epochs: u32,
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    #[serde(default)]
    pub label_smoothing: f64,
    /// Write a checkpoint every N epochs (0 = only on request and at the end).
    #[serde(default = "one_u32")]
    pub checkpoint_every: u32,
    /// Keep this many recent checkpoints (the best is kept as well).
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Compute precision: `"bf16"` runs convolutions and matmuls in bf16 (autocast-style; f32
    /// master weights, BatchNorm, loss and optimizer), on CUDA only.
    #[serde(default)]
    pub precision: Precision,
}

/// `[train] precision`: see [`crate::model::autocast`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    /// The reduced compute dtype, `None` for plain f32.
    pub fn compute_dtype(self) -> Option<candle_core::DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(candle_core::DType::BF16),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[default]
    Sgd,
    Adamw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    Step,
    #[default]
    Cosine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTrainingConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Automatic pseudo-label rounds after the supervised epochs.
    #[serde(default = "default_rounds")]
    pub rounds: u32,
    #[serde(default = "default_epochs_per_round")]
    pub epochs_per_round: u32,
    /// Minimum max-softmax confidence for a pseudo-label.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Floor for the per-class thresholds of `policy = "adaptive"`.
    #[serde(default = "default_min_threshold")]
    pub min_threshold: f32,
    /// Weight λ of the pseudo-labelled loss: loss = CE(labelled) + λ·CE(pseudo).
    #[serde(default = "default_pseudo_weight")]
    pub pseudo_weight: f64,
    #[serde(default)]
    pub policy: SelectionPolicy,
    /// For `policy = "top_k"`: at most this many labels per class in a round's selection (the
    /// most confident; each round selects afresh from its predictions).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Cap on labels added per round as a fraction of the pool (1.0 = no cap).
    #[serde(default = "one")]
    pub max_growth: f64,
    /// "rounds": offline pseudo-label rounds; "fixmatch": online consistency training (each
    /// step pseudo-labels a weak view of unlabelled images and trains on a strong view).
    #[serde(default)]
    pub mode: SelfTrainingMode,
    /// Rounds mode: when automatic rounds start. "after_epochs": after `train.epochs`
    /// supervised epochs, then every `epochs_per_round`; "plateau": as soon as validation
    /// accuracy has not improved for `patience` epochs in the current phase (those epoch counts
    /// are then maxima).
    #[serde(default)]
    pub trigger: RoundTrigger,
    /// For `trigger = "plateau"`: epochs without a better validation accuracy that end a phase.
    #[serde(default = "default_patience")]
    pub patience: u32,
    /// Ramp λ (`pseudo_weight`) up linearly over this many rounds: round r trains with
    /// λ·min(1, r / N). 0 = the full λ from the first round.
    #[serde(default)]
    pub pseudo_weight_rampup_rounds: u32,
    /// Train on soft pseudo-labels (the prediction sharpened with `temperature`) instead of hard
    /// ones.
    #[serde(default)]
    pub soft_labels: bool,
    /// Sharpening temperature T of soft labels: p_c^(1/T), renormalised (T < 1 sharpens).
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// Rounds mode: predict each pool image and its mirror image and average the two
    /// probability rows before selection (flip test-time augmentation; for data whose classes
    /// survive a left-right flip, as the `flip_crop` augmentation assumes).
    #[serde(default)]
    pub predict_flip: bool,
    /// Rounds mode: re-initialise the model (the pretrained weights, or the seeded
    /// initialisation when training from scratch) before training on each round's labels.
    #[serde(default)]
    pub reinit: bool,
    /// With `reinit = true`: what a round starts from. "start": what the run started from (the
    /// pretrained weights, else the seeded initialisation); "scratch": the seeded
    /// initialisation even when `model.pretrained` is set, which then only labels the first
    /// round — a fresh student learns from a trained teacher (Noisy Student).
    #[serde(default)]
    pub reinit_from: ReinitFrom,
    /// Rounds mode: predict at most this many pool images per round (a seeded sample, new each
    /// round); labels chosen in earlier rounds outside the sample are kept. 0 = the whole pool.
    #[serde(default)]
    pub round_pool: usize,
    /// Epochs of labelled (+ pseudo-labelled) training repeat their set, reshuffled, until they
    /// hold at least this many images, so that a few hundred labels do not make every epoch
    /// mostly validation. 0 = one pass. Applies with self-training off as well.
    #[serde(default)]
    pub min_epoch_images: usize,
    /// FixMatch mode: unlabelled images per step, as a multiple μ of `train.batch_size`.
    #[serde(default = "default_mu")]
    pub mu: usize,
    /// FixMatch mode: weight λ_u of the unlabelled loss.
    #[serde(default = "one")]
    pub unlabelled_weight: f64,
    /// FixMatch mode: steps per epoch (0 = one pass over the unlabelled pool).
    #[serde(default)]
    pub steps_per_epoch: usize,
    /// Keep an exponential moving average of the weights (updated every step) and use it to
    /// pseudo-label and to validate.
    #[serde(default)]
    pub ema: bool,
    /// Decay of the weight average.
    #[serde(default = "default_ema_decay")]
    pub ema_decay: f64,
    /// With `ema = true`: whether the average also pseudo-labels (a mean teacher). `false`
    /// keeps the average for validation only and pseudo-labels with the model being trained,
    /// as FixMatch's reference code does: a slow teacher lags the student it labels for.
    #[serde(default = "yes")]
    pub ema_pseudo_label: bool,
    /// FixMatch mode: distribution alignment — scale the weak-view predictions by the labelled
    /// class distribution over the running mean of the predictions (latest 128 steps) and
    /// renormalise, before the threshold.
    #[serde(default)]
    pub distribution_alignment: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelfTrainingMode {
    /// Offline rounds: predict the pool, select, train on labelled + pseudo-labelled.
    #[default]
    Rounds,
    /// Online FixMatch-style consistency training.
    Fixmatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReinitFrom {
    /// The weights the run started from.
    #[default]
    Start,
    /// The seeded initialisation.
    Scratch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundTrigger {
    /// After the supervised epochs, then every `epochs_per_round` epochs.
    #[default]
    AfterEpochs,
    /// When validation accuracy has not improved for `patience` epochs.
    Plateau,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionPolicy {
    /// One confidence threshold for every class.
    #[default]
    Global,
    /// FlexMatch-style: each class's threshold scaled by its share of confident predictions.
    Adaptive,
    /// The `top_k` most confident per class above the threshold (class-balanced).
    TopK,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    /// Maximum redraws per second.
    #[serde(default = "default_fps")]
    pub fps: u32,
}

fn default_seed() -> u64 {
    42
}
fn default_device() -> String {
    "auto".into()
}
fn default_runs_dir() -> PathBuf {
    "runs".into()
}
fn default_channels() -> usize {
    3
}
fn default_image_size() -> usize {
    224
}
fn default_cache_mib() -> usize {
    1024
}
fn default_arch() -> String {
    "wick-cnn".into()
}
fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn one_u32() -> u32 {
    1
}
fn default_epochs() -> u32 {
    10
}
fn default_batch_size() -> usize {
    32
}
fn default_lr() -> f64 {
    0.01
}
fn default_momentum() -> f64 {
    0.9
}
fn default_weight_decay() -> f64 {
    5e-4
}
fn default_step_epochs() -> u32 {
    10
}
fn default_gamma() -> f64 {
    0.1
}
fn default_keep() -> usize {
    3
}
fn default_rounds() -> u32 {
    3
}
fn default_epochs_per_round() -> u32 {
    2
}
fn default_threshold() -> f32 {
    0.95
}
fn default_min_threshold() -> f32 {
    0.8
}
fn default_pseudo_weight() -> f64 {
    0.5
}
fn default_top_k() -> usize {
    500
}
fn default_patience() -> u32 {
    2
}
fn default_temperature() -> f32 {
    0.5
}
fn default_mu() -> usize {
    3
}
fn default_ema_decay() -> f64 {
    0.999
}
/// Event-driven redraws per second (keys are drawn at once): progress twice a second, as
/// htop or btop refresh; this keeps a 200x60 dashboard well under 2 KB/s over SSH
/// (docs/benchmarks-run.md).
pub fn default_fps() -> u32 {
    2
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            arch: default_arch(),
            pretrained: None,
            freeze: Freeze::None,
            backbone_lr_mult: 1.0,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty train table takes defaults")
    }
}

impl Default for SelfTrainingConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty self_training table takes defaults")
    }
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig { fps: default_fps() }
    }
}

pub const ARCHES: &[&str] = &[
    "wick-cnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "efficientnet-lite0",
];

impl Config {
    /// Reads, parses and validates a config file; relative paths in it are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new(""));
        config.resolve_paths(base);
        if config.name.is_none() {
            config.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(config)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of_offset(text, s.start)).unwrap_or(1);
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                message: e.message().trim().to_string(),
            }
        })?;
        config.validate(text, path)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.runs_dir);
        fix(&mut self.data.train);
        fix(&mut self.data.val);
        if let Some(p) = self.data.unlabelled.as_mut() {
            fix(p);
        }
        if let Some(p) = self.model.pretrained.as_mut() {
            fix(p);
        }
        if self
            .model
            .pretrained
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            self.model.pretrained = None;
        }
    }

    fn validate(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let bad = |section: &str, key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of_key(text, section, key),
            field: if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            },
            message,
        };
        if !(self.device == "auto" || self.device == "cpu" || parse_cuda(&self.device).is_some()) {
            return Err(bad(
                "",
                "device",
                format!(
                    "expected \"auto\", \"cpu\" or \"cuda:N\", got {:?}",
                    self.device
                ),
            ));
        }
        if self.device == "cpu" && self.train.precision != Precision::F32 {
            return Err(bad(
                "train",
                "precision",
                format!(
                    "{:?} needs a CUDA device (device = \"cuda:N\" or \"auto\"): on the CPU, candle has no bf16 matrix multiply and wick's kernels are f32; use \"f32\"",
                    self.train.precision.name()
                ),
            ));
        }
        let d = &self.data;
        if d.channels != 1 && d.channels != 3 {
            return Err(bad(
                "data",
                "channels",
                format!("must be 1 or 3, got {}", d.channels),
            ));
        }
        if d.image_size < 8 || d.image_size > 1024 {
            return Err(bad(
                "data",
                "image_size",
                format!("must be between 8 and 1024, got {}", d.image_size),
            ));
        }
        for (key, v) in [("mean", &d.mean), ("std", &d.std)] {
            if let Some(v) = v {
                if v.len() != d.channels {
                    return Err(bad(
                        "data",
                        key,
                        format!(
                            "needs one value per channel ({}), got {}",
                            d.channels,
                            v.len()
                        ),
                    ));
                }
            }
        }
        if d.std.as_ref().is_some_and(|s| s.iter().any(|&x| x <= 0.0)) {
            return Err(bad("data", "std", "values must be > 0".into()));
        }
        let m = &self.model;
        if !ARCHES.contains(&m.arch.as_str()) {
            return Err(bad(
                "model",
                "arch",
                format!(
                    "unknown architecture {:?}; expected one of {ARCHES:?}",
                    m.arch
                ),
            ));
        }
        if !at_least_zero(m.backbone_lr_mult) {
            return Err(bad(
                "model",
                "backbone_lr_mult",
                format!("must be >= 0, got {}", m.backbone_lr_mult),
            ));
        }
        let t = &self.train;
        if t.batch_size == 0 {
            return Err(bad("train", "batch_size", "must be at least 1".into()));
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(bad("train", "lr", format!("must be > 0, got {}", t.lr)));
        }
        if !(0.0..1.0).contains(&t.momentum) {
            return Err(bad(
                "train",
                "momentum",
                format!("must be in [0, 1), got {}", t.momentum),
            ));
        }
        if t.nesterov && t.momentum == 0.0 {
            return Err(bad(
                "train",
                "nesterov",
                "Nesterov needs momentum > 0".into(),
            ));
        }
        if !at_least_zero(t.weight_decay) {
            return Err(bad(
                "train",
                "weight_decay",
                format!("must be >= 0, got {}", t.weight_decay),
            ));
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return Err(bad(
                "train",
                "label_smoothing",
                format!("must be in [0, 1), got {}", t.label_smoothing),
            ));
        }
        if !at_least_zero(t.warmup_epochs) {
            return Err(bad(
                "train",
                "warmup_epochs",
                format!("must be >= 0, got {}", t.warmup_epochs),
            ));
        }
        if t.schedule == Schedule::Step && t.step_epochs == 0 {
            return Err(bad("train", "step_epochs", "must be at least 1".into()));
        }
        let s = &self.self_training;
        if !(s.threshold > 0.0 && s.threshold <= 1.0) {
            return Err(bad(
                "self_training",
                "threshold",
                format!("must be in (0, 1], got {}", s.threshold),
            ));
        }
        if !at_least_zero(s.pseudo_weight) {
            return Err(bad(
                "self_training",
                "pseudo_weight",
                format!("must be >= 0, got {}", s.pseudo_weight),
            ));
        }
        if !(s.max_growth > 0.0 && s.max_growth <= 1.0) {
            return Err(bad(
                "self_training",
                "max_growth",
                format!("must be in (0, 1], got {}", s.max_growth),
            ));
        }
        if !(s.min_threshold > 0.0 && s.min_threshold <= 1.0) {
            return Err(bad(
                "self_training",
                "min_threshold",
                format!("must be in (0, 1], got {}", s.min_threshold),
            ));
        }
        if !(s.temperature > 0.0 && s.temperature <= 1.0) {
            return Err(bad(
                "self_training",
                "temperature",
                format!("must be in (0, 1], got {}", s.temperature),
            ));
        }
        if !at_least_zero(s.unlabelled_weight) {
            return Err(bad(
                "self_training",
                "unlabelled_weight",
                format!("must be >= 0, got {}", s.unlabelled_weight),
            ));
        }
        if !(0.0..1.0).contains(&s.ema_decay) {
            return Err(bad(
                "self_training",
                "ema_decay",
                format!("must be in [0, 1), got {}", s.ema_decay),
            ));
        }
        if s.trigger == RoundTrigger::Plateau && s.patience == 0 {
            return Err(bad(
                "self_training",
                "patience",
                "must be at least 1".into(),
            ));
        }
        if s.mode == SelfTrainingMode::Fixmatch {
            let rounds_only = [
                (
                    "policy",
                    s.policy == SelectionPolicy::TopK,
                    "policy = \"top_k\"",
                ),
                (
                    "trigger",
                    s.trigger != RoundTrigger::AfterEpochs,
                    "trigger = \"plateau\"",
                ),
                ("reinit", s.reinit, "reinit = true"),
                ("round_pool", s.round_pool > 0, "round_pool"),
                ("predict_flip", s.predict_flip, "predict_flip = true"),
            ];
            for (key, set, what) in rounds_only {
                if set {
                    return Err(bad(
                        "self_training",
                        key,
                        format!("{what} is for mode = \"rounds\"; mode = \"fixmatch\" selects every step"),
                    ));
                }
            }
        }
        if s.reinit_from == ReinitFrom::Scratch && !s.reinit {
            return Err(bad(
                "self_training",
                "reinit_from",
                "reinit_from = \"scratch\" says what a round re-initialises to: it needs reinit = true".into(),
            ));
        }
        if s.enabled && d.labels_per_class == 0 && d.unlabelled.is_none() {
            return Err(bad(
                "self_training",
                "enabled",
                "self-training needs an unlabelled pool: set data.labels_per_class or data.unlabelled"
                    .into(),
            ));
        }
        if let Err(message) = self.keys.validate() {
            // The message starts with the offending field (`keys.<action>`).
            let field = message
                .split(':')
                .next()
                .and_then(|f| f.strip_prefix("keys."))
                .unwrap_or("")
                .to_string();
            let message = message
                .split_once(": ")
                .map(|(_, m)| m.to_string())
                .unwrap_or(message);
            return Err(bad("keys", &field, message));
        }
        if self.ui.fps == 0 || self.ui.fps > 60 {
            return Err(bad(
                "ui",
                "fps",
                format!("must be between 1 and 60, got {}", self.ui.fps),
            ));
        }
        Ok(())
    }

    /// Normalisation mean/std: the config's, else what the architecture's pretrained weights
    /// expect (see [`default_normalisation`]).
    pub fn normalisation(&self) -> (Vec<f32>, Vec<f32>) {
        let default = default_normalisation(&self.model.arch, self.data.channels);
        (
            self.data.mean.clone().unwrap_or(default.0),
            self.data.std.clone().unwrap_or(default.1),
        )
    }

    /// The resolved config as TOML, as written to `runs/<id>/config.toml`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

/// Input normalisation an architecture's pretrained weights expect: EfficientNet-Lite
/// (x − 127) / 128, ImageNet statistics for other 3-channel models, 0.5 / 0.5 for greyscale.
pub fn default_normalisation(arch: &str, channels: usize) -> (Vec<f32>, Vec<f32>) {
    if arch.starts_with("efficientnet") {
        (vec![127.0 / 255.0; channels], vec![128.0 / 255.0; channels])
    } else if channels == 3 {
        (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
    } else {
        (vec![0.5], vec![0.5])
    }
}

/// False for negative numbers and NaN.
fn at_least_zero(x: f64) -> bool {
    x >= 0.0
}

/// `Some(n)` for "cuda:n".
pub fn parse_cuda(device: &str) -> Option<usize> {
    device.strip_prefix("cuda:")?.parse().ok()
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Best-effort line of `key = ...` inside `[section]` (or the top level when `section` is empty).
fn line_of_key(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
            continue;
        }
        if current == section {
            if let Some((k, _)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(i + 1);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    const MINIMAL: &str = "[data]\ntrain = \"a\"\nval = \"b\"\n";

    #[test]
    fn bundled_default_parses() {
        let c = parse(DEFAULT_CONFIG).expect("config.toml parses");
        assert!(c.self_training.enabled);
        assert!(c.model.pretrained.is_some());
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.train.batch_size, 32);
        assert_eq!(c.model.arch, "wick-cnn");
        assert_eq!(c.normalisation().0.len(), 3);
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let err = parse(&format!("{MINIMAL}[train]\nlrr = 0.1\n")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml:5:"), "{msg}");
        assert!(msg.contains("lrr"), "{msg}");
    }

    #[test]
    fn invalid_value_names_field_and_line() {
        let err = parse(&format!("{MINIMAL}[train]\nepochs = 2\nlr = -1.0\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.toml:6: field `train.lr`: must be > 0, got -1"
        );
    }

    #[test]
    fn wrong_type_is_a_parse_error_with_line() {
        let err = parse(&format!("{MINIMAL}[train]\nbatch_size = \"big\"\n")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml:5:"), "{msg}");
    }

    #[test]
    fn key_clash_names_the_field_and_line() {
        let err = parse(&format!("{MINIMAL}[keys]\nsort = \"r\"\n")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml:5: field `keys.sort`"), "{msg}");
    }

    #[test]
    fn precision_defaults_to_f32_and_bf16_is_refused_on_the_cpu() {
        assert_eq!(parse(MINIMAL).unwrap().train.precision, Precision::F32);
        let gpu = parse(&format!(
            "device = \"cuda:0\"\n{MINIMAL}[train]\nprecision = \"bf16\"\n"
        ))
        .unwrap();
        assert_eq!(gpu.train.precision, Precision::Bf16);
        assert_eq!(
            gpu.train.precision.compute_dtype(),
            Some(candle_core::DType::BF16)
        );
        assert_eq!(parse(&gpu.to_toml()).unwrap(), gpu, "round trip");
        // `auto` may find a GPU: accepted here, decided when the device opens.
        parse(&format!(
            "device = \"auto\"\n{MINIMAL}[train]\nprecision = \"bf16\"\n"
        ))
        .unwrap();
        let err = parse(&format!(
            "device = \"cpu\"\n{MINIMAL}[train]\nprecision = \"bf16\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("test.toml:6: field `train.precision`: \"bf16\" needs a CUDA device"),
            "{err}"
        );
        let err = parse(&format!("{MINIMAL}[train]\nprecision = \"fp8\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("test.toml:5:"), "{err}");
    }

    #[test]
    fn self_training_needs_a_pool() {
        let err = parse(&format!("{MINIMAL}[self_training]\nenabled = true\n")).unwrap_err();
        assert!(err.to_string().contains("self_training.enabled"), "{err}");
    }

    #[test]
    fn reinit_from_scratch_needs_reinit() {
        let text = format!(
            "{MINIMAL}labels_per_class = 4\n[self_training]\nenabled = true\nreinit_from = \"scratch\"\n"
        );
        let err = parse(&text).unwrap_err();
        assert!(
            err.to_string().contains("self_training.reinit_from"),
            "{err}"
        );
        let ok = parse(&(text.clone() + "reinit = true\n")).expect("with reinit");
        assert_eq!(ok.self_training.reinit_from, ReinitFrom::Scratch);
    }

    #[test]
    fn rounds_only_options_are_refused_online_naming_the_field() {
        let base = format!(
            "{MINIMAL}labels_per_class = 4\n[self_training]\nenabled = true\nmode = \"fixmatch\"\n"
        );
        parse(&base).expect("fixmatch alone");
        for (line, field) in [
            ("policy = \"top_k\"", "policy"),
            ("trigger = \"plateau\"", "trigger"),
            ("reinit = true", "reinit"),
            ("round_pool = 100", "round_pool"),
            ("predict_flip = true", "predict_flip"),
        ] {
            let err = parse(&format!("{base}{line}\n")).unwrap_err().to_string();
            assert!(
                err.contains(&format!("field `self_training.{field}`"))
                    && err.contains("is for mode = \"rounds\""),
                "{line}: {err}"
            );
            let rounds = base.replace("\"fixmatch\"", "\"rounds\"");
            parse(&format!("{rounds}{line}\n")).expect(line);
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.data.train, dir.path().join("a"));
        assert_eq!(c.name.as_deref(), Some("c"));
    }

    #[test]
    fn resolved_config_round_trips() {
        let c = parse(DEFAULT_CONFIG).unwrap();
        let again = parse(&c.to_toml()).unwrap();
        assert_eq!(c, again);
    }

    /// The committed benchmark configs stay valid as the schema moves (their data folders are
    /// only checked when a run starts).
    #[test]
    fn every_committed_config_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut files = Vec::new();
        for dir in [root.clone(), root.join("bench")] {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "toml") {
                    files.push(p);
                }
            }
        }
        assert!(files.len() >= 10, "{files:?}");
        for f in files {
            Config::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
    }
}
