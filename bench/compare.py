"""stackmigrate against the tools users run instead, on the same local servers in the
same run (issue 7). Run by bench/run.sh, which builds and starts everything first.

Datasets: small objects (default 10,000 of 4 to 64 KiB), large objects (20 of 100 MiB),
Portfolio-shaped DynamoDB items (100,000). Every tool copies each dataset into a fresh
empty target, once to warm up and then --runs times; the table gives the median. Each
run's target is checked (object or item count) before the run counts, then removed.
Prints the Markdown report and writes it to bench/results/comparison.md."""

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
from conftest import both_sides, connection, listing, provider_usage, s3_client  # noqa: E402
from portfolio_items import REWRITE, RESET, create_table, dynamodb, image_items, item_count, put_items  # noqa: E402

PLUGIN_DIR = REPO / "target" / "release"
ENGINE = PLUGIN_DIR / "stackmigrate-bench"
MiB = 2**20


def tool_env():
    """S3 gateway "a" and DynamoDB Local in the variables s5cmd, rclone, the AWS CLI and boto3 read."""
    env = dict(os.environ)
    # Loopback is plain HTTP; a machine-wide AWS_CA_BUNDLE makes rclone's S3 client fail
    # ("LoadCustomCABundleError ... unsupported transport").
    env.pop("AWS_CA_BUNDLE", None)
    env.update({
        "AWS_ACCESS_KEY_ID": os.environ["STACKMIGRATE_S3_A_KEY"],
        "AWS_SECRET_ACCESS_KEY": os.environ["STACKMIGRATE_S3_A_SECRET"],
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_DYNAMODB": os.environ["STACKMIGRATE_DYNAMODB"],
        "RCLONE_CONFIG_LOCAL_TYPE": "s3", "RCLONE_CONFIG_LOCAL_PROVIDER": "Other",
        "RCLONE_CONFIG_LOCAL_ENDPOINT": os.environ["STACKMIGRATE_S3_A"],
        "RCLONE_CONFIG_LOCAL_ACCESS_KEY_ID": os.environ["STACKMIGRATE_S3_A_KEY"],
        "RCLONE_CONFIG_LOCAL_SECRET_ACCESS_KEY": os.environ["STACKMIGRATE_S3_A_SECRET"],
        "RCLONE_CONFIG_LOCAL_REGION": "us-east-1",
        "RCLONE_CONFIG_OTHER_TYPE": "s3", "RCLONE_CONFIG_OTHER_PROVIDER": "Other",
        "RCLONE_CONFIG_OTHER_ENDPOINT": os.environ["STACKMIGRATE_S3_B"],
        "RCLONE_CONFIG_OTHER_ACCESS_KEY_ID": os.environ["STACKMIGRATE_S3_B_KEY"],
        "RCLONE_CONFIG_OTHER_SECRET_ACCESS_KEY": os.environ["STACKMIGRATE_S3_B_SECRET"],
        "RCLONE_CONFIG_OTHER_REGION": "us-east-1",
    })
    return env


def run_process(argv):
    """Wall seconds, the process's peak RSS in KiB (GNU time's %M: the command's own,
    not this harness's), its CPU seconds and its stdout; exits if the command fails."""
    with tempfile.NamedTemporaryFile("r") as rss:
        started = time.monotonic()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", rss.name, *map(str, argv)],
                              capture_output=True, text=True, env=tool_env())
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            sys.exit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        peak, user, system = rss.read().split()[-3:]
        return seconds, int(peak), float(user) + float(system), proc.stdout


class PulumiStack:
    """A YAML project using the release provider, with its own journal directory."""

    def __init__(self, resources, config):
        self.work = tempfile.TemporaryDirectory()
        self.dir = Path(self.work.name)
        project = {"name": f"bench-{int(time.time() * 1000)}", "runtime": "yaml", "resources": resources,
                   "plugins": {"providers": [{"name": "stackmigrate", "path": str(PLUGIN_DIR)}]}}
        (self.dir / "Pulumi.yaml").write_text(json.dumps(project))
        config = {**config, "stackmigrate:journal": f"file://{self.dir}/journal"}
        (self.dir / "Pulumi.bench.yaml").write_text(json.dumps({"config": config}))
        subprocess.run(["pulumi", "stack", "init", "bench", "--non-interactive", "--cwd", self.dir],
                       check=True, capture_output=True)

    def timed(self, *args):
        """Seconds of one pulumi command, the provider's peak RSS in KiB and CPU seconds,
        and the command's output."""
        started = time.monotonic()
        proc = subprocess.Popen(["pulumi", *args, "--non-interactive", "--cwd", self.dir],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stop, usage = threading.Event(), {"peak": 0, "cpu": 0.0}
        watcher = threading.Thread(target=provider_usage, args=(proc.pid, stop, usage))
        watcher.start()
        out, _ = proc.communicate()
        seconds = time.monotonic() - started
        stop.set()
        watcher.join()
        if proc.returncode != 0:
            sys.exit(f"pulumi {' '.join(args)} failed:\n{out}")
        return seconds, usage["peak"], usage["cpu"], out

    def close(self):
        subprocess.run(["pulumi", "stack", "rm", "--yes", "--force", "--non-interactive", "--cwd", self.dir],
                       capture_output=True)
        self.work.cleanup()


# --- datasets -----------------------------------------------------------------------

def fill_bucket(name, sizes, seed):
    s3 = s3_client("a")
    s3.create_bucket(Bucket=name)
    rng = random.Random(seed)
    blobs = [rng.randbytes(size) if size <= MiB else os.urandom(size) for size in sizes]

    def put(index):
        s3.put_object(Bucket=name, Key=f"images/{index:06d}.png", Body=blobs[index])
        blobs[index] = None

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(len(sizes))))
    return {"kind": "bucket", "name": name, "count": len(sizes), "bytes": sum(sizes)}


def fill_table(name, count):
    client = dynamodb()
    create_table(client, name, ttl=False)
    # 5 lines x 20 words an image: 209 items, one of them a COMPACTION_RUN, left out
    # here so that every tool copies the same items.
    items = [i for i in image_items(images=count // 208 + 1, lines=5, words=20)
             if i["TYPE"]["S"] != "COMPACTION_RUN"][:count]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda at: put_items(client, name, items[at:at + 2500]), range(0, len(items), 2500)))
    return {"kind": "table", "name": name, "count": len(items), "bytes": 0}


# --- targets ------------------------------------------------------------------------

def new_bucket(tag, side="a"):
    name = f"bench-{tag}-{random.randrange(16**8):08x}"
    s3_client(side).create_bucket(Bucket=name)
    return name


def bucket_count(name, side="a"):
    return len(listing(s3_client(side), name))


def drop_bucket(name, side="a"):
    s3 = s3_client(side)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=name)


def new_table(tag):
    return create_table(dynamodb(), f"bench-{tag}-{random.randrange(16**8):08x}", ttl=False)


def table_count(name):
    return item_count(dynamodb(), name)


def drop_table(name):
    dynamodb().delete_table(TableName=name)


# --- tools: each copies `source` into an empty `target`; returns (seconds, peak RSS KiB, CPU s) ---

def pulumi_up(resources, config=None):
    stack = PulumiStack(resources, config or both_sides())
    try:
        seconds, peak, cpu, _ = stack.timed("up", "--yes", "--skip-preview")
        return seconds, peak, cpu
    finally:
        stack.close()


def bucket_sync_up(source, target):
    return pulumi_up({"sync": {"type": "stackmigrate:BucketSync",
                               "properties": {"sourceBucket": source, "targetBucket": target}}})


def streamed_bucket_sync_up(source, target):
    """BucketSync from gateway "a" into gateway "b": different endpoints, so streamed."""
    config = both_sides()
    config["stackmigrate:target"] = {**connection("b"), "dynamodbEndpoint": os.environ["STACKMIGRATE_DYNAMODB"]}
    return pulumi_up({"sync": {"type": "stackmigrate:BucketSync",
                               "properties": {"sourceBucket": source, "targetBucket": target}}}, config)


def dynamo_copy_properties(source, target):
    """The boto3 copier's changes, as DynamoCopy inputs."""
    return {"sourceTable": source, "targetTable": target, "rewrite": REWRITE, "setAttributes": RESET}


def dynamo_copy_up(source, target):
    return pulumi_up({"copy": {"type": "stackmigrate:DynamoCopy", "properties": dynamo_copy_properties(source, target)}})


def process(*argv):
    def run(source, target):
        seconds, peak, cpu, _ = run_process([a.format(source=source, target=target) for a in argv])
        return seconds, peak, cpu
    return run


def self_timed(*argv):
    """A driver that times only its copy phase and reports it on stdout, with how many
    copies of the source it left in the target (a ceiling's sweep: one per prefix)."""
    def run(source, target):
        _, peak, cpu, out = run_process([str(a).format(source=source, target=target) for a in argv])
        result = json.loads(out)
        return result["seconds"], peak, cpu, result.get("copies", 1)
    return run


def bucket_tools(venv):
    endpoint = os.environ["STACKMIGRATE_S3_A"]
    return [
        ("stackmigrate BucketSync (`pulumi up`)", bucket_sync_up),
        ("stackmigrate copy engine (no Pulumi)", process(str(ENGINE), "sync", "{source}", "{target}")),
        ("s5cmd sync", process("s5cmd", "--endpoint-url", endpoint, "sync", "s3://{source}/*", "s3://{target}/")),
        ("rclone sync", process("rclone", "sync", "local:{source}", "local:{target}")),
        ("aws s3 sync", process(f"{venv}/bin/aws", "s3", "sync", "s3://{source}", "s3://{target}",
                                "--endpoint-url", endpoint, "--only-show-errors")),
        ("server copy ceiling (CopyObject only, best concurrency)",
         self_timed(ENGINE, "s3-copy-ceiling", "{source}", "{target}")),
    ]


def streamed_tools():
    return [
        ("stackmigrate BucketSync (`pulumi up`)", streamed_bucket_sync_up),
        ("rclone sync", process("rclone", "sync", "local:{source}", "other:{target}")),
        ("upload ceiling (PutObject and parts only, best concurrency)",
         self_timed(ENGINE, "s3-put-ceiling", "{source}", "{target}")),
    ]


def table_tools(venv, write_sweep):
    return [
        ("stackmigrate DynamoCopy (`pulumi up`)", dynamo_copy_up),
        ("seeds' boto3 copier (10 threads)", process(f"{venv}/bin/python", str(REPO / "bench" / "boto3_copier.py"),
                                                     "{source}", "{target}")),
        ("table write ceiling (BatchWriteItem only, best concurrency)",
         self_timed(ENGINE, "dynamo-write-ceiling", "{source}", "{target}", *write_sweep)),
    ]


def server_cpu(kind):
    """CPU seconds the servers have used so far: S3 gateway "a" for buckets, both gateways
    for streamed copies, DynamoDB Local for tables (scripts/services.sh records their pids
    in this order: gateways a and b, moto a and b, DynamoDB)."""
    pids = (Path(os.environ["STACKMIGRATE_RUN"]) / "pids").read_text().split()
    chosen = {"bucket": pids[:1], "streamed": pids[:2], "table": pids[4:5]}[kind]
    total = 0.0
    for pid in chosen:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def settle(kind):
    """Flushes dirty pages and waits (at most 30 s) until the server has been idle for a
    second, so that no run pays for the writeback or deletes of the one before."""
    os.sync()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        before = server_cpu(kind)
        time.sleep(1)
        if server_cpu(kind) - before < 0.05:
            return


def measure(dataset, tools, runs, warm_up):
    """Median seconds and server CPU seconds, and the largest peak RSS, of each tool over
    `runs` runs, after one warm-up when `warm_up`. Tools take turns run by run, so that a
    slow patch of the machine falls on all of them."""
    bucket = dataset["kind"] != "table"
    side = "b" if dataset["kind"] == "streamed" else "a"
    results = [{"tool": label, "runs": [], "peaks": [], "cpu": [], "client": []} for label, _ in tools]
    for attempt in range(0 if warm_up else 1, runs + 1):
        for (label, tool), result in zip(tools, results):
            target = new_bucket("dst", side) if bucket else new_table("dst")
            try:
                settle(dataset["kind"])
                before = server_cpu(dataset["kind"])
                seconds, peak, client, *copies = tool(dataset["name"], target)
                used = server_cpu(dataset["kind"]) - before
                found = bucket_count(target, side) if bucket else table_count(target)
                expected = dataset["count"] * (copies[0] if copies else 1)
                if found != expected:
                    sys.exit(f"{label}: the target holds {found} of {expected} after the copy")
            finally:
                drop_bucket(target, side) if bucket else drop_table(target)
            if attempt > 0:
                result["runs"].append(seconds)
                result["peaks"].append(peak)
                result["cpu"].append(used)
                result["client"].append(client)
            print(f"  {label}: {'warm-up' if attempt == 0 else f'run {attempt}'} {seconds:.2f} s, "
                  f"server CPU {used:.2f} s", file=sys.stderr, flush=True)
    return [{"tool": r["tool"], "median": statistics.median(r["runs"]), "runs": r["runs"],
             "peak_kib": max(r["peaks"]), "server_cpu": statistics.median(r["cpu"]),
             "client_cpu": statistics.median(r["client"])} for r in results]


def whole_migration(small, large, table, runs):
    """One stack holding all three copies: `pulumi preview` before the copy and after it,
    then `pulumi up` with nothing new; each checked to be what it claims."""
    resources = {
        "items": {"type": "stackmigrate:DynamoCopy", "properties": dynamo_copy_properties(table["name"], new_table("prod"))},
        "smallObjects": {"type": "stackmigrate:BucketSync",
                         "properties": {"sourceBucket": small["name"], "targetBucket": new_bucket("prod")}},
        "largeObjects": {"type": "stackmigrate:BucketSync",
                         "properties": {"sourceBucket": large["name"], "targetBucket": new_bucket("prod")}},
    }
    stack = PulumiStack(resources, both_sides())
    rows = []

    def repeat(label, args, changes):
        times, peaks = [], []
        for attempt in range(runs + 1):
            settle("bucket")
            settle("table")
            seconds, peak, _, out = stack.timed(*args)
            changed = any(word in out for word in ("to update", "to create", "to replace", "updated", "created"))
            if changed != changes:
                sys.exit(f"{label}: expected {'' if changes else 'no '}changes:\n{out}")
            if attempt > 0:
                times.append(seconds)
                peaks.append(peak)
            print(f"  {label}: {'warm-up' if attempt == 0 else f'run {attempt}'} {seconds:.2f} s", file=sys.stderr, flush=True)
        rows.append({"tool": label, "median": statistics.median(times), "runs": times, "peak_kib": max(peaks)})

    try:
        repeat("`pulumi preview` (whole migration, nothing copied yet)", ["preview"], changes=True)
        stack.timed("up", "--yes", "--skip-preview")
        repeat("`pulumi preview` (whole migration, all copied)", ["preview"], changes=False)
        repeat("`pulumi up`, nothing new (whole migration)", ["up", "--yes"], changes=False)
        stack.timed("destroy", "--yes", "--skip-preview")
    finally:
        stack.close()
    for name in (resources["smallObjects"]["properties"]["targetBucket"], resources["largeObjects"]["properties"]["targetBucket"]):
        drop_bucket(name)
    drop_table(resources["items"]["properties"]["targetTable"])
    return rows


# --- report -------------------------------------------------------------------------

def version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, env=tool_env(), timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired) as err:
        return f"unknown ({err})"


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.system()} {platform.release()}"


def dataset_label(dataset):
    if dataset["kind"] == "table":
        return f"{dataset['count']:,} items"
    streamed = ", streamed to a second gateway" if dataset["kind"] == "streamed" else ""
    return f"{dataset['count']:,} objects, {dataset['bytes'] / MiB:,.0f} MiB{streamed}"


def table_rows(dataset, results):
    ours = results[0]["median"]
    rows = []
    for result in results:
        rate = (f"{dataset['count'] / result['median']:,.0f} items/s" if dataset["kind"] == "table"
                else f"{dataset['bytes'] / MiB / result['median']:,.1f} MiB/s, {dataset['count'] / result['median']:,.0f} obj/s")
        rows.append(f"| {result['tool']} | {dataset_label(dataset)} | {result['median']:.2f} | {rate} "
                    f"| {result['median'] / ours:.2f} | {result['server_cpu']:.1f} | {result['client_cpu']:.1f} "
                    f"| {result['peak_kib'] / 1024:.0f} MiB |")
    return rows


def report(sections, extra_rows, args, venv, started, elapsed):
    lines = [
        "# stackmigrate against the tools users run instead",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))} by `bench/run.sh` "
        f"({elapsed:.0f} s in all): every tool copies the same source into a fresh empty "
        f"target on the same local servers, {'one warm-up run and then ' if args.warm_up else 'no warm-up run, '}{args.runs} runs, the tools "
        "taking turns, each run after the page cache is flushed and the server is idle; seconds are the median. "
        "\"× stackmigrate\" is the tool's median over stackmigrate's `pulumi up` median "
        "(above 1: stackmigrate is faster). Peak RSS is the provider's for `pulumi up`, the process's for the "
        "others. The ceilings time only their copy phase (listing or scanning first is not timed), at each "
        "concurrency of a sweep (CopyObject: 8 to 512 in flight; uploads: 1 to 32 objects; BatchWriteItem: "
        f"{', '.join(args.write_sweep) + ' batches only' if args.write_sweep else '4 to 128 batches'}), "
        "and report the fastest, so no copy can beat them. "
        "The streamed copies read from one gateway and write into another (different endpoints, so "
        "nothing is copied server side); their ceiling only uploads as many bytes from memory, hashing nothing (no checksum, an unsigned payload). "
        "Server CPU is what the S3 server (both, for streamed copies) or DynamoDB Local used during the run (a ceiling's untimed "
        "listing or scan and its whole sweep included); client CPU is the provider's for `pulumi up` (pulumi's own "
        "not counted), the process's for the others. With 2 cores shared by server and client, they "
        "show what bounds a copy.",
        "",
        "| tool | dataset | median s | rate | × stackmigrate | server CPU s | client CPU s | peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for dataset, results in sections:
        lines.extend(table_rows(dataset, results))
    for row in extra_rows:
        lines.append(f"| {row['tool']} | | {row['median']:.2f} | | | | | {row['peak_kib'] / 1024:.0f} MiB |")
    lines += ["", "Every run, in seconds:", ""]
    for dataset, results in sections:
        for result in results:
            lines.append(f"- {result['tool']}, {dataset_label(dataset)}: " + ", ".join(f"{t:.2f}" for t in result["runs"]))
    for row in extra_rows:
        lines.append(f"- {row['tool']}: " + ", ".join(f"{t:.2f}" for t in row["runs"]))
    lines += [
        "",
        f"Machine: {machine()}.",
        "",
        "Versions:",
        f"- stackmigrate at commit {version(['git', '-C', str(REPO), 'describe', '--always', '--dirty'])} (release build)",
        f"- {version(['pulumi', 'version'])} (pulumi), {version(['versitygw', '--version'])}",
        "- DynamoDB Local 2.6.1 (in memory, -sharedDb), "
        f"{version(['java', '-version'])}",
        f"- s5cmd {version(['s5cmd', 'version'])}, {version(['rclone', 'version'])}, "
        f"{version([f'{venv}/bin/aws', '--version'])}",
        f"- boto3 copier: {version([f'{venv}/bin/python', '-c', 'import boto3, sys; print(boto3.__version__, sys.version.split()[0])'])} "
        "(boto3, Python)",
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000, help="objects of 4 to 64 KiB")
    parser.add_argument("--large", type=int, default=20, help="objects of --large-mib MiB")
    parser.add_argument("--large-mib", type=int, default=100)
    parser.add_argument("--items", type=int, default=100_000, help="DynamoDB items")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warm-up", action=argparse.BooleanOptionalAction, default=True,
                        help="one untimed run of each tool first (--no-warm-up at sizes where a run takes minutes)")
    parser.add_argument("--write-sweep", type=lambda s: s.split(","), default=[],
                        help="the BatchWriteItem ceiling's concurrencies, comma-separated (default 4 to 128)")
    parser.add_argument("--only", default="small,large,streamed,items,migration",
                        help="comma-separated parts: small, large, streamed, items, migration")
    parser.add_argument("--venv", required=True, help="virtualenv with boto3 and awscli (bench/requirements.txt)")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "comparison.md"))
    args = parser.parse_args()
    parts = set(args.only.split(","))
    started, clock = time.time(), time.monotonic()
    stamp = f"{random.randrange(16**6):06x}"

    print(f"generating datasets ({args.small} small objects, {args.large} x {args.large_mib} MiB, {args.items} items)",
          file=sys.stderr, flush=True)
    rng = random.Random(7)
    small = fill_bucket(f"bench-small-{stamp}", [rng.randint(4 * 1024, 64 * 1024) for _ in range(args.small)], 7)
    large = fill_bucket(f"bench-large-{stamp}", [args.large_mib * MiB] * args.large, 8)
    table = fill_table(f"bench-items-{stamp}", args.items)

    sections, extra = [], []
    for part, dataset, tools in [("small", small, bucket_tools(args.venv)), ("large", large, bucket_tools(args.venv)),
                                 ("streamed", {**large, "kind": "streamed"}, streamed_tools()),
                                 ("items", table, table_tools(args.venv, args.write_sweep))]:
        if part in parts:
            print(f"{dataset_label(dataset)}:", file=sys.stderr, flush=True)
            sections.append((dataset, measure(dataset, tools, args.runs, args.warm_up)))
    if "migration" in parts:
        print("whole migration:", file=sys.stderr, flush=True)
        extra = whole_migration(small, large, table, args.runs)

    text = report(sections, extra, args, args.venv, started, time.monotonic() - clock)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
