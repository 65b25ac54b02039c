//! Loader rows of `wick bench` (`--filter loader`): wick's data loader against PIL +
//! torchvision on the same JPEG files.
//!
//! The pipeline is the usual ImageNet training one: decode, RandomResizedCrop(224) (scale
//! 0.08–1, ratio 3/4–4/3, bilinear), horizontal flip, normalised CHW floats, in batches of 32.
//! wick: [`crate::data::Loader`] with 1 and with 2 worker threads, decoded-image cache off.
//! PyTorch column: `bench/loader_reference.py` (one process, one thread, a `num_workers=0`
//! DataLoader loop).
//!
//! Two units per side: wall images/s, and images per CPU-second (the process's user + system
//! time), i.e. images/s per core. On a shared machine the second one is the fair comparison:
//! it does not depend on how much of a core the process got.
//!
//! The files: every JPEG under `$WICK_LOADER_JPEGS` (default `/tmp/wick-loader-jpegs`),
//! written by `bench/loader_images.py`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

use super::{BenchError, BenchOptions, Measure, Row, Unit};
use crate::config::Augment;
use crate::data::{AugmentKind, Loader, Preprocess, IMAGENET_MEAN, IMAGENET_STD};

/// Environment variable naming the JPEG folder.
pub const JPEG_DIR_ENV: &str = "WICK_LOADER_JPEGS";
/// Input size of the loader rows.
pub const SIZE: usize = 224;
const BATCH: usize = 32;

/// The row names, in table order.
pub const ROWS: [&str; 3] = [
    "loader-rrc224-wall",
    "loader-rrc224-cpu",
    "loader-rrc224-2w",
];

/// The JPEG folder: `$WICK_LOADER_JPEGS` or `/tmp/wick-loader-jpegs`.
pub fn jpeg_dir() -> PathBuf {
    std::env::var_os(JPEG_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/wick-loader-jpegs"))
}

/// Every `.jpg`/`.jpeg` under `dir` (recursively), sorted.
pub fn jpeg_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// User + system CPU seconds of this process so far.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// One pass of wick's loader over `paths`: (wall images/s, images per CPU-second).
pub fn wick_pass(paths: &Arc<Vec<PathBuf>>, workers: usize, epoch: u64) -> (f64, f64) {
    let pre = Preprocess {
        channels: 3,
        size: SIZE,
        mean: IMAGENET_MEAN.to_vec(),
        std: IMAGENET_STD.to_vec(),
    };
    let loader = Loader::new(Arc::clone(paths), pre, workers, 0);
    let order: Vec<usize> = (0..paths.len()).collect();
    let (t0, c0) = (Instant::now(), process_cpu_seconds());
    let mut n = 0usize;
    for b in loader.batches(
        order,
        BATCH,
        AugmentKind::Train(Augment::RandomResizedCrop),
        0,
        epoch,
    ) {
        n += b.indices.len();
        std::hint::black_box(&b.pixels);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - c0;
    (n as f64 / wall, n as f64 / cpu.max(1e-9))
}

fn measure(samples: Vec<f64>) -> Measure {
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    Measure {
        value: sorted[sorted.len() / 2],
        samples,
        peak_rss_bytes: None,
    }
}

/// wick's loader, `reps` passes after `warmup`: (wall, per-CPU-second) measures.
pub fn wick_measures(
    paths: &Arc<Vec<PathBuf>>,
    workers: usize,
    warmup: usize,
    reps: usize,
) -> (Measure, Measure) {
    for e in 0..warmup {
        wick_pass(paths, workers, e as u64);
    }
    let (wall, cpu): (Vec<f64>, Vec<f64>) = (0..reps.max(1))
        .map(|r| wick_pass(paths, workers, (warmup + r) as u64))
        .unzip();
    (measure(wall), measure(cpu))
}

#[derive(Deserialize)]
struct ReferenceLine {
    wall: Vec<f64>,
    cpu: Vec<f64>,
    versions: String,
}

/// Runs `bench/loader_reference.py` (next to `reference`'s script) on `dir`: (wall, per
/// CPU-second, versions).
fn reference_measures(
    python: &Path,
    script: &Path,
    dir: &Path,
    opts: &BenchOptions,
) -> Result<(Measure, Measure, String), BenchError> {
    let out = Command::new(python)
        .arg(script)
        .arg(dir)
        .arg(opts.repeats.max(1).to_string())
        .arg(opts.warmup.to_string())
        .output()
        .map_err(|e| BenchError::Reference(format!("{}: {e}", python.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    match line {
        Some(l) if out.status.success() => {
            let r: ReferenceLine = serde_json::from_str(l)
                .map_err(|e| BenchError::Reference(format!("bad loader reference line: {e}")))?;
            Ok((measure(r.wall), measure(r.cpu), r.versions))
        }
        _ => Err(BenchError::Reference(format!(
            "{} exited with {}: {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ))),
    }
}

/// The loader rows `opts` asks for (see [`ROWS`]); problems (no JPEGs, no PyTorch) become
/// notes.
pub fn rows(opts: &BenchOptions, notes: &mut Vec<String>) -> Vec<Row> {
    let wanted: Vec<&str> = ROWS.iter().copied().filter(|r| opts.wants(r)).collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let dir = jpeg_dir();
    let mut files = jpeg_files(&dir);
    if files.is_empty() {
        notes.push(format!(
            "loader rows skipped: no JPEGs under {} (write them with bench/loader_images.py, \
             or set {JPEG_DIR_ENV})",
            dir.display()
        ));
        return Vec::new();
    }
    if opts.quick {
        files.truncate(8);
    }
    let count = files.len();
    let paths = Arc::new(files);
    // PyTorch first, then wick, as the other rows.
    let mut torch = None;
    if let Some(r) = &opts.reference {
        let script = r.script.with_file_name("loader_reference.py");
        match reference_measures(&r.python, &script, &dir, opts) {
            Ok((wall, cpu, versions)) => {
                notes.push(format!("loader rows' PyTorch column: {versions}"));
                torch = Some((wall, cpu));
            }
            Err(e) => notes.push(format!("loader rows' PyTorch column skipped: {e}")),
        }
    }
    if opts.quick && torch.is_some() {
        notes.push("loader rows in quick mode: the PyTorch column used every JPEG".into());
    }
    let (w1_wall, w1_cpu) = wick_measures(&paths, 1, opts.warmup, opts.repeats);
    let what = format!("{count} JPEGs from {}", dir.display());
    let mut out = Vec::new();
    let row = |name: &str, description: String, torch: Option<Measure>, wick: Measure| Row {
        name: name.into(),
        description,
        unit: Unit::ImagesPerSecond,
        torch,
        candle: None,
        wick: Some(wick),
        flops: None,
    };
    if wanted.contains(&ROWS[0]) {
        out.push(row(
            ROWS[0],
            format!("decode + RandomResizedCrop(224) + flip + normalise, 1 worker vs 1 PIL process, wall img/s; {what}"),
            torch.as_ref().map(|t| t.0.clone()),
            w1_wall,
        ));
    }
    if wanted.contains(&ROWS[1]) {
        out.push(row(
            ROWS[1],
            "the same, images per CPU-second of the process (per core)".into(),
            torch.as_ref().map(|t| t.1.clone()),
            w1_cpu,
        ));
    }
    if wanted.contains(&ROWS[2]) {
        let (w2_wall, _) = wick_measures(&paths, 2, opts.warmup, opts.repeats);
        out.push(row(
            ROWS[2],
            "the same with 2 wick workers, wall img/s (PyTorch column: 1 process)".into(),
            torch.as_ref().map(|t| t.0.clone()),
            w2_wall,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wick_pass_counts_every_image() {
        let dir = std::env::temp_dir().join(format!("wick-loader-bench-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        for i in 0..3 {
            let img = image::RgbImage::from_fn(120 + i * 10, 90, |x, y| {
                image::Rgb([x as u8, y as u8, (x + y) as u8])
            });
            img.save(dir.join(format!("a/{i}.JPG"))).unwrap();
        }
        std::fs::write(dir.join("a/notes.txt"), "not an image").unwrap();
        let files = jpeg_files(&dir);
        assert_eq!(files.len(), 3);
        let (wall, cpu) = wick_pass(&Arc::new(files), 1, 0);
        assert!(wall > 0.0 && cpu > 0.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
