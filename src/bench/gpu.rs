//! GPU checks and the GPU training benchmark, run on the GPU box by `scripts/gpu-check.sh`
//! through hidden subcommands (`wick __gpu-check`, `wick __gpu-bench`): the box has no Rust
//! toolchain, so everything it runs ships in the one binary.
//!
//! - [`compare_ops`]: every op and model on the training path, forward and backward, on the
//!   CPU (wick's kernels) and on the GPU, from the same inputs; max differences against a
//!   tolerance. Also the models under bf16 autocast on the GPU against f32 on the CPU.
//! - [`train_step_bench`]: images/s of a synthetic training step (forward, cross-entropy,
//!   backward, SGD momentum 0.9 + weight decay, as `wick bench`'s model rows), synchronised
//!   with the device so the time is the GPU's.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::config::Precision;
use crate::engine::loss::cross_entropy;
use crate::engine::optim::{Optimizer, ParamGroup, Sgd};
use crate::model::{self, autocast, is_trainable};
use crate::ops::{self, BatchNormMode};

/// One CPU-vs-GPU comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    /// Largest `|gpu - cpu| / max(1, max |cpu|)` over the output and every gradient.
    pub max_rel_diff: f64,
    pub tolerance: f64,
    /// Which tensor had the largest difference.
    pub worst: String,
    pub pass: bool,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:<44} max rel diff {:.2e} (tol {:.0e}, worst: {})",
            if self.pass { "PASS" } else { "FAIL" },
            self.name,
            self.max_rel_diff,
            self.tolerance,
            self.worst
        )
    }
}

/// `|a - b| / max(1, max |a|)`, `a` the reference.
fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let scale = a.abs()?.max_all()?.to_scalar::<f64>()?.max(1.0);
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f64>()? / scale)
}

/// `‖a - b‖ / ‖a‖`: for gradients under bf16, where single elements may differ a lot.
fn rel_norm_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let n = a.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt().max(1e-12);
    Ok((a - b)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt() / n)
}

/// Runs `f` on `inputs` (made variables) on `device`; returns the output and the gradient of
/// `sum(output * probe)` for every input.
fn run_case(
    device: &Device,
    inputs: &[Tensor],
    probe: &Tensor,
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<(Tensor, Vec<Tensor>)> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_device(device)?))
        .collect::<Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts)?;
    let loss = (y.to_dtype(DType::F32)? * probe.to_device(device)?)?.sum_all()?;
    let grads = loss.backward()?;
    let g = ts
        .iter()
        .map(|t| {
            grads
                .get(t)
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg("missing gradient".into()))
        })
        .collect::<Result<_>>()?;
    Ok((y, g))
}

fn op_check(
    gpu: &Device,
    name: &str,
    tolerance: f64,
    inputs: Vec<Tensor>,
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<Check> {
    let cpu = Device::Cpu;
    let y_shape = f(&inputs)?.shape().clone();
    let probe = Tensor::randn(0f32, 1., y_shape, &cpu)?;
    let (y_cpu, g_cpu) = run_case(&cpu, &inputs, &probe, f)?;
    let (y_gpu, g_gpu) = run_case(gpu, &inputs, &probe, f)?;
    let mut worst = ("output".to_string(), rel_diff(&y_cpu, &y_gpu)?);
    for (i, (a, b)) in g_cpu.iter().zip(&g_gpu).enumerate() {
        let d = rel_diff(a, b)?;
        if d > worst.1 || d.is_nan() {
            worst = (format!("grad of input {i}"), d);
        }
    }
    Ok(Check {
        name: name.into(),
        max_rel_diff: worst.1,
        tolerance,
        worst: worst.0,
        pass: worst.1 <= tolerance,
    })
}

/// A model's logits, loss and parameter gradients on `device` (weights copied from `src`),
/// and the weights after one SGD step.
struct ModelRun {
    logits: Tensor,
    grads: Vec<(String, Tensor)>,
    updated: Vec<(String, Tensor)>,
}

fn model_run(
    arch: &str,
    src: &VarMap,
    x: &Tensor,
    y: &Tensor,
    device: &Device,
    compute: Option<DType>,
) -> Result<ModelRun> {
    let vm = VarMap::new();
    let c = x.dim(1)?;
    let m = model::build(arch, c, 5, VarBuilder::from_varmap(&vm, DType::F32, device))
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut params = Vec::new();
    {
        let from = src.data().lock().expect("varmap lock");
        let to = vm.data().lock().expect("varmap lock");
        for (name, var) in to.iter() {
            var.set(&from[name].as_tensor().to_device(device)?)?;
            if is_trainable(name) {
                params.push((name.clone(), var.clone()));
            }
        }
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let (x, y) = (x.to_device(device)?, y.to_device(device)?);
    let (logits, grads) = autocast::with(compute, || -> Result<_> {
        let logits = m.forward_t(&x, true, false)?;
        let loss = cross_entropy(&logits, &y, None, 0.0)?;
        Ok((logits, loss.backward()?))
    })?;
    let g = params
        .iter()
        .map(|(n, v)| {
            let g = grads
                .get(v.as_tensor())
                .ok_or_else(|| candle_core::Error::Msg(format!("{arch}: no gradient for {n}")))?;
            Ok((n.clone(), g.clone()))
        })
        .collect::<Result<_>>()?;
    let mut opt = Sgd::new(
        vec![ParamGroup {
            lr_mult: 1.0,
            params: params.clone(),
            weight_decay: 1e-4,
        }],
        0.9,
        true,
    );
    opt.step(&grads, 0.1)?;
    let updated = params
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    Ok(ModelRun {
        logits,
        grads: g,
        updated,
    })
}

fn model_checks(gpu: &Device, arch: &str, c: usize, px: usize) -> Result<Vec<Check>> {
    let cpu = Device::Cpu;
    let src = VarMap::new();
    model::build(
        arch,
        c,
        5,
        model::init::seeded_var_builder(&src, 7, DType::F32, &cpu),
    )
    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let x = Tensor::randn(0f32, 1., (8, c, px, px), &cpu)?;
    let y = Tensor::new(&[0u32, 1, 2, 3, 4, 0, 1, 2], &cpu)?;
    let reference = model_run(arch, &src, &x, &y, &cpu, None)?;
    let mut out = Vec::new();
    for (label, compute, tol_out, tol_grad) in [
        ("f32", None, 1e-3, 1e-3),
        ("bf16 autocast vs f32", Some(DType::BF16), 5e-2, 0.15),
    ] {
        let run = model_run(arch, &src, &x, &y, gpu, compute)?;
        // (tensor, difference, tolerance); f32: elementwise, bf16: relative norm per gradient.
        let mut diffs = vec![(
            "logits".to_string(),
            rel_diff(&reference.logits, &run.logits)?,
            tol_out,
        )];
        for ((n, a), (_, b)) in reference.grads.iter().zip(&run.grads) {
            let d = if compute.is_some() {
                rel_norm_diff(a, b)?
            } else {
                rel_diff(a, b)?
            };
            diffs.push((format!("grad {n}"), d, tol_grad));
        }
        if compute.is_none() {
            for ((n, a), (_, b)) in reference.updated.iter().zip(&run.updated) {
                diffs.push((format!("updated {n}"), rel_diff(a, b)?, tol_grad));
            }
        }
        let mut pass = diffs.iter().all(|(_, d, t)| d <= t);
        let (worst_name, worst_d, worst_tol) = diffs
            .iter()
            .max_by(|a, b| (a.1 / a.2).total_cmp(&(b.1 / b.2)))
            .cloned()
            .expect("logits at least");
        let (mut worst, mut tol) = ((worst_name, worst_d), worst_tol);
        for (n, g) in &run.grads {
            if g.dtype() != DType::F32 {
                pass = false;
                worst = (format!("grad {n} is {:?}, not f32", g.dtype()), f64::NAN);
                tol = f64::NAN;
            }
        }
        out.push(Check {
            name: format!("{arch} {px}px train step, {label}"),
            max_rel_diff: worst.1,
            tolerance: tol,
            worst: worst.0,
            pass,
        });
    }
    Ok(out)
}

/// Every op and model on the training path, CPU against `gpu`.
pub fn compare_ops(gpu: &Device) -> Result<Vec<Check>> {
    let cpu = Device::Cpu;
    let r = |shape: &[usize]| Tensor::randn(0f32, 1., shape, &cpu);
    let mut out = Vec::new();
    let conv = |s: usize, p: usize| {
        move |t: &[Tensor]| ops::conv2d(&t[0], &t[1], Some(&t[2]), (s, s), (p, p), (1, 1), 1)
    };
    out.push(op_check(
        gpu,
        "conv2d 3x3 s1 p1 [4,16,14,14]->32",
        1e-4,
        vec![r(&[4, 16, 14, 14])?, r(&[32, 16, 3, 3])?, r(&[32])?],
        &conv(1, 1),
    )?);
    out.push(op_check(
        gpu,
        "conv2d 3x3 s2 p1 [4,16,15,15]->32",
        1e-4,
        vec![r(&[4, 16, 15, 15])?, r(&[32, 16, 3, 3])?, r(&[32])?],
        &conv(2, 1),
    )?);
    out.push(op_check(
        gpu,
        "conv2d 1x1 s2 p0 [4,16,14,14]->32",
        1e-4,
        vec![r(&[4, 16, 14, 14])?, r(&[32, 16, 1, 1])?, r(&[32])?],
        &conv(2, 0),
    )?);
    out.push(op_check(
        gpu,
        "conv2d 7x7 s2 p3 [2,3,32,32]->8",
        1e-4,
        vec![r(&[2, 3, 32, 32])?, r(&[8, 3, 7, 7])?, r(&[8])?],
        &conv(2, 3),
    )?);
    out.push(op_check(
        gpu,
        "depthwise 3x3 s2 same-pad [2,8,9,9]",
        1e-4,
        vec![r(&[2, 8, 9, 9])?, r(&[8, 1, 3, 3])?],
        &|t: &[Tensor]| ops::depthwise_conv2d(&t[0], &t[1], 2, [1, 1, 1, 1]),
    )?);
    out.push(op_check(
        gpu,
        "batch_norm2d train + relu [4,16,7,7]",
        1e-4,
        vec![r(&[4, 16, 7, 7])?, r(&[16])?, r(&[16])?],
        &|t: &[Tensor]| {
            ops::batch_norm2d(&t[0], &t[1], &t[2], BatchNormMode::Train, 1e-5, true).map(|r| r.0)
        },
    )?);
    out.push(op_check(
        gpu,
        "max_pool2d 3x3 s2 p1 [4,8,16,16]",
        1e-5,
        vec![r(&[4, 8, 16, 16])?],
        &|t: &[Tensor]| ops::max_pool2d(&t[0], 3, 2, 1),
    )?);
    out.push(op_check(
        gpu,
        "cross_entropy, label smoothing 0.1",
        1e-5,
        vec![r(&[8, 5])?],
        &|t: &[Tensor]| {
            let y = Tensor::new(&[0u32, 1, 2, 3, 4, 0, 1, 2], t[0].device())?;
            cross_entropy(&t[0], &y, None, 0.1)
        },
    )?);
    out.extend(model_checks(gpu, "wick-cnn", 1, 28)?);
    out.extend(model_checks(gpu, "resnet18", 3, 32)?);
    out.extend(model_checks(gpu, "efficientnet-lite0", 3, 32)?);
    Ok(out)
}

/// One configuration of the GPU training benchmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchSpec {
    pub arch: String,
    pub px: usize,
    pub batch: usize,
    pub precision: Precision,
    pub warmup: usize,
    pub reps: usize,
}

/// What [`train_step_bench`] measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    pub spec: BenchSpec,
    pub device: String,
    /// Median over the timed steps.
    pub images_per_s: f64,
    pub step_ms: Vec<f64>,
    /// Device memory in use after the timed steps (whole GPU, driver's count), MiB.
    pub memory_used_mib: Option<u64>,
}

/// Times synthetic training steps of `spec` on `device` (synchronised after every step).
pub fn train_step_bench(device: &Device, spec: &BenchSpec) -> Result<BenchResult> {
    if let Some(dt) = spec.precision.compute_dtype() {
        if !autocast::supported(dt, device) {
            candle_core::bail!("precision {} needs a CUDA device", spec.precision.name())
        }
    }
    let vm = VarMap::new();
    let m = model::build(
        &spec.arch,
        3,
        10,
        VarBuilder::from_varmap(&vm, DType::F32, device),
    )
    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut params: Vec<(String, Var)> = vm
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .filter(|(k, _)| is_trainable(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = Sgd::new(
        vec![ParamGroup {
            lr_mult: 1.0,
            params,
            weight_decay: 1e-4,
        }],
        0.9,
        false,
    );
    let x = Tensor::randn(0f32, 1., (spec.batch, 3, spec.px, spec.px), device)?;
    let labels: Vec<u32> = (0..spec.batch as u32).map(|i| i % 10).collect();
    let y = Tensor::from_vec(labels, spec.batch, device)?;
    let mut step = || -> Result<()> {
        let logits = m.forward_t(&x, true, false)?;
        let loss = cross_entropy(&logits, &y, None, 0.0)?;
        let grads = loss.backward()?;
        opt.step(&grads, 0.01)?;
        device.synchronize()
    };
    let mut step_ms = Vec::with_capacity(spec.reps);
    autocast::with(spec.precision.compute_dtype(), || -> Result<()> {
        for _ in 0..spec.warmup {
            step()?;
        }
        for _ in 0..spec.reps.max(1) {
            let t = Instant::now();
            step()?;
            step_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(())
    })?;
    let mut sorted = step_ms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median_ms = sorted[sorted.len() / 2];
    Ok(BenchResult {
        spec: spec.clone(),
        device: crate::engine::device::gpu_name(device).unwrap_or_else(|| "cpu".into()),
        images_per_s: spec.batch as f64 / (median_ms / 1e3),
        step_ms,
        memory_used_mib: memory_used_mib(device),
    })
}

#[cfg(feature = "cuda")]
fn memory_used_mib(device: &Device) -> Option<u64> {
    let ctx = device
        .as_cuda_device()
        .ok()?
        .cuda_stream()
        .context()
        .clone();
    let (free, total) = ctx.mem_get_info().ok()?;
    Some(((total - free.min(total)) >> 20) as u64)
}

#[cfg(not(feature = "cuda"))]
fn memory_used_mib(_device: &Device) -> Option<u64> {
    None
}

/// The first CUDA GPU, or why there is none.
pub fn cuda0() -> std::result::Result<Device, String> {
    if !cfg!(feature = "cuda") {
        return Err("this wick was built without `--features cuda`".into());
    }
    Device::new_cuda(0).map_err(|e| format!("no CUDA GPU: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU against GPU for every op and model; skipped (with a message) without a GPU.
    #[test]
    fn gpu_matches_cpu() {
        let gpu = match cuda0() {
            Ok(d) => d,
            Err(why) => {
                eprintln!("gpu_matches_cpu skipped: {why}");
                return;
            }
        };
        let checks = compare_ops(&gpu).expect("checks run");
        for c in &checks {
            eprintln!("{c}");
        }
        assert!(checks.iter().all(|c| c.pass));
    }

    /// The comparison machinery itself, CPU against CPU (candle's ops against wick's kernels,
    /// as on a GPU the ops fall back to candle's).
    #[test]
    fn op_checks_pass_cpu_against_candle_ops() -> Result<()> {
        let cpu = Device::Cpu;
        let r = |shape: &[usize]| Tensor::randn(0f32, 1., shape, &cpu);
        let f = |t: &[Tensor]| {
            let y = ops::conv2d(&t[0], &t[1], None, (2, 2), (1, 1), (1, 1), 1)?;
            ops::max_pool2d(&y, 3, 2, 1)
        };
        let inputs = vec![r(&[2, 4, 11, 11])?, r(&[6, 4, 3, 3])?];
        let probe = Tensor::randn(0f32, 1., f(&inputs)?.shape().clone(), &cpu)?;
        let (y_wick, g_wick) = run_case(&cpu, &inputs, &probe, &f)?;
        let (y_candle, g_candle) =
            ops::with_backend(ops::Backend::Candle, || run_case(&cpu, &inputs, &probe, &f))?;
        assert!(rel_diff(&y_wick, &y_candle)? < 1e-5);
        for (a, b) in g_wick.iter().zip(&g_candle) {
            assert!(rel_diff(a, b)? < 1e-5);
        }
        assert!(rel_diff(&y_wick, &(&y_wick * 1.1)?)? > 0.05);
        Ok(())
    }

    #[test]
    fn train_step_bench_runs_on_the_cpu() -> Result<()> {
        let spec = BenchSpec {
            arch: "wick-cnn".into(),
            px: 16,
            batch: 4,
            precision: Precision::F32,
            warmup: 1,
            reps: 2,
        };
        let r = train_step_bench(&Device::Cpu, &spec)?;
        assert_eq!(r.step_ms.len(), 2);
        assert!(r.images_per_s > 0.0);
        let bf16 = BenchSpec {
            precision: Precision::Bf16,
            ..spec
        };
        let e = train_step_bench(&Device::Cpu, &bf16)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a CUDA device"), "{e}");
        Ok(())
    }
}
