//! The run directory `runs/<run-id>/`: where a run keeps its resolved config, events,
//! log, checkpoints and pseudo-labels. Only the owner may enter it (the control socket lives
//! there).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::hub;
use crate::protocol::{Event, Stamped};

#[derive(Debug, Clone)]
pub struct RunDir {
    pub id: String,
    pub path: PathBuf,
}

impl RunDir {
    /// Creates a fresh `runs_dir/<name>-<UTC timestamp>` (suffixed when that exists already).
    pub fn create(runs_dir: &Path, name: &str) -> std::io::Result<RunDir> {
        std::fs::create_dir_all(runs_dir)?;
        let stamp = utc_stamp(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        let base = format!("{}-{stamp}", sanitise(name));
        let mut id = base.clone();
        let mut n = 2;
        loop {
            let path = runs_dir.join(&id);
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    let run = RunDir { id, path };
                    run.prepare()?;
                    return Ok(run);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    id = format!("{base}-{n}");
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens an existing run directory (for resume, attach, report).
    pub fn open(path: &Path) -> std::io::Result<RunDir> {
        if !path.join("config.toml").is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is not a wick run directory (no config.toml)",
                    path.display()
                ),
            ));
        }
        let id = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(RunDir {
            id,
            path: path.to_path_buf(),
        })
    }

    /// Finds a run from the command line: a path to a run directory, a run id under
    /// `runs_dir`, or an unambiguous prefix of one.
    pub fn resolve(arg: &str, runs_dir: &Path) -> std::io::Result<RunDir> {
        let as_path = Path::new(arg);
        if as_path.join("config.toml").is_file() {
            return RunDir::open(as_path);
        }
        let under = runs_dir.join(arg);
        if under.join("config.toml").is_file() {
            return RunDir::open(&under);
        }
        let matches: Vec<RunDir> = RunDir::list(runs_dir)
            .into_iter()
            .filter(|r| r.id.starts_with(arg))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().expect("one match")),
            0 => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no run `{arg}` (neither a run directory nor a run id under {})",
                    runs_dir.display()
                ),
            )),
            n => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "`{arg}` matches {n} runs under {}: {}",
                    runs_dir.display(),
                    matches
                        .iter()
                        .map(|r| r.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// The run directories under `runs_dir`, oldest first (by creation: the time their
    /// `config.toml` was written, which is never rewritten).
    pub fn list(runs_dir: &Path) -> Vec<RunDir> {
        let mut runs: Vec<(SystemTime, RunDir)> = std::fs::read_dir(runs_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let run = RunDir::open(&e.path()).ok()?;
                Some((run.created(), run))
            })
            .collect();
        runs.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        runs.into_iter().map(|(_, r)| r).collect()
    }

    /// When the run was created (its `config.toml` written).
    pub fn created(&self) -> SystemTime {
        std::fs::metadata(self.config())
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH)
    }

    fn prepare(&self) -> std::io::Result<()> {
        self.ensure_private()?;
        std::fs::create_dir_all(self.checkpoints())?;
        std::fs::create_dir_all(self.pseudo_labels())?;
        Ok(())
    }

    /// Makes the directory owner-only (0700) when it is not already: the control socket lives
    /// in it, and the directory is what keeps other users from reaching the socket at all.
    pub fn ensure_private(&self) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&self.path)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        Ok(())
    }

    /// Takes the run's lock (`.lock`, an advisory `flock`) for as long as the returned value
    /// lives, so that two processes never train the same run. The kernel drops the lock when
    /// the process dies, however it dies.
    pub fn lock(&self) -> std::io::Result<RunLock> {
        let path = self.path.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::WouldBlock {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        format!(
                            "run {} is live: another wick process is training it",
                            self.id
                        ),
                    ));
                }
                // Locks unsupported here (some network filesystems): carry on unlocked.
                tracing::warn!(path = %path.display(), "cannot lock the run: {err}");
            }
        }
        Ok(RunLock { _file: file })
    }

    pub fn config(&self) -> PathBuf {
        self.path.join("config.toml")
    }
    pub fn events(&self) -> PathBuf {
        self.path.join("events.jsonl")
    }
    pub fn log(&self) -> PathBuf {
        self.path.join("wick.log")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.path.join("checkpoints")
    }
    pub fn pseudo_labels(&self) -> PathBuf {
        self.path.join("pseudo_labels")
    }
    pub fn socket(&self) -> PathBuf {
        self.path.join("control.sock")
    }
    pub fn report(&self) -> PathBuf {
        self.path.join("report.md")
    }
}

/// Held while a process trains a run (see [`RunDir::lock`]).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Where a run stands, as `wick ls` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// A process serves the run's control socket.
    Live,
    /// Completed its plan.
    Finished,
    /// Ended on a `Stop` (resumable).
    Stopped,
    /// Ended with an error.
    Failed,
    /// No terminal event and nobody serving it: the process died (resumable).
    Crashed,
}

impl RunState {
    pub fn label(self) -> &'static str {
        match self {
            RunState::Live => "live",
            RunState::Finished => "finished",
            RunState::Stopped => "stopped",
            RunState::Failed => "failed",
            RunState::Crashed => "crashed",
        }
    }
}

/// What `events.jsonl` says about a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunProgress {
    /// Latest epoch completed.
    pub epoch: u32,
    /// Planned epochs (supervised + rounds x epochs per round), from the latest `RunStarted`.
    pub planned: u32,
    /// Best validation accuracy among the epochs that stand (re-done epochs replace the old).
    pub best_val_acc: Option<f64>,
    /// Events after the latest `RunStarted`: how the latest process ended, if it did.
    pub ended: Option<Ended>,
    /// The latest process was paused when it last spoke.
    pub paused: bool,
    pub resumes: u32,
    pub events: usize,
    /// `at_ms` of the last event.
    pub last_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Finished,
    Stopped,
    Failed,
}

impl RunProgress {
    /// Folds an event stream (a whole `events.jsonl`, resumes included).
    pub fn from_events(events: &[Stamped]) -> RunProgress {
        let mut p = RunProgress {
            events: events.len(),
            last_at_ms: events.last().map(|e| e.at_ms),
            ..RunProgress::default()
        };
        let mut acc: std::collections::BTreeMap<u32, f64> = Default::default();
        for e in events {
            match &e.event {
                Event::RunStarted {
                    epochs,
                    rounds,
                    epochs_per_round,
                    resumed,
                    ..
                } => {
                    p.planned = epochs + rounds * epochs_per_round;
                    p.ended = None;
                    p.paused = false;
                    if *resumed {
                        p.resumes += 1;
                    }
                }
                Event::EpochStarted { epoch, .. } => {
                    // A resume re-does this epoch and the ones after: their old results go.
                    acc.retain(|&k, _| k < *epoch);
                }
                Event::EpochFinished { epoch, val_acc, .. } => {
                    acc.insert(*epoch, *val_acc);
                }
                Event::Paused { .. } => p.paused = true,
                Event::Resumed => p.paused = false,
                Event::Finished { summary } => {
                    p.ended = Some(if summary.stopped {
                        Ended::Stopped
                    } else {
                        Ended::Finished
                    });
                }
                Event::Failed { .. } => p.ended = Some(Ended::Failed),
                _ => {}
            }
        }
        p.epoch = acc.keys().next_back().copied().unwrap_or(0);
        p.best_val_acc = acc.values().copied().reduce(f64::max);
        p
    }

    /// The state, given whether a process serves the run's socket. A run whose latest
    /// process has said it ended counts as ended (its socket may linger a moment).
    pub fn state(&self, live: bool) -> RunState {
        match self.ended {
            None if live => RunState::Live,
            Some(Ended::Finished) => RunState::Finished,
            Some(Ended::Stopped) => RunState::Stopped,
            Some(Ended::Failed) => RunState::Failed,
            None => RunState::Crashed,
        }
    }
}

/// Reads a run's `events.jsonl` for [`RunProgress`]; a missing file is an empty stream.
pub fn progress(run: &RunDir) -> std::io::Result<RunProgress> {
    match hub::read_events(&run.events()) {
        Ok(events) => Ok(RunProgress::from_events(&events)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RunProgress::default()),
        Err(e) => Err(e),
    }
}

fn sanitise(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() {
        "run".into()
    } else {
        s
    }
}

/// `YYYYMMDD-HHMMSS` in UTC for seconds since the Unix epoch.
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil conversion (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(1_796_000_000), "20261130-005320");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
    }

    #[test]
    fn create_makes_owner_only_dirs_and_unique_ids() {
        let dir = tempfile::tempdir().unwrap();
        let a = RunDir::create(dir.path(), "my run").unwrap();
        let b = RunDir::create(dir.path(), "my run").unwrap();
        assert_ne!(a.id, b.id);
        assert!(a.id.starts_with("my-run-"));
        assert!(a.checkpoints().is_dir() && a.pseudo_labels().is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&a.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        assert!(RunDir::open(&a.path).is_err(), "no config.toml yet");
    }
}
