#!/usr/bin/env python3
"""PyTorch CPU timing of one image through OpenAI CLIP ViT-L/14's visual tower, as LLaMA-Adapter V2 runs it
(`clip_encode_image`: all 257 tokens through ln_post and proj, not just CLS). A baseline for the Swift
`clipEncodeImage` timing.

Shape of ViT-L/14 (openai/CLIP clip/model.py VisionTransformer): 224 px input, patch 14 (16x16 grid + CLS =
257 tokens), width 1024, 24 residual attention blocks of 16 heads (nn.MultiheadAttention, QuickGELU MLP of
4096), LayerNorm eps 1e-5, ln_pre / ln_post, proj [1024, 768]. Random weights (timing does not depend on
the values), float32, batch 1.

Protocol: torch.set_num_threads(THREADS), torch.inference_mode(), one warm-up run, then the best of N runs
(wall clock, time.perf_counter). Prints one JSON line:
    {"image_encode_ms": best, "runs": [...], "threads": 2, "torch": version, ...}

Run (Debian's python3 with python3-torch):
    /usr/bin/python3 tools/bench/clip_l14_torch.py [--runs N] [--threads T]
"""
import argparse
import json
import time
from collections import OrderedDict

import torch
import torch.nn as nn

RESOLUTION, PATCH, WIDTH, LAYERS, HEADS, OUTPUT_DIM = 224, 14, 1024, 24, 16, 768


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads)
        self.ln_1 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(d, 4 * d)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * d, d))]))
        self.ln_2 = nn.LayerNorm(d)

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class VisualTower(nn.Module):
    def __init__(self):
        super().__init__()
        g = (RESOLUTION // PATCH) ** 2 + 1
        self.conv1 = nn.Conv2d(3, WIDTH, kernel_size=PATCH, stride=PATCH, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(WIDTH) * WIDTH ** -0.5)
        self.positional_embedding = nn.Parameter(torch.randn(g, WIDTH) * WIDTH ** -0.5)
        self.ln_pre = nn.LayerNorm(WIDTH)
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(WIDTH, HEADS) for _ in range(LAYERS)])
        self.ln_post = nn.LayerNorm(WIDTH)
        self.proj = nn.Parameter(torch.randn(WIDTH, OUTPUT_DIM) * WIDTH ** -0.5)

    def forward(self, x):
        """LLaMA-Adapter's clip_encode_image: (B, 3, 224, 224) -> (B, 257, 768)."""
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.ln_pre(x)
        x = self.resblocks(x.permute(1, 0, 2)).permute(1, 0, 2)   # (L, B, D), as nn.MultiheadAttention wants
        return self.ln_post(x) @ self.proj


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up (best is reported)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = VisualTower().float().eval()
    image = torch.randn(1, 3, RESOLUTION, RESOLUTION)
    runs = []
    with torch.inference_mode():
        out = model(image)   # warm-up
        assert out.shape == (1, (RESOLUTION // PATCH) ** 2 + 1, OUTPUT_DIM) and out.dtype == torch.float32
        for _ in range(a.runs):
            t0 = time.perf_counter()
            model(image)
            runs.append((time.perf_counter() - t0) * 1000.0)
    print(json.dumps({"image_encode_ms": round(min(runs), 2), "runs": [round(r, 2) for r in runs],
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "model": "ViT-L/14 visual (random weights), 257 tokens through ln_post and proj",
                      "dtype": "float32", "batch": 1,
                      "parameters": sum(p.numel() for p in model.parameters())}))


if __name__ == "__main__":
    main()
