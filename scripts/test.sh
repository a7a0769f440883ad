#!/usr/bin/env bash
# The whole test suite, from a fresh machine: toolchain, lint, unit tests, then the
# end-to-end tests (real pulumi CLI; the Versity S3 gateway, moto and DynamoDB Local on loopback).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

# Each step says how long the suite has run, so a slow step shows in CI's log.
step() { printf '\n== [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }
# The end-to-end tests run the plugin this script builds, wherever cargo puts it.
export STACKMIGRATE_PLUGIN_DIR=${STACKMIGRATE_PLUGIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/debug}

step "toolchain"
time scripts/toolchain.sh
venv=$(scripts/pyenv.sh)

step "format and lint"
cargo fmt --all --check
cargo clippy --all-targets -- -D warnings

step "unit tests"
cargo build
cargo test -- --skip harness::

step "SDKs: generated from the schema, built with each language's toolchain"
scripts/sdks.sh --check
time scripts/sdks.sh --build

step "local services"
# Services of their own, so a developer's running demo is not touched.
export STACKMIGRATE_RUN=${STACKMIGRATE_RUN:-/tmp/stackmigrate-test-$$}
trap 'scripts/services.sh stop' EXIT
eval "$(scripts/services.sh start)"

step "in-process tests: the provider's gRPC service against the local services"
cargo test harness::

step "end-to-end tests through the pulumi CLI"
"$venv/bin/python" -m pytest tests -q -p no:cacheprovider --durations=15 "$@"

step "the S3 end-to-end tests again, against moto's server (AWS's storage classes, KMS)"
STACKMIGRATE_S3_SERVER=moto "$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=5 \
  tests/test_bucket_sync.py tests/test_snapshot_model.py tests/test_dev_to_prod.py tests/test_s3_semantics.py "$@"

step "done"
