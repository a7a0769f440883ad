//! The rollback, in one transaction of the target: rows this journal wrote and that
//! still hold what it wrote are removed or put back as they were, truncated rows
//! restored, sequences put back, created tables and types dropped; whatever someone
//! changed since is left as it is and reported.

use anyhow::{Context as _, Result};
use tokio_postgres::Transaction;

use super::catalog::{self, quote, Slice, Table, JOURNAL_SCHEMA};
use super::connect::Endpoint;
use super::ledger::{self, Made, TableEntry};
use crate::copy::progress::Progress;

/// What a rollback did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Undone {
    pub rows_deleted: u64,
    pub rows_restored: u64,
    pub tables_dropped: u64,
    pub sequences_restored: u64,
    /// `table key` of rows someone changed since the copy, or that rows staying in the
    /// target reference (the first few), and how many.
    pub left_alone: Vec<String>,
    pub left_alone_count: u64,
}

/// What the server said, rather than the driver's bare "db error".
fn why(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => error.to_string(),
    }
}

/// The rows this journal holds for a table, beside the table's row of each key now.
async fn undo_table(
    transaction: &Transaction<'_>,
    journal: &str,
    table: &Table,
    n: usize,
) -> Result<String> {
    let undo = format!("sm_undo_{n}");
    transaction
        .execute(
            &format!(
                "CREATE TEMP TABLE {undo} ON COMMIT DROP AS \
                 SELECT j.key AS sm_key, j.written AS sm_written, j.backup AS sm_backup, x.h AS sm_current, \
                        j.written IS NOT DISTINCT FROM x.h AS sm_ours, NULL::text AS sm_referenced_by \
                 FROM ({}) j LEFT JOIN (SELECT {} AS k, {} AS h FROM {} AS r) x ON x.k = j.key",
                ledger::entries_sql(transaction).await?,
                table.key_expr("r"),
                table.hash_expr("r"),
                table.sql_name()
            ),
            &[&journal, &table.key()],
        )
        .await?;
    transaction
        .batch_execute(&format!("ANALYZE {undo}"))
        .await?;
    Ok(undo)
}

/// A foreign key that points at a table.
struct Referencing {
    /// The referencing table, as SQL (and people) name it.
    table: String,
    /// Its columns, and the referenced table's columns they point at, in order.
    columns: Vec<String>,
    referenced: Vec<String>,
    /// The table references itself (a parent row in the same table).
    itself: bool,
}

/// The foreign keys that point at `table`.
async fn referencing(transaction: &Transaction<'_>, table: &Table) -> Result<Vec<Referencing>> {
    let rows = transaction
        .query(
            "SELECT c.conrelid::regclass::text, c.conrelid = c.confrelid, \
                    array_agg(a.attname::text ORDER BY k.n), array_agg(f.attname::text ORDER BY k.n) \
             FROM pg_constraint c \
             CROSS JOIN LATERAL unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(col, ref, n) \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.col \
             JOIN pg_attribute f ON f.attrelid = c.confrelid AND f.attnum = k.ref \
             WHERE c.contype = 'f' AND c.confrelid = $1::text::regclass \
             GROUP BY c.oid, c.conrelid, c.confrelid",
            &[&table.sql_name()],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| Referencing {
            table: r.get(0),
            itself: r.get(1),
            columns: r.get(2),
            referenced: r.get(3),
        })
        .collect())
}

/// Keeps the rows this journal inserted that a row staying in the target references:
/// removing them would fail the rollback, or (`ON DELETE CASCADE`, `SET NULL`) delete or
/// change rows that are not this copy's. Run after the referencing tables' own rows are
/// undone, so only rows that stay count; a table referencing itself is settled row by
/// row until nothing changes (a kept row keeps the rows it references).
async fn keep_referenced(transaction: &Transaction<'_>, table: &Table, undo: &str) -> Result<()> {
    let name = table.sql_name();
    let key = table.key_expr("r");
    for foreign in referencing(transaction, table).await? {
        let child = &foreign.table;
        let matches: Vec<String> = foreign
            .columns
            .iter()
            .zip(&foreign.referenced)
            .map(|(c, r)| format!("c.{} = r.{}", quote(c), quote(r)))
            .collect();
        // A row of this table that this rollback removes references nothing that stays.
        let leaving = match foreign.itself {
            true => format!(
                "AND NOT EXISTS (SELECT 1 FROM {undo} o WHERE o.sm_key = {} AND o.sm_ours \
                 AND o.sm_written IS NOT NULL AND o.sm_backup IS NULL)",
                table.key_expr("c")
            ),
            false => String::new(),
        };
        loop {
            let kept = transaction
                .execute(
                    &format!(
                        "UPDATE {undo} u SET sm_ours = false, sm_referenced_by = $1 FROM {name} AS r \
                         WHERE {key} = u.sm_key AND u.sm_ours AND u.sm_written IS NOT NULL AND u.sm_backup IS NULL \
                         AND EXISTS (SELECT 1 FROM {child} AS c WHERE {} {leaving})",
                        matches.join(" AND ")
                    ),
                    &[child],
                )
                .await
                .with_context(|| format!("finding the rows of {} that {child} references", table.key()))?;
            if kept == 0 || !foreign.itself {
                break;
            }
        }
    }
    Ok(())
}

/// Removes the rows this journal inserted (no backup) that still hold what it wrote.
async fn delete_ours(transaction: &Transaction<'_>, table: &Table, undo: &str) -> Result<u64> {
    Ok(transaction
        .execute(
            &format!(
                "DELETE FROM {} AS r USING {undo} u WHERE {} = u.sm_key \
                 AND u.sm_written IS NOT NULL AND u.sm_ours AND u.sm_backup IS NULL",
                table.sql_name(),
                table.key_expr("r")
            ),
            &[],
        )
        .await?)
}

/// Puts back the backed-up rows whose key holds what this journal wrote (replaced:
/// updated back) or nothing it left there (truncated, not copied again: inserted).
async fn restore(transaction: &Transaction<'_>, table: &Table, undo: &str) -> Result<u64> {
    let name = table.sql_name();
    let columns = table.column_list();
    let from_backup = table.columns_of("b");
    let mut restored = 0;
    let updatable: Vec<String> = table.updatable().map(|c| quote(&c.name)).collect();
    if !updatable.is_empty() {
        let values: Vec<String> = updatable.iter().map(|c| format!("b.{c}")).collect();
        restored += transaction
            .execute(
                &format!(
                    "UPDATE {name} AS r SET ({}) = ROW({}) \
                     FROM {undo} u CROSS JOIN LATERAL jsonb_populate_record(NULL::{name}, u.sm_backup) b \
                     WHERE {} = u.sm_key AND u.sm_written IS NOT NULL AND u.sm_ours AND u.sm_backup IS NOT NULL",
                    updatable.join(", "),
                    values.join(", "),
                    table.key_expr("r")
                ),
                &[],
            )
            .await?;
    }
    restored += transaction
        .execute(
            &format!(
                "INSERT INTO {name} ({columns}) OVERRIDING SYSTEM VALUE SELECT {from_backup} \
                 FROM {undo} u CROSS JOIN LATERAL jsonb_populate_record(NULL::{name}, u.sm_backup) b \
                 WHERE u.sm_written IS NULL AND u.sm_current IS NULL AND u.sm_backup IS NOT NULL"
            ),
            &[],
        )
        .await?;
    Ok(restored)
}

async fn left_alone(
    transaction: &Transaction<'_>,
    table: &Table,
    undo: &str,
    undone: &mut Undone,
) -> Result<()> {
    let row = transaction
        .query_one(
            &format!(
                "SELECT count(*), COALESCE((array_agg(sm_key::text \
                     || COALESCE(' (referenced by ' || sm_referenced_by || ')', '') ORDER BY sm_key::text))[1:5], '{{}}') \
                 FROM {undo} WHERE NOT sm_ours"
            ),
            &[],
        )
        .await?;
    undone.left_alone_count += row.get::<_, i64>(0) as u64;
    for key in row.get::<_, Vec<String>>(1) {
        if undone.left_alone.len() < 10 {
            undone.left_alone.push(format!("{} {key}", table.key()));
        }
    }
    Ok(())
}

/// A table without a primary key: undone whole when it still holds exactly what this
/// journal wrote (rows and hash), else left alone; untouched when no copy into it
/// committed.
async fn undo_keyless(
    transaction: &Transaction<'_>,
    journal: &str,
    table: &Table,
    entry: &TableEntry,
    undone: &mut Undone,
) -> Result<()> {
    // No copy into it committed: whatever it holds is someone else's (a truncated
    // table's backup goes back all the same).
    let Some(written) = &entry.written else {
        undone.rows_restored += restore_keyless(transaction, journal, table).await?;
        return Ok(());
    };
    let row = transaction
        .query_one(&table.count_and_hash_sql(&Slice::Whole), &[])
        .await?;
    let now: (i64, String) = (row.get(0), row.get(1));
    if *written != now {
        undone.left_alone_count += now.0 as u64;
        undone.left_alone.push(format!(
            "{} (no primary key; changed since the copy)",
            table.key()
        ));
        return Ok(());
    }
    undone.rows_deleted += transaction
        .execute(&format!("DELETE FROM {}", table.sql_name()), &[])
        .await?;
    undone.rows_restored += restore_keyless(transaction, journal, table).await?;
    Ok(())
}

/// Puts back a table's backed-up rows (those a truncate removed).
async fn restore_keyless(
    transaction: &Transaction<'_>,
    journal: &str,
    table: &Table,
) -> Result<u64> {
    Ok(transaction
        .execute(
            &format!(
                "INSERT INTO {name} ({columns}) OVERRIDING SYSTEM VALUE SELECT {from_backup} \
                 FROM {JOURNAL_SCHEMA}.rows j CROSS JOIN LATERAL jsonb_populate_record(NULL::{name}, j.backup) b \
                 WHERE j.journal = $1 AND j.tbl = $2 AND j.backup IS NOT NULL",
                name = table.sql_name(),
                columns = table.column_list(),
                from_backup = table.columns_of("b"),
            ),
            &[&journal, &table.key()],
        )
        .await?)
}

/// Rolls back what the journal named `journal` recorded in `target`; None when the
/// target holds no such journal.
pub async fn rollback(
    target: &Endpoint,
    journal: &str,
    progress: &dyn Progress,
) -> Result<Option<Undone>> {
    let mut client = target.connect().await.context("the target database")?;
    let entries = ledger::tables(&client, journal).await?;
    if entries.is_empty() {
        return Ok(None);
    }
    // A journal an earlier release wrote gains the tables this one adds (fills).
    ledger::ensure(&client).await?;
    let existing = catalog::tables(&client).await?;
    let transaction = client.transaction().await?;
    let mut undone = Undone::default();
    let mut tables: Vec<Table> = Vec::new();
    for (key, entry) in &entries {
        match existing.get(key) {
            Some(table) => {
                let mut table = table.hashed_as(&entry.hashed_columns, entry.hash);
                // Rows are matched by the key the journal keyed them by, the source's:
                // a table the copy created has none before its post-data, and undone as a
                // table without one it would lose prod's rows. A journal an earlier
                // release wrote names none: the target's.
                if let Some(key) = &entry.key_columns {
                    table.primary_key = key.clone();
                }
                tables.push(table)
            }
            None => progress.warn(&format!(
                "{key} is no longer in the target: nothing of it to undo"
            )),
        }
    }
    let refs: Vec<&Table> = tables.iter().collect();
    let levels = catalog::levels(&refs);
    let by_key = |key: &str| tables.iter().find(|t| t.key() == key).expect("listed");
    // Rows removed from the tables that reference others first, restored into the
    // referenced tables first, so foreign keys hold at every statement.
    let mut undo_tables = std::collections::BTreeMap::new();
    for (n, key) in levels.iter().rev().flatten().enumerate() {
        let table = by_key(key);
        progress.status(&format!("rolling back {key}"));
        if table.primary_key.is_empty() {
            undo_keyless(&transaction, journal, table, &entries[key], &mut undone).await?;
            continue;
        }
        let undo = undo_table(&transaction, journal, table, n).await?;
        keep_referenced(&transaction, table, &undo).await?;
        undone.rows_deleted += delete_ours(&transaction, table, &undo)
            .await
            .with_context(|| format!("removing the rows copied into {key}"))?;
        undo_tables.insert(key.clone(), undo);
    }
    for key in levels.iter().flatten() {
        let Some(undo) = undo_tables.get(key) else {
            continue;
        };
        let table = by_key(key);
        undone.rows_restored += restore(&transaction, table, undo)
            .await
            .with_context(|| format!("restoring {key}'s rows from the journal"))?;
        left_alone(&transaction, table, undo, &mut undone).await?;
    }
    for entry in ledger::sequences(&transaction, journal).await? {
        let exists: bool = transaction
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&entry.sequence])
            .await?
            .get(0);
        if !exists {
            continue;
        }
        let (now, _) = catalog::sequence_state(&transaction, &entry.sequence).await?;
        if now != entry.set_to {
            progress.warn(&format!(
                "sequence {} moved on since the copy set it to {} (now {now}): left as it is, so new rows keep fresh keys",
                entry.sequence, entry.set_to
            ));
            continue;
        }
        transaction
            .execute(
                "SELECT setval($1::text::regclass, $2, $3)",
                &[&entry.sequence, &entry.original.0, &entry.original.1],
            )
            .await?;
        undone.sequences_restored += 1;
    }
    // Created tables go when nothing but this journal's rows was in them.
    for key in levels.iter().rev().flatten() {
        let entry = &entries[key];
        if !entry.created {
            continue;
        }
        let table = by_key(key);
        // Made with the ranges, gone with the post-data; a kept table loses it too.
        ledger::drop_range_indexes(&transaction, std::slice::from_ref(key)).await?;
        let empty: bool = transaction
            .query_one(
                &format!("SELECT NOT EXISTS (SELECT 1 FROM {})", table.sql_name()),
                &[],
            )
            .await?
            .get(0);
        if !empty {
            progress.warn(&format!(
                "{key} was created by this copy and still holds rows (written by others, or copied rows that rows staying in the target reference): the table is kept"
            ));
            continue;
        }
        transaction.batch_execute("SAVEPOINT sm_drop").await?;
        match transaction
            .batch_execute(&format!("DROP TABLE {}", table.sql_name()))
            .await
        {
            Ok(()) => undone.tables_dropped += 1,
            Err(e) => {
                transaction
                    .batch_execute("ROLLBACK TO SAVEPOINT sm_drop")
                    .await?;
                progress.warn(&format!(
                    "{key} was created by this copy and is kept: {}",
                    why(&e)
                ));
            }
        }
    }
    // Types before the schemas that hold them; each kept, with a warning, when
    // something else uses it. (A created table's post-data went with the table.)
    for (kind, in_a_schema) in [(Made::Type, true), (Made::Schema, false)] {
        for name in ledger::made(&transaction, journal, kind).await? {
            let sql_name = if in_a_schema {
                let (schema, type_name) = name.split_once('.').unwrap_or(("public", &name));
                format!("{}.{}", quote(schema), quote(type_name))
            } else {
                quote(&name)
            };
            transaction.batch_execute("SAVEPOINT sm_drop").await?;
            if let Err(e) = transaction
                .batch_execute(&format!("DROP {} {sql_name}", kind.keyword()))
                .await
            {
                transaction
                    .batch_execute("ROLLBACK TO SAVEPOINT sm_drop")
                    .await?;
                progress.warn(&format!(
                    "{} {name} was created by this copy and is kept: {}",
                    kind.keyword().to_lowercase(),
                    why(&e)
                ));
            }
        }
    }
    ledger::forget(&transaction, journal).await?;
    transaction.commit().await?;
    Ok(Some(undone))
}
