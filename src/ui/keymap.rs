//! Which key does what: one documented [`Action`] per thing a user can ask of the dashboard.
//!
//! The help overlay and the footer are generated from [`HELP`], so the list shown on screen is
//! the list handled here.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What a key press asks for. What it then does depends on the state (see `App::update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `space`: pause a running run, resume a paused one.
    TogglePause,
    /// `r`: run a pseudo-label round at the next batch boundary.
    PseudoLabelRound,
    /// `+` (or `=`): raise the pseudo-label threshold by 0.01.
    ThresholdUp,
    /// `-`: lower the pseudo-label threshold by 0.01.
    ThresholdDown,
    /// `s`: save a checkpoint at the next batch boundary.
    SaveCheckpoint,
    /// `q` or Ctrl-C: ask whether to stop the run (quits at once once the run has ended).
    Quit,
    /// `d`: detach; the dashboard leaves, training goes on.
    Detach,
    /// `?`: show or hide the help overlay.
    ToggleHelp,
    /// `y`: answer yes to the stop prompt.
    Yes,
    /// `n` or Esc: answer no to the stop prompt; Esc also closes the help overlay.
    No,
}

/// Key, what it does: the rows of the help overlay.
pub const HELP: &[(&str, &str)] = &[
    ("space", "pause / resume training"),
    ("r", "run a pseudo-label round now"),
    ("+ / -", "pseudo-label threshold +/- 0.01"),
    ("s", "save a checkpoint"),
    ("d", "detach: leave, training goes on"),
    ("q, Ctrl-C", "stop the run and quit (asks first)"),
    ("y / n", "answer the stop prompt (Esc = n)"),
    ("?", "show / hide this help"),
];

/// The action a key press stands for, if any. Key releases (reported on some platforms) are
/// ignored so that one press does one thing.
pub fn action_for(key: &KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Char('c') | KeyCode::Char('C') if ctrl => Some(Action::Quit),
        _ if ctrl => None,
        KeyCode::Char(' ') => Some(Action::TogglePause),
        KeyCode::Char('r') => Some(Action::PseudoLabelRound),
        KeyCode::Char('+') | KeyCode::Char('=') => Some(Action::ThresholdUp),
        KeyCode::Char('-') => Some(Action::ThresholdDown),
        KeyCode::Char('s') => Some(Action::SaveCheckpoint),
        KeyCode::Char('q') => Some(Action::Quit),
        KeyCode::Char('d') => Some(Action::Detach),
        KeyCode::Char('?') => Some(Action::ToggleHelp),
        KeyCode::Char('y') | KeyCode::Char('Y') => Some(Action::Yes),
        KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => Some(Action::No),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn documented_keys_map_to_actions() {
        assert_eq!(
            action_for(&key(KeyCode::Char(' '))),
            Some(Action::TogglePause)
        );
        assert_eq!(
            action_for(&key(KeyCode::Char('r'))),
            Some(Action::PseudoLabelRound)
        );
        assert_eq!(
            action_for(&key(KeyCode::Char('+'))),
            Some(Action::ThresholdUp)
        );
        assert_eq!(
            action_for(&key(KeyCode::Char('-'))),
            Some(Action::ThresholdDown)
        );
        assert_eq!(
            action_for(&key(KeyCode::Char('s'))),
            Some(Action::SaveCheckpoint)
        );
        assert_eq!(action_for(&key(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(action_for(&key(KeyCode::Char('d'))), Some(Action::Detach));
        assert_eq!(
            action_for(&key(KeyCode::Char('?'))),
            Some(Action::ToggleHelp)
        );
        assert_eq!(action_for(&key(KeyCode::Esc)), Some(Action::No));
        assert_eq!(
            action_for(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        // Ctrl with another key is not that key.
        assert_eq!(
            action_for(&KeyEvent::new(KeyCode::Char('d'), KeyModifiers::CONTROL)),
            None
        );
        assert_eq!(action_for(&key(KeyCode::Char('x'))), None);
    }

    #[test]
    fn releases_are_ignored() {
        let mut k = key(KeyCode::Char('q'));
        k.kind = KeyEventKind::Release;
        assert_eq!(action_for(&k), None);
    }
}
