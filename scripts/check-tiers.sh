#!/usr/bin/env bash
# The unit and integration tiers (`pytest -m "not e2e"`) on a host with no llama-server at all:
# none on PATH, LLAMA_SERVER_BIN unset, and an empty llamasup cache (so neither a cached build
# nor a build from the sdist is there to fall back on). A test that runs the real binary
# without the e2e marker fails here; tests/conftest.py refuses the obvious case (a test that
# asks for the llama_server_bin fixture) at collection time. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

path=""
IFS=: read -ra dirs <<< "$PATH"
for dir in "${dirs[@]}"; do
  if [ -n "$dir" ] && [ ! -e "$dir/llama-server" ]; then
    path="${path:+$path:}$dir"
  fi
done
empty_cache="$(mktemp -d)"
trap 'rm -rf "$empty_cache"' EXIT

env -u LLAMA_SERVER_BIN PATH="$path" LLAMASUP_CACHE_DIR="$empty_cache" \
  .venv/bin/python -m pytest -m "not e2e" "$@"
