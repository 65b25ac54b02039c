#!/usr/bin/env python3
"""PyTorch CPU reference for `wick bench`: the same rows, shapes and procedure.

Prints, as its last stdout line, one JSON object:
    {"torch": "<version>", "threads": N,
     "rows": {"<row name>": {"value": v, "samples": [...], "peak_rss_bytes": b or null}}}
Model rows (images/s) each run in a fresh child process (this script with --child), so that
peak_rss_bytes (VmHWM of that child) is the configuration's own peak. Op rows are in ms.

Usage: reference.py [--quick] [--reps 3] [--warmup 1] [--rows name,name,...]
Row names (see src/bench/): wick-cnn-train-28, resnet18-{train,forward}-{32,224},
conv3x3-{forward,input-grad,weight-grad}, batchnorm-train-fwd-bwd, maxpool3x3s2-fwd-bwd, sgemm.
In --quick mode the batch is 2, the large images 64 px and the op shapes tiny.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# OpenMP threads that spin while waiting collapse when the cores are shared with other work (4x
# slower ResNet-18 steps measured on a loaded 2-core machine); passive waiting costs nothing
# measurable on an idle one. Set before torch loads libgomp; override from the environment.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

CLASSES = 10


def threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def peak_rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def model_specs(quick):
    batch = 2 if quick else 32
    big = 64 if quick else 224
    specs = [("wick-cnn", 1, 28, True)]
    for px in (32, big):
        specs.append(("resnet18", 3, px, True))
        specs.append(("resnet18", 3, px, False))
    out = {}
    for arch, cin, px, train in specs:
        name = f"{arch}-{'train' if train else 'forward'}-{px}"
        out[name] = dict(arch=arch, cin=cin, px=px, batch=batch, train=train)
    return out


def op_shapes(quick):
    if quick:
        return dict(conv=(2, 8, 12, 12), bn=(2, 8, 12, 12), pool=(2, 4, 16, 16), gemm=64)
    return dict(conv=(32, 64, 56, 56), bn=(32, 64, 56, 56), pool=(32, 64, 112, 112), gemm=1024)


OP_ROWS = [
    "conv3x3-forward",
    "conv3x3-input-grad",
    "conv3x3-weight-grad",
    "batchnorm-train-fwd-bwd",
    "maxpool3x3s2-fwd-bwd",
    "sgemm",
]


class WickCnn(nn.Module):
    """wick's default model (src/model/wick_cnn.rs)."""

    def __init__(self, cin, classes):
        super().__init__()
        widths = [32, 32, 64, 64, 128]
        layers = []
        c = cin
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            if i in (1, 3):
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def build(arch, cin):
    if arch == "wick-cnn":
        return WickCnn(cin, CLASSES)
    import torchvision

    m = torchvision.models.resnet18(num_classes=CLASSES)
    if cin != 3:
        m.conv1 = nn.Conv2d(cin, 64, 7, 2, 3, bias=False)
    return m


def timed(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(max(reps, 1)):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run_model(spec, warmup, reps):
    torch.manual_seed(0)
    m = build(spec["arch"], spec["cin"])
    x = torch.randn(spec["batch"], spec["cin"], spec["px"], spec["px"])
    y = torch.arange(spec["batch"]) % CLASSES
    if spec["train"]:
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            opt.step()

    else:
        m.eval()

        def step():
            with torch.no_grad():
                m(x)

    secs = timed(step, warmup, reps)
    per_s = [spec["batch"] / s for s in secs]
    return dict(value=statistics.median(per_s), samples=per_s, peak_rss_bytes=peak_rss_bytes())


def run_op(name, shapes, warmup, reps):
    torch.manual_seed(0)
    if name.startswith("conv3x3"):
        n, c, h, w = shapes["conv"]
        x = torch.randn(n, c, h, w)
        wt = torch.randn(c, c, 3, 3) * 0.05
        dy = torch.randn(n, c, h, w)
        args = ([1, 1], [1, 1], [1, 1], False, [0, 0], 1)
        if name == "conv3x3-forward":

            def fn():
                with torch.no_grad():
                    F.conv2d(x, wt, padding=1)

        else:
            mask = [True, False, False] if name == "conv3x3-input-grad" else [False, True, False]

            def fn():
                with torch.no_grad():
                    torch.ops.aten.convolution_backward(dy, x, wt, None, *args, mask)

    elif name == "batchnorm-train-fwd-bwd":
        n, c, h, w = shapes["bn"]
        x = torch.randn(n, c, h, w, requires_grad=True)
        bn = nn.BatchNorm2d(c).train()

        def fn():
            x.grad = None
            bn.zero_grad(set_to_none=True)
            bn(x).sum().backward()

    elif name == "maxpool3x3s2-fwd-bwd":
        n, c, h, w = shapes["pool"]
        x = torch.randn(n, c, h, w, requires_grad=True)

        def fn():
            x.grad = None
            F.max_pool2d(x, 3, 2, 1).sum().backward()

    elif name == "sgemm":
        s = shapes["gemm"]
        a = torch.randn(s, s)
        b = torch.randn(s, s)

        def fn():
            torch.mm(a, b)

    else:
        raise ValueError(f"unknown row {name}")
    ms = [s * 1e3 for s in timed(fn, warmup, reps)]
    return dict(value=statistics.median(ms), samples=ms, peak_rss_bytes=None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rows", default="")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(threads())
    models = model_specs(a.quick)

    if a.child:
        print(json.dumps(run_model(models[a.child], a.warmup, a.reps)))
        return

    wanted = [r for r in a.rows.split(",") if r] or list(models) + OP_ROWS
    rows = {}
    for name in wanted:
        if name in models:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", name,
                   "--reps", str(a.reps), "--warmup", str(a.warmup)]
            if a.quick:
                cmd.append("--quick")
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{name}: child failed: {out.stderr.strip()[-500:]}", file=sys.stderr)
                continue
            rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        elif name in OP_ROWS:
            rows[name] = run_op(name, op_shapes(a.quick), a.warmup, a.reps)
        else:
            print(f"{name}: unknown row, skipped", file=sys.stderr)
        print(f"{name}: {rows.get(name, {}).get('value')}", file=sys.stderr)
    print(json.dumps(dict(torch=torch.__version__, threads=torch.get_num_threads(),
                          omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"), rows=rows)))


if __name__ == "__main__":
    main()
