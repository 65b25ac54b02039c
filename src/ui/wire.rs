//! A [`Backend`] wrapper that sends blocks of rows that moved as terminal scrolls.
//!
//! ratatui redraws every cell that changed. When the log panel gains a line every one of its
//! rows changes (each shows the line that was below it), so a frame re-sends the whole panel:
//! about a kilobyte at 200 columns, at every epoch boundary. This wrapper keeps a copy of what
//! the terminal shows, finds the block of full-width rows that moved up or down by the same
//! number of rows, moves it with a scroll region (DECSTBM + SU/SD, which xterm, tmux, screen and
//! every VT100 descendant honour), and then has the inner backend draw only what still differs.
//! A scroll is used only when it saves cells; `WICK_NO_SCROLL_REGIONS=1` turns it off.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Range;

use ratatui::backend::{Backend, ClearType, WindowSize};
use ratatui::buffer::{Buffer, Cell};
use ratatui::layout::{Position, Rect, Size};

/// Cells a scroll must save to be worth its escape codes (`CSI t;b r`, `CSI n S`, `CSI r` and
/// the reset before it: about 20 bytes).
const MIN_SAVING: usize = 24;

/// Which way a block of rows moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Rows moved up (new lines came in at the bottom): `CSI n S`.
    Up,
    /// Rows moved down (new lines came in at the top): `CSI n T`.
    Down,
}

/// One scroll of the rows `region` (full width) by `amount` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scroll {
    pub region: Range<u16>,
    pub amount: u16,
    pub direction: Direction,
}

/// Whether scroll regions are on: yes unless `WICK_NO_SCROLL_REGIONS` is set to something
/// other than `0` or empty (for a terminal that gets them wrong).
pub fn scroll_regions_enabled() -> bool {
    std::env::var("WICK_NO_SCROLL_REGIONS").map_or(true, |v| v.is_empty() || v == "0")
}

/// The wrapper. The copy of the screen starts blank, as ratatui assumes (the dashboard enters
/// the alternate screen first), and is blanked again on every full clear.
#[derive(Debug)]
pub struct ScrollingBackend<B> {
    inner: B,
    enabled: bool,
    /// What the terminal shows; `None` after a partial clear, until the next full clear.
    screen: Option<Buffer>,
    scrolls: u64,
}

impl<B: Backend> ScrollingBackend<B> {
    /// Wrap `inner`; with `enabled` false every call is passed straight through.
    pub fn new(inner: B, enabled: bool) -> Result<Self, B::Error> {
        let size = inner.size()?;
        Ok(ScrollingBackend {
            inner,
            enabled,
            screen: Some(blank(size)),
            scrolls: 0,
        })
    }

    /// Scrolls sent so far.
    pub fn scrolls(&self) -> u64 {
        self.scrolls
    }

    /// Send `scroll` and do the same to the copy of the screen.
    fn scroll(&mut self, scroll: Scroll) -> Result<(), B::Error> {
        match scroll.direction {
            Direction::Up => self
                .inner
                .scroll_region_up(scroll.region.clone(), scroll.amount)?,
            Direction::Down => self
                .inner
                .scroll_region_down(scroll.region.clone(), scroll.amount)?,
        }
        if let Some(screen) = &mut self.screen {
            apply_scroll(screen, &scroll);
        }
        self.scrolls += 1;
        Ok(())
    }
}

fn blank(size: Size) -> Buffer {
    Buffer::empty(Rect::new(0, 0, size.width, size.height))
}

/// A hash of each row, so that rows are compared cell by cell only when they may be equal.
fn row_hashes(buf: &Buffer) -> Vec<u64> {
    let w = buf.area.width as usize;
    if w == 0 {
        return vec![0; buf.area.height as usize];
    }
    buf.content
        .chunks(w)
        .map(|row| {
            let mut h = DefaultHasher::new();
            row.hash(&mut h);
            h.finish()
        })
        .collect()
}

fn row(buf: &Buffer, y: usize) -> &[Cell] {
    let w = buf.area.width as usize;
    &buf.content[y * w..(y + 1) * w]
}

fn differing(a: &[Cell], b: &[Cell]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

/// The scroll that saves the most cells in turning `old` into `new`, if one saves at least
/// [`MIN_SAVING`]. A candidate is a maximal run of rows that equal `old`'s rows `k` below (or
/// above), starting at a row that changed; scrolling its region moves the run into place and
/// leaves `k` blank rows, which then cost what they differ from `new`.
pub fn best_scroll(old: &Buffer, new: &Buffer) -> Option<Scroll> {
    if old.area != new.area || old.area.width == 0 {
        return None;
    }
    let h = old.area.height as usize;
    let (ho, hn) = (row_hashes(old), row_hashes(new));
    let same = |ny: usize, oy: usize| hn[ny] == ho[oy] && row(new, ny) == row(old, oy);
    let blank_row = vec![Cell::default(); old.area.width as usize];
    let cost_blank = |y: usize| differing(&blank_row, row(new, y));
    let changed: Vec<usize> = (0..h)
        .map(|y| differing(row(old, y), row(new, y)))
        .collect();
    let mut best: Option<(usize, Scroll)> = None;
    let mut consider = |saving: usize, scroll: Scroll| {
        if saving >= MIN_SAVING && best.as_ref().is_none_or(|(s, _)| saving > *s) {
            best = Some((saving, scroll));
        }
    };
    for k in 1..h {
        for direction in [Direction::Up, Direction::Down] {
            // New row y shows old row `src(y)`; `ys` are the rows where that old row exists.
            let (ys, src): (Range<usize>, fn(usize, usize) -> usize) = match direction {
                Direction::Up => (0..h - k, |y, k| y + k),
                Direction::Down => (k..h, |y, k| y - k),
            };
            let mut y = ys.start;
            while y < ys.end {
                if changed[y] == 0 || !same(y, src(y, k)) {
                    y += 1;
                    continue;
                }
                let start = y;
                while y < ys.end && same(y, src(y, k)) {
                    y += 1;
                }
                // The region spans the run and the rows it came from; the rows that come in
                // blank are below the run (up) or above it (down).
                let (region, blanked) = match direction {
                    Direction::Up => (start..y + k, y..y + k),
                    Direction::Down => (start - k..y, start - k..start),
                };
                let before: usize = region.clone().map(|r| changed[r]).sum();
                let after: usize = blanked.map(cost_blank).sum();
                consider(
                    before.saturating_sub(after),
                    Scroll {
                        region: region.start as u16..region.end as u16,
                        amount: k as u16,
                        direction,
                    },
                );
            }
        }
    }
    best.map(|(_, s)| s)
}

/// What a terminal does to its screen on `scroll`: the region's rows move, the rows that come
/// in are blank (default colours: the dashboard's draws end with the attributes reset).
pub fn apply_scroll(buf: &mut Buffer, scroll: &Scroll) {
    let w = buf.area.width as usize;
    let (top, bottom, k) = (
        scroll.region.start as usize,
        scroll.region.end as usize,
        scroll.amount as usize,
    );
    if w == 0 || bottom > buf.area.height as usize || k == 0 || top >= bottom {
        return;
    }
    let k = k.min(bottom - top);
    let blanked = match scroll.direction {
        Direction::Up => {
            buf.content[top * w..bottom * w].rotate_left(k * w);
            bottom - k..bottom
        }
        Direction::Down => {
            buf.content[top * w..bottom * w].rotate_right(k * w);
            top..top + k
        }
    };
    for cell in &mut buf.content[blanked.start * w..blanked.end * w] {
        *cell = Cell::default();
    }
}

impl<B: Backend> Backend for ScrollingBackend<B> {
    type Error = B::Error;

    fn draw<'a, I>(&mut self, content: I) -> Result<(), Self::Error>
    where
        I: Iterator<Item = (u16, u16, &'a Cell)>,
    {
        let Some(screen) = self.screen.as_ref().filter(|_| self.enabled) else {
            return self.inner.draw(content);
        };
        // What ratatui wants on screen: the screen plus its changes.
        let mut next = screen.clone();
        for (x, y, cell) in content {
            if let Some(c) = next.cell_mut((x, y)) {
                *c = cell.clone();
            }
        }
        if let Some(scroll) = best_scroll(screen, &next) {
            self.scroll(scroll)?;
        }
        let screen = self
            .screen
            .as_mut()
            .expect("a copy of the screen, checked above");
        let updates = screen.diff(&next);
        self.inner.draw(updates.into_iter())?;
        *screen = next;
        Ok(())
    }

    fn append_lines(&mut self, n: u16) -> Result<(), Self::Error> {
        // Only inline viewports append lines; the copy of the screen no longer holds.
        self.screen = None;
        self.inner.append_lines(n)
    }

    fn hide_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.hide_cursor()
    }

    fn show_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.show_cursor()
    }

    fn get_cursor_position(&mut self) -> Result<Position, Self::Error> {
        self.inner.get_cursor_position()
    }

    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> Result<(), Self::Error> {
        self.inner.set_cursor_position(position)
    }

    fn clear(&mut self) -> Result<(), Self::Error> {
        self.inner.clear()?;
        self.screen = Some(blank(self.inner.size()?));
        Ok(())
    }

    fn clear_region(&mut self, clear_type: ClearType) -> Result<(), Self::Error> {
        self.inner.clear_region(clear_type)?;
        self.screen = match clear_type {
            ClearType::All => Some(blank(self.inner.size()?)),
            // A partial clear: pass draws through until the next full clear.
            _ => None,
        };
        Ok(())
    }

    fn size(&self) -> Result<Size, Self::Error> {
        self.inner.size()
    }

    fn window_size(&mut self) -> Result<WindowSize, Self::Error> {
        self.inner.window_size()
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush()
    }

    fn scroll_region_up(&mut self, region: Range<u16>, amount: u16) -> Result<(), Self::Error> {
        self.scroll(Scroll {
            region,
            amount,
            direction: Direction::Up,
        })
    }

    fn scroll_region_down(&mut self, region: Range<u16>, amount: u16) -> Result<(), Self::Error> {
        self.scroll(Scroll {
            region,
            amount,
            direction: Direction::Down,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Stamped;
    use crate::ui::state::{App, Msg, View, ViewOptions};
    use crate::ui::test_support::{load_events, render};
    use crate::ui::tests::{C256, PLAIN};
    use crate::ui::view;
    use ratatui::backend::CrosstermBackend;
    use ratatui::style::{Color, Modifier};
    use ratatui::Terminal;

    fn line(tag: &str) -> String {
        tag.repeat(30 / tag.len())
    }

    fn buffer(rows: &[String]) -> Buffer {
        Buffer::with_lines(rows.iter().map(String::as_str))
    }

    fn rows(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| line(t)).collect()
    }

    #[test]
    fn a_log_that_gained_a_line_scrolls_up() {
        let old = buffer(&rows(&["head", "a", "b", "c", "d", "foot"]));
        let new = buffer(&rows(&["head", "b", "c", "d", "e", "foot"]));
        let s = best_scroll(&old, &new).expect("a scroll");
        assert_eq!(
            s,
            Scroll {
                region: 1..5,
                amount: 1,
                direction: Direction::Up
            }
        );
        let mut moved = old.clone();
        apply_scroll(&mut moved, &s);
        // Only the new line (row 4, blank after the scroll) is left to draw.
        let ys: std::collections::BTreeSet<u16> = moved.diff(&new).iter().map(|c| c.1).collect();
        assert_eq!(ys, [4].into());
    }

    #[test]
    fn two_new_lines_at_the_top_scroll_down() {
        let old = buffer(&rows(&["a", "b", "c", "d", "e"]));
        let new = buffer(&rows(&["y", "z", "a", "b", "c"]));
        let s = best_scroll(&old, &new).expect("a scroll");
        assert_eq!(
            s,
            Scroll {
                region: 0..5,
                amount: 2,
                direction: Direction::Down
            }
        );
        let mut moved = old.clone();
        apply_scroll(&mut moved, &s);
        let ys: std::collections::BTreeSet<u16> = moved.diff(&new).iter().map(|c| c.1).collect();
        assert_eq!(ys, [0, 1].into());
    }

    #[test]
    fn no_scroll_when_nothing_moved_or_it_would_not_pay() {
        let old = buffer(&rows(&["a", "b", "c", "d"]));
        assert_eq!(best_scroll(&old, &old), None);
        let new = buffer(&rows(&["a", "b", "x", "d"]));
        assert_eq!(best_scroll(&old, &new), None);
        // One short row moving saves less than the escape codes cost.
        let old = Buffer::with_lines(["ab", "cd", "ef"]);
        let new = Buffer::with_lines(["cd", "ef", "gh"]);
        assert_eq!(best_scroll(&old, &new), None);
    }

    #[test]
    fn apply_scroll_moves_rows_and_blanks_the_rest() {
        let mut b = Buffer::with_lines(["0000", "1111", "2222", "3333"]);
        let s = Scroll {
            region: 1..4,
            amount: 1,
            direction: Direction::Up,
        };
        apply_scroll(&mut b, &s);
        assert_eq!(b, Buffer::with_lines(["0000", "2222", "3333", "    "]));
        let s = Scroll {
            region: 0..3,
            amount: 2,
            direction: Direction::Down,
        };
        apply_scroll(&mut b, &s);
        assert_eq!(b, Buffer::with_lines(["    ", "    ", "0000", "    "]));
    }

    // ----- a recorded run, replayed through a terminal emulator -------------------------------

    fn fixture(name: &str) -> Vec<Stamped> {
        load_events(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/events")
                .join(name),
        )
    }

    /// Fold `events` as the dashboard's loop does at `fps`: a change is drawn once the frame
    /// interval since the last draw has passed (event time, not wall time); `draw` is called at
    /// each frame with the state it shows.
    fn replay(events: &[Stamped], app: &mut App, fps: u64, mut draw: impl FnMut(&App)) {
        let interval = 1000 / fps;
        let mut next_draw = 0u64;
        let mut dirty_since: Option<u64> = None;
        for ev in events {
            if let Some(since) = dirty_since {
                let at = since.max(next_draw);
                if at <= ev.at_ms {
                    draw(app);
                    next_draw = at + interval;
                    dirty_since = None;
                }
            }
            app.update(Msg::Event(ev.clone()));
            dirty_since.get_or_insert(ev.at_ms);
        }
        draw(app);
    }

    fn vt_color(c: Color) -> vt100::Color {
        let idx = |i| vt100::Color::Idx(i);
        match c {
            Color::Reset => vt100::Color::Default,
            Color::Black => idx(0),
            Color::Red => idx(1),
            Color::Green => idx(2),
            Color::Yellow => idx(3),
            Color::Blue => idx(4),
            Color::Magenta => idx(5),
            Color::Cyan => idx(6),
            Color::Gray => idx(7),
            Color::DarkGray => idx(8),
            Color::LightRed => idx(9),
            Color::LightGreen => idx(10),
            Color::LightYellow => idx(11),
            Color::LightBlue => idx(12),
            Color::LightMagenta => idx(13),
            Color::LightCyan => idx(14),
            Color::White => idx(15),
            Color::Indexed(i) => idx(i),
            Color::Rgb(r, g, b) => vt100::Color::Rgb(r, g, b),
        }
    }

    /// The first cell where the emulated screen differs from `want`.
    fn first_difference(screen: &vt100::Screen, want: &Buffer) -> Option<String> {
        for y in 0..want.area.height {
            for x in 0..want.area.width {
                let w = &want[(x, y)];
                let got = screen.cell(y, x)?;
                let sym = if got.contents().is_empty() {
                    " "
                } else {
                    got.contents()
                };
                let same = sym == w.symbol()
                    && got.fgcolor() == vt_color(w.fg)
                    && got.bgcolor() == vt_color(w.bg)
                    && got.bold() == w.modifier.contains(Modifier::BOLD)
                    && got.inverse() == w.modifier.contains(Modifier::REVERSED);
                if !same {
                    return Some(format!(
                        "({x},{y}): screen {sym:?} {:?}/{:?} bold {} inverse {}, want {:?} {:?}/{:?} {:?}",
                        got.fgcolor(),
                        got.bgcolor(),
                        got.bold(),
                        got.inverse(),
                        w.symbol(),
                        w.fg,
                        w.bg,
                        w.modifier
                    ));
                }
            }
        }
        None
    }

    /// Every frame of a recorded run, drawn through the scrolling backend into a VT100
    /// emulator, shows exactly what a fresh draw of the same state shows; and the scrolls
    /// happened and made the stream smaller. Returns (bytes with scrolls, bytes without).
    fn check_replay(name: &str, w: u16, h: u16, opts: ViewOptions, view: View) -> (usize, usize) {
        let events = fixture(name);
        let mut sizes = Vec::new();
        for enabled in [true, false] {
            let out = Shared::default();
            let backend = CrosstermBackend::new(out.clone());
            let mut term = Terminal::new(
                ScrollingBackend::new(FixedSize(backend, Size::new(w, h)), enabled).unwrap(),
            )
            .unwrap();
            let mut vt = vt100::Parser::new(h, w, 0);
            let mut app = App::new(opts);
            app.update(Msg::Resize(w, h));
            app.nav.view = view;
            let mut total = 0;
            let mut frame = 0;
            replay(&events, &mut app, 2, |app| {
                term.draw(|f| view::draw(f, app)).unwrap();
                let bytes = std::mem::take(&mut *out.0.borrow_mut());
                total += bytes.len();
                vt.process(&bytes);
                if let Some(d) = first_difference(vt.screen(), &render(app, w, h)) {
                    panic!("{name} {w}x{h} {view:?} scrolls {enabled}, frame {frame}: {d}");
                }
                frame += 1;
            });
            if enabled {
                assert!(term.backend().scrolls() > 0, "{name} {w}x{h}: no scrolls");
            }
            sizes.push(total);
        }
        assert!(
            sizes[0] < sizes[1],
            "{name} {w}x{h} {view:?}: {} bytes with scrolls, {} without",
            sizes[0],
            sizes[1]
        );
        (sizes[0], sizes[1])
    }

    /// Bytes written, shared with the test.
    #[derive(Clone, Default)]
    struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A backend of a fixed size (the emulator's), so that the replay never resizes.
    struct FixedSize<B>(B, Size);

    impl<B: Backend> Backend for FixedSize<B> {
        type Error = B::Error;
        fn draw<'a, I>(&mut self, content: I) -> Result<(), Self::Error>
        where
            I: Iterator<Item = (u16, u16, &'a Cell)>,
        {
            self.0.draw(content)
        }
        fn hide_cursor(&mut self) -> Result<(), Self::Error> {
            self.0.hide_cursor()
        }
        fn show_cursor(&mut self) -> Result<(), Self::Error> {
            self.0.show_cursor()
        }
        fn get_cursor_position(&mut self) -> Result<Position, Self::Error> {
            Ok(Position::ORIGIN)
        }
        fn set_cursor_position<P: Into<Position>>(&mut self, p: P) -> Result<(), Self::Error> {
            self.0.set_cursor_position(p)
        }
        fn clear(&mut self) -> Result<(), Self::Error> {
            self.0.clear()
        }
        fn clear_region(&mut self, t: ClearType) -> Result<(), Self::Error> {
            self.0.clear_region(t)
        }
        fn size(&self) -> Result<Size, Self::Error> {
            Ok(self.1)
        }
        fn window_size(&mut self) -> Result<WindowSize, Self::Error> {
            Ok(WindowSize {
                columns_rows: self.1,
                pixels: Size::new(0, 0),
            })
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            self.0.flush()
        }
        fn scroll_region_up(&mut self, r: Range<u16>, n: u16) -> Result<(), Self::Error> {
            self.0.scroll_region_up(r, n)
        }
        fn scroll_region_down(&mut self, r: Range<u16>, n: u16) -> Result<(), Self::Error> {
            self.0.scroll_region_down(r, n)
        }
    }

    #[test]
    fn scrolled_frames_show_what_fresh_draws_show() {
        for (w, h) in [(200, 60), (80, 24)] {
            check_replay("default-run-cpu.jsonl", w, h, C256, View::Overview);
        }
        check_replay("default-run-cpu.jsonl", 120, 40, PLAIN, View::Log);
    }

    /// Bytes a recorded run sends at 2 fps, with and without scroll regions (prints them; run
    /// with `--ignored --nocapture`).
    #[test]
    #[ignore]
    fn bandwidth_replay() {
        let mut dir: Vec<_> = std::fs::read_dir(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events"),
        )
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jsonl") && !n.starts_with("synthetic"))
        .collect();
        dir.sort();
        for name in dir {
            let events = fixture(&name);
            let secs = (events.last().unwrap().at_ms - events[0].at_ms) as f64 / 1000.0;
            for (w, h) in [(80, 24), (200, 60)] {
                let (with, without) = check_replay(&name, w, h, C256, View::Overview);
                println!(
                    "{name} {w}x{h}: {with} B ({:.0} B/s) with scroll regions, {without} B ({:.0} B/s) without",
                    with as f64 / secs,
                    without as f64 / secs
                );
            }
        }
    }
}
