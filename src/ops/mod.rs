//! Kernels candle lacks or runs slowly, as candle custom ops.
