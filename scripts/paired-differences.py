#!/usr/bin/env python3
"""Paired differences between two models of a finished run, from the gateway's store: ROUGE-L
and reference NLL with a paired bootstrap 95% CI (10,000 resamples, seed 1, as the report's),
and per error category the exact McNemar p. For comparisons the report does not print (the ARF
student against the filter-only one). `--pooled a,b,c` adds one McNemar test over "any of these
categories" (a summary flagged with at least one of them), named before looking at the results.

Where a category was found by more than one rule, each rule's rate is compared too (the store's
`rules`, `category/detector`). Stores older than that field: `--rules-from-analyzer CATEGORY`
analyzes both models' summaries again with the rule detectors (`analyzer-eval --show`, built by
cargo) and takes that category's rules from its findings.

`--baseline-db OTHER` reads the second model from another run's store (same held-out
conversations, matched by id): for an arm one run trained and another did not, when both runs'
students are the same where their data are (check it with a model both runs have, whose
differences must then all be zero).

    scripts/paired-differences.py /tmp/bench2/arf.sqlite3 student filter_only
    scripts/paired-differences.py DB student unrevised --pooled hallucinated_fact,unsupported_action,speaker_attribution,polarity,pii_exposure
    scripts/paired-differences.py /tmp/bench5/arf.sqlite3 student filter_only --baseline-db /tmp/bench4/arf.sqlite3
    scripts/paired-differences.py DB student unrevised --rules-from-analyzer speaker_attribution
"""
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
from math import comb

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tweetsumm")


def bootstrap(d, n=10000, seed=1):
    rng = random.Random(seed)
    m = len(d)
    means = sorted(sum(rng.choice(d) for _ in range(m)) / m for _ in range(n))
    return sum(d) / m, means[int(0.025 * n)], means[int(0.975 * n)]


def mcnemar(only_a, only_b):
    n, k = only_a + only_b, min(only_a, only_b)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0


def evaluations(path):
    """Each held-out conversation's evaluation (every model's summary and scores), by id."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    return {c: json.loads(e) for (c, e) in
            db.execute("SELECT conversation_id, evaluation FROM items WHERE evaluation IS NOT NULL")}


def reanalyzed_rules(summaries, category):
    """`category/detector` of each of `category`'s findings in each summary ({id: text}), from the
    rule detectors run again over the summaries (the conversations from the shared TweetSumm)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for cid, text in summaries.items():
            f.write(json.dumps({"id": cid, "summary": text, "labels": []}) + "\n")
    conversations = [a for name in ("teacher_train.jsonl", "analyzer_bench_dev.jsonl", "train.jsonl",
                                    "valid.jsonl") for a in ("--conversations", os.path.join(DATA, name))]
    run = subprocess.run(["cargo", "run", "-q", "-p", "analyzer-svc",
                          "--bin", "analyzer-eval", "--", f.name, "--show", category, *conversations],
                         capture_output=True, text=True, check=True)
    os.unlink(f.name)
    rules, current = {}, None
    for line in run.stderr.splitlines():
        m = re.match(r"--- FALSE ALARM \S+ .* id=(\S+)$", line)
        if m:
            current = rules.setdefault(m.group(1), set())
            continue
        m = re.match(r"    finding: `.*` \(([\w.]+): ", line)
        if m and current is not None:
            current.add(f"{category}/{m.group(1)}")
    return rules


def main(path, a, b, pooled=None, baseline_db=None, reanalyze=None):
    first = evaluations(path)
    second = evaluations(baseline_db) if baseline_db else first
    # (a's scores, b's scores) per conversation both stores evaluated, neither failed.
    ids = [c for c in first
           if c in second and first[c].get(a) and second[c].get(b)
           and not first[c][a].get("failed") and not second[c][b].get("failed")]
    pairs = [(first[c][a], second[c][b]) for c in ids]
    if not pairs:
        sys.exit(f"no held-out conversation has both a {a} and a {b} summary in {path}")
    for name, value in [("rouge_l (points)", lambda s: 100 * s["rouge"]["rougeL"]),
                        ("reference_nll", lambda s: s["reference_nll"])]:
        mean, low, high = bootstrap([value(x) - value(y) for x, y in pairs])
        print(f"{a} minus {b}, {name}, {len(pairs)} conversations: {mean:+.4f} (95% CI {low:+.4f} to {high:+.4f})")
    identical = sum(1 for x, y in pairs if x.get("summary") == y.get("summary"))
    print(f"  identical summaries: {identical} of {len(pairs)}")
    categories = sorted({c for x, y in pairs for c in x["categories"] + y["categories"]})
    for c in categories:
        only_a, only_b, points = discordant(pairs, lambda s: c in s["categories"])
        print(f"  {c}: {points:+.1f} points ({only_a} only {a}, {only_b} only {b}), McNemar p {mcnemar(only_a, only_b):.3f}")
    if reanalyze:
        for i in (0, 1):
            found = reanalyzed_rules({c: p[i]["summary"] for c, p in zip(ids, pairs)}, reanalyze)
            for c, p in zip(ids, pairs):
                p[i]["rules"] = sorted(found.get(c, ()))
    rules = sorted({r for x, y in pairs for r in x.get("rules", []) + y.get("rules", [])})
    for r in rules:
        if sum(1 for o in rules if o.split("/")[0] == r.split("/")[0]) < 2:
            continue
        flagged = lambda s: r in s.get("rules", [])
        only_a, only_b, points = discordant(pairs, flagged)
        count = lambda i: sum(flagged(p[i]) for p in pairs)
        print(f"  {r}: {a} {count(0)}, {b} {count(1)}; {points:+.1f} points ({only_a} only {a}, {only_b} only {b}), "
              f"McNemar p {mcnemar(only_a, only_b):.3f}")
    if pooled:
        flagged = lambda s: any(c in s["categories"] for c in pooled)
        only_a, only_b, points = discordant(pairs, flagged)
        rate = lambda i: 100 * sum(flagged(p[i]) for p in pairs) / len(pairs)
        print(f"  any of {','.join(pooled)}: {a} {rate(0):.1f}%, {b} {rate(1):.1f}%; "
              f"{points:+.1f} points ({only_a} only {a}, {only_b} only {b}), McNemar p {mcnemar(only_a, only_b):.3f}")


def discordant(pairs, flagged):
    """Pairs flagged on the first side only, on the second only, and the difference in points."""
    only_a = sum(1 for x, y in pairs if flagged(x) and not flagged(y))
    only_b = sum(1 for x, y in pairs if not flagged(x) and flagged(y))
    return only_a, only_b, 100 * (only_a - only_b) / len(pairs)


def take(args, name):
    """The value after `name` in `args` (both removed), or None."""
    if name not in args:
        return None
    i = args.index(name)
    value = args[i + 1]
    del args[i:i + 2]
    return value

if __name__ == "__main__":
    args = sys.argv[1:]
    pooled = take(args, "--pooled")
    baseline_db = take(args, "--baseline-db")
    reanalyze = take(args, "--rules-from-analyzer")
    main(*args[:3], pooled=pooled and pooled.split(","), baseline_db=baseline_db, reanalyze=reanalyze)
