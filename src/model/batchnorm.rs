//! A trainable 2-D batch normalisation that behaves as PyTorch's `nn.BatchNorm2d`.
//!
//! candle-nn's `BatchNorm` copies its running statistics out of the `VarMap` when the tensors
//! are not already variables and builds the running-stat update from graph-attached tensors;
//! this one updates the very `Var`s held by the `VarMap` (so they are saved in checkpoints),
//! from detached batch statistics (so no graph is kept alive).
//!
//! - train: normalise with the batch mean and the *biased* batch variance over `(N, H, W)`;
//!   `running_mean = (1 - m) * running_mean + m * mean`,
//!   `running_var = (1 - m) * running_var + m * var * n / (n - 1)` (unbiased), `m = 0.1`.
//! - eval: normalise with the running statistics.
//!
//! Parameter names: `weight`, `bias`, `running_mean`, `running_var` (torchvision). The running
//! statistics live in the `VarMap` as `Var`s but are never trainable (see
//! [`crate::model::is_trainable`]): the forward only reads them detached.

use candle_core::{Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use crate::ops::{self, BatchNormMode};

/// PyTorch's default momentum for the running statistics.
pub const DEFAULT_MOMENTUM: f64 = 0.1;
/// PyTorch's default epsilon.
pub const DEFAULT_EPS: f64 = 1e-5;

#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    num_features: usize,
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm2d {
    /// Creates (or fetches from `vb`) `weight` (init 1), `bias` (0), `running_mean` (0) and
    /// `running_var` (1), each of shape `[num_features]`.
    pub fn new(num_features: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if eps.is_nan() || eps < 0.0 {
            candle_core::bail!("batch-norm {}: eps must be >= 0, got {eps}", vb.prefix())
        }
        let weight = vb.get_with_hints(num_features, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(num_features, "bias", Init::Const(0.0))?;
        let running_mean = vb.get_with_hints(num_features, "running_mean", Init::Const(0.0))?;
        let running_var = vb.get_with_hints(num_features, "running_var", Init::Const(1.0))?;
        Ok(BatchNorm2d {
            num_features,
            weight,
            bias,
            // The VarMap hands out its variables' tensors: `from_tensor` keeps the same storage,
            // so updates land in the VarMap.
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            eps,
            momentum: DEFAULT_MOMENTUM,
        })
    }

    /// Sets the running-statistics momentum (PyTorch convention: the weight of the new batch).
    pub fn with_momentum(mut self, momentum: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&momentum) {
            candle_core::bail!("batch-norm: momentum must be in [0, 1], got {momentum}")
        }
        self.momentum = momentum;
        Ok(self)
    }

    pub fn momentum(&self) -> f64 {
        self.momentum
    }

    pub fn num_features(&self) -> usize {
        self.num_features
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }

    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// `x`: `[N, C, H, W]` with `C == num_features`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, false)
    }

    /// `relu(self.forward_t(x, train))` as one fused op (one pass less over memory, forward
    /// and backward).
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, true)
    }

    fn forward_impl(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let (_, c, _, _) = x.dims4().map_err(|_| {
            candle_core::Error::Msg(format!(
                "batch-norm: input must be [N, C, H, W], got {:?}",
                x.dims()
            ))
        })?;
        if c != self.num_features {
            candle_core::bail!(
                "batch-norm: input has {c} channels, layer has {}",
                self.num_features
            )
        }
        let (running_mean, running_var);
        let mode = if train {
            BatchNormMode::Train
        } else {
            running_mean = self.running_mean.as_detached_tensor();
            running_var = self.running_var.as_detached_tensor();
            BatchNormMode::Eval {
                mean: &running_mean,
                var: &running_var,
            }
        };
        let (y, stats) = ops::batch_norm2d(x, &self.weight, &self.bias, mode, self.eps, relu)?;
        if let Some(s) = stats {
            self.update_running(&s.mean, &s.var, s.count)?;
        }
        Ok(y)
    }

    /// Running-stat update from detached batch statistics, as PyTorch.
    fn update_running(&self, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
        let m = self.momentum;
        let rdt = self.running_mean.dtype();
        let mean = mean.detach().flatten_all()?.to_dtype(rdt)?;
        let unbiased =
            (var.detach().flatten_all()? * (count as f64 / (count as f64 - 1.0)))?.to_dtype(rdt)?;
        let new_mean = ((self.running_mean.as_detached_tensor() * (1.0 - m))? + (mean * m)?)?;
        let new_var = ((self.running_var.as_detached_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn input() -> Result<Tensor> {
        // [2, 2, 1, 3]: channel 0 = 1..6 style values, channel 1 = constant 5 except one
        let v: Vec<f32> = vec![1., 2., 3., 5., 5., 8., 4., 6., 8., 5., 5., 5.];
        Tensor::from_vec(v, (2, 2, 1, 3), &Device::Cpu)
    }

    #[test]
    fn train_mode_matches_pytorch_formulas() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let bn = BatchNorm2d::new(2, 1e-5, vb.pp("bn"))?;
        let x = input()?;
        let y = bn.forward_t(&x, true)?;
        // channel 0 values: 1,2,3,4,6,8 ; channel 1: 5,5,8,5,5,5
        let c0 = [1f64, 2., 3., 4., 6., 8.];
        let c1 = [5f64, 5., 8., 5., 5., 5.];
        let stats = |c: &[f64]| {
            let m = c.iter().sum::<f64>() / 6.0;
            let v = c.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / 6.0;
            (m, v)
        };
        let (m0, v0) = stats(&c0);
        let (m1, v1) = stats(&c1);
        let ys = y.flatten_all()?.to_vec1::<f32>()?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        for (i, (a, b)) in xs.iter().zip(&ys).enumerate() {
            let (m, v) = if (i / 3) % 2 == 0 { (m0, v0) } else { (m1, v1) };
            let want = (*a as f64 - m) / (v + 1e-5).sqrt();
            assert!((want - *b as f64).abs() < 1e-4, "{i}: {want} vs {b}");
        }
        let rm = bn.running_mean().to_vec1::<f32>()?;
        let rv = bn.running_var().to_vec1::<f32>()?;
        assert!((rm[0] as f64 - 0.1 * m0).abs() < 1e-6);
        assert!((rm[1] as f64 - 0.1 * m1).abs() < 1e-6);
        assert!((rv[0] as f64 - (0.9 + 0.1 * v0 * 6.0 / 5.0)).abs() < 1e-5);
        assert!((rv[1] as f64 - (0.9 + 0.1 * v1 * 6.0 / 5.0)).abs() < 1e-5);
        // The VarMap itself holds the updated statistics (they get saved).
        let data = vm.data().lock().expect("varmap lock");
        let saved = data["bn.running_mean"].to_vec1::<f32>()?;
        assert_eq!(saved, rm);
        Ok(())
    }

    #[test]
    fn train_output_is_normalised_with_biased_variance() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let bn = BatchNorm2d::new(2, 0.0, vb)?;
        let y = bn.forward_t(&input()?, true)?;
        // Per channel: mean 0 and biased variance 1.
        let m = y.mean_keepdim((0, 2, 3))?.flatten_all()?.to_vec1::<f32>()?;
        let v = y
            .sqr()?
            .mean_keepdim((0, 2, 3))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for i in 0..2 {
            assert!(m[i].abs() < 1e-5, "{m:?}");
            assert!((v[i] - 1.0).abs() < 1e-4, "{v:?}");
        }
        Ok(())
    }

    #[test]
    fn eval_mode_uses_running_stats_and_does_not_update() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let bn = BatchNorm2d::new(2, 1e-3, vb)?;
        bn.running_mean
            .set(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu)?)?;
        bn.running_var
            .set(&Tensor::new(&[4.0f32, 0.25], &Device::Cpu)?)?;
        let x = input()?;
        let y = bn.forward_t(&x, false)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ys = y.flatten_all()?.to_vec1::<f32>()?;
        for (i, (a, b)) in xs.iter().zip(&ys).enumerate() {
            let ch = (i / 3) % 2;
            let (m, v) = if ch == 0 { (1.0, 4.0) } else { (-2.0, 0.25) };
            let want = (a - m) / (v + 1e-3f32).sqrt();
            assert!((want - b).abs() < 1e-5, "{i}: {want} vs {b}");
        }
        assert_eq!(bn.running_mean().to_vec1::<f32>()?, vec![1.0, -2.0]);
        Ok(())
    }

    #[test]
    fn running_stats_get_no_gradient_and_stay_detached() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let bn = BatchNorm2d::new(2, 1e-5, vb)?;
        let x = input()?;
        for train in [true, false] {
            let y = bn.forward_t(&x, train)?;
            let grads = y.sqr()?.sum_all()?.backward()?;
            assert!(grads.get(bn.running_mean()).is_none());
            assert!(grads.get(bn.running_var()).is_none());
            assert!(grads.get(bn.weight()).is_some());
        }
        Ok(())
    }

    #[test]
    fn single_value_per_channel_in_train_mode_is_an_error() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let bn = BatchNorm2d::new(3, 1e-5, vb)?;
        let x = Tensor::zeros((1, 3, 1, 1), DType::F32, &Device::Cpu)?;
        assert!(bn.forward_t(&x, true).is_err());
        assert!(bn.forward_t(&x, false).is_ok());
        let bad = Tensor::zeros((1, 2, 4, 4), DType::F32, &Device::Cpu)?;
        assert!(bn.forward_t(&bad, false).is_err());
        Ok(())
    }
}
