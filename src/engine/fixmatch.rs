//! The online FixMatch-style mode, as pure pieces the runner strings together each step:
//!
//! 1. a labelled batch (train augmentation) and μ×batch unlabelled images, each in a weak view
//!    (flip + translate) and a strong one (RandAugment-style ops + Cutout), both drawn by the
//!    loader from the same per-epoch order;
//! 2. the weak views are predicted without gradient — by the model itself in train mode (its
//!    BatchNorm on batch statistics, as FixMatch's single forward over the concatenated batch),
//!    or by the EMA teacher in eval mode when `ema = true` (and `ema_pseudo_label`, the
//!    default) — and [`verdicts`] keeps the predictions whose confidence reaches their class
//!    threshold (global τ, or FlexMatch's per-class thresholds from
//!    [`crate::engine::self_training::flexmatch_thresholds`]);
//! 3. one train-mode forward over the labelled batch and the strong views of the kept images,
//!    and [`loss`] = CE(labelled) + λ_u · Σ_kept CE(strong, pseudo-label) / (unlabelled batch).
//!
//! Step 3 forwards only the strong views that pass: the others have a zero loss term in
//! FixMatch, so leaving them out changes nothing but the BatchNorm batch statistics, and saves
//! their forward and backward passes (most of a step early on, when few pass).

use candle_core::{Result, Tensor};

use super::loss;
use crate::config::SelfTrainingConfig;

/// The verdict on one weak view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub label: u32,
    pub confidence: f32,
    /// Confidence reached the threshold of the predicted class.
    pub passed: bool,
}

/// Argmax, max probability and the threshold test for each row of `probs`.
pub fn verdicts(probs: &[Vec<f32>], thresholds: &[f32]) -> Vec<Verdict> {
    probs
        .iter()
        .map(|row| {
            let (label, confidence) = row.iter().copied().enumerate().fold(
                (0usize, f32::NEG_INFINITY),
                |best, (i, p)| {
                    if p > best.1 {
                        (i, p)
                    } else {
                        best
                    }
                },
            );
            let t = thresholds.get(label).copied().unwrap_or(1.0);
            Verdict {
                label: label as u32,
                confidence,
                passed: confidence >= t,
            }
        })
        .collect()
}

/// Distribution alignment (ReMixMatch, as FixMatch + DA in USB): the weak-view predictions are
/// scaled by `target / running mean of the predictions` and renormalised before the threshold,
/// so that classes the model over-predicts on the pool lose confidence and under-predicted ones
/// gain it. The running mean is over the latest `window` steps' mean predictions.
#[derive(Debug, Clone)]
pub struct DistAlign {
    /// The class distribution to align to (the labelled set's).
    target: Vec<f32>,
    window: usize,
    history: std::collections::VecDeque<Vec<f32>>,
}

impl DistAlign {
    pub fn new(target: Vec<f32>, window: usize) -> DistAlign {
        DistAlign {
            target,
            window: window.max(1),
            history: std::collections::VecDeque::new(),
        }
    }

    /// Records this step's mean prediction, then aligns `rows` in place with the running mean
    /// (this step included).
    pub fn align(&mut self, rows: &mut [Vec<f32>]) {
        let c = self.target.len();
        if rows.is_empty() || c == 0 {
            return;
        }
        let mut step = vec![0f32; c];
        for r in rows.iter() {
            for (m, p) in step.iter_mut().zip(r) {
                *m += p / rows.len() as f32;
            }
        }
        if self.history.len() == self.window {
            self.history.pop_front();
        }
        self.history.push_back(step);
        let mut mean = vec![0f32; c];
        for h in &self.history {
            for (m, p) in mean.iter_mut().zip(h) {
                *m += p / self.history.len() as f32;
            }
        }
        for r in rows.iter_mut() {
            for ((p, t), m) in r.iter_mut().zip(&self.target).zip(&mean) {
                *p *= t / m.max(1e-6);
            }
            let sum: f32 = r.iter().sum();
            if sum > 0.0 {
                r.iter_mut().for_each(|p| *p /= sum);
            }
        }
    }
}

/// Steps in an online epoch: `steps_per_epoch`, or one pass over the pool at μ×batch images a
/// step (at least one step).
pub fn steps_per_epoch(cfg: &SelfTrainingConfig, pool: usize, batch_size: usize) -> usize {
    if cfg.steps_per_epoch > 0 {
        return cfg.steps_per_epoch;
    }
    let per_step = cfg.mu * batch_size;
    if per_step == 0 || pool == 0 {
        1
    } else {
        pool.div_ceil(per_step)
    }
}

/// The targets of the kept strong views: hard class indices, or soft rows (the weak-view
/// probabilities sharpened).
pub enum Targets<'a> {
    Hard(&'a Tensor),
    Soft(&'a Tensor),
}

/// `CE(logits_l, y_l) + λ_u · Σ_kept CE(logits_s, target) / unlabelled`: the FixMatch loss, with
/// the unlabelled term averaged over the whole unlabelled batch (`unlabelled` images, kept or
/// not), as FixMatch's masked mean. `logits_s` holds the kept images only (possibly none).
pub fn loss(
    logits_l: &Tensor,
    y_l: &Tensor,
    label_smoothing: f64,
    logits_s: Option<(&Tensor, Targets)>,
    unlabelled: usize,
    lambda_u: f64,
) -> Result<Tensor> {
    let sup = loss::cross_entropy(logits_l, y_l, None, label_smoothing)?;
    let Some((ls, targets)) = logits_s else {
        return Ok(sup);
    };
    let kept = ls.dim(0)?;
    if kept == 0 || unlabelled == 0 || lambda_u == 0.0 {
        return Ok(sup);
    }
    let mean = match targets {
        Targets::Hard(y) => loss::cross_entropy(ls, y, None, 0.0)?,
        Targets::Soft(q) => loss::soft_cross_entropy(ls, q, None)?,
    };
    sup + (mean * (lambda_u * kept as f64 / unlabelled as f64))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn verdicts_apply_the_class_threshold() {
        let probs = vec![
            vec![0.96, 0.02, 0.02],
            vec![0.10, 0.85, 0.05],
            vec![0.30, 0.30, 0.40],
        ];
        let v = verdicts(&probs, &[0.95, 0.8, 0.95]);
        assert_eq!(
            v.iter().map(|v| (v.label, v.passed)).collect::<Vec<_>>(),
            vec![(0, true), (1, true), (2, false)]
        );
        assert_eq!(v[1].confidence, 0.85);
        let v = verdicts(&probs, &[0.95; 3]);
        assert_eq!(v.iter().filter(|v| v.passed).count(), 1);
    }

    #[test]
    fn distribution_alignment_rescales_by_target_over_running_mean() {
        let mut da = DistAlign::new(vec![0.5, 0.5], 2);
        // Step 1: the mean prediction is (0.75, 0.25); each row is scaled by (2/3, 2) and
        // renormalised.
        let mut rows = vec![vec![0.9, 0.1], vec![0.6, 0.4]];
        da.align(&mut rows);
        let expect = |p0: f32, p1: f32| {
            let (a, b) = (p0 * 0.5 / 0.75, p1 * 0.5 / 0.25);
            (a / (a + b), b / (a + b))
        };
        let (a, b) = expect(0.9, 0.1);
        assert!((rows[0][0] - a).abs() < 1e-6 && (rows[0][1] - b).abs() < 1e-6);
        let (a, b) = expect(0.6, 0.4);
        assert!((rows[1][0] - a).abs() < 1e-6 && (rows[1][1] - b).abs() < 1e-6);
        // Step 2: the running mean covers both steps ((0.75, 0.25) and (0.25, 0.75)): uniform,
        // so a uniform target leaves the rows as they are.
        let mut rows = vec![vec![0.25, 0.75]];
        da.align(&mut rows);
        assert!((rows[0][0] - 0.25).abs() < 1e-6);
        // Step 3: the window of 2 drops step 1; the mean is (0.25, 0.75) over steps 2 and 3.
        let mut rows = vec![vec![0.25, 0.75]];
        da.align(&mut rows);
        assert!((rows[0][0] - 0.5).abs() < 1e-6, "{:?}", rows);
    }

    #[test]
    fn steps_default_to_one_pass_over_the_pool() {
        let mut c = SelfTrainingConfig::default();
        assert_eq!(c.mu, 3);
        assert_eq!(steps_per_epoch(&c, 1000, 32), 11); // ceil(1000 / 96)
        c.steps_per_epoch = 7;
        assert_eq!(steps_per_epoch(&c, 1000, 32), 7);
        c.steps_per_epoch = 0;
        c.mu = 0;
        assert_eq!(steps_per_epoch(&c, 1000, 32), 1);
    }

    #[test]
    fn unlabelled_term_is_a_masked_mean_over_the_whole_unlabelled_batch() -> Result<()> {
        let d = Device::Cpu;
        let ll = Tensor::new(&[[2.0f32, 0.0], [0.0, 1.0]], &d)?;
        let yl = Tensor::new(&[0u32, 1], &d)?;
        let ls = Tensor::new(&[[0.5f32, 1.5]], &d)?;
        let ys = Tensor::new(&[0u32], &d)?;
        let sup = loss::cross_entropy(&ll, &yl, None, 0.0)?.to_scalar::<f32>()? as f64;
        let u = loss::cross_entropy(&ls, &ys, None, 0.0)?.to_scalar::<f32>()? as f64;
        // 1 kept out of 4 unlabelled, λ_u = 2: sup + 2 · u / 4.
        let got = loss(&ll, &yl, 0.0, Some((&ls, Targets::Hard(&ys))), 4, 2.0)?
            .to_scalar::<f32>()? as f64;
        assert!((got - (sup + 0.5 * u)).abs() < 1e-6, "{got}");
        // Soft one-hot targets give the same; nothing kept or λ_u = 0 gives the supervised loss.
        let q = Tensor::new(&[[1.0f32, 0.0]], &d)?;
        let soft =
            loss(&ll, &yl, 0.0, Some((&ls, Targets::Soft(&q))), 4, 2.0)?.to_scalar::<f32>()? as f64;
        assert!((soft - got).abs() < 1e-6);
        let none = loss(&ll, &yl, 0.0, None, 4, 2.0)?.to_scalar::<f32>()? as f64;
        assert!((none - sup).abs() < 1e-7);
        let off = loss(&ll, &yl, 0.0, Some((&ls, Targets::Hard(&ys))), 4, 0.0)?
            .to_scalar::<f32>()? as f64;
        assert!((off - sup).abs() < 1e-7);
        Ok(())
    }
}
