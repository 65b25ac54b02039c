//! The Classes view: per-class accuracy (= recall), precision and F1 of the latest epoch,
//! sortable, with the change since the previous epoch or round; the confusion matrix as a heat
//! map (background colours, viridis; numbers or a character ramp without colour); and the
//! largest confusions as a list ("Shirt -> T-shirt/top 83").

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::Frame;

use super::glyphs::pct;
use super::palette::{contrast_on, heat};
use super::state::{App, Compare, SortKey};
use super::thumbs::{ramp_index, ASCII_RAMP, SHADE_RAMP};
use super::view::{panel, span, waiting, Ctx};

/// From this width on, the table and the heat map sit side by side.
const SIDE_BY_SIDE: u16 = 120;

struct Areas {
    table: Rect,
    heat: Rect,
    tops: Rect,
}

/// Width of the heat map's row labels and of each cell, for `n` classes in `width` columns:
/// (label width, cell width), or `None` when it cannot fit.
fn heat_geometry(n: usize, width: u16, max_count: u64) -> Option<(usize, usize)> {
    let w = usize::from(width);
    let digits = max_count
        .to_string()
        .len()
        .max(n.saturating_sub(1).to_string().len());
    for (lw, cw) in [
        (14, digits + 2),
        (10, digits + 1),
        (4, digits + 1),
        (4, 3),
        (4, 2),
        (3, 1),
    ] {
        if lw + 1 + n * cw <= w {
            return Some((lw, cw));
        }
    }
    None
}

fn areas(area: Rect, n: usize, heat_w: u16) -> Areas {
    let heat_h = (n as u16 + 3).min(area.height);
    if area.width >= SIDE_BY_SIDE {
        let table_w = (area.width / 2).max(area.width.saturating_sub(heat_w.max(40) + 1));
        let [table, right] = Layout::horizontal([Constraint::Length(table_w), Constraint::Min(0)])
            .spacing(1)
            .areas(area);
        let [heat, tops] =
            Layout::vertical([Constraint::Length(heat_h), Constraint::Min(0)]).areas(right);
        return Areas { table, heat, tops };
    }
    let table_h = (n as u16 + 2)
        .min(area.height.saturating_sub(heat_h).max(5))
        .min(area.height);
    let [table, bottom] =
        Layout::vertical([Constraint::Length(table_h), Constraint::Min(0)]).areas(area);
    let heat_w = heat_w.min(bottom.width);
    let tops_w = bottom.width.saturating_sub(heat_w + 1);
    if tops_w >= 24 {
        let [heat, tops] = Layout::horizontal([Constraint::Length(heat_w), Constraint::Min(0)])
            .spacing(1)
            .areas(bottom);
        Areas { table, heat, tops }
    } else {
        Areas {
            table,
            heat: bottom,
            tops: Rect::default(),
        }
    }
}

fn heat_width(app: &App, width: u16) -> u16 {
    let Some(e) = app.epochs.last() else {
        return 0;
    };
    let n = e.confusion.len();
    let max = e.confusion.iter().flatten().copied().max().unwrap_or(0);
    let budget = if width >= SIDE_BY_SIDE {
        width / 2
    } else {
        (width * 3 / 5).max(width.saturating_sub(30))
    };
    heat_geometry(n, budget, max).map_or(0, |(lw, cw)| (lw + 1 + n * cw) as u16 + 1)
}

/// How far the class table can scroll in a view of `area` with `n` classes.
pub fn table_scroll_max(area: Rect, app: &App, n: usize) -> usize {
    let a = areas(area, n, heat_width(app, area.width));
    n.saturating_sub(usize::from(a.table.height.saturating_sub(2)))
}

pub(crate) fn draw(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let app = cx.app;
    let Some(e) = app.epochs.last() else {
        panel(
            frame,
            area,
            cx,
            "Classes",
            &[],
            waiting(cx, "waiting for first validation"),
        );
        return;
    };
    let n = e.per_class.len().max(e.confusion.len());
    let a = areas(area, n, heat_width(app, area.width));
    table(frame, a.table, cx);
    heat_map(frame, a.heat, cx);
    if a.tops.height > 0 {
        top_confusions(frame, a.tops, cx);
    }
}

fn compare_label(app: &App) -> String {
    match (app.compare_base(), app.nav.compare) {
        (Some(b), Compare::PrevEpoch) => format!("vs epoch {}", b.epoch),
        (Some(b), Compare::PrevRound) => format!("vs epoch {} (before round)", b.epoch),
        (None, Compare::PrevEpoch) => "no earlier epoch".into(),
        (None, Compare::PrevRound) => "no earlier round".into(),
    }
}

fn signed_pp(d: f64) -> String {
    let v = d * 100.0;
    if v.abs() < 0.05 {
        "0.0".into()
    } else {
        format!("{v:+.1}")
    }
}

fn table(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let app = cx.app;
    let rows = app.class_rows();
    let w = usize::from(area.width);
    let e_epoch = app.epochs.last().map_or(0, |e| e.epoch);
    let name_w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 16);
    // Columns, dropped from the right when narrow: support, recall, bar.
    let base_w = 4 + name_w + 7 * 4; // idx, name, acc, prec, F1, change
    let with_support = w >= base_w + 7;
    let with_recall = w >= base_w + 14;
    let row_w = 4 + name_w + 2 + 7 * (4 + usize::from(with_support) + usize::from(with_recall));
    let bar_w = w.saturating_sub(row_w + 3).min(30);
    let (up, down) = if cx.g.ascii {
        ("^", "v")
    } else {
        ("▲", "▼")
    };
    let mark = |k: SortKey| -> &str {
        if app.nav.sort == k {
            if app.nav.sort_desc {
                down
            } else {
                up
            }
        } else {
            " "
        }
    };
    let col = |label: &str, k: Option<SortKey>, width: usize| -> String {
        let m = k.map_or(" ", mark);
        format!("{:>width$}", format!("{label}{m}"), width = width)
    };
    let mut head = format!(
        "{:>3}{} {:<name_w$} ",
        "#",
        mark(SortKey::Class),
        format!("class{}", mark(SortKey::Name)),
    );
    if with_support {
        head.push_str(&col("supp", Some(SortKey::Support), 7));
    }
    head.push_str(&col("acc", Some(SortKey::Accuracy), 7));
    head.push_str(&col("prec", Some(SortKey::Precision), 7));
    if with_recall {
        head.push_str(&col("rec", None, 7));
    }
    head.push_str(&col("F1", Some(SortKey::F1), 7));
    head.push_str(&col("chg", Some(SortKey::Change), 7));
    let mut body = vec![Line::from(span(cx.g.fit(&head, w), cx.t.bold()))];
    let room = usize::from(area.height.saturating_sub(2));
    let max_scroll = rows.len().saturating_sub(room);
    let scroll = app.nav.class_scroll.min(max_scroll);
    for r in rows.iter().skip(scroll).take(room) {
        let mut text = format!("{:>3}  {} ", r.index, cx.g.pad(&r.name, name_w));
        if with_support {
            text.push_str(&format!("{:>7}", r.support));
        }
        text.push_str(&format!("{:>7}{:>7}", pct(r.accuracy), pct(r.precision)));
        if with_recall {
            text.push_str(&format!("{:>7}", pct(r.recall)));
        }
        text.push_str(&format!("{:>7}", format!("{:.3}", r.f1)));
        let mut spans = vec![Span::raw(text)];
        let (chg, style) = match r.change {
            Some(d) if d * 100.0 >= 0.05 => (signed_pp(d), cx.t.good()),
            Some(d) if d * 100.0 <= -0.05 => (signed_pp(d), cx.t.bad()),
            Some(d) => (signed_pp(d), cx.t.plain()),
            None => ("--".into(), cx.t.muted()),
        };
        spans.push(span(format!("{chg:>7}"), style));
        if bar_w >= 6 {
            spans.push(Span::raw("  "));
            spans.push(span(cx.g.bar(r.accuracy, bar_w), cx.t.bar()));
        }
        body.push(Line::from(spans));
    }
    let shown_to = (scroll + room).min(rows.len());
    let scroll_note = if rows.len() > room {
        format!("{}-{} of {}", scroll + 1, shown_to, rows.len())
    } else {
        String::new()
    };
    let sort = format!(
        "by {}{}",
        app.nav.sort.label(),
        if app.nav.sort_desc { " desc" } else { "" }
    );
    let cmp = compare_label(app);
    let extra = [
        format!("epoch {e_epoch}, acc = recall, chg = acc pts {cmp}, {sort} {scroll_note}"),
        format!("epoch {e_epoch}, chg {cmp}, {sort} {scroll_note}"),
        format!("ep {e_epoch}, {cmp} {scroll_note}"),
        format!("ep {e_epoch} {scroll_note}"),
    ];
    let extra: Vec<String> = extra.iter().map(|s| s.trim_end().to_string()).collect();
    panel(frame, area, cx, "Classes", &extra, body);
}

fn heat_map(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let app = cx.app;
    let Some(e) = app.epochs.last() else {
        return;
    };
    if area.height < 3 || area.width < 10 {
        return;
    }
    let n = e.confusion.len();
    let max = e.confusion.iter().flatten().copied().max().unwrap_or(0);
    let fits_rows = usize::from(area.height) >= n + 2;
    let geo = heat_geometry(n, area.width.saturating_sub(1), max);
    let title = "Confusion";
    let Some((lw, cw)) = geo.filter(|_| fits_rows) else {
        panel(
            frame,
            area,
            cx,
            title,
            &[],
            vec![Line::raw(cx.g.fit(
                &format!(" {n}x{n}: needs a larger terminal (see top confusions)"),
                usize::from(area.width),
            ))],
        );
        return;
    };
    let digits = max.to_string().len();
    let numbers = cw > digits;
    let color = app.opts.color;
    let ramp: &[char] = if cx.g.ascii { &ASCII_RAMP } else { &SHADE_RAMP };
    let mut head = format!(" {:<lw$}", if lw >= 10 { "true\\pred" } else { "t\\p" });
    for j in 0..n {
        let label = if j.to_string().len() < cw {
            j.to_string()
        } else {
            (j % 10).to_string()
        };
        head.push_str(&format!("{label:>cw$}"));
    }
    let mut body = vec![Line::from(span(head, cx.t.bold()))];
    for (i, row) in e.confusion.iter().enumerate() {
        let total: u64 = row.iter().sum();
        let label = if lw >= 8 {
            format!("{i} {}", app.class_name(i))
        } else {
            i.to_string()
        };
        let mut spans = vec![Span::raw(format!(" {}", cx.g.pad(&label, lw)))];
        for (j, &v) in row.iter().enumerate() {
            let frac = if total == 0 {
                0.0
            } else {
                v as f64 / total as f64
            };
            let t = frac.sqrt();
            let text = if numbers {
                format!("{v:>cw$}")
            } else if color {
                " ".repeat(cw)
            } else {
                ramp[ramp_index(t * 255.0, ramp.len())]
                    .to_string()
                    .repeat(cw)
            };
            let mut style = if color {
                ratatui::style::Style::new()
                    .bg(heat(cx.t.depth, t))
                    .fg(contrast_on(cx.t.depth, t))
            } else {
                cx.t.plain()
            };
            if i == j {
                style = style.add_modifier(ratatui::style::Modifier::BOLD);
            }
            spans.push(span(text, style));
        }
        body.push(Line::from(spans));
    }
    if usize::from(area.height) >= n + 3 {
        let legend = if color {
            let mut sp = vec![Span::raw(" row share 0 ")];
            for k in 0..=8 {
                let t = f64::from(k) / 8.0;
                sp.push(span(
                    " ".to_string(),
                    ratatui::style::Style::new().bg(heat(cx.t.depth, t)),
                ));
            }
            sp.push(Span::raw(" 1 (sqrt)"));
            Line::from(sp)
        } else if numbers {
            Line::raw(" counts; rows: true class")
        } else {
            let r: String = ramp.iter().collect();
            Line::raw(cx.g.fit(&format!(" row share 0 [{r}] 1"), usize::from(area.width)))
        };
        body.push(legend);
    }
    panel(
        frame,
        area,
        cx,
        title,
        &[format!("epoch {}", e.epoch), format!("ep {}", e.epoch)],
        body,
    );
}

fn top_confusions(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let app = cx.app;
    let room = usize::from(area.height.saturating_sub(1));
    let cells = app.top_confusions(room);
    let w = usize::from(area.width);
    if cells.is_empty() {
        panel(
            frame,
            area,
            cx,
            "Top confusions",
            &[],
            waiting(cx, "none: every image right"),
        );
        return;
    }
    let count_w = cells
        .iter()
        .map(|c| c.count.to_string().len())
        .max()
        .unwrap_or(1);
    let body = cells
        .iter()
        .map(|c| {
            let chg = match c.change {
                Some(0) => " (=)".to_string(),
                Some(d) => format!(" ({d:+})"),
                None => String::new(),
            };
            let tail = format!(" {:>count_w$}{chg}", c.count);
            let names = format!(
                " {} {} {}",
                app.class_name(c.truth),
                cx.g.arrow(),
                app.class_name(c.predicted)
            );
            let names_w = w.saturating_sub(tail.chars().count());
            let style = match c.change {
                Some(d) if d > 0 => cx.t.bad(),
                Some(d) if d < 0 => cx.t.good(),
                _ => cx.t.plain(),
            };
            Line::from(vec![
                Span::raw(cx.g.pad(&names, names_w)),
                span(tail, style),
            ])
        })
        .collect();
    panel(
        frame,
        area,
        cx,
        "Top confusions",
        &[compare_label(app)],
        body,
    );
}
