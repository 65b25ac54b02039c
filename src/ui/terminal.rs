//! Terminal set-up and restore, the panic hook, and the dashboard's async run loop.
//!
//! The loop redraws only when something changed (an event, a key, a resize, a decoded
//! thumbnail). Changes from the event stream are drawn at most `fps` times a second (a burst of
//! events is folded completely, then drawn once); a key or a resize is drawn at once. When the terminal goes away (SIGHUP, a read or write error) the loop returns
//! [`DashboardExit::TerminalLost`] and nothing more is written to the terminal. Bytes written
//! to the terminal and frames drawn are counted in [`DashboardStats`] (for the bandwidth
//! benchmark, and logged at exit).

use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute};
use futures_core::Stream;
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::Terminal;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::protocol::{Command, Stamped};

use super::keymap::KeyConfig;
use super::palette::{detect_color_depth, ColorDepth};
use super::state::{App, Effect, Msg, ViewOptions};
use super::thumbs;
use super::view;
use super::wire::{scroll_regions_enabled, ScrollingBackend};

/// How the dashboard runs.
#[derive(Debug, Clone, Default)]
pub struct DashboardOptions {
    /// Most redraws per second (0 counts as 1).
    pub fps: u32,
    pub color: bool,
    pub ascii: bool,
    /// Colours the terminal has (see [`detect_options`]).
    pub color_depth: ColorDepth,
    /// Keys (the `[keys]` table of the config); validated again when the dashboard starts.
    pub keys: KeyConfig,
    /// Counters the caller can read while and after the dashboard runs.
    pub stats: DashboardStats,
}

impl DashboardOptions {
    /// Options from detected [`ViewOptions`], a frame-rate cap and keys.
    pub fn new(view: ViewOptions, fps: u32, keys: KeyConfig) -> Self {
        DashboardOptions {
            fps,
            color: view.color,
            ascii: view.ascii,
            color_depth: view.color_depth,
            keys,
            stats: DashboardStats::default(),
        }
    }

    /// The drawing options.
    pub fn view(&self) -> ViewOptions {
        ViewOptions {
            color: self.color,
            ascii: self.ascii,
            color_depth: self.color_depth,
        }
    }
}

/// What the dashboard sent to the terminal; clones share the counters.
#[derive(Debug, Clone, Default)]
pub struct DashboardStats {
    inner: Arc<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    bytes: AtomicU64,
    frames: AtomicU64,
    events: AtomicU64,
}

impl DashboardStats {
    /// Bytes written to the terminal (escape codes included), set-up and restore included.
    pub fn bytes_written(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// Frames drawn.
    pub fn frames(&self) -> u64 {
        self.inner.frames.load(Ordering::Relaxed)
    }

    /// Run events folded (replayed and live).
    pub fn events(&self) -> u64 {
        self.inner.events.load(Ordering::Relaxed)
    }

    fn add_bytes(&self, n: usize) {
        self.inner.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn add_frame(&self) {
        self.inner.frames.fetch_add(1, Ordering::Relaxed);
    }

    fn add_events(&self, n: u64) {
        self.inner.events.fetch_add(n, Ordering::Relaxed);
    }
}

/// A writer that counts the bytes it passes on (to measure what a dashboard costs on a slow
/// link).
#[derive(Debug)]
pub struct CountingWriter<W> {
    inner: W,
    stats: DashboardStats,
}

impl<W: Write> CountingWriter<W> {
    pub fn new(inner: W, stats: DashboardStats) -> Self {
        CountingWriter { inner, stats }
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.stats.add_bytes(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why the dashboard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DashboardExit {
    /// The user quit (after the run ended, or after asking it to stop and it ended).
    Quit,
    /// The user detached; training goes on.
    Detached,
    /// The terminal went away (SIGHUP, read or write failure); training goes on.
    TerminalLost,
}

/// Most events folded before a redraw gets a chance.
const MAX_BURST: usize = 10_000;

/// The terminal is in raw mode / the alternate screen and the panic hook must restore it.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// View options from the environment: colour off when `NO_COLOR` is set (non-empty), ASCII
/// when `--ascii` was given or the locale (`LC_ALL`, `LC_CTYPE`, `LANG`, first set wins) is not
/// UTF-8; colour depth from `COLORTERM` and `TERM` ([`detect_color_depth`]).
pub fn detect_options(no_color_env: bool, ascii_flag: bool) -> ViewOptions {
    let var = |k: &str| std::env::var(k).ok();
    let utf8 = locale_is_utf8(
        var("LC_ALL").as_deref(),
        var("LC_CTYPE").as_deref(),
        var("LANG").as_deref(),
    );
    ViewOptions {
        color: !no_color_env,
        ascii: ascii_flag || !utf8,
        color_depth: detect_color_depth(var("COLORTERM").as_deref(), var("TERM").as_deref()),
    }
}

/// Whether `NO_COLOR` is set to something non-empty (<https://no-color.org>).
pub fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Whether the effective locale is UTF-8: the first non-empty of `LC_ALL`, `LC_CTYPE`, `LANG`
/// names a UTF-8 codeset. Nothing set means the C locale: not UTF-8.
pub fn locale_is_utf8(lc_all: Option<&str>, lc_ctype: Option<&str>, lang: Option<&str>) -> bool {
    [lc_all, lc_ctype, lang]
        .into_iter()
        .flatten()
        .find(|s| !s.is_empty())
        .is_some_and(|s| {
            let s = s.to_ascii_lowercase();
            s.contains("utf-8") || s.contains("utf8")
        })
}

/// Install (once per process) a panic hook that restores the terminal and then runs the hook
/// that was there before, so the panic message lands on the normal screen.
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ACTIVE.swap(false, Ordering::SeqCst) {
                let _ = disable_raw_mode();
                let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
            }
            previous(info);
        }));
    });
}

/// Stdout that goes quiet once the terminal is known to be gone: writes after that (e.g. the
/// cursor restore in `Terminal`'s drop) are swallowed instead of sent to a dead terminal.
/// Bytes that reach the terminal are counted in the stats.
#[derive(Debug, Clone)]
pub struct TtyOut {
    dead: Arc<AtomicBool>,
    stats: DashboardStats,
}

impl TtyOut {
    fn new(stats: DashboardStats) -> Self {
        TtyOut {
            dead: Arc::new(AtomicBool::new(false)),
            stats,
        }
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

impl Write for TtyOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.is_dead() {
            return Ok(buf.len());
        }
        let n = io::stdout().write(buf).inspect_err(|_| self.kill())?;
        self.stats.add_bytes(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.is_dead() {
            return Ok(());
        }
        io::stdout().flush().inspect_err(|_| self.kill())
    }
}

/// The terminal the dashboard draws on: crossterm behind the scroll-region writer.
type Tty = Terminal<ScrollingBackend<CrosstermBackend<TtyOut>>>;

/// Raw mode, alternate screen, hidden cursor; the panic hook is installed first.
fn enter(out: &TtyOut) -> io::Result<Tty> {
    install_panic_hook();
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    let mut w = out.clone();
    let set_up = execute!(w, EnterAlternateScreen, cursor::Hide)
        .and_then(|()| {
            ScrollingBackend::new(CrosstermBackend::new(out.clone()), scroll_regions_enabled())
        })
        .and_then(Terminal::new);
    match set_up {
        Ok(t) => Ok(t),
        Err(e) => {
            leave(out);
            Err(e)
        }
    }
}

/// Undo [`enter`]. When the terminal is gone only raw mode is switched off (a terminal
/// attribute, not an escape code).
fn leave(out: &TtyOut) {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = disable_raw_mode();
    if !out.is_dead() {
        let mut w = out.clone();
        let _ = execute!(w, LeaveAlternateScreen, cursor::Show);
    }
}

/// Restores the terminal when dropped, including when the dashboard future is cancelled.
struct Session {
    out: TtyOut,
}

impl Drop for Session {
    fn drop(&mut self) {
        leave(&self.out);
    }
}

/// Run the dashboard until the user quits or detaches, or the terminal is lost.
///
/// `replay`: events already emitted (folded before the first draw). `events`: live events.
/// `commands`: where key presses go. SIGHUP is caught from here on (the process no longer dies
/// of it): training goes on when the terminal goes away. An invalid `opts.keys` is an
/// `InvalidInput` error (before the terminal is touched). `opts.stats` counts what was written;
/// the totals are also logged (tracing, info) at exit.
pub async fn run_dashboard(
    replay: Vec<Stamped>,
    mut events: mpsc::Receiver<Stamped>,
    commands: mpsc::UnboundedSender<Command>,
    opts: DashboardOptions,
) -> io::Result<DashboardExit> {
    let keys = opts
        .keys
        .keymap()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut app = App::with_keys(opts.view(), keys);
    let stats = opts.stats.clone();
    stats.add_events(replay.len() as u64);
    for ev in replay {
        app.update(Msg::Event(ev));
    }
    let lost = hangup()?;
    let out = TtyOut::new(stats.clone());
    let mut terminal = enter(&out)?;
    let session = Session { out: out.clone() };
    if let Ok(size) = terminal.size() {
        app.update(Msg::Resize(size.width, size.height));
    }
    let mut input = EventStream::new();
    let exit = run_loop(
        &mut terminal,
        &mut app,
        &mut input,
        lost,
        &mut events,
        &commands,
        opts.fps,
        &stats,
    )
    .await;
    if exit == DashboardExit::TerminalLost {
        out.kill();
    }
    drop(session);
    drop(terminal);
    tracing::info!(
        bytes = stats.bytes_written(),
        frames = stats.frames(),
        events = stats.events(),
        "dashboard closed ({exit:?})"
    );
    Ok(exit)
}

/// A future that resolves on SIGHUP (never, off Unix).
#[cfg(unix)]
fn hangup() -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        if hup.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    })
}

#[cfg(not(unix))]
fn hangup() -> io::Result<impl Future<Output = ()>> {
    Ok(std::future::pending::<()>())
}

async fn next_input<S>(input: &mut S) -> Option<io::Result<TermEvent>>
where
    S: Stream<Item = io::Result<TermEvent>> + Unpin,
{
    std::future::poll_fn(|cx| Pin::new(&mut *input).poll_next(cx)).await
}

/// The loop proper, over any backend and any stream of terminal events (tests drive it with
/// `TestBackend` and a channel). `lost` resolving means the terminal is gone.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_loop<B, S, L>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    input: &mut S,
    lost: L,
    events: &mut mpsc::Receiver<Stamped>,
    commands: &mpsc::UnboundedSender<Command>,
    fps: u32,
    stats: &DashboardStats,
) -> DashboardExit
where
    B: Backend,
    S: Stream<Item = io::Result<TermEvent>> + Unpin,
    L: Future<Output = ()>,
{
    let interval = Duration::from_secs_f64(1.0 / f64::from(fps.max(1)));
    let mut dirty = true;
    let mut next_draw = Instant::now();
    let mut events_open = true;
    // Decoded thumbnails come back here.
    let (thumb_tx, mut thumb_rx) = mpsc::unbounded_channel::<Msg>();
    tokio::pin!(lost);
    loop {
        if dirty && Instant::now() >= next_draw {
            if terminal.draw(|f| view::draw(f, app)).is_err() {
                return DashboardExit::TerminalLost;
            }
            stats.add_frame();
            dirty = false;
            next_draw = Instant::now() + interval;
        }
        let mut effects = Vec::new();
        tokio::select! {
            () = &mut lost => return DashboardExit::TerminalLost,
            ev = events.recv(), if events_open => {
                match ev {
                    Some(ev) => {
                        effects.extend(app.update(Msg::Event(ev)));
                        let mut n = 1;
                        // Fold the whole burst, then draw once.
                        for _ in 0..MAX_BURST {
                            match events.try_recv() {
                                Ok(ev) => {
                                    effects.extend(app.update(Msg::Event(ev)));
                                    n += 1;
                                }
                                Err(_) => break,
                            }
                        }
                        stats.add_events(n);
                    }
                    None => {
                        events_open = false;
                        effects.extend(app.update(Msg::StreamClosed));
                    }
                }
                dirty = true;
            }
            key = next_input(input) => match key {
                // A key or a resize is answered at once; only the event stream is held to
                // the frame-rate cap.
                Some(Ok(TermEvent::Key(k))) => {
                    effects.extend(app.update(Msg::Key(k)));
                    dirty = true;
                    next_draw = Instant::now();
                }
                Some(Ok(TermEvent::Resize(w, h))) => {
                    effects.extend(app.update(Msg::Resize(w, h)));
                    dirty = true;
                    next_draw = Instant::now();
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return DashboardExit::TerminalLost,
            },
            Some(msg) = thumb_rx.recv() => {
                effects.extend(app.update(msg));
                dirty = true;
            }
            () = sleep_until(next_draw), if dirty => {}
        }
        for effect in effects {
            match effect {
                Effect::Send(cmd) => {
                    if commands.send(cmd).is_err() {
                        tracing::debug!("dashboard: command channel closed");
                    }
                }
                Effect::Quit => return DashboardExit::Quit,
                Effect::Detach => return DashboardExit::Detached,
                Effect::LoadThumbnails(paths) => {
                    let tx = thumb_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let _ = tx.send(Msg::Thumbnails(thumbs::load_all(&paths)));
                    });
                }
            }
        }
    }
}
