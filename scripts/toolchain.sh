#!/usr/bin/env bash
# Installs the pinned toolchain the demo and the tests run against, built from the
# package registries, into a cache outside the repository. Idempotent: a part whose
# stamp matches its pinned version is not rebuilt. Prints the cache directory.
#
#   scripts/toolchain.sh            # everything
#   scripts/toolchain.sh pulumi     # one part: pulumi | yaml | hosts | codegen | versitygw | dynamodb | darwin
#   scripts/toolchain.sh s5cmd rclone   # the tools bench/run.sh compares against
set -euo pipefail

PULUMI_VERSION=v3.206.0                # tools/pulumi-cli
PULUMI_YAML_VERSION=v1.25.0            # built against pulumi v3.206.0 (tools/pulumi-yaml)
NODEJS_HOST_VERSION=v3.68.0            # Pulumi's hosts: tools/pulumi-language-{nodejs,python,go}
PYTHON_HOST_VERSION=v3.79.0
GO_HOST_VERSION=v3.66.0
VERSITYGW_VERSION=v1.8.0              # tools/versitygw
DYNAMODB_LOCAL_VERSION=2.6.1           # also pinned in tools/dynamodb-local/pom.xml
S5CMD_VERSION=v2.3.0                   # tools/s5cmd
RCLONE_VERSION=1.60.1+dfsg-2+b5        # Debian bookworm's package

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${STACKMIGRATE_CACHE:-$HOME/.cache/stackmigrate}
bin=$cache/bin
mkdir -p "$bin" "$cache/stamps"

# The Go proxy here serves modules but not the checksum database; the go.sum files in
# tools/ pin what each build uses.
export GOSUMDB=off GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

log() { printf '[toolchain] %s\n' "$*" >&2; }

# up_to_date NAME VERSION FILE...: true when every file exists and the stamp matches.
up_to_date() {
  local name=$1 version=$2; shift 2
  [ "$(cat "$cache/stamps/$name" 2>/dev/null)" = "$version" ] || return 1
  local f; for f in "$@"; do [ -e "$f" ] || return 1; done
}
stamp() { echo "$2" >"$cache/stamps/$1"; }

# build_go NAME VERSION MODULE_DIR PACKAGE [LDFLAGS]: builds PACKAGE from the pinned
# module in tools/MODULE_DIR into the cache's bin/. `go install pkg@version` is not used:
# it needs the proxy's version list, which the registry here does not serve, and it
# refuses modules with replace directives (pulumi/pkg has them).
build_go() {
  local name=$1 version=$2 module=$3 package=$4 ldflags=${5:-}
  # Named like `go install` names it: the last path element, or the one before a
  # major-version suffix (github.com/peak/s5cmd/v2 -> s5cmd).
  local base=${package##*/}
  [[ $base =~ ^v[0-9]+$ ]] && base=$(basename "${package%/*}")
  local out=$bin/$base
  up_to_date "$name" "$version" "$out" && return
  log "building $name $version from $package (a few minutes on 2 cores)"
  local work; work=$(mktemp -d)
  cp "$repo/tools/$module/go.mod" "$repo/tools/$module/go.sum" "$work/"
  (cd "$work" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" "$package")
  mv "$out.tmp" "$out"
  rm -rf "$work"
  stamp "$name" "$version"
}

build_pulumi() {
  build_go pulumi "$PULUMI_VERSION" pulumi-cli github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
    "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION"
}

build_yaml() {
  build_go yaml "$PULUMI_YAML_VERSION" pulumi-yaml github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml \
    "-X github.com/pulumi/pulumi-yaml/pkg/version.Version=$PULUMI_YAML_VERSION"
}

# Pulumi's own language hosts, which run the SDK examples. Only older sdk/v3 versions
# hold them (tools/pulumi-language-<lang>); under CLI v3.206 they run programs, the CLI
# falling back from GetRequiredPackages to GetRequiredPlugins.
build_pulumi_hosts() {
  build_go host-nodejs "$NODEJS_HOST_VERSION" pulumi-language-nodejs \
    github.com/pulumi/pulumi/sdk/v3/nodejs/cmd/pulumi-language-nodejs \
    "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$NODEJS_HOST_VERSION"
  build_go host-python "$PYTHON_HOST_VERSION" pulumi-language-python \
    github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python \
    "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PYTHON_HOST_VERSION"
  build_go host-go "$GO_HOST_VERSION" pulumi-language-go \
    github.com/pulumi/pulumi/sdk/v3/go/pulumi-language-go \
    "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$GO_HOST_VERSION"
  # The Python host runs this script, which it looks for beside itself.
  local exec_script
  exec_script=$(go mod download -json "github.com/pulumi/pulumi/sdk/v3@$PYTHON_HOST_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/python/cmd/pulumi-language-python-exec
  install -m 755 "$exec_script" "$bin/pulumi-language-python-exec"
  # An older toolchain installed the project's code generator under these names.
  rm -f "$bin/pulumi-language-host" "$bin/pulumi-language-dotnet"
}

# stackmigrate's code generator (tools/codegen-host, its own source): Pulumi's hosts of
# the versions above do not implement GeneratePackage, so `pulumi package gen-sdk` needs
# it. Installed as pulumi-language-{nodejs,python,go,dotnet} in a folder of its own that
# scripts/sdks.sh puts first on PATH while generating; nothing else runs it.
build_codegen_host() {
  local dir=$repo/tools/codegen-host out=$cache/codegen-host
  local version; version="$PULUMI_VERSION-$(cat "$dir"/go.mod "$dir"/go.sum "$dir"/*.go | sha256sum | cut -c1-16)"
  local lang names=()
  for lang in nodejs python go dotnet; do names+=("$out/pulumi-language-$lang"); done
  up_to_date codegen-host "$version" "${names[@]}" && return
  log "building the SDK code generator (nodejs, python, go, dotnet) against pulumi $PULUMI_VERSION"
  mkdir -p "$out"
  (cd "$dir" && go build -trimpath -ldflags "-s -w -X main.version=$PULUMI_VERSION" -o "$out/codegen-host.tmp" .)
  mv "$out/codegen-host.tmp" "$out/codegen-host"
  for lang in nodejs python go dotnet; do ln -f "$out/codegen-host" "$out/pulumi-language-$lang"; done
  stamp codegen-host "$version"
}

build_versitygw() {
  build_go versitygw "$VERSITYGW_VERSION" versitygw github.com/versity/versitygw/cmd/versitygw
}

build_s5cmd() {
  build_go s5cmd "$S5CMD_VERSION" s5cmd github.com/peak/s5cmd/v2 \
    "-X github.com/peak/s5cmd/v2/version.Version=$S5CMD_VERSION"
}

# rclone from Debian's package, unpacked into the cache: no root needed, nothing
# installed system-wide.
fetch_rclone() {
  up_to_date rclone "$RCLONE_VERSION" "$bin/rclone" && return
  log "fetching rclone $RCLONE_VERSION from Debian"
  local work; work=$(mktemp -d)
  if ! (cd "$work" && apt-get download "rclone=$RCLONE_VERSION" >/dev/null 2>&1); then
    apt-get update -qq >&2  # a fresh machine may have no package lists yet
    (cd "$work" && apt-get download "rclone=$RCLONE_VERSION" >&2)
  fi
  dpkg-deb -x "$work"/rclone_*.deb "$work/root"
  mv "$work/root/usr/bin/rclone" "$bin/rclone"
  rm -rf "$work"
  stamp rclone "$RCLONE_VERSION"
}

fetch_dynamodb() {
  local dir=$cache/dynamodb-local
  up_to_date dynamodb "$DYNAMODB_LOCAL_VERSION" "$dir/lib/DynamoDBLocal-$DYNAMODB_LOCAL_VERSION.jar" && return
  log "fetching DynamoDB Local $DYNAMODB_LOCAL_VERSION from Maven Central"
  rm -rf "$dir" && mkdir -p "$dir/lib"
  # copy-dependencies keeps the native sqlite4java library (type so) beside the jars;
  # the file names are stripped of versions so sqlite4java finds libsqlite4java-linux-amd64.so.
  mvn -q -B -f "$repo/tools/dynamodb-local/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$dir/lib" -DincludeScope=runtime
  local so
  for so in "$dir"/lib/*.so; do
    mv "$so" "$dir/lib/$(basename "$so" | sed -E 's/-[0-9][0-9.]*\.so$/.so/')"
  done
  stamp dynamodb "$DYNAMODB_LOCAL_VERSION"
}

# The Rust standard libraries of the macOS targets, which the release's archives (and
# its test) are built for; rustup skips what is installed.
add_darwin_targets() {
  rustup target add x86_64-apple-darwin aarch64-apple-darwin >&2
}

parts=${*:-pulumi yaml hosts codegen versitygw dynamodb darwin}
for part in $parts; do
  case $part in
    pulumi) build_pulumi ;;
    yaml) build_yaml ;;
    hosts) build_pulumi_hosts ;;
    codegen) build_codegen_host ;;
    versitygw) build_versitygw ;;
    dynamodb) fetch_dynamodb ;;
    s5cmd) build_s5cmd ;;
    rclone) fetch_rclone ;;
    darwin) add_darwin_targets ;;
    *) echo "unknown part '$part': expected pulumi, yaml, hosts, codegen, versitygw, dynamodb, darwin, s5cmd or rclone" >&2; exit 2 ;;
  esac
done
echo "$cache"
