"""Creates the dev and prod sides of the Portfolio system on the local services and fills
dev with Portfolio-shaped data: the receipts table (seed 001's counts by default), raw
and CDN images, ChromaDB snapshots of both collections in the real layout (the lines
snapshot as a tarball, words in the older directory format), and LayoutLM runs.
Prod gets a few rows and objects of its own, which the migration must leave alone.
Each side also gets what the runbook around the copies touches, on moto's server: the
embedding queues (with dead-letter queues), the embedding step functions and the CDN's
CloudFront distribution.

Prints the infra stacks' config as JSON: {"dev": {...}, "prod": {...}}. Seeded: a
second run writes the same data. --fresh empties both sides first."""

import argparse
import json
import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config

# The test suite's builders of Portfolio-shaped data are the one definition of it.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from chroma_and_models import put_directory_snapshot, put_run, put_tarball_snapshot, set_pointer  # noqa: E402
from portfolio_items import (  # noqa: E402
    DEV_CDN,
    DEV_RAW,
    PROD_CDN,
    PROD_RAW,
    S,
    create_table,
    edge_items,
    image_items,
    put_items,
)

NAMES = {
    "dev": {
        "tableName": "ReceiptsTable-dev1234",
        "rawBucket": DEV_RAW,
        "cdnBucket": DEV_CDN,
        "chromaBucket": "chromadb-dev-shared-buckets-vectors-1234",
        "layoutlmBucket": "layoutlm-training-dev-1234",
    },
    "prod": {
        "tableName": "ReceiptsTable-prod9876",
        "rawBucket": PROD_RAW,
        "cdnBucket": PROD_CDN,
        "chromaBucket": "chromadb-prod-shared-buckets-vectors-9876",
        "layoutlmBucket": "layoutlm-training-prod-9876",
    },
}
LINES_VERSION, WORDS_VERSION = "20251120_153000_123456_ab12cd34", "20251119_080000_000001_cd34ef56"


def clients():
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["STACKMIGRATE_S3_A"],
        aws_access_key_id=os.environ["STACKMIGRATE_S3_A_KEY"],
        aws_secret_access_key=os.environ["STACKMIGRATE_S3_A_SECRET"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
    )
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=os.environ["STACKMIGRATE_DYNAMODB"],
        aws_access_key_id="local",
        aws_secret_access_key="local",
        region_name="us-east-1",
    )
    return s3, dynamodb


def empty(s3, dynamodb):
    existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    tables = set(dynamodb.list_tables()["TableNames"])
    for side in NAMES.values():
        if side["tableName"] in tables:
            dynamodb.delete_table(TableName=side["tableName"])
        for key in ("rawBucket", "cdnBucket", "chromaBucket", "layoutlmBucket"):
            if side[key] in existing:
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=side[key]):
                    for obj in page.get("Contents", []):
                        s3.delete_object(Bucket=side[key], Key=obj["Key"])


def create(s3, dynamodb):
    existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    tables = set(dynamodb.list_tables()["TableNames"])
    for side in NAMES.values():
        if side["tableName"] not in tables:
            create_table(dynamodb, side["tableName"])
        for key in ("rawBucket", "cdnBucket", "chromaBucket", "layoutlmBucket"):
            if side[key] not in existing:
                s3.create_bucket(Bucket=side[key])


def runbook_services(env):
    """The embedding queues and workflows and the CDN distribution of one side (seed 000
    step 8, seed 001 step 4), on moto's server; reused when they exist. Returns the infra
    stack's config values naming them."""
    aws = {"endpoint_url": os.environ["STACKMIGRATE_MOTO_B"], "region_name": "us-east-1",
           "aws_access_key_id": "local", "aws_secret_access_key": "local"}
    sqs, sfn, cloudfront = (boto3.client(s, **aws) for s in ("sqs", "stepfunctions", "cloudfront"))
    names = {}
    machines = {m["name"]: m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]}
    for kind in ("line", "word"):
        dlq = sqs.create_queue(QueueName=f"embedding-{kind}-{env}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue = f"embedding-{kind}-{env}"
        sqs.create_queue(QueueName=queue, Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})})
        names[f"{kind}Queue"] = queue
        machine = f"embedding-infra-{env}-{kind}-workflow"
        if machine not in machines:
            definition = {"StartAt": "Embed", "States": {"Embed": {"Type": "Wait", "Seconds": 1, "End": True}}}
            machines[machine] = sfn.create_state_machine(
                name=machine, definition=json.dumps(definition),
                roleArn="arn:aws:iam::123456789012:role/embedding")["stateMachineArn"]
        names[f"{kind}Workflow"] = machines[machine]
    comment = f"portfolio-{env}-cdn"
    listed = cloudfront.list_distributions()["DistributionList"].get("Items", [])
    existing = [d["Id"] for d in listed if d["Comment"] == comment]
    if existing:
        names["cdnDistribution"] = existing[0]
    else:
        origin = f"{NAMES[env]['cdnBucket']}.s3.amazonaws.com"
        names["cdnDistribution"] = cloudfront.create_distribution(DistributionConfig={
            "CallerReference": comment, "Comment": comment, "Enabled": True,
            "Origins": {"Quantity": 1, "Items": [{"Id": "cdn", "DomainName": origin,
                                                  "S3OriginConfig": {"OriginAccessIdentity": ""}}]},
            "DefaultCacheBehavior": {"TargetOriginId": "cdn", "ViewerProtocolPolicy": "redirect-to-https",
                                     "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
                                     "MinTTL": 0, "TrustedSigners": {"Enabled": False, "Quantity": 0}},
        })["Distribution"]["Id"]
    return names


def put_objects(s3, objects):
    def put(item):
        bucket, key, body, content_type = item
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, CacheControl="max-age=31536000")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, objects))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=50, help="receipts images (seed 001: 50)")
    parser.add_argument("--lines", type=int, default=46, help="lines per receipt (seed 001: ~2,300 in all)")
    parser.add_argument("--words", type=int, default=7, help="words per line (seed 001: ~15,700 in all)")
    parser.add_argument("--fresh", action="store_true", help="empty both sides first")
    args = parser.parse_args()
    random.seed(1)
    s3, dynamodb = clients()
    if args.fresh:
        empty(s3, dynamodb)
    create(s3, dynamodb)
    dev, prod = NAMES["dev"], NAMES["prod"]

    items = image_items(images=args.images, lines=args.lines, words=args.words) + edge_items()
    put_items(dynamodb, dev["tableName"], items)
    put_items(dynamodb, prod["tableName"], [
        {"PK": S("IMAGE#prod-only"), "SK": S("IMAGE"), "TYPE": S("IMAGE"), "raw_s3_bucket": S(PROD_RAW)},
    ])

    objects = []
    for item in items:
        if item["TYPE"]["S"] != "IMAGE":
            continue
        image = item["PK"]["S"].split("#", 1)[1]
        body = random.Random(image).randbytes(20_000)
        objects.append((dev["rawBucket"], f"raw/{image}.png", body, "image/png"))
        objects.append((dev["rawBucket"], f"raw/{image}.json", b'{"ocr": "lines"}', "application/json"))
        for size in ("thumbnail", "small", "medium"):
            objects.append((dev["cdnBucket"], f"assets/{image}_{size}.webp", body[: 2_000 * len(size)], "image/webp"))
    objects.append((prod["rawBucket"], "raw/prod-only.png", b"prod's own", "image/png"))
    put_objects(s3, objects)

    lines = sum(i["TYPE"]["S"] == "RECEIPT_LINE" for i in items)
    words = sum(i["TYPE"]["S"] == "RECEIPT_WORD" for i in items)
    put_tarball_snapshot(s3, dev["chromaBucket"], "lines", LINES_VERSION, embeddings=lines)
    set_pointer(s3, dev["chromaBucket"], "lines", LINES_VERSION)
    put_directory_snapshot(s3, dev["chromaBucket"], "words", WORDS_VERSION, embeddings=words)
    set_pointer(s3, dev["chromaBucket"], "words", WORDS_VERSION)
    s3.put_object(Bucket=dev["chromaBucket"], Key="lines/delta/run-1/delta.tar.gz", Body=b"delta")
    put_tarball_snapshot(s3, prod["chromaBucket"], "lines", "20250101_000000_000000_00000000", embeddings=5)
    set_pointer(s3, prod["chromaBucket"], "lines", "20250101_000000_000000_00000000")

    put_run(s3, dev["layoutlmBucket"], "layoutlm-2025-11-01", best=True)
    put_run(s3, dev["layoutlmBucket"], "layoutlm-2025-11-20", checkpoints=(999, 1000))

    config = {env: {**NAMES[env], **runbook_services(env)} for env in NAMES}
    print(json.dumps(config))


if __name__ == "__main__":
    main()
