//! `wick attach`: a client of a run's control socket. It replays `events.jsonl` itself (fast,
//! local), then asks the server for the events after the last one it has, so the dashboard it
//! opens is the same [`ui::run_dashboard`] as the in-process one, fed the same stream.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::hub;
use crate::protocol::{Command, Event, Stamped, Summary, PROTOCOL_VERSION};
use crate::rundir::RunDir;
use crate::server::{self, Hello, LineRead, ServerLine, WireError};
use crate::ui;

/// Longest line a client accepts from a server (an `EpochFinished` with a big confusion
/// matrix is the largest real one, far below this).
const CLIENT_MAX_LINE: usize = 16 * 1024 * 1024;
/// Events buffered between the socket reader and the dashboard.
const CLIENT_QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("cannot connect to {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("the run refused the connection: {0}")]
    Refused(WireError),
    #[error(
        "the run speaks protocol version {theirs}, this wick version {ours}: attach with the wick that started it"
    )]
    Version { theirs: u32, ours: u32 },
    #[error("handshake with {path} failed: {message}")]
    Handshake { path: PathBuf, message: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A connection past the handshake.
pub struct Connection {
    /// The server's hello (run id, pid).
    pub hello: Hello,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// Connects to a control socket and shakes hands; the server will send the events after
/// `after` (all of them when `None`).
pub async fn connect(socket: &Path, after: Option<u64>) -> Result<Connection, AttachError> {
    let connect_err = |source| AttachError::Connect {
        path: socket.to_path_buf(),
        source,
    };
    let std_stream = server::connect_std(socket).map_err(connect_err)?;
    std_stream.set_nonblocking(true).map_err(connect_err)?;
    let stream = UnixStream::from_std(std_stream).map_err(connect_err)?;
    let (read, mut writer) = stream.into_split();
    let mut reader = BufReader::new(read);
    let handshake = |message: String| AttachError::Handshake {
        path: socket.to_path_buf(),
        message,
    };
    let mut buf = Vec::new();
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        server::read_line_limited(&mut reader, &mut buf, CLIENT_MAX_LINE),
    )
    .await
    .map_err(|_| handshake("no hello from the server within 10 s".into()))??;
    if first != LineRead::Line {
        return Err(handshake("the server closed the connection".into()));
    }
    let hello = match server::parse_server_line(&buf).map_err(handshake)? {
        ServerLine::Hello(h) if h.hello == server::MAGIC => h,
        ServerLine::Error(e) => return Err(AttachError::Refused(e)),
        _ => return Err(handshake("the first line is not a wick hello".into())),
    };
    if hello.protocol != PROTOCOL_VERSION {
        return Err(AttachError::Version {
            theirs: hello.protocol,
            ours: PROTOCOL_VERSION,
        });
    }
    let mut line = serde_json::to_vec(&Hello::client(after)).map_err(io::Error::from)?;
    line.push(b'\n');
    writer.write_all(&line).await?;
    Ok(Connection {
        hello,
        reader,
        writer,
    })
}

impl Connection {
    /// Turns the connection into channels: live events in, commands out. The returned task
    /// ends when the server closes the connection, with the last error line it sent, if any.
    pub fn into_channels(
        self,
    ) -> (
        mpsc::Receiver<Stamped>,
        mpsc::UnboundedSender<Command>,
        JoinHandle<Option<WireError>>,
    ) {
        let (ev_tx, ev_rx) = mpsc::channel(CLIENT_QUEUE);
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Command>();
        let mut writer = self.writer;
        tokio::spawn(async move {
            while let Some(cmd) = cmd_rx.recv().await {
                let Ok(mut line) = serde_json::to_vec(&cmd) else {
                    continue;
                };
                line.push(b'\n');
                if writer.write_all(&line).await.is_err() {
                    break;
                }
            }
        });
        let mut reader = self.reader;
        let task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut last_error = None;
            loop {
                match server::read_line_limited(&mut reader, &mut buf, CLIENT_MAX_LINE).await {
                    Ok(LineRead::Line) => match server::parse_server_line(&buf) {
                        Ok(ServerLine::Event(e)) => {
                            if ev_tx.send(*e).await.is_err() {
                                break;
                            }
                        }
                        Ok(ServerLine::Error(e)) => {
                            tracing::warn!("server: {e}");
                            last_error = Some(e);
                        }
                        Ok(ServerLine::Hello(_)) => {}
                        Err(e) => tracing::warn!("unreadable line from the server: {e}"),
                    },
                    Ok(LineRead::TooLong) => tracing::warn!("over-long line from the server"),
                    Ok(LineRead::Eof) | Err(_) => break,
                }
            }
            last_error
        });
        (ev_rx, cmd_tx, task)
    }
}

/// How a run ended: its `Finished` summary or its `Failed` error; `None` while it goes on.
pub type Ending = Option<Result<Summary, String>>;

/// How an attached dashboard ended.
#[derive(Debug)]
pub struct AttachOutcome {
    pub exit: ui::DashboardExit,
    /// Whether the run was live when we attached.
    pub live: bool,
    /// The run's `Finished` summary, or its `Failed` error, when it has ended.
    pub ended: Ending,
    /// The last error line the server sent before closing, if any.
    pub server_error: Option<WireError>,
}

/// Opens the dashboard on `run`: its history from `events.jsonl`, then live events over the
/// socket when a process serves it (a run that is not live is shown as it ended, read-only).
pub async fn dashboard(run: &RunDir, ascii: bool) -> Result<AttachOutcome, AttachError> {
    let replay = match hub::read_events(&run.events()) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let after = replay.last().map(|e| e.seq);
    let config = std::fs::read_to_string(run.config())
        .ok()
        .and_then(|t| Config::parse(&t, &run.config()).ok());
    let fps = config
        .as_ref()
        .map(|c| c.ui.fps)
        .unwrap_or_else(crate::config::default_fps);
    let keys = config.map(|c| c.keys).unwrap_or_default();
    let (events, commands, reader, live) = match connect(&run.socket(), after).await {
        Ok(conn) => {
            let (ev, cmd, task) = conn.into_channels();
            (ev, cmd, Some(task), true)
        }
        Err(AttachError::Connect { .. }) => {
            // Not live: show the history with the stream closed; commands go nowhere.
            let (_, ev) = mpsc::channel(1);
            let (cmd, _) = mpsc::unbounded_channel();
            (ev, cmd, None, false)
        }
        Err(e) => return Err(e),
    };
    let view = ui::detect_options(ui::no_color_env(), ascii);
    let opts = ui::DashboardOptions::new(view, fps, keys);
    // How the run ended, if it has: from the history, then from live events as they pass.
    let ended = Arc::new(Mutex::new(ended_in(&replay)));
    let (tap_tx, tap_rx) = mpsc::channel(CLIENT_QUEUE);
    let tap = tokio::spawn(tap_terminal(events, tap_tx, ended.clone()));
    let exit = ui::run_dashboard(replay, tap_rx, commands, opts).await?;
    tap.abort();
    let ended = match ended.lock() {
        Ok(mut g) => g.take(),
        Err(p) => p.into_inner().take(),
    };
    let server_error = match reader {
        Some(task) if task.is_finished() => task.await.ok().flatten(),
        Some(task) => {
            task.abort();
            None
        }
        None => None,
    };
    Ok(AttachOutcome {
        exit,
        live,
        ended,
        server_error,
    })
}

/// Passes events through, noting how the run ended (before the dashboard sees the event).
async fn tap_terminal(
    mut events: mpsc::Receiver<Stamped>,
    out: mpsc::Sender<Stamped>,
    ended: Arc<Mutex<Ending>>,
) {
    while let Some(e) = events.recv().await {
        let now = match &e.event {
            Event::Finished { summary } => Some(Some(Ok(summary.clone()))),
            Event::Failed { error } => Some(Some(Err(error.clone()))),
            Event::RunStarted { .. } => Some(None),
            _ => None,
        };
        if let Some(now) = now {
            match ended.lock() {
                Ok(mut g) => *g = now,
                Err(p) => *p.into_inner() = now,
            }
        }
        if out.send(e).await.is_err() {
            break;
        }
    }
}

fn ended_in(events: &[Stamped]) -> Ending {
    let mut ended = None;
    for e in events {
        match &e.event {
            Event::Finished { summary } => ended = Some(Ok(summary.clone())),
            Event::Failed { error } => ended = Some(Err(error.clone())),
            Event::RunStarted { .. } => ended = None,
            _ => {}
        }
    }
    ended
}

/// `wick attach --json`: the run's events as JSON lines on stdout (history, then live until the
/// run ends), and JSON commands read from stdin, one per line.
pub async fn json_lines(run: &RunDir) -> Result<(), AttachError> {
    let replay = match hub::read_events(&run.events()) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let after = replay.last().map(|e| e.seq);
    let mut out = io::BufWriter::new(io::stdout().lock());
    for e in &replay {
        serde_json::to_writer(&mut out, e).map_err(io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    drop(out);
    let conn = match connect(&run.socket(), after).await {
        Ok(c) => c,
        Err(AttachError::Connect { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let (mut events, commands, reader) = conn.into_channels();
    // stdin on a thread of its own (blocking reads); when it closes, following goes on.
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Command>(&line) {
                Ok(cmd) => {
                    if commands.send(cmd).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("not a command ({e}): {line}"),
            }
        }
    });
    let mut stdout = io::stdout();
    let mut buf = Vec::with_capacity(4096);
    while let Some(first) = events.recv().await {
        buf.clear();
        let mut next = Some(first);
        while let Some(e) = next {
            serde_json::to_writer(&mut buf, &e).map_err(io::Error::from)?;
            buf.push(b'\n');
            next = events.try_recv().ok();
        }
        if stdout.write_all(&buf).is_err() || stdout.flush().is_err() {
            break;
        }
    }
    if let Ok(Some(e)) = reader.await {
        eprintln!("the run closed the connection: {e}");
    }
    Ok(())
}

/// The newest live run under `runs_dir` (newest by creation).
pub fn newest_live(runs_dir: &Path) -> Option<RunDir> {
    RunDir::list(runs_dir)
        .into_iter()
        .rev()
        .find(server::is_live)
}
