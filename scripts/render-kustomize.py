#!/usr/bin/env python3
"""Renders a kustomization as `kustomize build` would, for the subset deploy/k8s uses:

  resources (files, or folders with a kustomization.yaml), namespace, images, replicas, and
  patches given by `path` as strategic-merge patches of the kinds below.

Anything else (another key, a patch `target`, a `$patch` directive, a kind not listed) stops it
with an error, so an overlay cannot silently use a feature rendered wrongly here. PyPI's
`kustomize` package is not kustomize, and CI has no kubectl; scripts/check-deploy.sh compares
this output with `kubectl kustomize` where kubectl exists.

  render-kustomize.py DIR [-o OUT.yaml]     (stdout without -o)
"""

import argparse
import copy
import os
import sys

import yaml

KINDS = {
    # kind: namespaced?
    "Namespace": False,
    "ConfigMap": True,
    "Service": True,
    "PersistentVolumeClaim": True,
    "Deployment": True,
    "PodDisruptionBudget": True,
    "ScaledObject": True,
    "Certificate": True,
}
# Strategic merge patches need the kind's schema (merge keys); these are the kinds it knows.
PATCHABLE = {"Deployment", "Service", "PersistentVolumeClaim", "ConfigMap", "PodDisruptionBudget"}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}

POD = ("spec", "template", "spec")
CONTAINER_LISTS = ("containers", "initContainers")
# Lists that Kubernetes merges by a key (patchStrategy merge), by where they sit. Every other
# list is atomic: the patch replaces it.
MERGE_KEYS = {}
for c in CONTAINER_LISTS:
    MERGE_KEYS[POD + (c,)] = "name"
    MERGE_KEYS[POD + (c, "env")] = "name"
    MERGE_KEYS[POD + (c, "ports")] = "containerPort"
    MERGE_KEYS[POD + (c, "volumeMounts")] = "mountPath"
MERGE_KEYS[POD + ("volumes",)] = "name"
MERGE_KEYS[POD + ("imagePullSecrets",)] = "name"
MERGE_KEYS[("spec", "ports")] = "port"  # a Service's
# Merged lists this renderer does not place: refuse them rather than replace them.
MERGED_ELSEWHERE = {
    "containers", "initContainers", "ephemeralContainers", "env", "ports", "volumeMounts",
    "volumes", "imagePullSecrets", "hostAliases", "topologySpreadConstraints", "volumeDevices",
    "finalizers", "ownerReferences", "resourceClaims", "schedulingGates",
}
# Fields with patchStrategy retainKeys (a union: the patch's fields replace the others).
RETAIN_KEYS = {("spec", "strategy"), POD + ("volumes", "[]")}


class RenderError(Exception):
    pass


def fail(msg):
    raise RenderError(msg)


def load_docs(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "metadata" not in d:
            fail(f"{path}: not a Kubernetes object: {str(d)[:80]}")
        if d["kind"] not in KINDS:
            fail(f"{path}: kind {d['kind']} is not one this renderer supports ({', '.join(KINDS)})")
    return docs


def ident(obj):
    m = obj["metadata"]
    return (obj["kind"], m.get("namespace"), m["name"])


def strategic_merge(orig, patch, path):
    """Merges `patch` into `orig` (both maps) as a strategic merge patch at `path`."""
    out = copy.deepcopy(orig)
    if path in RETAIN_KEYS:
        dropped = set(orig) - set(patch) - {"name"}
        if dropped and set(patch) - set(orig) - {"name"}:
            fail(f"{'.'.join(path)}: the patch changes a union field (retainKeys), unsupported")
    for key, value in patch.items():
        if isinstance(key, str) and key.startswith("$"):
            fail(f"{'.'.join(path + (key,))}: patch directives are unsupported")
        here = path + (key,)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = strategic_merge(out[key], value, here)
        elif isinstance(value, list):
            out[key] = merge_list(out.get(key), value, here)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_list(orig, patch, path):
    merge_key = MERGE_KEYS.get(tuple(p for p in path if p != "[]"))
    if merge_key is None:
        if path[-1] in MERGED_ELSEWHERE:
            fail(f"{'.'.join(path)}: a merged list this renderer cannot place")
        return copy.deepcopy(patch)
    # As kustomize (kyaml) orders them: the patch's items first, in its order (merged with the
    # original item of the same key), then the original items it did not name. Order matters:
    # $(VAR) in an env value sees only the variables listed before it.
    orig = orig or []
    out = []
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            fail(f"{'.'.join(path)}: every item needs its merge key {merge_key}")
        same = [o for o in orig if o.get(merge_key) == item[merge_key]]
        out.append(strategic_merge(same[0], item, path + ("[]",)) if same else copy.deepcopy(item))
    named = {item[merge_key] for item in patch}
    out.extend(copy.deepcopy(o) for o in orig if o.get(merge_key) not in named)
    return out


def apply_patch(resources, patch, source):
    kind, ns, name = ident(patch)
    if kind not in PATCHABLE:
        fail(f"{source}: strategic merge patches of {kind} are unsupported")
    hits = [i for i, r in enumerate(resources)
            if ident(r)[0] == kind and ident(r)[2] == name and (ns is None or ident(r)[1] == ns)]
    if len(hits) != 1:
        fail(f"{source}: the patch of {kind}/{name} matches {len(hits)} resources, not one")
    i = hits[0]
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
    body["metadata"] = {k: v for k, v in patch["metadata"].items() if k not in ("name", "namespace")}
    resources[i] = strategic_merge(resources[i], body, ())


def set_namespace(resources, namespace):
    for r in resources:
        if KINDS[r["kind"]]:
            r["metadata"]["namespace"] = namespace


def split_image(image):
    """name, and what follows it (":tag", "@digest" or "")."""
    at = image.find("@")
    if at >= 0:
        return image[:at], image[at:]
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def set_images(resources, images):
    for entry in images:
        unknown = set(entry) - {"name", "newName", "newTag", "digest"}
        if unknown or "name" not in entry:
            fail(f"images: unsupported entry {entry}")
        for r in resources:
            if r["kind"] != "Deployment":
                continue
            pod = r["spec"]["template"]["spec"]
            for c in [c for lst in CONTAINER_LISTS for c in pod.get(lst, [])]:
                name, rest = split_image(c["image"])
                if name != entry["name"]:
                    continue
                if "digest" in entry:
                    rest = "@" + entry["digest"]
                elif "newTag" in entry:
                    rest = ":" + str(entry["newTag"])
                c["image"] = entry.get("newName", name) + rest


def set_replicas(resources, replicas):
    for entry in replicas:
        if set(entry) != {"name", "count"}:
            fail(f"replicas: unsupported entry {entry}")
        hits = [r for r in resources if r["kind"] == "Deployment" and r["metadata"]["name"] == entry["name"]]
        if not hits:
            fail(f"replicas: no Deployment {entry['name']}")
        for r in hits:
            r["spec"]["replicas"] = entry["count"]


def render(directory):
    path = os.path.join(directory, "kustomization.yaml")
    if not os.path.isfile(path):
        fail(f"{directory}: no kustomization.yaml (other names are unsupported)")
    with open(path) as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        fail(f"{path}: unsupported keys {sorted(unknown)}")
    if k.get("kind", "Kustomization") != "Kustomization":
        fail(f"{path}: kind {k.get('kind')} is unsupported")
    resources = []
    for entry in k.get("resources", []):
        target = os.path.normpath(os.path.join(directory, entry))
        resources.extend(render(target) if os.path.isdir(target) else load_docs(target))
    seen = set()
    for r in resources:
        if ident(r) in seen:
            fail(f"{path}: {ident(r)} is defined twice")
        seen.add(ident(r))
    # The order kustomize's built-in transformers run in.
    for entry in k.get("patches", []):
        if set(entry) != {"path"}:
            fail(f"{path}: patches: only `path:` entries are supported, not {sorted(entry)}")
        source = os.path.join(directory, entry["path"])
        for patch in load_docs(source):
            apply_patch(resources, patch, source)
    if "namespace" in k:
        set_namespace(resources, k["namespace"])
    set_replicas(resources, k.get("replicas", []))
    set_images(resources, k.get("images", []))
    return sorted(resources, key=legacy_order)


# kustomize's default ("legacy") output order: kinds that others depend on first.
ORDER_FIRST = ["Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition",
               "ServiceAccount", "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding",
               "ClusterRoleBinding", "ConfigMap", "Secret", "Endpoints", "Service", "LimitRange",
               "PriorityClass", "PersistentVolume", "PersistentVolumeClaim", "Deployment",
               "StatefulSet", "CronJob", "PodDisruptionBudget"]


def legacy_order(r):
    kind, ns, name = ident(r)
    rank = ORDER_FIRST.index(kind) if kind in ORDER_FIRST else len(ORDER_FIRST)
    return (rank, kind, ns or "", name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("-o", "--output")
    args = parser.parse_args()
    try:
        resources = render(args.directory)
    except (RenderError, OSError, yaml.YAMLError) as e:
        print(f"render-kustomize: {e}", file=sys.stderr)
        return 1
    text = yaml.safe_dump_all(resources, sort_keys=False, default_flow_style=False)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
