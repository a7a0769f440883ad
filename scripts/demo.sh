#!/usr/bin/env bash
# The dev-to-prod demo on a fresh machine: installs what is missing, starts the local
# services, generates dev data, installs the plugin the way users do, and runs the
# migration in the prod stack: preview (the dry run), up (copy, progress, verified
# summary), a second up (nothing to do), and the rollback preview.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
started=$(date +%s)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "toolchain (built once, cached in ${STACKMIGRATE_CACHE:-$HOME/.cache/stackmigrate})"
scripts/toolchain.sh >/dev/null
venv=$(scripts/pyenv.sh)
cargo build --quiet

say "local services"
eval "$(scripts/services.sh start)"
run=${STACKMIGRATE_RUN:-/tmp/stackmigrate-services}

work=$run/demo
PYTHON=$venv/bin/python PLUGIN_DIR=${CARGO_TARGET_DIR:-$repo/target}/debug examples/dev-to-prod/setup.sh "$work"
cd "$work/migration"

say "pulumi preview: the dry run"
pulumi preview --non-interactive

say "pulumi up: copy, verify, record"
pulumi up --yes --skip-preview --non-interactive

say "pulumi up again: nothing to copy"
pulumi up --yes --skip-preview --non-interactive

say "pulumi destroy would roll back (preview only; run it for real with: pulumi destroy)"
PULUMI_SKIP_CONFIRMATIONS=false pulumi destroy --preview-only --non-interactive

cat <<EOT

Done in $(( $(date +%s) - started )) s.
Services: the Versity S3 gateway at $STACKMIGRATE_S3_A (and $STACKMIGRATE_S3_B), DynamoDB Local at $STACKMIGRATE_DYNAMODB
Pulumi state: $PULUMI_BACKEND_URL (passphrase: $PULUMI_CONFIG_PASSPHRASE)
Stacks: organization/portfolio/dev, organization/portfolio/prod (outputs only), organization/portfolio-migration/prod (the migration)
Run the steps by hand:
  eval "\$(scripts/services.sh env)"; cd $work/migration
  pulumi preview; pulumi up; pulumi destroy
Stop the services: scripts/services.sh stop
EOT
