//! Kernels candle lacks or runs slowly, as candle custom ops.
//!
//! Each op lives in its own file and is re-exported here, so callers write `ops::max_pool2d`.
//! Every op has a CPU custom-op path (forward and backward) and falls back to a composition of
//! candle's own ops on other devices.

pub mod depthwise;
pub mod maxpool;

pub use depthwise::depthwise_conv2d;
pub use maxpool::max_pool2d;
