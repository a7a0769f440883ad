#!/usr/bin/env bash
# The benchmark in one command, from a fresh machine: builds the toolchain, s5cmd,
# rclone, the AWS CLI and the release provider, starts services of its own, compares
# stackmigrate with the other tools (bench/compare.py), writes
# bench/results/comparison.md and prints it. About 45 minutes at the default sizes.
#
#   bench/run.sh                                   # the issue's datasets, 3 runs each
#   bench/run.sh --small 500 --large 2 --items 5000 --runs 1 --output /tmp/quick.md
#   bench/run.sh --only items --items 1000000 --runs 1 --no-warm-up --write-sweep 16,32 \
#     --small 1 --large 1 --large-mib 1 --output /tmp/items-1m.md   # about 50 minutes
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

scripts/toolchain.sh pulumi yaml versitygw dynamodb s5cmd rclone >/dev/null
venv=$(scripts/pyenv.sh bench/requirements.txt)
cargo build --release -p pulumi-resource-stackmigrate -p stackmigrate-bench

export STACKMIGRATE_RUN=${STACKMIGRATE_RUN:-/tmp/stackmigrate-bench-$$}
trap 'scripts/services.sh stop' EXIT
eval "$(scripts/services.sh start)"
"$venv/bin/python" bench/compare.py --venv "$venv" "$@"
