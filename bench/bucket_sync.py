"""Times BucketSync through `pulumi up` on MinIO: N objects of 4 to 64 KiB copied into a
fresh bucket on the same endpoint (server-side copies) and on the second endpoint with
other credentials (streamed), with the provider's peak RSS. A measurement, not a test.

    eval "$(scripts/services.sh start)"; cargo build --release
    STACKMIGRATE_PLUGIN_DIR=target/release python3 bench/bucket_sync.py --objects 10000"""

import argparse
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
from conftest import connection, s3_client  # noqa: E402
from timing import timed_up  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=10_000)
    args = parser.parse_args()
    plugin_dir = os.environ.get("STACKMIGRATE_PLUGIN_DIR", str(REPO / "target" / "release"))
    a, b = s3_client("a"), s3_client("b")
    stamp = str(int(time.time()))
    source = f"bench-src-{stamp}"
    a.create_bucket(Bucket=source)
    rng = random.Random(7)
    sizes = [rng.randint(4 * 1024, 64 * 1024) for _ in range(args.objects)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: a.put_object(Bucket=source, Key=f"img/{i:06d}.png", Body=rng.randbytes(sizes[i])),
                      range(args.objects)))
    total = sum(sizes) / 2**20
    print("| copy | objects | MiB | seconds | objects/s | MiB/s | provider peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, client, side in [("server-side (one endpoint)", a, "a"), ("streamed (MinIO a -> MinIO b)", b, "b")]:
        target = f"bench-dst-{side}-{stamp}"
        client.create_bucket(Bucket=target)
        resources = {"sync": {"type": "stackmigrate:BucketSync", "properties": {"sourceBucket": source, "targetBucket": target}}}
        config = {"stackmigrate:source": connection("a"), "stackmigrate:target": connection(side)}
        seconds, peak = timed_up(resources, config, plugin_dir)
        print(f"| BucketSync {label} | {args.objects} | {total:.0f} | {seconds:.1f} | {args.objects / seconds:.0f} "
              f"| {total / seconds:.1f} | {peak / 1024:.0f} MiB |")


if __name__ == "__main__":
    main()
