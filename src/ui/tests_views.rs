//! Tests of the views (Overview, Classes, Samples, Log) rendered from the recorded event
//! fixtures, in colour (24-bit, 256, 16) and in ASCII without colour; the thumbnail renderer on
//! a real image of the bundled dataset; every documented key; configured keys.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::buffer::Buffer;
use ratatui::style::Color;

use crate::protocol::{Command, Event, Level, Stamped};

use super::keymap::{Action, KeyConfig};
use super::palette::ColorDepth;
use super::state::{
    App, Compare, Effect, History, LogFilter, Msg, SampleSet, SortKey, View, ViewOptions,
    EMA_FACTORS,
};
use super::test_support::{app_from, finished, render, running, text, MISSING_IMAGE};
use super::tests::{load_now, C256, FANCY, PLAIN};
use super::thumbs::{load_thumbnail, render_thumbnail, Thumb, ThumbStyle, UPPER_HALF};

const C16: ViewOptions = ViewOptions {
    color: true,
    ascii: false,
    color_depth: ColorDepth::Ansi16,
};
/// `NO_COLOR` in a UTF-8 terminal.
const MONO: ViewOptions = ViewOptions {
    color: false,
    ascii: false,
    color_depth: ColorDepth::TrueColor,
};

const TROUSER: &str = "data/fashion-target/val/Trouser/00002.png";

fn code(c: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn key(c: char) -> Msg {
    code(KeyCode::Char(c))
}

/// Every fixture stream, parsed.
fn fixtures() -> Vec<(String, Vec<Stamped>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let body = std::fs::read_to_string(&p).expect("read");
            let events = body
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).expect("event"))
                .collect();
            (p.display().to_string(), events)
        })
        .collect()
}

fn synthetic() -> Vec<Stamped> {
    fixtures()
        .into_iter()
        .find(|(p, _)| p.ends_with("synthetic-fmnist5-finished.jsonl"))
        .map(|(_, e)| e)
        .expect("synthetic fixture")
}

/// Switch to `view` (performing the thumbnail loads it asks for) and draw at w x h.
fn show(app: &mut App, view: View, w: u16, h: u16) -> Buffer {
    app.update(Msg::Resize(w, h));
    let k = match view {
        View::Overview => '1',
        View::Classes => '2',
        View::Samples => '3',
        View::Log => '4',
    };
    let effects = app.update(key(k));
    load_now(app, effects);
    assert_eq!(app.nav.view, view);
    render(app, w, h)
}

fn assert_ascii_no_colour(buf: &Buffer, what: &str) {
    for (i, cell) in buf.content.iter().enumerate() {
        let (x, y) = (i as u16 % buf.area.width, i as u16 / buf.area.width);
        assert!(
            cell.symbol()
                .chars()
                .all(|c| c.is_ascii() && !c.is_ascii_control()),
            "{what}: non-ASCII {:?} at ({x},{y})\n{}",
            cell.symbol(),
            text(buf)
        );
        assert_eq!(cell.fg, Color::Reset, "{what}: fg at ({x},{y})");
        assert_eq!(cell.bg, Color::Reset, "{what}: bg at ({x},{y})");
    }
}

fn colours(buf: &Buffer) -> Vec<Color> {
    buf.content.iter().flat_map(|c| [c.fg, c.bg]).collect()
}

/// Every view of the finished fixture, at 80x24 and 200x60, in every colour mode.
#[test]
fn every_view_renders_from_the_fixture_in_every_mode() {
    let events = synthetic();
    for opts in [FANCY, C256, C16, MONO, PLAIN] {
        for (w, h) in [(80u16, 24u16), (200, 60)] {
            let mut app = app_from(&events, opts);
            for view in View::ALL {
                let buf = show(&mut app, view, w, h);
                let s = text(&buf);
                let what = format!("{view:?} {w}x{h} {opts:?}");
                let first = s.lines().next().unwrap_or_default();
                assert!(first.contains("FINISHED"), "{what}\n{s}");
                let tabs = s
                    .lines()
                    .nth(if h >= 30 { 4 } else { 3 })
                    .unwrap_or_default();
                assert!(
                    tabs.contains(&format!("[{} {}]", view_key(view), view.title())),
                    "{what}: tab line\n{s}"
                );
                match view {
                    View::Overview => {
                        assert!(s.contains("Loss per batch"), "{what}\n{s}");
                        assert!(s.contains("ema 0.80"), "{what}\n{s}");
                        assert!(
                            s.lines().any(|l| l.contains("5 st r2") && l.contains(" *")),
                            "best epoch marked: {what}\n{s}"
                        );
                        assert!(s.contains("lr 1.00e-2"), "{what}\n{s}");
                    }
                    View::Classes => {
                        assert!(s.contains("Confusion"), "{what}\n{s}");
                        assert!(s.contains("Top confusions"), "{what}\n{s}");
                        let arrow = if opts.ascii { "->" } else { "→" };
                        assert!(
                            s.contains(&format!("Coat {arrow} T-shirt_top")),
                            "{what}\n{s}"
                        );
                        // T-shirt_top: 190/200 right; precision 190/211; +4 points.
                        let row = s
                            .lines()
                            .find(|l| l.contains("0  T-shirt_top"))
                            .unwrap_or_else(|| panic!("{what}\n{s}"));
                        assert!(row.contains("95.0%"), "{what}\n{s}");
                        assert!(row.contains("90.0%"), "{what}\n{s}");
                        assert!(row.contains("+4.0"), "{what}\n{s}");
                        // The heat map has the counts: Coat row 20 0 0 20 160.
                        assert!(
                            s.lines()
                                .any(|l| l.contains("4 Coat")
                                    && l.contains("20    0    0   20  160")),
                            "{what}\n{s}"
                        );
                    }
                    View::Samples => {
                        assert!(s.contains("Mistakes"), "{what}\n{s}");
                        assert!(s.contains("epoch 5"), "{what}\n{s}");
                        assert!(s.contains("Trouser 92%"), "{what}\n{s}");
                    }
                    View::Log => {
                        assert!(
                            s.contains("WARN  pseudo-label class balance"),
                            "{what}\n{s}"
                        );
                        assert!(s.contains("run finished"), "{what}\n{s}");
                    }
                }
                let cs = colours(&buf);
                if !opts.color {
                    assert!(cs.iter().all(|c| *c == Color::Reset), "{what}");
                }
                if opts.ascii {
                    assert_ascii_no_colour(&buf, &what);
                } else if !opts.color && view == View::Samples {
                    // Thumbnails as shades without colour.
                    assert!(s.contains('█') || s.contains('▓'), "{what}\n{s}");
                }
                match opts.color_depth {
                    ColorDepth::Ansi16 => assert!(
                        cs.iter()
                            .all(|c| !matches!(c, Color::Rgb(..) | Color::Indexed(_))),
                        "{what}: 16 colours only"
                    ),
                    ColorDepth::Ansi256 => {
                        assert!(cs.iter().all(|c| !matches!(c, Color::Rgb(..))), "{what}")
                    }
                    ColorDepth::TrueColor => {}
                }
                if opts.color && matches!(view, View::Classes) {
                    // The heat map is drawn with background colours.
                    assert!(
                        buf.content.iter().any(|c| c.bg != Color::Reset),
                        "{what}: heat map background"
                    );
                }
                if opts.color && !opts.ascii && view == View::Samples {
                    assert!(
                        buf.content
                            .iter()
                            .any(|c| c.symbol() == UPPER_HALF && c.bg != Color::Reset),
                        "{what}: half-block thumbnails"
                    );
                }
            }
        }
    }
}

fn view_key(v: View) -> char {
    match v {
        View::Overview => '1',
        View::Classes => '2',
        View::Samples => '3',
        View::Log => '4',
    }
}

/// Down to 60x20 every view draws; below, the too-small screen.
#[test]
fn every_view_fits_60x20_and_too_small_says_so() {
    let mut app = app_from(&synthetic(), PLAIN);
    for view in View::ALL {
        let buf = show(&mut app, view, 60, 20);
        assert_ascii_no_colour(&buf, &format!("{view:?} 60x20"));
        let s = text(&buf);
        assert!(!s.contains("too small"), "{s}");
        assert!(s.contains(view.title()), "{s}");
        let small = text(&show(&mut app, view, 59, 20));
        assert!(small.contains("terminal too small"), "{small}");
    }
}

// ----- thumbnails ---------------------------------------------------------------------------

/// The bundled image, decoded: 28 x 28 greyscale. The expected values below were read from
/// the PNG with an independent decoder (zlib + PNG row filters in a few lines of Python):
/// row 0 has 67 at column 10, row 1 has 196 there; rows 10/11 at column 13 are 72/7; rows 2/3
/// at column 19 are 116/145; rows 2/3 at column 11 are 237/235; the corners are 0.
fn trouser() -> Thumb {
    let t = load_thumbnail(std::path::Path::new(TROUSER)).expect("bundled image");
    assert_eq!((t.width, t.height), (28, 28));
    t
}

fn cell(
    lines: &[ratatui::text::Line<'static>],
    x: usize,
    y: usize,
) -> (String, Option<Color>, Option<Color>) {
    let line = &lines[y];
    if line.spans.len() == 1 {
        // Character ramps: one span per line.
        let c = line.spans[0].content.chars().nth(x).expect("x");
        (c.to_string(), None, None)
    } else {
        let s = &line.spans[x];
        (s.content.to_string(), s.style.fg, s.style.bg)
    }
}

#[test]
fn thumbnail_of_a_real_image_in_true_colour() {
    let lines = render_thumbnail(
        &trouser(),
        28,
        14,
        ThumbStyle::HalfBlock(ColorDepth::TrueColor),
    );
    assert_eq!(lines.len(), 14);
    let grey = |v: u8| Some(Color::Rgb(v, v, v));
    assert_eq!(
        cell(&lines, 10, 0),
        (UPPER_HALF.into(), grey(67), grey(196))
    );
    assert_eq!(cell(&lines, 13, 5), (UPPER_HALF.into(), grey(72), grey(7)));
    assert_eq!(
        cell(&lines, 19, 1),
        (UPPER_HALF.into(), grey(116), grey(145))
    );
    assert_eq!(cell(&lines, 0, 0), (UPPER_HALF.into(), grey(0), grey(0)));
    assert_eq!(cell(&lines, 27, 13), (UPPER_HALF.into(), grey(0), grey(0)));
}

#[test]
fn thumbnail_of_a_real_image_in_256_and_16_colours() {
    let t = trouser();
    let lines = render_thumbnail(&t, 28, 14, ThumbStyle::HalfBlock(ColorDepth::Ansi256));
    // 67 -> grey ramp 232 + 6 (68); 196 -> 232 + 19 (198).
    assert_eq!(
        cell(&lines, 10, 0),
        (
            UPPER_HALF.into(),
            Some(Color::Indexed(238)),
            Some(Color::Indexed(251))
        )
    );
    let lines = render_thumbnail(&t, 28, 14, ThumbStyle::HalfBlock(ColorDepth::Ansi16));
    // Four greys: 67 -> dark grey, 196 -> grey; 72 -> dark grey, 7 -> black.
    assert_eq!(
        cell(&lines, 10, 0),
        (UPPER_HALF.into(), Some(Color::DarkGray), Some(Color::Gray))
    );
    assert_eq!(
        cell(&lines, 13, 5),
        (UPPER_HALF.into(), Some(Color::DarkGray), Some(Color::Black))
    );
}

#[test]
fn thumbnail_of_a_real_image_as_ascii_and_shades() {
    let t = trouser();
    let lines = render_thumbnail(&t, 28, 14, ThumbStyle::Ascii);
    // Mean of the two pixels on the 10-step ramp " .:-=+*#%@":
    // (67+196)/2 = 131.5 -> 4.64 -> '+'; (72+7)/2 = 39.5 -> 1.39 -> '.';
    // (237+235)/2 = 236 -> 8.33 -> '%'; 0 -> ' '.
    assert_eq!(cell(&lines, 10, 0).0, "+");
    assert_eq!(cell(&lines, 13, 5).0, ".");
    assert_eq!(cell(&lines, 11, 1).0, "%");
    assert_eq!(cell(&lines, 0, 0).0, " ");
    let shades = render_thumbnail(&t, 28, 14, ThumbStyle::Shades);
    // 131.5 on 5 steps " ░▒▓█" -> 2.06 -> '▒'; 236 -> 3.7 -> '█'.
    assert_eq!(cell(&shades, 10, 0).0, "▒");
    assert_eq!(cell(&shades, 11, 1).0, "█");
}

#[test]
fn thumbnail_scaled_down_averages_blocks() {
    // 14 x 7 cells = 14 x 14 pixels: each is the mean of a 2 x 2 block.
    let lines = render_thumbnail(
        &trouser(),
        14,
        7,
        ThumbStyle::HalfBlock(ColorDepth::TrueColor),
    );
    // Rows 0-1, columns 10-11: 67, 177, 196, 255 -> 173.75 -> 174.
    // Rows 2-3, columns 10-11: 243, 237, 255, 235 -> 242.5 -> 243.
    let grey = |v: u8| Some(Color::Rgb(v, v, v));
    assert_eq!(
        cell(&lines, 5, 0),
        (UPPER_HALF.into(), grey(174), grey(243))
    );
}

#[test]
fn samples_view_draws_the_real_thumbnail_and_a_missing_file_cell() {
    let mut app = app_from(&synthetic(), FANCY);
    let buf = show(&mut app, View::Samples, 80, 24);
    // The third card (index 2) is Trouser/00002.png; cards are 15 wide, 7 x 7 cells of
    // thumbnail centred over 14 columns; the view starts on row 4 (header, gauges, tabs) and
    // its first row of cards below the title (y = 5).
    let x0 = 2 * 15; // third card; the thumbnail fills the card's 14 text columns
    let y0 = 5;
    // Thumbnail 14 x 14 pixels: cell (5, 0) as in `thumbnail_scaled_down_averages_blocks`.
    let c = &buf[(x0 + 5, y0)];
    assert_eq!(c.symbol(), UPPER_HALF);
    assert_eq!(c.fg, Color::Rgb(174, 174, 174));
    assert_eq!(c.bg, Color::Rgb(243, 243, 243));
    let s = text(&buf);
    assert!(s.contains("page 1/2"), "{s}");
    // The missing file is on page 2 (11 mistakes, 10 per page).
    app.update(code(KeyCode::Right));
    let s = text(&render(&app, 80, 24));
    assert!(s.contains("page 2/2"), "{s}");
    assert!(s.contains("image") && s.contains("not found"), "{s}");
    assert!(
        matches!(
            app.thumbs.get(MISSING_IMAGE),
            Some(super::thumbs::ThumbSlot::Failed(
                super::thumbs::ThumbError::NotFound
            ))
        ),
        "cached as not found"
    );
}

#[test]
fn thumbnails_are_asked_for_once_and_only_in_the_samples_view() {
    let mut app = app_from(&synthetic(), FANCY);
    assert!(app.thumbs.is_empty(), "no decoding while folding");
    let effects = app.update(key('3'));
    let paths: Vec<String> = match effects.as_slice() {
        [Effect::LoadThumbnails(p)] => p.clone(),
        e => panic!("{e:?}"),
    };
    assert_eq!(paths.len(), 11, "the latest epoch's mistakes");
    assert!(paths.contains(&TROUSER.to_string()));
    // Asked for already (loading): not again.
    assert_eq!(app.update(key('3')), vec![]);
    // The other set asks for its own.
    let effects = app.update(key('m'));
    assert!(matches!(effects.as_slice(), [Effect::LoadThumbnails(p)] if p.len() == 15));
    // Loading shows as such.
    let s = text(&render(&app, 80, 24));
    assert!(s.contains("loading"), "{s}");
}

// ----- views' content -----------------------------------------------------------------------

#[test]
fn ema_smoothing_and_history_window() {
    let mut app = app_from(&finished().events, FANCY);
    let raw: Vec<f64> = app
        .losses
        .points()
        .iter()
        .map(|p| f64::from(p.loss))
        .collect();
    assert!(raw.len() > 20);
    app.nav.ema = 0;
    assert_eq!(app.loss_series(raw.len()), raw, "off: the raw points");
    app.update(key('e'));
    assert_eq!(app.nav.ema_factor(), EMA_FACTORS[1]);
    let a = EMA_FACTORS[1];
    let s = app.loss_series(raw.len());
    assert_eq!(s[0], raw[0]);
    assert!((s[1] - (a * raw[0] + (1.0 - a) * raw[1])).abs() < 1e-12);
    // Cycles back to off.
    for _ in 1..EMA_FACTORS.len() {
        app.update(key('e'));
    }
    assert_eq!(app.nav.ema, 0);
    assert!(text(&render(&app, 80, 24)).contains("raw"));
    // Recent: the last points, one per column; all: averaged down.
    app.update(key('h'));
    assert_eq!(app.nav.history, History::Recent);
    assert_eq!(app.loss_series(10), raw[raw.len() - 10..].to_vec());
    let wide = text(&render(&app, 200, 60));
    assert!(wide.contains(", raw  last 0.231"), "{wide}");
    assert!(wide.contains("Loss per batch last "), "{wide}");
    app.update(key('h'));
    assert_eq!(app.nav.history, History::All);
    assert_eq!(app.loss_series(10).len(), 10);
}

#[test]
fn class_table_sorts_and_compares() {
    let mut app = app_from(&finished().events, FANCY);
    let order = |app: &App| app.class_rows().iter().map(|r| r.index).collect::<Vec<_>>();
    assert_eq!(order(&app), vec![0, 1, 2, 3, 4]);
    app.update(key('o'));
    assert_eq!(app.nav.sort, SortKey::Accuracy);
    // Epoch 5 accuracies: 95, 99, 90, 99, 80: worst first, ties in class order.
    assert_eq!(order(&app), vec![4, 2, 0, 1, 3]);
    app.update(key('O'));
    assert_eq!(order(&app), vec![3, 1, 0, 2, 4]);
    app.update(key('O'));
    app.update(key('o'));
    assert_eq!(app.nav.sort, SortKey::Precision);
    app.update(key('o'));
    assert_eq!(app.nav.sort, SortKey::F1);
    // Change since epoch 4: Trouser was capped at 198 both times.
    let trouser = app
        .class_rows()
        .into_iter()
        .find(|r| r.index == 1)
        .expect("row");
    assert_eq!(trouser.change, Some(0.0));
    let tshirt = app
        .class_rows()
        .into_iter()
        .find(|r| r.index == 0)
        .expect("row");
    assert!((tshirt.change.unwrap_or(0.0) - 0.04).abs() < 1e-12);
    // Compare with the end of the previous round: epoch 5 is round 2, so epoch 4 (round 1).
    app.update(key('c'));
    assert_eq!(app.nav.compare, Compare::PrevRound);
    assert_eq!(app.compare_base().map(|e| e.epoch), Some(4));
    // Until epoch 4 (round 1), the previous round is the supervised epoch 3.
    let cut: Vec<Stamped> = finished()
        .events
        .into_iter()
        .take_while(|e| !matches!(e.event, Event::RoundStarted { round: 2, .. }))
        .collect();
    let mut early = app_from(&cut, FANCY);
    early.update(key('c'));
    assert_eq!(early.compare_base().map(|e| e.epoch), Some(3));
    let s = text(&show(&mut early, View::Classes, 80, 24));
    assert!(s.contains("vs epoch 3"), "{s}");
    // Top confusions: largest first, with the change.
    let top = app.top_confusions(3);
    assert_eq!((top[0].truth, top[0].predicted, top[0].count), (4, 0, 20));
    assert_eq!(top[0].change, Some(-4));
}

#[test]
fn class_table_scrolls_when_it_does_not_fit() {
    // Ten classes at 80x24: the table shows a few rows and scrolls.
    let mut app = super::tests::ten_classes(FANCY);
    let s = text(&show(&mut app, View::Classes, 80, 24));
    assert!(s.contains("  0  class_0"), "{s}");
    assert!(!s.contains("  9  class_9"), "{s}");
    app.update(key('G'));
    let s = text(&render(&app, 80, 24));
    assert!(s.contains("  9  class_9"), "{s}");
    assert!(!s.contains("  0  class_0"), "{s}");
    assert!(app.nav.class_scroll > 0);
    app.update(key('g'));
    assert_eq!(app.nav.class_scroll, 0);
    app.update(code(KeyCode::Down));
    assert_eq!(app.nav.class_scroll, 1);
    app.update(code(KeyCode::Up));
    assert_eq!(app.nav.class_scroll, 0);
    app.update(code(KeyCode::Up));
    assert_eq!(app.nav.class_scroll, 0, "clamped");
}

#[test]
fn log_view_filters_and_scrolls() {
    let mut app = app_from(&finished().events, PLAIN);
    let all = app.filtered_logs().len();
    app.update(key('l'));
    assert_eq!(app.nav.log_filter, LogFilter::Warn);
    assert_eq!(app.filtered_logs().len(), 1);
    let s = text(&show(&mut app, View::Log, 80, 24));
    assert!(s.contains("WARN  pseudo-label"), "{s}");
    assert!(!s.contains("run finished"), "{s}");
    app.update(key('l'));
    assert_eq!(app.nav.log_filter, LogFilter::Error);
    assert!(text(&render(&app, 80, 24)).contains("no lines at this level"));
    app.update(key('l'));
    assert_eq!(app.filtered_logs().len(), all);
    // Scroll back: the newest line goes out of sight, End follows again.
    let mut s = running();
    for i in 0..60 {
        s.log(Level::Info, &format!("line {i}"));
    }
    let mut app = app_from(&s.events, PLAIN);
    let shown = text(&show(&mut app, View::Log, 80, 24));
    assert!(
        shown.contains("line 59") && shown.contains("following"),
        "{shown}"
    );
    app.update(code(KeyCode::PageUp));
    let shown = text(&render(&app, 80, 24));
    assert!(!shown.contains("line 59"), "{shown}");
    assert!(shown.contains("newer below"), "{shown}");
    app.update(code(KeyCode::Home));
    let shown = text(&render(&app, 80, 24));
    assert!(
        shown.contains("loaded 6000 labelled"),
        "oldest at the top: {shown}"
    );
    app.update(key('k'));
    app.update(code(KeyCode::End));
    assert_eq!(app.nav.log_scroll, 0);
    app.update(code(KeyCode::Up));
    app.update(key('j'));
    assert_eq!(app.nav.log_scroll, 0);
    app.update(code(KeyCode::PageUp));
    app.update(code(KeyCode::PageDown));
    assert_eq!(app.nav.log_scroll, 0);
}

#[test]
fn samples_page_with_every_paging_key_and_switch_sets() {
    let mut app = app_from(&finished().events, PLAIN);
    show(&mut app, View::Samples, 80, 24);
    for k in [
        code(KeyCode::Right),
        code(KeyCode::Down),
        code(KeyCode::PageDown),
        key('j'),
        code(KeyCode::End),
        key('G'),
    ] {
        app.nav.sample_page = 0;
        app.update(k);
        assert_eq!(app.nav.sample_page, 1);
        app.update(code(KeyCode::Right));
        assert_eq!(app.nav.sample_page, 1, "clamped at the last page");
    }
    for k in [
        code(KeyCode::Left),
        code(KeyCode::Up),
        code(KeyCode::PageUp),
        key('k'),
        code(KeyCode::Home),
        key('g'),
    ] {
        app.nav.sample_page = 1;
        app.update(k);
        assert_eq!(app.nav.sample_page, 0);
    }
    let effects = app.update(key('m'));
    assert_eq!(app.nav.samples, SampleSet::PseudoLabels);
    load_now(&mut app, effects);
    let s = text(&render(&app, 80, 24));
    assert!(s.contains("Pseudo-labels"), "{s}");
    assert!(s.contains("round 2"), "{s}");
    assert!(s.contains("T-shirt_t~ 99%"), "{s}");
    assert!(s.contains("WRONG: Coat"), "{s}");
    app.update(code(KeyCode::Right));
    let s = text(&render(&app, 80, 24));
    assert!(s.contains("truth unknown"), "{s}");
    // At 200x60 one page holds all.
    let s = text(&show(&mut app, View::Samples, 200, 60));
    assert!(s.contains("page 1/1"), "{s}");
}

#[test]
fn overview_eta_leaves_validation_out_of_the_throughput() {
    // Validation takes 10x longer than in the fixture: the per-batch time (from batch stamps)
    // does not change, and the ETA adds the measured validation time once per epoch left.
    let mut s = super::test_support::Script::new();
    s.run_started(false);
    s.epoch_batches(1, crate::protocol::Phase::Supervised, 94);
    let mut app = app_from(&s.events, FANCY);
    let before = app.epoch_eta_seconds().expect("eta");
    assert_eq!(before, 0.0, "all batches done, no validation measured yet");
    s.epoch_finished(1, crate::protocol::Phase::Supervised);
    if let Some(Event::EpochFinished { val_seconds, .. }) =
        s.events.last_mut().map(|e| &mut e.event)
    {
        *val_seconds = 12.0;
    }
    s.epoch_batches(2, crate::protocol::Phase::Supervised, 51);
    app = app_from(&s.events, FANCY);
    // 750 ms between batch events, 6 events to step 51: 4.5 s for 51 batches.
    let per_batch = 4.5 / 51.0;
    let want = 43.0 * per_batch + 12.0;
    let got = app.epoch_eta_seconds().expect("eta");
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
}

// ----- keys -----------------------------------------------------------------------------------

#[test]
fn tab_backtab_and_numbers_switch_views() {
    let mut app = app_from(&running().events, FANCY);
    assert_eq!(app.nav.view, View::Overview);
    for want in [View::Classes, View::Samples, View::Log, View::Overview] {
        app.update(code(KeyCode::Tab));
        assert_eq!(app.nav.view, want);
    }
    app.update(code(KeyCode::BackTab));
    assert_eq!(app.nav.view, View::Log);
    for (k, v) in [
        ('2', View::Classes),
        ('3', View::Samples),
        ('4', View::Log),
        ('1', View::Overview),
    ] {
        app.update(key(k));
        assert_eq!(app.nav.view, v);
    }
}

/// Every key the help lists does something observable (or is a no-op only where documented).
#[test]
fn every_documented_key_is_handled() {
    use super::keymap::Keymap;
    let km = Keymap::default();
    for b in km.bindings() {
        let mut app = app_from(&running().events, FANCY);
        app.update(key('3'));
        app.nav.view = if b.action == Action::ShowClasses {
            View::Overview
        } else {
            View::Classes
        };
        let before = app.clone();
        let ev = KeyEvent::new(b.key.code, b.key.mods);
        let effects = app.update(Msg::Key(ev));
        let changed = app != before || !effects.is_empty();
        match b.action {
            // Yes outside the stop prompt and scrolling a table that fits: nothing to do.
            Action::Yes
            | Action::No
            | Action::Up
            | Action::Left
            | Action::Home
            | Action::Down
            | Action::Right
            | Action::PageUp
            | Action::PageDown
            | Action::End => {}
            Action::TogglePause => assert_eq!(effects, vec![Effect::Send(Command::Pause)]),
            Action::PseudoLabelRound => {
                assert_eq!(effects, vec![Effect::Send(Command::PseudoLabelRound)])
            }
            Action::SaveCheckpoint => {
                assert_eq!(effects, vec![Effect::Send(Command::SaveCheckpoint)])
            }
            Action::Detach => assert_eq!(effects, vec![Effect::Detach]),
            Action::Quit => assert!(app.confirm_quit),
            _ => assert!(changed, "{} ({:?}) did nothing", b.name, b.action),
        }
    }
}

#[test]
fn help_lists_configured_keys_and_scrolls_when_small() {
    let keys = KeyConfig {
        pause: "p".into(),
        round: "ctrl-r".into(),
        ..KeyConfig::default()
    };
    let mut app = App::with_keys(FANCY, keys.keymap().expect("valid"));
    app.fold(&running().events);
    assert_eq!(app.update(key(' ')), vec![]);
    assert_eq!(app.update(key('p')), vec![Effect::Send(Command::Pause)]);
    assert_eq!(
        app.update(Msg::Key(KeyEvent::new(
            KeyCode::Char('r'),
            KeyModifiers::CONTROL
        ))),
        vec![Effect::Send(Command::PseudoLabelRound)]
    );
    let s = text(&render(&app, 80, 24));
    assert!(
        s.lines().last().unwrap_or_default().contains("p pause"),
        "{s}"
    );
    app.update(key('?'));
    let s = text(&render(&app, 80, 24));
    assert!(
        s.lines()
            .any(|l| l.contains("p ") && l.contains("pause / resume")),
        "{s}"
    );
    assert!(
        s.lines()
            .any(|l| l.contains("C-r") && l.contains("pseudo-label round")),
        "{s}"
    );
    // At 60x20 one column: scroll to the last row.
    app.update(Msg::Resize(60, 20));
    let s = text(&render(&app, 60, 20));
    assert!(!s.contains("top / end, follow"), "{s}");
    app.update(key('G'));
    let s = text(&render(&app, 60, 20));
    assert!(s.contains("top / end, follow"), "{s}");
    assert!(app.nav.help_scroll > 0);
    // Esc closes the help.
    app.update(code(KeyCode::Esc));
    assert!(!app.help);
}

#[test]
fn view_settings_survive_a_new_run_in_the_stream() {
    let mut app = app_from(&running().events, FANCY);
    app.update(key('2'));
    app.update(key('o'));
    let mut s = super::test_support::Script::new();
    s.seq = 10_000;
    s.run_started(false);
    app.fold(&s.events);
    assert_eq!(app.nav.view, View::Classes);
    assert_eq!(app.nav.sort, SortKey::Accuracy);
    assert!(app.epochs.is_empty());
}

#[test]
fn counting_writer_counts() {
    use std::io::Write;
    let stats = super::DashboardStats::default();
    let mut w = super::CountingWriter::new(Vec::new(), stats.clone());
    w.write_all(b"hello").expect("write");
    w.write_all(b" world").expect("write");
    assert_eq!(stats.bytes_written(), 11);
    assert_eq!(stats.frames(), 0);
}

/// Every recorded stream (the synthetic one and any added later) draws every view at both
/// sizes: ASCII without colour is pure ASCII; colour modes do not panic and show the state.
#[test]
fn every_fixture_draws_every_view() {
    for (path, events) in fixtures() {
        for opts in [PLAIN, FANCY, C16] {
            let mut app = app_from(&events, opts);
            for view in View::ALL {
                for (w, h) in [(80, 24), (200, 60), (60, 20)] {
                    let buf = show(&mut app, view, w, h);
                    let s = text(&buf);
                    assert!(s.contains(app.state.label()), "{path} {view:?}\n{s}");
                    if opts == PLAIN {
                        assert_ascii_no_colour(&buf, &format!("{path} {view:?} {w}x{h}"));
                    }
                }
            }
        }
    }
}
