//! 2-D max pooling for any kernel, stride and padding, with a backward pass.
//!
//! candle 0.11's own `max_pool2d` has no padding, and its backward is wrong or fails when the
//! kernel differs from the stride (the ResNet stem is 3x3 stride 2 padding 1). On the CPU this
//! runs as a custom op: the forward records, for every output element, the flat index of the
//! input element that won, and the backward scatters (adds) the output gradient to those indices.
//! Padding counts as `-inf`, and a NaN inside a window wins, as in PyTorch.
//!
//! On other devices the op is composed from candle's own differentiable ops (pad with `-inf`,
//! strided views of shifted slices, elementwise `maximum`), so the models still run on CUDA.

use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Error, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::kernel::{multiversion, zeroed, Float};

/// Max pooling over the last two dimensions of an `[N, C, H, W]` tensor, square `kernel`, square
/// `stride`, symmetric implicit `-inf` `padding` (PyTorch's `MaxPool2d(kernel, stride, padding)`
/// with `ceil_mode=False`, `dilation=1`).
///
/// Output size per spatial dimension: `(in + 2 * padding - kernel) / stride + 1`.
/// Errors (never panics) on a zero kernel or stride, on `padding > kernel / 2` (as PyTorch), on a
/// non-4-D or non-float input and on inputs smaller than the kernel.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let geom = Geometry::new(x, kernel, stride, padding)?;
    if super::backend() == super::Backend::Wick
        && x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
    {
        let x = x.contiguous()?;
        x.apply_op1_arc(Arc::new(Box::new(MaxPool2d {
            geom,
            argmax: OnceLock::new(),
        })))
    } else {
        max_pool2d_composed(x, &geom)
    }
}

/// The shape arithmetic shared by both implementations.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn new(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        let (n, c, h, w) = x.dims4().map_err(|_| {
            Error::Msg(format!(
                "max_pool2d: input must be [N, C, H, W], got shape {:?}",
                x.dims()
            ))
        })?;
        if !matches!(
            x.dtype(),
            DType::F32 | DType::F64 | DType::F16 | DType::BF16
        ) {
            candle_core::bail!(
                "max_pool2d: input must be a float tensor, got {:?}",
                x.dtype()
            )
        }
        if h == 0 || w == 0 {
            candle_core::bail!("max_pool2d: empty spatial size {h}x{w}")
        }
        if kernel == 0 || stride == 0 {
            candle_core::bail!(
                "max_pool2d: kernel ({kernel}) and stride ({stride}) must be at least 1"
            )
        }
        if padding > kernel / 2 {
            candle_core::bail!(
                "max_pool2d: padding ({padding}) must be at most half the kernel ({kernel})"
            )
        }
        if h + 2 * padding < kernel || w + 2 * padding < kernel {
            candle_core::bail!(
                "max_pool2d: input {h}x{w} with padding {padding} is smaller than the kernel {kernel}"
            )
        }
        let oh = (h + 2 * padding - kernel) / stride + 1;
        let ow = (w + 2 * padding - kernel) / stride + 1;
        Ok(Geometry {
            n,
            c,
            h,
            w,
            kernel,
            stride,
            padding,
            oh,
            ow,
        })
    }

    fn out_shape(&self) -> Shape {
        Shape::from((self.n, self.c, self.oh, self.ow))
    }
}

/// Float element types the CPU kernel handles (f16/bf16 take the composed path).
trait PoolElem: Float {
    fn nan(self) -> bool;
}

impl PoolElem for f32 {
    #[inline(always)]
    fn nan(self) -> bool {
        self.is_nan()
    }
}
impl PoolElem for f64 {
    #[inline(always)]
    fn nan(self) -> bool {
        self.is_nan()
    }
}

/// The CPU forward op. `argmax` is filled by the forward and read by the backward: for each
/// output element, the index of the winning input element within its `H * W` plane.
struct MaxPool2d {
    geom: Geometry,
    argmax: OnceLock<Arc<Vec<u32>>>,
}

/// Max pooling of one `H x W` plane into `out` / `arg` (`OH x OW`), separably: for each output
/// row, first the maximum over the window's rows of every input column (contiguous, vectorised),
/// then over each window's columns. The comparison is PyTorch's: a value wins when it is
/// greater or NaN, so a NaN in a window propagates. Padding never takes part (it is `-inf`).
#[inline(always)]
fn pool_plane<T: PoolElem>(src: &[T], g: &Geometry, out: &mut [T], arg: &mut [u32]) {
    let mut colv = vec![T::zero(); g.w];
    let mut coly = vec![0u32; g.w];
    for oy in 0..g.oh {
        // Window rows in padded coordinates: [oy*stride, oy*stride + kernel).
        let y0 = (oy * g.stride).saturating_sub(g.padding);
        let y1 = (oy * g.stride + g.kernel - g.padding).min(g.h);
        colv.copy_from_slice(&src[y0 * g.w..(y0 + 1) * g.w]);
        coly.fill(y0 as u32);
        for y in y0 + 1..y1 {
            let row = &src[y * g.w..(y + 1) * g.w];
            let yu = y as u32;
            for ((b, by), &v) in colv.iter_mut().zip(coly.iter_mut()).zip(row) {
                let take = (v > *b) | v.nan();
                *b = if take { v } else { *b };
                *by = if take { yu } else { *by };
            }
        }
        let out = &mut out[oy * g.ow..(oy + 1) * g.ow];
        let arg = &mut arg[oy * g.ow..(oy + 1) * g.ow];
        for ox in 0..g.ow {
            let x0 = (ox * g.stride).saturating_sub(g.padding);
            let x1 = (ox * g.stride + g.kernel - g.padding).min(g.w);
            // Padding never fills a whole window (padding <= kernel / 2): x0 < x1.
            let mut best = colv[x0];
            let mut bx = x0;
            for (x, &v) in colv.iter().enumerate().take(x1).skip(x0 + 1) {
                if v > best || v.nan() {
                    best = v;
                    bx = x;
                }
            }
            out[ox] = best;
            arg[ox] = coly[bx] * g.w as u32 + bx as u32;
        }
    }
}

multiversion!(fn pool_plane_mv[T: PoolElem](src: &[T], g: &Geometry, out: &mut [T], arg: &mut [u32]) = pool_plane;);

fn pool_forward<T: PoolElem>(src: &[T], g: &Geometry) -> (Vec<T>, Vec<u32>) {
    let plane_in = g.h * g.w;
    let plane_out = (g.oh * g.ow).max(1);
    let mut out = zeroed::<T>(g.n * g.c * g.oh * g.ow);
    let mut arg = vec![0u32; g.n * g.c * g.oh * g.ow];
    super::alloc::advise(arg.as_mut_ptr() as *mut u8, arg.len() * 4);
    out.par_chunks_mut(plane_out)
        .zip(arg.par_chunks_mut(plane_out))
        .enumerate()
        .for_each(|(p, (out, arg))| {
            pool_plane_mv(&src[p * plane_in..(p + 1) * plane_in], g, out, arg)
        });
    (out, arg)
}

fn contiguous_slice<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    let slice = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&slice[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

impl MaxPool2d {
    fn fwd<T: PoolElem>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_slice::<T>(s, l, "max_pool2d")?;
        let (out, arg) = pool_forward(src, &self.geom);
        // A single forward per op instance; if candle ever ran it twice the indices are the same.
        let _ = self.argmax.set(Arc::new(arg));
        Ok((T::to_cpu_storage_owned(out), self.geom.out_shape()))
    }
}

impl CustomOp1 for MaxPool2d {
    fn name(&self) -> &'static str {
        "wick-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => self.fwd::<f32>(s, l),
            CpuStorage::F64(_) => self.fwd::<f64>(s, l),
            other => candle_core::bail!("max_pool2d: unsupported dtype {:?}", other.dtype()),
        }
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let argmax = match self.argmax.get() {
            Some(a) => a.clone(),
            None => candle_core::bail!("max_pool2d backward: the forward recorded no indices"),
        };
        let grad_res = grad_res.contiguous()?;
        let scatter = MaxPool2dBackward {
            geom: self.geom,
            argmax,
        };
        let g = grad_res.apply_op1_no_bwd(&scatter)?;
        debug_assert_eq!(g.dims(), arg.dims());
        Ok(Some(g))
    }
}

/// Scatters an output gradient `[N, C, OH, OW]` back to `[N, C, H, W]` through the recorded
/// indices (accumulating where windows overlap).
struct MaxPool2dBackward {
    geom: Geometry,
    argmax: Arc<Vec<u32>>,
}

impl MaxPool2dBackward {
    fn scatter<T: PoolElem>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let grad = contiguous_slice::<T>(s, l, "max_pool2d backward")?;
        let plane_in = g.h * g.w;
        let plane_out = g.oh * g.ow;
        if grad.len() != g.n * g.c * plane_out || self.argmax.len() != grad.len() {
            candle_core::bail!(
                "max_pool2d backward: gradient has {} elements, expected {}",
                grad.len(),
                g.n * g.c * plane_out
            )
        }
        let mut out = zeroed::<T>(g.n * g.c * plane_in);
        out.par_chunks_mut(plane_in.max(1))
            .enumerate()
            .for_each(|(p, dst)| {
                let src = &grad[p * plane_out..(p + 1) * plane_out];
                let idx = &self.argmax[p * plane_out..(p + 1) * plane_out];
                for (&i, &v) in idx.iter().zip(src) {
                    dst[i as usize] += v;
                }
            });
        Ok((
            T::to_cpu_storage_owned(out),
            Shape::from((g.n, g.c, g.h, g.w)),
        ))
    }
}

impl CustomOp1 for MaxPool2dBackward {
    fn name(&self) -> &'static str {
        "wick-max-pool2d-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => self.scatter::<f32>(s, l),
            CpuStorage::F64(_) => self.scatter::<f64>(s, l),
            other => {
                candle_core::bail!("max_pool2d backward: unsupported dtype {:?}", other.dtype())
            }
        }
    }
}

/// Device-independent version from candle's differentiable ops: pad with `-inf`, then for each
/// kernel offset take the strided view of the shifted input and fold with `maximum`.
fn max_pool2d_composed(x: &Tensor, g: &Geometry) -> Result<Tensor> {
    let (k, s, p) = (g.kernel, g.stride, g.padding);
    // Padded size large enough that every shifted view of length `out * stride` fits.
    let need_h = (k - 1) + g.oh * s;
    let need_w = (k - 1) + g.ow * s;
    let x = pad_neg_inf(x, 2, p, need_h - g.h - p)?;
    let x = pad_neg_inf(&x, 3, p, need_w - g.w - p)?;
    let mut acc: Option<Tensor> = None;
    for ky in 0..k {
        let rows = x.narrow(2, ky, g.oh * s)?;
        let rows = if s == 1 {
            rows
        } else {
            rows.reshape((g.n, g.c, g.oh, s, need_w))?
                .narrow(3, 0, 1)?
                .squeeze(3)?
        };
        for kx in 0..k {
            let v = rows.narrow(3, kx, g.ow * s)?;
            let v = if s == 1 {
                v
            } else {
                v.contiguous()?
                    .reshape((g.n, g.c, g.oh, g.ow, s))?
                    .narrow(4, 0, 1)?
                    .squeeze(4)?
            };
            acc = Some(match acc {
                None => v.contiguous()?,
                Some(a) => a.maximum(&v)?,
            });
        }
    }
    match acc {
        Some(a) => Ok(a),
        None => candle_core::bail!("max_pool2d: empty kernel"),
    }
}

fn pad_neg_inf(x: &Tensor, dim: usize, before: usize, after: usize) -> Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    let mut parts = Vec::with_capacity(3);
    let mut dims = x.dims().to_vec();
    if before > 0 {
        dims[dim] = before;
        parts.push(
            Tensor::full(f32::NEG_INFINITY, dims.as_slice(), x.device())?.to_dtype(x.dtype())?,
        );
    }
    parts.push(x.clone());
    if after > 0 {
        dims[dim] = after;
        parts.push(
            Tensor::full(f32::NEG_INFINITY, dims.as_slice(), x.device())?.to_dtype(x.dtype())?,
        );
    }
    Tensor::cat(&parts, dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Deterministic distinct-ish values in [-1, 1) (no ties in practice).
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    fn naive(
        x: &[f64],
        dims: (usize, usize, usize, usize),
        k: usize,
        s: usize,
        p: usize,
    ) -> Vec<f64> {
        let (n, c, h, w) = dims;
        let oh = (h + 2 * p - k) / s + 1;
        let ow = (w + 2 * p - k) / s + 1;
        let mut out = Vec::new();
        for b in 0..n {
            for ch in 0..c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut m = f64::NEG_INFINITY;
                        for ky in 0..k {
                            for kx in 0..k {
                                let y = (oy * s + ky) as isize - p as isize;
                                let xx = (ox * s + kx) as isize - p as isize;
                                if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                                    m = m.max(x[((b * c + ch) * h + y as usize) * w + xx as usize]);
                                }
                            }
                        }
                        out.push(m);
                    }
                }
            }
        }
        out
    }

    /// (input dims, kernel, stride, padding)
    type Case = ((usize, usize, usize, usize), usize, usize, usize);

    const CASES: &[Case] = &[
        ((1, 1, 5, 7), 3, 2, 1),
        ((2, 3, 6, 5), 3, 1, 1),
        ((1, 2, 7, 4), 2, 2, 0),
        ((2, 1, 4, 9), 3, 2, 0),
        ((1, 1, 1, 1), 1, 1, 0),
        ((1, 2, 8, 8), 3, 2, 1),
        ((3, 1, 5, 6), 2, 1, 1),
        ((1, 1, 9, 3), 3, 3, 1),
    ];

    #[test]
    fn forward_matches_naive_reference() -> Result<()> {
        for (i, &(dims, k, s, p)) in CASES.iter().enumerate() {
            let len = dims.0 * dims.1 * dims.2 * dims.3;
            let data = values(len, i as u64);
            let x = Tensor::from_vec(data.clone(), dims, &Device::Cpu)?;
            let want = naive(&data, dims, k, s, p);
            for (name, got) in [
                ("custom op", max_pool2d(&x, k, s, p)?),
                (
                    "composed",
                    max_pool2d_composed(&x, &Geometry::new(&x, k, s, p)?)?,
                ),
                (
                    "custom op f32",
                    max_pool2d(&x.to_dtype(DType::F32)?, k, s, p)?.to_dtype(DType::F64)?,
                ),
            ] {
                let got = got.flatten_all()?.to_vec1::<f64>()?;
                assert_eq!(got.len(), want.len(), "{name} case {i}");
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-6, "{name} case {i}: {a} vs {b}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn output_shape_is_pytorch_formula() -> Result<()> {
        let x = Tensor::zeros((2, 4, 32, 32), DType::F32, &Device::Cpu)?;
        assert_eq!(max_pool2d(&x, 3, 2, 1)?.dims(), &[2, 4, 16, 16]);
        let x = Tensor::zeros((1, 1, 112, 111), DType::F32, &Device::Cpu)?;
        assert_eq!(max_pool2d(&x, 3, 2, 1)?.dims(), &[1, 1, 56, 56]);
        assert_eq!(max_pool2d(&x, 2, 2, 0)?.dims(), &[1, 1, 56, 55]);
        Ok(())
    }

    /// d/dx sum(maxpool(x) * r) against central finite differences, for both implementations.
    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        for (i, &(dims, k, s, p)) in CASES.iter().enumerate() {
            let len = dims.0 * dims.1 * dims.2 * dims.3;
            let data = values(len, 100 + i as u64);
            let x = Var::from_vec(data.clone(), dims, &Device::Cpu)?;
            let geom = Geometry::new(&x, k, s, p)?;
            let r = Tensor::from_vec(
                values(geom.out_shape().elem_count(), 200 + i as u64),
                geom.out_shape(),
                &Device::Cpu,
            )?;
            let f = |t: &Tensor, composed: bool| -> Result<Tensor> {
                let y = if composed {
                    max_pool2d_composed(t, &Geometry::new(t, k, s, p)?)?
                } else {
                    max_pool2d(t, k, s, p)?
                };
                (y * &r)?.sum_all()
            };
            for composed in [false, true] {
                let grads = f(x.as_tensor(), composed)?.backward()?;
                let g = grads
                    .get(x.as_tensor())
                    .expect("gradient for x")
                    .flatten_all()?
                    .to_vec1::<f64>()?;
                let eps = 1e-6;
                for j in 0..len {
                    let mut plus = data.clone();
                    plus[j] += eps;
                    let mut minus = data.clone();
                    minus[j] -= eps;
                    let fp = f(&Tensor::from_vec(plus, dims, &Device::Cpu)?, composed)?
                        .to_scalar::<f64>()?;
                    let fm = f(&Tensor::from_vec(minus, dims, &Device::Cpu)?, composed)?
                        .to_scalar::<f64>()?;
                    let num = (fp - fm) / (2.0 * eps);
                    assert!(
                        (num - g[j]).abs() < 1e-6,
                        "case {i} composed={composed} element {j}: analytic {} numeric {num}",
                        g[j]
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn overlapping_windows_accumulate_gradient() -> Result<()> {
        // One big value at the centre wins every 3x3 stride-1 window: its gradient is the count.
        let mut data = vec![0.0f32; 25];
        data[12] = 10.0;
        let x = Var::from_vec(data, (1, 1, 5, 5), &Device::Cpu)?;
        let y = max_pool2d(x.as_tensor(), 3, 1, 1)?;
        let grads = y.sum_all()?.backward()?;
        let g = grads
            .get(x.as_tensor())
            .expect("grad")
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(g[12], 9.0);
        Ok(())
    }

    #[test]
    fn nan_propagates_like_pytorch() -> Result<()> {
        let x = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0, 4.0], (1, 1, 2, 2), &Device::Cpu)?;
        let y = max_pool2d(&x, 2, 2, 0)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(y[0].is_nan());
        Ok(())
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).expect("zeros");
        assert!(max_pool2d(&x, 0, 1, 0).is_err());
        assert!(max_pool2d(&x, 2, 0, 0).is_err());
        assert!(max_pool2d(&x, 3, 1, 2).is_err());
        assert!(max_pool2d(&x, 5, 1, 0).is_err());
        let x3 = Tensor::zeros((1, 4, 4), DType::F32, &Device::Cpu).expect("zeros");
        assert!(max_pool2d(&x3, 2, 2, 0).is_err());
        let xi = Tensor::zeros((1, 1, 4, 4), DType::U32, &Device::Cpu).expect("zeros");
        assert!(max_pool2d(&xi, 2, 2, 0).is_err());
    }

    #[test]
    fn non_contiguous_input_is_handled() -> Result<()> {
        let data = values(2 * 3 * 5 * 6, 7);
        let x = Tensor::from_vec(data, (2, 3, 6, 5), &Device::Cpu)?;
        let xt = x.transpose(2, 3)?; // [2, 3, 5, 6], not contiguous
        let a = max_pool2d(&xt, 3, 2, 1)?;
        let b = max_pool2d(&xt.contiguous()?, 3, 2, 1)?;
        let d = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert_eq!(d, 0.0);
        Ok(())
    }
}
