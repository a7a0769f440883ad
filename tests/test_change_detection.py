"""`changeDetection: inputs`: a preview or up with unchanged inputs reads no data; only a
changed input (here `triggers`) re-runs the copy. The default, `full`, is what every
other test exercises."""

import json
import os

from conftest import both_sides, listing, plan_counts, s3_client, unique
from portfolio_items import S, create_table, dynamodb, image_items, put_items, scan_all
from test_bucket_sync import make_bucket, put_many


def test_bucket_sync_with_inputs_detection_ignores_new_source_data_until_triggered(project):
    s3 = s3_client("a")
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    put_many(s3, source, {f"img/{i}.png": os.urandom(500) for i in range(5)})

    def program(triggers):
        props = {"sourceBucket": source, "targetBucket": target, "changeDetection": "inputs", "triggers": triggers}
        return {"images": {"type": "stackmigrate:BucketSync", "properties": props}}

    p = project(program([1]), {"copied": "${images.objectsCopied}"})
    p.up()
    assert len(listing(s3, target)) == 5
    s3.put_object(Bucket=source, Key="img/new.png", Body=b"new")

    out = p.preview()
    assert "plan:" not in out and "to update" not in out, out
    out = p.up()
    assert "img/new.png" not in listing(s3, target), "unchanged inputs read and write nothing"

    p.write(program([2]), {"copied": "${images.objectsCopied}"})
    assert plan_counts(p.preview())["objectsCopied"] == 1
    p.up()
    assert len(listing(s3, target)) == 6
    assert p.outputs()["copied"] == 1


def test_dynamo_copy_with_inputs_detection_ignores_new_items_until_triggered(project):
    client = dynamodb()
    source, target = create_table(client, unique("dev")), create_table(client, unique("prod"))
    put_items(client, source, image_items())

    def program(triggers):
        props = {"sourceTable": source, "targetTable": target, "changeDetection": "inputs", "triggers": triggers}
        return {"copy": {"type": "stackmigrate:DynamoCopy", "properties": props}}

    p = project(program(["a"]), config=both_sides())
    p.up()
    copied = len(scan_all(client, target))
    put_items(client, source, [{"PK": S("IMAGE#new"), "SK": S("IMAGE"), "TYPE": S("IMAGE")}])
    out = p.up()
    assert "plan:" not in out, out
    assert len(scan_all(client, target)) == copied

    p.write(program(["b"]), {})
    p.up()
    assert len(scan_all(client, target)) == copied + 1


def test_refresh_sees_items_lost_from_the_target_and_the_next_up_repairs_them(project):
    """`full` detection trusts a verified copy while the source is unchanged, so a plain
    preview reads only the source; `pulumi refresh` compares with the target itself."""
    client = dynamodb()
    source, target = create_table(client, unique("dev")), create_table(client, unique("prod"))
    put_items(client, source, image_items())
    props = {"sourceTable": source, "targetTable": target}
    p = project({"copy": {"type": "stackmigrate:DynamoCopy", "properties": props}}, config=both_sides())

    def drift():
        """The drift refresh recorded in the resource's state (stack outputs wait for an up)."""
        state = json.loads(p.state_text())["deployment"]["resources"]
        (copy,) = [r for r in state if r["type"] == "stackmigrate:index:DynamoCopy"]
        return copy["outputs"].get("drift")

    p.up()
    copied = scan_all(client, target)
    lost = sorted(copied)[:3]
    for pk, sk in lost:
        client.delete_item(TableName=target, Key={"PK": S(pk), "SK": S(sk)})

    p.run("refresh", "--yes", "--skip-preview")
    found = drift()
    assert found["pending"] is True and found["writes"] == 3, found
    assert plan_counts(p.preview())["itemsCopied"] == 3, "preview counts what is missing"
    assert len(scan_all(client, target)) == len(copied) - 3, "preview writes nothing"
    p.up()
    assert scan_all(client, target) == copied, "every lost item is back as it was"
    assert drift() is None, "the repairing up clears the drift"
    p.run("refresh", "--yes", "--skip-preview")
    assert drift()["pending"] is False


def test_refresh_sees_objects_lost_from_the_target_and_the_next_up_repairs_them(project):
    """The same for a bucket: objects deleted from the target after a verified copy are
    drift; an object prod changed since is prod's (`onConflict: skip`), not drift."""
    s3 = s3_client("a")
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    put_many(s3, source, {f"img/{i}.png": os.urandom(500) for i in range(8)})
    p = project({"images": {"type": "stackmigrate:BucketSync",
                            "properties": {"sourceBucket": source, "targetBucket": target, "onConflict": "skip"}}})

    def drift():
        state = json.loads(p.state_text())["deployment"]["resources"]
        (sync,) = [r for r in state if r["type"] == "stackmigrate:index:BucketSync"]
        return sync["outputs"].get("drift")

    def contents():
        return {k: s3.get_object(Bucket=target, Key=k)["Body"].read() for k in listing(s3, target)}

    p.up()
    copied = contents()
    assert len(copied) == 8
    for key in ("img/1.png", "img/5.png"):
        s3.delete_object(Bucket=target, Key=key)
    s3.put_object(Bucket=target, Key="img/2.png", Body=b"prod's edit")

    p.run("refresh", "--yes", "--skip-preview")
    found = drift()
    assert found["pending"] is True and found["writes"] == 2, found
    assert plan_counts(p.preview())["objectsCopied"] == 2, "preview counts what is missing"
    assert len(listing(s3, target)) == 6, "preview writes nothing"
    p.up()
    assert contents() == {**copied, "img/2.png": b"prod's edit"}, "the lost objects are back; prod's edit stays"
    assert drift() is None, "the repairing up clears the drift"
    p.run("refresh", "--yes", "--skip-preview")
    assert drift()["pending"] is False
