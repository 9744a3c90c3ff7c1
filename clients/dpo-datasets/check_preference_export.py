"""Loads `arf export --format dpo` and `--format openai-preference` files with Hugging Face
`datasets`' own JSON loader (what TRL's DPOTrainer is given) and checks every row's fields.

usage: check_preference_export.py DPO_JSONL OPENAI_PREFERENCE_JSONL EXPECTED_ROWS
Prints "ok" last when every check holds; exits non-zero with the first that does not.
"""

import sys

from datasets import load_dataset


def check_messages(messages, roles, where):
    got = [m["role"] for m in messages]
    assert got == roles, f"{where}: roles {got}, expected {roles}"
    for m in messages:
        assert isinstance(m["content"], str) and m["content"].strip(), f"{where}: empty content"


def main():
    dpo_path, openai_path, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])

    dpo = load_dataset("json", data_files=dpo_path, split="train")
    assert len(dpo) == expected, f"dpo: {len(dpo)} rows, expected {expected}"
    for column in ("prompt", "chosen", "rejected"):
        assert column in dpo.column_names, f"dpo: no {column} column: {dpo.column_names}"
    for i, row in enumerate(dpo):
        where = f"dpo row {i}"
        check_messages(row["prompt"], ["system", "user"], where)
        check_messages(row["chosen"], ["assistant"], where)
        check_messages(row["rejected"], ["assistant"], where)
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"], f"{where}: chosen is rejected"

    openai = load_dataset("json", data_files=openai_path, split="train")
    assert len(openai) == expected, f"openai: {len(openai)} rows, expected {expected}"
    for i, row in enumerate(openai):
        where = f"openai-preference row {i}"
        check_messages(row["input"]["messages"], ["system", "user"], where)
        check_messages(row["preferred_output"], ["assistant"], where)
        check_messages(row["non_preferred_output"], ["assistant"], where)
        # The same pairs in the same order, in both layouts.
        assert row["preferred_output"] == dpo[i]["chosen"], f"{where}: not dpo row {i}'s chosen"
        assert row["non_preferred_output"] == dpo[i]["rejected"], f"{where}: not dpo row {i}'s rejected"
    print("ok")


if __name__ == "__main__":
    main()
