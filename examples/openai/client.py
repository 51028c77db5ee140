#!/usr/bin/env python3
"""The official `openai` package against `llama-adapter serve` (pip install openai).

    python3 examples/openai/client.py [--base-url http://127.0.0.1:8080/v1] [--image receipt.png]
"""
import argparse
import base64
import mimetypes

from openai import OpenAI

ap = argparse.ArgumentParser()
ap.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
ap.add_argument("--api-key", default="none", help="the server's --api-key, if it has one")
ap.add_argument("--image", help="a PNG or JPEG sent as a data: URL (needs a visual adapter + CLIP, or --expert ocr)")
ap.add_argument("--question", default="What is the capital of France?")
a = ap.parse_args()

client = OpenAI(base_url=a.base_url, api_key=a.api_key)
print("models:", [m.id for m in client.models.list()])

content = a.question
if a.image:
    mime = mimetypes.guess_type(a.image)[0] or "image/png"
    with open(a.image, "rb") as f:
        url = f"data:{mime};base64," + base64.b64encode(f.read()).decode()
    content = [{"type": "text", "text": a.question}, {"type": "image_url", "image_url": {"url": url}}]

# One answer at once...
r = client.chat.completions.create(model="default", messages=[{"role": "user", "content": content}],
                                   max_tokens=48, temperature=0)
print("answer:", r.choices[0].message.content, "| usage:", r.usage.prompt_tokens, "+", r.usage.completion_tokens)

# ...and streamed, token by token.
print("streamed: ", end="", flush=True)
for chunk in client.chat.completions.create(model="default", messages=[{"role": "user", "content": content}],
                                            max_tokens=48, temperature=0, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
