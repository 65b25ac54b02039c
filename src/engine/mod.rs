//! The training engine. It runs on its own OS thread, owns the model, optimizer, data and run
//! state, and talks to the world only through [`Command`]s in and [`Event`]s out (via the hub).

pub mod checkpoint;
pub mod dataset;
pub mod device;
pub mod ema;
pub mod fixmatch;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod rounds;
pub mod runner;
pub mod schedule;
pub mod self_training;

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::hub::EventHub;
use crate::protocol::{Command, Event, Summary};
use crate::rundir::RunDir;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error(
        "training diverged (loss is not finite) at epoch {epoch}, batch {step}: lower train.lr"
    )]
    Diverged { epoch: u32, step: u32 },
    #[error("the engine thread panicked: {0}")]
    Panicked(String),
}

/// What a resumed run starts from.
pub struct Resume {
    /// The newest valid checkpoint.
    pub checkpoint: checkpoint::Checkpoint,
    /// Said (as warnings) right after `RunStarted`: e.g. the torn checkpoints skipped.
    pub warnings: Vec<String>,
    /// Newer checkpoint files that could not be read (set aside before training goes on).
    pub skipped: Vec<std::path::PathBuf>,
}

impl From<checkpoint::Checkpoint> for Resume {
    fn from(checkpoint: checkpoint::Checkpoint) -> Self {
        Resume {
            checkpoint,
            warnings: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

/// A running engine: send it commands, wait for its summary.
pub struct EngineHandle {
    commands: mpsc::UnboundedSender<Command>,
    thread: JoinHandle<Result<Summary, EngineError>>,
}

impl EngineHandle {
    /// A sender for commands (the dashboard and socket clients each hold one).
    pub fn commands(&self) -> mpsc::UnboundedSender<Command> {
        self.commands.clone()
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the engine to end.
    pub fn join(self) -> Result<Summary, EngineError> {
        match self.thread.join() {
            Ok(r) => r,
            Err(panic) => Err(EngineError::Panicked(panic_message(&panic))),
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Starts the engine on its own thread. Every error ends as an `Event::Failed` too.
pub fn spawn(
    config: Config,
    run: RunDir,
    hub: Arc<EventHub>,
    resume: Option<Resume>,
) -> std::io::Result<EngineHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    let thread = std::thread::Builder::new()
        .name("wick-engine".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runner::Runner::new(config, run, hub.clone(), rx, resume)?.run()
            }));
            let result = match outcome {
                Ok(r) => r,
                Err(panic) => Err(EngineError::Panicked(panic_message(&panic))),
            };
            if let Err(e) = &result {
                tracing::error!("run failed: {e}");
                hub.emit(Event::Failed {
                    error: e.to_string(),
                });
            }
            result
        })?;
    Ok(EngineHandle {
        commands: tx,
        thread,
    })
}
