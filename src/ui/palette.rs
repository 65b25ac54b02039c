//! Colours: how many the terminal has, a colour-blind-safe categorical palette (Okabe-Ito), a
//! perceptually uniform ramp for heat maps (viridis), and the mapping of any RGB colour down to
//! the xterm 256-colour table or the 16 ANSI colours. Also used by the report's PNG plots.

use ratatui::style::Color;

/// How many colours the terminal can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorDepth {
    /// The 16 ANSI colours (the safe default).
    #[default]
    Ansi16,
    /// The xterm 256-colour table (`TERM` contains `256color`).
    Ansi256,
    /// 24-bit colour (`COLORTERM` is `truecolor` or `24bit`).
    TrueColor,
}

/// Colour depth from `COLORTERM` and `TERM`: `COLORTERM=truecolor|24bit` means 24-bit,
/// a `TERM` containing `256color` means 256 colours, anything else 16.
pub fn detect_color_depth(colorterm: Option<&str>, term: Option<&str>) -> ColorDepth {
    let ct = colorterm.unwrap_or("").trim().to_ascii_lowercase();
    if ct == "truecolor" || ct == "24bit" {
        ColorDepth::TrueColor
    } else if term.is_some_and(|t| t.to_ascii_lowercase().contains("256color")) {
        ColorDepth::Ansi256
    } else {
        ColorDepth::Ansi16
    }
}

/// An RGB triple.
pub type Rgb = [u8; 3];

/// Okabe & Ito's palette, distinguishable with the common colour-vision deficiencies
/// (black left out: orange, sky blue, bluish green, yellow, blue, vermillion, reddish purple,
/// grey).
pub const OKABE_ITO: [Rgb; 8] = [
    [230, 159, 0],
    [86, 180, 233],
    [0, 158, 115],
    [240, 228, 66],
    [0, 114, 178],
    [213, 94, 0],
    [204, 121, 167],
    [153, 153, 153],
];

/// Stops of matplotlib's viridis colour map at t = 0, 1/8, ..., 1.
const VIRIDIS: [Rgb; 9] = [
    [68, 1, 84],
    [71, 44, 122],
    [59, 81, 139],
    [44, 113, 142],
    [33, 144, 141],
    [39, 173, 129],
    [92, 200, 99],
    [170, 220, 50],
    [253, 231, 37],
];

/// Viridis at `t` in 0..=1 (dark purple to yellow), linearly interpolated between stops.
pub fn viridis(t: f64) -> Rgb {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |k: usize| (f64::from(a[k]) + (f64::from(b[k]) - f64::from(a[k])) * f).round() as u8;
    [mix(0), mix(1), mix(2)]
}

/// The 16-colour stand-in for viridis: five steps of rising brightness.
const HEAT16: [Color; 5] = [
    Color::Black,
    Color::Blue,
    Color::Cyan,
    Color::Green,
    Color::Yellow,
];

/// Heat-map colour for `t` in 0..=1 at the given depth.
pub fn heat(depth: ColorDepth, t: f64) -> Color {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    match depth {
        ColorDepth::Ansi16 => {
            let i = (t * (HEAT16.len() - 1) as f64).round() as usize;
            HEAT16[i.min(HEAT16.len() - 1)]
        }
        _ => rgb_color(depth, viridis(t)),
    }
}

/// Black or white text, whichever reads better on `bg` (for numbers drawn on a heat map).
pub fn contrast_on(depth: ColorDepth, t: f64) -> Color {
    match depth {
        ColorDepth::Ansi16 => {
            if t >= 0.5 {
                Color::Black
            } else {
                Color::White
            }
        }
        _ => {
            if luma(viridis(t)) >= 140.0 {
                Color::Black
            } else {
                Color::White
            }
        }
    }
}

/// Rec. 601 luma of an RGB colour, 0..=255.
pub fn luma(c: Rgb) -> f64 {
    0.299 * f64::from(c[0]) + 0.587 * f64::from(c[1]) + 0.114 * f64::from(c[2])
}

/// `c` as a terminal colour at the given depth (24-bit, nearest of the 256, or nearest grey of
/// the four 16-colour greys).
pub fn rgb_color(depth: ColorDepth, c: Rgb) -> Color {
    match depth {
        ColorDepth::TrueColor => Color::Rgb(c[0], c[1], c[2]),
        ColorDepth::Ansi256 => Color::Indexed(xterm256(c)),
        ColorDepth::Ansi16 => grey16(luma(c)),
    }
}

/// One of the 16-colour greys (black, dark grey, grey, white) for a brightness 0..=255.
pub fn grey16(v: f64) -> Color {
    match grey16_level(v) {
        0 => Color::Black,
        1 => Color::DarkGray,
        2 => Color::Gray,
        _ => Color::White,
    }
}

/// Which of four grey levels (0..=3) a brightness 0..=255 falls in.
pub fn grey16_level(v: f64) -> usize {
    let v = if v.is_finite() {
        v.clamp(0.0, 255.0)
    } else {
        0.0
    };
    ((v / 255.0 * 3.0).round() as usize).min(3)
}

/// Levels of the xterm 6x6x6 colour cube.
const CUBE: [u8; 6] = [0, 95, 135, 175, 215, 255];

/// Nearest entry of the xterm 256-colour table (cube 16..=231 or grey ramp 232..=255) to `c`,
/// by squared RGB distance.
pub fn xterm256(c: Rgb) -> u8 {
    let nearest_cube = |v: u8| -> usize {
        CUBE.iter()
            .enumerate()
            .min_by_key(|(_, &l)| (i32::from(l) - i32::from(v)).abs())
            .map_or(0, |(i, _)| i)
    };
    let (r, g, b) = (nearest_cube(c[0]), nearest_cube(c[1]), nearest_cube(c[2]));
    let cube_rgb = [CUBE[r], CUBE[g], CUBE[b]];
    let cube_idx = 16 + 36 * r + 6 * g + b;
    // Grey ramp: 232 + i is 8 + 10 i.
    let mean = (u32::from(c[0]) + u32::from(c[1]) + u32::from(c[2])) as f64 / 3.0;
    let gi = (((mean - 8.0) / 10.0).round()).clamp(0.0, 23.0) as u8;
    let gv = 8 + 10 * gi;
    let dist = |a: Rgb| -> i32 {
        (0..3)
            .map(|k| {
                let d = i32::from(a[k]) - i32::from(c[k]);
                d * d
            })
            .sum()
    };
    if dist([gv, gv, gv]) < dist(cube_rgb) {
        232 + gi
    } else {
        cube_idx as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_comes_from_colorterm_then_term() {
        use ColorDepth::*;
        assert_eq!(
            detect_color_depth(Some("truecolor"), Some("xterm")),
            TrueColor
        );
        assert_eq!(detect_color_depth(Some("24bit"), None), TrueColor);
        assert_eq!(detect_color_depth(None, Some("screen-256color")), Ansi256);
        assert_eq!(
            detect_color_depth(Some("yes"), Some("tmux-256color")),
            Ansi256
        );
        assert_eq!(detect_color_depth(None, Some("xterm")), Ansi16);
        assert_eq!(detect_color_depth(None, Some("linux")), Ansi16);
        assert_eq!(detect_color_depth(None, None), Ansi16);
    }

    #[test]
    fn xterm_mapping_picks_greys_and_cube_entries() {
        assert_eq!(xterm256([0, 0, 0]), 16);
        assert_eq!(xterm256([255, 255, 255]), 231);
        assert_eq!(xterm256([255, 0, 0]), 196);
        // 67 is nearest the ramp's 68 (index 238), closer than the cube's 95.
        assert_eq!(xterm256([67, 67, 67]), 238);
        assert_eq!(xterm256([128, 128, 128]), 244);
    }

    #[test]
    fn viridis_runs_dark_to_bright() {
        assert_eq!(viridis(0.0), [68, 1, 84]);
        assert_eq!(viridis(1.0), [253, 231, 37]);
        let mut last = -1.0;
        for i in 0..=20 {
            let l = luma(viridis(f64::from(i) / 20.0));
            assert!(l > last, "luma rises");
            last = l;
        }
        assert_eq!(heat(ColorDepth::Ansi16, 0.0), Color::Black);
        assert_eq!(heat(ColorDepth::Ansi16, 1.0), Color::Yellow);
        assert_eq!(heat(ColorDepth::TrueColor, 0.0), Color::Rgb(68, 1, 84));
    }

    #[test]
    fn greys_for_16_colours() {
        assert_eq!(grey16(0.0), Color::Black);
        assert_eq!(grey16(90.0), Color::DarkGray);
        assert_eq!(grey16(170.0), Color::Gray);
        assert_eq!(grey16(255.0), Color::White);
    }
}
