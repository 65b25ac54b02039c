//! Drawing: a pure function of [`App`]. Works from 60x20 (80x24 is the target) up to large
//! terminals, with or without colour (16, 256 or 24-bit), in Unicode or plain ASCII. Panels
//! never show made-up numbers: before the data exists they say what they are waiting for.
//!
//! Every view shares the chrome: header, (info line from 30 rows), the two progress gauges, the
//! view tabs, and the key footer. This module draws the chrome and the Overview; the other
//! views are in [`super::classes`], [`super::samples`] and [`super::logview`].

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::border;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use crate::protocol::{Level, Phase};

use super::glyphs::{clock, duration, pct, Glyphs, Theme};
use super::keymap::Action;
use super::state::{App, History, RunState, View};

/// Smallest terminal the dashboard draws into.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 20;
/// From this width on, three columns of panels (and the confusion matrix).
const WIDE: u16 = 150;

/// The stop prompt shown after `q`.
pub const STOP_PROMPT: &str = "Stop the run? (y/n; d = detach, leave it running)";

const ASCII_BORDER: border::Set<'static> = border::Set {
    top_left: "+",
    top_right: "+",
    bottom_left: "+",
    bottom_right: "+",
    vertical_left: "|",
    vertical_right: "|",
    horizontal_top: "-",
    horizontal_bottom: "-",
};

/// What every drawing function gets: the state, the glyphs and the styles.
pub(crate) struct Ctx<'a> {
    pub(crate) app: &'a App,
    pub(crate) g: Glyphs,
    pub(crate) t: Theme,
}

/// The screen's rows: header, info line, progress gauges, view tabs, the view, footer.
struct Chrome {
    head: Rect,
    info: Rect,
    progress: Rect,
    tabs: Rect,
    main: Rect,
    foot: Rect,
}

fn chrome(area: Rect) -> Chrome {
    let info_h = u16::from(area.height >= 30);
    let [head, info, progress, tabs, main, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(info_h),
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    Chrome {
        head,
        info,
        progress,
        tabs,
        main,
        foot,
    }
}

/// The area a view is drawn in, for a screen of `area` (used by `App` to size pages).
pub fn main_area(area: Rect) -> Rect {
    chrome(area).main
}

/// Draw the whole dashboard.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let cx = Ctx {
        app,
        g: Glyphs::new(app.opts),
        t: Theme::new(app.opts),
    };
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(frame, area, &cx);
        return;
    }
    let c = chrome(area);
    put(frame, c.head, vec![header_line(&cx, c.head.width as usize)]);
    if c.info.height > 0 {
        put(frame, c.info, vec![info_line(&cx, c.info.width as usize)]);
    }
    put(
        frame,
        c.progress,
        progress_lines(&cx, c.progress.width as usize),
    );
    put(frame, c.tabs, vec![tabs_line(&cx, c.tabs.width as usize)]);
    match app.nav.view {
        View::Overview => overview(frame, c.main, &cx),
        View::Classes => super::classes::draw(frame, c.main, &cx),
        View::Samples => super::samples::draw(frame, c.main, &cx),
        View::Log => super::logview::draw(frame, c.main, &cx),
    }
    put(frame, c.foot, vec![footer_line(&cx, c.foot.width as usize)]);
    if app.help {
        help_overlay(frame, area, &cx);
    }
}

fn overview(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let log_h = if area.height >= 40 {
        (area.height / 4).min(14)
    } else if area.height >= 24 {
        6
    } else {
        4
    };
    let [main, log] = Layout::vertical([Constraint::Min(6), Constraint::Length(log_h)]).areas(area);
    main_panels(frame, main, cx);
    log_panel(frame, log, cx);
}

pub(crate) fn put(frame: &mut Frame, area: Rect, lines: Vec<Line<'static>>) {
    if area.width > 0 && area.height > 0 {
        frame.render_widget(Paragraph::new(lines), area);
    }
}

/// `s` with `style` on its glyphs only: runs of spaces stay unstyled, so that a blank cell
/// drawn by a chart or a gauge equals the blank the terminal already shows and is not sent
/// again (a space with a foreground colour differs from a plain one).
pub(crate) fn ink(s: &str, style: Style) -> Vec<Span<'static>> {
    let piece = |t: &str| {
        if t.starts_with(' ') {
            Span::raw(t.to_string())
        } else {
            Span::styled(t.to_string(), style)
        }
    };
    let mut spans = Vec::new();
    let mut start = 0;
    for (i, ch) in s.char_indices() {
        if i > start && (ch == ' ') != s[start..].starts_with(' ') {
            spans.push(piece(&s[start..i]));
            start = i;
        }
    }
    if start < s.len() {
        spans.push(piece(&s[start..]));
    }
    spans
}

pub(crate) fn span(s: String, style: Style) -> Span<'static> {
    Span::styled(s, style)
}

fn too_small(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let w = area.width as usize;
    let center = |s: &str| {
        let s = cx.g.fit(s, w);
        let pad = w.saturating_sub(s.chars().count()) / 2;
        format!("{}{s}", " ".repeat(pad))
    };
    let mut lines = Vec::new();
    let top = area.height.saturating_sub(3) / 2;
    for _ in 0..top {
        lines.push(Line::raw(""));
    }
    lines.push(Line::from(span(
        center(&format!(
            "terminal too small (need {MIN_WIDTH}x{MIN_HEIGHT})"
        )),
        cx.t.bold(),
    )));
    lines.push(Line::raw(center(&format!(
        "now {}x{}",
        area.width, area.height
    ))));
    let k = |a: Action| cx.app.keys.first_key(a).unwrap_or_else(|| "-".into());
    lines.push(Line::raw(center(&format!(
        "{}: quit, {}: detach",
        k(Action::Quit),
        k(Action::Detach)
    ))));
    put(frame, area, lines);
}

// ----- header -----------------------------------------------------------------------------

fn header_line(cx: &Ctx, width: usize) -> Line<'static> {
    let app = cx.app;
    let badge = format!(" {} ", app.state.label());
    let room = width.saturating_sub(badge.chars().count() + 1);
    let sep = cx.g.sep();
    let left = match &app.run {
        None => format!(" wick{sep}waiting for the run to start"),
        Some(r) => {
            let mut fields = vec![
                r.run_id.clone(),
                r.task.clone(),
                r.model.clone(),
                match cx.app.gpu {
                    Some(g) => format!("{} {}", r.device, gpu_brief(g)),
                    None => r.device.clone(),
                },
            ];
            let total = |f: &[String]| {
                " wick".len()
                    + f.iter()
                        .map(|x| x.chars().count() + sep.chars().count())
                        .sum::<usize>()
            };
            // Shorten the task, drop it, then shorten the model: run id and device stay.
            let shorten = |f: &mut Vec<String>, i: usize| {
                let over = total(f).saturating_sub(room);
                let len = f[i].chars().count();
                if over > 0 {
                    f[i] = cx.g.fit(&f[i], len.saturating_sub(over).max(8.min(len)));
                }
            };
            shorten(&mut fields, 1);
            if total(&fields) > room {
                fields.remove(1);
                shorten(&mut fields, 1);
            }
            format!(" wick{sep}{}", fields.join(sep))
        }
    };
    Line::from(vec![
        span(cx.g.pad(&left, room + 1), cx.t.bold()),
        span(badge, cx.t.badge(app.state)),
    ])
}

/// `"12.3/140G 87%"`: GPU memory used / total (GiB) and utilisation.
pub(crate) fn gpu_brief((used, total, util): (u64, u64, Option<u32>)) -> String {
    let gib = |mib: u64| mib as f64 / 1024.0;
    let mut s = format!("{:.1}/{:.0}G", gib(used), gib(total));
    if let Some(u) = util {
        s.push_str(&format!(" {u}%"));
    }
    s
}

fn info_line(cx: &Ctx, width: usize) -> Line<'static> {
    let Some(r) = &cx.app.run else {
        return Line::raw("");
    };
    let sep = cx.g.sep();
    let mut parts = vec![
        format!("{} classes", r.classes.len()),
        format!("{} labelled", r.sizes.labelled),
    ];
    if r.sizes.unlabelled > 0 {
        parts.push(format!("{} unlabelled", r.sizes.unlabelled));
    }
    parts.push(format!("{} val", r.sizes.val));
    // The learning rate is on the tabs line: here it would shift the checkpoint path after it
    // at every change of its width, and redraw the line (bandwidth).
    parts.push(format!("batch {}", r.batch_size));
    if r.resumes > 0 {
        parts.push(format!("resumed {}x", r.resumes));
    }
    if let Some((path, _, _)) = &cx.app.last_checkpoint {
        parts.push(format!("ckpt {path}"));
    }
    Line::from(span(
        cx.g.fit(&format!(" {}", parts.join(sep)), width),
        cx.t.muted(),
    ))
}

// ----- progress ---------------------------------------------------------------------------

fn phase_name(phase: Phase) -> String {
    match phase {
        Phase::Supervised => "supervised".into(),
        Phase::SelfTraining { round } => format!("self-train r{round}"),
    }
}

pub(crate) fn phase_short(phase: Phase) -> String {
    match phase {
        Phase::Supervised => "sup".into(),
        Phase::SelfTraining { round } => format!("st r{round}"),
    }
}

/// Label, bar, right-hand text; labels and right texts are padded to the given widths so the
/// two gauges line up.
/// Widest progress gauge, in cells: with eighths that is 1/480 of a step, and on a wide
/// terminal a gauge as wide as the screen would cost its width again in bytes at every epoch.
const MAX_GAUGE: usize = 60;

fn gauge_line(
    cx: &Ctx,
    width: usize,
    label: &str,
    lw: usize,
    frac: Option<f64>,
    right: &str,
    rw: usize,
) -> Line<'static> {
    let bar_w = width.saturating_sub(lw + rw + 5).min(MAX_GAUGE);
    let mut spans = vec![span(format!(" {}", cx.g.pad(label, lw)), cx.t.bold())];
    match frac {
        Some(f) if bar_w >= 4 => {
            spans.push(Span::raw(" ["));
            spans.extend(ink(&cx.g.gauge(f, bar_w), cx.t.bar()));
            spans.push(Span::raw("] "));
            spans.push(Span::raw(cx.g.fit(right, rw)));
        }
        _ => spans.push(Span::raw(format!(
            " {}",
            cx.g.fit(right, width.saturating_sub(lw + 2))
        ))),
    }
    Line::from(spans)
}

fn progress_lines(cx: &Ctx, width: usize) -> Vec<Line<'static>> {
    let app = cx.app;
    if let Some(s) = &app.summary {
        return summary_lines(cx, s, width);
    }
    let Some(run) = &app.run else {
        return vec![Line::raw(" waiting for the run to start"), Line::raw("")];
    };
    let planned = run.planned_epochs();
    let (ep_label, ep_right, ep_frac) = match &app.epoch {
        None => (
            format!("Epoch -/{planned}"),
            "waiting for the first epoch".to_string(),
            None,
        ),
        Some(p) => {
            let eta = match app.run_eta_seconds() {
                Some(s) => format!("ETA run {}", duration(s)),
                None => "ETA run --".into(),
            };
            let frac = app.run_fraction();
            (
                {
                    let long = format!("Epoch {}/{planned} {}", p.epoch, phase_name(p.phase));
                    if long.chars().count() <= width / 3 {
                        long
                    } else {
                        format!("Epoch {}/{planned} {}", p.epoch, phase_short(p.phase))
                    }
                },
                format!("{:>4.0}% {eta}", frac * 100.0),
                Some(frac),
            )
        }
    };
    let (b_label, b_right, b_frac) = match &app.epoch {
        None => ("Batch -".to_string(), String::new(), None),
        Some(p) if p.step == 0 && !p.finished => (
            format!("Batch -/{}", p.of),
            "waiting for the first batch".to_string(),
            None,
        ),
        Some(p) => {
            let status = if p.finished {
                "epoch done".to_string()
            } else if p.validating() {
                format!("validating{}", cx.g.ellipsis())
            } else {
                let ips = app
                    .epoch_images_per_s()
                    .map_or("--".to_string(), super::glyphs::three_digits);
                let eta = app.epoch_eta_seconds().map_or("--".to_string(), duration);
                format!("{ips} img/s ETA {eta}")
            };
            (
                format!("Batch {}/{}", p.step, p.of),
                format!("{:>4.0}% {status}", p.fraction() * 100.0),
                Some(p.fraction()),
            )
        }
    };
    let lw = ep_label
        .chars()
        .count()
        .max(b_label.chars().count())
        .min(width / 3);
    let rw = ep_right
        .chars()
        .count()
        .max(b_right.chars().count())
        .min(width / 2);
    let mut lines = vec![
        gauge_line(cx, width, &ep_label, lw, ep_frac, &ep_right, rw),
        gauge_line(cx, width, &b_label, lw, b_frac, &b_right, rw),
    ];
    if let Some(err) = &app.error {
        lines[1] = Line::from(span(
            cx.g.fit(&format!(" FAILED: {err}"), width),
            cx.t.error(),
        ));
    }
    lines
}

fn summary_lines(cx: &Ctx, s: &crate::protocol::Summary, width: usize) -> Vec<Line<'static>> {
    let sep = cx.g.sep();
    let end = if s.stopped { "Stopped:" } else { "Done:" };
    // best_epoch 0: the run ended before any epoch was validated.
    let mut first = if s.best_epoch == 0 {
        format!(" {end} {} epochs{sep}no epoch validated", s.epochs)
    } else {
        format!(
            " {end} {} epochs{sep}val acc {} (best {} @ epoch {}){sep}val loss {:.3}",
            s.epochs,
            pct(s.final_val_acc),
            pct(s.best_val_acc),
            s.best_epoch,
            s.final_val_loss
        )
    };
    if s.stopped {
        first.push_str(&format!("{sep}stopped by request"));
    }
    let mut second = Vec::new();
    if let Some(sup) = s.supervised_val_acc {
        second.push(format!(
            "{} round{}: {} {} {}",
            s.rounds,
            if s.rounds == 1 { "" } else { "s" },
            pct(sup),
            cx.g.arrow(),
            pct(s.final_val_acc),
        ));
    }
    let prec = s
        .pseudo_precision
        .map_or(String::new(), |p| format!(", prec {}", pct(p)));
    let pseudo = s.pseudo_labelled > 0 || s.rounds > 0;
    let tail = [
        format!("in {}", duration(s.wall_seconds)),
        format!("{:.0} img/s", s.images_per_s),
    ];
    // Longest first; the first that fits is shown.
    let variants: Vec<String> = ["pseudo-labels", "pseudo"]
        .iter()
        .map(|word| {
            let mut parts = second.clone();
            if pseudo {
                parts.push(format!("{} {word}{prec}", s.pseudo_labelled));
            }
            parts.extend(tail.iter().cloned());
            format!(" {}", parts.join(sep))
        })
        .collect();
    let line2 = variants
        .iter()
        .find(|v| v.chars().count() <= width)
        .or(variants.last())
        .map_or(String::new(), |v| cx.g.fit(v, width));
    vec![
        Line::from(span(cx.g.fit(&first, width), cx.t.bold())),
        Line::raw(line2),
    ]
}

// ----- panels -----------------------------------------------------------------------------

/// A panel: a title rule on the first row, then the body. `extra` holds variants of the text
/// after the title, longest first: the first that fits is shown.
pub(crate) fn panel(
    frame: &mut Frame,
    area: Rect,
    cx: &Ctx,
    title: &str,
    extra: &[String],
    body: Vec<Line<'static>>,
) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    let w = area.width as usize;
    let h = cx.g.hline();
    let title = cx.g.fit(title, w.saturating_sub(4));
    let mut used = 3 + title.chars().count();
    let mut spans = vec![
        Span::raw(format!("{h} ")),
        span(title, cx.t.title()),
        Span::raw(" "),
    ];
    let fitting = extra
        .iter()
        .find(|e| !e.is_empty() && used + e.chars().count() + 2 <= w);
    if let Some(e) = fitting {
        let e = cx.g.clean(e);
        used += e.chars().count() + 1;
        spans.push(Span::raw(format!("{e} ")));
    }
    spans.push(span(h.repeat(w.saturating_sub(used)), cx.t.muted()));
    let [head, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    put(frame, head, vec![Line::from(spans)]);
    let mut body = body;
    body.truncate(rest.height as usize);
    put(frame, rest, body);
}

fn main_panels(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let n_classes = cx.app.run.as_ref().map_or(0, |r| r.classes.len()) as u16;
    let show_rounds = !cx.app.rounds.is_empty();
    if area.width >= WIDE {
        let [a, b, c] = Layout::horizontal([
            Constraint::Ratio(1, 3),
            Constraint::Ratio(1, 3),
            Constraint::Ratio(1, 3),
        ])
        .spacing(1)
        .areas(area);
        left_column(frame, a, cx);
        let pc_h = (n_classes + 2).max(3).min(b.height);
        let [pc, conf] = Layout::vertical([Constraint::Length(pc_h), Constraint::Min(0)]).areas(b);
        per_class_panel(frame, pc, cx);
        confusion_panel(frame, conf, cx);
        pseudo_panel(frame, c, cx);
    } else {
        let [a, b] = Layout::horizontal([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)])
            .spacing(1)
            .areas(area);
        left_column(frame, a, cx);
        let pseudo_min: u16 = if show_rounds { 6 } else { 3 };
        let pc_h = (n_classes + 1)
            .max(2)
            .min(b.height.saturating_sub(pseudo_min))
            .max(2.min(b.height));
        let [pc, ps] = Layout::vertical([Constraint::Length(pc_h), Constraint::Min(0)]).areas(b);
        per_class_panel(frame, pc, cx);
        pseudo_panel(frame, ps, cx);
    }
}

fn left_column(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let loss_h = (area.height * 2 / 5).max(3).min(area.height);
    let [loss, val] =
        Layout::vertical([Constraint::Length(loss_h), Constraint::Min(0)]).areas(area);
    loss_panel(frame, loss, cx);
    validation_panel(frame, val, cx);
}

pub(crate) fn waiting(cx: &Ctx, what: &str) -> Vec<Line<'static>> {
    vec![Line::from(span(format!(" {what}"), cx.t.muted()))]
}

fn loss_panel(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let app = cx.app;
    let pts = app.losses.points();
    if pts.is_empty() {
        let body = waiting(
            cx,
            if app.run.is_none() {
                "waiting for the run to start"
            } else {
                "waiting for first batch"
            },
        );
        panel(frame, area, cx, "Loss per batch", &[], body);
        return;
    }
    let w = area.width as usize;
    let shown = app.loss_series(w);
    let (lo, hi) = super::glyphs::axis_range(
        shown.iter().copied().fold(f64::INFINITY, f64::min),
        shown.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let last = pts.last().map_or(f64::NAN, |p| f64::from(p.loss));
    let a = app.nav.ema_factor();
    let smooth = if a == 0.0 {
        "raw".to_string()
    } else {
        format!("ema {a:.2}")
    };
    let mode = match app.nav.history {
        History::All => "all".to_string(),
        History::Recent => format!("last {}", shown.len()),
    };
    let extra = [
        format!(
            "{mode}, {smooth}  last {last:.3}  axis {}-{}",
            super::glyphs::axis_label(lo),
            super::glyphs::axis_label(hi)
        ),
        format!("{mode}, {smooth}  last {last:.3}"),
        format!("{smooth} {last:.3}"),
        format!("{last:.3}"),
    ];
    let rows =
        cx.g.sparkline(&shown, lo, hi, area.height.saturating_sub(1) as usize);
    let body = rows
        .into_iter()
        .map(|r| Line::from(ink(&r, cx.t.bar())))
        .collect();
    panel(frame, area, cx, "Loss per batch", &extra, body);
}

fn validation_panel(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let app = cx.app;
    if app.epochs.is_empty() {
        panel(
            frame,
            area,
            cx,
            "Validation",
            &[],
            waiting(cx, "waiting for first validation"),
        );
        return;
    }
    let w = area.width as usize;
    let wide = w >= 48;
    let with_train = w >= 36;
    let mut header = format!("{:>4} {:<6}", "ep", "phase");
    if with_train {
        header.push_str(&format!(" {:>7}", "train"));
    }
    header.push_str(&format!(" {:>7} {:>7}", "val", "acc"));
    if wide {
        header.push_str(&format!(" {:>7}", "tr.acc"));
    }
    let best = app.best_epoch().map(|b| b.epoch);
    let rows_room = (area.height as usize).saturating_sub(2);
    let skip = app.epochs.len().saturating_sub(rows_room);
    let mut body = vec![Line::from(span(cx.g.fit(&header, w), cx.t.bold()))];
    for e in app.epochs.iter().skip(skip) {
        let is_best = Some(e.epoch) == best;
        let mut row = format!("{:>4} {:<6}", e.epoch, phase_short(e.phase));
        if with_train {
            row.push_str(&format!(" {:>7.3}", e.train_loss));
        }
        row.push_str(&format!(" {:>7.3} {:>7}", e.val_loss, pct(e.val_acc)));
        if wide {
            row.push_str(&format!(" {:>7}", pct(e.train_acc)));
        }
        if is_best {
            row.push_str(" *");
        }
        let style = if is_best { cx.t.bold() } else { cx.t.plain() };
        body.push(Line::from(span(cx.g.fit(&row, w), style)));
    }
    let extra = match app.best_epoch() {
        Some(b) => vec![
            format!("best {} @ epoch {} (*)", pct(b.val_acc), b.epoch),
            format!("best {} (*)", pct(b.val_acc)),
        ],
        None => Vec::new(),
    };
    panel(frame, area, cx, "Validation", &extra, body);
}

fn per_class_panel(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let app = cx.app;
    let Some(e) = app.latest_epoch() else {
        panel(
            frame,
            area,
            cx,
            "Per-class accuracy",
            &[],
            waiting(cx, "waiting for first validation"),
        );
        return;
    };
    let w = area.width as usize;
    let name_w = e
        .per_class
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 14)
        .min(w / 3);
    let with_prec = w >= 50;
    // Change since the last round (against the last epoch before it), once a round has run.
    let base = app.round_base();
    let with_delta = base.is_some() && w >= 36;
    let right_w = if with_prec { 18 } else { 7 } + if with_delta { 7 } else { 0 };
    let bar_w = w.saturating_sub(name_w + right_w + 3);
    let worst = e
        .per_class
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.accuracy().total_cmp(&b.1.accuracy()))
        .map(|(i, _)| i);
    let room = (area.height as usize).saturating_sub(1);
    let n = e.per_class.len();
    let shown = if n > room { room.saturating_sub(1) } else { n };
    let mut body = Vec::new();
    for (i, c) in e.per_class.iter().enumerate().take(shown) {
        let acc = c.accuracy();
        let style = if Some(i) == worst && n > 1 {
            cx.t.bold()
        } else {
            cx.t.plain()
        };
        let mut spans = vec![span(format!(" {} ", cx.g.pad(&c.name, name_w)), style)];
        if bar_w >= 4 {
            spans.push(span(cx.g.bar(acc, bar_w), cx.t.bar()));
        }
        let mut right = format!(" {:>6}", pct(acc));
        if let Some(b) = base.filter(|_| with_delta) {
            let d = b.per_class.get(i).map_or(String::new(), |bc| {
                let v = (acc - bc.accuracy()) * 100.0;
                if v.abs() < 0.05 {
                    "0.0".into()
                } else {
                    format!("{v:+.1}")
                }
            });
            right.push_str(&format!(" {d:>6}"));
        }
        if with_prec {
            right.push_str(&format!(" prec {:>6}", pct(c.precision())));
        }
        spans.push(span(right, style));
        body.push(Line::from(spans));
    }
    if shown < n {
        let worst_txt = worst
            .and_then(|i| e.per_class.get(i))
            .map_or(String::new(), |c| {
                format!(", worst {} {}", c.name, pct(c.accuracy()))
            });
        body.push(Line::raw(cx.g.fit(
            &format!(" {} {} more{worst_txt}", cx.g.ellipsis(), n - shown),
            w,
        )));
    }
    panel(
        frame,
        area,
        cx,
        "Per-class accuracy",
        &match base.filter(|_| with_delta) {
            Some(b) => vec![
                format!("val, epoch {}, change since epoch {}", e.epoch, b.epoch),
                format!("ep {}, vs ep {}", e.epoch, b.epoch),
                format!("ep {}", e.epoch),
            ],
            None => vec![format!("val, epoch {}", e.epoch), format!("ep {}", e.epoch)],
        },
        body,
    );
}

fn confusion_panel(frame: &mut Frame, area: Rect, cx: &Ctx) {
    if area.height < 3 {
        return;
    }
    let Some(e) = cx.app.latest_epoch() else {
        panel(
            frame,
            area,
            cx,
            "Confusion",
            &[],
            waiting(cx, "waiting for first validation"),
        );
        return;
    };
    let n = e.confusion.len();
    let w = area.width as usize;
    let max = e.confusion.iter().flatten().copied().max().unwrap_or(0);
    let cw = max.to_string().len().max(n.to_string().len()).max(3) + 1;
    let label_w = 12usize.min(w / 4);
    let mut body = Vec::new();
    if label_w + 4 + cw * n > w || (area.height as usize) < n + 2 {
        body.push(Line::raw(" (needs a larger terminal)"));
    } else {
        let mut head = format!(" {:<label_w$}", "true\\pred");
        for j in 0..n {
            head.push_str(&format!("{j:>cw$}"));
        }
        body.push(Line::from(span(head, cx.t.bold())));
        let names = cx.app.run.as_ref().map(|r| &r.classes);
        for (i, row) in e.confusion.iter().enumerate() {
            let name = names
                .and_then(|c| c.get(i))
                .map_or(String::new(), |s| s.clone());
            let mut spans = vec![Span::raw(format!(
                " {}",
                cx.g.pad(&format!("{i} {name}"), label_w)
            ))];
            for (j, v) in row.iter().enumerate() {
                let style = if i == j { cx.t.bold() } else { cx.t.plain() };
                spans.push(span(format!("{v:>cw$}"), style));
            }
            body.push(Line::from(spans));
        }
    }
    panel(
        frame,
        area,
        cx,
        "Confusion",
        &[format!("epoch {}", e.epoch)],
        body,
    );
}

fn pseudo_panel(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let app = cx.app;
    let thr: Vec<String> = match (app.threshold, app.threshold_requested) {
        (Some(t), Some(r)) => ["threshold", "thr"]
            .iter()
            .map(|word| format!("{word} {t:.2} {} {r:.2}", cx.g.arrow()))
            .collect(),
        (Some(t), None) => vec![format!("threshold {t:.2}"), format!("thr {t:.2}")],
        _ => Vec::new(),
    };
    // Per-class thresholds of the latest round (adaptive policies): their range first.
    let range = app
        .rounds
        .iter()
        .rev()
        .find(|r| r.is_finished())
        .map(|r| &r.thresholds)
        .filter(|t| !t.is_empty())
        .and_then(|t| {
            let lo = t.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = t.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            (hi - lo > 1e-6).then(|| format!("per class {lo:.2}-{hi:.2}"))
        });
    let thr: Vec<String> = match range {
        Some(range) if !thr.is_empty() => {
            let mut v = vec![format!("{}, {range}", thr[0])];
            v.extend(thr);
            v
        }
        _ => thr,
    };
    let title = "Pseudo-labels";
    let Some(run) = &app.run else {
        panel(
            frame,
            area,
            cx,
            title,
            &thr,
            waiting(cx, "waiting for the run to start"),
        );
        return;
    };
    if app.rounds.is_empty() {
        let msg = if run.sizes.unlabelled == 0 && run.rounds == 0 {
            "self-training off (no unlabelled pool)".to_string()
        } else {
            format!(
                "no round yet{}pool {}{}{} planned{}r runs one now",
                cx.g.sep(),
                run.sizes.unlabelled,
                cx.g.sep(),
                run.rounds,
                cx.g.sep()
            )
        };
        panel(frame, area, cx, title, &thr, waiting(cx, &msg));
        return;
    }
    let w = area.width as usize;
    let room = (area.height as usize).saturating_sub(1);
    // The round timeline: round, when it started (after which epoch), labels added and in use,
    // their precision, validation accuracy after the round, threshold.
    let with_val = w >= 36;
    let with_thr = w >= 42;
    let with_when = w >= 49;
    let mut head = format!("{:>4}", "rnd");
    if with_when {
        head.push_str(&format!(" {:>6}", "after"));
    }
    head.push_str(&format!(" {:>7} {:>7} {:>7}", "added", "total", "prec"));
    if with_val {
        head.push_str(&format!(" {:>6}", "val"));
    }
    if with_thr {
        head.push_str(&format!(" {:>5}", "thr"));
    }
    let mut body = vec![Line::from(span(cx.g.fit(&head, w), cx.t.bold()))];
    let max_rows = room.saturating_sub(3).clamp(1, 4);
    let skip = app.rounds.len().saturating_sub(max_rows);
    for r in app.rounds.iter().skip(skip) {
        let mut row = format!("{:>4}", r.round);
        if with_when {
            row.push_str(&format!(" {:>6}", format!("ep {}", r.after_epoch)));
        }
        if r.is_finished() {
            row.push_str(&format!(
                " {:>7} {:>7} {:>7}",
                r.added,
                r.total,
                r.precision.map_or("--".to_string(), pct),
            ));
            if with_val {
                let val = app
                    .val_acc_after_round(r.round)
                    .map_or("--".to_string(), pct);
                row.push_str(&format!(" {val:>6}"));
            }
            if with_thr {
                row.push_str(&format!(" {:>5.2}", r.threshold));
            }
        } else if r.online {
            row.push_str(&format!(
                " online, first report after its epoch{}",
                cx.g.ellipsis()
            ));
        } else {
            row.push_str(&format!(" predicting {} images{}", r.pool, cx.g.ellipsis()));
        }
        body.push(Line::raw(cx.g.fit(&row, w)));
    }
    if let Some(r) = app.rounds.iter().rev().find(|r| r.is_finished()) {
        let per_class_thr = !r.thresholds.is_empty()
            && r.thresholds.iter().any(|&t| (t - r.threshold).abs() > 1e-6);
        if !r.confidence_hist.is_empty() && body.len() < room {
            let hist: Vec<f64> = r.confidence_hist.iter().map(|&c| c as f64).collect();
            let hi = hist.iter().copied().fold(0.0, f64::max);
            let spark =
                cx.g.sparkline(&hist, 0.0, hi, 1)
                    .into_iter()
                    .next()
                    .unwrap_or_default();
            body.push(Line::from(vec![
                Span::raw(" confidence 0["),
                span(spark, cx.t.bar()),
                Span::raw("]1"),
            ]));
        }
        let left = room.saturating_sub(body.len());
        let classes = &run.classes;
        let entries: Vec<(String, usize, Option<f64>, Option<f32>)> = r
            .per_class
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                (
                    classes.get(i).cloned().unwrap_or_else(|| format!("#{i}")),
                    n,
                    r.per_class_precision.get(i).copied().flatten(),
                    r.thresholds.get(i).copied().filter(|_| per_class_thr),
                )
            })
            .collect();
        if left > entries.len() && !entries.is_empty() {
            body.push(Line::from(span(
                format!(" per class, round {}:", r.round),
                cx.t.bold(),
            )));
            let name_w = 14usize.min(w / 3);
            for (name, n, p, t) in &entries {
                let prec = p.map_or(String::new(), |p| format!("  prec {:>6}", pct(p)));
                let thr = t.map_or(String::new(), |t| format!("  thr {t:.2}"));
                body.push(Line::raw(cx.g.fit(
                    &format!("  {} {n:>6}{prec}{thr}", cx.g.pad(name, name_w)),
                    w,
                )));
            }
        } else if left > 0 && !entries.is_empty() {
            // Not one line per class: pack "name count" pairs.
            let mut line = String::from(" ");
            let mut lines = Vec::new();
            for (name, n, _, _) in &entries {
                let item = format!("{} {n}  ", cx.g.fit(name, 8));
                if line.chars().count() + item.chars().count() > w && line.len() > 1 {
                    lines.push(std::mem::replace(&mut line, String::from(" ")));
                }
                line.push_str(&item);
            }
            lines.push(line);
            for l in lines.into_iter().take(left) {
                body.push(Line::raw(cx.g.fit(&l, w)));
            }
        }
    }
    panel(frame, area, cx, title, &thr, body);
}

fn log_panel(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let logs = &cx.app.logs;
    let w = area.width as usize;
    let room = (area.height as usize).saturating_sub(1);
    let body = if logs.is_empty() {
        waiting(cx, "no log lines yet")
    } else {
        logs.iter()
            .skip(logs.len().saturating_sub(room))
            .map(|l| {
                let (tag, style) = match l.level {
                    Level::Info => ("", cx.t.plain()),
                    Level::Warn => ("WARN ", cx.t.warn()),
                    Level::Error => ("ERROR ", cx.t.error()),
                };
                Line::from(vec![
                    span(format!(" {} ", clock(l.at_ms)), cx.t.muted()),
                    span(
                        cx.g.fit(&format!("{tag}{}", l.message), w.saturating_sub(10)),
                        style,
                    ),
                ])
            })
            .collect()
    };
    panel(frame, area, cx, "Log", &[], body);
}

// ----- footer and overlays ----------------------------------------------------------------

/// The view tabs (active one bracketed and reversed) and, on the right, the learning rate and
/// the throughput.
fn tabs_line(cx: &Ctx, width: usize) -> Line<'static> {
    let app = cx.app;
    let mut spans = vec![Span::raw(" ")];
    let mut used = 1;
    for v in View::ALL {
        let action = match v {
            View::Overview => Action::ShowOverview,
            View::Classes => Action::ShowClasses,
            View::Samples => Action::ShowSamples,
            View::Log => Action::ShowLog,
        };
        let key = app.keys.first_key(action).unwrap_or_default();
        let label = if key.is_empty() {
            v.title().to_string()
        } else {
            format!("{key} {}", v.title())
        };
        let (text, style) = if v == app.nav.view {
            (format!("[{label}]"), cx.t.tab_active())
        } else {
            (format!(" {label} "), cx.t.plain())
        };
        used += text.chars().count() + 1;
        spans.push(span(cx.g.clean(&text), style));
        spans.push(Span::raw(" "));
    }
    let sep = cx.g.sep();
    let mut right = Vec::new();
    if let Some(lr) = app.learning_rate {
        right.push(format!("lr {lr:.2e}"));
    }
    if let Some(ips) = app
        .epoch
        .as_ref()
        .and_then(|p| p.images_per_s)
        .filter(|_| !app.state.has_ended())
    {
        right.push(format!("{ips:.0} img/s"));
    }
    let self_training = app
        .run
        .as_ref()
        .is_some_and(|r| r.rounds > 0 || r.sizes.unlabelled > 0);
    if let Some(t) = app.effective_threshold().filter(|_| self_training) {
        right.push(format!("thr {t:.2}"));
    }
    // Drop from the end until it fits.
    while !right.is_empty() {
        let r = right.join(sep);
        if used + r.chars().count() < width {
            let pad = width - used - r.chars().count() - 1;
            spans.push(Span::raw(" ".repeat(pad)));
            spans.push(span(r, cx.t.muted()));
            break;
        }
        right.pop();
    }
    Line::from(spans)
}

fn footer_line(cx: &Ctx, width: usize) -> Line<'static> {
    let app = cx.app;
    if app.confirm_quit {
        let q = if app.state == RunState::Stopping {
            "Already stopping. Quit without waiting? (y/n; d = detach)"
        } else {
            STOP_PROMPT
        };
        return Line::from(span(cx.g.pad(&format!(" {q}"), width), cx.t.prompt()));
    }
    let k = |a: Action| app.keys.first_key(a);
    let pair = |a: Action, b: Action| match (k(a), k(b)) {
        (Some(x), Some(y)) => Some(format!("{x}/{y}")),
        (x, y) => x.or(y),
    };
    // (priority, key, what): the most important (lowest priority number) are kept when the
    // line is too short; they are shown in this order.
    let mut items: Vec<(u8, Option<String>, &str)> = Vec::new();
    let live = !app.state.has_ended() && !app.stream_closed;
    if live {
        let pause = if app.state == RunState::Paused {
            "resume"
        } else {
            "pause"
        };
        items.push((1, k(Action::TogglePause), pause));
        items.push((3, k(Action::PseudoLabelRound), "round"));
        items.push((3, pair(Action::ThresholdUp, Action::ThresholdDown), "thr"));
        items.push((3, k(Action::SaveCheckpoint), "save"));
    }
    match app.nav.view {
        View::Overview => {
            items.push((2, k(Action::Smoothing), "ema"));
            items.push((2, k(Action::History), "hist"));
        }
        View::Classes => {
            items.push((2, pair(Action::Sort, Action::SortReverse), "sort"));
            items.push((2, k(Action::Compare), "vs"));
            items.push((4, pair(Action::Up, Action::Down), "scroll"));
        }
        View::Samples => {
            items.push((2, k(Action::SampleSet), "set"));
            items.push((2, pair(Action::Left, Action::Right), "page"));
        }
        View::Log => {
            items.push((2, k(Action::LogLevel), "level"));
            items.push((2, pair(Action::Up, Action::Down), "scroll"));
            items.push((4, k(Action::End), "follow"));
        }
    }
    if live || app.stream_closed && !app.state.has_ended() {
        items.push((3, k(Action::Detach), "detach"));
    }
    items.push((1, k(Action::Quit), "quit"));
    items.push((1, k(Action::ToggleHelp), "help"));
    let items: Vec<(u8, String, &str)> = items
        .into_iter()
        .filter_map(|(p, key, w)| key.map(|key| (p, cx.g.clean(&key), w)))
        .collect();
    let len = |(_, key, w): &(u8, String, &str)| key.chars().count() + w.len() + 3;
    let full: usize = items.iter().map(len).sum();
    let gap = if full < width { "  " } else { " " };
    let glen = |it: &(u8, String, &str)| len(it) - 2 + gap.len();
    // Choose by priority, show in order.
    let mut keep = vec![false; items.len()];
    let mut used = 1;
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items[i].0);
    for i in order {
        if used + glen(&items[i]) <= width {
            keep[i] = true;
            used += glen(&items[i]);
        }
    }
    let mut spans = vec![Span::raw(" ")];
    for (i, (_, key, what)) in items.iter().enumerate() {
        if keep[i] {
            spans.push(span(key.clone(), cx.t.prompt()));
            spans.push(Span::raw(format!(" {what}{gap}")));
        }
    }
    let note = if app.state.has_ended() {
        Some(format!(
            "run {}: final state",
            if app.state == RunState::Failed {
                "failed"
            } else {
                "ended"
            }
        ))
    } else if app.stream_closed {
        Some("disconnected from the run".to_string())
    } else {
        app.notice.clone()
    };
    if let Some(n) = note {
        let room = width.saturating_sub(used + 1);
        if room >= 8 {
            let n = cx.g.fit(&n, room);
            let pad = room - n.chars().count();
            spans.push(Span::raw(" ".repeat(pad)));
            spans.push(span(n, cx.t.muted()));
        }
    }
    Line::from(spans)
}

/// Help layout for a `w` x `h` screen: (columns, rows per column, visible rows, key width,
/// text width).
fn help_layout(w: u16, h: u16, app: &App) -> (usize, usize, usize, usize, usize) {
    let rows = app.keys.help_rows();
    let kw = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(4)
        .min(16);
    let dw = rows.iter().map(|(_, d)| d.len()).max().unwrap_or(10);
    let col_w = 1 + kw + 2 + dw;
    let cols = if usize::from(w) >= 2 * col_w + 3 {
        2
    } else {
        1
    };
    let per_col = rows.len().div_ceil(cols);
    let visible = per_col.min(usize::from(h).saturating_sub(3).max(1));
    (cols, per_col, visible, kw, dw)
}

/// How far the help can scroll on a `w` x `h` screen (0 when it fits).
pub fn help_scroll_max(w: u16, h: u16, app: &App) -> usize {
    let (_, per_col, visible, _, _) = help_layout(w, h, app);
    per_col.saturating_sub(visible)
}

fn help_overlay(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let app = cx.app;
    let rows = app.keys.help_rows();
    let (cols, per_col, visible, kw, dw) = help_layout(area.width, area.height, app);
    let scroll = app.nav.help_scroll.min(per_col.saturating_sub(visible));
    let col_w = 1 + kw + 2 + dw;
    let inner_w = cols * col_w + (cols - 1);
    let w = (inner_w as u16 + 2).min(area.width);
    let h = (visible as u16 + 3).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let cell = |i: usize| -> Vec<Span<'static>> {
        match rows.get(i) {
            Some((k, d)) => vec![
                span(format!(" {}", cx.g.pad(k, kw)), cx.t.bold()),
                Span::raw(format!("  {}", cx.g.pad(d, dw))),
            ],
            None => vec![Span::raw(" ".repeat(col_w))],
        }
    };
    let mut lines: Vec<Line<'static>> = (scroll..scroll + visible)
        .map(|r| {
            let mut spans = cell(r);
            if cols == 2 {
                spans.push(Span::raw(" "));
                spans.extend(cell(per_col + r));
            }
            Line::from(spans)
        })
        .collect();
    let more = if per_col > visible {
        let k = |a: Action| app.keys.first_key(a).unwrap_or_default();
        format!(
            "  {}/{} {}-{}/{}",
            k(Action::Up),
            k(Action::Down),
            scroll + 1,
            scroll + visible,
            per_col
        )
    } else {
        String::new()
    };
    let close = app.keys.first_key(Action::ToggleHelp).unwrap_or_default();
    let hint = if more.is_empty() {
        format!(" {close} or Esc closes")
    } else {
        format!(" {close}/Esc close{more}")
    };
    lines.push(Line::from(span(cx.g.fit(&hint, inner_w), cx.t.muted())));
    let mut block = Block::new()
        .borders(Borders::ALL)
        .title(Line::from(span(" Keys ".to_string(), cx.t.title())));
    if cx.g.ascii {
        block = block.border_set(ASCII_BORDER);
    }
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(lines).block(block), rect);
}

#[cfg(test)]
mod ink_tests {
    use super::*;

    #[test]
    fn ink_leaves_runs_of_spaces_unstyled() {
        let red = Style::default().fg(ratatui::style::Color::Red);
        let spans = ink("  ██ ▃  ", red);
        let got: Vec<(&str, Style)> = spans
            .iter()
            .map(|s| (s.content.as_ref(), s.style))
            .collect();
        assert_eq!(
            got,
            [
                ("  ", Style::default()),
                ("██", red),
                (" ", Style::default()),
                ("▃", red),
                ("  ", Style::default()),
            ]
        );
        assert!(ink("", red).is_empty());
    }
}
