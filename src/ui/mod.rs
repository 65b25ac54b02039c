//! The dashboard: state folded from events, pure drawing, keys, terminal set-up.
//!
//! - [`state`]: [`App`], the one [`App::update`] that folds [`Msg`]s into it, and the
//!   [`Effect`]s it asks for; the views' settings ([`state::Nav`]).
//! - [`keymap`]: which key is which [`keymap::Action`], configurable with [`KeyConfig`]; the
//!   help text.
//! - [`view`]: [`draw`], a pure function of [`App`]: the chrome and the Overview; the other
//!   views in [`classes`], [`samples`] and [`logview`].
//! - [`thumbs`]: image thumbnails (decode, cache, half-block / character-ramp drawing).
//! - [`glyphs`], [`palette`]: bars, sparklines, numbers; Unicode/ASCII; styles for no colour,
//!   16, 256 and 24-bit colour; colour-blind-safe palettes.
//! - [`terminal`]: terminal set-up/restore, panic hook, [`run_dashboard`].

pub mod classes;
pub mod glyphs;
pub mod keymap;
pub mod logview;
pub mod palette;
pub mod samples;
pub mod state;
pub mod terminal;
pub mod thumbs;
pub mod view;
pub mod wire;

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ssl;
#[cfg(test)]
mod tests_views;

pub use keymap::{action_for, Action, KeyConfig, Keymap};
pub use palette::{detect_color_depth, ColorDepth};
pub use state::{App, Effect, Msg, RunState, View, ViewOptions};
pub use terminal::{
    detect_options, install_panic_hook, locale_is_utf8, no_color_env, run_dashboard,
    CountingWriter, DashboardExit, DashboardOptions, DashboardStats,
};
pub use view::{draw, MIN_HEIGHT, MIN_WIDTH};
