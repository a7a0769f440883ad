"""The release as a user gets it (issue 14): scripts/release.sh builds the archives, the
checksums and the SDK packages with a loopback pluginDownloadURL; a loopback HTTP server
serves them there. With a fresh PULUMI_HOME and automatic plugin acquisition on, the
engine downloads the plugin for the TypeScript example installed from the npm tarball
and the Python example installed from the wheel, and `pulumi plugin install --server`
installs it by hand. Nothing here points Pulumi at the build tree."""

import hashlib
import http.server
import json
import socket
import struct
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from conftest import REPO, listing, plan_counts
from test_bucket_sync import expected_copies
from test_sdks import CACHE, ExampleProject, dev_and_prod  # noqa: F401 (a fixture)

VERSION = json.loads((REPO / "schema" / "schema.json").read_text())["version"]
ARCHIVE = f"pulumi-resource-stackmigrate-v{VERSION}-linux-amd64.tar.gz"


class Served:
    """The release folder on a loopback HTTP server, and the paths it was asked for."""

    def __init__(self, root: Path, port: int):
        self.requests = []
        served = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):
                served.requests.append(self.path)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist = tmp_path_factory.mktemp("dist")
    # The test build's binary (--profile dev): the packaging is the release's, without a
    # second, optimised compile of the whole dependency tree.
    subprocess.run([str(REPO / "scripts" / "release.sh"), "--targets", "linux-amd64,darwin-amd64,darwin-arm64",
                    "--out", str(dist),
                    "--plugin-download-url", f"http://127.0.0.1:{port}/", "--profile", "dev"],
                   check=True, timeout=3600)
    served = Served(dist, port)
    yield dist, served
    served.server.shutdown()


@pytest.fixture
def fresh_pulumi_home(tmp_path, monkeypatch):
    """No plugin installed; the engine may download them."""
    home = tmp_path / "pulumi-home"
    home.mkdir()
    monkeypatch.setenv("PULUMI_HOME", str(home))
    monkeypatch.delenv("PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", raising=False)
    return home


def installed_plugin(home: Path) -> Path:
    return home / "plugins" / f"resource-stackmigrate-v{VERSION}" / "pulumi-resource-stackmigrate"


def test_archive_holds_the_binary_at_its_root_and_matches_the_checksums(release):
    dist, _ = release
    sums = dict(reversed(line.split()) for line in (dist / "SHA256SUMS").read_text().splitlines())
    assert sums[ARCHIVE] == hashlib.sha256((dist / ARCHIVE).read_bytes()).hexdigest()
    with tarfile.open(dist / ARCHIVE) as archive:
        names = [n.removeprefix("./") for n in archive.getnames()]
    assert "pulumi-resource-stackmigrate" in names, names
    for package in (f"stackmigrate-stackmigrate-{VERSION}.tgz", f"pulumi_stackmigrate-{VERSION}.tar.gz",
                    f"pulumi_stackmigrate-{VERSION}-py3-none-any.whl"):
        assert (dist / package).is_file(), package


# Mach-O: 64-bit magic, each target's CPU type, and the load commands read below.
MACH_O_MAGIC, MH_EXECUTE = 0xFEEDFACF, 2
MACH_O_CPU = {"darwin-amd64": 0x01000007, "darwin-arm64": 0x0100000C}
LC_CODE_SIGNATURE, LC_BUILD_VERSION, PLATFORM_MACOS = 0x1D, 0x32, 1
# Every command that makes dyld load a library (plain, weak, re-exported, lazy,
# upward): all share dylib_command's layout, the name's offset at byte 8.
LOADS_A_DYLIB = {0xC, 0x80000018, 0x8000001F, 0x20, 0x80000023}


def load_commands(binary: bytes, count: int):
    """(command, its bytes) of each load command after the 64-bit header."""
    offset = 32
    for _ in range(count):
        command, size = struct.unpack_from("<II", binary, offset)
        yield command, binary[offset:offset + size]
        offset += size


@pytest.mark.parametrize("target", sorted(MACH_O_CPU))
def test_macos_archives_hold_an_executable_for_their_cpu_that_loads_the_system_frameworks(release, target):
    dist, _ = release
    archive = f"pulumi-resource-stackmigrate-v{VERSION}-{target}.tar.gz"
    sums = dict(reversed(line.split()) for line in (dist / "SHA256SUMS").read_text().splitlines())
    assert sums[archive] == hashlib.sha256((dist / archive).read_bytes()).hexdigest()
    with tarfile.open(dist / archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.removeprefix("./") == "pulumi-resource-stackmigrate")
        assert member.mode & 0o111, "the binary is executable"
        binary = tar.extractfile(member).read()
    magic, cpu, _, filetype, count = struct.unpack_from("<IiiII", binary)
    assert (magic, cpu, filetype) == (MACH_O_MAGIC, MACH_O_CPU[target], MH_EXECUTE)
    commands = list(load_commands(binary, count))
    dylibs = []
    for command, body in commands:
        if command in LOADS_A_DYLIB:
            name_at = struct.unpack_from("<I", body, 8)[0]
            dylibs.append(body[name_at:].split(b"\0")[0].decode())
    # The stubs' install paths: macOS loads the real frameworks from there.
    assert {"/usr/lib/libSystem.B.dylib",
            "/System/Library/Frameworks/Security.framework/Versions/A/Security",
            "/System/Library/Frameworks/CoreFoundation.framework/Versions/A/CoreFoundation"} <= set(dylibs), dylibs
    # macOS 26's dyld refuses to start a binary that loads a library twice.
    assert len(dylibs) == len(set(dylibs)), dylibs
    builds = [struct.unpack_from("<II", body, 8) for command, body in commands if command == LC_BUILD_VERSION]
    assert [platform for platform, _ in builds] == [PLATFORM_MACOS], builds
    minimum = builds[0][1]
    assert (minimum >> 16, (minimum >> 8) & 0xFF) <= (11, 0), f"needs macOS {minimum >> 16}.{(minimum >> 8) & 0xFF}"
    if target == "darwin-arm64":  # Apple silicon runs no unsigned code: the linker signs it (ad hoc)
        assert any(command == LC_CODE_SIGNATURE for command, _ in commands), "no code signature"


def test_plugin_install_from_the_server(release, fresh_pulumi_home):
    _, served = release
    subprocess.run(["pulumi", "plugin", "install", "resource", "stackmigrate", VERSION, "--server", served.url],
                   check=True, capture_output=True, timeout=300)
    plugin = installed_plugin(fresh_pulumi_home)
    version = subprocess.run([str(plugin), "--version"], check=True, capture_output=True, text=True).stdout
    assert version.split() == ["pulumi-resource-stackmigrate", VERSION]
    assert f"/{ARCHIVE}" in served.requests


def typescript_from_the_tarball(root: Path, dist: Path, config: dict):
    p = ExampleProject(root, "bucket-sync-ts", config, built_plugin=False)
    manifest = json.loads((p.dir / "package.json").read_text())
    manifest["dependencies"]["@stackmigrate/stackmigrate"] = f"file:{dist / f'stackmigrate-stackmigrate-{VERSION}.tgz'}"
    (p.dir / "package.json").write_text(json.dumps(manifest, indent=2))
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline",
                    "--cache", str(CACHE / "npm")], cwd=p.dir, check=True, capture_output=True, timeout=600)
    return p


def python_from_the_wheel(root: Path, dist: Path, config: dict):
    venv = root.parent / "venv"
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "--cache-dir",
                    str(CACHE / "pip"), "pulumi==3.206.0", str(dist / f"pulumi_stackmigrate-{VERSION}-py3-none-any.whl")],
                   check=True, capture_output=True, timeout=600)
    return ExampleProject(root, "bucket-sync-python", config, runtime_options={"virtualenv": str(venv)},
                          built_plugin=False)


@pytest.mark.parametrize("make", [typescript_from_the_tarball, python_from_the_wheel], ids=["typescript", "python"])
def test_the_engine_downloads_the_plugin_for_an_sdk_package(make, release, fresh_pulumi_home, tmp_path, dev_and_prod):
    dist, served = release
    s3, source, target, objects = dev_and_prod
    p = make(tmp_path / "example", dist, {"sourceBucket": source, "targetBucket": target})
    copies = expected_copies(objects)
    assert plan_counts(p.preview())["objectsCopied"] == len(copies)
    assert installed_plugin(fresh_pulumi_home).is_file(), "the engine installed the plugin it downloaded"
    assert f"/{ARCHIVE}" in served.requests
    p.up()
    assert set(listing(s3, target)) == set(copies)
    p.destroy()
    assert listing(s3, target) == {}
