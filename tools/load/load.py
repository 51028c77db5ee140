#!/usr/bin/env python3
"""Load generator for an OpenAI-compatible server (ours, or llama.cpp's llama-server for comparison).

C clients, each in a loop for a bounded time: a streamed POST /v1/chat/completions, timing the first content
chunk (time to first token) and the gaps between chunks (per-token latency). Prints one JSON object:
requests/s, generated tokens/s (aggregate), p50/p99 TTFT and per-token latency, failures, hangs (a request with
no byte for --hang-seconds), and the server's resident memory before and after (--pid, read from /proc).

Standard library only. Example (server already running):
    python3 tools/load/load.py --url http://127.0.0.1:8080 --clients 8 --duration 60 --pid $(pgrep -f 'llama-adapter serve')
"""
import argparse
import http.client
import json
import socket
import threading
import time
import urllib.parse


def rss_mb(pid):
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def percentile(values, q):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.failures = 0
        self.hangs = 0
        self.tokens = 0
        self.ttft = []
        self.per_token = []
        self.errors = {}

    def fail(self, why):
        with self.lock:
            self.failures += 1
            self.errors[why] = self.errors.get(why, 0) + 1


def one_request(url, body, headers, hang_seconds, stats):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=hang_seconds)
    t0 = time.monotonic()
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            resp.read()
            stats.fail(f"HTTP {resp.status}")
            return
        first = None
        last = None
        chunks = 0
        usage_tokens = None
        buf = b""
        while True:
            data = resp.read1(65536) if hasattr(resp, "read1") else resp.read(1)
            if not data:
                break
            buf += data
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                line = event.strip()
                if not line.startswith(b"data: "):
                    continue
                payload = line[6:]
                if payload == b"[DONE]":
                    continue
                j = json.loads(payload)
                if j.get("usage"):
                    usage_tokens = j["usage"].get("completion_tokens")
                for c in j.get("choices") or []:
                    content = (c.get("delta") or {}).get("content")
                    if content:
                        now = time.monotonic()
                        if first is None:
                            first = now
                        last = now
                        chunks += 1
        n = usage_tokens if usage_tokens is not None else chunks
        with stats.lock:
            stats.requests += 1
            stats.tokens += n
            if first is not None:
                stats.ttft.append((first - t0) * 1000)
                if n > 1:
                    stats.per_token.append((last - first) * 1000 / (n - 1))
    except socket.timeout:
        with stats.lock:
            stats.hangs += 1
    except Exception as e:  # noqa: BLE001 - any failure is counted and named
        stats.fail(type(e).__name__)
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=60, help="seconds during which clients start new requests")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt", default="Write a long story about a fox who learns to read.")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--model", default="default")
    ap.add_argument("--api-key")
    ap.add_argument("--pid", type=int, help="server process id, for its memory before and after")
    ap.add_argument("--hang-seconds", type=float, default=120)
    ap.add_argument("--warmup", type=int, default=1, help="requests sent (and not counted) before the clock starts")
    a = ap.parse_args()

    headers = {"Content-Type": "application/json"}
    if a.api_key:
        headers["Authorization"] = "Bearer " + a.api_key
    body = json.dumps({"model": a.model, "messages": [{"role": "user", "content": a.prompt}], "max_tokens": a.max_tokens,
                       "temperature": a.temperature, "stream": True, "stream_options": {"include_usage": True}})
    warm = Stats()
    for _ in range(a.warmup):
        one_request(a.url, body, headers, a.hang_seconds, warm)
    rss_before = rss_mb(a.pid)
    stats = Stats()
    stop_at = time.monotonic() + a.duration

    def client():
        while time.monotonic() < stop_at:
            one_request(a.url, body, headers, a.hang_seconds, stats)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    rss_after = rss_mb(a.pid)
    r = {
        "url": a.url, "clients": a.clients, "max_tokens": a.max_tokens, "seconds": round(elapsed, 2),
        "requests": stats.requests, "failures": stats.failures, "hangs": stats.hangs, "errors": stats.errors,
        "requests_per_s": stats.requests / elapsed, "generated_tokens": stats.tokens, "tokens_per_s": stats.tokens / elapsed,
        "ttft_ms_p50": percentile(stats.ttft, 0.5), "ttft_ms_p99": percentile(stats.ttft, 0.99),
        "per_token_ms_p50": percentile(stats.per_token, 0.5), "per_token_ms_p99": percentile(stats.per_token, 0.99),
        "rss_mb_before": rss_before, "rss_mb_after": rss_after,
    }
    print(json.dumps(r))


if __name__ == "__main__":
    main()
