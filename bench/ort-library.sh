#!/usr/bin/env bash
# Installs ONNX Runtime's shared library for the classifier's `ort` feature and
# prints its path, the value for ORT_DYLIB_PATH:
#
#   export ORT_DYLIB_PATH="$(bench/ort-library.sh)"          # venv in target/ort-venv
#   cargo run --release -p classifier --features ort --example latency
#
# The library comes from the PyPI `onnxruntime` wheel (pinned: the version the
# classifier's assets were verified with, see services/classifier/assets/NOTICE.md),
# installed with pip into a virtualenv. Nothing else is downloaded, and the
# classifier itself never downloads anything. Progress goes to stderr; stdout
# is only the path. Fails (non-zero) if pip or the library is missing.
#
#   VENV=dir  where the virtualenv goes (default target/ort-venv)
#   ONNXRUNTIME_VERSION=1.31.1
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/target/ort-venv}"
VERSION="${ONNXRUNTIME_VERSION:-1.31.1}"

if [[ ! -x "$VENV/bin/pip" ]]; then
  echo "creating $VENV" >&2
  python3 -m venv "$VENV" >&2
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('onnxruntime') != '$VERSION')" 2>/dev/null; then
  echo "installing onnxruntime==$VERSION into $VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "onnxruntime==$VERSION" >&2
fi
CAPI="$("$VENV/bin/python" -c 'import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec("onnxruntime").origin).parent / "capi")')"
LIBRARY="$CAPI/libonnxruntime.so.$VERSION"
[[ -f "$LIBRARY" ]] || { echo "no $LIBRARY in the onnxruntime wheel" >&2; ls "$CAPI" >&2; exit 1; }
echo "$LIBRARY"
