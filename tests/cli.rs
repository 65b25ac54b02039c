//! End-to-end tests of the `wick` binary.

mod common;

use std::process::Command;

fn wick() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wick"))
}

#[test]
fn headless_run_exits_zero_with_the_summary() {
    let data = common::fashion_slice(20, 10);
    let runs = tempfile::tempdir().unwrap();
    let cfg = runs.path().join("tiny.toml");
    std::fs::write(
        &cfg,
        common::tiny_config(data.path(), &runs.path().join("runs"), "epochs = 2"),
    )
    .unwrap();
    let out = wick()
        .args(["train", "--headless"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.starts_with("summary: finished after 2 epochs"),
        "{stdout}"
    );
    for class in ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat"] {
        assert!(stdout.contains(class), "{class} in {stdout}");
    }
    assert!(stderr.contains("epoch   1/2"), "{stderr}");
    assert!(
        !stdout.contains('\x1b') && !stderr.contains('\x1b'),
        "no escape codes"
    );
    // The run directory holds what it should.
    let run = std::fs::read_dir(runs.path().join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for f in ["config.toml", "events.jsonl", "wick.log", "checkpoints"] {
        assert!(run.join(f).exists(), "{f} in {}", run.display());
    }
}

#[test]
fn bad_config_exits_2_naming_file_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[data]\ntrain = \"a\"\nval = \"b\"\n\n[train]\nepochs = 3\nmomentum = 1.5\n",
    )
    .unwrap();
    let out = wick()
        .args(["train", "--headless"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:7: field `train.momentum`"),
        "{stderr}"
    );

    std::fs::write(&cfg, "[data]\ntrain = \"a\"\nval = \"b\"\ncolour = 3\n").unwrap();
    let out = wick()
        .args(["train", "--headless"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:4:") && stderr.contains("colour"),
        "{stderr}"
    );
}

#[test]
fn missing_data_folder_is_named_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "runs_dir = \"{}\"\n[data]\ntrain = \"nowhere/train\"\nval = \"nowhere/val\"\n",
            dir.path().join("runs").display()
        ),
    )
    .unwrap();
    let out = wick()
        .args(["train", "--headless"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nowhere/train"), "{stderr}");
}

#[test]
fn cpu_build_asked_for_cuda_names_the_feature() {
    if cfg!(feature = "cuda") {
        return;
    }
    let data = common::fashion_slice(5, 5);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        common::tiny_config(data.path(), &dir.path().join("runs"), "epochs = 1"),
    )
    .unwrap();
    let out = wick()
        .args(["train", "--headless", "--device", "cuda:0"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--features cuda"), "{stderr}");
}
