"""Times DynamoCopy through `pulumi up` on DynamoDB Local: N Portfolio-shaped items
(default 100,000), a fresh target, and the provider's peak RSS (VmHWM, read from /proc
while it runs). Prints one Markdown row. A measurement, not a test.

    eval "$(scripts/services.sh start)"; cargo build --release
    STACKMIGRATE_PLUGIN_DIR=target/release python3 bench/dynamo_copy.py --items 100000"""

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from portfolio_items import create_table, dynamodb, image_items, put_items  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from timing import timed_up  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    args = parser.parse_args()
    client = dynamodb()
    stamp = str(int(time.time()))
    source = create_table(client, f"bench-source-{stamp}", ttl=False)
    target = create_table(client, f"bench-target-{stamp}", ttl=False)
    # 5 lines x 20 words per image: (2 + 5 + 100 + 100 + 2) items an image.
    items = image_items(images=max(1, args.items // 209), lines=5, words=20)[: args.items]
    chunks = [items[i:i + 2500] for i in range(0, len(items), 2500)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda chunk: put_items(client, source, chunk), chunks))

    plugin_dir = os.environ.get("STACKMIGRATE_PLUGIN_DIR", str(REPO / "target" / "release"))
    endpoint = {"dynamodbEndpoint": os.environ["STACKMIGRATE_DYNAMODB"], "endpoint": os.environ["STACKMIGRATE_S3_A"],
                "accessKeyId": "bench", "secretAccessKey": "bench", "region": "us-east-1"}
    resources = {"copy": {"type": "stackmigrate:DynamoCopy", "properties": {"sourceTable": source, "targetTable": target}}}
    config = {"stackmigrate:source": endpoint, "stackmigrate:target": endpoint}
    seconds, peak = timed_up(resources, config, plugin_dir)
    print("| tool | items | seconds | items/s | provider peak RSS |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| DynamoCopy (pulumi up) | {len(items)} | {seconds:.1f} | {len(items) / seconds:.0f} | {peak / 1024:.0f} MiB |")


if __name__ == "__main__":
    main()
