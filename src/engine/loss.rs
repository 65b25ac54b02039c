//! Losses candle lacks: cross-entropy with per-sample weights, label smoothing and soft targets.
//!
//! Both losses reduce as `sum_i(w_i * l_i) / N` — divided by the batch size `N`, **not** by the
//! sum of the weights. A batch mixing labelled samples (`w = 1`) and pseudo-labelled ones
//! (`w = λ`) therefore computes `(sum_labelled l + λ · sum_pseudo l) / N`: λ scales the
//! pseudo-labelled part of the loss rather than being normalised away. Without weights this is
//! the plain mean, as PyTorch's `reduction="mean"`.

use candle_core::{DType, Result, Tensor, D};

/// Numerically stable `log_softmax` over the last dimension of `[N, C]` logits.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

fn check_logits(logits: &Tensor) -> Result<(usize, usize)> {
    let (n, c) = logits.dims2().map_err(|_| {
        candle_core::Error::Msg(format!(
            "loss: `logits` must be [N, classes], got shape {:?}",
            logits.dims()
        ))
    })?;
    if n == 0 || c == 0 {
        candle_core::bail!("loss: `logits` is empty (shape {:?})", logits.dims())
    }
    if !logits.dtype().is_float() {
        candle_core::bail!(
            "loss: `logits` must be a float tensor, got {:?}",
            logits.dtype()
        )
    }
    Ok((n, c))
}

/// `sum(w_i * l_i) / N` over the per-sample losses `l` `[N]`.
fn weighted_mean(per_sample: &Tensor, weights: Option<&Tensor>, n: usize) -> Result<Tensor> {
    let total = match weights {
        None => per_sample.sum_all()?,
        Some(w) => {
            if w.dims() != [n] {
                candle_core::bail!(
                    "loss: `weights` must be [N] = [{n}], got shape {:?}",
                    w.dims()
                )
            }
            (per_sample * w.to_dtype(per_sample.dtype())?)?.sum_all()?
        }
    };
    total / n as f64
}

/// Cross-entropy of `[N, C]` logits against class indices `targets` `[N]` (u32, or any integer
/// dtype), as PyTorch's `F.cross_entropy(logits, targets, label_smoothing=ε)` per sample:
/// `l_i = (1 - ε) · (-log p_i[t_i]) + ε · mean_c(-log p_i[c])`, reduced as
/// `sum_i(w_i · l_i) / N` (see the module docs: not divided by the sum of weights).
///
/// Errors name the argument at fault: shapes, an out-of-range class index, ε outside `[0, 1)`.
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
    label_smoothing: f64,
) -> Result<Tensor> {
    let (n, c) = check_logits(logits)?;
    if targets.dims() != [n] {
        candle_core::bail!(
            "cross_entropy: `targets` must be [N] = [{n}], got shape {:?}",
            targets.dims()
        )
    }
    if !(0.0..1.0).contains(&label_smoothing) {
        candle_core::bail!(
            "cross_entropy: `label_smoothing` must be in [0, 1), got {label_smoothing}"
        )
    }
    let targets = match targets.dtype() {
        DType::U32 => targets.clone(),
        DType::U8 | DType::I64 | DType::I32 | DType::I16 => {
            let min = targets
                .to_dtype(DType::I64)?
                .min_all()?
                .to_scalar::<i64>()?;
            if min < 0 {
                candle_core::bail!("cross_entropy: `targets` holds a negative class index {min}")
            }
            targets.to_dtype(DType::U32)?
        }
        other => candle_core::bail!(
            "cross_entropy: `targets` must hold integer class indices, got {other:?}"
        ),
    };
    let max = targets.max_all()?.to_scalar::<u32>()? as usize;
    if max >= c {
        candle_core::bail!(
            "cross_entropy: `targets` holds class index {max}, but `logits` has {c} classes"
        )
    }
    let logp = log_softmax(logits)?;
    let nll = logp
        .gather(&targets.unsqueeze(1)?.contiguous()?, 1)?
        .squeeze(1)?
        .neg()?;
    let per_sample = if label_smoothing > 0.0 {
        let smooth = logp.mean(D::Minus1)?.neg()?;
        ((nll * (1.0 - label_smoothing))? + (smooth * label_smoothing)?)?
    } else {
        nll
    };
    weighted_mean(&per_sample, weights, n)
}

/// Cross-entropy against soft targets `target_probs` `[N, C]` (each row a distribution):
/// `l_i = -sum_c q_ic · log p_ic`, reduced as `sum_i(w_i · l_i) / N`. No gradient flows into
/// `target_probs`.
pub fn soft_cross_entropy(
    logits: &Tensor,
    target_probs: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    let (n, _) = check_logits(logits)?;
    if target_probs.dims() != logits.dims() {
        candle_core::bail!(
            "soft_cross_entropy: `target_probs` must have the shape of `logits` {:?}, got {:?}",
            logits.dims(),
            target_probs.dims()
        )
    }
    let logp = log_softmax(logits)?;
    let q = target_probs.detach().to_dtype(logp.dtype())?;
    let per_sample = (logp * q)?.sum(D::Minus1)?.neg()?;
    weighted_mean(&per_sample, weights, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn logits() -> Result<Tensor> {
        Tensor::new(&[[1.0f32, 2.0, 3.0], [0.5, -1.0, 0.0]], &Device::Cpu)
    }

    fn lse(v: &[f64]) -> f64 {
        v.iter().map(|x| x.exp()).sum::<f64>().ln()
    }

    #[test]
    fn plain_cross_entropy_matches_hand_computation() -> Result<()> {
        let t = Tensor::new(&[2u32, 0], &Device::Cpu)?;
        let got = cross_entropy(&logits()?, &t, None, 0.0)?.to_scalar::<f32>()? as f64;
        let l0 = lse(&[1.0, 2.0, 3.0]) - 3.0;
        let l1 = lse(&[0.5, -1.0, 0.0]) - 0.5;
        assert!((got - (l0 + l1) / 2.0).abs() < 1e-6, "{got}");
        // torch.nn.functional.cross_entropy(x, t) = 0.5058683
        assert!((got - 0.505_868_3).abs() < 1e-5, "{got}");
        Ok(())
    }

    #[test]
    fn weights_divide_by_batch_size_not_weight_sum() -> Result<()> {
        let t = Tensor::new(&[2u32, 0], &Device::Cpu)?;
        let w = Tensor::new(&[1.0f32, 0.5], &Device::Cpu)?;
        let got = cross_entropy(&logits()?, &t, Some(&w), 0.0)?.to_scalar::<f32>()? as f64;
        let l0 = lse(&[1.0, 2.0, 3.0]) - 3.0;
        let l1 = lse(&[0.5, -1.0, 0.0]) - 0.5;
        assert!((got - (l0 + 0.5 * l1) / 2.0).abs() < 1e-6, "{got}");
        Ok(())
    }

    #[test]
    fn label_smoothing_matches_pytorch_formula() -> Result<()> {
        let t = Tensor::new(&[2u32, 0], &Device::Cpu)?;
        let eps = 0.1;
        let got = cross_entropy(&logits()?, &t, None, eps)?.to_scalar::<f32>()? as f64;
        let rows = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]];
        let tg = [2usize, 0];
        let mut want = 0.0;
        for (r, &k) in rows.iter().zip(&tg) {
            let z = lse(r);
            let nll = z - r[k];
            let smooth = r.iter().map(|x| z - x).sum::<f64>() / 3.0;
            want += (1.0 - eps) * nll + eps * smooth;
        }
        want /= 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // torch.nn.functional.cross_entropy(x, t, label_smoothing=0.1) = 0.5892016
        assert!((got - 0.589_201_6).abs() < 1e-5, "{got}");
        Ok(())
    }

    #[test]
    fn stable_for_huge_logits() -> Result<()> {
        let x = Tensor::new(&[[1000.0f32, 0.0], [-1000.0, 1000.0]], &Device::Cpu)?;
        let t = Tensor::new(&[1u32, 1], &Device::Cpu)?;
        let got = cross_entropy(&x, &t, None, 0.0)?.to_scalar::<f32>()?;
        assert!((got - 500.0).abs() < 1e-3, "{got}");
        Ok(())
    }

    #[test]
    fn gradient_is_softmax_minus_onehot_over_n() -> Result<()> {
        let x = Var::from_tensor(&logits()?)?;
        let t = Tensor::new(&[2u32, 0], &Device::Cpu)?;
        let g = cross_entropy(x.as_tensor(), &t, None, 0.0)?.backward()?;
        let g = g.get(x.as_tensor()).expect("grad").to_vec2::<f32>()?;
        let rows = [[1.0f64, 2.0, 3.0], [0.5, -1.0, 0.0]];
        for (i, r) in rows.iter().enumerate() {
            let z = lse(r);
            for k in 0..3 {
                let p = (r[k] - z).exp();
                let y = if k == [2, 0][i] { 1.0 } else { 0.0 };
                assert!(((p - y) / 2.0 - g[i][k] as f64).abs() < 1e-6);
            }
        }
        Ok(())
    }

    #[test]
    fn soft_targets_match_hand_computation_and_one_hot_equals_hard() -> Result<()> {
        let q = Tensor::new(&[[0.2f32, 0.3, 0.5], [1.0, 0.0, 0.0]], &Device::Cpu)?;
        let w = Tensor::new(&[2.0f32, 1.0], &Device::Cpu)?;
        let got = soft_cross_entropy(&logits()?, &q, Some(&w))?.to_scalar::<f32>()? as f64;
        let r0 = [1.0, 2.0, 3.0];
        let z0 = lse(&r0);
        let l0: f64 = [0.2, 0.3, 0.5]
            .iter()
            .zip(&r0)
            .map(|(p, x)| p * (z0 - x))
            .sum();
        let l1 = lse(&[0.5, -1.0, 0.0]) - 0.5;
        assert!((got - (2.0 * l0 + l1) / 2.0).abs() < 1e-6, "{got}");

        let onehot = Tensor::new(&[[0.0f32, 0.0, 1.0], [1.0, 0.0, 0.0]], &Device::Cpu)?;
        let t = Tensor::new(&[2u32, 0], &Device::Cpu)?;
        let a = soft_cross_entropy(&logits()?, &onehot, None)?.to_scalar::<f32>()?;
        let b = cross_entropy(&logits()?, &t, None, 0.0)?.to_scalar::<f32>()?;
        assert!((a - b).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn bad_inputs_are_named_errors() -> Result<()> {
        let x = logits()?;
        let e = cross_entropy(&x, &Tensor::new(&[3u32, 0], &Device::Cpu)?, None, 0.0)
            .expect_err("out of range");
        assert!(e.to_string().contains("targets"), "{e}");
        let e =
            cross_entropy(&x, &Tensor::new(&[1u32], &Device::Cpu)?, None, 0.0).expect_err("short");
        assert!(e.to_string().contains("targets"), "{e}");
        let t = Tensor::new(&[1u32, 0], &Device::Cpu)?;
        let w = Tensor::new(&[1.0f32], &Device::Cpu)?;
        let e = cross_entropy(&x, &t, Some(&w), 0.0).expect_err("weights");
        assert!(e.to_string().contains("weights"), "{e}");
        assert!(cross_entropy(&x, &t, None, 1.0).is_err());
        let e = cross_entropy(&x.flatten_all()?, &t, None, 0.0).expect_err("rank");
        assert!(e.to_string().contains("logits"), "{e}");
        let ti = Tensor::new(&[1i64, -1], &Device::Cpu)?;
        assert!(cross_entropy(&x, &ti, None, 0.0).is_err());
        let ti = Tensor::new(&[1i64, 2], &Device::Cpu)?;
        assert!(cross_entropy(&x, &ti, None, 0.0).is_ok());
        let q = Tensor::zeros((2, 4), DType::F32, &Device::Cpu)?;
        let e = soft_cross_entropy(&x, &q, None).expect_err("soft shape");
        assert!(e.to_string().contains("target_probs"), "{e}");
        Ok(())
    }
}
