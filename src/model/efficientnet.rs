//! EfficientNet-Lite0 (in progress).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::Classifier;

pub struct EfficientNetLite {}

impl EfficientNetLite {
    pub fn lite0(_in_channels: usize, _num_classes: usize, _vb: VarBuilder) -> Result<Self> {
        candle_core::bail!("efficientnet-lite0 is not implemented yet")
    }
}

impl Classifier for EfficientNetLite {
    fn forward_t(&self, _x: &Tensor, _train: bool, _freeze: bool) -> Result<Tensor> {
        candle_core::bail!("efficientnet-lite0 is not implemented yet")
    }
    fn head_prefix(&self) -> &'static str {
        "_fc"
    }
}
