#!/usr/bin/env python3
"""Finds import circles among each crate's own files: file A names something of file B
(`use crate::b::..`, `super::b::..`, or a path written inline) and B, by some road, names
something of A. Test modules (`#[cfg(test)] mod tests { .. }`) are left out: they sit in the
file they test. Exit status 1 when a circle is found, with the files of each one."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = ["common", "proto", "tiny-llama", "analyzer-svc", "editor-svc", "trainer-svc", "gateway", "arf"]


def module_files(src: Path) -> dict:
    """Module path (tuple) -> file, for every .rs file under src."""
    mods = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts in (["lib"], ["main"]):
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        mods[tuple(parts)] = f
    return mods


def strip_tests(text: str) -> str:
    """The text without `#[cfg(test)] mod x { .. }` blocks (brace-matched)."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def expand_use_groups(text: str) -> list:
    """Every path a `use` names, with its groups expanded: `use a::{b, c::d}` -> a::b, a::c::d."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(expand(m.group(1).replace(" ", "").replace("\n", "")))
    return paths


def expand(tree: str) -> list:
    brace = tree.find("{")
    if brace < 0:
        return [tree]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    items.append(cur)
    return [p for item in items if item for p in expand(prefix + item)]


def target(mods: dict, here: tuple, path: str):
    """The module file a path lands in (the longest module prefix), or None outside the crate."""
    parts = [p for p in path.split("::") if p]
    if not parts:
        return None
    if parts[0] == "crate":
        base, rest = [], parts[1:]
    elif parts[0] in ("super", "self"):
        base = list(here)
        rest = parts
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    else:
        return None
    best = None
    for n in range(len(rest) + 1):
        key = tuple(base + rest[:n])
        if key in mods:
            best = key
    return best


def main() -> int:
    circles = []
    for crate in CRATES:
        src = ROOT / crate / "src"
        if not src.is_dir():
            continue
        mods = module_files(src)
        # A file's own module is `here` for `super`; a non-mod.rs file's super is its parent.
        edges = {m: set() for m in mods}
        for here, f in mods.items():
            text = strip_comments(strip_tests(f.read_text()))
            paths = expand_use_groups(text)
            paths += re.findall(r"\b((?:crate|super)(?:::\w+)+)", text)
            for p in paths:
                t = target(mods, here, p)
                if t is not None and t != here:
                    edges[here].add(t)
        # Strongly connected components (Tarjan).
        index, low, stack, on, out = {}, {}, [], set(), []

        def visit(v):
            index[v] = low[v] = len(index)
            stack.append(v)
            on.add(v)
            for w in edges[v]:
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)

        sys.setrecursionlimit(10000)
        for v in mods:
            if v not in index:
                visit(v)
        for comp in out:
            files = sorted(str(mods[m].relative_to(ROOT)) for m in comp)
            circles.append(files)
    for files in circles:
        print("import circle: " + " <-> ".join(files))
    if circles:
        return 1
    print("no import circles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
