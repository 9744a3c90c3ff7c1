#!/usr/bin/env python3
"""Checks the checkers: the renderer refuses what it does not implement, and k8s_policy.py
fails on broken manifests (each breakage below must make it exit 1).

  self_test.py REPO_ROOT RENDERED_DEV.yaml RENDERED_PROD.yaml
"""

import copy
import importlib.util
import io
import os
import sys
import tempfile
from contextlib import redirect_stdout

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import k8s_policy  # noqa: E402

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: i}]
      volumes: [{name: v, emptyDir: {}}]
"""
# kustomization text, extra files -> what the refusal must mention
REFUSED = [
    ("resources: [d.yaml]\ncommonLabels: {x: y}\n", {}, "unsupported keys"),
    ("resources: [d.yaml]\npatches: [{path: p.yaml, target: {kind: Deployment}}]\n", {}, "only `path:`"),
    ("resources: [d.yaml]\npatches: [{path: p.yaml}]\n",
     {"p.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  $patch: replace\n"},
     "directives"),
    ("resources: [d.yaml]\npatches: [{path: p.yaml}]\n",
     {"p.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n"
                "    spec:\n      volumes: [{name: v, persistentVolumeClaim: {claimName: x}}]\n"},
     "retainKeys"),
    ("resources: [d.yaml]\npatches: [{path: p.yaml}]\n",
     {"p.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: nope}\n"}, "matches 0"),
    ("resources: [w.yaml]\n", {"w.yaml": "apiVersion: x/v1\nkind: Widget\nmetadata: {name: w}\n"}, "kind Widget"),
]


def renderer(root):
    spec = importlib.util.spec_from_file_location("render", os.path.join(root, "scripts/render-kustomize.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def dep(docs, name):
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


def c0(docs, name):
    return dep(docs, name)["spec"]["template"]["spec"]["containers"][0]


def env(docs, name, var, value):
    for e in c0(docs, name)["env"]:
        if e["name"] == var:
            e.clear()
            e.update(name=var, value=value)
            return
    c0(docs, name)["env"].append({"name": var, "value": value})


# overlay, what breaks, how
BROKEN = [
    ("dev", "drain longer than the termination grace",
     lambda d: dep(d, "editor")["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=60)),
    ("dev", "a GPU in dev", lambda d: c0(d, "trainer")["resources"]["limits"].update({"nvidia.com/gpu": 1})),
    ("dev", "no liveness probe", lambda d: c0(d, "analyzer").pop("livenessProbe")),
    ("dev", "a probe on the wrong port", lambda d: c0(d, "editor")["readinessProbe"]["grpc"].update(port=9)),
    ("dev", "a variable no code reads", lambda d: env(d, "editor", "ARF_EDITOR_MODLE", "/models/x")),
    ("dev", "root", lambda d: dep(d, "gateway")["spec"]["template"]["spec"]["securityContext"].update(runAsNonRoot=False)),
    ("dev", "no cpu request", lambda d: c0(d, "gateway")["resources"]["requests"].pop("cpu")),
    ("dev", "a headless Service with a cluster IP",
     lambda d: next(x for x in d if x["metadata"]["name"] == "editor-headless")["spec"].pop("clusterIP")),
    ("dev", "another editor endpoint", lambda d: env(d, "gateway", "ARF_EDITOR_ENDPOINTS", "http://editor:50052")),
    ("prod", "no GPU for the editor", lambda d: c0(d, "editor")["resources"]["limits"].pop("nvidia.com/gpu")),
    ("prod", "one gateway", lambda d: dep(d, "gateway")["spec"].update(replicas=1)),
    ("prod", "probes on the TLS port", lambda d: c0(d, "trainer")["livenessProbe"]["grpc"].update(port=50053)),
    ("prod", "plaintext client of a TLS server",
     lambda d: env(d, "gateway", "ARF_TRAINER_ENDPOINT", "http://trainer.arf.svc.cluster.local:50053")),
]


def main(argv):
    root, rendered = argv[1], {"dev": argv[2], "prod": argv[3]}
    render = renderer(root)
    failures = 0
    for text, files, needle in REFUSED:
        with tempfile.TemporaryDirectory() as tmp:
            files = {"kustomization.yaml": text, "d.yaml": DEPLOYMENT, **files}
            for name, body in files.items():
                with open(os.path.join(tmp, name), "w") as f:
                    f.write(body)
            try:
                render.render(tmp)
                ok, why = False, "rendered"
            except render.RenderError as e:
                ok, why = needle in str(e), str(e)
        print(("ok   " if ok else "FAIL ") + f"renderer refuses ({needle})" + ("" if ok else f": {why}"))
        failures += not ok
    originals = {k: list(yaml.safe_load_all(open(v))) for k, v in rendered.items()}
    with tempfile.TemporaryDirectory() as tmp:
        for overlay, what, breakage in BROKEN:
            docs = copy.deepcopy(originals)
            breakage(docs[overlay])
            args = [root]
            for k, d in docs.items():
                path = os.path.join(tmp, f"{k}.yaml")
                with open(path, "w") as f:
                    yaml.safe_dump_all(d, f)
                args.append(f"{k}={path}")
            with redirect_stdout(io.StringIO()):
                rc = k8s_policy.main(["k8s_policy.py"] + args)
            print(("ok   " if rc == 1 else "FAIL ") + f"policy fails on {overlay}: {what}")
            failures += rc != 1
    print(f"--   self-test: {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
