//! The training engine: runs on its own thread, owns model, optimizer, data and run state.

pub mod loss;
pub mod optim;
pub mod schedule;
