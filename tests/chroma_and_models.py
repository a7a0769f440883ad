"""Builders for ChromaDB snapshots and LayoutLM runs in the real system's layouts."""

import hashlib
import io
import json
import sqlite3
import struct
import tarfile
import tempfile
import time
from pathlib import Path


def chroma_directory(root: Path, embeddings: int):
    """A Chroma persist directory: chroma.sqlite3 with an embeddings table, and one
    folder of HNSW files for a segment."""
    root.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(root / "chroma.sqlite3")
    db.executescript(
        "CREATE TABLE embeddings (id INTEGER PRIMARY KEY, segment_id TEXT, embedding_id TEXT, seq_id BLOB, created_at TEXT);"
        "CREATE TABLE collections (id TEXT PRIMARY KEY, name TEXT);"
    )
    db.executemany(
        "INSERT INTO embeddings (segment_id, embedding_id, seq_id, created_at) VALUES (?, ?, ?, ?)",
        [("seg-1", f"IMAGE#x#RECEIPT#00001#LINE#{i:05d}", i.to_bytes(8, "big"), "2025-11-20") for i in range(embeddings)],
    )
    db.commit()
    db.close()
    segment = root / "6f1c2a9e-0000-4000-8000-000000000001"
    segment.mkdir(exist_ok=True)
    for name in ("data_level0.bin", "header.bin", "length.bin", "link_lists.bin"):
        (segment / name).write_bytes(bytes(range(256)) * 4)
    return root


def put_tarball_snapshot(s3, bucket, collection, version, embeddings, corrupt_hash=False, with_hash=True):
    with tempfile.TemporaryDirectory() as scratch:
        directory = chroma_directory(Path(scratch) / "chroma", embeddings)
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
        directory = chroma_directory(Path(scratch) / "chroma", embeddings)
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
