//! Helpers shared by the integration tests: small real slices of the bundled data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the first `train` and `val` images of each class of the bundled Fashion-MNIST
/// target set into a temporary ImageFolder.
pub fn fashion_slice(train: usize, val: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = repo().join("data/fashion-target");
    for (split, n) in [("train", train), ("val", val)] {
        let classes = sorted_entries(&src.join(split));
        assert!(
            !classes.is_empty(),
            "bundled data missing under {}",
            src.display()
        );
        for class in classes {
            let name = class.file_name().expect("name");
            let out = dir.path().join(split).join(name);
            std::fs::create_dir_all(&out).expect("mkdir");
            for f in sorted_entries(&class).into_iter().take(n) {
                std::fs::copy(&f, out.join(f.file_name().expect("name"))).expect("copy");
            }
        }
    }
    dir
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A config for a small, fast run on a slice made by [`fashion_slice`]. `extra` goes under
/// `[train]` (and may open further tables); its keys override the defaults given here.
pub fn tiny_config(data: &Path, runs: &Path, extra: &str) -> String {
    let mut train = String::new();
    for (key, value) in [("epochs", "4"), ("batch_size", "32"), ("lr", "0.05")] {
        if !extra
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{key} =")))
        {
            train.push_str(&format!("{key} = {value}\n"));
        }
    }
    format!(
        r#"seed = 7
device = "cpu"
runs_dir = "{runs}"
name = "tiny"

[data]
train = "{data}/train"
val = "{data}/val"
channels = 1
image_size = 28
mean = [0.286]
std = [0.353]
augment = "flip_crop"
workers = 2

[model]
arch = "wick-cnn"

[train]
schedule = "cosine"
{train}{extra}
"#,
        runs = runs.display(),
        data = data.display(),
    )
}
