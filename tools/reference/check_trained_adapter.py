#!/usr/bin/env python3
"""Checks an adapter written by `llama-adapter finetune --out` the way the official code would use it.

    .build/debug/llama-adapter finetune --model Tests/Fixtures/tiny_llama/model \
        --tokenizer Tests/Fixtures/tiny_llama/tokenizer.model --clip Tests/Fixtures/tiny_adapter/clip_tiny.pth \
        --adapter Tests/Fixtures/tiny_adapter/adapter_bias.pth --phase finetune \
        --data Tests/Fixtures/training/data.json --batch-size 2 --steps 3 --lr 1e-3 --min-lr 1e-3 --max-words 160 \
        --no-shuffle --no-augment --compat official --out /tmp/trained.pth
    /usr/bin/python3 tools/reference/check_trained_adapter.py /tmp/trained.pth

1. torch.load reads it; its top level is exactly {'model', 'config'}.
2. The 'model' keys are exactly util/extract_adapter_from_checkpoint.py's BIAS list (ranges shrunk to the tiny
   model: 2 visual blocks, 2 llama layers), in that order; trained tensors are float32, frozen ones keep the
   dtype of the starting checkpoint.
3. Loaded into the reference model of make_training_reference.py (the official forward), the batch-0 loss.
Writes Tests/Fixtures/training/trained_check.json with the key list, dtypes, config and that loss; the Swift
test TrainingCheckpointTests compares its own output with it.
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_training_reference as ref  # noqa: E402
import sentencepiece as spm  # noqa: E402


def official_bias_keys(v_depth, n_layers):
    return [f"visual_blocks.{i}.{key}.{suffix}" for i in range(v_depth)
            for key in ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"] for suffix in ["weight", "bias"]] + \
           [f"llama.layers.{i}.{key}" for i in range(n_layers)
            for key in ["attention.gate", "attention.wq.bias", "attention.wo.bias", "feed_forward.w1.bias", "feed_forward.w2.bias",
                        "feed_forward.w3.bias", "attention_norm.weight", "ffn_norm.weight"]] + \
           [f"{b}.{s}" for b in ["clip_proj_norm", "visual_proj_norm", "visual_proj", "clip_proj"] for s in ["weight", "bias"]] + \
           ["llama.norm.weight", "visual_query.weight", "adapter_query.weight"]


def main():
    path = sys.argv[1]
    ck = torch.load(path, map_location="cpu")
    problems = []
    if sorted(ck.keys()) != ["config", "model"]:
        problems.append(f"top-level keys {sorted(ck.keys())}")
    keys = list(ck["model"].keys())
    official = official_bias_keys(2, 2)
    if keys != official:
        problems.append(f"key list differs: extra {sorted(set(keys) - set(official))}, missing {sorted(set(official) - set(keys))}")
    start = torch.load(os.path.join(ref.FIX, "tiny_adapter", "adapter_bias.pth"), map_location="cpu")["model"]
    dtypes = {}
    for k, v in ck["model"].items():
        dtypes[k] = str(v.dtype).replace("torch.", "")
        trained = ref.trainable(k, "finetune")
        want = torch.float32 if trained else start[k].dtype
        if v.dtype != want:
            problems.append(f"{k}: dtype {v.dtype}, expected {want}")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(ref.FIX, "tiny_llama", "tokenizer.model"))
    samples = [ref.sample(sp, r) for r in ref.RECORDS[:2]]
    base_sd = torch.load(os.path.join(ref.FIX, "tiny_llama", "model", "consolidated.00.pth"), map_location="cpu")
    clip_sd = torch.load(os.path.join(ref.FIX, "tiny_adapter", "clip_tiny.pth"), map_location="cpu")
    m = ref.Model(base_sd, ck["model"], clip_sd, w_bias=bool(ck["config"].get("w_bias")))
    with torch.no_grad():
        loss = float(m.forward(torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples]),
                               torch.stack([s[2] for s in samples])))
    result = {"ok": not problems, "problems": problems, "keys": keys, "dtypes": dtypes, "config": ck["config"],
              "batch0_loss_after": loss,
              "command": "finetune --phase finetune --adapter tiny_adapter/adapter_bias.pth --data training/data.json "
                         "--batch-size 2 --steps 3 --lr 1e-3 --min-lr 1e-3 --max-words 160 --no-shuffle --no-augment --compat official"}
    with open(os.path.join(ref.OUT, "trained_check.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("OK" if not problems else "\n".join(problems), f"batch-0 loss with the trained adapter: {loss:.6f}")
    sys.exit(0 if not problems else 1)


if __name__ == "__main__":
    main()
