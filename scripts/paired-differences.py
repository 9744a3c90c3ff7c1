#!/usr/bin/env python3
"""Paired differences between two models of a finished run, from the gateway's store: ROUGE-L
and reference NLL with a paired bootstrap 95% CI (10,000 resamples, seed 1, as the report's),
and per error category the exact McNemar p. For comparisons the report does not print (the ARF
student against the filter-only one). `--pooled a,b,c` adds one McNemar test over "any of these
categories" (a summary flagged with at least one of them), named before looking at the results.

    scripts/paired-differences.py /tmp/bench2/arf.sqlite3 student filter_only
    scripts/paired-differences.py DB student unrevised --pooled hallucinated_fact,unsupported_action,speaker_attribution,polarity,pii_exposure
"""
import json
import random
import sqlite3
import sys
from math import comb


def bootstrap(d, n=10000, seed=1):
    rng = random.Random(seed)
    m = len(d)
    means = sorted(sum(rng.choice(d) for _ in range(m)) / m for _ in range(n))
    return sum(d) / m, means[int(0.025 * n)], means[int(0.975 * n)]


def mcnemar(only_a, only_b):
    n, k = only_a + only_b, min(only_a, only_b)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0


def main(path, a, b, pooled=None):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    items = [json.loads(e) for (e,) in db.execute("SELECT evaluation FROM items WHERE evaluation IS NOT NULL")]
    both = [e for e in items if a in e and b in e and not e[a].get("failed") and not e[b].get("failed")]
    for name, value in [("rouge_l (points)", lambda s: 100 * s["rouge"]["rougeL"]),
                        ("reference_nll", lambda s: s["reference_nll"])]:
        mean, low, high = bootstrap([value(e[a]) - value(e[b]) for e in both])
        print(f"{a} minus {b}, {name}, {len(both)} conversations: {mean:+.4f} (95% CI {low:+.4f} to {high:+.4f})")
    categories = sorted({c for e in both for m in (a, b) for c in e[m]["categories"]})
    for c in categories:
        only_a = sum(1 for e in both if c in e[a]["categories"] and c not in e[b]["categories"])
        only_b = sum(1 for e in both if c not in e[a]["categories"] and c in e[b]["categories"])
        print(f"  {c}: {only_a - only_b:+d} points ({only_a} only {a}, {only_b} only {b}), McNemar p {mcnemar(only_a, only_b):.3f}")
    if pooled:
        flagged = lambda e, m: any(c in e[m]["categories"] for c in pooled)
        only_a = sum(1 for e in both if flagged(e, a) and not flagged(e, b))
        only_b = sum(1 for e in both if not flagged(e, a) and flagged(e, b))
        rate = lambda m: 100 * sum(flagged(e, m) for e in both) / len(both)
        print(f"  any of {','.join(pooled)}: {a} {rate(a):.0f}%, {b} {rate(b):.0f}%; "
              f"{only_a - only_b:+d} points ({only_a} only {a}, {only_b} only {b}), McNemar p {mcnemar(only_a, only_b):.3f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    pooled = None
    if "--pooled" in args:
        i = args.index("--pooled")
        pooled = args[i + 1].split(",")
        del args[i:i + 2]
    main(*args[:3], pooled=pooled)
