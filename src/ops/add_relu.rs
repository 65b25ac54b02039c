//! `relu(a + b)` as one op: the residual join of a ResNet block.
//!
//! As candle ops this is an add and a ReLU forward, and backward a ReLU gradient built from
//! four ops (`ge`, `to_dtype`, `mul` plus the accumulation), all single-threaded and each with a
//! fresh allocation. Here the forward is one parallel pass and the backward one masked copy,
//! handed to both inputs.
//!
//! The gradient passes where the *output* is positive (PyTorch's `threshold_backward`; candle's
//! ReLU passes it where the input is `>= 0`, which differs only at exactly 0).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{multiversion, Float};

/// `relu(a + b)` for tensors of one shape. wick's kernel on the CPU (f32/f64), candle's ops
/// elsewhere and under `Backend::Candle`.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if super::backend() == super::Backend::Wick
        && a.device().is_cpu()
        && b.device().is_cpu()
        && matches!(a.dtype(), DType::F32 | DType::F64)
        && a.dtype() == b.dtype()
        && a.dims() == b.dims()
    {
        a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
    } else {
        (a + b)?.relu()
    }
}

/// Elements per parallel work unit.
const CHUNK: usize = 32 * 1024;

struct AddRelu;

impl AddRelu {
    fn fwd<T: Float>(
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = T::slice(s1, l1, "add_relu")?;
        let b = T::slice(s2, l2, "add_relu")?;
        let out = zip_map(a, b, "add_relu", add_relu_mv)?;
        Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
    }
}

/// `kernel(out, a, b)` over matching chunks of two equally long operands, in parallel, into a
/// fresh vector: the shared body of the forward and backward passes.
fn zip_map<T: Float>(
    a: &[T],
    b: &[T],
    what: &str,
    kernel: impl Fn(&mut [T], &[T], &[T]) + Sync,
) -> Result<Vec<T>> {
    if a.len() != b.len() {
        candle_core::bail!("{what}: {} vs {} elements", a.len(), b.len())
    }
    let mut out = Vec::<T>::with_capacity(a.len());
    // SAFETY: every element is written below before the vector is read.
    #[allow(clippy::uninit_vec)]
    unsafe {
        out.set_len(a.len())
    };
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| kernel(o, a, b));
    Ok(out)
}

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "wick-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match s1 {
            CpuStorage::F32(_) => Self::fwd::<f32>(s1, l1, s2, l2),
            CpuStorage::F64(_) => Self::fwd::<f64>(s1, l1, s2, l2),
            _ => candle_core::bail!("add_relu: f32/f64 only"),
        }
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?.apply_op2_no_bwd(res, &ReluGrad)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// `grad * (out > 0)`.
struct ReluGrad;

impl ReluGrad {
    fn bwd<T: Float>(
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = T::slice(s1, l1, "add_relu backward")?;
        let y = T::slice(s2, l2, "add_relu backward")?;
        let out = zip_map(g, y, "add_relu backward", mask_mv)?;
        Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
    }
}

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "wick-add-relu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match s1 {
            CpuStorage::F32(_) => Self::bwd::<f32>(s1, l1, s2, l2),
            CpuStorage::F64(_) => Self::bwd::<f64>(s1, l1, s2, l2),
            _ => candle_core::bail!("add_relu backward: f32/f64 only"),
        }
    }
}

multiversion!(fn add_relu_mv[T: Float](o: &mut [T], a: &[T], b: &[T]) = add_relu_slice;);
multiversion!(fn mask_mv[T: Float](o: &mut [T], g: &[T], y: &[T]) = mask_slice;);

#[inline(always)]
fn add_relu_slice<T: Float>(o: &mut [T], a: &[T], b: &[T]) {
    let z = T::zero();
    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
        let s = a + b;
        // NaN propagates (as PyTorch's relu).
        *o = if s < z { z } else { s };
    }
}

#[inline(always)]
fn mask_slice<T: Float>(o: &mut [T], g: &[T], y: &[T]) {
    let z = T::zero();
    for ((o, &g), &y) in o.iter_mut().zip(g).zip(y) {
        *o = if y > z { g } else { z };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{with_backend, Backend};
    use candle_core::{Device, Var};

    /// Forward and both gradients against candle's `(a + b).relu()`, in f32 and f64, on an odd
    /// shape large enough for several parallel chunks, with exact zeros and ties away from 0.
    #[test]
    fn matches_candle_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            for shape in [vec![3usize, 5, 7, 11], vec![2, 64, 37, 29], vec![1]] {
                let a = Var::from_tensor(
                    &Tensor::randn(0f32, 1., shape.as_slice(), &dev)?.to_dtype(dtype)?,
                )?;
                let b = Var::from_tensor(
                    &Tensor::randn(0f32, 1., shape.as_slice(), &dev)?.to_dtype(dtype)?,
                )?;
                let w = Tensor::randn(0f32, 1., shape.as_slice(), &dev)?.to_dtype(dtype)?;
                let run = |backend| -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
                    with_backend(backend, || {
                        let y = add_relu(a.as_tensor(), b.as_tensor())?;
                        let grads = (&y * &w)?.sum_all()?.backward()?;
                        let flat =
                            |t: &Tensor| t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>();
                        Ok((
                            flat(&y)?,
                            flat(grads.get(a.as_tensor()).expect("grad a"))?,
                            flat(grads.get(b.as_tensor()).expect("grad b"))?,
                        ))
                    })
                };
                let (yw, gaw, gbw) = run(Backend::Wick)?;
                let (yc, gac, gbc) = run(Backend::Candle)?;
                assert_eq!(yw, yc, "{dtype:?} {shape:?} forward");
                assert_eq!(gaw, gac, "{dtype:?} {shape:?} grad a");
                assert_eq!(gbw, gbc, "{dtype:?} {shape:?} grad b");
                assert!(yw.contains(&0.0) || shape == [1]);
            }
        }
        Ok(())
    }
}
