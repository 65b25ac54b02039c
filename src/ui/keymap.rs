//! Keys: which key is which [`Action`], configurable through `config.toml`'s `[keys]` table
//! ([`KeyConfig`]), validated into a [`Keymap`]. The help overlay is generated from the keymap
//! in use ([`Keymap::help_rows`]), so the list shown on screen is the list handled here.
//!
//! Key names in the config: a single character (`"r"`, `"+"`, `"O"`, case matters), or one of
//! `space tab backtab enter backspace delete insert up down left right pageup pagedown home end
//! f1..f12` (case does not matter), optionally prefixed `ctrl-` or `alt-`. Several keys for one
//! action are separated by spaces (`threshold_up = "+ ="`); `""` leaves an action without a
//! key. Two fixed keys cannot be rebound: Ctrl-C always asks to stop (like `quit`), Esc always
//! closes the help and answers "no".

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde::{Deserialize, Serialize};

/// What a key press asks for. What it then does depends on the state and the current view
/// (see `App::update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Pause a running run, resume a paused one.
    TogglePause,
    /// Run a pseudo-label round at the next batch boundary.
    PseudoLabelRound,
    /// Raise the pseudo-label threshold by 0.01.
    ThresholdUp,
    /// Lower the pseudo-label threshold by 0.01.
    ThresholdDown,
    /// Save a checkpoint at the next batch boundary.
    SaveCheckpoint,
    /// Ask whether to stop the run (quits at once once the run has ended).
    Quit,
    /// Detach; the dashboard leaves, training goes on.
    Detach,
    /// Show or hide the help overlay.
    ToggleHelp,
    /// Answer yes to the stop prompt.
    Yes,
    /// Answer no to the stop prompt; also closes the help overlay.
    No,
    /// Next view (Overview, Classes, Samples, Log, round and round).
    NextView,
    /// Previous view.
    PrevView,
    /// Show the Overview.
    ShowOverview,
    /// Show the per-class view.
    ShowClasses,
    /// Show the sample thumbnails.
    ShowSamples,
    /// Show the log.
    ShowLog,
    /// Overview: next loss smoothing factor (EMA).
    Smoothing,
    /// Overview: loss over the whole run or the recent window.
    History,
    /// Classes: sort by the next column.
    Sort,
    /// Classes: reverse the sort order.
    SortReverse,
    /// Classes: compare with the previous epoch or with the end of the previous round.
    Compare,
    /// Samples: misclassified validation images or pseudo-labels.
    SampleSet,
    /// Log: which levels are shown (all, warnings and errors, errors).
    LogLevel,
    /// Scroll up (Classes, Log, help) / previous page (Samples).
    Up,
    /// Scroll down / next page.
    Down,
    /// Previous page (Samples) / scroll up.
    Left,
    /// Next page (Samples) / scroll down.
    Right,
    /// One page up.
    PageUp,
    /// One page down.
    PageDown,
    /// To the top / first page.
    Home,
    /// To the bottom / last page (Log: follow new lines).
    End,
}

/// The `[keys]` table of `config.toml`: one field per action, each a space-separated list of
/// key names (see the module documentation). Missing fields keep their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyConfig {
    pub pause: String,
    pub round: String,
    pub threshold_up: String,
    pub threshold_down: String,
    pub save: String,
    pub quit: String,
    pub detach: String,
    pub help: String,
    pub yes: String,
    pub no: String,
    pub next_view: String,
    pub prev_view: String,
    pub overview: String,
    pub classes: String,
    pub samples: String,
    pub log: String,
    pub smoothing: String,
    pub history: String,
    pub sort: String,
    pub reverse: String,
    pub compare: String,
    pub sample_set: String,
    pub log_level: String,
    pub up: String,
    pub down: String,
    pub left: String,
    pub right: String,
    pub page_up: String,
    pub page_down: String,
    pub home: String,
    pub end: String,
}

impl Default for KeyConfig {
    fn default() -> Self {
        let s = |v: &str| v.to_string();
        KeyConfig {
            pause: s("space"),
            round: s("r"),
            threshold_up: s("+ ="),
            threshold_down: s("-"),
            save: s("s"),
            quit: s("q"),
            detach: s("d"),
            help: s("?"),
            yes: s("y Y"),
            no: s("n N"),
            next_view: s("tab"),
            prev_view: s("backtab"),
            overview: s("1"),
            classes: s("2"),
            samples: s("3"),
            log: s("4"),
            smoothing: s("e"),
            history: s("h"),
            sort: s("o"),
            reverse: s("O"),
            compare: s("c"),
            sample_set: s("m"),
            log_level: s("l"),
            up: s("up k"),
            down: s("down j"),
            left: s("left"),
            right: s("right"),
            page_up: s("pageup"),
            page_down: s("pagedown"),
            home: s("home g"),
            end: s("end G"),
        }
    }
}

impl KeyConfig {
    /// (field name, value, action) for every field, in the order of the struct.
    pub fn fields(&self) -> [(&'static str, &str, Action); 31] {
        use Action::*;
        [
            ("pause", &self.pause, TogglePause),
            ("round", &self.round, PseudoLabelRound),
            ("threshold_up", &self.threshold_up, ThresholdUp),
            ("threshold_down", &self.threshold_down, ThresholdDown),
            ("save", &self.save, SaveCheckpoint),
            ("quit", &self.quit, Quit),
            ("detach", &self.detach, Detach),
            ("help", &self.help, ToggleHelp),
            ("yes", &self.yes, Yes),
            ("no", &self.no, No),
            ("next_view", &self.next_view, NextView),
            ("prev_view", &self.prev_view, PrevView),
            ("overview", &self.overview, ShowOverview),
            ("classes", &self.classes, ShowClasses),
            ("samples", &self.samples, ShowSamples),
            ("log", &self.log, ShowLog),
            ("smoothing", &self.smoothing, Smoothing),
            ("history", &self.history, History),
            ("sort", &self.sort, Sort),
            ("reverse", &self.reverse, SortReverse),
            ("compare", &self.compare, Compare),
            ("sample_set", &self.sample_set, SampleSet),
            ("log_level", &self.log_level, LogLevel),
            ("up", &self.up, Up),
            ("down", &self.down, Down),
            ("left", &self.left, Left),
            ("right", &self.right, Right),
            ("page_up", &self.page_up, PageUp),
            ("page_down", &self.page_down, PageDown),
            ("home", &self.home, Home),
            ("end", &self.end, End),
        ]
        .map(|(n, v, a)| (n, v.as_str(), a))
    }

    /// Check every key name and that no key is bound to two actions. The error names the
    /// field (as `keys.<field>`), e.g. `keys.sort: "r" is already bound to keys.round`.
    pub fn validate(&self) -> Result<(), String> {
        self.keymap().map(|_| ())
    }

    /// The keymap these keys describe (validated).
    pub fn keymap(&self) -> Result<Keymap, String> {
        let mut bindings: Vec<Binding> = Vec::new();
        let mut owner: Vec<&'static str> = Vec::new();
        for (field, value, action) in self.fields() {
            let mut keys = Vec::new();
            for name in value.split_whitespace() {
                let key = parse_key(name).map_err(|e| format!("keys.{field}: {e}"))?;
                if key == CTRL_C && action != Action::Quit {
                    return Err(format!(
                        "keys.{field}: \"{name}\" is reserved (Ctrl-C always asks to stop)"
                    ));
                }
                if key == ESC && action != Action::No {
                    return Err(format!(
                        "keys.{field}: \"{name}\" is reserved (Esc always closes and answers no)"
                    ));
                }
                if let Some(i) = bindings.iter().position(|b| b.key == key) {
                    if owner[i] == field {
                        continue; // the same key twice in one field: harmless
                    }
                    return Err(format!(
                        "keys.{field}: \"{name}\" is already bound to keys.{}",
                        owner[i]
                    ));
                }
                keys.push(key);
                bindings.push(Binding {
                    key,
                    action,
                    name: display_name(key),
                });
                owner.push(field);
            }
            if keys.is_empty() && matches!(action, Action::Yes) {
                return Err(format!(
                    "keys.{field}: must name at least one key (the stop prompt needs it)"
                ));
            }
        }
        Ok(Keymap { bindings })
    }
}

/// A key (code + modifiers, Shift left out: `O` is the character `O`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

const CTRL_C: Key = Key {
    code: KeyCode::Char('c'),
    mods: KeyModifiers::CONTROL,
};
const ESC: Key = Key {
    code: KeyCode::Esc,
    mods: KeyModifiers::NONE,
};

impl Key {
    /// The key of a key event, normalised: Shift dropped (it is in the character already),
    /// only Ctrl and Alt kept; Ctrl-letters in lower case.
    pub fn of(ev: &KeyEvent) -> Key {
        let mods = ev.modifiers & (KeyModifiers::CONTROL | KeyModifiers::ALT);
        let code = match ev.code {
            KeyCode::Char(c) if mods.contains(KeyModifiers::CONTROL) => {
                KeyCode::Char(c.to_ascii_lowercase())
            }
            c => c,
        };
        Key { code, mods }
    }
}

/// Named keys accepted in the config (lower case), and the code they stand for.
const NAMED: &[(&str, KeyCode)] = &[
    ("space", KeyCode::Char(' ')),
    ("tab", KeyCode::Tab),
    ("backtab", KeyCode::BackTab),
    ("enter", KeyCode::Enter),
    ("backspace", KeyCode::Backspace),
    ("delete", KeyCode::Delete),
    ("insert", KeyCode::Insert),
    ("up", KeyCode::Up),
    ("down", KeyCode::Down),
    ("left", KeyCode::Left),
    ("right", KeyCode::Right),
    ("pageup", KeyCode::PageUp),
    ("pagedown", KeyCode::PageDown),
    ("home", KeyCode::Home),
    ("end", KeyCode::End),
    ("esc", KeyCode::Esc),
];

/// Parse one key name (see the module documentation).
pub fn parse_key(name: &str) -> Result<Key, String> {
    let mut mods = KeyModifiers::NONE;
    let mut rest = name;
    loop {
        let lower = rest.to_ascii_lowercase();
        if rest.chars().count() > 5 && lower.starts_with("ctrl-") {
            mods |= KeyModifiers::CONTROL;
            rest = &rest[5..];
        } else if rest.chars().count() > 4 && lower.starts_with("alt-") {
            mods |= KeyModifiers::ALT;
            rest = &rest[4..];
        } else {
            break;
        }
    }
    let mut chars = rest.chars();
    let code = match (chars.next(), chars.next()) {
        (Some(c), None) if !c.is_whitespace() && !c.is_control() => {
            if mods.contains(KeyModifiers::CONTROL) {
                KeyCode::Char(c.to_ascii_lowercase())
            } else {
                KeyCode::Char(c)
            }
        }
        _ => {
            let lower = rest.to_ascii_lowercase();
            let named = NAMED.iter().find(|(n, _)| *n == lower).map(|(_, c)| *c);
            let f = lower
                .strip_prefix('f')
                .and_then(|n| n.parse::<u8>().ok())
                .filter(|n| (1..=12).contains(n))
                .map(KeyCode::F);
            named.or(f).ok_or_else(|| {
                format!(
                    "unknown key \"{name}\" (a single character, or one of: {}, f1..f12; \
                     ctrl-/alt- prefixes; several keys separated by spaces)",
                    NAMED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" ")
                )
            })?
        }
    };
    Ok(Key { code, mods })
}

/// How a key is written on screen (ASCII only).
pub fn display_name(key: Key) -> String {
    let base = match key.code {
        KeyCode::Char(' ') => "space".to_string(),
        KeyCode::Char(c) => c.to_string(),
        KeyCode::Tab => "tab".into(),
        KeyCode::BackTab => "S-tab".into(),
        KeyCode::Enter => "enter".into(),
        KeyCode::Backspace => "bksp".into(),
        KeyCode::Delete => "del".into(),
        KeyCode::Insert => "ins".into(),
        KeyCode::Up => "Up".into(),
        KeyCode::Down => "Down".into(),
        KeyCode::Left => "Left".into(),
        KeyCode::Right => "Right".into(),
        KeyCode::PageUp => "PgUp".into(),
        KeyCode::PageDown => "PgDn".into(),
        KeyCode::Home => "Home".into(),
        KeyCode::End => "End".into(),
        KeyCode::Esc => "Esc".into(),
        KeyCode::F(n) => format!("F{n}"),
        _ => "?".into(),
    };
    let mut s = String::new();
    if key.mods.contains(KeyModifiers::CONTROL) {
        s.push_str("C-");
    }
    if key.mods.contains(KeyModifiers::ALT) {
        s.push_str("M-");
    }
    s.push_str(&base);
    s
}

/// One key bound to one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub key: Key,
    pub action: Action,
    /// How the key is shown in the help and the footer.
    pub name: String,
}

/// Keys to actions, built from a validated [`KeyConfig`]; plus the fixed Ctrl-C (quit) and
/// Esc (no / close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keymap {
    bindings: Vec<Binding>,
}

impl Default for Keymap {
    fn default() -> Self {
        KeyConfig::default()
            .keymap()
            .unwrap_or(Keymap { bindings: vec![] })
    }
}

/// The rows of the help overlay: groups of actions and what they do.
const HELP_GROUPS: &[(&[Action], &str)] = &[
    (&[Action::TogglePause], "pause / resume"),
    (&[Action::PseudoLabelRound], "pseudo-label round"),
    (
        &[Action::ThresholdUp, Action::ThresholdDown],
        "threshold +/- 0.01",
    ),
    (&[Action::SaveCheckpoint], "save checkpoint"),
    (&[Action::Detach], "detach, run goes on"),
    (&[Action::Quit], "stop the run, quit"),
    (&[Action::Yes, Action::No], "answer stop prompt"),
    (&[Action::ToggleHelp], "this help"),
    (&[Action::NextView, Action::PrevView], "next / prev view"),
    (&[Action::ShowOverview], "Overview view"),
    (&[Action::ShowClasses], "Classes view"),
    (&[Action::ShowSamples], "Samples view"),
    (&[Action::ShowLog], "Log view"),
    (&[Action::Smoothing], "loss smoothing (EMA)"),
    (&[Action::History], "loss: all / recent"),
    (&[Action::Sort, Action::SortReverse], "sort / reverse"),
    (&[Action::Compare], "vs epoch / round"),
    (&[Action::SampleSet], "mistakes / pseudo"),
    (&[Action::LogLevel], "log level filter"),
    (&[Action::Up, Action::Down], "scroll"),
    (&[Action::Left, Action::Right], "page samples"),
    (&[Action::PageUp, Action::PageDown], "page up / down"),
    (&[Action::Home, Action::End], "top / end, follow"),
];

impl Keymap {
    /// The action a key press stands for, if any. Key releases (reported on some platforms)
    /// are ignored so that one press does one thing.
    pub fn action(&self, ev: &KeyEvent) -> Option<Action> {
        if ev.kind == KeyEventKind::Release {
            return None;
        }
        let key = Key::of(ev);
        if key == CTRL_C {
            return Some(Action::Quit);
        }
        if key == ESC {
            return Some(Action::No);
        }
        self.bindings
            .iter()
            .find(|b| b.key == key)
            .map(|b| b.action)
    }

    /// Every binding, in config order.
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Names of the keys bound to `action` (the fixed Ctrl-C / Esc included), in config order.
    pub fn keys_for(&self, action: Action) -> Vec<String> {
        let mut v: Vec<String> = self
            .bindings
            .iter()
            .filter(|b| b.action == action)
            .map(|b| b.name.clone())
            .collect();
        match action {
            Action::Quit => v.push("C-c".into()),
            Action::No => v.push("Esc".into()),
            _ => {}
        }
        v
    }

    /// The first key bound to `action`, for the footer (`None` when unbound).
    pub fn first_key(&self, action: Action) -> Option<String> {
        self.keys_for(action).into_iter().next()
    }

    /// (keys, what they do) for the help overlay: every action, with all its keys.
    pub fn help_rows(&self) -> Vec<(String, &'static str)> {
        HELP_GROUPS
            .iter()
            .map(|(actions, what)| {
                let keys: Vec<String> = actions
                    .iter()
                    .map(|a| {
                        let k = self.keys_for(*a);
                        if k.is_empty() {
                            "-".to_string()
                        } else {
                            k.join(",")
                        }
                    })
                    .collect();
                (keys.join(" / "), *what)
            })
            .collect()
    }
}

/// The action a key press stands for under the default keys.
pub fn action_for(key: &KeyEvent) -> Option<Action> {
    Keymap::default().action(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ch(c: char) -> KeyEvent {
        key(KeyCode::Char(c))
    }

    /// Every documented default key, and what it does.
    pub(crate) const DEFAULT_KEYS: &[(KeyCode, Action)] = &[
        (KeyCode::Char(' '), Action::TogglePause),
        (KeyCode::Char('r'), Action::PseudoLabelRound),
        (KeyCode::Char('+'), Action::ThresholdUp),
        (KeyCode::Char('='), Action::ThresholdUp),
        (KeyCode::Char('-'), Action::ThresholdDown),
        (KeyCode::Char('s'), Action::SaveCheckpoint),
        (KeyCode::Char('q'), Action::Quit),
        (KeyCode::Char('d'), Action::Detach),
        (KeyCode::Char('?'), Action::ToggleHelp),
        (KeyCode::Char('y'), Action::Yes),
        (KeyCode::Char('Y'), Action::Yes),
        (KeyCode::Char('n'), Action::No),
        (KeyCode::Char('N'), Action::No),
        (KeyCode::Esc, Action::No),
        (KeyCode::Tab, Action::NextView),
        (KeyCode::BackTab, Action::PrevView),
        (KeyCode::Char('1'), Action::ShowOverview),
        (KeyCode::Char('2'), Action::ShowClasses),
        (KeyCode::Char('3'), Action::ShowSamples),
        (KeyCode::Char('4'), Action::ShowLog),
        (KeyCode::Char('e'), Action::Smoothing),
        (KeyCode::Char('h'), Action::History),
        (KeyCode::Char('o'), Action::Sort),
        (KeyCode::Char('O'), Action::SortReverse),
        (KeyCode::Char('c'), Action::Compare),
        (KeyCode::Char('m'), Action::SampleSet),
        (KeyCode::Char('l'), Action::LogLevel),
        (KeyCode::Up, Action::Up),
        (KeyCode::Char('k'), Action::Up),
        (KeyCode::Down, Action::Down),
        (KeyCode::Char('j'), Action::Down),
        (KeyCode::Left, Action::Left),
        (KeyCode::Right, Action::Right),
        (KeyCode::PageUp, Action::PageUp),
        (KeyCode::PageDown, Action::PageDown),
        (KeyCode::Home, Action::Home),
        (KeyCode::Char('g'), Action::Home),
        (KeyCode::End, Action::End),
        (KeyCode::Char('G'), Action::End),
    ];

    #[test]
    fn documented_keys_map_to_actions() {
        for (code, action) in DEFAULT_KEYS {
            assert_eq!(action_for(&key(*code)), Some(*action), "{code:?}");
        }
        assert_eq!(
            action_for(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        // Shift is in the character: Shift+O is O, Shift+Tab is BackTab.
        assert_eq!(
            action_for(&KeyEvent::new(KeyCode::Char('O'), KeyModifiers::SHIFT)),
            Some(Action::SortReverse)
        );
        assert_eq!(
            action_for(&KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT)),
            Some(Action::PrevView)
        );
        // Ctrl with another key is not that key.
        assert_eq!(
            action_for(&KeyEvent::new(KeyCode::Char('d'), KeyModifiers::CONTROL)),
            None
        );
        assert_eq!(action_for(&ch('x')), None);
    }

    #[test]
    fn every_action_has_a_default_key_and_a_help_row() {
        let km = Keymap::default();
        let rows = km.help_rows();
        for (_, _, action) in KeyConfig::default().fields() {
            assert!(!km.keys_for(action).is_empty(), "{action:?} unbound");
            assert!(
                HELP_GROUPS.iter().any(|(a, _)| a.contains(&action)),
                "{action:?} not in the help"
            );
        }
        assert_eq!(rows.len(), HELP_GROUPS.len());
        assert_eq!(rows[0], ("space".to_string(), "pause / resume"));
        assert_eq!(rows[2].0, "+,= / -");
        assert_eq!(rows[5].0, "q,C-c");
        assert_eq!(rows[6].0, "y,Y / n,N,Esc");
    }

    #[test]
    fn releases_are_ignored() {
        let mut k = ch('q');
        k.kind = KeyEventKind::Release;
        assert_eq!(action_for(&k), None);
    }

    #[test]
    fn default_config_is_valid_and_round_trips_through_toml() {
        let d = KeyConfig::default();
        assert_eq!(d.validate(), Ok(()));
        let text = toml::to_string(&d).expect("serialize");
        let back: KeyConfig = toml::from_str(&text).expect("parse");
        assert_eq!(back, d);
        // A partial table keeps the other defaults.
        let part: KeyConfig = toml::from_str("pause = \"p\"\nround = \"R\"").expect("parse");
        assert_eq!(part.pause, "p");
        assert_eq!(part.save, "s");
        let km = part.keymap().expect("valid");
        assert_eq!(km.action(&ch('p')), Some(Action::TogglePause));
        assert_eq!(km.action(&ch('R')), Some(Action::PseudoLabelRound));
        assert_eq!(km.action(&ch('r')), None);
        assert_eq!(km.action(&ch(' ')), None);
        assert_eq!(km.help_rows()[0].0, "p");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = toml::from_str::<KeyConfig>("paws = \"p\"").expect_err("unknown field");
        assert!(e.to_string().contains("paws"), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        let bad = KeyConfig {
            sort: "r".into(),
            ..KeyConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err("keys.sort: \"r\" is already bound to keys.round".into())
        );
        let bad = KeyConfig {
            pause: "spacebar".into(),
            ..KeyConfig::default()
        };
        let e = bad.validate().expect_err("unknown key");
        assert!(e.starts_with("keys.pause: unknown key \"spacebar\""), "{e}");
        let bad = KeyConfig {
            detach: "ctrl-c".into(),
            ..KeyConfig::default()
        };
        assert!(bad
            .validate()
            .is_err_and(|e| e.starts_with("keys.detach:") && e.contains("reserved")));
        let bad = KeyConfig {
            help: "esc".into(),
            ..KeyConfig::default()
        };
        assert!(bad
            .validate()
            .is_err_and(|e| e.starts_with("keys.help:") && e.contains("reserved")));
        let bad = KeyConfig {
            yes: String::new(),
            ..KeyConfig::default()
        };
        assert!(bad.validate().is_err_and(|e| e.starts_with("keys.yes:")));
        // Unbinding is fine; the same key twice in one field too.
        let ok = KeyConfig {
            round: String::new(),
            save: "s s".into(),
            ..KeyConfig::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.keymap().expect("ok").action(&ch('r')), None);
    }

    #[test]
    fn key_names_parse() {
        assert_eq!(
            parse_key("ctrl-X"),
            Ok(Key {
                code: KeyCode::Char('x'),
                mods: KeyModifiers::CONTROL
            })
        );
        assert_eq!(parse_key("PageDown").map(|k| k.code), Ok(KeyCode::PageDown));
        assert_eq!(parse_key("f5").map(|k| k.code), Ok(KeyCode::F(5)));
        assert!(parse_key("f13").is_err());
        assert!(parse_key("").is_err());
        assert_eq!(parse_key("-").map(|k| k.code), Ok(KeyCode::Char('-')));
        let alt = parse_key("alt-j").expect("alt");
        let km = KeyConfig {
            down: "alt-j".into(),
            ..KeyConfig::default()
        }
        .keymap()
        .expect("valid");
        assert_eq!(
            km.action(&KeyEvent::new(KeyCode::Char('j'), KeyModifiers::ALT)),
            Some(Action::Down)
        );
        assert_eq!(display_name(alt), "M-j");
    }
}
