#!/usr/bin/env python3
"""Checks of deploy/docker/*.Dockerfile that hadolint cannot make: each builds the right crate
and binary as the issue asks, runs it as a numeric non-root user on the code's port, and the
gateway's image has no inference engine (from Cargo.lock: nothing of mistral.rs or candle).

  docker_policy.py REPO_ROOT
"""

import os
import re
import sys
import tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import code_facts  # noqa: E402

# Dockerfile -> (crate, which is also the binary's name; whether it has a CUDA image too)
IMAGES = {
    "analyzer.Dockerfile": ("analyzer-svc", False),
    "editor.Dockerfile": ("editor-svc", True),
    "trainer.Dockerfile": ("trainer-svc", True),
    "gateway.Dockerfile": ("gateway", False),
}
ENGINES = ("mistralrs", "candle-core", "candle-nn", "cudarc")


def instructions(path):
    """(instruction, arguments) per instruction, continuation lines joined, comments dropped."""
    text = open(path).read()
    out = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return text, out


def stages(instrs):
    """Stage name (or index) -> (base image, its instructions)."""
    result, current = {}, None
    for word, rest in instrs:
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            current = m.group(2) or str(len(result))
            result[current] = (m.group(1), [])
        elif current is not None:
            result[current][1].append((word, rest))
    return result


def engine_free(root, crate):
    with open(os.path.join(root, "Cargo.lock"), "rb") as f:
        lock = tomllib.load(f)
    deps = {}
    for p in lock["package"]:
        deps.setdefault(p["name"], set()).update(d.split()[0] for d in p.get("dependencies", []))
    # Cargo.lock lists a workspace member's dev-dependencies beside its dependencies; an image
    # holds only the latter, so a member's edges come from its own Cargo.toml.
    with open(os.path.join(root, "Cargo.toml"), "rb") as f:
        members = tomllib.load(f)["workspace"]["members"]
    for member in members:
        with open(os.path.join(root, member, "Cargo.toml"), "rb") as f:
            manifest = tomllib.load(f)
        shipped = set(manifest.get("dependencies", {})) | set(manifest.get("build-dependencies", {}))
        deps[manifest["package"]["name"]] = shipped
    seen, todo = set(), [crate]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(deps.get(n, ()))
    return sorted(n for n in seen if n in ENGINES)


def main(argv):
    root = argv[1]
    folder = os.path.join(root, "deploy/docker")
    failures = 0

    def check(cond, what, why=""):
        nonlocal failures
        print(("ok   " if cond else "FAIL ") + what + ("" if cond or not why else f": {why}"))
        failures += not cond
        return cond

    ignores = {}
    for name, (crate, cuda) in IMAGES.items():
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            check(False, f"{name} exists")
            continue
        text, instrs = instructions(path)
        service = crate.removesuffix("-svc")
        check(text.startswith("# syntax=docker/dockerfile:1"), f"{name}: BuildKit syntax line (cache mounts)")
        ignore = path + ".dockerignore"
        if check(os.path.exists(ignore), f"{name}: {os.path.basename(ignore)} beside it"):
            ignores[name] = open(ignore).read()
            lines = {l.strip() for l in ignores[name].splitlines()}
            check({"target", ".git"} <= lines, f"{name}: its .dockerignore leaves out target and .git")
        check(os.path.exists(os.path.join(root, crate, "src/main.rs")), f"{name}: {crate} has a binary {crate}")
        st = stages(instrs)
        want = f"cargo build --release --locked -p {crate} --bin {crate}"
        for stage, (_, body) in st.items():
            for run in [rest for w, rest in body if w == "RUN" and "cargo build" in rest]:
                flat = re.sub(r"\s+", " ", run).replace("--features cuda ", "")
                check(want in flat, f"{name} [{stage}]: `{want}`", run)
        finals = ["cpu", "cuda"] if cuda else [list(st)[-1]]
        check(list(st)[-1] == finals[0], f"{name}: the default (last) stage is the CPU image")
        for final in finals:
            base, body = st.get(final, ("", []))
            users = [rest for w, rest in body if w == "USER"]
            check(bool(users) and re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]) is not None,
                  f"{name} [{final}]: numeric non-root USER {users[-1] if users else None}")
            port = code_facts.default_port(root, service)
            check([rest for w, rest in body if w == "EXPOSE"] == [str(port)], f"{name} [{final}]: EXPOSE {port}")
            check([rest for w, rest in body if w == "ENTRYPOINT"] == [f'["/usr/local/bin/{crate}"]'],
                  f"{name} [{final}]: ENTRYPOINT the binary")
            is_cuda = "nvidia/cuda" in base
            check(is_cuda == (final == "cuda"), f"{name} [{final}]: runs on {base}")
            if is_cuda:
                check(base.endswith("-runtime-ubuntu24.04") or "-runtime-" in base, f"{name} [cuda]: a -runtime image")
        if cuda:
            base, body = st.get("build-cuda", ("", []))
            check("-devel-" in base, f"{name}: the CUDA build runs on a -devel image (nvcc): {base}")
            check(any("--features cuda" in rest for w, rest in body if w == "RUN"),
                  f"{name}: the CUDA build uses the crate's cuda feature")
            with open(os.path.join(root, crate, "Cargo.toml"), "rb") as f:
                features = tomllib.load(f).get("features", {})
            check("cuda" in features, f"{name}: {crate}/Cargo.toml has a cuda feature ({features.get('cuda')})")
        else:
            check("nvidia/cuda" not in text, f"{name}: no CUDA image")
    check(len(set(ignores.values())) == 1, "the .dockerignore files are identical")
    engines = engine_free(root, "gateway")
    check(not engines, "gateway: no inference engine in its dependency closure (Cargo.lock)", ", ".join(engines))
    print(f"--   dockerfiles: {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
