"""Fills the local dev buckets with Portfolio-shaped image data (raw uploads with their
OCR JSON beside them, CDN renditions) and creates the empty prod buckets."""

import argparse
import os
import random
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["STACKMIGRATE_S3_A"],
        aws_access_key_id=os.environ["STACKMIGRATE_S3_A_KEY"],
        aws_secret_access_key=os.environ["STACKMIGRATE_S3_A_SECRET"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--suffix", default="local")
    args = parser.parse_args()
    s3 = client()
    names = {
        "devRawBucket": f"raw-image-bucket-dev-{args.suffix}",
        "prodRawBucket": f"raw-image-bucket-prod-{args.suffix}",
        "devCdnBucket": f"sitebucket-dev-{args.suffix}",
        "prodCdnBucket": f"sitebucket-prod-{args.suffix}",
    }
    existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    for name in names.values():
        if name not in existing:
            s3.create_bucket(Bucket=name)
    puts = []
    for i in range(args.images):
        image = f"{i:08x}-0000-4000-8000-{i:012x}"
        # Seeded, so a second run writes the same bytes and the migration has nothing new.
        body = random.Random(i).randbytes(20_000 + 37 * i)
        puts.append((names["devRawBucket"], f"raw/{image}.png", body, "image/png"))
        puts.append((names["devRawBucket"], f"raw/{image}.json", b'{"ocr": "lines"}', "application/json"))
        for size in ("thumbnail", "small", "medium"):
            puts.append((names["devCdnBucket"], f"assets/{image}_{size}.webp", body[: 2_000 * (1 + len(size))], "image/webp"))
    puts.append((names["devRawBucket"], "lines/delta/run-1/delta.tar.gz", b"delta", "application/gzip"))

    def put(item):
        bucket, key, body, content_type = item
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, CacheControl="max-age=31536000")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, puts))
    for key, value in names.items():
        print(f"{key}={value}")


if __name__ == "__main__":
    main()
