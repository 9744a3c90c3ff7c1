#!/usr/bin/env python3
"""Whether two renderings of one overlay are the same objects, in the same order.

  same_render.py OURS.yaml THEIRS.yaml      (scripts/render-kustomize.py vs kubectl kustomize)
"""

import difflib
import sys

import yaml


def main(argv):
    ours, theirs = ([d for d in yaml.safe_load_all(open(p)) if d] for p in argv[1:3])
    if ours == theirs:
        print(f"ok   {argv[1]}: the same {len(ours)} objects as kubectl kustomize")
        return 0
    a = yaml.safe_dump_all(ours, sort_keys=True).splitlines()
    b = yaml.safe_dump_all(theirs, sort_keys=True).splitlines()
    print(f"FAIL {argv[1]}: differs from kubectl kustomize")
    print("\n".join(list(difflib.unified_diff(a, b, "render-kustomize.py", "kubectl kustomize", lineterm=""))[:80]))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
