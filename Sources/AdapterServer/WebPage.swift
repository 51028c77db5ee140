// The chat page served at `/`: one self-contained HTML file (no external assets), streamed answers through
// the server's own /v1/chat/completions, image upload as a data: URL, usable on a phone-sized screen.

/// The page's HTML, CSS and JavaScript.
let webPage = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llama-adapter chat</title>
<style>
  :root { --bg: #f6f7f9; --fg: #1d232b; --me: #dbeafe; --bot: #ffffff; --line: #d5d9df; --accent: #2563eb; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.45 system-ui, sans-serif; background: var(--bg); color: var(--fg);
         display: flex; flex-direction: column; height: 100vh; height: 100dvh; }
  header { padding: 10px 14px; border-bottom: 1px solid var(--line); display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
  header h1 { font-size: 17px; margin: 0; flex: 1; }
  header input { width: 11em; padding: 5px; border: 1px solid var(--line); border-radius: 6px; }
  #log { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 10px; }
  .msg { max-width: min(46em, 92%); padding: 9px 12px; border-radius: 12px; white-space: pre-wrap; word-wrap: break-word; border: 1px solid var(--line); }
  .user { align-self: flex-end; background: var(--me); }
  .assistant { align-self: flex-start; background: var(--bot); }
  .error { align-self: center; color: #b91c1c; background: #fee2e2; }
  .msg img { display: block; max-width: 100%; max-height: 220px; border-radius: 8px; margin-bottom: 6px; }
  form { display: flex; gap: 8px; padding: 10px; border-top: 1px solid var(--line); align-items: flex-end; }
  textarea { flex: 1; resize: none; min-height: 44px; max-height: 40vh; padding: 10px; font: inherit; border: 1px solid var(--line); border-radius: 10px; }
  button, label.btn { min-height: 44px; padding: 0 14px; border-radius: 10px; border: 1px solid var(--line); background: #fff; font: inherit; cursor: pointer; display: inline-flex; align-items: center; }
  button.primary { background: var(--accent); color: #fff; border-color: var(--accent); }
  #preview { font-size: 13px; color: #555; max-width: 8em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  input[type=file] { display: none; }
</style>
</head>
<body>
<header>
  <h1>llama-adapter</h1>
  <input id="key" type="password" placeholder="API key (if set)" autocomplete="off">
  <button id="clear" type="button">New chat</button>
</header>
<main id="log" aria-live="polite"></main>
<form id="form">
  <label class="btn" title="Attach an image">Image<input id="file" type="file" accept="image/png,image/jpeg"></label>
  <span id="preview"></span>
  <textarea id="text" rows="1" placeholder="Message" autofocus></textarea>
  <button class="primary" id="send" type="submit">Send</button>
</form>
<script>
"use strict";
const log = document.getElementById("log"), form = document.getElementById("form"), text = document.getElementById("text");
const file = document.getElementById("file"), preview = document.getElementById("preview"), key = document.getElementById("key");
const send = document.getElementById("send");
let history = [], image = null, busy = false, controller = null;
key.value = localStorage.getItem("llama-adapter-key") || "";
key.addEventListener("change", () => localStorage.setItem("llama-adapter-key", key.value));
function bubble(cls, content, img) {
  const d = document.createElement("div");
  d.className = "msg " + cls;
  if (img) { const i = document.createElement("img"); i.src = img; i.alt = "attached image"; d.appendChild(i); }
  const s = document.createElement("span"); s.textContent = content; d.appendChild(s);
  log.appendChild(d); log.scrollTop = log.scrollHeight;
  return s;
}
file.addEventListener("change", () => {
  const f = file.files[0];
  if (!f) return;
  const r = new FileReader();
  r.onload = () => { image = r.result; preview.textContent = f.name; };
  r.readAsDataURL(f);
});
document.getElementById("clear").addEventListener("click", () => {
  if (controller) controller.abort();
  history = []; log.textContent = ""; image = null; preview.textContent = "";
});
text.addEventListener("keydown", e => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); } });
form.addEventListener("submit", async e => {
  e.preventDefault();
  if (busy) { if (controller) controller.abort(); return; }
  const q = text.value.trim();
  if (!q && !image) return;
  const content = image ? [{type: "text", text: q}, {type: "image_url", image_url: {url: image}}] : q;
  bubble("user", q, image);
  history.push({role: "user", content});
  text.value = ""; image = null; preview.textContent = ""; file.value = "";
  const out = bubble("assistant", "");
  out.parentElement.dataset.state = "streaming";
  busy = true; send.textContent = "Stop"; controller = new AbortController();
  let answer = "";
  try {
    const headers = {"Content-Type": "application/json"};
    if (key.value) headers["Authorization"] = "Bearer " + key.value;
    const res = await fetch("/v1/chat/completions", {method: "POST", headers, signal: controller.signal,
                                                     body: JSON.stringify({messages: history, stream: true})});
    if (!res.ok) {
      let m = res.status + " " + res.statusText;
      try { m = (await res.json()).error.message; } catch (_) {}
      throw new Error(m);
    }
    const reader = res.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        const delta = j.choices && j.choices[0] && j.choices[0].delta;
        if (delta && delta.content) { answer += delta.content; out.textContent = answer; log.scrollTop = log.scrollHeight; }
      }
    }
    history.push({role: "assistant", content: answer});
  } catch (err) {
    if (err.name !== "AbortError") { bubble("error", String(err.message || err)); history.pop(); }
    else history.push({role: "assistant", content: answer});
  } finally {
    out.parentElement.dataset.state = "done";
    busy = false; send.textContent = "Send"; controller = null;
  }
});
</script>
</body>
</html>
"""#
