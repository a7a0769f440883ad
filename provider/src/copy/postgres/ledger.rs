//! The journal of a PostgreSQL copy, kept in the target database itself (schema
//! `stackmigrate`): each table's writes and the backups of what they replaced are
//! recorded in the transaction that writes them, so the journal can never be behind
//! the data, a killed run leaves no half-recorded table, and `pulumi destroy` finds it
//! from any machine that reaches the database.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, GenericClient};

use super::catalog::{quote, RowHash, Slice, Table, JOURNAL_SCHEMA};

/// Creates the journal's tables when they are missing, and adds to a journal an earlier
/// release made what this one keeps, altering only what is missing: an `ALTER TABLE`
/// each time would lock the journal against another run's transactions, holding it
/// themselves. Names compare bytewise (`COLLATE "C"`): the rows' index is written once
/// per merged or backed-up row, and a locale's collation would make each comparison
/// several times dearer.
pub async fn ensure(client: &Client) -> Result<()> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {JOURNAL_SCHEMA};
             REVOKE ALL ON SCHEMA {JOURNAL_SCHEMA} FROM PUBLIC;
             CREATE TABLE IF NOT EXISTS {JOURNAL_SCHEMA}.tables (
                 journal text COLLATE \"C\" NOT NULL,
                 tbl text COLLATE \"C\" NOT NULL,
                 created boolean NOT NULL DEFAULT false,
                 truncated boolean NOT NULL DEFAULT false,
                 post_data_done boolean NOT NULL DEFAULT false,
                 written_rows bigint,
                 written_hash numeric,
                 hashed_columns text[] NOT NULL,
                 PRIMARY KEY (journal, tbl));
             CREATE TABLE IF NOT EXISTS {JOURNAL_SCHEMA}.rows (
                 journal text COLLATE \"C\" NOT NULL,
                 tbl text COLLATE \"C\" NOT NULL,
                 key jsonb NOT NULL,
                 written bigint,
                 backup jsonb,
                 PRIMARY KEY (journal, tbl, key));
             CREATE TABLE IF NOT EXISTS {JOURNAL_SCHEMA}.ranges (
                 journal text COLLATE \"C\" NOT NULL,
                 tbl text COLLATE \"C\" NOT NULL,
                 seq integer NOT NULL,
                 lo bigint,
                 hi bigint,
                 PRIMARY KEY (journal, tbl, seq));
             CREATE TABLE IF NOT EXISTS {JOURNAL_SCHEMA}.sequences (
                 journal text COLLATE \"C\" NOT NULL,
                 seq text NOT NULL,
                 last_value bigint NOT NULL,
                 is_called boolean NOT NULL,
                 set_to bigint NOT NULL,
                 PRIMARY KEY (journal, seq));
             CREATE TABLE IF NOT EXISTS {JOURNAL_SCHEMA}.made (
                 journal text COLLATE \"C\" NOT NULL,
                 kind text NOT NULL,
                 name text NOT NULL,
                 PRIMARY KEY (journal, kind, name));
             DO $$ BEGIN
               IF to_regclass('{JOURNAL_SCHEMA}.fills') IS NULL THEN
                 CREATE TABLE {JOURNAL_SCHEMA}.fills (
                     journal text COLLATE \"C\" NOT NULL,
                     tbl text COLLATE \"C\" NOT NULL,
                     lo bigint,
                     hi bigint,
                     -- The keys: a key of one or two integer columns as one array per
                     -- column (a third of the cost of building and storing jsonb), any
                     -- other as jsonb.
                     keys jsonb[],
                     key1 bigint[],
                     key2 bigint[],
                     hashes bigint[] NOT NULL);
                 -- Random hashes and short keys gain nothing from compression, which
                 -- cost a sixth of a fill's journalling.
                 ALTER TABLE {JOURNAL_SCHEMA}.fills ALTER COLUMN keys SET STORAGE EXTERNAL,
                     ALTER COLUMN key1 SET STORAGE EXTERNAL, ALTER COLUMN key2 SET STORAGE EXTERNAL,
                     ALTER COLUMN hashes SET STORAGE EXTERNAL;
                 CREATE INDEX fills_by_table ON {JOURNAL_SCHEMA}.fills (journal, tbl);
               END IF;
               IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{JOURNAL_SCHEMA}.tables'::regclass
                              AND attname = 'hash' AND NOT attisdropped) THEN
                 ALTER TABLE {JOURNAL_SCHEMA}.tables ADD COLUMN hash text NOT NULL DEFAULT 'md5';
               END IF;
               IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{JOURNAL_SCHEMA}.tables'::regclass
                              AND attname = 'key_columns' AND NOT attisdropped) THEN
                 ALTER TABLE {JOURNAL_SCHEMA}.tables ADD COLUMN key_columns text[];
               END IF;
             END $$;"
        ))
        .await
        .context("creating the journal's tables (schema stackmigrate) in the target database")
}

/// What the journal says about one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableEntry {
    pub created: bool,
    pub truncated: bool,
    pub post_data_done: bool,
    /// Rows and hash sum of the table as the last copy into it left it (tables without a
    /// primary key are journalled this way only).
    pub written: Option<(i64, String)>,
    /// The columns, in order, whose values the journal's row hashes cover.
    pub hashed_columns: Vec<String>,
    /// How they are hashed.
    pub hash: RowHash,
    /// The source's primary key (empty: none), by which the journal's rows entries and
    /// fills are keyed; a table the copy created has none until its post-data. None in a
    /// journal an earlier release wrote.
    pub key_columns: Option<Vec<String>>,
}

pub async fn exists(client: &impl GenericClient) -> Result<bool> {
    has_table(client, "tables").await
}

/// Whether the journal has table `name` (a journal an earlier release made may not).
async fn has_table(client: &impl GenericClient, name: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{JOURNAL_SCHEMA}.{name}")],
        )
        .await?
        .get(0))
}

/// This journal's tables.
pub async fn tables(
    client: &impl GenericClient,
    journal: &str,
) -> Result<BTreeMap<String, TableEntry>> {
    if !exists(client).await? {
        return Ok(BTreeMap::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT tbl, created, truncated, post_data_done, written_rows, written_hash::text, hashed_columns, \
                        COALESCE(to_jsonb(t) ->> 'hash', 'md5'), \
                        CASE WHEN NULLIF(to_jsonb(t) -> 'key_columns', 'null') IS NOT NULL \
                             THEN ARRAY(SELECT jsonb_array_elements_text(to_jsonb(t) -> 'key_columns')) END \
                 FROM {JOURNAL_SCHEMA}.tables t WHERE journal = $1"
            ),
            &[&journal],
        )
        .await?;
    // A journal an earlier release wrote has no `hash` column (its hashes are MD5's) and
    // no `key_columns` (or, once a later run added it, NULL in the tables it did not claim).
    rows.into_iter()
        .map(|r| {
            let written = match (r.get::<_, Option<i64>>(4), r.get::<_, Option<String>>(5)) {
                (Some(rows), Some(hash)) => Some((rows, hash)),
                _ => None,
            };
            Ok((
                r.get(0),
                TableEntry {
                    created: r.get(1),
                    truncated: r.get(2),
                    post_data_done: r.get(3),
                    written,
                    hashed_columns: r.get(6),
                    hash: RowHash::from_name(r.get(7))?,
                    key_columns: r.get(8),
                },
            ))
        })
        .collect()
}

/// Other journals (other resources, other stacks) that hold one of `tables`, by table.
pub async fn claimed_by_others(
    client: &impl GenericClient,
    journal: &str,
    tables: &[String],
) -> Result<BTreeMap<String, String>> {
    if !exists(client).await? {
        return Ok(BTreeMap::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT tbl, min(journal) FROM {JOURNAL_SCHEMA}.tables \
                 WHERE journal <> $1 AND tbl = ANY($2) GROUP BY tbl"
            ),
            &[&journal, &tables],
        )
        .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A table a run is about to write, as its journal entry starts.
pub struct Claimed {
    pub table: String,
    pub hashed_columns: Vec<String>,
    pub hash: RowHash,
    pub key_columns: Vec<String>,
}

/// Claims the tables for this journal, refusing (with the journal's tables locked, so
/// two runs cannot both pass) any another journal holds: its rollback and this one's
/// would each restore what the other wrote over.
pub async fn claim(client: &mut Client, journal: &str, tables: &[Claimed]) -> Result<()> {
    let transaction = client.transaction().await?;
    transaction
        .batch_execute(&format!(
            "LOCK TABLE {JOURNAL_SCHEMA}.tables IN SHARE ROW EXCLUSIVE MODE"
        ))
        .await?;
    let keys: Vec<String> = tables.iter().map(|t| t.table.clone()).collect();
    let others = claimed_by_others(&transaction, journal, &keys).await?;
    if let Some((table, other)) = others.iter().next() {
        bail!(
            "nothing was written: table {table} is already the target of another migration ({other}), whose rollback would undo this one's writes or restore over them; \
             destroy that migration first, or copy into another table"
        );
    }
    for claimed in tables {
        // An entry an earlier release made gains its key columns.
        transaction
            .execute(
                &format!(
                    "INSERT INTO {JOURNAL_SCHEMA}.tables AS t (journal, tbl, hashed_columns, hash, key_columns) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (journal, tbl) DO UPDATE SET key_columns = EXCLUDED.key_columns WHERE t.key_columns IS NULL"
                ),
                &[
                    &journal,
                    &claimed.table,
                    &claimed.hashed_columns,
                    &claimed.hash.name(),
                    &claimed.key_columns,
                ],
            )
            .await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// Sets one flag of a table's entry (`created`, `truncated`, `post_data_done`).
pub async fn mark(
    client: &impl GenericClient,
    journal: &str,
    table: &str,
    flag: &str,
) -> Result<()> {
    client
        .execute(
            &format!(
                "UPDATE {JOURNAL_SCHEMA}.tables SET {flag} = true WHERE journal = $1 AND tbl = $2"
            ),
            &[&journal, &table],
        )
        .await?;
    Ok(())
}

/// Notes the table's rows and hash sum as this copy leaves it.
pub async fn note_written(
    client: &impl GenericClient,
    journal: &str,
    table: &str,
    (rows, hash): (i64, &str),
) -> Result<()> {
    client
        .execute(
            &format!(
                "UPDATE {JOURNAL_SCHEMA}.tables SET written_rows = $3, written_hash = $4::text::numeric \
                 WHERE journal = $1 AND tbl = $2"
            ),
            &[&journal, &table, &rows, &hash],
        )
        .await?;
    Ok(())
}

/// The key ranges a large table is copied in, as the first run into it chose them: a run
/// after a kill copies the same ranges, skipping those already in the target.
pub async fn ranges(client: &impl GenericClient, journal: &str, table: &str) -> Result<Vec<Slice>> {
    let rows = client
        .query(
            &format!("SELECT lo, hi FROM {JOURNAL_SCHEMA}.ranges WHERE journal = $1 AND tbl = $2 ORDER BY seq"),
            &[&journal, &table],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| Slice::Range {
            lo: r.get(0),
            hi: r.get(1),
        })
        .collect())
}

pub async fn keep_ranges(
    client: &impl GenericClient,
    journal: &str,
    table: &str,
    ranges: &[Slice],
) -> Result<()> {
    for (seq, range) in ranges.iter().enumerate() {
        let Slice::Range { lo, hi } = range else {
            continue;
        };
        client
            .execute(
                &format!("INSERT INTO {JOURNAL_SCHEMA}.ranges VALUES ($1, $2, $3, $4, $5)"),
                &[&journal, &table, &(seq as i32), lo, hi],
            )
            .await?;
    }
    Ok(())
}

/// A sequence's value before the first copy set it (kept from then on) and the value
/// the last copy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceEntry {
    pub sequence: String,
    pub original: (i64, bool),
    pub set_to: i64,
}

pub async fn keep_sequence(
    client: &impl GenericClient,
    journal: &str,
    entry: &SequenceEntry,
) -> Result<()> {
    client
        .execute(
            &format!(
                "INSERT INTO {JOURNAL_SCHEMA}.sequences VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (journal, seq) DO UPDATE SET set_to = EXCLUDED.set_to"
            ),
            &[
                &journal,
                &entry.sequence,
                &entry.original.0,
                &entry.original.1,
                &entry.set_to,
            ],
        )
        .await?;
    Ok(())
}

pub async fn sequences(client: &impl GenericClient, journal: &str) -> Result<Vec<SequenceEntry>> {
    let rows = client
        .query(
            &format!("SELECT seq, last_value, is_called, set_to FROM {JOURNAL_SCHEMA}.sequences WHERE journal = $1"),
            &[&journal],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| SequenceEntry {
            sequence: r.get(0),
            original: (r.get(1), r.get(2)),
            set_to: r.get(3),
        })
        .collect())
}

/// What a copy creates besides tables: schemas and types, dropped again at rollback
/// when empty; the created tables' post-data objects, which go with their tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    Schema,
    Type,
    /// A step making an index, constraint or trigger of a created table, by pg_dump's
    /// name for the object.
    PostData,
}

impl Made {
    /// As the journal names it; for a schema or a type, as `CREATE` and `DROP` do too.
    pub fn keyword(self) -> &'static str {
        match self {
            Made::Schema => "SCHEMA",
            Made::Type => "TYPE",
            Made::PostData => "POST-DATA",
        }
    }
}

pub async fn note_made(
    client: &impl GenericClient,
    journal: &str,
    kind: Made,
    name: &str,
) -> Result<()> {
    client
        .execute(
            &format!(
                "INSERT INTO {JOURNAL_SCHEMA}.made VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            ),
            &[&journal, &kind.keyword(), &name],
        )
        .await?;
    Ok(())
}

/// Forgets `names` of one kind.
pub async fn forget_made(
    client: &impl GenericClient,
    journal: &str,
    kind: Made,
    names: &[String],
) -> Result<()> {
    client
        .execute(
            &format!(
                "DELETE FROM {JOURNAL_SCHEMA}.made WHERE journal = $1 AND kind = $2 AND name = ANY($3)"
            ),
            &[&journal, &kind.keyword(), &names],
        )
        .await?;
    Ok(())
}

pub async fn made(client: &impl GenericClient, journal: &str, kind: Made) -> Result<Vec<String>> {
    let rows = client
        .query(
            &format!("SELECT name FROM {JOURNAL_SCHEMA}.made WHERE journal = $1 AND kind = $2 ORDER BY name"),
            &[&journal, &kind.keyword()],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// The index a created table whose primary key's index waits for the post-data (a key
/// with options) gets on its range column until then: without it, each range's reads
/// of the table (the check for a range copied before, the check that it is empty, the
/// journalling pass) would scan the whole table, so a table of n ranges would be read
/// n times over.
pub fn range_index(table: &str) -> String {
    let digest = Sha256::digest(table.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("stackmigrate_range_{hex}")
}

/// Drops the range indexes of `tables` (see `range_index`), found by name in any schema.
pub async fn drop_range_indexes(target: &impl GenericClient, tables: &[String]) -> Result<()> {
    let names: Vec<String> = tables.iter().map(|t| range_index(t)).collect();
    let found = target
        .query(
            "SELECT format('DROP INDEX %I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'i' AND c.relname = ANY($1)",
            &[&names],
        )
        .await?;
    for drop in found {
        target.batch_execute(drop.get(0)).await?;
    }
    Ok(())
}

/// Rows a fill keeps in one entry of `fills` at most, whatever `rangeRows`: their keys
/// well below PostgreSQL's 1 GB a value.
const FILL_CHUNK_ROWS: u64 = 1_000_000;

/// Journals the rows of an empty `slice` of `table` that a COPY just filled, as this
/// copy's (key and hash of each), and returns their count and hash sum, taken in the
/// same pass. The keys and hashes go into arrays of about `chunk_rows` (`rangeRows`, up
/// to `FILL_CHUNK_ROWS`), not a row each: an indexed row per copied row cost the target
/// more than the COPY itself. Written in the fill's transaction; `entries_sql` reads
/// them as rows entries.
pub async fn keep_fill(
    client: &impl GenericClient,
    journal: &str,
    table: &Table,
    slice: &Slice,
    (expected_rows, chunk_rows): (u64, u64),
) -> Result<(u64, String)> {
    expand(client, journal, &table.key(), slice).await?;
    let (lo, hi) = slice.bounds();
    // One entry without grouping (which the planner would sort for), else entries split
    // by hash.
    let chunks = match expected_rows.div_ceil(chunk_rows.clamp(1, FILL_CHUNK_ROWS)) {
        0 | 1 => "HAVING count(*) > 0".to_string(),
        chunks => format!("GROUP BY h % {chunks}"),
    };
    let (keys, kept) = match table.integer_key() {
        Some([first]) => (
            format!("r.{}::bigint AS a", quote(first)),
            "NULL, array_agg(a), NULL",
        ),
        Some([first, second]) => (
            format!(
                "r.{}::bigint AS a, r.{}::bigint AS b",
                quote(first),
                quote(second)
            ),
            "NULL, array_agg(a), array_agg(b)",
        ),
        _ => (
            format!("{} AS k", table.key_expr("r")),
            "array_agg(k), NULL, NULL",
        ),
    };
    let row = client
        .query_one(
            &format!(
                "WITH written AS MATERIALIZED (SELECT {keys}, {} AS h FROM {} AS r WHERE {}), \
                 kept AS (INSERT INTO {JOURNAL_SCHEMA}.fills (journal, tbl, lo, hi, keys, key1, key2, hashes) \
                   SELECT $1, $2, $3, $4, {kept}, array_agg(h) FROM written {chunks}) \
                 SELECT count(*), COALESCE(sum(h)::text, '0') FROM written",
                table.hash_expr("r"),
                table.sql_name(),
                slice.filter(table, "r")
            ),
            &[&journal, &table.key(), &lo, &hi],
        )
        .await?;
    Ok((row.get::<_, i64>(0) as u64, row.get(1)))
}

/// A fill's rows, as `u.h` (the hash) and the key's parts (`u.k`, `u.a`, `u.b`: see
/// the `fills` table) of each.
const FILL_ROWS: &str = "unnest(fill.keys, fill.key1, fill.key2, fill.hashes) AS u(k, a, b, h)";

/// A fill's row's key as `Table::key_expr` makes it: numbers in jsonb compare by value,
/// so an integer key read back as bigint equals the key of the row.
const FILL_KEY: &str = "COALESCE(u.k, CASE WHEN fill.key2 IS NULL THEN jsonb_build_array(u.a) \
                        ELSE jsonb_build_array(u.a, u.b) END)";

/// Turns the fills of `table` that overlap `slice` into rows entries, each key's
/// `written` set as the fill had it (a backup its key had is kept). Every writer of rows
/// entries calls this first, so a rows entry for a key in a fill is always older than
/// the fill: what `entries_sql` relies on.
pub async fn expand(
    client: &impl GenericClient,
    journal: &str,
    table: &str,
    slice: &Slice,
) -> Result<()> {
    let (lo, hi) = slice.bounds();
    client
        .execute(
            &format!(
                "WITH gone AS (DELETE FROM {JOURNAL_SCHEMA}.fills WHERE journal = $1 AND tbl = $2 \
                   AND (lo IS NULL OR $4::bigint IS NULL OR lo < $4) AND (hi IS NULL OR $3::bigint IS NULL OR $3 < hi) \
                   RETURNING keys, key1, key2, hashes) \
                 INSERT INTO {JOURNAL_SCHEMA}.rows (journal, tbl, key, written) \
                 SELECT $1, $2, {FILL_KEY}, u.h FROM gone fill, {FILL_ROWS} \
                 ON CONFLICT (journal, tbl, key) DO UPDATE SET written = EXCLUDED.written"
            ),
            &[&journal, &table, &lo, &hi],
        )
        .await
        .with_context(|| format!("turning the journal's fills of {table} into rows entries"))?;
    Ok(())
}

/// This journal's entries for one table (`$1` the journal, `$2` the table) as columns
/// `key`, `written` (the hash this copy last wrote; NULL: none) and `backup`: the rows
/// entries, and the keys of fills, whose `written` is newer than a rows entry's (see
/// `expand`). A journal an earlier release wrote has no fills table: its rows alone.
pub async fn entries_sql(client: &impl GenericClient) -> Result<String> {
    let rows = format!(
        "SELECT key, written, backup FROM {JOURNAL_SCHEMA}.rows WHERE journal = $1 AND tbl = $2"
    );
    if !has_table(client, "fills").await? {
        return Ok(rows);
    }
    Ok(format!(
        "SELECT COALESCE(f.k, r.key) AS key, COALESCE(f.h, r.written) AS written, r.backup AS backup \
         FROM ({rows}) r \
         FULL JOIN (SELECT {FILL_KEY} AS k, u.h FROM {JOURNAL_SCHEMA}.fills fill, {FILL_ROWS} \
                    WHERE fill.journal = $1 AND fill.tbl = $2) f ON f.k = r.key"
    ))
}

/// Forgets this journal: the last step of a rollback, in its transaction.
pub async fn forget(client: &impl GenericClient, journal: &str) -> Result<()> {
    for table in ["rows", "fills", "ranges", "sequences", "made", "tables"] {
        client
            .execute(
                &format!("DELETE FROM {JOURNAL_SCHEMA}.{table} WHERE journal = $1"),
                &[&journal],
            )
            .await?;
    }
    Ok(())
}
