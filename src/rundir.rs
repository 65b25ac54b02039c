//! The run directory `runs/<run-id>/`: where a run keeps its resolved config, events,
//! log, checkpoints and pseudo-labels. Only the owner may enter it (the control socket lives
//! there).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

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

    fn prepare(&self) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700))?;
        }
        std::fs::create_dir_all(self.checkpoints())?;
        std::fs::create_dir_all(self.pseudo_labels())?;
        Ok(())
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
