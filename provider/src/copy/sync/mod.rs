//! The bucket sync engine: compares a source prefix with a target prefix by walking both
//! listings in key order (`walk`, memory stays at one page per side), decides what to
//! do with each key (`decide`), copies in journalled batches (`records`), proves each
//! write (`verify`), and rolls back from the journal (`rollback`).

mod decide;
#[cfg(test)]
mod engine_tests;
mod records;
mod rollback;
mod verify;
mod walk;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};
use futures::stream::{self, FuturesUnordered, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

pub use decide::ArchivedSources;
pub(crate) use records::Previous;
pub(crate) use rollback::{put_journalled, rollback};

use super::filter::KeyFilter;
use super::journal::Journal;
use super::progress::{copied_clause, in_words, Meter, Progress};
use super::s3::{self, Bucket, Headers, ObjectInfo, WriteOptions};
use decide::{Action, Decider};
use records::{backup_name, load_objects, ObjectRecord, ObjectStates};
use verify::{copy_verified, Proofs, TargetChecksums};
use walk::March;

/// What to do with an object that already exists in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Overwrite it unless it is identical (same size and ETag) to the source object.
    SkipIdentical,
    /// Never touch it.
    Skip,
    /// Overwrite it, even when identical.
    Overwrite,
}

pub struct SyncSpec {
    pub source: Bucket,
    pub source_prefix: String,
    pub target: Bucket,
    pub target_prefix: String,
    /// Same S3 service and identity on both sides: copy without moving bytes here.
    pub server_side: bool,
    pub filter: KeyFilter,
    pub on_conflict: OnConflict,
    pub delete_extraneous: bool,
    pub archived: Archived,
    /// Storage class and encryption of what is written.
    pub write: WriteOptions,
    /// Where no checksum or MD5 ETag covers both sides, read both objects and compare
    /// their bytes' MD5s, rather than prove only their sizes.
    pub verify_content: bool,
}

/// What to do with source objects in an archive storage class (S3 Glacier Flexible
/// Retrieval, Deep Archive, Intelligent-Tiering's archive tiers), which cannot be read
/// until restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archived {
    /// Fail the plan naming them, before anything is written.
    Fail,
    /// Leave them out (the target keeps what it has at their keys) and count them.
    Skip,
}

/// What a sync did, or in a plan, would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCounts {
    pub scanned: u64,
    pub copied: u64,
    pub skipped: u64,
    pub overwritten: u64,
    pub deleted: u64,
    pub excluded: u64,
    /// Source objects left out because they are archived.
    #[serde(default)]
    pub archived: u64,
    pub bytes_copied: u64,
    /// Objects written, by how their content was proven equal to the source's.
    #[serde(default)]
    pub verified_by_checksum: u64,
    #[serde(default)]
    pub verified_by_etag: u64,
    #[serde(default)]
    pub verified_by_content: u64,
    #[serde(default)]
    pub verified_by_size: u64,
    /// Keys this resource wrote that someone else changed since: treated as theirs
    /// (`onConflict` applies, and an overwrite backs their content up first).
    #[serde(default)]
    pub changed_since: u64,
    /// Target keys written, overwritten or deleted (in a plan: to be), for a CDN
    /// invalidation: up to `CHANGED_KEYS_LISTED`, or `*` alone when there were more
    /// (memory stays bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_keys: Vec<String>,
}

/// The most changed keys a run lists (CloudFront's limit of paths per invalidation).
pub const CHANGED_KEYS_LISTED: usize = 3000;

impl SyncCounts {
    pub(crate) fn changes(&self) -> u64 {
        self.copied + self.deleted
    }

    pub(crate) fn add(&mut self, other: &SyncCounts) {
        self.scanned += other.scanned;
        self.copied += other.copied;
        self.skipped += other.skipped;
        self.overwritten += other.overwritten;
        self.deleted += other.deleted;
        self.excluded += other.excluded;
        self.archived += other.archived;
        self.bytes_copied += other.bytes_copied;
        self.verified_by_checksum += other.verified_by_checksum;
        self.verified_by_etag += other.verified_by_etag;
        self.verified_by_content += other.verified_by_content;
        self.verified_by_size += other.verified_by_size;
        self.changed_since += other.changed_since;
        for key in &other.changed_keys {
            self.note_changed(key);
        }
    }

    /// Lists a changed key, or stands for all of them with `*` once there are too many.
    fn note_changed(&mut self, key: &str) {
        if self.changed_keys.first().is_some_and(|k| k == "*") {
            return;
        }
        if key == "*" || self.changed_keys.len() == CHANGED_KEYS_LISTED {
            self.changed_keys = vec!["*".to_string()];
        } else {
            self.changed_keys.push(key.to_string());
        }
    }

    /// One line for people; `done` says whether it happened or is planned.
    pub(crate) fn summary(&self, done: bool) -> String {
        let (copy, delete) = if done {
            ("copied", "deleted")
        } else {
            ("to copy", "to delete")
        };
        let copied = (self.copied, self.bytes_copied, self.overwritten);
        let changed = changed_since_clause(self.changed_since);
        in_words(
            copied_clause(copied, "object", copy),
            &[
                (self.deleted, format!("{} {delete}", self.deleted)),
                (self.skipped, format!("{} skipped", self.skipped)),
                (
                    self.excluded,
                    format!("{} excluded by filters", self.excluded),
                ),
                (
                    self.archived,
                    format!("{} archived left out", self.archived),
                ),
            ],
            format!("{} scanned{changed}", self.scanned),
        )
    }
}

/// Actions per journal segment: the intent records of a batch are stored before any of
/// its writes start.
const BATCH: usize = 256;
/// Objects copied (or rolled back) at once.
const CONCURRENCY: usize = 32;
/// Batches under way at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// The walk and the decisions together: what to do next, in key order.
struct Walk<'a> {
    spec: &'a SyncSpec,
    march: March<'a>,
    decider: Decider<'a>,
}

impl<'a> Walk<'a> {
    fn new(spec: &'a SyncSpec, state: &'a ObjectStates) -> Self {
        Walk {
            spec,
            march: March::new(
                &spec.source,
                &spec.source_prefix,
                &spec.target,
                &spec.target_prefix,
            ),
            decider: Decider::new(
                &spec.filter,
                spec.on_conflict,
                spec.delete_extraneous,
                &spec.target_prefix,
                state,
                spec.archived,
            ),
        }
    }

    async fn next(&mut self, listed: Option<&Meter<'_>>) -> Result<Option<Action>> {
        while let Some((relative, entry)) = self.march.next().await? {
            if let Some(listed) = listed {
                listed.add(1, 0);
            }
            if let Some(action) = self.decider.decide(&relative, entry)? {
                let changed = match &action {
                    Action::Create(source) | Action::Overwrite { source, .. } => {
                        target_key(self.spec, &source.key)
                    }
                    Action::Delete(existing) => existing.key.clone(),
                    Action::Adopt { key, .. } => key.clone(),
                };
                self.decider.counts.note_changed(&changed);
                return Ok(Some(action));
            }
        }
        Ok(None)
    }

    /// Walks to the end and returns the counts of every decision; fails when archived
    /// objects stand in the way.
    async fn count(mut self, listed: &Meter<'_>) -> Result<SyncCounts> {
        while self.next(Some(listed)).await?.is_some() {}
        self.decider.check_archived()?;
        Ok(self.decider.counts)
    }

    /// `count`, also asking the source of every object to copy whether it needs a key
    /// its writer provided (SSE-C), which no copy can read: a preview refuses them,
    /// instead of a run stopping at the first. One HEAD per object to copy.
    async fn count_readable(mut self, listed: &Meter<'_>) -> Result<SyncCounts> {
        let source = &self.spec.source;
        let mut asked = FuturesUnordered::new();
        let mut keyed: Vec<String> = Vec::new();
        let mut keyed_count = 0u64;
        let mut note = |answer: Result<Option<String>>| -> Result<()> {
            if let Some(key) = answer? {
                keyed_count += 1;
                if keyed.len() < 3 {
                    keyed.push(key);
                }
            }
            Ok(())
        };
        while let Some(action) = self.next(Some(listed)).await? {
            let (Action::Create(object) | Action::Overwrite { source: object, .. }) = action else {
                continue;
            };
            if asked.len() >= CONCURRENCY {
                if let Some(answer) = asked.next().await {
                    note(answer)?;
                }
            }
            asked.push(async move {
                let keyed = source
                    .store
                    .needs_customer_key(source.at(&object.key))
                    .await?;
                anyhow::Ok(keyed.then_some(object.key))
            });
        }
        while let Some(answer) = asked.next().await {
            note(answer)?;
        }
        self.decider.check_archived()?;
        if keyed_count > 0 {
            keyed.sort();
            bail!(
                "{keyed_count} source objects are encrypted with a key their writer provided (SSE-C), for example {}: \
                 S3 serves them only with that key, which stackmigrate does not take, so the sync would stop at them; \
                 re-encrypt them with SSE-S3 or SSE-KMS, or leave them out; nothing was written",
                keyed
                    .iter()
                    .map(|k| format!("s3://{}/{k}", source.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(self.decider.counts)
    }
}

/// Checks both buckets and counts what a sync would do, writing nothing.
pub(crate) async fn plan(
    spec: &SyncSpec,
    journal: Option<&Journal>,
    progress: &dyn Progress,
) -> Result<SyncCounts> {
    let state = match journal {
        Some(journal) => load_objects(journal).await?,
        None => ObjectStates::new()?,
    };
    let counts = Walk::new(spec, &state)
        .count_readable(&list_meter(spec, progress))
        .await?;
    let then = match spec.on_conflict {
        OnConflict::Skip => LEFT_AS_THEY_ARE,
        OnConflict::SkipIdentical | OnConflict::Overwrite => BACKED_UP_THEN_OVERWRITTEN,
    };
    warn_changed_since(progress, "objects", counts.changed_since, then);
    progress.info(&planned_line(spec, &counts));
    Ok(counts)
}

/// What a sync would do, in words, as preview and the start of a run say it.
fn planned_line(spec: &SyncSpec, planned: &SyncCounts) -> String {
    format!(
        "s3://{}/{} -> s3://{}/{}: {}",
        spec.source.name,
        spec.source_prefix,
        spec.target.name,
        spec.target_prefix,
        planned.summary(false)
    )
}

/// What happens to keys someone changed since this resource wrote them, by the conflict
/// policy.
pub(crate) const LEFT_AS_THEY_ARE: &str = "they are left as they are";
pub(crate) const BACKED_UP_THEN_OVERWRITTEN: &str =
    "where the source differs they are backed up in the journal, then overwritten; a rollback puts their content back";

/// The part of a run's summary about keys someone changed since this resource wrote
/// them: empty when there are none.
pub(crate) fn changed_since_clause(count: u64) -> String {
    if count == 0 {
        return String::new();
    }
    format!("; {count} written by this resource before were changed by someone else since, and are treated as theirs")
}

/// Names, at preview, the keys this resource wrote that someone changed since.
pub(crate) fn warn_changed_since(progress: &dyn Progress, what: &str, count: u64, then: &str) {
    if count == 0 {
        return;
    }
    progress.warn(&format!(
        "{count} {what} this resource wrote were changed by someone else since and are treated as theirs: {then}"
    ));
}

/// Counts keys as the listings of both buckets are walked.
fn list_meter<'a>(spec: &SyncSpec, progress: &'a dyn Progress) -> Meter<'a> {
    let what = format!(
        "listed s3://{}/{} against s3://{}/{}: keys",
        spec.source.name, spec.source_prefix, spec.target.name, spec.target_prefix
    );
    Meter::counting(progress, &what)
}

/// Brings the target in step with the source, journalling before each write. The plan
/// comes first: nothing is written unless `check_plan` passes it. Batches overlap: the
/// next batch's intents are journalled while earlier copies still run, so no batch waits
/// for the slowest copy of the one before.
pub async fn run(
    spec: &SyncSpec,
    journal: &Journal,
    progress: &dyn Progress,
    check_plan: impl FnOnce(&SyncCounts) -> Result<()>,
) -> Result<SyncCounts> {
    let state = load_objects(journal).await?;
    let planned = Walk::new(spec, &state)
        .count(&list_meter(spec, progress))
        .await?;
    check_plan(&planned)?;
    progress.info(&planned_line(spec, &planned));
    let meter = Meter::new(progress, "copied", planned.copied, planned.bytes_copied);
    let proofs = Proofs::default();
    let checksums = TargetChecksums::default();
    // Without the setting (no permission, or an answer the SDK cannot read), backups
    // keep rollback exact anyway.
    let versioned = match s3::versioning_enabled(&spec.target).await {
        Ok(versioned) => versioned,
        Err(err) => {
            progress.warn(&format!(
                "{err:#}; overwritten and deleted objects are backed up in the journal instead"
            ));
            false
        }
    };
    let failed = AtomicBool::new(false);
    let runner = Batches {
        spec,
        journal,
        state: &state,
        meter: &meter,
        proofs: &proofs,
        checksums: &checksums,
        versioned,
        failed: &failed,
    };
    let (walk_state, failed) = (&state, &failed);
    // The walk feeds batches through a channel to the copies, in the same task: both are
    // polled together, so listing pages load while copies run.
    let (batches, receiver) = tokio::sync::mpsc::channel::<Vec<Action>>(BATCHES_IN_FLIGHT);
    // `move`: the sender drops when the walk ends, which ends the copies' stream.
    let walking = async move {
        let mut walk = Walk::new(spec, walk_state);
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(action) = walk.next(None).await? {
            batch.push(action);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if failed.load(Ordering::SeqCst) || batches.send(full).await.is_err() {
                    break; // a copy failed; its error is reported
                }
            }
        }
        if !batch.is_empty() && !failed.load(Ordering::SeqCst) {
            let _ = batches.send(batch).await;
        }
        anyhow::Ok(walk.decider.counts)
    };
    // Every batch under way finishes and confirms what landed, even after another one
    // failed: a write that landed unconfirmed could not be told from someone else's.
    let copying = async {
        let results: Vec<Result<()>> = tokio_stream::wrappers::ReceiverStream::new(receiver)
            .map(|batch| runner.run(batch))
            .buffer_unordered(BATCHES_IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()
    };
    // Both to the end: a listing that fails stops new batches (its sender drops) while
    // those under way finish and confirm.
    let (walked, copied) = futures::future::join(walking, copying).await;
    copied?;
    let mut done = walked?;
    proofs.into_counts(&mut done);
    if done.verified_by_size > 0 {
        progress.warn(&format!(
            "{} objects were verified by size only: neither a checksum nor an MD5 ETag covers both sides (multipart or KMS-encrypted objects without a stored checksum); verifying by content reads both sides and proves them",
            done.verified_by_size
        ));
    }
    if done.changes() != planned.changes() {
        progress.warn(&format!(
            "the source changed while copying: planned {} changes, made {}; the next run catches up",
            planned.changes(),
            done.changes()
        ));
    }
    progress.status(&meter.line());
    Ok(done)
}

/// What every batch of a run shares.
struct Batches<'a> {
    spec: &'a SyncSpec,
    journal: &'a Journal,
    /// The journal as the run began.
    state: &'a ObjectStates,
    meter: &'a Meter<'a>,
    proofs: &'a Proofs,
    checksums: &'a TargetChecksums,
    /// The target keeps versions: what a write replaces stays as an older version, so
    /// nothing is backed up and rollback removes the versions written.
    versioned: bool,
    /// Set by the first batch that fails: no batch starts after it.
    failed: &'a AtomicBool,
}

impl Batches<'_> {
    /// Journals a batch's intents, then copies, verifies and journals what landed. A key
    /// appears once in a walk, so `state` answers whether an earlier run already backed
    /// a key up.
    async fn run(&self, batch: Vec<Action>) -> Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let result = self.journal_and_copy(batch).await;
        if result.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        result
    }

    async fn journal_and_copy(&self, batch: Vec<Action>) -> Result<()> {
        let (spec, journal, versioned) = (self.spec, self.journal, self.versioned);
        // 1. Back up what is about to be overwritten or deleted, unless an earlier run
        //    already did (its backup holds the content from before this resource) and
        //    nobody changed the key since, or the target keeps versions.
        let replaced: Vec<&ObjectInfo> = batch
            .iter()
            .filter_map(|a| match a {
                Action::Overwrite { existing, .. } | Action::Delete(existing) => Some(existing),
                _ => None,
            })
            .collect();
        let known = self.state.get_all(replaced.iter().map(|o| &o.key))?;
        let needs_backup: Vec<ObjectInfo> = replaced
            .into_iter()
            .zip(known)
            .filter(|(existing, known)| {
                known
                    .as_ref()
                    .is_none_or(|known| known.changed_since(existing))
            })
            .map(|(o, _)| o.clone())
            .collect();
        let backups: HashMap<String, Previous> = stream::iter(needs_backup)
            .map(|existing| async move {
                let previous = if versioned {
                    Previous::unbacked(&existing)
                } else {
                    backup(spec, journal, &existing).await?
                };
                anyhow::Ok((existing.key.clone(), previous))
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;

        // 2. ObjectRecord the intents.
        let intents: Vec<ObjectRecord> = batch
            .iter()
            .map(|action| match action {
                Action::Create(source) | Action::Overwrite { source, .. } => {
                    let key = target_key(spec, &source.key);
                    ObjectRecord::Write {
                        previous: backups.get(&key).cloned(),
                        key,
                        source_etag: source.etag.clone(),
                        versioned,
                    }
                }
                Action::Delete(existing) => ObjectRecord::Delete {
                    key: existing.key.clone(),
                    previous: backups
                        .get(&existing.key)
                        .cloned()
                        .unwrap_or_else(|| Previous::unbacked(existing)),
                },
                Action::Adopt { key, etag } => ObjectRecord::Written {
                    key: key.clone(),
                    etag: etag.clone(),
                    version: None,
                },
            })
            .collect();
        journal.append(&intents).await?;

        // 3. Write, verify, and record what landed, also when some writes failed.
        let landed: Vec<Result<Option<ObjectRecord>>> = stream::iter(batch)
            .map(|action| async move {
                match action {
                    Action::Create(source) | Action::Overwrite { source, .. } => {
                        let key = target_key(spec, &source.key);
                        let (written, proof) =
                            copy_verified(spec, &source, &key, self.checksums).await?;
                        self.proofs.add(proof);
                        self.meter.add(1, source.size);
                        anyhow::Ok(Some(ObjectRecord::Written {
                            key,
                            etag: written.etag,
                            version: written.version,
                        }))
                    }
                    Action::Delete(existing) => {
                        let marker = s3::delete(&spec.target, &existing.key).await?;
                        Ok(marker.map(|version| ObjectRecord::Deleted {
                            key: existing.key,
                            version,
                        }))
                    }
                    Action::Adopt { .. } => Ok(None),
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut confirmed = Vec::new();
        let mut first_failure = None;
        for outcome in landed {
            match outcome {
                Ok(record) => confirmed.extend(record),
                Err(err) => {
                    first_failure.get_or_insert(err);
                }
            }
        }
        journal.append(&confirmed).await?;
        first_failure.map_or(Ok(()), Err)
    }
}

/// Saves an object about to be replaced in the journal, with its headers and tags.
async fn backup(spec: &SyncSpec, journal: &Journal, existing: &ObjectInfo) -> Result<Previous> {
    let (_, headers) = s3::head_with_tags(&spec.target, &existing.key)
        .await?
        .unwrap_or_else(|| (existing.clone(), Headers::default()));
    let name = backup_name(&existing.key);
    journal.backup(&name, &spec.target, existing).await?;
    Ok(Previous {
        etag: existing.etag.clone(),
        size: existing.size,
        backup: name,
        headers,
    })
}

fn target_key(spec: &SyncSpec, source_key: &str) -> String {
    format!(
        "{}{}",
        spec.target_prefix,
        &source_key[spec.source_prefix.len()..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_listed_up_to_the_limit_then_stood_for_by_a_star() {
        let mut counts = SyncCounts::default();
        for i in 0..CHANGED_KEYS_LISTED {
            counts.note_changed(&format!("k{i}"));
        }
        assert_eq!(counts.changed_keys.len(), CHANGED_KEYS_LISTED);
        let mut total = SyncCounts::default();
        total.add(&counts);
        assert_eq!(total.changed_keys, counts.changed_keys);
        counts.note_changed("one too many");
        assert_eq!(counts.changed_keys, ["*"]);
        counts.note_changed("more");
        assert_eq!(counts.changed_keys, ["*"]);
        total.add(&counts);
        assert_eq!(total.changed_keys, ["*"]);
    }

    #[test]
    fn summary_names_every_count() {
        let counts = SyncCounts {
            scanned: 5,
            copied: 3,
            overwritten: 1,
            skipped: 1,
            excluded: 1,
            deleted: 0,
            archived: 0,
            bytes_copied: 2048,
            ..Default::default()
        };
        assert_eq!(
            counts.summary(false),
            "3 objects (2.0 KiB) to copy, of which 1 overwrite an existing object; 1 skipped; 1 excluded by filters; 5 scanned"
        );
        let with_archived = SyncCounts {
            archived: 2,
            ..counts.clone()
        };
        assert!(with_archived
            .summary(false)
            .contains("1 excluded by filters; 2 archived left out; 5 scanned"));
        let nothing = SyncCounts {
            scanned: 4,
            skipped: 4,
            ..Default::default()
        };
        assert_eq!(
            nothing.summary(false),
            "nothing to copy; 4 skipped; 4 scanned"
        );
        assert!(counts
            .summary(true)
            .starts_with("3 objects (2.0 KiB) copied"));
    }
}
