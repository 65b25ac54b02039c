//! `wick train`: set up the run directory, start the engine, and attach a front end (the
//! dashboard on a terminal, plain progress lines otherwise).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::engine::{self, checkpoint::Checkpoint, EngineError};
use crate::headless::{summary_text, Narrator};
use crate::hub::{self, EventHub};
use crate::protocol::{Event, Summary};
use crate::rundir::RunDir;
use crate::ui;

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Plain progress lines instead of the dashboard.
    pub headless: bool,
    /// Force ASCII glyphs on the dashboard.
    pub ascii: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot create the run directory under {dir}: {source}")]
    RunDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("dashboard: {0}")]
    Ui(std::io::Error),
}

/// How a run ended, for the exit status.
pub struct Outcome {
    pub run: RunDir,
    pub summary: Summary,
}

/// Creates a fresh run directory for `config` with its resolved config written in it.
pub fn create_run(config: &Config) -> Result<RunDir, LaunchError> {
    let name = config.name.clone().unwrap_or_else(|| "run".into());
    let run = RunDir::create(&config.runs_dir, &name).map_err(|source| LaunchError::RunDir {
        dir: config.runs_dir.clone(),
        source,
    })?;
    let path = run.config();
    std::fs::write(&path, config.to_toml())
        .map_err(|source| LaunchError::Write { path, source })?;
    Ok(run)
}

/// Runs the engine to its end with the chosen front end.
pub fn run(
    config: Config,
    run: RunDir,
    resume: Option<Checkpoint>,
    opts: &TrainOptions,
) -> Result<Outcome, LaunchError> {
    let hub = EventHub::open(&run.events()).map_err(|source| LaunchError::Write {
        path: run.events(),
        source,
    })?;
    let fps = config.ui.fps;
    let keys = config.keys.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(LaunchError::Ui)?;
    let interactive =
        !opts.headless && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let first_seq = hub.next_seq();
    let handle =
        engine::spawn(config, run.clone(), hub.clone(), resume).map_err(LaunchError::Ui)?;

    let summary = runtime.block_on(async {
        ignore_hangup();
        if interactive {
            dashboard(&hub, first_seq, &handle, fps, keys, opts.ascii).await?;
        } else {
            narrate(&hub, first_seq).await;
        }
        Ok::<_, LaunchError>(())
    });
    summary?;
    let result = handle.join();
    drop(runtime);
    let summary = result?;
    match crate::report::write_report(&run.path) {
        Ok(path) => tracing::info!(path = %path.display(), "report written"),
        Err(e) => tracing::warn!("cannot write the run report: {e}"),
    }
    if !interactive {
        let mut out = std::io::stdout();
        let _ = out.write_all(summary_text(&summary).as_bytes());
        let _ = out.flush();
    }
    Ok(Outcome { run, summary })
}

/// Training must outlive the terminal: a hang-up ends the dashboard (it sees its terminal go),
/// never the process.
fn ignore_hangup() {
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::warn!("terminal hung up; training continues");
            }
        });
    }
}

async fn dashboard(
    hub: &Arc<EventHub>,
    first_seq: u64,
    handle: &engine::EngineHandle,
    fps: u32,
    keys: ui::KeyConfig,
    ascii: bool,
) -> Result<(), LaunchError> {
    // Earlier events (a resumed run's history) are replayed, then live ones follow.
    let replay = hub::read_events(hub.path()).unwrap_or_default();
    let replay: Vec<_> = replay.into_iter().filter(|e| e.seq < first_seq).collect();
    let live = hub::follow(hub, first_seq.checked_sub(1), 1024);
    let view = ui::detect_options(ui::no_color_env(), ascii);
    let opts = ui::DashboardOptions::new(view, fps, keys);
    let stats = opts.stats.clone();
    let exit = ui::run_dashboard(replay, live, handle.commands(), opts)
        .await
        .map_err(LaunchError::Ui)?;
    tracing::info!(
        bytes = stats.bytes_written(),
        frames = stats.frames(),
        "dashboard closed"
    );
    match exit {
        ui::DashboardExit::Quit => {}
        ui::DashboardExit::Detached => {
            let mut err = std::io::stderr();
            let _ = writeln!(
                err,
                "detached: training continues in process {} (events in {})",
                std::process::id(),
                hub.path().display()
            );
        }
        ui::DashboardExit::TerminalLost => {
            tracing::warn!("terminal lost; training continues without a dashboard");
        }
    }
    Ok(())
}

/// Headless front end: progress lines on stderr until the run ends.
async fn narrate(hub: &Arc<EventHub>, first_seq: u64) {
    let mut live = hub::follow(hub, first_seq.checked_sub(1), 1024);
    let mut narrator = Narrator::default();
    let mut err = std::io::stderr();
    while let Some(stamped) = live.recv().await {
        if let Some(line) = narrator.line(&stamped.event) {
            // A vanished terminal must not kill training: write errors are ignored.
            let _ = writeln!(err, "{line}");
        }
        if matches!(stamped.event, Event::Finished { .. } | Event::Failed { .. }) {
            break;
        }
    }
}
