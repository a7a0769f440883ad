#!/usr/bin/env bash
# Starts and stops the local AWS stand-ins on loopback, on free ports:
#   Versity S3 gateway "a"   the S3 endpoint of both stacks (server-side copies)
#   Versity S3 gateway "b"   a second S3 endpoint with other credentials (streamed copies)
#   moto "a" and "b"         the same pair from moto's server, for what only AWS-like
#                            servers do (storage classes, KMS); the S3 tests run against
#                            both pairs (STACKMIGRATE_S3_SERVER=versitygw|moto)
#   DynamoDB Local
#   PostgreSQL 15 "dev" and "prod" (Debian's packages), password authentication over TCP
#   two fault proxies (tests/faultproxy.py), in front of gateway "a" and DynamoDB Local:
#                 throttling, dropped connections and refused writes, set per test
#
#   scripts/services.sh start   # starts (if not running) and prints the environment
#   scripts/services.sh env     # prints the environment of the running services
#   scripts/services.sh stop
#
# Use it as: eval "$(scripts/services.sh start)". The environment also points Pulumi at
# a local file:// backend with a passphrase, update checks off, no plugin downloads.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${STACKMIGRATE_CACHE:-$HOME/.cache/stackmigrate}
run=${STACKMIGRATE_RUN:-/tmp/stackmigrate-services}
envfile=$run/env.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # URL NAME LOG
  local i
  for i in $(seq 1 120); do
    if curl -s -o /dev/null "$1"; then return 0; fi
    sleep 0.5
  done
  echo "$2 did not start on $1; its log:" >&2
  tail -n 30 "$3" >&2
  exit 1
}

running() { [ -f "$envfile" ] && [ -f "$run/pids" ] && while read -r pid; do kill -0 "$pid" 2>/dev/null || exit 1; done <"$run/pids"; }

start_versitygw() { # NAME USER PASSWORD -> prints port
  local name=$1 user=$2 password=$3 port dir=$run/versitygw-$1
  port=$(free_port)
  mkdir -p "$dir/data" "$dir/versions"
  # --versioning-dir lets tests turn versioning on per bucket, as on AWS.
  ROOT_ACCESS_KEY_ID=$user ROOT_SECRET_ACCESS_KEY=$password \
    nohup "$cache/bin/versitygw" --port "127.0.0.1:$port" --quiet \
    posix --versioning-dir "$dir/versions" "$dir/data" >"$dir/log" 2>&1 &
  echo $! >>"$run/pids"
  wait_for "http://127.0.0.1:$port/" "Versity S3 gateway $name" "$dir/log"
  echo "$port"
}

start_moto() { # NAME -> prints port
  local name=$1 port venv
  port=$(free_port)
  venv=$("$repo/scripts/pyenv.sh")
  mkdir -p "$run/moto-$name"
  nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$run/moto-$name/log" 2>&1 &
  echo $! >>"$run/pids"
  wait_for "http://127.0.0.1:$port/" "moto $name" "$run/moto-$name/log"
  # Run state machines' definitions (Pass, Wait, Fail...), as Step Functions does,
  # rather than only record that an execution started.
  curl -fsS -X POST -H 'Content-Type: application/json' \
    -d '{"stepfunctions": {"execute_state_machine": true}}' \
    "http://127.0.0.1:$port/moto-api/config" >/dev/null
  echo "$port"
}

pg_bin=${STACKMIGRATE_PG_BIN:-/usr/lib/postgresql/15/bin}

# PostgreSQL refuses to run as root: as root, the clusters run as the postgres user.
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_postgres() { # NAME PASSWORD -> prints port
  local name=$1 password=$2 port dir=$run/postgres-$1
  if [ ! -x "$pg_bin/initdb" ]; then
    echo "PostgreSQL 15 is not installed ($pg_bin/initdb): apt-get install postgresql-15" >&2
    exit 1
  fi
  port=$(free_port)
  mkdir -p "$dir"
  printf '%s\n' "$password" >"$dir/pwfile"
  [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
  as_postgres "$pg_bin/initdb" -D "$dir/data" -U stackmigrate --pwfile="$dir/pwfile" \
    --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
    echo "initdb of PostgreSQL $name failed; its log:" >&2; tail -n 30 "$dir/initdb.log" >&2; exit 1; }
  # fsync off: these clusters hold test data only; the copies' own commits still order writes.
  as_postgres "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=off -c max_connections=200" \
    start >/dev/null || { echo "PostgreSQL $name did not start; its log:" >&2; tail -n 30 "$dir/log" >&2; exit 1; }
  head -n 1 "$dir/data/postmaster.pid" >>"$run/pids"
  echo "$port"
}

start_proxy() { # SERVICE UPSTREAM -> prints port
  local service=$1 upstream=$2 venv port
  venv=$("$repo/scripts/pyenv.sh")
  nohup "$venv/bin/python" "$repo/tests/faultproxy.py" --service "$service" --upstream "$upstream" \
    >"$run/proxy-$service.port" 2>"$run/proxy-$service.log" &
  echo $! >>"$run/pids"
  local i
  for i in $(seq 1 100); do
    port=$(head -n 1 "$run/proxy-$service.port" 2>/dev/null || true)
    if [ -n "$port" ]; then echo "$port"; return; fi
    sleep 0.1
  done
  echo "the $service fault proxy did not start; its log:" >&2
  tail -n 30 "$run/proxy-$service.log" >&2
  exit 1
}

start() {
  if running; then cat "$envfile"; return; fi
  stop >/dev/null 2>&1 || true
  "$repo/scripts/toolchain.sh" >/dev/null
  mkdir -p "$run"
  : >"$run/pids"
  local a b moto_a moto_b ddb
  a=$(start_versitygw a stackmigrateA stackmigrateAsecret)
  b=$(start_versitygw b stackmigrateB stackmigrateBsecret)
  moto_a=$(start_moto a)
  moto_b=$(start_moto b)
  ddb=$(free_port)
  local lib=$cache/dynamodb-local/lib
  # -sharedDb: one database whatever the credentials, as one AWS account would be.
  # Started directly (no `cd && ... &` subshell), so nothing but the server outlives
  # this script while holding the caller's stdout.
  nohup java -Djava.library.path="$lib" -cp "$lib/*" \
    com.amazonaws.services.dynamodbv2.local.main.ServerRunner -inMemory -sharedDb -port "$ddb" \
    >"$run/dynamodb.log" 2>&1 &
  echo $! >>"$run/pids"
  wait_for "http://127.0.0.1:$ddb" "DynamoDB Local" "$run/dynamodb.log"
  local pg_dev pg_prod
  pg_dev=$(start_postgres dev stackmigrate-dev)
  pg_prod=$(start_postgres prod stackmigrate-prod)
  local faulty_s3 faulty_ddb
  faulty_s3=$(start_proxy s3 "http://127.0.0.1:$a")
  faulty_ddb=$(start_proxy dynamodb "http://127.0.0.1:$ddb")
  mkdir -p "$run/pulumi-state" "$run/pulumi-home"
  cat >"$envfile" <<EOF
export PATH="$cache/bin:\$PATH"
export STACKMIGRATE_S3_A=http://127.0.0.1:$a
export STACKMIGRATE_S3_A_KEY=stackmigrateA STACKMIGRATE_S3_A_SECRET=stackmigrateAsecret
export STACKMIGRATE_S3_B=http://127.0.0.1:$b
export STACKMIGRATE_S3_B_KEY=stackmigrateB STACKMIGRATE_S3_B_SECRET=stackmigrateBsecret
export STACKMIGRATE_MOTO_A=http://127.0.0.1:$moto_a STACKMIGRATE_MOTO_B=http://127.0.0.1:$moto_b
export STACKMIGRATE_DYNAMODB=http://127.0.0.1:$ddb
export STACKMIGRATE_S3_A_FAULTY=http://127.0.0.1:$faulty_s3 STACKMIGRATE_DYNAMODB_FAULTY=http://127.0.0.1:$faulty_ddb
export STACKMIGRATE_PG_DEV=postgresql://stackmigrate:stackmigrate-dev@127.0.0.1:$pg_dev/postgres
export STACKMIGRATE_PG_PROD=postgresql://stackmigrate:stackmigrate-prod@127.0.0.1:$pg_prod/postgres
export AWS_ACCESS_KEY_ID=stackmigrateA AWS_SECRET_ACCESS_KEY=stackmigrateAsecret AWS_REGION=us-east-1
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$a AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$ddb
export AWS_EC2_METADATA_DISABLED=true
export PULUMI_BACKEND_URL=file://$run/pulumi-state PULUMI_HOME=$run/pulumi-home
export PULUMI_CONFIG_PASSPHRASE=stackmigrate-local PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true PULUMI_SKIP_CONFIRMATIONS=true
EOF
  cat "$envfile"
}

stop() {
  local cluster
  for cluster in "$run"/postgres-*/data; do
    [ -d "$cluster" ] && as_postgres "$pg_bin/pg_ctl" -D "$cluster" -m fast -w stop >/dev/null 2>&1 || true
  done
  if [ -f "$run/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$run/pids"
  fi
  rm -rf "$run"
}

case ${1:-} in
  start) start ;;
  env) running && cat "$envfile" || { echo "services are not running: scripts/services.sh start" >&2; exit 1; } ;;
  stop) stop ;;
  *) echo "usage: $0 start|env|stop" >&2; exit 2 ;;
esac
