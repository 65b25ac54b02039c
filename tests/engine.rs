//! The engine on small real slices of the bundled Fashion-MNIST data: learning, the event
//! sequence, commands through the channel, and pseudo-label rounds.

mod common;

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use wick::config::Config;
use wick::engine;
use wick::hub::{self, EventHub};
use wick::protocol::{Command, Event, Stamped};

fn start(
    config_text: &str,
) -> (
    wick::rundir::RunDir,
    std::sync::Arc<EventHub>,
    engine::EngineHandle,
) {
    let config = Config::parse(config_text, Path::new("tiny.toml")).expect("config");
    let run = wick::launch::create_run(&config).expect("run dir");
    let hub = EventHub::open(&run.events()).expect("hub");
    let handle = engine::spawn(config, run.clone(), hub.clone(), None).expect("spawn");
    (run, hub, handle)
}

async fn next(rx: &mut Receiver<Stamped>) -> Event {
    tokio::time::timeout(Duration::from_secs(120), rx.recv())
        .await
        .expect("an event within 2 minutes")
        .expect("stream open")
        .event
}

fn tag(e: &Event) -> &'static str {
    match e {
        Event::RunStarted { .. } => "run_started",
        Event::EpochStarted { .. } => "epoch_started",
        Event::Batch { .. } => "batch",
        Event::EpochFinished { .. } => "epoch_finished",
        Event::RoundStarted { .. } => "round_started",
        Event::RoundFinished { .. } => "round_finished",
        Event::Paused { .. } => "paused",
        Event::Resumed => "resumed",
        Event::ThresholdChanged { .. } => "threshold_changed",
        Event::LearningRateChanged { .. } => "lr_changed",
        Event::CheckpointSaved { .. } => "checkpoint_saved",
        Event::Log { .. } => "log",
        Event::Gpu { .. } => "gpu",
        Event::Finished { .. } => "finished",
        Event::Failed { .. } => "failed",
    }
}

#[test]
fn learns_above_chance_with_the_expected_event_sequence_and_is_deterministic() {
    let data = common::fashion_slice(40, 30);
    let runs = tempfile::tempdir().unwrap();
    let text = common::tiny_config(data.path(), runs.path(), "");
    let mut finals = Vec::new();
    for _ in 0..2 {
        let (run, _hub, handle) = start(&text);
        let summary = handle.join().expect("run succeeds");
        let events = hub::read_events(&run.events()).unwrap();
        // Shape of the stream: start, then per epoch started → batches → finished → checkpoint.
        let tags: Vec<&str> = events
            .iter()
            .map(|e| tag(&e.event))
            .filter(|t| *t != "batch" && *t != "log")
            .collect();
        let mut expected = vec!["run_started"];
        for _ in 0..4 {
            expected.extend(["epoch_started", "epoch_finished", "checkpoint_saved"]);
        }
        expected.extend(["checkpoint_saved", "finished"]);
        // The best checkpoint is written silently; epoch checkpoints are announced.
        assert_eq!(tags, expected);
        assert!(events
            .iter()
            .any(|e| matches!(e.event, Event::Batch { .. })));
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>());
        // 5 classes: chance is 20%.
        assert!(
            summary.final_val_acc > 0.5,
            "val acc {} after 4 epochs on 200 images",
            summary.final_val_acc
        );
        assert_eq!(summary.per_class.len(), 5);
        assert!(run.checkpoints().join("best.safetensors").is_file());
        finals.push(summary.final_val_acc);
    }
    assert_eq!(finals[0], finals[1], "same seed, same result");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_stop_through_the_command_channel() {
    let data = common::fashion_slice(100, 10);
    let runs = tempfile::tempdir().unwrap();
    let text = common::tiny_config(data.path(), runs.path(), "epochs = 50\nbatch_size = 8");
    let (_run, hub, handle) = start(&text);
    let mut rx = hub::follow(&hub, None, 4096);
    let commands = handle.commands();
    while !matches!(next(&mut rx).await, Event::Batch { .. }) {}
    commands.send(Command::Pause).unwrap();
    loop {
        match next(&mut rx).await {
            Event::Paused { .. } => break,
            Event::Batch { .. } | Event::Log { .. } => {}
            other => panic!("unexpected before Paused: {other:?}"),
        }
    }
    // Paused: nothing happens for a while.
    let quiet = tokio::time::timeout(Duration::from_millis(700), rx.recv()).await;
    assert!(quiet.is_err(), "no events while paused, got {quiet:?}");
    commands.send(Command::Resume).unwrap();
    assert!(matches!(next(&mut rx).await, Event::Resumed));
    loop {
        if let Event::Batch { .. } = next(&mut rx).await {
            break;
        }
    }
    commands.send(Command::SetThreshold { value: 0.9 }).unwrap();
    commands.send(Command::Stop).unwrap();
    let mut saw_threshold = false;
    let summary = loop {
        match next(&mut rx).await {
            Event::ThresholdChanged { value } => {
                assert_eq!(value, 0.9);
                saw_threshold = true;
            }
            Event::Finished { summary } => break summary,
            Event::Failed { error } => panic!("failed: {error}"),
            _ => {}
        }
    };
    assert!(saw_threshold);
    assert!(summary.stopped);
    let joined = tokio::task::spawn_blocking(move || handle.join())
        .await
        .unwrap()
        .unwrap();
    assert!(joined.stopped);
}

#[test]
fn a_round_adopts_confident_pseudo_labels_and_writes_the_csv() {
    let data = common::fashion_slice(120, 30);
    let runs = tempfile::tempdir().unwrap();
    let extra = "epochs = 4\nbatch_size = 8\n[self_training]\nenabled = true\nrounds = 1\nepochs_per_round = 1\nthreshold = 0.6\npolicy = \"global\"\n";
    let text = common::tiny_config(data.path(), runs.path(), extra)
        .replace("[data]\n", "[data]\nlabels_per_class = 20\n");
    let (run, _hub, handle) = start(&text);
    let summary = handle.join().expect("run succeeds");
    let events = hub::read_events(&run.events()).unwrap();
    let round = events
        .iter()
        .find_map(|e| match &e.event {
            Event::RoundFinished {
                total,
                precision,
                csv,
                per_class,
                ..
            } => Some((*total, *precision, csv.clone(), per_class.clone())),
            _ => None,
        })
        .expect("a round ran");
    let (total, precision, csv, per_class) = round;
    assert!(total > 0, "some pseudo-labels adopted");
    assert_eq!(per_class.iter().sum::<usize>(), total);
    assert!(precision.expect("pool labels known") > 0.6);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), total + 1);
    assert!(text.starts_with("path,label,class,confidence\n"));
    assert_eq!(summary.rounds, 1);
    assert_eq!(summary.pseudo_labelled, total);
    assert_eq!(summary.epochs, 5);
}
