"""DynamoCopy's mirror mode through the real pulumi CLI against DynamoDB Local: groups
(one image each) added, replaced and deleted with exact counts at preview, prod's own
embedding status kept on unchanged groups, and destroy restoring each."""

from conftest import both_sides, plan_counts, unique
from portfolio_items import S, create_table, dynamodb, put_items, scan_all

DEV_BUCKET, PROD_BUCKET = "raw-dev-mirror", "raw-prod-mirror"


def line(image, n, bucket, status=None, text="line"):
    item = {"PK": S(f"IMAGE#{image}"), "SK": S(f"LINE#{n}"), "TYPE": S("RECEIPT_LINE"),
            "text": S(text), "raw_s3_bucket": S(bucket)}
    if status:
        item["embedding_status"] = S(status)
    return item


def image(n, bucket, text="image"):
    return {"PK": S(f"IMAGE#{n}"), "SK": S("IMAGE"), "TYPE": S("IMAGE"), "raw_s3_bucket": S(bucket), "text": S(text)}


def test_mirror_adds_replaces_and_deletes_groups_and_destroy_restores_each(project):
    client = dynamodb()
    dev, prod = create_table(client, unique("dev")), create_table(client, unique("prod"))
    # Dev: images 1, 2 and 3 with two lines each.
    put_items(client, dev, [item for n in (1, 2, 3) for item in
                            [image(n, DEV_BUCKET), line(n, 1, DEV_BUCKET), line(n, 2, DEV_BUCKET)]])
    # Prod: image 1 as dev has it (prod's buckets, prod's embedding status): unchanged;
    # image 2 with another text and a third line: replaced; image 9 gone from dev; a job
    # (not a mirrored type) left alone. Image 3 is new.
    put_items(client, prod, [
        image(1, PROD_BUCKET), line(1, 1, PROD_BUCKET, "SUCCESS"), line(1, 2, PROD_BUCKET, "SUCCESS"),
        image(2, PROD_BUCKET, text="prod's edit"), line(2, 1, PROD_BUCKET, "SUCCESS"), line(2, 3, PROD_BUCKET),
        image(9, PROD_BUCKET), line(9, 1, PROD_BUCKET),
        {"PK": S("JOB#1"), "SK": S("JOB"), "TYPE": S("JOB")},
    ])
    before = scan_all(client, prod)
    props = {
        "sourceTable": dev, "targetTable": prod, "mode": "mirror",
        "includeTypes": ["IMAGE", "RECEIPT_LINE"], "rewrite": {DEV_BUCKET: PROD_BUCKET},
        "setAttributes": [{"types": ["RECEIPT_LINE"], "attribute": "embedding_status", "value": "NONE"}],
    }
    resources = {"receipts": {"type": "stackmigrate:DynamoCopy", "properties": props}}
    outputs = {name: "${receipts.%s}" % name for name in
               ["groupsAdded", "groupsReplaced", "groupsDeleted", "groupsUnchanged", "itemsCopied", "itemsDeleted"]}
    p = project(resources, outputs, config=both_sides())

    code, out = p.preview(check=False)
    assert code != 0
    assert "1 groups of the target are gone from the source, for example IMAGE#9" in out, out
    assert "set allowDeletes: true" in out, out

    props.update(groupKey="SK", allowDeletes=True)
    p.write(resources, outputs)
    code, out = p.preview(check=False)
    assert code != 0
    assert 'groupKey "SK" is not the partition key of table' in out, out
    del props["groupKey"]

    p.write(resources, outputs)
    counts = plan_counts(p.preview())
    expected = {"groupsAdded": 1, "groupsReplaced": 1, "groupsDeleted": 1, "groupsUnchanged": 1,
                "itemsCopied": 6, "itemsDeleted": 3}
    assert {k: counts[k] for k in expected} == expected, counts
    assert scan_all(client, prod) == before, "preview wrote"

    p.up()
    assert {k: p.outputs()[k] for k in expected} == expected
    after = scan_all(client, prod)
    want = dict(before)
    for gone in [("IMAGE#2", "LINE#3"), ("IMAGE#9", "IMAGE"), ("IMAGE#9", "LINE#1")]:
        del want[gone]
    for n in (2, 3):
        want[(f"IMAGE#{n}", "IMAGE")] = image(n, PROD_BUCKET)
        for k in (1, 2):
            want[(f"IMAGE#{n}", f"LINE#{k}")] = line(n, k, PROD_BUCKET, "NONE")
    assert after == want
    assert after[("IMAGE#1", "LINE#1")]["embedding_status"] == S("SUCCESS"), "an unchanged group was rewritten"

    again = p.preview()
    assert "2 unchanged" in again, "a mirrored table still has work to do:\n" + again

    p.destroy()
    assert scan_all(client, prod) == before
