"""S3 as AWS has it, on both copy paths: tags, storage class and encryption; archived
objects found at preview; every write proven by checksum; rollback on a versioned
target; the expected bucket owner. Run against both S3 servers: the storage class and
KMS tests need moto, which keeps them as AWS does; the owner test needs the Versity
gateway, which checks the header as AWS does."""

import base64
import os

import boto3
import pytest
from awscrt import checksums

from conftest import connection, listing, plan_counts, s3_client, s3_server

from test_bucket_sync import OUTPUTS, make_bucket, put_many

needs_storage_classes = pytest.mark.skipif(
    s3_server() != "moto",
    reason="the Versity gateway stores every object as STANDARD; moto keeps storage classes as AWS does",
)


def tags(s3, bucket, key):
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def buckets_for(path):
    """Clients and buckets of a copy: the source on side a, the target on side a (copied
    server side) or on side b (streamed through the provider)."""
    a = s3_client("a")
    target_side = "a" if path == "server side" else "b"
    t = s3_client(target_side)
    return a, t, target_side, make_bucket(a, "dev"), make_bucket(t, "prod")


def sync(source, target, **extra):
    return {"images": {"type": "stackmigrate:BucketSync", "properties": {"sourceBucket": source, "targetBucket": target, **extra}}}


@pytest.mark.parametrize("path", ["server side", "streamed"])
def test_tags_travel_with_the_copy_and_destroy_restores_the_old_ones(project, path):
    a, t, target_side, source, target = buckets_for(path)
    big = os.urandom(9 * 1024 * 1024)  # above the 8 MiB part size: a multipart upload when streamed
    a.put_object(Bucket=source, Key="model/weights.bin", Body=big, Tagging="stage=trained&owner=ml%20team")
    put_many(a, source, {f"img/{i}.png": os.urandom(2000) for i in range(5)}, Tagging="receipt=yes&dev=true")
    a.put_object(Bucket=source, Key="img/untagged.png", Body=b"plain")
    t.put_object(Bucket=target, Key="img/0.png", Body=b"prod's own", Tagging="keep=me")

    config = {"stackmigrate:target": connection(target_side)}
    p = project(sync(source, target, onConflict="overwrite"), OUTPUTS, config=config)
    p.up()
    assert tags(t, target, "model/weights.bin") == {"stage": "trained", "owner": "ml team"}
    for i in range(1, 5):
        assert tags(t, target, f"img/{i}.png") == {"receipt": "yes", "dev": "true"}, i
    overwritten = tags(t, target, "img/0.png")
    if path == "server side" and s3_server() == "moto":
        # moto's CopyObject adds the source's tags to those of the object it replaces;
        # AWS (and the Versity gateway) replace them.
        assert overwritten.items() >= {"receipt": "yes", "dev": "true"}.items()
    else:
        assert overwritten == {"receipt": "yes", "dev": "true"}
    assert tags(t, target, "img/untagged.png") == {}
    assert t.get_object(Bucket=target, Key="model/weights.bin")["Body"].read() == big
    assert p.outputs()["verified"] is True

    p.destroy()
    assert set(listing(t, target)) == {"img/0.png"}
    assert t.get_object(Bucket=target, Key="img/0.png")["Body"].read() == b"prod's own"
    assert tags(t, target, "img/0.png") == {"keep": "me"}, "the overwritten object's tags come back with it"


@needs_storage_classes
def test_archived_source_objects_fail_preview_then_are_left_out_when_asked(project):
    s3 = s3_client("a")
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    readable = {f"img/{i}.png": os.urandom(500) for i in range(5)}
    put_many(s3, source, readable)
    s3.put_object(Bucket=source, Key="img/old-1.png", Body=b"cold", StorageClass="GLACIER")
    s3.put_object(Bucket=source, Key="img/old-2.png", Body=b"cold", StorageClass="GLACIER")
    s3.put_object(Bucket=source, Key="img/older.png", Body=b"colder", StorageClass="DEEP_ARCHIVE")
    s3.put_object(Bucket=source, Key="img/instant.png", Body=b"instant", StorageClass="GLACIER_IR")
    readable["img/instant.png"] = b"instant"

    p = project(sync(source, target), OUTPUTS)
    code, out = p.run("preview", check=False)
    assert code != 0
    assert "3 source objects are archived" in out, out
    assert '"img/old-1.png" (GLACIER)' in out and '"img/older.png" (DEEP_ARCHIVE)' in out, out
    assert "archived: skip" in out, out
    code, out = p.up(check=False)
    assert code != 0 and "3 source objects are archived" in out, out
    assert listing(s3, target) == {}, "nothing is written, not even halfway"
    assert not p.journal_dir.exists()

    p.write(sync(source, target, archived="skip"), {**OUTPUTS, "objectsArchived": "${images.objectsArchived}"})
    counts = plan_counts(p.preview())
    assert (counts["objectsCopied"], counts["objectsArchived"]) == (6, 3)
    p.up()
    assert set(listing(s3, target)) == set(readable)
    for key, body in readable.items():
        assert s3.get_object(Bucket=target, Key=key)["Body"].read() == body, key
    out = p.outputs()
    assert (out["objectsCopied"], out["objectsArchived"], out["verified"]) == (6, 3, True)


@needs_storage_classes
def test_an_archived_target_object_to_overwrite_fails_preview_even_when_skipping(project):
    s3 = s3_client("a")
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    s3.put_object(Bucket=source, Key="a.png", Body=b"new")
    s3.put_object(Bucket=target, Key="a.png", Body=b"old", StorageClass="GLACIER")
    p = project(sync(source, target, archived="skip"))
    code, out = p.run("preview", check=False)
    assert code != 0
    assert "1 target objects this sync would overwrite or delete are archived" in out, out
    assert '"a.png" (GLACIER)' in out, out
    assert s3.get_object_attributes(Bucket=target, Key="a.png", ObjectAttributes=["StorageClass"])["StorageClass"] == "GLACIER"


def kms_key(side):
    """A KMS key on a moto server (moto serves KMS beside S3)."""
    kms = boto3.client(
        "kms",
        endpoint_url=os.environ[f"STACKMIGRATE_S3_{side.upper()}"],
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
    )
    return kms.create_key()["KeyMetadata"]["KeyId"]


@needs_storage_classes
@pytest.mark.parametrize("path", ["server side", "streamed"])
def test_storage_class_and_kms_key_given_are_those_of_every_written_object(project, path):
    a, t, target_side, source, target = buckets_for(path)
    source_key, target_key = kms_key("a"), kms_key(target_side)
    objects = {f"img/{i}.png": os.urandom(3000) for i in range(4)}
    objects["model/weights.bin"] = os.urandom(9 * 1024 * 1024)
    put_many(a, source, objects, ServerSideEncryption="aws:kms", SSEKMSKeyId=source_key)

    props = {"storageClass": "STANDARD_IA", "serverSideEncryption": "aws:kms", "sseKmsKeyId": target_key}
    p = project(sync(source, target, **props), OUTPUTS, config={"stackmigrate:target": connection(target_side)})
    p.up()
    assert set(listing(t, target)) == set(objects)
    for key, body in objects.items():
        got = t.get_object(Bucket=target, Key=key)
        assert got["Body"].read() == body, key
        assert got["StorageClass"] == "STANDARD_IA", key
        assert got["ServerSideEncryption"] == "aws:kms", key
        assert got["SSEKMSKeyId"].endswith(target_key), (key, got["SSEKMSKeyId"])
    assert p.outputs()["verified"] is True


@needs_storage_classes
@pytest.mark.parametrize("path", ["server side", "streamed"])
def test_by_default_objects_take_the_target_buckets_encryption_not_the_sources_key(project, path):
    a, t, target_side, source, target = buckets_for(path)
    put_many(a, source, {f"img/{i}.png": os.urandom(1000) for i in range(3)}, ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key("a"))
    t.put_bucket_encryption(
        Bucket=target,
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
    )
    p = project(sync(source, target), OUTPUTS, config={"stackmigrate:target": connection(target_side)})
    p.up()
    for key in listing(t, target):
        head = t.head_object(Bucket=target, Key=key)
        assert head["ServerSideEncryption"] == "AES256", key
        assert "SSEKMSKeyId" not in head, key
        assert head.get("StorageClass", "STANDARD") == "STANDARD", key


def test_unknown_storage_class_or_encryption_fails_at_preview_naming_the_choices(project):
    s3 = s3_client("a")
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    s3.put_object(Bucket=source, Key="a.png", Body=b"a")
    p = project(sync(source, target, storageClass="INFREQUENT", sseKmsKeyId="alias/prod"))
    code, out = p.run("preview", check=False)
    assert code != 0
    assert "storageClass" in out and "STANDARD_IA" in out, out
    assert "sseKmsKeyId" in out and "serverSideEncryption: aws:kms" in out, out
    assert listing(s3, target) == {}


def crc64nvme(data):
    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


def put_multipart(s3, bucket, key, parts):
    """An object uploaded in parts: its ETag is not an MD5 and its checksum is composite."""
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32")["UploadId"]
    done = []
    for number, body in enumerate(parts, 1):
        out = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body)
        done.append({"PartNumber": number, "ETag": out["ETag"], **{k: v for k, v in out.items() if k.startswith("Checksum")}})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done})


VERIFIED = {**OUTPUTS, **{n: "${images.%s}" % n
                          for n in ["verifiedByChecksum", "verifiedByEtag", "verifiedByContent", "verifiedBySize"]}}


@pytest.mark.parametrize("path", ["server side", "streamed"])
def test_every_write_is_proven_and_the_outputs_count_how(project, path):
    a, t, target_side, source, target = buckets_for(path)
    objects = {f"sha/{i}.bin": os.urandom(3000 + i) for i in range(3)}
    for key, body in objects.items():
        a.put_object(Bucket=source, Key=key, Body=body, ChecksumAlgorithm="SHA256")
    plain = {f"crc/{i}.bin": os.urandom(2000 + i) for i in range(3)}
    plain["big.bin"] = os.urandom(9 * 1024 * 1024)  # streamed in parts
    put_many(a, source, plain)  # boto3 stores a CRC32 by default
    objects.update(plain)
    multipart = [os.urandom(5 * 1024 * 1024), os.urandom(1024)]
    put_multipart(a, source, "multi.bin", multipart)
    objects["multi.bin"] = b"".join(multipart)

    p = project(sync(source, target), VERIFIED, config={"stackmigrate:target": connection(target_side)})
    out = p.up()
    for key, body in objects.items():
        assert t.get_object(Bucket=target, Key=key)["Body"].read() == body, key
    got = p.outputs()
    by = (got["verifiedByChecksum"], got["verifiedByEtag"], got["verifiedByContent"], got["verifiedBySize"])
    assert sum(by) == got["objectsCopied"] == len(objects), by
    # The multipart source has neither an MD5 ETag nor a whole-object checksum, and the
    # run says so rather than counting it as proven.
    assert by[3] == 1, by
    assert "1 objects were verified by size only" in out, out
    assert got["verified"] is False and "done, not verified" in out, "size alone is not proof"
    # moto reports each part's checksum but none of the whole upload: no MD5 was computed
    # past the first part, so big.bin is read back and its checksum compared there.
    read_back = 1 if path == "streamed" and s3_server() == "moto" else 0
    if path == "streamed":
        assert by[:3] == (len(objects) - 1 - read_back, 0, read_back), \
            "each read checked against the source's checksum, each write by its own"
    # The target keeps the source's checksum: the same algorithm, the same value.
    for key, body in objects.items():
        stored = t.head_object(Bucket=target, Key=key, ChecksumMode="ENABLED")
        if key == "multi.bin":
            if path == "streamed":  # composite at the source: the target gets a CRC64NVME of the bytes
                assert stored.get("ChecksumCRC64NVME") == crc64nvme(body)
            continue
        if key == "big.bin" and path == "streamed" and s3_server() == "moto":
            continue  # moto keeps no whole-object checksum of a multipart upload
        algorithm = "ChecksumSHA256" if key.startswith("sha/") else "ChecksumCRC32"
        source_value = a.head_object(Bucket=source, Key=key, ChecksumMode="ENABLED")[algorithm]
        assert stored.get(algorithm) == source_value, (key, stored)

    # verify: content reads what nothing else proves: every write is then proven.
    second = make_bucket(t, "prod-content")
    q = project(sync(source, second, verify="content"), {**VERIFIED, "verifiedByContent": "${images.verifiedByContent}"},
                config={"stackmigrate:target": connection(target_side)})
    out = q.up()
    got = q.outputs()
    assert (got["verifiedByContent"], got["verifiedBySize"]) == (1 + read_back, 0), got
    assert got["verified"] is True and "done and verified" in out, out


def versions_of(s3, bucket):
    """Key -> sorted (version, is latest, ETag) of every version and delete marker."""
    found = {}
    out = s3.list_object_versions(Bucket=bucket)
    for v in out.get("Versions", []) + out.get("DeleteMarkers", []):
        found.setdefault(v["Key"], []).append((v["VersionId"], v["IsLatest"], v.get("ETag", "marker")))
    assert not out.get("IsTruncated")
    return {key: sorted(vs) for key, vs in found.items()}


@pytest.mark.parametrize("path", ["server side", "streamed"])
def test_destroy_on_a_versioned_target_leaves_exactly_the_versions_from_before(project, path):
    a, t, target_side, source, target = buckets_for(path)
    t.put_bucket_versioning(Bucket=target, VersioningConfiguration={"Status": "Enabled"})
    t.put_object(Bucket=target, Key="img/0.png", Body=b"prod, first")
    t.put_object(Bucket=target, Key="img/0.png", Body=b"prod, second")
    t.put_object(Bucket=target, Key="img/old.png", Body=b"only in prod")
    objects = {f"img/{i}.png": os.urandom(2000) for i in range(4)}
    objects["img/big.bin"] = os.urandom(9 * 1024 * 1024)
    put_many(a, source, objects)
    before = versions_of(t, target)

    resource = sync(source, target, onConflict="overwrite", deleteExtraneous=True)
    p = project(resource, OUTPUTS, config={"stackmigrate:target": connection(target_side)})
    out = p.up()
    assert set(listing(t, target)) == set(objects), "img/old.png is deleted"
    for key, body in objects.items():
        assert t.get_object(Bucket=target, Key=key)["Body"].read() == body, key
    backups = list(p.journal_dir.rglob("backups"))

    p.destroy()
    assert t.get_object(Bucket=target, Key="img/0.png")["Body"].read() == b"prod, second"
    assert t.get_object(Bucket=target, Key="img/old.png")["Body"].read() == b"only in prod"
    if s3_server() == "moto":
        # moto answers GetBucketVersioning under a root element AWS does not use, which
        # the SDK refuses: the run says so and backs up instead, as without permission.
        assert "reading the versioning of" in out and "backed up in the journal instead" in out, out
        assert backups, "without the versioning setting, overwritten objects are backed up"
        return
    assert not backups, "a versioned target needs no backups"
    assert versions_of(t, target) == before, "the versions written and the delete marker are gone, nothing else"


@pytest.mark.skipif(s3_server() == "moto", reason="moto's GetBucketVersioning answer is refused by the SDK (see above)")
def test_destroy_refuses_when_a_versioned_targets_earlier_versions_are_gone(project):
    a, t, target_side, source, target = buckets_for("server side")
    t.put_bucket_versioning(Bucket=target, VersioningConfiguration={"Status": "Enabled"})
    t.put_object(Bucket=target, Key="img/0.png", Body=b"prod's")
    put_many(a, source, {"img/0.png": b"dev's", "img/1.png": b"new"})
    p = project(sync(source, target, onConflict="overwrite"), OUTPUTS, config={"stackmigrate:target": connection(target_side)})
    p.up()
    # A lifecycle rule expires the noncurrent version: prod's content is gone.
    for version in versions_of(t, target)["img/0.png"]:
        if not version[1]:
            t.delete_object(Bucket=target, Key="img/0.png", VersionId=version[0])
    code, out = p.run("destroy", "--yes", check=False)
    assert code != 0 and "cannot be put back" in out and '"img/0.png"' in out, out
    assert t.get_object(Bucket=target, Key="img/0.png")["Body"].read() == b"dev's", "nothing is done at that key"
    assert "img/1.png" not in listing(t, target), "the keys that can be undone are undone"
    assert p.journal_dir.exists(), "the journal is kept, and the resource in the state"
    assert "stackmigrate:index:BucketSync" in p.run("stack", "--show-urns")


@pytest.mark.skipif(
    s3_server() != "versitygw",
    reason="moto ignores x-amz-expected-bucket-owner; the Versity gateway checks it on every request as AWS does",
)
def test_expected_bucket_owner_goes_with_every_request_and_a_wrong_one_stops_preview(project):
    s3 = s3_client("a")
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    objects = {f"img/{i}.png": os.urandom(1000) for i in range(5)}
    put_many(s3, source, objects)
    owner = os.environ["STACKMIGRATE_S3_A_KEY"]  # the gateway's buckets belong to its root account
    right = {**connection("a"), "expectedBucketOwner": owner}
    p = project(sync(source, target), OUTPUTS, config={"stackmigrate:source": right, "stackmigrate:target": right})
    p.up()
    assert set(listing(s3, target)) == set(objects)
    assert p.outputs()["verified"] is True
    p.destroy()
    assert listing(s3, target) == {}

    wrong = {**connection("a"), "expectedBucketOwner": "111122223333"}
    for side in ["source", "target"]:
        q = project(sync(source, target), config={f"stackmigrate:{side}": wrong})
        code, out = q.run("preview", check=False)
        assert code != 0
        assert "access denied" in out and "account 111122223333" in out and f"the {side} connection's expectedBucketOwner" in out, out
        assert listing(s3, target) == {}


def test_the_default_journal_bucket_is_private_encrypted_and_versioned(project):
    """The bucket made for the default journal has what CDK's bootstrap bucket has: public
    access blocked, default encryption, versioning, and old versions expiring."""
    if s3_server() != "moto":
        pytest.skip("these are AWS's bucket settings: moto implements them, the Versity gateway not all")
    a = s3_client("a")
    source, target = make_bucket(a, "dev"), make_bucket(a, "prod")
    put_many(a, source, {"img/x.png": b"dev"})
    put_many(a, target, {"img/x.png": b"prod"})
    p = project(sync(source, target, onConflict="overwrite"), OUTPUTS)
    del p.config["stackmigrate:journal"]
    p.write(sync(source, target, onConflict="overwrite"), OUTPUTS)
    p.up()
    bucket = "stackmigrate-journal"
    block = a.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                     "RestrictPublicBuckets": True}, block
    rules = a.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256", rules
    assert a.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    lifecycle = a.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert lifecycle[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30, lifecycle
    backup = next(k for k in listing(a, bucket) if "/backups/" in k and p.stack in k)
    assert a.head_object(Bucket=bucket, Key=backup)["ServerSideEncryption"] == "AES256", "prod's backup is encrypted"
    p.destroy()
    assert a.get_object(Bucket=target, Key="img/x.png")["Body"].read() == b"prod"
