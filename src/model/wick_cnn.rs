//! `wick-cnn`: the small default CNN for small greyscale or colour images (Fashion-MNIST,
//! CIFAR-sized inputs).
//!
//! ```text
//! in -> [conv3x3(32) BN ReLU] -> [conv3x3(32) BN ReLU] -> maxpool 2
//!    -> [conv3x3(64) BN ReLU] -> [conv3x3(64) BN ReLU] -> maxpool 2
//!    -> [conv3x3(128) BN ReLU] -> global average pool -> fc Linear(128, classes)
//! ```
//! Names: `features.{0..4}.conv.weight`, `features.{0..4}.bn.{weight,bias,running_mean,running_var}`,
//! `fc.{weight,bias}`. About 141k parameters for 1 input channel and 10 classes.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::batchnorm::{BatchNorm2d, DEFAULT_EPS};
use super::layers::{conv2d_no_bias, global_avg_pool, linear, Conv2d, Linear};
use super::Classifier;
use crate::ops;

const WIDTHS: [usize; 5] = [32, 32, 64, 64, 128];
/// Max-pool 2x2 after these conv blocks.
const POOL_AFTER: [usize; 2] = [1, 3];

struct ConvBnRelu {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBnRelu {
    fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(ConvBnRelu {
            conv: conv2d_no_bias(cin, cout, 3, cfg, vb.pp("conv"))?,
            bn: BatchNorm2d::new(cout, DEFAULT_EPS, vb.pp("bn"))?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_relu_t(&self.conv.forward(x)?, train)
    }
}

pub struct WickCnn {
    features: Vec<ConvBnRelu>,
    fc: Linear,
}

impl WickCnn {
    pub fn new(in_channels: usize, num_classes: usize, vb: VarBuilder) -> Result<Self> {
        let mut features = Vec::with_capacity(WIDTHS.len());
        let mut cin = in_channels;
        let fvb = vb.pp("features");
        for (i, &w) in WIDTHS.iter().enumerate() {
            features.push(ConvBnRelu::new(cin, w, fvb.pp(i.to_string()))?);
            cin = w;
        }
        let fc = linear(cin, num_classes, vb.pp("fc"))?;
        Ok(WickCnn { features, fc })
    }

    /// Backbone: `[N, in, H, W]` → pooled features `[N, 128]`.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, block) in self.features.iter().enumerate() {
            x = block.forward_t(&x, train)?;
            if POOL_AFTER.contains(&i) {
                x = ops::max_pool2d(&x, 2, 2, 0)?;
            }
        }
        global_avg_pool(&x)
    }
}

impl Classifier for WickCnn {
    fn forward_t(&self, x: &Tensor, train: bool, freeze_backbone: bool) -> Result<Tensor> {
        let f = if freeze_backbone {
            self.features(x, false)?.detach()
        } else {
            self.features(x, train)?
        };
        self.fc.forward(&f)
    }

    fn head_prefix(&self) -> &'static str {
        "fc"
    }
}
