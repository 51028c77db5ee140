#!/usr/bin/env bash
# The README's test command: installs missing system packages, fetches the SmolLM2 GGUF (cached in
# .cache/, used by the real-model tests), then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
bash scripts/fetch-smollm2.sh >/dev/null
exec swift test
