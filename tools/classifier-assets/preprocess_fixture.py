#!/usr/bin/env python3
"""Write the reference preprocessing fixture used by services/classifier/tests/classifier/model.rs.

usage: preprocess_fixture.py ASSET_DIR OUT_JSON      (needs numpy + pillow; pinned: numpy==2.4.6 pillow==13.0.0)

For each sample image (and three synthetic ones, see SYNTHETIC), preprocesses exactly as verify_assets.py does (the reference: RGB, shorter side -> 256
with PIL BILINEAR, centre crop 224 with Python's round(), (x - 127) / 128, NCHW float32) and records a summary
small enough to commit: the resized size and crop box, per-channel mean and std, the mean of every 32x32 block
per channel, and 20 single values at fixed pseudo-random [c, y, x] positions.
"""
import json, os, sys
import numpy as np
import PIL
from PIL import Image

CROP = 224
RESIZE_SHORT = 256

def preprocess(path, crop):
    """Identical to verify_assets.preprocess (copied so that this script needs no onnxruntime)."""
    return preprocess_image(Image.open(path), crop)

def preprocess_image(im, crop):
    im = im.convert("RGB")
    w, h = im.size
    short = RESIZE_SHORT * crop // 224
    if w <= h: nw, nh = short, int(short * h / w)
    else:      nw, nh = int(short * w / h), short
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - crop) / 2.0)), int(round((nh - crop) / 2.0))
    im = im.crop((left, top, left + crop, top + crop))
    x = (np.asarray(im, dtype=np.float32) - 127.0) / 128.0      # HWC, RGB
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])     # NCHW [1,3,crop,crop]
IMAGES = ["cat.jpg", "coffee.jpg", "rocket.jpg", "motorcycle.jpg"]
# Lossless synthetic images, generated identically by the Rust test: they check resizing, cropping and
# scaling without the JPEG decoders' differences (libjpeg-turbo and zune-jpeg differ by up to 4 levels).
# 770 x 512 resizes to 385 x 256, whose crop offset 80.5 rounds to even; 300 x 451 is a portrait.
SYNTHETIC = [(451, 300), (770, 512), (300, 451)]

def synthetic(width, height):
    """channel c of pixel (x, y) = (3x + 5y + 85c + 10 ((x y) mod 7)) mod 256: ramps, wraps and texture."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    channels = [(3 * x + 5 * y + 85 * c + 10 * ((x * y) % 7)) % 256 for c in range(3)]
    return Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8), "RGB")

def summary(image):
    x = preprocess_image(image, CROP)[0]                           # [3, 224, 224] float32
    w, h = image.size
    nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    left, top = int(round((nw - CROP) / 2.0)), int(round((nh - CROP) / 2.0))
    rng = np.random.default_rng(20240601)
    idx = np.stack([rng.integers(0, 3, 20), rng.integers(0, CROP, 20), rng.integers(0, CROP, 20)], axis=1)
    blocks = x.reshape(3, 7, 32, 7, 32).mean(axis=(2, 4))       # [3, 7, 7]
    return {
        "source_size": [w, h],
        "resized_size": [nw, nh],
        "crop_left_top": [left, top],
        "channel_mean": [round(float(v), 6) for v in x.mean(axis=(1, 2), dtype=np.float64)],
        "channel_std": [round(float(v), 6) for v in x.std(axis=(1, 2), dtype=np.float64)],
        "block_means_32": [[[round(float(v), 6) for v in row] for row in ch] for ch in blocks],
        "samples": [{"chw": [int(c), int(y), int(xx)], "value": round(float(x[c, y, xx]), 6)} for c, y, xx in idx],
    }

def main():
    assets, out = sys.argv[1], sys.argv[2]
    doc = {
        "generator": "tools/classifier-assets/preprocess_fixture.py",
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "input": [1, 3, CROP, CROP],
        "images": {
            **{name: summary(Image.open(os.path.join(assets, name))) for name in IMAGES},
            **{f"synthetic-{w}x{h}": summary(synthetic(w, h)) for w, h in SYNTHETIC},
        },
    }
    # one line per field, so that the file stays small and diffs stay readable
    images = ",\n".join(
        f'    {json.dumps(name)}: {{\n' + ",\n".join(f'      {json.dumps(k)}: {json.dumps(v)}' for k, v in fields.items())
        + "\n    }" for name, fields in doc.pop("images").items())
    head = "".join(f'  {json.dumps(k)}: {json.dumps(v)},\n' for k, v in doc.items())
    with open(out, "w") as f:
        f.write("{\n" + head + '  "images": {\n' + images + "\n  }\n}\n")
    json.load(open(out))
    print("wrote", out)

if __name__ == "__main__":
    main()
