#!/usr/bin/env bash
# Sets up the dev-to-prod migration in WORK on the running local services (the
# environment of scripts/services.sh): rolls back an earlier run, generates dev data,
# brings up the infra project's dev and prod stacks (outputs naming tables and
# buckets) and configures the migration stack organization/portfolio-migration/prod.
# Used by scripts/demo.sh and the end-to-end test of the whole program.
#   PYTHON=python-with-boto3 PLUGIN_DIR=target/debug examples/dev-to-prod/setup.sh WORK
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$1
run=${STACKMIGRATE_RUN:-/tmp/stackmigrate-services}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "plugin: pulumi plugin install resource stackmigrate (from an archive of the build, as users do)"
plugin=$PLUGIN_DIR/pulumi-resource-stackmigrate
version=$("$plugin" --schema | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["version"])')
archive=$run/pulumi-resource-stackmigrate-v$version-linux-amd64.tar.gz
tar -czf "$archive" -C "$PLUGIN_DIR" pulumi-resource-stackmigrate
pulumi plugin install resource stackmigrate "$version" -f "$archive" --reinstall

say "a fresh start: forget an earlier run's migration (generate.py --fresh resets the data)"
rm -rf "$work" "$run/journal" && mkdir -p "$work" && cp -r "$here/infra" "$here/migration" "$work/"
if pulumi stack ls --all --json 2>/dev/null | grep -q '"organization/portfolio-migration/prod"'; then
  (cd "$work/migration" && pulumi stack rm --yes --force --non-interactive organization/portfolio-migration/prod >/dev/null)
fi

say "dev data: Portfolio-shaped table, images, ChromaDB snapshots, LayoutLM runs (examples/dev-to-prod/generate.py)"
"$PYTHON" "$here/generate.py" --fresh ${STACKMIGRATE_DEMO_ARGS:-} >"$run/names.json"
cat "$run/names.json"; echo

say "the infra project's dev and prod stacks: their outputs name the tables and buckets"
for env in dev prod; do
  (cd "$work/infra" &&
    pulumi stack select --create "organization/portfolio/$env" --non-interactive >/dev/null &&
    "$PYTHON" -c 'import json,sys; [print(k, v) for k, v in json.load(open(sys.argv[1]))[sys.argv[2]].items()]' "$run/names.json" "$env" |
      while read -r key value; do pulumi config set "$key" "$value" >/dev/null; done &&
    pulumi up --yes --skip-preview --non-interactive >/dev/null &&
    echo "organization/portfolio/$env:" && pulumi stack output --json)
done

say "the migration program in the prod side (examples/dev-to-prod/migration)"
cd "$work/migration"
pulumi stack select --create organization/portfolio-migration/prod --non-interactive >/dev/null
pulumi config set stackmigrate:sourceStack organization/portfolio/dev
pulumi config set stackmigrate:targetStack organization/portfolio/prod
pulumi config set stackmigrate:journal "file://$run/journal"
for side in source target; do
  pulumi config set --path "stackmigrate:$side.endpoint" "$STACKMIGRATE_S3_A"
  pulumi config set --path "stackmigrate:$side.dynamodbEndpoint" "$STACKMIGRATE_DYNAMODB"
  pulumi config set --path "stackmigrate:$side.forcePathStyle" true
done
# The runbook's queues, workflows and CDN distribution (moto's server plays them).
for service in sqs sfn cloudfront; do
  pulumi config set --path "stackmigrate:target.${service}Endpoint" "$STACKMIGRATE_MOTO_B"
done

