"""DynamoCopy of tables shaped unlike Portfolio's: hash-only keys, numeric and binary
keys, items near DynamoDB's 400 KB limit, a target with a GSI of its own, a provisioned
target, and a target keyed differently (refused at preview)."""

import os

import pytest

from conftest import both_sides, plan_counts, unique
from portfolio_items import dynamodb, normalize, put_items

OUTPUTS = {name: "${copy.%s}" % name for name in ["itemsScanned", "itemsCopied", "verified"]}


def create(client, name, keys, throughput=None, gsi=None, gsi_type="S"):
    """A table keyed by `keys` [(name, type)], hash first; on demand unless `throughput`."""
    schema = [{"AttributeName": n, "KeyType": kt} for (n, _), kt in zip(keys, ["HASH", "RANGE"])]
    definitions = {n: t for n, t in keys}
    extra = {}
    if gsi:
        definitions[gsi] = gsi_type
        extra["GlobalSecondaryIndexes"] = [{
            "IndexName": "by-" + gsi,
            "KeySchema": [{"AttributeName": gsi, "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"},
            **({"ProvisionedThroughput": throughput} if throughput else {}),
        }]
    if throughput:
        extra["ProvisionedThroughput"] = throughput
    else:
        extra["BillingMode"] = "PAY_PER_REQUEST"
    client.create_table(
        TableName=name,
        KeySchema=schema,
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in definitions.items()],
        **extra,
    )
    return name


def every_type(i):
    """Non-key attributes of every DynamoDB type."""
    return {
        "TYPE": {"S": "THING" if i % 2 else "OTHER"},
        "count": {"N": str(i * 7 - 3)},
        "ratio": {"N": "0.125"},
        "blob": {"B": os.urandom(16)},
        "tags": {"SS": ["a", f"t{i}"]},
        "sizes": {"NS": ["1", str(i + 2)]},
        "blobs": {"BS": [b"x", bytes([i % 256, 1])]},
        "flag": {"BOOL": i % 3 == 0},
        "nothing": {"NULL": True},
        "list": {"L": [{"S": "x"}, {"N": str(i)}, {"M": {"deep": {"S": "y"}}}]},
        "map": {"M": {"k": {"S": f"v{i}"}, "n": {"N": "1"}}},
    }


def scan(client, table):
    """Every item, normalized, in a canonical order."""
    items, start = [], None
    while True:
        kwargs = {"TableName": table, "ConsistentRead": True, **({"ExclusiveStartKey": start} if start else {})}
        out = client.scan(**kwargs)
        items += [normalize(i) for i in out["Items"]]
        start = out.get("LastEvaluatedKey")
        if not start:
            return sorted(items, key=lambda item: repr(sorted(item.items())))


def copy(source, target, **extra):
    return {"copy": {"type": "stackmigrate:DynamoCopy", "properties": {"sourceTable": source, "targetTable": target, **extra}}}


SHAPES = {
    "hash-only string key": [("id", "S")],
    "numeric hash and range keys": [("account", "N"), ("seq", "N")],
    "binary hash key": [("digest", "B")],
}


def key_value(kind, i):
    return {"S": f"item-{i:04d}", "N": str(1000 + i), "B": i.to_bytes(4, "big") + b"\x00\xff"}[kind]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_key_shape_is_copied_item_for_item_and_rolled_back(project, shape):
    client = dynamodb()
    keys = SHAPES[shape]
    source = create(client, unique("dev"), keys)
    target = create(client, unique("prod"), keys, gsi="TYPE")
    items = [{**{n: {t: key_value(t, i)} for n, t in keys}, **every_type(i)} for i in range(60)]
    put_items(client, source, items)
    before = scan(client, source)

    p = project(copy(source, target), OUTPUTS, config=both_sides())
    assert plan_counts(p.preview())["itemsCopied"] == 60
    p.up()
    assert scan(client, target) == before
    assert scan(client, source) == before, "the source is never written"
    out = p.outputs()
    assert (out["itemsScanned"], out["itemsCopied"], out["verified"]) == (60, 60, True)
    by_type = client.query(
        TableName=target, IndexName="by-TYPE", KeyConditionExpression="#t = :t",
        ExpressionAttributeNames={"#t": "TYPE"}, ExpressionAttributeValues={":t": {"S": "THING"}},
    )
    assert by_type["Count"] == 30, "the target's own GSI indexes the copied items"
    p.destroy()
    assert scan(client, target) == []


def test_items_near_the_400_kb_limit_are_copied_whole(project):
    client = dynamodb()
    source = create(client, unique("dev"), [("id", "S")])
    target = create(client, unique("prod"), [("id", "S")])
    big = [{"id": {"S": f"big-{i}"}, "payload": {"B": os.urandom(395 * 1024)}, "TYPE": {"S": "BLOB"}} for i in range(12)]
    put_items(client, source, big)
    p = project(copy(source, target), OUTPUTS, config=both_sides())
    p.up()
    assert scan(client, target) == scan(client, source)
    assert p.outputs()["verified"] is True


def test_a_target_keyed_differently_is_refused_at_preview_naming_both_schemas(project):
    client = dynamodb()
    source = create(client, unique("dev"), [("PK", "S"), ("SK", "S")])
    target = create(client, unique("prod"), [("PK", "N"), ("SK", "S")])
    put_items(client, source, [{"PK": {"S": "a"}, "SK": {"S": "b"}}])
    p = project(copy(source, target), config=both_sides())
    code, out = p.run("preview", check=False)
    assert code != 0
    assert "PK (N, hash), SK (S, range)" in out and "PK (S, hash), SK (S, range)" in out, out
    assert scan(client, target) == []


def test_a_provisioned_target_sets_the_default_write_rate(project):
    client = dynamodb()
    source = create(client, unique("dev"), [("id", "S")])
    target = create(client, unique("prod"), [("id", "S")], throughput={"ReadCapacityUnits": 50, "WriteCapacityUnits": 40})
    items = [{"id": {"S": f"i{i}"}, "TYPE": {"S": "X"}} for i in range(80)]
    put_items(client, source, items)
    p = project(copy(source, target), OUTPUTS, config=both_sides())
    out = p.up()
    assert "writing at most 40 items per second" in out, out
    assert scan(client, target) == scan(client, source)

    p.write(copy(source, target, maxWriteRate=500), OUTPUTS)
    client.put_item(TableName=source, Item={"id": {"S": "late"}, "TYPE": {"S": "X"}})
    out = p.up()
    assert "writing at most 500 items per second" in out, "an explicit maxWriteRate wins"


def test_a_set_attribute_of_the_wrong_type_for_a_target_index_is_refused_at_preview(project):
    client = dynamodb()
    source = create(client, unique("dev"), [("id", "S")])
    target = create(client, unique("prod"), [("id", "S")], gsi="score", gsi_type="N")
    put_items(client, source, [{"id": {"S": f"i{i}"}, "TYPE": {"S": "X"}} for i in range(5)])
    sets = [{"types": ["X"], "attribute": "score", "value": "high"}]
    p = project(copy(source, target, setAttributes=sets), OUTPUTS, config=both_sides())
    code, out = p.preview(check=False)
    assert code != 0 and 'the target\'s index "by-score" keys items by it as type N' in out, out
    code, out = p.up(check=False)
    assert code != 0 and "by-score" in out, out
    assert scan(client, target) == [], "nothing is written, not even halfway"
