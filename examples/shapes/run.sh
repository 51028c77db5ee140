#!/usr/bin/env bash
# Teaches SmolLM2-135M-Instruct to see the shapes world with the paper's joint training (LLaMA-Adapter V2,
# section 3.3): caption batches train the visual path (clip_proj, visual_query, visual_blocks, visual_proj) and the
# early-fusion gates; instruction batches train the late adaption prompts, their gates, norms, biases and scales.
#
#   bash examples/shapes/run.sh --model GGUF --clip DINOV2_DIR --out ADAPTER [--work DIR] [--images N] [--steps N]
#                               [-- more finetune flags, e.g. --log-json]
#
# Writes ADAPTER (official .pth format), ADAPTER.svg (the loss curve) and, under --work, the generated data
# (train/ for training, heldout/ rendered from other seeds for `llama-adapter eval`).
set -euo pipefail
cd "$(dirname "$0")/../.."

model="" clip="" out="" work=".cache/shapes" images=1600 steps=300 batch=8 lr=1e-3 seed=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --clip|--vision) clip="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --images) images="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --batch-size) batch="$2"; shift 2 ;;
    --lr) lr="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "error: unknown argument $1 (expected --model, --clip, --out, --work, --images, --steps, --batch-size, --lr, --seed)" >&2; exit 1 ;;
  esac
done
[ -n "$model" ] && [ -n "$clip" ] && [ -n "$out" ] || { echo "error: --model GGUF, --clip DIR and --out ADAPTER are required" >&2; exit 1; }

B=.build/release/llama-adapter
[ -x "$B" ] || swift build -c release --product llama-adapter >&2

start=$(date +%s)
# Training data, and a held-out set from other seeds with blank canvases (the evaluation's control).
"$B" shapes --out "$work/train" --images "$images" --seed "$seed" --questions-per-image 2
"$B" shapes --out "$work/heldout" --images 150 --seed $((seed + 1000)) --questions-per-image 2 --blanks

# The visual branch is sized for a 135M base and a 384-wide DINOv2-S: 384-wide visual blocks, 10 visual queries;
# adaption prompts in the top 20 of SmolLM2's 30 layers, the visual prompt in the 10 below them (early fusion).
# The frozen encoder's features are computed once per image (--no-augment keeps them cacheable). The gates of the
# visual prompt learn 10x faster than the rest (--gate-lr-scale): at one rate they stayed below 0.05 in 240 steps
# and the answers stayed near chance; scaling every gate, or lr 2e-3, made the run diverge.
"$B" finetune --model "$model" --clip "$clip" --phase joint \
  --data "$work/train/questions.json" --caption-data "$work/train/captions.tsv" \
  --bias --query-layer 20 --query-len 10 --visual --v-embed-dim 384 --v-depth 2 --v-heads 6 \
  --batch-size "$batch" --steps "$steps" --lr "$lr" --warmup-steps 20 --clip-grad 1 --gate-lr-scale 10 --max-words 64 --no-augment --seed "$seed" \
  --out "$out" --plot "$out.svg" ${extra[@]+"${extra[@]}"}

echo "trained in $(( $(date +%s) - start )) s; wrote $out and $out.svg" >&2
cat >&2 <<EOF
Ask it:
  $B generate --model $model --adapter $out --clip $clip --image $work/heldout/images/00000.png --channels rgb --prompt "What color is the circle?" --temperature 0
Evaluate it (with the image, with the blank canvas, and chance):
  $B eval --model $model --adapter $out --clip $clip --data $work/heldout/questions.json
EOF
