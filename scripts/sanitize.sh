#!/usr/bin/env bash
# Runs the whole test suite under a sanitizer, in its own build folder:
#   bash scripts/sanitize.sh address      # AddressSanitizer (heap/stack overflows, use after free)
#   bash scripts/sanitize.sh undefined    # UndefinedBehaviorSanitizer (the C kernels and codecs)
#   bash scripts/sanitize.sh thread       # ThreadSanitizer (thread pool, batching engine, server)
# Extra arguments go to `swift test` (e.g. --filter ServerTests). Prints the usual summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?usage: scripts/sanitize.sh address|undefined|thread [swift test arguments]}
shift
source scripts/deps.sh
bash scripts/fetch-smollm2.sh >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Leaks are reported by the leak checker's own runs, not here: Swift's runtime keeps caches for the process.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1}
set +e
LLAMA_ADAPTER_REQUIRE_SMOLLM2=1 LLAMA_ADAPTER_REQUIRE_MPI=1 swift test --sanitize="$kind" --scratch-path ".build-$kind" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
grep -E "Executed [0-9]+ tests?, with" "$log" | tail -1 || true
grep -cE "(ERROR: (Address|Thread|Undefined)Sanitizer|runtime error:|WARNING: ThreadSanitizer)" "$log" | sed 's/^/sanitizer reports: /' || true
exit "$status"
