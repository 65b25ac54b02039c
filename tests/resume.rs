//! `wick train --headless` as a child process, driven over its control socket: pause (and no
//! progress while paused), resume, SIGKILL after a checkpoint, `wick resume`, and final weights
//! bit-identical to an uninterrupted run. Also `--detach`, `wick ls` and `wick attach --json`.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use support::{
    count, events, newest_checkpoint, only_run, tensors, wait_for, wick, Client, Guard, PidGuard,
};
use wick::protocol::{Command, Event, Level};

/// 2 supervised epochs on 10 labelled images per class, then one automatic pseudo-label round
/// over the rest of the slice and 2 more epochs: the checkpoint must carry the round, the
/// pseudo-label set and the schedule position.
fn config(data: &Path, runs: &Path) -> String {
    let extra = "epochs = 2\nbatch_size = 2\ncheckpoint_every = 1\nkeep_checkpoints = 2\n\
                 [self_training]\nenabled = true\nrounds = 1\nepochs_per_round = 2\n\
                 threshold = 0.5\npolicy = \"global\"\n";
    common::tiny_config(data, runs, extra).replace("[data]\n", "[data]\nlabels_per_class = 10\n")
}

fn write_config(dir: &Path, name: &str, data: &Path) -> (PathBuf, PathBuf) {
    let runs = dir.join(format!("runs-{name}"));
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config(data, &runs)).unwrap();
    (cfg, runs)
}

fn spawn(args: &[&str], path: &Path, log: &Path) -> Guard {
    let log = std::fs::File::create(log).unwrap();
    let child = wick()
        .args(args)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start wick");
    Guard::new(child)
}

fn finish(child: Guard, log: &Path) {
    let status = child.take().wait().unwrap();
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Waits for the single run under `runs` to serve its socket; returns its directory.
fn live_run(runs: &Path, child: &mut Child) -> PathBuf {
    wait_for("the control socket", Duration::from_secs(60), || {
        assert!(child.try_wait().unwrap().is_none(), "wick exited early");
        std::fs::read_dir(runs)
            .ok()
            .and_then(|mut d| d.next())
            .is_some_and(|e| e.unwrap().path().join("control.sock").exists())
    });
    only_run(runs)
}

fn assert_same_weights(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "same tensors"
    );
    for (name, (shape, bytes)) in &ta {
        let (shape_b, bytes_b) = &tb[name];
        assert_eq!(shape, shape_b, "{name}: shape");
        assert!(
            bytes == bytes_b,
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
    assert!(ta.keys().any(|k| k.starts_with("model.")));
    assert!(ta.keys().any(|k| k.starts_with("optim.")));
    eprintln!(
        "{} tensors bit-identical ({} vs {})",
        ta.len(),
        a.display(),
        b.display()
    );
}

fn batches(run: &Path) -> usize {
    count(&events(run), |e| matches!(e, Event::Batch { .. }))
}

#[test]
fn pause_kill_after_a_checkpoint_and_resume_ends_bit_identical() {
    let data = common::fashion_slice(20, 6);
    let dir = tempfile::tempdir().unwrap();
    // The uninterrupted reference runs alongside.
    let (cfg_a, runs_a) = write_config(dir.path(), "a", data.path());
    let log_a = dir.path().join("a.log");
    let reference = spawn(&["train", "--headless"], &cfg_a, &log_a);

    let (cfg_b, runs_b) = write_config(dir.path(), "b", data.path());
    let log_b = dir.path().join("b.log");
    let mut child = spawn(&["train", "--headless"], &cfg_b, &log_b);
    let run = live_run(&runs_b, child.child());
    let socket = run.join("control.sock");
    let mut c = Client::connect(&socket, None);
    // A second client that never reads a byte, for the whole run.
    let _idle = Client::connect(&socket, None);

    let started = c.until("run_started", |e| matches!(e, Event::RunStarted { .. }));
    assert_eq!(started.seq, 0, "the history comes first");
    c.until("a batch", |e| matches!(e, Event::Batch { .. }));
    c.send(&Command::Pause);
    c.until("paused", |e| matches!(e, Event::Paused { .. }));
    let before = batches(&run);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(batches(&run), before, "no progress while paused");
    assert!(
        child.child().try_wait().unwrap().is_none(),
        "still alive while paused"
    );
    c.send(&Command::Resume);
    c.until("resumed", |e| matches!(e, Event::Resumed));
    c.until("progress again", |e| matches!(e, Event::Batch { .. }));

    // SIGKILL right after the checkpoint of epoch 3 (inside the pseudo-label round).
    c.until("the epoch-3 checkpoint", |e| {
        matches!(e, Event::CheckpointSaved { epoch: 3, .. })
    });
    let mut child = child.take();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!wick::server::is_live(
        &wick::rundir::RunDir::open(&run).unwrap()
    ));
    let ls = wick().arg("ls").arg(&runs_b).output().unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains("crashed"), "{ls}");

    // A torn checkpoint newer than the real ones: skipped with a warning, set aside.
    let newest = newest_checkpoint(&run);
    let bytes = std::fs::read(&newest).unwrap();
    let torn = run.join("checkpoints/step-0000009999.safetensors");
    std::fs::write(&torn, &bytes[..bytes.len() / 2]).unwrap();

    let out = wick()
        .args(["resume", "--headless"])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipped an unreadable checkpoint") && stderr.contains("step-0000009999"),
        "{stderr}"
    );
    assert!(
        !torn.exists()
            && run
                .join("checkpoints/step-0000009999.safetensors.corrupt")
                .exists()
    );
    assert!(!socket.exists(), "socket removed at the end");

    // One continuous event stream: seq 0..n, a resumed start, the warning, one end.
    let all = events(&run);
    assert!(all.iter().enumerate().all(|(i, e)| e.seq == i as u64));
    let starts: Vec<bool> = all
        .iter()
        .filter_map(|e| match &e.event {
            Event::RunStarted { resumed, .. } => Some(*resumed),
            _ => None,
        })
        .collect();
    assert_eq!(starts, vec![false, true]);
    assert!(all.iter().any(|e| matches!(&e.event,
        Event::Log { level: Level::Warn, message } if message.contains("step-0000009999"))));
    assert!(all.iter().any(|e| matches!(&e.event,
        Event::Log { message, .. } if message.starts_with("resumed after epoch 3"))));
    assert_eq!(count(&all, |e| e.is_terminal()), 1);
    let ls = wick().arg("ls").arg(&runs_b).output().unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains("finished") && ls.contains("4/4"), "{ls}");

    finish(reference, &log_a);
    assert_same_weights(
        &newest_checkpoint(&only_run(&runs_a)),
        &newest_checkpoint(&run),
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let ty = entry.file_type().unwrap();
        let dest = to.join(entry.file_name());
        if ty.is_dir() {
            copy_dir(&entry.path(), &dest);
        } else if ty.is_file() {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// A manual pseudo-label round and a checkpoint in the middle of an epoch: a copy of the run
/// taken at that checkpoint and resumed ends exactly like the process that went on.
#[test]
fn mid_epoch_round_and_checkpoint_resume_like_the_process_that_went_on() {
    let data = common::fashion_slice(20, 6);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, runs) = write_config(dir.path(), "m", data.path());
    let log = dir.path().join("m.log");
    let mut child = spawn(&["train", "--headless"], &cfg, &log);
    let run = live_run(&runs, child.child());
    let mut c = Client::connect(&run.join("control.sock"), None);
    c.until("epoch 2", |e| {
        matches!(e, Event::EpochStarted { epoch: 2, .. })
    });
    // Pause between two batches of an epoch. An epoch of this tiny run can last less than the
    // 100 ms between batch events, so pause at once; a pause that lands in the automatic
    // round's prediction pass (step 0) is resumed and tried again at the next event.
    loop {
        c.send(&Command::Pause);
        let paused = c.until("paused", |e| matches!(e, Event::Paused { .. }));
        if matches!(paused.event, Event::Paused { step, .. } if step > 0) {
            break;
        }
        c.send(&Command::Resume);
        c.until("resumed", |e| matches!(e, Event::Resumed));
    }
    // While paused: a low threshold (so that the round adopts labels and changes the training
    // set under the epoch in progress), a round, a new learning rate, then a checkpoint.
    c.send(&Command::SetThreshold { value: 0.2 });
    c.send(&Command::PseudoLabelRound);
    let round = c.until("the round", |e| matches!(e, Event::RoundFinished { .. }));
    let Event::RoundFinished { added, .. } = round.event else {
        unreachable!()
    };
    assert!(added > 0, "the round adopted labels: {round:?}");
    c.send(&Command::SetLearningRate { value: 0.03 });
    c.send(&Command::SaveCheckpoint);
    c.until("the checkpoint", |e| {
        matches!(e, Event::CheckpointSaved { .. })
    });
    // The engine is still paused: the run directory is consistent. Copy it.
    let copy = dir.path().join("copy").join("m-copy");
    copy_dir(&run, &copy);
    std::fs::remove_file(copy.join("control.sock")).ok();
    c.send(&Command::Resume);
    finish(child, &log);

    let out = wick()
        .args(["resume", "--headless"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_weights(&newest_checkpoint(&run), &newest_checkpoint(&copy));
}

#[test]
fn detach_prints_how_to_attach_and_json_attach_follows_to_the_end() {
    let data = common::fashion_slice(10, 4);
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let cfg = dir.path().join("d.toml");
    std::fs::write(
        &cfg,
        common::tiny_config(data.path(), &runs, "epochs = 3\nbatch_size = 8\n"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = wick()
        .args(["train", "--detach"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let run = only_run(&runs);
    let id = run.file_name().unwrap().to_string_lossy().into_owned();
    let hello = Client::connect(&run.join("control.sock"), None).hello;
    let _bg = PidGuard(hello["pid"].as_i64().map(|p| p as i32));
    assert_eq!(stdout.trim(), id, "stdout is the run id");
    assert!(stderr.contains("wick attach"), "{stderr}");
    // Running in its own session, the socket up.
    let ls = wick().arg("ls").arg(&runs).output().unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains(&id) && ls.contains("live"), "{ls}");

    // The JSON client: history then live events until the end; a bad command is named.
    let mut attach = wick()
        .args(["attach", "--json", "--runs-dir"])
        .arg(&runs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = attach.stdin.take().unwrap();
        stdin.write_all(b"{\"cmd\":\"jump\"}\n").unwrap();
    }
    let out = attach.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<wick::protocol::Stamped> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a Stamped line"))
        .collect();
    assert!(lines.iter().enumerate().all(|(i, e)| e.seq == i as u64));
    assert!(matches!(
        lines.last().unwrap().event,
        Event::Finished { .. }
    ));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a command"));
    wait_for("the socket to go", Duration::from_secs(10), || {
        !run.join("control.sock").exists()
    });
    let ls = wick().arg("ls").arg(&runs).output().unwrap();
    assert!(String::from_utf8_lossy(&ls.stdout).contains("finished"));
    // A finished run is not resumed; attach with no live run says so.
    let out = wick().args(["resume"]).arg(&run).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already completed"));
    let out = wick()
        .args(["attach", "--runs-dir"])
        .arg(&runs)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no live run"));
}
