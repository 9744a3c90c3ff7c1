#!/usr/bin/env python3
"""Collects model-written summaries from ARF runs' stores, for hand labelling.

usage: extract.py STORE.sqlite3 [STORE.sqlite3 ...] > candidates.jsonl

Reads every run in each store (the embedded SQLite file under a data folder, `arf.sqlite3`):
the held-out summaries Evaluate stored for the base model and the two students. Prints one JSON
object per distinct summary: {id, model, run, summary}; no conversation text (the TweetSumm
files stay in ../shared; analyzer-eval joins them by id).
"""
import json
import sqlite3
import sys

MODELS = ("base", "unrevised", "student")


def main() -> None:
    seen = set()
    for path in sys.argv[1:]:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        for run_id, cid, evaluation in db.execute(
            "SELECT run_id, conversation_id, evaluation FROM items WHERE evaluation IS NOT NULL"
        ):
            e = json.loads(evaluation)
            for model in MODELS:
                summary = (e.get(model) or {}).get("summary")
                if not summary or (cid, summary.strip()) in seen:
                    continue
                seen.add((cid, summary.strip()))
                print(json.dumps({"id": cid, "model": model, "run": run_id, "summary": summary}))


if __name__ == "__main__":
    main()
