//! Small building blocks shared by the models: convolutions and linear layers with
//! torchvision's initialisation, and global average pooling.
//!
//! Convolutions run through [`crate::ops::conv2d`] (wick's GEMM kernels on the CPU, candle's
//! convolution elsewhere).

use candle_core::{Module, Result, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Conv2dConfig, Init, Linear, VarBuilder};

use crate::ops;

/// A 2-D convolution layer (same fields and accessors as `candle_nn::Conv2d`) whose forward
/// is [`ops::conv2d`].
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        Conv2d {
            weight,
            bias,
            config,
        }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        ops::conv2d(
            x,
            &self.weight,
            self.bias.as_ref(),
            (c.stride, c.stride),
            (c.padding, c.padding),
            (c.dilation, c.dilation),
            c.groups,
        )
    }
}

/// torchvision's ResNet conv init: `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
pub const KAIMING_FAN_OUT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanOut,
    non_linearity: NonLinearity::ReLU,
};

/// A bias-free 2-D convolution named `<vb>.weight`, shape `[out, in / groups, k, k]`.
pub fn conv2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    if cfg.groups == 0
        || !in_channels.is_multiple_of(cfg.groups)
        || !out_channels.is_multiple_of(cfg.groups)
    {
        candle_core::bail!(
            "conv {}: {in_channels} -> {out_channels} channels not divisible into {} groups",
            vb.prefix(),
            cfg.groups
        )
    }
    let w = vb.get_with_hints(
        (out_channels, in_channels / cfg.groups, kernel, kernel),
        "weight",
        KAIMING_FAN_OUT,
    )?;
    Ok(Conv2d::new(w, None, cfg))
}

/// A linear layer with PyTorch's default init (`U(-1/sqrt(in), 1/sqrt(in))` for weight and bias),
/// names `<vb>.weight` `[out, in]` and `<vb>.bias` `[out]`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let bound = 1.0 / (in_dim.max(1) as f64).sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let w = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let b = vb.get_with_hints(out_dim, "bias", init)?;
    Ok(Linear::new(w, Some(b)))
}

/// `[N, C, H, W]` → `[N, C]`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean((2, 3))
}
