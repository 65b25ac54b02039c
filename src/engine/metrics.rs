//! Evaluation bookkeeping: confusion matrix, per-class counts, top mistakes.

use crate::protocol::{ClassStats, SampleNote};

/// Accumulates predictions over an evaluation pass.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// `confusion[truth][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    pub loss_sum: f64,
    pub count: u64,
    /// Most confident mistakes seen so far (bounded).
    pub mistakes: Vec<SampleNote>,
    max_mistakes: usize,
}

impl Evaluation {
    pub fn new(classes: usize, max_mistakes: usize) -> Self {
        Evaluation {
            confusion: vec![vec![0; classes]; classes],
            loss_sum: 0.0,
            count: 0,
            mistakes: Vec::new(),
            max_mistakes,
        }
    }

    /// Records one prediction; `loss` is that sample's loss.
    pub fn add(&mut self, truth: usize, predicted: usize, confidence: f32, loss: f64, path: &str) {
        self.confusion[truth][predicted] += 1;
        self.loss_sum += loss;
        self.count += 1;
        if truth != predicted && self.max_mistakes > 0 {
            let worst_kept = self.mistakes.last().map(|m| m.confidence);
            if self.mistakes.len() < self.max_mistakes || worst_kept < Some(confidence) {
                let note = SampleNote {
                    path: path.to_string(),
                    label: predicted,
                    confidence,
                    truth: Some(truth),
                };
                let at = self
                    .mistakes
                    .partition_point(|m| m.confidence >= confidence);
                self.mistakes.insert(at, note);
                self.mistakes.truncate(self.max_mistakes);
            }
        }
    }

    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.confusion.len())
            .map(|i| self.confusion[i][i])
            .sum();
        if self.count == 0 {
            0.0
        } else {
            correct as f64 / self.count as f64
        }
    }

    pub fn mean_loss(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.loss_sum / self.count as f64
        }
    }

    pub fn per_class(&self, names: &[String]) -> Vec<ClassStats> {
        let n = self.confusion.len();
        (0..n)
            .map(|c| ClassStats {
                name: names.get(c).cloned().unwrap_or_else(|| c.to_string()),
                support: self.confusion[c].iter().sum(),
                correct: self.confusion[c][c],
                predicted: (0..n).map(|t| self.confusion[t][c]).sum(),
            })
            .collect()
    }
}

/// Index of the largest value and the value itself (first on ties).
pub fn argmax(row: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_and_per_class() {
        let mut e = Evaluation::new(3, 2);
        e.add(0, 0, 0.9, 0.1, "a");
        e.add(0, 1, 0.6, 1.0, "b");
        e.add(1, 1, 0.8, 0.2, "c");
        e.add(2, 1, 0.95, 2.0, "d");
        e.add(2, 0, 0.7, 1.5, "e");
        assert_eq!(e.accuracy(), 0.4);
        assert!((e.mean_loss() - 0.96).abs() < 1e-12);
        let names: Vec<String> = ["x", "y", "z"].iter().map(|s| s.to_string()).collect();
        let pc = e.per_class(&names);
        assert_eq!((pc[1].support, pc[1].correct, pc[1].predicted), (1, 1, 3));
        assert_eq!(pc[2].accuracy(), 0.0);
        // The two most confident mistakes, most confident first.
        let kept: Vec<&str> = e.mistakes.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(kept, vec!["d", "e"]);
    }

    #[test]
    fn argmax_first_on_ties() {
        assert_eq!(argmax(&[0.1, 0.5, 0.5]), (1, 0.5));
    }
}
