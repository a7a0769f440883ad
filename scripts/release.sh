#!/usr/bin/env bash
# Builds a release from this checkout into dist/ (or --out DIR):
#   pulumi-resource-stackmigrate-v<version>-<os>-<arch>.tar.gz   the plugin, binary at the root
#   SHA256SUMS                                                  of the archives
#   stackmigrate-stackmigrate-<version>.tgz                     the npm package (npm pack)
#   pulumi_stackmigrate-<version>.tar.gz, ...-py3-none-any.whl  the Python sdist and wheel
# and checks the Go module (published by tagging sdk/v<version>) and, when a .NET SDK is
# installed, packs the NuGet package.
#
#   scripts/release.sh                                  # linux-amd64, and the cross targets
#                                                       # whose Rust targets are installed
#   scripts/release.sh --targets linux-amd64            # one target
#   scripts/release.sh --plugin-download-url URL        # a mirror's (or a test's) URL in the
#                                                       # SDKs' schema instead of the releases
#   scripts/release.sh --profile dev                    # unoptimised, from target/debug (the
#                                                       # tests: same packaging, no second build)
#
# Cross targets: linux-arm64 needs `rustup target add aarch64-unknown-linux-gnu` and
# Debian's gcc-aarch64-linux-gnu; windows-amd64 needs `rustup target add
# x86_64-pc-windows-gnu` and Debian's gcc-mingw-w64-x86-64; darwin-amd64 and
# darwin-arm64 need `rustup target add x86_64-apple-darwin aarch64-apple-darwin`, and
# link with zig (cargo-zigbuild and ziglang from PyPI, installed here) against text
# stubs of the Apple frameworks they use (scripts/apple-frameworks.py): no Apple SDK
# can be installed on Linux, and macOS loads the real frameworks when the plugin starts.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

out=$repo/dist
targets="linux-amd64 linux-arm64 windows-amd64 darwin-amd64 darwin-arm64"
explicit_targets=false
download_url=""
profile=release
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --targets) targets=${2//,/ }; explicit_targets=true; shift 2 ;;
    --plugin-download-url) download_url=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    *) echo "unknown argument '$1': expected --out DIR, --targets LIST, --plugin-download-url URL, --profile release|dev" >&2; exit 2 ;;
  esac
done

log() { printf '[release] %s\n' "$*" >&2; }

version=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "pulumi-resource-stackmigrate"))')
binary=pulumi-resource-stackmigrate
rm -rf "$out" && mkdir -p "$out"
case $profile in
  release) profile_flag=--release; profile_dir=release ;;
  dev) profile_flag=; profile_dir=debug ;;
  *) echo "unknown profile '$profile': expected release or dev" >&2; exit 2 ;;
esac
target_dir=${CARGO_TARGET_DIR:-$repo/target}

# rust_target NAME -> Rust's target triple, linker variable and linker, or nothing.
rust_target() {
  case $1 in
    linux-amd64) echo "x86_64-unknown-linux-gnu" ;;
    linux-arm64) echo "aarch64-unknown-linux-gnu CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER aarch64-linux-gnu-gcc" ;;
    windows-amd64) echo "x86_64-pc-windows-gnu CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER x86_64-w64-mingw32-gcc" ;;
    darwin-amd64) echo "x86_64-apple-darwin" ;;
    darwin-arm64) echo "aarch64-apple-darwin" ;;
    *) return 1 ;;
  esac
}

# build_darwin TRIPLE: cargo zigbuild, linked by scripts/zig-macos-link.py (each
# framework once, the stubs searched) for macOS 11 and later, with the framework stubs
# the link asks for: each failed link names what it lacked, the stubs get it and the
# link runs again.
build_darwin() {
  local triple=$1 macos=11.0 stubs=$target_dir/apple-frameworks failed zig_venv linker_var
  zig_venv=$(scripts/pyenv.sh scripts/release-requirements.txt)
  linker_var=CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_LINKER
  mkdir -p "$stubs"
  failed=$(mktemp)
  # A pipeline (pipefail is set): the log is whole when the stubs' script reads it.
  for _ in 1 2 3 4; do
    if env PATH="$zig_venv/bin:$PATH" MACOSX_DEPLOYMENT_TARGET=$macos \
      "$linker_var=$repo/scripts/zig-macos-link.py" STACKMIGRATE_APPLE_FRAMEWORKS="$stubs" \
      STACKMIGRATE_ZIG_TARGET="${triple%%-*}-macos.$macos-none" \
      cargo zigbuild $profile_flag --locked -p pulumi-resource-stackmigrate --target "$triple" 2>&1 | tee "$failed" >&2; then
      rm -f "$failed"
      return 0
    fi
    if ! "$zig_venv/bin/python" scripts/apple-frameworks.py "$stubs" "$failed" >&2; then
      log "$triple: the build failed (above), not for want of a framework stub"
      rm -f "$failed"
      return 1
    fi
  done
  log "$triple: the link still lacks framework symbols after four tries (above)"
  return 1
}

for target in $targets; do
  read -r triple linker_var linker <<<"$(rust_target "$target")" ||
    { echo "unknown target '$target': expected linux-amd64, linux-arm64, windows-amd64, darwin-amd64 or darwin-arm64" >&2; exit 2; }
  if [ -n "${linker:-}" ]; then
    if ! rustup target list --installed | grep -qx "$triple" || ! command -v "$linker" >/dev/null; then
      log "$target: not built: needs \`rustup target add $triple\` and $linker (see the top of this script)"
      if $explicit_targets; then exit 1; fi
      continue
    fi
    export "$linker_var=$linker"
    # C dependencies (aws-lc-sys, SQLite) are compiled with the same cross compiler.
    export "CC_${triple//-/_}=$linker" "AR_${triple//-/_}=${linker%-gcc}-ar"
  elif [[ $target == darwin-* ]] && ! rustup target list --installed | grep -qx "$triple"; then
    log "$target: not built: needs \`rustup target add $triple\` (see the top of this script)"
    if $explicit_targets; then exit 1; fi
    continue
  fi
  exe=$binary
  [[ $target == windows-* ]] && exe=$binary.exe
  if [ "$target" = linux-amd64 ]; then
    # The host: target/release (or target/debug), which the benchmarks and the demo share.
    log "$target: cargo build $profile_flag"
    cargo build $profile_flag --locked -p pulumi-resource-stackmigrate >&2
    built=$target_dir/$profile_dir/$exe
  elif [[ $target == darwin-* ]]; then
    log "$target: cargo zigbuild $profile_flag --target $triple"
    build_darwin "$triple"
    built=$target_dir/$triple/$profile_dir/$exe
  else
    log "$target: cargo build $profile_flag --target $triple"
    cargo build $profile_flag --locked -p pulumi-resource-stackmigrate --target "$triple" >&2
    built=$target_dir/$triple/$profile_dir/$exe
  fi
  stage=$(mktemp -d)
  cp "$built" "$stage/"
  cp LICENSE README.md "$stage/" 2>/dev/null || true
  tar -czf "$out/$binary-v$version-$target.tar.gz" -C "$stage" .
  rm -rf "$stage"
done
(cd "$out" && sha256sum ./*.tar.gz | sed 's| \./| |' >SHA256SUMS)

# The SDKs, generated from the schema this build serves; a mirror's URL is the SDKs'
# business (the engine downloads from where the package says), so one binary serves all.
schema=$(mktemp --suffix .json)  # gen-sdk takes a path without .json for a plugin
cargo build $profile_flag --locked -p pulumi-resource-stackmigrate >&2  # built above unless only cross targets were
"$target_dir/$profile_dir/$binary" --schema |
  python3 -c 'import json, sys
schema = json.load(sys.stdin)
if sys.argv[1]:
    schema["pluginDownloadURL"] = sys.argv[1]
json.dump(schema, sys.stdout, indent=2)' "$download_url" >"$schema"
sdk_src=$(mktemp -d)
STACKMIGRATE_SCHEMA=$schema scripts/sdks.sh --generate "$sdk_src"
STACKMIGRATE_SDK_SOURCE=$sdk_src STACKMIGRATE_SDK_BUILD=$sdk_src/build scripts/sdks.sh --build

log "npm pack"
(cd "$sdk_src/build/nodejs/bin" && npm pack --silent --pack-destination "$out" >/dev/null)

log "python: sdist and wheel"
venv=$("$repo/scripts/pyenv.sh")
"$venv/bin/python" -m build --sdist --wheel --outdir "$out" "$sdk_src/python" >/dev/null

log "go: the module (sdk/go.mod) builds and vets; publish it by tagging sdk/v$version"

if command -v dotnet >/dev/null; then
  log "dotnet: dotnet pack"
  (cd "$sdk_src/dotnet" && dotnet pack --nologo -c Release -o "$out" >&2)
else
  log "dotnet: not packed, no .NET SDK installed (the project in sdk/dotnet packs with \`dotnet pack\`)"
fi
rm -rf "$sdk_src" "$schema"
log "release v$version in $out:"
ls -l "$out" >&2
