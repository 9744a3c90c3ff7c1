#!/usr/bin/env python3
"""Collects model-written summaries from ARF runs' stores, for hand labelling.

usage: extract.py STORE.sqlite3 [STORE.sqlite3 ...] > candidates.jsonl

Reads every run in each store (the embedded SQLite file under a data folder, `arf.sqlite3`):
the held-out summaries Evaluate stored for the base model and the two students, and the teacher's
summaries when the teacher was a model (rows that came without a summary: the Generate stage
wrote them). Prints one JSON object per summary: {id, model, run, summary}; no conversation
text (the TweetSumm files stay in ../shared; analyzer-eval joins them by id).
"""
import json
import sqlite3
import sys


def main() -> None:
    seen = set()
    for path in sys.argv[1:]:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        for run_id, cid, split, teacher, evaluation, generated in db.execute(
            "SELECT i.run_id, i.conversation_id, i.split, i.teacher_summary, i.evaluation, "
            "r.display_name LIKE '%smollm2%' FROM items i JOIN runs r ON r.id = i.run_id"
        ):
            rows = []
            if evaluation:
                e = json.loads(evaluation)
                for model in ("base", "unrevised", "student"):
                    side = e.get(model)
                    if side and side.get("summary"):
                        rows.append((model, side["summary"]))
                if generated and e.get("teacher", {}).get("summary"):
                    rows.append(("teacher-zero-shot", e["teacher"]["summary"]))
            elif generated and teacher:
                rows.append(("teacher-zero-shot", teacher))
            for model, summary in rows:
                key = (cid, summary.strip())
                if key in seen:
                    continue
                seen.add(key)
                print(json.dumps({"id": cid, "model": model, "run": run_id, "summary": summary}))


if __name__ == "__main__":
    main()
