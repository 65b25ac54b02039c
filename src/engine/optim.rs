//! Optimizers with parameter groups: SGD (momentum, Nesterov, L2 weight decay) and AdamW, with
//! the update rules of `torch.optim.SGD` and `torch.optim.AdamW`.
//!
//! All optimizer state is built from **detached** tensors: the gradients returned by candle's
//! `backward()` stay attached to the forward graph, and a momentum buffer derived from them
//! would keep every step's graph alive (see DESIGN.md, "What candle 0.11 lacks").
//!
//! A parameter without a gradient in the `GradStore` (frozen, or unused in this forward) is left
//! untouched, bit for bit, and its state does not advance (as PyTorch skips `p.grad is None`).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Shape, Tensor, Var};
use candle_nn::VarMap;

use crate::config::{Freeze, ModelConfig, OptimizerKind, TrainConfig};
use crate::model::{is_backbone, is_no_decay, is_trainable};
use crate::ops::{
    self,
    sgd::{HostBuf, SgdHyper},
};

/// Parameters sharing a learning-rate multiplier and a weight decay.
pub struct ParamGroup {
    /// Multiplies the scheduled learning rate for this group.
    pub lr_mult: f64,
    /// `(name, variable)`; names key the optimizer state.
    pub params: Vec<(String, Var)>,
    pub weight_decay: f64,
}

pub trait Optimizer: Send {
    /// One update with the gradients of the last `backward()`, at learning rate `lr` (times
    /// each group's `lr_mult`).
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()>;
    /// Optimizer state tensors by name (momentum buffers, Adam moments, step counts) for
    /// checkpoints: `<param>.momentum_buffer`, `<param>.exp_avg`, `<param>.exp_avg_sq`,
    /// `<param>.step` (f64 `[1]`).
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Restores state saved by [`Optimizer::state`]. Entries for parameters this optimizer does
    /// not hold are ignored; parameters without saved state start fresh; a shape mismatch is an
    /// error naming the entry.
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;
}

/// The optimizer `cfg.optimizer` over `groups`. SGD takes `cfg.momentum` and `cfg.nesterov`
/// (dampening 0); AdamW uses PyTorch's defaults `betas = (0.9, 0.999)`, `eps = 1e-8`.
pub fn build(cfg: &TrainConfig, groups: Vec<ParamGroup>) -> Box<dyn Optimizer> {
    match cfg.optimizer {
        OptimizerKind::Sgd => Box::new(Sgd::new(groups, cfg.momentum, cfg.nesterov)),
        OptimizerKind::Adamw => Box::new(AdamW::new(groups, 0.9, 0.999, 1e-8)),
    }
}

/// Splits the trainable variables of `varmap` (BatchNorm running statistics excluded) into up
/// to four groups, in this order, empty groups omitted:
/// head (lr × 1.0, `weight_decay`), head without decay (lr × 1.0, 0), backbone
/// (lr × `backbone_lr_mult`, `weight_decay`), backbone without decay. The backbone groups are
/// left out when `model_cfg.freeze` is `backbone`. "Without decay": biases, BatchNorm weights
/// ([`is_no_decay`]) and any other 1-D parameter. Parameters are sorted by name.
pub fn param_groups(
    varmap: &VarMap,
    head_prefix: &str,
    model_cfg: &ModelConfig,
    weight_decay: f64,
) -> Vec<ParamGroup> {
    let mut vars: Vec<(String, Var)> = match varmap.data().lock() {
        Ok(d) => d.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Err(poisoned) => poisoned
            .into_inner()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut buckets: [Vec<(String, Var)>; 4] = Default::default();
    for (name, var) in vars {
        if !is_trainable(&name) || !var.dtype().is_float() {
            continue;
        }
        let backbone = is_backbone(&name, head_prefix);
        if backbone && model_cfg.freeze == Freeze::Backbone {
            continue;
        }
        let no_decay = is_no_decay(&name) || var.rank() <= 1;
        let i = 2 * usize::from(backbone) + usize::from(no_decay);
        buckets[i].push((name, var));
    }
    let settings = [
        (1.0, weight_decay),
        (1.0, 0.0),
        (model_cfg.backbone_lr_mult, weight_decay),
        (model_cfg.backbone_lr_mult, 0.0),
    ];
    buckets
        .into_iter()
        .zip(settings)
        .filter(|(params, _)| !params.is_empty())
        .map(|(params, (lr_mult, weight_decay))| ParamGroup {
            lr_mult,
            params,
            weight_decay,
        })
        .collect()
}

/// The detached gradient of `var`, or `None` when it has none.
fn grad_of(grads: &GradStore, var: &Var) -> Option<Tensor> {
    grads.get(var.as_tensor()).map(|g| g.detach())
}

fn check_state(name: &str, t: &Tensor, like: &Tensor) -> Result<Tensor> {
    if t.dims() != like.dims() {
        candle_core::bail!(
            "optimizer state `{name}` has shape {:?}, the parameter has {:?}",
            t.dims(),
            like.dims()
        )
    }
    t.to_dtype(like.dtype())?
        .to_device(like.device())?
        .detach()
        .contiguous()
}

fn step_tensor(step: u64) -> Result<Tensor> {
    Tensor::new(&[step as f64], &candle_core::Device::Cpu)
}

fn read_step(name: &str, t: &Tensor) -> Result<u64> {
    let v = t
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?
        .first()
        .copied();
    match v {
        Some(v) if v >= 0.0 && v.fract() == 0.0 => Ok(v as u64),
        other => candle_core::bail!("optimizer state `{name}` is not a step count: {other:?}"),
    }
}

/// `torch.optim.SGD(params, lr, momentum, dampening=0, weight_decay, nesterov)`:
/// ```text
/// g = grad + wd · p
/// buf = g                      (first step)
/// buf = momentum · buf + g     (later steps)
/// g = g + momentum · buf       (Nesterov)   |   g = buf   (otherwise)
/// p = p - lr · g
/// ```
pub struct Sgd {
    groups: Vec<ParamGroup>,
    momentum: f64,
    nesterov: bool,
    buffers: HashMap<String, Momentum>,
}

/// A momentum buffer: a plain host vector updated in place by the fused CPU kernel
/// ([`ops::sgd`]), or a tensor for the candle-op path (other devices, `Backend::Candle`).
enum Momentum {
    Host(Shape, HostBuf),
    Tensor(Tensor),
}

impl Momentum {
    fn to_tensor(&self) -> Result<Tensor> {
        match self {
            Momentum::Host(shape, b) => b.to_tensor(shape),
            Momentum::Tensor(t) => Ok(t.clone()),
        }
    }
}

impl Sgd {
    pub fn new(groups: Vec<ParamGroup>, momentum: f64, nesterov: bool) -> Self {
        Sgd {
            groups,
            momentum,
            nesterov,
            buffers: HashMap::new(),
        }
    }

    /// The update as candle ops (any device).
    fn step_ops(&mut self, name: &str, var: &Var, g: Tensor, lr: f64, wd: f64) -> Result<()> {
        let p = var.as_detached_tensor();
        let mut g = g;
        if wd != 0.0 {
            g = (g + (&p * wd)?)?;
        }
        if self.momentum != 0.0 {
            let buf = match self.buffers.get(name) {
                None => g.copy()?,
                Some(buf) => ((buf.to_tensor()? * self.momentum)? + &g)?,
            };
            g = if self.nesterov {
                (g + (&buf * self.momentum)?)?
            } else {
                buf.clone()
            };
            self.buffers.insert(name.to_string(), Momentum::Tensor(buf));
        }
        var.set(&(p - (g * lr)?)?)
    }

    /// The same update in one in-place pass ([`ops::sgd::sgd_update_`]), bit for bit equal.
    fn step_fused(&mut self, name: &str, var: &Var, g: &Tensor, lr: f64, wd: f64) -> Result<()> {
        let h = SgdHyper {
            lr,
            weight_decay: wd,
            momentum: self.momentum,
            nesterov: self.nesterov,
        };
        if self.momentum == 0.0 {
            return ops::sgd::sgd_update_(var.as_tensor(), g, None, false, h);
        }
        let host = match self.buffers.remove(name) {
            Some(Momentum::Host(s, b)) => Some(b).filter(|_| s.dims() == var.dims()),
            Some(Momentum::Tensor(t)) => HostBuf::from_tensor(&t)?,
            None => None,
        };
        let first = host.is_none();
        let mut buf = match host {
            Some(b) => b,
            None => match var.dtype() {
                DType::F64 => HostBuf::F64(vec![0.0; var.elem_count()]),
                _ => HostBuf::F32(vec![0.0; var.elem_count()]),
            },
        };
        ops::sgd::sgd_update_(var.as_tensor(), g, Some(&mut buf), first, h)?;
        self.buffers
            .insert(name.to_string(), Momentum::Host(var.shape().clone(), buf));
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let fused = ops::backend() == ops::Backend::Wick;
        let work: Vec<(String, Var, f64, f64)> = self
            .groups
            .iter()
            .flat_map(|g| {
                g.params
                    .iter()
                    .map(move |(n, v)| (n.clone(), v.clone(), lr * g.lr_mult, g.weight_decay))
            })
            .collect();
        for (name, var, lr, wd) in work {
            let Some(g) = grad_of(grads, &var) else {
                continue;
            };
            let g = g.to_dtype(var.dtype())?;
            if fused && ops::sgd::supported(var.as_tensor(), &g) {
                self.step_fused(&name, &var, &g, lr, wd)?;
            } else {
                self.step_ops(&name, &var, g, lr, wd)?;
            }
        }
        Ok(())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .buffers
            .iter()
            .filter_map(|(k, v)| Some((format!("{k}.momentum_buffer"), v.to_tensor().ok()?)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut buffers = HashMap::new();
        for group in &self.groups {
            for (name, var) in &group.params {
                let key = format!("{name}.momentum_buffer");
                if let Some(t) = state.get(&key) {
                    let t = check_state(&key, t, var.as_tensor())?;
                    buffers.insert(name.clone(), Momentum::Tensor(t));
                }
            }
        }
        self.buffers = buffers;
        Ok(())
    }
}

/// `torch.optim.AdamW(params, lr, betas, eps, weight_decay, amsgrad=False)`:
/// ```text
/// p = p · (1 - lr · wd)
/// m = β1 · m + (1 - β1) · g ;  v = β2 · v + (1 - β2) · g²
/// p = p - lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)
/// ```
pub struct AdamW {
    groups: Vec<ParamGroup>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// Per parameter: (exp_avg, exp_avg_sq, step).
    moments: HashMap<String, (Tensor, Tensor, u64)>,
}

impl AdamW {
    pub fn new(groups: Vec<ParamGroup>, beta1: f64, beta2: f64, eps: f64) -> Self {
        AdamW {
            groups,
            beta1,
            beta2,
            eps,
            moments: HashMap::new(),
        }
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let (b1, b2) = (self.beta1, self.beta2);
        for group in &self.groups {
            let lr = lr * group.lr_mult;
            for (name, var) in &group.params {
                let Some(g) = grad_of(grads, var) else {
                    continue;
                };
                let mut p = var.as_detached_tensor();
                let g = g.to_dtype(p.dtype())?;
                if group.weight_decay != 0.0 {
                    p = (p * (1.0 - lr * group.weight_decay))?;
                }
                let (m, v, t) = match self.moments.get(name) {
                    Some((m, v, t)) => (m.clone(), v.clone(), *t),
                    None => (g.zeros_like()?, g.zeros_like()?, 0),
                };
                let t = t + 1;
                let m = ((m * b1)? + (&g * (1.0 - b1))?)?;
                let v = ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                let bc1 = 1.0 - b1.powf(t as f64);
                let bc2 = 1.0 - b2.powf(t as f64);
                let denom = ((v.sqrt()? / bc2.sqrt())? + self.eps)?;
                let update = ((&m / denom)? * (lr / bc1))?;
                var.set(&(p - update)?)?;
                self.moments.insert(name.clone(), (m, v, t));
            }
        }
        Ok(())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.moments.len() * 3);
        for (k, (m, v, t)) in &self.moments {
            out.push((format!("{k}.exp_avg"), m.clone()));
            out.push((format!("{k}.exp_avg_sq"), v.clone()));
            if let Ok(t) = step_tensor(*t) {
                out.push((format!("{k}.step"), t));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut moments = HashMap::new();
        for group in &self.groups {
            for (name, var) in &group.params {
                let keys = [
                    format!("{name}.exp_avg"),
                    format!("{name}.exp_avg_sq"),
                    format!("{name}.step"),
                ];
                match (
                    state.get(&keys[0]),
                    state.get(&keys[1]),
                    state.get(&keys[2]),
                ) {
                    (Some(m), Some(v), Some(t)) => {
                        let m = check_state(&keys[0], m, var.as_tensor())?;
                        let v = check_state(&keys[1], v, var.as_tensor())?;
                        let t = read_step(&keys[2], t)?;
                        moments.insert(name.clone(), (m, v, t));
                    }
                    (None, None, None) => {}
                    _ => candle_core::bail!(
                        "optimizer state for `{name}` is incomplete: needs {}, {} and {}",
                        keys[0],
                        keys[1],
                        keys[2]
                    ),
                }
            }
        }
        self.moments = moments;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    fn group(params: Vec<(&str, &Var)>, wd: f64) -> Vec<ParamGroup> {
        vec![ParamGroup {
            lr_mult: 1.0,
            params: params
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
            weight_decay: wd,
        }]
    }

    /// Three steps on loss = sum(c · p²) / 2 (grad = c · p); `q` gets no gradient.
    /// Reference values from torch.optim (float64) in the comments of each test.
    fn run(opt: &mut dyn Optimizer, p: &Var, q: &Var) -> Result<Vec<f64>> {
        let c = Tensor::new(&[1.0f64, 3.0, -0.5], &Device::Cpu)?;
        for _ in 0..3 {
            let loss = ((p.as_tensor().sqr()? * &c)?.sum_all()? / 2.0)?;
            let grads = loss.backward()?;
            opt.step(&grads, 0.1)?;
        }
        assert_eq!(
            q.to_vec1::<f64>()?,
            vec![0.3, 0.7],
            "no-grad parameter moved"
        );
        p.to_vec1::<f64>()
    }

    fn vars() -> Result<(Var, Var)> {
        Ok((
            Var::new(&[1.0f64, -2.0, 0.5], &Device::Cpu)?,
            Var::new(&[0.3f64, 0.7], &Device::Cpu)?,
        ))
    }

    fn assert_close(got: &[f64], want: &[f64]) {
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn sgd_momentum_weight_decay_matches_torch() -> Result<()> {
        let (p, q) = vars()?;
        let mut opt = Sgd::new(group(vec![("p", &p), ("q", &q)], 0.1), 0.9, false);
        // torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.1)
        assert_close(&run(&mut opt, &p, &q)?, &[0.439649, 0.615222, 0.616072]);
        Ok(())
    }

    #[test]
    fn sgd_nesterov_matches_torch() -> Result<()> {
        let (p, q) = vars()?;
        let mut opt = Sgd::new(group(vec![("p", &p), ("q", &q)], 0.1), 0.9, true);
        // torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
        assert_close(
            &run(&mut opt, &p, &q)?,
            &[0.273767471, 0.725935338, 0.672325888],
        );
        Ok(())
    }

    #[test]
    fn plain_sgd_matches_torch() -> Result<()> {
        let (p, q) = vars()?;
        let mut opt = Sgd::new(group(vec![("p", &p), ("q", &q)], 0.0), 0.0, false);
        assert_close(&run(&mut opt, &p, &q)?, &[0.729, -0.686, 0.5788125]);
        assert!(opt.state().is_empty());
        Ok(())
    }

    #[test]
    fn adamw_matches_torch() -> Result<()> {
        let (p, q) = vars()?;
        let mut opt = AdamW::new(group(vec![("p", &p), ("q", &q)], 0.1), 0.9, 0.999, 1e-8);
        // torch.optim.AdamW(lr=0.1, weight_decay=0.1)
        assert_close(
            &run(&mut opt, &p, &q)?,
            &[0.6751012231892006, -1.6443686833067828, 0.7824978022534338],
        );
        let names: Vec<String> = opt.state().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["p.exp_avg", "p.exp_avg_sq", "p.step"]);
        Ok(())
    }

    #[test]
    fn lr_mult_scales_the_step() -> Result<()> {
        let (p, q) = vars()?;
        let mut groups = group(vec![("p", &p), ("q", &q)], 0.0);
        groups[0].lr_mult = 0.5;
        let mut opt = Sgd::new(groups, 0.0, false);
        let c = Tensor::new(&[1.0f64, 3.0, -0.5], &Device::Cpu)?;
        let grads = (p.as_tensor() * &c)?.sum_all()?.backward()?;
        opt.step(&grads, 0.2)?;
        assert_close(&p.to_vec1::<f64>()?, &[0.9, -2.3, 0.55]);
        Ok(())
    }

    /// The DESIGN.md trap: state built from attached gradients keeps every step's graph alive.
    #[test]
    fn state_stays_detached_over_100_steps() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let model = crate::model::build("wick-cnn", 1, 3, vb).expect("model");
        let x = Tensor::randn(0f32, 1., (4, 1, 8, 8), &Device::Cpu)?;
        let y = Tensor::new(&[0u32, 1, 2, 0], &Device::Cpu)?;
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adamw] {
            let cfg = TrainConfig {
                optimizer: kind,
                nesterov: true,
                ..TrainConfig::default()
            };
            let groups = param_groups(&vm, "fc", &ModelConfig::default(), 1e-4);
            let mut opt = build(&cfg, groups);
            for _ in 0..100 {
                let logits = model.forward_t(&x, true, false)?;
                let loss = crate::engine::loss::cross_entropy(&logits, &y, None, 0.0)?;
                let grads = loss.backward()?;
                opt.step(&grads, 0.01)?;
                for (name, t) in opt.state() {
                    assert!(!t.track_op(), "{name} is attached to a graph");
                }
            }
            assert!(!opt.state().is_empty());
            for (name, var) in vm.data().lock().expect("lock").iter() {
                // The parameters themselves: still plain variables, no op history.
                assert!(var.as_tensor().is_variable(), "{name}");
                assert!(!var.as_detached_tensor().track_op(), "{name}");
            }
        }
        Ok(())
    }

    #[test]
    fn state_round_trips_through_load_state() -> Result<()> {
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adamw] {
            let cfg = TrainConfig {
                optimizer: kind,
                ..TrainConfig::default()
            };
            let (p, q) = vars()?;
            let mut a = build(&cfg, group(vec![("p", &p)], 0.01));
            let c = Tensor::new(&[1.0f64, 3.0, -0.5], &Device::Cpu)?;
            let grads = (p.as_tensor().sqr()? * &c)?.sum_all()?.backward()?;
            a.step(&grads, 0.1)?;
            let saved: HashMap<String, Tensor> = a.state().into_iter().collect();
            let p2 = Var::from_tensor(&p.as_tensor().copy()?)?;
            let mut b = build(&cfg, group(vec![("p", &p2)], 0.01));
            b.load_state(&saved)?;
            let g1 = (p.as_tensor().sqr()? * &c)?.sum_all()?.backward()?;
            a.step(&g1, 0.1)?;
            let g2 = (p2.as_tensor().sqr()? * &c)?.sum_all()?.backward()?;
            b.step(&g2, 0.1)?;
            assert_eq!(p.to_vec1::<f64>()?, p2.to_vec1::<f64>()?, "{kind:?}");
            let _ = q;
            // A mis-shaped entry is a named error.
            let mut bad = saved.clone();
            for v in bad.values_mut() {
                *v = Tensor::zeros(7, DType::F64, &Device::Cpu)?;
            }
            let e = b.load_state(&bad).expect_err("shape");
            assert!(e.to_string().contains("p."), "{e}");
        }
        Ok(())
    }

    /// The fused in-place CPU update (`Backend::Wick`) and the candle-op path
    /// (`Backend::Candle`) give the same parameters and state, bit for bit, in f32 and f64,
    /// for every combination of weight decay, momentum and Nesterov, including a state handed
    /// from one path to the other and a parameter large enough to run in parallel chunks.
    #[test]
    fn fused_sgd_matches_candle_ops_bitwise() -> Result<()> {
        use crate::ops::{with_backend, Backend};
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            for (wd, momentum, nesterov) in [
                (0.0, 0.0, false),
                (1e-2, 0.0, false),
                (0.0, 0.9, false),
                (1e-2, 0.9, false),
                (0.0, 0.9, true),
                (5e-4, 0.8, true),
            ] {
                let init_p = Tensor::randn(0f32, 1., (300, 500), &dev)?.to_dtype(dtype)?;
                let init_q = Tensor::randn(0f32, 1., 7, &dev)?.to_dtype(dtype)?;
                let cs = (0..4)
                    .map(|_| Tensor::randn(0f32, 1., (300, 500), &dev)?.to_dtype(dtype))
                    .collect::<Result<Vec<_>>>()?;
                let grads_for = |p: &Var, q: &Var, k: usize| -> Result<GradStore> {
                    let loss = ((p.as_tensor().sqr()? * &cs[k])?.sum_all()?
                        + (q.as_tensor().sum_all()? * (k as f64 + 1.0))?)?;
                    loss.backward()
                };
                let mut finals = Vec::new();
                // Paths per step: all candle, all fused, and mixed (state crosses paths).
                for plan in [[Backend::Candle; 4], [Backend::Wick; 4], {
                    [
                        Backend::Wick,
                        Backend::Candle,
                        Backend::Wick,
                        Backend::Candle,
                    ]
                }] {
                    let p = Var::from_tensor(&init_p.copy()?)?;
                    let q = Var::from_tensor(&init_q.copy()?)?;
                    let mut opt =
                        Sgd::new(group(vec![("p", &p), ("q", &q)], wd), momentum, nesterov);
                    for (k, b) in plan.iter().enumerate() {
                        let grads = with_backend(Backend::Candle, || grads_for(&p, &q, k))?;
                        with_backend(*b, || opt.step(&grads, 0.05))?;
                    }
                    let mut state = Vec::new();
                    for (n, t) in opt.state() {
                        state.push((n, t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?));
                    }
                    finals.push((
                        p.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?,
                        q.to_dtype(DType::F64)?.to_vec1::<f64>()?,
                        state,
                    ));
                }
                let what = format!("{dtype:?} wd {wd} momentum {momentum} nesterov {nesterov}");
                assert_eq!(
                    finals[0].2.len(),
                    if momentum != 0.0 { 2 } else { 0 },
                    "{what}"
                );
                for f in &finals[1..] {
                    assert!(
                        f.0.iter()
                            .zip(&finals[0].0)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "p: {what}"
                    );
                    assert!(
                        f.1.iter()
                            .zip(&finals[0].1)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "q: {what}"
                    );
                    assert_eq!(f.2, finals[0].2, "state: {what}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn param_groups_split_head_backbone_and_decay() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let _m = crate::model::build("resnet18", 3, 10, vb).expect("model");
        let mcfg = ModelConfig {
            arch: "resnet18".into(),
            backbone_lr_mult: 0.1,
            ..ModelConfig::default()
        };
        let groups = param_groups(&vm, "fc", &mcfg, 5e-4);
        let summary: Vec<(f64, f64, usize)> = groups
            .iter()
            .map(|g| (g.lr_mult, g.weight_decay, g.params.len()))
            .collect();
        // head: fc.weight | fc.bias | 20 conv weights | 20 BN × (weight, bias)
        assert_eq!(
            summary,
            vec![
                (1.0, 5e-4, 1),
                (1.0, 0.0, 1),
                (0.1, 5e-4, 20),
                (0.1, 0.0, 40)
            ]
        );
        for g in &groups {
            for (n, _) in &g.params {
                assert!(!n.contains("running"), "{n}");
            }
        }
        let frozen = ModelConfig {
            freeze: Freeze::Backbone,
            ..mcfg
        };
        let groups = param_groups(&vm, "fc", &frozen, 5e-4);
        assert_eq!(groups.len(), 2);
        assert!(groups.iter().all(|g| g.lr_mult == 1.0));
    }
}
