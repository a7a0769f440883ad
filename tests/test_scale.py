"""Large sources (issue 15), through the real pulumi CLI: `pulumi refresh` reports drift
that `changeDetection: inputs` then acts on (and keeps the state when the source is gone); a no-change `pulumi up` reads the source
once (its preview's answer serves its update) while a separate preview's answer is never
reused; a 100,000-item copy killed mid-way is adopted and resumed with the provider's
memory under the 200 MB bound. The sizes that prove the bound flat up to ten million
items are in bench/scale.sh's results."""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import connection, provider_usage, unique
from portfolio_items import S, create_table, dynamodb, image_items, item_count, put_items, scan_all
from test_bucket_sync import adopt_interrupted_run, kill_provider_mid_copy
from test_faults import counters, set_faults

MB = 10**6


def direct():
    side = {**connection("a"), "dynamodbEndpoint": os.environ["STACKMIGRATE_DYNAMODB"]}
    return {"stackmigrate:source": side, "stackmigrate:target": side}


def source_through_proxy():
    """The source table read through the fault proxy (no faults set), which counts requests."""
    source = {**connection("a"), "dynamodbEndpoint": os.environ["STACKMIGRATE_DYNAMODB_FAULTY"]}
    target = {**connection("a"), "dynamodbEndpoint": os.environ["STACKMIGRATE_DYNAMODB"]}
    return {"stackmigrate:source": source, "stackmigrate:target": target}


def copy(source, target, **extra):
    return {"copy": {"type": "stackmigrate:DynamoCopy",
                     "properties": {"sourceTable": source, "targetTable": target, **extra}}}


def new_item(name):
    return {"PK": S(f"IMAGE#{name}"), "SK": S("IMAGE"), "TYPE": S("IMAGE")}


def test_refresh_reports_drift_that_inputs_detection_then_copies(project):
    client = dynamodb()
    source, target = create_table(client, unique("dev")), create_table(client, unique("prod"))
    put_items(client, source, image_items())
    p = project(copy(source, target, changeDetection="inputs"), {"drift": "${copy.drift}"}, config=direct())
    p.up()
    copied = len(scan_all(client, target))
    assert p.outputs().get("drift") is None, "no refresh has run"

    put_items(client, source, [new_item("a"), new_item("b")])
    p.up()
    assert len(scan_all(client, target)) == copied, "inputs detection reads no data"

    p.run("refresh", "--yes")
    state = p.state_text()
    assert '"pending": true' in state and '"writes": 2' in state, state
    p.up()  # the stack output follows the refreshed state
    assert len(scan_all(client, target)) == copied + 2, "the up after a refresh that found drift copies it"
    assert p.outputs().get("drift") is None, "the run clears the drift"

    p.run("refresh", "--yes")
    state = p.state_text()
    assert '"pending": false' in state and '"writes": 0' in state, state

    # The dev table destroyed after the migration: refresh keeps the state and says why.
    client.delete_table(TableName=source)
    out = p.run("refresh", "--yes")
    assert "could not compare the source with the target" in out, out


def test_a_no_change_up_reads_the_source_once_and_a_separate_preview_is_never_reused(project):
    client = dynamodb()
    source, target = create_table(client, unique("dev")), create_table(client, unique("prod"))
    put_items(client, source, image_items(images=4))
    p = project(copy(source, target), config=source_through_proxy())
    p.up()

    set_faults("dynamodb")
    p.run("preview", "--expect-no-changes")
    one_plan = counters("dynamodb")["requests"]
    set_faults("dynamodb")
    p.run("up", "--yes", "--expect-no-changes")
    whole_up = counters("dynamodb")["requests"]
    assert one_plan > 0
    assert whole_up <= one_plan, f"the update reused its preview's answer: {whole_up} requests against {one_plan}"

    # A preview, then new data, then `pulumi up`: the up plans afresh.
    p.run("preview", "--expect-no-changes")
    put_items(client, source, [new_item("late")])
    p.run("up", "--yes")
    assert ("IMAGE#late", "IMAGE") in scan_all(client, target), "the up saw data added after the preview"


def fill(client, table, count):
    def batch(start):
        put_items(client, table, [
            {"PK": S(f"IMAGE#{n // 1000:08d}"), "SK": S(f"LINE#{n % 1000:05d}"), "TYPE": S("RECEIPT_WORD"),
             "text": S(f"word {n}"), "raw_s3_bucket": S("raw-image-bucket-dev1234")}
            for n in range(start, min(start + 5000, count))
        ])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(batch, range(0, count, 5000)))


def test_a_killed_100k_item_copy_resumes_within_the_memory_bound(project):
    client = dynamodb()
    source, target = create_table(client, unique("dev")), create_table(client, unique("prod"))
    items = 100_000
    fill(client, source, items)
    p = project(copy(source, target), {"copied": "${copy.itemsCopied}", "verified": "${copy.verified}"},
                config=direct())

    up = p.up_in_background()
    kill_provider_mid_copy(up, lambda: time.sleep(1) or item_count(client, target) > 20_000, timeout=900)
    adopt_interrupted_run(p)
    landed = item_count(client, target)  # writes sent before the kill have landed by now
    assert landed < items, "the copy finished before the kill"
    resumed = p.up_in_background()
    stop, usage = threading.Event(), {"peak": 0, "cpu": 0.0}
    watcher = threading.Thread(target=provider_usage, args=(resumed.pid, stop, usage))
    watcher.start()
    out, _ = resumed.communicate(timeout=1200)
    stop.set()
    watcher.join()
    peak = usage["peak"] * 1024
    assert resumed.returncode == 0, out
    assert peak > 0, "the provider was never seen"
    assert peak < 200 * MB, f"the provider's peak RSS was {peak / MB:.0f} MB"
    assert item_count(client, target) == items
    outputs = p.outputs()
    assert outputs["verified"] is True
    assert outputs["copied"] == items - landed, f"the resumed copy writes only what had not landed: {outputs}"
    print(f"resumed {outputs['copied']} of {items} items, provider peak RSS {peak / MB:.0f} MB")
