#!/usr/bin/env bash
# Builds the libFuzzer harnesses (Sources/AdapterFuzz) with AddressSanitizer and runs each target for a
# bounded time, seeded with the committed fixtures. Crashes land in fuzz-out/TARGET/ (crash-*, leak-*,
# timeout-*); copy each one to Tests/Fixtures/fuzz/TARGET/ so the replay test keeps it fixed.
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET (default 300)] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
seconds=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(pth torchscript gguf safetensors sentencepiece tokenizer_json jinja image training_data)
swift build -c release --product llama-adapter-fuzz --scratch-path .build-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xcc -fsanitize=address >/dev/null
bin=.build-fuzz/release/llama-adapter-fuzz
F=Tests/Fixtures
seed() {
  case "$1" in
    pth) echo "$F/hostile/pth $F/formats $F/tiny_adapter/adapter_bias.pth $F/training/adapter_pretrain.pth" ;;
    torchscript) echo "$F/formats/torchscript.pt" ;;
    gguf) echo "$F/gguf" ;;
    safetensors) echo "$F/safetensors/single.safetensors $F/safetensors/sharded" ;;
    sentencepiece) echo "$F/tokenizer/tokenizer.model $F/tiny_llama/tokenizer.model" ;;
    tokenizer_json) echo "$F/bpe/tiny_tokenizer.json" ;;
    jinja) echo "$F/fuzz-seeds/jinja" ;;
    image) echo "$F/images $F/ocr $F/tiny_adapter/image.png" ;;
    training_data) echo "$F/training/data.json $F/fuzz-seeds/training_data" ;;
  esac
}
for t in "${targets[@]}"; do
  corpus=fuzz-out/$t/corpus
  mkdir -p "$corpus"
  # Seeds are copied into the working corpus: libFuzzer writes new inputs into its first corpus folder.
  for s in $(seed "$t"); do
    if [ -d "$s" ]; then find "$s" -maxdepth 1 -type f -size -2M -exec cp {} "$corpus/" \; ; else cp "$s" "$corpus/"; fi
  done
  echo "== $t ($seconds s)"
  set +e
  LLAMA_ADAPTER_FUZZ_TARGET=$t LLAMA_ADAPTER_THREADS=1 ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
    "$bin" "$corpus" -max_total_time="$seconds" -rss_limit_mb=3072 -malloc_limit_mb=2048 -timeout=20 -max_len=65536 \
    -artifact_prefix="fuzz-out/$t/" -print_final_stats=1 2>&1 | tee "fuzz-out/$t/log.txt" | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)" || true
  set -e
done
