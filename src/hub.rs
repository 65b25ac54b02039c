//! The event hub: numbers and timestamps every engine event, appends it to the run's
//! `events.jsonl`, and fans it out to live subscribers (the in-process dashboard, socket
//! clients) without ever waiting on them.
//!
//! A subscriber that falls behind the bounded broadcast buffer is not a problem for training:
//! [`follow`] notices the lag and catches up by re-reading `events.jsonl`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc};

use crate::protocol::{Event, Stamped};

/// Live events kept for subscribers that are a little behind.
const LIVE_BUFFER: usize = 4096;

pub struct EventHub {
    path: PathBuf,
    inner: Mutex<Inner>,
    live: broadcast::Sender<Arc<Stamped>>,
}

struct Inner {
    next_seq: u64,
    file: BufWriter<File>,
    /// Set when writing `events.jsonl` failed once; reported once, then events stay live-only.
    write_failed: bool,
}

impl EventHub {
    /// Opens (appending to) the events file; sequence numbers continue after those already in it.
    /// A torn last line (the previous process died while writing it) is cut off first, so that
    /// the events appended now start on a line of their own.
    pub fn open(path: &Path) -> std::io::Result<Arc<EventHub>> {
        cut_torn_tail(path)?;
        let next_seq = match read_events(path) {
            Ok(events) => events.last().map(|e| e.seq + 1).unwrap_or(0),
            Err(_) => 0,
        };
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Ok(Arc::new(EventHub {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                next_seq,
                file: BufWriter::new(file),
                write_failed: false,
            }),
            live,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records and publishes one event. Never blocks on subscribers.
    pub fn emit(&self, event: Event) -> Stamped {
        let mut inner = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let stamped = Stamped {
            seq: inner.next_seq,
            at_ms: now_ms(),
            event,
        };
        inner.next_seq += 1;
        if !inner.write_failed {
            let written = serde_json::to_writer(&mut inner.file, &stamped)
                .map_err(std::io::Error::from)
                .and_then(|_| inner.file.write_all(b"\n"))
                .and_then(|_| inner.file.flush());
            if let Err(e) = written {
                inner.write_failed = true;
                tracing::error!(path = %self.path.display(), "cannot write events: {e}");
            }
        }
        // Sent while holding the lock so that live order equals file order.
        let _ = self.live.send(Arc::new(stamped.clone()));
        stamped
    }

    /// A receiver of live events from now on. Pair with [`read_events`] (or use [`follow`]) to
    /// also see what came before.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Stamped>> {
        self.live.subscribe()
    }

    /// Number of events emitted so far (the next sequence number).
    pub fn next_seq(&self) -> u64 {
        match self.inner.lock() {
            Ok(g) => g.next_seq,
            Err(p) => p.into_inner().next_seq,
        }
    }
}

/// Truncates `path` after its last newline when it does not end with one.
fn cut_torn_tail(path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    // Scan backwards in blocks for the last newline.
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block[..n])?;
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                tracing::warn!(path = %path.display(), bytes = len - keep, "cut a torn last event line");
                file.set_len(keep)?;
            }
            return Ok(());
        }
        end = start;
    }
    if len > 0 {
        tracing::warn!(path = %path.display(), "events file holds no complete line: emptied");
        file.set_len(0)?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads every complete event of an `events.jsonl`. A torn last line (the process died while
/// writing it) is skipped; a malformed line elsewhere is an error naming the file and line.
pub fn read_events(path: &Path) -> std::io::Result<Vec<Stamped>> {
    let reader = BufReader::new(File::open(path)?);
    let lines: Vec<String> = reader.lines().collect::<Result<_, _>>()?;
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Stamped>(line) {
            Ok(e) => events.push(e),
            Err(_) if i + 1 == lines.len() => break,
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}:{}: bad event line: {e}", path.display(), i + 1),
                ))
            }
        }
    }
    Ok(events)
}

/// Turns the hub's live broadcast into an ordered, gap-free stream for one consumer, starting
/// after `after` (the last sequence number the consumer already has, if any). When the consumer
/// lags behind the broadcast buffer, the missing events are re-read from `events.jsonl`.
/// Must be called inside a tokio runtime.
pub fn follow(hub: &Arc<EventHub>, after: Option<u64>, capacity: usize) -> mpsc::Receiver<Stamped> {
    let mut live = hub.subscribe();
    let path = hub.path().to_path_buf();
    let (tx, rx) = mpsc::channel(capacity);
    tokio::spawn(async move {
        let mut last = after;
        let newer = |e: &Stamped, last: Option<u64>| last.is_none_or(|l| e.seq > l);
        // Catch up from the file first: covers events emitted before we subscribed.
        if let Ok(past) = read_events(&path) {
            for e in past {
                if !newer(&e, last) {
                    continue;
                }
                last = Some(e.seq);
                if tx.send(e).await.is_err() {
                    return;
                }
            }
        }
        loop {
            match live.recv().await {
                Ok(e) => {
                    if newer(&e, last) {
                        last = Some(e.seq);
                        if tx.send((*e).clone()).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Ok(past) = read_events(&path) {
                        for e in past {
                            if !newer(&e, last) {
                                continue;
                            }
                            last = Some(e.seq);
                            if tx.send(e).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Level;

    #[test]
    fn events_are_numbered_written_and_continue_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let hub = EventHub::open(&path).unwrap();
        hub.emit(Event::Resumed);
        hub.emit(Event::log(Level::Info, "hello"));
        drop(hub);
        let hub = EventHub::open(&path).unwrap();
        let s = hub.emit(Event::Resumed);
        assert_eq!(s.seq, 2);
        let all = read_events(&path).unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn reopening_after_a_torn_line_appends_on_a_fresh_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let hub = EventHub::open(&path).unwrap();
        hub.emit(Event::Resumed);
        drop(hub);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":1,"at_ms":3,"eve"#).unwrap();
        drop(f);
        let hub = EventHub::open(&path).unwrap();
        assert_eq!(hub.emit(Event::Resumed).seq, 1);
        let all = read_events(&path).unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn torn_last_line_is_skipped_but_bad_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let hub = EventHub::open(&path).unwrap();
        hub.emit(Event::Resumed);
        drop(hub);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":1,"at_ms":3,"eve"#).unwrap();
        assert_eq!(read_events(&path).unwrap().len(), 1);
        f.write_all(b"\n{\"seq\":2}\n").unwrap();
        let err = read_events(&path).unwrap_err().to_string();
        assert!(err.contains("events.jsonl:2"), "{err}");
    }

    #[tokio::test]
    async fn a_lagging_follower_catches_up_from_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let hub = EventHub::open(&path).unwrap();
        hub.emit(Event::Resumed); // before anyone follows: comes from the file
        let mut rx = follow(&hub, None, 8);
        tokio::task::yield_now().await;
        // Far more than the broadcast buffer while the follower is not reading.
        for _ in 0..(LIVE_BUFFER + 100) {
            hub.emit(Event::Resumed);
        }
        let mut seqs = Vec::new();
        while seqs.len() < LIVE_BUFFER + 101 {
            let e = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .expect("follower delivers")
                .expect("open");
            seqs.push(e.seq);
        }
        let expected: Vec<u64> = (0..(LIVE_BUFFER as u64 + 101)).collect();
        assert_eq!(seqs, expected);
    }
}
