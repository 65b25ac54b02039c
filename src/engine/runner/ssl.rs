//! The runner's self-training glue: the EMA teacher, re-initialisation between rounds, round
//! triggers, soft targets, and the online (FixMatch-style) step and its per-epoch report. The
//! decisions themselves are pure functions in [`crate::engine::rounds`],
//! [`crate::engine::fixmatch`] and [`crate::engine::self_training`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use super::{set_var, Runner};
use crate::config::{Config, ReinitFrom, SelectionPolicy, SelfTrainingMode};
use crate::data::{AugmentKind, BatchIter};
use crate::engine::checkpoint::PseudoLabel;
use crate::engine::dataset::RunData;
use crate::engine::ema::{Ema, WithEma};
use crate::engine::fixmatch::{self, Targets};
use crate::engine::self_training::{self, PoolPrediction};
use crate::engine::{optim, rounds, schedule, EngineError};
use crate::model::{self, Classifier};
use crate::protocol::{Event, Level};

/// Bins of the reported confidence histograms.
const HIST_BINS: usize = 10;

/// What self-training keeps besides [`rounds::SslState`] (which is checkpointed): rebuilt at
/// every start.
pub(super) struct Runtime {
    /// The EMA of the weights, when `ema = true`: it validates, and pseudo-labels unless
    /// `ema_pseudo_label = false`.
    teacher: Option<(VarMap, Box<dyn Classifier>)>,
    /// The weights a round re-initialises to (`reinit = true`).
    initial: Option<HashMap<String, Tensor>>,
    /// Dataset index → position in the pool.
    pool_pos: HashMap<usize, usize>,
    /// The online mode's class thresholds at the latest step.
    last_thresholds: Vec<f32>,
    /// Unlabelled views the latest online step processed (weak + kept strong), for throughput.
    pub(super) step_images: usize,
    /// Distribution alignment of the online mode's weak-view predictions, when on (its running
    /// mean restarts with the process).
    align: Option<fixmatch::DistAlign>,
}

/// A fresh model of the run's architecture: the seeded initialisation, then the weights of
/// `pretrained` if given (the run's `model.pretrained` for the model the run starts as).
fn fresh_model(
    cfg: &Config,
    pretrained: Option<&Path>,
    device: &Device,
    classes: usize,
) -> Result<(VarMap, Box<dyn Classifier>), EngineError> {
    let vm = VarMap::new();
    let vb = model::init::seeded_var_builder(&vm, cfg.seed, DType::F32, device);
    let net = model::build(&cfg.model.arch, cfg.data.channels, classes, vb)?;
    if let Some(path) = pretrained {
        model::load_weights(&vm, path, net.head_prefix())?;
    }
    Ok((vm, net))
}

fn snapshot(vm: &VarMap) -> Result<HashMap<String, Tensor>, EngineError> {
    let data = match vm.data().lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let mut out = HashMap::new();
    for (k, v) in data.iter() {
        out.insert(k.clone(), v.as_tensor().copy()?);
    }
    Ok(out)
}

/// A pool prediction: the verdict per image, and probability rows by index (soft labels).
pub(super) type PoolRows = (Vec<PoolPrediction>, HashMap<usize, Vec<f32>>);
impl Runtime {
    /// Builds the teacher and the re-initialisation weights the config asks for, and wraps the
    /// optimizer so that it updates the teacher after every step.
    pub(super) fn new(
        cfg: &Config,
        varmap: &VarMap,
        device: &Device,
        data: &RunData,
        opt: Box<dyn optim::Optimizer>,
    ) -> Result<(Runtime, Box<dyn optim::Optimizer>), EngineError> {
        let st = &cfg.self_training;
        let classes = data.classes.len();
        let on = st.enabled;
        let initial = if on && st.reinit && st.mode == SelfTrainingMode::Rounds {
            let (vm, _) = match st.reinit_from {
                ReinitFrom::Start => {
                    fresh_model(cfg, cfg.model.pretrained.as_deref(), device, classes)?
                }
                ReinitFrom::Scratch => fresh_model(cfg, None, device, classes)?,
            };
            Some(snapshot(&vm)?)
        } else {
            None
        };
        let mut rt = Runtime {
            teacher: None,
            initial,
            pool_pos: data.pool.iter().enumerate().map(|(p, &i)| (i, p)).collect(),
            last_thresholds: Vec::new(),
            step_images: 0,
            align: None,
        };
        if on && st.mode == SelfTrainingMode::Fixmatch && st.distribution_alignment {
            let mut target = vec![0f32; classes];
            for &i in &data.labelled {
                if let Some(Some(l)) = data.labels.get(i) {
                    target[*l] += 1.0 / data.labelled.len() as f32;
                }
            }
            if target.iter().sum::<f32>() <= 0.0 {
                target = vec![1.0 / classes.max(1) as f32; classes];
            }
            rt.align = Some(fixmatch::DistAlign::new(target, 128));
        }
        let opt = if on && st.ema {
            let (vm, net) = fresh_model(cfg, cfg.model.pretrained.as_deref(), device, classes)?;
            let ema = Ema::new(varmap, &vm, st.ema_decay)?;
            rt.teacher = Some((vm, net));
            Box::new(WithEma::new(opt, ema)) as Box<dyn optim::Optimizer>
        } else {
            opt
        };
        Ok((rt, opt))
    }
}

/// Unlabelled views of one online epoch.
pub(super) struct OnlineStreams {
    weak: BatchIter,
    strong: BatchIter,
    /// Images per step.
    per_step: usize,
}

impl Runner {
    /// Self-training in the online FixMatch-style mode.
    pub(super) fn online_mode(&self) -> bool {
        self.cfg.self_training.enabled && self.cfg.self_training.mode == SelfTrainingMode::Fixmatch
    }

    /// Whether the epoch about to run is an online one (after the first online round began).
    pub(super) fn online_epoch(&self) -> bool {
        self.online_mode() && self.state.round > 0
    }

    /// The model that validates: the EMA average if there is one.
    pub(super) fn eval_net(&self) -> &dyn Classifier {
        match &self.ssl.teacher {
            Some((_, t)) => t.as_ref(),
            None => self.net.as_ref(),
        }
    }

    /// The EMA average when it also pseudo-labels (`ema_pseudo_label`), else `None`: the model
    /// being trained labels.
    fn labelling_teacher(&self) -> Option<&dyn Classifier> {
        match &self.ssl.teacher {
            Some((_, t)) if self.cfg.self_training.ema_pseudo_label => Some(t.as_ref()),
            _ => None,
        }
    }

    fn progress(&self) -> rounds::Progress {
        rounds::Progress {
            epoch: self.state.epoch,
            batch_in_epoch: self.state.batch_in_epoch,
            round: self.state.round,
            auto_rounds: self.state.auto_rounds,
            phase_start_epoch: self.state.ssl.phase_start_epoch,
            phase_best_epoch: self.state.ssl.phase_best_epoch,
        }
    }

    pub(super) fn auto_round_due(&self) -> bool {
        rounds::auto_round_due(
            &self.cfg.self_training,
            self.cfg.train.epochs,
            self.self_training_rounds(),
            &self.progress(),
        )
    }

    pub(super) fn plan_done(&self) -> bool {
        rounds::plan_done(
            &self.cfg.self_training,
            self.cfg.train.epochs,
            self.self_training_rounds(),
            &self.progress(),
        )
    }

    /// A new phase (a round) begins now: the plateau trigger counts from here.
    fn start_phase(&mut self) {
        let s = &mut self.state.ssl;
        s.phase_start_epoch = self.state.epoch;
        s.phase_best_acc = -1.0;
        s.phase_best_epoch = self.state.epoch;
    }

    /// λ of the pseudo-labelled loss now.
    pub(super) fn pseudo_weight_now(&self) -> f64 {
        rounds::pseudo_weight(&self.cfg.self_training, self.state.round)
    }

    /// The online phase's learning rate: the schedule runs once over all online epochs (with the
    /// warm-up only when there were no supervised epochs before). `None` outside it.
    pub(super) fn online_lr(&self, batch: u32, batches: u32) -> Option<f64> {
        if !self.online_epoch() {
            return None;
        }
        let st = &self.cfg.self_training;
        let total = (self.self_training_rounds() * st.epochs_per_round).max(1);
        let start = self.cfg.train.epochs;
        let mut t = self.cfg.train.clone();
        if start > 0 {
            t.warmup_epochs = 0.0;
        }
        let frac = batch as f64 / batches.max(1) as f64;
        let at = self.state.epoch.saturating_sub(start) as f64 + frac;
        Some(schedule::lr_at(&t, self.state.base_lr, at, total as f64))
    }

    /// Called once an epoch is evaluated: plateau tracking, and the online mode's report.
    pub(super) fn after_epoch(&mut self, epoch: u32, val_acc: f64) -> Result<(), EngineError> {
        let s = &mut self.state.ssl;
        if val_acc > s.phase_best_acc {
            s.phase_best_acc = val_acc;
            s.phase_best_epoch = epoch;
        }
        if self.online_epoch() {
            self.report_online_epoch()?;
        }
        Ok(())
    }

    // ----- rounds -----------------------------------------------------------------------------

    /// Predicts `indices` of the training set in eval mode (with the labelling teacher if any;
    /// averaged with the mirror image's prediction under `predict_flip`): the verdict per image,
    /// and the probability rows when soft labels need them.
    pub(super) fn predict_rows(&mut self, indices: &[usize]) -> Result<PoolRows, EngineError> {
        let (c, h, w) = self.train_loader.image_shape();
        let bs = self.cfg.train.batch_size.max(64);
        let keep_rows = self.cfg.self_training.soft_labels;
        let mut preds = Vec::with_capacity(indices.len());
        let mut rows_out = HashMap::new();
        for batch in
            self.train_loader
                .batches(indices.to_vec(), bs, AugmentKind::Eval, self.state.seed, 0)
        {
            if batch.indices.is_empty() {
                continue;
            }
            let n = batch.indices.len();
            let x = Tensor::from_vec(batch.pixels, (n, c, h, w), &self.device)?;
            let net = self.labelling_teacher().unwrap_or(self.net.as_ref());
            let mut probs = candle_nn::ops::softmax(&net.forward_t(&x, false, false)?, 1)?;
            if self.cfg.self_training.predict_flip {
                let mirrored = net.forward_t(&x.flip(&[3])?, false, false)?;
                probs = ((probs + candle_nn::ops::softmax(&mirrored, 1)?)? * 0.5)?;
            }
            let rows: Vec<Vec<f32>> = probs.to_vec2()?;
            for (row, &index) in rows.into_iter().zip(&batch.indices) {
                let (label, confidence) = crate::engine::metrics::argmax(&row);
                preds.push(PoolPrediction {
                    index,
                    label: label as u32,
                    confidence,
                });
                if keep_rows {
                    rows_out.insert(index, row);
                }
            }
            if self.drain_commands_during_round()? == super::Flow::Stop {
                break;
            }
        }
        Ok((preds, rows_out))
    }

    /// The soft targets of the new label set: sharpened fresh rows for re-predicted images, the
    /// earlier rows for labels kept from before. Empty with hard labels.
    pub(super) fn soft_rows_for(
        &self,
        labels: &[PseudoLabel],
        fresh: &HashMap<usize, Vec<f32>>,
    ) -> Vec<Vec<f32>> {
        let st = &self.cfg.self_training;
        if !st.soft_labels {
            return Vec::new();
        }
        let old: HashMap<usize, &Vec<f32>> = self
            .state
            .pseudo
            .iter()
            .zip(&self.state.ssl.soft)
            .map(|(l, r)| (l.index, r))
            .collect();
        let classes = self.data.classes.len();
        labels
            .iter()
            .map(|l| match fresh.get(&l.index) {
                Some(row) => self_training::sharpen(row, st.temperature),
                None => old.get(&l.index).map_or_else(
                    || {
                        let mut v = vec![0.0; classes];
                        v[l.label as usize] = 1.0;
                        v
                    },
                    |r| (*r).clone(),
                ),
            })
            .collect()
    }

    /// After a round adopted its labels: the plateau trigger restarts, and with `reinit` the model
    /// and optimizer start over.
    pub(super) fn after_round(&mut self) -> Result<(), EngineError> {
        self.start_phase();
        if let Some(initial) = &self.ssl.initial {
            {
                let data = match self.varmap.data().lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                for (name, var) in data.iter() {
                    if let Some(t) = initial.get(name) {
                        set_var(var, t, name)?;
                    }
                }
            }
            let groups = optim::param_groups(
                &self.varmap,
                self.net.head_prefix(),
                &self.cfg.model,
                self.cfg.train.weight_decay,
            );
            let opt = optim::build(&self.cfg.train, groups);
            self.opt = match &self.ssl.teacher {
                Some((vm, _)) => Box::new(WithEma::new(
                    opt,
                    Ema::new(&self.varmap, vm, self.cfg.self_training.ema_decay)?,
                )),
                None => opt,
            };
            let from = if self.cfg.model.pretrained.is_some()
                && self.cfg.self_training.reinit_from == ReinitFrom::Start
            {
                "the pretrained weights"
            } else {
                "the seeded initialisation"
            };
            self.emit(Event::log(
                Level::Info,
                format!(
                    "round {}: model re-initialised from {from}",
                    self.state.round
                ),
            ));
        }
        Ok(())
    }

    /// Per-sample soft targets `[N, classes]` for a rounds-mode batch when soft labels are on and
    /// the batch holds a pseudo-labelled image: pseudo-labelled rows get their soft label,
    /// labelled rows a one-hot (smoothed by `label_smoothing`, which soft CE then reproduces).
    pub(super) fn soft_batch_targets(
        &self,
        soft: &HashMap<usize, Vec<f32>>,
        indices: &[usize],
        hard: &[u32],
        smoothing: f64,
    ) -> Result<Option<Tensor>, EngineError> {
        if soft.is_empty() || !indices.iter().any(|i| soft.contains_key(i)) {
            return Ok(None);
        }
        let classes = self.data.classes.len();
        let mut q = Vec::with_capacity(indices.len() * classes);
        for (i, &y) in indices.iter().zip(hard) {
            match soft.get(i).filter(|_| self.data.labels[*i].is_none()) {
                Some(row) => q.extend_from_slice(row),
                None => {
                    let off = (smoothing / classes as f64) as f32;
                    let on = (1.0 - smoothing) as f32 + off;
                    q.extend((0..classes).map(|c| if c == y as usize { on } else { off }));
                }
            }
        }
        Ok(Some(Tensor::from_vec(
            q,
            (indices.len(), classes),
            &self.device,
        )?))
    }

    /// Pool index → soft row, for the epoch (empty with hard labels).
    pub(super) fn soft_map(&self) -> HashMap<usize, Vec<f32>> {
        if !self.cfg.self_training.soft_labels {
            return HashMap::new();
        }
        self.state
            .pseudo
            .iter()
            .zip(&self.state.ssl.soft)
            .map(|(l, r)| (l.index, r.clone()))
            .collect()
    }

    // ----- online mode --------------------------------------------------------------------------

    /// Starts an online round: from now on every step pseudo-labels (no pool prediction). A
    /// manual round request has nothing to do in this mode and says so.
    pub(super) fn start_online_round(&mut self, automatic: bool) -> Result<(), EngineError> {
        if !automatic {
            self.emit(Event::log(
                Level::Info,
                "online (fixmatch) mode pseudo-labels at every step: there is no round to run; +/- change the threshold from the next step",
            ));
            return Ok(());
        }
        let round = self.state.round + 1;
        self.emit(Event::RoundStarted {
            round,
            pool: self.data.pool.len(),
            threshold: self.state.threshold,
            online: true,
        });
        self.state.round = round;
        self.state.epochs_in_round = 0;
        self.state.auto_rounds += 1;
        self.start_phase();
        Ok(())
    }

    /// The labelled order of an online epoch: `steps × batch` images of an endless stream of
    /// seeded passes over the labelled set (a pure function of the epoch, for exact resume).
    pub(super) fn online_order(&self, epoch: u32) -> Vec<usize> {
        let bs = self.cfg.train.batch_size;
        let steps = fixmatch::steps_per_epoch(&self.cfg.self_training, self.data.pool.len(), bs);
        let online_epoch = epoch.saturating_sub(self.cfg.train.epochs + 1) as usize;
        rounds::stream(
            &self.data.labelled,
            self.state.seed,
            1,
            online_epoch * steps * bs,
            steps * bs,
        )
    }

    /// The weak and strong views of the epoch's unlabelled images, from step `skip` on.
    pub(super) fn online_streams(&self, epoch: u32, skip: usize) -> Option<OnlineStreams> {
        let st = &self.cfg.self_training;
        let bs = self.cfg.train.batch_size;
        let per_step = st.mu * bs;
        if per_step == 0 || self.data.pool.is_empty() {
            return None;
        }
        let steps = fixmatch::steps_per_epoch(st, self.data.pool.len(), bs);
        let online_epoch = epoch.saturating_sub(self.cfg.train.epochs + 1) as usize;
        let order = rounds::stream(
            &self.data.pool,
            self.state.seed,
            2,
            online_epoch * steps * per_step,
            steps * per_step,
        );
        let seed = self.state.seed;
        let at = skip * per_step;
        let loader = &self.train_loader;
        Some(OnlineStreams {
            weak: loader.batches_from(
                order.clone(),
                at,
                per_step,
                AugmentKind::Weak,
                seed,
                epoch as u64,
            ),
            strong: loader.batches_from(
                order,
                at,
                per_step,
                AugmentKind::Strong,
                seed,
                epoch as u64,
            ),
            per_step,
        })
    }

    /// The class thresholds of the online mode now.
    fn online_thresholds(&mut self) -> Vec<f32> {
        let st = &self.cfg.self_training;
        let classes = self.data.classes.len();
        let tau = self.state.threshold;
        let t = if st.policy == SelectionPolicy::Adaptive {
            if self.state.ssl.selected.len() != self.data.pool.len() {
                self.state.ssl.selected = vec![None; self.data.pool.len()];
            }
            self_training::flexmatch_thresholds(
                &self.state.ssl.selected,
                classes,
                tau,
                st.min_threshold,
            )
        } else {
            vec![tau; classes]
        };
        self.ssl.last_thresholds = t.clone();
        t
    }

    /// One online step's forward and loss: pseudo-labels from the weak views, the labelled batch
    /// `x_l` and the kept strong views in one train-mode forward. Returns the labelled logits
    /// (for the running accuracy) and the loss.
    pub(super) fn online_step(
        &mut self,
        streams: &mut Option<OnlineStreams>,
        x_l: &Tensor,
        y_l: &Tensor,
        freeze: bool,
        smoothing: f64,
    ) -> Result<(Tensor, Tensor), EngineError> {
        let unlabelled = match streams.as_mut() {
            Some(s) => match (s.weak.next(), s.strong.next()) {
                (Some(w), Some(st)) => Some((w, st, s.per_step)),
                _ => None,
            },
            None => None,
        };
        let Some((weak, strong, _per_step)) = unlabelled else {
            let logits = self.net.forward_t(x_l, true, freeze)?;
            let loss = fixmatch::loss(&logits, y_l, smoothing, None, 0, 0.0)?;
            return Ok((logits, loss));
        };
        for (idx, err) in weak.skipped.iter() {
            let path = self.data.paths[*idx].display().to_string();
            tracing::warn!(%path, "skipped unreadable unlabelled image: {err}");
        }
        // Both views come from the same order, so they normally line up one to one; should a
        // file be skipped in one view only, pair the views by index instead.
        let (c, h, w) = self.train_loader.image_shape();
        let per_image = c * h * w;
        let (idx, weak_px, strong_pos) = if weak.indices == strong.indices {
            let n = weak.indices.len();
            (weak.indices, weak.pixels, (0..n).collect::<Vec<usize>>())
        } else {
            let strong_at: HashMap<usize, usize> = strong
                .indices
                .iter()
                .enumerate()
                .map(|(k, &i)| (i, k))
                .collect();
            let mut idx = Vec::with_capacity(weak.indices.len());
            let mut px = Vec::with_capacity(weak.pixels.len());
            let mut pos = Vec::with_capacity(weak.indices.len());
            for (k, &i) in weak.indices.iter().enumerate() {
                if let Some(&s) = strong_at.get(&i) {
                    idx.push(i);
                    px.extend_from_slice(&weak.pixels[k * per_image..(k + 1) * per_image]);
                    pos.push(s);
                }
            }
            (idx, px, pos)
        };
        let n_u = idx.len();
        if n_u == 0 {
            let logits = self.net.forward_t(x_l, true, freeze)?;
            let loss = fixmatch::loss(&logits, y_l, smoothing, None, 0, 0.0)?;
            return Ok((logits, loss));
        }
        let xw = Tensor::from_vec(weak_px, (n_u, c, h, w), &self.device)?;
        let probs = match self.labelling_teacher() {
            Some(t) => candle_nn::ops::softmax(&t.forward_t(&xw, false, false)?, 1)?,
            None => candle_nn::ops::softmax(&self.net.forward_t(&xw, true, freeze)?.detach(), 1)?,
        };
        let mut rows: Vec<Vec<f32>> = probs.detach().to_vec2()?;
        drop(probs);
        if let Some(da) = self.ssl.align.as_mut() {
            da.align(&mut rows);
        }
        let thresholds = self.online_thresholds();
        let verdicts = fixmatch::verdicts(&rows, &thresholds);
        let st = self.cfg.self_training.clone();
        let tau = self.state.threshold;
        let mut kept_px = Vec::new();
        let mut kept_hard = Vec::new();
        let mut kept_soft = Vec::new();
        for (k, v) in verdicts.iter().enumerate() {
            let i = idx[k];
            self.state
                .ssl
                .tally
                .add(i, v.label, v.confidence, v.passed, HIST_BINS);
            if st.policy == SelectionPolicy::Adaptive && v.confidence >= tau {
                if let Some(&p) = self.ssl.pool_pos.get(&i) {
                    if let Some(slot) = self.state.ssl.selected.get_mut(p) {
                        *slot = Some(v.label);
                    }
                }
            }
            if v.passed {
                let s = strong_pos[k];
                kept_px.extend_from_slice(&strong.pixels[s * per_image..(s + 1) * per_image]);
                kept_hard.push(v.label);
                if st.soft_labels {
                    kept_soft.extend(self_training::sharpen(&rows[k], st.temperature));
                }
            }
        }
        let kept = kept_hard.len();
        self.ssl.step_images = n_u + kept;
        let n_l = x_l.dim(0)?;
        if kept == 0 || st.unlabelled_weight == 0.0 {
            let logits = self.net.forward_t(x_l, true, freeze)?;
            let loss = fixmatch::loss(&logits, y_l, smoothing, None, n_u, 0.0)?;
            return Ok((logits, loss));
        }
        let xs = Tensor::from_vec(kept_px, (kept, c, h, w), &self.device)?;
        let x = Tensor::cat(&[x_l, &xs], 0)?;
        let logits = self.net.forward_t(&x, true, freeze)?;
        let logits_l = logits.narrow(0, 0, n_l)?;
        let logits_s = logits.narrow(0, n_l, kept)?;
        let classes = self.data.classes.len();
        let loss = if st.soft_labels {
            let q = Tensor::from_vec(kept_soft, (kept, classes), &self.device)?;
            fixmatch::loss(
                &logits_l,
                y_l,
                smoothing,
                Some((&logits_s, Targets::Soft(&q))),
                n_u,
                st.unlabelled_weight,
            )?
        } else {
            let ys = Tensor::from_vec(kept_hard, kept, &self.device)?;
            fixmatch::loss(
                &logits_l,
                y_l,
                smoothing,
                Some((&logits_s, Targets::Hard(&ys))),
                n_u,
                st.unlabelled_weight,
            )?
        };
        Ok((logits_l, loss))
    }

    /// After an online epoch: the pseudo-labels that passed during it become the set "in use",
    /// reported as a `RoundFinished` of the current round (as rounds report theirs) and written
    /// to its CSV.
    fn report_online_epoch(&mut self) -> Result<(), EngineError> {
        let tally = std::mem::take(&mut self.state.ssl.tally);
        let labels = tally.in_use();
        let classes = self.data.classes.len();
        let added = self_training::newly_added(&self.state.pseudo, &labels);
        let round = self.state.round;
        let csv = self.write_round_csv(round, &labels)?;
        let (per_class, per_class_precision, precision) =
            self_training::quality(&labels, classes, &self.data.hidden_truth);
        let samples = self.round_samples(&labels);
        let mut hist = tally.hist;
        if hist.len() != HIST_BINS {
            hist = vec![0; HIST_BINS];
        }
        let thresholds = if self.ssl.last_thresholds.len() == classes {
            self.ssl.last_thresholds.clone()
        } else {
            vec![self.state.threshold; classes]
        };
        self.state.pseudo = labels;
        self.state.ssl.soft.clear();
        tracing::info!(
            round,
            added,
            total = self.state.pseudo.len(),
            ?precision,
            "online pseudo-labels"
        );
        self.emit(Event::RoundFinished {
            round,
            added,
            total: self.state.pseudo.len(),
            per_class,
            per_class_precision,
            precision,
            threshold: self.state.threshold,
            confidence_hist: hist,
            csv: csv.display().to_string(),
            samples,
            thresholds,
            online: true,
        });
        Ok(())
    }
}
