#!/usr/bin/env bash
# The SDKs in sdk/ (nodejs, python, go, dotnet) are generated from schema/schema.json by
# `pulumi package gen-sdk` with the project's code generator (tools/codegen-host), which this
# script alone puts on PATH: Pulumi's own hosts of the versions built here cannot generate.
#
#   scripts/sdks.sh            # regenerate sdk/<language> from the schema
#   scripts/sdks.sh --check    # regenerate into a temporary directory; fail if sdk/ differs
#   scripts/sdks.sh --generate DIR   # generate into DIR (scripts/release.sh, with its own schema)
#   scripts/sdks.sh --build    # build each SDK with its own toolchain into target/sdk:
#                              #   nodejs: npm install + tsc -> target/sdk/nodejs/bin (the npm package)
#                              #   python: a virtualenv with pulumi and the package installed, imported
#                              #   go:     go build ./... (module sdk/go.mod, checksums in sdk/go.sum)
#                              #   dotnet: dotnet build, when a .NET SDK is installed
#
# The version in the SDKs is the schema's `version`: the schema asks every generator to
# respect it (respectSchemaVersion), so package.json, pyproject.toml, the .csproj and
# each pulumi-plugin.json carry it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
schema=${STACKMIGRATE_SCHEMA:-$repo/schema/schema.json}   # another schema file: to compare with a commit's
cache=${STACKMIGRATE_CACHE:-$HOME/.cache/stackmigrate}
export PATH=$cache/bin:$PATH
export PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export GOSUMDB=off GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

LANGUAGES="nodejs python go dotnet"
PULUMI_NODEJS=3.206.0      # @pulumi/pulumi, matching the CLI
TYPESCRIPT=4.9.5           # the generated package.json asks for ^4.3.5
TYPES_NODE=18.19.130       # ... and @types/node ^18
PULUMI_PYTHON=3.206.0      # pulumi on PyPI, matching the CLI

log() { printf '[sdks] %s\n' "$*" >&2; }

schema_version() {
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$schema"
}

# generate OUT: every SDK into OUT/<language>.
generate() {
  local out=$1 version lang
  version=$(schema_version)
  # The project's code generator, first on PATH: Pulumi's hosts here cannot generate.
  "$repo/scripts/toolchain.sh" pulumi codegen >/dev/null
  local PATH=$cache/codegen-host:$PATH
  # gen-sdk starts the language hosts from a plugin context in the current directory.
  local home; home=$(mktemp -d)
  # The C# generator downloads the schema's logoUrl into the package; with no network
  # here it is given the schema without it (and packs Pulumi's default logo).
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); s.pop("logoUrl",None); json.dump(s,open(sys.argv[2],"w"))' \
    "$schema" "$home/schema-without-logo.json"
  for lang in $LANGUAGES; do
    local from=$schema
    [ "$lang" = dotnet ] && from=$home/schema-without-logo.json
    (cd "$home" && PULUMI_HOME=$home pulumi package gen-sdk "$from" \
      --language "$lang" --version "$version" -o "$out" 2>&1) |
      grep -v -e '^warning: using pulumi-language-' -e '^overriding package version' -e '^SDK has been written' >&2 || true
    [ -d "$out/$lang" ] || { log "gen-sdk wrote no $lang SDK"; exit 1; }
  done
  rm -rf "$home"
}

regenerate() {
  local tmp; tmp=$(mktemp -d)
  generate "$tmp"
  local lang
  for lang in $LANGUAGES; do
    rm -rf "${repo:?}/sdk/$lang"
    mkdir -p "$repo/sdk"
    cp -a "$tmp/$lang" "$repo/sdk/$lang"
  done
  rm -rf "$tmp"
  log "regenerated sdk/{${LANGUAGES// /,}} from schema/schema.json (version $(schema_version))"
}

check() {
  # The committed schema is what the plugin serves (a test build's registry holds more).
  if [ -z "${STACKMIGRATE_SCHEMA:-}" ] &&
    ! (cd "$repo" && cargo run -q -p pulumi-resource-stackmigrate -- --schema) | cmp -s - "$schema"; then
    log "schema/schema.json differs from what the plugin serves; run cargo run -p pulumi-resource-stackmigrate -- --schema > schema/schema.json, then scripts/sdks.sh"
    exit 1
  fi
  local tmp; tmp=$(mktemp -d)
  generate "$tmp"
  local lang failed=0
  for lang in $LANGUAGES; do
    if ! diff -r "$repo/sdk/$lang" "$tmp/$lang" >"$tmp/$lang.diff"; then
      log "sdk/$lang differs from what the generator produces from schema/schema.json:"
      head -40 "$tmp/$lang.diff" >&2
      failed=1
    fi
  done
  rm -rf "$tmp"
  if [ $failed = 1 ]; then
    log "run scripts/sdks.sh and commit sdk/"
    exit 1
  fi
  log "sdk/ matches schema/schema.json"
}

# build: each SDK from a copy of sdk/<language> (or of STACKMIGRATE_SDK_SOURCE/<language>)
# in target/sdk, so sdk/ stays as generated.
build() {
  local out=${STACKMIGRATE_SDK_BUILD:-$repo/target/sdk}
  local source=${STACKMIGRATE_SDK_SOURCE:-$repo/sdk}
  mkdir -p "$out" "$cache/npm" "$cache/pip"
  local version; version=$(schema_version)

  log "nodejs: npm install, tsc"
  rm -rf "$out/nodejs" && cp -a "$source/nodejs" "$out/nodejs"
  (cd "$out/nodejs" &&
    npm install --no-save --no-audit --no-fund --loglevel=error --cache "$cache/npm" --prefer-offline \
      "@pulumi/pulumi@$PULUMI_NODEJS" "typescript@$TYPESCRIPT" "@types/node@$TYPES_NODE" >&2 &&
    node_modules/.bin/tsc &&
    cp package.json README.md bin/)
  node -e 'const m = require(process.argv[1]); if (typeof m.BucketSync !== "function") process.exit(1)' "$out/nodejs/bin" ||
    { log "nodejs: the built package does not export BucketSync"; exit 1; }

  log "python: pip install into a virtualenv, import"
  rm -rf "$out/python" "$out/python-venv" && cp -a "$source/python" "$out/python"
  python3 -m venv "$out/python-venv"
  "$out/python-venv/bin/pip" install -q --disable-pip-version-check --cache-dir "$cache/pip" \
    "pulumi==$PULUMI_PYTHON" "$out/python" >&2
  "$out/python-venv/bin/python" - "$version" <<'EOF'
import importlib.metadata, sys
import pulumi_stackmigrate as sm
assert callable(sm.BucketSync) and callable(sm.DynamoCopy) and callable(sm.Provider)
installed = importlib.metadata.version("pulumi_stackmigrate")
assert installed == sys.argv[1], (installed, sys.argv[1])
EOF

  log "go: go build ./..."
  (cd "$repo/sdk" && go build ./... && go vet ./...)

  if command -v dotnet >/dev/null; then
    log "dotnet: dotnet build"
    rm -rf "$out/dotnet" && cp -a "$source/dotnet" "$out/dotnet"
    (cd "$out/dotnet" && dotnet build --nologo)
  else
    log "dotnet: not built, no .NET SDK installed (Debian's archive has none: apt-get install dotnet-sdk-8.0 -> Unable to locate package)"
  fi
  log "built into $out"
}

case ${1:-} in
  "") regenerate ;;
  --check) check ;;
  --build) build ;;
  --generate) generate "${2:?--generate needs a directory}" ;;
  *) echo "usage: scripts/sdks.sh [--check|--build|--generate DIR]" >&2; exit 2 ;;
esac
