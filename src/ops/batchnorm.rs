//! 2-D batch normalisation (optionally followed by ReLU) as one fused op, forward and backward.
//!
//! Train mode normalises with the batch mean and the biased batch variance over `(N, H, W)`;
//! eval mode with given (running) statistics. On the CPU in f32/f64 this is a custom op:
//! - forward: one pass for the per-channel statistics (f64 accumulators, shifted by the
//!   channel's first value), one pass for `y = [relu](x * scale + shift)`;
//! - backward: one pass for `Σ dz` and `Σ dz * (x - mean)` (with `dz = dy * (y > 0)` when
//!   ReLU is fused), one pass for `dx`; the weight and bias gradients come out of the first.
//!
//! Elsewhere (other devices, other dtypes, or [`super::Backend::Candle`]) the same maths runs as
//! a composition of candle's ops.
//!
//! The running-statistics update is the caller's ([`crate::model::BatchNorm2d`]): this returns
//! the batch statistics, detached.

use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{multiversion, zeroed, Float};

/// Which statistics normalise the input.
#[derive(Debug, Clone, Copy)]
pub enum BatchNormMode<'a> {
    /// Batch statistics (and they are returned).
    Train,
    /// Given statistics, e.g. the running mean and (unbiased) running variance, `[C]` each.
    Eval { mean: &'a Tensor, var: &'a Tensor },
}

/// Batch statistics of a train-mode forward, detached, `[C]` each, in the input's dtype (f32
/// for f16/bf16 inputs).
#[derive(Debug, Clone)]
pub struct BatchStats {
    pub mean: Tensor,
    /// Biased (divided by `count`).
    pub var: Tensor,
    /// Values per channel, `N * H * W`.
    pub count: usize,
}

/// `y = [relu]((x - mean) / sqrt(var + eps) * weight + bias)` for `x` `[N, C, H, W]`, `weight`
/// and `bias` `[C]`. Differentiable in `x`, `weight` and `bias`. Returns the batch statistics in
/// train mode.
pub fn batch_norm2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    mode: BatchNormMode,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Option<BatchStats>)> {
    let (n, c, h, w) = x.dims4().map_err(|_| {
        candle_core::Error::Msg(format!(
            "batch-norm: input must be [N, C, H, W], got {:?}",
            x.dims()
        ))
    })?;
    if weight.dims() != [c] || bias.dims() != [c] {
        candle_core::bail!(
            "batch-norm: input has {c} channels, weight {:?} and bias {:?}",
            weight.dims(),
            bias.dims()
        )
    }
    let count = n * h * w;
    if matches!(mode, BatchNormMode::Train) && count < 2 {
        candle_core::bail!(
            "batch-norm: expected more than 1 value per channel when training, got input {:?}",
            [n, c, h, w]
        )
    }
    if let BatchNormMode::Eval { mean, var } = mode {
        if mean.dims() != [c] || var.dims() != [c] {
            candle_core::bail!(
                "batch-norm: statistics {:?} / {:?} do not match {c} channels",
                mean.dims(),
                var.dims()
            )
        }
    }
    let kernels = super::backend() == super::Backend::Wick
        && x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64);
    if !kernels {
        return composed(x, weight, bias, mode, eps, relu);
    }
    let dt = x.dtype();
    let x = x.contiguous()?;
    let weight = weight.to_dtype(dt)?.contiguous()?;
    let bias = bias.to_dtype(dt)?.contiguous()?;
    let fixed = match mode {
        BatchNormMode::Train => None,
        BatchNormMode::Eval { mean, var } => {
            let mean = mean.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let var = var.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            Some(Stats {
                invstd: var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(),
                var,
                mean,
            })
        }
    };
    let train = fixed.is_none();
    let op = BnFwd {
        geom: BnGeom { n, c, hw: h * w },
        eps,
        relu,
        train_mode: train,
        stats: Arc::new(OnceLock::new()),
    };
    if let Some(s) = fixed {
        let _ = op.stats.set(s);
    }
    let stats = op.stats.clone();
    let y = x.apply_op3_arc(&weight, &bias, Arc::new(Box::new(op)))?;
    let out = if train {
        let s = stats
            .get()
            .ok_or_else(|| candle_core::Error::Msg("batch-norm: no statistics".into()))?;
        let dev = y.device();
        Some(BatchStats {
            mean: Tensor::from_vec(s.mean.clone(), c, dev)?.to_dtype(dt)?,
            var: Tensor::from_vec(s.var.clone(), c, dev)?.to_dtype(dt)?,
            count,
        })
    } else {
        None
    };
    Ok((y, out))
}

/// candle-op composition of the same maths (any device and dtype).
fn composed(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    mode: BatchNormMode,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Option<BatchStats>)> {
    let (n, c, h, w) = x.dims4()?;
    let shape = (1, c, 1, 1);
    let x_dtype = x.dtype();
    let internal = match x_dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    };
    let x = x.to_dtype(internal)?;
    let (mean, var, stats) = match mode {
        BatchNormMode::Train => {
            let mean = x.mean_keepdim((0, 2, 3))?;
            let centred = x.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim((0, 2, 3))?;
            let stats = BatchStats {
                mean: mean.detach().flatten_all()?,
                var: var.detach().flatten_all()?,
                count: n * h * w,
            };
            (mean, var, Some(stats))
        }
        BatchNormMode::Eval { mean, var } => (
            mean.detach().to_dtype(internal)?.reshape(shape)?,
            var.detach().to_dtype(internal)?.reshape(shape)?,
            None,
        ),
    };
    let inv_std = (var + eps)?.sqrt()?.recip()?;
    let scale = inv_std.broadcast_mul(&weight.to_dtype(internal)?.reshape(shape)?)?;
    let y = x
        .broadcast_sub(&mean)?
        .broadcast_mul(&scale)?
        .broadcast_add(&bias.to_dtype(internal)?.reshape(shape)?)?;
    let y = if relu { y.relu()? } else { y };
    Ok((y.to_dtype(x_dtype)?, stats))
}

#[derive(Debug, Clone, Copy)]
struct BnGeom {
    n: usize,
    c: usize,
    hw: usize,
}

impl BnGeom {
    fn len(&self) -> usize {
        self.n * self.c * self.hw
    }
    fn count(&self) -> usize {
        self.n * self.hw
    }
}

#[derive(Debug)]
struct Stats {
    mean: Vec<f64>,
    /// Biased batch variance (train) or the given variance (eval).
    var: Vec<f64>,
    invstd: Vec<f64>,
}

/// `y = [relu](x * a + b)` over a plane.
#[inline(always)]
fn normalise_plane<T: Float>(y: &mut [T], x: &[T], a: T, b: T, relu: bool) {
    if relu {
        let z = T::zero();
        for (o, &v) in y.iter_mut().zip(x) {
            let t = v * a + b;
            *o = if t > z { t } else { z };
        }
    } else {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v * a + b;
        }
    }
}

#[inline(always)]
fn grad_sums_any<T: Float>(dy: &[T], x: &[T], y: &[T], mean: T, relu: bool) -> (f64, f64) {
    if relu {
        plane_grad_sums::<T, true>(dy, x, y, mean)
    } else {
        plane_grad_sums::<T, false>(dy, x, y, mean)
    }
}

#[inline(always)]
fn dx_any<T: Float>(
    out: &mut [T],
    dy: &[T],
    x: &[T],
    y: &[T],
    k: (T, T, T),
    relu: bool,
    train: bool,
) {
    match (relu, train) {
        (true, true) => plane_dx::<T, true, true>(out, dy, x, y, k),
        (false, true) => plane_dx::<T, false, true>(out, dy, x, y, k),
        (true, false) => plane_dx::<T, true, false>(out, dy, x, y, k),
        (false, false) => plane_dx::<T, false, false>(out, dy, x, y, k),
    }
}

multiversion!(fn normalise_mv[T: Float](y: &mut [T], x: &[T], a: T, b: T, relu: bool) = normalise_plane;);
multiversion!(fn moments_mv[T: Float](plane: &[T], k: T) -> (f64, f64) = plane_moments;);
multiversion!(fn grad_sums_mv[T: Float](dy: &[T], x: &[T], y: &[T], mean: T, relu: bool) -> (f64, f64) = grad_sums_any;);
multiversion!(fn dx_mv[T: Float](out: &mut [T], dy: &[T], x: &[T], y: &[T], k: (T, T, T), relu: bool, train: bool) = dx_any;);

/// One reduction per channel, parallel over channels.
fn per_channel<T: Float, R: Send>(g: &BnGeom, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    (0..g.c).into_par_iter().map(f).collect()
}

/// Lanes of the reductions (one AVX-512 register of f32).
const L: usize = 16;
/// Elements summed in `T` before the partial sums move to f64.
const BLOCK: usize = 1024;

/// Sum and sum of squares of `(v - k)` over a plane: `T` lanes within blocks, f64 across them.
#[inline(always)]
fn plane_moments<T: Float>(plane: &[T], k: T) -> (f64, f64) {
    let (mut st, mut qt) = (0f64, 0f64);
    for block in plane.chunks(BLOCK) {
        let mut s = [T::zero(); L];
        let mut q = [T::zero(); L];
        let chunks = block.chunks_exact(L);
        let rest = chunks.remainder();
        for ch in chunks {
            let ch: &[T; L] = ch.try_into().expect("chunk of L");
            for i in 0..L {
                let v = ch[i] - k;
                s[i] += v;
                q[i] += v * v;
            }
        }
        for &v in rest {
            let v = v - k;
            s[0] += v;
            q[0] += v * v;
        }
        st += s.iter().map(|v| v.to_f64()).sum::<f64>();
        qt += q.iter().map(|v| v.to_f64()).sum::<f64>();
    }
    (st, qt)
}

fn batch_stats<T: Float>(g: &BnGeom, x: &[T], eps: f64) -> Stats {
    let hw = g.hw;
    let m = g.count() as f64;
    let r: Vec<(f64, f64)> = per_channel::<T, _>(g, |c| {
        let k = x[c * hw];
        let (mut s, mut q) = (0.0, 0.0);
        for n in 0..g.n {
            let (a, b) = moments_mv(&x[(n * g.c + c) * hw..][..hw], k);
            s += a;
            q += b;
        }
        let mean_shifted = s / m;
        let var = (q / m - mean_shifted * mean_shifted).max(0.0);
        (k.to_f64() + mean_shifted, var)
    });
    let mean: Vec<f64> = r.iter().map(|p| p.0).collect();
    let var: Vec<f64> = r.iter().map(|p| p.1).collect();
    let invstd = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    Stats { mean, var, invstd }
}

/// `y = [relu](x * scale[c] + shift[c])`, parallel over planes.
fn normalise<T: Float>(g: &BnGeom, x: &[T], scale: &[T], shift: &[T], relu: bool) -> Vec<T> {
    let mut y = zeroed::<T>(g.len());
    let hw = g.hw.max(1);
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(p, (yp, xp))| {
            let c = p % g.c;
            normalise_mv(yp, xp, scale[c], shift[c], relu)
        });
    y
}

/// The forward op: `(x, weight, bias) -> y`. `stats` holds the given statistics (eval) or
/// receives the batch statistics (train).
struct BnFwd {
    geom: BnGeom,
    eps: f64,
    relu: bool,
    /// Statistics from the batch (else given up front).
    train_mode: bool,
    stats: Arc<OnceLock<Stats>>,
}

impl BnFwd {
    fn run<T: Float>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let x = T::slice(s1, l1, "batch-norm input")?;
        let gamma = T::slice(s2, l2, "batch-norm weight")?;
        let beta = T::slice(s3, l3, "batch-norm bias")?;
        if x.len() != g.len() || gamma.len() != g.c || beta.len() != g.c {
            candle_core::bail!("batch-norm: storage sizes do not match the shapes")
        }
        if self.stats.get().is_none() {
            let _ = self.stats.set(batch_stats(g, x, self.eps));
        }
        let st = self
            .stats
            .get()
            .ok_or_else(|| candle_core::Error::Msg("batch-norm: no statistics".into()))?;
        let scale: Vec<T> = (0..g.c)
            .map(|c| T::from_f64(gamma[c].to_f64() * st.invstd[c]))
            .collect();
        let shift: Vec<T> = (0..g.c)
            .map(|c| T::from_f64(beta[c].to_f64() - st.mean[c] * gamma[c].to_f64() * st.invstd[c]))
            .collect();
        let y = normalise(g, x, &scale, &shift, self.relu);
        Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
    }
}

fn dispatch3<F32, F64>(
    s: &CpuStorage,
    what: &str,
    f32: F32,
    f64: F64,
) -> Result<(CpuStorage, Shape)>
where
    F32: FnOnce() -> Result<(CpuStorage, Shape)>,
    F64: FnOnce() -> Result<(CpuStorage, Shape)>,
{
    match s {
        CpuStorage::F32(_) => f32(),
        CpuStorage::F64(_) => f64(),
        other => candle_core::bail!("{what}: unsupported dtype {:?}", other.dtype()),
    }
}

impl CustomOp3 for BnFwd {
    fn name(&self) -> &'static str {
        "wick-batch-norm2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch3(
            s1,
            "batch-norm",
            || self.run::<f32>(s1, l1, s2, l2, s3, l3),
            || self.run::<f64>(s1, l1, s2, l2, s3, l3),
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if self.stats.get().is_none() {
            candle_core::bail!("batch-norm backward: the forward recorded no statistics")
        }
        let op = BnBwd {
            geom: self.geom,
            relu: self.relu,
            train: self.train(),
            stats: self.stats.clone(),
            gamma: gamma.to_dtype(DType::F64)?.to_vec1::<f64>()?,
            param_grads: Arc::new(OnceLock::new()),
        };
        let grad = grad.contiguous()?;
        let dx = grad.apply_op3_no_bwd(x, res, &op)?;
        let Some((dg, db)) = op.param_grads.get() else {
            candle_core::bail!("batch-norm backward: no parameter gradients")
        };
        let dev = x.device();
        let dt = gamma.dtype();
        let c = self.geom.c;
        let dgamma = Tensor::from_vec(dg.clone(), c, dev)?.to_dtype(dt)?;
        let dbeta = Tensor::from_vec(db.clone(), c, dev)?.to_dtype(dt)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

impl BnFwd {
    /// Train mode: the statistics come from the batch (they were not given up front).
    fn train(&self) -> bool {
        self.train_mode
    }
}

/// The backward op: `(dy, x, y) -> dx`; the weight and bias gradients land in `param_grads`.
struct BnBwd {
    geom: BnGeom,
    relu: bool,
    train: bool,
    stats: Arc<OnceLock<Stats>>,
    gamma: Vec<f64>,
    param_grads: Arc<OnceLock<(Vec<f64>, Vec<f64>)>>,
}

/// `Σ dz` and `Σ dz * (x - mean)` over a plane, `dz = dy`, or `dy * (y > 0)` when `RELU`.
#[inline(always)]
fn plane_grad_sums<T: Float, const RELU: bool>(dy: &[T], x: &[T], y: &[T], mean: T) -> (f64, f64) {
    let z = T::zero();
    let dz = |d: T, y: T| if RELU && y <= z { z } else { d };
    let (mut st, mut qt) = (0f64, 0f64);
    for ((dyb, xb), yb) in dy.chunks(BLOCK).zip(x.chunks(BLOCK)).zip(y.chunks(BLOCK)) {
        let mut s = [z; L];
        let mut q = [z; L];
        let (dc, xc, yc) = (dyb.chunks_exact(L), xb.chunks_exact(L), yb.chunks_exact(L));
        let (dr, xr, yr) = (dc.remainder(), xc.remainder(), yc.remainder());
        for ((d, xv), yv) in dc.zip(xc).zip(yc) {
            let d: &[T; L] = d.try_into().expect("chunk of L");
            let xv: &[T; L] = xv.try_into().expect("chunk of L");
            let yv: &[T; L] = yv.try_into().expect("chunk of L");
            for j in 0..L {
                let d = dz(d[j], yv[j]);
                s[j] += d;
                q[j] += d * (xv[j] - mean);
            }
        }
        for ((&d, &xv), &yv) in dr.iter().zip(xr).zip(yr) {
            let d = dz(d, yv);
            s[0] += d;
            q[0] += d * (xv - mean);
        }
        st += s.iter().map(|v| v.to_f64()).sum::<f64>();
        qt += q.iter().map(|v| v.to_f64()).sum::<f64>();
    }
    (st, qt)
}

/// `dx = a * dz + b * x + c0` over a plane (`b = c0 = 0` in eval mode).
#[inline(always)]
fn plane_dx<T: Float, const RELU: bool, const TRAIN: bool>(
    out: &mut [T],
    dy: &[T],
    x: &[T],
    y: &[T],
    (a, b, c0): (T, T, T),
) {
    let z = T::zero();
    for (((o, &d), &xv), &yv) in out.iter_mut().zip(dy).zip(x).zip(y) {
        let d = if RELU && yv <= z { z } else { d };
        *o = if TRAIN { a * d + b * xv + c0 } else { a * d };
    }
}

impl BnBwd {
    fn run<T: Float>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let dy = T::slice(s1, l1, "batch-norm backward: output gradient")?;
        let x = T::slice(s2, l2, "batch-norm backward: input")?;
        let y = T::slice(s3, l3, "batch-norm backward: output")?;
        if dy.len() != g.len() || x.len() != g.len() || y.len() != g.len() {
            candle_core::bail!("batch-norm backward: storage sizes do not match the shapes")
        }
        let Some(st) = self.stats.get() else {
            candle_core::bail!("batch-norm backward: no statistics")
        };
        let hw = g.hw;
        let sums: Vec<(f64, f64)> = per_channel::<T, _>(g, |c| {
            let (mut s, mut q) = (0.0, 0.0);
            for n in 0..g.n {
                let o = (n * g.c + c) * hw;
                let (dyp, xp, yp) = (&dy[o..o + hw], &x[o..o + hw], &y[o..o + hw]);
                let mean = T::from_f64(st.mean[c]);
                let (a, b) = grad_sums_mv(dyp, xp, yp, mean, self.relu);
                s += a;
                q += b;
            }
            (s, q)
        });
        let m = g.count() as f64;
        // dx = a * dz + b * x + c0 per channel.
        let mut coef = Vec::with_capacity(g.c);
        for (c, &(sdz, sxc)) in sums.iter().enumerate() {
            let inv = st.invstd[c];
            let a = self.gamma[c] * inv;
            if self.train {
                let b = -self.gamma[c] * inv * inv * inv * sxc / m;
                let c0 = -a * sdz / m - b * st.mean[c];
                coef.push((T::from_f64(a), T::from_f64(b), T::from_f64(c0)));
            } else {
                coef.push((T::from_f64(a), T::zero(), T::zero()));
            }
        }
        let dgamma: Vec<f64> = (0..g.c).map(|c| sums[c].1 * st.invstd[c]).collect();
        let dbeta: Vec<f64> = sums.iter().map(|p| p.0).collect();
        let _ = self.param_grads.set((dgamma, dbeta));
        let mut dx = zeroed::<T>(g.len());
        let relu = self.relu;
        let train = self.train;
        let hw1 = hw.max(1);
        dx.par_chunks_mut(hw1).enumerate().for_each(|(p, out)| {
            let k = coef[p % g.c];
            let o = p * hw1;
            let n = out.len();
            let (dyp, xp, yp) = (&dy[o..o + n], &x[o..o + n], &y[o..o + n]);
            dx_mv(out, dyp, xp, yp, k, relu, train)
        });
        Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
    }
}

impl CustomOp3 for BnBwd {
    fn name(&self) -> &'static str {
        "wick-batch-norm2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch3(
            s1,
            "batch-norm backward",
            || self.run::<f32>(s1, l1, s2, l2, s3, l3),
            || self.run::<f64>(s1, l1, s2, l2, s3, l3),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::kernel::testutil::{max_diff, values};
    use crate::ops::{with_backend, Backend};
    use candle_core::{Device, Var};

    const SHAPES: &[(usize, usize, usize, usize)] = &[
        (2, 3, 5, 4),
        (1, 2, 7, 3),
        (4, 1, 1, 1),
        (3, 5, 1, 2),
        (2, 2, 33, 35),
        (1, 1, 6, 6),
    ];

    fn flat(t: &Tensor) -> Result<Vec<f64>> {
        t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
    }

    /// (y, dx, dgamma, dbeta, mean, var) of `sum(bn(x) * r)`.
    type Out = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

    fn run(
        dims: (usize, usize, usize, usize),
        seed: u64,
        dtype: DType,
        train: bool,
        relu: bool,
    ) -> Result<Out> {
        let dev = &Device::Cpu;
        let (n, c, h, w) = dims;
        let len = n * c * h * w;
        // Offset inputs (mean far from 0) to exercise the shifted sums.
        let xv: Vec<f64> = values(len, seed).iter().map(|v| 3.0 + 2.0 * v).collect();
        let x = Var::from_tensor(&Tensor::from_vec(xv, dims, dev)?.to_dtype(dtype)?)?;
        let gv: Vec<f64> = values(c, seed + 1).iter().map(|v| 1.0 + 0.5 * v).collect();
        let gamma = Var::from_tensor(&Tensor::from_vec(gv, c, dev)?.to_dtype(dtype)?)?;
        let beta =
            Var::from_tensor(&Tensor::from_vec(values(c, seed + 2), c, dev)?.to_dtype(dtype)?)?;
        let rm = Tensor::from_vec(values(c, seed + 3), c, dev)?.to_dtype(dtype)?;
        let rv = (Tensor::from_vec(values(c, seed + 4), c, dev)?.abs()? + 0.5)?.to_dtype(dtype)?;
        let r = Tensor::from_vec(values(len, seed + 5), dims, dev)?.to_dtype(dtype)?;
        let mode = if train {
            BatchNormMode::Train
        } else {
            BatchNormMode::Eval {
                mean: &rm,
                var: &rv,
            }
        };
        let (y, stats) = batch_norm2d(
            x.as_tensor(),
            gamma.as_tensor(),
            beta.as_tensor(),
            mode,
            1e-5,
            relu,
        )?;
        let g = (&y * &r)?.sum_all()?.backward()?;
        let (mean, var) = match stats {
            Some(s) => {
                assert_eq!(s.count, n * h * w);
                (flat(&s.mean)?, flat(&s.var)?)
            }
            None => (vec![], vec![]),
        };
        Ok((
            flat(&y)?,
            flat(g.get(x.as_tensor()).expect("dx"))?,
            flat(g.get(gamma.as_tensor()).expect("dgamma"))?,
            flat(g.get(beta.as_tensor()).expect("dbeta"))?,
            mean,
            var,
        ))
    }

    #[test]
    fn matches_candle_composition_forward_backward_and_stats() -> Result<()> {
        for (i, &dims) in SHAPES.iter().enumerate() {
            for train in [true, false] {
                if train && dims.0 * dims.2 * dims.3 < 2 {
                    continue;
                }
                for relu in [false, true] {
                    for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 2e-4)] {
                        let seed = 10 * i as u64;
                        let ours = run(dims, seed, dtype, train, relu)?;
                        let theirs = with_backend(Backend::Candle, || {
                            run(dims, seed, DType::F64, train, relu)
                        })?;
                        let what = format!("{dims:?} train={train} relu={relu} {dtype:?}");
                        assert!(max_diff(&ours.0, &theirs.0) < tol, "{what}: y");
                        assert!(max_diff(&ours.1, &theirs.1) < tol * 10.0, "{what}: dx");
                        assert!(max_diff(&ours.2, &theirs.2) < tol * 100.0, "{what}: dgamma");
                        assert!(max_diff(&ours.3, &theirs.3) < tol * 100.0, "{what}: dbeta");
                        assert!(max_diff(&ours.4, &theirs.4) < tol, "{what}: mean");
                        assert!(max_diff(&ours.5, &theirs.5) < tol * 10.0, "{what}: var");
                    }
                }
            }
        }
        Ok(())
    }

    /// Central finite differences of `sum(bn(x) * r)` in x, weight and bias (train mode, with
    /// and without ReLU).
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = &Device::Cpu;
        for (i, &dims) in [(2usize, 2usize, 3usize, 2usize), (1, 3, 2, 3)]
            .iter()
            .enumerate()
        {
            for relu in [false, true] {
                let (_, c, _, _) = dims;
                let len = dims.0 * dims.1 * dims.2 * dims.3;
                let xv = values(len, 300 + i as u64);
                let gv: Vec<f64> = values(c, 301).iter().map(|v| 1.0 + 0.5 * v).collect();
                let bv = values(c, 302);
                let r = Tensor::from_vec(values(len, 303), dims, dev)?;
                let f = |xv: &[f64], gv: &[f64], bv: &[f64]| -> Result<f64> {
                    let x = Tensor::from_vec(xv.to_vec(), dims, dev)?;
                    let g = Tensor::from_vec(gv.to_vec(), c, dev)?;
                    let b = Tensor::from_vec(bv.to_vec(), c, dev)?;
                    let (y, _) = batch_norm2d(&x, &g, &b, BatchNormMode::Train, 1e-5, relu)?;
                    (y * &r)?.sum_all()?.to_scalar::<f64>()
                };
                let x = Var::from_vec(xv.clone(), dims, dev)?;
                let g = Var::from_vec(gv.clone(), c, dev)?;
                let b = Var::from_vec(bv.clone(), c, dev)?;
                let (y, _) = batch_norm2d(
                    x.as_tensor(),
                    g.as_tensor(),
                    b.as_tensor(),
                    BatchNormMode::Train,
                    1e-5,
                    relu,
                )?;
                let grads = (y * &r)?.sum_all()?.backward()?;
                let an = [
                    flat(grads.get(x.as_tensor()).expect("dx"))?,
                    flat(grads.get(g.as_tensor()).expect("dg"))?,
                    flat(grads.get(b.as_tensor()).expect("db"))?,
                ];
                let eps = 1e-6;
                for (which, base) in [&xv, &gv, &bv].iter().enumerate() {
                    for j in 0..base.len() {
                        let mut args = [xv.clone(), gv.clone(), bv.clone()];
                        args[which][j] += eps;
                        let fp = f(&args[0], &args[1], &args[2])?;
                        args[which][j] -= 2.0 * eps;
                        let fm = f(&args[0], &args[1], &args[2])?;
                        let num = (fp - fm) / (2.0 * eps);
                        assert!(
                            (num - an[which][j]).abs() < 1e-5,
                            "{dims:?} relu={relu} arg {which}[{j}]: {} vs {num}",
                            an[which][j]
                        );
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn bad_arguments_are_errors() -> Result<()> {
        let dev = &Device::Cpu;
        let x = Tensor::zeros((1, 3, 1, 1), DType::F32, dev)?;
        let g = Tensor::ones(3, DType::F32, dev)?;
        let b = Tensor::zeros(3, DType::F32, dev)?;
        assert!(batch_norm2d(&x, &g, &b, BatchNormMode::Train, 1e-5, false).is_err());
        assert!(batch_norm2d(
            &x,
            &g,
            &b,
            BatchNormMode::Eval { mean: &b, var: &g },
            1e-5,
            false
        )
        .is_ok());
        let g2 = Tensor::ones(2, DType::F32, dev)?;
        assert!(batch_norm2d(
            &x,
            &g2,
            &b,
            BatchNormMode::Eval { mean: &b, var: &g },
            1e-5,
            false
        )
        .is_err());
        let x3 = Tensor::zeros((2, 3, 4), DType::F32, dev)?;
        assert!(batch_norm2d(&x3, &g, &b, BatchNormMode::Train, 1e-5, false).is_err());
        Ok(())
    }
}
