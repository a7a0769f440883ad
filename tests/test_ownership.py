"""What a resource wrote is its own only while the target still holds it (issue 21):
a key the prod app changed after the copy is the app's again. A later up applies
`onConflict` to it (skip leaves it; an overwrite backs the app's content up first) and
destroy puts back the app's content, never the copy's, and never deletes it."""

import pytest

from conftest import both_sides, s3_client, unique
from portfolio_items import S, create_table, dynamodb, put_items, scan_all
from test_bucket_sync import make_bucket, put_many
from test_rollback_anywhere import contents


@pytest.mark.parametrize("on_conflict", ["skip", "skipIdentical"])
def test_bucket_sync_respects_prod_edits_across_a_second_up(project, on_conflict):
    s3 = s3_client()
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    put_many(s3, source, {"a.png": b"dev a", "b.png": b"dev b", "c.png": b"dev c"})
    resources = {"images": {"type": "stackmigrate:BucketSync",
                            "properties": {"sourceBucket": source, "targetBucket": target, "onConflict": on_conflict}}}
    p = project(resources)
    p.up()
    assert contents(s3, target) == {"a.png": b"dev a", "b.png": b"dev b", "c.png": b"dev c"}

    # The prod app edits two copied objects; dev changes one of them and adds one.
    put_many(s3, target, {"b.png": b"prod's edit of b", "c.png": b"prod's edit of c"})
    put_many(s3, source, {"c.png": b"dev c, second version", "d.png": b"dev d"})
    preview = p.preview()
    assert "2 objects this resource wrote were changed by someone else since" in preview, preview
    assert contents(s3, target)["b.png"] == b"prod's edit of b", "preview writes nothing"
    out = p.up()
    assert "changed by someone else since" in out, out
    after = contents(s3, target)
    assert after["d.png"] == b"dev d" and after["a.png"] == b"dev a"
    if on_conflict == "skip":
        assert (after["b.png"], after["c.png"]) == (b"prod's edit of b", b"prod's edit of c"), "skip leaves prod's edits"
    else:
        assert (after["b.png"], after["c.png"]) == (b"dev b", b"dev c, second version")

    p.destroy()
    assert contents(s3, target) == {"b.png": b"prod's edit of b", "c.png": b"prod's edit of c"}, \
        "prod's edits are back (or were never touched); what the copy alone wrote is gone"


@pytest.mark.parametrize("on_conflict", ["skip", "overwrite"])
def test_dynamo_copy_respects_prod_edits_across_a_second_up(project, on_conflict):
    client = dynamodb()
    source = create_table(client, unique("dev-receipts"))
    target = create_table(client, unique("prod-receipts"))

    def item(i, v):
        return {"PK": S(f"IMAGE#{i}"), "SK": S("IMAGE"), "TYPE": S("IMAGE"), "v": S(v)}

    put_items(client, source, [item(i, f"dev {i}") for i in range(6)])
    resources = {"receipts": {"type": "stackmigrate:DynamoCopy",
                              "properties": {"sourceTable": source, "targetTable": target, "onConflict": on_conflict}}}
    p = project(resources, config=both_sides())
    p.up()
    assert len(scan_all(client, target)) == 6

    put_items(client, target, [item(1, "prod's edit of 1"), item(2, "prod's edit of 2")])
    put_items(client, source, [item(2, "dev 2, second version"), item(6, "dev 6")])
    preview = p.preview()
    assert "2 items this resource wrote were changed by someone else since" in preview, preview
    out = p.up()
    assert "changed by someone else since" in out, out
    after = {row["PK"]["S"]: row["v"]["S"] for row in scan_all(client, target).values()}
    assert after["IMAGE#6"] == "dev 6" and after["IMAGE#0"] == "dev 0"
    if on_conflict == "skip":
        assert (after["IMAGE#1"], after["IMAGE#2"]) == ("prod's edit of 1", "prod's edit of 2")
    else:
        assert (after["IMAGE#1"], after["IMAGE#2"]) == ("dev 1", "dev 2, second version")

    p.destroy()
    left = {row["PK"]["S"]: row["v"]["S"] for row in scan_all(client, target).values()}
    assert left == {"IMAGE#1": "prod's edit of 1", "IMAGE#2": "prod's edit of 2"}


def test_a_second_migration_into_a_claimed_table_is_refused_until_the_first_is_destroyed(project, tmp_path):
    """Two stacks whose journals share one place (here one folder; by default the bucket
    on the target connection) see each other's claims."""
    client = dynamodb()
    source_a, source_b = create_table(client, unique("dev-a")), create_table(client, unique("dev-b"))
    target = create_table(client, unique("prod"))
    put_items(client, source_a, [{"PK": S("IMAGE#1"), "SK": S("IMAGE"), "TYPE": S("IMAGE"), "v": S("a")}])
    put_items(client, source_b, [{"PK": S("IMAGE#1"), "SK": S("IMAGE"), "TYPE": S("IMAGE"), "v": S("b")}])
    prod = {"PK": S("IMAGE#1"), "SK": S("IMAGE"), "TYPE": S("IMAGE"), "v": S("prod's own")}
    put_items(client, target, [prod])
    before = scan_all(client, target)
    shared = {**both_sides(), "stackmigrate:journal": f"file://{tmp_path}/journals"}

    def copy(source):
        return {"receipts": {"type": "stackmigrate:DynamoCopy",
                             "properties": {"sourceTable": source, "targetTable": target, "onConflict": "overwrite"}}}

    a = project(copy(source_a), config=shared)
    b = project(copy(source_b), config=shared)
    a.preview()
    assert not (tmp_path / "journals").exists(), "a preview claims nothing"
    a.up()
    for command in (b.preview, b.up):
        code, out = command(check=False)
        assert code != 0 and "another live migration" in out and f"{a.name}/{a.stack}/DynamoCopy/receipts" in out, out
    assert {r["v"]["S"] for r in scan_all(client, target).values()} == {"a"}, "B wrote nothing"

    a.destroy()
    assert scan_all(client, target) == before
    b.up()
    assert {r["v"]["S"] for r in scan_all(client, target).values()} == {"b"}
    b.destroy()
    assert scan_all(client, target) == before, "prod's item back"


def test_bucket_migrations_into_overlapping_prefixes_are_refused_disjoint_ones_pass(project):
    """With the default journal, claims live in the journal bucket on the target."""
    s3 = s3_client()
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    put_many(s3, source, {"img/1.png": b"dev 1", "img/2.png": b"dev 2"})

    def sync(prefix):
        return {"images": {"type": "stackmigrate:BucketSync",
                           "properties": {"sourceBucket": source, "targetBucket": target, "targetPrefix": prefix}}}

    def make(prefix):
        p = project(sync(prefix))
        del p.config["stackmigrate:journal"]
        p.write(sync(prefix), {})
        return p

    whole, images, other = make(""), make("images/"), make("other/")
    images.up()
    code, out = whole.preview(check=False)
    assert code != 0 and "another live migration" in out and f"s3://{target}/ " in out, out
    other.up()
    assert set(contents(s3, target)) == {"images/img/1.png", "images/img/2.png", "other/img/1.png", "other/img/2.png"}
    images.destroy()
    code, out = whole.up(check=False)
    assert code != 0 and f"{other.name}/{other.stack}/BucketSync/images" in out, out
    other.destroy()
    assert contents(s3, target) == {}
    whole.up()
    assert set(contents(s3, target)) == {"img/1.png", "img/2.png"}
    whole.destroy()
    assert contents(s3, target) == {}


@pytest.mark.parametrize("a_first", [True, False])
def test_two_migrations_sharing_a_table_restore_prod_in_either_destroy_order(project, tmp_path, a_first):
    """With `shareTarget` on both, the second copies too; whichever is destroyed first,
    prod's item is back after both."""
    client = dynamodb()
    source_a, source_b = create_table(client, unique("dev-a")), create_table(client, unique("dev-b"))
    target = create_table(client, unique("prod"))
    for source, v in ((source_a, "a"), (source_b, "b")):
        put_items(client, source, [{"PK": S("IMAGE#1"), "SK": S("IMAGE"), "TYPE": S("IMAGE"), "v": S(v)},
                                   {"PK": S(f"IMAGE#{v}"), "SK": S("IMAGE"), "TYPE": S("IMAGE"), "v": S(v)}])
    put_items(client, target, [{"PK": S("IMAGE#1"), "SK": S("IMAGE"), "TYPE": S("IMAGE"), "v": S("prod's own")}])
    before = scan_all(client, target)
    shared = {**both_sides(), "stackmigrate:journal": f"file://{tmp_path}/journals"}

    def copy(source, share):
        props = {"sourceTable": source, "targetTable": target, "onConflict": "overwrite", "shareTarget": share}
        return {"receipts": {"type": "stackmigrate:DynamoCopy", "properties": props}}

    a = project(copy(source_a, True), config=shared)
    b = project(copy(source_b, False), config=shared)
    a.up()
    code, out = b.preview(check=False)
    assert code != 0 and "unless both set `shareTarget: true`" in out, out
    b.write(copy(source_b, True), {})
    assert "is shared with another live migration" in b.preview()
    b.up()
    values = {key: item["v"]["S"] for key, item in scan_all(client, target).items()}
    assert values == {("IMAGE#1", "IMAGE"): "b", ("IMAGE#a", "IMAGE"): "a", ("IMAGE#b", "IMAGE"): "b"}

    first, second = (a, b) if a_first else (b, a)
    out = first.destroy()
    if a_first:
        assert "1 items in table" in out and "went to that migration's journal" in out, out
        assert {key: item["v"]["S"] for key, item in scan_all(client, target).items()} == \
            {("IMAGE#1", "IMAGE"): "b", ("IMAGE#b", "IMAGE"): "b"}, "B's items stay while B lives"
    else:
        assert {key: item["v"]["S"] for key, item in scan_all(client, target).items()} == \
            {("IMAGE#1", "IMAGE"): "a", ("IMAGE#a", "IMAGE"): "a"}, "A's items are back while A lives"
    second.destroy()
    assert scan_all(client, target) == before, "prod's item back, nothing of either copy left"


@pytest.mark.parametrize("versioned", [False, True])
def test_two_syncs_sharing_a_prefix_restore_prod_when_the_first_is_destroyed_first(project, versioned):
    """The same for a bucket, on the default journal (the journal bucket on the target):
    the backup of prod's object goes from A's journal to B's, server side. On a
    versioned target A removes its versions, which B's then stand over."""
    s3 = s3_client()
    source_a, source_b, target = make_bucket(s3, "dev-a"), make_bucket(s3, "dev-b"), make_bucket(s3, "prod")
    if versioned:
        s3.put_bucket_versioning(Bucket=target, VersioningConfiguration={"Status": "Enabled"})
    put_many(s3, source_a, {"img/1.png": b"dev a 1", "img/a.png": b"only a"})
    put_many(s3, source_b, {"img/1.png": b"dev b 1", "img/b.png": b"only b"})
    put_many(s3, target, {"img/1.png": b"prod's own 1", "keep.txt": b"prod only"})
    before = contents(s3, target)

    def make(source):
        resources = {"images": {"type": "stackmigrate:BucketSync",
                                "properties": {"sourceBucket": source, "targetBucket": target,
                                               "onConflict": "overwrite", "shareTarget": True}}}
        p = project(resources)
        del p.config["stackmigrate:journal"]
        p.write(resources, {})
        return p

    a, b = make(source_a), make(source_b)
    a.up()
    b.up()
    assert contents(s3, target)["img/1.png"] == b"dev b 1"
    out = a.destroy()
    assert "went to that migration's journal" in out, out
    assert contents(s3, target) == {"img/1.png": b"dev b 1", "img/b.png": b"only b", "keep.txt": b"prod only"}
    b.destroy()
    assert contents(s3, target) == before, "prod's object back from the backup A handed over"


def test_share_target_turned_on_later_takes_effect_with_the_next_up(project, tmp_path):
    """A's claim says whether it shares as of its last up, even one that copies nothing."""
    s3 = s3_client()
    source_a, source_b, target = make_bucket(s3, "dev-a"), make_bucket(s3, "dev-b"), make_bucket(s3, "prod")
    put_many(s3, source_a, {"img/a.png": b"only a"})
    put_many(s3, source_b, {"img/b.png": b"only b"})
    shared = {**both_sides(), "stackmigrate:journal": f"file://{tmp_path}/journals"}

    def sync(source, share):
        props = {"sourceBucket": source, "targetBucket": target, "shareTarget": share}
        return {"images": {"type": "stackmigrate:BucketSync", "properties": props}}

    a = project(sync(source_a, False), config=shared)
    b = project(sync(source_b, True), config=shared)
    a.up()
    code, out = b.preview(check=False)
    assert code != 0 and "unless both set `shareTarget: true`" in out, out
    a.write(sync(source_a, True), {})
    a.up()
    b.up()
    assert contents(s3, target) == {"img/a.png": b"only a", "img/b.png": b"only b"}
    a.destroy()
    b.destroy()
    assert contents(s3, target) == {}
