//! The run's control socket, `runs/<id>/control.sock`: every run serves it (with or without a
//! local dashboard) so that `wick attach` can bring the dashboard back from any later terminal.
//!
//! # Security
//! The socket is created with mode 0600 (bound under a temporary name, chmod-ed, then renamed
//! into place) inside the run directory, which is 0700. A peer whose uid (`SO_PEERCRED`) is
//! not ours is refused with an error line.
//!
//! # Wire protocol (one JSON object per line, UTF-8, `\n`-terminated)
//! 1. Server: `{"hello":"wick","protocol":2,"run_id":"…","pid":1234}`.
//! 2. Client: `{"hello":"wick","protocol":2,"after":41}`; `after` (optional) is the last `seq`
//!    the client already has (it read `events.jsonl` itself); without it the whole stream is sent.
//!    A different `protocol` gets `{"error":"…","code":"version"}` and the connection closes.
//! 3. Server → client: every event after `after`, as [`Stamped`] lines, in order, without gaps.
//!    Client → server: [`Command`] lines, e.g. `{"cmd":"pause"}`.
//! 4. A line the server cannot use gets `{"error":"…","code":"bad_line"}` (or `too_long` for
//!    lines over [`MAX_LINE`] bytes, which are skipped to their end); the connection stays open.
//!
//! # Never stalling the engine
//! The engine only ever touches the hub (a file append and a non-blocking broadcast). Each
//! client follows the hub through [`hub::follow`] with a bounded queue: a client that falls
//! behind the broadcast buffer is caught up from `events.jsonl`; one whose socket accepts
//! nothing for [`ServeOptions::stall_timeout`] is disconnected (and a warning logged).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::hub::{self, EventHub};
use crate::protocol::{Command, Event, Level, Stamped, PROTOCOL_VERSION};
use crate::rundir::RunDir;

/// What the first line of both sides says in its `hello` field.
pub const MAGIC: &str = "wick";
/// Longest line the server reads from a client (bytes, newline excluded).
pub const MAX_LINE: usize = 64 * 1024;

/// The handshake line, both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub hello: String,
    /// The sender's [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// Server: the run it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Server: its process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Client: the last `seq` it already has; the server sends the events after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
}

impl Hello {
    /// A client's hello.
    pub fn client(after: Option<u64>) -> Hello {
        Hello {
            hello: MAGIC.into(),
            protocol: PROTOCOL_VERSION,
            run_id: None,
            pid: None,
            after,
        }
    }
}

/// Why the server rejected something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The peer runs as another user.
    Forbidden,
    /// Protocol versions differ.
    Version,
    /// The first line was not a hello (or did not come in time).
    Handshake,
    /// A line over [`MAX_LINE`] bytes.
    TooLong,
    /// A line that is not a [`Command`].
    BadLine,
    /// The client stopped reading; it is disconnected.
    TooSlow,
}

/// An error line from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub error: String,
    pub code: ErrorCode,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

/// A line from the server, as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerLine {
    Hello(Hello),
    Event(Box<Stamped>),
    Error(WireError),
}

/// Tells a server line apart by its keys (`event`, `error` or `hello`).
pub fn parse_server_line(line: &[u8]) -> Result<ServerLine, String> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let obj = value.as_object().ok_or("not a JSON object")?;
    let parsed = if obj.contains_key("event") {
        serde_json::from_value(value).map(|s| ServerLine::Event(Box::new(s)))
    } else if obj.contains_key("error") {
        serde_json::from_value(value).map(ServerLine::Error)
    } else if obj.contains_key("hello") {
        serde_json::from_value(value).map(ServerLine::Hello)
    } else {
        return Err("neither an event, an error nor a hello".into());
    };
    parsed.map_err(|e| e.to_string())
}

/// Tunables; the defaults suit real use, tests shorten them.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest accepted client line.
    pub max_line: usize,
    /// How long a client may take to send its hello.
    pub handshake_timeout: Duration,
    /// A client whose socket takes nothing for this long is disconnected.
    pub stall_timeout: Duration,
    /// Events queued per client before its follower falls back to `events.jsonl`.
    pub client_queue: usize,
    /// At the end of the run: how long clients get to receive the last events.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_line: MAX_LINE,
            handshake_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            client_queue: 1024,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Unix socket paths are limited to ~108 bytes. A longer one is reached through
/// `/proc/self/fd/<dir fd>/<name>`; the returned `File` (the directory) must stay open while
/// the path is used.
fn short_path(path: &Path) -> io::Result<(Option<std::fs::File>, PathBuf)> {
    if path.as_os_str().len() < 100 {
        return Ok((None, path.to_path_buf()));
    }
    use std::os::fd::AsRawFd;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "socket path has no name"))?;
    let file = std::fs::File::open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())).join(name);
    Ok((Some(file), short))
}

/// Connects (blocking; a Unix connect does not wait) to a socket path of any length.
pub fn connect_std(path: &Path) -> io::Result<std::os::unix::net::UnixStream> {
    let (_dir, short) = short_path(path)?;
    std::os::unix::net::UnixStream::connect(short)
}

/// Whether a process serves the run: its socket accepts a connection.
pub fn is_live(run: &RunDir) -> bool {
    connect_std(&run.socket()).is_ok()
}

/// The uid of the process at the other end of a Unix socket (`SO_PEERCRED`).
#[cfg(target_os = "linux")]
pub fn peer_uid(fd: std::os::fd::RawFd) -> io::Result<u32> {
    // SAFETY: `ucred` is plain old data; getsockopt writes at most `len` bytes into it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid pointers to `cred` and `len`, which outlive the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// The uid of the process at the other end of a Unix socket.
#[cfg(not(target_os = "linux"))]
pub fn peer_uid(fd: std::os::fd::RawFd) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    let mut gid: libc::gid_t = 0;
    // SAFETY: valid out-pointers.
    if unsafe { libc::getpeereid(fd, &mut uid, &mut gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(uid)
}

/// Our effective uid.
pub fn own_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// The access rule: only our own user may attach (root included: it gets no exception).
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid
}

/// A bound control socket, not yet serving (binding needs no runtime and comes before the
/// engine starts, so that a second process on the same run is refused early).
/// Dropped without serving, it removes its socket.
pub struct Bound {
    listener: Option<std::os::unix::net::UnixListener>,
    path: PathBuf,
    run_id: String,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds `runs/<id>/control.sock` with mode 0600. A stale socket (nobody accepts on it: its
/// process died) is replaced; a live one is an error.
pub fn bind(run: &RunDir) -> io::Result<Bound> {
    use std::os::unix::fs::PermissionsExt;
    run.ensure_private()?;
    let path = run.socket();
    if std::fs::symlink_metadata(&path).is_ok() {
        if connect_std(&path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "run {} is live: another process serves {}",
                    run.id,
                    path.display()
                ),
            ));
        }
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed a stale control socket"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let tmp = run
        .path
        .join(format!(".control.sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = {
        let (_dir, short) = short_path(&tmp)?;
        std::os::unix::net::UnixListener::bind(short)?
    };
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    listener.set_nonblocking(true)?;
    Ok(Bound {
        listener: Some(listener),
        path,
        run_id: run.id.clone(),
    })
}

impl Bound {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts serving: events from `hub` out, commands in to `commands`. Must be called inside
    /// a tokio runtime.
    pub fn serve(
        mut self,
        hub: Arc<EventHub>,
        commands: mpsc::UnboundedSender<Command>,
        opts: ServeOptions,
    ) -> io::Result<Server> {
        let std_listener = self
            .listener
            .take()
            .ok_or_else(|| io::Error::other("socket already served"))?;
        let listener = tokio::net::UnixListener::from_std(std_listener)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let ctx = Arc::new(Ctx {
            hub,
            commands,
            opts,
            run_id: std::mem::take(&mut self.run_id),
        });
        let task = tokio::spawn(accept_loop(listener, ctx, shutdown_rx));
        Ok(Server {
            path: std::mem::take(&mut self.path),
            shutdown,
            task: Some(task),
            removed: false,
        })
    }
}

/// A serving control socket. [`Server::shutdown`] at the end of the run lets clients receive
/// the last events and removes the socket; dropping it removes the socket too.
pub struct Server {
    path: PathBuf,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    removed: bool,
}

impl Server {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, removes the socket, gives clients the shutdown grace to receive the
    /// events still due (the run's `Finished`), then closes them.
    pub async fn shutdown(mut self) {
        self.remove();
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn remove(&mut self) {
        if !self.removed {
            self.removed = true;
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), "cannot remove the control socket: {e}");
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.remove();
        let _ = self.shutdown.send(true);
    }
}

struct Ctx {
    hub: Arc<EventHub>,
    commands: mpsc::UnboundedSender<Command>,
    opts: ServeOptions,
    run_id: String,
}

async fn accept_loop(
    listener: tokio::net::UnixListener,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut clients = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    clients.spawn(client(stream, ctx.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: wait a little rather than spin.
                    tracing::warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
        }
    }
    drop(listener);
    // Clients saw the shutdown too: each sends what is due within the grace, then ends.
    let wait = ctx.opts.shutdown_grace + Duration::from_millis(500);
    let _ =
        tokio::time::timeout(wait, async { while clients.join_next().await.is_some() {} }).await;
    clients.abort_all();
}

/// Writes one JSON line and flushes, giving up after `limit`.
async fn send_line<W: AsyncWrite + Unpin, T: Serialize>(
    out: &mut W,
    value: &T,
    limit: Duration,
) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::from)?;
    line.push(b'\n');
    tokio::time::timeout(limit, async {
        out.write_all(&line).await?;
        out.flush().await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer is not reading"))?
}

fn error_line(code: ErrorCode, error: impl Into<String>) -> WireError {
    WireError {
        error: error.into(),
        code,
    }
}

/// One connection, from the credential check to the end.
async fn client(stream: UnixStream, ctx: Arc<Ctx>, shutdown: watch::Receiver<bool>) {
    use std::os::fd::AsRawFd;
    let short = Duration::from_secs(2);
    let peer = peer_uid(stream.as_raw_fd());
    let (read, write) = stream.into_split();
    let mut out = BufWriter::new(write);
    let me = own_uid();
    match peer {
        Ok(uid) if peer_allowed(uid, me) => {}
        Ok(uid) => {
            let msg = format!("refused: this run belongs to uid {me}, you are uid {uid}");
            let _ = send_line(&mut out, &error_line(ErrorCode::Forbidden, msg), short).await;
            ctx.hub.emit(Event::log(
                Level::Warn,
                format!("control socket: refused a connection from uid {uid}"),
            ));
            return;
        }
        Err(e) => {
            tracing::warn!("control socket: cannot read the peer's credentials: {e}");
            let _ = send_line(
                &mut out,
                &error_line(ErrorCode::Forbidden, "refused: unknown peer credentials"),
                short,
            )
            .await;
            return;
        }
    }
    let hello = Hello {
        hello: MAGIC.into(),
        protocol: PROTOCOL_VERSION,
        run_id: Some(ctx.run_id.clone()),
        pid: Some(std::process::id()),
        after: None,
    };
    if send_line(&mut out, &hello, short).await.is_err() {
        return;
    }
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    let first = tokio::time::timeout(
        ctx.opts.handshake_timeout,
        read_line_limited(&mut reader, &mut buf, ctx.opts.max_line),
    )
    .await;
    let theirs: Hello = match first {
        Err(_) => {
            let msg = format!(
                "no hello within {:.0} s",
                ctx.opts.handshake_timeout.as_secs_f64()
            );
            let _ = send_line(&mut out, &error_line(ErrorCode::Handshake, msg), short).await;
            return;
        }
        Ok(Ok(LineRead::Line)) => match serde_json::from_slice::<Hello>(&buf) {
            Ok(h) if h.hello == MAGIC => h,
            _ => {
                let msg = format!(
                    "expected a hello line first, e.g. {{\"hello\":\"wick\",\"protocol\":{PROTOCOL_VERSION}}}"
                );
                let _ = send_line(&mut out, &error_line(ErrorCode::Handshake, msg), short).await;
                return;
            }
        },
        Ok(Ok(LineRead::TooLong)) => {
            let msg = format!("hello longer than {} bytes", ctx.opts.max_line);
            let _ = send_line(&mut out, &error_line(ErrorCode::TooLong, msg), short).await;
            return;
        }
        Ok(Ok(LineRead::Eof)) | Ok(Err(_)) => return,
    };
    if theirs.protocol != PROTOCOL_VERSION {
        let msg = format!(
            "protocol mismatch: this run speaks version {PROTOCOL_VERSION}, the client {}; use the same wick version",
            theirs.protocol
        );
        let _ = send_line(&mut out, &error_line(ErrorCode::Version, msg), short).await;
        return;
    }
    // Never ask for a future the stream does not have yet.
    let after = match (theirs.after, ctx.hub.next_seq().checked_sub(1)) {
        (Some(a), Some(last)) => Some(a.min(last)),
        (Some(_), None) => None,
        (None, _) => None,
    };
    let events = hub::follow(&ctx.hub, after, ctx.opts.client_queue);
    let (reply_tx, reply_rx) = mpsc::channel(16);
    let reader_task = tokio::spawn(read_commands(
        reader,
        ctx.commands.clone(),
        reply_tx,
        ctx.opts.max_line,
    ));
    write_events(out, events, reply_rx, shutdown, &ctx).await;
    reader_task.abort();
}

/// Result of [`read_line_limited`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRead {
    /// A line is in the buffer (without its newline; a last line without one counts).
    Line,
    /// A line over the limit was read to its end and dropped.
    TooLong,
    /// End of stream.
    Eof,
}

/// Reads one line of at most `max` bytes into `buf` (cleared first). A longer line is consumed
/// to its newline without being kept, so memory stays bounded whatever the peer sends.
pub async fn read_line_limited<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if too_long {
                LineRead::TooLong
            } else if buf.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if done {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

/// Commands in: each good line goes to the engine, each bad one gets an error reply.
async fn read_commands(
    mut reader: BufReader<OwnedReadHalf>,
    commands: mpsc::UnboundedSender<Command>,
    replies: mpsc::Sender<WireError>,
    max: usize,
) {
    let mut buf = Vec::new();
    loop {
        let reply = match read_line_limited(&mut reader, &mut buf, max).await {
            Ok(LineRead::Eof) | Err(_) => return,
            Ok(LineRead::TooLong) => Some(error_line(
                ErrorCode::TooLong,
                format!("line longer than {max} bytes ignored"),
            )),
            Ok(LineRead::Line) => {
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<Command>(&buf) {
                    Ok(cmd) => {
                        tracing::info!(?cmd, "command from a socket client");
                        if commands.send(cmd).is_err() {
                            Some(error_line(ErrorCode::BadLine, "the engine has ended"))
                        } else {
                            None
                        }
                    }
                    Err(e) => Some(error_line(
                        ErrorCode::BadLine,
                        format!("not a command ({e}); e.g. {{\"cmd\":\"pause\"}}"),
                    )),
                }
            }
        };
        if let Some(reply) = reply {
            // A client that does not read its replies loses them; reading goes on.
            let _ = replies.try_send(reply);
        }
    }
}

/// Events (and error replies) out, until the run ends, the client goes, or it stalls.
async fn write_events(
    mut out: BufWriter<tokio::net::unix::OwnedWriteHalf>,
    mut events: mpsc::Receiver<Stamped>,
    mut replies: mpsc::Receiver<WireError>,
    mut shutdown: watch::Receiver<bool>,
    ctx: &Ctx,
) {
    let stall = ctx.opts.stall_timeout;
    let mut replies_open = true;
    let mut line = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            biased;
            reply = replies.recv(), if replies_open => match reply {
                Some(r) => {
                    if send_line(&mut out, &r, stall).await.is_err() {
                        return stalled(ctx);
                    }
                }
                None => replies_open = false,
            },
            ev = events.recv() => {
                let Some(mut ev) = ev else { return };
                // Write the whole burst, then flush once.
                let mut written = 0;
                loop {
                    let terminal = ev.event.is_terminal();
                    line.clear();
                    if serde_json::to_writer(&mut line, &ev).is_err() {
                        return;
                    }
                    line.push(b'\n');
                    match tokio::time::timeout(stall, out.write_all(&line)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return,
                        Err(_) => return stalled(ctx),
                    }
                    written += 1;
                    if terminal {
                        let _ = tokio::time::timeout(stall, out.flush()).await;
                        return;
                    }
                    match events.try_recv() {
                        Ok(next) if written < 512 => ev = next,
                        Ok(next) => {
                            ev = next;
                            written = 0;
                            match tokio::time::timeout(stall, out.flush()).await {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) => return,
                                Err(_) => return stalled(ctx),
                            }
                        }
                        Err(_) => break,
                    }
                }
                match tokio::time::timeout(stall, out.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => return stalled(ctx),
                }
            }
            _ = shutdown.changed() => {
                // The run is over: send what is still due (up to its terminal event) within the
                // grace, then close.
                let deadline = tokio::time::Instant::now() + ctx.opts.shutdown_grace;
                while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
                    let terminal = ev.event.is_terminal();
                    line.clear();
                    if serde_json::to_writer(&mut line, &ev).is_err() {
                        break;
                    }
                    line.push(b'\n');
                    let sent = tokio::time::timeout_at(deadline, out.write_all(&line)).await;
                    if !matches!(sent, Ok(Ok(()))) || terminal {
                        break;
                    }
                }
                let _ = tokio::time::timeout_at(deadline, out.flush()).await;
                return;
            }
        }
    }
}

fn stalled(ctx: &Ctx) {
    let msg = format!(
        "control socket: a client took nothing for {:.0} s and was disconnected (it can attach again)",
        ctx.opts.stall_timeout.as_secs_f64()
    );
    tracing::warn!("{msg}");
    ctx.hub.emit(Event::log(Level::Warn, msg));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_uid_may_attach() {
        assert!(peer_allowed(1000, 1000));
        assert!(!peer_allowed(65534, 1000));
        assert!(!peer_allowed(0, 1000), "root gets no exception");
        assert!(!peer_allowed(1000, 0));
    }

    #[test]
    fn peer_credentials_of_a_socket_pair_are_ours() {
        use std::os::fd::AsRawFd;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(peer_uid(a.as_raw_fd()).unwrap(), own_uid());
        assert_eq!(peer_uid(b.as_raw_fd()).unwrap(), own_uid());
        // Not a socket at all: an error, not a panic.
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(peer_uid(f.as_raw_fd()).is_err());
    }

    #[tokio::test]
    async fn lines_are_limited_and_long_ones_skipped_to_their_end() {
        let data = b"short\n0123456789abcdef\nok\nlast".to_vec();
        let mut r = BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line_limited(&mut r, &mut buf, 8).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"short");
        assert_eq!(
            read_line_limited(&mut r, &mut buf, 8).await.unwrap(),
            LineRead::TooLong
        );
        assert_eq!(
            read_line_limited(&mut r, &mut buf, 8).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"ok");
        assert_eq!(
            read_line_limited(&mut r, &mut buf, 8).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"last");
        assert_eq!(
            read_line_limited(&mut r, &mut buf, 8).await.unwrap(),
            LineRead::Eof
        );
    }

    #[test]
    fn server_lines_are_told_apart() {
        let hello = br#"{"hello":"wick","protocol":2,"run_id":"r","pid":3}"#;
        assert!(matches!(
            parse_server_line(hello),
            Ok(ServerLine::Hello(h)) if h.run_id.as_deref() == Some("r")
        ));
        let ev = br#"{"seq":3,"at_ms":10,"event":"paused","epoch":1,"step":2}"#;
        assert!(matches!(parse_server_line(ev), Ok(ServerLine::Event(e)) if e.seq == 3));
        let err = br#"{"error":"no","code":"bad_line"}"#;
        assert!(matches!(
            parse_server_line(err),
            Ok(ServerLine::Error(WireError {
                code: ErrorCode::BadLine,
                ..
            }))
        ));
        assert!(parse_server_line(b"[1]").is_err());
        assert!(parse_server_line(b"{\"x\":1}").is_err());
        assert_eq!(
            serde_json::to_string(&Hello::client(Some(41))).unwrap(),
            format!(r#"{{"hello":"wick","protocol":{PROTOCOL_VERSION},"after":41}}"#)
        );
    }
}
