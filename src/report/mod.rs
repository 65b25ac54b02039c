//! End-of-run report: `runs/<id>/report.md` with the summary table, per-epoch and per-class
//! results, the pseudo-label rounds, and PNG plots in `plots/` (loss, accuracy, per-class
//! accuracy over the epochs, confusion matrix).
//!
//! Built from the run's `events.jsonl` alone, folded with the dashboard's own state
//! ([`crate::ui::App`], no terminal involved), so it can be regenerated for any run at any time
//! (`wick report RUN`). Files are written to a temporary name and renamed.

mod font;
pub mod plot;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::protocol::{Phase, Stamped};
use crate::ui::glyphs::{duration, pct};
use crate::ui::state::{phase_round, App, RunState, ViewOptions};

use plot::{confusion_heat_map, series_color, LineChart, Series};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no run in it (no readable run_started event)")]
    NoRun { path: PathBuf },
    #[error("cannot encode {path}: {message}")]
    Encode { path: PathBuf, message: String },
}

/// The events of a run, as read from `events.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventLog {
    pub events: Vec<Stamped>,
    /// Lines that could not be parsed (not counting a torn last line), with their numbers.
    pub bad_lines: Vec<usize>,
    /// The last line was cut short (the run is still writing, or died mid-write).
    pub torn_tail: bool,
}

/// Read `events.jsonl`: one `Stamped` event per line. A last line without its newline that
/// does not parse is a torn write and is left out; other unreadable lines are skipped and
/// counted.
pub fn read_events(path: &Path) -> Result<EventLog, ReportError> {
    let body = std::fs::read(path).map_err(|source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let body = String::from_utf8_lossy(&body);
    let ends_clean = body.ends_with('\n');
    let lines: Vec<&str> = body.lines().collect();
    let mut log = EventLog {
        events: Vec::new(),
        bad_lines: Vec::new(),
        torn_tail: false,
    };
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Stamped>(line) {
            Ok(e) => log.events.push(e),
            Err(_) if i + 1 == lines.len() && !ends_clean => log.torn_tail = true,
            Err(_) => log.bad_lines.push(i + 1),
        }
    }
    Ok(log)
}

/// The report's plots: file name (under `plots/`), what it shows (for the markdown).
pub const PLOTS: [(&str, &str); 4] = [
    ("loss.png", "Loss"),
    ("accuracy.png", "Accuracy"),
    ("per_class_accuracy.png", "Per-class accuracy"),
    ("confusion.png", "Confusion matrix"),
];

/// Write `report.md` and `plots/*.png` for the run in `run_dir` (from `run_dir/events.jsonl`);
/// returns the path of `report.md`.
pub fn write_report(run_dir: &Path) -> Result<PathBuf, ReportError> {
    let events_path = run_dir.join("events.jsonl");
    let log = read_events(&events_path)?;
    let mut app = App::new(ViewOptions::default());
    app.fold(&log.events);
    if app.run.is_none() {
        return Err(ReportError::NoRun { path: events_path });
    }
    let plots_dir = run_dir.join("plots");
    std::fs::create_dir_all(&plots_dir).map_err(|source| ReportError::Write {
        path: plots_dir.clone(),
        source,
    })?;
    let images = plots(&app);
    for (name, img) in &images {
        let path = plots_dir.join(name);
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| ReportError::Encode {
                path: path.clone(),
                message: e.to_string(),
            })?;
        write_atomic(&path, &png)?;
    }
    let drawn: Vec<&str> = images.iter().map(|(n, _)| *n).collect();
    let md = markdown(&app, &log, &drawn);
    let path = run_dir.join("report.md");
    write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// Write to a temporary file next to `path`, flush it to disk, then rename it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let name = path
        .file_name()
        .map_or("out".into(), |n| n.to_string_lossy().to_string());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// The x position of each epoch's end on the batch-loss axis (index of its last loss point).
fn epoch_ends(app: &App) -> Vec<(u32, f64)> {
    let pts = app.losses.points();
    let mut ends: Vec<(u32, f64)> = Vec::new();
    for (i, p) in pts.iter().enumerate() {
        match ends.last_mut() {
            Some((e, x)) if *e == p.epoch => *x = i as f64,
            _ => ends.push((p.epoch, i as f64)),
        }
    }
    ends
}

/// The plots there is data for: (file name, image).
pub fn plots(app: &App) -> Vec<(&'static str, image::RgbImage)> {
    let mut out = Vec::new();
    let names = app.run.as_ref().map_or(Vec::new(), |r| r.classes.clone());
    // Loss: every batch point, validation loss at the end of each epoch.
    if !app.losses.is_empty() || !app.epochs.is_empty() {
        let ends = epoch_ends(app);
        let batch: Vec<(f64, f64)> = app
            .losses
            .points()
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64, f64::from(p.loss)))
            .collect();
        let at_end = |epoch: u32| {
            ends.iter()
                .find(|(e, _)| *e == epoch)
                .map(|(_, x)| *x)
                .unwrap_or(epoch as f64)
        };
        let val: Vec<(f64, f64)> = app
            .epochs
            .iter()
            .map(|e| (at_end(e.epoch), f64::from(e.val_loss)))
            .collect();
        let train: Vec<(f64, f64)> = app
            .epochs
            .iter()
            .map(|e| (at_end(e.epoch), f64::from(e.train_loss)))
            .collect();
        let chart = LineChart {
            title: "LOSS".into(),
            x_label: format!("BATCH EVENTS (X{})", app.losses.stride()),
            y_label: "LOSS".into(),
            series: vec![
                Series {
                    name: "BATCH".into(),
                    color: series_color(1),
                    points: batch,
                    width: 1,
                    marker: 0,
                },
                Series {
                    name: "TRAIN (EPOCH)".into(),
                    color: series_color(2),
                    points: train,
                    width: 0,
                    marker: 8,
                },
                Series {
                    name: "VAL".into(),
                    color: series_color(0),
                    points: val,
                    width: 3,
                    marker: 8,
                },
            ],
            marks: ends
                .iter()
                .map(|(e, x)| (*x + 0.5, format!("E{e}")))
                .collect(),
            y_range: None,
            integer_x: false,
        };
        out.push(("loss.png", chart.draw(900, 450)));
    }
    if !app.epochs.is_empty() {
        let marks = round_marks(app);
        let acc = LineChart {
            title: "ACCURACY".into(),
            x_label: "EPOCH".into(),
            y_label: "ACCURACY".into(),
            series: vec![
                Series {
                    name: "TRAIN".into(),
                    color: series_color(1),
                    points: app
                        .epochs
                        .iter()
                        .map(|e| (f64::from(e.epoch), e.train_acc))
                        .collect(),
                    width: 2,
                    marker: 8,
                },
                Series {
                    name: "VAL".into(),
                    color: series_color(0),
                    points: app
                        .epochs
                        .iter()
                        .map(|e| (f64::from(e.epoch), e.val_acc))
                        .collect(),
                    width: 3,
                    marker: 10,
                },
            ],
            marks: marks.clone(),
            y_range: Some(acc_range(
                app.epochs.iter().flat_map(|e| [e.train_acc, e.val_acc]),
            )),
            integer_x: true,
        };
        out.push(("accuracy.png", acc.draw(900, 450)));
        let n = app.epochs.last().map_or(0, |e| e.per_class.len());
        let series: Vec<Series> = (0..n)
            .map(|i| Series {
                name: names.get(i).cloned().unwrap_or_else(|| format!("#{i}")),
                color: series_color(i),
                points: app
                    .epochs
                    .iter()
                    .filter_map(|e| {
                        e.per_class
                            .get(i)
                            .map(|c| (f64::from(e.epoch), c.accuracy()))
                    })
                    .collect(),
                width: 2,
                marker: 6,
            })
            .collect();
        let per_class = LineChart {
            title: "PER-CLASS ACCURACY (VAL)".into(),
            x_label: "EPOCH".into(),
            y_label: "ACCURACY".into(),
            y_range: Some(acc_range(
                series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
            )),
            series,
            marks,
            integer_x: true,
        };
        let h = (450 + 22 * n.saturating_sub(8)).min(2000) as u32;
        out.push(("per_class_accuracy.png", per_class.draw(900, h)));
        if let Some(e) = app.epochs.last() {
            if !e.confusion.is_empty() {
                out.push((
                    "confusion.png",
                    confusion_heat_map(
                        &format!("CONFUSION, EPOCH {}", e.epoch),
                        &names,
                        &e.confusion,
                    ),
                ));
            }
        }
    }
    out
}

/// Accuracy axis: from a round number below the lowest value to 1.
fn acc_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let lo = values.filter(|v| v.is_finite()).fold(1.0, f64::min);
    (((lo * 10.0).floor() / 10.0).clamp(0.0, 0.9), 1.0)
}

/// Dashed marks where self-training rounds start (between the epochs).
fn round_marks(app: &App) -> Vec<(f64, String)> {
    app.epochs
        .windows(2)
        .filter(|w| phase_round(w[0].phase) != phase_round(w[1].phase))
        .map(|w| {
            (
                f64::from(w[0].epoch) + 0.5,
                format!("ROUND {}", phase_round(w[1].phase)),
            )
        })
        .collect()
}

fn phase_label(p: Phase) -> String {
    match p {
        Phase::Supervised => "supervised".into(),
        Phase::SelfTraining { round } => format!("self-training, round {round}"),
    }
}

/// Escape `|` and line breaks for a markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The markdown text of the report. `plots`: the file names drawn (under `plots/`).
pub fn markdown(app: &App, log: &EventLog, plots: &[&str]) -> String {
    let mut md = String::new();
    let Some(run) = &app.run else {
        return "# Run report\n\nNo run in the event stream.\n".into();
    };
    let _ = writeln!(md, "# Run report: {}\n", cell(&run.run_id));
    let status = match app.state {
        RunState::Finished => match &app.summary {
            Some(s) if s.stopped => "stopped on request (after its last checkpoint)".to_string(),
            _ => "finished".to_string(),
        },
        RunState::Failed => format!(
            "FAILED: {}",
            cell(app.error.as_deref().unwrap_or("unknown error"))
        ),
        _ => "not finished (no final event yet): partial report".to_string(),
    };
    let latest = app.epochs.last();
    let best = app.best_epoch();
    let supervised_acc = app
        .summary
        .as_ref()
        .and_then(|s| s.supervised_val_acc)
        .or_else(|| {
            app.epochs
                .iter()
                .rev()
                .find(|e| e.phase == Phase::Supervised)
                .map(|e| e.val_acc)
        });
    let mut rows: Vec<(String, String)> = vec![
        ("status".into(), status),
        ("task".into(), cell(&run.task)),
        ("model".into(), cell(&run.model)),
        ("device".into(), cell(&run.device)),
        (
            "classes".into(),
            format!("{}: {}", run.classes.len(), cell(&run.classes.join(", "))),
        ),
        (
            "data".into(),
            format!(
                "{} labelled, {} unlabelled, {} validation images",
                run.sizes.labelled, run.sizes.unlabelled, run.sizes.val
            ),
        ),
        ("batch size".into(), run.batch_size.to_string()),
        (
            "epochs".into(),
            format!("{} of {} planned", app.epochs.len(), run.planned_epochs()),
        ),
    ];
    if let Some(e) = latest {
        rows.push(("final val accuracy".into(), pct(e.val_acc)));
        rows.push(("final val loss".into(), format!("{:.4}", e.val_loss)));
    }
    if let Some(b) = best {
        rows.push((
            "best val accuracy".into(),
            format!("{} (epoch {})", pct(b.val_acc), b.epoch),
        ));
    }
    if let Some(s) = supervised_acc.filter(|_| !app.rounds.is_empty()) {
        rows.push(("val accuracy after supervised phase".into(), pct(s)));
    }
    let finished_rounds: Vec<_> = app.rounds.iter().filter(|r| r.is_finished()).collect();
    if !finished_rounds.is_empty() || run.rounds > 0 {
        let last = finished_rounds.last();
        rows.push((
            "pseudo-label rounds".into(),
            format!(
                "{} of {} planned; {} pseudo-labels in use{}",
                finished_rounds.len(),
                run.rounds,
                last.map_or(0, |r| r.total),
                last.and_then(|r| r.precision)
                    .map_or(String::new(), |p| format!(", precision {}", pct(p)))
            ),
        ));
    }
    if let Some(s) = &app.summary {
        rows.push(("wall time".into(), duration(s.wall_seconds)));
        rows.push((
            "throughput".into(),
            format!(
                "{:.0} images/s (training; validation excluded)",
                s.images_per_s
            ),
        ));
    } else {
        let train: f64 = app.epochs.iter().map(|e| e.train_seconds).sum();
        let val: f64 = app.epochs.iter().map(|e| e.val_seconds).sum();
        rows.push((
            "time in epochs".into(),
            format!("{} training, {} validating", duration(train), duration(val)),
        ));
    }
    if run.resumes > 0 {
        rows.push(("resumed".into(), format!("{} time(s)", run.resumes)));
    }
    md.push_str("## Summary\n\n| | |\n|---|---|\n");
    for (k, v) in &rows {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    if log.torn_tail || !log.bad_lines.is_empty() {
        let _ = writeln!(
            md,
            "\nNote: `events.jsonl` had {} unreadable line(s){}{}; they were skipped.",
            log.bad_lines.len(),
            if log.bad_lines.is_empty() {
                String::new()
            } else {
                format!(
                    " (line {})",
                    log.bad_lines
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            if log.torn_tail {
                " and a torn last line"
            } else {
                ""
            }
        );
    }

    if !app.epochs.is_empty() {
        md.push_str("\n## Epochs\n\n");
        md.push_str(
            "| epoch | phase | train loss | train acc | val loss | val acc | train s | val s |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|\n",
        );
        let best_epoch = best.map(|b| b.epoch);
        for e in &app.epochs {
            let mark = if Some(e.epoch) == best_epoch {
                " (best)"
            } else {
                ""
            };
            let _ = writeln!(
                md,
                "| {}{mark} | {} | {:.4} | {} | {:.4} | {} | {:.1} | {:.1} |",
                e.epoch,
                phase_label(e.phase),
                e.train_loss,
                pct(e.train_acc),
                e.val_loss,
                pct(e.val_acc),
                e.train_seconds,
                e.val_seconds
            );
        }
    }

    if let Some(e) = latest {
        // Change against the end of the supervised phase when there were rounds, else the
        // first epoch.
        let base = if app.rounds.is_empty() {
            app.epochs.first().filter(|b| b.epoch != e.epoch)
        } else {
            app.epochs
                .iter()
                .rev()
                .find(|b| b.phase == Phase::Supervised && b.epoch != e.epoch)
        };
        let _ = writeln!(
            md,
            "\n## Per-class results (validation, epoch {})\n",
            e.epoch
        );
        let base_txt = base.map_or(String::new(), |b| format!(" | change vs epoch {}", b.epoch));
        let _ = writeln!(
            md,
            "| # | class | support | accuracy (= recall) | precision | F1{base_txt} |"
        );
        let _ = writeln!(
            md,
            "|---:|---|---:|---:|---:|---:|{}",
            if base.is_some() { "---:|" } else { "" }
        );
        for (i, c) in e.per_class.iter().enumerate() {
            let chg = base
                .and_then(|b| b.per_class.get(i))
                .map_or(String::new(), |b| {
                    format!(" {:+.1} pts |", (c.accuracy() - b.accuracy()) * 100.0)
                });
            let _ = writeln!(
                md,
                "| {i} | {} | {} | {} | {} | {:.3} |{chg}",
                cell(&c.name),
                c.support,
                pct(c.accuracy()),
                pct(c.precision()),
                c.f1()
            );
        }
        let mut tops = app.top_confusions(10);
        tops.retain(|t| t.count > 0);
        if !tops.is_empty() {
            md.push_str("\nLargest confusions (true class → predicted):\n\n");
            md.push_str("| true | predicted | images |\n|---|---|---:|\n");
            for t in tops {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    cell(&app.class_name(t.truth)),
                    cell(&app.class_name(t.predicted)),
                    t.count
                );
            }
        }
    }

    if !finished_rounds.is_empty() {
        md.push_str("\n## Pseudo-label rounds\n\n");
        md.push_str(
            "| round | threshold | pool | added | in use | precision | seconds |\n\
             |---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &finished_rounds {
            let _ = writeln!(
                md,
                "| {} | {:.2} | {} | {} | {} | {} | {} |",
                r.round,
                r.threshold,
                r.pool,
                r.added,
                r.total,
                r.precision.map_or("n/a".into(), pct),
                r.seconds().map_or("n/a".into(), |s| format!("{s:.1}"))
            );
        }
        if let Some(r) = finished_rounds.last() {
            let _ = writeln!(
                md,
                "\nPseudo-labels in use per class after round {}:\n",
                r.round
            );
            md.push_str("| class | pseudo-labels | precision |\n|---|---:|---:|\n");
            for (i, n) in r.per_class.iter().enumerate() {
                let p = r.per_class_precision.get(i).copied().flatten();
                let _ = writeln!(
                    md,
                    "| {} | {n} | {} |",
                    cell(&app.class_name(i)),
                    p.map_or("n/a".into(), pct)
                );
            }
        }
    }

    if !plots.is_empty() {
        md.push_str("\n## Plots\n");
        for name in plots {
            let (title, legend) = match *name {
                "loss.png" => (
                    "Loss",
                    format!(
                        "x: training progress in `Batch` events (each point averages {} of them); \
                         y: loss. Sky-blue line: loss per batch event; orange line and squares: \
                         validation loss at the end of each epoch; green squares: mean training \
                         loss of the epoch. Dashed lines: epoch ends (E1, E2, ...).",
                        app.losses.stride()
                    ),
                ),
                "accuracy.png" => (
                    "Accuracy",
                    "x: epoch; y: accuracy. Orange: validation; sky blue: training. Dashed \
                     lines: a pseudo-label round starts."
                        .to_string(),
                ),
                "per_class_accuracy.png" => ("Per-class accuracy", {
                    let n = latest.map_or(0, |e| e.per_class.len());
                    let colours = plot::SERIES_NAMES;
                    let items: Vec<String> = (0..n)
                        .map(|i| {
                            format!(
                                "{} = {}",
                                colours[i % colours.len()],
                                cell(&app.class_name(i))
                            )
                        })
                        .collect();
                    format!(
                        "x: epoch; y: validation accuracy of each class. Colours (Okabe-Ito, \
                             repeating after 8): {}.",
                        items.join(", ")
                    )
                }),
                "confusion.png" => (
                    "Confusion matrix",
                    format!(
                        "Rows: true class, columns: predicted class, in class order ({}). \
                         Colour: share of the row (square root, viridis: dark purple 0, yellow \
                         1); numbers: image counts.",
                        run.classes
                            .iter()
                            .enumerate()
                            .map(|(i, c)| format!("{i} = {}", cell(c)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                _ => ("Plot", String::new()),
            };
            let _ = writeln!(md, "\n### {title}\n\n![{title}](plots/{name})\n\n{legend}");
        }
    }
    md
}

#[cfg(test)]
mod tests;
