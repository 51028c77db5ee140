#!/usr/bin/env python3
"""Build a tiny LLaMA-1 model in Meta's official layout and record golden outputs for the Swift tests.

What it builds (under Tests/Fixtures/tiny_llama/):
  tokenizer.model                 copy of Tests/Fixtures/tokenizer/tokenizer.model (400 pieces)
  model/params.json               {"dim", "multiple_of", "n_heads", "n_layers", "norm_eps", "vocab_size": -1}
  model/consolidated.00.pth       torch.save of a plain dict with the official tensor names, float16
                                  (plus a float32 `rope.freqs`, as LLaMA-1 files carry one)
  model_2shards/params.json       same params
  model_2shards/consolidated.0{0,1}.pth
                                  the same weights split as Meta's model parallelism does:
                                  column-parallel (wq, wk, wv, w1, w3, output) on dim 0,
                                  row-parallel (wo, w2) on dim 1, tok_embeddings (ParallelEmbedding)
                                  on dim 1, norms and rope.freqs replicated
  golden.json                     per prompt: tokens, logits of every prompt position, 12 greedy tokens,
                                  their text, and the logits of the first 4 incremental decode steps
                                  (KV cache, start_pos) -- see GOLDEN_SCHEMA below

The model: dim 64, 2 layers, 4 heads (head_dim 16), multiple_of 32 (FFN hidden 192), norm_eps 1e-6,
vocab 400. The forward pass follows the official LLaMA-Adapter file
llama_adapter_v2_multimodal7b/llama/llama.py (base model only: no adapter, no bias, no LoRA):
RMSNorm in float, RoPE on adjacent pairs via complex freqs_cis (theta 1e4, 2*max_seq_len positions),
causal mask, SwiGLU FFN, output projection. One deliberate difference: the official Attention applies
the softmax only inside `if mask is not None`, so its one-token decode steps skip it; we always apply
it (see DESIGN.md section 2). Weights are drawn in float32, rounded to float16 (that is what the files
hold) and the reference computes in float32 from the rounded values, so a Swift implementation that
reads the f16 files and computes in f32 should agree to ~1e-5.

Run (from anywhere; Debian's python3 with python3-torch and python3-sentencepiece):
    /usr/bin/python3 tools/reference/make_tiny_llama.py
Optional cross-check against the official code itself (a local copy of the official llama.py; it is
imported on CPU, nothing of it is copied here):
    /usr/bin/python3 tools/reference/make_tiny_llama.py --official path/to/llama_adapter_v2_multimodal7b/llama/llama.py
This loads the written checkpoint into the official Transformer and checks (a) its prefill logits
against ours, (b) that its one-token decode steps differ (the skipped softmax), and (c) that with the
softmax moved out of the `if` its decode steps reproduce step_logits.
Deterministic: the same torch version gives byte-identical tensors and golden values.
"""
import json
import math
import os
import shutil
import sys
from typing import List, Optional

import torch
import torch.nn.functional as F
import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
TOKENIZER = os.path.join(ROOT, "Tests", "Fixtures", "tokenizer", "tokenizer.model")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "tiny_llama")

# params.json keys exactly as LLaMA-1 ships them (vocab_size -1: taken from the tokenizer).
PARAMS = {"dim": 64, "multiple_of": 32, "n_heads": 4, "n_layers": 2, "norm_eps": 1e-06, "vocab_size": -1}
MAX_SEQ_LEN = 512          # what llama_adapter.load() uses; freqs_cis covers 2 * MAX_SEQ_LEN positions
ROPE_THETA = 10000.0
N_GREEDY = 12
N_STEPS = 4
MIN_GAP = 1e-2             # required top1 - top2 logit gap at every greedy decision
FIRST_SEED = 1234
N_SHARDS = 2

# Init scales that make the model "random but peaked" (see make_weights).
EMBED_STD = 1.0
QK_GAIN = 1.5              # sharper attention: score std ~ QK_GAIN^2, so positional errors show
OUTPUT_GAIN = 4.0          # logits std ~ OUTPUT_GAIN (RMS-normed input), spread of several units
NORM_WEIGHT_JITTER = 0.2   # norm weights 1 + 0.2 * N(0, 1), so a missing "* weight" shows


def format_prompt(instruction, input=None):
    # Copied from llama_adapter_v2_multimodal7b/llama/utils.py (official), text unchanged.
    PROMPT_DICT = {
        "prompt_input": (
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n"
            "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
        ),
        "prompt_no_input": (
            "Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request.\n\n"
            "### Instruction:\n{instruction}\n\n### Response:"
        ),
    }
    if input is None:
        return PROMPT_DICT['prompt_no_input'].format_map({'instruction': instruction})
    else:
        return PROMPT_DICT["prompt_input"].format_map({'instruction': instruction, 'input': input})


PROMPTS = [
    ("hello", "Hello world"),
    ("capital", "The capital of France is"),
    ("alpaca", format_prompt("Tell me about alpacas.")),
]

GOLDEN_SCHEMA = {
    "format": "tiny_llama golden v1",
    "config": "model hyper-parameters (dim, n_layers, n_heads, head_dim, hidden_dim, multiple_of, norm_eps, "
              "vocab_size, rope_theta, max_seq_len) and the seed that made the weights",
    "cases[].prompt": "prompt text (the alpaca case is format_prompt(instruction) from the official utils.py)",
    "cases[].tokens": "BOS (1) + sp.encode(prompt)",
    "cases[].prefill_logits": "[len(tokens)][vocab] float32 logits of every prompt position (one forward, start_pos 0)",
    "cases[].greedy_tokens": "12 argmax tokens after the prompt (stops early only after emitting EOS 2, which is then the last id)",
    "cases[].greedy_text": "sp.decode(greedy_tokens)",
    "cases[].step_start_pos": "start_pos of decode step k = len(tokens) + k",
    "cases[].step_input_tokens": "token fed at decode step k = greedy_tokens[k]",
    "cases[].step_logits_compat_official": "[4][vocab] the same decode steps with the official plain "
                                           "Transformer.forward's bug: no softmax on 1-token steps (--compat official)",
    "cases[].step_logits": "[4][vocab] logits of decode step k (one token at step_start_pos[k], KV cache from the prefill "
                           "and earlier steps); argmax(step_logits[k]) == greedy_tokens[k+1]",
    "cases[].min_top_gap": "smallest top1 - top2 logit gap over the greedy decisions (> 1e-2)",
}


# ----------------------------------------------------------------------------------------------------
# Official forward pass (llama_adapter_v2_multimodal7b/llama/llama.py), base model, float32.

def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0):
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
    t = torch.arange(end, device=freqs.device)
    freqs = torch.outer(t, freqs).float()
    return torch.polar(torch.ones_like(freqs), freqs)  # complex64


def reshape_for_broadcast(freqs_cis, x):
    ndim = x.ndim
    assert freqs_cis.shape == (x.shape[1], x.shape[-1])
    shape = [d if i == 1 or i == ndim - 1 else 1 for i, d in enumerate(x.shape)]
    return freqs_cis.view(*shape)


def _float(x):
    # The official `.float()` casts (fp16 -> fp32); a no-op for the float64 cross-check model.
    return x if x.dtype == torch.float64 else x.float()


def apply_rotary_emb(xq, xk, freqs_cis):
    xq_ = torch.view_as_complex(_float(xq).reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(_float(xk).reshape(*xk.shape[:-1], -1, 2))
    freqs_cis = reshape_for_broadcast(freqs_cis, xq_)
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3)
    return xq_out.type_as(xq), xk_out.type_as(xk)


def rms_norm(x, weight, eps):
    xf = _float(x)
    out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)
    return out * weight


def ffn_hidden_dim(dim: int, multiple_of: int) -> int:
    hidden = int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class TinyLlama:
    """Transformer.forward(tokens, start_pos) of the official llama.py, with its per-layer KV cache
    (cache_k/cache_v of shape (max_batch_size, max_seq_len, n_heads, head_dim)). Weights are the
    float16 tensors of the checkpoint, computed in `dtype` (float32 for the golden values)."""

    def __init__(self, sd, params, vocab_size, dtype=torch.float32, max_seq_len=MAX_SEQ_LEN):
        self.w = {k: v.to(dtype) for k, v in sd.items() if k != "rope.freqs"}
        self.dim = params["dim"]
        self.n_layers = params["n_layers"]
        self.n_heads = params["n_heads"]
        self.head_dim = self.dim // self.n_heads
        self.eps = params["norm_eps"]
        self.vocab_size = vocab_size
        self.dtype = dtype
        self.max_seq_len = max_seq_len
        # True reproduces the official bug (softmax only when a mask exists), for --compat official.
        self.official_softmax_bug = False
        fc = precompute_freqs_cis(self.head_dim, max_seq_len * 2, ROPE_THETA)
        self.freqs_cis = fc.to(torch.complex128) if dtype == torch.float64 else fc
        self.reset_cache()

    def reset_cache(self):
        shape = (1, self.max_seq_len, self.n_heads, self.head_dim)
        self.cache_k = [torch.zeros(shape, dtype=self.dtype) for _ in range(self.n_layers)]
        self.cache_v = [torch.zeros(shape, dtype=self.dtype) for _ in range(self.n_layers)]

    def attention(self, i, x, start_pos, freqs_cis, mask):
        p = f"layers.{i}.attention."
        bsz, seqlen, _ = x.shape
        xq, xk, xv = x @ self.w[p + "wq.weight"].T, x @ self.w[p + "wk.weight"].T, x @ self.w[p + "wv.weight"].T
        xq = xq.view(bsz, seqlen, self.n_heads, self.head_dim)
        xk = xk.view(bsz, seqlen, self.n_heads, self.head_dim)
        xv = xv.view(bsz, seqlen, self.n_heads, self.head_dim)
        xq, xk = apply_rotary_emb(xq, xk, freqs_cis=freqs_cis)

        self.cache_k[i][:bsz, start_pos: start_pos + seqlen] = xk
        self.cache_v[i][:bsz, start_pos: start_pos + seqlen] = xv
        keys = self.cache_k[i][:bsz, : start_pos + seqlen]
        values = self.cache_v[i][:bsz, : start_pos + seqlen]

        xq = xq.transpose(1, 2)
        keys = keys.transpose(1, 2)
        values = values.transpose(1, 2)
        scores = torch.matmul(xq, keys.transpose(2, 3)) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores + mask
        # Official code: the softmax sits inside `if mask is not None` (skipped on 1-token steps).
        # We always apply it (DESIGN.md section 2) unless official_softmax_bug reproduces the official code.
        if mask is not None or not self.official_softmax_bug:
            scores = F.softmax(_float(scores), dim=-1).type_as(xq)
        output = torch.matmul(scores, values)
        output = output.transpose(1, 2).contiguous().view(bsz, seqlen, -1)
        return output @ self.w[p + "wo.weight"].T

    def feed_forward(self, i, x):
        p = f"layers.{i}.feed_forward."
        return (F.silu(x @ self.w[p + "w1.weight"].T) * (x @ self.w[p + "w3.weight"].T)) @ self.w[p + "w2.weight"].T

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, start_pos: int, all_logits: bool = False):
        _bsz, seqlen = tokens.shape
        h = F.embedding(tokens, self.w["tok_embeddings.weight"])
        freqs_cis = self.freqs_cis[start_pos: start_pos + seqlen]
        mask = None
        if seqlen > 1:
            # Official: torch.triu(full((1,1,seqlen,seqlen), -inf), diagonal=start_pos+1), which only has
            # the right shape when start_pos == 0 (all we use). This general form equals it there.
            mask = torch.full((1, 1, seqlen, start_pos + seqlen), float("-inf"))
            mask = torch.triu(mask, diagonal=start_pos + 1).type_as(h)
            if start_pos == 0:
                official = torch.triu(torch.full((1, 1, seqlen, seqlen), float("-inf")), diagonal=1).type_as(h)
                assert torch.equal(mask, official)
        for i in range(self.n_layers):
            h = h + self.attention(i, rms_norm(h, self.w[f"layers.{i}.attention_norm.weight"], self.eps),
                                   start_pos, freqs_cis, mask)
            h = h + self.feed_forward(i, rms_norm(h, self.w[f"layers.{i}.ffn_norm.weight"], self.eps))
        h = rms_norm(h, self.w["norm.weight"], self.eps)
        if not all_logits:
            h = h[:, -1, :]  # official: only compute last logits
        return _float(h @ self.w["output.weight"].T)


# ----------------------------------------------------------------------------------------------------
# Weights and sharding.

def make_weights(seed: int, params, vocab_size: int):
    """Random but peaked: N(0,1) embeddings, linears N(0, 1/fan_in) (q/k and output scaled up),
    norm weights near 1. Drawn in float32, stored as float16."""
    g = torch.Generator().manual_seed(seed)
    dim, n_layers = params["dim"], params["n_layers"]
    hidden = ffn_hidden_dim(dim, params["multiple_of"])

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float32) * std

    def linear(out_f, in_f, gain=1.0):
        return randn(out_f, in_f, std=gain / math.sqrt(in_f))

    def norm():
        return 1.0 + randn(dim, std=NORM_WEIGHT_JITTER)

    sd = {"tok_embeddings.weight": randn(vocab_size, dim, std=EMBED_STD)}
    for i in range(n_layers):
        p = f"layers.{i}."
        sd[p + "attention.wq.weight"] = linear(dim, dim, QK_GAIN)
        sd[p + "attention.wk.weight"] = linear(dim, dim, QK_GAIN)
        sd[p + "attention.wv.weight"] = linear(dim, dim)
        sd[p + "attention.wo.weight"] = linear(dim, dim)
        sd[p + "feed_forward.w1.weight"] = linear(hidden, dim)
        sd[p + "feed_forward.w2.weight"] = linear(dim, hidden)
        sd[p + "feed_forward.w3.weight"] = linear(hidden, dim)
        sd[p + "attention_norm.weight"] = norm()
        sd[p + "ffn_norm.weight"] = norm()
    sd["norm.weight"] = norm()
    sd["output.weight"] = linear(vocab_size, dim, OUTPUT_GAIN)
    sd = {k: v.half() for k, v in sd.items()}
    # LLaMA-1 checkpoints carry the RoPE inverse frequencies (head_dim/2 values); loaders ignore them.
    head_dim = dim // params["n_heads"]
    sd["rope.freqs"] = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2).float() / head_dim))
    return sd


COLUMN_PARALLEL = ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight",
                   "feed_forward.w1.weight", "feed_forward.w3.weight", "output.weight")
ROW_PARALLEL = ("attention.wo.weight", "feed_forward.w2.weight", "tok_embeddings.weight")


def shard_dim(name: str) -> Optional[int]:
    if name.endswith(COLUMN_PARALLEL):
        return 0
    if name.endswith(ROW_PARALLEL):  # RowParallelLinear and ParallelEmbedding: split on dim 1
        return 1
    return None  # norms, rope.freqs: replicated


def split_shards(sd, n: int) -> List[dict]:
    shards = [dict() for _ in range(n)]
    for k, v in sd.items():
        d = shard_dim(k)
        parts = [v] * n if d is None else list(torch.chunk(v, n, dim=d))
        for s, part in zip(shards, parts):
            s[k] = part.clone().contiguous()  # own storage: a view would save the whole parent storage
    return shards


def merge_shards(shards: List[dict]) -> dict:
    out = {}
    for k in shards[0]:
        d = shard_dim(k)
        out[k] = shards[0][k] if d is None else torch.cat([s[k] for s in shards], dim=d)
    return out


# ----------------------------------------------------------------------------------------------------
# Golden values.

def top_gap(logits: torch.Tensor) -> float:
    top = torch.topk(logits.double(), 2).values
    return float(top[0] - top[1])


def run_case(model: TinyLlama, sp, prompt: str):
    tokens = [sp.bos_id()] + sp.encode(prompt)
    n = len(tokens)
    assert n + N_GREEDY <= model.max_seq_len
    model.reset_cache()
    prefill = model.forward(torch.tensor([tokens]), 0, all_logits=True)[0]  # (n, vocab)
    logits = prefill[-1]
    greedy, steps, gaps = [], [], []
    cur = n
    while len(greedy) < N_GREEDY:
        gaps.append(top_gap(logits))
        nxt = int(torch.argmax(logits))
        greedy.append(nxt)
        if nxt == sp.eos_id() or len(greedy) == N_GREEDY:
            break
        logits = model.forward(torch.tensor([[nxt]]), cur)[0]  # incremental, KV cache
        if len(steps) < N_STEPS:
            steps.append(logits.clone())
        cur += 1
    return tokens, prefill, greedy, steps, gaps


def check_against_full_recompute(model: TinyLlama, tokens, greedy, steps, tol):
    """Each cached decode step must equal a from-scratch forward over the whole prefix."""
    worst = 0.0
    for k, step in enumerate(steps):
        model.reset_cache()
        full = model.forward(torch.tensor([tokens + greedy[: k + 1]]), 0)[0]
        worst = max(worst, float((full - step).abs().max()))
    assert worst < tol, f"KV-cache path differs from full recompute by {worst}"
    return worst


def f32_list(t: torch.Tensor):
    # float32 values as Python floats: repr() of each is exact for the float32 value.
    return t.to(torch.float32).tolist()


def build(seed: int, sp, vocab: int):
    sd = make_weights(seed, PARAMS, vocab)
    model = TinyLlama(sd, PARAMS, vocab, torch.float32)
    results = []
    for name, prompt in PROMPTS:
        tokens, prefill, greedy, steps, gaps = run_case(model, sp, prompt)
        if min(gaps) <= MIN_GAP:
            return None, None, f"seed {seed}: near-tie (gap {min(gaps):.4g}) in case {name}"
        if len(steps) < N_STEPS:
            return None, None, f"seed {seed}: EOS before {N_STEPS} decode steps in case {name}"
        results.append((name, prompt, tokens, prefill, greedy, steps, gaps))
    return sd, results, None


def write_pth(path, sd):
    torch.save(sd, path)


def check_official(llama_py: str, sd, vocab: int, results):
    """Run the official llama.py Transformer (CPU, float32) on the written weights."""
    import importlib.util
    import types
    src = open(llama_py).read()
    buggy = ("            scores = scores + mask  # (bs, n_local_heads, slen, cache_len + slen)\n\n"
             "            scores = F.softmax(scores.float(), dim=-1).type_as(xq)")
    assert buggy in src, "official llama.py: softmax-inside-if block not found (file changed?)"
    fixed = src.replace(buggy, buggy.replace("\n            scores = F.softmax", "\n        scores = F.softmax"))
    orig_cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # Attention.train(False) allocates caches with .cuda()
    try:
        for label, code in (("official", src), ("official, softmax always", fixed)):
            mod = types.ModuleType("official_llama_" + str(len(label)))
            exec(compile(code, llama_py, "exec"), mod.__dict__)
            args = mod.ModelArgs(max_seq_len=MAX_SEQ_LEN, max_batch_size=1, **PARAMS)
            args.vocab_size = vocab
            m = mod.Transformer(args)
            res = m.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
            assert res.unexpected_keys == ["rope.freqs"], res.unexpected_keys
            assert all(k.endswith(".gate") for k in res.missing_keys), res.missing_keys
            m.eval()
            pre, step = 0.0, 0.0
            for name, prompt, tokens, prefill, greedy, steps, gaps in results:
                m.eval()  # fresh caches
                pre = max(pre, float((m(torch.tensor([tokens]), 0)[0] - prefill[-1]).abs().max()))
                for k, ref in enumerate(steps):
                    out = m(torch.tensor([[greedy[k]]]), len(tokens) + k)[0]
                    step = max(step, float((out - ref).abs().max()))
            print(f"  {label}: max |prefill last logits - ours| {pre:.2e}, max |decode steps - ours| {step:.2e}")
            assert pre < 1e-4
            if code is fixed:
                assert step < 1e-4
            else:
                assert step > 1e-1, "expected the official 1-token steps to differ (softmax skipped)"
    finally:
        torch.Tensor.cuda = orig_cuda


def main():
    official = None
    if len(sys.argv) == 3 and sys.argv[1] == "--official":
        official = sys.argv[2]
    elif len(sys.argv) != 1:
        sys.exit(__doc__)
    sp = spm.SentencePieceProcessor(model_file=TOKENIZER)
    vocab = sp.vocab_size()
    assert vocab == sp.get_piece_size() == 400, vocab

    seed = FIRST_SEED
    while True:
        sd, results, why = build(seed, sp, vocab)
        if sd is not None:
            break
        print("re-seeding:", why)
        seed += 1

    # Float64 cross-check of the same (f16-rounded) weights: how far float32 is from exact.
    model32 = TinyLlama(sd, PARAMS, vocab, torch.float32)
    model64 = TinyLlama(sd, PARAMS, vocab, torch.float64)
    f64_diff = 0.0
    cache_diff = 0.0
    for name, prompt, tokens, prefill, greedy, steps, gaps in results:
        model64.reset_cache()
        p64 = model64.forward(torch.tensor([tokens]), 0, all_logits=True)[0]
        f64_diff = max(f64_diff, float((p64 - prefill.double()).abs().max()))
        cache_diff = max(cache_diff, check_against_full_recompute(model32, tokens, greedy, steps, 1e-4))

    # Files.
    model_dir = os.path.join(OUT, "model")
    shard_dir = os.path.join(OUT, f"model_{N_SHARDS}shards")
    for d in (model_dir, shard_dir):
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            if f.endswith(".pth"):
                os.remove(os.path.join(d, f))
        with open(os.path.join(d, "params.json"), "w") as f:
            json.dump(PARAMS, f)
    shutil.copyfile(TOKENIZER, os.path.join(OUT, "tokenizer.model"))
    write_pth(os.path.join(model_dir, "consolidated.00.pth"), sd)
    shards = split_shards(sd, N_SHARDS)
    for r, s in enumerate(shards):
        write_pth(os.path.join(shard_dir, f"consolidated.{r:02d}.pth"), s)

    # Load back and verify.
    loaded = torch.load(os.path.join(model_dir, "consolidated.00.pth"), map_location="cpu")
    assert loaded.keys() == sd.keys()
    for k in sd:
        assert loaded[k].dtype == sd[k].dtype and torch.equal(loaded[k], sd[k]), k
        assert loaded[k].dtype == (torch.float32 if k == "rope.freqs" else torch.float16), k
    loaded_shards = [torch.load(os.path.join(shard_dir, f"consolidated.{r:02d}.pth"), map_location="cpu")
                     for r in range(N_SHARDS)]
    merged = merge_shards(loaded_shards)
    assert merged.keys() == sd.keys()
    for k in sd:
        assert torch.equal(merged[k], sd[k]), k
    # The merged weights give bit-identical logits.
    m2 = TinyLlama(merged, PARAMS, vocab, torch.float32)
    for name, prompt, tokens, prefill, *_ in results:
        assert torch.equal(m2.forward(torch.tensor([tokens]), 0, all_logits=True)[0], prefill), name

    hidden = ffn_hidden_dim(PARAMS["dim"], PARAMS["multiple_of"])
    golden = {
        "generator": "tools/reference/make_tiny_llama.py",
        "torch_version": torch.__version__,
        "schema": GOLDEN_SCHEMA,
        "config": {
            "dim": PARAMS["dim"], "n_layers": PARAMS["n_layers"], "n_heads": PARAMS["n_heads"],
            "head_dim": PARAMS["dim"] // PARAMS["n_heads"], "hidden_dim": hidden,
            "multiple_of": PARAMS["multiple_of"], "norm_eps": PARAMS["norm_eps"], "vocab_size": vocab,
            "rope_theta": ROPE_THETA, "max_seq_len": MAX_SEQ_LEN, "seed": seed,
            "bos_id": sp.bos_id(), "eos_id": sp.eos_id(),
        },
        "cases": [],
    }
    def compat_steps(tokens, inputs):
        """Decode steps of the official plain Transformer.forward, softmax skipped on 1-token steps."""
        model32.official_softmax_bug = True
        model32.reset_cache()
        model32.forward(torch.tensor([tokens]), 0)
        out = [model32.forward(torch.tensor([[t]]), len(tokens) + k)[0] for k, t in enumerate(inputs)]
        model32.official_softmax_bug = False
        return out

    for name, prompt, tokens, prefill, greedy, steps, gaps in results:
        golden["cases"].append({
            "name": name,
            "prompt": prompt,
            "tokens": tokens,
            "prefill_logits": f32_list(prefill),
            "greedy_tokens": greedy,
            "greedy_text": sp.decode(greedy),
            "step_start_pos": [len(tokens) + k for k in range(len(steps))],
            "step_input_tokens": greedy[: len(steps)],
            "step_logits": [f32_list(s) for s in steps],
            "step_logits_compat_official": [f32_list(s) for s in compat_steps(tokens, greedy[: len(steps)])],
            "min_top_gap": min(gaps),
        })
    path = os.path.join(OUT, "golden.json")
    with open(path, "w") as f:
        json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")

    # Round-trip the JSON: every number parses back to the exact float32.
    with open(path) as f:
        back = json.load(f)
    for c, (name, prompt, tokens, prefill, greedy, steps, gaps) in zip(back["cases"], results):
        assert torch.equal(torch.tensor(c["prefill_logits"], dtype=torch.float32), prefill)
        for a, b in zip(c["step_logits"], steps):
            assert torch.equal(torch.tensor(a, dtype=torch.float32), b)

    # Summary.
    print(f"seed {seed}; model dim {PARAMS['dim']}, layers {PARAMS['n_layers']}, heads {PARAMS['n_heads']}, "
          f"hidden {hidden}, vocab {vocab}; {sum(v.numel() for k, v in sd.items() if k != 'rope.freqs')} params")
    for name, prompt, tokens, prefill, greedy, steps, gaps in results:
        lg = prefill[-1]
        print(f"  {name}: {len(tokens)} prompt tokens, last-logit std {float(lg.std()):.2f} "
              f"range [{float(lg.min()):.2f}, {float(lg.max()):.2f}], min top gap {min(gaps):.3f}")
        print(f"    greedy {greedy} -> {sp.decode(greedy)!r}")
    print(f"  max |f32 - f64| prefill logits: {f64_diff:.2e}; max |cached - full recompute|: {cache_diff:.2e}")
    if official:
        check_official(official, sd, vocab, results)
    total = 0
    # Only this script's outputs (make_tiny_hf.py and make_tiny_gguf.py add hf/ and the .gguf.bin).
    for dirpath, _, files in os.walk(OUT):
        if os.path.relpath(dirpath, OUT).startswith("hf"):
            continue
        for fn in sorted(files):
            if fn.endswith(".gguf.bin"):
                continue
            p = os.path.join(dirpath, fn)
            total += os.path.getsize(p)
            print(f"  {os.path.relpath(p, ROOT)}: {os.path.getsize(p)} bytes")
    print(f"  total {total} bytes")
    assert total < 2 * 1024 * 1024, "fixtures exceed 2 MB"


if __name__ == "__main__":
    sys.exit(main())
