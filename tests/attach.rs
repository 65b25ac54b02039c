//! The control socket in-process (no training): mode bits, the handshake, events out and
//! commands in, bad and oversize lines, another uid, and a client that never reads.

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::Client;
use tokio::sync::mpsc;
use wick::hub::EventHub;
use wick::protocol::{Command, Event, Level};
use wick::rundir::RunDir;
use wick::server::{self, ServeOptions, Server};

struct Fixture {
    _dir: tempfile::TempDir,
    run: RunDir,
    hub: Arc<EventHub>,
    rt: tokio::runtime::Runtime,
    commands: mpsc::UnboundedReceiver<Command>,
    server: Option<Server>,
}

fn fixture(opts: ServeOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create(dir.path(), "t").unwrap();
    let hub = EventHub::open(&run.events()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, commands) = mpsc::unbounded_channel();
    let server = {
        let _guard = rt.enter();
        server::bind(&run)
            .unwrap()
            .serve(hub.clone(), tx, opts)
            .unwrap()
    };
    Fixture {
        _dir: dir,
        run,
        hub,
        rt,
        commands,
        server: Some(server),
    }
}

impl Fixture {
    fn command(&mut self) -> Command {
        let commands = &mut self.commands;
        self.rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), commands.recv()).await
            })
            .expect("a command within 10 s")
            .expect("channel open")
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn handshake_history_live_events_commands_and_bad_lines() {
    let mut f = fixture(ServeOptions {
        handshake_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    });
    let socket = f.run.socket();
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(mode(&socket), 0o600, "socket mode");
    assert_eq!(mode(&f.run.path), 0o700, "run dir mode");
    f.hub
        .emit(Event::log(Level::Info, "before anyone attached"));

    let mut c = Client::connect(&socket, None);
    assert_eq!(c.hello["run_id"], f.run.id.as_str());
    assert_eq!(c.hello["pid"], std::process::id());
    // History first, then live events, in order.
    let first = c.event().unwrap();
    assert_eq!(first.seq, 0);
    f.hub.emit(Event::Resumed);
    assert_eq!(c.event().unwrap().seq, 1);

    // Malformed lines: an error reply each, the connection stays.
    for bad in [
        &b"this is not json\n"[..],
        b"{\"cmd\":\"fly\"}\n",
        b"{\"cmd\":\"set_threshold\",\"value\":\"high\"}\n",
        b"\xff\xfe\x00\n",
        b"[1,2,3]\n",
    ] {
        c.send_raw(bad);
        let reply = c.line().unwrap();
        assert_eq!(reply["code"], "bad_line", "{reply} for {bad:?}");
    }
    // An oversize line (100 KiB > 64 KiB): rejected, skipped to its end.
    let mut big = vec![b'x'; 100 * 1024];
    big.push(b'\n');
    c.send_raw(&big);
    let reply = c.line().unwrap();
    assert_eq!(reply["code"], "too_long", "{reply}");
    // Blank lines are ignored; good commands still go through, in order.
    c.send_raw(b"\n   \n");
    c.send(&Command::Pause);
    c.send(&Command::SetThreshold { value: 0.8 });
    assert_eq!(f.command(), Command::Pause);
    assert_eq!(f.command(), Command::SetThreshold { value: 0.8 });
    f.hub.emit(Event::Resumed);
    assert_eq!(c.event().unwrap().seq, 2);

    // A second client at the same time, asking only for what it lacks.
    let mut d = Client::connect(&socket, Some(1));
    assert_eq!(d.event().unwrap().seq, 2);
    f.hub.emit(Event::Resumed);
    assert_eq!(c.event().unwrap().seq, 3);
    assert_eq!(d.event().unwrap().seq, 3);

    // Another protocol version: an error line, then the connection closes.
    let mut v = Client::connect_raw(&socket).unwrap();
    v.send_raw(b"{\"hello\":\"wick\",\"protocol\":999}\n");
    let reply = v.line().unwrap();
    assert_eq!(reply["code"], "version", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("999"));
    assert!(v.line().is_none());

    // A command before the hello, and no hello at all.
    let mut w = Client::connect_raw(&socket).unwrap();
    w.send(&Command::Stop);
    assert_eq!(w.line().unwrap()["code"], "handshake");
    assert!(w.line().is_none());
    let mut n = Client::connect_raw(&socket).unwrap();
    let started = Instant::now();
    assert_eq!(n.line().unwrap()["code"], "handshake");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(n.line().is_none());
    // Neither reached the engine.
    assert!(f.commands.try_recv().is_err());

    // The end of the run: a terminal event reaches clients, then the socket is gone.
    f.hub.emit(Event::Failed {
        error: "test over".into(),
    });
    assert!(c.until("failed", |e| e.is_terminal()).event.is_terminal());
    let server = f.server.take().unwrap();
    f.rt.block_on(server.shutdown());
    assert!(!socket.exists(), "socket removed at the end");
    assert!(
        c.line().is_none(),
        "connection closed after the terminal event"
    );
    assert!(!server::is_live(&f.run));
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let f = fixture(ServeOptions::default());
    // A second server on the same run: refused while the first serves.
    let err = server::bind(&f.run).err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains("is live"), "{err}");
    drop(f.server);
    // A leftover socket file nobody serves (the process was killed): replaced.
    let stale = std::os::unix::net::UnixListener::bind(f.run.socket()).unwrap();
    drop(stale);
    assert!(f.run.socket().exists());
    let _guard = f.rt.enter();
    let bound = server::bind(&f.run).expect("stale socket replaced");
    assert_eq!(mode(bound.path()), 0o600);
}

#[test]
fn a_run_directory_deeper_than_a_socket_path_allows_still_serves() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("a-rather-long-directory-name-".repeat(4));
    let run = RunDir::create(&deep, "t").unwrap();
    assert!(run.socket().as_os_str().len() > 108, "longer than sun_path");
    let hub = EventHub::open(&run.events()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let _guard = rt.enter();
    let _server = server::bind(&run)
        .unwrap()
        .serve(hub, tx, ServeOptions::default())
        .unwrap();
    assert!(run.socket().exists());
    assert_eq!(mode(&run.socket()), 0o600);
    assert!(server::is_live(&run));
}

/// Runs `connect` to `socket` as `uid` in a forked child; returns what the server sent, or the
/// errno of a failed connect.
fn connect_as(uid: u32, socket: &Path) -> Result<String, i32> {
    use std::os::unix::ffi::OsStrExt;
    // Everything the child needs is prepared before fork: it only makes system calls.
    // SAFETY: sockaddr_un is plain old data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = socket.as_os_str().as_bytes();
    assert!(bytes.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let mut fds = [0; 2];
    // SAFETY: plain system calls on our own descriptors and stack buffers; the child only
    // makes async-signal-safe calls and leaves with _exit.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            libc::close(fds[0]);
            let out = fds[1];
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                libc::_exit(3);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let rc = libc::connect(
                fd,
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            if rc != 0 {
                let errno = *libc::__errno_location();
                let msg = [b'E', errno as u8];
                libc::write(out, msg.as_ptr().cast(), 2);
                libc::_exit(0);
            }
            let tv = libc::timeval {
                tv_sec: 10,
                tv_usec: 0,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            libc::write(out, b"D".as_ptr().cast(), 1);
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                libc::write(out, buf.as_ptr().cast(), n as usize);
            }
            libc::_exit(0);
        }
        libc::close(fds[1]);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                break;
            }
            got.extend_from_slice(&buf[..n as usize]);
        }
        libc::close(fds[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child could not switch to uid {uid} (status {status})"
        );
        match got.first() {
            Some(b'E') => Err(i32::from(got[1])),
            Some(b'D') => Ok(String::from_utf8_lossy(&got[1..]).into_owned()),
            _ => panic!("child said nothing"),
        }
    }
}

#[test]
fn another_user_cannot_reach_or_use_the_socket() {
    if server::own_uid() != 0 {
        eprintln!("skipped: switching to a second uid needs root");
        return;
    }
    let f = fixture(ServeOptions::default());
    let socket = f.run.socket();
    let parent = f.run.path.parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The owner-only run directory alone keeps uid 65534 away from the socket.
    assert_eq!(connect_as(65534, &socket), Err(libc::EACCES));
    // Even with the directory and the socket opened up, the peer-credential check refuses.
    std::fs::set_permissions(&f.run.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let said = connect_as(65534, &socket).expect("connects once the modes allow it");
    let line: serde_json::Value = serde_json::from_str(said.trim()).unwrap_or_else(|e| {
        panic!("one error line, got {said:?}: {e}");
    });
    assert_eq!(line["code"], "forbidden", "{said}");
    assert!(line.get("hello").is_none(), "no hello for a stranger");
    let events = support::events(&f.run.path);
    assert!(
        events.iter().any(|e| matches!(&e.event,
            Event::Log { level: Level::Warn, message } if message.contains("uid 65534"))),
        "the refusal is logged"
    );
    // Our own uid still gets in.
    let c = Client::connect(&socket, None);
    assert_eq!(c.hello["hello"], "wick");
}

#[test]
fn a_client_that_never_reads_never_slows_the_engine() {
    // The stall timeout applies to the reader too. At 2 s the reader once got fewer than N
    // events in a full-suite run on 2 cores (most likely cut off as stalled); 5 s leaves room.
    let f = fixture(ServeOptions {
        stall_timeout: Duration::from_secs(5),
        client_queue: 64,
        ..ServeOptions::default()
    });
    let socket = f.run.socket();
    // This one shakes hands and then never reads a byte.
    let mut stuck = Client::connect(&socket, None);
    // This one reads everything, on its own thread.
    let mut reader = Client::connect(&socket, None);
    const N: u64 = 20_000;
    let collector = std::thread::spawn(move || {
        let mut seqs = Vec::new();
        while let Some(e) = reader.event() {
            seqs.push(e.seq);
            if e.seq + 1 >= N {
                break;
            }
        }
        seqs
    });
    // ~20 MB of events: far beyond every buffer between the hub and the stuck client.
    let payload = "x".repeat(1000);
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..N {
        let t = Instant::now();
        f.hub
            .emit(Event::log(Level::Info, format!("{i} {payload}")));
        slowest = slowest.max(t.elapsed());
    }
    let total = start.elapsed();
    eprintln!("emitted {N} events in {total:?}, slowest emit {slowest:?}");
    // An emit that waited on the stuck client would hang for good (or for the 5 s stall).
    assert!(slowest < Duration::from_secs(1), "an emit took {slowest:?}");
    let seqs = collector.join().unwrap();
    let expected: Vec<u64> = (0..N).collect();
    assert_eq!(seqs.len(), expected.len(), "the reader got every event");
    assert!(seqs == expected, "in order, without gaps");
    // The stuck client is disconnected after the stall timeout, with a warning in the stream.
    support::wait_for("the stall warning", Duration::from_secs(30), || {
        support::events(&f.run.path).iter().any(|e| {
            matches!(&e.event, Event::Log { level: Level::Warn, message }
                if message.contains("was disconnected"))
        })
    });
    stuck.set_timeout(Duration::from_secs(30));
    let mut last = None;
    while let Some(v) = stuck.line() {
        if let Some(seq) = v.get("seq").and_then(|s| s.as_u64()) {
            assert_eq!(seq, last.map_or(0, |l: u64| l + 1), "a gap-free prefix");
            last = Some(seq);
        }
    }
    assert!(last.unwrap_or(0) < N - 1, "it was cut off before the end");
}
