//! Everything the dashboard shows, rebuilt by folding the run's events, and the one function
//! that changes it: [`App::update`].
//!
//! Folding is deterministic: anything derived from events (durations, ETAs, log times) uses the
//! events' own `at_ms` stamps, never the wall clock, so replaying `events.jsonl` and then
//! following live events gives the same state as having watched the run from the start.

use std::collections::VecDeque;

use crossterm::event::KeyEvent;

use crate::protocol::{
    ClassStats, Command, DataSizes, Event, Level, Phase, SampleNote, Stamped, Summary,
};

use super::keymap::{Action, Keymap};
use super::palette::ColorDepth;
use super::thumbs::{Thumb, ThumbCache, ThumbError};

/// Batch-loss points kept for the sparkline; beyond this, neighbours are averaged in pairs.
pub const LOSS_HISTORY_MAX: usize = 4096;
/// Log lines kept for the log view.
pub const LOG_LINES_MAX: usize = 2000;
/// How much `+` / `-` move the pseudo-label threshold.
pub const THRESHOLD_STEP: f32 = 0.01;

/// Loss smoothing factors the smoothing key steps through (0 = off).
pub const EMA_FACTORS: [f64; 6] = [0.0, 0.5, 0.8, 0.9, 0.95, 0.99];
/// Index into [`EMA_FACTORS`] the dashboard starts with.
pub const EMA_DEFAULT: usize = 2;
/// Most thumbnails asked for at once (the current sample set).
pub const THUMB_REQUEST_MAX: usize = 200;

/// How to draw: colour or not (and how many), Unicode glyphs or plain ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ViewOptions {
    /// Use colours (off when `NO_COLOR` is set): without, only bold/reverse and glyphs.
    pub color: bool,
    /// Only ASCII characters (`--ascii`, or a locale that is not UTF-8).
    pub ascii: bool,
    /// Colours the terminal has (used only when `color`).
    pub color_depth: ColorDepth,
}

/// The dashboard's views (Tab / number keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Progress, loss, validation, per-class accuracy, pseudo-labels, recent log.
    #[default]
    Overview,
    /// Per-class table, confusion heat map, top confusions.
    Classes,
    /// Thumbnails of misclassified validation images and of pseudo-labels.
    Samples,
    /// The run's events and warnings.
    Log,
}

impl View {
    pub const ALL: [View; 4] = [View::Overview, View::Classes, View::Samples, View::Log];

    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Classes => "Classes",
            View::Samples => "Samples",
            View::Log => "Log",
        }
    }

    fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }

    fn step(self, by: isize) -> View {
        let n = View::ALL.len() as isize;
        View::ALL[(self.index() as isize + by).rem_euclid(n) as usize]
    }
}

/// Which part of the batch-loss history the Overview shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum History {
    /// The whole run, averaged down to the panel's width.
    #[default]
    All,
    /// The most recent points, one per column.
    Recent,
}

/// Column the Classes table is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// Class order.
    #[default]
    Class,
    Accuracy,
    Precision,
    F1,
    Support,
    /// Change of accuracy since the comparison epoch.
    Change,
    Name,
}

impl SortKey {
    const ORDER: [SortKey; 7] = [
        SortKey::Class,
        SortKey::Accuracy,
        SortKey::Precision,
        SortKey::F1,
        SortKey::Support,
        SortKey::Change,
        SortKey::Name,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Class => "class #",
            SortKey::Accuracy => "acc",
            SortKey::Precision => "prec",
            SortKey::F1 => "F1",
            SortKey::Support => "support",
            SortKey::Change => "change",
            SortKey::Name => "name",
        }
    }

    fn next(self) -> SortKey {
        let i = SortKey::ORDER.iter().position(|k| *k == self).unwrap_or(0);
        SortKey::ORDER[(i + 1) % SortKey::ORDER.len()]
    }
}

/// What the Classes view compares the latest epoch with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compare {
    /// The epoch before.
    #[default]
    PrevEpoch,
    /// The last epoch before the current phase (supervised, or the previous round).
    PrevRound,
}

/// Which thumbnails the Samples view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleSet {
    /// Misclassified validation images of the latest epoch.
    #[default]
    Mistakes,
    /// Pseudo-labels adopted in the latest round, by class.
    PseudoLabels,
}

/// Which log lines the Log view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFilter {
    #[default]
    All,
    /// Warnings and errors.
    Warn,
    Error,
}

impl LogFilter {
    pub fn admits(self, level: Level) -> bool {
        match self {
            LogFilter::All => true,
            LogFilter::Warn => level >= Level::Warn,
            LogFilter::Error => level >= Level::Error,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            LogFilter::All => "all levels",
            LogFilter::Warn => "warnings+errors",
            LogFilter::Error => "errors only",
        }
    }
}

/// Where the user is in the views: kept when a new run starts in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nav {
    pub view: View,
    /// Index into [`EMA_FACTORS`].
    pub ema: usize,
    pub history: History,
    pub sort: SortKey,
    /// Sort descending.
    pub sort_desc: bool,
    pub compare: Compare,
    /// First row of the Classes table shown.
    pub class_scroll: usize,
    pub samples: SampleSet,
    /// Page of the Samples view (0-based).
    pub sample_page: usize,
    pub log_filter: LogFilter,
    /// Log view: lines scrolled up from the newest (0 = follow new lines).
    pub log_scroll: usize,
    /// First row of the help overlay shown (when it does not fit).
    pub help_scroll: usize,
}

impl Default for Nav {
    fn default() -> Self {
        Nav {
            view: View::Overview,
            ema: EMA_DEFAULT,
            history: History::All,
            sort: SortKey::Class,
            sort_desc: false,
            compare: Compare::PrevEpoch,
            class_scroll: 0,
            samples: SampleSet::Mistakes,
            sample_page: 0,
            log_filter: LogFilter::All,
            log_scroll: 0,
            help_scroll: 0,
        }
    }
}

impl Nav {
    /// The loss smoothing factor in use.
    pub fn ema_factor(&self) -> f64 {
        EMA_FACTORS[self.ema.min(EMA_FACTORS.len() - 1)]
    }
}

/// Everything that can change the dashboard's state.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// An event from the run (replayed or live).
    Event(Stamped),
    /// A key press.
    Key(KeyEvent),
    /// The terminal changed size (columns, rows).
    Resize(u16, u16),
    /// Time passed (nothing derived from events depends on it).
    Tick,
    /// The event stream ended without the run ending (engine or socket gone): nobody will
    /// answer commands any more, so `q` quits at once.
    StreamClosed,
    /// Thumbnails decoded (or not) after an [`Effect::LoadThumbnails`].
    Thumbnails(Vec<(String, Result<Thumb, ThumbError>)>),
}

/// What the caller of [`App::update`] has to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send this command to the engine.
    Send(Command),
    /// Leave the dashboard (the run has ended, or was asked to stop and has now ended).
    Quit,
    /// Leave the dashboard; training goes on.
    Detach,
    /// Decode these image files into thumbnails (off the render path), then send the results
    /// back as [`Msg::Thumbnails`].
    LoadThumbnails(Vec<String>),
}

/// Where the run stands, as far as the dashboard knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// No `RunStarted` seen yet.
    Waiting,
    Running,
    Paused,
    /// The user asked to stop; the engine is finishing its batch and writing a checkpoint.
    Stopping,
    Finished,
    Failed,
}

impl RunState {
    /// The word shown in the header.
    pub fn label(self) -> &'static str {
        match self {
            RunState::Waiting => "WAITING",
            RunState::Running => "RUNNING",
            RunState::Paused => "PAUSED",
            RunState::Stopping => "STOPPING",
            RunState::Finished => "FINISHED",
            RunState::Failed => "FAILED",
        }
    }

    /// Whether the run is over (no engine to command any more).
    pub fn has_ended(self) -> bool {
        matches!(self, RunState::Finished | RunState::Failed)
    }

    /// Whether commands such as pause, round or checkpoint make sense.
    pub fn accepts_commands(self) -> bool {
        matches!(self, RunState::Running | RunState::Paused)
    }
}

/// What is being trained on what (from `RunStarted`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunHeader {
    pub run_id: String,
    pub task: String,
    pub model: String,
    pub device: String,
    pub classes: Vec<String>,
    pub sizes: DataSizes,
    pub epochs: u32,
    pub rounds: u32,
    pub epochs_per_round: u32,
    pub batch_size: usize,
    pub protocol: u32,
    /// `at_ms` of the first `RunStarted` of this run.
    pub started_at_ms: u64,
    /// How many times the run was resumed from a checkpoint.
    pub resumes: u32,
}

impl RunHeader {
    /// Planned epochs in the whole run: supervised + rounds x epochs per round.
    pub fn planned_epochs(&self) -> u32 {
        self.epochs
            .saturating_add(self.rounds.saturating_mul(self.epochs_per_round))
    }
}

/// The epoch in progress (or the last one, once finished).
#[derive(Debug, Clone, PartialEq)]
pub struct EpochProgress {
    pub epoch: u32,
    pub phase: Phase,
    /// Batches and images in this epoch.
    pub batches: u32,
    pub images: usize,
    /// `at_ms` of `EpochStarted` (None when attached mid-epoch without it).
    pub started_at_ms: Option<u64>,
    /// Time spent paused since the epoch started.
    pub paused_ms: u64,
    /// Last reported batch (1-based) and batches in the epoch; 0 before the first batch.
    pub step: u32,
    pub of: u32,
    pub loss: Option<f32>,
    pub lr: Option<f64>,
    pub images_per_s: Option<f32>,
    pub last_batch_at_ms: Option<u64>,
    /// `EpochFinished` arrived for this epoch.
    pub finished: bool,
}

impl EpochProgress {
    fn new(epoch: u32, phase: Phase, batches: u32, images: usize, at: Option<u64>) -> Self {
        EpochProgress {
            epoch,
            phase,
            batches,
            images,
            started_at_ms: at,
            paused_ms: 0,
            step: 0,
            of: batches,
            loss: None,
            lr: None,
            images_per_s: None,
            last_batch_at_ms: None,
            finished: false,
        }
    }

    /// Fraction of the epoch's batches done, 0..=1.
    pub fn fraction(&self) -> f64 {
        if self.finished {
            1.0
        } else if self.of == 0 {
            0.0
        } else {
            (f64::from(self.step) / f64::from(self.of)).clamp(0.0, 1.0)
        }
    }

    /// Whether all batches ran and validation is under way.
    pub fn validating(&self) -> bool {
        !self.finished && self.of > 0 && self.step >= self.of
    }
}

/// One finished epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    pub epoch: u32,
    pub phase: Phase,
    pub train_loss: f32,
    pub train_acc: f64,
    pub val_loss: f32,
    pub val_acc: f64,
    pub per_class: Vec<ClassStats>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    pub train_seconds: f64,
    pub val_seconds: f64,
    /// Training images in the epoch (0 when its `EpochStarted` was not seen).
    pub images: usize,
    pub mistakes: Vec<SampleNote>,
}

impl EpochRecord {
    /// Per-class validation accuracy, in class order.
    pub fn class_accuracy(&self) -> Vec<f64> {
        self.per_class.iter().map(ClassStats::accuracy).collect()
    }
}

/// One point of the batch-loss sparkline: the mean of `2^k` consecutive `Batch` losses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossPoint {
    /// The (last) epoch the batches belong to.
    pub epoch: u32,
    pub loss: f32,
}

/// Batch-loss history, bounded: when it grows past [`LOSS_HISTORY_MAX`] points, neighbours are
/// averaged in pairs and later points each stand for twice as many batches, so the series stays
/// evenly spaced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LossHistory {
    points: Vec<LossPoint>,
    /// `Batch` events per point.
    stride: u32,
    /// Losses waiting to fill the next point: (sum, count, epoch).
    pending: Option<(f64, u32, u32)>,
}

impl LossHistory {
    fn push(&mut self, epoch: u32, loss: f32) {
        if !loss.is_finite() {
            return;
        }
        let stride = self.stride.max(1);
        let (sum, n, _) = self.pending.unwrap_or((0.0, 0, epoch));
        let (sum, n) = (sum + f64::from(loss), n + 1);
        if n >= stride {
            self.points.push(LossPoint {
                epoch,
                loss: (sum / f64::from(n)) as f32,
            });
            self.pending = None;
            if self.points.len() > LOSS_HISTORY_MAX {
                self.halve();
            }
        } else {
            self.pending = Some((sum, n, epoch));
        }
    }

    fn halve(&mut self) {
        self.points = self
            .points
            .chunks(2)
            .map(|c| match c {
                [a, b] => LossPoint {
                    epoch: a.epoch.max(b.epoch),
                    loss: (a.loss + b.loss) / 2.0,
                },
                [a] => *a,
                _ => LossPoint {
                    epoch: 0,
                    loss: 0.0,
                },
            })
            .collect();
        self.stride = self.stride.max(1) * 2;
    }

    /// Drop everything that belongs to epoch `epoch` or later.
    fn cut_from(&mut self, epoch: u32) {
        self.points.retain(|p| p.epoch < epoch);
        if matches!(self.pending, Some((_, _, e)) if e >= epoch) {
            self.pending = None;
        }
    }

    /// The points, oldest first (the partly filled last point is not included).
    pub fn points(&self) -> &[LossPoint] {
        &self.points
    }

    /// `Batch` events each point stands for.
    pub fn stride(&self) -> u32 {
        self.stride.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// One pseudo-label round (in progress until `RoundFinished`).
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRecord {
    pub round: u32,
    /// Unlabelled images being predicted.
    pub pool: usize,
    pub threshold: f32,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// Newly adopted in this round and in use in total.
    pub added: usize,
    pub total: usize,
    pub per_class: Vec<usize>,
    pub per_class_precision: Vec<Option<f64>>,
    pub precision: Option<f64>,
    /// Pool confidence histogram, 10 bins over [0, 1].
    pub confidence_hist: Vec<u64>,
    pub csv: String,
    pub samples: Vec<SampleNote>,
    /// Per-class thresholds of the round (empty: every class had `threshold`).
    pub thresholds: Vec<f32>,
    /// Epochs finished when the round started (the timeline's "when").
    pub after_epoch: u32,
    /// A round of the online mode (reported after each of its epochs).
    pub online: bool,
}

impl RoundRecord {
    pub fn is_finished(&self) -> bool {
        self.finished_at_ms.is_some()
    }

    /// Seconds the round took, when both ends were seen.
    pub fn seconds(&self) -> Option<f64> {
        match (self.started_at_ms, self.finished_at_ms) {
            (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / 1000.0),
            _ => None,
        }
    }
}

/// A line of the log pane.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub at_ms: u64,
    pub level: Level,
    pub message: String,
}

/// The dashboard's whole state. Drawing is a pure function of it (`view::draw`).
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub opts: ViewOptions,
    /// Keys in use.
    pub keys: Keymap,
    /// Current view, scroll positions, sort order...
    pub nav: Nav,
    /// Decoded thumbnails by path.
    pub thumbs: ThumbCache,
    /// `None` until the first `RunStarted`.
    pub run: Option<RunHeader>,
    pub state: RunState,
    pub epoch: Option<EpochProgress>,
    pub losses: LossHistory,
    /// Finished epochs, in order, without duplicates (a resume cuts back).
    pub epochs: Vec<EpochRecord>,
    pub rounds: Vec<RoundRecord>,
    /// Pseudo-label threshold as last reported by the engine.
    pub threshold: Option<f32>,
    /// Threshold asked for with `+`/`-` and not yet confirmed by `ThresholdChanged`.
    pub threshold_requested: Option<f32>,
    pub learning_rate: Option<f64>,
    /// Latest GPU reading (`Event::Gpu`): memory used and total (MiB), utilisation (%).
    pub gpu: Option<(u64, u64, Option<u32>)>,
    pub logs: VecDeque<LogLine>,
    pub summary: Option<Summary>,
    pub error: Option<String>,
    /// Last checkpoint: path, epoch, step.
    pub last_checkpoint: Option<(String, u32, u64)>,
    /// The help overlay is shown.
    pub help: bool,
    /// The "Stop the run?" prompt is shown.
    pub confirm_quit: bool,
    /// `y` was answered: quit as soon as the run has ended.
    pub quit_when_ended: bool,
    /// The event stream ended.
    pub stream_closed: bool,
    /// A short line about the last key press (e.g. "pause requested"), shown in the footer.
    pub notice: Option<String>,
    /// Last terminal size reported by `Msg::Resize`.
    pub size: Option<(u16, u16)>,
    /// `seq` of the last event folded; older or repeated events are ignored.
    pub last_seq: Option<u64>,
    /// A resumed `RunStarted` was seen and no epoch or round has started since.
    resume_pending: bool,
    /// `at_ms` of the `Paused` event while paused.
    paused_at_ms: Option<u64>,
}

impl Default for App {
    fn default() -> Self {
        App::new(ViewOptions::default())
    }
}

impl App {
    /// A dashboard with the default keys.
    pub fn new(opts: ViewOptions) -> Self {
        App::with_keys(opts, Keymap::default())
    }

    /// A dashboard with the given keys (from a validated [`super::KeyConfig`]).
    pub fn with_keys(opts: ViewOptions, keys: Keymap) -> Self {
        App {
            opts,
            keys,
            nav: Nav::default(),
            thumbs: ThumbCache::default(),
            run: None,
            state: RunState::Waiting,
            epoch: None,
            losses: LossHistory::default(),
            epochs: Vec::new(),
            rounds: Vec::new(),
            threshold: None,
            threshold_requested: None,
            learning_rate: None,
            gpu: None,
            logs: VecDeque::new(),
            summary: None,
            error: None,
            last_checkpoint: None,
            help: false,
            confirm_quit: false,
            quit_when_ended: false,
            stream_closed: false,
            notice: None,
            size: None,
            last_seq: None,
            resume_pending: false,
            paused_at_ms: None,
        }
    }

    /// Fold a message into the state; returns what the caller has to do.
    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        let mut effects = match msg {
            Msg::Event(stamped) => self.on_event(stamped),
            Msg::Key(key) => match self.keys.action(&key) {
                Some(action) => self.on_action(action),
                None => Vec::new(),
            },
            Msg::Resize(w, h) => {
                self.size = Some((w, h));
                Vec::new()
            }
            Msg::Tick => Vec::new(),
            Msg::StreamClosed => {
                self.stream_closed = true;
                if self.quit_when_ended {
                    vec![Effect::Quit]
                } else {
                    Vec::new()
                }
            }
            Msg::Thumbnails(results) => {
                for (path, result) in results {
                    self.thumbs.insert(path, result);
                }
                Vec::new()
            }
        };
        if self.nav.view == View::Samples {
            let paths: Vec<String> = self
                .samples_shown()
                .notes
                .iter()
                .take(THUMB_REQUEST_MAX)
                .map(|n| n.path.clone())
                .collect();
            let new = self.thumbs.request(paths.iter().map(String::as_str));
            if !new.is_empty() {
                effects.push(Effect::LoadThumbnails(new));
            }
        }
        effects
    }

    /// Convenience: fold events in order (effects are dropped: folding events only ever
    /// yields `Quit` after the user asked for it).
    pub fn fold<'a>(&mut self, events: impl IntoIterator<Item = &'a Stamped>) {
        for e in events {
            self.update(Msg::Event(e.clone()));
        }
    }

    // ----- derived values -------------------------------------------------------------------

    /// The last finished epoch: latest per-class stats and confusion.
    pub fn latest_epoch(&self) -> Option<&EpochRecord> {
        self.epochs.last()
    }

    /// The epoch with the best validation accuracy (the first of equals).
    pub fn best_epoch(&self) -> Option<&EpochRecord> {
        self.epochs
            .iter()
            .fold(None, |best: Option<&EpochRecord>, e| match best {
                Some(b) if b.val_acc >= e.val_acc => Some(b),
                _ => Some(e),
            })
    }

    /// Planned epochs in the whole run.
    pub fn planned_epochs(&self) -> u32 {
        self.run.as_ref().map_or(0, RunHeader::planned_epochs)
    }

    /// Fraction of the run's planned epochs done (finished epochs + the current one's batches).
    pub fn run_fraction(&self) -> f64 {
        let planned = self.planned_epochs();
        if self.state == RunState::Finished {
            return 1.0;
        }
        if planned == 0 {
            return 0.0;
        }
        let done = self.epochs.len() as f64;
        let current = self
            .epoch
            .as_ref()
            .filter(|p| !p.finished)
            .map_or(0.0, EpochProgress::fraction);
        ((done + current) / f64::from(planned)).clamp(0.0, 1.0)
    }

    /// The threshold `+`/`-` start from: the pending request, else the engine's.
    pub fn effective_threshold(&self) -> Option<f32> {
        self.threshold_requested.or(self.threshold)
    }

    /// Mean validation seconds per epoch so far.
    fn mean_val_seconds(&self) -> Option<f64> {
        if self.epochs.is_empty() {
            None
        } else {
            Some(self.epochs.iter().map(|e| e.val_seconds).sum::<f64>() / self.epochs.len() as f64)
        }
    }

    /// Seconds of training per batch in the current epoch, measured from event stamps with
    /// pauses left out; falls back to images/s when the epoch start was not seen.
    fn seconds_per_batch(&self) -> Option<f64> {
        let p = self.epoch.as_ref()?;
        if p.step == 0 {
            return None;
        }
        if let (Some(start), Some(last)) = (p.started_at_ms, p.last_batch_at_ms) {
            let active = last.saturating_sub(start).saturating_sub(p.paused_ms);
            if active > 0 {
                return Some(active as f64 / 1000.0 / f64::from(p.step));
            }
        }
        let ips = f64::from(p.images_per_s?);
        let batch = self.run.as_ref()?.batch_size as f64;
        (ips > 0.0 && batch > 0.0).then(|| batch / ips)
    }

    /// Training images/s of the current epoch so far (from event stamps, pauses left out),
    /// else the last batch event's figure. Steadier than the per-event figure, so the number
    /// on screen changes (and is redrawn) far less often.
    pub fn epoch_images_per_s(&self) -> Option<f64> {
        let p = self.epoch.as_ref()?;
        let batch = self.run.as_ref().map_or(0, |r| r.batch_size) as f64;
        if let (Some(start), Some(last)) = (p.started_at_ms, p.last_batch_at_ms) {
            let active = last.saturating_sub(start).saturating_sub(p.paused_ms);
            if active > 0 && batch > 0.0 && p.step > 0 {
                let mut images = f64::from(p.step) * batch;
                if p.images > 0 {
                    // The last batch of an epoch can be short.
                    images = images.min(p.images as f64);
                }
                return Some(images / (active as f64 / 1000.0));
            }
        }
        p.images_per_s.map(f64::from)
    }

    /// Seconds left in the current epoch (its remaining batches plus a validation pass as long
    /// as the previous ones), as of the last `Batch` event. `None` before the first batch.
    pub fn epoch_eta_seconds(&self) -> Option<f64> {
        let p = self.epoch.as_ref()?;
        if p.finished {
            return Some(0.0);
        }
        let per_batch = self.seconds_per_batch()?;
        let left = f64::from(p.of.saturating_sub(p.step));
        Some(left * per_batch + self.mean_val_seconds().unwrap_or(0.0))
    }

    /// Seconds left in the whole run: the current epoch, the remaining planned epochs (at the
    /// measured seconds per training image, plus validation) and the remaining rounds (at the
    /// measured seconds per round).
    pub fn run_eta_seconds(&self) -> Option<f64> {
        if self.state.has_ended() {
            return Some(0.0);
        }
        let run = self.run.as_ref()?;
        let p = self.epoch.as_ref()?;
        let current = self.epoch_eta_seconds()?;
        let counted = self.epochs.len() as u32 + u32::from(!p.finished);
        let epochs_left = f64::from(run.planned_epochs().saturating_sub(counted));
        let train_images: usize = self.epochs.iter().map(|e| e.images).sum();
        let train_secs: f64 = self.epochs.iter().map(|e| e.train_seconds).sum();
        let per_epoch = if train_images > 0 && p.images > 0 {
            train_secs / train_images as f64 * p.images as f64
                + self.mean_val_seconds().unwrap_or(0.0)
        } else if let Some(last) = self.epochs.last() {
            last.train_seconds + last.val_seconds
        } else {
            self.seconds_per_batch()? * f64::from(p.of.max(p.batches))
        };
        // Online rounds train through their epochs: their time is already in the epochs'.
        let finished_rounds: Vec<f64> = self
            .rounds
            .iter()
            .filter(|r| !r.online)
            .filter_map(RoundRecord::seconds)
            .collect();
        let rounds_done = self.rounds.iter().filter(|r| r.is_finished()).count() as u32;
        let rounds_left = f64::from(run.rounds.saturating_sub(rounds_done));
        let per_round = if finished_rounds.is_empty() {
            0.0
        } else {
            finished_rounds.iter().sum::<f64>() / finished_rounds.len() as f64
        };
        Some(current + epochs_left * per_epoch + rounds_left * per_round)
    }

    /// The terminal size to lay out for (80x24 until the first `Msg::Resize`).
    pub fn term_size(&self) -> (u16, u16) {
        self.size.unwrap_or((80, 24))
    }

    /// The loss series the Overview plots: the batch losses smoothed with the EMA factor in
    /// use, then the whole run averaged down to `width` points ([`History::All`]) or the last
    /// `width` points ([`History::Recent`]).
    pub fn loss_series(&self, width: usize) -> Vec<f64> {
        let raw: Vec<f64> = self
            .losses
            .points()
            .iter()
            .map(|p| f64::from(p.loss))
            .collect();
        let smoothed = ema(&raw, self.nav.ema_factor());
        match self.nav.history {
            History::All => super::glyphs::downsample(&smoothed, width),
            History::Recent => smoothed[smoothed.len().saturating_sub(width)..].to_vec(),
        }
    }

    /// The epoch the Classes view compares the latest with (see [`Compare`]).
    pub fn compare_base(&self) -> Option<&EpochRecord> {
        match self.nav.compare {
            Compare::PrevEpoch => self.epochs.iter().rev().nth(1),
            Compare::PrevRound => self.round_base(),
        }
    }

    /// The last epoch before the latest epoch's round began (the end of the previous phase):
    /// what "change since the last round" is measured against. `None` before any round.
    pub fn round_base(&self) -> Option<&EpochRecord> {
        let r = phase_round(self.epochs.last()?.phase);
        self.epochs.iter().rev().find(|e| phase_round(e.phase) < r)
    }

    /// Validation accuracy after round `round`: that of its latest finished epoch.
    pub fn val_acc_after_round(&self, round: u32) -> Option<f64> {
        self.epochs
            .iter()
            .rev()
            .find(|e| phase_round(e.phase) == round)
            .map(|e| e.val_acc)
    }

    /// Rows of the Classes table for the latest epoch, sorted as asked.
    pub fn class_rows(&self) -> Vec<ClassRow> {
        let Some(e) = self.epochs.last() else {
            return Vec::new();
        };
        let base = self.compare_base();
        let mut rows: Vec<ClassRow> = e
            .per_class
            .iter()
            .enumerate()
            .map(|(i, c)| ClassRow {
                index: i,
                name: c.name.clone(),
                support: c.support,
                accuracy: c.accuracy(),
                precision: c.precision(),
                recall: c.recall(),
                f1: c.f1(),
                change: base
                    .and_then(|b| b.per_class.get(i))
                    .map(|b| c.accuracy() - b.accuracy()),
            })
            .collect();
        let key = |r: &ClassRow| -> f64 {
            match self.nav.sort {
                SortKey::Class | SortKey::Name => r.index as f64,
                SortKey::Accuracy => r.accuracy,
                SortKey::Precision => r.precision,
                SortKey::F1 => r.f1,
                SortKey::Support => r.support as f64,
                SortKey::Change => r.change.unwrap_or(f64::NEG_INFINITY),
            }
        };
        if self.nav.sort == SortKey::Name {
            rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.index.cmp(&b.index)));
        } else {
            rows.sort_by(|a, b| key(a).total_cmp(&key(b)).then(a.index.cmp(&b.index)));
        }
        if self.nav.sort_desc {
            rows.reverse();
        }
        rows
    }

    /// The largest off-diagonal cells of the latest confusion matrix, largest first, with the
    /// change since the comparison epoch.
    pub fn top_confusions(&self, n: usize) -> Vec<ConfusionCell> {
        let Some(e) = self.epochs.last() else {
            return Vec::new();
        };
        let base = self.compare_base();
        let mut cells: Vec<ConfusionCell> = e
            .confusion
            .iter()
            .enumerate()
            .flat_map(|(t, row)| {
                row.iter()
                    .enumerate()
                    .filter_map(move |(p, &count)| (t != p && count > 0).then_some((t, p, count)))
            })
            .map(|(t, p, count)| ConfusionCell {
                truth: t,
                predicted: p,
                count,
                change: base
                    .and_then(|b| b.confusion.get(t))
                    .and_then(|row| row.get(p))
                    .map(|&old| count as i64 - old as i64),
            })
            .collect();
        cells.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.truth.cmp(&b.truth))
                .then(a.predicted.cmp(&b.predicted))
        });
        cells.truncate(n);
        cells
    }

    /// Name of class `i` (`#i` when unknown).
    pub fn class_name(&self, i: usize) -> String {
        self.run
            .as_ref()
            .and_then(|r| r.classes.get(i))
            .cloned()
            .or_else(|| {
                self.epochs
                    .last()
                    .and_then(|e| e.per_class.get(i))
                    .map(|c| c.name.clone())
            })
            .unwrap_or_else(|| format!("#{i}"))
    }

    /// The notes the Samples view shows: the latest epoch's mistakes (as sent: most confident
    /// first), or the latest round's pseudo-labels by class, most confident first.
    pub fn samples_shown(&self) -> SamplesShown<'_> {
        match self.nav.samples {
            SampleSet::Mistakes => {
                match self.epochs.iter().rev().find(|e| !e.mistakes.is_empty()) {
                    Some(e) => SamplesShown {
                        set: SampleSet::Mistakes,
                        origin: Some(e.epoch),
                        notes: e.mistakes.iter().collect(),
                    },
                    None => SamplesShown {
                        set: SampleSet::Mistakes,
                        origin: self.epochs.last().map(|e| e.epoch),
                        notes: Vec::new(),
                    },
                }
            }
            SampleSet::PseudoLabels => {
                let round = self
                    .rounds
                    .iter()
                    .rev()
                    .find(|r| r.is_finished() && !r.samples.is_empty())
                    .or_else(|| self.rounds.iter().rev().find(|r| r.is_finished()));
                let mut notes: Vec<&SampleNote> =
                    round.map_or(Vec::new(), |r| r.samples.iter().collect());
                notes.sort_by(|a, b| {
                    a.label
                        .cmp(&b.label)
                        .then(b.confidence.total_cmp(&a.confidence))
                });
                SamplesShown {
                    set: SampleSet::PseudoLabels,
                    origin: round.map(|r| r.round),
                    notes,
                }
            }
        }
    }

    /// Log lines the Log view's filter lets through, oldest first.
    pub fn filtered_logs(&self) -> Vec<&LogLine> {
        self.logs
            .iter()
            .filter(|l| self.nav.log_filter.admits(l.level))
            .collect()
    }

    // ----- events ---------------------------------------------------------------------------

    fn log(&mut self, at_ms: u64, level: Level, message: impl Into<String>) {
        self.logs.push_back(LogLine {
            at_ms,
            level,
            message: message.into(),
        });
        while self.logs.len() > LOG_LINES_MAX {
            self.logs.pop_front();
        }
    }

    fn on_event(&mut self, stamped: Stamped) -> Vec<Effect> {
        if matches!(self.last_seq, Some(last) if stamped.seq <= last) {
            // Already folded (replay and live stream overlap).
            return Vec::new();
        }
        self.last_seq = Some(stamped.seq);
        let at = stamped.at_ms;
        match stamped.event {
            Event::RunStarted {
                run_id,
                task,
                model,
                device,
                classes,
                sizes,
                epochs,
                rounds,
                epochs_per_round,
                batch_size,
                threshold,
                protocol,
                resumed,
            } => {
                let continuing = resumed && self.run.is_some();
                let (started_at_ms, resumes) = match (&self.run, continuing) {
                    (Some(r), true) => (r.started_at_ms, r.resumes + 1),
                    _ => (at, u32::from(resumed)),
                };
                if !continuing {
                    // A new run in this stream (or the first): start from scratch, keeping
                    // what belongs to the terminal and the user (keys, view, thumbnails).
                    let keep = (self.opts, self.help, self.quit_when_ended, self.size);
                    let keys = std::mem::take(&mut self.keys);
                    let thumbs = std::mem::take(&mut self.thumbs);
                    let nav = self.nav;
                    let last_seq = self.last_seq;
                    *self = App::with_keys(keep.0, keys);
                    self.help = keep.1;
                    self.quit_when_ended = keep.2;
                    self.size = keep.3;
                    self.last_seq = last_seq;
                    self.thumbs = thumbs;
                    self.nav = Nav {
                        class_scroll: 0,
                        sample_page: 0,
                        log_scroll: 0,
                        ..nav
                    };
                }
                self.run = Some(RunHeader {
                    run_id,
                    task,
                    model,
                    device,
                    classes,
                    sizes,
                    epochs,
                    rounds,
                    epochs_per_round,
                    batch_size,
                    protocol,
                    started_at_ms,
                    resumes,
                });
                self.state = if self.state == RunState::Stopping {
                    RunState::Stopping
                } else {
                    RunState::Running
                };
                self.threshold = Some(threshold);
                self.threshold_requested = None;
                self.summary = None;
                self.error = None;
                self.epoch = None;
                self.paused_at_ms = None;
                self.resume_pending = resumed;
                if resumed {
                    self.log(at, Level::Info, "run resumed from checkpoint");
                } else if let Some(r) = &self.run {
                    let msg = format!(
                        "run {} started: {}, {} on {}",
                        r.run_id, r.task, r.model, r.device
                    );
                    self.log(at, Level::Info, msg);
                }
            }
            Event::EpochStarted {
                epoch,
                phase,
                batches,
                images,
            } => {
                // Epochs at or after this one are being (re)done: no duplicates.
                self.epochs.retain(|e| e.epoch < epoch);
                self.losses.cut_from(epoch);
                if std::mem::take(&mut self.resume_pending) {
                    let keep_upto = match phase {
                        Phase::Supervised => 0,
                        Phase::SelfTraining { round } => round,
                    };
                    self.rounds
                        .retain(|r| r.round <= keep_upto && r.is_finished());
                }
                self.epoch = Some(EpochProgress::new(epoch, phase, batches, images, Some(at)));
                if self.state == RunState::Waiting {
                    self.state = RunState::Running;
                }
            }
            Event::Batch {
                epoch,
                step,
                of,
                loss,
                lr,
                images_per_s,
            } => {
                let same = matches!(&self.epoch, Some(p) if p.epoch == epoch && !p.finished);
                if !same {
                    // Attached mid-epoch, or the epoch start was missed.
                    let phase = self.epoch.as_ref().map_or(Phase::Supervised, |p| p.phase);
                    self.epoch = Some(EpochProgress::new(epoch, phase, of, 0, None));
                }
                if let Some(p) = self.epoch.as_mut() {
                    p.step = step;
                    p.of = of;
                    p.loss = Some(loss);
                    p.lr = Some(lr);
                    p.images_per_s = Some(images_per_s);
                    p.last_batch_at_ms = Some(at);
                }
                self.learning_rate = Some(lr);
                self.losses.push(epoch, loss);
                if self.state == RunState::Waiting {
                    self.state = RunState::Running;
                }
            }
            Event::EpochFinished {
                epoch,
                phase,
                train_loss,
                train_acc,
                val_loss,
                val_acc,
                per_class,
                confusion,
                train_seconds,
                val_seconds,
                mistakes,
            } => {
                let images = match self.epoch.as_mut() {
                    Some(p) if p.epoch == epoch => {
                        p.finished = true;
                        p.step = p.of;
                        p.images
                    }
                    _ => 0,
                };
                self.log(
                    at,
                    Level::Info,
                    format!(
                        "epoch {epoch} done: val acc {:.1}%, val loss {val_loss:.3}, \
                         train loss {train_loss:.3} (train {train_seconds:.0}s, val {val_seconds:.0}s)",
                        val_acc * 100.0
                    ),
                );
                self.epochs.retain(|e| e.epoch < epoch);
                self.epochs.push(EpochRecord {
                    epoch,
                    phase,
                    train_loss,
                    train_acc,
                    val_loss,
                    val_acc,
                    per_class,
                    confusion,
                    train_seconds,
                    val_seconds,
                    images,
                    mistakes,
                });
            }
            Event::RoundStarted {
                round,
                pool,
                threshold,
                online,
            } => {
                self.resume_pending = false;
                self.log(
                    at,
                    Level::Info,
                    format!("round {round}: predicting {pool} images (threshold {threshold:.2})"),
                );
                self.rounds.retain(|r| r.round < round);
                let after_epoch = self.epochs.last().map_or(0, |e| e.epoch);
                self.rounds.push(RoundRecord {
                    after_epoch,
                    round,
                    pool,
                    threshold,
                    started_at_ms: Some(at),
                    finished_at_ms: None,
                    added: 0,
                    total: 0,
                    per_class: Vec::new(),
                    per_class_precision: Vec::new(),
                    precision: None,
                    confidence_hist: Vec::new(),
                    csv: String::new(),
                    samples: Vec::new(),
                    thresholds: Vec::new(),
                    online,
                });
                self.set_threshold(threshold);
            }
            Event::RoundFinished {
                round,
                added,
                total,
                per_class,
                per_class_precision,
                precision,
                threshold,
                confidence_hist,
                csv,
                samples,
                thresholds,
                online,
            } => {
                let idx = match self.rounds.iter().position(|r| r.round == round) {
                    Some(i) => i,
                    None => {
                        self.rounds.retain(|r| r.round < round);
                        let after_epoch = self.epochs.last().map_or(0, |e| e.epoch);
                        self.rounds.push(RoundRecord {
                            after_epoch,
                            round,
                            pool: 0,
                            threshold,
                            started_at_ms: None,
                            finished_at_ms: None,
                            added: 0,
                            total: 0,
                            per_class: Vec::new(),
                            per_class_precision: Vec::new(),
                            precision: None,
                            confidence_hist: Vec::new(),
                            csv: String::new(),
                            samples: Vec::new(),
                            thresholds: Vec::new(),
                            online,
                        });
                        self.rounds.len() - 1
                    }
                };
                let prec =
                    precision.map_or(String::new(), |p| format!(", precision {:.1}%", p * 100.0));
                self.log(
                    at,
                    Level::Info,
                    format!("round {round}: {added} new pseudo-labels, {total} in use{prec}"),
                );
                if let Some(r) = self.rounds.get_mut(idx) {
                    r.finished_at_ms = Some(at);
                    r.added = added;
                    r.total = total;
                    r.per_class = per_class;
                    r.per_class_precision = per_class_precision;
                    r.precision = precision;
                    r.threshold = threshold;
                    r.confidence_hist = confidence_hist;
                    r.csv = csv;
                    r.samples = samples;
                    r.thresholds = thresholds;
                    r.online = r.online || online;
                }
                // `threshold` is the one this round selected with; the current one comes from
                // `RoundStarted` / `ThresholdChanged` (it may have moved during the round).
            }
            Event::Paused { epoch, step } => {
                self.log(
                    at,
                    Level::Info,
                    format!("paused at epoch {epoch}, batch {step}"),
                );
                if self.state == RunState::Running || self.state == RunState::Waiting {
                    self.state = RunState::Paused;
                }
                if !self.state.has_ended() && self.paused_at_ms.is_none() {
                    self.paused_at_ms = Some(at);
                }
            }
            Event::Resumed => {
                self.log(at, Level::Info, "resumed");
                if self.state == RunState::Paused {
                    self.state = RunState::Running;
                }
                if let Some(since) = self.paused_at_ms.take() {
                    if let Some(p) = self.epoch.as_mut() {
                        p.paused_ms += at.saturating_sub(since);
                    }
                }
            }
            Event::ThresholdChanged { value } => {
                self.log(at, Level::Info, format!("threshold set to {value:.2}"));
                self.set_threshold(value);
            }
            Event::Gpu {
                memory_used_mib,
                memory_total_mib,
                utilization_pct,
            } => self.gpu = Some((memory_used_mib, memory_total_mib, utilization_pct)),
            Event::LearningRateChanged { value } => {
                self.log(at, Level::Info, format!("learning rate set to {value:e}"));
                self.learning_rate = Some(value);
            }
            Event::CheckpointSaved { path, epoch, step } => {
                self.log(at, Level::Info, format!("checkpoint saved: {path}"));
                self.last_checkpoint = Some((path, epoch, step));
            }
            Event::Log { level, message } => self.log(at, level, message),
            Event::Finished { summary } => {
                self.state = RunState::Finished;
                self.log(
                    at,
                    Level::Info,
                    if summary.stopped {
                        "run stopped"
                    } else {
                        "run finished"
                    },
                );
                self.summary = Some(summary);
                self.paused_at_ms = None;
                return self.on_run_ended();
            }
            Event::Failed { error } => {
                self.state = RunState::Failed;
                self.log(at, Level::Error, format!("run failed: {error}"));
                self.error = Some(error);
                self.paused_at_ms = None;
                return self.on_run_ended();
            }
        }
        Vec::new()
    }

    fn set_threshold(&mut self, value: f32) {
        self.threshold = Some(value);
        if matches!(self.threshold_requested, Some(r) if (r - value).abs() < 1e-4) {
            self.threshold_requested = None;
        }
    }

    fn on_run_ended(&mut self) -> Vec<Effect> {
        if self.quit_when_ended {
            vec![Effect::Quit]
        } else {
            Vec::new()
        }
    }

    // ----- keys -----------------------------------------------------------------------------

    fn on_action(&mut self, action: Action) -> Vec<Effect> {
        if self.confirm_quit {
            return self.on_confirm(action);
        }
        match action {
            Action::ToggleHelp => {
                self.help = !self.help;
                Vec::new()
            }
            Action::No => {
                self.help = false;
                Vec::new()
            }
            Action::Yes => Vec::new(),
            Action::Detach => vec![Effect::Detach],
            Action::Quit => {
                if self.state.has_ended() || self.stream_closed {
                    vec![Effect::Quit]
                } else {
                    self.confirm_quit = true;
                    Vec::new()
                }
            }
            Action::TogglePause => match self.state {
                RunState::Running => self.send(Command::Pause, "pause requested"),
                RunState::Paused => self.send(Command::Resume, "resume requested"),
                _ => self.refuse(),
            },
            Action::SaveCheckpoint => {
                if self.state.accepts_commands() {
                    self.send(Command::SaveCheckpoint, "checkpoint requested")
                } else {
                    self.refuse()
                }
            }
            Action::PseudoLabelRound => {
                if !self.state.accepts_commands() {
                    return self.refuse();
                }
                let has_pool = self.run.as_ref().is_some_and(|r| r.sizes.unlabelled > 0);
                if has_pool {
                    self.send(Command::PseudoLabelRound, "pseudo-label round requested")
                } else {
                    self.notice = Some("no unlabelled pool: self-training is off".into());
                    Vec::new()
                }
            }
            Action::ThresholdUp => self.step_threshold(THRESHOLD_STEP),
            Action::ThresholdDown => self.step_threshold(-THRESHOLD_STEP),
            Action::NextView => self.show(self.nav.view.step(1)),
            Action::PrevView => self.show(self.nav.view.step(-1)),
            Action::ShowOverview => self.show(View::Overview),
            Action::ShowClasses => self.show(View::Classes),
            Action::ShowSamples => self.show(View::Samples),
            Action::ShowLog => self.show(View::Log),
            Action::Smoothing => {
                self.nav.ema = (self.nav.ema + 1) % EMA_FACTORS.len();
                let a = self.nav.ema_factor();
                self.notice = Some(if a == 0.0 {
                    "loss smoothing off".into()
                } else {
                    format!("loss smoothing: EMA {a:.2}")
                });
                Vec::new()
            }
            Action::History => {
                self.nav.history = match self.nav.history {
                    History::All => History::Recent,
                    History::Recent => History::All,
                };
                self.notice = Some(match self.nav.history {
                    History::All => "loss: whole run".into(),
                    History::Recent => "loss: recent batches".into(),
                });
                Vec::new()
            }
            Action::Sort => {
                self.nav.sort = self.nav.sort.next();
                self.nav.class_scroll = 0;
                self.notice = Some(format!("classes sorted by {}", self.nav.sort.label()));
                Vec::new()
            }
            Action::SortReverse => {
                self.nav.sort_desc = !self.nav.sort_desc;
                self.nav.class_scroll = 0;
                self.notice = Some(format!(
                    "classes sorted by {}, {}",
                    self.nav.sort.label(),
                    if self.nav.sort_desc {
                        "descending"
                    } else {
                        "ascending"
                    }
                ));
                Vec::new()
            }
            Action::Compare => {
                self.nav.compare = match self.nav.compare {
                    Compare::PrevEpoch => Compare::PrevRound,
                    Compare::PrevRound => Compare::PrevEpoch,
                };
                self.notice = Some(match self.nav.compare {
                    Compare::PrevEpoch => "changes since the previous epoch".into(),
                    Compare::PrevRound => "changes since the previous round".into(),
                });
                Vec::new()
            }
            Action::SampleSet => {
                self.nav.samples = match self.nav.samples {
                    SampleSet::Mistakes => SampleSet::PseudoLabels,
                    SampleSet::PseudoLabels => SampleSet::Mistakes,
                };
                self.nav.sample_page = 0;
                self.notice = Some(match self.nav.samples {
                    SampleSet::Mistakes => "samples: misclassified validation images".into(),
                    SampleSet::PseudoLabels => "samples: pseudo-labels".into(),
                });
                Vec::new()
            }
            Action::LogLevel => {
                self.nav.log_filter = match self.nav.log_filter {
                    LogFilter::All => LogFilter::Warn,
                    LogFilter::Warn => LogFilter::Error,
                    LogFilter::Error => LogFilter::All,
                };
                self.nav.log_scroll = 0;
                self.notice = Some(format!("log: {}", self.nav.log_filter.label()));
                Vec::new()
            }
            Action::Up
            | Action::Down
            | Action::Left
            | Action::Right
            | Action::PageUp
            | Action::PageDown
            | Action::Home
            | Action::End => {
                self.scroll(action);
                Vec::new()
            }
        }
    }

    fn show(&mut self, view: View) -> Vec<Effect> {
        self.nav.view = view;
        Vec::new()
    }

    /// Arrow, page, Home and End keys: they move whatever the current view (or the help)
    /// shows. Positions are clamped to what the current terminal size can show.
    fn scroll(&mut self, action: Action) {
        let (w, h) = self.term_size();
        let main = super::view::main_area(ratatui::layout::Rect::new(0, 0, w, h));
        // Signed step: negative = towards the start.
        let page = i64::from(main.height.saturating_sub(3).max(1));
        let step = |a: Action, page: i64| -> Option<i64> {
            match a {
                Action::Up | Action::Left => Some(-1),
                Action::Down | Action::Right => Some(1),
                Action::PageUp => Some(-page),
                Action::PageDown => Some(page),
                _ => None,
            }
        };
        let moved = |pos: usize, max: usize, a: Action, page: i64| -> usize {
            match a {
                Action::Home => 0,
                Action::End => max,
                _ => {
                    let d = step(a, page).unwrap_or(0);
                    (pos as i64 + d).clamp(0, max as i64) as usize
                }
            }
        };
        if self.help {
            let max = super::view::help_scroll_max(w, h, self);
            self.nav.help_scroll = moved(self.nav.help_scroll, max, action, page);
            return;
        }
        match self.nav.view {
            View::Overview => {}
            View::Classes => {
                let n = self.epochs.last().map_or(0, |e| e.per_class.len());
                let max = super::classes::table_scroll_max(main, self, n);
                self.nav.class_scroll = moved(self.nav.class_scroll, max, action, page);
            }
            View::Samples => {
                let per = super::samples::per_page(main).max(1);
                let n = self.samples_shown().notes.len();
                let pages = n.div_ceil(per).max(1);
                // Every key pages here: up/left back, down/right forward.
                self.nav.sample_page = moved(self.nav.sample_page, pages - 1, action, 1);
            }
            View::Log => {
                // Scrolled up from the bottom: Up goes back in time.
                let total = super::logview::wrapped_len(self, main.width);
                let visible = usize::from(main.height.saturating_sub(1));
                let max = total.saturating_sub(visible);
                let inverted = match action {
                    Action::Home => Action::End,
                    Action::End => Action::Home,
                    Action::Up => Action::Down,
                    Action::Down => Action::Up,
                    Action::Left => Action::Right,
                    Action::Right => Action::Left,
                    Action::PageUp => Action::PageDown,
                    Action::PageDown => Action::PageUp,
                    a => a,
                };
                self.nav.log_scroll = moved(self.nav.log_scroll, max, inverted, page);
            }
        }
    }

    fn on_confirm(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Yes => {
                self.confirm_quit = false;
                if self.state.has_ended() || self.stream_closed || self.state == RunState::Stopping
                {
                    // Nothing to wait for (or already waiting: quit now).
                    vec![Effect::Quit]
                } else {
                    self.state = RunState::Stopping;
                    self.quit_when_ended = true;
                    self.notice = Some("stopping: checkpoint, then quit".into());
                    vec![Effect::Send(Command::Stop)]
                }
            }
            Action::No => {
                self.confirm_quit = false;
                Vec::new()
            }
            Action::Detach => {
                self.confirm_quit = false;
                vec![Effect::Detach]
            }
            // Any other key leaves the question open.
            _ => Vec::new(),
        }
    }

    fn send(&mut self, cmd: Command, notice: &str) -> Vec<Effect> {
        if self.stream_closed {
            self.notice = Some("not connected: the run cannot be reached".into());
            return Vec::new();
        }
        self.notice = Some(notice.to_string());
        vec![Effect::Send(cmd)]
    }

    fn refuse(&mut self) -> Vec<Effect> {
        self.notice = Some(match self.state {
            RunState::Waiting => "the run has not started yet".into(),
            RunState::Stopping => "the run is stopping".into(),
            _ => "the run has ended".into(),
        });
        Vec::new()
    }

    fn step_threshold(&mut self, delta: f32) -> Vec<Effect> {
        if !self.state.accepts_commands() {
            return self.refuse();
        }
        let Some(base) = self.effective_threshold() else {
            return Vec::new();
        };
        let next = clamp_threshold(base + delta);
        if (next - base).abs() < 1e-6 {
            self.notice = Some(format!("threshold stays at {next:.2}"));
            return Vec::new();
        }
        let effects = self.send(
            Command::SetThreshold { value: next },
            &format!("threshold {next:.2} requested"),
        );
        if !effects.is_empty() {
            self.threshold_requested = Some(next);
        }
        effects
    }
}

/// One row of the Classes table.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassRow {
    pub index: usize,
    pub name: String,
    pub support: u64,
    /// Accuracy of the class, which is its recall.
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Accuracy now minus accuracy in the comparison epoch.
    pub change: Option<f64>,
}

/// An off-diagonal cell of the confusion matrix: `count` images of class `truth` predicted as
/// `predicted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfusionCell {
    pub truth: usize,
    pub predicted: usize,
    pub count: u64,
    /// Count now minus count in the comparison epoch.
    pub change: Option<i64>,
}

/// What the Samples view shows.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplesShown<'a> {
    pub set: SampleSet,
    /// The epoch (mistakes) or round (pseudo-labels) they come from.
    pub origin: Option<u32>,
    pub notes: Vec<&'a SampleNote>,
}

/// The round an epoch's phase belongs to (0 = supervised).
pub fn phase_round(phase: Phase) -> u32 {
    match phase {
        Phase::Supervised => 0,
        Phase::SelfTraining { round } => round,
    }
}

/// Exponential moving average: `s[0] = x[0]`, `s[i] = a s[i-1] + (1 - a) x[i]`.
pub fn ema(values: &[f64], a: f64) -> Vec<f64> {
    let a = if a.is_finite() {
        a.clamp(0.0, 0.999)
    } else {
        0.0
    };
    let mut out = Vec::with_capacity(values.len());
    let mut s: Option<f64> = None;
    for &v in values {
        let next = match s {
            Some(prev) if v.is_finite() => a * prev + (1.0 - a) * v,
            Some(prev) => prev,
            None => v,
        };
        s = Some(next);
        out.push(next);
    }
    out
}

/// Round to hundredths and clamp to (0, 1]: the smallest threshold is 0.01.
pub fn clamp_threshold(v: f32) -> f32 {
    let v = if v.is_finite() { v } else { 1.0 };
    ((v * 100.0).round() / 100.0).clamp(0.01, 1.0)
}
