//! An exponential moving average of the model's weights (the "EMA teacher" of Mean Teacher and
//! FixMatch), updated after every optimizer step, and an optimizer wrapper that carries it.
//!
//! The average lives in a second model's variables (`teacher`), so it can be run as a model. It
//! is checkpointed through the optimizer state under `ema.<name>` (plus `ema.num_updates`), so
//! the checkpoint format needs nothing new: [`WithEma`] wraps the run's optimizer and adds its
//! tensors to [`Optimizer::state`].
//!
//! Update, for the trainable parameters, with a warm-up of the decay as TensorFlow's
//! `ExponentialMovingAverage(num_updates=…)` so that a short run's average is not dominated by the
//! initial weights: `d = min(decay, (1 + n) / (10 + n))`, `teacher = d·teacher + (1 − d)·student`.
//! BatchNorm running statistics are copied (as FixMatch's `ModelEMA` copies buffers). Every
//! tensor is built from detached inputs, so no step's graph is kept alive.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};
use candle_nn::VarMap;

use super::optim::Optimizer;
use crate::model::is_trainable;

/// Prefix of the average's tensors in the optimizer state.
pub const PREFIX: &str = "ema.";
const UPDATES: &str = "ema.num_updates";

/// The weight average: pairs of (student, teacher) variables by name.
pub struct Ema {
    decay: f64,
    pairs: Vec<(String, Var, Var, bool)>,
    updates: u64,
}

fn vars(map: &VarMap) -> HashMap<String, Var> {
    let data = match map.data().lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl Ema {
    /// Pairs every variable of `student` with the same-named one of `teacher` (which must hold
    /// the same names and shapes) and starts the average at the student's weights.
    pub fn new(student: &VarMap, teacher: &VarMap, decay: f64) -> Result<Ema> {
        let t = vars(teacher);
        let mut pairs = Vec::new();
        let mut names: Vec<(String, Var)> = vars(student).into_iter().collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, s) in names {
            let Some(tv) = t.get(&name) else {
                candle_core::bail!("EMA: the teacher model lacks `{name}`")
            };
            if tv.dims() != s.dims() {
                candle_core::bail!(
                    "EMA: `{name}` has shape {:?} in the student, {:?} in the teacher",
                    s.dims(),
                    tv.dims()
                )
            }
            let trainable = is_trainable(&name) && s.dtype().is_float();
            pairs.push((name, s, tv.clone(), trainable));
        }
        let mut ema = Ema {
            decay,
            pairs,
            updates: 0,
        };
        ema.reset()?;
        Ok(ema)
    }

    /// Restarts the average at the student's current weights.
    pub fn reset(&mut self) -> Result<()> {
        for (_, s, t, _) in &self.pairs {
            t.set(&s.as_tensor().detach())?;
        }
        self.updates = 0;
        Ok(())
    }

    /// The decay the next update uses.
    pub fn current_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// One update from the student's current weights.
    pub fn update(&mut self) -> Result<()> {
        let d = self.current_decay();
        for (_, s, t, trainable) in &self.pairs {
            let sv = s.as_tensor().detach();
            if *trainable {
                let tv = t.as_tensor().detach();
                let next = ((tv * d)? + (sv * (1.0 - d))?)?;
                t.set(&next)?;
            } else {
                t.set(&sv)?;
            }
        }
        self.updates += 1;
        Ok(())
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// `ema.<name>` for every teacher tensor, and `ema.num_updates`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .pairs
            .iter()
            .map(|(n, _, t, _)| (format!("{PREFIX}{n}"), t.as_tensor().detach()))
            .collect();
        if let Some((_, s, _, _)) = self.pairs.first() {
            if let Ok(t) = Tensor::new(&[self.updates as f64], s.device()) {
                out.push((UPDATES.to_string(), t));
            }
        }
        out
    }

    /// Restores [`Ema::state`]; a tensor missing from `state` starts at the student's weights.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        for (n, s, t, _) in &self.pairs {
            let key = format!("{PREFIX}{n}");
            match state.get(&key) {
                Some(v) => {
                    if v.dims() != t.dims() {
                        candle_core::bail!(
                            "optimizer state `{key}` has shape {:?}, the parameter has {:?}",
                            v.dims(),
                            t.dims()
                        )
                    }
                    t.set(&v.to_dtype(t.dtype())?.to_device(t.device())?)?;
                }
                None => t.set(&s.as_tensor().detach())?,
            }
        }
        self.updates = match state.get(UPDATES) {
            Some(v) => v.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?[0] as u64,
            None => 0,
        };
        Ok(())
    }
}

/// An optimizer that updates an [`Ema`] after every step and saves it with its own state.
pub struct WithEma {
    inner: Box<dyn Optimizer>,
    ema: Ema,
}

impl WithEma {
    pub fn new(inner: Box<dyn Optimizer>, ema: Ema) -> WithEma {
        WithEma { inner, ema }
    }
}

impl Optimizer for WithEma {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.inner.step(grads, lr)?;
        self.ema.update()
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut s = self.inner.state();
        s.extend(self.ema.state());
        s.sort_by(|a, b| a.0.cmp(&b.0));
        s
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let inner: HashMap<String, Tensor> = state
            .iter()
            .filter(|(k, _)| !k.starts_with(PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.inner.load_state(&inner)?;
        self.ema.load_state(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::Init;

    fn map(w: f32, rm: f32) -> Result<VarMap> {
        let m = VarMap::new();
        m.get(
            (2,),
            "fc.weight",
            Init::Const(w as f64),
            DType::F32,
            &Device::Cpu,
        )?;
        m.get(
            (2,),
            "bn.running_mean",
            Init::Const(rm as f64),
            DType::F32,
            &Device::Cpu,
        )?;
        Ok(m)
    }

    fn get(m: &VarMap, name: &str) -> Vec<f32> {
        vars(m)[name].as_tensor().to_vec1::<f32>().expect("vec")
    }

    #[test]
    fn average_with_warm_up_and_copied_buffers() -> Result<()> {
        let student = map(1.0, 5.0)?;
        let teacher = map(0.0, 0.0)?;
        let mut ema = Ema::new(&student, &teacher, 0.999)?;
        assert_eq!(get(&teacher, "fc.weight"), vec![1.0, 1.0]);
        vars(&student)["fc.weight"].set(&Tensor::new(&[3.0f32, 3.0], &Device::Cpu)?)?;
        vars(&student)["bn.running_mean"].set(&Tensor::new(&[7.0f32, 7.0], &Device::Cpu)?)?;
        // First update: d = min(0.999, 1/10) = 0.1 → 0.1·1 + 0.9·3 = 2.8.
        assert!((ema.current_decay() - 0.1).abs() < 1e-12);
        ema.update()?;
        let w = get(&teacher, "fc.weight");
        assert!((w[0] - 2.8).abs() < 1e-6, "{w:?}");
        assert_eq!(get(&teacher, "bn.running_mean"), vec![7.0, 7.0]);
        // The decay climbs towards its cap.
        for _ in 0..20_000 {
            ema.updates += 1;
        }
        assert_eq!(ema.current_decay(), 0.999);
        Ok(())
    }

    #[test]
    fn state_round_trips_under_its_prefix() -> Result<()> {
        let student = map(1.0, 0.0)?;
        let teacher = map(0.0, 0.0)?;
        let mut ema = Ema::new(&student, &teacher, 0.5)?;
        vars(&student)["fc.weight"].set(&Tensor::new(&[3.0f32, 5.0], &Device::Cpu)?)?;
        ema.update()?;
        ema.update()?;
        let saved: HashMap<String, Tensor> = ema.state().into_iter().collect();
        let mut names: Vec<&String> = saved.keys().collect();
        names.sort();
        assert_eq!(
            names,
            vec!["ema.bn.running_mean", "ema.fc.weight", "ema.num_updates"]
        );
        let want = get(&teacher, "fc.weight");
        let teacher2 = map(0.0, 0.0)?;
        let mut again = Ema::new(&student, &teacher2, 0.5)?;
        again.load_state(&saved)?;
        assert_eq!(get(&teacher2, "fc.weight"), want);
        assert_eq!(again.updates(), 2);
        // Missing state: start at the student.
        again.load_state(&HashMap::new())?;
        assert_eq!(get(&teacher2, "fc.weight"), vec![3.0, 5.0]);
        Ok(())
    }
}
