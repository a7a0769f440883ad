#!/usr/bin/env bash
# PostgresCopy against pg_dump | pg_restore and pgcopydb, in one command: builds the
# release provider, installs pgcopydb (Debian's package) when missing, starts services
# of its own, runs bench/postgres.py and prints bench/results/postgres.md. About 35
# minutes at the default sizes (1M and 10M rows, 3 runs each).
#
#   bench/postgres.sh                                  # 1M and 10M rows, 3 runs
#   bench/postgres.sh --rows 100000 --runs 1 --output /tmp/pg.md
#   bench/postgres.sh --rows 1000000 --tools stackmigrate --range-rows 100000
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if ! command -v pgcopydb >/dev/null; then
  echo "installing pgcopydb (apt-get install pgcopydb)" >&2
  apt-get install -y pgcopydb >/dev/null
fi
scripts/toolchain.sh pulumi yaml >/dev/null
venv=$(scripts/pyenv.sh bench/requirements.txt)
cargo build --release -p pulumi-resource-stackmigrate

export STACKMIGRATE_RUN=${STACKMIGRATE_RUN:-/tmp/stackmigrate-bench-$$}
trap 'scripts/services.sh stop' EXIT
eval "$(scripts/services.sh start)"
export STACKMIGRATE_PLUGIN_DIR=$repo/target/release
"$venv/bin/python" bench/postgres.py "$@"
