#!/usr/bin/env python3
"""Drives the server's chat page in headless Chromium (Debian `chromium`) over the DevTools protocol: attaches an
image, sends a message, waits for the streamed answer to finish, saves a screenshot and prints the answer as JSON.

    python3 tools/browser/page_test.py --url http://127.0.0.1:8080 --image receipt.png --message "What is the total?" --screenshot page.png

Needs `chromium` and the PyPI package `websocket-client`. Used by ServerTests when LLAMA_ADAPTER_BROWSER_TEST=1.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # websocket-client


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Tab:
    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=60)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return r.get("result", {}).get("value")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--message", default="What is the total on this receipt?")
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--width", type=int, default=390, help="viewport width (a phone)")
    ap.add_argument("--height", type=int, default=844)
    a = ap.parse_args()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("chromium not found (apt-get install -y chromium)")
    port = free_port()
    profile = tempfile.mkdtemp(prefix="page-test-")
    proc = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
                             f"--window-size={a.width},{a.height}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        targets = None
        for _ in range(200):
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
                if any(t.get("type") == "page" for t in targets):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        page = next(t for t in targets if t.get("type") == "page")
        tab = Tab(page["webSocketDebuggerUrl"])
        tab.call("Page.enable")
        tab.call("Emulation.setDeviceMetricsOverride", width=a.width, height=a.height, deviceScaleFactor=2, mobile=True)
        tab.call("Page.navigate", url=a.url + "/")
        for _ in range(100):
            if tab.eval("document.readyState") == "complete" and tab.eval("!!document.getElementById('file')"):
                break
            time.sleep(0.1)
        doc = tab.call("DOM.getDocument")
        node = tab.call("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector="#file")
        tab.call("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[os.path.abspath(a.image)])
        # The page reads the file asynchronously; wait until it shows the file name.
        for _ in range(100):
            if tab.eval("document.getElementById('preview').textContent") :
                break
            time.sleep(0.1)
        tab.eval(f"document.getElementById('text').value = {json.dumps(a.message)}; document.getElementById('send').click(); true")
        deadline = time.time() + a.timeout
        state, answer, error = None, "", None
        while time.time() < deadline:
            state = tab.eval("(document.querySelector('.msg.assistant') || {dataset: {}}).dataset.state || null")
            answer = tab.eval("(document.querySelector('.msg.assistant span') || {textContent: ''}).textContent")
            error = tab.eval("(document.querySelector('.msg.error') || {textContent: null}).textContent")
            if state == "done" or error:
                break
            time.sleep(0.2)
        images = tab.eval("document.querySelectorAll('.msg.user img').length")
        shot = tab.call("Page.captureScreenshot", format="png")
        with open(a.screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(json.dumps({"state": state, "answer": answer, "error": error, "user_images": images}))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
