"""The TypeScript, Python and Go examples, with the generated SDKs, through the real pulumi
CLI and Pulumi's own nodejs, python and go language hosts (scripts/toolchain.sh builds
them from sdk/v3 v3.68.0, v3.79.0 and v3.66.0), against MinIO and DynamoDB Local.

Needs the SDKs built by `scripts/sdks.sh --build` (scripts/test.sh does it first):
target/sdk/nodejs/bin is the npm package, target/sdk/python-venv has pulumi and
pulumi_stackmigrate installed."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, PLUGIN_DIR, Project, both_sides, listing, plan_counts, s3_client, unique
from portfolio_items import EXCLUDED, S, create_table, dynamodb, image_items, key, normalize, put_items, scan_all
from test_bucket_sync import HEADERS, dev_objects, expected_copies, make_bucket, put_many

SDK_BUILD = Path(os.environ.get("STACKMIGRATE_SDK_BUILD", REPO / "target" / "sdk"))
CACHE = Path(os.environ.get("STACKMIGRATE_CACHE", Path.home() / ".cache" / "stackmigrate"))


class ExampleProject(Project):
    """A copy of examples/<name> as its own project and stack, using the built provider
    (or, with `built_plugin=False`, whatever plugin the engine finds or downloads)."""

    def __init__(self, root: Path, example: str, config: dict, runtime_options: dict | None = None,
                 built_plugin: bool = True):
        shutil.copytree(REPO / "examples" / example, root, ignore=shutil.ignore_patterns("node_modules", "venv"))
        self.runtime_options = runtime_options or {}
        self.built_plugin = built_plugin
        super().__init__(root, resources={}, config=config)

    def write(self, resources, outputs):
        text = (self.dir / "Pulumi.yaml").read_text()
        text = re.sub(r"(?m)^name: .*$", f"name: {self.name}", text)
        for key, value in self.runtime_options.items():
            text, n = re.subn(rf"(?m)^(\s+){key}: .*$", rf"\g<1>{key}: {value}", text)
            assert n == 1, f"the example's Pulumi.yaml has no runtime option {key}"
        if self.built_plugin:
            plugins = {"providers": [{"name": "stackmigrate", "path": str(PLUGIN_DIR)}]}
            text += f"plugins: {json.dumps(plugins)}\n"
        (self.dir / "Pulumi.yaml").write_text(text)
        (self.dir / f"Pulumi.{self.stack}.yaml").write_text(json.dumps({"config": self.config}, indent=2))


@pytest.fixture
def dev_and_prod():
    s3 = s3_client("a")
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    objects = dev_objects()
    put_many(s3, source, {k: v for k, v in objects.items() if k.endswith(".png")}, **HEADERS)
    put_many(s3, source, {k: v for k, v in objects.items() if not k.endswith(".png")})
    return s3, source, target, objects


def ts_project(root: Path, config: dict) -> ExampleProject:
    package = SDK_BUILD / "nodejs" / "bin"
    assert (package / "index.js").exists(), f"build the SDKs first: scripts/sdks.sh --build (no {package})"
    p = ExampleProject(root, "bucket-sync-ts", config)
    manifest = json.loads((p.dir / "package.json").read_text())
    manifest["dependencies"]["@stackmigrate/stackmigrate"] = f"file:{package}"
    (p.dir / "package.json").write_text(json.dumps(manifest, indent=2))
    # --install-links copies the SDK in, so it shares the program's @pulumi/pulumi.
    subprocess.run(
        ["npm", "install", "--install-links", "--no-audit", "--no-fund", "--loglevel=error",
         "--prefer-offline", "--cache", str(CACHE / "npm")],
        cwd=p.dir, check=True, capture_output=True, timeout=600,
    )
    # The example type-checks against the generated declarations.
    subprocess.run(["node_modules/.bin/tsc", "--noEmit", "-p", "."], cwd=p.dir, check=True, timeout=300)
    return p


def python_project(root: Path, config: dict) -> ExampleProject:
    venv = SDK_BUILD / "python-venv"
    assert (venv / "bin" / "python").exists(), f"build the SDKs first: scripts/sdks.sh --build (no {venv})"
    return ExampleProject(root, "bucket-sync-python", config, runtime_options={"virtualenv": str(venv)})


def go_project(root: Path, config: dict) -> ExampleProject:
    p = ExampleProject(root, "bucket-sync-go", config)
    # The copy's go.mod points at the SDK in this repository by an absolute path.
    go_mod = (p.dir / "go.mod").read_text().replace("=> ../../sdk", f"=> {REPO / 'sdk'}")
    (p.dir / "go.mod").write_text(go_mod)
    return p


# The host each example runs under, as `pulumi about` names it.
HOSTS = {"typescript": ("nodejs", "3.68.0"), "python": ("python", "3.79.0"), "go": ("go", "3.66.0")}


@pytest.mark.parametrize("make", [ts_project, python_project, go_project], ids=["typescript", "python", "go"])
def test_example_previews_copies_and_destroys(make, request, tmp_path, dev_and_prod):
    s3, source, target, objects = dev_and_prod
    source_before = listing(s3, source)
    p = make(tmp_path / "example", {"sourceBucket": source, "targetBucket": target})
    language, version = HOSTS[request.node.callspec.id]
    about = p.run("about")
    assert re.search(rf"{language}\s.*{re.escape(version)}", about), about
    copies = expected_copies(objects)

    counts = plan_counts(p.preview())
    assert counts["objectsCopied"] == len(copies)
    assert counts["bytesCopied"] == sum(len(v) for v in copies.values())
    assert counts["objectsExcluded"] == len(objects) - len(copies)
    assert listing(s3, target) == {}, "preview writes nothing"

    p.up()
    assert set(listing(s3, target)) == set(copies), "exactly the filtered set, excluded keys absent"
    for key, body in copies.items():
        got = s3.get_object(Bucket=target, Key=key)
        assert got["Body"].read() == body, key
        assert got["ContentType"] == HEADERS["ContentType"]
        assert got["Metadata"] == HEADERS["Metadata"]
    out = p.outputs()
    assert out["objectsScanned"] == len(objects)
    assert out["objectsCopied"] == len(copies)
    assert out["objectsExcluded"] == len(objects) - len(copies)
    assert out["bytesCopied"] == sum(len(v) for v in copies.values())
    assert out["verified"] is True
    assert out["journalUri"].startswith(f"file://{p.journal_dir}")

    second = p.up()
    assert "unchanged" in second and "updated" not in second, second

    p.destroy()
    assert listing(s3, target) == {}, "destroy removes what the example copied"
    assert listing(s3, source) == source_before, "the source is never written"


def test_go_example_copies_a_table(tmp_path, dev_and_prod):
    client = dynamodb()
    source, target = create_table(client, unique("dev-receipts")), create_table(client, unique("prod-receipts"))
    # Every type the example excludes is present: naming an absent type fails at preview.
    items = image_items(images=3, lines=2, words=2) + [
        {"PK": S(f"{kind}#1"), "SK": S(kind), "TYPE": S(kind)} for kind in EXCLUDED if kind != "COMPACTION_RUN"]
    put_items(client, source, items)
    _, bucket_source, bucket_target, _ = dev_and_prod
    config = {"sourceBucket": bucket_source, "targetBucket": bucket_target, "sourceTable": source, "targetTable": target,
              "stackmigrate:source": both_sides()["stackmigrate:source"], "stackmigrate:target": both_sides()["stackmigrate:target"]}
    p = go_project(tmp_path / "example", config)
    p.up()
    expected = {key(i): normalize(i) for i in items if i["TYPE"]["S"] not in EXCLUDED}
    assert scan_all(client, target) == expected
    assert p.outputs()["itemsCopied"] == len(expected) and p.outputs()["itemsVerified"] is True
    p.destroy()
    assert scan_all(client, target) == {}
