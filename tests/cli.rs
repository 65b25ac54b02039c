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

/// Runs `cmd`, asserts it succeeded (showing its stderr if not) and returns its stdout.
fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One JSON value per line.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The first run directory under `runs`.
fn only_run(runs: &std::path::Path) -> std::path::PathBuf {
    let mut dirs: Vec<_> = std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "one run under {}", runs.display());
    dirs.pop().unwrap()
}

#[test]
fn a_finished_run_is_reported_exported_and_used_to_predict() {
    let data = common::fashion_slice(20, 4);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.toml");
    let runs = dir.path().join("runs");
    std::fs::write(&cfg, common::tiny_config(data.path(), &runs, "epochs = 2")).unwrap();
    stdout_of(wick().args(["train", "--headless"]).arg(&cfg));
    let run = only_run(&runs);

    // `wick report` rewrites the report (and its plots) from the events alone.
    let report = run.join("report.md");
    std::fs::remove_file(&report).unwrap();
    std::fs::remove_dir_all(run.join("plots")).unwrap();
    let stdout = stdout_of(wick().arg("report").arg(&run));
    assert!(
        stdout.starts_with("wrote ") && stdout.contains("report.md"),
        "{stdout}"
    );
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("| status | finished |"), "{md}");
    assert!(md.contains("| epochs | 2 of 2 planned |"), "{md}");
    for class in ["T-shirt_top", "Coat"] {
        assert!(md.contains(class), "{class} in {md}");
    }
    assert!(
        std::fs::read_dir(run.join("plots")).unwrap().count() > 0,
        "plots rewritten"
    );

    // `wick predict` on the run: class names from the run, probabilities summing to 1.
    let images: Vec<_> = ["Trouser", "Coat"]
        .iter()
        .map(|c| {
            std::fs::read_dir(data.path().join("val").join(c))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path()
        })
        .collect();
    // `wick predict --json` of the two images with `model` (a run or a weights file).
    let predict = |model: &std::path::Path| {
        json_lines(&stdout_of(
            wick()
                .args(["predict", "--json", "--top", "9"])
                .arg(model)
                .args(&images),
        ))
    };
    let from_run = predict(&run);
    assert_eq!(from_run.len(), 2);
    for (p, image) in from_run.iter().zip(&images) {
        assert_eq!(p["image"].as_str().unwrap(), image.display().to_string());
        let top = p["top"].as_array().unwrap();
        assert_eq!(top.len(), 5, "all 5 classes (fewer than --top)");
        let sum: f64 = top.iter().map(|r| r["probability"].as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-3, "probabilities sum to {sum}");
        assert!(top.iter().any(|r| r["class"] == "Trouser"));
    }

    // `wick export` writes plain weights with a model card: `predict` on the file alone
    // gives the run's class names and the very same logits (same normalisation, size, arch).
    let weights = dir.path().join("model.safetensors");
    let stdout = stdout_of(wick().arg("export").arg(&run).arg(&weights));
    assert!(stdout.starts_with("wrote "), "{stdout}");
    let from_file = predict(&weights);
    assert_eq!(from_file.len(), 2);
    for (a, b) in from_run.iter().zip(&from_file) {
        assert_eq!(a["logits"], b["logits"]);
        assert_eq!(a["top"], b["top"]);
    }

    // Flags that describe another model leave the card out: the other model's defaults.
    let out = wick()
        .args(["predict", "--json", "--arch", "wick-cnn", "--channels", "3"])
        .arg(&weights)
        .arg(&images[0])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a 1-channel model cannot take 3 channels"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("features.0.conv.weight"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn report_on_a_folder_without_events_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = wick().arg("report").arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&dir.path().join("events.jsonl").display().to_string()),
        "{stderr}"
    );
}
