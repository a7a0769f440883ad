"""SnapshotPromote and ModelCopy through the real pulumi CLI against the S3 servers and DynamoDB Local."""

import json
import threading
from datetime import datetime, timedelta, timezone

from chroma_and_models import put_directory_snapshot, put_run, put_tarball_snapshot, set_pointer
from conftest import both_sides, listing, s3_client, unique
from portfolio_items import S, create_table, dynamodb

V1, V2, V3 = "20251120_153000_123456_ab12cd34", "20251121_090000_000001_cd34ef56", "20251122_120000_000002_ef56ab12"


def promote(source, target, lock_table, **extra):
    props = {"sourceBucket": source, "targetBucket": target, "sourceLockTable": lock_table, "targetLockTable": lock_table}
    props.update(extra)
    return {"embeddings": {"type": "stackmigrate:SnapshotPromote", "properties": props}}


SNAPSHOT_OUTPUTS = {k: "${embeddings.%s}" % k for k in ["promoted", "previousPointers", "filesCopied", "embeddingCounts", "verified"]}


def snapshot_buckets():
    s3 = s3_client("a")
    source, target = unique("chroma-dev"), unique("chroma-prod")
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=target)
    # lines: tarball format; words: the older directory format.
    put_tarball_snapshot(s3, source, "lines", V1, embeddings=120)
    put_tarball_snapshot(s3, source, "lines", V2, embeddings=150)
    set_pointer(s3, source, "lines", V2)
    # The newest directory is still being written: no hash yet. The pointer is not on it.
    put_tarball_snapshot(s3, source, "lines", V3, embeddings=10, with_hash=False)
    put_directory_snapshot(s3, source, "words", V1, embeddings=300)
    set_pointer(s3, source, "words", V1)
    # Prod already serves an older lines snapshot.
    put_tarball_snapshot(s3, target, "lines", "20250101_000000_000000_00000000", embeddings=5)
    set_pointer(s3, target, "lines", "20250101_000000_000000_00000000")
    lock_table = create_table(dynamodb(), unique("locks"), ttl=False)
    return s3, source, target, lock_table


def journal_order(journal_dir):
    """Keys in the order their write intents were journalled."""
    keys = []
    for segment in sorted(journal_dir.rglob("records/*.jsonl")):
        for line in segment.read_text().splitlines():
            record = json.loads(line)
            if record.get("op") == "write":
                keys.append(record["key"])
    return keys


def test_snapshot_promotion_end_to_end(project):
    s3, source, target, lock_table = snapshot_buckets()
    before = listing(s3, target)
    p = project(promote(source, target, lock_table), SNAPSHOT_OUTPUTS, config=both_sides())

    out = p.preview()
    assert f"lines: snapshot {V2} (150 embeddings)" in out and f"words: snapshot {V1} (300 embeddings)" in out, out
    assert listing(s3, target) == before and not p.journal_dir.exists()

    p.up()
    outputs = p.outputs()
    assert outputs["promoted"] == {"lines": V2, "words": V1}
    assert outputs["previousPointers"] == {"lines": "20250101_000000_000000_00000000", "words": ""}
    assert outputs["embeddingCounts"] == {"lines": 150, "words": 300} and outputs["verified"] is True
    for collection, version in outputs["promoted"].items():
        pointer = s3.get_object(Bucket=target, Key=f"{collection}/snapshot/latest-pointer.txt")["Body"].read().decode()
        assert pointer == version
        prefix = f"{collection}/snapshot/timestamped/{version}/"
        assert {k for k in listing(s3, target) if k.startswith(prefix)} == {k for k in listing(s3, source) if k.startswith(prefix)}
    assert not any("/delta/" in k or V3 in k for k in listing(s3, target))

    order = journal_order(p.journal_dir)
    for collection in ("lines", "words"):
        pointer_at = order.index(f"{collection}/snapshot/latest-pointer.txt")
        files_at = [i for i, k in enumerate(order) if k.startswith(f"{collection}/snapshot/timestamped/")]
        assert files_at and max(files_at) < pointer_at, "the pointer is written after the files it names"

    assert "updated" not in p.up(), "a second up copies nothing"

    p.destroy()
    assert listing(s3, target) == before, "destroy restores the old pointer and removes only what was copied"
    assert s3.get_object(Bucket=target, Key="lines/snapshot/latest-pointer.txt")["Body"].read() == b"20250101_000000_000000_00000000"


def test_incomplete_or_tampered_snapshots_are_refused_at_preview(project):
    s3, source, target, lock_table = snapshot_buckets()
    before = listing(s3, target)
    p = project(promote(source, target, lock_table, collections=["lines"], snapshot=V3), config=both_sides())
    code, out = p.preview(check=False)
    assert code != 0 and ".snapshot_hash is missing" in out, out

    put_tarball_snapshot(s3, source, "lines", "20251123_000000_000000_badbadba", embeddings=3, corrupt_hash=True)
    p = project(promote(source, target, lock_table, collections=["lines"], snapshot="20251123_000000_000000_badbadba"), config=both_sides())
    code, out = p.preview(check=False)
    assert code != 0 and "does not match its hash" in out, out
    assert listing(s3, target) == before and not p.journal_dir.exists()

    # A directory snapshot with an HNSW file of its vector segment missing.
    broken = "20251124_000000_000000_nohnswfl"
    prefix = put_directory_snapshot(s3, source, "words", broken, embeddings=300)
    hnsw = next(k for k in listing(s3, source) if k.startswith(prefix) and k.endswith("/data_level0.bin"))
    s3.delete_object(Bucket=source, Key=hnsw)
    p = project(promote(source, target, lock_table, collections=["words"], snapshot=broken), config=both_sides())
    code, out = p.preview(check=False)
    assert code != 0 and "names the vector segment" in out and "data_level0.bin is missing" in out, out
    assert listing(s3, target) == before and not p.journal_dir.exists()


def test_a_held_lock_makes_up_wait_then_fail_and_a_released_one_lets_it_through(project):
    s3, source, target, lock_table = snapshot_buckets()
    client = dynamodb()
    expires = (datetime.now(timezone.utc) + timedelta(minutes=3)).isoformat()
    client.put_item(TableName=lock_table, Item={
        "PK": S("LOCK#lines#chroma-lines-compaction"), "SK": S("LOCK"),
        "owner": S("compactor-7f3a"), "expires": S(expires), "heartbeat": S(expires),
    })
    before = listing(s3, target)
    p = project(promote(source, target, lock_table, lockWaitSeconds=3), SNAPSHOT_OUTPUTS, config=both_sides())
    assert "held by compactor-7f3a" in p.preview()
    code, out = p.up(check=False)
    assert code != 0 and "held by compactor-7f3a" in out and "waited 3 s" in out, out
    assert listing(s3, target) == before, "nothing is copied while the compactor holds the lock"

    client.delete_item(TableName=lock_table, Key={"PK": S("LOCK#lines#chroma-lines-compaction"), "SK": S("LOCK")})
    p.up()
    assert p.outputs()["promoted"]["lines"] == V2
    assert "Item" not in client.get_item(TableName=lock_table, Key={"PK": S("LOCK#lines#chroma-lines-compaction"), "SK": S("LOCK")}), \
        "the lock up took is released"

    # Destroy restores the pointer under the same lock: held, it waits, then fails having undone nothing.
    client.put_item(TableName=lock_table, Item={
        "PK": S("LOCK#lines#chroma-lines-compaction"), "SK": S("LOCK"),
        "owner": S("compactor-7f3a"), "expires": S(expires), "heartbeat": S(expires),
    })
    promoted = listing(s3, target)
    code, out = p.destroy(check=False)
    assert code != 0 and "held by compactor-7f3a" in out and "nothing was rolled back" in out, out
    assert listing(s3, target) == promoted, "destroy wrote while the compactor held the lock"
    client.delete_item(TableName=lock_table, Key={"PK": S("LOCK#lines#chroma-lines-compaction"), "SK": S("LOCK")})
    p.destroy()
    assert listing(s3, target) == before
    for collection in ("lines", "words"):
        key = {"PK": S(f"LOCK#{collection}#chroma-{collection}-compaction"), "SK": S("LOCK")}
        assert "Item" not in client.get_item(TableName=lock_table, Key=key), "the lock destroy took is released"


def test_up_takes_the_target_compactors_lock_so_the_compactor_cannot_promote_meanwhile(project):
    """A process playing the compactor: whenever it sees the promotion's lock, it tries to
    take the lock as the compactor does (conditional put) and, once it has it, to move
    the pointer. It can only get the lock once the promotion has released it, by which
    time the pointer names the promoted version."""
    s3, source, target, lock_table = snapshot_buckets()
    client = dynamodb()
    key = {"PK": S("LOCK#lines#chroma-lines-compaction"), "SK": S("LOCK")}
    pointer_key = "lines/snapshot/latest-pointer.txt"
    seen, refused, taken_over, done = set(), [], [], threading.Event()

    def pointer():
        return s3.get_object(Bucket=target, Key=pointer_key)["Body"].read().decode().strip()

    def compactor():
        while not done.is_set():
            item = client.get_item(TableName=lock_table, Key=key, ConsistentRead=True).get("Item")
            if item and item["owner"]["S"].startswith("stackmigrate"):
                seen.add(item["owner"]["S"])
                now = datetime.now(timezone.utc).isoformat()
                try:
                    client.put_item(
                        TableName=lock_table,
                        Item={**key, "owner": S("compactor-7f3a"), "expires": S(now), "heartbeat": S(now)},
                        ConditionExpression="attribute_not_exists(PK) OR expires < :now",
                        ExpressionAttributeValues={":now": S(now)},
                    )
                    # Released between the read and the put: the promotion is over.
                    taken_over.append(pointer())
                    set_pointer(s3, target, "lines", "20990101_000000_000000_compactor")
                    return
                except client.exceptions.ConditionalCheckFailedException:
                    refused.append(now)
            done.wait(0.05)

    watcher = threading.Thread(target=compactor)
    watcher.start()
    try:
        p = project(promote(source, target, lock_table, collections=["lines"]), SNAPSHOT_OUTPUTS, config=both_sides())
        p.up()
    finally:
        done.set()
        watcher.join()
    assert seen and refused, "the compactor never met the promotion's lock"
    assert p.outputs()["promoted"]["lines"] == V2
    assert taken_over in ([], [V2]), f"the compactor got the lock before the promotion moved the pointer: {taken_over}"
    if not taken_over:
        assert pointer() == V2, "the pointer was moved by someone without the lock"
        assert "Item" not in client.get_item(TableName=lock_table, Key=key), "the lock is released"


MODEL_OUTPUTS = {k: "${layoutlm.%s}" % k for k in ["runId", "checkpoint", "modelUri", "filesCopied", "verified"]}


def model_copy(source, target, **extra):
    props = {"sourceBucket": source, "targetBucket": target}
    props.update(extra)
    return {"layoutlm": {"type": "stackmigrate:ModelCopy", "properties": props}}


def test_model_copy_picks_the_newest_run_and_the_highest_checkpoint_as_numbers(project):
    s3 = s3_client("a")
    source, target = unique("layoutlm-dev"), unique("layoutlm-prod")
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=target)
    put_run(s3, source, "z-older-run", best=True)
    put_run(s3, source, "a-newer-run", checkpoints=(999, 1000))
    p = project(model_copy(source, target), MODEL_OUTPUTS, config=both_sides())
    out = p.preview()
    assert "run a-newer-run checkpoint-1000" in out, out
    assert listing(s3, target) == {}

    p.up()
    outputs = p.outputs()
    assert (outputs["runId"], outputs["checkpoint"]) == ("a-newer-run", "checkpoint-1000")
    prefix = "runs/a-newer-run/checkpoints/checkpoint-1000/"
    assert outputs["modelUri"] == f"s3://{target}/{prefix}"
    copied = set(listing(s3, target))
    assert prefix + "vocab.txt" in copied and prefix + "model.safetensors" in copied
    assert prefix + "training.log" not in copied, "*.log is excluded by default"
    assert "runs/a-newer-run/run.json" in copied
    assert not any("checkpoint-999" in k or "z-older-run" in k for k in copied)
    for key in copied:
        assert s3.get_object(Bucket=target, Key=key)["Body"].read() == s3.get_object(Bucket=source, Key=key)["Body"].read()
    assert "updated" not in p.up()
    p.destroy()
    assert listing(s3, target) == {}


def test_model_copy_bpe_tokenizer_arrives_and_incomplete_models_fail_at_preview(project):
    s3 = s3_client("a")
    source, target = unique("layoutlm-dev"), unique("layoutlm-prod")
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=target)
    put_run(s3, source, "bpe-run", best=True, tokenizer="bpe")
    put_run(s3, source, "no-weights", best=True, weights=False)

    p = project(model_copy(source, target, runId="bpe-run"), MODEL_OUTPUTS, config=both_sides())
    p.up()
    copied = set(listing(s3, target))
    assert {"runs/bpe-run/best/vocab.json", "runs/bpe-run/best/merges.txt"} <= copied

    broken = project(model_copy(source, target, runId="no-weights"), config=both_sides())
    code, out = broken.preview(check=False)
    assert code != 0 and "no best/model.safetensors and no checkpoint holding model weights" in out, out
    broken = project(model_copy(source, target, runId="no-weights", checkpoint="best"), config=both_sides())
    code, out = broken.preview(check=False)
    assert code != 0 and "is incomplete: missing model.safetensors" in out, out

    dropping = project(model_copy(source, target, runId="bpe-run", exclude=["*.txt"]), config=both_sides())
    code, out = dropping.preview(check=False)
    assert code != 0 and "merges.txt" in out and "would drop" in out, out
