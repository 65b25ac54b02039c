//! wick: a terminal dashboard that drives a candle training engine.
//!
//! The engine ([`engine`]) runs on its own OS thread and talks to its clients only through
//! [`protocol::Command`] and [`protocol::Event`] values: the in-process dashboard ([`ui`]),
//! attached clients over the run's control socket, and the run's `events.jsonl`.

pub mod attach;
pub mod bench;
pub mod config;
pub mod convert;
pub mod data;
pub mod engine;
pub mod export;
pub mod headless;
pub mod hub;
pub mod launch;
pub mod model;
pub mod ops;
pub mod predict;
pub mod protocol;
pub mod report;
pub mod rundir;
pub mod server;
pub mod ui;
