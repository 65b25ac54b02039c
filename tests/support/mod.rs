//! Helpers for the attach/resume tests: a plain std client of the control socket (so the wire
//! format is checked from outside), waiting, and reading checkpoints back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use wick::protocol::{Event, Stamped};

pub fn wick() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wick"))
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The only run directory under `runs`.
pub fn only_run(runs: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(dirs.len(), 1, "one run under {}: {dirs:?}", runs.display());
    dirs.remove(0)
}

pub fn events(run: &Path) -> Vec<Stamped> {
    wick::hub::read_events(&run.join("events.jsonl")).expect("events.jsonl reads back")
}

pub fn count(events: &[Stamped], pred: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| pred(&e.event)).count()
}

/// A raw client of a run's control socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    pub hello: Value,
}

impl Client {
    /// Connects and reads the server's hello (no reply sent yet).
    pub fn connect_raw(socket: &Path) -> std::io::Result<Client> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let writer = stream.try_clone()?;
        let mut c = Client {
            reader: BufReader::new(stream),
            writer,
            hello: Value::Null,
        };
        c.hello = c.line().expect("server hello");
        Ok(c)
    }

    /// Connects and shakes hands asking for the events after `after`.
    pub fn connect(socket: &Path, after: Option<u64>) -> Client {
        let mut c = Client::connect_raw(socket).expect("connect");
        assert_eq!(c.hello["hello"], "wick", "{}", c.hello);
        assert_eq!(c.hello["protocol"], wick::protocol::PROTOCOL_VERSION);
        let mut hello =
            serde_json::json!({"hello": "wick", "protocol": wick::protocol::PROTOCOL_VERSION});
        if let Some(a) = after {
            hello["after"] = a.into();
        }
        c.send_raw(format!("{hello}\n").as_bytes());
        c
    }

    pub fn set_timeout(&self, t: Duration) {
        self.writer.set_read_timeout(Some(t)).unwrap();
    }

    /// The next line as JSON; `None` at end of stream.
    pub fn line(&mut self) -> Option<Value> {
        let mut s = String::new();
        match self.reader.read_line(&mut s) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&s).unwrap_or_else(|e| panic!("bad line {s}: {e}"))),
            Err(e) => panic!("reading the socket: {e}"),
        }
    }

    /// The next line, which must be an event.
    pub fn event(&mut self) -> Option<Stamped> {
        let v = self.line()?;
        assert!(v.get("event").is_some(), "an event, got {v}");
        Some(serde_json::from_value(v).expect("a Stamped event"))
    }

    /// Events until one matches `pred` (returned); panics if the stream ends first.
    pub fn until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Stamped {
        loop {
            let e = self
                .event()
                .unwrap_or_else(|| panic!("stream ended before {what}"));
            if pred(&e.event) {
                return e;
            }
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to the socket");
    }

    pub fn send(&mut self, cmd: &wick::protocol::Command) {
        let line = serde_json::to_string(cmd).unwrap();
        self.send_raw(format!("{line}\n").as_bytes());
    }
}

/// Every tensor of a checkpoint file as raw bytes, by name.
pub fn tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).expect("checkpoint");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.shape().to_vec(), view.data().to_vec())))
        .collect()
}

/// The newest periodic checkpoint of a run.
pub fn newest_checkpoint(run: &Path) -> PathBuf {
    wick::engine::checkpoint::list_steps(&run.join("checkpoints"))
        .into_iter()
        .next()
        .expect("a checkpoint")
}

/// A child process killed (SIGKILL) and reaped when dropped, so that a failing test leaves no
/// training process behind.
pub struct Guard(Option<std::process::Child>);

impl Guard {
    pub fn new(child: std::process::Child) -> Guard {
        Guard(Some(child))
    }

    pub fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("child")
    }

    /// Hands the child over (no kill on drop any more).
    pub fn take(mut self) -> std::process::Child {
        self.0.take().expect("child")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A process that is not our child (a background run), killed when dropped.
pub struct PidGuard(pub Option<i32>);

impl Drop for PidGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: a plain kill(2) of a process this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}
