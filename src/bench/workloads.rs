//! The measured workloads: model train steps and forwards, and single ops.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::engine::loss::cross_entropy;
use crate::engine::optim::{Optimizer, ParamGroup, Sgd};
use crate::model::{self, is_trainable};
use crate::ops::{self, Backend, BatchNormMode};

use super::{BenchError, Measure};

/// Number of classes of every benchmarked model.
pub const CLASSES: usize = 10;

/// One model configuration, run in this process or in a child.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    pub arch: String,
    pub in_channels: usize,
    pub px: usize,
    pub batch: usize,
    /// Train step (forward, backward, SGD) or eval-mode forward.
    pub train: bool,
    /// `"wick"` or `"candle"`.
    pub backend: String,
    pub warmup: usize,
    pub reps: usize,
}

impl ModelSpec {
    pub fn backend(&self) -> Backend {
        if self.backend == "candle" {
            Backend::Candle
        } else {
            Backend::Wick
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Times `f` `reps` times after `warmup` untimed calls; seconds per call.
fn time_it(
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> candle_core::Result<()>,
) -> candle_core::Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        out.push(t.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// Peak resident set size of this process so far (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_kb("VmHWM:").map(|kb| kb * 1024)
}

fn status_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Resets `VmHWM` to the current RSS (Linux `clear_refs` 5); false where unsupported.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Runs one model configuration; images per second (median over `reps` steps) and the peak RSS
/// of this process (meaningful in a fresh child process).
pub fn run_model(spec: &ModelSpec) -> Result<Measure, BenchError> {
    let err = |e: candle_core::Error| BenchError::Workload(format!("{}: {e}", spec_name(spec)));
    ops::with_backend(spec.backend(), || -> Result<Measure, BenchError> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let m = model::build(&spec.arch, spec.in_channels, CLASSES, vb)
            .map_err(|e| BenchError::Workload(e.to_string()))?;
        let params: Vec<(String, Var)> = {
            let data = vm
                .data()
                .lock()
                .map_err(|_| BenchError::Workload("varmap lock poisoned".into()))?;
            let mut p: Vec<(String, Var)> = data
                .iter()
                .filter(|(k, _)| is_trainable(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            p.sort_by(|a, b| a.0.cmp(&b.0));
            p
        };
        let mut opt = Sgd::new(
            vec![ParamGroup {
                lr_mult: 1.0,
                params,
                weight_decay: 1e-4,
            }],
            0.9,
            false,
        );
        let x = Tensor::randn(
            0f32,
            1.,
            (spec.batch, spec.in_channels, spec.px, spec.px),
            &dev,
        )
        .map_err(err)?;
        let labels: Vec<u32> = (0..spec.batch as u32).map(|i| i % CLASSES as u32).collect();
        let y = Tensor::from_vec(labels, spec.batch, &dev).map_err(err)?;
        let secs = if spec.train {
            time_it(spec.warmup, spec.reps, || {
                let logits = m.forward_t(&x, true, false)?;
                let loss = cross_entropy(&logits, &y, None, 0.0)?;
                let grads = loss.backward()?;
                opt.step(&grads, 0.01)
            })
        } else {
            time_it(spec.warmup, spec.reps, || {
                m.forward_t(&x, false, false)?;
                Ok(())
            })
        }
        .map_err(err)?;
        let per_s: Vec<f64> = secs.iter().map(|s| spec.batch as f64 / s).collect();
        Ok(Measure {
            value: median(&per_s),
            samples: per_s,
            peak_rss_bytes: peak_rss_bytes(),
        })
    })
}

pub fn spec_name(spec: &ModelSpec) -> String {
    format!(
        "{}-{}-{}",
        spec.arch,
        if spec.train { "train" } else { "forward" },
        spec.px
    )
}

/// Shapes of the per-op rows.
#[derive(Debug, Clone, Copy)]
pub struct OpShapes {
    /// Conv input `[N, C, H, W]` (C -> C, 3x3, padding 1).
    pub conv: (usize, usize, usize, usize),
    /// BatchNorm input.
    pub bn: (usize, usize, usize, usize),
    /// Max-pool input (3x3, stride 2, padding 1).
    pub pool: (usize, usize, usize, usize),
    /// Square GEMM size.
    pub gemm: usize,
}

impl OpShapes {
    pub fn full() -> Self {
        OpShapes {
            conv: (32, 64, 56, 56),
            bn: (32, 64, 56, 56),
            pool: (32, 64, 112, 112),
            gemm: 1024,
        }
    }
    pub fn quick() -> Self {
        OpShapes {
            conv: (2, 8, 12, 12),
            bn: (2, 8, 12, 12),
            pool: (2, 4, 16, 16),
            gemm: 64,
        }
    }
}

/// Which op to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    ConvForward,
    ConvInputGrad,
    ConvWeightGrad,
    BatchNormTrain,
    MaxPool,
    Gemm,
}

impl OpKind {
    pub fn all() -> [OpKind; 6] {
        [
            OpKind::ConvForward,
            OpKind::ConvInputGrad,
            OpKind::ConvWeightGrad,
            OpKind::BatchNormTrain,
            OpKind::MaxPool,
            OpKind::Gemm,
        ]
    }

    /// Row name, shared with `bench/reference.py`.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::ConvForward => "conv3x3-forward",
            OpKind::ConvInputGrad => "conv3x3-input-grad",
            OpKind::ConvWeightGrad => "conv3x3-weight-grad",
            OpKind::BatchNormTrain => "batchnorm-train-fwd-bwd",
            OpKind::MaxPool => "maxpool3x3s2-fwd-bwd",
            OpKind::Gemm => "sgemm",
        }
    }

    pub fn describe(self, s: &OpShapes) -> String {
        let (n, c, h, w) = s.conv;
        match self {
            OpKind::ConvForward => format!("conv {c}->{c} 3x3 pad 1 on {n}x{c}x{h}x{w}, forward"),
            OpKind::ConvInputGrad => "same conv, input gradient".to_string(),
            OpKind::ConvWeightGrad => "same conv, weight gradient".to_string(),
            OpKind::BatchNormTrain => {
                let (n, c, h, w) = s.bn;
                format!("BatchNorm2d train fwd+bwd on {n}x{c}x{h}x{w}")
            }
            OpKind::MaxPool => {
                let (n, c, h, w) = s.pool;
                format!("max-pool 3x3/2 pad 1 fwd+bwd on {n}x{c}x{h}x{w}")
            }
            OpKind::Gemm => format!("f32 matmul {0}x{0}x{0}", s.gemm),
        }
    }

    /// Floating-point operations of one call (GEMM-like rows only).
    pub fn flops(self, s: &OpShapes) -> Option<f64> {
        let (n, c, h, w) = s.conv;
        let conv = 2.0 * (n * c * c * 9 * h * w) as f64;
        match self {
            OpKind::ConvForward | OpKind::ConvInputGrad | OpKind::ConvWeightGrad => Some(conv),
            OpKind::Gemm => Some(2.0 * (s.gemm as f64).powi(3)),
            _ => None,
        }
    }
}

/// Times one op with `backend`; milliseconds per call (median of `reps`).
pub fn run_op(
    kind: OpKind,
    shapes: &OpShapes,
    backend: Backend,
    warmup: usize,
    reps: usize,
) -> Result<Measure, BenchError> {
    let err = |e: candle_core::Error| BenchError::Workload(format!("{}: {e}", kind.name()));
    let dev = Device::Cpu;
    ops::with_backend(backend, || -> Result<Measure, BenchError> {
        let secs = match kind {
            OpKind::ConvForward | OpKind::ConvInputGrad | OpKind::ConvWeightGrad => {
                let (n, c, h, w) = shapes.conv;
                let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev).map_err(err)?;
                let wt = Tensor::randn(0f32, 0.05, (c, c, 3, 3), &dev).map_err(err)?;
                let dy = Tensor::randn(0f32, 1., (n, c, h, w), &dev).map_err(err)?;
                let p = ((1, 1), (1, 1), (1, 1));
                time_it(warmup, reps, || {
                    match kind {
                        OpKind::ConvForward => {
                            ops::conv2d(&x, &wt, None, p.0, p.1, p.2, 1)?;
                        }
                        OpKind::ConvInputGrad => {
                            ops::conv::conv2d_input_grad(&dy, &wt, (n, c, h, w), p.0, p.1, p.2, 1)?;
                        }
                        _ => {
                            ops::conv::conv2d_weight_grad(&x, &dy, (c, c, 3, 3), p.0, p.1, p.2, 1)?;
                        }
                    }
                    Ok(())
                })
            }
            OpKind::BatchNormTrain => {
                let (n, c, h, w) = shapes.bn;
                let x =
                    Var::from_tensor(&Tensor::randn(0f32, 1., (n, c, h, w), &dev).map_err(err)?)
                        .map_err(err)?;
                let g = Var::ones(c, DType::F32, &dev).map_err(err)?;
                let b = Var::zeros(c, DType::F32, &dev).map_err(err)?;
                time_it(warmup, reps, || {
                    let (y, _) = ops::batch_norm2d(
                        x.as_tensor(),
                        g.as_tensor(),
                        b.as_tensor(),
                        BatchNormMode::Train,
                        1e-5,
                        false,
                    )?;
                    y.sum_all()?.backward()?;
                    Ok(())
                })
            }
            OpKind::MaxPool => {
                let (n, c, h, w) = shapes.pool;
                let x =
                    Var::from_tensor(&Tensor::randn(0f32, 1., (n, c, h, w), &dev).map_err(err)?)
                        .map_err(err)?;
                time_it(warmup, reps, || {
                    let y = ops::max_pool2d(x.as_tensor(), 3, 2, 1)?;
                    y.sum_all()?.backward()?;
                    Ok(())
                })
            }
            OpKind::Gemm => {
                let s = shapes.gemm;
                let a = Tensor::randn(0f32, 1., (s, s), &dev).map_err(err)?;
                let b = Tensor::randn(0f32, 1., (s, s), &dev).map_err(err)?;
                let av = a
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(err)?;
                let bv = b
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(err)?;
                let mut cv = vec![0f32; s * s];
                time_it(warmup, reps, || {
                    match backend {
                        Backend::Wick => ops::kernel::sgemm(s, s, s, &av, &bv, &mut cv),
                        Backend::Candle => {
                            a.matmul(&b)?;
                        }
                    }
                    Ok(())
                })
            }
        }
        .map_err(err)?;
        let ms: Vec<f64> = secs.iter().map(|s| s * 1e3).collect();
        Ok(Measure {
            value: median(&ms),
            samples: ms,
            peak_rss_bytes: None,
        })
    })
}
