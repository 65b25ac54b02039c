//! The self-training panel: round timeline (when, added, in use, precision, val accuracy after,
//! threshold), per-class thresholds, per-class change since the last round, the online mode,
//! and the threshold shown against the engine's events.

use crate::protocol::{Event, Phase};

use super::state::App;
use super::test_support::{app_from, finished, render, running, text, Script};
use super::tests::PLAIN;

fn screen(app: &App, w: u16, h: u16) -> String {
    text(&render(app, w, h))
}

fn row_with<'a>(s: &'a str, needle: &str) -> Option<&'a str> {
    s.lines().find(|l| l.contains(needle))
}

/// [`finished`], with round 2's labels held to per-class thresholds.
fn finished_adaptive() -> Script {
    let mut s = finished();
    for e in &mut s.events {
        if let Event::RoundFinished {
            round: 2,
            thresholds,
            ..
        } = &mut e.event
        {
            *thresholds = vec![0.95, 0.95, 0.8, 0.86, 0.8];
        }
    }
    s
}

#[test]
fn timeline_shows_when_each_round_ran_and_the_accuracy_after_it() {
    let app = app_from(&finished_adaptive().events, PLAIN);
    let after = |r: u32| {
        app.val_acc_after_round(r)
            .map(|v| format!("{:.1}%", v * 100.0))
            .expect("an epoch after the round")
    };
    // Round 1 began after epoch 3 and its last epoch is 4; round 2 after epoch 4.
    assert_eq!(
        app.rounds
            .iter()
            .map(|r| (r.round, r.after_epoch))
            .collect::<Vec<_>>(),
        vec![(1, 3), (2, 4)]
    );
    let s = screen(&app, 200, 60);
    let head = row_with(&s, "added").expect("timeline header");
    for col in ["rnd", "after", "total", "prec", "val", "thr"] {
        assert!(head.contains(col), "{col}: {s}");
    }
    let r1 = row_with(&s, "ep 3").expect("round 1 row");
    assert!(r1.contains("8123") && r1.contains(&after(1)), "{r1}");
    let r2 = row_with(&s, "ep 4").expect("round 2 row");
    assert!(r2.contains("10173") && r2.contains(&after(2)), "{r2}");
    // Per-class thresholds of round 2: the range in the title, each next to its class.
    assert!(s.contains("per class 0.80-0.95"), "{s}");
    assert!(
        row_with(&s, "Dress").is_some_and(|_| s.contains("thr 0.86")),
        "{s}"
    );
    // Narrow screens drop columns but keep the essentials.
    let s = screen(&app, 80, 24);
    assert!(s.contains("10173"), "{s}");
}

#[test]
fn per_class_accuracy_shows_the_change_since_the_last_round() {
    let app = app_from(&finished().events, PLAIN);
    // Latest epoch 5 (round 2); the last epoch before round 2 is epoch 4.
    let base = app.round_base().expect("a base");
    assert_eq!(base.epoch, 4);
    let latest = app.epochs.last().expect("epochs");
    let d = (latest.per_class[0].accuracy() - base.per_class[0].accuracy()) * 100.0;
    let s = screen(&app, 160, 48);
    let row = row_with(&s, "T-shirt_top").expect("T-shirt row");
    assert!(row.contains(&format!("{d:+.1}")), "{d:+.1} in {row}\n{s}");
    assert!(s.contains("vs ep 4"), "{s}");
    assert!(screen(&app, 250, 60).contains("change since epoch 4"));
    // Before any round there is nothing to compare with.
    let mut early = Script::new();
    early
        .run_started(false)
        .epoch_batches(1, Phase::Supervised, 94)
        .epoch_finished(1, Phase::Supervised);
    let app = app_from(&early.events, PLAIN);
    assert!(app.round_base().is_none());
    assert!(!screen(&app, 160, 48).contains("change since"));
}

#[test]
fn a_round_report_does_not_undo_a_newer_threshold() {
    let mut s = running();
    // Round 2 starts at 0.95; the threshold moves during its prediction; its report carries
    // the threshold it selected with.
    s.after(
        10,
        Event::RoundStarted {
            round: 2,
            pool: 20000,
            threshold: 0.95,
            online: false,
        },
    )
    .after(10, Event::ThresholdChanged { value: 0.9 });
    let report = running()
        .events
        .iter()
        .find(|e| matches!(e.event, Event::RoundFinished { .. }))
        .map(|e| e.event.clone())
        .expect("a report");
    let Event::RoundFinished {
        added,
        total,
        per_class,
        per_class_precision,
        precision,
        confidence_hist,
        csv,
        samples,
        ..
    } = report
    else {
        unreachable!()
    };
    s.after(
        10,
        Event::RoundFinished {
            round: 2,
            added,
            total,
            per_class,
            per_class_precision,
            precision,
            threshold: 0.95,
            confidence_hist,
            csv,
            samples,
            thresholds: Vec::new(),
            online: false,
        },
    );
    let app = app_from(&s.events, PLAIN);
    assert_eq!(app.threshold, Some(0.9));
    assert_eq!(app.rounds.last().map(|r| r.threshold), Some(0.95));
}

/// A run whose round 1 is online (or not): started, one epoch, its report, epoch 2 under way.
fn one_round(online: bool) -> Script {
    let mut s = Script::new();
    s.run_started(false);
    s.after(
        10,
        Event::RoundStarted {
            round: 1,
            pool: 20000,
            threshold: 0.95,
            online,
        },
    );
    s.epoch_batches(1, Phase::SelfTraining { round: 1 }, 94)
        .epoch_finished(1, Phase::SelfTraining { round: 1 });
    let mut report = running()
        .events
        .iter()
        .find(|e| matches!(e.event, Event::RoundFinished { .. }))
        .map(|e| e.event.clone())
        .expect("a report");
    if let Event::RoundFinished {
        online: o, round, ..
    } = &mut report
    {
        *o = online;
        *round = 1;
    }
    s.after(10, report);
    s.epoch_batches(2, Phase::SelfTraining { round: 1 }, 10);
    s
}

#[test]
fn online_rounds_report_per_epoch_and_stay_out_of_the_round_eta() {
    let mut s = Script::new();
    s.run_started(false).after(
        10,
        Event::RoundStarted {
            round: 1,
            pool: 20000,
            threshold: 0.95,
            online: true,
        },
    );
    let app = app_from(&s.events, PLAIN);
    let scr = screen(&app, 120, 40);
    assert!(scr.contains("online, first report"), "{scr}");

    let online = app_from(&one_round(true).events, PLAIN);
    let r = &online.rounds[0];
    assert!(r.online && r.is_finished());
    assert!(r.seconds().is_some_and(|secs| secs > 1.0));
    assert!(screen(&online, 120, 40).contains("8123"));
    // An offline round's duration is added for each round still to come; an online round's
    // time is already in its epochs.
    let offline = app_from(&one_round(false).events, PLAIN);
    let (a, b) = (
        online.run_eta_seconds().expect("eta"),
        offline.run_eta_seconds().expect("eta"),
    );
    let rounds_left = f64::from(online.run.as_ref().expect("run").rounds - 1);
    assert!(rounds_left >= 1.0);
    let per_round = offline.rounds[0].seconds().expect("seconds");
    assert!((b - a - rounds_left * per_round).abs() < 1e-6, "{a} {b}");
}
