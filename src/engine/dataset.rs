//! The run's data: labelled images, the unlabelled pool (its true labels hidden from training
//! and kept only to measure pseudo-label precision), and the validation set.

use std::path::PathBuf;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::data::{self, DataError, ImageFolder};

pub struct RunData {
    pub classes: Vec<String>,
    /// Every training image: labelled ones and the pool, indexed by position.
    pub paths: Arc<Vec<PathBuf>>,
    /// Label usable for training: `Some` for labelled images only.
    pub labels: Vec<Option<usize>>,
    /// True labels of pool images, hidden from training (only for pseudo-label precision).
    pub hidden_truth: Vec<Option<usize>>,
    pub labelled: Vec<usize>,
    pub pool: Vec<usize>,
    pub val_paths: Arc<Vec<PathBuf>>,
    pub val_labels: Vec<usize>,
}

impl RunData {
    /// Scans the folders named in the config and splits labelled / unlabelled.
    pub fn prepare(cfg: &Config) -> Result<RunData, DataError> {
        let train = ImageFolder::scan(&cfg.data.train)?;
        let val = ImageFolder::scan(&cfg.data.val)?;
        data::check_same_classes(&train, &val)?;
        let classes = train.classes.clone();

        // Seeded per-class draw of the labelled subset.
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
        for (i, s) in train.samples.iter().enumerate() {
            if let Some(l) = s.label {
                by_class[l].push(i);
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_1abe);
        let mut is_labelled = vec![cfg.data.labels_per_class == 0; train.samples.len()];
        if cfg.data.labels_per_class > 0 {
            for members in &mut by_class {
                members.shuffle(&mut rng);
                for &i in members.iter().take(cfg.data.labels_per_class) {
                    is_labelled[i] = true;
                }
            }
        }

        let mut paths = Vec::with_capacity(train.samples.len());
        let mut labels = Vec::with_capacity(train.samples.len());
        let mut hidden_truth = Vec::with_capacity(train.samples.len());
        let (mut labelled, mut pool) = (Vec::new(), Vec::new());
        for (i, s) in train.samples.into_iter().enumerate() {
            let at = paths.len();
            paths.push(s.path);
            if is_labelled[i] {
                labels.push(s.label);
                hidden_truth.push(None);
                labelled.push(at);
            } else {
                labels.push(None);
                hidden_truth.push(s.label);
                pool.push(at);
            }
        }
        if let Some(dir) = &cfg.data.unlabelled {
            for p in data::scan_unlabelled(dir)? {
                pool.push(paths.len());
                paths.push(p);
                labels.push(None);
                hidden_truth.push(None);
            }
        }
        let val_labels = val.samples.iter().map(|s| s.label.unwrap_or(0)).collect();
        let val_paths = val.samples.into_iter().map(|s| s.path).collect();
        Ok(RunData {
            classes,
            paths: Arc::new(paths),
            labels,
            hidden_truth,
            labelled,
            pool,
            val_paths: Arc::new(val_paths),
            val_labels,
        })
    }
}
