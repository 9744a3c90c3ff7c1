#!/usr/bin/env python3
"""Builds two analyzer benchmarks for the speaker_attribution detector from a TweetSumm file with
injected errors (`teacher_train.jsonl`, `analyzer_bench_dev.jsonl`):

- OUT/NAME_partial.jsonl: every summary whose parties were all swapped ("swap roles"), with only
  its first party word swapped back, labelled speaker_attribution. This is what a span edit that
  mends the first finding leaves behind; the re-check must still see the rest.
- OUT/NAME_refs.jsonl: each conversation's first human reference, labelled clean: what the
  detector must not flag.

Score them with `analyzer-eval OUT/NAME_partial.jsonl` and `analyzer-eval OUT/NAME_refs.jsonl`.

    scripts/speaker-partial-fixes.py ../shared/data/tweetsumm/teacher_train.jsonl /tmp/attr
"""
import json
import os
import re
import sys

PARTY = re.compile(r"\b(agents?|customers?|clients?|representatives?)\b", re.I)


def swapped(word):
    lower = word.lower()
    other = "agent" if lower.startswith(("customer", "client")) else "customer"
    other += "s" if lower.endswith("s") else ""
    return other.capitalize() if word[0].isupper() else other


def main(path, out):
    name = os.path.basename(path).removesuffix(".jsonl")
    rows = [json.loads(line) for line in open(path)]
    partial, refs = [], []
    for r in rows:
        m = PARTY.search(r["summary"])
        if "swap roles" in r.get("injections", []) and m and len(PARTY.findall(r["summary"])) >= 2:
            s = r["summary"]
            mended = s[: m.start()] + swapped(m.group()) + s[m.end():]
            partial.append(dict(r, summary=mended, labels=["speaker_attribution"]))
        for ref in r["references"][:1]:
            refs.append(dict(r, summary=ref, labels=[]))
    os.makedirs(out, exist_ok=True)
    for suffix, items in [("partial", partial), ("refs", refs)]:
        with open(os.path.join(out, f"{name}_{suffix}.jsonl"), "w") as f:
            f.writelines(json.dumps(x) + "\n" for x in items)
    print(f"{name}: {len(partial)} partly mended, {len(refs)} references")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
