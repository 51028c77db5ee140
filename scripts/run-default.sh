#!/usr/bin/env bash
# The README's first command: installs what is needed, builds in release mode and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
swift build -c release --product llama-adapter
bin=.build/release/llama-adapter
fixture=Tests/Fixtures/tiny_llama
echo "== generate (tiny official-format LLaMA fixture, greedy)"
"$bin" generate --model "$fixture/model" --tokenizer "$fixture/tokenizer.model" \
  --prompt "The capital of France is" --temperature 0 --max-new-tokens 12 --json
echo "== bench (SmolLM2-135M shapes, synthetic f16 weights)"
"$bin" bench --preset smollm2
