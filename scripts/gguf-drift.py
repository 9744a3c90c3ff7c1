#!/usr/bin/env python3
"""How far a quantized GGUF export drifts from the f16 one: greedy summaries of held-out
TweetSumm conversations from llama.cpp's llama-server on each file, with the prompt the student
is trained and evaluated with, scored by ROUGE-L against the first file's summaries (drift) and
against the human references (quality).

  python3 scripts/gguf-drift.py student-f16.gguf student-q8_0.gguf student-q4_k.gguf \
      [--data ../shared/data/tweetsumm/valid.jsonl] [--n 30] [--max-tokens 96]

llama-server comes from scripts/build-llama-bench.sh (built once, cached). Python's standard
library only.
"""

import argparse
import json
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# common/src/dataset/prompt.rs: SUMMARIZE_SYSTEM_PROMPT and summarize_user_prompt.
SYSTEM = (
    "You summarize customer-service conversations. Write a short, factual summary in the third "
    "person: the customer's issue, what the agent did or said, and the outcome. Use only facts "
    "stated in the conversation and leave out personal data such as emails, phone numbers and "
    "account numbers."
)


def user_prompt(row):
    lines = [f"Channel: {row['channel']}", ""]
    lines += [f"{t['role']}: {t['text'].strip()}" for t in row["turns"]]
    return "\n".join(lines) + "\n\nSummarize this conversation."


def words(text):
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_l(a, b):
    """ROUGE-L F1 of two texts' lowercase word sequences (longest common subsequence)."""
    x, y = words(a), words(b)
    if not x or not y:
        return 0.0
    prev = [0] * (len(y) + 1)
    for xi in x:
        cur = [0]
        for j, yj in enumerate(y):
            cur.append(prev[j] + 1 if xi == yj else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(x), lcs / len(y)
    return 2 * p * r / (p + r)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summaries(server_bin, gguf, rows, max_tokens):
    port = free_port()
    server = subprocess.Popen(
        [server_bin, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-c", "4096",
         "-np", "1", "-t", "2", "--alias", "m"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(1200):
            try:
                with urllib.request.urlopen(base + "/health") as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        out = []
        for row in rows:
            body = json.dumps({
                "model": "m", "temperature": 0.0, "max_tokens": max_tokens,
                "messages": [{"role": "system", "content": SYSTEM},
                             {"role": "user", "content": user_prompt(row)}],
            }).encode()
            request = urllib.request.Request(base + "/v1/chat/completions", body,
                                             {"Content-Type": "application/json"})
            with urllib.request.urlopen(request) as r:
                out.append(json.load(r)["choices"][0]["message"]["content"])
        return out
    finally:
        server.kill()
        server.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", help="GGUF files; the first is the reference (f16)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/tweetsumm/valid.jsonl"))
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--max-tokens", type=int, default=96)
    a = ap.parse_args()
    bin_dir = subprocess.run(["bash", str(ROOT / "scripts/build-llama-bench.sh")],
                             check=True, capture_output=True, text=True).stdout.split()[-1]
    rows = [json.loads(l) for l in open(a.data) if l.strip()][: a.n]
    outputs = {f: summaries(str(Path(bin_dir) / "llama-server"), f, rows, a.max_tokens)
               for f in a.files}
    first = outputs[a.files[0]]
    print(f"{len(rows)} conversations of {a.data}, greedy, at most {a.max_tokens} tokens\n")
    print("| file | size (MB) | same text as the first | ROUGE-L vs the first | ROUGE-L vs references |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for f in a.files:
        got = outputs[f]
        same = sum(g == r for g, r in zip(got, first))
        drift = sum(rouge_l(g, r) for g, r in zip(got, first)) / len(rows)
        quality = sum(max(rouge_l(g, ref) for ref in row.get("references") or [""])
                      for g, row in zip(got, rows)) / len(rows)
        size = Path(f).stat().st_size / 1e6
        print(f"| {Path(f).name} | {size:.0f} | {same}/{len(rows)} | {100 * drift:.1f} | {100 * quality:.1f} |")


if __name__ == "__main__":
    main()
