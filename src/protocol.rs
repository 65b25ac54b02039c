//! The messages between the engine and its clients (the in-process dashboard, attached
//! `wick attach` clients over the control socket, and `events.jsonl` on disk).
//!
//! One enum per direction. The same serde types travel on the in-process channels and on the
//! wire (one JSON object per line), so attaching to a run is not a second code path.
//! Events carry summaries and numbers only, never tensors.

use serde::{Deserialize, Serialize};

/// Bumped whenever a change to [`Command`] or [`Event`] would confuse an older peer.
pub const PROTOCOL_VERSION: u32 = 2;

/// Everything a user can ask of a running engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Finish the current batch, then idle (without burning CPU) until `Resume` or `Stop`.
    Pause,
    /// Continue after `Pause`.
    Resume,
    /// Write a checkpoint, then end the run cleanly.
    Stop,
    /// Write a checkpoint at the next batch boundary.
    SaveCheckpoint,
    /// Run a pseudo-label round at the next batch boundary.
    PseudoLabelRound,
    /// Change the pseudo-label confidence threshold (0..1]: for the following rounds, or from
    /// the next step in the online mode. Answered by `ThresholdChanged` (or a warning).
    SetThreshold { value: f32 },
    /// Change the base learning rate from the next step on (the schedule scales it).
    SetLearningRate { value: f64 },
}

/// Which part of the run an epoch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Phase {
    /// Supervised training on the labelled images (fine-tuning or from scratch).
    Supervised,
    /// Training on labelled + pseudo-labelled images after pseudo-label round `round`.
    SelfTraining { round: u32 },
}

/// How many images each part of the data holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataSizes {
    /// Labelled training images.
    pub labelled: usize,
    /// Unlabelled pool for pseudo-labelling (0 when self-training is off).
    pub unlabelled: usize,
    /// Validation images.
    pub val: usize,
}

/// Counts for one class on the validation set; the rates are derived from them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassStats {
    pub name: String,
    /// Validation images whose true class is this one.
    pub support: u64,
    /// Of those, predicted correctly.
    pub correct: u64,
    /// Validation images predicted as this class (right or wrong).
    pub predicted: u64,
}

impl ClassStats {
    /// Per-class accuracy, which is the recall of the class.
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct, self.support)
    }
    pub fn recall(&self) -> f64 {
        self.accuracy()
    }
    pub fn precision(&self) -> f64 {
        ratio(self.correct, self.predicted)
    }
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Severity of a [`Event::Log`] line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// The numbers a run ends with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Epochs completed in the whole run (supervised + self-training).
    pub epochs: u32,
    /// Validation accuracy after the last epoch.
    pub final_val_acc: f64,
    pub final_val_loss: f64,
    pub best_val_acc: f64,
    pub best_epoch: u32,
    /// Validation accuracy at the end of the supervised phase, before any pseudo-label round.
    pub supervised_val_acc: Option<f64>,
    pub rounds: u32,
    /// Pseudo-labelled images in use at the end.
    pub pseudo_labelled: usize,
    /// Precision of those pseudo-labels when the pool's true labels are known.
    pub pseudo_precision: Option<f64>,
    pub per_class: Vec<ClassStats>,
    pub wall_seconds: f64,
    /// Training throughput over the whole run (images/s, validation excluded).
    pub images_per_s: f64,
    /// True when the run ended on a `Stop` command rather than by completing its plan.
    pub stopped: bool,
}

/// One pseudo-label adopted (or a misclassified validation image), for the dashboard's samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleNote {
    pub path: String,
    /// Label given (prediction / pseudo-label).
    pub label: usize,
    pub confidence: f32,
    /// True label when known.
    pub truth: Option<usize>,
}

/// Everything the engine has to say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// First event of a run (and of every resume): what is being trained on what.
    RunStarted {
        run_id: String,
        /// Human summary of the job, e.g. "fine-tune + self-training".
        task: String,
        /// Architecture and where its initial weights came from.
        model: String,
        device: String,
        classes: Vec<String>,
        sizes: DataSizes,
        /// Planned supervised epochs.
        epochs: u32,
        /// Planned pseudo-label rounds (0 when self-training is off).
        rounds: u32,
        epochs_per_round: u32,
        batch_size: usize,
        /// Confidence threshold for pseudo-labels.
        threshold: f32,
        /// Protocol version of the engine that wrote this stream.
        protocol: u32,
        /// True when this start continues an earlier run from a checkpoint.
        resumed: bool,
    },
    /// An epoch begins.
    EpochStarted {
        epoch: u32,
        phase: Phase,
        /// Batches in this epoch.
        batches: u32,
        /// Images in this epoch (labelled + pseudo-labelled).
        images: usize,
    },
    /// Training progress; coalesced by the engine to at most ~10 per second.
    Batch {
        epoch: u32,
        /// 1-based batch index within the epoch.
        step: u32,
        of: u32,
        /// Mean loss of the batches since the previous `Batch` event.
        loss: f32,
        lr: f64,
        images_per_s: f32,
    },
    /// An epoch ended and was evaluated on the validation set.
    EpochFinished {
        epoch: u32,
        phase: Phase,
        train_loss: f32,
        train_acc: f64,
        val_loss: f32,
        val_acc: f64,
        per_class: Vec<ClassStats>,
        /// `confusion[true][predicted]` counts on the validation set.
        confusion: Vec<Vec<u64>>,
        /// Seconds spent training (excluding validation) and validating.
        train_seconds: f64,
        val_seconds: f64,
        /// A few misclassified validation images (most confident mistakes first).
        #[serde(default)]
        mistakes: Vec<SampleNote>,
    },
    /// A pseudo-label round begins: the pool is being predicted.
    RoundStarted {
        round: u32,
        pool: usize,
        threshold: f32,
        /// True for a round of the online (FixMatch-style) mode: no pool prediction; the round
        /// spans its epochs, each reported by a `RoundFinished`.
        #[serde(default)]
        online: bool,
    },
    /// A pseudo-label round selected its labels.
    RoundFinished {
        round: u32,
        /// Newly adopted in this round.
        added: usize,
        /// Pseudo-labelled images now in the training set.
        total: usize,
        /// Pseudo-labels per class now in use.
        per_class: Vec<usize>,
        /// Precision of the pseudo-labels in use, per class, when the true labels are known.
        per_class_precision: Vec<Option<f64>>,
        precision: Option<f64>,
        threshold: f32,
        /// Histogram of the pool's max-softmax confidence, 10 bins over [0, 1].
        confidence_hist: Vec<u64>,
        /// Where the round's labels were written.
        csv: String,
        /// A few of the adopted labels, for the dashboard.
        #[serde(default)]
        samples: Vec<SampleNote>,
        /// The confidence threshold each class was held to (per-class policies); empty when
        /// every class had `threshold`.
        #[serde(default)]
        thresholds: Vec<f32>,
        /// True for the online mode's end-of-epoch report: the labels in use are the unlabelled
        /// images whose weak view passed the threshold during the epoch.
        #[serde(default)]
        online: bool,
    },
    /// The engine finished its batch and is idle.
    Paused {
        epoch: u32,
        step: u32,
    },
    Resumed,
    /// The pseudo-label threshold changed.
    ThresholdChanged {
        value: f32,
    },
    /// The base learning rate changed.
    LearningRateChanged {
        value: f64,
    },
    CheckpointSaved {
        path: String,
        epoch: u32,
        step: u64,
    },
    /// The training GPU, sampled every few seconds when it changed noticeably (device-wide
    /// numbers: other processes included). Only on CUDA.
    Gpu {
        memory_used_mib: u64,
        memory_total_mib: u64,
        /// `nvidia-smi`'s `utilization.gpu`, when it is available.
        #[serde(default)]
        utilization_pct: Option<u32>,
    },
    /// A line for the dashboard's log pane.
    Log {
        level: Level,
        message: String,
    },
    /// The run completed (or was stopped) and wrote its last checkpoint.
    Finished {
        summary: Summary,
    },
    /// The run failed; `error` says why.
    Failed {
        error: String,
    },
}

impl Event {
    /// Shorthand for a log event.
    pub fn log(level: Level, message: impl Into<String>) -> Self {
        Event::Log {
            level,
            message: message.into(),
        }
    }

    /// Whether the run has ended with this event.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Event::Finished { .. } | Event::Failed { .. })
    }
}

/// An event as stored in `events.jsonl` and sent to clients: numbered and timestamped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// Position in the run's event stream, from 0; continues across resumes.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_as_one_json_line() {
        let cmds = [
            Command::Pause,
            Command::SetThreshold { value: 0.9 },
            Command::SetLearningRate { value: 0.01 },
        ];
        for c in cmds {
            let line = serde_json::to_string(&c).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Command>(&line).unwrap(), c);
        }
        assert_eq!(
            serde_json::to_string(&Command::Pause).unwrap(),
            r#"{"cmd":"pause"}"#
        );
    }

    #[test]
    fn stamped_events_flatten_the_tag() {
        let s = Stamped {
            seq: 3,
            at_ms: 10,
            event: Event::Paused { epoch: 1, step: 2 },
        };
        let line = serde_json::to_string(&s).unwrap();
        assert_eq!(
            line,
            r#"{"seq":3,"at_ms":10,"event":"paused","epoch":1,"step":2}"#
        );
        assert_eq!(serde_json::from_str::<Stamped>(&line).unwrap(), s);
    }

    #[test]
    fn class_rates() {
        let c = ClassStats {
            name: "Coat".into(),
            support: 10,
            correct: 8,
            predicted: 16,
        };
        assert_eq!(c.accuracy(), 0.8);
        assert_eq!(c.precision(), 0.5);
        assert!((c.f1() - 2.0 * 0.4 / 1.3).abs() < 1e-12);
        assert_eq!(ClassStats::default().f1(), 0.0);
    }
}
