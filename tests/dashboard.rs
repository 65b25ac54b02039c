//! The dashboard in a real terminal (tmux): start a run, kill the terminal, see training go
//! on, attach again from a new terminal and see the epoch counter advancing; `q`, `y` stops
//! the run. Skipped (with a message) where tmux is not installed; CI installs it.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{count, events, only_run, wait_for, Client, PidGuard};
use wick::protocol::Event;

/// A private tmux server (its socket in a temporary directory), killed at the end.
struct Tmux {
    dir: tempfile::TempDir,
}

impl Tmux {
    fn start() -> Option<Tmux> {
        let ok = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipped: tmux is not installed");
            return None;
        }
        Some(Tmux {
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(self.dir.path().join("tmux.sock"))
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux")
    }

    /// A detached 120x40 session running `command` (through sh).
    fn session(&self, name: &str, command: &str) {
        let out = self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "120",
            "-y",
            "40",
            command,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn screen(&self, name: &str) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, name: &str, keys: &str) {
        self.run(&["send-keys", "-t", name, keys]);
    }

    fn kill(&self, name: &str) {
        let out = self.run(&["kill-session", "-t", name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until the screen of `name` satisfies `pred`; returns it.
    fn wait(&self, name: &str, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen(name);
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The `N` of "Epoch N/M" on the dashboard.
fn epoch_on(screen: &str) -> Option<u32> {
    let at = screen.find("Epoch ")? + "Epoch ".len();
    let digits: String = screen[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn setup() -> (tempfile::TempDir, tempfile::TempDir, PathBuf, PathBuf) {
    let data = common::fashion_slice(10, 4);
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let cfg = dir.path().join("long.toml");
    std::fs::write(
        &cfg,
        common::tiny_config(data.path(), &runs, "epochs = 500\nbatch_size = 8\n"),
    )
    .unwrap();
    (data, dir, runs, cfg)
}

fn sh(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// The process exists and is not a zombie (a reparented one may wait a while to be reaped).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = &s[s.rfind(')')? + 1..];
            after.split_whitespace().next().map(|st| st != "Z")
        })
        .unwrap_or(false)
}

/// Batch events in events.jsonl grow: training goes on.
fn assert_training_goes_on(run: &Path) {
    let before = count(&events(run), |e| matches!(e, Event::Batch { .. }));
    wait_for("training to go on", Duration::from_secs(60), || {
        count(&events(run), |e| matches!(e, Event::Batch { .. })) > before + 2
    });
}

/// Attaches in a new terminal, sees the epoch counter advance, then stops the run with q, y.
fn attach_see_progress_and_stop(tmux: &Tmux, run: &Path, session: &str) {
    tmux.session(
        session,
        &format!(
            "{} attach {}; echo EXIT=$?; sleep 600",
            sh(Path::new(env!("CARGO_BIN_EXE_wick"))),
            sh(run)
        ),
    );
    let first = tmux.wait(
        session,
        "the attached dashboard",
        Duration::from_secs(30),
        |s| epoch_on(s).is_some() && s.contains("RUNNING"),
    );
    let n = epoch_on(&first).unwrap();
    // The history came back: the header names the run.
    let id = run.file_name().unwrap().to_string_lossy();
    assert!(first.contains(&id[..id.len().min(20)]), "{first}");
    tmux.wait(
        session,
        "the epoch counter to advance",
        Duration::from_secs(90),
        |s| epoch_on(s).is_some_and(|m| m > n),
    );
    tmux.keys(session, "q");
    tmux.wait(session, "the stop prompt", Duration::from_secs(10), |s| {
        s.to_lowercase().contains("stop")
    });
    tmux.keys(session, "y");
    let end = tmux.wait(
        session,
        "the client to exit",
        Duration::from_secs(60),
        |s| s.contains("EXIT="),
    );
    assert!(end.contains("EXIT=0"), "{end}");
    assert!(end.contains("summary: stopped after"), "{end}");
    wait_for("the socket to go", Duration::from_secs(20), || {
        !run.join("control.sock").exists()
    });
    let all = events(run);
    assert!(matches!(&all.last().unwrap().event, Event::Finished { summary } if summary.stopped));
}

#[test]
fn closing_the_terminal_leaves_the_run_going_and_attach_brings_it_back() {
    let Some(tmux) = Tmux::start() else { return };
    let (_data, _dir, runs, cfg) = setup();
    // Default on a terminal: the run in the background, this terminal shows its dashboard.
    tmux.session(
        "a",
        &format!(
            "{} train {}; sleep 600",
            sh(Path::new(env!("CARGO_BIN_EXE_wick"))),
            sh(&cfg)
        ),
    );
    tmux.wait("a", "the dashboard", Duration::from_secs(60), |s| {
        epoch_on(s).is_some() && s.contains("RUNNING")
    });
    let run = only_run(&runs);
    let pid = Client::connect(&run.join("control.sock"), None).hello["pid"]
        .as_i64()
        .unwrap() as i32;
    let _guard = PidGuard(Some(pid));
    // The terminal goes away.
    tmux.kill("a");
    assert!(alive(pid), "the run outlives its terminal");
    assert_training_goes_on(&run);
    attach_see_progress_and_stop(&tmux, &run, "b");
}

#[test]
fn foreground_dashboard_survives_its_terminal_hanging_up() {
    let Some(tmux) = Tmux::start() else { return };
    let (_data, _dir, runs, cfg) = setup();
    // Engine and dashboard in one process; the terminal's hang-up must only end the dashboard.
    tmux.session(
        "c",
        &format!(
            "{} train --foreground {}; sleep 600",
            sh(Path::new(env!("CARGO_BIN_EXE_wick"))),
            sh(&cfg)
        ),
    );
    tmux.wait("c", "the dashboard", Duration::from_secs(60), |s| {
        epoch_on(s).is_some() && s.contains("RUNNING")
    });
    let run = only_run(&runs);
    let pid = Client::connect(&run.join("control.sock"), None).hello["pid"]
        .as_i64()
        .unwrap() as i32;
    let _guard = PidGuard(Some(pid));
    tmux.kill("c");
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pid), "SIGHUP did not end the process");
    assert_training_goes_on(&run);
    let log = std::fs::read_to_string(run.join("wick.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    attach_see_progress_and_stop(&tmux, &run, "d");
    wait_for("the process to end", Duration::from_secs(30), || {
        !alive(pid)
    });
}
