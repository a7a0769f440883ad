"""Portfolio-shaped DynamoDB items (low-level DynamoDB JSON, so every type is exact),
the edge cases a copy must carry unchanged, and the transform DynamoCopy should apply."""

import os
import random
import re
import time
import uuid

import boto3

DEV_RAW, PROD_RAW = "raw-image-bucket-dev1234", "raw-image-bucket-prod9876"
DEV_CDN, PROD_CDN = "sitebucket-dev1234", "sitebucket-prod9876"
REWRITE = {DEV_RAW: PROD_RAW, DEV_CDN: PROD_CDN}
EXCLUDED = ["COMPACTION_RUN", "COMPACTION_LOCK", "EMBEDDING_BATCH_RESULT", "JOB", "JOB_METRIC"]
RESET = [
    {"types": ["RECEIPT_LINE", "RECEIPT_WORD"], "attribute": "embedding_status", "value": "NONE"},
    {"types": ["RECEIPT_LINE", "RECEIPT_WORD"], "attribute": "GSI1PK", "value": "EMBEDDING_STATUS#NONE"},
]


def dynamodb():
    return boto3.client(
        "dynamodb",
        endpoint_url=os.environ["STACKMIGRATE_DYNAMODB"],
        aws_access_key_id="local",
        aws_secret_access_key="local",
        region_name="us-east-1",
    )


def create_table(client, name, ttl=True):
    """The real table's shape: PK/SK strings, GSI1, TTL on time_to_live."""
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": a, "AttributeType": "S"} for a in ("PK", "SK", "GSI1PK", "GSI1SK")
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "GSI1",
                "KeySchema": [{"AttributeName": "GSI1PK", "KeyType": "HASH"}, {"AttributeName": "GSI1SK", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    if ttl:
        client.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "time_to_live"}
        )
    return name


def new_uuid():
    """From `random`, so a generator that seeds it makes the same ids every run."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def S(v):
    return {"S": v}


def N(v):
    return {"N": str(v)}


def image_items(images=2, lines=3, words=4):
    items = []
    for _ in range(images):
        image = new_uuid()
        pk = S(f"IMAGE#{image}")
        items.append({"PK": pk, "SK": S("IMAGE"), "TYPE": S("IMAGE"), "raw_s3_bucket": S(DEV_RAW),
                      "cdn_s3_bucket": S(DEV_CDN), "raw_s3_key": S(f"raw/{image}.png"), "width": N(1700)})
        items.append({"PK": pk, "SK": S("RECEIPT#00001"), "TYPE": S("RECEIPT"), "raw_s3_bucket": S(DEV_RAW),
                      "cdn_s3_bucket": S(DEV_CDN), "top_left": {"M": {"x": N("0.12345678901234567890"), "y": N("0.5")}}})
        for line in range(1, lines + 1):
            sk = f"RECEIPT#00001#LINE#{line:05d}"
            items.append({"PK": pk, "SK": S(sk), "TYPE": S("RECEIPT_LINE"), "text": S(f"line {line} · total"),
                          "embedding_status": S("SUCCESS"), "GSI1PK": S("EMBEDDING_STATUS#SUCCESS"), "GSI1SK": S(sk)})
            for word in range(1, words + 1):
                wsk = f"{sk}#WORD#{word:05d}"
                items.append({"PK": pk, "SK": S(wsk), "TYPE": S("RECEIPT_WORD"), "text": S("€12.50"),
                              "embedding_status": S("PENDING"), "GSI1PK": S("EMBEDDING_STATUS#PENDING"), "GSI1SK": S(wsk)})
                items.append({"PK": pk, "SK": S(f"{wsk}#LABEL#TOTAL"), "TYPE": S("RECEIPT_WORD_LABEL"),
                              "label": S("TOTAL"), "validation_status": {"NULL": True}})
        items.append({"PK": pk, "SK": S("RECEIPT#00001#PLACE"), "TYPE": S("RECEIPT_PLACE"), "name": S("Café Ünïcode ☕"),
                      "matched_fields": {"SS": ["name", "phone"]}})
        items.append({"PK": pk, "SK": S(f"RECEIPT#00001#COMPACTION_RUN#{new_uuid()}"), "TYPE": S("COMPACTION_RUN")})
    return items


def edge_items():
    now = int(time.time())
    return [
        {"PK": S("LOCK#lines#chroma-lines-compaction"), "SK": S("LOCK"), "TYPE": S("COMPACTION_LOCK"), "owner": S(new_uuid()),
         "expires": S("2025-11-20T15:33:00+00:00")},  # released long ago
        {"PK": S(f"JOB#{new_uuid()}"), "SK": S("JOB"), "TYPE": S("JOB"), "storage": {"M": {"bucket": S(DEV_RAW)}}},
        {"PK": S("JOB#metrics"), "SK": S("METRIC#loss#2026-11-20T10:00:00"), "TYPE": S("JOB_METRIC"), "value": N("0.25")},
        {"PK": S("BATCH#1"), "SK": S("RESULT#IMAGE#x"), "TYPE": S("EMBEDDING_BATCH_RESULT")},
        {"PK": S("EDGE#1"), "SK": S("NUMBERS"), "TYPE": S("EDGE"),
         "big": N("12345678901234567890123456789012345678"), "tiny": N("-0.00000000000000000001"),
         "ns": {"NS": ["1", "2.5", "-3"]}},
        {"PK": S("EDGE#1"), "SK": S("BINARY"), "TYPE": S("EDGE"), "blob": {"B": bytes([0, 1, 254, 255])},
         "blobs": {"BS": [b"\x00", b"\xff\xfe"]}, "flag": {"BOOL": False}, "empty": S(""), "nothing": {"NULL": True}},
        {"PK": S("EDGE#1"), "SK": S("NESTED"), "TYPE": S("EDGE"),
         "model_s3_uri": S(f"s3://{DEV_RAW}/runs/job-1/best/"),
         "nested": {"L": [{"M": {"uri": S(f"s3://{DEV_CDN}/assets/a.webp"), "set": {"SS": [DEV_RAW, "other"]}}}, S("日本語")]}},
        {"PK": S("EDGE#1"), "SK": S("LARGE"), "TYPE": S("EDGE"), "payload": S("x" * 380_000)},
        {"PK": S("EDGE#1"), "SK": S("TEXT"), "TYPE": S("EDGE"), "note": S(NAMES_IN_TEXT)},
        {"PK": S("CACHE#expired"), "SK": S("PLACES"), "TYPE": S("PLACES_CACHE"), "time_to_live": N(now - 3600)},
        {"PK": S("CACHE#live"), "SK": S("PLACES"), "TYPE": S("PLACES_CACHE"), "time_to_live": N(now + 86400)},
    ]


def put_items(client, table, items):
    for start in range(0, len(items), 25):
        requests = [{"PutRequest": {"Item": item}} for item in items[start:start + 25]]
        while requests:
            out = client.batch_write_item(RequestItems={table: requests})
            requests = out.get("UnprocessedItems", {}).get(table, [])


def item_count(client, table):
    count, start = 0, None
    while True:
        kwargs = {"TableName": table, "Select": "COUNT", **({"ExclusiveStartKey": start} if start else {})}
        out = client.scan(**kwargs)
        count += out["Count"]
        start = out.get("LastEvaluatedKey")
        if not start:
            return count


def scan_all(client, table):
    """Key (PK, SK) -> normalized item."""
    items, start = {}, None
    while True:
        kwargs = {"TableName": table, "ConsistentRead": True}
        if start:
            kwargs["ExclusiveStartKey"] = start
        out = client.scan(**kwargs)
        for item in out["Items"]:
            items[key(item)] = normalize(item)
        start = out.get("LastEvaluatedKey")
        if not start:
            return items


def key(item):
    return item["PK"]["S"], item["SK"]["S"]


def normalize(value):
    """Sets in sorted order so equal items compare equal."""
    if isinstance(value, dict):
        if len(value) == 1:
            (tag, inner), = value.items()
            if tag in ("SS", "NS", "BS"):
                return {tag: sorted(bytes(x) if tag == "BS" else x for x in inner)}
            if tag == "B":
                return {tag: bytes(inner)}
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


# Bucket names inside free text: only those standing as names are rewritten.
NAMES_IN_TEXT = (f"archived to {DEV_RAW}-archive and old{DEV_RAW}; {DEV_RAW}2 too; "
                 f"see arn:aws:s3:::{DEV_RAW}/x, https://{DEV_CDN}.s3.amazonaws.com/a and {DEV_CDN}.")
NAMES_IN_TEXT_REWRITTEN = (f"archived to {DEV_RAW}-archive and old{DEV_RAW}; {DEV_RAW}2 too; "
                           f"see arn:aws:s3:::{PROD_RAW}/x, https://{PROD_CDN}.s3.amazonaws.com/a and {PROD_CDN}.")
NAME_CHAR = "A-Za-z0-9._-"


def rewrite_names(text):
    """DynamoCopy's rule: a name is rewritten where no name character touches it (a
    virtual-hosted `.s3.` and a sentence's final dot do not count)."""
    names = sorted(REWRITE, key=len, reverse=True)
    pattern = "|".join(re.escape(n) for n in names)
    rule = rf"(?<![{NAME_CHAR}])({pattern})(?=$|[^{NAME_CHAR}]|\.s3[.-]|\.(?![{NAME_CHAR}]))"
    return re.sub(rule, lambda m: REWRITE[m.group(1)], text)


def rewrite(value):
    if isinstance(value, str):
        return rewrite_names(value)
    if isinstance(value, dict):
        if len(value) == 1 and "SS" in value:
            return {"SS": sorted(set(rewrite(v) for v in value["SS"]))}
        return {k: rewrite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite(v) for v in value]
    return value


def expected_transform(item):
    """What DynamoCopy with the seeds' settings writes for one source item, or None."""
    kind = item["TYPE"]["S"]
    if kind in EXCLUDED:
        return None
    ttl = item.get("time_to_live")
    if ttl and float(ttl["N"]) < time.time():
        return None
    out = {k: (v if k in ("PK", "SK") else rewrite(v)) for k, v in item.items()}
    for reset in RESET:
        if kind in reset["types"]:
            out[reset["attribute"]] = S(reset["value"])
    return normalize(out)
