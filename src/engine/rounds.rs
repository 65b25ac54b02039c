//! The policy side of pseudo-label rounds, as pure functions the runner calls: λ with its
//! ramp-up, when an automatic round is due (after a fixed number of epochs, or on a validation
//! plateau), which pool images a round predicts, how an epoch's order repeats a small set, and
//! the self-training part of the checkpointed state ([`SslState`]).

use std::collections::{HashMap, HashSet};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::{RoundTrigger, SelfTrainingConfig};
use crate::engine::checkpoint::PseudoLabel;

/// Self-training state kept in checkpoints beyond the round counters and the pseudo-label set
/// of [`crate::engine::checkpoint::TrainState`]. Every field defaults to empty, so older
/// checkpoints read back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SslState {
    /// Soft targets of `TrainState::pseudo`, row for row (sharpened class probabilities);
    /// empty with hard labels.
    pub soft: Vec<Vec<f32>>,
    /// Epoch count when the current phase (the supervised epochs, or the latest round) began.
    pub phase_start_epoch: u32,
    /// Best validation accuracy within the current phase, and the epoch it was reached.
    pub phase_best_acc: f64,
    pub phase_best_epoch: u32,
    /// Online mode, FlexMatch's learning status: per pool position, the class of the latest
    /// weak-view prediction that reached the threshold (`None`: not yet). Empty unless
    /// `policy = "adaptive"`.
    pub selected: Vec<Option<u32>>,
    /// Online mode: the epoch in progress so far, for its report (see [`OnlineTally`]).
    pub tally: OnlineTally,
}

/// What the online mode saw of the pool during one epoch: the pseudo-labels that passed their
/// threshold (latest visit per image) and the confidence histogram of every weak view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OnlineTally {
    pub labels: Vec<PseudoLabel>,
    pub hist: Vec<u64>,
    /// Weak views predicted.
    pub seen: u64,
}

impl OnlineTally {
    /// Records one weak-view verdict.
    pub fn add(&mut self, index: usize, label: u32, confidence: f32, passed: bool, bins: usize) {
        if self.hist.len() != bins {
            self.hist = vec![0; bins];
        }
        let b = ((confidence.clamp(0.0, 1.0) * bins as f32) as usize).min(bins - 1);
        self.hist[b] += 1;
        self.seen += 1;
        if passed {
            self.labels.push(PseudoLabel {
                index,
                label,
                confidence,
            });
        }
    }

    /// The labels in use after the epoch: one per image (its latest passing verdict), by index.
    pub fn in_use(&self) -> Vec<PseudoLabel> {
        let mut latest: HashMap<usize, &PseudoLabel> = HashMap::new();
        for l in &self.labels {
            latest.insert(l.index, l);
        }
        let mut v: Vec<PseudoLabel> = latest.into_values().cloned().collect();
        v.sort_by_key(|l| l.index);
        v
    }
}

/// λ for the epochs after round `round` (1-based): `pseudo_weight · min(1, round / N)` with
/// `N = pseudo_weight_rampup_rounds`, or the full λ when N is 0.
pub fn pseudo_weight(cfg: &SelfTrainingConfig, round: u32) -> f64 {
    let n = cfg.pseudo_weight_rampup_rounds;
    if n == 0 {
        cfg.pseudo_weight
    } else {
        cfg.pseudo_weight * (f64::from(round) / f64::from(n)).min(1.0)
    }
}

/// Where the run stands, for the trigger decisions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Epochs completed.
    pub epoch: u32,
    /// Batches done in the epoch in progress (0 on an epoch boundary).
    pub batch_in_epoch: u32,
    /// Rounds run so far (any kind), and automatic ones.
    pub round: u32,
    pub auto_rounds: u32,
    pub phase_start_epoch: u32,
    pub phase_best_epoch: u32,
}

/// Whether the current phase is over under `trigger = "plateau"`: its epoch budget
/// (`supervised_epochs` before the first round, `epochs_per_round` after) is spent, or
/// validation accuracy has not improved for `patience` epochs.
fn phase_over(cfg: &SelfTrainingConfig, supervised_epochs: u32, p: &Progress) -> bool {
    let budget = if p.round == 0 {
        supervised_epochs
    } else {
        cfg.epochs_per_round
    };
    let in_phase = p.epoch.saturating_sub(p.phase_start_epoch);
    let best = p.phase_best_epoch.max(p.phase_start_epoch);
    in_phase >= budget || (in_phase > 0 && p.epoch.saturating_sub(best) >= cfg.patience)
}

/// Whether an automatic round should start now (only ever on an epoch boundary). `rounds` is
/// the number of automatic rounds planned (0 when self-training is off).
pub fn auto_round_due(
    cfg: &SelfTrainingConfig,
    supervised_epochs: u32,
    rounds: u32,
    p: &Progress,
) -> bool {
    if p.auto_rounds >= rounds || p.batch_in_epoch != 0 {
        return false;
    }
    match cfg.trigger {
        RoundTrigger::AfterEpochs => {
            p.epoch >= supervised_epochs + p.auto_rounds * cfg.epochs_per_round
        }
        RoundTrigger::Plateau => phase_over(cfg, supervised_epochs, p),
    }
}

/// Whether the run's plan is complete (checked after [`auto_round_due`]).
pub fn plan_done(
    cfg: &SelfTrainingConfig,
    supervised_epochs: u32,
    rounds: u32,
    p: &Progress,
) -> bool {
    match cfg.trigger {
        RoundTrigger::AfterEpochs => p.epoch >= supervised_epochs + rounds * cfg.epochs_per_round,
        RoundTrigger::Plateau => {
            p.batch_in_epoch == 0
                && p.auto_rounds >= rounds
                && phase_over(cfg, supervised_epochs, p)
        }
    }
}

/// The pool images round `round` predicts: all of them, or a seeded sample of `round_pool`
/// (a new sample each round), in pool order.
pub fn round_sample(pool: &[usize], round_pool: usize, seed: u64, round: u32) -> Vec<usize> {
    if round_pool == 0 || round_pool >= pool.len() {
        return pool.to_vec();
    }
    let mut v = pool.to_vec();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0a11_5a3e ^ (u64::from(round) << 32));
    v.shuffle(&mut rng);
    v.truncate(round_pool);
    v.sort_unstable();
    v
}

/// The labels after a round that predicted only `sampled`: the earlier labels of images outside
/// the sample stay, those inside are replaced by `chosen` (by index).
pub fn merge_round(
    previous: &[PseudoLabel],
    sampled: &[usize],
    chosen: Vec<PseudoLabel>,
) -> Vec<PseudoLabel> {
    let inside: HashSet<usize> = sampled.iter().copied().collect();
    let mut out: Vec<PseudoLabel> = previous
        .iter()
        .filter(|l| !inside.contains(&l.index))
        .cloned()
        .chain(chosen)
        .collect();
    out.sort_by_key(|l| l.index);
    out
}

/// An epoch's order over `items` (sorted): shuffled by a generator derived from the seed and
/// the epoch; repeated as whole reshuffled passes until it holds at least `min_images` (the
/// first pass is the plain one-pass order, so `min_images = 0` changes nothing).
pub fn epoch_permutation(
    items: Vec<usize>,
    seed: u64,
    epoch: u32,
    min_images: usize,
) -> Vec<usize> {
    let mut first = items;
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9) ^ epoch as u64);
    first.shuffle(&mut rng);
    let n = first.len();
    if n == 0 || min_images <= n {
        return first;
    }
    let passes = min_images.div_ceil(n);
    let mut order = Vec::with_capacity(passes * n);
    order.extend_from_slice(&first);
    for pass in 1..passes {
        let mut more = first.clone();
        more.sort_unstable();
        let mut rng = ChaCha8Rng::seed_from_u64(
            seed.wrapping_mul(0x9e37_79b9) ^ epoch as u64 ^ ((pass as u64) << 40),
        );
        more.shuffle(&mut rng);
        order.extend(more);
    }
    order
}

/// `count` items of an endless stream of seeded permutations of `items`, starting at stream
/// position `start`: the online mode's sampler (every image once per pass, a fresh order each
/// pass), a pure function of its arguments so a resumed run draws the same.
pub fn stream(items: &[usize], seed: u64, salt: u64, start: usize, count: usize) -> Vec<usize> {
    let n = items.len();
    if n == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(count);
    let mut pos = start;
    let mut perm: Option<(usize, Vec<usize>)> = None;
    while out.len() < count {
        let pass = pos / n;
        if perm.as_ref().is_none_or(|(p, _)| *p != pass) {
            let mut v = items.to_vec();
            let mut rng = ChaCha8Rng::seed_from_u64(
                seed ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d)
                    ^ (pass as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            v.shuffle(&mut rng);
            perm = Some((pass, v));
        }
        if let Some((_, v)) = &perm {
            out.push(v[pos % n]);
        }
        pos += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SelfTrainingConfig {
        SelfTrainingConfig::default()
    }

    fn progress(epoch: u32, round: u32, auto: u32, start: u32, best: u32) -> Progress {
        Progress {
            epoch,
            batch_in_epoch: 0,
            round,
            auto_rounds: auto,
            phase_start_epoch: start,
            phase_best_epoch: best,
        }
    }

    #[test]
    fn lambda_ramps_up_linearly_then_holds() {
        let mut c = cfg();
        c.pseudo_weight = 0.6;
        assert_eq!(pseudo_weight(&c, 1), 0.6);
        c.pseudo_weight_rampup_rounds = 3;
        let w: Vec<f64> = (1..=5).map(|r| pseudo_weight(&c, r)).collect();
        for (got, want) in w.iter().zip([0.2, 0.4, 0.6, 0.6, 0.6]) {
            assert!((got - want).abs() < 1e-12, "{w:?}");
        }
        assert_eq!(pseudo_weight(&c, 0), 0.0);
    }

    #[test]
    fn after_epochs_trigger_is_the_fixed_schedule() {
        let c = cfg(); // 3 rounds, 2 epochs each
        let due = |e, auto| auto_round_due(&c, 4, 3, &progress(e, auto, auto, 0, 0));
        assert!(!due(3, 0));
        assert!(due(4, 0));
        assert!(!due(5, 1));
        assert!(due(6, 1));
        assert!(!due(10, 3));
        let done = |e| plan_done(&c, 4, 3, &progress(e, 3, 3, 0, 0));
        assert!(!done(9));
        assert!(done(10));
        let mut mid = progress(4, 0, 0, 0, 0);
        mid.batch_in_epoch = 3;
        assert!(!auto_round_due(&c, 4, 3, &mid));
    }

    #[test]
    fn plateau_trigger_ends_a_phase_after_patience_epochs_without_progress() {
        let mut c = cfg();
        c.trigger = RoundTrigger::Plateau;
        c.patience = 2;
        c.epochs_per_round = 10;
        // Supervised phase, budget 20: best at epoch 5, now epoch 6 → not yet; 7 → due.
        assert!(!auto_round_due(&c, 20, 3, &progress(6, 0, 0, 0, 5)));
        assert!(auto_round_due(&c, 20, 3, &progress(7, 0, 0, 0, 5)));
        // Budget spent even while improving.
        assert!(auto_round_due(&c, 20, 3, &progress(20, 0, 0, 0, 20)));
        // Round 1 began at epoch 7: its best is still the start → after 2 epochs, due.
        assert!(!auto_round_due(&c, 20, 3, &progress(8, 1, 1, 7, 0)));
        assert!(auto_round_due(&c, 20, 3, &progress(9, 1, 1, 7, 0)));
        // No round just started (0 epochs in the phase) is ever over on patience alone.
        assert!(!auto_round_due(&c, 20, 3, &progress(9, 2, 2, 9, 0)));
        // After the last automatic round, the plan ends on the same rule.
        assert!(!plan_done(&c, 20, 1, &progress(10, 1, 1, 9, 10)));
        assert!(plan_done(&c, 20, 1, &progress(12, 1, 1, 9, 10)));
        assert!(!plan_done(&c, 20, 2, &progress(12, 1, 1, 9, 10)));
    }

    #[test]
    fn round_samples_are_seeded_subsets_in_pool_order() {
        let pool: Vec<usize> = (100..200).collect();
        assert_eq!(round_sample(&pool, 0, 1, 1), pool);
        assert_eq!(round_sample(&pool, 500, 1, 1), pool);
        let a = round_sample(&pool, 10, 1, 1);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|i| pool.contains(i)));
        assert_eq!(a, round_sample(&pool, 10, 1, 1));
        assert_ne!(a, round_sample(&pool, 10, 1, 2));
    }

    #[test]
    fn merge_keeps_labels_outside_the_sample() {
        let l = |index, label| PseudoLabel {
            index,
            label,
            confidence: 0.9,
        };
        let prev = vec![l(1, 0), l(2, 0), l(5, 1)];
        let merged = merge_round(&prev, &[2, 3, 4], vec![l(3, 1)]);
        let got: Vec<(usize, u32)> = merged.iter().map(|x| (x.index, x.label)).collect();
        assert_eq!(got, vec![(1, 0), (3, 1), (5, 1)]);
    }

    #[test]
    fn epoch_permutation_repeats_whole_passes() {
        let items: Vec<usize> = (0..10).collect();
        let one = epoch_permutation(items.clone(), 3, 1, 0);
        assert_eq!(one, epoch_permutation(items.clone(), 3, 1, 10));
        let mut sorted = one.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, items);
        let three = epoch_permutation(items.clone(), 3, 1, 25);
        assert_eq!(three.len(), 30);
        assert_eq!(&three[..10], one.as_slice());
        for pass in three.chunks(10) {
            let mut p = pass.to_vec();
            p.sort_unstable();
            assert_eq!(p, items);
        }
        assert_ne!(&three[10..20], &three[20..30]);
    }

    #[test]
    fn stream_is_a_pure_function_of_its_position() {
        let items: Vec<usize> = (0..7).collect();
        let long = stream(&items, 9, 1, 0, 30);
        assert_eq!(&long[10..25], stream(&items, 9, 1, 10, 15).as_slice());
        for pass in long[..28].chunks(7) {
            let mut p = pass.to_vec();
            p.sort_unstable();
            assert_eq!(p, items);
        }
        assert_ne!(stream(&items, 9, 2, 0, 7), long[..7].to_vec());
        assert!(stream(&[], 1, 1, 0, 5).is_empty());
    }

    #[test]
    fn tally_keeps_the_latest_passing_verdict_per_image() {
        let mut t = OnlineTally::default();
        t.add(4, 1, 0.97, true, 10);
        t.add(2, 0, 0.50, false, 10);
        t.add(4, 2, 0.99, true, 10);
        t.add(3, 0, 0.96, true, 10);
        assert_eq!(t.seen, 4);
        assert_eq!(t.hist[9], 3);
        assert_eq!(t.hist[5], 1);
        let used: Vec<(usize, u32)> = t.in_use().iter().map(|l| (l.index, l.label)).collect();
        assert_eq!(used, vec![(3, 0), (4, 2)]);
    }

    #[test]
    fn state_defaults_when_absent() {
        let s: SslState = serde_json::from_str("{}").expect("empty object");
        assert_eq!(s, SslState::default());
        let s = SslState {
            soft: vec![vec![0.25, 0.75]],
            phase_start_epoch: 3,
            phase_best_acc: 0.5,
            phase_best_epoch: 4,
            selected: vec![Some(1), None],
            tally: OnlineTally {
                labels: Vec::new(),
                hist: vec![1, 2],
                seen: 3,
            },
        };
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(serde_json::from_str::<SslState>(&json).expect("back"), s);
    }
}
