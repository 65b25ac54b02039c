//! Report generation from the recorded event fixture.

use std::path::{Path, PathBuf};

use super::*;
use crate::ui::palette::viridis;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events/synthetic-fmnist5-finished.jsonl")
}

/// A run directory holding a copy of the fixture as `events.jsonl`.
fn run_dir(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let mut body = std::fs::read_to_string(fixture()).expect("fixture");
    body.push_str(extra);
    std::fs::write(dir.path().join("events.jsonl"), body).expect("write");
    dir
}

#[test]
fn report_from_the_fixture_has_the_numbers_and_the_plots() {
    let dir = run_dir("");
    let path = write_report(dir.path()).expect("report");
    assert_eq!(path, dir.path().join("report.md"));
    let md = std::fs::read_to_string(&path).expect("read");
    for want in [
        "# Run report: 20250301-fmnist5-a7",
        "| status | finished |",
        "| model | resnet18 (imagenet) |",
        "| classes | 5: T-shirt_top, Trouser, Pullover, Dress, Coat |",
        "| epochs | 5 of 5 planned |",
        "| final val accuracy | 92.6% |",
        "| best val accuracy | 92.6% (epoch 5) |",
        "| val accuracy after supervised phase | 86.4% |",
        "2 of 2 planned; 10173 pseudo-labels in use, precision 96.2%",
        "| wall time | 7:11 |",
        "851 images/s",
        // Epoch 5: val loss 0.9 / 5.4, train acc 0.95.
        "| 5 (best) | self-training, round 2 | 0.1818 | 95.0% | 0.1667 | 92.6% | 70.0 | 1.2 |",
        // Per class, epoch 5, against the end of the supervised phase (epoch 3): Coat 160/200,
        // predicted 166 (160 + 5 + 1), F1 2*0.964*0.8/1.764; +8 points since 144/200.
        "| 4 | Coat | 200 | 80.0% | 96.4% | 0.874 | +8.0 pts |",
        "| Coat | T-shirt_top | 20 |",
        "| 2 | 0.95 | 20000 | 2050 | 10173 | 96.2% | 24.0 |",
        "| Trouser | 3817 | 99.5% |",
        "![Loss](plots/loss.png)",
        "![Confusion matrix](plots/confusion.png)",
        "0 = T-shirt_top, 1 = Trouser",
    ] {
        assert!(md.contains(want), "missing {want:?} in\n{md}");
    }
    for (name, _) in PLOTS {
        let p = dir.path().join("plots").join(name);
        assert!(p.exists(), "{name}");
        let (w, h) = image::image_dimensions(&p).expect("png");
        match name {
            "loss.png" | "accuracy.png" | "per_class_accuracy.png" => {
                assert_eq!((w, h), (900, 450), "{name}")
            }
            _ => assert!(w > 300 && h > 300, "{name}: {w}x{h}"),
        }
    }
    // No temporary files left behind.
    for d in [dir.path().to_path_buf(), dir.path().join("plots")] {
        for e in std::fs::read_dir(d).expect("dir").flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            assert!(!n.contains(".tmp-"), "{n}");
        }
    }
}

#[test]
fn confusion_png_cells_have_the_row_share_colour() {
    let dir = run_dir("");
    write_report(dir.path()).expect("report");
    let img = image::open(dir.path().join("plots/confusion.png"))
        .expect("png")
        .to_rgb8();
    // Cell geometry as drawn: 5 classes -> 64 px cells, 70 px from the top; the left margin is
    // the widest label ("0 T-shirt_top" at scale 2: 13 chars * 12 - 2 = 154) + 16 = 170.
    let cell = plot::heat_cell(5);
    assert_eq!(cell, 64);
    let (left, top) = (170u32, 70u32);
    // A corner pixel of cell (4, 1): Coat predicted as Trouser, 0 of 200 -> viridis(0).
    assert_eq!(
        img.get_pixel(left + cell + 2, top + 4 * cell + 2).0,
        viridis(0.0)
    );
    // Cell (4, 0): 20 of 200 -> viridis(sqrt(0.1)).
    assert_eq!(
        img.get_pixel(left + 2, top + 4 * cell + 2).0,
        viridis(0.1f64.sqrt())
    );
    // Cell (1, 1): 198 of 200.
    assert_eq!(
        img.get_pixel(left + cell + 2, top + cell + 2).0,
        viridis(0.99f64.sqrt())
    );
}

#[test]
fn a_torn_last_line_is_left_out_and_bad_lines_are_counted() {
    let dir = run_dir("{\"seq\":9999,\"at_ms\":1,\"event\":\"pau");
    let log = read_events(&dir.path().join("events.jsonl")).expect("read");
    assert!(log.torn_tail);
    assert!(log.bad_lines.is_empty());
    let md = std::fs::read_to_string(write_report(dir.path()).expect("report")).expect("md");
    assert!(md.contains("| final val accuracy | 92.6% |"), "{md}");
    assert!(md.contains("torn last line"), "{md}");

    // A garbled line in the middle is skipped and counted.
    let mut body = std::fs::read_to_string(fixture()).expect("fixture");
    let second = body.find('\n').map_or(0, |i| i + 1);
    body.insert_str(second, "not json\n");
    std::fs::write(dir.path().join("events.jsonl"), body).expect("write");
    let log = read_events(&dir.path().join("events.jsonl")).expect("read");
    assert_eq!(log.bad_lines, vec![2]);
    assert!(!log.torn_tail);
    write_report(dir.path()).expect("report");
}

#[test]
fn a_running_or_failed_run_gets_a_partial_report() {
    let events = crate::ui::test_support::running().events;
    let dir = tempfile::tempdir().expect("tmp");
    let body: String = events
        .iter()
        .map(|e| serde_json::to_string(e).expect("json") + "\n")
        .collect();
    std::fs::write(dir.path().join("events.jsonl"), body).expect("write");
    let md = std::fs::read_to_string(write_report(dir.path()).expect("report")).expect("md");
    assert!(md.contains("not finished"), "{md}");
    assert!(md.contains("| epochs | 3 of 5 planned |"), "{md}");
    assert!(dir.path().join("plots/loss.png").exists());
}

#[test]
fn missing_or_empty_event_files_are_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    assert!(matches!(
        write_report(dir.path()),
        Err(ReportError::Read { .. })
    ));
    std::fs::write(dir.path().join("events.jsonl"), "").expect("write");
    assert!(matches!(
        write_report(dir.path()),
        Err(ReportError::NoRun { .. })
    ));
    assert!(!dir.path().join("report.md").exists());
}

/// Writes the fixture's report to `$WICK_REPORT_OUT` (run with `--ignored`) to look at it.
#[test]
#[ignore]
fn write_fixture_report_for_inspection() {
    let Some(out) = std::env::var_os("WICK_REPORT_OUT") else {
        return;
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::copy(fixture(), out.join("events.jsonl")).expect("copy");
    write_report(&out).expect("report");
}
