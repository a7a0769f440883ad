"""Rollback wherever and by whoever `pulumi destroy` runs (issue 21): the state names its
journal, and a journal that does not hold what the state says was written stops destroy
and up loudly, with the target and the state untouched, instead of exiting 0 having
undone nothing."""

import json
import os
import re
import shutil
import signal
import stat
import subprocess

import pytest

from conftest import both_sides, connection, listing, s3_client, unique, wait_until
from portfolio_items import create_table, dynamodb, put_items, scan_all, S
from test_bucket_sync import make_bucket, put_many


def pulumi_as(p, home, *args, check=True):
    """A pulumi command on the project's stack run by another user account: only HOME
    differs (the Pulumi backend and plugins live outside it)."""
    proc = subprocess.run(
        ["pulumi", *args, "--non-interactive", "--cwd", str(p.dir), "--stack", p.stack],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HOME": str(home)},
    )
    output = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, output
        return output
    return proc.returncode, output


def journal_keys(s3, prefix):
    """Keys of the default journal bucket under `prefix`; none while it does not exist."""
    try:
        return [k for k in listing(s3, "stackmigrate-journal") if k.startswith(prefix + "/")]
    except s3.exceptions.NoSuchBucket:
        return []


def contents(s3, bucket):
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in listing(s3, bucket)}


def resource_urns(p):
    state = json.loads(p.state_text())
    return [r["urn"] for r in state["deployment"].get("resources", []) if "stackmigrate:index:" in r["type"]]


def test_a_file_journal_refuses_destroy_elsewhere_and_the_first_machine_restores(project, tmp_path):
    """A `file://` journal (here under the HOME of whoever ran `up`, where earlier releases
    kept it by default) exists on one machine only. Destroy on another machine, which
    lacks it, must fail naming it and change nothing; on the first machine it restores."""
    s3 = s3_client()
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    dev = {f"img/{i:03d}.png": f"dev {i}".encode() for i in range(12)}
    prod = {f"img/{i:03d}.png": f"prod {i}".encode() for i in range(0, 12, 3)}
    prod["img/prod-only.png"] = b"prod only"
    put_many(s3, source, dev)
    put_many(s3, target, prod)
    resources = {"images": {"type": "stackmigrate:BucketSync",
                            "properties": {"sourceBucket": source, "targetBucket": target, "onConflict": "overwrite"}}}
    ran_up, colleague = tmp_path / "home-ci", tmp_path / "home-colleague"
    ran_up.mkdir()
    colleague.mkdir()
    p = project(resources, {"journalUri": "${images.journalUri}"},
                config={"stackmigrate:journal": f"file://{ran_up}/.stackmigrate/journal"})

    out = pulumi_as(p, ran_up, "preview")
    assert "only `pulumi destroy` run here" in out, out
    pulumi_as(p, ran_up, "up", "--yes", "--skip-preview")
    copied = {**prod, **dev}
    assert contents(s3, target) == copied
    journal_uri = p.outputs()["journalUri"]
    assert journal_uri.startswith(f"file://{ran_up}/.stackmigrate/journal/"), journal_uri
    # What the journal keeps (backups of prod's objects) is its owner's alone.
    for path in (ran_up / ".stackmigrate").rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))

    # The colleague's machine: the same paths, but no journal under the first HOME.
    away = tmp_path / "on-the-ci-runner"
    ran_up.rename(away)
    code, out = pulumi_as(p, colleague, "destroy", "--yes", "--skip-preview", check=False)
    assert code != 0, out
    assert "nothing was changed" in out and journal_uri in out, out
    assert "pulumi state delete" in out, out
    assert contents(s3, target) == copied, "a refused destroy writes nothing"
    assert len(resource_urns(p)) == 1, "the resource stays in the state"
    # An up by the colleague is refused the same way: it would start a second journal.
    code, out = pulumi_as(p, colleague, "preview", check=False)
    assert code != 0 and journal_uri in out, out

    away.rename(ran_up)
    pulumi_as(p, ran_up, "destroy", "--yes", "--skip-preview")
    assert contents(s3, target) == prod, "prod's objects back, key by key; the copies gone"
    assert resource_urns(p) == []
    assert not any((ran_up / ".stackmigrate/journal").rglob("*.jsonl")), "the journal is cleared"


def test_the_default_journal_lives_on_the_target_and_any_machine_rolls_back(project, tmp_path):
    """With `stackmigrate:journal` unset, the journal is a bucket on the target connection,
    made on first use: `up` on one machine, `destroy` on another restores prod."""
    s3 = s3_client()
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    dev = {f"img/{i:03d}.png": f"dev {i}".encode() for i in range(8)}
    prod = {"img/000.png": b"prod 0", "img/prod-only.png": b"prod only"}
    put_many(s3, source, dev)
    put_many(s3, target, prod)
    resources = {"images": {"type": "stackmigrate:BucketSync",
                            "properties": {"sourceBucket": source, "targetBucket": target, "onConflict": "overwrite"}}}
    p = project(resources, {"journalUri": "${images.journalUri}"})
    del p.config["stackmigrate:journal"]
    p.write(resources, {"journalUri": "${images.journalUri}"})
    ran_up, colleague = tmp_path / "home-ci", tmp_path / "home-colleague"
    ran_up.mkdir()
    colleague.mkdir()

    out = pulumi_as(p, ran_up, "preview")
    prefix = f"{p.name}/{p.stack}/BucketSync/images"
    assert f"rollback journal: s3://stackmigrate-journal/{prefix}" in out, out
    assert journal_keys(s3, prefix) == [], "preview writes no journal"
    pulumi_as(p, ran_up, "up", "--yes", "--skip-preview")
    assert contents(s3, target) == {**prod, **dev}
    assert p.outputs()["journalUri"] == f"s3://stackmigrate-journal/{prefix}"
    journal = journal_keys(s3, prefix)
    assert any("/records/" in k for k in journal) and any("/backups/" in k for k in journal), journal
    assert not (ran_up / ".stackmigrate").exists(), "nothing of prod's kept on this machine"

    pulumi_as(p, colleague, "destroy", "--yes", "--skip-preview")
    assert contents(s3, target) == prod, "prod's objects back, key by key, from another machine"
    assert journal_keys(s3, prefix) == []


def test_a_moved_journal_stops_destroy_until_it_is_back(project, tmp_path):
    """DynamoCopy with overwrite: the journal holds the only backup of prod's item."""
    client = dynamodb()
    source = create_table(client, unique("dev-receipts"))
    target = create_table(client, unique("prod-receipts"))
    items = [{"PK": S(f"IMAGE#{i}"), "SK": S("IMAGE"), "TYPE": S("IMAGE"), "v": S(f"dev {i}")} for i in range(30)]
    prod_item = {"PK": S("IMAGE#3"), "SK": S("IMAGE"), "TYPE": S("IMAGE"), "v": S("prod's own")}
    put_items(client, source, items)
    put_items(client, target, [prod_item])
    before = scan_all(client, target)
    resources = {"receipts": {"type": "stackmigrate:DynamoCopy",
                              "properties": {"sourceTable": source, "targetTable": target, "onConflict": "overwrite"}}}
    p = project(resources, {"journalUri": "${receipts.journalUri}"}, config=both_sides())
    p.up()
    copied = scan_all(client, target)
    assert len(copied) == 30 and copied != before
    journal_uri = p.outputs()["journalUri"]
    journal_dir = journal_uri.removeprefix("file://")

    moved = tmp_path / "moved-journal"
    shutil.move(journal_dir, moved)
    code, out = p.destroy(check=False)
    assert code != 0 and "nothing was changed" in out and journal_uri in out, out
    assert scan_all(client, target) == copied
    assert len(resource_urns(p)) == 1

    # Only part of it back (a segment lost) is refused too.
    shutil.copytree(moved, journal_dir)
    segments = sorted((moved / "records").glob("*.jsonl"))
    assert segments, list(moved.rglob("*"))
    os.remove(os.path.join(journal_dir, "records", segments[-1].name))
    code, out = p.destroy(check=False)
    assert code != 0 and f"{len(segments) - 1} of them are there" in out, out
    assert scan_all(client, target) == copied

    shutil.rmtree(journal_dir)
    shutil.move(moved, journal_dir)
    p.destroy()
    assert scan_all(client, target) == before, "prod's item restored, the copies deleted"
    assert resource_urns(p) == []


def respelled(endpoint):
    """The same server under another name."""
    assert "127.0.0.1" in endpoint, endpoint
    return endpoint.replace("127.0.0.1", "localhost")


def test_one_table_through_two_endpoint_spellings_is_refused(project):
    """Identity comes from DynamoDB's answer, not from the configuration's strings."""
    client = dynamodb()
    table = create_table(client, unique("receipts"))
    put_items(client, table, [{"PK": S(f"IMAGE#{i}"), "SK": S("IMAGE"), "TYPE": S("IMAGE")} for i in range(5)])
    before = scan_all(client, table)
    config = both_sides()
    config["stackmigrate:target"] = {**config["stackmigrate:target"],
                                     "dynamodbEndpoint": respelled(config["stackmigrate:target"]["dynamodbEndpoint"])}
    p = project({"receipts": {"type": "stackmigrate:DynamoCopy",
                              "properties": {"sourceTable": table, "targetTable": table, "onConflict": "overwrite"}}},
                config=config)
    for command in (p.preview, p.up):
        code, out = command(check=False)
        assert code != 0 and "same table" in out, out
    assert scan_all(client, table) == before
    assert not p.journal_dir.exists(), "nothing was written, not even a journal"


def test_one_bucket_through_two_endpoint_spellings_is_refused(project):
    s3 = s3_client()
    bucket = make_bucket(s3, "receipts")
    put_many(s3, bucket, {f"img/{i}.png": b"dev" for i in range(3)})
    before = contents(s3, bucket)
    config = {"stackmigrate:target": {**connection("a"), "endpoint": respelled(connection("a")["endpoint"])}}
    p = project({"images": {"type": "stackmigrate:BucketSync",
                            "properties": {"sourceBucket": bucket, "targetBucket": bucket,
                                           "sourcePrefix": "img/", "targetPrefix": "img/copy/",
                                           "onConflict": "overwrite"}}},
                config=config)
    code, out = p.preview(check=False)
    assert code != 0 and "same place" in out, out
    assert contents(s3, bucket) == before
    assert not p.journal_dir.exists()


@pytest.mark.parametrize("killed", ["plugin", "pulumi"])
def test_destroy_after_a_killed_up_stops_naming_the_import_and_restores_after_it(project, killed):
    """An up killed mid-copy (the plugin alone, or `pulumi` and its plugin, as when a CI
    runner dies) leaves a copy the stack does not hold. A destroy of the stack, which
    holds another stackmigrate resource, must not exit 0 leaving that copy's writes: it
    stops before undoing anything, naming the import. After the import, destroy puts
    prod back key by key."""
    s3 = s3_client()
    source, target = make_bucket(s3, "dev"), make_bucket(s3, "prod")
    put_many(s3, source, {f"logos/{i}.png": f"logo {i}".encode() for i in range(5)})
    put_many(s3, source, {f"img/{i:05d}.png": os.urandom(2048) for i in range(3000)})
    prod = {f"img/{i:05d}.png": b"prod's own" for i in range(0, 3000, 500)}
    prod["keep/me.txt"] = b"untouched"
    put_many(s3, target, prod)
    before = contents(s3, target)

    def sync(prefix, **extra):
        return {"type": "stackmigrate:BucketSync",
                "properties": {"sourceBucket": source, "targetBucket": target,
                               "sourcePrefix": prefix, "targetPrefix": prefix, **extra}}
    resources = {"logos": sync("logos/"),
                 "images": {**sync("img/", onConflict="overwrite"), "options": {"dependsOn": ["${logos}"]}}}
    p = project(resources)
    runs = p.journal_dir / "%runs" / p.name / p.stack

    up = p.up_in_background()
    assert wait_until(lambda: len(listing(s3, target)) > len(prod) + 5 + 10, timeout=120), "the copy never started"
    providers = subprocess.run(["pgrep", "-P", str(up.pid), "-f", "pulumi-resource-stackmigrate"],
                               capture_output=True, text=True).stdout.split()
    assert providers, "the provider process was not found"
    if killed == "pulumi":
        os.kill(up.pid, signal.SIGKILL)
    for pid in providers:
        os.kill(int(pid), signal.SIGKILL)
    up.wait(timeout=120)
    if killed == "pulumi":
        p.run("cancel", "--yes")  # its lock on the stack, as pulumi says to
    written = contents(s3, target)
    assert len(written) < 3000 + 5 + 1, "the copy finished before the kill"
    assert [urn.rsplit("::", 1)[1] for urn in resource_urns(p)] == ["logos"], "the stack holds only the finished copy"
    notes = [path.name for path in runs.iterdir()]
    assert len(notes) == 1 and notes[0].endswith("BucketSync%2Fimages.json"), ("the killed run is announced", notes)

    code, out = p.destroy(check=False)
    assert code != 0, out
    assert "nothing was rolled back" in out and "pulumi import stackmigrate:index:BucketSync images" in out, out
    assert contents(s3, target) == written, "a destroy that stops undoes nothing"
    assert len(resource_urns(p)) == 1, "the finished copy stays in the state"

    command = re.search(r"`(pulumi import [^`]*)`", out).group(1).split()
    p.run(*command[1:])
    assert not runs.exists() or not any(runs.iterdir()), "the adopted run is no longer announced"
    p.destroy()
    assert contents(s3, target) == before, "prod's objects back, key by key; every copy gone"
    assert resource_urns(p) == []
