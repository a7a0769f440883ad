#!/usr/bin/env bash
# Makes (or reuses) a Python virtualenv in the cache outside the repository and prints
# its directory. Rebuilt when its requirements change (a -r include counts too).
#   scripts/pyenv.sh                          # tests and demo: tests/requirements.txt
#   scripts/pyenv.sh bench/requirements.txt   # benchmarks: the above plus the AWS CLI
#   scripts/pyenv.sh scripts/release-requirements.txt   # releases: zig and cargo-zigbuild
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${STACKMIGRATE_CACHE:-$HOME/.cache/stackmigrate}
requirements=$repo/${1:-tests/requirements.txt}
case ${1:-tests/requirements.txt} in
  tests/requirements.txt) venv=$cache/venv ;;
  bench/requirements.txt) venv=$cache/venv-bench ;;
  scripts/release-requirements.txt) venv=$cache/venv-release ;;
  *) echo "unknown requirements '$1': expected tests/requirements.txt, bench/requirements.txt or scripts/release-requirements.txt" >&2; exit 2 ;;
esac
want=$(cat "$requirements" "$repo/tests/requirements.txt" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$requirements" >&2
  echo "$want" >"$venv/.requirements"
fi
echo "$venv"
