//! SnapshotPromote: copies the ChromaDB snapshot each collection's pointer names,
//! honouring the compactor's lock, verifies the copy (hash, SQLite, embedding count),
//! and only then moves the target's pointer.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BucketInputs, Context, Failure, Migration, Planned, Side};
use crate::copy::dynamodb::{self, Table};
use crate::copy::filter::KeyFilter;
use crate::copy::journal::Journal;
use crate::copy::snapshot;
use crate::copy::sync::{self, Archived, OnConflict, SyncCounts, SyncSpec};

pub struct SnapshotPromote;

fn default_output() -> String {
    "embedding_chromadb_bucket_name".to_string()
}
fn default_collections() -> Vec<String> {
    vec!["lines".to_string(), "words".to_string()]
}
fn default_snapshot_prefix() -> String {
    "{collection}/snapshot/timestamped/".to_string()
}
fn default_pointer_key() -> String {
    "{collection}/snapshot/latest-pointer.txt".to_string()
}
fn default_lock_table_output() -> String {
    "dynamodb_table_name".to_string()
}
fn default_lock_partition_key() -> String {
    "LOCK#{collection}#chroma-{collection}-compaction".to_string()
}
fn default_lock_sort_key() -> String {
    "LOCK".to_string()
}
fn default_lock_wait() -> u64 {
    300
}

/// Inputs of SnapshotPromote.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inputs {
    /// Bucket holding the source snapshots. Default: the `output` of `sourceStack`.
    #[schemars(extend("x-replace-on-change" = true))]
    pub source_bucket: Option<String>,
    /// Bucket to promote into. Default: the `output` of `targetStack`.
    #[schemars(extend("x-replace-on-change" = true))]
    pub target_bucket: Option<String>,
    /// Stack output naming the snapshot bucket. Default `embedding_chromadb_bucket_name`.
    #[serde(default = "default_output")]
    pub output: String,
    /// Collections to promote. Default `lines` and `words`.
    #[serde(default = "default_collections")]
    pub collections: Vec<String>,
    /// Pin a snapshot version (for example `20251120_153000_123456_ab12cd34`) instead of the one the source pointer names.
    pub snapshot: Option<String>,
    /// Where a collection's snapshots live; `{collection}` is replaced. Default `{collection}/snapshot/timestamped/`.
    #[serde(default = "default_snapshot_prefix")]
    pub snapshot_prefix: String,
    /// The pointer object readers follow, whose body is the version. Default `{collection}/snapshot/latest-pointer.txt`.
    #[serde(default = "default_pointer_key")]
    pub pointer_key: String,
    /// DynamoDB table holding the compactor's lock on the source side. Default: the `lockTableOutput` of `sourceStack`.
    pub source_lock_table: Option<String>,
    /// DynamoDB table holding the compactor's lock on the target side. Default: the `lockTableOutput` of `targetStack`.
    pub target_lock_table: Option<String>,
    /// Stack output naming the lock tables. Default `dynamodb_table_name`.
    #[serde(default = "default_lock_table_output")]
    pub lock_table_output: String,
    /// The lock item's partition key; `{collection}` is replaced. Default `LOCK#{collection}#chroma-{collection}-compaction`.
    #[serde(default = "default_lock_partition_key")]
    pub lock_partition_key: String,
    /// The lock item's sort key. Default `LOCK`.
    #[serde(default = "default_lock_sort_key")]
    pub lock_sort_key: String,
    /// How long to wait for a held lock before failing. Default 300 seconds.
    #[serde(default = "default_lock_wait")]
    pub lock_wait_seconds: u64,
}

/// Outputs of SnapshotPromote.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    /// The source snapshot bucket, as given or read from the source stack.
    pub source_bucket: String,
    /// The target snapshot bucket, as given or read from the target stack.
    pub target_bucket: String,
    /// Collection to the version its target pointer now names (in preview: will name).
    #[schemars(extend("x-pending" = true))]
    pub promoted: BTreeMap<String, String>,
    /// Collection to the version the target pointer named before (empty: there was none).
    pub previous_pointers: BTreeMap<String, String>,
    /// Snapshot files written to the target.
    pub files_copied: u64,
    /// Bytes written to the target.
    pub bytes_copied: u64,
    /// Collection to the number of embeddings its promoted snapshot holds.
    pub embedding_counts: BTreeMap<String, u64>,
    /// True once the copied files matched their hash and the target's database opened and counted the same embeddings.
    pub verified: bool,
}

struct Collection {
    name: String,
    version: String,
    pointer: String,
    spec: SyncSpec,
}

impl SnapshotPromote {
    async fn collections(
        ctx: &Context,
        inputs: &Inputs,
        outputs: &mut Outputs,
    ) -> Result<Vec<Collection>> {
        let pair = ctx
            .bucket_pair(BucketInputs::whole(
                &inputs.source_bucket,
                &inputs.target_bucket,
                &inputs.output,
            ))
            .await?;
        let (source, target) = (pair.source, pair.target);
        outputs.source_bucket = source.name.clone();
        outputs.target_bucket = target.name.clone();
        let mut collections = Vec::new();
        for name in &inputs.collections {
            let pointer = inputs.pointer_key.replace("{collection}", name);
            let version = match &inputs.snapshot {
                Some(pinned) => pinned.clone(),
                None => snapshot::read_pointer(&source, &pointer).await?.map(|p| p.version).ok_or_else(|| {
                    anyhow::anyhow!("collection {name}: no pointer at s3://{}/{pointer}; pin `snapshot` to a version", source.name)
                })?,
            };
            let previous = snapshot::read_pointer(&target, &pointer).await?;
            outputs.previous_pointers.insert(
                name.clone(),
                previous.map(|p| p.version).unwrap_or_default(),
            );
            outputs.promoted.insert(name.clone(), version.clone());
            let prefix = format!(
                "{}{version}/",
                inputs.snapshot_prefix.replace("{collection}", name)
            );
            collections.push(Collection {
                name: name.clone(),
                version,
                pointer,
                spec: SyncSpec {
                    source: source.clone(),
                    source_prefix: prefix.clone(),
                    target: target.clone(),
                    target_prefix: prefix,
                    server_side: pair.server_side,
                    filter: KeyFilter::default(),
                    on_conflict: OnConflict::SkipIdentical,
                    delete_extraneous: false,
                    archived: Archived::Fail,
                    write: Default::default(),
                    // Snapshots are few and large: proof by reading, never by size.
                    verify_content: true,
                },
            });
        }
        Ok(collections)
    }

    /// The lock tables of `sides` that can be named, with their key attributes.
    async fn lock_tables(
        ctx: &Context,
        inputs: &Inputs,
        sides: &[Side],
    ) -> Result<Vec<(Side, Table, Vec<String>)>> {
        let mut tables = Vec::new();
        for (side, explicit) in [
            (Side::Source, &inputs.source_lock_table),
            (Side::Target, &inputs.target_lock_table),
        ] {
            if !sides.contains(&side) {
                continue;
            }
            let name = match explicit {
                Some(name) => name.clone(),
                None => match ctx.stack_outputs(side).await? {
                    Some(outputs) => outputs.string(&inputs.lock_table_output)?,
                    None => {
                        ctx.progress.warn(&format!(
                            "no {side:?} lock table (set {}LockTable or the stack): the compactor's lock is not checked there",
                            if matches!(side, Side::Source) { "source" } else { "target" }
                        ));
                        continue;
                    }
                },
            };
            let clients = ctx.side(side);
            let table = clients.table(&name).await?;
            let shape =
                dynamodb::describe(&table, "lock", &clients.connection.describe_dynamodb()).await?;
            tables.push((side, table, shape.keys));
        }
        Ok(tables)
    }

    /// Copies and verifies one collection's snapshot, then moves its pointer if it
    /// still names what it named when the copy began and the locks are still held.
    /// Returns what was copied and the embeddings the promoted snapshot holds.
    async fn promote(
        ctx: &Context,
        collection: &Collection,
        journal: &Journal,
        locks: &[snapshot::HeldLock],
    ) -> Result<(SyncCounts, u64)> {
        let spec = &collection.spec;
        let name = &collection.name;
        let before = snapshot::read_pointer(&spec.target, &collection.pointer).await?;
        let source = snapshot::inspect(&spec.source, &spec.source_prefix).await?;
        let counts: SyncCounts =
            sync::run(spec, journal, ctx.progress.as_ref(), |_| Ok(())).await?;
        let copied = snapshot::inspect(&spec.target, &spec.target_prefix).await?;
        if copied.embeddings != source.embeddings {
            bail!(
                "{name}: the copied snapshot holds {} embeddings, the source {}; the pointer was not moved",
                copied.embeddings,
                source.embeddings
            );
        }
        if !locks.iter().all(snapshot::HeldLock::still_held) {
            bail!(
                "{name}: the compactor's lock was lost during the copy (another holder took it after it lapsed); the pointer was not moved: run `pulumi up` again"
            );
        }
        // The pointer last, and only over what it named when the copy began: readers
        // never follow it to a partial snapshot, and a compactor's promotion meanwhile
        // is never overwritten.
        if before.as_ref().map(|p| p.version.as_str()) != Some(collection.version.as_str()) {
            let moved = !sync::put_journalled(
                &spec.target,
                &collection.pointer,
                collection.version.clone().into_bytes(),
                journal,
                Some(before.as_ref().map(|p| p.etag.as_str())),
            )
            .await?;
            if moved {
                let now = snapshot::read_pointer(&spec.target, &collection.pointer).await?;
                bail!(
                    "{name}: the pointer s3://{}/{} moved during the copy (from {} to {}), so {} was not promoted; run `pulumi up` again to promote over the new one, or pin `snapshot`",
                    spec.target.name,
                    collection.pointer,
                    before.map(|p| p.version).unwrap_or_else(|| "(none)".into()),
                    now.map(|p| p.version).unwrap_or_else(|| "(none)".into()),
                    collection.version
                );
            }
        }
        ctx.progress.info(&format!(
            "{name}: promoted {} ({} embeddings, verified)",
            collection.version, copied.embeddings
        ));
        Ok((counts, copied.embeddings))
    }

    fn lock_key(inputs: &Inputs, keys: &[String], collection: &str) -> Vec<(String, String)> {
        let values = [
            inputs
                .lock_partition_key
                .replace("{collection}", collection),
            inputs.lock_sort_key.clone(),
        ];
        keys.iter().cloned().zip(values).collect()
    }
}

/// Who holds a lock this provider takes, for the compactor's logs: the resource, and
/// this run (a time to the nanosecond), so two runs of one resource never share it.
fn lock_owner(urn: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "stackmigrate {} {nanos}",
        urn.rsplit("::").next().unwrap_or(urn)
    )
}

#[async_trait]
impl Migration for SnapshotPromote {
    type Inputs = Inputs;
    type Outputs = Outputs;
    const TOKEN: &'static str = "stackmigrate:index:SnapshotPromote";
    const DESCRIPTION: &'static str = concat!(
        "Promotes ChromaDB snapshots: for each collection, the version the source pointer \
        names (or a pinned one), after the compactor's lock is free; copies, verifies the hash and the SQLite database's \
        embedding count, then moves the target pointer. Destroy restores the pointer and removes what was copied.",
        include_str!("examples/SnapshotPromote.md")
    );

    fn validate(inputs: &Inputs) -> Vec<Failure> {
        let mut failures = Vec::new();
        if inputs.collections.is_empty() || inputs.collections.iter().any(|c| c.trim().is_empty()) {
            failures.push(Failure::new(
                "collections",
                "must list collection names, for example lines and words",
            ));
        }
        for (value, name) in [
            (&inputs.snapshot_prefix, "snapshotPrefix"),
            (&inputs.pointer_key, "pointerKey"),
        ] {
            if inputs.collections.len() > 1 && !value.contains("{collection}") {
                failures.push(Failure::new(
                    name,
                    "must contain {collection} when several collections are promoted",
                ));
            }
        }
        if inputs
            .snapshot
            .as_ref()
            .is_some_and(|s| s.contains('/') || s.is_empty())
        {
            failures.push(Failure::new(
                "snapshot",
                "must be a version name, for example 20251120_153000_123456_ab12cd34",
            ));
        }
        failures
    }

    async fn plan(&self, ctx: &Context, inputs: &Inputs) -> Result<Planned<Outputs>> {
        let mut outputs = Outputs::default();
        let collections = Self::collections(ctx, inputs, &mut outputs).await?;
        let journal = ctx.journal().await?;
        let mut pending = false;
        for collection in &collections {
            let source =
                snapshot::inspect(&collection.spec.source, &collection.spec.source_prefix).await?;
            outputs
                .embedding_counts
                .insert(collection.name.clone(), source.embeddings);
            let counts =
                sync::plan(&collection.spec, Some(&journal), ctx.progress.as_ref()).await?;
            outputs.files_copied += counts.copied;
            outputs.bytes_copied += counts.bytes_copied;
            pending |= counts.changes() > 0
                || outputs.previous_pointers[&collection.name] != collection.version;
            ctx.progress.info(&format!(
                "{}: snapshot {} ({} embeddings), {} files to copy; pointer {} -> {}",
                collection.name,
                collection.version,
                source.embeddings,
                counts.copied,
                Some(outputs.previous_pointers[&collection.name].as_str())
                    .filter(|p| !p.is_empty())
                    .unwrap_or("(none)"),
                collection.version
            ));
        }
        for (_, table, keys) in Self::lock_tables(ctx, inputs, &BOTH_SIDES).await? {
            for collection in &collections {
                if let Some(lock) =
                    snapshot::held_lock(&table, &Self::lock_key(inputs, &keys, &collection.name))
                        .await?
                {
                    ctx.progress.warn(&format!(
                        "{}: the compactor's lock in {} is held by {} until {}; up will wait for it",
                        collection.name, table.name, lock.owner, lock.expires
                    ));
                }
            }
        }
        Ok(Planned { outputs, pending })
    }

    async fn apply(&self, ctx: &Context, inputs: &Inputs) -> Result<Outputs> {
        let mut outputs = Outputs::default();
        let collections = Self::collections(ctx, inputs, &mut outputs).await?;
        let journal = ctx.journal().await?;
        ctx.resolved(&outputs);
        let wait = Duration::from_secs(inputs.lock_wait_seconds);
        let locks = Self::lock_tables(ctx, inputs, &BOTH_SIDES).await?;
        let owner = lock_owner(&ctx.urn);
        for collection in &collections {
            // The source's compactor is waited for (the source is never written); the
            // target's lock is taken, as its compactor takes it, for the whole
            // copy-verify-move window.
            let mut held = Vec::new();
            for (side, table, keys) in &locks {
                let key = Self::lock_key(inputs, keys, &collection.name);
                match side {
                    Side::Source => {
                        snapshot::wait_for_lock(table, &key, wait, ctx.progress.as_ref()).await?
                    }
                    Side::Target => held.push(
                        snapshot::take_lock(table, &key, &owner, wait, ctx.progress.as_ref())
                            .await?,
                    ),
                }
            }
            let promoted = Self::promote(ctx, collection, &journal, &held).await;
            release(ctx, held).await;
            let (counts, embeddings) = promoted?;
            outputs.files_copied += counts.copied;
            outputs.bytes_copied += counts.bytes_copied;
            outputs
                .embedding_counts
                .insert(collection.name.clone(), embeddings);
        }
        outputs.verified = true;
        Ok(outputs)
    }

    /// Under the target compactor's locks, as the promotion was: a compactor never
    /// promotes between the check that a pointer still names what this resource wrote
    /// and its restore. The lock table and key come from the inputs the run recorded.
    async fn rollback(&self, ctx: &Context, state: &Outputs) -> Result<()> {
        let recorded = match ctx.recorded_inputs().await? {
            Some(recorded) => Some(super::own_inputs::<Inputs>(&recorded)?),
            None => None,
        };
        let mut held = Vec::new();
        match &recorded {
            Some(inputs) => {
                let wait = Duration::from_secs(inputs.lock_wait_seconds);
                let owner = lock_owner(&ctx.urn);
                // A lock table that cannot be read (deleted with prod's stack) holds no
                // compactor's lock to respect.
                let tables = match Self::lock_tables(ctx, inputs, &[Side::Target]).await {
                    Ok(tables) => tables,
                    Err(err) => {
                        ctx.progress.warn(&format!(
                            "the compactor's lock table cannot be read ({err:#}): the pointers are restored without its lock"
                        ));
                        Vec::new()
                    }
                };
                for (_, table, keys) in tables {
                    for collection in &inputs.collections {
                        let key = Self::lock_key(inputs, &keys, collection);
                        let lock =
                            snapshot::take_lock(&table, &key, &owner, wait, ctx.progress.as_ref())
                                .await;
                        match lock {
                            Ok(lock) => held.push(lock),
                            Err(err) => {
                                release(ctx, held).await;
                                return Err(err.context("nothing was rolled back"));
                            }
                        }
                    }
                }
            }
            None => ctx.progress.warn(
                "the journal holds no inputs of the promotion (an earlier release wrote it): the pointers are restored without the compactor's lock",
            ),
        }
        let rolled_back = ctx.rollback_bucket(&state.target_bucket).await;
        release(ctx, held).await;
        rolled_back
    }
}

const BOTH_SIDES: [Side; 2] = [Side::Source, Side::Target];

/// Releases locks this run took; one that cannot be released expires by itself.
async fn release(ctx: &Context, held: Vec<snapshot::HeldLock>) {
    for lock in held {
        if let Err(err) = lock.release().await {
            ctx.progress.warn(&format!(
                "the compactor's lock could not be released ({err:#}); it expires by itself within 3 minutes"
            ));
        }
    }
}
