"""A fault-injecting HTTP proxy on loopback, in front of an S3 or DynamoDB server. It
answers a share of requests as AWS does under load (S3's `503 SlowDown`, DynamoDB's
`ThrottlingException` / `ProvisionedThroughputExceededException`), drops a share of
connections (before or after the request reached the server), and can refuse every
write after the first N, as when a permission is taken away mid-copy.

    python tests/faultproxy.py --upstream http://127.0.0.1:9000 --service s3

prints its port and serves until killed. Faults are set, and counters read, at
`/__faultproxy` (names no bucket can have):

    PUT /__faultproxy  {"throttle": 0.2, "reset": 0.0, "deny_writes_after": null,
                        "deny_prefix": "/bucket/",
                        "refuse_operation": "CompleteMultipartUpload", "refuse_after": 4}
                                                        (replaces the faults, zeroes counters)
    GET /__faultproxy  {"requests": ..., "throttled": ..., "reset": ..., "denied": ...}

Requests pass through byte for byte with their Host header, so SigV4 signatures hold."""

import argparse
import asyncio
import json
import logging
import random
import sys

import aiohttp
from aiohttp import web

ADMIN = "/__faultproxy"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
S3_SLOWDOWN = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    "<Message>Please reduce your request rate.</Message><RequestId>faultproxy</RequestId></Error>"
)
S3_DENIED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    "<Message>Access Denied</Message><RequestId>faultproxy</RequestId></Error>"
)
DYNAMODB_THROTTLES = [
    ("ThrottlingException", "Rate of requests exceeds the allowed throughput."),
    ("ProvisionedThroughputExceededException", "The level of configured provisioned throughput for the table was exceeded."),
]
DYNAMODB_WRITES = ("BatchWriteItem", "PutItem", "DeleteItem", "UpdateItem", "TransactWriteItems")


class Faults:
    def __init__(self, service, seed):
        self.service = service
        self.random = random.Random(seed)
        self.set({})

    def set(self, settings):
        self.throttle = float(settings.get("throttle", 0.0))
        self.reset = float(settings.get("reset", 0.0))
        self.deny_writes_after = settings.get("deny_writes_after")
        self.deny_prefix = settings.get("deny_prefix", "")
        # "Refuse this operation (`*`: every one) after N successes", as when a permission
        # is taken away or the endpoint stays down.
        self.refuse_operation = settings.get("refuse_operation")
        self.refuse_after = int(settings.get("refuse_after", 0))
        self.counters = {"requests": 0, "throttled": 0, "reset": 0, "denied": 0, "writes": 0, "operations": 0}

    def operation(self, request):
        """The API operation a request calls, as AWS names it."""
        if self.service == "dynamodb":
            return request.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        query = request.query
        if request.method == "POST" and "uploadId" in query:
            return "CompleteMultipartUpload"
        if request.method == "POST" and "uploads" in query:
            return "CreateMultipartUpload"
        if request.method == "PUT" and "uploadId" in query:
            return "UploadPartCopy" if "x-amz-copy-source" in request.headers else "UploadPart"
        if request.method == "PUT":
            return "CopyObject" if "x-amz-copy-source" in request.headers else "PutObject"
        return f"{request.method} {request.path}"

    def is_write(self, request):
        if self.service == "dynamodb":
            target = request.headers.get("X-Amz-Target", "")
            return target.rsplit(".", 1)[-1] in DYNAMODB_WRITES
        return request.method in ("PUT", "POST", "DELETE") and request.path.startswith(self.deny_prefix)

    def throttled(self):
        if self.service == "s3":
            return web.Response(status=503, text=S3_SLOWDOWN, content_type="application/xml")
        code, message = self.random.choice(DYNAMODB_THROTTLES)
        body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message})
        return web.Response(status=400, text=body, content_type="application/x-amz-json-1.0")

    def denied(self):
        if self.service == "s3":
            return web.Response(status=403, text=S3_DENIED, content_type="application/xml")
        body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#AccessDeniedException", "message": "denied by faultproxy"})
        return web.Response(status=400, text=body, content_type="application/x-amz-json-1.0")


def drop(request):
    """Closes the client's connection without an answer."""
    request.transport.abort()
    raise ConnectionResetError("dropped by faultproxy")


def make_app(upstream, faults):
    session = None

    async def admin(request):
        if request.method == "PUT":
            faults.set(await request.json())
        return web.json_response(faults.counters)

    async def forward(request):
        nonlocal session
        if request.path == ADMIN:
            return await admin(request)
        body = await request.read()
        faults.counters["requests"] += 1
        if faults.random.random() < faults.throttle:
            faults.counters["throttled"] += 1
            return faults.throttled()
        reset = faults.random.random() < faults.reset
        if reset and faults.random.random() < 0.5:
            faults.counters["reset"] += 1
            drop(request)
        if faults.refuse_operation in ("*", faults.operation(request)):
            faults.counters["operations"] += 1
            if faults.counters["operations"] > faults.refuse_after:
                faults.counters["denied"] += 1
                return faults.denied()
        if faults.is_write(request):
            faults.counters["writes"] += 1
            limit = faults.deny_writes_after
            if limit is not None and faults.counters["writes"] > limit:
                faults.counters["denied"] += 1
                return faults.denied()
        if session is None:
            session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with session.request(
            request.method,
            upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
            skip_auto_headers=("Content-Type", "User-Agent", "Accept", "Accept-Encoding"),
        ) as answer:
            payload = await answer.read()
            if reset:
                # The request took effect; its answer never arrives.
                faults.counters["reset"] += 1
                drop(request)
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}}
            return web.Response(status=answer.status, headers=out, body=payload)

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def serve(upstream, service, seed, port):
    runner = web.AppRunner(make_app(upstream.rstrip("/"), Faults(service, seed)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


def main():
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # dropped connections are the point
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--service", choices=["s3", "dynamodb"], required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.upstream, args.service, args.seed, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
