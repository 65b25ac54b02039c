//! The Log view: the run's events and warnings, newest at the bottom, long lines wrapped,
//! filtered by level, scrollable (it follows new lines until scrolled up).

use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::Frame;

use crate::protocol::Level;

use super::glyphs::clock;
use super::state::App;
use super::view::{panel, span, waiting, Ctx};

/// Width of the " HH:MM:SS LEVEL " prefix.
const PREFIX: usize = 16;

/// The filtered log, wrapped to `width` columns: (level, text) per screen line.
fn wrapped(app: &App, width: u16) -> Vec<(Level, String)> {
    let w = usize::from(width);
    let text_w = w.saturating_sub(PREFIX).max(8);
    let mut out = Vec::new();
    for l in app.filtered_logs() {
        let tag = match l.level {
            Level::Info => "INFO ",
            Level::Warn => "WARN ",
            Level::Error => "ERROR",
        };
        let chunks = wrap(&l.message, text_w);
        for (i, c) in chunks.into_iter().enumerate() {
            let prefix = if i == 0 {
                format!(" {} {tag} ", clock(l.at_ms))
            } else {
                " ".repeat(PREFIX)
            };
            out.push((l.level, format!("{prefix}{c}")));
        }
    }
    out
}

/// Screen lines the filtered log takes at `width` columns.
pub fn wrapped_len(app: &App, width: u16) -> usize {
    wrapped(app, width).len()
}

/// Split `s` into pieces of at most `w` characters, at spaces where possible.
pub fn wrap(s: &str, w: usize) -> Vec<String> {
    let w = w.max(1);
    let mut out = Vec::new();
    let mut line = String::new();
    let mut len = 0;
    for word in s.split(' ') {
        let wl = word.chars().count();
        if len > 0 && len + 1 + wl > w {
            out.push(std::mem::take(&mut line));
            len = 0;
        }
        if len > 0 {
            line.push(' ');
            len += 1;
        }
        // A word longer than the line is cut.
        let mut rest: Vec<char> = word.chars().collect();
        while len + rest.len() > w {
            let take = w - len;
            line.extend(rest.drain(..take));
            out.push(std::mem::take(&mut line));
            len = 0;
        }
        len += rest.len();
        line.extend(rest);
    }
    if !line.is_empty() || out.is_empty() {
        out.push(line);
    }
    out
}

pub(crate) fn draw(frame: &mut Frame, area: Rect, cx: &Ctx) {
    let app = cx.app;
    let lines = wrapped(app, area.width);
    let visible = usize::from(area.height.saturating_sub(1));
    let total = lines.len();
    let scroll = app.nav.log_scroll.min(total.saturating_sub(visible));
    let end = total - scroll;
    let start = end.saturating_sub(visible);
    let kept = app.filtered_logs().len();
    let filter = app.nav.log_filter.label();
    let pos = if scroll == 0 {
        "following".to_string()
    } else {
        format!("{scroll} lines newer below")
    };
    let extra = [
        format!("{filter}, {kept} of {} lines, {pos}", app.logs.len()),
        format!("{filter}, {pos}"),
        pos.clone(),
    ];
    if total == 0 {
        let msg = if app.logs.is_empty() {
            "no log lines yet".to_string()
        } else {
            format!("no lines at this level ({filter})")
        };
        panel(frame, area, cx, "Log", &extra, waiting(cx, &msg));
        return;
    }
    let body = lines[start..end]
        .iter()
        .map(|(level, text)| {
            let style = match level {
                Level::Info => cx.t.plain(),
                Level::Warn => cx.t.warn(),
                Level::Error => cx.t.error(),
            };
            Line::from(span(cx.g.fit(text, usize::from(area.width)), style))
        })
        .collect();
    panel(frame, area, cx, "Log", &extra, body);
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_breaks_at_spaces_and_cuts_long_words() {
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), vec![""]);
        assert_eq!(wrap("ab cdefgh", 4), vec!["ab", "cdef", "gh"]);
    }
}
