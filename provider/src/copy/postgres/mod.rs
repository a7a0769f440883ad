//! The PostgreSQL copy: a database's tables into another database (RDS), the schema
//! created where missing (by the source's `pg_dump`, as `pg_restore` orders it), rows by
//! COPY in binary, tables in parallel; each table verified by row count and a content
//! hash each server computes, and journalled in the target (see `ledger`).

pub mod catalog;
pub mod connect;
mod ledger;
mod undo;
mod write;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context as _, Result};
use futures::TryStreamExt;
use tokio_postgres::Client;

use self::catalog::{Slice, Table};
use self::connect::Endpoint;
use self::ledger::TableEntry;
use crate::copy::progress::{human_bytes, in_words, Progress};
pub use undo::rollback;
pub use write::run;

/// What happens to rows already in a target table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Target tables must be empty (or missing).
    Fail,
    /// Target rows are backed up into the journal, then removed.
    Truncate,
    /// Rows are matched by primary key; those that differ are backed up, then replaced.
    Upsert,
}

pub struct Spec {
    pub source: Endpoint,
    pub target: Endpoint,
    /// Globs on `schema.table`; empty: every table.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub on_conflict: OnConflict,
    /// Tables (or ranges of tables) copied at once.
    pub parallel: usize,
    /// Tables with more rows and a primary key starting with an integer are copied in
    /// key ranges of about this many rows, each committed alone.
    pub range_rows: u64,
    /// The journal's name in the target database: the resource's URN.
    pub journal: String,
    /// The `pg_dump` that creates missing tables.
    pub pg_dump: String,
}

/// What a copy would do to one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Target rows equal the source's (count and content hash).
    InSync,
    /// The table is missing in the target: created, then filled.
    Create,
    /// The target table is empty: filled.
    Fill,
    /// The target's rows are backed up and removed, then the table is filled.
    Truncate { replaced: u64 },
    /// Rows matched by primary key.
    Merge(Merged),
}

/// What a merge does, row by row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    pub insert: u64,
    pub update: u64,
    /// Target rows changed or deleted by others since this journal's copy, or (without
    /// `upsert`) rows the copy did not write: kept as they are.
    pub left_alone: u64,
    pub unchanged: u64,
}

/// Rows of a merge, classified alike by the plan (in Rust, from both sides' hashes) and
/// by the run (in SQL, see `write`): `target` is the target row's hash (None: absent),
/// `written` what this journal last wrote for the key (`Some(None)`: the key was
/// journalled with no row written, as after a truncate).
fn classify(source: i64, target: Option<i64>, written: Option<Option<i64>>, upsert: bool) -> Row {
    match (target, written) {
        (Some(target), _) if target == source => Row::Unchanged,
        (None, Some(Some(_))) => Row::LeftAlone,
        (None, _) => Row::Insert,
        (Some(target), Some(written)) if written == Some(target) => Row::Update,
        (Some(_), Some(_)) => Row::LeftAlone,
        (Some(_), None) if upsert => Row::Update,
        (Some(_), None) => Row::LeftAlone,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    Unchanged,
    Insert,
    Update,
    LeftAlone,
}

impl Merged {
    fn add(&mut self, row: Row) {
        match row {
            Row::Unchanged => self.unchanged += 1,
            Row::Insert => self.insert += 1,
            Row::Update => self.update += 1,
            Row::LeftAlone => self.left_alone += 1,
        }
    }
}

/// One table's plan.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// As the source defines it.
    pub table: Table,
    pub rows: u64,
    pub bytes: u64,
    pub action: Action,
    pub entry: Option<TableEntry>,
}

impl TablePlan {
    /// Rows this table's copy writes (inserted or replaced).
    pub fn rows_to_write(&self) -> u64 {
        match self.action {
            Action::InSync => 0,
            Action::Create | Action::Fill | Action::Truncate { .. } => self.rows,
            Action::Merge(m) => m.insert + m.update,
        }
    }
}

/// What a copy would do, found without writing.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    pub tables: Vec<TablePlan>,
    /// Enum types the created tables need, missing in the target.
    pub enums_to_create: Vec<String>,
    /// Schemas the created tables need, missing in the target.
    pub schemas_to_create: Vec<String>,
    /// Sequences behind the target's sequence (serial, identity columns) to move forward.
    pub sequences_to_set: u64,
    /// Tables this journal created whose indexes and constraints are not made yet (a run
    /// was stopped between its data and them).
    pub post_data_pending: Vec<String>,
}

/// What a copy did (or, from a survey, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub tables: u64,
    pub tables_created: u64,
    pub tables_in_sync: u64,
    pub rows_copied: u64,
    pub bytes_copied: u64,
    /// Target rows replaced: by `upsert`, or removed by `truncate` (backed up first).
    pub rows_replaced: u64,
    pub rows_left_alone: u64,
    pub sequences_set: u64,
}

impl Survey {
    pub fn counts(&self) -> Counts {
        let mut counts = Counts {
            tables: self.tables.len() as u64,
            sequences_set: self.sequences_to_set,
            ..Counts::default()
        };
        for plan in &self.tables {
            let rows = plan.rows_to_write();
            counts.rows_copied += rows;
            counts.bytes_copied += (plan.bytes * rows).checked_div(plan.rows).unwrap_or(0);
            match plan.action {
                Action::InSync => counts.tables_in_sync += 1,
                Action::Create => counts.tables_created += 1,
                Action::Truncate { replaced } => counts.rows_replaced += replaced,
                Action::Merge(m) => {
                    counts.rows_replaced += m.update;
                    counts.rows_left_alone += m.left_alone;
                }
                Action::Fill => {}
            }
        }
        counts
    }

    /// Whether a run would write anything.
    pub fn pending(&self) -> bool {
        let counts = self.counts();
        counts.rows_copied + counts.tables_created + counts.rows_replaced + counts.sequences_set > 0
            || !self.post_data_pending.is_empty()
    }

    /// The plan in words: one line per table, then the whole.
    pub fn lines(&self, verb: &str) -> Vec<String> {
        let mut lines: Vec<String> = self.tables.iter().map(|t| table_line(t, verb)).collect();
        let counts = self.counts();
        lines.push(in_words(
            format!("{} tables", counts.tables),
            &[
                (
                    counts.tables_created,
                    format!("{} to create", counts.tables_created),
                ),
                (
                    counts.tables_in_sync,
                    format!("{} already in sync", counts.tables_in_sync),
                ),
                (
                    counts.rows_copied,
                    format!(
                        "{} rows ({}) {verb}",
                        counts.rows_copied,
                        human_bytes(counts.bytes_copied)
                    ),
                ),
                (
                    counts.rows_replaced,
                    format!(
                        "{} target rows replaced, backed up first",
                        counts.rows_replaced
                    ),
                ),
                (
                    counts.rows_left_alone,
                    format!("{} target rows left alone", counts.rows_left_alone),
                ),
                (
                    counts.sequences_set,
                    format!("{} sequences moved forward", counts.sequences_set),
                ),
                (
                    self.post_data_pending.len() as u64,
                    format!(
                        "indexes and constraints of {} created tables still to make",
                        self.post_data_pending.len()
                    ),
                ),
            ],
            match self.pending() {
                true => "verified by row counts and content hashes".to_string(),
                false => "nothing to copy".to_string(),
            },
        ));
        lines
    }
}

fn table_line(plan: &TablePlan, verb: &str) -> String {
    let key = plan.table.key();
    let size = format!("{} rows ({})", plan.rows, human_bytes(plan.bytes));
    match plan.action {
        Action::InSync => format!("{key}: in sync ({size})"),
        Action::Create => format!("{key}: table to create, {size} {verb}"),
        Action::Fill => format!("{key}: {size} {verb}"),
        Action::Truncate { replaced } => {
            format!("{key}: {replaced} target rows backed up and removed (truncate), then {size} {verb}")
        }
        Action::Merge(m) => in_words(
            format!("{key}: {} new rows {verb}", m.insert),
            &[
                (m.update, format!("{} changed rows replaced", m.update)),
                (
                    m.left_alone,
                    format!(
                        "{} target rows left alone (changed there, or not this copy's)",
                        m.left_alone
                    ),
                ),
                (m.unchanged, format!("{} unchanged", m.unchanged)),
            ],
            format!("of {size}"),
        ),
    }
}

/// The selected source tables: those an `include` glob matches (all when none is
/// given) and no `exclude` glob does.
pub fn select<'a>(
    tables: &'a BTreeMap<String, Table>,
    include: &[String],
    exclude: &[String],
) -> Result<Vec<&'a Table>> {
    let set = |globs: &[String], input: &str| -> Result<globset::GlobSet> {
        let mut builder = globset::GlobSetBuilder::new();
        for glob in globs {
            builder.add(
                globset::Glob::new(glob)
                    .with_context(|| format!("{input}: {glob:?} is not a glob on schema.table"))?,
            );
        }
        Ok(builder.build()?)
    };
    let (included, excluded) = (
        set(include, "includeTables")?,
        set(exclude, "excludeTables")?,
    );
    let chosen: Vec<&Table> = tables
        .iter()
        .filter(|(key, _)| include.is_empty() || included.is_match(key.as_str()))
        .filter(|(key, _)| !excluded.is_match(key.as_str()))
        .map(|(_, table)| table)
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = tables.keys().map(String::as_str).take(20).collect();
        bail!(
            "includeTables/excludeTables select no table; the source database has: {}",
            if names.is_empty() {
                "(no tables)".to_string()
            } else {
                names.join(", ")
            }
        );
    }
    Ok(chosen)
}

/// `server_version_num`: 150004 for 15.4.
async fn server_version(client: &Client) -> Result<i32> {
    Ok(client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0))
}

async fn count(client: &Client, table: &Table) -> Result<u64> {
    let row = client
        .query_one(&format!("SELECT count(*) FROM {}", table.sql_name()), &[])
        .await
        .with_context(|| format!("counting {}", table.key()))?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// A table's rows (of `slice`) and the sum of their hashes, as `client`'s server
/// computes them.
async fn count_and_hash(
    client: &impl tokio_postgres::GenericClient,
    table: &Table,
    slice: &Slice,
) -> Result<(u64, String)> {
    let row = client
        .query_one(&table.count_and_hash_sql(slice), &[])
        .await
        .with_context(|| format!("counting {}", table.key()))?;
    Ok((row.get::<_, i64>(0) as u64, row.get(1)))
}

/// Why a target table cannot take the source's rows as they are: a column it lacks or
/// holds with another type.
fn column_differences(source: &Table, target: &Table) -> Vec<String> {
    let mut found = Vec::new();
    for column in source.copied() {
        match target.columns.iter().find(|c| c.name == column.name) {
            None => found.push(format!(
                "column {:?} ({}) is missing in the target",
                column.name, column.type_name
            )),
            Some(other) if other.type_name != column.type_name => found.push(format!(
                "column {:?} is {} in the source and {} in the target",
                column.name, column.type_name, other.type_name
            )),
            Some(other) if other.generated => found.push(format!(
                "column {:?} is generated in the target and cannot be written",
                column.name
            )),
            Some(_) => {}
        }
    }
    found
}

/// Counts a merge by streaming both sides' keys and hashes in one order (the keys'
/// text in byte order, whatever either database's collation).
async fn count_merge(
    source: &Client,
    target: &Client,
    table: &Table,
    journal: &str,
    journalled: bool,
    upsert: bool,
) -> Result<Merged> {
    let source_sql = format!(
        "SELECT k::text COLLATE \"C\", h FROM (SELECT {} AS k, {} AS h FROM {} AS r) s ORDER BY 1",
        table.key_expr("r"),
        table.hash_expr("r"),
        table.sql_name()
    );
    let rows = format!(
        "SELECT {} AS k, {} AS h FROM {} AS r",
        table.key_expr("r"),
        table.hash_expr("r"),
        table.sql_name()
    );
    // The target's rows beside this journal's entries for the table (keys it wrote or
    // backed up, also those whose row is gone).
    let target_sql = match journalled {
        true => format!(
            "SELECT COALESCE(x.k, j.key)::text COLLATE \"C\", x.h, j.key IS NOT NULL, j.written \
             FROM ({rows}) x FULL JOIN ({}) j ON j.key = x.k ORDER BY 1",
            ledger::entries_sql(target).await?
        ),
        false => format!(
            "SELECT x.k::text COLLATE \"C\", x.h, false, NULL::bigint FROM ({rows}) x ORDER BY 1"
        ),
    };
    let key = table.key();
    let params: Vec<&str> = match journalled {
        true => vec![journal, key.as_str()],
        false => Vec::new(),
    };
    let source_rows = source.query_raw(&source_sql, Vec::<&str>::new()).await?;
    let target_rows = target.query_raw(&target_sql, params).await?;
    futures::pin_mut!(source_rows, target_rows);
    let mut merged = Merged::default();
    let mut next_target = target_rows.try_next().await?;
    while let Some(row) = source_rows.try_next().await? {
        let (key, hash): (String, i64) = (row.get(0), row.get(1));
        // Target keys before this one: not in the source, left as they are.
        while next_target
            .as_ref()
            .is_some_and(|t| t.get::<_, String>(0) < key)
        {
            next_target = target_rows.try_next().await?;
        }
        let matched = next_target
            .as_ref()
            .filter(|t| t.get::<_, String>(0) == key);
        let (target_hash, written) = match matched {
            Some(t) => {
                let journalled: bool = t.get(2);
                (
                    t.get::<_, Option<i64>>(1),
                    journalled.then(|| t.get::<_, Option<i64>>(3)),
                )
            }
            None => (None, None),
        };
        merged.add(classify(hash, target_hash, written, upsert));
    }
    Ok(merged)
}

/// Checks that `pg_dump` is there and can dump the source's server.
async fn check_pg_dump(pg_dump: &str, source: &Client) -> Result<()> {
    let output = tokio::process::Command::new(pg_dump)
        .arg("--version")
        .output()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "tables missing in the target are created from the source's definitions by {pg_dump}, which cannot be run ({e}): \
                 install PostgreSQL's client (apt-get install postgresql-client, brew install libpq), or create the tables first"
            )
        })?;
    let version = String::from_utf8_lossy(&output.stdout).to_string();
    let ours: u32 = version
        .split_whitespace()
        .find_map(|w| w.split('.').next().and_then(|major| major.parse().ok()))
        .unwrap_or(0);
    let server = server_version(source).await? / 10000;
    if (ours as i32) < server {
        bail!(
            "{pg_dump} is version {ours} ({}) and the source server is PostgreSQL {server}: pg_dump cannot dump a newer server; \
             install pg_dump {server} or newer, or create the missing tables first",
            version.trim()
        );
    }
    Ok(())
}

/// Both sides connected, the source and target found to be different databases.
pub(crate) async fn connect_both(spec: &Spec) -> Result<(Client, Client)> {
    let source = spec.source.connect().await.context("the source database")?;
    let target = spec.target.connect().await.context("the target database")?;
    let (source_id, target_id) = (
        connect::identity(&source).await?,
        connect::identity(&target).await?,
    );
    if source_id == target_id {
        bail!(
            "source and target are the same database ({} and {} reach one server and database, as the server says): \
             nothing would be copied and the source would be written; name another target",
            spec.source.label,
            spec.target.label
        );
    }
    Ok((source, target))
}

/// What a run would do, found without writing anything. Every reason it cannot run is
/// reported at once.
pub async fn survey(spec: &Spec, progress: &dyn Progress) -> Result<Survey> {
    let (source, target) = connect_both(spec).await?;
    let source_tables = catalog::tables(&source).await?;
    let selected = select(&source_tables, &spec.include, &spec.exclude)?;
    let target_tables = catalog::tables(&target).await?;
    let keys: Vec<String> = selected.iter().map(|t| t.key()).collect();
    let entries = ledger::tables(&target, &spec.journal).await?;
    let others = ledger::claimed_by_others(&target, &spec.journal, &keys).await?;
    let mut failures: Vec<String> = others
        .iter()
        .map(|(table, other)| {
            format!("{table} is already the target of another migration ({other}): destroy that one first, or copy into another table")
        })
        .collect();
    let mut survey = Survey::default();
    let mut needed_types = BTreeSet::new();
    let mut needed_schemas = BTreeSet::new();
    let both_servers_14_or_later =
        server_version(&source).await? >= 140000 && server_version(&target).await? >= 140000;
    for table in &selected {
        let key = table.key();
        let entry = entries.get(&key).cloned();
        let table = &Table {
            hash: entry
                .as_ref()
                .map_or_else(|| table.cheapest_hash(both_servers_14_or_later), |e| e.hash),
            ..(*table).clone()
        };
        progress.status(&format!("counting {key}"));
        let bytes = catalog::size(&source, table).await?;
        // A table missing or empty in the target needs the source's count alone; the
        // hash only to compare with rows there.
        let (rows, action) = match target_tables.get(&key) {
            None => {
                needed_schemas.insert(table.schema.clone());
                for column in &table.columns {
                    if let Some(user_type) = &column.user_type {
                        needed_types.insert((
                            user_type.clone(),
                            column.user_enum,
                            format!("{key}.{}", column.name),
                        ));
                    }
                }
                (count(&source, table).await?, Action::Create)
            }
            Some(target_table) => {
                let differences = column_differences(table, target_table);
                if !differences.is_empty() {
                    failures.push(format!("{key}: {}", differences.join("; ")));
                    continue;
                }
                let (target_rows, target_hash) =
                    count_and_hash(&target, table, &Slice::Whole).await?;
                if target_rows == 0 {
                    let rows = count(&source, table).await?;
                    let action = match rows {
                        0 => Action::InSync,
                        _ => Action::Fill,
                    };
                    (rows, action)
                } else {
                    let (rows, hash) = count_and_hash(&source, table, &Slice::Whole).await?;
                    let journalled = entry.is_some();
                    let action = if (target_rows, &target_hash) == (rows, &hash) {
                        Action::InSync
                    } else if spec.on_conflict == OnConflict::Truncate
                        && !entry.as_ref().is_some_and(|e| e.truncated)
                    {
                        Action::Truncate {
                            replaced: target_rows,
                        }
                    } else if spec.on_conflict == OnConflict::Fail && !journalled {
                        failures.push(format!(
                            "{key}: the target table holds {target_rows} rows and onConflict is fail, which copies only into empty tables; \
                             set onConflict to truncate (target rows backed up, then removed) or upsert (rows matched by primary key)"
                        ));
                        continue;
                    } else if table.primary_key.is_empty() {
                        failures.push(format!(
                            "{key}: the table has no primary key, so rows cannot be matched with the target's {target_rows} rows \
                             (onConflict {:?}); add a primary key, or empty the target table",
                            spec.on_conflict
                        ));
                        continue;
                    } else {
                        Action::Merge(
                            count_merge(
                                &source,
                                &target,
                                table,
                                &spec.journal,
                                journalled,
                                spec.on_conflict == OnConflict::Upsert,
                            )
                            .await
                            .with_context(|| format!("comparing {key} by primary key"))?,
                        )
                    };
                    (rows, action)
                }
            }
        };
        if spec.on_conflict == OnConflict::Upsert
            && table.primary_key.is_empty()
            && action != Action::InSync
        {
            failures.push(format!(
                "{key}: onConflict upsert matches rows by primary key, and the table has none; add one, or exclude the table"
            ));
        }
        survey.tables.push(TablePlan {
            table: (*table).clone(),
            rows,
            bytes,
            action,
            entry,
        });
    }
    if survey.tables.iter().any(|t| t.action == Action::Create) {
        if let Err(missing) = check_pg_dump(&spec.pg_dump, &source).await {
            failures.push(format!("{missing:#}"));
        }
        let schemas = catalog::existing_schemas(&target).await?;
        survey.schemas_to_create = needed_schemas
            .into_iter()
            .filter(|s| !schemas.contains(s))
            .collect();
        let names: BTreeSet<String> = needed_types
            .iter()
            .map(|(name, _, _)| name.clone())
            .collect();
        let existing = catalog::existing_types(&target, &names).await?;
        for (name, is_enum, column) in needed_types {
            match (existing.contains(&name), is_enum) {
                (true, _) => {}
                (false, true) => survey.enums_to_create.push(name),
                (false, false) => failures.push(format!(
                    "type {name} (of column {column}) is not in the target database: create it first (CREATE EXTENSION or CREATE TYPE)"
                )),
            }
        }
        survey.enums_to_create.dedup();
    }
    survey.post_data_pending = entries
        .iter()
        .filter(|(_, e)| e.created && !e.post_data_done)
        .map(|(k, _)| k.clone())
        .collect();
    if !failures.is_empty() {
        bail!(
            "nothing was written; the copy cannot run:\n  - {}",
            failures.join("\n  - ")
        );
    }
    survey.sequences_to_set = write::sequences_behind(&source, &target, &survey)
        .await?
        .len() as u64;
    Ok(survey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_written_only_where_the_target_holds_this_copy_or_nothing() {
        // Equal content: nothing to do, whoever wrote it.
        assert_eq!(classify(7, Some(7), None, false), Row::Unchanged);
        // A new key: inserted; one this copy wrote and someone deleted since: left alone.
        assert_eq!(classify(7, None, None, false), Row::Insert);
        assert_eq!(classify(7, None, Some(None), false), Row::Insert);
        assert_eq!(classify(7, None, Some(Some(5)), false), Row::LeftAlone);
        // A row as this copy wrote it: replaced; edited since: left alone.
        assert_eq!(classify(7, Some(5), Some(Some(5)), false), Row::Update);
        assert_eq!(classify(7, Some(6), Some(Some(5)), true), Row::LeftAlone);
        // A target row the copy never wrote: replaced (backed up) only with upsert.
        assert_eq!(classify(7, Some(6), None, true), Row::Update);
        assert_eq!(classify(7, Some(6), None, false), Row::LeftAlone);
    }

    /// A table named `schema.name`, without columns or keys.
    fn bare_table(key: &str) -> Table {
        let (schema, name) = key.split_once('.').unwrap();
        Table {
            schema: schema.into(),
            name: name.into(),
            columns: vec![],
            primary_key: vec![],
            references: BTreeSet::new(),
            hash: catalog::RowHash::default(),
        }
    }

    fn plan(key: &str, rows: u64, action: Action) -> TablePlan {
        TablePlan {
            table: bare_table(key),
            rows,
            bytes: rows * 100,
            action,
            entry: None,
        }
    }

    #[test]
    fn a_plan_in_words_leaves_out_what_does_not_happen() {
        let survey = Survey {
            tables: vec![
                plan("public.documents", 40, Action::Create),
                plan("public.pages", 10, Action::InSync),
                plan("public.tasks", 8, Action::Truncate { replaced: 3 }),
                plan(
                    "public.users",
                    6,
                    Action::Merge(Merged {
                        insert: 2,
                        update: 0,
                        left_alone: 1,
                        unchanged: 3,
                    }),
                ),
            ],
            sequences_to_set: 1,
            ..Survey::default()
        };
        assert_eq!(
            survey.lines("to copy"),
            [
                "public.documents: table to create, 40 rows (3.9 KiB) to copy",
                "public.pages: in sync (10 rows (1000 B))",
                "public.tasks: 3 target rows backed up and removed (truncate), then 8 rows (800 B) to copy",
                "public.users: 2 new rows to copy; 1 target rows left alone (changed there, or not this copy's); 3 unchanged; of 6 rows (600 B)",
                "4 tables; 1 to create; 1 already in sync; 50 rows (4.9 KiB) to copy; 3 target rows replaced, backed up first; \
                 1 target rows left alone; 1 sequences moved forward; verified by row counts and content hashes",
            ]
        );
        let quiet = Survey {
            tables: vec![plan("public.pages", 10, Action::InSync)],
            ..Survey::default()
        };
        assert!(!quiet.pending());
        assert_eq!(
            quiet.lines("to copy")[1],
            "1 tables; 1 already in sync; nothing to copy"
        );
    }

    #[test]
    fn globs_select_tables_and_a_selection_of_nothing_names_what_there_is() {
        let tables: BTreeMap<String, Table> = ["public.documents", "public.pages", "audit.events"]
            .into_iter()
            .map(|key| (key.to_string(), bare_table(key)))
            .collect();
        let keys = |include: &[&str], exclude: &[&str]| -> Result<Vec<String>> {
            let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            Ok(select(&tables, &own(include), &own(exclude))?
                .iter()
                .map(|t| t.key())
                .collect())
        };
        assert_eq!(
            keys(&[], &[]).unwrap(),
            ["audit.events", "public.documents", "public.pages"]
        );
        assert_eq!(
            keys(&["public.*"], &["*.pages"]).unwrap(),
            ["public.documents"]
        );
        let none = keys(&["app.*"], &[]).unwrap_err().to_string();
        assert!(
            none.contains(
                "select no table; the source database has: audit.events, public.documents"
            ),
            "{none}"
        );
        assert!(keys(&["[a"], &[])
            .unwrap_err()
            .to_string()
            .contains("includeTables"));
    }
}
