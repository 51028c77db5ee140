#!/usr/bin/env python3
"""Accuracy of the OCR expert (paper section 4.4) on the rendered documents of this folder.

    python3 examples/documents/eval.py --model GGUF [--bin .build/release/llama-adapter] [--layouts none,alpaca-input,...]

For every document of questions.json it runs `llama-adapter generate --temperature 0 --json` once per layout:
- none: the question alone, in the model's own chat template (no expert: what the model knows without the image);
- TEMPLATE-LAYOUT: --expert ocr --template TEMPLATE --context-layout LAYOUT, e.g. alpaca-input (the OCR text as
  the Alpaca template's `### Input:`, the paper's way) or chat-before (before the question in the user turn).
An answer counts when one of the record's `accept` strings (or `answer`) occurs in the reply as a whole word,
ignoring case. Prints a Markdown table per kind and layout, and the seconds taken. Standard library only.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LAYOUTS = {"none": []}
for template in ("alpaca", "chat"):
    for layout in ("input", "before", "after", "document"):
        if template == "chat" and layout == "input":
            continue  # the same as chat-before
        LAYOUTS[f"{template}-{layout}"] = ["--expert", "ocr", "--template", template, "--context-layout", layout]


def correct(reply, record):
    text = reply.lower()
    for a in record.get("accept", []) + [record["answer"].lower()]:
        if re.search(r"(?<![\w.])" + re.escape(a.lower()) + r"(?![\w])", text):
            return True
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "..", ".build", "release", "llama-adapter"))
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--show", action="store_true", help="print every reply")
    args = ap.parse_args()
    layouts = args.layouts.split(",")
    for l in layouts:
        if l not in LAYOUTS:
            sys.exit(f"error: unknown layout {l} ({', '.join(LAYOUTS)})")
    records = json.load(open(os.path.join(HERE, "questions.json")))
    score = {}
    start = time.time()
    for r in records:
        for l in layouts:
            cmd = [args.bin, "generate", "--model", args.model, "--prompt", r["question"], "--temperature", "0",
                   "--max-new-tokens", str(args.max_new_tokens), "--json"] + LAYOUTS[l]
            if l != "none":
                cmd += ["--image", os.path.join(HERE, r["image"])]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"error: {' '.join(cmd)}: {out.stderr.strip()}")
            reply = json.loads(out.stdout)["text"]
            ok = correct(reply, r)
            for key in ((r["kind"], l), ("overall", l)):
                n, c = score.get(key, (0, 0))
                score[key] = (n + 1, c + int(ok))
            if args.show:
                print(f"{r['image']} [{l}] {'OK ' if ok else 'BAD'} {reply.strip()!r}", file=sys.stderr)
    kinds = sorted({k for k, _ in score if k != "overall"}) + ["overall"]
    print("| kind | " + " | ".join(layouts) + " |")
    print("|---|" + "---|" * len(layouts))
    for k in kinds:
        cells = []
        for l in layouts:
            n, c = score[(k, l)]
            cells.append(f"{c}/{n} ({c / n:.2f})")
        print(f"| {k} | " + " | ".join(cells) + " |")
    print(f"{time.time() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
