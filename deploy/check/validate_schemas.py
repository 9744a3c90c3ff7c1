#!/usr/bin/env python3
"""Validates rendered manifests against the Kubernetes schema (kubernetes-validate, strict:
unknown fields fail) and the custom resources against crd_schemas.py.

  validate_schemas.py K8S_VERSION FILE...

kubernetes-validate only warns on a kind it has no schema for; here that is an error, except for
exactly the custom resources crd_schemas.py describes, which are checked by those schemas.
"""

import os
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crd_schemas import SCHEMAS  # noqa: E402


def k8s_definitions(version):
    """The Kubernetes definitions kubernetes-validate ships for `version` (strict flavour)."""
    minor = kv.major_minor(version)
    shipped = [v for v in kv.all_versions() if kv.major_minor(v) <= minor][-1]
    return kv.schema_contents(f"kubernetes-json-schema/v{shipped}-local-strict/_definitions.json", version)


def check_custom(doc, schema, registry):
    errors = sorted(jsonschema.Draft202012Validator(schema, registry=registry).iter_errors(doc),
                    key=lambda e: list(e.path))
    return ["%s: %s" % (".".join(str(p) for p in e.path) or "(top)", e.message) for e in errors]


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    version, files = argv[1], argv[2:]
    registry = Resource.from_contents(k8s_definitions(version)) @ Registry()
    failures = 0
    for path in files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            what = f"{os.path.basename(path)}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            custom = SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
            try:
                shipped = kv.validate(doc, version, strict=True)
                if custom:
                    # kubernetes-validate learnt this kind: drop the local schema.
                    print(f"FAIL {what}: kubernetes-validate now has a schema; remove it from crd_schemas.py")
                    failures += 1
                else:
                    print(f"ok   {what} (Kubernetes {shipped}, strict)")
            except kv.SchemaNotFoundError as e:
                if not custom:
                    print(f"FAIL {what}: {e.message}")
                    failures += 1
                    continue
                errors = check_custom(doc, custom, registry)
                for err in errors:
                    print(f"FAIL {what}: {err}")
                failures += len(errors)
                if not errors:
                    print(f"ok   {what} (custom resource: no Kubernetes schema; crd_schemas.py)")
            except kv.ValidationError as e:
                print(f"FAIL {what}: {'.'.join(str(p) for p in e.path)}: {e.message}")
                failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
