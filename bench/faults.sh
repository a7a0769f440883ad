#!/usr/bin/env bash
# `pulumi up` with and without injected faults, in one command from a fresh machine:
# builds the toolchain and the release provider, starts services of its own (with the
# fault proxies), runs bench/faults.py, writes bench/results/faults.md and prints it.
#
#   bench/faults.sh                                # 996 objects + one of 20 MiB, 5,000 items, 3 runs
#   bench/faults.sh --objects 200 --items 1000 --runs 1 --output /tmp/faults.md
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

scripts/toolchain.sh pulumi yaml versitygw dynamodb >/dev/null
venv=$(scripts/pyenv.sh)
cargo build --release -p pulumi-resource-stackmigrate

export STACKMIGRATE_RUN=${STACKMIGRATE_RUN:-/tmp/stackmigrate-faults-$$}
trap 'scripts/services.sh stop' EXIT
eval "$(scripts/services.sh start)"
"$venv/bin/python" bench/faults.py "$@"
