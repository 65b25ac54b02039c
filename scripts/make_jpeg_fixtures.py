#!/usr/bin/env python3
"""Writes the JPEG fixtures of src/data/jpeg.rs's tests (tests/fixtures/jpeg/).

Three small real photos from scikit-image's bundled data (astronaut: NASA, public domain;
coffee: Rachel Michetti, CC0), encoded by Pillow the three ways the decoder must handle:
baseline 4:2:0 colour, progressive colour, greyscale, and CMYK (decoded by the image
crate, so only its size is checked). `pillow.json` records each file's
size and an FNV-1a 64 hash of Pillow's decode (RGB and L), which the Rust tests compare with
libjpeg-turbo's output through wick: the pixels a torchvision pipeline would see.

Usage: scripts/make_jpeg_fixtures.py   (needs pillow and scikit-image; run by hand, not in CI)
"""
import json
import os

import skimage
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "jpeg")


def fnv1a(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main():
    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    astronaut = Image.open(os.path.join(data, "astronaut.png")).convert("RGB")
    coffee = Image.open(os.path.join(data, "coffee.png")).convert("RGB")
    files = {
        # Odd sizes (not multiples of the 16-pixel iMCU) on purpose.
        "astronaut-321x243-q90.jpg": (astronaut.resize((321, 243), Image.BILINEAR), {"quality": 90}),
        "coffee-242x161-progressive.jpg": (
            coffee.resize((242, 161), Image.BILINEAR),
            {"quality": 85, "progressive": True},
        ),
        "coffee-242x161-grey.jpg": (coffee.resize((242, 161), Image.BILINEAR).convert("L"), {"quality": 90}),
        # CMYK (Adobe, inverted): libjpeg hands these to the image crate.
        "astronaut-64x48-cmyk.jpg": (astronaut.resize((64, 48), Image.BILINEAR).convert("CMYK"), {"quality": 90}),
    }
    os.makedirs(OUT, exist_ok=True)
    record = {}
    for name, (img, opts) in files.items():
        path = os.path.join(OUT, name)
        img.save(path, "JPEG", **opts)
        back = Image.open(path)
        back.load()
        record[name] = {
            "width": back.width,
            "height": back.height,
            "rgb_fnv1a": fnv1a(back.convert("RGB").tobytes()),
            "l_fnv1a": fnv1a(back.convert("L").tobytes()),
        }
    with open(os.path.join(OUT, "pillow.json"), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write("\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
