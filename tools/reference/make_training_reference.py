#!/usr/bin/env python3
"""Training reference for the Swift trainer: the official LLaMA-Adapter V2 training step, CPU, float32.

Re-implements (nothing copied) what llama_adapter_v2_multimodal7b runs for one optimizer step:
data/dataset.py FinetuneDataset.__getitem__ (Alpaca format_prompt, the one-element-tuple instruction of
text-only samples, max_words padding/truncation, labels with the prompt masked, the all-zero image of
text-only samples), LLaMA_adapter.forward (forward_visual, the visual query added to every adapter layer's
prompt, gate.tanh(), shifted CrossEntropyLoss(ignore_index=0) over the batch), get_trainable_params for the
`pretrain` and `finetune` phases, util/misc.py add_weight_decay groups and get_grad_norm_ (parameters
without a gradient are skipped), torch.optim.AdamW(betas=(0.9, 0.95)), constant lr 1e-3 (no schedule),
batch 2 in file order, no augmentation (the CLIP inference transform), accum_iter 1.

Inputs: Tests/Fixtures/tiny_llama (base, tokenizer), Tests/Fixtures/tiny_adapter (adapter_bias.pth, clip_tiny.pth,
image.png). Writes Tests/Fixtures/training/:
  data.json            4 records: two image conversations (image.png, image_flipped.png), two Alpaca samples,
                       the first with an empty `input` (with-input template), the second without the key
  image_flipped.png    image.png mirrored left-right
  adapter_pretrain.pth adapter_bias.pth without its biases: the official `pretrain` model has w_bias=False
  golden.json          per phase: loss and grad_norm at steps 0-2, per-tensor gradient norms at step 0,
                       the trainable parameter names, and which of them got no gradient

Run: /usr/bin/python3 tools/reference/make_training_reference.py
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_tiny_llama import PARAMS, MAX_SEQ_LEN, ROPE_THETA, format_prompt, precompute_freqs_cis, apply_rotary_emb, rms_norm  # noqa: E402
from make_tiny_adapter import ADAPTER_CFG, clip_encode_image, forward_visual, preprocess_official  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FIX = os.path.join(ROOT, "Tests", "Fixtures")
OUT = os.path.join(FIX, "training")
MAX_WORDS = 160
BATCH = 2
LR = 1e-3
WD = 0.05
STEPS = 3

RECORDS = [
    {"image": "image.png", "conversations": [{"from": "human", "value": "What is in the picture?"},
                                             {"from": "gpt", "value": "A red square and a blue circle."}]},
    {"instruction": "Name a colour.", "input": "", "output": "Red is a colour."},
    {"image": "image_flipped.png", "conversations": [{"from": "human", "value": "Describe the image."},
                                                     {"from": "gpt", "value": "Shapes on a striped background."}]},
    {"instruction": "Say hello to the world.", "output": "Hello world."},
]


def tokenize(sp, prompt, answer):
    """FinetuneDataset.__getitem__ after format_prompt."""
    input1 = [sp.bos_id()] + sp.encode(prompt)
    input2 = [sp.bos_id()] + sp.encode(prompt + answer) + [sp.eos_id()]
    input2 = torch.tensor(input2, dtype=torch.int64)
    padding = MAX_WORDS - input2.shape[0]
    if padding > 0:
        input2 = torch.cat((input2, torch.zeros(padding, dtype=torch.int64) - 1))
    elif padding < 0:
        input2 = input2[:MAX_WORDS]
    labels = input2.clone()
    labels[:len(input1)] = -1
    input2[~input2.ge(0)] = 0
    labels[~labels.ge(0)] = 0
    return input2, labels


def sample(sp, rec):
    if "image" in rec:
        img = preprocess_official(os.path.join(OUT, rec["image"]))
        q, a = rec["conversations"][0]["value"], rec["conversations"][1]["value"]
        prompt = format_prompt(q, None)
    else:
        img = torch.zeros(3, 224, 224)
        instruction = rec["instruction"],        # the official trailing comma: a one-element tuple
        prompt = format_prompt(instruction, rec.get("input"))
        a = rec["output"]
    t, l = tokenize(sp, prompt, a)
    return t, l, img


class Model:
    """LLaMA_adapter.forward with float32 parameters in a dict (official names)."""

    def __init__(self, base_sd, adapter_sd, clip_sd, w_bias):
        self.p = {}
        for k, v in base_sd.items():
            if k != "rope.freqs":
                self.p["llama." + k] = v.float().clone()
        for k, v in adapter_sd.items():
            self.p[k] = v.float().clone()
        self.cw = {k: v.float() for k, v in clip_sd.items()}
        self.w_bias = w_bias
        self.dim, self.n_layers, self.n_heads = PARAMS["dim"], PARAMS["n_layers"], PARAMS["n_heads"]
        self.hd = self.dim // self.n_heads
        self.freqs = precompute_freqs_cis(self.hd, MAX_SEQ_LEN * 2, ROPE_THETA)
        self.ql, self.qlayer = ADAPTER_CFG["query_len"], ADAPTER_CFG["query_layer"]

    def lin(self, name, x):
        return F.linear(x, self.p[name + ".weight"], self.p.get(name + ".bias") if self.w_bias else None)

    def block(self, i, x, freqs, mask, adapter):
        p = f"llama.layers.{i}."
        B, S, _ = x.shape
        h = rms_norm(x, self.p[p + "attention_norm.weight"], PARAMS["norm_eps"])
        xq = self.lin(p + "attention.wq", h).view(B, S, self.n_heads, self.hd)
        xk = F.linear(h, self.p[p + "attention.wk.weight"]).view(B, S, self.n_heads, self.hd)
        xv = F.linear(h, self.p[p + "attention.wv.weight"]).view(B, S, self.n_heads, self.hd)
        xq, xk = apply_rotary_emb(xq, xk, freqs)
        q, k, v = xq.transpose(1, 2), xk.transpose(1, 2), xv.transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.hd) + mask
        scores = F.softmax(scores.float(), dim=-1)
        out = torch.matmul(scores, v)
        if adapter is not None:
            L = adapter.shape[1]
            av = F.linear(adapter, self.p[p + "attention.wv.weight"]).view(B, L, self.n_heads, self.hd).transpose(1, 2)
            ak = F.linear(adapter, self.p[p + "attention.wk.weight"]).view(B, L, self.n_heads, self.hd).transpose(1, 2)
            a_scores = torch.matmul(q, ak.transpose(2, 3)) / math.sqrt(self.hd)
            a_scores = self.p[p + "attention.gate"].tanh() * F.softmax(a_scores.float(), dim=-1)
            out = out + torch.matmul(a_scores, av)
        out = out.transpose(1, 2).contiguous().view(B, S, -1)
        x = x + self.lin(p + "attention.wo", out)
        h = rms_norm(x, self.p[p + "ffn_norm.weight"], PARAMS["norm_eps"])
        f = self.lin(p + "feed_forward.w2", F.silu(self.lin(p + "feed_forward.w1", h)) * self.lin(p + "feed_forward.w3", h))
        return x + f

    def forward(self, tokens, labels, imgs):
        vq = forward_visual(self.p, self.cw, imgs, ADAPTER_CFG)
        B, S = tokens.shape
        h = F.embedding(tokens, self.p["llama.tok_embeddings.weight"])
        freqs = self.freqs[:S]
        mask = torch.triu(torch.full((1, 1, S, S), float("-inf")), diagonal=1)
        for i in range(self.n_layers - self.qlayer):
            h = self.block(i, h, freqs, mask, None)
        adapter = self.p["adapter_query.weight"].reshape(self.qlayer, self.ql, -1).unsqueeze(1)
        for j, i in enumerate(range(self.n_layers - self.qlayer, self.n_layers)):
            h = self.block(i, h, freqs, mask, adapter[j].repeat(B, 1, 1) + vq)
        h = rms_norm(h, self.p["llama.norm.weight"], PARAMS["norm_eps"])
        out = F.linear(h, self.p["llama.output.weight"])[:, :-1, :]
        labels = labels[:, 1:]
        if labels.sum() == 0:
            return out.mean() * 0
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), labels.flatten(), ignore_index=0)


def trainable(name, phase):
    """get_trainable_params."""
    if phase == "finetune":
        return name.startswith("llama.") and ("norm" in name or "bias" in name)
    return any(t in name for t in ["gate", "clip_proj", "clip_proj_norm", "visual_query", "visual_blocks", "visual_proj",
                                   "visual_proj_norm", "adapter_query"])


def run_phase(phase, base_sd, adapter_sd, clip_sd, batches):
    m = Model(base_sd, adapter_sd, clip_sd, w_bias=(phase == "finetune"))
    names = [n for n in m.p if trainable(n, phase)]
    for n in names:
        m.p[n].requires_grad_(True)
    decay = [m.p[n] for n in names if not (m.p[n].dim() == 1 or n.endswith(".bias"))]
    no_decay = [m.p[n] for n in names if m.p[n].dim() == 1 or n.endswith(".bias")]
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": WD}],
                            lr=LR, betas=(0.9, 0.95))
    steps = []
    grad_norms0 = {}
    no_grad = []
    for k in range(STEPS):
        tokens, labels, imgs = batches[k % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss = m.forward(tokens, labels, imgs)
        loss.backward()
        with_grad = [m.p[n] for n in names if m.p[n].grad is not None]
        norm = torch.norm(torch.stack([torch.norm(p.grad.detach(), 2.0) for p in with_grad]), 2.0)
        if k == 0:
            grad_norms0 = {n: float(torch.norm(m.p[n].grad)) for n in names if m.p[n].grad is not None}
            no_grad = [n for n in names if m.p[n].grad is None]
        opt.step()
        steps.append({"loss": float(loss), "grad_norm": float(norm)})
        print(f"{phase} step {k}: loss {float(loss):.6f} grad_norm {float(norm):.6f}")
    return {"trainable": sorted(names), "no_grad": sorted(no_grad), "steps": steps, "grad_norms_step0": grad_norms0}


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    import cv2
    img = cv2.imread(os.path.join(FIX, "tiny_adapter", "image.png"))
    cv2.imwrite(os.path.join(OUT, "image.png"), img)
    cv2.imwrite(os.path.join(OUT, "image_flipped.png"), img[:, ::-1])
    with open(os.path.join(OUT, "data.json"), "w") as f:
        json.dump(RECORDS, f, indent=1)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(FIX, "tiny_llama", "tokenizer.model"))
    base_sd = torch.load(os.path.join(FIX, "tiny_llama", "model", "consolidated.00.pth"), map_location="cpu")
    bias_ckpt = torch.load(os.path.join(FIX, "tiny_adapter", "adapter_bias.pth"), map_location="cpu")
    clip_sd = torch.load(os.path.join(FIX, "tiny_adapter", "clip_tiny.pth"), map_location="cpu")
    pre = {k: v for k, v in bias_ckpt["model"].items() if not k.endswith(".bias") or not k.startswith("llama.")}
    pre_cfg = dict(bias_ckpt["config"], w_bias=False)
    torch.save({"model": pre, "config": pre_cfg}, os.path.join(OUT, "adapter_pretrain.pth"))

    samples = [sample(sp, r) for r in RECORDS]
    for t, l, _ in samples:
        assert int((l != 0).sum()) > 0, "a sample lost all its labels to max_words"
        assert int((t != 0).sum()) < MAX_WORDS, "a sample was truncated"
    batches = []
    for b in range(0, len(samples), BATCH):
        group = samples[b:b + BATCH]
        batches.append((torch.stack([g[0] for g in group]), torch.stack([g[1] for g in group]), torch.stack([g[2] for g in group])))
    golden = {"format": "training reference v1", "max_words": MAX_WORDS, "batch_size": BATCH, "lr": LR, "weight_decay": WD,
              "phases": {}}
    golden["phases"]["finetune"] = run_phase("finetune", base_sd, bias_ckpt["model"], clip_sd, batches)
    golden["phases"]["pretrain"] = run_phase("pretrain", base_sd, pre, clip_sd, batches)
    golden["phases"]["finetune"]["adapter"] = "tiny_adapter/adapter_bias.pth"
    golden["phases"]["pretrain"]["adapter"] = "training/adapter_pretrain.pth"
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
