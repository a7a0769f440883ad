//! The run: missing tables created, truncated tables backed up, every table (or key
//! range of a large one) copied in its own transaction with its journal entries and its
//! verification, sequences moved forward, and the created tables' indexes and
//! constraints made after their data.

mod post_data;

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use futures::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::{Client, IsolationLevel, Transaction};

use super::catalog::{self, literal, quote, Slice, Table, JOURNAL_SCHEMA};
use super::ledger::{self, Made, SequenceEntry};
use super::{connect_both, count_and_hash, Action, Counts, Spec, Survey, TablePlan};
use crate::copy::progress::{human_bytes, Progress};

/// A sequence of the target to move forward to the source's value.
pub(super) struct SequenceMove {
    /// The target's sequence, as `pg_get_serial_sequence` names it.
    target: String,
    /// Where the target's sequence was.
    from: (i64, bool),
    to: i64,
}

/// The target sequences (behind serial and identity columns of the surveyed tables)
/// that are behind the source's: moved forward so new prod rows get fresh keys. A
/// sequence ahead of the source's is never moved back.
pub(super) async fn sequences_behind(
    source: &Client,
    target: &Client,
    survey: &Survey,
) -> Result<Vec<SequenceMove>> {
    let existing = catalog::tables(target).await?;
    let mut moves = Vec::new();
    for plan in &survey.tables {
        for (column, source_sequence) in catalog::sequences(source, &plan.table).await? {
            let (value, called) = catalog::sequence_state(source, &source_sequence).await?;
            if !called {
                continue;
            }
            let Some(target_table) = existing.get(&plan.table.key()) else {
                // Created by this run with the source's sequence names, at their start.
                moves.push(SequenceMove {
                    target: source_sequence,
                    from: (1, false),
                    to: value,
                });
                continue;
            };
            let Some((_, target_sequence)) = catalog::sequences(target, target_table)
                .await?
                .into_iter()
                .find(|(c, _)| *c == column)
            else {
                continue;
            };
            let (target_value, target_called) =
                catalog::sequence_state(target, &target_sequence).await?;
            if !target_called || target_value < value {
                moves.push(SequenceMove {
                    target: target_sequence,
                    from: (target_value, target_called),
                    to: value,
                });
            }
        }
    }
    Ok(moves)
}

/// `pg_dump`'s DDL for `tables` in one section (`pre-data`: tables and their sequences;
/// `post-data`: indexes, constraints, triggers), without owners or grants, which name
/// roles the target may not have.
async fn pg_dump(spec: &Spec, section: &str, tables: &[String]) -> Result<String> {
    let mut command = tokio::process::Command::new(&spec.pg_dump);
    command.args([
        "--schema-only",
        &format!("--section={section}"),
        "--no-owner",
        "--no-privileges",
    ]);
    for key in tables {
        let (schema, name) = key.split_once('.').unwrap_or(("public", key));
        command
            .arg("--table")
            .arg(format!("{}.{}", quote(schema), quote(name)));
    }
    command.envs(spec.source.libpq_env());
    let output = command
        .output()
        .await
        .with_context(|| format!("running {}", spec.pg_dump))?;
    if !output.status.success() {
        bail!(
            "{} --section={section} of the source failed: {}",
            spec.pg_dump,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    // psql's meta-commands (`\restrict`, which pg_dump writes since 15.14) are not SQL.
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .filter(|line| !line.starts_with('\\'))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Creates the missing schemas, enum types and tables (with their sequences) in one
/// transaction that also journals them: a failure leaves nothing half-made.
async fn create_missing(
    spec: &Spec,
    survey: &Survey,
    source: &Client,
    target: &mut Client,
) -> Result<Vec<String>> {
    let created: Vec<String> = survey
        .tables
        .iter()
        .filter(|t| t.action == Action::Create)
        .map(|t| t.table.key())
        .collect();
    if created.is_empty() {
        return Ok(created);
    }
    let ddl = pg_dump(spec, "pre-data", &created).await?;
    let transaction = target.transaction().await?;
    // Made by this copy, so dropped by its rollback: one made since by someone else
    // fails the statement (nothing is written) rather than become this copy's.
    for schema in &survey.schemas_to_create {
        transaction
            .batch_execute(&format!("CREATE SCHEMA {}", quote(schema)))
            .await
            .with_context(|| format!("creating schema {schema}"))?;
        ledger::note_made(&transaction, &spec.journal, Made::Schema, schema).await?;
    }
    for name in &survey.enums_to_create {
        let labels = catalog::enum_labels(source, name).await?;
        let (schema, type_name) = name.split_once('.').unwrap_or(("public", name));
        let labels: Vec<String> = labels.iter().map(|l| literal(l)).collect();
        transaction
            .batch_execute(&format!(
                "CREATE TYPE {}.{} AS ENUM ({})",
                quote(schema),
                quote(type_name),
                labels.join(", ")
            ))
            .await
            .with_context(|| format!("creating enum type {name}"))?;
        ledger::note_made(&transaction, &spec.journal, Made::Type, name).await?;
    }
    transaction.batch_execute(&ddl).await.context(
        "creating the missing tables from the source's definitions (pg_dump --section=pre-data)",
    )?;
    for key in &created {
        ledger::mark(&transaction, &spec.journal, key, "created").await?;
    }
    post_data::forget(spec, &transaction, &created).await?;
    transaction.commit().await?;
    Ok(created)
}

/// Backs up and removes the target rows of `truncate` tables, children before the
/// tables they reference, in one transaction with the backups.
async fn truncate(spec: &Spec, survey: &Survey, target: &mut Client) -> Result<()> {
    let plans: Vec<&TablePlan> = survey
        .tables
        .iter()
        .filter(|t| matches!(t.action, Action::Truncate { .. }))
        .collect();
    if plans.is_empty() {
        return Ok(());
    }
    let existing = catalog::tables(target).await?;
    let targets: Vec<&Table> = plans
        .iter()
        .filter_map(|p| existing.get(&p.table.key()))
        .collect();
    let transaction = target.transaction().await?;
    for key in catalog::levels(&targets).into_iter().rev().flatten() {
        let table = &existing[&key];
        // Rows an earlier fill of this journal wrote stay this copy's, not backed up.
        ledger::expand(&transaction, &spec.journal, &key, &Slice::Whole).await?;
        let row_key = match table.primary_key.is_empty() {
            true => "jsonb_build_array(row_number() OVER ())".to_string(),
            false => table.key_expr("r"),
        };
        transaction
            .execute(
                &format!(
                    "INSERT INTO {JOURNAL_SCHEMA}.rows (journal, tbl, key, written, backup) \
                     SELECT $1, $2, {row_key}, NULL, to_jsonb(r) FROM {} AS r ON CONFLICT DO NOTHING",
                    table.sql_name()
                ),
                &[&spec.journal, &key],
            )
            .await
            .with_context(|| format!("backing up {key} before truncating it"))?;
        transaction
            .execute(&format!("DELETE FROM {}", table.sql_name()), &[])
            .await
            .with_context(|| format!("truncating {key} (its rows are backed up in the journal)"))?;
        ledger::mark(&transaction, &spec.journal, &key, "truncated").await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// What one table's copy did.
#[derive(Debug, Default)]
struct Copied {
    rows: u64,
    bytes: u64,
    replaced: u64,
    left_alone: u64,
}

/// Streams the source's rows (binary COPY) into `into` (a COPY FROM STDIN statement),
/// reporting progress; returns rows and bytes.
async fn pipe(
    source: &Transaction<'_>,
    target: &Transaction<'_>,
    unit: &Unit<'_>,
    into: &str,
    progress: &dyn Progress,
) -> Result<(u64, u64)> {
    let table = &unit.plan.table;
    let out = format!(
        "COPY (SELECT {} FROM {} AS r WHERE {}) TO STDOUT (FORMAT binary)",
        table.columns_of("r"),
        table.sql_name(),
        unit.slice.filter(table, "r")
    );
    let stream = source.copy_out(&out).await?;
    let sink = target.copy_in(into).await?;
    futures::pin_mut!(stream, sink);
    let (started, mut reported, mut bytes) = (Instant::now(), Instant::now(), 0u64);
    while let Some(chunk) = stream.try_next().await? {
        bytes += chunk.len() as u64;
        sink.feed(chunk).await?;
        if reported.elapsed() >= Duration::from_secs(1) {
            reported = Instant::now();
            let rate = bytes as f64 / started.elapsed().as_secs_f64();
            progress.status(&format!(
                "{}: {} streamed ({}/s)",
                unit.label(),
                human_bytes(bytes),
                human_bytes(rate as u64)
            ));
        }
    }
    let rows = sink.as_mut().finish().await?;
    Ok((rows, bytes))
}

/// What one transaction copies: a whole table, or one key range of a large one.
struct Unit<'a> {
    plan: &'a TablePlan,
    slice: Slice,
    /// For a range: the source snapshot every range of the table reads, so they add up
    /// to one consistent table; and its place among them.
    snapshot: Option<(String, usize, usize)>,
}

impl Unit<'_> {
    fn label(&self) -> String {
        match &self.snapshot {
            Some((_, place, of)) => format!("{} (range {place} of {of})", self.plan.table.key()),
            None => self.plan.table.key(),
        }
    }
}

/// A large table whose primary key starts with an integer, cut into ranges of that
/// column as the journal has them (a run after a kill copies the same ranges) or into
/// new ones of about `range_rows` rows; other tables whole. A table this copy created
/// (`bare`: its indexes come with the post-data) gets its primary key's index first,
/// or its range index when the key comes later. The source connection returned holds
/// open the snapshot the ranges read, and must live until they are copied.
async fn units<'a>(
    spec: &Spec,
    plan: &'a TablePlan,
    bare: bool,
    target: &Client,
    progress: &dyn Progress,
) -> Result<(Vec<Unit<'a>>, Option<Client>)> {
    let whole = vec![Unit {
        plan,
        slice: Slice::Whole,
        snapshot: None,
    }];
    let Some(column) = plan.table.range_column() else {
        return Ok((whole, None));
    };
    let key = plan.table.key();
    let mut ranges = ledger::ranges(target, &spec.journal, &key).await?;
    if ranges.is_empty() && plan.rows <= spec.range_rows {
        return Ok((whole, None));
    }
    let exporter = spec.source.connect().await?;
    exporter
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let snapshot: String = exporter
        .query_one("SELECT pg_export_snapshot()", &[])
        .await?
        .get(0);
    if ranges.is_empty() {
        let bounds = exporter
            .query_one(
                &format!(
                    "SELECT min({c})::bigint, max({c})::bigint FROM {}",
                    plan.table.sql_name(),
                    c = quote(&column.name)
                ),
                &[],
            )
            .await?;
        let (Some(min), Some(max)) = (bounds.get(0), bounds.get(1)) else {
            return Ok((whole, None));
        };
        ranges = Slice::ranges(min, max, plan.rows.div_ceil(spec.range_rows.max(1)));
        // All the ranges or none: a run after a kill copies the ranges kept, and a part
        // of them would leave the keys above the last one out. With them, a table copied
        // whole before and grown since has its fill, which spans every range, turned
        // into rows entries: the ranges' transactions, run at once, must not each do it.
        target.batch_execute("BEGIN").await?;
        ledger::keep_ranges(target, &spec.journal, &key, &ranges).await?;
        ledger::expand(target, &spec.journal, &key, &Slice::Whole).await?;
        target.batch_execute("COMMIT").await?;
    }
    if bare && !post_data::make_key_index(spec, target, &key, progress).await? {
        target
            .batch_execute(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
                quote(&ledger::range_index(&key)),
                plan.table.sql_name(),
                quote(&column.name)
            ))
            .await
            .with_context(|| format!("indexing {key} by its ranges"))?;
    }
    let count = ranges.len();
    let units = ranges
        .into_iter()
        .enumerate()
        .map(|(i, slice)| Unit {
            plan,
            slice,
            snapshot: Some((snapshot.clone(), i + 1, count)),
        })
        .collect();
    Ok((units, Some(exporter)))
}

/// A range's reads go by the index on its column. A planner that finds the column's
/// order on disk far from the key's (rows added out of key order), or has no statistics
/// yet (a table being filled), takes a seq scan of the whole table for each range,
/// which makes a table of n ranges cost n reads of it.
const READ_BY_INDEX: &str = "SET LOCAL enable_seqscan = off";

/// Copies one unit in one target transaction, which also journals and verifies it:
/// killed or failed, nothing of it is committed.
async fn copy_unit(spec: &Spec, unit: &Unit<'_>, progress: &dyn Progress) -> Result<Copied> {
    copy_in_one_transaction(spec, unit, progress)
        .await
        .with_context(|| format!("copying {}", unit.label()))
}

async fn copy_in_one_transaction(
    spec: &Spec,
    unit: &Unit<'_>,
    progress: &dyn Progress,
) -> Result<Copied> {
    let table = &unit.plan.table;
    let label = unit.label();
    let started = Instant::now();
    let mut source = spec.source.connect().await?;
    let mut target = spec.target.connect().await?;
    // One snapshot of the source for its count, hash and rows.
    let snapshot = source
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    if let Some((id, _, _)) = &unit.snapshot {
        snapshot
            .batch_execute(&format!(
                "SET TRANSACTION SNAPSHOT {}; {READ_BY_INDEX}",
                literal(id)
            ))
            .await?;
    }
    let (rows, hash) = count_and_hash(&snapshot, table, &unit.slice).await?;
    let transaction = match unit.slice {
        Slice::Whole => {
            let transaction = target.transaction().await?;
            // Readers go on; writers wait until this table is copied and verified.
            transaction
                .batch_execute(&format!(
                    "LOCK TABLE {} IN EXCLUSIVE MODE",
                    table.sql_name()
                ))
                .await?;
            transaction
        }
        // Ranges of one table are written at once, so none can lock it: each reads and
        // verifies its own snapshot instead, and a row another writer adds under a
        // copied key fails the range loudly (a unique violation), never silently.
        Slice::Range { .. } => {
            let transaction = target
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .start()
                .await?;
            transaction.batch_execute(READ_BY_INDEX).await?;
            if count_and_hash(&transaction, table, &unit.slice).await? == (rows, hash.clone()) {
                progress.info(&format!(
                    "{label}: {rows} rows in the target already, as the source has them: not copied again"
                ));
                return Ok(Copied::default());
            }
            transaction
        }
    };
    let empty: bool = transaction
        .query_one(
            &format!(
                "SELECT NOT EXISTS (SELECT 1 FROM {} AS r WHERE {})",
                table.sql_name(),
                unit.slice.filter(table, "r")
            ),
            &[],
        )
        .await?
        .get(0);
    let copied = match empty {
        true => fill(spec, &snapshot, &transaction, unit, (rows, &hash), progress).await?,
        false => {
            // Its joins of staged and target rows are the planner's to choose.
            transaction.batch_execute("RESET enable_seqscan").await?;
            merge(spec, &snapshot, &transaction, unit, (rows, &hash), progress).await?
        }
    };
    transaction.commit().await?;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    progress.info(&format!(
        "{label}: {} rows ({}) copied in {secs:.1} s ({:.0} rows/s){}, verified",
        copied.rows,
        human_bytes(copied.bytes),
        copied.rows as f64 / secs,
        match copied.left_alone {
            0 => String::new(),
            n => format!("; {n} target rows left alone (changed there since, or not this copy's)"),
        }
    ));
    Ok(copied)
}

/// An empty target table filled by COPY; every row journalled as this copy's.
async fn fill(
    spec: &Spec,
    source: &Transaction<'_>,
    target: &Transaction<'_>,
    unit: &Unit<'_>,
    (rows, hash): (u64, &str),
    progress: &dyn Progress,
) -> Result<Copied> {
    let table = &unit.plan.table;
    let (key, label) = (table.key(), unit.label());
    let into = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        table.sql_name(),
        table.column_list()
    );
    let (written, bytes) = pipe(source, target, unit, &into, progress).await?;
    // Each row's key and hash journalled, and their count and sum (the verification)
    // taken from that same pass: the rows are hashed once.
    let found = match table.primary_key.is_empty() {
        true => count_and_hash(target, table, &unit.slice).await?,
        false => ledger::keep_fill(
            target,
            &spec.journal,
            table,
            &unit.slice,
            (rows, spec.range_rows),
        )
        .await
        .with_context(|| format!("journalling the rows written into {label}"))?,
    };
    if found != (rows, hash.to_string()) || written != rows {
        bail!(
            "{label}: the target holds {} rows after the copy and the source {rows} (or their contents differ): nothing of it was committed; run `pulumi up` again",
            found.0
        );
    }
    if unit.slice == Slice::Whole {
        ledger::note_written(target, &spec.journal, &key, (rows as i64, hash)).await?;
    }
    Ok(Copied {
        rows,
        bytes,
        ..Copied::default()
    })
}

/// Rows matched by primary key: the source's staged in a temporary table, then each
/// classified as `super::classify` does, new rows inserted, rows this copy wrote (or,
/// with `upsert`, any row) replaced after a backup, the rest left alone.
async fn merge(
    spec: &Spec,
    source: &Transaction<'_>,
    target: &Transaction<'_>,
    unit: &Unit<'_>,
    (rows, hash): (u64, &str),
    progress: &dyn Progress,
) -> Result<Copied> {
    let table = &unit.plan.table;
    let (key, label) = (table.key(), unit.label());
    if table.primary_key.is_empty() {
        bail!("{key}: the target table is not empty and has no primary key to match rows by; nothing of it was written");
    }
    let name = table.sql_name();
    ledger::expand(target, &spec.journal, &key, &unit.slice).await?;
    // The target rows of this unit.
    let in_unit = unit.slice.filter(table, "r");
    let (columns, stage_columns) = (table.column_list(), table.columns_of("s"));
    target
        .batch_execute(&format!(
            "CREATE TEMP TABLE sm_stage ON COMMIT DROP AS SELECT {columns} FROM {name} WITH NO DATA"
        ))
        .await?;
    let into = format!("COPY sm_stage ({columns}) FROM STDIN (FORMAT binary)");
    let (_, bytes) = pipe(source, target, unit, &into, progress).await?;
    let stage = Table {
        schema: String::new(),
        name: String::new(),
        ..table.clone()
    };
    let staged = target
        .query_one(
            &format!(
                "SELECT count(*), COALESCE(sum({})::text, '0') FROM sm_stage AS r",
                stage.hash_expr("r")
            ),
            &[],
        )
        .await?;
    if (staged.get::<_, i64>(0) as u64, staged.get::<_, String>(1)) != (rows, hash.to_string()) {
        bail!("{label}: the rows received differ from the source's count and hash: nothing of it was written; run `pulumi up` again");
    }
    let upsert = spec.on_conflict == super::OnConflict::Upsert;
    target
        .execute(
            &format!(
                "CREATE TEMP TABLE sm_merge ON COMMIT DROP AS \
                 SELECT s.k AS sm_key, s.h AS sm_source, x.h AS sm_target, \
                   CASE WHEN x.h = s.h THEN 'unchanged' \
                        WHEN x.h IS NULL THEN CASE WHEN j.written IS NOT NULL THEN 'left' ELSE 'insert' END \
                        WHEN j.key IS NOT NULL THEN CASE WHEN j.written = x.h THEN 'update' ELSE 'left' END \
                        WHEN $3 THEN 'update' ELSE 'left' END AS sm_action, \
                   j.key IS NOT NULL AS sm_journalled \
                 FROM (SELECT {sk} AS k, {sh} AS h FROM sm_stage AS s) s \
                 LEFT JOIN (SELECT {tk} AS k, {th} AS h FROM {name} AS r WHERE {in_unit}) x ON x.k = s.k \
                 LEFT JOIN {JOURNAL_SCHEMA}.rows j ON j.journal = $1 AND j.tbl = $2 AND j.key = s.k",
                sk = table.key_expr("s"),
                sh = table.hash_expr("s"),
                tk = table.key_expr("r"),
                th = table.hash_expr("r"),
            ),
            &[&spec.journal, &key, &upsert],
        )
        .await
        .with_context(|| format!("matching {label}'s rows by primary key"))?;
    target
        .batch_execute("ANALYZE sm_stage; ANALYZE sm_merge")
        .await?;
    let key_r = table.key_expr("r");
    let key_s = table.key_expr("s");
    // Backups of the target rows about to be replaced that no journal entry holds yet.
    target
        .execute(
            &format!(
                "INSERT INTO {JOURNAL_SCHEMA}.rows (journal, tbl, key, written, backup) \
                 SELECT $1, $2, m.sm_key, NULL, to_jsonb(r) FROM {name} AS r JOIN sm_merge m ON m.sm_key = {key_r} \
                 WHERE {in_unit} AND m.sm_action = 'update' AND NOT m.sm_journalled"
            ),
            &[&spec.journal, &key],
        )
        .await?;
    let updatable: Vec<String> = table.updatable().map(|c| quote(&c.name)).collect();
    let replaced = match updatable.is_empty() {
        true => 0,
        false => {
            let values: Vec<String> = updatable.iter().map(|c| format!("s.{c}")).collect();
            target
                .execute(
                    &format!(
                        "UPDATE {name} AS r SET ({}) = ROW({}) FROM sm_stage s JOIN sm_merge m ON m.sm_key = {key_s} \
                         WHERE {in_unit} AND {key_r} = m.sm_key AND m.sm_action = 'update'",
                        updatable.join(", "),
                        values.join(", ")
                    ),
                    &[],
                )
                .await
                .with_context(|| format!("replacing changed rows of {label}"))?
        }
    };
    // The source's values for identity columns too, as COPY writes them.
    let inserted = target
        .execute(
            &format!(
                "INSERT INTO {name} ({columns}) OVERRIDING SYSTEM VALUE SELECT {stage_columns} FROM sm_stage s \
                 JOIN sm_merge m ON m.sm_key = {key_s} WHERE m.sm_action = 'insert'"
            ),
            &[],
        )
        .await
        .with_context(|| format!("inserting new rows into {label}"))?;
    target
        .execute(
            &format!(
                "INSERT INTO {JOURNAL_SCHEMA}.rows (journal, tbl, key, written) \
                 SELECT $1, $2, sm_key, sm_source FROM sm_merge WHERE sm_action IN ('insert', 'update') \
                 ON CONFLICT (journal, tbl, key) DO UPDATE SET written = EXCLUDED.written"
            ),
            &[&spec.journal, &key],
        )
        .await?;
    // Proof: every source row not left alone is now in the target as the source has it.
    let outcome = target
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE m.sm_action <> 'left' AND x.h IS DISTINCT FROM m.sm_source), \
                        count(*) FILTER (WHERE m.sm_action = 'left') \
                 FROM sm_merge m LEFT JOIN (SELECT {key_r} AS k, {} AS h FROM {name} AS r WHERE {in_unit}) x ON x.k = m.sm_key",
                table.hash_expr("r")
            ),
            &[],
        )
        .await?;
    let (differing, left_alone): (i64, i64) = (outcome.get(0), outcome.get(1));
    if differing > 0 {
        bail!("{label}: {differing} rows differ from the source after the copy: nothing of it was committed; run `pulumi up` again");
    }
    Ok(Copied {
        rows: inserted + replaced,
        bytes,
        replaced,
        left_alone: left_alone as u64,
    })
}

/// Moves the target's sequences forward, journalling where each was.
async fn set_sequences(
    spec: &Spec,
    source: &Client,
    target: &mut Client,
    survey: &Survey,
) -> Result<u64> {
    let moves = sequences_behind(source, target, survey).await?;
    let transaction = target.transaction().await?;
    for step in &moves {
        let entry = SequenceEntry {
            sequence: step.target.clone(),
            original: step.from,
            set_to: step.to,
        };
        ledger::keep_sequence(&transaction, &spec.journal, &entry).await?;
        transaction
            .execute(
                "SELECT setval($1::text::regclass, $2, true)",
                &[&step.target, &step.to],
            )
            .await
            .with_context(|| format!("setting sequence {}", step.target))?;
    }
    transaction.commit().await?;
    Ok(moves.len() as u64)
}

/// Runs the surveyed copy. Tables are written after the tables they reference, those
/// of one level (and the ranges of large ones) in parallel; each table or range is
/// committed alone, with its journal entries.
pub async fn run(spec: &Spec, survey: &Survey, progress: &dyn Progress) -> Result<Counts> {
    let (source, mut target) = connect_both(spec).await?;
    ledger::ensure(&target).await?;
    let claimed: Vec<_> = survey
        .tables
        .iter()
        .map(|t| ledger::Claimed {
            table: t.table.key(),
            hashed_columns: t.table.copied().map(|c| c.name.clone()).collect(),
            hash: t.table.hash,
            key_columns: t.table.primary_key.clone(),
        })
        .collect();
    ledger::claim(&mut target, &spec.journal, &claimed).await?;
    let created = create_missing(spec, survey, &source, &mut target).await?;
    truncate(spec, survey, &mut target).await?;
    let existing = catalog::tables(&target).await?;
    let to_copy: Vec<&TablePlan> = survey
        .tables
        .iter()
        .filter(|t| t.action != Action::InSync)
        .collect();
    let in_target: Vec<&Table> = to_copy
        .iter()
        .map(|p| existing.get(&p.table.key()).unwrap_or(&p.table))
        .collect();
    let mut counts = Counts {
        tables: survey.tables.len() as u64,
        tables_created: created.len() as u64,
        tables_in_sync: (survey.tables.len() - to_copy.len()) as u64,
        ..Counts::default()
    };
    counts.rows_replaced = survey
        .tables
        .iter()
        .map(|t| match t.action {
            Action::Truncate { replaced } => replaced,
            _ => 0,
        })
        .sum();
    let mut pending: Vec<String> = survey.post_data_pending.clone();
    pending.extend(created);
    pending.sort();
    pending.dedup();
    let made_by_earlier_runs = ledger::made(&target, &spec.journal, Made::PostData).await?;
    for level in catalog::levels(&in_target) {
        let (mut batch, mut snapshots) = (Vec::new(), Vec::new());
        for plan in to_copy.iter().filter(|p| level.contains(&p.table.key())) {
            let bare = pending.binary_search(&plan.table.key()).is_ok();
            let (units, snapshot) = units(spec, plan, bare, &target, progress).await?;
            batch.extend(units);
            snapshots.extend(snapshot);
        }
        let copies: Vec<_> = batch
            .iter()
            .map(|unit| copy_unit(spec, unit, progress))
            .collect();
        let copied: Vec<Copied> = futures::stream::iter(copies)
            .buffer_unordered(spec.parallel.max(1))
            .try_collect()
            .await?;
        // The ranges are copied: their source snapshots can close.
        drop(snapshots);
        for unit in copied {
            counts.rows_copied += unit.rows;
            counts.bytes_copied += unit.bytes;
            counts.rows_replaced += unit.replaced;
            counts.rows_left_alone += unit.left_alone;
        }
    }
    counts.sequences_set = set_sequences(spec, &source, &mut target, survey).await?;
    post_data::make(spec, &mut target, &pending, &made_by_earlier_runs, progress).await?;
    Ok(counts)
}
