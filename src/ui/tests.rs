//! Dashboard tests across modules: rendering whole screens, folding, keys, the run loop.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::buffer::Buffer;
use ratatui::style::Color;

use crate::protocol::{Command, Event, Level, Phase};

use super::palette::ColorDepth;
use super::state::{App, Effect, Msg, RunState, ViewOptions, LOG_LINES_MAX, LOSS_HISTORY_MAX};
use super::test_support::{
    app_from, finished, load_events, paused, render, running, text, Script, CLASSES, RUN_ID,
};
use super::view::STOP_PROMPT;

pub(crate) const FANCY: ViewOptions = ViewOptions {
    color: true,
    ascii: false,
    color_depth: ColorDepth::TrueColor,
};
pub(crate) const C256: ViewOptions = ViewOptions {
    color: true,
    ascii: false,
    color_depth: ColorDepth::Ansi256,
};
pub(crate) const PLAIN: ViewOptions = ViewOptions {
    color: false,
    ascii: true,
    color_depth: ColorDepth::Ansi16,
};

fn key(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

fn esc() -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE))
}

fn ctrl_c() -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL))
}

fn screen(app: &App, w: u16, h: u16) -> String {
    text(&render(app, w, h))
}

/// The row of the screen that contains `needle`.
fn row_with<'a>(screen: &'a str, needle: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.contains(needle))
}

fn assert_plain(buf: &Buffer, what: &str) {
    for (i, cell) in buf.content.iter().enumerate() {
        let (x, y) = (i as u16 % buf.area.width, i as u16 / buf.area.width);
        assert!(
            cell.symbol()
                .chars()
                .all(|c| c.is_ascii() && !c.is_ascii_control()),
            "{what}: non-ASCII symbol {:?} at ({x},{y})\n{}",
            cell.symbol(),
            text(buf)
        );
        assert_eq!(cell.fg, Color::Reset, "{what}: fg colour at ({x},{y})");
        assert_eq!(cell.bg, Color::Reset, "{what}: bg colour at ({x},{y})");
        assert_eq!(
            cell.underline_color,
            Color::Reset,
            "{what}: underline colour at ({x},{y})"
        );
    }
}

// ----- rendering --------------------------------------------------------------------------

#[test]
fn running_run_at_80x24_shows_header_gauges_classes_and_rounds() {
    let app = app_from(&running().events, FANCY);
    let s = screen(&app, 80, 24);
    let header = s.lines().next().unwrap_or_default();
    assert!(header.contains(RUN_ID), "{s}");
    assert!(header.contains("cpu"), "{s}");
    assert!(header.contains("RUNNING"), "{s}");
    let epoch_row = row_with(&s, "Epoch 4/5").expect("epoch gauge");
    assert!(epoch_row.contains("self-train r1"), "{s}");
    assert!(epoch_row.contains("ETA run"), "{s}");
    let batch_row = row_with(&s, "Batch 51/94").expect("batch gauge");
    assert!(batch_row.contains("img/s"), "{s}");
    assert!(batch_row.contains("ETA"), "{s}");
    assert!(batch_row.contains("54%"), "51/94 = 54%: {s}");
    for c in CLASSES {
        assert!(s.contains(c), "class {c} missing:\n{s}");
    }
    // Per-class accuracy of epoch 3 as numbers: T-shirt_top 174/200.
    assert!(
        row_with(&s, "T-shirt_top").is_some_and(|r| r.contains("87.0%")),
        "{s}"
    );
    assert!(s.contains("Pseudo-labels"), "{s}");
    assert!(s.contains("8123"), "round 1 added: {s}");
    assert!(s.contains("96.2%"), "round precision: {s}");
    assert!(s.contains("Validation"), "{s}");
    assert!(s.contains("86.4%"), "epoch 3 val acc: {s}");
    assert!(s.contains("WARN pseudo-label class balance"), "{s}");
    assert!(
        s.lines().last().unwrap_or_default().contains("space pause"),
        "{s}"
    );
    assert!(!s.contains("waiting for first"), "{s}");
}

#[test]
fn running_run_at_160x48_adds_confusion_and_precision() {
    let app = app_from(&running().events, FANCY);
    let s = screen(&app, 160, 48);
    assert!(s.contains("RUNNING"));
    assert!(s.contains("Confusion"), "{s}");
    assert!(s.contains("true\\pred"), "{s}");
    // Per-class precision next to accuracy: T-shirt_top 174 correct of 203 predicted.
    assert!(
        row_with(&s, "T-shirt_top").is_some_and(|r| r.contains("87.0% prec  85.7%")),
        "{s}"
    );
    assert!(s.contains("5 classes"), "info line: {s}");
    assert!(s.contains("20000 unlabelled"), "{s}");
    for c in CLASSES {
        assert!(s.contains(c), "{c}: {s}");
    }
    // Epoch 3's diagonal for Trouser (capped at 198) is in the matrix.
    assert!(
        row_with(&s, "1 Trouser").is_some_and(|r| r.contains("198")),
        "{s}"
    );
}

#[test]
fn paused_header_says_paused_and_footer_offers_resume() {
    let app = app_from(&paused().events, FANCY);
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        let header = s.lines().next().unwrap_or_default();
        assert!(header.contains("PAUSED"), "{s}");
        assert!(!header.contains("RUNNING"), "{s}");
        assert!(s
            .lines()
            .last()
            .unwrap_or_default()
            .contains("space resume"));
    }
}

#[test]
fn finished_shows_final_state_and_summary() {
    for (app, w, h) in [
        (app_from(&finished().events, FANCY), 80, 24),
        (app_from(&finished().events, FANCY), 160, 48),
        (app_from(&finished().events, PLAIN), 80, 24),
    ] {
        assert_eq!(app.state, RunState::Finished);
        let s = screen(&app, w, h);
        assert!(
            s.lines().next().unwrap_or_default().contains("FINISHED"),
            "{s}"
        );
        let done = row_with(&s, "Done:").expect("summary line");
        assert!(done.contains("5 epochs"), "{s}");
        assert!(done.contains("92.6%"), "{s}");
        assert!(s.contains("10173 pseudo"), "{s}");
        assert!(s.contains("851 img/s"), "summary line fits: {s}");
        assert!(s.contains("86.4%"), "supervised accuracy: {s}");
        assert!(s.contains("run finished"), "log: {s}");
        let footer = s.lines().last().unwrap_or_default();
        assert!(
            footer.contains("q quit") && !footer.contains("pause"),
            "{s}"
        );
    }
}

#[test]
fn failed_shows_the_error() {
    let mut s = running();
    s.after(
        10,
        Event::Failed {
            error: "out of memory in conv2d backward".into(),
        },
    );
    let app = app_from(&s.events, FANCY);
    let scr = screen(&app, 80, 24);
    assert!(
        scr.lines().next().unwrap_or_default().contains("FAILED"),
        "{scr}"
    );
    assert!(row_with(&scr, "FAILED: out of memory").is_some(), "{scr}");
}

#[test]
fn before_the_first_epoch_panels_wait_instead_of_showing_numbers() {
    let mut s = Script::new();
    s.run_started(false);
    let app = app_from(&s.events, FANCY);
    let scr = screen(&app, 80, 24);
    assert!(scr.contains("waiting for first validation"), "{scr}");
    assert!(scr.contains("waiting for first batch"), "{scr}");
    assert!(scr.contains("waiting for the first epoch"), "{scr}");
    assert!(scr.contains("no round yet"), "{scr}");
    assert!(!scr.contains('%'), "no percentages before data: {scr}");

    let nothing = screen(&App::new(FANCY), 80, 24);
    assert!(nothing.contains("WAITING"), "{nothing}");
    assert!(
        nothing.contains("waiting for the run to start"),
        "{nothing}"
    );
}

#[test]
fn ascii_no_colour_render_has_only_ascii_and_no_colour() {
    let mut with_prompt = app_from(&running().events, PLAIN);
    with_prompt.update(key('q'));
    let mut with_help = app_from(&paused().events, PLAIN);
    with_help.update(key('?'));
    let mut failed = running();
    failed.after(
        5,
        Event::Failed {
            error: "disk full — écriture impossible".into(),
        },
    );
    let apps = [
        ("empty", App::new(PLAIN)),
        ("running", app_from(&running().events, PLAIN)),
        ("prompt", with_prompt),
        ("help", with_help),
        ("finished", app_from(&finished().events, PLAIN)),
        ("failed", app_from(&failed.events, PLAIN)),
    ];
    for (name, app) in &apps {
        for (w, h) in [(80, 24), (160, 48), (60, 20), (59, 19), (200, 60)] {
            assert_plain(&render(app, w, h), &format!("{name} {w}x{h}"));
        }
    }
}

#[test]
fn fancy_render_uses_colour_and_unicode() {
    // Guards the test above: the same screen in the default mode does use both.
    let buf = render(&app_from(&running().events, FANCY), 80, 24);
    assert!(buf.content.iter().any(|c| c.fg != Color::Reset));
    assert!(buf.content.iter().any(|c| !c.symbol().is_ascii()));
    let plain = text(&render(&app_from(&running().events, PLAIN), 80, 24));
    assert!(plain.contains('#'), "ASCII gauges use #: {plain}");
}

#[test]
fn too_small_screen_says_so() {
    let app = app_from(&running().events, FANCY);
    let s = screen(&app, 59, 19);
    assert!(s.contains("terminal too small (need 60x20)"), "{s}");
    assert!(!s.contains("Epoch"), "{s}");
    for (w, h) in [(59, 30), (100, 19)] {
        assert!(screen(&app, w, h).contains("terminal too small"));
    }
    let ok = screen(&app, 60, 20);
    assert!(!ok.contains("terminal too small"), "{ok}");
    assert!(ok.contains("RUNNING") && ok.contains("Epoch 4/5"), "{ok}");
}

#[test]
fn help_overlay_lists_every_key() {
    let mut app = app_from(&running().events, FANCY);
    app.update(key('?'));
    assert!(app.help);
    let s = screen(&app, 80, 24);
    let rows = app.keys.help_rows();
    for (k, what) in &rows {
        let row = row_with(&s, what).unwrap_or_else(|| panic!("{what} missing: {s}"));
        assert!(row.contains(k.as_str()), "{k}: {s}");
    }
    app.update(key('?'));
    assert!(!app.help);
    assert!(!screen(&app, 80, 24).contains(rows[0].1));
}

#[test]
fn stop_prompt_is_shown_after_q() {
    let mut app = app_from(&running().events, FANCY);
    app.update(key('q'));
    let s = screen(&app, 80, 24);
    assert!(
        s.lines().last().unwrap_or_default().contains(STOP_PROMPT),
        "{s}"
    );
}

/// A run with ten classes and one finished epoch.
pub(crate) fn ten_classes(opts: ViewOptions) -> App {
    let mut s = Script::new();
    s.run_started(false);
    let mut app = app_from(&s.events, opts);
    // Ten classes, one epoch finished.
    let names: Vec<String> = (0..10).map(|i| format!("class_{i}")).collect();
    if let Some(run) = app.run.as_mut() {
        run.classes = names.clone();
    }
    let per_class = names
        .iter()
        .map(|n| crate::protocol::ClassStats {
            name: n.clone(),
            support: 100,
            correct: 80,
            predicted: 100,
        })
        .collect();
    app.update(Msg::Event(crate::protocol::Stamped {
        seq: 99,
        at_ms: 1,
        event: Event::EpochFinished {
            epoch: 1,
            phase: Phase::Supervised,
            train_loss: 1.0,
            train_acc: 0.5,
            val_loss: 1.0,
            val_acc: 0.8,
            per_class,
            confusion: vec![vec![10; 10]; 10],
            train_seconds: 1.0,
            val_seconds: 1.0,
            mistakes: vec![],
        },
    }));
    app
}

#[test]
fn many_classes_fit_at_80x24() {
    let app = ten_classes(FANCY);
    let scr = screen(&app, 80, 24);
    assert!(scr.contains("class_0") && scr.contains("class_9"), "{scr}");
    assert!(screen(&app, 160, 48).contains("Confusion"));
}

// ----- folding ----------------------------------------------------------------------------

#[test]
fn folding_the_same_stream_twice_gives_the_same_state() {
    let events = finished().events;
    let a = app_from(&events, FANCY);
    let b = app_from(&events, FANCY);
    assert_eq!(a, b);
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    // Replay of the first part, then live events overlapping it: duplicates are ignored.
    let mut c = App::new(FANCY);
    let cut = events.len() / 2;
    c.fold(&events[..cut + 5]);
    c.fold(&events[cut..]);
    assert_eq!(a, c);
    // And the whole stream twice.
    let mut d = app_from(&events, FANCY);
    d.fold(&events);
    assert_eq!(a, d);
    assert_eq!(screen(&a, 80, 24), screen(&c, 80, 24));
}

#[test]
fn resumed_run_started_cuts_epoch_history() {
    // The run got to epoch 5 (after round 2), then crashed and resumed from the checkpoint
    // written after epoch 3.
    let mut s = running();
    s.more_batches(4, 61, 94)
        .epoch_finished(4, Phase::SelfTraining { round: 1 })
        .round(2, 2050, 10173)
        .epoch_batches(5, Phase::SelfTraining { round: 2 }, 30);
    let before = app_from(&s.events, FANCY);
    assert_eq!(
        before.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(before.rounds.len(), 2);

    s.run_started(true);
    s.epoch_batches(4, Phase::SelfTraining { round: 1 }, 11);
    let mut app = app_from(&s.events, FANCY);
    assert_eq!(
        app.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        app.rounds.iter().map(|r| r.round).collect::<Vec<_>>(),
        vec![1]
    );
    assert!(app.losses.points().iter().all(|p| p.epoch <= 4));
    assert_eq!(app.state, RunState::Running);
    assert_eq!(app.run.as_ref().map(|r| r.resumes), Some(1));
    assert_eq!(app.epoch.as_ref().map(|p| (p.epoch, p.step)), Some((4, 11)));

    s.more_batches(4, 21, 94)
        .epoch_finished(4, Phase::SelfTraining { round: 1 });
    app = app_from(&s.events, FANCY);
    assert_eq!(
        app.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let scr = screen(&app, 80, 24);
    assert_eq!(scr.matches("   4 st r1").count(), 1, "epoch 4 once: {scr}");
}

#[test]
fn eta_comes_from_event_stamps_and_leaves_pauses_out() {
    let app = app_from(&running().events, FANCY);
    // Epoch 4: batches 750 ms apart after the start; step 51 is the 6th event: 4.5 s.
    let per_batch = 4.5 / 51.0;
    let want = 43.0 * per_batch + 1.2;
    let got = app.epoch_eta_seconds().expect("eta");
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    // Run ETA: this epoch + 1 more epoch (5 planned) + 1 more round (24 s measured).
    let run = app.run_eta_seconds().expect("run eta");
    let per_epoch = 70.0 + 1.2; // 70 s for 6016 images, same images per epoch
    assert!((run - (want + per_epoch + 24.0)).abs() < 1e-6, "{run}");

    // Pause for a minute, resume, one more batch: the minute does not count.
    let mut s = paused();
    s.after(60_000, Event::Resumed);
    s.more_batches(4, 61, 61);
    let app = app_from(&s.events, FANCY);
    let active = 4.5 + 0.2 + 0.75;
    let want = 33.0 * active / 61.0 + 1.2;
    let got = app.epoch_eta_seconds().expect("eta");
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
}

#[test]
fn histories_stay_bounded() {
    let mut s = Script::new();
    s.run_started(false);
    s.epoch_batches(1, Phase::Supervised, 0);
    for i in 0..10_000u32 {
        s.after(
            100,
            Event::Batch {
                epoch: 1,
                step: i + 1,
                of: 10_000,
                loss: 1.0,
                lr: 0.1,
                images_per_s: 100.0,
            },
        );
        s.log(Level::Info, "x");
    }
    let app = app_from(&s.events, FANCY);
    assert!(app.losses.points().len() <= LOSS_HISTORY_MAX);
    assert!(app.losses.points().len() > LOSS_HISTORY_MAX / 4);
    assert!(app.losses.stride() > 1);
    assert_eq!(app.logs.len(), LOG_LINES_MAX);
}

#[test]
fn threshold_follows_the_engine() {
    let mut s = running();
    s.after(5, Event::ThresholdChanged { value: 0.9 });
    let app = app_from(&s.events, FANCY);
    assert_eq!(app.threshold, Some(0.9));
    assert!(screen(&app, 80, 24).contains("threshold 0.90"));
}

// ----- keys -------------------------------------------------------------------------------

#[test]
fn space_pauses_a_running_run_and_resumes_a_paused_one() {
    let mut app = app_from(&running().events, FANCY);
    assert_eq!(app.update(key(' ')), vec![Effect::Send(Command::Pause)]);
    let mut app = app_from(&paused().events, FANCY);
    assert_eq!(app.update(key(' ')), vec![Effect::Send(Command::Resume)]);
    let mut app = app_from(&finished().events, FANCY);
    assert_eq!(app.update(key(' ')), vec![]);
    let mut app = App::new(FANCY);
    assert_eq!(app.update(key(' ')), vec![]);
}

#[test]
fn round_and_save_keys_send_their_commands() {
    let mut app = app_from(&running().events, FANCY);
    assert_eq!(
        app.update(key('r')),
        vec![Effect::Send(Command::PseudoLabelRound)]
    );
    assert_eq!(
        app.update(key('s')),
        vec![Effect::Send(Command::SaveCheckpoint)]
    );
    let mut done = app_from(&finished().events, FANCY);
    assert_eq!(done.update(key('r')), vec![]);
    assert_eq!(done.update(key('s')), vec![]);
}

#[test]
fn plus_and_minus_step_the_threshold_and_clamp() {
    let mut app = app_from(&running().events, FANCY); // threshold 0.95
    let set = |v: f32| vec![Effect::Send(Command::SetThreshold { value: v })];
    assert_eq!(app.update(key('+')), set(0.96));
    // A second press builds on the request not yet confirmed.
    assert_eq!(app.update(key('+')), set(0.97));
    assert_eq!(app.update(key('-')), set(0.96));
    for _ in 0..10 {
        app.update(key('+'));
    }
    assert_eq!(app.effective_threshold(), Some(1.0));
    assert_eq!(app.update(key('+')), vec![], "clamped at 1");
    // The engine confirms: the request is settled.
    app.update(Msg::Event(crate::protocol::Stamped {
        seq: 10_000,
        at_ms: u64::MAX / 2,
        event: Event::ThresholdChanged { value: 1.0 },
    }));
    assert_eq!(app.threshold_requested, None);
    assert_eq!(app.threshold, Some(1.0));

    let mut low = app_from(&running().events, FANCY);
    for _ in 0..93 {
        low.update(key('-'));
    }
    assert_eq!(low.effective_threshold(), Some(0.02));
    assert_eq!(low.update(key('-')), set(0.01));
    assert_eq!(low.update(key('-')), vec![], "never 0");
    assert_eq!(low.effective_threshold(), Some(0.01));
}

#[test]
fn q_asks_then_y_stops_and_quits_once_the_run_has_ended() {
    let mut s = running();
    let mut app = app_from(&s.events, FANCY);
    assert_eq!(app.update(key('q')), vec![]);
    assert!(app.confirm_quit);
    // Other keys leave the question open.
    assert_eq!(app.update(key(' ')), vec![]);
    assert!(app.confirm_quit);
    assert_eq!(app.update(key('y')), vec![Effect::Send(Command::Stop)]);
    assert_eq!(app.state, RunState::Stopping);
    assert!(screen(&app, 80, 24)
        .lines()
        .next()
        .unwrap_or_default()
        .contains("STOPPING"));
    // The engine finishes its batch, checkpoints, ends: now quit.
    s.after(
        300,
        Event::CheckpointSaved {
            path: "ck".into(),
            epoch: 4,
            step: 333,
        },
    );
    let start = s.events.len() - 1;
    for e in &s.events[start..] {
        assert_eq!(app.update(Msg::Event(e.clone())), vec![]);
    }
    let mut fin = finished();
    let last = fin.events.pop().expect("finished event");
    let last = crate::protocol::Stamped {
        seq: s.seq + 1,
        ..last
    };
    assert_eq!(app.update(Msg::Event(last)), vec![Effect::Quit]);
}

#[test]
fn q_then_n_or_esc_cancels_and_d_detaches() {
    let mut app = app_from(&running().events, FANCY);
    app.update(key('q'));
    assert_eq!(app.update(key('n')), vec![]);
    assert!(!app.confirm_quit);
    assert_eq!(app.state, RunState::Running);
    app.update(key('q'));
    assert_eq!(app.update(esc()), vec![]);
    assert!(!app.confirm_quit);
    app.update(key('q'));
    assert_eq!(app.update(key('d')), vec![Effect::Detach]);
    assert!(!app.confirm_quit);
    assert_eq!(app.state, RunState::Running, "detach leaves the run alone");
}

#[test]
fn ctrl_c_behaves_like_q() {
    let mut app = app_from(&running().events, FANCY);
    assert_eq!(app.update(ctrl_c()), vec![]);
    assert!(app.confirm_quit);
    assert_eq!(app.update(key('y')), vec![Effect::Send(Command::Stop)]);
    let mut done = app_from(&finished().events, FANCY);
    assert_eq!(done.update(ctrl_c()), vec![Effect::Quit]);
}

#[test]
fn d_detaches_at_any_time() {
    for events in [
        Vec::new(),
        running().events,
        paused().events,
        finished().events,
    ] {
        let mut app = app_from(&events, FANCY);
        assert_eq!(app.update(key('d')), vec![Effect::Detach]);
    }
}

#[test]
fn after_the_run_q_quits_without_asking() {
    let mut app = app_from(&finished().events, FANCY);
    assert_eq!(app.update(key('q')), vec![Effect::Quit]);
    assert!(!app.confirm_quit);
}

#[test]
fn a_closed_stream_means_nothing_to_wait_for() {
    let mut app = app_from(&running().events, FANCY);
    app.update(Msg::StreamClosed);
    assert_eq!(app.update(key(' ')), vec![], "nobody to send to");
    assert_eq!(app.update(key('q')), vec![Effect::Quit]);

    // Asked to stop, then the stream ends without `Finished`: quit anyway.
    let mut app = app_from(&running().events, FANCY);
    app.update(key('q'));
    app.update(key('y'));
    assert_eq!(app.update(Msg::StreamClosed), vec![Effect::Quit]);
}

#[test]
fn help_key_toggles_and_esc_closes() {
    let mut app = app_from(&running().events, FANCY);
    assert_eq!(app.update(key('?')), vec![]);
    assert!(app.help);
    app.update(esc());
    assert!(!app.help);
}

// ----- the run loop -----------------------------------------------------------------------

mod run_loop {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use crossterm::event::Event as TermEvent;
    use futures_core::Stream;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use tokio::sync::mpsc;

    use super::*;
    use crate::protocol::Stamped;
    use crate::ui::terminal::{run_loop, DashboardExit};

    struct Keys(mpsc::UnboundedReceiver<io::Result<TermEvent>>);

    impl Stream for Keys {
        type Item = io::Result<TermEvent>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }

    fn press(c: char) -> io::Result<TermEvent> {
        Ok(TermEvent::Key(KeyEvent::new(
            KeyCode::Char(c),
            KeyModifiers::NONE,
        )))
    }

    struct Rig {
        term: Terminal<TestBackend>,
        app: App,
        keys_tx: mpsc::UnboundedSender<io::Result<TermEvent>>,
        keys: Keys,
        ev_tx: mpsc::Sender<Stamped>,
        ev_rx: mpsc::Receiver<Stamped>,
        cmd_tx: mpsc::UnboundedSender<Command>,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
    }

    fn rig(replay: &[Stamped]) -> Rig {
        let (keys_tx, keys_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        Rig {
            term: Terminal::new(TestBackend::new(80, 24)).expect("terminal"),
            app: app_from(replay, FANCY),
            keys_tx,
            keys: Keys(keys_rx),
            ev_tx,
            ev_rx,
            cmd_tx,
            cmd_rx,
        }
    }

    async fn go(r: &mut Rig) -> DashboardExit {
        go_with(r, 1000, &crate::ui::DashboardStats::default()).await
    }

    async fn go_with(r: &mut Rig, fps: u32, stats: &crate::ui::DashboardStats) -> DashboardExit {
        run_loop(
            &mut r.term,
            &mut r.app,
            &mut r.keys,
            std::future::pending(),
            &mut r.ev_rx,
            &r.cmd_tx,
            fps,
            stats,
        )
        .await
    }

    #[tokio::test]
    async fn stop_waits_for_the_engine_then_quits() {
        let mut s = running();
        let mut r = rig(&s.events);
        r.keys_tx.send(press('q')).ok();
        r.keys_tx.send(press('y')).ok();
        // A fake engine: on Stop, checkpoint and finish.
        let mut cmd_rx = std::mem::replace(&mut r.cmd_rx, mpsc::unbounded_channel().1);
        let ev_tx = r.ev_tx.clone();
        s.after(
            100,
            Event::CheckpointSaved {
                path: "runs/x/checkpoints/stop".into(),
                epoch: 4,
                step: 333,
            },
        );
        s.after(
            100,
            Event::Finished {
                summary: crate::protocol::Summary {
                    stopped: true,
                    ..Default::default()
                },
            },
        );
        let tail: Vec<Stamped> = s.events[s.events.len() - 2..].to_vec();
        let engine = tokio::spawn(async move {
            let cmd = cmd_rx.recv().await;
            for e in tail {
                ev_tx.send(e).await.ok();
            }
            cmd
        });
        let exit = tokio::time::timeout(std::time::Duration::from_secs(10), go(&mut r))
            .await
            .expect("loop ends");
        assert_eq!(exit, DashboardExit::Quit);
        assert_eq!(engine.await.ok().flatten(), Some(Command::Stop));
        assert_eq!(r.app.state, RunState::Finished);
    }

    #[tokio::test]
    async fn live_events_after_replay_are_drawn_and_d_detaches() {
        let all = finished().events;
        let cut = all.len() - 10;
        let mut r = rig(&all[..cut]);
        for e in &all[cut - 3..] {
            r.ev_tx.send(e.clone()).await.ok();
        }
        let ev_tx = r.ev_tx.clone();
        let keys_tx = r.keys_tx.clone();
        // Detach only once every live event is in.
        tokio::spawn(async move {
            while ev_tx.capacity() < ev_tx.max_capacity() {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            keys_tx.send(press('d')).ok();
        });
        let exit = tokio::time::timeout(std::time::Duration::from_secs(10), go(&mut r))
            .await
            .expect("loop ends");
        assert_eq!(exit, DashboardExit::Detached);
        assert_eq!(r.app, app_from(&all, FANCY));
        let shown = text(r.term.backend().buffer());
        assert!(shown.contains("FINISHED"), "{shown}");
    }

    #[tokio::test]
    async fn samples_view_decodes_thumbnails_in_the_background_and_counts_frames() {
        let mut r = rig(&finished().events);
        let keys_tx = r.keys_tx.clone();
        tokio::spawn(async move {
            keys_tx.send(press('3')).ok();
            // Leave time for the decoding task and the redraw.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            keys_tx.send(press('d')).ok();
        });
        let stats = crate::ui::DashboardStats::default();
        let exit = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            go_with(&mut r, 1000, &stats),
        )
        .await
        .expect("loop ends");
        assert_eq!(exit, DashboardExit::Detached);
        assert!(matches!(
            r.app
                .thumbs
                .get("data/fashion-target/val/Trouser/00002.png"),
            Some(crate::ui::thumbs::ThumbSlot::Ready(_))
        ));
        let buf = r.term.backend().buffer();
        assert!(
            buf.content.iter().any(|c| c.symbol() == "▀"),
            "{}",
            text(buf)
        );
        assert!(stats.frames() >= 2, "first frame, then the thumbnails");
    }

    /// At 1 frame a second (on tokio's paused clock): a key is drawn at once; a live event
    /// waits for the frame interval.
    #[tokio::test(start_paused = true)]
    async fn keys_draw_at_once_events_wait_for_the_frame_cap() {
        let all = finished().events;
        let mut r = rig(&all[..all.len() - 1]);
        let (ev_tx, keys_tx) = (r.ev_tx.clone(), r.keys_tx.clone());
        let stats = crate::ui::DashboardStats::default();
        let watched = stats.clone();
        let last = all[all.len() - 1].clone();
        let start = tokio::time::Instant::now();
        // The driver polls with 1 ms sleeps: the paused clock only moves when every task waits.
        let driver = tokio::spawn(async move {
            // After the first frame: a key, answered without waiting for the 1 s interval.
            while watched.frames() < 1 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            keys_tx.send(press('?')).ok();
            while watched.frames() < 2 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let key_frame = start.elapsed();
            // Then an event: drawn only when the interval since that frame has passed.
            ev_tx.send(last).await.ok();
            while watched.frames() < 3 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let event_frame = start.elapsed();
            keys_tx.send(press('d')).ok();
            (key_frame, event_frame)
        });
        let exit = go_with(&mut r, 1, &stats).await;
        assert_eq!(exit, DashboardExit::Detached);
        let (key_frame, event_frame) = driver.await.expect("driver");
        assert!(
            key_frame < std::time::Duration::from_millis(50),
            "{key_frame:?}"
        );
        assert!(
            event_frame >= std::time::Duration::from_secs(1),
            "{event_frame:?}"
        );
        assert!(r.app.help, "the key was handled");
        assert_eq!(r.app.state, RunState::Finished, "the event was folded");
    }

    #[tokio::test]
    async fn closed_event_stream_keeps_the_final_state_until_q() {
        let mut r = rig(&running().events);
        let (dead_tx, dead_rx) = mpsc::channel(1);
        drop(dead_tx);
        r.ev_rx = dead_rx;
        let keys_tx = r.keys_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            keys_tx.send(press('q')).ok();
        });
        let exit = tokio::time::timeout(std::time::Duration::from_secs(10), go(&mut r))
            .await
            .expect("loop ends");
        assert_eq!(exit, DashboardExit::Quit);
        assert!(r.app.stream_closed);
        let shown = text(r.term.backend().buffer());
        assert!(shown.contains("Epoch 4/5"), "{shown}");
        assert!(shown.contains("disconnected"), "{shown}");
    }

    #[tokio::test]
    async fn terminal_errors_and_hangups_end_with_terminal_lost() {
        let mut r = rig(&running().events);
        r.keys_tx.send(Err(io::Error::from_raw_os_error(5))).ok();
        assert_eq!(go(&mut r).await, DashboardExit::TerminalLost);

        let mut r = rig(&running().events);
        drop(std::mem::replace(
            &mut r.keys_tx,
            mpsc::unbounded_channel().0,
        ));
        assert_eq!(go(&mut r).await, DashboardExit::TerminalLost, "input ended");

        let mut r = rig(&running().events);
        let exit = run_loop(
            &mut r.term,
            &mut r.app,
            &mut r.keys,
            async {},
            &mut r.ev_rx,
            &r.cmd_tx,
            30,
            &crate::ui::DashboardStats::default(),
        )
        .await;
        assert_eq!(exit, DashboardExit::TerminalLost, "SIGHUP");
    }
}

// ----- recorded streams -------------------------------------------------------------------

/// Every `tests/fixtures/events/*.jsonl` parses, folds to an ended or running run, and draws
/// in ASCII without colour at 80x24 and 160x48. The synthetic one is this file's fixture, so
/// an incompatible change to the event format fails here.
#[test]
fn fixture_event_streams_fold_and_draw() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    for path in &files {
        let events = load_events(path);
        let app = app_from(&events, PLAIN);
        assert!(app.run.is_some(), "{}: no RunStarted", path.display());
        for (w, h) in [(80, 24), (160, 48)] {
            let buf = render(&app, w, h);
            assert_plain(&buf, &path.display().to_string());
            let s = text(&buf);
            assert!(s.contains(app.state.label()), "{s}");
        }
        if path.ends_with("synthetic-fmnist5-finished.jsonl") {
            assert_eq!(
                events,
                finished().events,
                "fixture differs from the builder"
            );
        }
    }
}

/// Writes the synthetic fixture (run with `--ignored` after changing the builder).
#[test]
#[ignore]
fn write_synthetic_fixture() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut out = String::new();
    for e in finished().events {
        out.push_str(&serde_json::to_string(&e).expect("json"));
        out.push('\n');
    }
    std::fs::write(dir.join("synthetic-fmnist5-finished.jsonl"), out).expect("write");
}

/// Prints every view at 80x24 in ASCII without colour (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn dump_screens() {
    let events = if std::env::var_os("WICK_DUMP_RUNNING").is_some() {
        running().events
    } else {
        finished().events
    };
    let mut app = app_from(&events, PLAIN);
    let (w, h) = std::env::var("WICK_DUMP_SIZE")
        .ok()
        .and_then(|s| {
            let (a, b) = s.split_once('x')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((80, 24));
    app.update(Msg::Resize(w, h));
    for c in ['1', '2', '3', '4'] {
        let effects = app.update(key(c));
        load_now(&mut app, effects);
        println!("=== view {c} ===\n{}", screen(&app, w, h));
    }
    app.update(key('3'));
    let effects = app.update(key('m'));
    load_now(&mut app, effects);
    println!("=== samples, pseudo-labels ===\n{}", screen(&app, w, h));
    app.update(key('?'));
    println!("=== help ===\n{}", screen(&app, w, h));
}

/// Perform thumbnail effects at once (what the run loop does in the background).
pub(crate) fn load_now(app: &mut App, effects: Vec<Effect>) {
    for e in effects {
        if let Effect::LoadThumbnails(paths) = e {
            app.update(Msg::Thumbnails(crate::ui::thumbs::load_all(&paths)));
        }
    }
}

#[test]
fn gpu_reading_shows_in_the_header_at_80x24() {
    let mut events = running().events;
    if let Event::RunStarted { device, .. } = &mut events[0].event {
        *device = "cuda:0 H200 bf16".into();
    }
    let mut gpu = events.last().unwrap().clone();
    gpu.seq += 1;
    gpu.event = Event::Gpu {
        memory_used_mib: 12_595,
        memory_total_mib: 143_771,
        utilization_pct: Some(87),
    };
    events.push(gpu);
    let s = screen(&app_from(&events, FANCY), 80, 24);
    let header = s.lines().next().unwrap_or_default();
    assert!(header.contains(RUN_ID), "{s}");
    assert!(header.contains("cuda:0 H200 bf16 12.3/140G 87%"), "{s}");
    assert!(header.contains("RUNNING"), "{s}");
}
