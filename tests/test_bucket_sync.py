"""BucketSync through the real pulumi CLI against the S3 servers."""

import hashlib
import os
import re
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import connection, listing, plan_counts, s3_client, unique, wait_until

HEADERS = {
    "ContentType": "image/png",
    "CacheControl": "max-age=3600",
    "ContentDisposition": "inline",
    "Metadata": {"origin": "dev", "receipt": "00001"},
}


def make_bucket(s3, prefix="b"):
    name = unique(prefix)
    s3.create_bucket(Bucket=name)
    return name


def put_many(s3, bucket, objects, **extra):
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1], **extra), objects.items()))


def dev_objects(count=20):
    """Portfolio-shaped raw bucket content: images plus files the seed excludes."""
    objects = {f"raw/{i:05d}.png": os.urandom(1000 + i) for i in range(count)}
    objects["raw/00001.json"] = b'{"ocr": true}'
    objects["lines/delta/run1/delta.tar.gz"] = b"delta"
    objects["lines/snapshot/x"] = b"snapshot"
    objects["export.ndjson"] = b"{}\n"
    return objects


EXCLUDES = ["*.json", "*.ndjson", "*/delta/*", "*/snapshot/*"]


def sync_resource(source, target, **extra):
    props = {"sourceBucket": source, "targetBucket": target, "exclude": EXCLUDES}
    props.update(extra)
    return {"images": {"type": "stackmigrate:BucketSync", "properties": props}}


OUTPUTS = {
    name: "${images.%s}" % name
    for name in [
        "objectsScanned",
        "objectsCopied",
        "objectsSkipped",
        "objectsOverwritten",
        "objectsDeleted",
        "objectsExcluded",
        "bytesCopied",
        "verified",
        "journalUri",
    ]
}


@pytest.fixture
def dev_and_prod():
    s3 = s3_client("a")
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    objects = dev_objects()
    put_many(s3, source, {k: v for k, v in objects.items() if k.endswith(".png")}, **HEADERS)
    put_many(s3, source, {k: v for k, v in objects.items() if not k.endswith(".png")})
    return s3, source, target, objects


def expected_copies(objects):
    return {k: v for k, v in objects.items() if k.startswith("raw/") and k.endswith(".png")}


def test_preview_plans_and_writes_nothing(project, dev_and_prod):
    s3, source, target, objects = dev_and_prod
    p = project(sync_resource(source, target))
    before = listing(s3, target), listing(s3, source)
    out = p.preview()
    counts = plan_counts(out)
    copies = expected_copies(objects)
    assert counts["objectsCopied"] == len(copies)
    assert counts["bytesCopied"] == sum(len(v) for v in copies.values())
    assert counts["objectsExcluded"] == len(objects) - len(copies)
    assert counts["objectsScanned"] == len(objects)
    assert (listing(s3, target), listing(s3, source)) == before
    assert not p.journal_dir.exists(), "preview must not write a journal"


def test_up_copies_the_filtered_set_byte_for_byte_with_headers(project, dev_and_prod):
    s3, source, target, objects = dev_and_prod
    source_before = listing(s3, source)
    p = project(sync_resource(source, target), OUTPUTS)
    p.up()
    copies = expected_copies(objects)
    assert set(listing(s3, target)) == set(copies)
    for key, body in copies.items():
        got = s3.get_object(Bucket=target, Key=key)
        assert got["Body"].read() == body, key
        assert got["ContentType"] == HEADERS["ContentType"]
        assert got["CacheControl"] == HEADERS["CacheControl"]
        assert got["ContentDisposition"] == HEADERS["ContentDisposition"]
        assert got["Metadata"] == HEADERS["Metadata"]
    out = p.outputs()
    assert out["objectsCopied"] == len(copies)
    assert out["bytesCopied"] == sum(len(v) for v in copies.values())
    assert out["objectsExcluded"] == len(objects) - len(copies)
    assert out["verified"] is True
    assert out["journalUri"].startswith(f"file://{p.journal_dir}")
    assert listing(s3, source) == source_before, "the source is never written"


def test_second_up_copies_nothing_then_only_the_new_objects(project, dev_and_prod):
    s3, source, target, objects = dev_and_prod
    p = project(sync_resource(source, target), OUTPUTS)
    p.up()
    after_first = {k: s3.head_object(Bucket=target, Key=k)["LastModified"] for k in listing(s3, target)}

    out = p.up()
    assert "unchanged" in out and "updated" not in out, out
    assert {k: s3.head_object(Bucket=target, Key=k)["LastModified"] for k in listing(s3, target)} == after_first

    new = {f"raw/new/{i:03d}.png": os.urandom(2048) for i in range(50)}
    put_many(s3, source, new, **HEADERS)
    counts = plan_counts(p.preview())
    assert counts["objectsCopied"] == 50
    assert counts["bytesCopied"] == 50 * 2048
    assert counts["objectsSkipped"] == len(expected_copies(objects))
    p.up()
    assert p.outputs()["objectsCopied"] == 50
    target_now = listing(s3, target)
    assert set(target_now) == set(expected_copies(objects)) | set(new)
    for key, body in new.items():
        assert s3.get_object(Bucket=target, Key=key)["Body"].read() == body


def test_destroy_restores_overwritten_deletes_created_and_leaves_others_changes(project, dev_and_prod):
    s3, source, target, objects = dev_and_prod
    copies = expected_copies(objects)
    keys = sorted(copies)
    overwritten, changed_later, untouched_extra = keys[0], keys[1], "prod-only/keep.txt"
    s3.put_object(Bucket=target, Key=overwritten, Body=b"prod's own content", ContentType="text/plain", Metadata={"v": "old"})
    s3.put_object(Bucket=target, Key=untouched_extra, Body=b"prod only")
    before = {k: s3.get_object(Bucket=target, Key=k)["Body"].read() for k in listing(s3, target)}

    p = project(sync_resource(source, target), OUTPUTS)
    assert plan_counts(p.preview())["objectsOverwritten"] == 1
    p.up()
    assert p.outputs()["objectsOverwritten"] == 1
    assert s3.get_object(Bucket=target, Key=overwritten)["Body"].read() == copies[overwritten]

    # Someone else writes to a copied object after the migration.
    s3.put_object(Bucket=target, Key=changed_later, Body=b"edited in prod after the copy")

    out = p.destroy()
    assert changed_later in out and "left as they are" in out, out
    after = {k: s3.get_object(Bucket=target, Key=k)["Body"].read() for k in listing(s3, target)}
    expected = dict(before)
    expected[changed_later] = b"edited in prod after the copy"
    assert after == expected
    restored = s3.head_object(Bucket=target, Key=overwritten)
    assert restored["ContentType"] == "text/plain" and restored["Metadata"] == {"v": "old"}
    assert not p.journal_dir.exists() or not any(p.journal_dir.rglob("*.jsonl")), "destroy clears the journal"


def test_streamed_copy_across_endpoints_with_multipart_and_secret_credentials(project):
    a, b = s3_client("a"), s3_client("b")
    source, target = make_bucket(a, "dev"), make_bucket(b, "prod")
    big = os.urandom(20 * 1024 * 1024 + 123)  # above the 8 MiB part size
    small = {f"img/{i}.png": os.urandom(5000) for i in range(10)}
    a.put_object(Bucket=source, Key="model/weights.bin", Body=big, ContentType="application/octet-stream", Metadata={"step": "1000"})
    put_many(a, source, small, **HEADERS)

    target_conn = connection("b")
    secret = target_conn.pop("secretAccessKey")
    p = project(sync_resource(source, target, exclude=[]), OUTPUTS, config={"stackmigrate:target": target_conn})
    p.set_config("stackmigrate:target.secretAccessKey", secret, secret=True)

    assert plan_counts(p.preview())["objectsCopied"] == 11
    p.up()
    got = b.get_object(Bucket=target, Key="model/weights.bin")
    assert got["Body"].read() == big
    assert got["ContentType"] == "application/octet-stream" and got["Metadata"] == {"step": "1000"}
    assert got["ETag"].strip('"').endswith("-3"), "20 MiB in 8 MiB parts is a 3-part upload"
    for key, body in small.items():
        obj = b.get_object(Bucket=target, Key=key)
        assert obj["Body"].read() == body and obj["Metadata"] == HEADERS["Metadata"]
    assert p.outputs()["verified"] is True
    state = p.state_text()
    assert os.environ["STACKMIGRATE_S3_B_SECRET"] not in state, "secrets stay secret in state"
    # The source's credentials were set without --secret: the provider marks them secret.
    assert os.environ["STACKMIGRATE_S3_A_SECRET"] not in state, "credentials stay secret in state"

    out = p.up()
    assert "updated" not in out, "multipart ETags differ across endpoints; the journal must still see them as in sync"
    p.destroy()
    assert listing(b, target) == {}


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing source bucket", "does not exist"),
        ("invalid glob", "invalid glob"),
        ("source equals target", "same place"),
        ("invalid onConflict", "skipIdentical"),
        ("journal inside the source bucket", "inside the source bucket"),
        ("filters select nothing", "select none of the"),
        ("prefix selects nothing", "selects nothing"),
    ],
)
def test_bad_input_fails_at_preview_and_writes_nothing(project, dev_and_prod, case, expected):
    s3, source, target, _ = dev_and_prod
    resources = {
        "missing source bucket": sync_resource(unique("missing"), target),
        "invalid glob": sync_resource(source, target, exclude=["raw/[ab"]),
        "source equals target": sync_resource(source, source),
        "invalid onConflict": sync_resource(source, target, onConflict="replace"),
        "journal inside the source bucket": sync_resource(source, target),
        "filters select nothing": sync_resource(source, target, exclude=["*"]),
        "prefix selects nothing": sync_resource(source, target, sourcePrefix="raw-typo/"),
    }[case]
    config = {"stackmigrate:journal": f"s3://{source}/migrations"} if "journal" in case else None
    before = listing(s3, target), listing(s3, source)
    p = project(resources, config=config)
    code, out = p.preview(check=False)
    assert code != 0 and expected in out, out
    code, out = p.up(check=False)
    assert code != 0 and expected in out, out
    assert (listing(s3, target), listing(s3, source)) == before
    assert not p.journal_dir.exists()


def test_aws_without_a_region_fails_at_preview_naming_the_setting(project, monkeypatch):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    aws = {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "example"}
    p = project(sync_resource("portfolio-dev-images", "portfolio-prod-images"),
                config={"stackmigrate:source": aws, "stackmigrate:target": aws})
    code, out = p.preview(check=False)
    assert code != 0 and "stackmigrate:source.region" in out and "AWS_REGION" in out, out


def test_an_empty_selection_passes_when_allowed(project, dev_and_prod):
    s3, source, target, _ = dev_and_prod
    before = listing(s3, target)
    p = project(sync_resource(source, target, sourcePrefix="not-yet/", allowEmpty=True), OUTPUTS)
    assert plan_counts(p.preview())["objectsCopied"] == 0
    p.up()
    assert p.outputs()["objectsCopied"] == 0 and listing(s3, target) == before


def test_killed_mid_copy_the_next_up_finishes_exactly(project):
    a, b = s3_client("a"), s3_client("b")
    source, target = make_bucket(a, "dev"), make_bucket(b, "prod")
    objects = {f"img/{i:05d}.png": os.urandom(2048) for i in range(3000)}
    put_many(a, source, objects)
    p = project(sync_resource(source, target, exclude=[]), OUTPUTS, config={"stackmigrate:target": connection("b")})

    up = p.up_in_background()
    started = wait_until(lambda: b.list_objects_v2(Bucket=target, MaxKeys=1).get("KeyCount", 0) > 0, timeout=120)
    assert started, "the copy never started"
    children = subprocess.run(["pgrep", "-P", str(up.pid), "-f", "pulumi-resource-stackmigrate"], capture_output=True, text=True).stdout.split()
    assert children, "the provider process was not found"
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    up.wait(timeout=120)
    partial = listing(b, target)
    assert 0 < len(partial) < len(objects), f"expected a partial copy, found {len(partial)}"

    p.up()
    final = listing(b, target)
    assert set(final) == set(objects)
    for key in list(objects)[:: 97]:
        assert b.get_object(Bucket=target, Key=key)["Body"].read() == objects[key]
    assert "updated" not in p.up(), "after the resumed run the target is in step"
    p.destroy()
    assert listing(b, target) == {}, "destroy removes what the killed run wrote too"


def kill_provider_mid_copy(up, started, timeout=120):
    """SIGKILLs the provider under a background `pulumi up` once `started()` holds."""
    assert wait_until(started, timeout=timeout), "the copy never started"
    children = subprocess.run(["pgrep", "-P", str(up.pid), "-f", "pulumi-resource-stackmigrate"], capture_output=True, text=True).stdout.split()
    assert children, "the provider process was not found"
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    up.wait(timeout=120)


def adopt_interrupted_run(p):
    """Runs the `pulumi import` that preview prints after a killed run."""
    out = p.preview()
    assert "was interrupted" in out, out
    command = re.search(r"`(pulumi import [^`]*)`", out).group(1).split()
    p.run(*command[1:])


def test_killed_mid_copy_import_then_destroy_restores_the_target(project):
    a, b = s3_client("a"), s3_client("b")
    source, target = make_bucket(a, "dev"), make_bucket(b, "prod")
    objects = {f"img/{i:05d}.png": os.urandom(2048) for i in range(3000)}
    put_many(a, source, objects)
    prod_own = {f"img/{i:05d}.png": b"prod's own" for i in range(0, 3000, 500)}
    prod_own["keep/me.txt"] = b"untouched"
    put_many(b, target, prod_own)
    before = {k: b.get_object(Bucket=target, Key=k)["Body"].read() for k in listing(b, target)}
    resources = sync_resource(source, target, exclude=[], onConflict="overwrite")
    p = project(resources, OUTPUTS, config={"stackmigrate:target": connection("b")})

    up = p.up_in_background()
    kill_provider_mid_copy(up, lambda: len(listing(b, target)) > len(prod_own) + 10)
    assert len(listing(b, target)) < len(objects) + 1, "the copy finished before the kill"

    adopt_interrupted_run(p)
    assert "stackmigrate:index:BucketSync" in p.state_text(), "the import adopts the interrupted copy"
    out = p.destroy()
    assert "rolled back" in out, out
    after = {k: b.get_object(Bucket=target, Key=k)["Body"].read() for k in listing(b, target)}
    assert after == before, "destroy after a killed up restores every overwritten and created object"


def test_s3_journal_on_the_target_connection(project, dev_and_prod):
    s3, source, target, objects = dev_and_prod
    journal_bucket = make_bucket(s3, "journal")
    s3.put_object(Bucket=target, Key=sorted(expected_copies(objects))[0], Body=b"old")
    p = project(sync_resource(source, target), OUTPUTS, config={"stackmigrate:journal": f"s3://{journal_bucket}/migrations"})
    p.up()
    journal = listing(s3, journal_bucket)
    assert any("/records/" in k for k in journal) and any("/backups/" in k for k in journal), journal
    assert p.outputs()["journalUri"].startswith(f"s3://{journal_bucket}/migrations/")
    p.destroy()
    assert listing(s3, target) == {sorted(expected_copies(objects))[0]: (3, '"%s"' % hashlib.md5(b"old").hexdigest())}
    assert listing(s3, journal_bucket) == {}
