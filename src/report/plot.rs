//! Plots for the report, drawn with the `image` crate: line charts with axes, ticks and
//! legends, and a heat map. Colours from the dashboard's palettes (Okabe-Ito for series,
//! viridis for the heat map), so they read the same for colour-blind readers.

use image::{Rgb, RgbImage};

use crate::ui::palette::{luma, viridis, OKABE_ITO};

use super::font::{glyph, text_width, GLYPH_W};

pub const WHITE: [u8; 3] = [255, 255, 255];
pub const INK: [u8; 3] = [40, 40, 40];
pub const GRID: [u8; 3] = [228, 228, 228];
pub const FAINT: [u8; 3] = [170, 170, 170];

/// An RGB image to draw on; everything outside is clipped.
pub struct Canvas {
    pub img: RgbImage,
}

impl Canvas {
    pub fn new(w: u32, h: u32) -> Self {
        Canvas {
            img: RgbImage::from_pixel(w, h, Rgb(WHITE)),
        }
    }

    pub fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0
            && y >= 0
            && (x as u64) < u64::from(self.img.width())
            && (y as u64) < u64::from(self.img.height())
        {
            self.img.put_pixel(x as u32, y as u32, Rgb(c));
        }
    }

    pub fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, c);
            }
        }
    }

    /// A line `thick` pixels wide (square pen).
    pub fn line(&mut self, a: (f64, f64), b: (f64, f64), thick: i64, c: [u8; 3]) {
        let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as i64).max(1);
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let x = (a.0 + (b.0 - a.0) * t).round() as i64;
            let y = (a.1 + (b.1 - a.1) * t).round() as i64;
            let o = thick / 2;
            self.rect(x - o, y - o, thick, thick, c);
        }
    }

    /// A dashed line (for marks such as round starts).
    pub fn dashed_vline(&mut self, x: i64, y0: i64, y1: i64, c: [u8; 3]) {
        for y in y0..=y1 {
            if (y - y0) % 8 < 4 {
                self.put(x, y, c);
            }
        }
    }

    /// A filled square marker centred on (x, y).
    pub fn marker(&mut self, x: f64, y: f64, size: i64, c: [u8; 3]) {
        let (x, y) = (x.round() as i64, y.round() as i64);
        self.rect(x - size / 2, y - size / 2, size, size, c);
    }

    /// Text with its top-left corner at (x, y).
    pub fn text(&mut self, x: i64, y: i64, s: &str, scale: u32, c: [u8; 3]) {
        let scale = i64::from(scale.max(1));
        for (i, ch) in s.chars().enumerate() {
            let rows = glyph(ch);
            let gx = x + i as i64 * (i64::from(GLYPH_W) + 1) * scale;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                        self.rect(
                            gx + i64::from(col) * scale,
                            y + r as i64 * scale,
                            scale,
                            scale,
                            c,
                        );
                    }
                }
            }
        }
    }

    /// Text right-aligned at x.
    pub fn text_right(&mut self, x: i64, y: i64, s: &str, scale: u32, c: [u8; 3]) {
        let w = i64::from(text_width(s, scale));
        self.text(x - w, y, s, scale, c);
    }

    /// Text centred on x.
    pub fn text_centre(&mut self, x: i64, y: i64, s: &str, scale: u32, c: [u8; 3]) {
        let w = i64::from(text_width(s, scale));
        self.text(x - w / 2, y, s, scale, c);
    }
}

/// Round steps for axis ticks: 1, 2, 5 x 10^k, about `n` of them over `span`.
pub fn nice_step(span: f64, n: usize) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Tick label for `v` at step `step`: as many decimals as the step needs.
pub fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// A series of a line chart.
pub struct Series {
    pub name: String,
    pub color: [u8; 3],
    pub points: Vec<(f64, f64)>,
    /// Line width in pixels (0: markers only).
    pub width: i64,
    /// Marker size in pixels (0: none).
    pub marker: i64,
}

/// A line chart: title, axis labels, series, and vertical marks (x, label).
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub marks: Vec<(f64, String)>,
    /// Fixed y range (else from the data).
    pub y_range: Option<(f64, f64)>,
    /// Ticks on x at integers only (epochs).
    pub integer_x: bool,
}

const MARGIN_L: i64 = 80;
const MARGIN_R: i64 = 20;
const MARGIN_T: i64 = 44;
const MARGIN_B: i64 = 56;

impl LineChart {
    /// Draw into a `w` x `h` image.
    pub fn draw(&self, w: u32, h: u32) -> RgbImage {
        let mut c = Canvas::new(w, h);
        // The legend sits in the right margin, outside the data.
        let legend_w = self
            .series
            .iter()
            .map(|s| i64::from(text_width(&s.name, 2)) + 44)
            .max()
            .unwrap_or(0);
        let margin_r = MARGIN_R + legend_w;
        let (pw, ph) = (
            i64::from(w) - MARGIN_L - margin_r,
            i64::from(h) - MARGIN_T - MARGIN_B,
        );
        let pts = self.series.iter().flat_map(|s| s.points.iter());
        let finite: Vec<(f64, f64)> = pts
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let (mut x0, mut x1) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
                (a.0.min(p.0), a.1.max(p.0))
            });
        let (mut y0, mut y1) = match self.y_range {
            Some(r) => r,
            None => finite
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
                    (a.0.min(p.1), a.1.max(p.1))
                }),
        };
        if !x0.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if !y0.is_finite() {
            (y0, y1) = (0.0, 1.0);
        }
        if x1 - x0 < 1e-9 {
            x0 -= 0.5;
            x1 += 0.5;
        }
        if y1 - y0 < 1e-9 {
            y0 -= 0.5;
            y1 += 0.5;
        }
        if self.y_range.is_none() {
            let pad = (y1 - y0) * 0.05;
            y0 -= pad;
            y1 += pad;
        }
        let px = |x: f64| MARGIN_L as f64 + (x - x0) / (x1 - x0) * pw as f64;
        let py = |y: f64| MARGIN_T as f64 + (1.0 - (y - y0) / (y1 - y0)) * ph as f64;
        // Grid and ticks.
        let ys = nice_step(y1 - y0, 5);
        let mut t = (y0 / ys).ceil() * ys;
        while t <= y1 + 1e-9 {
            let y = py(t).round() as i64;
            c.rect(MARGIN_L, y, pw, 1, GRID);
            c.text_right(MARGIN_L - 6, y - 7, &tick_label(t, ys), 2, INK);
            t += ys;
        }
        let xs = if self.integer_x {
            nice_step(x1 - x0, 8).max(1.0)
        } else {
            nice_step(x1 - x0, 8)
        };
        let mut t = (x0 / xs).ceil() * xs;
        while t <= x1 + 1e-9 {
            let x = px(t).round() as i64;
            c.rect(x, MARGIN_T, 1, ph, GRID);
            c.rect(x, MARGIN_T + ph, 1, 5, INK);
            c.text_centre(x, MARGIN_T + ph + 8, &tick_label(t, xs), 2, INK);
            t += xs;
        }
        // Marks (epoch boundaries, round starts).
        for (x, label) in &self.marks {
            let xx = px(*x).round() as i64;
            c.dashed_vline(xx, MARGIN_T, MARGIN_T + ph, FAINT);
            if !label.is_empty() {
                c.text(xx + 3, MARGIN_T + 3, label, 1, FAINT);
            }
        }
        // Frame.
        c.rect(MARGIN_L, MARGIN_T, pw, 1, INK);
        c.rect(MARGIN_L, MARGIN_T + ph, pw + 1, 1, INK);
        c.rect(MARGIN_L, MARGIN_T, 1, ph, INK);
        c.rect(MARGIN_L + pw, MARGIN_T, 1, ph, INK);
        // Series.
        for s in &self.series {
            let p: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| (px(x), py(y.clamp(y0, y1))))
                .collect();
            if s.width > 0 {
                for pair in p.windows(2) {
                    c.line(pair[0], pair[1], s.width, s.color);
                }
            }
            if s.marker > 0 {
                for &(x, y) in &p {
                    c.marker(x, y, s.marker, s.color);
                }
            }
        }
        // Titles.
        c.text(MARGIN_L, 12, &self.title, 2, INK);
        c.text_centre(MARGIN_L + pw / 2, i64::from(h) - 20, &self.x_label, 2, INK);
        c.text(8, 12 + 20, &self.y_label, 1, INK);
        // Legend, right of the plot, one line per series.
        let mut ly = MARGIN_T + 4;
        let x = MARGIN_L + pw + 14;
        for s in &self.series {
            c.rect(x, ly + 5, 24, 4, s.color);
            c.text(x + 30, ly, &s.name, 2, INK);
            ly += 22;
        }
        c.img
    }
}

/// Okabe-Ito colours in the order series use them (yellow, weak on white, last but one).
pub const SERIES_ORDER: [usize; 8] = [0, 1, 2, 4, 5, 6, 7, 3];
/// Their names, for legends in text.
pub const SERIES_NAMES: [&str; 8] = [
    "orange",
    "sky blue",
    "bluish green",
    "blue",
    "vermillion",
    "reddish purple",
    "grey",
    "yellow",
];

/// Colour of series `i` (Okabe-Ito, repeating after 8).
pub fn series_color(i: usize) -> [u8; 3] {
    OKABE_ITO[SERIES_ORDER[i % SERIES_ORDER.len()]]
}

/// Size of a confusion-matrix cell for `n` classes.
pub fn heat_cell(n: usize) -> u32 {
    (560 / n.max(1) as u32).clamp(10, 64)
}

/// The confusion matrix as a heat map: rows are true classes, columns predictions; colour is
/// the row share (square root, viridis), counts written in the cells when they fit; class
/// names on the left, indices on top.
pub fn confusion_heat_map(title: &str, names: &[String], confusion: &[Vec<u64>]) -> RgbImage {
    let n = confusion.len();
    let cell = heat_cell(n);
    let scale = if cell >= 24 { 2 } else { 1 };
    let label_w = names
        .iter()
        .enumerate()
        .map(|(i, s)| text_width(&format!("{i} {s}"), scale))
        .max()
        .unwrap_or(0)
        + 16;
    let left = i64::from(label_w.max(60));
    let top = 70i64;
    let w = left as u32 + cell * n as u32 + 20;
    let h = top as u32 + cell * n as u32 + 60;
    let mut c = Canvas::new(w, h);
    c.text(8, 10, title, 2, INK);
    c.text(left, 36, "PREDICTED", 1, INK);
    let digits_fit = |v: u64| text_width(&v.to_string(), scale) + 4 <= cell;
    for (i, row) in confusion.iter().enumerate() {
        let total: u64 = row.iter().sum();
        let y = top + i as i64 * i64::from(cell);
        let name = names.get(i).map_or(String::new(), |s| s.clone());
        c.text_right(
            left - 8,
            y + i64::from(cell) / 2 - 3 * i64::from(scale),
            &format!("{i} {name}"),
            scale,
            INK,
        );
        for (j, &v) in row.iter().enumerate() {
            let x = left + j as i64 * i64::from(cell);
            let share = if total == 0 {
                0.0
            } else {
                v as f64 / total as f64
            };
            let col = viridis(share.sqrt());
            c.rect(x, y, i64::from(cell), i64::from(cell), col);
            if digits_fit(v) {
                let ink = if luma(col) >= 140.0 { INK } else { WHITE };
                c.text_centre(
                    x + i64::from(cell) / 2,
                    y + i64::from(cell) / 2 - 3 * i64::from(scale),
                    &v.to_string(),
                    scale,
                    ink,
                );
            }
        }
    }
    for j in 0..n {
        let x = left + j as i64 * i64::from(cell) + i64::from(cell) / 2;
        c.text_centre(
            x,
            top - 10 - 7 * i64::from(scale),
            &j.to_string(),
            scale,
            INK,
        );
    }
    // Colour scale under the matrix.
    let sy = top + i64::from(cell) * n as i64 + 16;
    let sw = (i64::from(cell) * n as i64).min(300);
    for k in 0..sw {
        c.rect(left + k, sy, 1, 12, viridis(k as f64 / sw as f64));
    }
    c.text(left, sy + 18, "0", 1, INK);
    c.text_right(left + sw, sy + 18, "1 (ROW SHARE, SQRT)", 1, INK);
    c.img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(1.0, 5), 0.2);
        assert_eq!(nice_step(7.0, 8), 1.0);
        assert_eq!(nice_step(100.0, 5), 20.0);
        assert_eq!(nice_step(0.3, 5), 0.1);
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(3.0, 1.0), "3");
    }

    #[test]
    fn line_chart_draws_series_inside_the_frame() {
        let chart = LineChart {
            title: "T".into(),
            x_label: "X".into(),
            y_label: "Y".into(),
            series: vec![Series {
                name: "A".into(),
                color: [255, 0, 0],
                points: vec![(0.0, 0.0), (1.0, 1.0)],
                width: 2,
                marker: 0,
            }],
            marks: vec![],
            y_range: Some((0.0, 1.0)),
            integer_x: false,
        };
        let img = chart.draw(400, 300);
        assert_eq!(img.dimensions(), (400, 300));
        // The diagonal passes through the middle of the plot area.
        let (mx, my) = (
            MARGIN_L + (400 - MARGIN_L - MARGIN_R) / 2,
            MARGIN_T + (300 - MARGIN_T - MARGIN_B) / 2,
        );
        let (mx, my) = (mx - (text_width("A", 2) as i64 + 44) / 2, my);
        let near = (-3..=3).any(|d| img.get_pixel(mx as u32, (my + d) as u32).0 == [255, 0, 0]);
        assert!(near);
    }
}
