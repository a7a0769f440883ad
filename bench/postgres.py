"""PostgresCopy against pg_dump | pg_restore (directory format, -j) and pgcopydb on the
same two PostgreSQL clusters (scripts/services.sh's dev and prod), on a database shaped
like seed 004's docprocessing: documents, pages and tasks with foreign keys, text,
numeric, jsonb, timestamps and bytea. Each tool copies into a fresh database; reported:
time, rows per second, the tool's peak RSS and both servers' CPU. Then a no-change
`pulumi up`. Writes a Markdown table (bench/results/postgres.md by default)."""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pg8000.native

REPO = Path(__file__).resolve().parent.parent

SCHEMA = [
    "CREATE TYPE task_state AS ENUM ('queued', 'running', 'done', 'failed')",
    """CREATE TABLE documents (
        id bigserial PRIMARY KEY, name text NOT NULL, size_bytes numeric(20, 0), meta jsonb,
        uploaded_at timestamptz NOT NULL)""",
    """CREATE TABLE pages (
        document_id bigint NOT NULL REFERENCES documents(id), page_no int NOT NULL, body text,
        thumbnail bytea, ocr_confidence numeric(5, 4), PRIMARY KEY (document_id, page_no))""",
    "CREATE INDEX pages_body_prefix ON pages (left(body, 16))",
    """CREATE TABLE tasks (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, document_id bigint REFERENCES documents(id),
        state task_state NOT NULL, attempts int NOT NULL, result jsonb, created_at timestamptz NOT NULL)""",
]


def server(side):
    return urlparse(os.environ[{"dev": "STACKMIGRATE_PG_DEV", "prod": "STACKMIGRATE_PG_PROD"}[side]])


def url(side, database):
    u = server(side)
    return f"postgresql://{u.username}:{u.password}@{u.hostname}:{u.port}/{database}?sslmode=disable"


def connect(side, database="postgres"):
    u = server(side)
    return pg8000.native.Connection(u.username, password=u.password, host=u.hostname, port=u.port, database=database)


def fresh(side, name):
    admin = connect(side)
    admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.run(f'CREATE DATABASE "{name}"')
    admin.close()


def make_source(name, rows):
    """`rows` rows in all: a tenth documents, eight tenths pages, a tenth tasks."""
    fresh("dev", name)
    db = connect("dev", name)
    for statement in SCHEMA:
        db.run(statement)
    documents = rows // 10
    db.run("INSERT INTO documents (name, size_bytes, meta, uploaded_at) "
           "SELECT 'scan-' || g || '.pdf', g * 1024, jsonb_build_object('pages', 8, 'lang', 'en', 'tag', g % 97), "
           "timestamptz '2026-01-01' + g * interval '1 second' FROM generate_series(1, :n) g", n=documents)
    db.run("INSERT INTO pages SELECT d, p, repeat('line of receipt text ' || d || ' ', 8), "
           "decode(md5(d::text || p), 'hex'), ((d + p) % 10000) / 10000.0 "
           "FROM generate_series(1, :n) d CROSS JOIN generate_series(1, 8) p", n=documents)
    db.run("INSERT INTO tasks (document_id, state, attempts, result, created_at) "
           "SELECT g, (ARRAY['queued','running','done','failed'])[1 + g % 4]::task_state, g % 3, "
           "jsonb_build_object('ok', g % 4 = 2), timestamptz '2026-01-01' + g * interval '1 second' "
           "FROM generate_series(1, :n) g", n=documents)
    db.run("ANALYZE")
    total = sum(db.run(f"SELECT count(*) FROM {t}")[0][0] for t in ("documents", "pages", "tasks"))
    size = db.run("SELECT pg_database_size(current_database())")[0][0]
    db.close()
    return total, size


def cluster_cpu(side):
    """CPU seconds the cluster's processes used so far: the postmaster, its live
    children, and the children it reaped (cutime, cstime)."""
    data = Path(os.environ["STACKMIGRATE_RUN"]) / f"postgres-{side}" / "data"
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")

    def fields(pid):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    mine = fields(postmaster)
    total = sum(int(x) for x in mine[11:15])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                f = fields(entry.name)
            except OSError:
                continue
            if int(f[1]) == postmaster:
                total += int(f[11]) + int(f[12])
    return total / tick


class PeakRss:
    """The summed high-water marks of processes whose command line holds `needle`."""

    def __init__(self, needle):
        self.needle, self.peak, self.stop = needle, {}, threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self):
        while not self.stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    if self.needle not in (entry / "cmdline").read_bytes().decode(errors="replace"):
                        continue
                    for line in (entry / "status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak[entry.name] = max(self.peak.get(entry.name, 0), int(line.split()[1]))
                except OSError:
                    pass
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join()

    def mib(self):
        return sum(self.peak.values()) / 1024


def measured(command, needle, env=None):
    cpu = (cluster_cpu("dev"), cluster_cpu("prod"))
    started = time.perf_counter()
    with PeakRss(needle) as rss:
        proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
    return {"seconds": elapsed, "rss": rss.mib(),
            "cpu_dev": cluster_cpu("dev") - cpu[0], "cpu_prod": cluster_cpu("prod") - cpu[1], "output": proc.stdout}


def pulumi_project(root, source, target, jobs, range_rows):
    project = {
        "name": "pgbench", "runtime": "yaml",
        "plugins": {"providers": [{"name": "stackmigrate", "path": os.environ["STACKMIGRATE_PLUGIN_DIR"]}]},
        "resources": {"db": {"type": "stackmigrate:PostgresCopy", "properties": {
            "source": {"url": source}, "target": {"url": target}, "parallel": jobs,
            **({"rangeRows": range_rows} if range_rows else {})}}},
        "outputs": {"rowsCopied": "${db.rowsCopied}"},
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "Pulumi.yaml").write_text(json.dumps(project))
    (root / "Pulumi.bench.yaml").write_text(json.dumps({"config": {}}))
    subprocess.run(["pulumi", "stack", "init", "bench", "--non-interactive", "--cwd", str(root)],
                   check=True, capture_output=True)


def run_stackmigrate(source_db, target_db, work, jobs, range_rows):
    fresh("prod", target_db)
    root = work / f"pulumi-{target_db}"
    pulumi_project(root, url("dev", source_db), url("prod", target_db), jobs, range_rows)
    up = ["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--cwd", str(root), "--stack", "bench"]
    result = measured(up, "pulumi-resource-stackmigrate")
    post_data = re.search(r"made the created tables' indexes, constraints and triggers in ([\d.]+) s",
                          result["output"])
    result["post_data"] = float(post_data.group(1)) if post_data else None
    again = measured(up, "pulumi-resource-stackmigrate")
    result["no_change"] = again["seconds"]
    subprocess.run(["pulumi", "stack", "rm", "--yes", "--force", "--non-interactive", "--cwd", str(root), "--stack", "bench"],
                   capture_output=True)
    return result


def run_pg_dump(source_db, target_db, work, jobs):
    fresh("prod", target_db)
    dump = work / f"dump-{target_db}"
    shutil.rmtree(dump, ignore_errors=True)
    script = (f"pg_dump -Fd -j {jobs} -f {dump} '{url('dev', source_db)}' && "
              f"pg_restore -j {jobs} --no-owner -d '{url('prod', target_db)}' {dump}")
    result = measured(["bash", "-c", script], "pg_")
    shutil.rmtree(dump, ignore_errors=True)
    return result


def run_pgcopydb(source_db, target_db, work, jobs):
    fresh("prod", target_db)
    scratch = work / f"pgcopydb-{target_db}"
    shutil.rmtree(scratch, ignore_errors=True)
    command = ["pgcopydb", "clone", "--source", url("dev", source_db), "--target", url("prod", target_db),
               "--table-jobs", str(jobs), "--index-jobs", str(jobs), "--no-owner", "--no-acl", "--dir", str(scratch)]
    result = measured(command, "pgcopydb")
    shutil.rmtree(scratch, ignore_errors=True)
    return result


def check_copy(source_db, target_db):
    src, dst = connect("dev", source_db), connect("prod", target_db)
    for table in ("documents", "pages", "tasks"):
        a = src.run(f"SELECT count(*), sum(hashtext(t::text)::numeric) FROM {table} t")[0]
        b = dst.run(f"SELECT count(*), sum(hashtext(t::text)::numeric) FROM {table} t")[0]
        if a != b:
            raise SystemExit(f"{target_db}.{table} differs from the source: {a} vs {b}")
    src.close()
    dst.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="pg_dump/pg_restore -j, pgcopydb jobs, PostgresCopy parallel")
    parser.add_argument("--range-rows", type=int, help="PostgresCopy rangeRows (default: the resource's)")
    parser.add_argument("--tools", nargs="+", choices=["stackmigrate", "pg_dump", "pgcopydb"],
                        default=["stackmigrate", "pg_dump", "pgcopydb"])
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "postgres.md"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgbench-"))
    lines = [
        "# PostgresCopy against pg_dump | pg_restore and pgcopydb",
        "",
        f"`bench/postgres.sh`; {os.cpu_count()} cores; both clusters PostgreSQL 15 on this machine (fsync off);",
        f"jobs {args.jobs} for every tool; medians of {args.runs} runs; each copy into a fresh database,",
        "schema, data, indexes and constraints included, checked equal to the source afterwards.",
        "RSS: the high-water marks of the tool's processes, summed (PostgresCopy: the provider alone);",
        "server CPU: seconds used by the source's and the target's server processes.",
        "",
        "| rows | tool | time (s) | rows/s | peak RSS (MiB) | source CPU (s) | target CPU (s) | no-change up (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rows in args.rows:
        source_db = f"bench_source_{rows}"
        total, size = make_source(source_db, rows)
        print(f"source: {total} rows, {size / 2**20:.0f} MiB", flush=True)
        tools = {
            "stackmigrate": ("stackmigrate PostgresCopy" + (f" (rangeRows {args.range_rows:,})" if args.range_rows else ""),
                             lambda t: run_stackmigrate(source_db, t, work, args.jobs, args.range_rows)),
            "pg_dump": (f"pg_dump -Fd -j{args.jobs} + pg_restore -j{args.jobs}",
                        lambda t: run_pg_dump(source_db, t, work, args.jobs)),
            "pgcopydb": (f"pgcopydb clone ({args.jobs} jobs)", lambda t: run_pgcopydb(source_db, t, work, args.jobs)),
        }
        for name, run in (tools[tool] for tool in args.tools):
            results = []
            for i in range(args.runs):
                target_db = f"bench_target_{rows}_{len(results)}_{abs(hash(name)) % 1000}"
                result = run(target_db)
                check_copy(source_db, target_db)
                fresh("prod", target_db)
                results.append(result)
                post_data = f" (post-data {result['post_data']:.1f} s)" if result.get("post_data") else ""
                print(f"{rows} {name} run {i + 1}: {result['seconds']:.1f} s{post_data}", flush=True)
            median = {k: statistics.median(r[k] for r in results) for k in ("seconds", "rss", "cpu_dev", "cpu_prod")}
            no_change = (f"{statistics.median(r['no_change'] for r in results):.1f}"
                         if "no_change" in results[0] else "")
            lines.append(f"| {total:,} | {name} | {median['seconds']:.1f} | {total / median['seconds']:,.0f} | "
                         f"{median['rss']:.0f} | {median['cpu_dev']:.1f} | {median['cpu_prod']:.1f} | {no_change} |")
        admin = connect("dev")
        admin.run(f'DROP DATABASE IF EXISTS "{source_db}" WITH (FORCE)')
        admin.close()
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
