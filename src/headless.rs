//! Plain-text progress for `--headless` runs, logs and CI: one line per epoch and round, and a
//! final summary with the numbers. Never any escape codes.

use crate::protocol::{Event, Level, Phase, Summary};

/// Turns events into lines; keeps the little context lines need (planned epochs).
#[derive(Debug, Default)]
pub struct Narrator {
    planned_epochs: u32,
    classes: Vec<String>,
}

impl Narrator {
    /// The line(s) to print for an event, if any.
    pub fn line(&mut self, event: &Event) -> Option<String> {
        match event {
            Event::RunStarted {
                run_id,
                task,
                model,
                device,
                classes,
                sizes,
                epochs,
                rounds,
                epochs_per_round,
                resumed,
                ..
            } => {
                self.planned_epochs = epochs + rounds * epochs_per_round;
                self.classes = classes.clone();
                Some(format!(
                    "{} {run_id}: {task}, {model} on {device}; {} classes, {} labelled, {} unlabelled, {} val; {} epochs{}",
                    if *resumed { "resumed" } else { "run" },
                    classes.len(),
                    sizes.labelled,
                    sizes.unlabelled,
                    sizes.val,
                    self.planned_epochs,
                    if *rounds > 0 {
                        format!(" ({epochs} supervised + {rounds} rounds x {epochs_per_round})")
                    } else {
                        String::new()
                    }
                ))
            }
            Event::EpochFinished {
                epoch,
                phase,
                train_loss,
                train_acc,
                val_loss,
                val_acc,
                train_seconds,
                val_seconds,
                ..
            } => Some(format!(
                "epoch {epoch:>3}/{} {:<10} train_loss {train_loss:.4} train_acc {:5.1}%  val_loss {val_loss:.4} val_acc {:5.1}%  ({:.1}s + {:.1}s val)",
                self.planned_epochs,
                phase_label(phase),
                train_acc * 100.0,
                val_acc * 100.0,
                train_seconds,
                val_seconds
            )),
            Event::RoundFinished {
                round,
                added,
                total,
                precision,
                threshold,
                csv,
                thresholds,
                online,
                ..
            } => {
                let lo = thresholds.iter().copied().fold(*threshold, f32::min);
                let thr = if lo < *threshold - 1e-6 {
                    format!("threshold {threshold:.2}, per class from {lo:.2}")
                } else {
                    format!("threshold {threshold:.2}")
                };
                Some(format!(
                    "{}round {round}: +{added} pseudo-labels, {total} in use ({thr}){} -> {csv}",
                    if *online { "online " } else { "" },
                    precision
                        .map(|p| format!(", precision {:.1}%", p * 100.0))
                        .unwrap_or_default()
                ))
            }
            Event::Paused { epoch, step } => Some(format!("paused in epoch {epoch} at batch {step}")),
            Event::Resumed => Some("resumed".into()),
            Event::ThresholdChanged { value } => Some(format!("threshold set to {value:.2}")),
            Event::LearningRateChanged { value } => Some(format!("learning rate set to {value}")),
            Event::Log { level, message } if *level >= Level::Warn => {
                Some(format!("{}: {message}", if *level == Level::Warn { "warning" } else { "error" }))
            }
            Event::Failed { error } => Some(format!("run failed: {error}")),
            _ => None,
        }
    }

    pub fn classes(&self) -> &[String] {
        &self.classes
    }
}

fn phase_label(phase: &Phase) -> String {
    match phase {
        Phase::Supervised => "supervised".into(),
        Phase::SelfTraining { round } => format!("round {round}"),
    }
}

/// The final summary block: one `summary:` line with the headline numbers, then per-class
/// accuracy.
pub fn summary_text(summary: &Summary) -> String {
    let end = if summary.stopped {
        "stopped"
    } else {
        "finished"
    };
    // best_epoch 0: stopped before any epoch was validated.
    let mut out = if summary.best_epoch == 0 {
        format!(
            "summary: {end} after {} epochs: no epoch validated",
            summary.epochs
        )
    } else {
        format!(
            "summary: {end} after {} epochs: val_acc {:.2}% (best {:.2}% at epoch {}), val_loss {:.4}",
            summary.epochs,
            summary.final_val_acc * 100.0,
            summary.best_val_acc * 100.0,
            summary.best_epoch,
            summary.final_val_loss
        )
    };
    if let Some(s) = summary.supervised_val_acc {
        out.push_str(&format!(", supervised-only {:.2}%", s * 100.0));
    }
    if summary.rounds > 0 {
        out.push_str(&format!(
            ", {} rounds, {} pseudo-labels",
            summary.rounds, summary.pseudo_labelled
        ));
        if let Some(p) = summary.pseudo_precision {
            out.push_str(&format!(" ({:.1}% correct)", p * 100.0));
        }
    }
    out.push_str(&format!(
        ", {:.0}s wall, {:.0} img/s\n",
        summary.wall_seconds, summary.images_per_s
    ));
    let width = summary
        .per_class
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for c in &summary.per_class {
        out.push_str(&format!(
            "  {:<width$}  acc {:5.1}%  precision {:5.1}%  ({}/{})\n",
            c.name,
            c.accuracy() * 100.0,
            c.precision() * 100.0,
            c.correct,
            c.support
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ClassStats;

    #[test]
    fn summary_has_numbers_and_no_escapes() {
        let s = Summary {
            epochs: 3,
            final_val_acc: 0.8,
            final_val_loss: 0.5,
            best_val_acc: 0.81,
            best_epoch: 2,
            supervised_val_acc: Some(0.7),
            rounds: 1,
            pseudo_labelled: 10,
            pseudo_precision: Some(0.9),
            per_class: vec![ClassStats {
                name: "Coat".into(),
                support: 10,
                correct: 8,
                predicted: 9,
            }],
            wall_seconds: 12.0,
            images_per_s: 100.0,
            stopped: false,
        };
        let text = summary_text(&s);
        assert!(
            text.starts_with("summary: finished after 3 epochs: val_acc 80.00%"),
            "{text}"
        );
        assert!(text.contains("supervised-only 70.00%"));
        assert!(text.contains("Coat  acc  80.0%"), "{text}");
        assert!(!text.contains('\x1b'));
        // Stopped before the first validation: no "best at epoch 0".
        let stopped = Summary {
            epochs: 0,
            best_epoch: 0,
            best_val_acc: 0.0,
            stopped: true,
            ..s
        };
        let text = summary_text(&stopped);
        assert!(
            text.starts_with("summary: stopped after 0 epochs: no epoch validated"),
            "{text}"
        );
        assert!(!text.contains("epoch 0"), "{text}");
    }
}
