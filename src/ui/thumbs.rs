//! Thumbnails of the images named in `SampleNote`s: decoded from their files with the `image`
//! crate (the dashboard never sees tensors), kept small in a cache keyed by path, and drawn in
//! the terminal with half-block characters (one cell = two pixels stacked: `▀` with the upper
//! pixel as foreground and the lower as background), in 24-bit colour, the xterm 256 colours or
//! four greys; without colour as a greyscale character ramp.
//!
//! Decoding is I/O: `App::update` only asks for it ([`super::Effect::LoadThumbnails`]); the run
//! loop decodes off the render path and folds the results back in
//! ([`super::Msg::Thumbnails`]). Drawing stays a pure function of the state.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};

use super::palette::{grey16, luma, rgb_color, ColorDepth, Rgb};
use super::state::ViewOptions;

/// Decoded thumbnails are scaled down to fit in this many pixels each way.
pub const THUMB_MAX: u32 = 64;
/// Thumbnails kept in the cache; the oldest are dropped first.
pub const CACHE_MAX: usize = 256;
/// ASCII greyscale ramp, dark to bright.
pub const ASCII_RAMP: [char; 10] = [' ', '.', ':', '-', '=', '+', '*', '#', '%', '@'];
/// Unicode shade ramp (no colour), dark to bright.
pub const SHADE_RAMP: [char; 5] = [' ', '░', '▒', '▓', '█'];
/// The half-block glyph: upper half in the foreground colour.
pub const UPPER_HALF: &str = "▀";

/// A small decoded image, RGB, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumb {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Thumb {
    /// Pixel at (x, y); black outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Rgb {
        if x >= self.width || y >= self.height {
            return [0, 0, 0];
        }
        let i = 3 * (y as usize * self.width as usize + x as usize);
        match self.rgb.get(i..i + 3) {
            Some(p) => [p[0], p[1], p[2]],
            None => [0, 0, 0],
        }
    }
}

/// Why a thumbnail could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThumbError {
    /// No file at that path.
    NotFound,
    /// The file could not be read or decoded (the reason).
    Unreadable(String),
}

/// Read and decode `path`, scaled down to fit in [`THUMB_MAX`] pixels each way.
pub fn load_thumbnail(path: &Path) -> Result<Thumb, ThumbError> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ThumbError::NotFound
        } else {
            ThumbError::Unreadable(e.to_string())
        }
    })?;
    let img = image::load_from_memory(&bytes).map_err(|e| ThumbError::Unreadable(e.to_string()))?;
    let mut rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        return Err(ThumbError::Unreadable("empty image".into()));
    }
    if w > THUMB_MAX || h > THUMB_MAX {
        let s = f64::from(THUMB_MAX) / f64::from(w.max(h));
        let nw = ((f64::from(w) * s).round() as u32).max(1);
        let nh = ((f64::from(h) * s).round() as u32).max(1);
        rgb = image::imageops::resize(&rgb, nw, nh, image::imageops::FilterType::Triangle);
    }
    let (width, height) = rgb.dimensions();
    Ok(Thumb {
        width,
        height,
        rgb: rgb.into_raw(),
    })
}

/// Load several thumbnails (the run loop does this off the render path).
pub fn load_all(paths: &[String]) -> Vec<(String, Result<Thumb, ThumbError>)> {
    paths
        .iter()
        .map(|p| (p.clone(), load_thumbnail(Path::new(p))))
        .collect()
}

/// A cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThumbSlot {
    /// Asked for, not decoded yet.
    Loading,
    Ready(Thumb),
    Failed(ThumbError),
}

/// Decoded thumbnails by path, bounded to [`CACHE_MAX`] entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ThumbCache {
    slots: BTreeMap<String, ThumbSlot>,
    /// Paths in the order they were asked for (oldest first).
    order: VecDeque<String>,
}

impl ThumbCache {
    pub fn get(&self, path: &str) -> Option<&ThumbSlot> {
        self.slots.get(path)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Mark the paths not in the cache yet as loading and return them (to be decoded).
    pub fn request<'a>(&mut self, paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut new = Vec::new();
        for p in paths {
            if !self.slots.contains_key(p) && !new.iter().any(|n: &String| n == p) {
                new.push(p.to_string());
            }
        }
        for p in &new {
            self.slots.insert(p.clone(), ThumbSlot::Loading);
            self.order.push_back(p.clone());
        }
        self.evict();
        new
    }

    /// Store a decoded thumbnail (or why there is none).
    pub fn insert(&mut self, path: String, result: Result<Thumb, ThumbError>) {
        let slot = match result {
            Ok(t) => ThumbSlot::Ready(t),
            Err(e) => ThumbSlot::Failed(e),
        };
        if self.slots.insert(path.clone(), slot).is_none() {
            self.order.push_back(path);
        }
        self.evict();
    }

    fn evict(&mut self) {
        while self.slots.len() > CACHE_MAX {
            match self.order.pop_front() {
                Some(p) => {
                    self.slots.remove(&p);
                }
                None => break,
            }
        }
    }
}

/// How thumbnails are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThumbStyle {
    /// Half blocks, colours at this depth (16 colours: four greys).
    HalfBlock(ColorDepth),
    /// No colour, Unicode: one shade character per cell.
    Shades,
    /// ASCII: one character of [`ASCII_RAMP`] per cell.
    Ascii,
}

impl ThumbStyle {
    pub fn for_view(opts: ViewOptions) -> Self {
        if opts.ascii {
            ThumbStyle::Ascii
        } else if !opts.color {
            ThumbStyle::Shades
        } else {
            ThumbStyle::HalfBlock(opts.color_depth)
        }
    }
}

/// The pixel grid a `cols` x `rows` cell area holds (2 pixels per cell, stacked), and the part
/// of it the image takes when scaled to fit, aspect kept: (x offset, y offset, width, height)
/// in pixels.
pub fn fit(thumb: &Thumb, cols: usize, rows: usize) -> (usize, usize, usize, usize) {
    let (gw, gh) = (cols as f64, (rows * 2) as f64);
    let (w, h) = (
        f64::from(thumb.width.max(1)),
        f64::from(thumb.height.max(1)),
    );
    let s = (gw / w).min(gh / h);
    let ow = ((w * s).round() as usize).clamp(1, cols.max(1));
    let oh = ((h * s).round() as usize).clamp(1, (rows * 2).max(1));
    (
        (cols - ow.min(cols)) / 2,
        (rows * 2 - oh.min(rows * 2)) / 2,
        ow,
        oh,
    )
}

/// Box-filtered resample of `thumb` to `ow` x `oh` pixels (nearest when enlarging).
pub fn resample(thumb: &Thumb, ow: usize, oh: usize) -> Vec<Rgb> {
    let (w, h) = (thumb.width as usize, thumb.height as usize);
    let mut out = Vec::with_capacity(ow * oh);
    for oy in 0..oh {
        let y0 = oy * h / oh;
        let y1 = ((oy + 1) * h / oh).max(y0 + 1).min(h.max(1));
        for ox in 0..ow {
            let x0 = ox * w / ow;
            let x1 = ((ox + 1) * w / ow).max(x0 + 1).min(w.max(1));
            let mut sum = [0u32; 3];
            let mut n = 0u32;
            for y in y0..y1 {
                for x in x0..x1 {
                    let p = thumb.pixel(x as u32, y as u32);
                    for k in 0..3 {
                        sum[k] += u32::from(p[k]);
                    }
                    n += 1;
                }
            }
            let n = n.max(1);
            out.push([
                ((sum[0] + n / 2) / n) as u8,
                ((sum[1] + n / 2) / n) as u8,
                ((sum[2] + n / 2) / n) as u8,
            ]);
        }
    }
    out
}

/// Index into a ramp of `levels` characters for a brightness 0..=255.
pub fn ramp_index(v: f64, levels: usize) -> usize {
    let v = if v.is_finite() {
        v.clamp(0.0, 255.0)
    } else {
        0.0
    };
    ((v / 255.0 * (levels - 1) as f64).round() as usize).min(levels - 1)
}

/// `thumb` drawn into `cols` x `rows` cells, scaled to fit (aspect kept) and centred: exactly
/// `rows` lines of exactly `cols` cells.
pub fn render_thumbnail(
    thumb: &Thumb,
    cols: usize,
    rows: usize,
    style: ThumbStyle,
) -> Vec<Line<'static>> {
    if cols == 0 || rows == 0 {
        return Vec::new();
    }
    let (ox, oy, ow, oh) = fit(thumb, cols, rows);
    let px = resample(thumb, ow, oh);
    // Pixel at grid position (x, y), None outside the image.
    let at = |x: usize, y: usize| -> Option<Rgb> {
        if x < ox || y < oy || x >= ox + ow || y >= oy + oh {
            None
        } else {
            px.get((y - oy) * ow + (x - ox)).copied()
        }
    };
    (0..rows)
        .map(|row| {
            let mut spans = Vec::with_capacity(cols);
            let mut text = String::new();
            for x in 0..cols {
                let top = at(x, 2 * row);
                let bottom = at(x, 2 * row + 1);
                match style {
                    ThumbStyle::HalfBlock(depth) => {
                        let colour = |p: Rgb| match depth {
                            ColorDepth::Ansi16 => grey16(luma(p)),
                            d => rgb_color(d, p),
                        };
                        match (top, bottom) {
                            (None, None) => spans.push(Span::raw(" ")),
                            (t, b) => {
                                let mut st = Style::new();
                                st = st.fg(t.map_or(Color::Reset, colour));
                                st = st.bg(b.map_or(Color::Reset, colour));
                                spans.push(Span::styled(UPPER_HALF, st));
                            }
                        }
                    }
                    ThumbStyle::Shades | ThumbStyle::Ascii => {
                        let v = match (top, bottom) {
                            (None, None) => None,
                            (Some(t), None) => Some(luma(t)),
                            (None, Some(b)) => Some(luma(b)),
                            (Some(t), Some(b)) => Some((luma(t) + luma(b)) / 2.0),
                        };
                        let ramp: &[char] = if style == ThumbStyle::Ascii {
                            &ASCII_RAMP
                        } else {
                            &SHADE_RAMP
                        };
                        text.push(v.map_or(' ', |v| ramp[ramp_index(v, ramp.len())]));
                    }
                }
            }
            if matches!(style, ThumbStyle::HalfBlock(_)) {
                Line::from(spans)
            } else {
                Line::raw(text)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grad() -> Thumb {
        // 4 x 2: brightness 0, 85, 170, 255 on the top row; 255 below.
        Thumb {
            width: 4,
            height: 2,
            rgb: [0u8, 85, 170, 255, 255, 255, 255, 255]
                .iter()
                .flat_map(|&v| [v, v, v])
                .collect(),
        }
    }

    #[test]
    fn half_blocks_carry_two_pixels_per_cell() {
        let lines = render_thumbnail(&grad(), 4, 1, ThumbStyle::HalfBlock(ColorDepth::TrueColor));
        assert_eq!(lines.len(), 1);
        let spans = &lines[0].spans;
        assert_eq!(spans.len(), 4);
        assert_eq!(spans[1].content, UPPER_HALF);
        assert_eq!(spans[1].style.fg, Some(Color::Rgb(85, 85, 85)));
        assert_eq!(spans[1].style.bg, Some(Color::Rgb(255, 255, 255)));
        let g = render_thumbnail(&grad(), 4, 1, ThumbStyle::HalfBlock(ColorDepth::Ansi16));
        assert_eq!(g[0].spans[0].style.fg, Some(Color::Black));
        assert_eq!(g[0].spans[1].style.fg, Some(Color::DarkGray));
        assert_eq!(g[0].spans[2].style.fg, Some(Color::Gray));
    }

    #[test]
    fn ascii_ramp_averages_the_two_pixels() {
        let lines = render_thumbnail(&grad(), 4, 1, ThumbStyle::Ascii);
        // (0+255)/2 = 127.5 -> 4.5 -> 5 '+'; (85+255)/2 = 170 -> 6 '*'; 212.5 -> 7.5 -> 8 '%'.
        assert_eq!(lines[0].spans[0].content, "+*%@");
    }

    #[test]
    fn fitting_keeps_the_aspect_and_centres() {
        let t = grad(); // 4 x 2
                        // 8 cols x 2 rows = 8 x 4 px: scale 2 -> 8 x 4, no offset.
        assert_eq!(fit(&t, 8, 2), (0, 0, 8, 4));
        // 4 cols x 4 rows = 4 x 8 px: scale 1 -> 4 x 2, centred vertically.
        assert_eq!(fit(&t, 4, 4), (0, 3, 4, 2));
        let lines = render_thumbnail(&t, 4, 4, ThumbStyle::Ascii);
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.width() == 4));
    }

    #[test]
    fn cache_requests_once_and_stays_bounded() {
        let mut c = ThumbCache::default();
        assert_eq!(c.request(["a", "b", "a"]), vec!["a", "b"]);
        assert_eq!(c.request(["a", "c"]), vec!["c"]);
        assert_eq!(c.get("a"), Some(&ThumbSlot::Loading));
        c.insert("a".into(), Err(ThumbError::NotFound));
        assert_eq!(c.get("a"), Some(&ThumbSlot::Failed(ThumbError::NotFound)));
        let many: Vec<String> = (0..CACHE_MAX + 10).map(|i| format!("p{i}")).collect();
        c.request(many.iter().map(String::as_str));
        assert_eq!(c.len(), CACHE_MAX);
        assert!(c.get("a").is_none(), "oldest dropped");
    }

    #[test]
    fn missing_and_broken_files_are_errors_not_panics() {
        assert_eq!(
            load_thumbnail(Path::new("/nonexistent/wick/x.png")),
            Err(ThumbError::NotFound)
        );
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("bad.png");
        std::fs::write(&p, b"not a png").expect("write");
        assert!(matches!(load_thumbnail(&p), Err(ThumbError::Unreadable(_))));
    }
}
