#!/usr/bin/env bash
# The README's test command: installs missing system packages, fetches the SmolLM2 GGUF and the DINOv2-S
# folder (cached in .cache/, used by the real-model tests), then runs the whole test suite and prints one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
bash scripts/fetch-smollm2.sh >/dev/null
bash scripts/fetch-dinov2.sh >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
LLAMA_ADAPTER_REQUIRE_SMOLLM2=1 LLAMA_ADAPTER_REQUIRE_DINOV2=1 LLAMA_ADAPTER_REQUIRE_MPI=1 swift test 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# XCTest's last "Executed N tests, with F failures" line is the whole run; repeat it in the plain form.
summary=$(grep -E "Executed [0-9]+ tests?, with .*failures?" "$log" | tail -1 || true)
if [ -n "$summary" ]; then
  total=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
  failed=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures?.*/\1/')
  skipped=$(echo "$summary" | sed -nE 's/.*with ([0-9]+) tests? skipped.*/\1/p')
  skipped=${skipped:-0}
  echo "$((total - failed - skipped)) passed, $failed failed, $skipped skipped"
fi
exit "$status"
