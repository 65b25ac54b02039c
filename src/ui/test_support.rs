//! A realistic event stream for the dashboard's tests: a Fashion-MNIST (5 classes) fine-tune
//! with self-training, as the engine would emit it (numbered, timestamped, coalesced batches).

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::Terminal;

use crate::protocol::{
    ClassStats, DataSizes, Event, Level, Phase, SampleNote, Stamped, Summary, PROTOCOL_VERSION,
};

use super::state::{App, Msg, ViewOptions};
use super::view;

pub const CLASSES: [&str; 5] = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat"];
pub const RUN_ID: &str = "20250301-fmnist5-a7";
/// Validation images per class.
const SUPPORT: u64 = 200;
const BATCHES: u32 = 94;
const BATCH_SIZE: usize = 64;

/// The first files of each class in the bundled `data/fashion-target` (class order as
/// [`CLASSES`]): two validation images and three training images per class.
const VAL_FILES: [[&str; 2]; 5] = [
    ["00019", "00027"],
    ["00002", "00003"],
    ["00001", "00016"],
    ["00013", "00029"],
    ["00006", "00010"],
];
const TRAIN_FILES: [[&str; 3]; 5] = [
    ["00001", "00002", "00004"],
    ["00016", "00021", "00038"],
    ["00005", "00007", "00027"],
    ["00003", "00020", "00025"],
    ["00019", "00022", "00024"],
];
/// A validation image that does not exist (the dashboard must say so, not crash).
pub const MISSING_IMAGE: &str = "data/fashion-target/val/Coat/99999.png";

/// Misclassified validation images for an epoch: for each class, one mistaken for the next
/// class and one for the previous (as in [`confusion`]), most confident first; then one whose
/// file is missing. Paths are relative to the repository root (the tests' working directory).
pub fn mistakes(epoch: u32) -> Vec<SampleNote> {
    let mut v = Vec::new();
    for (i, files) in VAL_FILES.iter().enumerate() {
        for (k, f) in files.iter().enumerate() {
            let pred = if k == 0 { (i + 1) % 5 } else { (i + 4) % 5 };
            v.push(SampleNote {
                path: format!("data/fashion-target/val/{}/{f}.png", CLASSES[i]),
                label: pred,
                confidence: 0.0,
                truth: Some(i),
            });
        }
    }
    let n = v.len();
    for (j, note) in v.iter_mut().enumerate() {
        note.confidence = 0.97 - 0.04 * j as f32 - 0.01 * epoch as f32;
    }
    v.push(SampleNote {
        path: MISSING_IMAGE.into(),
        label: 2,
        confidence: 0.97 - 0.04 * n as f32,
        truth: Some(4),
    });
    v
}

/// Pseudo-labels adopted in a round: three training images per class; one of Pullover's is
/// really a Coat; one of Dress's true label is unknown.
pub fn pseudo_samples() -> Vec<SampleNote> {
    let mut v = Vec::new();
    for (i, files) in TRAIN_FILES.iter().enumerate() {
        for (k, f) in files.iter().enumerate() {
            // A Coat (train/Coat/00028.png) labelled Pullover.
            let (dir, f, truth) = match (i, k) {
                (2, 2) => (4, "00028", Some(4)),
                (3, 2) => (3, *f, None),
                _ => (i, *f, Some(i)),
            };
            v.push(SampleNote {
                path: format!("data/fashion-target/train/{}/{f}.png", CLASSES[dir]),
                label: i,
                confidence: 0.99 - 0.015 * k as f32,
                truth,
            });
        }
    }
    v
}

/// Appends events with increasing `seq` and a clock that moves forward.
pub struct Script {
    pub seq: u64,
    pub now_ms: u64,
    pub events: Vec<Stamped>,
}

impl Script {
    pub fn new() -> Self {
        Script {
            seq: 0,
            now_ms: 1_740_816_000_000, // 2025-03-01 08:00:00 UTC
            events: Vec::new(),
        }
    }

    /// Advance the clock, then append.
    pub fn after(&mut self, ms: u64, event: Event) -> &mut Self {
        self.now_ms += ms;
        self.events.push(Stamped {
            seq: self.seq,
            at_ms: self.now_ms,
            event,
        });
        self.seq += 1;
        self
    }

    pub fn run_started(&mut self, resumed: bool) -> &mut Self {
        self.after(
            0,
            Event::RunStarted {
                run_id: RUN_ID.into(),
                task: "fine-tune + self-training".into(),
                model: "resnet18 (imagenet)".into(),
                device: "cpu".into(),
                classes: CLASSES.iter().map(|s| s.to_string()).collect(),
                sizes: DataSizes {
                    labelled: 6000,
                    unlabelled: 20000,
                    val: 1000,
                },
                epochs: 3,
                rounds: 2,
                epochs_per_round: 1,
                batch_size: BATCH_SIZE,
                threshold: 0.95,
                protocol: PROTOCOL_VERSION,
                resumed,
            },
        )
    }

    /// `EpochStarted` and batches up to `upto` (every 10 steps, ~100 ms apart at ~850 img/s).
    pub fn epoch_batches(&mut self, epoch: u32, phase: Phase, upto: u32) -> &mut Self {
        self.after(
            50,
            Event::EpochStarted {
                epoch,
                phase,
                batches: BATCHES,
                images: BATCHES as usize * BATCH_SIZE,
            },
        );
        self.more_batches(epoch, 1, upto)
    }

    pub fn more_batches(&mut self, epoch: u32, from: u32, upto: u32) -> &mut Self {
        let mut step = from;
        while step <= upto {
            let progress = epoch.saturating_sub(1) as f32 + step as f32 / BATCHES as f32;
            let loss = 1.6 * (-0.9 * progress).exp() + 0.2 + 0.03 * ((step % 7) as f32 / 7.0);
            self.after(
                750,
                Event::Batch {
                    epoch,
                    step,
                    of: BATCHES,
                    loss,
                    lr: 0.01,
                    images_per_s: 850.0 + (step % 5) as f32,
                },
            );
            step = if step == upto {
                upto + 1
            } else {
                (step + 10).min(upto)
            };
        }
        self
    }

    /// `EpochFinished` with per-class stats derived from a confusion matrix.
    pub fn epoch_finished(&mut self, epoch: u32, phase: Phase) -> &mut Self {
        let confusion = confusion(epoch);
        let per_class = stats(&confusion);
        let correct: u64 = per_class.iter().map(|c| c.correct).sum();
        let total: u64 = per_class.iter().map(|c| c.support).sum();
        let val_acc = correct as f64 / total as f64;
        self.after(
            1200,
            Event::EpochFinished {
                epoch,
                phase,
                train_loss: 1.0 / (epoch as f32 + 0.5),
                train_acc: 0.70 + 0.05 * f64::from(epoch),
                val_loss: 0.9 / (epoch as f32 + 0.4),
                val_acc,
                per_class,
                confusion,
                train_seconds: 70.0,
                val_seconds: 1.2,
                mistakes: mistakes(epoch),
            },
        )
    }

    pub fn round(&mut self, round: u32, added: usize, total: usize) -> &mut Self {
        self.after(
            100,
            Event::RoundStarted {
                round,
                pool: 20000,
                threshold: 0.95,
                online: false,
            },
        );
        let weights = [3usize, 6, 2, 4, 1];
        let sum: usize = weights.iter().sum();
        let mut per_class: Vec<usize> = weights.iter().map(|w| total * w / sum).collect();
        let assigned: usize = per_class.iter().sum();
        per_class[1] += total - assigned;
        self.after(
            24_000,
            Event::RoundFinished {
                round,
                added,
                total,
                per_class,
                per_class_precision: vec![
                    Some(0.97),
                    Some(0.995),
                    Some(0.93),
                    Some(0.96),
                    Some(0.9),
                ],
                precision: Some(0.962),
                threshold: 0.95,
                confidence_hist: vec![10, 40, 90, 200, 400, 700, 1100, 1900, 3800, 11760],
                csv: format!("runs/{RUN_ID}/pseudo_labels/round-{round:02}.csv"),
                samples: pseudo_samples(),
                thresholds: Vec::new(),
                online: false,
            },
        )
    }

    pub fn log(&mut self, level: Level, msg: &str) -> &mut Self {
        self.after(10, Event::log(level, msg))
    }
}

/// Confusion matrix for `epoch`: the diagonal improves with the epoch.
pub fn confusion(epoch: u32) -> Vec<Vec<u64>> {
    let base = [150u64, 185, 140, 160, 120];
    (0..5)
        .map(|i| {
            let correct = (base[i] + 8 * u64::from(epoch)).min(SUPPORT - 2);
            let wrong = SUPPORT - correct;
            let mut row = vec![0u64; 5];
            row[i] = correct;
            // Mistakes go to the two neighbours.
            row[(i + 1) % 5] += wrong / 2;
            row[(i + 4) % 5] += wrong - wrong / 2;
            row
        })
        .collect()
}

/// Per-class counts from a confusion matrix.
pub fn stats(confusion: &[Vec<u64>]) -> Vec<ClassStats> {
    (0..confusion.len())
        .map(|i| ClassStats {
            name: CLASSES[i].into(),
            support: confusion[i].iter().sum(),
            correct: confusion[i][i],
            predicted: confusion.iter().map(|row| row[i]).sum(),
        })
        .collect()
}

/// Three supervised epochs, round 1, and self-training epoch 4 under way (batch 51/94).
pub fn running() -> Script {
    let mut s = Script::new();
    s.run_started(false).log(
        Level::Info,
        "loaded 6000 labelled, 20000 unlabelled, 1000 val images",
    );
    for e in 1..=3 {
        s.epoch_batches(e, Phase::Supervised, BATCHES)
            .epoch_finished(e, Phase::Supervised);
    }
    s.after(
        300,
        Event::CheckpointSaved {
            path: format!("runs/{RUN_ID}/checkpoints/epoch-003"),
            epoch: 3,
            step: 282,
        },
    );
    s.round(1, 8123, 8123);
    s.log(
        Level::Warn,
        "pseudo-label class balance: Coat has 5x fewer labels than Trouser",
    );
    s.epoch_batches(4, Phase::SelfTraining { round: 1 }, 51);
    s
}

/// [`running`], then paused mid-epoch.
pub fn paused() -> Script {
    let mut s = running();
    s.after(200, Event::Paused { epoch: 4, step: 51 });
    s
}

/// The whole run: 3 supervised epochs, 2 rounds of 1 epoch each, `Finished`.
pub fn finished() -> Script {
    let mut s = running();
    s.more_batches(4, 61, BATCHES)
        .epoch_finished(4, Phase::SelfTraining { round: 1 });
    s.round(2, 2050, 10173);
    s.epoch_batches(5, Phase::SelfTraining { round: 2 }, BATCHES)
        .epoch_finished(5, Phase::SelfTraining { round: 2 });
    let last = confusion(5);
    let per_class = stats(&last);
    s.after(
        500,
        Event::Finished {
            summary: Summary {
                epochs: 5,
                final_val_acc: 0.926,
                final_val_loss: 0.1667,
                best_val_acc: 0.926,
                best_epoch: 5,
                supervised_val_acc: Some(0.864),
                rounds: 2,
                pseudo_labelled: 10173,
                pseudo_precision: Some(0.962),
                per_class,
                wall_seconds: 431.0,
                images_per_s: 851.0,
                stopped: false,
            },
        },
    );
    s
}

/// A recorded event stream (`events.jsonl`); a line that does not parse panics with its
/// file and line number.
pub fn load_events(path: &std::path::Path) -> Vec<Stamped> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Fold `events` into a fresh app.
pub fn app_from(events: &[Stamped], opts: ViewOptions) -> App {
    let mut app = App::new(opts);
    for e in events {
        app.update(Msg::Event(e.clone()));
    }
    app
}

/// Draw `app` into a `w` x `h` test terminal and return the buffer.
pub fn render(app: &App, w: u16, h: u16) -> Buffer {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    term.draw(|f| view::draw(f, app)).expect("draw");
    term.backend().buffer().clone()
}

/// The buffer as text, one line per row (trailing spaces kept).
pub fn text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in 0..area.height {
        for x in 0..area.width {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}
