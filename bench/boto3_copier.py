"""The seeds' DynamoDB dev-to-prod copier (seed 001, scripts/copy_dynamodb_dev_to_prod.py),
re-implemented for the benchmark with the same shape: one scan of the source, the same
item changes (runtime types left behind, bucket names rewritten, embedding_status reset),
batches of 25 written by a ThreadPoolExecutor of 10 workers, unprocessed items resent.

    python bench/boto3_copier.py SOURCE_TABLE TARGET_TABLE   (endpoint: AWS_ENDPOINT_URL_DYNAMODB)"""

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import boto3

SKIPPED_TYPES = {"COMPACTION_RUN", "COMPACTION_LOCK", "EMBEDDING_BATCH_RESULT", "JOB", "JOB_METRIC"}
BUCKETS = {"raw-image-bucket-dev1234": "raw-image-bucket-prod9876", "sitebucket-dev1234": "sitebucket-prod9876"}
BATCH_SIZE = 25
WORKERS = 10


def transform(item):
    if item["TYPE"]["S"] in ("IMAGE", "RECEIPT"):
        for attribute in ("raw_s3_bucket", "cdn_s3_bucket"):
            if attribute in item:
                item[attribute] = {"S": BUCKETS.get(item[attribute]["S"], item[attribute]["S"])}
    if item["TYPE"]["S"] in ("RECEIPT_LINE", "RECEIPT_WORD"):
        item["embedding_status"] = {"S": "NONE"}
        item["GSI1PK"] = {"S": "EMBEDDING_STATUS#NONE"}
    return item


def write_batch(client, table, items):
    requests = [{"PutRequest": {"Item": item}} for item in items]
    retries = 0
    while requests:
        out = client.batch_write_item(RequestItems={table: requests})
        requests = out.get("UnprocessedItems", {}).get(table, [])
        if requests:
            retries += 1
            time.sleep(min(0.05 * 2 ** retries, 2))
    return len(items)


def main():
    source, target = sys.argv[1], sys.argv[2]
    client = boto3.client("dynamodb")
    items = []
    for page in client.get_paginator("scan").paginate(TableName=source):
        items.extend(transform(i) for i in page["Items"] if i["TYPE"]["S"] not in SKIPPED_TYPES)
    batches = [items[i:i + BATCH_SIZE] for i in range(0, len(items), BATCH_SIZE)]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        copied = sum(pool.map(lambda batch: write_batch(client, target, batch), batches))
    print(f"copied {copied} items")


if __name__ == "__main__":
    main()
