#!/usr/bin/env python3
"""Writes the JPEG set of the loader benchmark (docs/benchmarks.md, "Transfer learning").

Photos shipped inside scikit-image's wheel (skimage/data: astronaut, chelsea, coffee, hubble
deep field, IHC, motorcycle left/right, retina, rocket), cut into seeded random crops and
resized with PIL to ImageNet-typical sizes: 500x375 (landscape) or 375x500 (portrait), saved
as baseline JPEG quality 90, 4:2:0 (PIL's default). An ImageFolder with 4 class folders.

Usage: loader_images.py [OUT_DIR] [COUNT]   (default /tmp/wick-loader-jpegs, 400 images)
Needs pillow and scikit-image (`pip install pillow scikit-image`).
"""
import os
import random
import sys

import skimage
from PIL import Image

SOURCES = [
    "astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
    "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/wick-loader-jpegs"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    photos = [Image.open(os.path.join(data, s)).convert("RGB") for s in SOURCES]
    rng = random.Random(0)
    total = 0
    for i in range(count):
        src = photos[i % len(photos)]
        w, h = (500, 375) if rng.random() < 0.75 else (375, 500)
        # A random window of the photo with the target aspect ratio, 60-100 % of the largest.
        frac = rng.uniform(0.6, 1.0)
        cw = min(src.width, int(src.height * w / h)) * frac
        ch = cw * h / w
        x = rng.uniform(0, src.width - cw)
        y = rng.uniform(0, src.height - ch)
        img = src.resize((w, h), Image.BILINEAR, box=(x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        folder = os.path.join(out, f"class{i % 4}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"img{i:04d}.jpg")
        img.save(path, quality=90)
        total += os.path.getsize(path)
    print(f"wrote {count} JPEGs to {out} ({total / count / 1024:.0f} KiB on average)")


if __name__ == "__main__":
    main()
