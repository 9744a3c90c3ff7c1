#!/usr/bin/env bash
# Makes a virtual environment for a Python client: setup-venv.sh DIR [REQUIREMENTS]
# (default: this folder's requirements.txt, grpcio-tools for the generated gRPC client).
set -euo pipefail
dir="${1:?usage: setup-venv.sh DIR [REQUIREMENTS]}"
requirements="${2:-$(dirname "$0")/requirements.txt}"
python3 -m venv "$dir"
"$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
