//! The dashboard: state folded from events, pure drawing, keys, terminal set-up.
//!
//! - [`state`]: [`App`], the one [`App::update`] that folds [`Msg`]s into it, and the
//!   [`Effect`]s it asks for.
//! - [`keymap`]: which key is which [`keymap::Action`]; the help text.
//! - [`view`]: [`draw`], a pure function of [`App`].
//! - [`glyphs`]: bars, sparklines, numbers, Unicode/ASCII and colour/no-colour styles.
//! - [`terminal`]: terminal set-up/restore, panic hook, [`run_dashboard`].

pub mod glyphs;
pub mod keymap;
pub mod state;
pub mod terminal;
pub mod view;

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

pub use keymap::{action_for, Action};
pub use state::{App, Effect, Msg, RunState, ViewOptions};
pub use terminal::{
    detect_options, install_panic_hook, locale_is_utf8, no_color_env, run_dashboard, DashboardExit,
    DashboardOptions,
};
pub use view::{draw, MIN_HEIGHT, MIN_WIDTH};
