"""The whole dev-to-prod migration (examples/dev-to-prod) through the real pulumi CLI:
preview writes nothing, up makes prod the expected transform of dev (item by item,
object by object), a second up copies nothing, destroy returns prod to exactly its
state before, and dev never changes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from conftest import PLUGIN_DIR, REPO, listing, s3_client
from portfolio_items import dynamodb, expected_transform, key, scan_all

sys.path.insert(0, str(REPO / "examples" / "dev-to-prod"))
from generate import NAMES  # noqa: E402

BUCKETS = ("rawBucket", "cdnBucket", "chromaBucket", "layoutlmBucket")
STACK = "organization/portfolio-migration/prod"


def runbook(service):
    """moto's server, which plays prod's queues, workflows and CDN."""
    return boto3.client(service, endpoint_url=os.environ["STACKMIGRATE_MOTO_B"], region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local")


def infra_outputs(work, side):
    """The infra stack's outputs of one side (the distribution's ID is made at setup)."""
    stack = f"organization/portfolio/{side}"
    out = subprocess.run(["pulumi", "stack", "output", "--json", "--stack", stack, "--non-interactive"],
                         cwd=work / "infra", capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def side_state(side):
    """Every item and every object (with its ETag) of one side."""
    names = NAMES[side]
    s3 = s3_client("a")
    return {
        "items": scan_all(dynamodb(), names["tableName"]),
        "objects": {b: listing(s3, names[b]) for b in BUCKETS},
    }


def pulumi(work, *args, check=True):
    proc = subprocess.run(["pulumi", *args, "--non-interactive", "--stack", STACK], cwd=work / "migration",
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, out
    return out


@pytest.fixture
def migration(tmp_path):
    work = tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable, "PLUGIN_DIR": str(PLUGIN_DIR),
           "STACKMIGRATE_DEMO_ARGS": "--images 3 --lines 4 --words 3"}
    proc = subprocess.run([str(REPO / "examples" / "dev-to-prod" / "setup.sh"), str(work)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work


def test_the_whole_migration(migration):
    dev_before, prod_before = side_state("dev"), side_state("prod")

    out = pulumi(migration, "preview")
    assert "items (" in out and "to copy" in out and "checkpoint-1000" in out, out
    assert side_state("prod") == prod_before, "preview writes nothing"

    pulumi(migration, "up", "--yes", "--skip-preview")
    prod = side_state("prod")
    dev_items = scan_all(dynamodb(), NAMES["dev"]["tableName"])
    # Mirrored per image: prod's own image is gone from dev, so it is deleted.
    expected_items = {k: v for k, v in prod_before["items"].items() if k[0] != "IMAGE#prod-only"}
    for item in dev_items.values():
        transformed = expected_transform(item)
        if transformed is not None:
            expected_items[key(item)] = transformed
    assert prod["items"] == expected_items

    dev_objects = dev_before["objects"]
    raw = {k: v for k, v in dev_objects["rawBucket"].items() if k.endswith(".png")}
    assert prod["objects"]["rawBucket"] == {**prod_before["objects"]["rawBucket"], **raw}
    assert prod["objects"]["cdnBucket"] == dev_objects["cdnBucket"]
    promoted = {k: v for k, v in dev_objects["chromaBucket"].items() if "/delta/" not in k}
    assert prod["objects"]["chromaBucket"] == {**prod_before["objects"]["chromaBucket"], **promoted}
    model = "runs/layoutlm-2025-11-20/checkpoints/checkpoint-1000/"
    expected_model = {k: v for k, v in dev_objects["layoutlmBucket"].items()
                      if (k.startswith(model) and not k.endswith(".log")) or k == "runs/layoutlm-2025-11-20/run.json"}
    assert prod["objects"]["layoutlmBucket"] == expected_model
    outputs = json.loads(pulumi(migration, "stack", "output", "--json"))
    assert outputs["verified"] == [True] * 5
    groups = {item["PK"]["S"] for item in dev_items.values() if expected_transform(item) is not None}
    assert outputs["imagesMirrored"] == {"added": len(groups), "replaced": 0, "deleted": 1, "unchanged": 0}
    assert outputs["model"] == f"s3://{NAMES['prod']['layoutlmBucket']}/{model}"
    # The runbook around the copies: both embedding workflows started once, after the
    # copies, and the CDN invalidated for exactly the keys the CDN sync wrote.
    sfn = runbook("stepfunctions")
    machines = [sfn.describe_execution(executionArn=run)["stateMachineArn"] for run in outputs["embeddingRuns"]]
    for run in outputs["embeddingRuns"]:
        assert sfn.describe_execution(executionArn=run)["status"] in ("RUNNING", "SUCCEEDED")
    # The machines outlive a run of this test (moto keeps them): count this run's.
    started = [len(sfn.list_executions(stateMachineArn=m)["executions"]) for m in machines]
    invalidation = runbook("cloudfront").get_invalidation(
        DistributionId=infra_outputs(migration, "prod")["cdn_distribution_id"], Id=outputs["cdnInvalidation"])["Invalidation"]
    assert sorted(invalidation["InvalidationBatch"]["Paths"]["Items"]) == sorted(f"/{k}" for k in dev_objects["cdnBucket"])

    out = pulumi(migration, "up", "--yes", "--skip-preview")
    # The gate is checked again (an update that writes nothing); nothing else runs.
    assert "1 updated" in out and "9 unchanged" in out, out
    assert side_state("prod") == prod
    assert [len(sfn.list_executions(stateMachineArn=m)["executions"]) for m in machines] == started, \
        "an up with nothing new started the workflows again"

    pulumi(migration, "destroy", "--yes", "--skip-preview")
    assert side_state("prod") == prod_before, "destroy returns prod to exactly its state before up"
    assert side_state("dev") == dev_before, "dev is never written"
