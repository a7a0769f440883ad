"""The scale run (issue 15): DynamoCopy and BucketSync at growing sizes through the real
`pulumi` CLI and the release provider, against the services of scripts/services.sh.
Run by bench/scale.sh, which builds and starts everything first.

Per size: the source is generated (bench engine's fill-table / fill-bucket, streamed),
then one stack takes these steps, each timed with the provider's peak RSS and the
server's CPU seconds:

  preview             the first plan: source and (empty) target compared
  up                  the copy, verified
  no-change preview   nothing new: the source's fingerprint against the last copy
  no-change up        the same through `pulumi up` (preview and update)
  no-change up, inputs  changeDetection switched to inputs: no data read
  destroy             the rollback (up to --destroy-up-to items)

`--bookkeeping` sizes run the bench engine's spill-scale instead: DynamoCopy's per-item
bookkeeping (target index, journal keys, decisions, written items, verification) in the
provider's own spill maps with no server, so its memory can be shown at sizes a local
DynamoDB cannot hold in reasonable time.

Results are appended to bench/results/scale.json (one record per step, replaced when the
same kind and size run again); bench/results/scale.md and scale-rss.png are rewritten
from all records."""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
from compare import ENGINE, PulumiStack, drop_bucket, drop_table, new_bucket, server_cpu, settle  # noqa: E402
from conftest import both_sides, s3_client  # noqa: E402
from portfolio_items import REWRITE, create_table, dynamodb  # noqa: E402

RESULTS = REPO / "bench" / "results"


def engine(*args):
    out = subprocess.run([str(ENGINE), *map(str, args)], capture_output=True, text=True, env=os.environ)
    if out.returncode != 0:
        sys.exit(f"stackmigrate-bench {' '.join(map(str, args))} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def set_properties(stack, name, properties):
    project = json.loads((stack.dir / "Pulumi.yaml").read_text())
    project["resources"][name]["properties"] = properties
    (stack.dir / "Pulumi.yaml").write_text(json.dumps(project))


def step(kind, size, label, stack, args, unit_count, expect=None):
    settle(kind)
    before = server_cpu(kind)
    seconds, peak_kib, client_cpu, out = stack.timed(*args)
    used = server_cpu(kind) - before
    if expect and expect not in out:
        sys.exit(f"{kind} {size} {label}: expected {expect!r} in the output:\n{out}")
    record = {
        "kind": kind, "size": size, "step": label, "seconds": round(seconds, 2),
        "per_second": round(unit_count / seconds) if unit_count else None,
        "peak_mib": round(peak_kib / 1024, 1), "provider_cpu": round(client_cpu, 1),
        "server_cpu": round(used, 1),
    }
    print(f"  {kind} {size:>10,} {label:<24} {seconds:9.1f} s  peak {record['peak_mib']:7.1f} MiB  "
          f"server CPU {used:8.1f} s", file=sys.stderr, flush=True)
    return record


def table_run(size, destroy_up_to):
    source = create_table(dynamodb(), f"scale-src-{size}-{int(time.time())}", ttl=False)
    target = create_table(dynamodb(), f"scale-dst-{size}-{int(time.time())}", ttl=False)
    resource = ("copy", "stackmigrate:DynamoCopy", {"sourceTable": source, "targetTable": target, "rewrite": REWRITE})
    try:
        return generated_then_migrated("table", size, "fill-table", source, resource, destroy_up_to, f"{size} items (")
    finally:
        drop_table(source)
        drop_table(target)


def bucket_run(size, destroy_up_to):
    source, target = new_bucket(f"src{size}"), new_bucket(f"dst{size}")
    resource = ("sync", "stackmigrate:BucketSync", {"sourceBucket": source, "targetBucket": target})
    try:
        return generated_then_migrated("bucket", size, "fill-bucket", source, resource, destroy_up_to, f"{size} objects (")
    finally:
        drop_bucket(source)
        drop_bucket(target)


def generated_then_migrated(kind, size, fill, source, resource, destroy_up_to, copied):
    """Fills `source` with the bench engine, then takes one stack holding `resource`
    (name, type, properties) through the steps."""
    filled = engine(fill, source, size)
    records = [{"kind": kind, "size": size, "step": "generate", "seconds": round(filled["seconds"], 2),
                "per_second": round(size / filled["seconds"]), "peak_mib": None,
                "provider_cpu": None, "server_cpu": None}]
    name, type_token, properties = resource
    stack = PulumiStack({name: {"type": type_token, "properties": properties}}, both_sides())
    try:
        return records + steps(kind, size, stack, name, properties, destroy_up_to, copied)
    finally:
        stack.close()


def bookkeeping_run(size):
    out = engine("spill-scale", size)
    return [{"kind": "bookkeeping", "size": size, "step": phase, "seconds": round(seconds, 2),
             "per_second": round(size / seconds), "peak_mib": round(out["peak_rss_mib"], 1),
             "provider_cpu": None, "server_cpu": None}
            for phase, seconds in out["seconds"].items()]


def steps(kind, size, stack, name, properties, destroy_up_to, copied):
    records = [
        step(kind, size, "preview", stack, ["preview"], size),
        step(kind, size, "up", stack, ["up", "--yes", "--skip-preview"], size, expect=copied),
        step(kind, size, "no-change preview", stack, ["preview", "--expect-no-changes"], size),
        step(kind, size, "no-change up", stack, ["up", "--yes", "--expect-no-changes"], size),
    ]
    set_properties(stack, name, {**properties, "changeDetection": "inputs"})
    records.append(step(kind, size, "no-change up, inputs", stack, ["up", "--yes", "--expect-no-changes"], None))
    if size <= destroy_up_to:
        records.append(step(kind, size, "destroy", stack, ["destroy", "--yes", "--skip-preview"], size))
    return records


def merge(records):
    path = RESULTS / "scale.json"
    old = json.loads(path.read_text()) if path.exists() else []
    done = {(r["kind"], r["size"]) for r in records}
    kept = [r for r in old if (r["kind"], r["size"]) not in done]
    merged = sorted(kept + records, key=lambda r: (r["kind"], r["size"]))
    path.write_text(json.dumps(merged, indent=1) + "\n")
    return merged


def chart(records):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for kind, label in (("table", "DynamoCopy through pulumi (items)"), ("bucket", "BucketSync through pulumi (objects)"),
                        ("bookkeeping", "DynamoCopy's bookkeeping, no server (items)")):
        sizes = sorted({r["size"] for r in records if r["kind"] == kind})
        peaks = [max(r["peak_mib"] or 0 for r in records if r["kind"] == kind and r["size"] == s) for s in sizes]
        if sizes:
            ax.plot(sizes, peaks, marker="o", label=label)
    ax.axhline(200 * 10**6 / 2**20, color="grey", linestyle="--", label="200 MB target")
    ax.set_xscale("log")
    ax.set_xlabel("items or objects in the source")
    ax.set_ylabel("provider peak RSS over all steps (MiB)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "scale-rss.png", dpi=100)


def report(records, started):
    lines = [
        "# Scale: memory and time against the size of the data",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}; "
        "DynamoDB Local (in memory) and the Versity S3 gateway (posix) on loopback, the release provider "
        "through `pulumi`. Written by `bench/scale.sh` "
        f"({time.strftime('%Y-%m-%d', time.gmtime(started))}).",
        "",
        "![peak RSS against size](scale-rss.png)",
        "",
        "| kind | size | step | seconds | per second | provider peak RSS (MiB) | provider CPU s | server CPU s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        cells = [r["kind"], f"{r['size']:,}", r["step"], r["seconds"], r["per_second"] or "",
                 r["peak_mib"] if r["peak_mib"] is not None else "", r["provider_cpu"] if r["provider_cpu"] is not None else "",
                 r["server_cpu"] if r["server_cpu"] is not None else ""]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    (RESULTS / "scale.md").write_text("\n".join(lines) + "\n")


def sizes(text):
    return [int(s) for s in text.split(",") if s]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=sizes, default=sizes("100000,1000000,10000000"),
                        help="DynamoCopy sizes in items, comma-separated (empty: none)")
    parser.add_argument("--buckets", type=sizes, default=sizes("100000,1000000"),
                        help="BucketSync sizes in objects, comma-separated (empty: none)")
    parser.add_argument("--bookkeeping", type=sizes, default=sizes("10000000"),
                        help="spill-scale sizes in items, comma-separated (empty: none)")
    parser.add_argument("--destroy-up-to", type=int, default=1_000_000,
                        help="run destroy only at sizes up to this (larger copies are dropped with their tables)")
    args = parser.parse_args()
    started = time.time()
    RESULTS.mkdir(exist_ok=True)
    s3_client("a")  # fails early without the services
    records = merge([])
    for size in args.tables:
        records = merge(table_run(size, args.destroy_up_to))
    for size in args.buckets:
        records = merge(bucket_run(size, args.destroy_up_to))
    for size in args.bookkeeping:
        records = merge(bookkeeping_run(size))
    chart(records)
    report(records, started)
    print((RESULTS / "scale.md").read_text())


if __name__ == "__main__":
    main()
