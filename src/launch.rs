//! `wick train` / `wick resume`: set up (or reopen) the run directory, start the engine and the
//! control socket, and attach a front end (the dashboard on a terminal, plain progress lines
//! otherwise).
//!
//! Three ways to run:
//! - in this process ([`run`]): `--headless` (and whenever stdout/stdin is not a terminal), or
//!   `--foreground` with the dashboard in-process;
//! - in the background ([`spawn_background`]): `--detach`, and the default on a terminal, where
//!   this process then attaches to it as a client, so `d`, a closed terminal or a dropped SSH
//!   connection only ever end the client.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError};
use crate::engine::{self, checkpoint, EngineError, Resume};
use crate::headless::{summary_text, Narrator};
use crate::hub::{self, EventHub};
use crate::protocol::{Command, Event, Level, Summary};
use crate::rundir::{self, Ended, RunDir};
use crate::server::{self, ServeOptions};
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
    #[error("{0}")]
    Live(std::io::Error),
    #[error("control socket: {0}")]
    Socket(std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot resume run {run}: {message}")]
    Resume { run: String, message: String },
    #[error("cannot start the background process: {0}")]
    Spawn(String),
}

/// How a run ended, for the exit status.
pub struct Outcome {
    pub run: RunDir,
    pub summary: Summary,
}

/// Creates a fresh run directory for `config` with its resolved config written in it. Paths in
/// the written config are absolute, so that `wick resume` works from any directory.
pub fn create_run(config: &Config) -> Result<RunDir, LaunchError> {
    let name = config.name.clone().unwrap_or_else(|| "run".into());
    let run = RunDir::create(&config.runs_dir, &name).map_err(|source| LaunchError::RunDir {
        dir: config.runs_dir.clone(),
        source,
    })?;
    let path = run.config();
    std::fs::write(&path, absolute_paths(config).to_toml())
        .map_err(|source| LaunchError::Write { path, source })?;
    Ok(run)
}

fn absolute_paths(config: &Config) -> Config {
    let mut c = config.clone();
    let abs = |p: &mut PathBuf| {
        if let Ok(a) = std::path::absolute(&*p) {
            *p = a;
        }
    };
    abs(&mut c.runs_dir);
    abs(&mut c.data.train);
    abs(&mut c.data.val);
    if let Some(p) = c.data.unlabelled.as_mut() {
        abs(p);
    }
    if let Some(p) = c.model.pretrained.as_mut() {
        abs(p);
    }
    c
}

/// The config a run was created with (`runs/<id>/config.toml`, as written: no path
/// re-resolution), with an optional device override.
pub fn run_config(run: &RunDir, device: Option<&str>) -> Result<Config, LaunchError> {
    let path = run.config();
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let mut config = Config::parse(&text, &path)?;
    if let Some(d) = device {
        config.device = d.to_string();
        Config::parse(&config.to_toml(), Path::new("--device"))?;
    }
    Ok(config)
}

/// Everything `wick resume` checks before it starts: the run is not live, has not completed
/// its plan, and has a readable checkpoint (a torn or corrupt newer one is skipped and named
/// in the returned warnings).
pub fn prepare_resume(run: &RunDir, device: Option<&str>) -> Result<(Config, Resume), LaunchError> {
    let refuse = |message: String| LaunchError::Resume {
        run: run.id.clone(),
        message,
    };
    if server::is_live(run) {
        return Err(refuse(format!(
            "it is live (attach to it: wick attach {})",
            run.path.display()
        )));
    }
    let config = run_config(run, device)?;
    let progress = rundir::progress(run).map_err(|e| refuse(e.to_string()))?;
    if progress.ended == Some(Ended::Finished) {
        return Err(refuse(format!(
            "it already completed its {} epochs",
            progress.planned
        )));
    }
    remove_stale_temporaries(&run.checkpoints());
    let (found, skipped) = checkpoint::newest_valid(&run.checkpoints(), &candle_core::Device::Cpu);
    let warnings: Vec<String> = skipped
        .iter()
        .map(|e| format!("skipped an unreadable checkpoint: {e}"))
        .collect();
    let skipped: Vec<PathBuf> = skipped
        .iter()
        .filter_map(|e| e.path().map(Path::to_path_buf))
        .collect();
    let Some(checkpoint) = found else {
        let mut message = format!(
            "no usable checkpoint in {} (start it again with: wick train {})",
            run.checkpoints().display(),
            run.config().display()
        );
        if !warnings.is_empty() {
            message.push_str(&format!("; {}", warnings.join("; ")));
        }
        return Err(refuse(message));
    };
    Ok((
        config,
        Resume {
            checkpoint,
            warnings,
            skipped,
        },
    ))
}

/// Temporary files of checkpoint writes cut short by a crash (`.<name>.tmp-<pid>`).
fn remove_stale_temporaries(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Runs the engine to its end in this process, serving the control socket, with the chosen
/// front end (the dashboard when interactive and not headless, progress lines otherwise).
pub fn run(
    config: Config,
    run: RunDir,
    resume: Option<Resume>,
    opts: &TrainOptions,
) -> Result<Outcome, LaunchError> {
    let _lock = run.lock().map_err(LaunchError::Live)?;
    let bound = server::bind(&run).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => LaunchError::Live(e),
        _ => LaunchError::Socket(e),
    })?;
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
    if let Some(r) = &resume {
        // Set unreadable newer checkpoints aside: they would count as the newest otherwise
        // (when pruning, and at the next resume).
        for path in &r.skipped {
            let mut aside = path.clone().into_os_string();
            aside.push(".corrupt");
            if let Err(e) = std::fs::rename(path, &aside) {
                tracing::warn!(path = %path.display(), "cannot set the unreadable checkpoint aside: {e}");
            }
        }
    }
    let first_seq = hub.next_seq();
    let handle =
        engine::spawn(config, run.clone(), hub.clone(), resume).map_err(LaunchError::Ui)?;
    let commands = handle.commands();

    let front = runtime.block_on(async {
        ignore_hangup();
        stop_on_terminate(hub.clone(), commands.clone());
        let server = bound
            .serve(hub.clone(), commands.clone(), ServeOptions::default())
            .map_err(LaunchError::Socket)?;
        let front = if interactive {
            dashboard(
                &hub,
                &run,
                first_seq,
                commands.clone(),
                fps,
                keys,
                opts.ascii,
            )
            .await
        } else {
            narrate(&hub, first_seq).await;
            Ok(())
        };
        // Training goes on after the dashboard leaves (detach, lost terminal): wait for the
        // engine with the socket still served, then let clients have the last events.
        while !handle.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.shutdown().await;
        front
    });
    let result = handle.join();
    drop(runtime);
    front?;
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

/// SIGTERM or SIGINT asks the engine to stop cleanly (checkpoint, then `Finished`); a second
/// one exits at once.
fn stop_on_terminate(hub: Arc<EventHub>, commands: tokio::sync::mpsc::UnboundedSender<Command>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::spawn(async move {
        let mut asked = false;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if asked {
                tracing::warn!("{name} again: exiting without a final checkpoint");
                std::process::exit(130);
            }
            asked = true;
            hub.emit(Event::log(
                Level::Warn,
                format!("{name}: stopping after this batch (checkpoint, then exit); send it again to exit at once"),
            ));
            let _ = commands.send(Command::Stop);
        }
    });
}

async fn dashboard(
    hub: &Arc<EventHub>,
    run: &RunDir,
    first_seq: u64,
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
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
    let exit = ui::run_dashboard(replay, live, commands, opts)
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
                "detached: training continues in this process ({}); attach again with: wick attach {}",
                std::process::id(),
                run.path.display()
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
        if stamped.event.is_terminal() {
            break;
        }
    }
}

/// A run started in the background.
#[derive(Debug, Clone)]
pub struct Background {
    pub pid: u32,
}

/// Starts `wick serve RUN` (this executable) in its own session (`setsid`: no controlling
/// terminal, no SIGHUP when this terminal goes), stdin from /dev/null, stdout and stderr
/// appended to the run's `wick.log`, and waits until its control socket accepts connections.
pub fn spawn_background(
    run: &RunDir,
    resume: bool,
    device: Option<&str>,
) -> Result<Background, LaunchError> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command as Process, Stdio};
    let spawn_err = |m: String| LaunchError::Spawn(m);
    let exe = std::env::current_exe().map_err(|e| spawn_err(format!("own executable: {e}")))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.log())
        .map_err(|source| LaunchError::Write {
            path: run.log(),
            source,
        })?;
    let log2 = log
        .try_clone()
        .map_err(|e| spawn_err(format!("log file: {e}")))?;
    let mut cmd = Process::new(exe);
    cmd.arg("serve").arg(&run.path);
    if resume {
        cmd.arg("--resume");
    }
    if let Some(d) = device {
        cmd.args(["--device", d]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    // SAFETY: setsid is async-signal-safe and the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| spawn_err(format!("cannot start {}: {e}", run.path.display())))?;
    let pid = child.id();
    let started = Instant::now();
    loop {
        if server::is_live(run) {
            // Reaped by init once we exit; while we live it is waited for below if it ends.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            return Ok(Background { pid });
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(spawn_err(format!(
                "the run's process exited at once ({status}); the end of {}:\n{}",
                run.log().display(),
                tail(&run.log(), 12)
            )));
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(spawn_err(format!(
                "the run's process (pid {pid}) did not open {} within 2 minutes; see {}",
                run.socket().display(),
                run.log().display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
