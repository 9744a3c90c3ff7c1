#!/usr/bin/env bash
# Makes a virtual environment with grpcio-tools for the Python client: setup-venv.sh DIR
set -euo pipefail
dir="${1:?usage: setup-venv.sh DIR}"
python3 -m venv "$dir"
"$dir/bin/pip" install --quiet --disable-pip-version-check -r "$(dirname "$0")/requirements.txt"
