"""`pulumi up` with and without injected faults (issue 13): the fault proxies of
scripts/services.sh (tests/faultproxy.py) sit in front of the target side, S3 gateway "a"
and DynamoDB Local, and answer a share of requests with throttling (S3's 503 SlowDown,
DynamoDB's ThrottlingException or ProvisionedThroughputExceededException) or drop the
connection. Every run copies into a fresh empty target through the proxy, so the
fault-free run pays the same proxy; the target is checked object by object (count) and
the table item by item (count) after each run. Run by bench/faults.sh; writes
bench/results/faults.md."""

import argparse
import json
import os
import random
import statistics
import sys
import time
import urllib.request
from pathlib import Path

from compare import (PulumiStack, bucket_count, drop_bucket, drop_table, fill_bucket, fill_table, machine,
                     new_bucket, new_table, table_count, version, MiB, REPO)
from conftest import connection

CONDITIONS = [
    ("no faults", {}),
    ("20% throttled", {"throttle": 0.2}),
    ("20% reset", {"reset": 0.2}),
]
# The targets: wall time over the fault-free run's.
TARGETS = {"20% throttled": 3.0, "20% reset": 1.5}


def set_faults(service, settings):
    url = os.environ[{"s3": "STACKMIGRATE_S3_A_FAULTY", "dynamodb": "STACKMIGRATE_DYNAMODB_FAULTY"}[service]]
    request = urllib.request.Request(f"{url}/__faultproxy", data=json.dumps(settings).encode(), method="PUT")
    return json.loads(urllib.request.urlopen(request).read())


def injected(service):
    """The faults the proxy has answered with since its faults were last set."""
    url = os.environ[{"s3": "STACKMIGRATE_S3_A_FAULTY", "dynamodb": "STACKMIGRATE_DYNAMODB_FAULTY"}[service]]
    counters = json.loads(urllib.request.urlopen(f"{url}/__faultproxy").read())
    return counters["throttled"] + counters["reset"]


def faulty_config(service):
    source = {**connection("a"), "dynamodbEndpoint": os.environ["STACKMIGRATE_DYNAMODB"]}
    target = dict(source)
    if service == "s3":
        target["endpoint"] = os.environ["STACKMIGRATE_S3_A_FAULTY"]
    else:
        target["dynamodbEndpoint"] = os.environ["STACKMIGRATE_DYNAMODB_FAULTY"]
    return {"stackmigrate:source": source, "stackmigrate:target": target}


def up(service, resource, outputs):
    """Seconds of one `pulumi up`, the provider's peak RSS in KiB, and the outputs."""
    stack = PulumiStack({"copy": resource}, faulty_config(service))
    try:
        program = json.loads((stack.dir / "Pulumi.yaml").read_text())
        program["outputs"] = {name: "${copy.%s}" % name for name in outputs}
        (stack.dir / "Pulumi.yaml").write_text(json.dumps(program))
        seconds, peak, _, _ = stack.timed("up", "--yes", "--skip-preview")
        _, _, _, shown = stack.timed("stack", "output", "--json")
        return seconds, peak, json.loads(shown)
    finally:
        stack.close()


def measure(service, dataset, runs):
    bucket = service == "s3"
    rows = []
    for label, settings in CONDITIONS:
        times, peaks, retries, throttles, injected_faults = [], [], [], [], []
        for attempt in range(runs):
            target = new_bucket("dst") if bucket else new_table("dst")
            try:
                set_faults(service, settings)
                if bucket:
                    resource = {"type": "stackmigrate:BucketSync",
                                "properties": {"sourceBucket": dataset["name"], "targetBucket": target}}
                else:
                    resource = {"type": "stackmigrate:DynamoCopy",
                                "properties": {"sourceTable": dataset["name"], "targetTable": target}}
                seconds, peak, outputs = up(service, resource, ["retries", "throttles", "verified"])
                faults = injected(service)
                found = bucket_count(target) if bucket else table_count(target)
                if found != dataset["count"] or outputs["verified"] is not True:
                    sys.exit(f"{service} {label}: the target holds {found} of {dataset['count']}")
            finally:
                set_faults(service, {})
                drop_bucket(target) if bucket else drop_table(target)
            times.append(seconds)
            peaks.append(peak)
            retries.append(outputs["retries"])
            throttles.append(outputs["throttles"])
            injected_faults.append(faults)
            print(f"  {service} {label}: run {attempt + 1} {seconds:.2f} s, {outputs['retries']} retries",
                  file=sys.stderr, flush=True)
        rows.append({"condition": label, "median": statistics.median(times), "runs": times,
                     "peak_kib": max(peaks), "retries": statistics.median(retries),
                     "throttles": statistics.median(throttles), "injected": statistics.median(injected_faults)})
    return rows


def report(sections, args, elapsed):
    lines = [
        "# `pulumi up` under injected faults",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} by `bench/faults.sh` ({elapsed:.0f} s in all). "
        "A fault proxy on loopback (tests/faultproxy.py) stands in front of the target side; the source is "
        "read directly. Each condition runs "
        f"{args.runs} times into a fresh empty target, checked after each run; seconds are the median. "
        "\"× no faults\" is the median over the fault-free median through the same proxy. Injected: the "
        "faults the proxy answered with (median); retries and throttles: the resource's outputs.",
        "",
        "| copy | condition | median s | × no faults | target | injected | retries | throttles | peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for title, rows in sections:
        clean = rows[0]["median"]
        for row in rows:
            ratio = row["median"] / clean
            target = TARGETS.get(row["condition"])
            verdict = "" if target is None else (f"≤ {target}x: {'met' if ratio <= target else 'missed'}")
            lines.append(f"| {title} | {row['condition']} | {row['median']:.2f} | {ratio:.2f} | {verdict} | "
                         f"{row['injected']:.0f} | {row['retries']:.0f} | {row['throttles']:.0f} | "
                         f"{row['peak_kib'] / 1024:.0f} MiB |")
    lines += ["", "Every run, in seconds:", ""]
    for title, rows in sections:
        for row in rows:
            lines.append(f"- {title}, {row['condition']}: " + ", ".join(f"{t:.2f}" for t in row["runs"]))
    lines += [
        "",
        f"Machine: {machine()}.",
        "",
        f"Versions: stackmigrate at commit {version(['git', '-C', str(REPO), 'describe', '--always', '--dirty'])} "
        f"(release build); {version(['pulumi', 'version'])} (pulumi); {version(['versitygw', '--version'])}; "
        "DynamoDB Local 2.6.1.",
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=996, help="objects of 4 to 64 KiB, plus one of 20 MiB")
    parser.add_argument("--items", type=int, default=5000, help="DynamoDB items")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "faults.md"))
    args = parser.parse_args()
    clock = time.monotonic()
    stamp = f"{random.randrange(16**6):06x}"
    rng = random.Random(13)
    sizes = [rng.randint(4 * 1024, 64 * 1024) for _ in range(args.objects)] + [20 * MiB]
    objects = fill_bucket(f"bench-faults-{stamp}", sizes, 13)
    items = fill_table(f"bench-faults-{stamp}", args.items)
    sections = [
        (f"BucketSync, {objects['count']} objects (one of 20 MiB), streamed", measure("s3", objects, args.runs)),
        (f"DynamoCopy, {items['count']} items", measure("dynamodb", items, args.runs)),
    ]
    text = report(sections, args, time.monotonic() - clock)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
