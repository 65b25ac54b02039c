//! Kernels candle lacks or runs slowly, as candle custom ops.
//!
//! Each op lives in its own file and is re-exported here, so callers write `ops::max_pool2d`.
//! Every op has a CPU custom-op path (forward and backward) and falls back to a composition of
//! candle's own ops on other devices.
//!
//! The CPU kernels can be switched off process-wide ([`set_backend`], or `WICK_OPS=candle` in
//! the environment) so that the same model code runs on candle's plain ops: the benchmark uses
//! this for its "candle" column, and it is an escape hatch should a kernel misbehave.

pub mod add_relu;
pub mod alloc;
pub mod batchnorm;
pub mod conv;
pub mod depthwise;
pub(crate) mod kernel;
pub mod maxpool;
pub mod sgd;

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

pub use add_relu::add_relu;
pub use batchnorm::{batch_norm2d, BatchNormMode};
pub use conv::conv2d;
pub use depthwise::depthwise_conv2d;
pub use maxpool::max_pool2d;

/// Which implementation the ops use on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// wick's CPU kernels (the default).
    Wick,
    /// candle's own ops, composed where candle lacks the operation.
    Candle,
}

const UNSET: u8 = 0;
const WICK: u8 = 1;
const CANDLE: u8 = 2;
static BACKEND: AtomicU8 = AtomicU8::new(UNSET);

thread_local! {
    static OVERRIDE: Cell<u8> = const { Cell::new(UNSET) };
}

/// The backend in use on this thread: the one [`with_backend`] set, else the process-wide one
/// last set by [`set_backend`], else `Candle` when the environment variable `WICK_OPS` is
/// `candle`, else `Wick`. (The choice is made where an op is called: forward on the caller's
/// thread, backward on the thread that runs `backward()`.)
pub fn backend() -> Backend {
    let local = OVERRIDE.with(Cell::get);
    match if local != UNSET {
        local
    } else {
        BACKEND.load(Ordering::Relaxed)
    } {
        WICK => Backend::Wick,
        CANDLE => Backend::Candle,
        _ => {
            let b = match std::env::var("WICK_OPS") {
                Ok(v) if v.eq_ignore_ascii_case("candle") => Backend::Candle,
                _ => Backend::Wick,
            };
            set_backend(b);
            b
        }
    }
}

/// Selects the backend for the whole process (takes effect for ops built afterwards).
pub fn set_backend(b: Backend) {
    BACKEND.store(
        match b {
            Backend::Wick => WICK,
            Backend::Candle => CANDLE,
        },
        Ordering::Relaxed,
    );
}

/// Runs `f` with backend `b` on this thread only (tests and benchmarks compare both backends
/// in one process without affecting other threads).
pub fn with_backend<R>(b: Backend, f: impl FnOnce() -> R) -> R {
    let code = match b {
        Backend::Wick => WICK,
        Backend::Candle => CANDLE,
    };
    let prev = OVERRIDE.with(|o| o.replace(code));
    struct Restore(u8);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(prev);
    f()
}

/// Process set-up for CPU training; call once at the very start of `main`, before any tensor
/// work and before other threads start (it may set an environment variable).
///
/// candle 0.11 runs its large elementwise ops (the gradient accumulations of every backward,
/// residual adds, optimizer updates) on a second thread pool of its own whose workers spin
/// while they wait; beside rayon's pool (used by the GEMMs and wick's kernels) that
/// oversubscribes the cores, and on a machine shared with other work the spinning collapses
/// throughput (ResNet-18 at 32 px: 55 -> 158 images/s measured on a loaded 2-core machine).
/// Unless the user set `CANDLE_NUM_THREADS`, this sets it to 1 so that those ops run inline
/// on the calling thread. Returns whether it changed anything. It only takes effect if no
/// large candle elementwise op ran before.
pub fn init_cpu() -> bool {
    if std::env::var_os("CANDLE_NUM_THREADS").is_some() {
        return false;
    }
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    true
}
