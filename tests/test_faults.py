"""Faults, through the real pulumi CLI: the fault proxies (tests/faultproxy.py) in front of
MinIO "a" and DynamoDB Local throttle, drop connections, or refuse writes after a
number of them. Copies stay exact; an `up` that fails after writing keeps the resource
in the state, so `pulumi destroy` restores the target; a killed `up` is imported and
destroyed the same way. No secret reaches the state, the journal or the output."""

import json
import os
import urllib.request

import pytest

from conftest import connection, listing, s3_client, unique
from portfolio_items import S, create_table, dynamodb, image_items, key, normalize, put_items, scan_all
from test_bucket_sync import adopt_interrupted_run, kill_provider_mid_copy, make_bucket, put_many

SECRETS = ("STACKMIGRATE_S3_A_SECRET", "STACKMIGRATE_S3_B_SECRET")


def set_faults(service, **settings):
    """Replaces the faults of one proxy (s3 or dynamodb) and returns its counters."""
    url = os.environ[{"s3": "STACKMIGRATE_S3_A_FAULTY", "dynamodb": "STACKMIGRATE_DYNAMODB_FAULTY"}[service]]
    request = urllib.request.Request(f"{url}/__faultproxy", data=json.dumps(settings).encode(), method="PUT")
    return json.loads(urllib.request.urlopen(request).read())


def counters(service):
    url = os.environ[{"s3": "STACKMIGRATE_S3_A_FAULTY", "dynamodb": "STACKMIGRATE_DYNAMODB_FAULTY"}[service]]
    return json.loads(urllib.request.urlopen(f"{url}/__faultproxy").read())


@pytest.fixture(autouse=True)
def no_faults_after():
    yield
    set_faults("s3")
    set_faults("dynamodb")


def keyless(**extra):
    """MinIO "a"'s connection without its secret key, which `with_secret_keys` sets as a
    Pulumi secret."""
    side = {**connection("a"), **extra}
    del side["secretAccessKey"]
    return side


def with_secret_keys(p):
    for side in ("source", "target"):
        p.set_config(f"stackmigrate:{side}.secretAccessKey", os.environ["STACKMIGRATE_S3_A_SECRET"], secret=True)
    return p


def faulty_s3():
    """Source MinIO "a", target MinIO "a" through its fault proxy: another endpoint, so
    copies stream and every write passes the faults."""
    return {
        "stackmigrate:source": keyless(),
        "stackmigrate:target": keyless(endpoint=os.environ["STACKMIGRATE_S3_A_FAULTY"]),
    }


def faulty_dynamodb():
    """Source DynamoDB Local, target DynamoDB Local through its fault proxy."""
    return {
        "stackmigrate:source": keyless(dynamodbEndpoint=os.environ["STACKMIGRATE_DYNAMODB"]),
        "stackmigrate:target": keyless(dynamodbEndpoint=os.environ["STACKMIGRATE_DYNAMODB_FAULTY"]),
    }


def direct_dynamodb():
    side = keyless(dynamodbEndpoint=os.environ["STACKMIGRATE_DYNAMODB"])
    return {"stackmigrate:source": side, "stackmigrate:target": side}


def contents(s3, bucket):
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in listing(s3, bucket)}


def assert_no_secret(p, *outputs):
    texts = [p.state_text(), *outputs]
    texts += [f.read_text() for f in p.journal_dir.rglob("*") if f.is_file() and f.suffix in (".jsonl", ".json")]
    for name in SECRETS:
        assert not any(os.environ[name] in text for text in texts), f"{name} leaked"


def sync(source, target, **extra):
    props = {"sourceBucket": source, "targetBucket": target, **extra}
    return {"images": {"type": "stackmigrate:BucketSync", "properties": props}}


SYNC_OUTPUTS = {name: "${images.%s}" % name for name in ["objectsCopied", "verified", "retries", "throttles"]}


@pytest.fixture
def buckets():
    s3 = s3_client("a")
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    objects = {f"img/{i:04d}.png": os.urandom(1024 + i) for i in range(400)}
    objects["model/weights.bin"] = os.urandom(20 * 1024 * 1024 + 5)  # three 8 MiB parts
    put_many(s3, source, objects)
    # Prod's own objects: some under keys the copy overwrites.
    prod_own = {f"img/{i:04d}.png": b"prod's own" for i in range(0, 400, 40)}
    prod_own["keep/me.txt"] = b"untouched"
    put_many(s3, target, prod_own)
    return s3, source, target, objects


def test_bucket_sync_is_exact_under_throttling_and_resets(project, buckets):
    s3, source, target, objects = buckets
    p = with_secret_keys(project(sync(source, target, onConflict="overwrite"), SYNC_OUTPUTS, config=faulty_s3()))
    set_faults("s3", throttle=0.2, reset=0.05)
    out = p.up()
    seen = counters("s3")
    assert seen["throttled"] > 0 and seen["reset"] > 0, seen
    got = contents(s3, target)
    assert {k: got[k] for k in objects} == objects, "every object byte for byte"
    assert got["keep/me.txt"] == b"untouched"
    outputs = p.outputs()
    assert outputs["verified"] is True and outputs["objectsCopied"] == len(objects)
    assert outputs["retries"] > 0 and outputs["throttles"] > 0, outputs
    assert_no_secret(p, out)


def test_bucket_sync_failed_up_then_destroy_restores_the_target(project, buckets):
    s3, source, target, objects = buckets
    before = contents(s3, target)
    p = with_secret_keys(project(sync(source, target, onConflict="overwrite"), SYNC_OUTPUTS, config=faulty_s3()))
    set_faults("s3", deny_writes_after=150, deny_prefix=f"/{target}/")
    code, out = p.up(check=False)
    assert code != 0 and "AccessDenied" in out and "pulumi destroy" in out, out
    assert counters("s3")["denied"] > 0
    partial = contents(s3, target)
    assert partial != before and len(partial) < len(objects) + 1, "the up failed midway"
    assert "stackmigrate:index:BucketSync" in p.state_text(), "the engine keeps what failed after writing"
    set_faults("s3")
    out = p.destroy()
    assert contents(s3, target) == before, "destroy restores every overwritten and created object"
    assert_no_secret(p, out)


def test_writes_that_landed_before_a_refusal_are_confirmed_and_rolled_back(project):
    """Ten streamed multipart overwrites; the target refuses to complete uploads after
    four. The four that landed are the resource's (confirmed in the journal although the
    run failed), so destroy restores prod's originals under all ten keys."""
    s3 = s3_client("a")
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    dev = {f"model/{i}.bin": os.urandom(9 * 1024 * 1024) for i in range(10)}
    prod = {key: f"prod's {key}".encode() for key in dev}
    put_many(s3, source, dev)
    put_many(s3, target, prod)
    p = project(sync(source, target, onConflict="overwrite"), SYNC_OUTPUTS, config=faulty_s3())
    set_faults("s3", refuse_operation="CompleteMultipartUpload", refuse_after=4)
    code, out = p.up(check=False)
    assert code != 0 and "AccessDenied" in out, out
    landed = [key for key, body in contents(s3, target).items() if body == dev[key]]
    assert len(landed) == 4, f"{len(landed)} uploads completed: {counters('s3')}"
    assert "stackmigrate:index:BucketSync" in p.state_text()
    set_faults("s3")
    p.destroy()
    assert contents(s3, target) == prod, "prod's originals back under every key, the four landed copies too"


def test_a_failed_up_whose_target_stays_down_is_kept_and_destroy_restores(project, buckets):
    """The target refuses everything from some point on, so no plan can be made after the
    failure: the state keeps the names the run resolved, and destroy (once the target is
    back) rolls back what was written."""
    s3, source, target, objects = buckets
    before = contents(s3, target)
    p = project(sync(source, target, onConflict="overwrite"), SYNC_OUTPUTS, config=faulty_s3())
    set_faults("s3", refuse_operation="*", refuse_after=250)
    code, out = p.up(check=False)
    assert code != 0 and "AccessDenied" in out, out
    assert "could not be planned against after the failure" in out, out
    partial = contents(s3, target)
    assert partial != before and len(partial) < len(objects) + 1, "the up failed midway"
    assert "stackmigrate:index:BucketSync" in p.state_text(), "the engine keeps what failed after writing"
    set_faults("s3")
    p.destroy()
    assert contents(s3, target) == before, "destroy restores every overwritten and created object"


TABLE_OUTPUTS = {name: "${receipts.%s}" % name for name in ["itemsCopied", "verified", "retries", "throttles"]}


def table_copy(source, target, **extra):
    props = {"sourceTable": source, "targetTable": target, "onConflict": "overwrite", **extra}
    return {"receipts": {"type": "stackmigrate:DynamoCopy", "properties": props}}


@pytest.fixture
def tables():
    client = dynamodb()
    source = create_table(client, unique("dev-receipts"))
    target = create_table(client, unique("prod-receipts"))
    items = image_items(images=30, lines=10, words=5)  # about 3,000 items
    put_items(client, source, items)
    clash = {**items[0], "note": S("prod's own")}
    put_items(client, target, [clash, {"PK": S("IMAGE#prod-only"), "SK": S("IMAGE"), "TYPE": S("IMAGE")}])
    return client, source, target, items


def test_dynamo_copy_is_exact_under_throttling_and_resets(project, tables):
    client, source, target, items = tables
    p = with_secret_keys(project(table_copy(source, target), TABLE_OUTPUTS, config=faulty_dynamodb()))
    set_faults("dynamodb", throttle=0.2, reset=0.05)
    out = p.up()
    seen = counters("dynamodb")
    assert seen["throttled"] > 0 and seen["reset"] > 0, seen
    got = scan_all(client, target)
    for item in items:
        assert got[key(item)] == normalize(item)
    assert len(got) == len(items) + 1
    outputs = p.outputs()
    assert outputs["verified"] is True and outputs["retries"] > 0 and outputs["throttles"] > 0, outputs
    assert_no_secret(p, out)


def test_dynamo_copy_failed_up_then_destroy_restores_the_target(project, tables):
    client, source, target, items = tables
    before = scan_all(client, target)
    p = with_secret_keys(project(table_copy(source, target), TABLE_OUTPUTS, config=faulty_dynamodb()))
    set_faults("dynamodb", deny_writes_after=20)
    code, out = p.up(check=False)
    assert code != 0 and "AccessDenied" in out, out
    assert len(scan_all(client, target)) > len(before), "the up failed after writing"
    set_faults("dynamodb")
    p.destroy()
    assert scan_all(client, target) == before, "destroy restores the overwritten item and deletes the rest"


def test_dynamo_copy_killed_up_import_then_destroy_restores_the_target(project, tables):
    client, source, target, items = tables
    before = scan_all(client, target)
    p = with_secret_keys(project(table_copy(source, target, maxWriteRate=500), TABLE_OUTPUTS, config=direct_dynamodb()))
    up = p.up_in_background()
    kill_provider_mid_copy(up, lambda: len(scan_all(client, target)) > len(before) + 50)
    assert len(scan_all(client, target)) < len(items) + 1, "the copy finished before the kill"
    adopt_interrupted_run(p)
    p.destroy()
    assert scan_all(client, target) == before, "destroy after a killed up restores the target"
