//! Pseudo-label selection: which of the pool's predictions become training labels.
//!
//! Pure functions over prediction tables, so every policy is tested on exact picks. The
//! engine predicts the pool, calls [`select`], and trains on the result.

use std::collections::HashSet;

use crate::config::{SelectionPolicy, SelfTrainingConfig};
use crate::engine::checkpoint::PseudoLabel;

/// The model's verdict on one pool image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolPrediction {
    /// Index into the training pool.
    pub index: usize,
    pub label: u32,
    /// Max-softmax probability.
    pub confidence: f32,
}

/// What a round chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub labels: Vec<PseudoLabel>,
    /// The confidence threshold each class was held to.
    pub thresholds: Vec<f32>,
}

/// Chooses pseudo-labels from a fresh prediction of the whole pool.
///
/// Every round re-selects from scratch (earlier mistakes can be dropped); `previous` is the set in
/// use before the round and only matters for the growth cap: the new set may exceed the old one by
/// at most `max_growth × preds` labels, filled class by class (each class's most confident, then
/// each class's next…) so that the cap does not keep only the easiest classes.
pub fn select(
    preds: &[PoolPrediction],
    classes: usize,
    cfg: &SelfTrainingConfig,
    threshold: f32,
    previous: usize,
) -> Selection {
    let thresholds = match cfg.policy {
        SelectionPolicy::Global | SelectionPolicy::TopK => vec![threshold; classes],
        SelectionPolicy::Adaptive => {
            adaptive_thresholds(preds, classes, threshold, cfg.min_threshold)
        }
    };
    let mut chosen: Vec<PoolPrediction> = preds
        .iter()
        .filter(|p| p.confidence >= thresholds[p.label as usize])
        .copied()
        .collect();
    // Most confident first; index breaks ties so the result is deterministic.
    chosen.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then(a.index.cmp(&b.index))
    });
    if cfg.policy == SelectionPolicy::TopK {
        let mut per_class = vec![0usize; classes];
        chosen.retain(|p| {
            let n = &mut per_class[p.label as usize];
            *n += 1;
            *n <= cfg.top_k
        });
    }
    let cap = previous + (cfg.max_growth * preds.len() as f64).floor() as usize;
    if chosen.len() > cap {
        // Class-balanced cap: every class's most confident first, then every class's second…
        // (a global confidence cut would keep only the easiest classes).
        let mut rank = vec![0usize; classes];
        let mut keyed: Vec<(usize, PoolPrediction)> = chosen
            .into_iter()
            .map(|p| {
                let r = &mut rank[p.label as usize];
                *r += 1;
                (*r, p)
            })
            .collect();
        keyed.sort_by(|(ra, a), (rb, b)| {
            ra.cmp(rb)
                .then(b.confidence.total_cmp(&a.confidence))
                .then(a.index.cmp(&b.index))
        });
        keyed.truncate(cap);
        chosen = keyed.into_iter().map(|(_, p)| p).collect();
    }
    chosen.sort_by_key(|p| p.index);
    Selection {
        labels: chosen
            .into_iter()
            .map(|p| PseudoLabel {
                index: p.index,
                label: p.label,
                confidence: p.confidence,
            })
            .collect(),
        thresholds,
    }
}

/// FlexMatch-style class-wise thresholds: a class's learning status σ_c is how many pool images
/// it confidently claims; β_c = σ_c / max σ, and T_c = τ·β_c/(2−β_c) (the convex mapping),
/// floored at `min_threshold` so offline rounds keep their precision.
pub fn adaptive_thresholds(
    preds: &[PoolPrediction],
    classes: usize,
    tau: f32,
    min_threshold: f32,
) -> Vec<f32> {
    let mut sigma = vec![0usize; classes];
    for p in preds.iter().filter(|p| p.confidence >= tau) {
        sigma[p.label as usize] += 1;
    }
    flex_map(&sigma, 0, tau, min_threshold)
}

/// FlexMatch's thresholds as the online mode uses them, from `selected`: for each pool image,
/// the class of its latest weak-view prediction that reached `tau`, or `None` if none has yet.
/// With FlexMatch's threshold warm-up, the normaliser is the larger of the biggest class count
/// and the number of images not yet selected, so thresholds start low and rise as the model
/// labels more of the pool; floored at `min_threshold` as [`adaptive_thresholds`].
pub fn flexmatch_thresholds(
    selected: &[Option<u32>],
    classes: usize,
    tau: f32,
    min_threshold: f32,
) -> Vec<f32> {
    let mut sigma = vec![0usize; classes];
    let mut unused = 0usize;
    for s in selected {
        match s {
            Some(c) if (*c as usize) < classes => sigma[*c as usize] += 1,
            _ => unused += 1,
        }
    }
    flex_map(&sigma, unused, tau, min_threshold)
}

/// T_c = τ·β_c/(2−β_c), β_c = σ_c / max(max σ, `unused`), floored at `min_threshold` (at most
/// τ). Every class gets τ while nothing has been counted.
fn flex_map(sigma: &[usize], unused: usize, tau: f32, min_threshold: f32) -> Vec<f32> {
    let max = sigma.iter().copied().max().unwrap_or(0);
    if max == 0 {
        return vec![tau; sigma.len()];
    }
    let norm = max.max(unused) as f32;
    sigma
        .iter()
        .map(|&s| {
            let beta = s as f32 / norm;
            (tau * beta / (2.0 - beta)).max(min_threshold.min(tau))
        })
        .collect()
}

/// Sharpens a probability row: `p_c^(1/T)`, renormalised (computed in log space, so tiny
/// probabilities do not underflow to a zero row).
pub fn sharpen(probs: &[f32], temperature: f32) -> Vec<f32> {
    let t = temperature.max(1e-3);
    let logs: Vec<f32> = probs.iter().map(|&p| p.max(1e-30).ln() / t).collect();
    let max = logs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logs.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|&e| e / sum).collect()
}

/// Histogram of max-softmax confidence in `bins` equal bins over [0, 1].
pub fn confidence_histogram(preds: &[PoolPrediction], bins: usize) -> Vec<u64> {
    let mut h = vec![0u64; bins];
    for p in preds {
        let b = ((p.confidence.clamp(0.0, 1.0) * bins as f32) as usize).min(bins - 1);
        h[b] += 1;
    }
    h
}

/// Per-class counts of the labels in use, and their precision (overall and per class) against
/// the hidden true labels where those are known (`truth[index]`).
pub fn quality(
    labels: &[PseudoLabel],
    classes: usize,
    truth: &[Option<usize>],
) -> (Vec<usize>, Vec<Option<f64>>, Option<f64>) {
    let mut count = vec![0usize; classes];
    let mut known = vec![0usize; classes];
    let mut right = vec![0usize; classes];
    for l in labels {
        let c = l.label as usize;
        count[c] += 1;
        if let Some(Some(t)) = truth.get(l.index) {
            known[c] += 1;
            if *t == c {
                right[c] += 1;
            }
        }
    }
    let per_class = (0..classes)
        .map(|c| (known[c] > 0).then(|| right[c] as f64 / known[c] as f64))
        .collect();
    let known_all: usize = known.iter().sum();
    let overall = (known_all > 0).then(|| right.iter().sum::<usize>() as f64 / known_all as f64);
    (count, per_class, overall)
}

/// How many labels of `new` were not in `old` (by pool index).
pub fn newly_added(old: &[PseudoLabel], new: &[PseudoLabel]) -> usize {
    let old: HashSet<usize> = old.iter().map(|l| l.index).collect();
    new.iter().filter(|l| !old.contains(&l.index)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(index: usize, label: u32, confidence: f32) -> PoolPrediction {
        PoolPrediction {
            index,
            label,
            confidence,
        }
    }

    fn cfg(policy: SelectionPolicy) -> SelfTrainingConfig {
        SelfTrainingConfig {
            policy,
            ..SelfTrainingConfig::default()
        }
    }

    fn picked(s: &Selection) -> Vec<usize> {
        s.labels.iter().map(|l| l.index).collect()
    }

    fn table() -> Vec<PoolPrediction> {
        vec![
            p(0, 0, 0.99),
            p(1, 0, 0.97),
            p(2, 0, 0.96),
            p(3, 0, 0.50),
            p(4, 1, 0.96),
            p(5, 1, 0.90),
            p(6, 1, 0.85),
            p(7, 2, 0.60),
        ]
    }

    #[test]
    fn global_threshold_picks_exactly_the_confident() {
        let s = select(&table(), 3, &cfg(SelectionPolicy::Global), 0.95, 0);
        assert_eq!(picked(&s), vec![0, 1, 2, 4]);
        assert_eq!(s.thresholds, vec![0.95; 3]);
    }

    #[test]
    fn adaptive_lowers_the_bar_for_classes_the_model_is_unsure_of() {
        let mut c = cfg(SelectionPolicy::Adaptive);
        c.min_threshold = 0.8;
        let s = select(&table(), 3, &c, 0.95, 0);
        // σ = [3, 1, 0]; β = [1, 1/3, 0]; T = [0.95, 0.95·0.2 → floor 0.8, floor 0.8]
        assert_eq!(s.thresholds, vec![0.95, 0.8, 0.8]);
        assert_eq!(picked(&s), vec![0, 1, 2, 4, 5, 6]);
    }

    #[test]
    fn top_k_is_class_balanced() {
        let mut c = cfg(SelectionPolicy::TopK);
        c.top_k = 1;
        let s = select(&table(), 3, &c, 0.8, 0);
        assert_eq!(picked(&s), vec![0, 4]);
    }

    #[test]
    fn growth_cap_is_class_balanced() {
        let mut c = cfg(SelectionPolicy::Global);
        // 8 × 0.25 = 2 new labels at most. Candidates ≥ 0.85: class 0 (0.99, 0.97, 0.96),
        // class 1 (0.96, 0.90, 0.85). Cap 3: each class's best (0 and 4), then the best
        // second (1: 0.97 before 5: 0.90).
        c.max_growth = 0.25;
        let s = select(&table(), 3, &c, 0.85, 1);
        assert_eq!(picked(&s), vec![0, 1, 4]);
        // Cap 5: both seconds, then the best third (2: 0.96 before 6: 0.85).
        c.max_growth = 0.5;
        let s = select(&table(), 3, &c, 0.85, 1);
        assert_eq!(picked(&s), vec![0, 1, 2, 4, 5]);
        // No cap binding: everything above the threshold.
        c.max_growth = 1.0;
        assert_eq!(
            picked(&select(&table(), 3, &c, 0.85, 0)),
            vec![0, 1, 2, 4, 5, 6]
        );
    }

    #[test]
    fn adaptive_at_the_defaults_keeps_the_floor_for_rare_classes() {
        // τ = 0.95, floor 0.8 (the defaults): class 0 claims 4 confident images, class 1 two,
        // class 2 none. β = [1, 0.5, 0] → T = [0.95, 0.317 → 0.8, 0 → 0.8].
        let c = cfg(SelectionPolicy::Adaptive);
        assert_eq!((c.threshold, c.min_threshold), (0.95, 0.8));
        let preds = vec![
            p(0, 0, 0.99),
            p(1, 0, 0.98),
            p(2, 0, 0.97),
            p(3, 0, 0.96),
            p(4, 0, 0.90),
            p(5, 1, 0.99),
            p(6, 1, 0.95),
            p(7, 1, 0.85),
            p(8, 1, 0.79),
            p(9, 2, 0.81),
            p(10, 2, 0.5),
        ];
        let s = select(&preds, 3, &c, c.threshold, 0);
        assert_eq!(s.thresholds, vec![0.95, 0.8, 0.8]);
        assert_eq!(picked(&s), vec![0, 1, 2, 3, 5, 6, 7, 9]);
    }

    #[test]
    fn flexmatch_warm_up_normalises_by_the_unselected() {
        // 2 selected as class 0, 1 as class 1, 5 not yet: β = [2/5, 1/5, 0].
        let sel = [Some(0), Some(0), Some(1), None, None, None, None, None];
        let t = flexmatch_thresholds(&sel, 3, 0.95, 0.0);
        let want = |b: f32| 0.95 * b / (2.0 - b);
        assert!((t[0] - want(0.4)).abs() < 1e-6, "{t:?}");
        assert!((t[1] - want(0.2)).abs() < 1e-6, "{t:?}");
        assert_eq!(t[2], 0.0);
        // Once most are selected, the biggest class sets the scale; the floor applies.
        let sel = [Some(0), Some(0), Some(0), Some(1), Some(1), None];
        let t = flexmatch_thresholds(&sel, 3, 0.95, 0.7);
        assert_eq!(t[0], 0.95);
        assert_eq!(t[1], 0.7); // 0.95·(2/3)/(4/3) = 0.475 → floor
        assert_eq!(t[2], 0.7);
        // Nothing selected yet: τ everywhere.
        assert_eq!(
            flexmatch_thresholds(&[None, None], 2, 0.9, 0.5),
            vec![0.9, 0.9]
        );
    }

    #[test]
    fn sharpening() {
        let q = sharpen(&[0.6, 0.3, 0.1], 0.5);
        // p² / Σp² = [0.36, 0.09, 0.01] / 0.46
        for (a, b) in q.iter().zip([0.36 / 0.46, 0.09 / 0.46, 0.01 / 0.46]) {
            assert!((a - b).abs() < 1e-6, "{q:?}");
        }
        let q = sharpen(&[0.25, 0.75], 1.0);
        assert!(
            (q[0] - 0.25).abs() < 1e-6 && (q[1] - 0.75).abs() < 1e-6,
            "{q:?}"
        );
        // A zero probability stays (numerically) zero; the row still sums to one.
        let q = sharpen(&[1.0, 0.0], 0.1);
        assert!(q[0] > 0.999_999 && q[1] < 1e-6, "{q:?}");
    }

    #[test]
    fn histogram_and_quality() {
        let h = confidence_histogram(&table(), 10);
        // 0.99 0.97 0.96 0.96 0.90 | 0.85 | 0.60 | 0.50
        assert_eq!((h[9], h[8], h[6], h[5]), (5, 1, 1, 1));
        assert_eq!(h.iter().sum::<u64>(), 8);
        let labels = select(&table(), 3, &cfg(SelectionPolicy::Global), 0.95, 0).labels;
        let truth = vec![Some(0), Some(1), Some(0), None, Some(1), None, None, None];
        let (count, per_class, overall) = quality(&labels, 3, &truth);
        assert_eq!(count, vec![3, 1, 0]);
        assert_eq!(per_class, vec![Some(2.0 / 3.0), Some(1.0), None]);
        assert_eq!(overall, Some(0.75));
        assert_eq!(newly_added(&labels[..2], &labels), 2);
    }
}
