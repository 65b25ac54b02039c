#!/usr/bin/env python3
"""PyTorch eager reference for wick's GPU benchmark (`wick __gpu-bench`): the same step.

One configuration per process (so that the device memory sampled around it by
scripts/gpu-check.sh is its own), printed as one JSON line:
    {"torch": "...", "device": "...", "arch": "resnet18", "px": 224, "batch": 64,
     "mode": "bf16", "images_per_s": v, "step_ms": [...],
     "max_allocated_mib": a, "max_reserved_mib": r}

The step, as in src/bench/gpu.rs: ResNet-18 (torchvision's layout, 10 classes) in train mode on
random images, cross-entropy, backward, SGD (lr 0.01, momentum 0.9, weight decay 1e-4),
torch.cuda.synchronize() after every step; median over the timed steps.

Modes:
  f32        strict fp32: TF32 off for both cuDNN convolutions and matmuls (what wick's f32 does)
  f32-tf32   PyTorch's defaults: cuDNN convolutions may use TF32, matmuls do not
  bf16       torch.autocast(device_type="cuda", dtype=torch.bfloat16), f32 master weights

Usage: reference_gpu.py --batch 64 --mode bf16 [--px 224] [--warmup 5] [--reps 20]
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """torchvision.models.resnet18's structure (torchvision may be missing on the GPU box)."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layers(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--px", type=int, default=224)
    ap.add_argument("--mode", choices=["f32", "f32-tf32", "bf16"], default="f32")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--device", default="cuda:0", help="cpu: a smoke test of this script")
    a = ap.parse_args()

    strict = a.mode == "f32"
    torch.backends.cudnn.allow_tf32 = not strict
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = False  # eager defaults

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    model = ResNet18().to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(a.batch, 3, a.px, a.px, device=dev)
    y = torch.arange(a.batch, device=dev) % 10

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.mode == "bf16"):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    for _ in range(a.warmup):
        step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(max(1, a.reps)):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    med = statistics.median(times)
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
                "arch": "resnet18",
                "px": a.px,
                "batch": a.batch,
                "mode": a.mode,
                "images_per_s": a.batch / (med / 1e3),
                "step_ms": times,
                "max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
                "max_reserved_mib": torch.cuda.max_memory_reserved() / 2**20 if cuda else None,
            }
        )
    )


if __name__ == "__main__":
    main()
