//! Mixed precision, autocast-style (`[train] precision = "bf16"`).
//!
//! Inside [`with`]`(Some(BF16), …)` the layers of [`super::layers`] compute in the reduced
//! dtype while everything else keeps f32:
//! - convolutions cast their input and weight to bf16 (the weight is the f32 master copy in the
//!   `VarMap`; the cast is part of the graph, so its gradient arrives in f32) and return bf16
//!   activations, which flow through ReLU, max-pool and the residual adds in bf16 (half the
//!   memory traffic of f32, like PyTorch's autocast);
//! - BatchNorm takes the bf16 activations but computes its statistics and normalisation in f32
//!   (see [`crate::ops::batch_norm2d`]) and keeps f32 running statistics;
//! - global average pooling upcasts to f32 before reducing;
//! - linear layers multiply in bf16 and return f32 (in these models the only linear layer is
//!   the classifier head, whose logits feed the f32 loss);
//! - the loss, the gradients the optimizer sees, and the optimizer state stay f32.
//!
//! bf16 keeps f32's exponent range, so no loss scaling is needed (f16 would need it; it is
//! only used by the CPU tests, because candle's CPU backend has no bf16 matrix multiply).
//!
//! The switch is per thread, like [`crate::ops::with_backend`]: the engine wraps its run loop,
//! so forward and backward (which runs on the same thread) see it, and other runs in the same
//! process (tests) do not.

use std::cell::Cell;

use candle_core::{DType, Device, Result, Tensor};

thread_local! {
    static COMPUTE: Cell<Option<DType>> = const { Cell::new(None) };
}

/// The reduced dtype convolutions and matmuls compute in on this thread, if autocast is on.
pub fn compute_dtype() -> Option<DType> {
    COMPUTE.with(Cell::get)
}

/// Runs `f` with convolutions and matmuls computing in `dtype` (`None`: plain f32) on this
/// thread; the previous setting is restored afterwards, also on panic.
pub fn with<R>(dtype: Option<DType>, f: impl FnOnce() -> R) -> R {
    let prev = COMPUTE.with(|c| c.replace(dtype));
    struct Restore(Option<DType>);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPUTE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(prev);
    f()
}

/// `t` in the compute dtype when autocast is on and `t` is a floating-point tensor of another
/// dtype; `t` itself otherwise (a cheap clone).
pub fn cast(t: &Tensor) -> Result<Tensor> {
    match compute_dtype() {
        Some(dt) if t.dtype() != dt && t.dtype().is_float() => t.to_dtype(dt),
        _ => Ok(t.clone()),
    }
}

/// `t` in f32 when it is in a reduced floating-point dtype (bf16, f16); `t` itself otherwise.
pub fn to_f32(t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::BF16 | DType::F16 => t.to_dtype(DType::F32),
        _ => Ok(t.clone()),
    }
}

/// Whether `device` can train in `dtype`: f32 anywhere; bf16 and f16 only on CUDA (candle's CPU
/// backend has no bf16 matrix multiply, wick's CPU kernels are f32, and candle's f16 CPU path
/// is slower than wick's f32 kernels).
pub fn supported(dtype: DType, device: &Device) -> bool {
    dtype == DType::F32 || device.is_cuda()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn scope_is_per_thread_and_restored() {
        assert_eq!(compute_dtype(), None);
        with(Some(DType::BF16), || {
            assert_eq!(compute_dtype(), Some(DType::BF16));
            with(None, || assert_eq!(compute_dtype(), None));
            assert_eq!(compute_dtype(), Some(DType::BF16));
            std::thread::spawn(|| assert_eq!(compute_dtype(), None))
                .join()
                .unwrap();
        });
        assert_eq!(compute_dtype(), None);
        let r = std::panic::catch_unwind(|| with(Some(DType::F16), || panic!("inside")));
        assert!(r.is_err());
        assert_eq!(compute_dtype(), None);
    }

    #[test]
    fn cast_touches_only_floats_and_gradients_come_back_in_f32() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[1.5f32, -2.0, 0.25], &dev)?)?;
        let idx = Tensor::new(&[1u32, 2], &dev)?;
        let (y, idx_cast) = with(Some(DType::BF16), || -> Result<_> {
            Ok((cast(w.as_tensor())?, cast(&idx)?))
        })?;
        assert_eq!(y.dtype(), DType::BF16);
        assert_eq!(idx_cast.dtype(), DType::U32);
        assert_eq!(
            cast(w.as_tensor())?.dtype(),
            DType::F32,
            "off outside `with`"
        );
        // The cast is part of the graph: the f32 master weight gets an f32 gradient.
        let loss = to_f32(&(y.sqr()?))?.sum_all()?;
        assert_eq!(loss.dtype(), DType::F32);
        let g = loss.backward()?.get(w.as_tensor()).unwrap().clone();
        assert_eq!(g.dtype(), DType::F32);
        assert_eq!(g.to_vec1::<f32>()?, vec![3.0, -4.0, 0.5]);
        Ok(())
    }

    /// The whole models under autocast (f16 stands in for bf16, which candle's CPU backend
    /// cannot multiply): f32 logits close to the f32 ones (compared in eval mode: train-mode
    /// BatchNorm over 4 images of 1x1 pixels amplifies rounding), f32 gradients for every
    /// parameter, f32 BatchNorm running statistics.
    #[test]
    fn models_train_under_autocast_with_f32_masters() -> Result<()> {
        use crate::model::{self, is_trainable};
        use candle_nn::{VarBuilder, VarMap};
        let dev = Device::Cpu;
        for (arch, c, px) in [
            ("wick-cnn", 1, 28),
            ("resnet18", 3, 32),
            ("efficientnet-lite0", 3, 32),
        ] {
            let vm = VarMap::new();
            let m = model::build(arch, c, 5, VarBuilder::from_varmap(&vm, DType::F32, &dev))
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let x = Tensor::randn(0f32, 1., (4, c, px, px), &dev)?;
            let y = Tensor::new(&[0u32, 1, 2, 3], &dev)?;
            let reference = m.forward_t(&x, false, false)?;
            let eval = with(Some(DType::F16), || m.forward_t(&x, false, false))?;
            assert_eq!(eval.dtype(), DType::F32, "{arch}");
            let scale = reference.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            let diff = (&eval - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff < 0.02 * scale,
                "{arch}: |f16 - f32| = {diff} (scale {scale})"
            );
            let logits = with(Some(DType::F16), || m.forward_t(&x, true, false))?;
            assert_eq!(logits.dtype(), DType::F32, "{arch}");
            let loss = crate::engine::loss::cross_entropy(&logits, &y, None, 0.0)?;
            assert_eq!(loss.dtype(), DType::F32);
            let grads = with(Some(DType::F16), || loss.backward())?;
            let data = vm.data().lock().unwrap();
            for (name, var) in data.iter() {
                assert_eq!(var.dtype(), DType::F32, "{arch} {name}");
                if !is_trainable(name) {
                    continue;
                }
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{arch}: no gradient for {name}"));
                assert_eq!(g.dtype(), DType::F32, "{arch} {name}");
                let s = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
                assert!(s.is_finite(), "{arch} {name}: {s}");
            }
        }
        Ok(())
    }

    #[test]
    fn reduced_precision_needs_cuda() {
        assert!(supported(DType::F32, &Device::Cpu));
        assert!(!supported(DType::BF16, &Device::Cpu));
        assert!(!supported(DType::F16, &Device::Cpu));
    }
}
