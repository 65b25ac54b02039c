//! The Samples view: thumbnails of real images, one card each, a page at a time. Either the
//! misclassified validation images of the latest epoch (true label, predicted label and its
//! confidence) or the pseudo-labels of the latest round by class (label, confidence, and
//! whether it was right when the true label is known).

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::Frame;

use super::state::SampleSet;
use super::thumbs::{render_thumbnail, ThumbError, ThumbSlot, ThumbStyle};
use super::view::{panel, put, span, waiting, Ctx};

/// How a page of cards is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Cards per row and rows of cards.
    pub cols: usize,
    pub rows: usize,
    /// Thumbnail size in cells (each cell two pixels stacked).
    pub thumb_w: usize,
    pub thumb_h: usize,
    /// Card size in cells (thumbnail + two text lines; one column of gap included).
    pub card_w: usize,
    pub card_h: usize,
}

impl Grid {
    pub fn per_page(&self) -> usize {
        self.cols * self.rows
    }
}

/// Minimum width of a card's text.
const TEXT_MIN: usize = 14;

/// The largest thumbnails that still give a useful page (8 cards or more) in `area`.
pub fn grid(area: Rect) -> Grid {
    let w = usize::from(area.width);
    let h = usize::from(area.height.saturating_sub(1));
    let mut best = None;
    for th in [14usize, 10, 7, 5, 3] {
        let tw = th * 2;
        let card_w = tw.max(TEXT_MIN) + 1;
        let card_h = th + 2;
        let g = Grid {
            cols: (w + 1) / card_w,
            rows: h / card_h,
            thumb_w: tw,
            thumb_h: th,
            card_w,
            card_h,
        };
        best = Some(g);
        if g.per_page() >= 8 {
            break;
        }
    }
    best.unwrap_or(Grid {
        cols: 0,
        rows: 0,
        thumb_w: 0,
        thumb_h: 0,
        card_w: 1,
        card_h: 1,
    })
}

/// Cards per page in a view of `area`.
pub fn per_page(area: Rect) -> usize {
    grid(area).per_page()
}

pub(crate) fn draw(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let app = cx.app;
    let shown = app.samples_shown();
    let (title, other) = match shown.set {
        SampleSet::Mistakes => ("Mistakes", "pseudo-labels"),
        SampleSet::PseudoLabels => ("Pseudo-labels", "mistakes"),
    };
    let switch = app
        .keys
        .first_key(super::keymap::Action::SampleSet)
        .map_or(String::new(), |k| format!("{k}: {other}"));
    if shown.notes.is_empty() {
        let msg = match (shown.set, shown.origin) {
            (SampleSet::Mistakes, None) => "waiting for first validation".to_string(),
            (SampleSet::Mistakes, Some(e)) => {
                format!("no misclassified images reported (epoch {e})")
            }
            (SampleSet::PseudoLabels, None) => "no pseudo-label round yet".to_string(),
            (SampleSet::PseudoLabels, Some(r)) => format!("round {r} reported no samples"),
        };
        panel(frame, area, cx, title, &[switch], waiting(cx, &msg));
        return;
    }
    let g = grid(area);
    let per = g.per_page().max(1);
    let pages = shown.notes.len().div_ceil(per).max(1);
    let page = app.nav.sample_page.min(pages - 1);
    let origin = match (shown.set, shown.origin) {
        (SampleSet::Mistakes, Some(e)) => format!("epoch {e}"),
        (SampleSet::PseudoLabels, Some(r)) => format!("round {r}"),
        _ => String::new(),
    };
    let what = match shown.set {
        SampleSet::Mistakes => format!("true {} predicted (confidence)", cx.g.arrow()),
        SampleSet::PseudoLabels => "label (confidence), right or wrong".to_string(),
    };
    let n = shown.notes.len();
    let page_txt = format!("page {}/{pages}", page + 1);
    let extra = [
        format!("{origin}, {n} images, {what}, {page_txt}, {switch}"),
        format!("{origin}, {n} images, {page_txt}, {switch}"),
        format!("{origin}, {page_txt}, {switch}"),
        format!("{page_txt}, {switch}"),
        page_txt.clone(),
    ];
    panel(frame, area, cx, title, &extra, Vec::new());
    if g.per_page() == 0 {
        return;
    }
    let style = ThumbStyle::for_view(app.opts);
    for (k, note) in shown.notes.iter().skip(page * per).take(per).enumerate() {
        let (r, c) = (k / g.cols, k % g.cols);
        let x = area.x + (c * g.card_w) as u16;
        let y = area.y + 1 + (r * g.card_h) as u16;
        let text_w = g.card_w - 1;
        let thumb_x = x + ((text_w.saturating_sub(g.thumb_w)) / 2) as u16;
        let thumb = Rect::new(thumb_x, y, g.thumb_w as u16, g.thumb_h as u16);
        let lines = match app.thumbs.get(&note.path) {
            Some(ThumbSlot::Ready(t)) => render_thumbnail(t, g.thumb_w, g.thumb_h, style),
            Some(ThumbSlot::Failed(ThumbError::NotFound)) => {
                boxed(cx, g.thumb_w, g.thumb_h, &["image", "not found"])
            }
            Some(ThumbSlot::Failed(ThumbError::Unreadable(_))) => {
                boxed(cx, g.thumb_w, g.thumb_h, &["cannot", "decode"])
            }
            Some(ThumbSlot::Loading) | None => {
                let loading = format!("loading{}", cx.g.ellipsis());
                boxed(cx, g.thumb_w, g.thumb_h, &[loading.as_str()])
            }
        };
        put(frame, thumb, lines);
        let text = Rect::new(x, y + g.thumb_h as u16, text_w as u16, 2);
        put(frame, text, card_text(cx, note, shown.set, text_w));
    }
}

/// Two lines under a thumbnail.
fn card_text(
    cx: &Ctx,
    note: &crate::protocol::SampleNote,
    set: SampleSet,
    w: usize,
) -> Vec<Line<'static>> {
    let app = cx.app;
    let conf = format!("{:.0}%", f64::from(note.confidence) * 100.0);
    let label = app.class_name(note.label);
    match set {
        SampleSet::Mistakes => {
            let truth = note.truth.map_or("?".to_string(), |t| app.class_name(t));
            let tail = format!(" {conf}");
            let name_w = w.saturating_sub(tail.chars().count() + cx.g.arrow().chars().count());
            vec![
                Line::from(span(cx.g.fit(&truth, w), cx.t.bold())),
                Line::from(vec![
                    Span::raw(cx.g.arrow().to_string()),
                    span(cx.g.fit(&label, name_w), cx.t.bad()),
                    Span::raw(tail),
                ]),
            ]
        }
        SampleSet::PseudoLabels => {
            let tail = format!(" {conf}");
            let name_w = w.saturating_sub(tail.chars().count());
            let verdict = match note.truth {
                Some(t) if t == note.label => span("right".to_string(), cx.t.good()),
                Some(t) => span(
                    cx.g.fit(&format!("WRONG: {}", app.class_name(t)), w),
                    cx.t.bad(),
                ),
                None => span("truth unknown".to_string(), cx.t.muted()),
            };
            vec![
                Line::from(vec![
                    span(cx.g.fit(&label, name_w), cx.t.bold()),
                    Span::raw(tail),
                ]),
                Line::from(verdict),
            ]
        }
    }
}

/// A `w` x `h` frame with the words centred in it, for a thumbnail that is not there.
fn boxed(cx: &Ctx, w: usize, h: usize, words: &[&str]) -> Vec<Line<'static>> {
    if w < 3 || h < 3 {
        return vec![Line::from(span(
            cx.g.fit(words.join(" ").as_str(), w),
            cx.t.muted(),
        ))];
    }
    let (tl, tr, bl, br, hz, vt) = if cx.g.ascii {
        ("+", "+", "+", "+", "-", "|")
    } else {
        ("┌", "┐", "└", "┘", "─", "│")
    };
    let inner = w - 2;
    let mut lines = vec![Line::from(span(
        format!("{tl}{}{tr}", hz.repeat(inner)),
        cx.t.muted(),
    ))];
    let body_h = h - 2;
    // Words that do not fit on their own line are joined.
    let words: Vec<String> = if words.len() > body_h {
        vec![words.join(" ")]
    } else {
        words.iter().map(|s| s.to_string()).collect()
    };
    let top = (body_h.saturating_sub(words.len())) / 2;
    for i in 0..body_h {
        let text = i
            .checked_sub(top)
            .and_then(|k| words.get(k))
            .map_or(String::new(), |s| cx.g.fit(s, inner));
        let pad = inner - text.chars().count();
        let centred = format!("{}{text}{}", " ".repeat(pad / 2), " ".repeat(pad - pad / 2));
        lines.push(Line::from(vec![
            span(vt.to_string(), cx.t.muted()),
            span(centred, cx.t.bold()),
            span(vt.to_string(), cx.t.muted()),
        ]));
    }
    lines.push(Line::from(span(
        format!("{bl}{}{br}", hz.repeat(inner)),
        cx.t.muted(),
    )));
    lines
}
