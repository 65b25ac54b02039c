//! The SGD update (L2 weight decay, momentum, Nesterov) as one in-place pass over a CPU
//! parameter, its gradient and its momentum buffer.
//!
//! Written with candle ops, the update is five to seven full passes per parameter, each with a
//! fresh allocation, run single-threaded (see [`super::init_cpu`]): about 17-20 ms of a
//! ~110 ms ResNet-18 train step at 32 px. Here it is one pass, parallel over chunks, writing
//! the parameter's own storage (as `Var::set` does) and a momentum buffer held as a plain
//! vector by the optimizer.
//!
//! The arithmetic repeats candle's op by op, in the same order and precision (candle's
//! `tensor * scalar` is `v * s + 0`, kept here too), so the result is bit for bit the one of
//! [`crate::engine::optim::Sgd`]'s candle path.

use std::cell::RefCell;

use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Tensor};
use rayon::prelude::*;

use super::kernel::{multiversion, Float};

/// Hyper-parameters of one update of one parameter.
#[derive(Debug, Clone, Copy)]
pub struct SgdHyper {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub nesterov: bool,
}

/// A momentum buffer in host memory, in the parameter's dtype.
#[derive(Debug, Clone)]
pub enum HostBuf {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl HostBuf {
    /// A buffer copied from a CPU tensor of dtype f32 or f64 (`None` for other dtypes).
    pub fn from_tensor(t: &Tensor) -> Result<Option<HostBuf>> {
        let t = t.flatten_all()?;
        Ok(match t.dtype() {
            candle_core::DType::F32 => Some(HostBuf::F32(t.to_vec1()?)),
            candle_core::DType::F64 => Some(HostBuf::F64(t.to_vec1()?)),
            _ => None,
        })
    }

    /// A CPU tensor holding a copy of the buffer.
    pub fn to_tensor(&self, shape: &candle_core::Shape) -> Result<Tensor> {
        let dev = candle_core::Device::Cpu;
        match self {
            HostBuf::F32(v) => Tensor::from_slice(v, shape, &dev),
            HostBuf::F64(v) => Tensor::from_slice(v, shape, &dev),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            HostBuf::F32(v) => v.len(),
            HostBuf::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether [`sgd_update_`] handles `p` with gradient `g`: both on the CPU, the same float
/// dtype (f32 or f64) and shape, contiguous.
pub fn supported(p: &Tensor, g: &Tensor) -> bool {
    p.device().is_cpu()
        && g.device().is_cpu()
        && matches!(p.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
        && p.dtype() == g.dtype()
        && p.dims() == g.dims()
        && p.is_contiguous()
        && g.is_contiguous()
}

/// One SGD step for parameter `p` (updated in place) with gradient `g`:
/// ```text
/// g = g + wd · p                              (wd != 0)
/// buf = g (first) | momentum · buf + g        (momentum != 0; `buf` is updated)
/// g = g + momentum · buf (Nesterov) | buf
/// p = p - lr · g
/// ```
/// `buf` must be `Some` (of `p`'s dtype and size) when `momentum != 0`; with `first` its
/// contents are ignored and overwritten. Requires [`supported`]`(p, g)`.
pub fn sgd_update_(
    p: &Tensor,
    g: &Tensor,
    buf: Option<&mut HostBuf>,
    first: bool,
    h: SgdHyper,
) -> Result<()> {
    if !supported(p, g) {
        candle_core::bail!(
            "sgd_update_: needs contiguous CPU f32/f64 tensors of one dtype and shape, got {:?} {:?} and {:?} {:?}",
            p.dtype(),
            p.dims(),
            g.dtype(),
            g.dims()
        )
    }
    if h.momentum != 0.0 {
        match &buf {
            None => candle_core::bail!("sgd_update_: momentum without a buffer"),
            Some(b) if b.len() != p.elem_count() => candle_core::bail!(
                "sgd_update_: buffer of {} elements for a parameter of {}",
                b.len(),
                p.elem_count()
            ),
            Some(_) => {}
        }
    }
    let op = SgdOp {
        h,
        first,
        buf: RefCell::new(if h.momentum != 0.0 { buf } else { None }),
    };
    p.inplace_op2(g, &op)
}

struct SgdOp<'a> {
    h: SgdHyper,
    first: bool,
    buf: RefCell<Option<&'a mut HostBuf>>,
}

impl InplaceOp2 for SgdOp<'_> {
    fn name(&self) -> &'static str {
        "wick-sgd"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let Some((a, b)) = l1.contiguous_offsets() else {
            candle_core::bail!("wick-sgd: parameter not contiguous")
        };
        let mut buf = self.buf.borrow_mut();
        match (s1, buf.as_deref_mut()) {
            (CpuStorage::F32(p), None) => {
                update::<f32>(&mut p[a..b], f32::slice(s2, l2, "wick-sgd")?, None, self)
            }
            (CpuStorage::F32(p), Some(HostBuf::F32(m))) => {
                update::<f32>(&mut p[a..b], f32::slice(s2, l2, "wick-sgd")?, Some(m), self)
            }
            (CpuStorage::F64(p), None) => {
                update::<f64>(&mut p[a..b], f64::slice(s2, l2, "wick-sgd")?, None, self)
            }
            (CpuStorage::F64(p), Some(HostBuf::F64(m))) => {
                update::<f64>(&mut p[a..b], f64::slice(s2, l2, "wick-sgd")?, Some(m), self)
            }
            (p, _) => candle_core::bail!(
                "wick-sgd: parameter of dtype {:?} with a buffer of another dtype",
                candle_core::backend::BackendStorage::dtype(p)
            ),
        }
    }
}

/// Elements per parallel work unit.
const CHUNK: usize = 32 * 1024;

fn update<T: Float>(p: &mut [T], g: &[T], m: Option<&mut Vec<T>>, op: &SgdOp) -> Result<()> {
    if g.len() != p.len() {
        candle_core::bail!("wick-sgd: gradient of {} elements for {}", g.len(), p.len())
    }
    let k = Coef {
        lr: T::from_f64(op.h.lr),
        wd: T::from_f64(op.h.weight_decay),
        mom: T::from_f64(op.h.momentum),
        decay: op.h.weight_decay != 0.0,
        nesterov: op.h.nesterov,
        first: op.first,
    };
    let n = p.len();
    match m {
        None => {
            let run = |(p, g): (&mut [T], &[T])| plain_mv(p, g, k);
            if n >= 4 * CHUNK {
                p.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .for_each(run);
            } else {
                run((p, g));
            }
        }
        Some(m) => {
            let run = |((p, g), m): ((&mut [T], &[T]), &mut [T])| momentum_mv(p, g, m, k);
            if n >= 4 * CHUNK {
                p.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK))
                    .for_each(run);
            } else {
                run(((p, g), &mut m[..]));
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Coef<T> {
    lr: T,
    wd: T,
    mom: T,
    decay: bool,
    nesterov: bool,
    first: bool,
}

multiversion!(fn plain_mv[T: Float](p: &mut [T], g: &[T], k: Coef<T>) = plain;);
multiversion!(fn momentum_mv[T: Float](p: &mut [T], g: &[T], m: &mut [T], k: Coef<T>) = momentum;);

/// `v * s` as candle's affine computes it: `v * s + 0`.
#[inline(always)]
fn scale<T: Float>(v: T, s: T) -> T {
    v * s + T::zero()
}

#[inline(always)]
fn plain<T: Float>(p: &mut [T], g: &[T], k: Coef<T>) {
    if k.decay {
        for (p, &g) in p.iter_mut().zip(g) {
            let g = g + scale(*p, k.wd);
            *p -= scale(g, k.lr);
        }
    } else {
        for (p, &g) in p.iter_mut().zip(g) {
            *p -= scale(g, k.lr);
        }
    }
}

#[inline(always)]
fn momentum<T: Float>(p: &mut [T], g: &[T], m: &mut [T], k: Coef<T>) {
    // One loop body per flag combination, so that each vectorises without branches.
    macro_rules! body {
        ($decay:expr, $first:expr, $nesterov:expr) => {
            for ((p, &g), m) in p.iter_mut().zip(g).zip(m.iter_mut()) {
                let g = if $decay { g + scale(*p, k.wd) } else { g };
                let b = if $first { g } else { scale(*m, k.mom) + g };
                *m = b;
                let g = if $nesterov { g + scale(b, k.mom) } else { b };
                *p -= scale(g, k.lr);
            }
        };
    }
    match (k.decay, k.first, k.nesterov) {
        (true, false, false) => body!(true, false, false),
        (true, false, true) => body!(true, false, true),
        (false, false, false) => body!(false, false, false),
        (false, false, true) => body!(false, false, true),
        (true, true, false) => body!(true, true, false),
        (true, true, true) => body!(true, true, true),
        (false, true, false) => body!(false, true, false),
        (false, true, true) => body!(false, true, true),
    }
}
