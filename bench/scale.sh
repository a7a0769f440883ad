#!/usr/bin/env bash
# The scale run in one command, from a fresh machine: builds the toolchain and the
# release provider, starts services of its own, runs bench/scale.py (by default DynamoCopy
# at 100k, 1M and 10M items, BucketSync at 100k and 1M objects, and DynamoCopy's
# bookkeeping alone at 10M) and writes bench/results/scale.{json,md} and scale-rss.png.
# DynamoDB Local takes about 2,000 copied items a second on 2 cores, so the 10M table
# alone is about three hours (generation, four scans of the source, the copy); pass
# smaller sizes to try it:
#
#   bench/scale.sh                                        # the issue's sizes
#   bench/scale.sh --tables 100000 --buckets 20000 --bookkeeping 1000000   # minutes
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

scripts/toolchain.sh pulumi yaml versitygw dynamodb >/dev/null
venv=$(scripts/pyenv.sh bench/requirements.txt)
cargo build --release -p pulumi-resource-stackmigrate -p stackmigrate-bench

export STACKMIGRATE_RUN=${STACKMIGRATE_RUN:-/tmp/stackmigrate-scale-$$}
trap 'scripts/services.sh stop' EXIT
eval "$(scripts/services.sh start)"
"$venv/bin/python" bench/scale.py "$@"
