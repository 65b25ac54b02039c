//! Self-training end to end on small real slices: the options of pseudo-label rounds, the
//! online FixMatch-style mode, commands through the channel, and resume-safe state. Also the
//! (ignored) export of the Fashion-MNIST benchmark folders used by `configs/bench/ssl-*.toml`.

mod common;

use std::path::PathBuf;

/// Writes the whole of Fashion-MNIST as ImageFolders for the self-training benchmark
/// (`configs/bench/ssl-*.toml`): `train/` with the 60,000 training images (6,000 per class;
/// the runs keep 40 labels per class and hide the rest), `val/` with the 10,000 test images.
///
/// ```text
/// WICK_SSL_DATA=/tmp/wick-fmnist-full cargo test --release --test self_training -- --ignored export_benchmark_data
/// ```
#[test]
#[ignore = "writes 70,000 PNGs (about 30 s); run by configs/bench/ssl-run.sh"]
fn export_benchmark_data() {
    let out = std::env::var_os("WICK_SSL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/wick-fmnist-full"));
    let spec = wick::data::ExportSpec {
        classes: wick::data::FASHION_CLASSES
            .iter()
            .map(|c| c.to_string())
            .collect(),
        train_per_class: 6000,
        val_per_class: 1000,
        overwrite: true,
    };
    let report = wick::data::export_fashion_mnist(
        std::path::Path::new("/usr/share/datasets/fashion-mnist"),
        &out,
        &spec,
    )
    .expect("export");
    assert_eq!(report.train_counts.iter().sum::<usize>(), 60_000);
    assert_eq!(report.val_counts.iter().sum::<usize>(), 10_000);
    eprintln!("wrote {} ({} bytes)", out.display(), report.bytes);
}

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use wick::config::Config;
use wick::engine::{self, checkpoint};
use wick::hub::{self, EventHub};
use wick::protocol::{Command, Event, Level, Stamped};

fn start_with(
    config_text: &str,
    resume: Option<(wick::rundir::RunDir, checkpoint::Checkpoint)>,
) -> (
    wick::rundir::RunDir,
    std::sync::Arc<EventHub>,
    engine::EngineHandle,
) {
    let config = Config::parse(config_text, Path::new("tiny.toml")).expect("config");
    let (run, ckpt) = match resume {
        Some((run, c)) => (run, Some(c.into())),
        None => (wick::launch::create_run(&config).expect("run dir"), None),
    };
    let hub = EventHub::open(&run.events()).expect("hub");
    let handle = engine::spawn(config, run.clone(), hub.clone(), ckpt).expect("spawn");
    (run, hub, handle)
}

fn start(
    config_text: &str,
) -> (
    wick::rundir::RunDir,
    std::sync::Arc<EventHub>,
    engine::EngineHandle,
) {
    start_with(config_text, None)
}

/// A config on a slice of `train` images per class (of the 5 bundled classes), `labels` of them
/// labelled, the rest the pool; `extra` goes under `[train]` and may open `[self_training]`.
fn config(data: &Path, runs: &Path, labels: usize, extra: &str) -> String {
    common::tiny_config(data, runs, extra).replace(
        "[data]\n",
        &format!("[data]\nlabels_per_class = {labels}\n"),
    )
}

fn events(run: &wick::rundir::RunDir) -> Vec<Event> {
    hub::read_events(&run.events())
        .expect("events")
        .into_iter()
        .map(|s| s.event)
        .collect()
}

async fn next(rx: &mut Receiver<Stamped>) -> Event {
    tokio::time::timeout(Duration::from_secs(180), rx.recv())
        .await
        .expect("an event within 3 minutes")
        .expect("stream open")
        .event
}

#[test]
fn rounds_with_soft_labels_ramp_up_reinit_and_a_pool_sample() {
    let data = common::fashion_slice(100, 20);
    let runs = tempfile::tempdir().unwrap();
    let extra = "epochs = 3\nbatch_size = 16\n[self_training]\nenabled = true\nrounds = 2\n\
                 epochs_per_round = 1\nthreshold = 0.6\npolicy = \"global\"\nsoft_labels = true\n\
                 temperature = 0.5\npseudo_weight_rampup_rounds = 2\nreinit = true\n\
                 round_pool = 200\nmin_epoch_images = 160\n";
    let (run, _hub, handle) = start(&config(data.path(), runs.path(), 20, extra));
    let summary = handle.join().expect("run succeeds");
    let ev = events(&run);
    let pools: Vec<usize> = ev
        .iter()
        .filter_map(|e| match e {
            Event::RoundStarted { pool, online, .. } => {
                assert!(!online);
                Some(*pool)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        pools,
        vec![200, 200],
        "each round predicts a 200-image sample"
    );
    let totals: Vec<(usize, usize)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::RoundFinished {
                added,
                total,
                per_class,
                csv,
                thresholds,
                ..
            } => {
                assert_eq!(per_class.iter().sum::<usize>(), *total);
                assert_eq!(thresholds, &vec![0.6; 5]);
                let text = std::fs::read_to_string(csv).expect("csv");
                assert_eq!(text.lines().count(), total + 1);
                Some((*added, *total))
            }
            _ => None,
        })
        .collect();
    assert_eq!(totals.len(), 2);
    assert!(totals[0].1 > 0, "round 1 adopted labels: {totals:?}");
    // The second round keeps labels outside its sample: the set does not shrink to one sample.
    assert!(totals[1].1 >= totals[1].0);
    let reinits = ev
        .iter()
        .filter(|e| matches!(e, Event::Log { message, .. } if message.contains("re-initialised from the seeded initialisation")))
        .count();
    assert_eq!(reinits, 2);
    // min_epoch_images: supervised epochs repeat the 100 labelled images to 200.
    let first = ev
        .iter()
        .find_map(|e| match e {
            Event::EpochStarted { images, .. } => Some(*images),
            _ => None,
        })
        .expect("an epoch");
    assert_eq!(first, 200);
    assert_eq!(summary.rounds, 2);
    assert_eq!(summary.epochs, 5);
    // Soft targets are checkpointed with the labels they belong to.
    let ckpt = checkpoint::newest_valid(&run.checkpoints(), &candle_core::Device::Cpu)
        .0
        .expect("checkpoint");
    assert_eq!(ckpt.state.ssl.soft.len(), ckpt.state.pseudo.len());
    for (row, l) in ckpt.state.ssl.soft.iter().zip(&ckpt.state.pseudo) {
        assert_eq!(row.len(), 5);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        let argmax = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap();
        assert_eq!(argmax as u32, l.label);
    }
}

#[test]
fn plateau_trigger_starts_rounds_when_validation_stalls() {
    let data = common::fashion_slice(60, 20);
    let runs = tempfile::tempdir().unwrap();
    let extra =
        "epochs = 12\nbatch_size = 16\nlr = 0.2\n[self_training]\nenabled = true\nrounds = 1\n\
                 epochs_per_round = 3\nthreshold = 0.7\ntrigger = \"plateau\"\npatience = 1\n";
    let (run, _hub, handle) = start(&config(data.path(), runs.path(), 20, extra));
    let summary = handle.join().expect("run succeeds");
    let ev = events(&run);
    // Recompute the rule from the validation accuracies: a phase ends after `patience` = 1
    // epoch without a new best within it, or when its budget (12, then 3) is spent.
    let mut accs = Vec::new();
    let mut round_after = None;
    for e in &ev {
        match e {
            Event::EpochFinished { val_acc, .. } => accs.push(*val_acc),
            Event::RoundStarted { .. } => round_after = Some(accs.len()),
            _ => {}
        }
    }
    let end_of = |phase: &[f64], budget: usize| -> usize {
        let mut best = f64::NEG_INFINITY;
        for (i, &a) in phase.iter().enumerate() {
            if a > best {
                best = a;
            } else {
                return i + 1;
            }
            if i + 1 == budget {
                return budget;
            }
        }
        phase.len()
    };
    let r = round_after.expect("a round ran");
    assert_eq!(r, end_of(&accs, 12), "round after epoch {r}: {accs:?}");
    assert_eq!(accs.len() - r, end_of(&accs[r..], 3), "{accs:?}");
    assert_eq!(summary.rounds, 1);
}

/// Noisy Student: a trained teacher (an exported run) labels the first round, and the student
/// that learns from those labels starts from scratch under the strong augmentation.
#[test]
fn a_fresh_student_learns_from_an_exported_teacher() {
    let data = common::fashion_slice(60, 20);
    let runs = tempfile::tempdir().unwrap();
    let teacher = train_and_export_teacher(data.path(), runs.path());
    let extra = "epochs = 0\nbatch_size = 16\n[self_training]\nenabled = true\nrounds = 1\n\
                 epochs_per_round = 2\nthreshold = 0.3\npseudo_weight = 1.0\nreinit = true\n\
                 reinit_from = \"scratch\"\n";
    let (run, _hub, handle) = start(&student_config(data.path(), runs.path(), &teacher, extra));
    let summary = handle.join().expect("student trains");
    assert_eq!((summary.rounds, summary.epochs), (1, 2));

    // The round's labels are the teacher's predictions (its confidence too).
    let predictor = open_predictor(&teacher);
    let csv = std::fs::read_to_string(run.path.join("pseudo_labels/round-01.csv")).expect("csv");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(
        rows.len() > 10,
        "the teacher labelled only {} images",
        rows.len()
    );
    for row in rows {
        let f: Vec<&str> = row.split(',').collect();
        let p = predictor.predict(Path::new(f[0]), 1).expect("predict");
        assert_eq!(p.top[0].index.to_string(), f[1], "{row}");
        let confidence: f32 = f[3].parse().expect("confidence");
        assert!(
            (p.top[0].probability - confidence).abs() < 1e-4,
            "{row}: {p:?}"
        );
    }
    // ... and the student that learns them starts over from the seeded initialisation.
    assert!(events(&run)
        .iter()
        .any(|e| matches!(e, Event::Log { message, .. }
        if message == "round 1: model re-initialised from the seeded initialisation")));
}

/// `predict_flip`: a round's confidence is the mean of the teacher's probabilities for the
/// image and for its mirror image, and its label the argmax of that mean.
#[test]
fn predict_flip_averages_each_pool_image_with_its_mirror() {
    let data = common::fashion_slice(60, 20);
    let runs = tempfile::tempdir().unwrap();
    let teacher = train_and_export_teacher(data.path(), runs.path());
    let extra = "epochs = 0\nbatch_size = 16\n[self_training]\nenabled = true\nrounds = 1\n\
                 epochs_per_round = 1\nthreshold = 0.3\nreinit = true\n\
                 reinit_from = \"scratch\"\npredict_flip = true\n";
    let (run, _hub, handle) = start(&student_config(data.path(), runs.path(), &teacher, extra));
    handle.join().expect("student trains");

    let predictor = open_predictor(&teacher);
    let classes = predictor.classes().len();
    let probabilities = |path: &Path| -> Vec<f32> {
        let p = predictor.predict(path, classes).expect("predict");
        let mut row = vec![0.0; classes];
        for r in p.top {
            row[r.index] = r.probability;
        }
        row
    };
    let mirrors = tempfile::tempdir().unwrap();
    let csv = std::fs::read_to_string(run.path.join("pseudo_labels/round-01.csv")).expect("csv");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(rows.len() > 10, "only {} labels", rows.len());
    let mut changed = 0;
    for (i, row) in rows.iter().enumerate() {
        let f: Vec<&str> = row.split(',').collect();
        let image = image::open(f[0]).expect("pool image");
        let mirror = mirrors.path().join(format!("{i}.png"));
        image::imageops::flip_horizontal(&image)
            .save(&mirror)
            .expect("mirror");
        let (plain, flipped) = (probabilities(Path::new(f[0])), probabilities(&mirror));
        let mean: Vec<f32> = plain
            .iter()
            .zip(&flipped)
            .map(|(a, b)| (a + b) / 2.0)
            .collect();
        let (label, confidence) = wick::engine::metrics::argmax(&mean);
        assert_eq!(label.to_string(), f[1], "{row}: {mean:?}");
        let written: f32 = f[3].parse().expect("confidence");
        assert!((confidence - written).abs() < 1e-4, "{row}: {mean:?}");
        let (_, unflipped) = wick::engine::metrics::argmax(&plain);
        if (unflipped - written).abs() > 1e-3 {
            changed += 1;
        }
    }
    assert!(changed > 0, "the mirror images changed no confidence");
}

/// Trains a small supervised run on `data` and exports it as a teacher's weights file.
fn train_and_export_teacher(data: &Path, runs: &Path) -> PathBuf {
    let (teacher_run, _hub, handle) =
        start(&config(data, runs, 20, "epochs = 3\nbatch_size = 16\n"));
    handle.join().expect("teacher trains");
    let teacher = runs.join("teacher.safetensors");
    wick::export::export_run(&teacher_run.path, &teacher).expect("export");
    teacher
}

/// A student run: fresh model under the strong augmentation, `teacher` as `model.pretrained`.
fn student_config(data: &Path, runs: &Path, teacher: &Path, extra: &str) -> String {
    config(data, runs, 20, extra)
        .replace(
            "[model]\n",
            &format!("[model]\npretrained = \"{}\"\n", teacher.display()),
        )
        .replace("augment = \"flip_crop\"", "augment = \"strong\"")
}

fn open_predictor(weights: &Path) -> wick::predict::Predictor {
    wick::predict::Predictor::open(&wick::predict::Source::Weights {
        path: weights.to_path_buf(),
        arch: None,
        channels: None,
        size: None,
    })
    .expect("teacher")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_round_and_threshold_through_the_command_channel() {
    let data = common::fashion_slice(60, 10);
    let runs = tempfile::tempdir().unwrap();
    let extra = "epochs = 40\nbatch_size = 8\n[self_training]\nenabled = true\nrounds = 0\n\
                 threshold = 0.9\n";
    let (run, hub, handle) = start(&config(data.path(), runs.path(), 20, extra));
    let mut rx = hub::follow(&hub, None, 4096);
    let commands = handle.commands();
    // After a few epochs, so that some predictions are confident.
    let mut epochs = 0;
    while epochs < 3 {
        if let Event::EpochFinished { .. } = next(&mut rx).await {
            epochs += 1;
        }
    }
    commands.send(Command::SetThreshold { value: 1.5 }).unwrap();
    commands.send(Command::SetThreshold { value: 0.5 }).unwrap();
    commands.send(Command::PseudoLabelRound).unwrap();
    let mut warned = false;
    let mut changed = None;
    let (started, finished) = loop {
        match next(&mut rx).await {
            Event::Log { level, message } if level == Level::Warn && message.contains("1.5") => {
                warned = true
            }
            Event::ThresholdChanged { value } => changed = Some(value),
            Event::RoundStarted { threshold, .. } => {
                let finished = loop {
                    if let Event::RoundFinished {
                        threshold, total, ..
                    } = next(&mut rx).await
                    {
                        break (threshold, total);
                    }
                };
                break (threshold, finished);
            }
            Event::Failed { error } => panic!("failed: {error}"),
            _ => {}
        }
    };
    assert!(
        warned,
        "an out-of-range threshold is refused with a warning"
    );
    assert_eq!(changed, Some(0.5));
    assert_eq!(started, 0.5);
    assert_eq!(finished.0, 0.5);
    assert!(finished.1 > 0);
    commands.send(Command::Stop).unwrap();
    let summary = tokio::task::spawn_blocking(move || handle.join())
        .await
        .unwrap()
        .unwrap();
    assert!(summary.stopped);
    assert_eq!(summary.rounds, 1);
    assert!(run.pseudo_labels().join("round-01.csv").is_file());
}

#[test]
fn fixmatch_mode_learns_reports_per_epoch_and_resumes_with_its_teacher() {
    let data = common::fashion_slice(120, 20);
    let runs = tempfile::tempdir().unwrap();
    let extra = "epochs = 2\nbatch_size = 16\nlr = 0.05\nkeep_checkpoints = 10\n[self_training]\nenabled = true\n\
                 mode = \"fixmatch\"\nrounds = 3\nepochs_per_round = 1\nthreshold = 0.8\n\
                 mu = 2\nsteps_per_epoch = 12\nema = true\npolicy = \"adaptive\"\n\
                 min_threshold = 0.7\nmin_epoch_images = 200\n";
    let text = config(data.path(), runs.path(), 20, extra);
    let (run, _hub, handle) = start(&text);
    let summary = handle.join().expect("run succeeds");
    let ev = events(&run);
    let started: Vec<bool> = ev
        .iter()
        .filter_map(|e| match e {
            Event::RoundStarted { online, .. } => Some(*online),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![true; 3]);
    let reports: Vec<(u32, usize, Option<f64>, u64)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::RoundFinished {
                round,
                total,
                precision,
                confidence_hist,
                online,
                thresholds,
                per_class,
                ..
            } => {
                assert!(online);
                assert_eq!(thresholds.len(), 5);
                assert!(
                    thresholds.iter().all(|&t| (0.7..=0.8).contains(&t)),
                    "{thresholds:?}"
                );
                assert_eq!(per_class.iter().sum::<usize>(), *total);
                Some((*round, *total, *precision, confidence_hist.iter().sum()))
            }
            _ => None,
        })
        .collect();
    // One report per online epoch; every weak view (12 steps × 32) lands in the histogram.
    assert_eq!(
        reports.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(reports.iter().all(|r| r.3 == 12 * 32), "{reports:?}");
    assert!(reports.iter().any(|r| r.1 > 0), "{reports:?}");
    // Online epochs are 12 steps of 16 labelled images.
    let sizes: Vec<(u32, u32)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::EpochStarted { epoch, batches, .. } => Some((*epoch, *batches)),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![(1, 13), (2, 13), (3, 12), (4, 12), (5, 12)]);
    assert!(
        summary.final_val_acc > 0.4,
        "5 classes: chance is 20%, got {}",
        summary.final_val_acc
    );
    assert_eq!(summary.rounds, 3);
    assert_eq!(summary.epochs, 5);

    // The EMA teacher is checkpointed with the optimizer state; the run resumes from it.
    let ckpts = checkpoint::list_steps(&run.checkpoints());
    let ckpt = checkpoint::load(
        ckpts.last().expect("a checkpoint"),
        &candle_core::Device::Cpu,
    )
    .expect("load");
    assert!(ckpt.optim.keys().any(|k| k.starts_with("ema.features.")));
    assert!(ckpt.optim.contains_key("ema.num_updates"));
    assert!(ckpt.optim.keys().any(|k| k.ends_with(".momentum_buffer")));
    let mid = ckpts
        .iter()
        .map(|p| checkpoint::load(p, &candle_core::Device::Cpu).expect("load"))
        .find(|c| c.state.epoch == 3)
        .expect("the checkpoint after epoch 3");
    assert_eq!(mid.state.round, 1);
    assert_eq!(mid.state.ssl.selected.len(), 500);
    let before = summary.final_val_acc;
    let (_, _, again) = start_with(&text, Some((run.clone(), mid)));
    let resumed = again.join().expect("resumed run succeeds");
    assert_eq!(resumed.epochs, 5);
    assert_eq!(resumed.final_val_acc, before, "resume is exact on CPU");
}

#[test]
fn an_ema_that_only_validates_leaves_training_as_without_it() {
    let data = common::fashion_slice(120, 20);
    let runs = tempfile::tempdir().unwrap();
    let run_with = |ema: &str| {
        let extra = format!(
            "epochs = 0\nbatch_size = 16\nlr = 0.05\n[self_training]\nenabled = true\n\
             mode = \"fixmatch\"\nrounds = 2\nepochs_per_round = 1\nthreshold = 0.6\n\
             mu = 2\nsteps_per_epoch = 10\n{ema}"
        );
        let (run, _hub, handle) = start(&config(data.path(), runs.path(), 20, &extra));
        let summary = handle.join().expect("run succeeds");
        let csvs: Vec<String> = (1..=2)
            .map(|r| {
                std::fs::read_to_string(run.pseudo_labels().join(format!("round-{r:02}.csv")))
                    .expect("round CSV")
            })
            .collect();
        (summary.final_val_acc, csvs)
    };
    let (plain_acc, plain) = run_with("ema = false\n");
    let (eval_acc, eval_only) = run_with("ema = true\nema_decay = 0.9\nema_pseudo_label = false\n");
    let (_, teacher) = run_with("ema = true\nema_decay = 0.9\n");
    assert!(plain.iter().all(|c| c.lines().count() > 1), "{plain:?}");
    // The model being trained labels in both: the same pseudo-labels, step for step.
    assert_eq!(plain, eval_only);
    // The average validates (another model, so another accuracy) ...
    assert_ne!(plain_acc, eval_acc);
    // ... and, as a mean teacher, labels differently.
    assert_ne!(plain, teacher);
}
