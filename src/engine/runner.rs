//! The engine's run loop: supervised epochs, pseudo-label rounds, validation, checkpoints,
//! and the commands drained between batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use tokio::sync::mpsc::UnboundedReceiver;

use super::checkpoint::{self, EpochPlan, PseudoLabel, TrainState};
use super::dataset::RunData;
use super::metrics::{argmax, Evaluation};
use super::self_training;
use super::{loss, optim, rounds, schedule, EngineError, Resume};
use crate::config::{Config, Freeze};
use crate::data::{AugmentKind, Loader, Preprocess};
use crate::hub::EventHub;
use crate::model::{self, Classifier};
use crate::protocol::{Command, DataSizes, Event, Level, Phase, SampleNote, Summary};
use crate::rundir::RunDir;

mod ssl;

/// Coalesce batch events to about ten a second.
const BATCH_EVENT_INTERVAL_S: f64 = 0.1;
/// Misclassified validation images reported per epoch.
const MISTAKES_PER_EPOCH: usize = 24;
/// Adopted pseudo-labels reported per round.
const SAMPLES_PER_ROUND: usize = 24;

/// What the command queue asks of the loop after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

pub struct Runner {
    cfg: Config,
    run: RunDir,
    hub: Arc<EventHub>,
    commands: UnboundedReceiver<Command>,
    device: Device,
    device_name: String,
    data: RunData,
    train_loader: Loader,
    val_loader: Loader,
    varmap: VarMap,
    net: Box<dyn Classifier>,
    opt: Box<dyn optim::Optimizer>,
    state: TrainState,
    model_desc: String,
    resumed: bool,
    /// Said right after `RunStarted` on a resume (e.g. skipped torn checkpoints).
    resume_warnings: Vec<String>,
    stop_requested: bool,
    started: Instant,
    /// The latest validation pass, for the final summary.
    last_eval: Option<Evaluation>,
    /// Self-training's teacher, re-initialisation weights and lookups (see `ssl`).
    ssl: ssl::Runtime,
    /// The precision training runs in (`train.precision`, resolved against the device).
    precision: crate::config::Precision,
    /// Said right after `RunStarted` (e.g. bf16 asked for, no GPU found).
    device_warnings: Vec<String>,
    /// Samples the GPU for the dashboard header while the run is on CUDA.
    gpu_monitor: Option<super::device::GpuMonitor>,
}

/// The run's job in words, for the dashboard's header.
fn task_summary(cfg: &Config) -> String {
    let st = &cfg.self_training;
    let fresh_students = st.enabled
        && st.mode == crate::config::SelfTrainingMode::Rounds
        && st.reinit
        && st.reinit_from == crate::config::ReinitFrom::Scratch;
    let task = match (cfg.model.pretrained.is_some(), st.enabled) {
        // The pretrained model only labels the first round: nothing is fine-tuned.
        (true, true) if fresh_students => "self-training: pretrained teacher, fresh students",
        (true, true) => "fine-tune + self-training",
        (true, false) => "fine-tune",
        (false, true) => "from scratch + self-training",
        (false, false) => "train from scratch",
    };
    match cfg.model.freeze {
        Freeze::Backbone => format!("{task} (frozen backbone)"),
        Freeze::None => task.to_string(),
    }
}

impl Runner {
    /// Builds everything a run needs; `resume` continues from a checkpoint.
    pub fn new(
        cfg: Config,
        run: RunDir,
        hub: Arc<EventHub>,
        commands: UnboundedReceiver<Command>,
        resume: Option<Resume>,
    ) -> Result<Runner, EngineError> {
        let (device, mut device_name) = super::device::open(&cfg.device)?;
        let (precision, precision_warning) = super::device::resolve_precision(
            cfg.train.precision,
            &device,
            &cfg.device,
            &device_name,
        )?;
        if precision != crate::config::Precision::F32 {
            device_name = format!("{device_name} {}", precision.name());
        }
        let data = RunData::prepare(&cfg)?;
        let (mean, std) = cfg.normalisation();
        let preprocess = Preprocess {
            channels: cfg.data.channels,
            size: cfg.data.image_size,
            mean,
            std,
        };
        let train_loader = Loader::new(
            data.paths.clone(),
            preprocess.clone(),
            cfg.data.workers,
            cfg.data.cache_mib,
        );
        let val_loader = Loader::new(
            data.val_paths.clone(),
            preprocess,
            cfg.data.workers,
            cfg.data.cache_mib,
        );

        let varmap = VarMap::new();
        let vb = model::init::seeded_var_builder(&varmap, cfg.seed, DType::F32, &device);
        let net = model::build(&cfg.model.arch, cfg.data.channels, data.classes.len(), vb)?;
        let params: usize = varmap
            .all_vars()
            .iter()
            .map(|v| v.as_tensor().elem_count())
            .sum();
        let mut model_desc = format!("{} ({:.2}M params", cfg.model.arch, params as f64 / 1e6);
        if resume.is_none() {
            if let Some(path) = &cfg.model.pretrained {
                let report = model::load_weights(&varmap, path, net.head_prefix())?;
                let file = path
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                model_desc.push_str(&format!(", from {file})"));
                tracing::info!(path = %path.display(), loaded = report.loaded, "pretrained weights loaded");
                if let Some((old, new)) = &report.head_replaced {
                    let msg = format!(
                        "head `{}` re-created for {} classes (checkpoint had shape {old:?}, now {new:?})",
                        net.head_prefix(),
                        data.classes.len()
                    );
                    tracing::info!("{msg}");
                    hub.emit(Event::log(Level::Info, msg));
                }
            } else {
                model_desc.push_str(", from scratch)");
            }
        } else {
            model_desc.push_str(", resumed)");
        }

        let groups = optim::param_groups(
            &varmap,
            net.head_prefix(),
            &cfg.model,
            cfg.train.weight_decay,
        );
        let opt = optim::build(&cfg.train, groups);
        let (ssl, mut opt) = ssl::Runtime::new(&cfg, &varmap, &device, &data, opt)?;

        let mut state = TrainState {
            epoch: 0,
            batch_in_epoch: 0,
            global_step: 0,
            round: 0,
            auto_rounds: 0,
            epochs_in_round: 0,
            threshold: cfg.self_training.threshold,
            base_lr: cfg.train.lr,
            best_val_acc: 0.0,
            best_epoch: 0,
            supervised_val_acc: None,
            pseudo: Vec::new(),
            seed: cfg.seed,
            images_seen: 0,
            train_seconds: 0.0,
            epoch_loss_sum: 0.0,
            epoch_correct: 0,
            epoch_seen: 0,
            config_toml: cfg.to_toml(),
            epoch_plan: None,
            ssl: Default::default(),
        };
        let resumed = resume.is_some();
        let mut resume_warnings = Vec::new();
        if let Some(Resume {
            checkpoint: ckpt,
            warnings,
            ..
        }) = resume
        {
            restore_vars(&varmap, &ckpt.model)?;
            opt.load_state(&ckpt.optim)?;
            state = ckpt.state;
            resume_warnings = warnings;
        }
        Ok(Runner {
            cfg,
            run,
            hub,
            commands,
            device,
            device_name,
            data,
            train_loader,
            val_loader,
            varmap,
            net,
            opt,
            state,
            model_desc,
            resumed,
            resume_warnings,
            stop_requested: false,
            started: Instant::now(),
            last_eval: None,
            ssl,
            precision,
            device_warnings: precision_warning.into_iter().collect(),
            gpu_monitor: None,
        })
    }

    fn emit(&self, event: Event) {
        self.hub.emit(event);
    }

    fn self_training_rounds(&self) -> u32 {
        if self.cfg.self_training.enabled {
            self.cfg.self_training.rounds
        } else {
            0
        }
    }

    /// Runs to the end of the plan (or a `Stop`) and returns the summary; convolutions and
    /// matmuls compute in `train.precision` (see [`crate::model::autocast`]).
    pub fn run(self) -> Result<Summary, EngineError> {
        crate::model::autocast::with(self.precision.compute_dtype(), move || self.run_plan())
    }

    fn run_plan(mut self) -> Result<Summary, EngineError> {
        let task = task_summary(&self.cfg);
        self.emit(Event::RunStarted {
            run_id: self.run.id.clone(),
            task,
            model: self.model_desc.clone(),
            device: self.device_name.clone(),
            classes: self.data.classes.clone(),
            sizes: DataSizes {
                labelled: self.data.labelled.len(),
                unlabelled: if self.cfg.self_training.enabled {
                    self.data.pool.len()
                } else {
                    0
                },
                val: self.data.val_paths.len(),
            },
            epochs: self.cfg.train.epochs,
            rounds: self.self_training_rounds(),
            epochs_per_round: self.cfg.self_training.epochs_per_round,
            batch_size: self.cfg.train.batch_size,
            threshold: self.state.threshold,
            protocol: crate::protocol::PROTOCOL_VERSION,
            resumed: self.resumed,
        });
        for w in std::mem::take(&mut self.device_warnings) {
            tracing::warn!("{w}");
            self.emit(Event::log(Level::Warn, w));
        }
        self.gpu_monitor = super::device::GpuMonitor::start(
            &self.device,
            self.hub.clone(),
            std::time::Duration::from_secs(2),
        );
        if self.resumed {
            for w in std::mem::take(&mut self.resume_warnings) {
                tracing::warn!("{w}");
                self.emit(Event::log(Level::Warn, w));
            }
            self.emit(Event::log(
                Level::Info,
                format!(
                    "resumed after epoch {} step {} (round {})",
                    self.state.epoch, self.state.global_step, self.state.round
                ),
            ));
            if !self.device.is_cpu() {
                self.emit(Event::log(
                    Level::Warn,
                    "resumed on a GPU: its non-deterministic kernels mean the weights will not be bit-identical to an uninterrupted run",
                ));
            }
        }

        while !self.stop_requested {
            if self.auto_round_due() {
                self.pseudo_label_round(true)?;
                continue;
            }
            if self.plan_done() {
                break;
            }
            self.train_epoch()?;
        }
        self.save_checkpoint()?;
        let summary = self.summary()?;
        if let Some(m) = self.gpu_monitor.take() {
            m.stop(); // nothing after the terminal event
        }
        self.emit(Event::Finished {
            summary: summary.clone(),
        });
        Ok(summary)
    }

    fn phase_of(round: u32) -> Phase {
        if round == 0 {
            Phase::Supervised
        } else {
            Phase::SelfTraining { round }
        }
    }

    /// Learning rate at a fractional position of the current phase.
    fn lr_now(&self, batch: u32, batches: u32) -> f64 {
        if let Some(lr) = self.online_lr(batch, batches) {
            return lr;
        }
        let frac = batch as f64 / batches.max(1) as f64;
        let base = self.state.base_lr;
        if self.state.epoch < self.cfg.train.epochs && self.state.auto_rounds == 0 {
            schedule::lr_at(
                &self.cfg.train,
                base,
                self.state.epoch as f64 + frac,
                self.cfg.train.epochs as f64,
            )
        } else {
            // Each round restarts the schedule over its own epochs, without warm-up.
            let mut t = self.cfg.train.clone();
            t.warmup_epochs = 0.0;
            schedule::lr_at(
                &t,
                base,
                self.state.epochs_in_round as f64 + frac,
                self.cfg.self_training.epochs_per_round.max(1) as f64,
            )
        }
    }

    /// The training order for the epoch `epoch` (1-based): labelled + pseudo-labelled images,
    /// shuffled by a generator derived from the seed and the epoch, so resume is exact.
    fn epoch_order(
        &self,
        epoch: u32,
        pseudo: &[PseudoLabel],
    ) -> (Vec<usize>, HashMap<usize, (u32, f32)>) {
        let mut targets: HashMap<usize, (u32, f32)> = HashMap::new();
        for &i in &self.data.labelled {
            if let Some(l) = self.data.labels[i] {
                targets.insert(i, (l as u32, 1.0));
            }
        }
        if self.online_epoch() {
            return (self.online_order(epoch), targets);
        }
        let w = self.pseudo_weight_now() as f32;
        for p in pseudo {
            targets.entry(p.index).or_insert((p.label, w));
        }
        let mut order: Vec<usize> = targets.keys().copied().collect();
        order.sort_unstable();
        let min_images = self.cfg.self_training.min_epoch_images;
        let order = rounds::epoch_permutation(order, self.state.seed, epoch, min_images);
        (order, targets)
    }

    fn train_epoch(&mut self) -> Result<(), EngineError> {
        let epoch = self.state.epoch + 1;
        // Resumed in the middle of an epoch that a round interrupted: finish it as it began.
        let (round, pseudo) = match &self.state.epoch_plan {
            Some(plan) => (plan.round, plan.pseudo.clone()),
            None => (self.state.round, self.state.pseudo.clone()),
        };
        let phase = Self::phase_of(round);
        let (order, targets) = self.epoch_order(epoch, &pseudo);
        drop(pseudo);
        let bs = self.cfg.train.batch_size;
        let batches = order.len().div_ceil(bs) as u32;
        self.emit(Event::EpochStarted {
            epoch,
            phase,
            batches,
            images: order.len(),
        });
        let skip = self.state.batch_in_epoch as usize * bs;
        let mut online = if self.online_epoch() {
            self.online_streams(epoch, self.state.batch_in_epoch as usize)
        } else {
            None
        };
        let soft = self.soft_map();
        let aug = AugmentKind::Train(self.cfg.data.augment);
        let freeze = self.cfg.model.freeze == Freeze::Backbone;
        let smoothing = self.cfg.train.label_smoothing;
        let (c, h, w) = self.train_loader.image_shape();

        let mut window_loss = 0.0f64;
        let mut window_batches = 0u32;
        let mut window_images = 0usize;
        let mut window_start = Instant::now();
        let mut skipped_files = 0usize;
        let epoch_start = Instant::now();
        let mut lr = self.lr_now(self.state.batch_in_epoch, batches);
        for batch in
            self.train_loader
                .batches_from(order, skip, bs, aug, self.state.seed, epoch as u64)
        {
            for (idx, err) in &batch.skipped {
                skipped_files += 1;
                let path = self.data.paths[*idx].display().to_string();
                tracing::warn!(%path, "skipped unreadable image: {err}");
                self.emit(Event::log(
                    Level::Warn,
                    format!("skipped unreadable image {path}: {err}"),
                ));
            }
            if batch.indices.is_empty() {
                self.state.batch_in_epoch += 1;
                continue;
            }
            let t0 = Instant::now();
            let n = batch.indices.len();
            let x = Tensor::from_vec(batch.pixels, (n, c, h, w), &self.device)?;
            let (ys, ws): (Vec<u32>, Vec<f32>) = batch.indices.iter().map(|i| targets[i]).unzip();
            let y = Tensor::from_vec(ys.clone(), n, &self.device)?;
            let weights = if ws.iter().all(|&v| v == 1.0) {
                None
            } else {
                Some(Tensor::from_vec(ws, n, &self.device)?)
            };
            lr = self.lr_now(self.state.batch_in_epoch, batches);
            let (logits, loss) = if self.online_epoch() {
                self.online_step(&mut online, &x, &y, freeze, smoothing)?
            } else {
                let logits = self.net.forward_t(&x, true, freeze)?;
                let loss = match self.soft_batch_targets(&soft, &batch.indices, &ys, smoothing)? {
                    Some(q) => loss::soft_cross_entropy(&logits, &q, weights.as_ref())?,
                    None => loss::cross_entropy(&logits, &y, weights.as_ref(), smoothing)?,
                };
                (logits, loss)
            };
            let grads = loss.backward()?;
            self.opt.step(&grads, lr)?;
            let loss_value = loss.to_scalar::<f32>()? as f64;
            let preds: Vec<u32> = logits.argmax(1)?.to_vec1()?;
            let correct = preds.iter().zip(&ys).filter(|(p, y)| p == y).count();
            if !loss_value.is_finite() {
                return Err(EngineError::Diverged {
                    epoch,
                    step: self.state.batch_in_epoch + 1,
                });
            }

            self.state.batch_in_epoch += 1;
            self.state.global_step += 1;
            // Online steps also process unlabelled views (weak + kept strong).
            let processed = n + std::mem::take(&mut self.ssl.step_images);
            self.state.images_seen += processed as u64;
            self.state.train_seconds += t0.elapsed().as_secs_f64();
            self.state.epoch_loss_sum += loss_value * n as f64;
            self.state.epoch_correct += correct as u64;
            self.state.epoch_seen += n as u64;
            window_loss += loss_value;
            window_batches += 1;
            window_images += processed;
            let elapsed = window_start.elapsed().as_secs_f64();
            if elapsed >= BATCH_EVENT_INTERVAL_S || self.state.batch_in_epoch == batches {
                self.emit(Event::Batch {
                    epoch,
                    step: self.state.batch_in_epoch,
                    of: batches,
                    loss: (window_loss / window_batches as f64) as f32,
                    lr,
                    images_per_s: (window_images as f64 / elapsed.max(1e-9)) as f32,
                });
                window_loss = 0.0;
                window_batches = 0;
                window_images = 0;
                window_start = Instant::now();
            }
            if self.drain_commands()? == Flow::Stop {
                return Ok(());
            }
        }
        let train_seconds = epoch_start.elapsed().as_secs_f64();
        if skipped_files > 0 {
            self.emit(Event::log(
                Level::Warn,
                format!("epoch {epoch}: {skipped_files} unreadable images skipped"),
            ));
        }

        let val_start = Instant::now();
        let eval = self.evaluate()?;
        let val_seconds = val_start.elapsed().as_secs_f64();
        let val_acc = eval.accuracy();
        let seen = self.state.epoch_seen.max(1) as f64;
        let train_loss = (self.state.epoch_loss_sum / seen) as f32;
        let train_acc = self.state.epoch_correct as f64 / seen;
        self.state.epoch = epoch;
        self.state.batch_in_epoch = 0;
        self.state.epoch_plan = None;
        self.state.epoch_loss_sum = 0.0;
        self.state.epoch_correct = 0;
        self.state.epoch_seen = 0;
        if self.state.round > 0 {
            self.state.epochs_in_round += 1;
        }
        if self.state.round == 0 {
            self.state.supervised_val_acc = Some(val_acc);
        }
        let improved = improves(self.state.best_epoch, self.state.best_val_acc, val_acc);
        if improved {
            self.state.best_val_acc = val_acc;
            self.state.best_epoch = epoch;
        }
        self.emit(Event::EpochFinished {
            epoch,
            phase,
            train_loss,
            train_acc,
            val_loss: eval.mean_loss() as f32,
            val_acc,
            per_class: eval.per_class(&self.data.classes),
            confusion: eval.confusion.clone(),
            train_seconds,
            val_seconds,
            mistakes: eval.mistakes.clone(),
        });
        self.last_eval = Some(eval);
        tracing::info!(epoch, train_loss, val_acc, lr, "epoch finished");
        self.after_epoch(epoch, val_acc)?;
        let every = self.cfg.train.checkpoint_every;
        if every > 0 && epoch.is_multiple_of(every) {
            self.save_checkpoint()?;
        }
        if improved {
            self.save_best()?;
        }
        Ok(())
    }

    /// Loss, confusion and mistakes on the validation set, in eval mode.
    fn evaluate(&mut self) -> Result<Evaluation, EngineError> {
        let mut eval = Evaluation::new(self.data.classes.len(), MISTAKES_PER_EPOCH);
        let order: Vec<usize> = (0..self.data.val_paths.len()).collect();
        let (c, h, w) = self.val_loader.image_shape();
        let bs = self.cfg.train.batch_size.max(64);
        for batch in self
            .val_loader
            .batches(order, bs, AugmentKind::Eval, self.state.seed, 0)
        {
            if batch.indices.is_empty() {
                continue;
            }
            let n = batch.indices.len();
            let x = Tensor::from_vec(batch.pixels, (n, c, h, w), &self.device)?;
            let logits = self.eval_net().forward_t(&x, false, false)?;
            let log_probs = candle_nn::ops::log_softmax(&logits, 1)?;
            let rows: Vec<Vec<f32>> = log_probs.to_vec2()?;
            for (row, &i) in rows.iter().zip(&batch.indices) {
                let truth = self.data.val_labels[i];
                let (pred, best) = argmax(row);
                let path = self.data.val_paths[i].display().to_string();
                eval.add(truth, pred, best.exp(), -row[truth] as f64, &path);
            }
        }
        Ok(eval)
    }

    /// One pseudo-label round: predict the pool, select, write the CSV, report.
    fn pseudo_label_round(&mut self, automatic: bool) -> Result<(), EngineError> {
        if self.data.pool.is_empty() {
            self.emit(Event::log(
                Level::Warn,
                "pseudo-label round asked for, but there is no unlabelled pool (set data.labels_per_class or data.unlabelled)",
            ));
            if automatic {
                self.state.auto_rounds += 1;
            }
            return Ok(());
        }
        if self.online_mode() {
            return self.start_online_round(automatic);
        }
        let round = self.state.round + 1;
        let threshold = self.state.threshold;
        let st = &self.cfg.self_training;
        let sample = rounds::round_sample(&self.data.pool, st.round_pool, self.state.seed, round);
        self.emit(Event::RoundStarted {
            round,
            pool: sample.len(),
            threshold,
            online: false,
        });
        let (preds, rows) = self.predict_rows(&sample)?;
        if self.stop_requested {
            return Ok(());
        }
        let classes = self.data.classes.len();
        let inside: std::collections::HashSet<usize> = sample.iter().copied().collect();
        let previous_inside = self
            .state
            .pseudo
            .iter()
            .filter(|l| inside.contains(&l.index))
            .count();
        let selection = self_training::select(
            &preds,
            classes,
            &self.cfg.self_training,
            threshold,
            previous_inside,
        );
        let labels = rounds::merge_round(&self.state.pseudo, &sample, selection.labels);
        let added = self_training::newly_added(&self.state.pseudo, &labels);
        let csv = self.write_round_csv(round, &labels)?;
        let (per_class, per_class_precision, precision) =
            self_training::quality(&labels, classes, &self.data.hidden_truth);
        let samples = self.round_samples(&labels);
        if self.state.batch_in_epoch > 0 && self.state.epoch_plan.is_none() {
            // The epoch in progress keeps its order and targets: remember them for a resume.
            self.state.epoch_plan = Some(EpochPlan {
                round: self.state.round,
                pseudo: self.state.pseudo.clone(),
            });
        }
        self.state.ssl.soft = self.soft_rows_for(&labels, &rows);
        self.state.pseudo = labels;
        self.state.round = round;
        self.state.epochs_in_round = 0;
        if automatic {
            self.state.auto_rounds += 1;
        }
        self.after_round()?;
        tracing::info!(
            round,
            added,
            total = self.state.pseudo.len(),
            ?precision,
            "pseudo-label round"
        );
        self.emit(Event::RoundFinished {
            round,
            added,
            total: self.state.pseudo.len(),
            per_class,
            per_class_precision,
            precision,
            threshold,
            confidence_hist: self_training::confidence_histogram(&preds, 10),
            csv: csv.display().to_string(),
            samples,
            thresholds: selection.thresholds,
            online: false,
        });
        Ok(())
    }

    /// A spread of adopted labels for the dashboard: the most confident few of each class.
    fn round_samples(&self, labels: &[PseudoLabel]) -> Vec<SampleNote> {
        let classes = self.data.classes.len().max(1);
        let per_class = (SAMPLES_PER_ROUND / classes).max(1);
        let mut taken = vec![0usize; classes];
        let mut sorted: Vec<&PseudoLabel> = labels.iter().collect();
        sorted.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        sorted
            .into_iter()
            .filter(|l| {
                let t = &mut taken[l.label as usize];
                *t += 1;
                *t <= per_class
            })
            .map(|l| SampleNote {
                path: self.data.paths[l.index].display().to_string(),
                label: l.label as usize,
                confidence: l.confidence,
                truth: self.data.hidden_truth[l.index],
            })
            .collect()
    }

    fn write_round_csv(
        &self,
        round: u32,
        labels: &[PseudoLabel],
    ) -> Result<std::path::PathBuf, EngineError> {
        let mut text = String::from("path,label,class,confidence\n");
        for l in labels {
            let path = self.data.paths[l.index].display().to_string();
            let class = &self.data.classes[l.label as usize];
            text.push_str(&format!(
                "{},{},{},{:.6}\n",
                csv_field(&path),
                l.label,
                csv_field(class),
                l.confidence
            ));
        }
        let path = self
            .run
            .pseudo_labels()
            .join(format!("round-{round:02}.csv"));
        checkpoint::write_atomic(&path, text.as_bytes())?;
        Ok(path)
    }

    /// Handles every queued command; blocks (idle) while paused.
    fn drain_commands(&mut self) -> Result<Flow, EngineError> {
        self.drain(true)
    }

    /// During a round's prediction pass, rounds cannot nest: a round request is deferred.
    fn drain_commands_during_round(&mut self) -> Result<Flow, EngineError> {
        self.drain(false)
    }

    fn drain(&mut self, rounds_allowed: bool) -> Result<Flow, EngineError> {
        let mut round_requested = false;
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Pause => {
                    if self.pause_until_resumed(rounds_allowed)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                }
                Command::Resume => {}
                Command::Stop => {
                    self.stop_requested = true;
                    self.emit(Event::log(
                        Level::Info,
                        "stop requested: saving a checkpoint",
                    ));
                    return Ok(Flow::Stop);
                }
                Command::SaveCheckpoint => self.save_checkpoint()?,
                Command::PseudoLabelRound => round_requested = true,
                Command::SetThreshold { value } => self.set_threshold(value),
                Command::SetLearningRate { value } => self.set_lr(value),
            }
        }
        if round_requested {
            if rounds_allowed {
                self.pseudo_label_round(false)?;
                if self.stop_requested {
                    return Ok(Flow::Stop);
                }
            } else {
                self.emit(Event::log(Level::Info, "a round is already running"));
            }
        }
        Ok(Flow::Continue)
    }

    /// Idles until `Resume` or `Stop`, handling other commands meanwhile. `rounds_allowed` is
    /// false when paused inside a round's prediction pass: rounds do not nest.
    fn pause_until_resumed(&mut self, rounds_allowed: bool) -> Result<Flow, EngineError> {
        self.emit(Event::Paused {
            epoch: self.state.epoch + 1,
            step: self.state.batch_in_epoch,
        });
        loop {
            // Blocks the engine thread without spinning.
            let Some(cmd) = self.commands.blocking_recv() else {
                self.emit(Event::log(
                    Level::Warn,
                    "every controller is gone: resuming",
                ));
                self.emit(Event::Resumed);
                return Ok(Flow::Continue);
            };
            match cmd {
                Command::Resume => {
                    self.emit(Event::Resumed);
                    return Ok(Flow::Continue);
                }
                Command::Pause => {}
                Command::Stop => {
                    self.stop_requested = true;
                    self.emit(Event::log(
                        Level::Info,
                        "stop requested: saving a checkpoint",
                    ));
                    return Ok(Flow::Stop);
                }
                Command::SaveCheckpoint => self.save_checkpoint()?,
                Command::PseudoLabelRound if !rounds_allowed => {
                    self.emit(Event::log(Level::Info, "a round is already running"));
                }
                Command::PseudoLabelRound => {
                    self.pseudo_label_round(false)?;
                    if self.stop_requested {
                        return Ok(Flow::Stop);
                    }
                }
                Command::SetThreshold { value } => self.set_threshold(value),
                Command::SetLearningRate { value } => self.set_lr(value),
            }
        }
    }

    fn set_threshold(&mut self, value: f32) {
        if value > 0.0 && value <= 1.0 {
            self.state.threshold = value;
            self.emit(Event::ThresholdChanged { value });
        } else {
            self.emit(Event::log(
                Level::Warn,
                format!("threshold {value} ignored: must be in (0, 1]"),
            ));
        }
    }

    fn set_lr(&mut self, value: f64) {
        if value > 0.0 && value.is_finite() {
            self.state.base_lr = value;
            self.emit(Event::LearningRateChanged { value });
        } else {
            self.emit(Event::log(
                Level::Warn,
                format!("learning rate {value} ignored: must be > 0"),
            ));
        }
    }

    fn model_tensors(&self) -> Vec<(String, Tensor)> {
        let data = match self.varmap.data().lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut v: Vec<(String, Tensor)> = data
            .iter()
            .map(|(k, var)| (k.clone(), var.as_tensor().clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn save_checkpoint(&mut self) -> Result<(), EngineError> {
        let path = self
            .run
            .checkpoints()
            .join(checkpoint::step_file_name(self.state.global_step));
        checkpoint::save(&path, &self.state, &self.model_tensors(), &self.opt.state())?;
        checkpoint::prune(&self.run.checkpoints(), self.cfg.train.keep_checkpoints)?;
        self.emit(Event::CheckpointSaved {
            path: path.display().to_string(),
            epoch: self.state.epoch,
            step: self.state.global_step,
        });
        Ok(())
    }

    fn save_best(&mut self) -> Result<(), EngineError> {
        let path = self.run.checkpoints().join(checkpoint::BEST_FILE);
        checkpoint::save(&path, &self.state, &self.model_tensors(), &self.opt.state())?;
        Ok(())
    }

    fn summary(&mut self) -> Result<Summary, EngineError> {
        let eval = match self.last_eval.take() {
            Some(e) => e,
            None => self.evaluate()?,
        };
        let (_, _, precision) = self_training::quality(
            &self.state.pseudo,
            self.data.classes.len(),
            &self.data.hidden_truth,
        );
        Ok(Summary {
            epochs: self.state.epoch,
            final_val_acc: eval.accuracy(),
            final_val_loss: eval.mean_loss(),
            best_val_acc: self.state.best_val_acc,
            best_epoch: self.state.best_epoch,
            supervised_val_acc: self.state.supervised_val_acc,
            rounds: self.state.round,
            pseudo_labelled: self.state.pseudo.len(),
            pseudo_precision: precision,
            per_class: eval.per_class(&self.data.classes),
            wall_seconds: self.started.elapsed().as_secs_f64(),
            images_per_s: self.state.images_seen as f64 / self.state.train_seconds.max(1e-9),
            stopped: self.stop_requested,
        })
    }
}

fn restore_vars(varmap: &VarMap, tensors: &HashMap<String, Tensor>) -> Result<(), EngineError> {
    let data = match varmap.data().lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    for (name, var) in data.iter() {
        let t = tensors
            .get(name)
            .ok_or_else(|| EngineError::Resume(format!("checkpoint lacks tensor `{name}`")))?;
        set_var(var, t, name)?;
    }
    Ok(())
}

fn set_var(var: &Var, t: &Tensor, name: &str) -> Result<(), EngineError> {
    if var.shape() != t.shape() {
        return Err(EngineError::Resume(format!(
            "tensor `{name}`: checkpoint shape {:?}, model shape {:?}",
            t.dims(),
            var.dims()
        )));
    }
    var.set(&t.to_device(var.device())?)?;
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Whether an epoch's validation accuracy makes it the best so far. The first validated epoch
/// always does (`best_epoch` 0 means none yet), even at 0% accuracy, so that a summary never
/// names "epoch 0".
fn improves(best_epoch: u32, best_val_acc: f64, val_acc: f64) -> bool {
    best_epoch == 0 || val_acc > best_val_acc
}

#[cfg(test)]
mod best_epoch_tests {
    use super::improves;

    #[test]
    fn the_first_epoch_is_the_best_even_at_zero_and_ties_keep_the_earlier() {
        assert!(improves(0, 0.0, 0.0));
        assert!(!improves(1, 0.0, 0.0));
        assert!(improves(1, 0.5, 0.6));
        assert!(!improves(3, 0.6, 0.6));
    }
}

#[cfg(test)]
mod task_summary_tests {
    use super::task_summary;
    use crate::config::Config;
    use std::path::Path;

    fn summary(extra: &str) -> String {
        let text = format!(
            "[data]\ntrain = \"a\"\nval = \"b\"\nlabels_per_class = 4\n[model]\npretrained = \"t.safetensors\"\n{extra}"
        );
        task_summary(&Config::parse(&text, Path::new("c.toml")).expect("config"))
    }

    #[test]
    fn a_teacher_that_only_labels_is_not_called_a_fine_tune() {
        assert_eq!(summary(""), "fine-tune");
        let st = "[self_training]\nenabled = true\nreinit = true\n";
        assert_eq!(summary(st), "fine-tune + self-training");
        assert_eq!(
            summary(&format!("{st}reinit_from = \"scratch\"\n")),
            "self-training: pretrained teacher, fresh students"
        );
    }
}
