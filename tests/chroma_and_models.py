"""Builders for ChromaDB snapshots and LayoutLM runs in the real system's layouts."""

import hashlib
import io
import json
import struct
import tarfile
import tempfile
import time
from pathlib import Path

import chromadb


def chroma_directory(root: Path, embeddings: int, collection: str):
    """A Chroma persist directory written by the real chromadb package: chroma.sqlite3
    and, once the index is flushed, a folder of HNSW files per segment. Embeddings are
    given, so no embedding model is needed."""
    client = chromadb.PersistentClient(path=str(root), settings=chromadb.Settings(anonymized_telemetry=False))
    records = client.get_or_create_collection(collection, embedding_function=None)
    for start in range(0, embeddings, 5000):
        ids = range(start, min(start + 5000, embeddings))
        records.add(
            ids=[f"IMAGE#x#RECEIPT#00001#LINE#{i:05d}" for i in ids],
            embeddings=[[(i % 97) / 97, 0.5, 0.25, 1.0] for i in ids],
            documents=[f"{collection} {i}" for i in ids],
        )
    assert records.count() == embeddings
    del records, client
    return root


def put_tarball_snapshot(s3, bucket, collection, version, embeddings, corrupt_hash=False, with_hash=True):
    with tempfile.TemporaryDirectory() as scratch:
        directory = chroma_directory(Path(scratch) / "chroma", embeddings, collection)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(directory.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    body = buffer.getvalue()
    prefix = f"{collection}/snapshot/timestamped/{version}/"
    s3.put_object(Bucket=bucket, Key=prefix + "snapshot.tar.gz", Body=body)
    if with_hash:
        digest = hashlib.md5(b"tampered" if corrupt_hash else body).hexdigest()
        s3.put_object(Bucket=bucket, Key=prefix + ".snapshot_hash", Body=f"md5:{digest}".encode())
    return prefix


def put_directory_snapshot(s3, bucket, collection, version, embeddings):
    with tempfile.TemporaryDirectory() as scratch:
        directory = chroma_directory(Path(scratch) / "chroma", embeddings, collection)
        prefix = f"{collection}/snapshot/timestamped/{version}/"
        parts = []
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            relative = str(path.relative_to(directory))
            s3.put_object(Bucket=bucket, Key=prefix + relative, Body=path.read_bytes())
            stat = path.stat()
            parts.append(f"{relative}:{stat.st_size}:{int(stat.st_mtime)}")
    s3.put_object(Bucket=bucket, Key=prefix + ".snapshot_hash", Body=("sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()).encode())
    return prefix


def set_pointer(s3, bucket, collection, version):
    s3.put_object(Bucket=bucket, Key=f"{collection}/snapshot/latest-pointer.txt", Body=version.encode())


def safetensors(tensors=2):
    header = {"__metadata__": {"format": "pt"}}
    data = b""
    for i in range(tensors):
        header[f"layer.{i}.weight"] = {"dtype": "F32", "shape": [4], "data_offsets": [len(data), len(data) + 16]}
        data += struct.pack("<4f", 0.1 * i, 0.2, 0.3, 0.4)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def put_model(s3, bucket, prefix, tokenizer="wordpiece", weights=True):
    files = {
        "config.json": json.dumps({"model_type": "layoutlm", "num_labels": 9}).encode(),
        "tokenizer_config.json": b'{"do_lower_case": true}',
        "special_tokens_map.json": b'{"cls_token": "[CLS]"}',
        "training.log": b"step 1 loss 0.9\n",
    }
    if weights:
        files["model.safetensors"] = safetensors()
    if tokenizer == "wordpiece":
        files["vocab.txt"] = b"[PAD]\n[UNK]\n[CLS]\n[SEP]\ntotal\n"
        files["tokenizer.json"] = b'{"model": {"type": "WordPiece"}}'
    else:
        files["vocab.json"] = b'{"total": 0}'
        files["merges.txt"] = b"#version: 0.2\nt o\n"
    for name, body in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=body)
    return files


def put_run(s3, bucket, run, checkpoints=(), best=False, tokenizer="wordpiece", weights=True):
    s3.put_object(Bucket=bucket, Key=f"runs/{run}/run.json", Body=json.dumps({"run": run}).encode())
    for step in checkpoints:
        put_model(s3, bucket, f"runs/{run}/checkpoints/checkpoint-{step}/", tokenizer, weights)
        s3.put_object(Bucket=bucket, Key=f"runs/{run}/checkpoints/checkpoint-{step}/trainer_state.json", Body=b"{}")
    if best:
        put_model(s3, bucket, f"runs/{run}/best/", tokenizer, weights)
    time.sleep(1.1)  # object times order runs; S3 keeps seconds
