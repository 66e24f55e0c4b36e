#!/usr/bin/env python3
"""Check the classifier assets with onnxruntime and (re)write expected.json.

usage: verify_assets.py ASSET_DIR [--write-expected] [--bench N] [--threads 2]

Needs numpy, pillow, onnxruntime.  For every model (efficientnet-lite*.onnx) and every
sample image (*.jpg / *.png) in ASSET_DIR it:
  * preprocesses exactly as documented in NOTICE.md (RGB, shorter side -> 256 bilinear,
    centre crop to the model's input size (224), (x - 127) / 128, NCHW float32),
  * runs onnxruntime on CPU with --threads intra-op threads, softmaxes the logits, prints the top-5,
  * asserts cat top-1 in 281..285 and coffee top-1 in {967, 968, 504},
  * measures inference latency (median of N runs after 5 warm-ups, input prepared beforehand).
With --write-expected it writes ASSET_DIR/expected.json:
  { "<model file>": { "<image file>": [[class_index, label, prob], ...top-5] } }
"""
import argparse, glob, json, os, statistics, sys, time
import numpy as np
import onnxruntime as ort
from PIL import Image

RESIZE_SHORT = 256
CHECKS = {  # image stem -> acceptable top-1 indices (asserted)
    "cat": set(range(281, 286)),
    "coffee": {967, 968, 504},
}

def preprocess(path, crop):
    im = Image.open(path).convert("RGB")
    w, h = im.size
    short = RESIZE_SHORT * crop // 224          # 256 for 224 (the shipped models)
    if w <= h: nw, nh = short, int(short * h / w)
    else:      nw, nh = int(short * w / h), short
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - crop) / 2.0)), int(round((nh - crop) / 2.0))
    im = im.crop((left, top, left + crop, top + crop))
    x = (np.asarray(im, dtype=np.float32) - 127.0) / 128.0      # HWC, RGB
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])     # NCHW [1,3,crop,crop]

def softmax(z):
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--write-expected", action="store_true")
    ap.add_argument("--bench", type=int, default=20, help="timed runs per image (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    labels = open(os.path.join(a.dir, "imagenet_labels.txt")).read().splitlines()
    assert len(labels) == 1000, len(labels)
    models = sorted(glob.glob(os.path.join(a.dir, "efficientnet-lite*.onnx")))
    images = sorted(p for p in glob.glob(os.path.join(a.dir, "*")) if p.lower().endswith((".jpg", ".jpeg", ".png")))
    assert models and images
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, intra_op_num_threads={a.threads}")
    expected, failures, lat = {}, [], {}
    for mp in models:
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(mp, so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        crop = inp.shape[2]
        mname = os.path.basename(mp)
        print(f"\n== {mname}  input {inp.name} {inp.shape}  output {sess.get_outputs()[0].name} {sess.get_outputs()[0].shape}")
        expected[mname] = {}
        for ip in images:
            iname, stem = os.path.basename(ip), os.path.splitext(os.path.basename(ip))[0]
            x = preprocess(ip, crop)
            logits = sess.run(None, {inp.name: x})[0][0]
            p = softmax(logits.astype(np.float64))
            top = np.argsort(-p)[:5]
            expected[mname][iname] = [[int(i), labels[i], round(float(p[i]), 6)] for i in top]
            ms = None
            if a.bench:
                for _ in range(5): sess.run(None, {inp.name: x})
                ts = []
                for _ in range(a.bench):
                    t0 = time.perf_counter(); sess.run(None, {inp.name: x}); ts.append((time.perf_counter() - t0) * 1e3)
                ms = statistics.median(ts)
                lat[(mname, iname)] = (ms, min(ts))
            ok = ""
            if stem in CHECKS:
                good = int(top[0]) in CHECKS[stem]
                ok = " OK" if good else f" FAIL (want top-1 in {sorted(CHECKS[stem])})"
                if not good: failures.append((mname, iname))
            print(f"  {iname:15s}" + (f" {ms:6.2f} ms" if ms is not None else "") + ok)
            for i in top:
                print(f"      {int(i):4d} {p[i]:.4f}  {labels[i]}")
    if lat:
        print("\nlatency, ms (median / min of %d runs, %d threads):" % (a.bench, a.threads))
        for (m, i), (med, mn) in lat.items():
            print(f"  {m:26s} {i:15s} {med:6.2f} / {mn:6.2f}")
    if a.write_expected:
        out = os.path.join(a.dir, "expected.json")
        with open(out, "w") as f:
            f.write("{\n" + ",\n".join(
                f'  {json.dumps(m)}: {{\n' + ",\n".join(
                    f'    {json.dumps(i)}: {json.dumps(v)}' for i, v in imgs.items()) + "\n  }"
                for m, imgs in expected.items()) + "\n}\n")
        json.load(open(out))
        print("wrote", out)
    if failures:
        print("FAILED:", failures); sys.exit(1)
    print("\nall checks passed")

if __name__ == "__main__":
    main()
