//! Learning-rate schedules, as a pure function of training progress.
//!
//! `lr(t) = warm(t) · sched(t)` with `t` the fractional number of epochs done:
//! - `warm(t)`: linear warm-up from 1/10 to 1 over `warmup_epochs` (1 afterwards, and always 1
//!   when `warmup_epochs == 0`);
//! - `constant`: `base`;
//! - `step`: `base · gamma^floor(t / step_epochs)`;
//! - `cosine`: `base` during the warm-up, then `base · (1 + cos(π · (t - w) / (total - w))) / 2`,
//!   which starts at `base` where the warm-up ends and reaches 0 at `total`.

use crate::config::{Schedule, TrainConfig};

/// The learning rate after `epoch_pos` epochs (fractional) of `total_epochs`. `epoch_pos` is
/// clamped to `[0, total_epochs]`; non-finite inputs give `base_lr`.
pub fn lr_at(cfg: &TrainConfig, base_lr: f64, epoch_pos: f64, total_epochs: f64) -> f64 {
    if !epoch_pos.is_finite() || !total_epochs.is_finite() {
        return base_lr;
    }
    let total = total_epochs.max(0.0);
    let t = epoch_pos.clamp(0.0, total);
    let w = if cfg.warmup_epochs.is_finite() {
        cfg.warmup_epochs.max(0.0)
    } else {
        0.0
    };
    let warm = if w > 0.0 && t < w {
        0.1 + 0.9 * t / w
    } else {
        1.0
    };
    let sched = match cfg.schedule {
        Schedule::Constant => base_lr,
        Schedule::Step => {
            let every = cfg.step_epochs.max(1) as f64;
            base_lr * cfg.gamma.powf((t / every).floor())
        }
        Schedule::Cosine => {
            let span = total - w;
            if t <= w || span <= 0.0 {
                base_lr
            } else {
                let progress = ((t - w) / span).clamp(0.0, 1.0);
                base_lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    };
    warm * sched
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(schedule: Schedule, warmup: f64) -> TrainConfig {
        TrainConfig {
            schedule,
            warmup_epochs: warmup,
            step_epochs: 3,
            gamma: 0.5,
            ..TrainConfig::default()
        }
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn constant() {
        let c = cfg(Schedule::Constant, 0.0);
        for t in [0.0, 1.5, 10.0] {
            close(lr_at(&c, 0.1, t, 10.0), 0.1);
        }
    }

    #[test]
    fn step() {
        let c = cfg(Schedule::Step, 0.0);
        close(lr_at(&c, 0.1, 0.0, 10.0), 0.1);
        close(lr_at(&c, 0.1, 2.99, 10.0), 0.1);
        close(lr_at(&c, 0.1, 3.0, 10.0), 0.05);
        close(lr_at(&c, 0.1, 6.5, 10.0), 0.025);
        close(lr_at(&c, 0.1, 9.0, 10.0), 0.0125);
    }

    #[test]
    fn cosine() {
        let c = cfg(Schedule::Cosine, 0.0);
        close(lr_at(&c, 0.1, 0.0, 10.0), 0.1);
        close(lr_at(&c, 0.1, 5.0, 10.0), 0.05);
        close(
            lr_at(&c, 0.1, 2.5, 10.0),
            0.1 * 0.5 * (1.0 + (0.25 * std::f64::consts::PI).cos()),
        );
        close(lr_at(&c, 0.1, 10.0, 10.0), 0.0);
        close(lr_at(&c, 0.1, 12.0, 10.0), 0.0);
    }

    #[test]
    fn warmup_then_cosine() {
        let c = cfg(Schedule::Cosine, 2.0);
        close(lr_at(&c, 0.1, 0.0, 12.0), 0.01);
        close(lr_at(&c, 0.1, 1.0, 12.0), 0.055);
        close(lr_at(&c, 0.1, 2.0, 12.0), 0.1);
        close(lr_at(&c, 0.1, 7.0, 12.0), 0.05);
        close(lr_at(&c, 0.1, 12.0, 12.0), 0.0);
    }

    #[test]
    fn warmup_with_step_and_constant() {
        let c = cfg(Schedule::Step, 4.0);
        close(lr_at(&c, 1.0, 0.0, 10.0), 0.1);
        // t = 3.5: warm = 0.1 + 0.9 * 3.5 / 4, step factor 0.5
        close(lr_at(&c, 1.0, 3.5, 10.0), (0.1 + 0.9 * 0.875) * 0.5);
        let c = cfg(Schedule::Constant, 1.0);
        close(lr_at(&c, 0.2, 0.5, 10.0), 0.2 * 0.55);
        close(lr_at(&c, 0.2, 1.0, 10.0), 0.2);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let c = cfg(Schedule::Cosine, 5.0);
        close(lr_at(&c, 0.1, -1.0, 10.0), 0.01);
        close(lr_at(&c, 0.1, f64::NAN, 10.0), 0.1);
        close(lr_at(&c, 0.1, 1.0, 0.0), 0.01);
        // warm-up longer than training
        let c = cfg(Schedule::Cosine, 20.0);
        assert!(lr_at(&c, 0.1, 10.0, 10.0) > 0.0);
    }
}
