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
export LLAMA_ADAPTER_REQUIRE_SMOLLM2=1 LLAMA_ADAPTER_REQUIRE_DINOV2=1 LLAMA_ADAPTER_REQUIRE_MPI=1
status=0
set +e
# The whole suite on the best path this CPU has.
swift test 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# Then the suites that exercise the kernels again on every lower instruction-set path this CPU can take
# (LLAMA_ADAPTER_SIMD caps the dispatch), so a machine with AVX-512 also proves the AVX2 and portable paths.
flags=$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || true)
lower=()
case "$(uname -m)" in
  x86_64)
    if [[ " $flags " == *" avx512f "* && " $flags " == *" avx512bw "* && " $flags " == *" avx512vl "* ]]; then
      [[ " $flags " == *" avx512_vnni "* ]] && lower+=(avx512)
      lower+=(avx2)
    fi
    [[ " $flags " == *" avx2 "* ]] && lower+=(generic) ;;
  # ARM64 runs the portable path only (no NEON kernels yet), so there is no lower path to add.
  *) ;;
esac
kernels='ExpKernelTests|QuantKernelTests|KQuantKernelTests|BatchKernelTests|Int8ActivationTests|LevelActivationTests|PrefillChunkTests|BatchedForwardTests|LlamaModelTests|GGUFLlamaTests|AdapterModelTests|AdapterVariantTests|BackwardTests|TrainingReferenceTests|VisionEncoderTests|SessionTests|DistributedTrainingTests.testDeterministicReduce'
for level in ${lower[@]+"${lower[@]}"}; do
  echo "== kernel suites with LLAMA_ADAPTER_SIMD=$level"
  LLAMA_ADAPTER_SIMD=$level swift test --skip-build --filter "$kernels" 2>&1 | sed -E "s/^Test Case '([^']*)'/Test Case '\\1 [$level]'/" | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
set -e
# Count test cases, not XCTest's assertion failures (one failing test can fail hundreds of assertions).
passed=$(grep -cE "^Test Case '.*' passed \(" "$log" || true)
failed=$(grep -cE "^Test Case '.*' failed \(" "$log" || true)
skipped=$(grep -cE "^Test Case '.*' skipped \(" "$log" || true)
paths="native"
[ ${#lower[@]} -gt 0 ] && paths="native + ${lower[*]}"
echo "$passed passed, $failed failed, $skipped skipped (paths: $paths)"
exit "$status"
