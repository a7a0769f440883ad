"""DynamoCopy through the real pulumi CLI against DynamoDB Local."""

import os
import signal
import subprocess

import pytest

from conftest import both_sides, plan_by, plan_counts, unique, wait_until
from portfolio_items import (
    DEV_CDN,
    DEV_RAW,
    EXCLUDED,
    NAMES_IN_TEXT_REWRITTEN,
    RESET,
    REWRITE,
    S,
    create_table,
    dynamodb,
    edge_items,
    expected_transform,
    image_items,
    key,
    normalize,
    put_items,
    scan_all,
)

OUTPUTS = {
    name: "${receipts.%s}" % name
    for name in [
        "itemsScanned",
        "itemsCopied",
        "itemsSkipped",
        "itemsOverwritten",
        "itemsFiltered",
        "itemsExpired",
        "countsByType",
        "valuesRewritten",
        "bytesCopied",
        "verified",
        "journalUri",
    ]
}


def copy_resource(source, target, **extra):
    props = {
        "sourceTable": source,
        "targetTable": target,
        "excludeTypes": EXCLUDED,
        "rewrite": REWRITE,
        "setAttributes": RESET,
    }
    props.update(extra)
    return {"receipts": {"type": "stackmigrate:DynamoCopy", "properties": props}}


@pytest.fixture
def tables():
    client = dynamodb()
    source = create_table(client, unique("dev-receipts"))
    target = create_table(client, unique("prod-receipts"))
    source_items = image_items() + edge_items()
    put_items(client, source, source_items)
    # Prod already holds one receipt under a dev key (other content) and its own rows.
    clash = dict(next(i for i in source_items if i["TYPE"]["S"] == "RECEIPT"))
    clash["note"] = S("written in prod before the migration")
    prod_only = {"PK": S("IMAGE#prod-only"), "SK": S("IMAGE"), "TYPE": S("IMAGE")}
    put_items(client, target, [clash, prod_only])
    return client, source, target, source_items, clash


def expected_target(before, source_items, overwrite=False):
    expected = dict(before)
    for item in source_items:
        transformed = expected_transform(item)
        if transformed is None:
            continue
        if key(item) in before and not overwrite:
            continue
        expected[key(item)] = transformed
    return expected


def test_preview_counts_exactly_and_writes_nothing(project, tables):
    client, source, target, source_items, clash = tables
    before_source, before_target = scan_all(client, source), scan_all(client, target)
    p = project(copy_resource(source, target), OUTPUTS, config=both_sides())
    out = p.preview()
    counts = plan_counts(out)
    assert f"rewrite {DEV_CDN} -> " in out and " values" in out, out
    copied = [i for i in source_items if expected_transform(i) is not None]
    assert counts["itemsScanned"] == len(source_items)
    assert counts["itemsFiltered"] == sum(i["TYPE"]["S"] in EXCLUDED for i in source_items)
    assert counts["itemsExpired"] == 1
    assert counts["itemsSkipped"] == 1, "the clashing receipt exists in prod"
    assert counts["itemsCopied"] == len(copied) - 1
    assert counts["itemsOverwritten"] == 0
    assert (scan_all(client, source), scan_all(client, target)) == (before_source, before_target)
    assert not p.journal_dir.exists()

    by_type = plan_by(p.preview(), "countsByType")
    assert by_type["RECEIPT_WORD"]["copied"] == sum(i["TYPE"]["S"] == "RECEIPT_WORD" for i in source_items)
    assert by_type["RECEIPT"]["skipped"] == 1
    assert by_type["JOB"]["filtered"] == 1
    assert by_type["PLACES_CACHE"] == {"copied": 1, "skipped": 0, "overwritten": 0, "filtered": 0, "expired": 1}


def test_up_is_exact_then_incremental_then_destroy_restores(project, tables):
    client, source, target, source_items, clash = tables
    before_source, before_target = scan_all(client, source), scan_all(client, target)
    p = project(copy_resource(source, target), OUTPUTS, config=both_sides())
    p.up()
    assert scan_all(client, target) == expected_target(before_target, source_items)
    out = p.outputs()
    assert out["verified"] is True
    assert out["itemsCopied"] == len(expected_target(before_target, source_items)) - len(before_target)
    assert out["countsByType"]["RECEIPT_LINE"]["copied"] == sum(i["TYPE"]["S"] == "RECEIPT_LINE" for i in source_items)
    word = next(v for k, v in scan_all(client, target).items() if v["TYPE"]["S"] == "RECEIPT_WORD")
    assert word["embedding_status"] == S("NONE") and word["GSI1PK"] == S("EMBEDDING_STATUS#NONE")
    note = scan_all(client, target)[("EDGE#1", "TEXT")]["note"]
    assert note == S(NAMES_IN_TEXT_REWRITTEN), "names inside longer words or names are left alone"
    assert out["valuesRewritten"][DEV_CDN] > 0 and out["valuesRewritten"][DEV_RAW] > 0

    out = p.up()
    assert "unchanged" in out and "updated" not in out, out

    new_items = image_items(images=1, lines=2, words=2)
    put_items(client, source, new_items)
    counts = plan_counts(p.preview())
    assert counts["itemsCopied"] == sum(expected_transform(i) is not None for i in new_items)
    p.up()
    assert p.outputs()["itemsCopied"] == counts["itemsCopied"]
    assert scan_all(client, target) == expected_target(before_target, source_items + new_items)

    p.destroy()
    assert scan_all(client, target) == before_target
    assert scan_all(client, source) == {**before_source, **{key(i): normalize(i) for i in new_items}}, "the source is never written"


def test_overwrite_then_destroy_restores_old_items_and_leaves_later_changes(project, tables):
    client, source, target, source_items, clash = tables
    before_target = scan_all(client, target)
    p = project(copy_resource(source, target, onConflict="overwrite"), OUTPUTS, config=both_sides())
    counts = plan_counts(p.preview())
    assert counts["itemsOverwritten"] == 1
    p.up()
    assert scan_all(client, target) == expected_target(before_target, source_items, overwrite=True)
    assert p.outputs()["countsByType"]["RECEIPT"]["overwritten"] == 1

    changed = next(i for i in source_items if i["TYPE"]["S"] == "RECEIPT_PLACE")
    client.put_item(TableName=target, Item={**changed, "name": S("renamed in prod after the copy")})
    out = p.destroy()
    assert "left as they are" in out, out
    after = scan_all(client, target)
    assert after[key(clash)] == normalize(clash), "the overwritten item is back"
    assert after[key(changed)]["name"] == S("renamed in prod after the copy")
    del after[key(changed)]
    assert after == before_target


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing table", "does not exist"),
        ("unknown type", "unknown entity type"),
        ("source equals target", "same table"),
        ("invalid onConflict", "\"skip\""),
        ("fail on existing keys", "onConflict is fail"),
        ("empty rewrite key", "empty key"),
        ("types select nothing", "select none of the"),
    ],
)
def test_bad_input_fails_at_preview_and_writes_nothing(project, tables, case, expected):
    client, source, target, source_items, _ = tables
    every_type = sorted({i["TYPE"]["S"] for i in source_items})
    resources = {
        "empty rewrite key": copy_resource(source, target, rewrite={"": "prod-bucket"}),
        "types select nothing": copy_resource(source, target, excludeTypes=every_type),
        "missing table": copy_resource(unique("missing"), target),
        "unknown type": copy_resource(source, target, excludeTypes=["JOBS"]),
        "source equals target": copy_resource(source, source),
        "invalid onConflict": copy_resource(source, target, onConflict="replace"),
        "fail on existing keys": copy_resource(source, target, onConflict="fail"),
    }[case]
    before = scan_all(client, source), scan_all(client, target)
    p = project(resources, config=both_sides())
    code, out = p.preview(check=False)
    assert code != 0 and expected in out, out
    code, out = p.up(check=False)
    assert code != 0 and expected in out, out
    assert (scan_all(client, source), scan_all(client, target)) == before
    assert not p.journal_dir.exists()


def test_killed_mid_copy_the_next_up_ends_exact(project):
    client = dynamodb()
    source = create_table(client, unique("dev-receipts"))
    target = create_table(client, unique("prod-receipts"))
    items = image_items(images=40, lines=10, words=5)  # about 4,500 items
    put_items(client, source, items)
    # These items hold only some of the seeds' excluded types; every named type must exist.
    p = project(copy_resource(source, target, excludeTypes=["COMPACTION_RUN"]), OUTPUTS, config=both_sides())
    up = p.up_in_background()
    started = wait_until(lambda: client.scan(TableName=target, Limit=1, Select="COUNT")["Count"] > 0, timeout=120)
    assert started, "the copy never started: " + (up.stdout.read() if up.poll() is not None else "")
    children = subprocess.run(["pgrep", "-P", str(up.pid), "-f", "pulumi-resource-stackmigrate"], capture_output=True, text=True).stdout.split()
    assert children, "the provider process was not found"
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    up.wait(timeout=120)
    partial = scan_all(client, target)
    expected = {key(i): normalize(expected_transform(i)) for i in items if i["TYPE"]["S"] != "COMPACTION_RUN"}
    assert 0 < len(partial) < len(expected), f"expected a partial copy, found {len(partial)} of {len(expected)}"

    p.up()
    assert scan_all(client, target) == expected
    assert "updated" not in p.up()
    p.destroy()
    assert scan_all(client, target) == {}, "destroy removes what the killed run wrote too"
