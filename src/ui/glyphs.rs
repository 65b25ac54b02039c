//! Text-level drawing primitives (bars, sparklines, numbers), in a Unicode and a plain-ASCII
//! flavour, and the styles for colour and no-colour terminals. Pure functions of their inputs.

use ratatui::style::{Color, Modifier, Style};

use super::palette::{rgb_color, ColorDepth, Rgb, OKABE_ITO};
use super::state::{RunState, ViewOptions};

/// Unicode bar partials, 1/8 to 7/8 of a cell.
const BAR_EIGHTHS: [&str; 7] = ["▏", "▎", "▍", "▌", "▋", "▊", "▉"];
/// Sparkline levels, empty to full.
const SPARK_UNICODE: [&str; 9] = [" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"];
const SPARK_ASCII: [&str; 10] = [" ", ".", ":", "-", "=", "+", "*", "#", "%", "@"];

/// Characters to draw with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Glyphs {
    pub ascii: bool,
}

impl Glyphs {
    pub fn new(opts: ViewOptions) -> Self {
        Glyphs { ascii: opts.ascii }
    }

    /// Horizontal rule character.
    pub fn hline(&self) -> &'static str {
        if self.ascii {
            "-"
        } else {
            "─"
        }
    }

    /// Separator between header fields.
    pub fn sep(&self) -> &'static str {
        if self.ascii {
            " | "
        } else {
            " · "
        }
    }

    pub fn ellipsis(&self) -> &'static str {
        if self.ascii {
            "~"
        } else {
            "…"
        }
    }

    pub fn arrow(&self) -> &'static str {
        if self.ascii {
            "->"
        } else {
            "→"
        }
    }

    /// A horizontal bar `width` cells wide, filled to `frac` (0..=1). ASCII: `####....`;
    /// Unicode: full blocks with an eighths partial, then light shade (a visible track, for
    /// bars read side by side such as per-class accuracy).
    pub fn bar(&self, frac: f64, width: usize) -> String {
        self.bar_on(frac, width, "░")
    }

    /// A progress gauge: [`Self::bar`] with a blank track in Unicode (the brackets around it
    /// show its extent). A gauge empties at every epoch, and a space is one byte on the wire
    /// where `░` is three.
    pub fn gauge(&self, frac: f64, width: usize) -> String {
        self.bar_on(frac, width, " ")
    }

    fn bar_on(&self, frac: f64, width: usize, track: &str) -> String {
        let frac = if frac.is_finite() {
            frac.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if self.ascii {
            let full = (frac * width as f64).round() as usize;
            let mut s = "#".repeat(full.min(width));
            s.push_str(&".".repeat(width - full.min(width)));
            return s;
        }
        let eighths = (frac * width as f64 * 8.0).round() as usize;
        let full = (eighths / 8).min(width);
        let part = eighths % 8;
        let mut s = "█".repeat(full);
        let mut used = full;
        if part > 0 && used < width {
            s.push_str(BAR_EIGHTHS[part - 1]);
            used += 1;
        }
        s.push_str(&track.repeat(width - used));
        s
    }

    /// Levels per sparkline cell (above empty).
    fn spark_levels(&self) -> usize {
        if self.ascii {
            SPARK_ASCII.len() - 1
        } else {
            SPARK_UNICODE.len() - 1
        }
    }

    fn spark_char(&self, level: usize) -> &'static str {
        if self.ascii {
            SPARK_ASCII[level.min(SPARK_ASCII.len() - 1)]
        } else {
            SPARK_UNICODE[level.min(SPARK_UNICODE.len() - 1)]
        }
    }

    /// A sparkline `height` rows tall (top row first), one column per value, scaled between
    /// `lo` and `hi`. Every finite value shows at least one level, so the line never vanishes.
    pub fn sparkline(&self, values: &[f64], lo: f64, hi: f64, height: usize) -> Vec<String> {
        let levels = self.spark_levels();
        let total = levels * height.max(1);
        let span = hi - lo;
        let heights: Vec<usize> = values
            .iter()
            .map(|&v| {
                if !v.is_finite() {
                    0
                } else if span <= f64::EPSILON || !span.is_finite() {
                    total.div_ceil(2)
                } else {
                    let t = ((v - lo) / span).clamp(0.0, 1.0);
                    1 + (t * (total - 1) as f64).round() as usize
                }
            })
            .collect();
        (0..height)
            .map(|row_from_top| {
                let row = height - 1 - row_from_top;
                heights
                    .iter()
                    .map(|&h| self.spark_char(h.saturating_sub(row * levels).min(levels)))
                    .collect()
            })
            .collect()
    }

    /// Make `s` safe to draw: control characters become spaces and, in ASCII mode, anything
    /// outside printable ASCII becomes `?`.
    pub fn clean(&self, s: &str) -> String {
        s.chars()
            .map(|c| {
                if c.is_control() {
                    ' '
                } else if self.ascii && !c.is_ascii() {
                    '?'
                } else {
                    c
                }
            })
            .collect()
    }

    /// Cleaned and cut to `width` characters, with an ellipsis when cut.
    pub fn fit(&self, s: &str, width: usize) -> String {
        let s = self.clean(s);
        if s.chars().count() <= width {
            return s;
        }
        if width == 0 {
            return String::new();
        }
        let ell = self.ellipsis();
        let keep = width.saturating_sub(ell.chars().count());
        let mut out: String = s.chars().take(keep).collect();
        out.push_str(ell);
        out.chars().take(width).collect()
    }

    /// `fit`, then padded with spaces to exactly `width`.
    pub fn pad(&self, s: &str, width: usize) -> String {
        let s = self.fit(s, width);
        let n = s.chars().count();
        format!("{s}{}", " ".repeat(width.saturating_sub(n)))
    }
}

/// Averages of consecutive runs of `k` values, `k` the smallest of 1, 2, 3, 4, 6, 8, 12, 16, …
/// that fits `values` in `width` columns. The runs start at fixed positions, so appending values
/// only changes the last column until `k` grows: the chart a terminal redraws per frame is one
/// column, not all of them (a slow link's bandwidth). Between 2/3 and all of `width` is filled.
pub fn downsample(values: &[f64], width: usize) -> Vec<f64> {
    if width == 0 || values.is_empty() {
        return Vec::new();
    }
    let k = bucket_size(values.len(), width);
    values
        .chunks(k)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect()
}

/// The smallest of 1, 2, 3, 4, 6, 8, 12, … (2^i and 3·2^i) with `ceil(n / k) <= width`.
fn bucket_size(n: usize, width: usize) -> usize {
    let mut k = 1;
    while n.div_ceil(k) > width {
        // 1 -> 2 -> 3 -> 4 -> 6 -> 8 -> 12 …: 4 -> 6 is 4 + 4/2, 6 -> 8 is 6 + 6/3.
        k = if k.is_power_of_two() {
            if k < 2 {
                2
            } else {
                k + k / 2
            }
        } else {
            k + k / 3
        };
    }
    k
}

/// A chart's value axis: `lo..hi` widened to multiples of a 1-2-5 step of about a tenth of the
/// span, so that it moves only when the data crosses a step, not with every new minimum (each
/// move redraws the whole chart).
pub fn axis_range(lo: f64, hi: f64) -> (f64, f64) {
    let span = hi - lo;
    if !(span.is_finite() && span > f64::EPSILON) {
        return (lo, hi);
    }
    let raw = span / 10.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    ((lo / step).floor() * step, (hi / step).ceil() * step)
}

/// A rate to three significant digits (`1850`, `655`, `65.5`, `6.55`): the digits below
/// are noise, and a number that flickers is redrawn every frame.
pub fn three_digits(v: f64) -> String {
    if !v.is_finite() {
        return "--".into();
    }
    if v >= 100.0 {
        let mag = 10f64.powi(v.log10().floor() as i32 - 2);
        format!("{:.0}", (v / mag).round() * mag)
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// An axis value for a title: at most 3 decimals, no trailing zeros (`0.5`, `4`, `0.125`).
pub fn axis_label(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// `1:02:03` for an hour or more, else `2:03`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "--".into();
    }
    let s = secs.round() as u64;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// `HH:MM:SS` (UTC) of a millisecond Unix timestamp.
pub fn clock(at_ms: u64) -> String {
    let s = (at_ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// `83.1%`.
pub fn pct(frac: f64) -> String {
    format!("{:.1}%", frac * 100.0)
}

/// Styles for terminals with colour (16, 256 or 24-bit: Okabe-Ito hues where more than 16
/// colours are available) and without (bold/reverse only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub color: bool,
    pub depth: ColorDepth,
}

/// Okabe-Ito hues by role.
const SKY: Rgb = OKABE_ITO[1];
const ORANGE: Rgb = OKABE_ITO[0];
const GREENISH: Rgb = OKABE_ITO[2];
const VERMILLION: Rgb = OKABE_ITO[5];
const GREY: Rgb = OKABE_ITO[7];

impl Theme {
    pub fn new(opts: ViewOptions) -> Self {
        Theme {
            color: opts.color,
            depth: opts.color_depth,
        }
    }

    /// The named colour on 16-colour terminals, the RGB one (or its nearest of 256) otherwise.
    fn pick(&self, c16: Color, rgb: Rgb) -> Color {
        match self.depth {
            ColorDepth::Ansi16 => c16,
            d => rgb_color(d, rgb),
        }
    }

    fn fg(&self, c16: Color, rgb: Rgb) -> Style {
        if self.color {
            Style::new().fg(self.pick(c16, rgb))
        } else {
            Style::new()
        }
    }

    pub fn plain(&self) -> Style {
        Style::new()
    }

    pub fn title(&self) -> Style {
        self.fg(Color::Cyan, SKY).add_modifier(Modifier::BOLD)
    }

    pub fn bold(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    /// The state badge in the header: bold + reverse, coloured when allowed.
    pub fn badge(&self, state: RunState) -> Style {
        let s = Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED);
        if !self.color {
            return s;
        }
        let (c16, rgb) = match state {
            RunState::Waiting => (Color::Gray, GREY),
            RunState::Running => (Color::Green, GREENISH),
            RunState::Paused | RunState::Stopping => (Color::Yellow, ORANGE),
            RunState::Finished => (Color::Cyan, SKY),
            RunState::Failed => (Color::Red, VERMILLION),
        };
        s.fg(self.pick(c16, rgb))
    }

    /// The active view tab.
    pub fn tab_active(&self) -> Style {
        self.fg(Color::Cyan, SKY)
            .add_modifier(Modifier::BOLD | Modifier::REVERSED)
    }

    pub fn bar(&self) -> Style {
        self.fg(Color::Green, GREENISH)
    }

    pub fn muted(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }

    pub fn warn(&self) -> Style {
        self.fg(Color::Yellow, ORANGE).add_modifier(Modifier::BOLD)
    }

    pub fn error(&self) -> Style {
        if self.color {
            self.fg(Color::Red, VERMILLION).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        }
    }

    /// Something that got better (a rise in accuracy, a right pseudo-label): the sign or the
    /// word says it too.
    pub fn good(&self) -> Style {
        self.fg(Color::Cyan, SKY)
    }

    /// Something that got worse (a drop, a wrong label): bold without colour.
    pub fn bad(&self) -> Style {
        if self.color {
            self.fg(Color::Red, VERMILLION).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }
    }

    /// The stop prompt and other questions.
    pub fn prompt(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: Glyphs = Glyphs { ascii: false };
    const A: Glyphs = Glyphs { ascii: true };

    #[test]
    fn bars_have_the_asked_width_and_fill() {
        assert_eq!(A.bar(0.5, 10), "#####.....");
        assert_eq!(A.bar(0.0, 4), "....");
        assert_eq!(A.bar(1.0, 4), "####");
        assert_eq!(A.bar(f64::NAN, 3), "...");
        assert_eq!(A.bar(2.0, 3), "###");
        assert_eq!(U.bar(0.5, 4), "██░░");
        assert_eq!(U.bar(1.0 / 16.0, 2), "▏░");
        assert_eq!(U.gauge(0.5, 4), "██  ");
        assert_eq!(A.gauge(0.5, 4), "##..");
        for w in 0..12 {
            for i in 0..=20 {
                let f = f64::from(i) / 20.0;
                assert_eq!(U.bar(f, w).chars().count(), w);
                assert_eq!(A.bar(f, w).chars().count(), w);
            }
        }
    }

    #[test]
    fn sparkline_scales_and_stays_visible() {
        let rows = A.sparkline(&[0.0, 1.0, 0.5], 0.0, 1.0, 1);
        assert_eq!(rows, vec![".@+".to_string()]);
        let rows = A.sparkline(&[0.0, 1.0], 0.0, 1.0, 2);
        assert_eq!(rows, vec![" @".to_string(), ".@".to_string()]);
        // Flat series: drawn at mid height, not empty.
        let rows = U.sparkline(&[3.0, 3.0], 3.0, 3.0, 1);
        assert_eq!(rows, vec!["▄▄".to_string()]);
    }

    #[test]
    fn downsample_averages_buckets() {
        assert_eq!(downsample(&[1.0, 3.0, 5.0, 7.0], 2), vec![2.0, 6.0]);
        assert_eq!(downsample(&[1.0, 3.0, 5.0, 7.0, 9.0], 2), vec![3.0, 8.0]);
        assert_eq!(downsample(&[1.0, 2.0], 5), vec![1.0, 2.0]);
        assert!(downsample(&[1.0], 0).is_empty());
        let long: Vec<f64> = (0..1000).map(f64::from).collect();
        let cols = downsample(&long, 7);
        assert!(cols.len() <= 7 && cols.len() * 3 >= 7 * 2, "{}", cols.len());
        assert_eq!(bucket_size(1000, 7), 192);
        assert_eq!(bucket_size(7, 7), 1);
        assert_eq!(bucket_size(8, 7), 2);
        assert_eq!(bucket_size(15, 7), 3);
        assert_eq!(bucket_size(25, 7), 4);
        assert_eq!(bucket_size(29, 7), 6);
    }

    #[test]
    fn appending_a_value_changes_only_the_last_column() {
        // Unless the bucket size grows: 200 -> 201 values in 60 columns keeps k = 4.
        let a: Vec<f64> = (0..200).map(|i| f64::from(i % 7)).collect();
        let mut b = a.clone();
        b.push(100.0);
        let (da, db) = (downsample(&a, 60), downsample(&b, 60));
        assert_eq!(da[..da.len() - 1], db[..da.len() - 1]);
    }

    #[test]
    fn axis_range_snaps_to_steps() {
        assert_eq!(axis_range(0.211, 3.649), (0.0, 4.0));
        // A new minimum inside the same step leaves the axis alone.
        assert_eq!(axis_range(0.205, 3.649), axis_range(0.211, 3.649));
        let (lo, hi) = axis_range(0.52, 0.58);
        assert!(
            (lo - 0.52).abs() < 1e-9 && (hi - 0.58).abs() < 1e-9,
            "{lo} {hi}"
        );
        assert_eq!(axis_range(1.0, 1.0), (1.0, 1.0));
        assert_eq!(axis_label(4.0), "4");
        assert_eq!(three_digits(1846.4), "1850");
        assert_eq!(three_digits(655.3), "655");
        assert_eq!(three_digits(65.53), "65.5");
        assert_eq!(three_digits(6.553), "6.55");
        assert_eq!(axis_label(0.30000000000000004), "0.3");
        assert_eq!(axis_label(0.125), "0.125");
    }

    #[test]
    fn fit_cuts_and_cleans() {
        assert_eq!(A.fit("Pullover", 5), "Pull~");
        assert_eq!(U.fit("Pullover", 5), "Pull…");
        assert_eq!(A.fit("Tëst\n", 10), "T?st ");
        assert_eq!(A.pad("ab", 4), "ab  ");
    }

    #[test]
    fn numbers_format() {
        assert_eq!(duration(65.0), "1:05");
        assert_eq!(duration(3723.0), "1:02:03");
        assert_eq!(duration(-1.0), "--");
        assert_eq!(clock(3_723_000), "01:02:03");
        assert_eq!(pct(0.8312), "83.1%");
    }
}
