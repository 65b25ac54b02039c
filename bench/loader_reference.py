#!/usr/bin/env python3
"""The PIL + torchvision side of the loader benchmark (docs/benchmarks.md, "Transfer learning").

One process, one thread (torch.set_num_threads(1)), the usual torchvision training pipeline:
PIL decode (`Image.open(p).convert("RGB")`), RandomResizedCrop(224) (bilinear, antialiased),
RandomHorizontalFlip, ToTensor, Normalize(ImageNet), stacked into batches of 32, as a
DataLoader with num_workers=0 would. Prints one line of JSON for `wick bench --filter loader`:
images/s of REPEATS passes over all files after WARMUP passes, as wall-clock ("wall") and per
CPU-second of the process ("cpu", time.process_time(): images/s per core).

Usage: loader_reference.py DIR [REPEATS [WARMUP]]   (defaults 3 and 1)
"""
import json
import os
import sys
import time

import torch
from PIL import Image
from torchvision import transforms


def main():
    root = sys.argv[1]
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    warmup = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    torch.set_num_threads(1)
    torch.manual_seed(0)
    paths = sorted(
        os.path.join(d, f)
        for d, _, fs in os.walk(root)
        for f in fs
        if f.lower().endswith((".jpg", ".jpeg"))
    )
    tf = transforms.Compose([
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])

    def one_pass():
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(paths), 32):
            batch = [tf(Image.open(p).convert("RGB")) for p in paths[i:i + 32]]
            torch.stack(batch)
        n = len(paths)
        return n / (time.perf_counter() - start), n / (time.process_time() - cpu)

    for _ in range(warmup):
        one_pass()
    samples = [one_pass() for _ in range(repeats)]
    import PIL
    import torchvision
    print(json.dumps({
        "wall": [s[0] for s in samples],
        "cpu": [s[1] for s in samples],
        "images": len(paths),
        "versions": f"Pillow {PIL.__version__}, torchvision {torchvision.__version__}, torch {torch.__version__}",
    }))


if __name__ == "__main__":
    main()
