"""PostgresCopy through the pulumi CLI between two real PostgreSQL 15 clusters (dev and
prod, from scripts/services.sh), shaped like seed 004's docprocessing database:
documents, pages and tasks with foreign keys, an enum, jsonb, numeric, bytea,
timestamps and serial keys."""

import os
import signal
import subprocess
import time
from urllib.parse import urlparse

import pg8000.exceptions
import pg8000.native
import pytest

from conftest import unique, wait_until

SCHEMA = """
CREATE TYPE task_state AS ENUM ('queued', 'running', 'done');
CREATE TABLE documents (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    size_bytes numeric(20, 0),
    meta jsonb,
    uploaded_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE pages (
    document_id bigint NOT NULL REFERENCES documents(id),
    page_no int NOT NULL,
    body text,
    thumbnail bytea,
    PRIMARY KEY (document_id, page_no));
CREATE INDEX pages_body ON pages (body);
CREATE TABLE tasks (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id bigint REFERENCES documents(id),
    state task_state NOT NULL,
    score double precision,
    score_pct double precision GENERATED ALWAYS AS (score * 100) STORED);
"""


def create_schema(db):
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.run(statement)


def server(side):
    return urlparse(os.environ[{"dev": "STACKMIGRATE_PG_DEV", "prod": "STACKMIGRATE_PG_PROD"}[side]])


def url(side, database, password=None):
    u = server(side)
    return f"postgresql://{u.username}:{password or u.password}@{u.hostname}:{u.port}/{database}?sslmode=disable"


def connect(side, database):
    u = server(side)
    return pg8000.native.Connection(u.username, password=u.password, host=u.hostname, port=u.port, database=database)


def database(side, name):
    admin = connect(side, "postgres")
    admin.run(f'CREATE DATABASE "{name}"')
    admin.close()
    return connect(side, name)


def fill(db, documents, pages_per_document=3, first=1):
    for i in range(first, first + documents):
        db.run("INSERT INTO documents (name, size_bytes, meta, uploaded_at) VALUES (:n, :s, CAST(:m AS jsonb), "
               "timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => :i))",
               n=f"receipt-{i}.pdf", s=i * 1000, m=f'{{"pages": {pages_per_document}, "tag": "t{i % 7}"}}', i=i)
    db.run("INSERT INTO pages SELECT d.id, p, 'page ' || p || ' of ' || d.name, decode(md5(d.name || p), 'hex') "
           "FROM documents d CROSS JOIN generate_series(1, :n) p WHERE d.id >= :first", n=pages_per_document, first=first)
    db.run("INSERT INTO tasks (document_id, state, score) SELECT id, CAST((ARRAY['queued','running','done'])[1 + id % 3] AS task_state), "
           "id / 7.0 FROM documents WHERE id >= :first", first=first)


def rows(db, table, order):
    return db.run(f"SELECT * FROM {table} ORDER BY {order}")


def snapshot(db):
    """Every row of the three tables, key by key."""
    return {
        "documents": rows(db, "documents", "id"),
        "pages": rows(db, "pages", "document_id, page_no"),
        "tasks": rows(db, "tasks", "id"),
    }


def tables_in(db):
    return sorted(r[0] for r in db.run(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"))


def indexes(db, table):
    return sorted(r[0] for r in db.run("SELECT indexname FROM pg_indexes WHERE tablename = :t", t=table))


def resource(dev_name, prod_name, **properties):
    return {"db": {"type": "stackmigrate:PostgresCopy", "properties": {
        "source": {"url": url("dev", dev_name)},
        "target": {"url": url("prod", prod_name)},
        **properties}}}


OUTPUTS = {k: f"${{db.{k}}}" for k in
           ("rowsCopied", "tablesCreated", "tablesInSync", "rowsReplaced", "rowsLeftAlone", "sequencesSet", "verified")}


@pytest.fixture
def dev_prod():
    dev_name, prod_name = unique("dev"), unique("prod")
    dev = database("dev", dev_name)
    create_schema(dev)
    prod = database("prod", prod_name)
    yield dev_name, dev, prod_name, prod
    dev.close()
    prod.close()


def test_a_database_into_an_empty_one_counted_created_copied_verified_then_new_rows_alone_then_rolled_back(project, dev_prod):
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 40)
    dev.run("CREATE SCHEMA audit")
    dev.run("CREATE TABLE audit.events (id bigint PRIMARY KEY, document_id bigint REFERENCES documents(id), what text)")
    dev.run("INSERT INTO audit.events SELECT g, g, 'uploaded' FROM generate_series(1, 3) g")
    p = project(resource(dev_name, prod_name), OUTPUTS)

    preview = p.preview()
    assert "public.documents: table to create, 40 rows" in preview, preview
    assert "public.pages: table to create, 120 rows" in preview, preview
    assert "4 tables; 4 to create; 203 rows" in preview, preview
    assert tables_in(prod) == [], "preview wrote nothing"

    p.up()
    out = p.outputs()
    assert (out["rowsCopied"], out["tablesCreated"], out["verified"]) == (203, 4, True), out
    assert snapshot(prod) == snapshot(dev)
    assert rows(prod, "audit.events", "id") == rows(dev, "audit.events", "id")
    # Indexes and constraints after the data; sequences moved on: a new prod row gets a fresh key.
    indexes = {r[0] for r in prod.run("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert {"documents_pkey", "pages_pkey", "pages_body", "tasks_pkey"} <= indexes, indexes
    assert prod.run("SELECT count(*) FROM pg_constraint WHERE contype = 'f'")[0][0] == 3
    assert out["sequencesSet"] == 2, out
    assert prod.run("INSERT INTO documents (name) VALUES ('prod-new') RETURNING id")[0][0] == 41
    prod.run("DELETE FROM documents WHERE id = 41")

    again = p.preview()
    assert "2 unchanged" in again and "counting public.tasks" in again, again
    assert "2 unchanged" in p.up(), "a second up copies nothing"

    fill(dev, 5, first=41)
    p.up()
    out = p.outputs()
    assert (out["rowsCopied"], out["tablesCreated"]) == (25, 0), out
    assert snapshot(prod) == snapshot(dev)

    p.destroy()
    assert tables_in(prod) == [], "the created tables are dropped"
    assert prod.run("SELECT count(*) FROM pg_namespace WHERE nspname = 'audit'")[0][0] == 0, "and the created schema"
    assert prod.run("SELECT count(*) FROM pg_type WHERE typname = 'task_state'")[0][0] == 0
    assert prod.run("SELECT count(*) FROM stackmigrate.tables")[0][0] == 0, "the journal is cleared"


def test_rows_prod_changed_after_a_fill_are_left_alone_by_the_next_plan_and_by_destroy(project, dev_prod):
    """A fill journals its rows in arrays, not a row each: what prod edits, deletes or
    adds afterwards must still read as not this copy's, at preview and at destroy."""
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 10)
    p = project(resource(dev_name, prod_name), OUTPUTS)
    p.up()
    copied = snapshot(prod)
    prod.run("UPDATE pages SET body = 'edited in prod' WHERE document_id = 2 AND page_no = 1")
    prod.run("DELETE FROM pages WHERE document_id = 3 AND page_no = 1")
    prod.run("INSERT INTO pages VALUES (5, 9, 'prod page', NULL)")
    dev.run("UPDATE pages SET body = 'changed in dev' WHERE document_id = 2 AND page_no = 1")
    dev.run("INSERT INTO pages VALUES (2, 9, 'new in dev', NULL)")

    preview = p.preview()
    pages = next(line for line in preview.splitlines() if "public.pages:" in line)
    assert "1 new rows" in pages and "2 target rows left alone" in pages and "28 unchanged" in pages, preview
    assert "public.documents: in sync" in preview, preview

    destroyed = p.destroy()
    assert "left as they are" in destroyed, destroyed
    assert [r[:3] for r in rows(prod, "pages", "document_id, page_no")] == [[2, 1, "edited in prod"], [5, 9, "prod page"]]
    assert rows(prod, "documents", "id") == [r for r in copied["documents"] if r[0] in (2, 5)], \
        "the documents prod's pages reference stay"
    assert "tasks" not in tables_in(prod), "the copied tasks, which nothing of prod's references, are gone, and their table"


def test_a_journal_the_previous_release_wrote_is_still_planned_from_and_rolled_back(project, dev_prod):
    """Until this release every copied row had its own rows entry, hashed by MD5 of its
    text, and there were no fills and no hash kinds: such a journal, left in prod by
    an older provider, must still work."""
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 5)
    p = project(resource(dev_name, prod_name), OUTPUTS)
    p.up()
    assert prod.run("SELECT tbl, hash FROM stackmigrate.tables ORDER BY tbl") == [
        ["public.documents", "record"], ["public.pages", "record"], ["public.tasks", "md5"]], \
        "rows hashed by value, but for the table with an enum (hashed by OID, different in each database)"
    prod.run("INSERT INTO stackmigrate.rows (journal, tbl, key, written) "
             "SELECT journal, tbl, CASE WHEN key2 IS NULL THEN jsonb_build_array(u.a) ELSE jsonb_build_array(u.a, u.b) END, u.h "
             "FROM stackmigrate.fills, unnest(key1, key2, hashes) AS u(a, b, h)")
    prod.run("DROP TABLE stackmigrate.fills")
    md5 = "('x' || left(md5(ROW({})::text), 16))::bit(64)::bigint"
    prod.run(f"UPDATE stackmigrate.rows j SET written = {md5.format('d.id, d.name, d.size_bytes, d.meta, d.uploaded_at')} "
             "FROM documents d WHERE j.tbl = 'public.documents' AND j.key = jsonb_build_array(d.id)")
    prod.run(f"UPDATE stackmigrate.rows j SET written = {md5.format('g.document_id, g.page_no, g.body, g.thumbnail')} "
             "FROM pages g WHERE j.tbl = 'public.pages' AND j.key = jsonb_build_array(g.document_id, g.page_no)")
    prod.run("ALTER TABLE stackmigrate.tables DROP COLUMN hash, DROP COLUMN key_columns")
    prod.run("UPDATE pages SET body = 'edited in prod' WHERE document_id = 2 AND page_no = 1")
    fill(dev, 1, first=6)

    preview = p.preview()
    assert "public.pages: 3 new rows" in preview and "1 target rows left alone" in preview, preview
    assert prod.run("SELECT to_regclass('stackmigrate.fills') IS NULL")[0][0], "preview wrote nothing, not even the new table"
    assert prod.run("SELECT count(*) FROM pg_attribute WHERE attrelid = 'stackmigrate.tables'::regclass "
                    "AND attname = 'key_columns'")[0][0] == 0, "nor a new column"
    # As a later run adds it: NULL for the tables that run did not claim.
    prod.run("ALTER TABLE stackmigrate.tables ADD COLUMN key_columns text[]")
    destroyed = p.destroy()
    assert "left as they are" in destroyed, destroyed
    assert [r[:3] for r in rows(prod, "pages", "document_id, page_no")] == [[2, 1, "edited in prod"]]
    assert prod.run("SELECT count(*) FROM stackmigrate.tables")[0][0] == 0, "the journal is cleared"


def prod_with_rows(prod, documents):
    create_schema(prod)
    fill(prod, documents)
    prod.run("UPDATE documents SET name = 'prod-' || name")
    return snapshot(prod)


def test_fail_refuses_a_target_with_rows_and_truncate_replaces_them_and_destroy_restores_them(project, dev_prod):
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 10)
    before = prod_with_rows(prod, 4)
    p = project(resource(dev_name, prod_name), OUTPUTS)
    code, output = p.preview(check=False)
    assert code != 0
    assert "public.documents: the target table holds 4 rows and onConflict is fail" in output, output
    assert "set onConflict to truncate" in output, output
    assert snapshot(prod) == before

    p.write(resource(dev_name, prod_name, onConflict="truncate"), OUTPUTS)
    preview = p.preview()
    assert "public.documents: 4 target rows backed up and removed (truncate), then 10 rows" in preview, preview
    p.up()
    out = p.outputs()
    assert (out["rowsCopied"], out["rowsReplaced"]) == (50, 20), out
    assert snapshot(prod) == snapshot(dev)

    p.destroy()
    assert snapshot(prod) == before, "destroy put prod's own rows back, exactly"


def test_upsert_replaces_by_key_and_leaves_what_prod_changed_since_alone_at_up_and_at_destroy(project, dev_prod):
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 6)
    before = prod_with_rows(prod, 3)
    prod.run("INSERT INTO documents (id, name) VALUES (100, 'prod-only')")
    before = snapshot(prod)
    p = project(resource(dev_name, prod_name, onConflict="upsert"), OUTPUTS)
    preview = p.preview()
    assert "public.documents: 3 new rows to copy; 3 changed rows replaced; of 6 rows" in preview, preview
    p.up()
    out = p.outputs()
    assert out["rowsReplaced"] == 3 and out["rowsLeftAlone"] == 0, out
    assert rows(prod, "documents", "id")[:6] == rows(dev, "documents", "id")
    assert rows(prod, "documents", "id")[6][1] == "prod-only"

    # Prod edits a copied row; dev changes it too and gains one: the next up leaves prod's edit.
    prod.run("UPDATE documents SET name = 'edited in prod' WHERE id = 2")
    dev.run("UPDATE documents SET name = 'changed in dev' WHERE id = 2")
    fill(dev, 1, first=7)
    preview = p.preview()
    assert "1 target rows left alone" in preview, preview
    p.up()
    out = p.outputs()
    assert out["rowsLeftAlone"] == 1, out
    assert prod.run("SELECT name FROM documents WHERE id = 2")[0][0] == "edited in prod"
    assert prod.run("SELECT name FROM documents WHERE id = 7")[0][0] == "receipt-7.pdf"

    destroyed = p.destroy()
    assert "left as they are" in destroyed, destroyed
    after = snapshot(prod)
    expected = {**before}
    expected_documents = [r for r in before["documents"] if r[0] != 2]
    edited = [r for r in after["documents"] if r[0] == 2]
    assert edited and edited[0][1] == "edited in prod", "prod's edit is kept"
    assert [r for r in after["documents"] if r[0] != 2] == expected_documents
    assert after["pages"] == expected["pages"] and after["tasks"] == expected["tasks"]


def test_bad_inputs_stop_at_preview_with_what_to_fix(project, dev_prod):
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 2)
    cases = [
        (resource(dev_name, prod_name, target={"url": url("prod", prod_name, password="wrong")}),
         "password authentication failed for user"),
        (resource(dev_name, "no_such_database"), 'database "no_such_database" does not exist'),
        (resource(dev_name, prod_name, target={"url": "postgresql://u:p@127.0.0.1:1/x?sslmode=disable"}),
         "cannot connect to PostgreSQL at u@127.0.0.1:1/x"),
        # The same database spelled another way (localhost for 127.0.0.1): the server says so.
        (resource(dev_name, prod_name, target={"url": url("dev", dev_name).replace("127.0.0.1", "localhost")}),
         "source and target are the same database"),
        (resource(dev_name, prod_name, includeTables=["billing.*"]), "select no table; the source database has: public.documents"),
    ]
    for resources, expected in cases:
        p = project(resources)
        code, output = p.preview(check=False)
        assert code != 0 and expected in output, (expected, output)
    prod.run("CREATE TABLE documents (id bigint PRIMARY KEY, name varchar(10))")
    for db in (dev, prod):
        db.run("CREATE TABLE audit_log (at timestamptz, line text)")
        db.run("INSERT INTO audit_log VALUES (now(), 'started on ' || current_database())")
    p = project(resource(dev_name, prod_name, onConflict="upsert", excludeTables=["public.tasks", "public.pages"]))
    code, output = p.preview(check=False)
    assert code != 0
    assert 'column "name" is text in the source and character varying(10) in the target' in output, output
    assert 'column "size_bytes" (numeric(20,0)) is missing in the target' in output, output
    assert "public.audit_log: the table has no primary key" in output, output
    assert tables_in(prod) == ["audit_log", "documents"] and prod.run("SELECT count(*) FROM documents")[0][0] == 0
    assert prod.run("SELECT count(*) FROM pg_namespace WHERE nspname = 'stackmigrate'")[0][0] == 0


def kill_the_up(running, prod):
    """SIGKILLs the provider and the CLI mid-up, then waits until prod has no COPY running.
    Only this up's provider: other pulumi runs on the machine go on."""
    providers = subprocess.run(["pgrep", "-P", str(running.pid), "-f", "pulumi-resource-stackmigrate"],
                               capture_output=True, text=True).stdout.split()
    assert providers, "the provider process was not found"
    for pid in providers:
        os.kill(int(pid), signal.SIGKILL)
    running.kill()
    running.wait()
    assert wait_until(lambda: prod.run(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%' AND state <> 'idle'")[0][0] == 0, timeout=60)


def test_a_killed_up_resumes_without_copying_finished_tables_again_and_destroy_undoes_it(project, dev_prod):
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 200, pages_per_document=1)
    # After the tables it references and those before it in name: copied last.
    dev.run("CREATE TABLE work_log (id bigint PRIMARY KEY, document_id bigint REFERENCES documents(id), payload text)")
    # Rows enough for the COPY to be seen running (each is journalled); small, so it is quick.
    dev.run("INSERT INTO work_log SELECT g, 1 + g % 200, md5(g::text) FROM generate_series(1, 400000) g")
    # Copied whole, in one transaction (ranges: the next test).
    p = project(resource(dev_name, prod_name, parallel=1, rangeRows=1000000), OUTPUTS)
    running = p.up_in_background()
    # Killed while the large table streams: the small ones, copied first, are committed.
    assert wait_until(lambda: prod.run(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY \"public\".\"work_log\"%'")[0][0] > 0, timeout=120)
    kill_the_up(running, prod)
    assert prod.run("SELECT count(*) FROM work_log")[0][0] == 0, "the killed table's transaction left nothing"
    p.run("cancel", "--yes", check=False)
    p.run("refresh", "--yes", "--clear-pending-creates", check=False)

    p.up()
    out = p.outputs()
    assert out["rowsCopied"] == 400000, out
    assert out["tablesInSync"] == 3, "the tables finished before the kill were not copied again"
    assert rows(prod, "work_log", "id") == rows(dev, "work_log", "id")

    p.destroy()
    assert tables_in(prod) == []


def committed_rows(db, table):
    """Rows of `table` others can see (0 while the copy has not created it)."""
    try:
        return db.run(f"SELECT count(*) FROM {table}")[0][0]
    except pg8000.exceptions.DatabaseError:
        return 0


def test_a_large_table_goes_in_key_ranges_and_a_killed_up_copies_only_the_ranges_not_committed(project, dev_prod):
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 20, pages_per_document=1)
    dev.run("CREATE TABLE work_log (id bigint PRIMARY KEY, document_id bigint REFERENCES documents(id), payload text)")
    dev.run("INSERT INTO work_log SELECT g, 1 + g % 20, md5(g::text) FROM generate_series(1, 400000) g")
    p = project(resource(dev_name, prod_name, parallel=1, rangeRows=50000), OUTPUTS)
    running = p.up_in_background()
    assert wait_until(lambda: committed_rows(prod, "work_log") > 0, timeout=180)
    kill_the_up(running, prod)
    done = committed_rows(prod, "work_log")
    # Each range is committed whole, with its journal entries, or not at all.
    assert 0 < done < 400000 and done % 50000 == 0, done
    # A filled range journals its rows' keys and hashes in arrays (stackmigrate.fills),
    # an integer key as integers.
    journalled = prod.run("SELECT count(*), count(DISTINCT k) FROM stackmigrate.fills, unnest(key1) k "
                          "WHERE tbl = 'public.work_log' AND keys IS NULL AND key2 IS NULL")
    assert journalled[0] == [done, done], journalled
    covered = prod.run(
        "SELECT count(*) FROM work_log w WHERE w.id IN "
        "(SELECT unnest(key1) FROM stackmigrate.fills WHERE tbl = 'public.work_log')"
    )
    assert covered[0][0] == done, "every committed row is journalled"
    # Until its post-data the created table has its key's index alone (made before the
    # data, not yet attached as its key), so that a range's checks and journalling
    # read that range, not the whole table.
    assert indexes(prod, "work_log") == ["work_log_pkey"] and constraints(prod, "work_log") == []
    p.run("cancel", "--yes", check=False)
    p.run("refresh", "--yes", "--clear-pending-creates", check=False)

    preview = p.run("preview")
    assert f"public.work_log: {400000 - done} new rows to copy" in preview, preview
    out_text = p.up()
    out = p.outputs()
    assert out["rowsCopied"] == 400000 - done, out
    diagnostics = out_text.split("Diagnostics:")[1]
    assert diagnostics.count("as the source has them: not copied again") == done // 50000, out_text
    assert "public.work_log (range 8 of 8): 50000 rows" in diagnostics, out_text
    assert rows(prod, "work_log", "id") == rows(dev, "work_log", "id")
    assert snapshot(prod) == snapshot(dev)
    assert indexes(prod, "work_log") == indexes(dev, "work_log") == ["work_log_pkey"]

    p.destroy()
    assert tables_in(prod) == []


def test_destroy_after_a_failed_up_leaves_what_prod_wrote_in_a_half_copied_table_and_in_its_own(project, dev_prod):
    """documents, created by the copy, goes in ranges; then prod's own notes table (no
    primary key) refuses its rows (a trigger), so the up fails before the rest of the
    post-data. Prod adds a document and a note. Destroy removes the copied documents
    (matched by the source's key, which the created table lacks as a constraint until
    its post-data) and keeps the table for prod's row, with the key's index made before
    the data (as it keeps a kept table's post-data); prod's notes stay: no copy into
    that table committed. ledger_lines, whose key has options (a fillfactor) and so is
    made with the rest of the post-data, is indexed by its ranges meanwhile."""
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 30, pages_per_document=1)
    dev.run("CREATE TABLE notes (body text)")
    dev.run("INSERT INTO notes VALUES ('from dev')")
    dev.run("CREATE TABLE ledger_lines (id bigint, PRIMARY KEY (id) WITH (fillfactor = 90))")
    dev.run("INSERT INTO ledger_lines SELECT generate_series(1, 30)")
    prod.run("CREATE TABLE notes (body text)")
    prod.run("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'prod refuses notes'; END $$")
    prod.run("CREATE TRIGGER refuse BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION refuse()")
    p = project(resource(dev_name, prod_name, parallel=1, rangeRows=10,
                         includeTables=["public.documents", "public.notes", "public.ledger_lines"]), OUTPUTS)
    code, out = p.up(check=False)
    assert code != 0 and "prod refuses notes" in out, out
    assert committed_rows(prod, "documents") == 30
    assert indexes(prod, "documents") == ["documents_pkey"] and constraints(prod, "documents") == []
    assert [i[:19] for i in indexes(prod, "ledger_lines")] == ["stackmigrate_range_"], indexes(prod, "ledger_lines")
    prod.run("INSERT INTO documents (id, name) VALUES (1000, 'prod-own')")
    prod.run("ALTER TABLE notes DISABLE TRIGGER refuse")
    prod.run("INSERT INTO notes VALUES ('prod-own')")

    destroyed = p.destroy()
    assert "public.documents was created by this copy and still holds rows" in destroyed, destroyed
    assert [r[:2] for r in rows(prod, "documents", "id")] == [[1000, "prod-own"]]
    assert indexes(prod, "documents") == ["documents_pkey"]
    assert rows(prod, "notes", "body") == [["prod-own"]]
    assert "ledger_lines" not in tables_in(prod)


def post_data_made(db):
    """The post-data objects the journal has as made, by the names pg_dump gives them."""
    return sorted(r[0] for r in db.run("SELECT name FROM stackmigrate.made WHERE kind = 'POST-DATA'"))


def constraints(db, table):
    return sorted(r[0] for r in db.run(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(:t) AND contype <> 'n'", t=table))


def made_step(table, index):
    """The journal's name for the step that made `index` of `table`."""
    if index.endswith("_pkey"):
        return f"{table} {index}; Type: CONSTRAINT; Schema: public (its index)"
    return f"{index}; Type: INDEX; Schema: public"


def test_an_up_stopped_in_the_post_data_makes_only_what_it_had_not_made_when_run_again(project, dev_prod):
    """The post-data goes step by step, indexes two at a time, each committed with its
    journal entry. A relation of prod named as tasks' key stops it at the last index:
    the indexes made before stay, journalled. Prod renames its table and drops a table
    the copy created; the next up creates that table again and makes its indexes
    anew, the others' it makes only once."""
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 20)
    prod.run("CREATE TABLE tasks_pkey (note text)")
    p = project(resource(dev_name, prod_name, parallel=2), OUTPUTS)
    code, out = p.up(check=False)
    assert code != 0 and 'relation "tasks_pkey" already exists' in out, out
    assert ("making tasks tasks_pkey; Type: CONSTRAINT; Schema: public (its index) "
            "(pg_dump --section=post-data)") in out, out
    assert snapshot(prod) == snapshot(dev), "the rows were in before the post-data"
    made = post_data_made(prod)
    # Keys are attached to their indexes once every index is made: the indexes made
    # before the failure stand alone, each journalled.
    present = [made_step(t, i) for t in ("documents", "pages", "tasks") for i in indexes(prod, t)]
    assert made == sorted(present) and 1 <= len(made) <= 3, (made, present)
    assert all(constraints(prod, t) == [] for t in ("documents", "pages", "tasks"))

    prod.run("ALTER TABLE tasks_pkey RENAME TO prod_notes")
    # Someone drops a table the copy created and had made an index of.
    dropped = "documents" if made_step("documents", "documents_pkey") in made else "pages"
    gone = [made_step(dropped, i) for i in indexes(prod, dropped)]
    prod.run(f"DROP TABLE {dropped}")
    assert gone, made
    out_text = p.up()
    assert f"steps, {len(made) - len(gone)} made by an earlier run" in out_text, out_text
    out = p.outputs()
    assert out["rowsCopied"] == len(snapshot(dev)[dropped]), out
    assert out["tablesInSync"] == 2 and out["tablesCreated"] == 1, out
    for table in ("documents", "pages", "tasks"):
        assert indexes(prod, table) == indexes(dev, table), table
        assert constraints(prod, table) == constraints(dev, table), table
    assert snapshot(prod) == snapshot(dev)
    # Three keys (index, then key), an index, two foreign keys (added, then validated).
    assert len(post_data_made(prod)) == 11, post_data_made(prod)
    assert prod.run("SELECT bool_and(convalidated) FROM pg_constraint WHERE contype = 'f'")[0][0] is True

    p.destroy()
    assert tables_in(prod) == ["prod_notes"]
    assert prod.run("SELECT count(*) FROM stackmigrate.made")[0][0] == 0


def test_destroy_after_an_up_stopped_at_a_foreign_key_it_could_not_validate_removes_the_table_and_its_key(project, dev_prod):
    """pages alone is copied into a prod whose own documents table is empty: the created
    pages table gets its rows, its indexes, its key and its foreign key added NOT VALID,
    and the key's validation fails the up. Destroy then removes pages, its unvalidated
    key with it, and leaves prod's documents. Once prod holds the documents, an up
    makes every step and validates the key."""
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 10)
    prod.run("CREATE TABLE documents (id bigserial PRIMARY KEY, name text NOT NULL, size_bytes numeric(20, 0), "
             "meta jsonb, uploaded_at timestamptz NOT NULL DEFAULT now())")
    p = project(resource(dev_name, prod_name, includeTables=["public.pages"]), OUTPUTS)
    code, out = p.up(check=False)
    assert code != 0 and 'violates foreign key constraint "pages_document_id_fkey"' in out, out
    assert committed_rows(prod, "pages") == 30
    assert constraints(prod, "pages") == ["pages_document_id_fkey", "pages_pkey"]
    assert prod.run("SELECT convalidated FROM pg_constraint WHERE conname = 'pages_document_id_fkey'") == [[False]]
    # Both indexes, the key attached, the foreign key added; its validation not made.
    assert len(post_data_made(prod)) == 4, post_data_made(prod)

    destroyed = p.destroy()
    assert tables_in(prod) == ["documents"], destroyed
    assert rows(prod, "documents", "id") == []
    assert prod.run("SELECT count(*) FROM stackmigrate.made")[0][0] == 0

    prod.run("INSERT INTO documents (id, name) SELECT i, 'prod-' || i FROM generate_series(1, 10) i")
    out_text = p.up()
    assert "5 steps, 0 made by an earlier run" in out_text, out_text
    assert p.outputs()["rowsCopied"] == 30
    assert rows(prod, "pages", "document_id, page_no") == rows(dev, "pages", "document_id, page_no")
    assert prod.run("SELECT convalidated FROM pg_constraint WHERE conname = 'pages_document_id_fkey'") == [[True]]

    p.destroy()
    assert tables_in(prod) == ["documents"]
    assert [r[:2] for r in rows(prod, "documents", "id")] == [[i, f"prod-{i}"] for i in range(1, 11)]


def test_a_table_copied_whole_then_grown_past_range_rows_merges_in_parallel_ranges_and_rolls_back(project, dev_prod):
    """The first copy fills pages whole (30 rows); dev changes one and grows it to 60,
    past rangeRows: the next up writes it in two ranges at once, which both overlap the
    first fill."""
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 10)
    # A key that is not an integer: copied whole, its fill journalled in chunks of about rangeRows.
    dev.run("CREATE TABLE labels (name text PRIMARY KEY, note text)")
    dev.run("INSERT INTO labels SELECT 'label-' || g, md5(g::text) FROM generate_series(1, 100) g")
    p = project(resource(dev_name, prod_name, parallel=2, rangeRows=40), OUTPUTS)
    p.up()
    chunks = prod.run("SELECT count(*), sum(cardinality(keys)) FROM stackmigrate.fills WHERE tbl = 'public.labels'")
    assert chunks[0][0] > 1 and chunks[0][1] == 100, chunks
    assert rows(prod, "labels", "name") == rows(dev, "labels", "name")
    fill(dev, 10, first=11)
    dev.run("UPDATE pages SET body = 'changed in dev' WHERE document_id = 2 AND page_no = 1")
    out_text = p.up()
    assert "public.pages (range 1 of 2): 1 rows" in out_text and "public.pages (range 2 of 2): 30 rows" in out_text, out_text
    assert p.outputs()["rowsCopied"] == 10 + 1 + 30 + 10, p.outputs()
    assert snapshot(prod) == snapshot(dev)
    prod.run("UPDATE labels SET note = 'edited in prod' WHERE name = 'label-7'")

    destroyed = p.destroy()
    assert "public.labels [\"label-7\"]" in destroyed, destroyed
    assert rows(prod, "labels", "name") == [["label-7", "edited in prod"]]
    assert tables_in(prod) == ["labels"]


def test_the_url_comes_from_a_secret_stack_output_and_stays_secret(project, dev_prod):
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 3)
    prod_stack = project({}, {"database_url": {"fn::secret": url("prod", prod_name)}})
    prod_stack.up()
    p = project({"db": {"type": "stackmigrate:PostgresCopy", "properties": {
        "source": {"url": url("dev", dev_name)}}}}, OUTPUTS,
        config={"stackmigrate:targetStack": f"organization/{prod_stack.name}/{prod_stack.stack}"})
    p.up()
    assert p.outputs()["rowsCopied"] == 15
    assert snapshot(prod) == snapshot(dev)
    assert url("prod", prod_name) not in p.state_text(), "the secret URL is not in the state in plaintext"
    p.destroy()
    assert tables_in(prod) == []


def test_destroy_keeps_copied_rows_that_prod_rows_reference_and_removes_the_rest(project, dev_prod):
    """After the copy prod's app writes rows that reference copied ones: a task in a
    copied table, and a review in a table of prod's own whose foreign key cascades.
    Destroy must neither fail on the first nor delete the second through the cascade:
    the copied documents they reference stay, named; everything else of the copy goes."""
    dev_name, dev, prod_name, prod = dev_prod
    fill(dev, 8)
    # A table referencing itself: folder 3 in 2 in 1, folder 5 in 4.
    dev.run("CREATE TABLE folders (id bigint PRIMARY KEY, parent_id bigint REFERENCES folders(id))")
    dev.run("INSERT INTO folders VALUES (1, NULL), (2, 1), (3, 2), (4, NULL), (5, 4)")
    p = project(resource(dev_name, prod_name), OUTPUTS)
    p.up()
    copied = snapshot(prod)
    prod.run("INSERT INTO folders VALUES (10, 3)")
    prod.run("CREATE TABLE public.reviews (id serial PRIMARY KEY, "
             "document_id bigint NOT NULL REFERENCES documents(id) ON DELETE CASCADE, note text)")
    prod.run("INSERT INTO reviews (document_id, note) VALUES (3, 'checked by prod')")
    prod.run("INSERT INTO tasks (document_id, state, score) VALUES (5, 'queued', 1.5)")
    prod_task = prod.run("SELECT * FROM tasks WHERE id > 8")

    destroyed = p.destroy()
    assert "(referenced by public.reviews)" in destroyed and "(referenced by public.tasks)" in destroyed, destroyed
    kept = [r for r in copied["documents"] if r[0] in (3, 5)]
    assert rows(prod, "documents", "id") == kept, "only the referenced documents stay, as copied"
    assert rows(prod, "reviews", "id") == [[1, 3, "checked by prod"]], "prod's review is not cascaded away"
    assert "type public.task_state was created by this copy and is kept: cannot drop type" in destroyed, destroyed
    assert rows(prod, "tasks", "id") == prod_task, "prod's task stays; the copied ones are gone"
    assert "pages" not in tables_in(prod), "the emptied table the copy created is dropped"
    assert rows(prod, "folders", "id") == [[1, None], [2, 1], [3, 2], [10, 3]], \
        "the folders prod's folder is in stay, up the chain; the others go"
