//! The threaded loader: worker threads decode, augment and normalise images so that the
//! training engine never waits on decoding.
//!
//! [`Loader::batches`] starts its own worker threads for one pass over an `order`. Workers take
//! items (not whole batches) one at a time, so a batch is decoded by all workers together, and
//! may only run a bounded window ahead of the consumer (a few batches), which bounds memory.
//! Results travel over a bounded `sync_channel` and are put back in order by the iterator.
//! Dropping the iterator stops the workers (each finishes at most the item it is on) and joins
//! them.
//!
//! Each sample's augmentation comes from [`sample_rng`] (seed, epoch, index, kind, repeat), so
//! batches are identical whatever the number of workers or their scheduling.
//!
//! Decoded (pre-augmentation) images are cached in memory while the total stays under
//! `cache_mib`, so a small dataset is decoded once; files that fail to decode are remembered
//! too. A corrupt or unreadable file is left out of its batch and reported in
//! [`Batch::skipped`]; it never panics.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

use super::transform::{normalize_into, sample_rng, Preprocess, U8Image};

pub use super::transform::AugmentKind;

/// Batches a worker pool may run ahead of the consumer (in addition to the one being read).
const PREFETCH_BATCHES: usize = 3;

/// One batch of preprocessed images.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Dataset indices of the images in `pixels`, in the requested order (skipped ones left
    /// out). May be empty when every image of the batch was skipped.
    pub indices: Vec<usize>,
    /// `indices.len() * C * H * W` floats, image after image, each CHW row-major.
    pub pixels: Vec<f32>,
    /// Images that could not be used: (dataset index, error message naming the file).
    pub skipped: Vec<(usize, String)>,
}

/// Decodes and preprocesses images of a fixed list of paths, on worker threads.
pub struct Loader {
    shared: Arc<Shared>,
}

/// What the worker threads of every pass share.
struct Shared {
    paths: Arc<Vec<PathBuf>>,
    preprocess: Preprocess,
    /// The preprocessing's validation error, if any: every image is then skipped with it.
    invalid: Option<String>,
    workers: usize,
    cache: Cache,
}

/// Decoded images (or decode errors) kept while they fit the byte budget.
struct Cache {
    slots: Vec<OnceLock<Result<Arc<U8Image>, String>>>,
    budget: usize,
    used: AtomicUsize,
}

impl Cache {
    fn new(len: usize, budget: usize) -> Cache {
        let slots = if budget == 0 {
            Vec::new()
        } else {
            (0..len).map(|_| OnceLock::new()).collect()
        };
        Cache {
            slots,
            budget,
            used: AtomicUsize::new(0),
        }
    }

    /// Whether `index` is cached or may still be (the budget is not used up).
    fn may_hold(&self, index: usize) -> bool {
        self.slots.get(index).is_some_and(|slot| {
            slot.get().is_some() || self.used.load(Ordering::Acquire) < self.budget
        })
    }

    /// The cached decode of `index`, or `load()` (cached when the budget allows).
    fn get_or_load(
        &self,
        index: usize,
        load: impl FnOnce() -> Result<U8Image, String>,
    ) -> Result<Arc<U8Image>, String> {
        let Some(slot) = self.slots.get(index) else {
            return load().map(Arc::new);
        };
        if let Some(hit) = slot.get() {
            return hit.clone();
        }
        let loaded = load().map(Arc::new);
        let cost = match &loaded {
            Ok(img) => img.byte_len(),
            Err(msg) => msg.len(),
        };
        let reserved = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + cost <= self.budget).then_some(used + cost)
            })
            .is_ok();
        if reserved && slot.set(loaded.clone()).is_err() {
            // Another worker cached it first: give the reservation back.
            self.used.fetch_sub(cost, Ordering::AcqRel);
        }
        loaded
    }
}

impl Loader {
    /// A loader over `paths`. `workers` = 0 uses one thread per available core; `cache_mib` =
    /// 0 disables the decoded-image cache.
    ///
    /// `preprocess` should have been checked with [`Preprocess::validate`]; if it is invalid,
    /// every image is reported in [`Batch::skipped`] with the reason.
    pub fn new(
        paths: Arc<Vec<PathBuf>>,
        preprocess: Preprocess,
        workers: usize,
        cache_mib: usize,
    ) -> Loader {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        let invalid = preprocess.validate().err().map(|e| e.to_string());
        if let Some(msg) = &invalid {
            tracing::error!("data loader: {msg}");
        }
        let cache = Cache::new(paths.len(), cache_mib.saturating_mul(1 << 20));
        Loader {
            shared: Arc::new(Shared {
                paths,
                preprocess,
                invalid,
                workers,
                cache,
            }),
        }
    }

    /// Batches of `order` (indices into the paths), in order, `batch_size` each (the last may
    /// be smaller; a `batch_size` of 0 is taken as 1), decoded and augmented on worker threads
    /// with a bounded prefetch of a few batches.
    ///
    /// An index listed several times gets a different augmentation each time. An index out of
    /// range is reported in [`Batch::skipped`].
    pub fn batches(
        &self,
        order: Vec<usize>,
        batch_size: usize,
        aug: AugmentKind,
        seed: u64,
        epoch: u64,
    ) -> BatchIter {
        self.batches_from(order, 0, batch_size, aug, seed, epoch)
    }

    /// [`Loader::batches`] over `order[start..]`, each image augmented exactly as in the pass
    /// over the whole `order` (repeats of an index are counted from the start of `order`), so
    /// that a pass resumed mid-way gives the same batches as an uninterrupted one.
    pub fn batches_from(
        &self,
        order: Vec<usize>,
        start: usize,
        batch_size: usize,
        aug: AugmentKind,
        seed: u64,
        epoch: u64,
    ) -> BatchIter {
        let batch_size = batch_size.max(1);
        let mut seen = vec![0u64; self.shared.paths.len()];
        let repeats: Vec<u64> = order
            .iter()
            .map(|&i| {
                seen.get_mut(i).map_or(0, |n| {
                    *n += 1;
                    *n - 1
                })
            })
            .collect();
        let start = start.min(order.len());
        let plan = Arc::new(Plan {
            order: order[start..].to_vec(),
            repeats: repeats[start..].to_vec(),
            batch_size,
            aug,
            seed,
            epoch,
        });
        BatchIter::start(Arc::clone(&self.shared), plan)
    }

    /// The shape of one preprocessed image: (channels, height, width).
    pub fn image_shape(&self) -> (usize, usize, usize) {
        let p = &self.shared.preprocess;
        (p.channels, p.size, p.size)
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.shared.paths.len()
    }

    /// True when there are no paths.
    pub fn is_empty(&self) -> bool {
        self.shared.paths.is_empty()
    }

    /// The paths the indices refer to.
    pub fn paths(&self) -> &Arc<Vec<PathBuf>> {
        &self.shared.paths
    }

    /// Worker threads per pass.
    pub fn workers(&self) -> usize {
        self.shared.workers
    }

    /// Bytes of decoded images currently cached.
    pub fn cached_bytes(&self) -> usize {
        self.shared.cache.used.load(Ordering::Acquire)
    }
}

/// One pass: which items, how.
struct Plan {
    order: Vec<usize>,
    /// For each position: how many times its index came earlier in `order`.
    repeats: Vec<u64>,
    batch_size: usize,
    aug: AugmentKind,
    seed: u64,
    epoch: u64,
}

impl Plan {
    fn batch_count(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    fn batch_len(&self, batch: usize) -> usize {
        let start = batch * self.batch_size;
        self.order.len().saturating_sub(start).min(self.batch_size)
    }
}

/// The preprocessed item at `pos` of the plan, or an error message naming the file.
fn process(shared: &Shared, plan: &Plan, pos: usize) -> Result<Vec<f32>, String> {
    let index = plan.order[pos];
    if let Some(msg) = &shared.invalid {
        return Err(msg.clone());
    }
    let Some(path) = shared.paths.get(index) else {
        return Err(format!(
            "index {index} out of range ({} images)",
            shared.paths.len()
        ));
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let pre = &shared.preprocess;
        let mut rng = sample_rng(plan.seed, plan.epoch, index, plan.aug, plan.repeats[pos]);
        let augmented = if shared.cache.may_hold(index) {
            let img = shared
                .cache
                .get_or_load(index, || pre.decode(path).map_err(|e| e.to_string()))?;
            pre.augment(&img, plan.aug, &mut rng)
        } else {
            // Nothing to keep for the next epoch: decode only what the augmentation needs.
            pre.decode_augment(path, plan.aug, &mut rng)
                .map_err(|e| e.to_string())?
        };
        let mut out = vec![0.0; pre.image_len()];
        normalize_into(&augmented, &pre.mean, &pre.std, &mut out)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(out)
    }));
    outcome.unwrap_or_else(|_| {
        Err(format!(
            "{}: internal error (panic) while preprocessing",
            path.display()
        ))
    })
}

/// Coordination between the iterator and its workers.
struct Control {
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
}

struct State {
    /// Next position of the order to hand out.
    next: usize,
    /// Workers may only take positions below this.
    limit: usize,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a worker panicked outside `catch_unwind`; the state (two
        // counters) is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next position to process, waiting while the window is full; `None` when done or
    /// stopped.
    fn take(&self, total: usize) -> Option<usize> {
        let mut st = self.lock();
        loop {
            if self.stop.load(Ordering::Acquire) || st.next >= total {
                return None;
            }
            if st.next < st.limit {
                st.next += 1;
                return Some(st.next - 1);
            }
            st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

type ItemResult = (usize, Result<Vec<f32>, String>);

fn worker(shared: Arc<Shared>, plan: Arc<Plan>, control: Arc<Control>, tx: SyncSender<ItemResult>) {
    while let Some(pos) = control.take(plan.order.len()) {
        let result = process(&shared, &plan, pos);
        if control.stop.load(Ordering::Acquire) || tx.send((pos, result)).is_err() {
            return;
        }
    }
}

/// A batch being filled in.
struct Partial {
    items: Vec<Option<Result<Vec<f32>, String>>>,
    missing: usize,
}

/// Iterator over the batches of one pass; see [`Loader::batches`]. Dropping it stops and joins
/// the workers.
pub struct BatchIter {
    shared: Arc<Shared>,
    plan: Arc<Plan>,
    control: Arc<Control>,
    rx: Option<Receiver<ItemResult>>,
    threads: Vec<JoinHandle<()>>,
    window: usize,
    next_batch: usize,
    pending: HashMap<usize, Partial>,
}

impl BatchIter {
    fn start(shared: Arc<Shared>, plan: Arc<Plan>) -> BatchIter {
        let total = plan.order.len();
        let window = (PREFETCH_BATCHES * plan.batch_size).max(2 * shared.workers);
        let control = Arc::new(Control {
            state: Mutex::new(State {
                next: 0,
                limit: window.min(total),
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut iter = BatchIter {
            shared: Arc::clone(&shared),
            plan: Arc::clone(&plan),
            control: Arc::clone(&control),
            rx: None,
            threads: Vec::new(),
            window,
            next_batch: 0,
            pending: HashMap::new(),
        };
        if total == 0 {
            return iter;
        }
        let (tx, rx) = sync_channel(window.min(total));
        for n in 0..shared.workers.min(total) {
            let (s, p, c, t) = (
                Arc::clone(&shared),
                Arc::clone(&plan),
                Arc::clone(&control),
                tx.clone(),
            );
            match std::thread::Builder::new()
                .name(format!("wick-data-{n}"))
                .spawn(move || worker(s, p, c, t))
            {
                Ok(handle) => iter.threads.push(handle),
                Err(e) => {
                    tracing::warn!("data loader: cannot start worker thread {n}: {e}");
                    break;
                }
            }
        }
        if !iter.threads.is_empty() {
            iter.rx = Some(rx);
        } else {
            tracing::warn!("data loader: no worker thread, decoding on the caller's thread");
        }
        iter
    }

    /// Fills the missing items of `batch` on this thread (when no worker is left).
    fn fill_inline(&mut self, batch: usize) {
        let start = batch * self.plan.batch_size;
        let len = self.plan.batch_len(batch);
        let partial = self.pending.entry(batch).or_insert_with(|| Partial {
            items: (0..len).map(|_| None).collect(),
            missing: len,
        });
        for (slot, item) in partial.items.iter_mut().enumerate() {
            if item.is_none() {
                *item = Some(process(&self.shared, &self.plan, start + slot));
                partial.missing -= 1;
            }
        }
    }

    /// Takes a completed batch out of `pending` and assembles it.
    fn finish(&mut self, batch: usize) -> Option<Batch> {
        let partial = self.pending.remove(&batch)?;
        let start = batch * self.plan.batch_size;
        let per_image = self.shared.preprocess.image_len();
        let mut out = Batch {
            indices: Vec::with_capacity(partial.items.len()),
            pixels: Vec::with_capacity(partial.items.len() * per_image),
            skipped: Vec::new(),
        };
        for (slot, item) in partial.items.into_iter().enumerate() {
            let index = self.plan.order[start + slot];
            match item {
                Some(Ok(pixels)) => {
                    out.indices.push(index);
                    out.pixels.extend_from_slice(&pixels);
                }
                Some(Err(msg)) => out.skipped.push((index, msg)),
                None => out.skipped.push((index, "not processed".to_string())),
            }
        }
        Some(out)
    }

    /// Lets the workers run up to a window past the start of batch `next_batch`.
    fn advance_window(&self) {
        let consumed = self.next_batch * self.plan.batch_size;
        let mut st = self.control.lock();
        st.limit = (consumed + self.window).min(self.plan.order.len());
        drop(st);
        self.control.wake.notify_all();
    }
}

impl Iterator for BatchIter {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let batch = self.next_batch;
        if batch >= self.plan.batch_count() {
            return None;
        }
        loop {
            if self.pending.get(&batch).is_some_and(|p| p.missing == 0) {
                break;
            }
            let received = self.rx.as_ref().map(|rx| rx.recv());
            match received {
                Some(Ok((pos, result))) => {
                    let b = pos / self.plan.batch_size;
                    let len = self.plan.batch_len(b);
                    let partial = self.pending.entry(b).or_insert_with(|| Partial {
                        items: (0..len).map(|_| None).collect(),
                        missing: len,
                    });
                    let slot = &mut partial.items[pos % self.plan.batch_size];
                    if slot.is_none() {
                        partial.missing -= 1;
                    }
                    *slot = Some(result);
                }
                Some(Err(_)) | None => {
                    // Every worker has exited (or none started): finish on this thread.
                    if self.rx.take().is_some() {
                        tracing::warn!("data loader: workers exited early, continuing inline");
                    }
                    self.fill_inline(batch);
                }
            }
        }
        let out = self.finish(batch);
        self.next_batch += 1;
        self.advance_window();
        out
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.plan.batch_count().saturating_sub(self.next_batch);
        (left, Some(left))
    }
}

impl ExactSizeIterator for BatchIter {}

impl Drop for BatchIter {
    fn drop(&mut self) {
        {
            let _st = self.control.lock();
            self.control.stop.store(true, Ordering::Release);
        }
        self.control.wake.notify_all();
        // Unblocks workers waiting to send.
        drop(self.rx.take());
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                tracing::warn!("data loader: a worker thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Augment;
    use image::{DynamicImage, ImageBuffer, Luma, Rgb};
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// `n` greyscale `w`x`h` PNGs whose pixels depend on the image index.
    fn write_images(dir: &Path, n: usize, w: u32, h: u32) -> Arc<Vec<PathBuf>> {
        let paths: Vec<PathBuf> = (0..n)
            .map(|i| {
                let path = dir.join(format!("{i:04}.png"));
                let img = ImageBuffer::from_fn(w, h, |x, y| {
                    Luma([((i * 31 + x as usize * 7 + y as usize * 3) % 256) as u8])
                });
                DynamicImage::ImageLuma8(img).save(&path).expect("save");
                path
            })
            .collect();
        Arc::new(paths)
    }

    fn grey(size: usize) -> Preprocess {
        Preprocess::new(1, size, vec![0.5], vec![0.25]).expect("preprocess")
    }

    /// What the loader should produce for one item, computed directly.
    fn expected(p: &Preprocess, path: &Path, index: usize, kind: AugmentKind) -> Vec<f32> {
        let img = p.decode(path).expect("decode");
        p.apply(&img, kind, &mut sample_rng(9, 1, index, kind, 0))
            .expect("apply")
    }

    #[test]
    fn batches_come_out_in_order_with_the_right_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write_images(dir.path(), 11, 8, 8);
        let p = grey(8);
        let loader = Loader::new(Arc::clone(&paths), p.clone(), 3, 16);
        assert_eq!(loader.image_shape(), (1, 8, 8));
        let order = vec![10, 3, 7, 0, 1, 2, 9, 4, 8, 6, 5];
        for kind in [AugmentKind::Eval, AugmentKind::Train(Augment::FlipCrop)] {
            let batches: Vec<Batch> = loader.batches(order.clone(), 4, kind, 9, 1).collect();
            assert_eq!(batches.len(), 3);
            let sizes: Vec<usize> = batches.iter().map(|b| b.indices.len()).collect();
            assert_eq!(sizes, vec![4, 4, 3]);
            let got: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
            assert_eq!(got, order);
            for b in &batches {
                assert!(b.skipped.is_empty());
                assert_eq!(b.pixels.len(), b.indices.len() * 64);
                for (k, &i) in b.indices.iter().enumerate() {
                    let want = expected(&p, &paths[i], i, kind);
                    assert_eq!(
                        &b.pixels[k * 64..(k + 1) * 64],
                        want.as_slice(),
                        "{kind:?} {i}"
                    );
                }
            }
        }
        // The eval value of a pixel: image 3 at (x, y) = (1, 2) is 3*31 + 7 + 6 = 106.
        let b = loader
            .batches(vec![3], 1, AugmentKind::Eval, 0, 0)
            .next()
            .expect("batch");
        let v = b.pixels[2 * 8 + 1];
        assert!((v - (106.0 / 255.0 - 0.5) / 0.25).abs() < 1e-6, "{v}");
    }

    #[test]
    fn same_seed_same_batches_whatever_the_workers_and_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write_images(dir.path(), 20, 12, 10);
        let order: Vec<usize> = (0..20).rev().chain(0..5).collect(); // with repeats
        for kind in [
            AugmentKind::Train(Augment::FlipCrop),
            AugmentKind::Train(Augment::RandomResizedCrop),
            AugmentKind::Weak,
            AugmentKind::Strong,
        ] {
            let run = |workers: usize, cache: usize| -> Vec<Batch> {
                Loader::new(Arc::clone(&paths), grey(8), workers, cache)
                    .batches(order.clone(), 6, kind, 42, 3)
                    .collect()
            };
            let reference = run(1, 0);
            assert_eq!(reference, run(2, 0), "{kind:?}");
            assert_eq!(reference, run(4, 64), "{kind:?}");
            assert_eq!(reference, run(0, 64), "{kind:?}");
            // Another epoch differs.
            let other: Vec<Batch> = Loader::new(Arc::clone(&paths), grey(8), 2, 0)
                .batches(order.clone(), 6, kind, 42, 4)
                .collect();
            assert_ne!(reference, other, "{kind:?}");
        }
    }

    #[test]
    fn jpeg_region_decoding_gives_the_cached_batches() {
        // Uncached RandomResizedCrop batches of JPEGs decode only each crop's region; cached
        // ones crop the whole decode. Both must be the same numbers.
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg");
        let paths: Arc<Vec<PathBuf>> = Arc::new(
            [
                "astronaut-321x243-q90.jpg",
                "coffee-242x161-progressive.jpg",
                "coffee-242x161-grey.jpg",
                "astronaut-64x48-cmyk.jpg",
            ]
            .iter()
            .map(|n| fixtures.join(n))
            .collect(),
        );
        let order: Vec<usize> = (0..4).chain(0..4).chain(0..4).collect();
        let kind = AugmentKind::Train(Augment::RandomResizedCrop);
        let rgb = Preprocess::new(3, 32, vec![0.5; 3], vec![0.25; 3]).expect("preprocess");
        let run = |workers: usize, cache: usize| -> Vec<Batch> {
            Loader::new(Arc::clone(&paths), rgb.clone(), workers, cache)
                .batches(order.clone(), 5, kind, 7, 1)
                .collect()
        };
        let uncached = run(1, 0);
        assert_eq!(uncached.iter().map(|b| b.indices.len()).sum::<usize>(), 12);
        assert!(uncached.iter().all(|b| b.skipped.is_empty()));
        assert_eq!(uncached, run(2, 64));
    }

    #[test]
    fn a_pass_resumed_mid_way_gives_the_same_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write_images(dir.path(), 6, 8, 8);
        let loader = Loader::new(paths, grey(8), 2, 16);
        let order: Vec<usize> = (0..6).chain(0..6).chain(0..6).collect(); // repeats
        let kind = AugmentKind::Train(Augment::FlipCrop);
        let whole: Vec<Batch> = loader.batches(order.clone(), 4, kind, 5, 2).collect();
        let rest: Vec<Batch> = loader
            .batches_from(order.clone(), 8, 4, kind, 5, 2)
            .collect();
        assert_eq!(rest.len(), whole.len() - 2);
        assert_eq!(rest, whole[2..].to_vec());
        // Slicing the order instead restarts the repeat count: different views.
        let sliced: Vec<Batch> = loader.batches(order[8..].to_vec(), 4, kind, 5, 2).collect();
        assert_ne!(sliced, whole[2..].to_vec());
        assert_eq!(loader.batches_from(order, 99, 4, kind, 5, 2).count(), 0);
    }

    #[test]
    fn repeated_index_gets_different_augmentations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write_images(dir.path(), 1, 16, 16);
        let loader = Loader::new(paths, grey(16), 2, 0);
        let kind = AugmentKind::Train(Augment::RandomResizedCrop);
        let b = loader
            .batches(vec![0; 8], 8, kind, 1, 0)
            .next()
            .expect("batch");
        assert_eq!(b.indices, vec![0; 8]);
        let views: std::collections::HashSet<Vec<u32>> = b
            .pixels
            .chunks(256)
            .map(|c| c.iter().map(|v| v.to_bits()).collect())
            .collect();
        assert!(views.len() > 1);
    }

    #[test]
    fn corrupt_and_out_of_range_are_skipped_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut paths = (*write_images(dir.path(), 5, 8, 8)).clone();
        let bad = dir.path().join("corrupt.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\ngarbage").expect("write");
        paths.push(bad);
        paths.push(dir.path().join("gone.png"));
        let loader = Loader::new(Arc::new(paths), grey(8), 2, 16);
        for _pass in 0..2 {
            // (the second pass hits the cached failures)
            let batches: Vec<Batch> = loader
                .batches(vec![0, 5, 1, 6, 99, 2], 3, AugmentKind::Eval, 0, 0)
                .collect();
            assert_eq!(batches.len(), 2);
            assert_eq!(batches[0].indices, vec![0, 1]);
            assert_eq!(batches[0].pixels.len(), 2 * 64);
            assert_eq!(batches[0].skipped.len(), 1);
            assert_eq!(batches[0].skipped[0].0, 5);
            assert!(batches[0].skipped[0].1.contains("corrupt.png"));
            assert_eq!(batches[1].indices, vec![2]);
            let skipped: Vec<usize> = batches[1].skipped.iter().map(|s| s.0).collect();
            assert_eq!(skipped, vec![6, 99]);
            assert!(batches[1].skipped[0].1.contains("gone.png"));
            assert!(batches[1].skipped[1].1.contains("out of range"));
        }
    }

    #[test]
    fn cache_decodes_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write_images(dir.path(), 6, 8, 8);
        let cached = Loader::new(Arc::clone(&paths), grey(8), 2, 1);
        let uncached = Loader::new(Arc::clone(&paths), grey(8), 2, 0);
        let order: Vec<usize> = (0..6).collect();
        let first: Vec<Batch> = cached
            .batches(order.clone(), 4, AugmentKind::Eval, 0, 0)
            .collect();
        assert_eq!(cached.cached_bytes(), 6 * 64);
        for p in paths.iter() {
            std::fs::remove_file(p).expect("remove");
        }
        let second: Vec<Batch> = cached
            .batches(order.clone(), 4, AugmentKind::Eval, 0, 0)
            .collect();
        assert_eq!(first, second, "cached images served without the files");
        let gone: Vec<Batch> = uncached
            .batches(order, 4, AugmentKind::Eval, 0, 0)
            .collect();
        assert!(gone.iter().all(|b| b.indices.is_empty()));
        assert_eq!(gone.iter().map(|b| b.skipped.len()).sum::<usize>(), 6);
        assert_eq!(uncached.cached_bytes(), 0);
    }

    #[test]
    fn cache_respects_its_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 3 RGB images of 512x512 = 768 KiB each: only one fits in 1 MiB.
        let paths: Vec<PathBuf> = (0..3)
            .map(|i| {
                let path = dir.path().join(format!("{i}.png"));
                let img = ImageBuffer::from_fn(512, 512, |_, _| Rgb([i as u8, 0, 0]));
                DynamicImage::ImageRgb8(img).save(&path).expect("save");
                path
            })
            .collect();
        let p = Preprocess::new(3, 4, vec![0.0; 3], vec![1.0; 3]).expect("preprocess");
        let loader = Loader::new(Arc::new(paths), p, 2, 1);
        let n: usize = loader
            .batches(vec![0, 1, 2], 2, AugmentKind::Eval, 0, 0)
            .map(|b| b.indices.len())
            .sum();
        assert_eq!(n, 3);
        assert_eq!(loader.cached_bytes(), 512 * 512 * 3);
    }

    #[test]
    fn dropping_early_stops_the_workers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write_images(dir.path(), 4, 64, 64);
        let loader = Loader::new(paths, grey(32), 2, 0);
        let order: Vec<usize> = (0..20_000).map(|i| i % 4).collect();
        let kind = AugmentKind::Train(Augment::RandomResizedCrop);

        let start = Instant::now();
        let mut it = loader.batches(order.clone(), 8, kind, 0, 0);
        assert_eq!(it.len(), 2500);
        let first = it.next().expect("first batch");
        assert_eq!(first.indices.len(), 8);
        drop(it);
        // Never-consumed iterators stop too.
        drop(loader.batches(order.clone(), 8, kind, 0, 1));
        let elapsed = start.elapsed();
        assert!(elapsed < Duration::from_secs(5), "drop took {elapsed:?}");

        // A take() in a for loop (the usual early exit) works as well.
        let taken = loader.batches(order, 8, kind, 0, 2).take(3).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn many_early_drops_never_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write_images(dir.path(), 7, 8, 8);
        let start = Instant::now();
        for round in 0..60usize {
            let loader = Loader::new(Arc::clone(&paths), grey(8), 1 + round % 4, round % 2);
            let order: Vec<usize> = (0..200).map(|i| (i * 5 + round) % 7).collect();
            let batch = 1 + round % 9;
            let take = round % 5;
            let kind = AugmentKind::Train(Augment::FlipCrop);
            let got = loader.batches(order, batch, kind, 0, 0).take(take).count();
            assert_eq!(got, take);
        }
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn loader_and_iterator_can_move_between_threads() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<Loader>();
        sync::<Loader>();
        send::<BatchIter>();
        send::<Batch>();
    }

    #[test]
    fn edge_cases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write_images(dir.path(), 3, 8, 8);
        let loader = Loader::new(Arc::clone(&paths), grey(8), 2, 0);
        assert_eq!(
            loader
                .batches(Vec::new(), 4, AugmentKind::Eval, 0, 0)
                .count(),
            0
        );
        // batch_size 0 is taken as 1.
        let sizes: Vec<usize> = loader
            .batches(vec![0, 1, 2], 0, AugmentKind::Eval, 0, 0)
            .map(|b| b.indices.len())
            .collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        // A batch larger than the data.
        let b: Vec<Batch> = loader
            .batches(vec![2, 1], 100, AugmentKind::Eval, 0, 0)
            .collect();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].indices, vec![2, 1]);

        // Invalid preprocessing: every image skipped, with the reason.
        let bad = Preprocess {
            channels: 2,
            size: 8,
            mean: vec![0.0; 2],
            std: vec![1.0; 2],
        };
        let loader = Loader::new(paths, bad, 1, 0);
        let b = loader
            .batches(vec![0, 1], 2, AugmentKind::Eval, 0, 0)
            .next()
            .expect("batch");
        assert!(b.indices.is_empty() && b.pixels.is_empty());
        assert_eq!(b.skipped.len(), 2);
        assert!(b.skipped[0].1.contains("channels"), "{}", b.skipped[0].1);
    }

    #[test]
    fn rgb_output_is_chw() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rgb.png");
        let img = ImageBuffer::from_fn(4, 4, |_, _| Rgb([255u8, 0, 51]));
        DynamicImage::ImageRgb8(img).save(&path).expect("save");
        let p = Preprocess::new(3, 4, vec![0.0; 3], vec![1.0; 3]).expect("preprocess");
        let loader = Loader::new(Arc::new(vec![path]), p, 1, 0);
        assert_eq!(loader.image_shape(), (3, 4, 4));
        let b = loader
            .batches(vec![0], 1, AugmentKind::Eval, 0, 0)
            .next()
            .expect("batch");
        assert!(b.pixels[..16].iter().all(|&v| v == 1.0));
        assert!(b.pixels[16..32].iter().all(|&v| v == 0.0));
        assert!(b.pixels[32..].iter().all(|&v| (v - 0.2).abs() < 1e-6));
    }
}

/// Runs over the bundled `data/fashion-*` sets (committed to the repository).
#[cfg(test)]
mod bundled {
    use super::*;
    use crate::config::Augment;
    use crate::data::image_folder::{check_same_classes, ImageFolder};
    use std::path::Path;
    use std::time::Instant;

    fn bundled(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data")
            .join(name)
    }

    #[test]
    fn bundled_sets_scan_and_load() {
        let expect = [
            (
                "fashion-target",
                ["Coat", "Dress", "Pullover", "T-shirt_top", "Trouser"],
            ),
            (
                "fashion-source",
                ["Ankle_boot", "Bag", "Sandal", "Shirt", "Sneaker"],
            ),
        ];
        for (name, classes) in expect {
            let train = ImageFolder::scan(&bundled(name).join("train")).expect("train");
            let val = ImageFolder::scan(&bundled(name).join("val")).expect("val");
            check_same_classes(&train, &val).expect("same classes");
            assert_eq!(train.classes, classes);
            assert_eq!(train.class_counts(), vec![1000; 5]);
            assert_eq!(val.class_counts(), vec![200; 5]);

            let p = Preprocess::new(1, 28, vec![0.286], vec![0.353]).expect("preprocess");
            let loader = Loader::new(Arc::new(val.paths()), p, 2, 64);
            let order: Vec<usize> = (0..val.len()).collect();
            let mut seen = 0;
            for b in loader.batches(order, 128, AugmentKind::Eval, 0, 0) {
                assert!(b.skipped.is_empty(), "{:?}", b.skipped);
                assert_eq!(b.pixels.len(), b.indices.len() * 28 * 28);
                seen += b.indices.len();
            }
            assert_eq!(seen, 1000);
        }
    }

    /// Throughput of the loader on the bundled train set (prints images/s per pass).
    #[test]
    #[ignore = "timing, run by hand with --nocapture"]
    fn loader_throughput_on_bundled_train() {
        let train = ImageFolder::scan(&bundled("fashion-target").join("train")).expect("train");
        let n = train.len();
        for (size, cache) in [(28, 64), (28, 0), (32, 64), (96, 64)] {
            let p = Preprocess::new(1, size, vec![0.5], vec![0.5]).expect("preprocess");
            let loader = Loader::new(Arc::new(train.paths()), p, 0, cache);
            for (epoch, kind) in [
                AugmentKind::Eval,
                AugmentKind::Train(Augment::FlipCrop),
                AugmentKind::Train(Augment::RandomResizedCrop),
                AugmentKind::Strong,
            ]
            .into_iter()
            .enumerate()
            {
                let start = Instant::now();
                let count: usize = loader
                    .batches((0..n).collect(), 128, kind, 0, epoch as u64)
                    .map(|b| b.indices.len())
                    .sum();
                let secs = start.elapsed().as_secs_f64();
                println!(
                    "size {size} cache {cache} MiB {kind:?}: {count} images in {secs:.2}s = {:.0}/s",
                    count as f64 / secs
                );
            }
        }
    }
}
