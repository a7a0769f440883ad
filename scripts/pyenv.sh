#!/usr/bin/env bash
# Makes (or reuses) the Python virtualenv the tests and the demo use, in the cache
# outside the repository, and prints its directory.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${STACKMIGRATE_CACHE:-$HOME/.cache/stackmigrate}
venv=$cache/venv
want=$(sha256sum "$repo/tests/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$repo/tests/requirements.txt" >&2
  echo "$want" >"$venv/.requirements"
fi
echo "$venv"
