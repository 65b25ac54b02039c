//! Small building blocks shared by the models: convolutions and linear layers with
//! torchvision's initialisation, and global average pooling.
//!
//! Convolutions run through [`crate::ops::conv2d`] (wick's GEMM kernels on the CPU, candle's
//! convolution elsewhere). Convolutions and linear layers follow [`super::autocast`] (bf16
//! compute under `precision = "bf16"`).

use candle_core::{Module, Result, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Conv2dConfig, Init, VarBuilder};

use super::autocast;
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
        // Under autocast: bf16 input, weight (cast from the f32 master) and output.
        let x = autocast::cast(x)?;
        let w = autocast::cast(&self.weight)?;
        let b = self.bias.as_ref().map(autocast::cast).transpose()?;
        ops::conv2d(
            &x,
            &w,
            b.as_ref(),
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

/// A linear layer (same constructor and accessors as `candle_nn::Linear`) that follows
/// [`autocast`]: under bf16 it multiplies in bf16 and returns f32 (the models' only linear
/// layer is the classifier head, whose logits feed the f32 loss).
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            inner: candle_nn::Linear::new(weight, bias),
        }
    }

    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if autocast::compute_dtype().is_none() {
            return self.inner.forward(x);
        }
        let w = autocast::cast(self.weight())?;
        let b = self.bias().map(autocast::cast).transpose()?;
        let y = candle_nn::Linear::new(w, b).forward(&autocast::cast(x)?)?;
        autocast::to_f32(&y)
    }
}

/// `[N, C, H, W]` → `[N, C]` (in f32: reduced-precision activations are upcast first).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    autocast::to_f32(x)?.mean((2, 3))
}
