//! Small building blocks shared by the models: convolutions and linear layers with
//! torchvision's initialisation, and global average pooling.

use candle_core::{Result, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Conv2d, Conv2dConfig, Init, Linear, VarBuilder};

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
