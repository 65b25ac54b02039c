//! Depthwise 2-D convolution (`groups == channels`, one `k x k` filter per channel) with
//! explicit, possibly asymmetric zero padding (TensorFlow "same").
//!
//! candle runs a grouped convolution as one convolution per group (per channel here), which is
//! very slow for the hundreds of channels of an EfficientNet block. On the CPU (f32/f64) this
//! runs [`super::conv2d`] with one group per channel; elsewhere it is composed from candle's
//! own differentiable ops: for each of the `k * k` kernel offsets, a strided view of the padded
//! input times that offset's per-channel weight, summed (backward from candle's autograd).

use candle_core::{Result, Tensor};

/// Zero padding per side: `[top, bottom, left, right]`.
pub type Padding = [usize; 4];

/// `x` `[N, C, H, W]`, `weight` `[C, 1, k, k]` → `[N, C, OH, OW]` with
/// `OH = (H + top + bottom - k) / stride + 1` (same for W).
pub fn depthwise_conv2d(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    pad: Padding,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4().map_err(|_| {
        candle_core::Error::Msg(format!(
            "depthwise_conv2d: input must be [N, C, H, W], got {:?}",
            x.dims()
        ))
    })?;
    let (wc, one, kh, kw) = weight.dims4().map_err(|_| {
        candle_core::Error::Msg(format!(
            "depthwise_conv2d: weight must be [C, 1, k, k], got {:?}",
            weight.dims()
        ))
    })?;
    if wc != c || one != 1 || kh != kw || kh == 0 {
        candle_core::bail!(
            "depthwise_conv2d: weight {:?} does not fit input {:?}",
            weight.dims(),
            x.dims()
        )
    }
    if stride == 0 {
        candle_core::bail!("depthwise_conv2d: stride must be at least 1")
    }
    let k = kh;
    let [top, bottom, left, right] = pad;
    let (hp, wp) = (h + top + bottom, w + left + right);
    if hp < k || wp < k {
        candle_core::bail!(
            "depthwise_conv2d: padded input {hp}x{wp} is smaller than the kernel {k}"
        )
    }
    if super::backend() == super::Backend::Wick
        && x.device().is_cpu()
        && x.dtype() == weight.dtype()
        && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
    {
        // wick's convolution kernel, one group per channel.
        let s = (stride, stride);
        return if top == bottom && left == right {
            super::conv2d(x, weight, None, s, (top, left), (1, 1), c)
        } else {
            let xp = x
                .pad_with_zeros(2, top, bottom)?
                .pad_with_zeros(3, left, right)?;
            super::conv2d(&xp, weight, None, s, (0, 0), (1, 1), c)
        };
    }
    let oh = (hp - k) / stride + 1;
    let ow = (wp - k) / stride + 1;
    // Pad so that every shifted view of length `out * stride` fits (the extra zeros are never
    // selected by the stride).
    let need_h = k - 1 + oh * stride;
    let need_w = k - 1 + ow * stride;
    let xp =
        x.pad_with_zeros(2, top, need_h - h - top)?
            .pad_with_zeros(3, left, need_w - w - left)?;
    let mut acc: Option<Tensor> = None;
    for ky in 0..k {
        let rows = xp.narrow(2, ky, oh * stride)?;
        let rows = if stride == 1 {
            rows
        } else {
            rows.reshape((n, c, oh, stride, need_w))?
                .narrow(3, 0, 1)?
                .squeeze(3)?
        };
        for kx in 0..k {
            let v = rows.narrow(3, kx, ow * stride)?;
            let v = if stride == 1 {
                v
            } else {
                v.contiguous()?
                    .reshape((n, c, oh, ow, stride))?
                    .narrow(4, 0, 1)?
                    .squeeze(4)?
            };
            let wk = weight
                .narrow(2, ky, 1)?
                .narrow(3, kx, 1)?
                .reshape((1, c, 1, 1))?;
            let term = v.broadcast_mul(&wk)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
    }
    match acc {
        Some(a) => Ok(a),
        None => candle_core::bail!("depthwise_conv2d: empty kernel"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn seq(n: usize, seed: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64) * 0.7311 + seed).sin()).collect()
    }

    /// Against explicit zero padding + candle's grouped conv2d, forward and gradients. (Shapes
    /// keep `(H + pad - k) % stride == (W + pad - k) % stride`: candle 0.11's conv2d backward
    /// takes the transposed-conv output padding from the height only and fails otherwise.)
    #[test]
    fn matches_grouped_conv2d_forward_and_backward() -> Result<()> {
        for &(h, w, k, s, pad) in &[
            (7usize, 5usize, 3usize, 1usize, [1usize, 1, 1, 1]),
            (8, 8, 3, 2, [0, 1, 0, 1]),
            (9, 7, 5, 2, [1, 2, 2, 1]),
            (4, 4, 5, 1, [2, 2, 2, 2]),
            (7, 5, 3, 2, [0, 0, 0, 0]),
        ] {
            let (n, c) = (2, 3);
            let x = Var::from_vec(seq(n * c * h * w, 0.3), (n, c, h, w), &Device::Cpu)?;
            let wt = Var::from_vec(seq(c * k * k, 1.1), (c, 1, k, k), &Device::Cpu)?;
            let r = Tensor::from_vec(
                seq(
                    n * c
                        * ((h + pad[0] + pad[1] - k) / s + 1)
                        * ((w + pad[2] + pad[3] - k) / s + 1),
                    2.0,
                ),
                (
                    n,
                    c,
                    (h + pad[0] + pad[1] - k) / s + 1,
                    (w + pad[2] + pad[3] - k) / s + 1,
                ),
                &Device::Cpu,
            )?;
            let ours = depthwise_conv2d(x.as_tensor(), wt.as_tensor(), s, pad)?;
            let xp = x
                .as_tensor()
                .pad_with_zeros(2, pad[0], pad[1])?
                .pad_with_zeros(3, pad[2], pad[3])?;
            let theirs = xp.conv2d(wt.as_tensor(), 0, s, 1, c)?;
            assert_eq!(ours.dims(), theirs.dims());
            let d = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(d < 1e-12, "forward {h}x{w} k{k} s{s} {pad:?}: {d}");
            let g1 = (ours * &r)?.sum_all()?.backward()?;
            let g2 = (theirs * &r)?.sum_all()?.backward()?;
            for (what, t) in [("x", x.as_tensor()), ("w", wt.as_tensor())] {
                let a = g1.get(t).expect("grad");
                let b = g2.get(t).expect("grad");
                let d = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
                assert!(d < 1e-10, "grad {what} {h}x{w} k{k} s{s} {pad:?}: {d}");
            }
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let x = Tensor::zeros((1, 3, 4, 4), candle_core::DType::F32, &Device::Cpu)?;
        let w = Tensor::zeros((2, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
        assert!(depthwise_conv2d(&x, &w, 1, [1, 1, 1, 1]).is_err());
        let w = Tensor::zeros((3, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
        assert!(depthwise_conv2d(&x, &w, 0, [1, 1, 1, 1]).is_err());
        let w = Tensor::zeros((3, 1, 7, 7), candle_core::DType::F32, &Device::Cpu)?;
        assert!(depthwise_conv2d(&x, &w, 1, [0, 0, 0, 0]).is_err());
        Ok(())
    }
}
