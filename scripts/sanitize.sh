#!/usr/bin/env bash
# Runs the whole test suite under a sanitizer, in its own build folder:
#   bash scripts/sanitize.sh address      # AddressSanitizer (heap/stack overflows, use after free)
#   bash scripts/sanitize.sh undefined    # UndefinedBehaviorSanitizer (the C kernels, codecs and shims)
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
if [ "$kind" = undefined ]; then
  # swiftc has no -sanitize=undefined on Linux: UBSan instruments the C targets (kernels, codecs, MPI shim),
  # where undefined behaviour can hide; Swift code keeps its own checks (overflow, bounds, exclusivity) in
  # this debug build. Any report aborts the test process.
  rt=$(dirname "$(swiftc -print-target-info | sed -n 's/.*"runtimeResourcePath": "\(.*\)".*/\1/p')")/clang
  rtlib=$(ls -d "$rt"/*/lib/linux | head -1)
  flags=(-Xcc -fsanitize=undefined -Xcc -fno-sanitize-recover=undefined -Xcc -fno-omit-frame-pointer
         -Xlinker -L"$rtlib" -Xlinker -lclang_rt.ubsan_standalone-x86_64 -Xlinker -rpath -Xlinker "$rtlib")
else
  flags=(--sanitize="$kind")
fi
LLAMA_ADAPTER_REQUIRE_SMOLLM2=1 LLAMA_ADAPTER_REQUIRE_MPI=1 swift test "${flags[@]}" --scratch-path ".build-$kind" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
grep -E "Executed [0-9]+ tests?, with" "$log" | tail -1 || true
grep -cE "(ERROR: (Address|Thread|Undefined)Sanitizer|runtime error:|WARNING: ThreadSanitizer)" "$log" | sed 's/^/sanitizer reports: /' || true
exit "$status"
