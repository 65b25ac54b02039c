//! ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck, stride on the 3x3 conv as torchvision's
//! "v1.5"), with torchvision's parameter names so that its checkpoints load as they are:
//! `conv1`, `bn1`, `layer{1..4}.{i}.conv{1,2,3}`, `layer{1..4}.{i}.bn{1,2,3}`,
//! `layer{2..4}.0.downsample.0` (1x1 conv), `layer{2..4}.0.downsample.1` (BN), `fc`.
//!
//! Stem: conv 7x7/2 pad 3, BN, ReLU, max-pool 3x3/2 pad 1 ([`crate::ops::max_pool2d`]). The
//! train flag reaches every BatchNorm.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::batchnorm::{BatchNorm2d, DEFAULT_EPS};
use super::layers::{conv2d_no_bias, global_avg_pool, linear, Conv2d, Linear};
use super::Classifier;
use crate::ops;

/// Which residual block a ResNet stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Basic,
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// Depth configurations as torchvision.
pub fn config(arch: &str) -> Option<(BlockKind, [usize; 4])> {
    match arch {
        "resnet18" => Some((BlockKind::Basic, [2, 2, 2, 2])),
        "resnet34" => Some((BlockKind::Basic, [3, 4, 6, 3])),
        "resnet50" => Some((BlockKind::Bottleneck, [3, 4, 6, 3])),
        _ => None,
    }
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    };
    conv2d_no_bias(cin, cout, k, cfg, vb)
}

struct Block {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl Block {
    fn new(
        kind: BlockKind,
        cin: usize,
        planes: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let out = planes * kind.expansion();
        let specs: Vec<(usize, usize, usize, usize)> = match kind {
            // (in, out, kernel, stride)
            BlockKind::Basic => vec![(cin, planes, 3, stride), (planes, planes, 3, 1)],
            BlockKind::Bottleneck => vec![
                (cin, planes, 1, 1),
                (planes, planes, 3, stride),
                (planes, out, 1, 1),
            ],
        };
        let mut convs = Vec::with_capacity(specs.len());
        for (i, (ci, co, k, s)) in specs.into_iter().enumerate() {
            let n = i + 1;
            convs.push((
                conv(ci, co, k, s, vb.pp(format!("conv{n}")))?,
                BatchNorm2d::new(co, DEFAULT_EPS, vb.pp(format!("bn{n}")))?,
            ));
        }
        let downsample = if stride != 1 || cin != out {
            let d = vb.pp("downsample");
            Some((
                conv(cin, out, 1, stride, d.pp("0"))?,
                BatchNorm2d::new(out, DEFAULT_EPS, d.pp("1"))?,
            ))
        } else {
            None
        };
        Ok(Block { convs, downsample })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let last = self.convs.len() - 1;
        let mut y = x.clone();
        for (i, (c, bn)) in self.convs.iter().enumerate() {
            y = if i != last {
                bn.forward_relu_t(&c.forward(&y)?, train)?
            } else {
                bn.forward_t(&c.forward(&y)?, train)?
            };
        }
        let identity = match &self.downsample {
            Some((c, bn)) => bn.forward_t(&c.forward(x)?, train)?,
            None => x.clone(),
        };
        ops::add_relu(&y, &identity)
    }
}

pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    layers: Vec<Vec<Block>>,
    fc: Linear,
}

impl ResNet {
    pub fn new(
        kind: BlockKind,
        depths: [usize; 4],
        in_channels: usize,
        num_classes: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv1 = conv2d_no_bias(
            in_channels,
            64,
            7,
            Conv2dConfig {
                padding: 3,
                stride: 2,
                ..Default::default()
            },
            vb.pp("conv1"),
        )?;
        let bn1 = BatchNorm2d::new(64, DEFAULT_EPS, vb.pp("bn1"))?;
        let mut cin = 64;
        let mut layers = Vec::with_capacity(4);
        for (li, &depth) in depths.iter().enumerate() {
            let planes = 64 << li;
            let lvb = vb.pp(format!("layer{}", li + 1));
            let mut blocks = Vec::with_capacity(depth);
            for bi in 0..depth {
                let stride = if bi == 0 && li > 0 { 2 } else { 1 };
                blocks.push(Block::new(
                    kind,
                    cin,
                    planes,
                    stride,
                    lvb.pp(bi.to_string()),
                )?);
                cin = planes * kind.expansion();
            }
            layers.push(blocks);
        }
        let fc = linear(cin, num_classes, vb.pp("fc"))?;
        Ok(ResNet {
            conv1,
            bn1,
            layers,
            fc,
        })
    }

    /// Backbone: `[N, in, H, W]` → pooled features `[N, 512 * expansion]`.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.bn1.forward_relu_t(&self.conv1.forward(x)?, train)?;
        let mut x = ops::max_pool2d(&x, 3, 2, 1)?;
        for layer in &self.layers {
            for block in layer {
                x = block.forward_t(&x, train)?;
            }
        }
        global_avg_pool(&x)
    }
}

impl Classifier for ResNet {
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
