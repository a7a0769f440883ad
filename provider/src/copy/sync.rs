//! The bucket sync engine: compares a source prefix with a target prefix by walking both
//! listings in key order (memory stays at one page per side), plans, copies in
//! journalled batches, verifies each write, and rolls back from the journal.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::filter::KeyFilter;
use super::journal::Journal;
use super::progress::{human_bytes, Meter, Progress};
use super::s3::{self, Bucket, Headers, Lister, ObjectInfo};

/// What to do with an object that already exists in the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnConflict {
    /// Overwrite it unless it is identical (same size and ETag) to the source object.
    #[default]
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
    pub bytes_copied: u64,
}

impl SyncCounts {
    pub fn changes(&self) -> u64 {
        self.copied + self.deleted
    }

    pub fn add(&mut self, other: &SyncCounts) {
        self.scanned += other.scanned;
        self.copied += other.copied;
        self.skipped += other.skipped;
        self.overwritten += other.overwritten;
        self.deleted += other.deleted;
        self.excluded += other.excluded;
        self.bytes_copied += other.bytes_copied;
    }

    /// One line for people; `done` says whether it happened or is planned.
    pub fn summary(&self, done: bool) -> String {
        let (copy, delete) = if done {
            ("copied", "deleted")
        } else {
            ("to copy", "to delete")
        };
        format!(
            "{} objects ({}) {copy}, of which {} overwrite an existing object; {} {delete}; {} skipped; {} excluded by filters; {} scanned",
            self.copied,
            human_bytes(self.bytes_copied),
            self.overwritten,
            self.deleted,
            self.skipped,
            self.excluded,
            self.scanned
        )
    }
}

/// What rollback did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RollbackReport {
    pub deleted: u64,
    pub restored: u64,
    /// Target keys changed by someone else since the copy: left as they are.
    pub left_alone: Vec<String>,
}

/// An old object as it was before this resource first touched its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Previous {
    pub etag: String,
    pub size: u64,
    pub backup: String,
    pub headers: Headers,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Record {
    /// About to write `key` from a source object with `source_etag`.
    #[serde(rename_all = "camelCase")]
    Write {
        key: String,
        source_etag: String,
        previous: Option<Previous>,
    },
    /// `key` now holds what this resource wrote, with this ETag.
    Written { key: String, etag: String },
    /// About to delete `key` (deleteExtraneous).
    Delete { key: String, previous: Previous },
}

/// What the journal says about one target key.
#[derive(Debug, Default, Clone)]
struct KeyState {
    /// Content before this resource first touched the key (None: it did not exist).
    previous: Option<Previous>,
    source_etag: String,
    /// Set once a write is known to have landed.
    written_etag: Option<String>,
    deleted: bool,
    /// The journal segment of the latest write or delete: rollback goes backwards.
    segment: u64,
}

type JournalState = HashMap<String, KeyState>;

fn apply(state: &mut JournalState, segment: u64, record: Record) {
    match record {
        Record::Write {
            key,
            source_etag,
            previous,
        } => {
            // Only the first record of a key knows the content from before this resource.
            let entry = state.entry(key).or_insert_with(|| KeyState {
                previous,
                ..Default::default()
            });
            entry.source_etag = source_etag;
            entry.written_etag = None;
            entry.deleted = false;
            entry.segment = segment;
        }
        Record::Written { key, etag } => {
            state.entry(key).or_default().written_etag = Some(etag);
        }
        Record::Delete { key, previous } => {
            let entry = state.entry(key).or_insert_with(|| KeyState {
                previous: Some(previous),
                ..Default::default()
            });
            entry.written_etag = None;
            entry.deleted = true;
            entry.segment = segment;
        }
    }
}

async fn load_state(journal: &Journal) -> Result<JournalState> {
    let mut state = JournalState::new();
    journal
        .replay(|segment, record| apply(&mut state, segment, record))
        .await?;
    Ok(state)
}

#[derive(Debug, Clone)]
enum Action {
    Create(ObjectInfo),
    Overwrite {
        source: ObjectInfo,
        existing: ObjectInfo,
    },
    Delete(ObjectInfo),
    /// The target already holds exactly what an interrupted earlier run was writing:
    /// only the journal needs to learn it.
    Adopt {
        key: String,
        etag: String,
    },
}

/// Walks source and target listings together and yields what to do, key by key.
struct Walk<'a> {
    spec: &'a SyncSpec,
    state: &'a JournalState,
    source: Lister<'a>,
    target: Lister<'a>,
    counts: SyncCounts,
}

impl<'a> Walk<'a> {
    fn new(spec: &'a SyncSpec, state: &'a JournalState) -> Self {
        Walk {
            spec,
            state,
            source: Lister::new(&spec.source, &spec.source_prefix),
            target: Lister::new(&spec.target, &spec.target_prefix),
            counts: SyncCounts::default(),
        }
    }

    fn target_key(&self, relative: &str) -> String {
        format!("{}{relative}", self.spec.target_prefix)
    }

    async fn next(&mut self) -> Result<Option<Action>> {
        loop {
            let source_rel = self
                .source
                .peek()
                .await?
                .map(|o| o.key[self.spec.source_prefix.len()..].to_string());
            let target_rel = self
                .target
                .peek()
                .await?
                .map(|o| o.key[self.spec.target_prefix.len()..].to_string());
            let order = match (&source_rel, &target_rel) {
                (None, None) => return Ok(None),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(s), Some(t)) => s.cmp(t),
            };
            let action = match order {
                std::cmp::Ordering::Less => {
                    let source = self.source.next().await?.expect("peeked");
                    let relative = source_rel.expect("peeked");
                    self.counts.scanned += 1;
                    if !self.spec.filter.matches(&relative) {
                        self.counts.excluded += 1;
                        continue;
                    }
                    self.counts.copied += 1;
                    self.counts.bytes_copied += source.size;
                    Action::Create(source)
                }
                std::cmp::Ordering::Greater => {
                    let existing = self.target.next().await?.expect("peeked");
                    let relative = target_rel.expect("peeked");
                    if !self.spec.delete_extraneous || !self.spec.filter.matches(&relative) {
                        continue;
                    }
                    self.counts.deleted += 1;
                    Action::Delete(existing)
                }
                std::cmp::Ordering::Equal => {
                    let source = self.source.next().await?.expect("peeked");
                    let existing = self.target.next().await?.expect("peeked");
                    let relative = source_rel.expect("peeked");
                    self.counts.scanned += 1;
                    if !self.spec.filter.matches(&relative) {
                        self.counts.excluded += 1;
                        continue;
                    }
                    match self.decide(&relative, source, existing) {
                        Some(action) => action,
                        None => continue,
                    }
                }
            };
            return Ok(Some(action));
        }
    }

    /// Source and target both hold `relative`.
    fn decide(
        &mut self,
        relative: &str,
        source: ObjectInfo,
        existing: ObjectInfo,
    ) -> Option<Action> {
        let key = self.target_key(relative);
        let ours = self.state.get(&key);
        let same_content = source.size == existing.size
            && (source.etag == existing.etag
                || ours.is_some_and(|s| {
                    s.written_etag.as_deref() == Some(existing.etag.as_str())
                        && s.source_etag == source.etag
                }));
        // A key this resource wrote is kept in step with the source whatever onConflict
        // says: onConflict is about objects that were there before.
        let mode = if ours.is_some() {
            OnConflict::SkipIdentical
        } else {
            self.spec.on_conflict
        };
        let overwrite = match mode {
            OnConflict::SkipIdentical => !same_content,
            OnConflict::Skip => false,
            OnConflict::Overwrite => true,
        };
        if overwrite {
            self.counts.copied += 1;
            self.counts.overwritten += 1;
            self.counts.bytes_copied += source.size;
            return Some(Action::Overwrite { source, existing });
        }
        self.counts.skipped += 1;
        match ours {
            Some(s)
                if same_content && s.written_etag.as_deref() != Some(existing.etag.as_str()) =>
            {
                Some(Action::Adopt {
                    key,
                    etag: existing.etag,
                })
            }
            _ => None,
        }
    }
}

/// Actions per journal segment: the intent records of a batch are stored before any of
/// its writes start.
const BATCH: usize = 256;
/// Objects copied at once in one batch.
const CONCURRENCY: usize = 32;
/// Batches under way at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// Name of the backup of a target key in the journal: stable, one per key.
fn backup_name(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Checks both buckets and counts what a sync would do, writing nothing.
pub async fn plan(spec: &SyncSpec, journal: Option<&Journal>) -> Result<SyncCounts> {
    let state = match journal {
        Some(journal) => load_state(journal).await?,
        None => JournalState::new(),
    };
    let mut walk = Walk::new(spec, &state);
    while walk.next().await?.is_some() {}
    Ok(walk.counts)
}

/// Brings the target in step with the source, journalling before each write. Batches
/// overlap: the next batch's intents are journalled while earlier copies still run, so
/// no batch waits for the slowest copy of the one before.
pub async fn run(
    spec: &SyncSpec,
    journal: &Journal,
    progress: &dyn Progress,
) -> Result<SyncCounts> {
    let state = load_state(journal).await?;
    let planned = {
        let mut walk = Walk::new(spec, &state);
        while walk.next().await?.is_some() {}
        walk.counts
    };
    progress.info(&format!(
        "s3://{}/{} -> s3://{}/{}: {}",
        spec.source.name,
        spec.source_prefix,
        spec.target.name,
        spec.target_prefix,
        planned.summary(false)
    ));
    let meter = Meter::new(progress, "copied", planned.copied, planned.bytes_copied);
    let walk_state = &state;
    // The walk feeds batches through a channel to the copies, in the same task: both are
    // polled together, so listing pages load while copies run.
    let (batches, receiver) = tokio::sync::mpsc::channel::<Vec<Action>>(BATCHES_IN_FLIGHT);
    // `move`: the sender drops when the walk ends, which ends the copies' stream.
    let walking = async move {
        let mut walk = Walk::new(spec, walk_state);
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(action) = walk.next().await? {
            batch.push(action);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if batches.send(full).await.is_err() {
                    break; // a copy failed; its error is reported
                }
            }
        }
        if !batch.is_empty() {
            let _ = batches.send(batch).await;
        }
        anyhow::Ok(walk.counts)
    };
    let copying = tokio_stream::wrappers::ReceiverStream::new(receiver)
        .map(|batch| run_batch(spec, journal, &state, batch, &meter))
        .buffer_unordered(BATCHES_IN_FLIGHT)
        .try_collect::<Vec<()>>();
    let (done, _) = futures::future::try_join(walking, copying).await?;
    if done.changes() != planned.changes() {
        progress.warn(&format!(
            "the source changed while copying: planned {} changes, made {}; the next `pulumi up` catches up",
            planned.changes(),
            done.changes()
        ));
    }
    progress.status(&meter.line());
    Ok(done)
}

/// Journals a batch's intents, then copies, verifies and journals what landed. A key
/// appears once in a walk, so `state` (the journal as the run began) answers whether an
/// earlier run already backed a key up.
async fn run_batch(
    spec: &SyncSpec,
    journal: &Journal,
    state: &JournalState,
    batch: Vec<Action>,
    meter: &Meter<'_>,
) -> Result<()> {
    // 1. Back up what is about to be overwritten or deleted, unless an earlier run
    //    already did (its backup holds the content from before this resource).
    let needs_backup: Vec<ObjectInfo> = batch
        .iter()
        .filter_map(|a| match a {
            Action::Overwrite { existing, .. } | Action::Delete(existing) => Some(existing),
            _ => None,
        })
        .filter(|o| !state.contains_key(&o.key))
        .cloned()
        .collect();
    let backups: HashMap<String, Previous> = stream::iter(needs_backup)
        .map(|existing| async move {
            let (_, headers) = s3::head(&spec.target, &existing.key)
                .await?
                .unwrap_or_else(|| (existing.clone(), Headers::default()));
            let name = backup_name(&existing.key);
            journal.backup(&name, &spec.target, &existing).await?;
            let previous = Previous {
                etag: existing.etag.clone(),
                size: existing.size,
                backup: name,
                headers,
            };
            anyhow::Ok((existing.key.clone(), previous))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;

    // 2. Record the intents.
    let intents: Vec<Record> = batch
        .iter()
        .map(|action| match action {
            Action::Create(source) | Action::Overwrite { source, .. } => {
                let key = target_key(spec, &source.key);
                Record::Write {
                    previous: backups.get(&key).cloned(),
                    key,
                    source_etag: source.etag.clone(),
                }
            }
            Action::Delete(existing) => Record::Delete {
                key: existing.key.clone(),
                previous: backups
                    .get(&existing.key)
                    .cloned()
                    .unwrap_or_else(|| Previous {
                        etag: existing.etag.clone(),
                        size: existing.size,
                        backup: String::new(),
                        headers: Headers::default(),
                    }),
            },
            Action::Adopt { key, etag } => Record::Written {
                key: key.clone(),
                etag: etag.clone(),
            },
        })
        .collect();
    journal.append(&intents).await?;

    // 3. Write, verify, and record what landed.
    let landed: Vec<Option<Record>> = stream::iter(batch)
        .map(|action| async move {
            match action {
                Action::Create(source) | Action::Overwrite { source, .. } => {
                    let key = target_key(spec, &source.key);
                    let etag = copy_verified(spec, &source, &key).await?;
                    meter.add(1, source.size);
                    anyhow::Ok(Some(Record::Written { key, etag }))
                }
                Action::Delete(existing) => {
                    s3::delete(&spec.target, &existing.key).await?;
                    Ok(None)
                }
                Action::Adopt { .. } => Ok(None),
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let landed: Vec<Record> = landed.into_iter().flatten().collect();
    journal.append(&landed).await?;
    Ok(())
}

fn target_key(spec: &SyncSpec, source_key: &str) -> String {
    format!(
        "{}{}",
        spec.target_prefix,
        &source_key[spec.source_prefix.len()..]
    )
}

/// Copies one object and checks that the target holds the same content: by ETag when
/// it is an MD5 the copy can predict, else by size. Returns the target's ETag.
async fn copy_verified(spec: &SyncSpec, source: &ObjectInfo, key: &str) -> Result<String> {
    let (written, expected) = if spec.server_side {
        let written = s3::server_side_copy(&spec.source, source, &spec.target, key).await?;
        // A single-part object's ETag is its MD5, which a copy keeps.
        let expected = (!source.etag.contains('-')).then(|| source.etag.clone());
        (written, expected)
    } else {
        let (written, expected) = copy_streamed_with_retry(spec, source, key).await?;
        (written, Some(expected))
    };
    let matches = match &expected {
        Some(expected) if *expected == written.etag => true,
        // An MD5 ETag that differs from the predicted one: the content differs.
        Some(_) if is_md5_etag(&written.etag) => false,
        // Not predictable (multipart source, or a service whose ETags are not MD5s, such
        // as SSE-KMS): compare sizes as the service reports them.
        _ => s3::head(&spec.target, key)
            .await?
            .is_some_and(|(info, _)| info.size == source.size),
    };
    if !matches {
        bail!(
            "verification failed for s3://{}/{key}: expected ETag {} and {} bytes, the target reports ETag {}",
            spec.target.name,
            expected.unwrap_or_else(|| "(any)".into()),
            source.size,
            written.etag
        );
    }
    Ok(written.etag)
}

fn is_md5_etag(etag: &str) -> bool {
    let hex = etag.trim_matches('"');
    hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A streamed copy reads a response body that a dropped connection cuts short; the SDK
/// retries requests, not half-read bodies, so the whole object is tried again.
async fn copy_streamed_with_retry(
    spec: &SyncSpec,
    source: &ObjectInfo,
    key: &str,
) -> Result<(s3::Written, String)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match s3::streamed_copy(&spec.source, source, &spec.target, key).await {
            Ok(done) => return Ok(done),
            Err(_) if attempt < 3 => {
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            Err(err) => return Err(err).with_context(|| format!("after {attempt} attempts")),
        }
    }
}

/// Undoes what the journal says this resource did: deletes the objects it created,
/// restores those it overwrote or deleted. A key someone else changed since is left.
/// Goes backwards through the journal's segments, so what was written last (such as a
/// pointer readers follow) is undone before what it points to.
pub async fn rollback(
    target: &Bucket,
    journal: &Journal,
    progress: &dyn Progress,
) -> Result<RollbackReport> {
    let state = load_state(journal).await?;
    let meter = Meter::new(progress, "rolled back", state.len() as u64, 0);
    let mut by_segment: std::collections::BTreeMap<u64, Vec<(String, KeyState)>> =
        Default::default();
    for (key, entry) in state {
        by_segment
            .entry(entry.segment)
            .or_default()
            .push((key, entry));
    }
    let mut report = RollbackReport::default();
    for (_, entries) in by_segment.into_iter().rev() {
        let outcomes: Vec<(String, Outcome)> = stream::iter(entries)
            .map(|(key, entry)| {
                let meter = &meter;
                async move {
                    let outcome = rollback_key(target, journal, &key, &entry).await?;
                    meter.add(1, 0);
                    anyhow::Ok((key, outcome))
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        for (key, outcome) in outcomes {
            match outcome {
                Outcome::Deleted => report.deleted += 1,
                Outcome::Restored => report.restored += 1,
                Outcome::LeftAlone => report.left_alone.push(key),
                Outcome::Untouched => {}
            }
        }
    }
    report.left_alone.sort();
    journal.clear().await?;
    Ok(report)
}

/// Writes one small object (a pointer, a marker) with the same journal records as a
/// copied object, so rollback restores what was there before.
pub async fn put_journalled(
    target: &Bucket,
    key: &str,
    body: Vec<u8>,
    journal: &Journal,
) -> Result<()> {
    let state = load_state(journal).await?;
    let previous = match (state.contains_key(key), s3::head(target, key).await?) {
        (false, Some((existing, headers))) => {
            let name = backup_name(key);
            journal.backup(&name, target, &existing).await?;
            Some(Previous {
                etag: existing.etag,
                size: existing.size,
                backup: name,
                headers,
            })
        }
        _ => None,
    };
    let source_etag = format!("\"{}\"", hex::encode(md5::Md5::digest(&body)));
    journal
        .append(&[Record::Write {
            key: key.to_string(),
            source_etag,
            previous,
        }])
        .await?;
    let etag = s3::put_bytes(target, key, body).await?;
    journal
        .append(&[Record::Written {
            key: key.to_string(),
            etag,
        }])
        .await
}

enum Outcome {
    Deleted,
    Restored,
    LeftAlone,
    Untouched,
}

async fn rollback_key(
    target: &Bucket,
    journal: &Journal,
    key: &str,
    entry: &KeyState,
) -> Result<Outcome> {
    let current = s3::head(target, key).await?.map(|(info, _)| info);
    let current_etag = current.as_ref().map(|c| c.etag.as_str());
    let ours = if entry.deleted {
        current.is_none()
    } else if let Some(written) = &entry.written_etag {
        current_etag == Some(written.as_str())
    } else {
        // Killed between intent and confirmation: the write landed if the target holds
        // the source's content; if it holds the old content, nothing happened.
        if current_etag == entry.previous.as_ref().map(|p| p.etag.as_str()) || current.is_none() {
            return Ok(Outcome::Untouched);
        }
        current_etag == Some(entry.source_etag.as_str())
    };
    if !ours {
        return Ok(Outcome::LeftAlone);
    }
    match &entry.previous {
        Some(previous) if !previous.backup.is_empty() => {
            journal
                .restore(&previous.backup, &previous.headers, target, key)
                .await?;
            Ok(Outcome::Restored)
        }
        Some(_) => Ok(Outcome::LeftAlone),
        None if entry.deleted => Ok(Outcome::Untouched),
        None => {
            s3::delete(target, key).await?;
            Ok(Outcome::Deleted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn previous(etag: &str) -> Previous {
        Previous {
            etag: etag.into(),
            size: 1,
            backup: backup_name("k"),
            headers: Headers::default(),
        }
    }

    #[test]
    fn replay_keeps_the_content_from_before_the_first_write() {
        let mut state = JournalState::new();
        apply(
            &mut state,
            0,
            Record::Write {
                key: "k".into(),
                source_etag: "s1".into(),
                previous: Some(previous("original")),
            },
        );
        apply(
            &mut state,
            0,
            Record::Written {
                key: "k".into(),
                etag: "w1".into(),
            },
        );
        apply(
            &mut state,
            0,
            Record::Write {
                key: "k".into(),
                source_etag: "s2".into(),
                previous: Some(previous("w1")),
            },
        );
        let entry = &state["k"];
        assert_eq!(entry.previous.as_ref().unwrap().etag, "original");
        assert_eq!(entry.source_etag, "s2");
        assert_eq!(
            entry.written_etag, None,
            "the second write is not confirmed"
        );
        apply(
            &mut state,
            0,
            Record::Written {
                key: "k".into(),
                etag: "w2".into(),
            },
        );
        assert_eq!(state["k"].written_etag.as_deref(), Some("w2"));
    }

    #[test]
    fn a_created_then_deleted_key_has_nothing_to_restore() {
        let mut state = JournalState::new();
        apply(
            &mut state,
            0,
            Record::Write {
                key: "k".into(),
                source_etag: "s".into(),
                previous: None,
            },
        );
        apply(
            &mut state,
            0,
            Record::Delete {
                key: "k".into(),
                previous: previous("ours"),
            },
        );
        assert!(state["k"].deleted);
        assert!(state["k"].previous.is_none());
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
            bytes_copied: 2048,
        };
        assert_eq!(
            counts.summary(false),
            "3 objects (2.0 KiB) to copy, of which 1 overwrite an existing object; 0 to delete; 1 skipped; 1 excluded by filters; 5 scanned"
        );
        assert!(counts
            .summary(true)
            .starts_with("3 objects (2.0 KiB) copied"));
    }
}
