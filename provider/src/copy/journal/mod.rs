//! The rollback journal: before each write, a record of what is about to be created or
//! overwritten (with a backup of the old content) goes to durable storage, `s3://` on
//! the target connection or `file://`. Destroy and resume replay it. Pulumi state holds
//! only the journal's address, so it stays small whatever the size of the copy.
//!
//! Layout under `<location>/<resource path>/`: `records/<seq>.jsonl` segments, each
//! written whole before the writes it describes, and `backups/<name>` holding old
//! content. A segment is never rewritten, so a crash leaves at worst a complete segment
//! whose writes did not all happen, which replay tolerates.
//!
//! Cleanup retires a journal before deleting it: `retired.json` is stored first, and a
//! journal holding it reads as empty (its rollback is done), so a kill at any point of
//! the cleanup leaves either the whole journal or one that says it was rolled back.
//! Files are private to their owner (folders 0700, files 0600): they hold prod's data.
//! How a local folder or a bucket prefix stores them is behind `folder::JournalFolder`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};

use super::s3::{Bucket, Buckets, Headers, ObjectInfo, Written};

mod folder;

use folder::JournalFolder;

pub struct Journal {
    folder: Box<dyn JournalFolder>,
    uri: String,
    next_segment: AtomicU64,
    /// When the journal is retired, the segments its finished rollback retired: it holds
    /// no records, and what a killed cleanup left is removed before anything is written.
    retired: std::sync::Mutex<Option<u64>>,
    /// Set once the journal may be written (a retired one's leftovers removed).
    writable: tokio::sync::OnceCell<()>,
    /// A note stored just before the first record: what describes a run is kept only
    /// once the run writes.
    first_note: tokio::sync::Mutex<Option<(String, Vec<u8>)>>,
    /// The default journal's bucket, when it does not exist yet: made before the first
    /// write, never by a preview. Until then the journal reads as empty.
    provision: Option<Provision>,
    /// Stored before the first write: nothing is written before validation passes.
    before_first_write: std::sync::Mutex<Vec<BeforeFirstWrite>>,
}

/// A note to store in another folder before a journal's first write (a claim on the
/// target, a run in flight: where other migrations and destroys look), and the note, if
/// any, that remembers it here.
pub(crate) struct BeforeFirstWrite {
    pub elsewhere: Box<Journal>,
    pub name: String,
    pub body: Vec<u8>,
    pub here: Option<(String, Vec<u8>)>,
}

/// How to make the default journal's bucket.
#[derive(Debug, Clone)]
pub struct Provision {
    /// Where to create it (None: the endpoint's default).
    pub region: Option<String>,
    /// AWS itself: every setting (public access block, encryption, versioning, expiry)
    /// must take. Another S3 server may lack some.
    pub strict: bool,
    /// What to do instead when the bucket cannot be made, for the error.
    pub advice: String,
}

/// What a journal holds of the segments a resource's state recorded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Accounted {
    /// Every one of them.
    Whole,
    /// None, because a rollback finished and retired them.
    RolledBack,
    /// Only `found` of them: the journal is not the one that was written.
    Short { found: u64 },
}

/// The note that retires a journal, stored before cleanup deletes anything.
const RETIRED_NOTE: &str = "retired.json";

#[derive(Serialize, serde::Deserialize)]
struct Retired {
    segments: u64,
}

/// The journal of another live migration into the same target, and the state it holds.
pub(crate) struct Sharer<'a, S> {
    pub journal: &'a Journal,
    pub state: S,
}

impl<'a, S> Sharer<'a, S> {
    /// Each of `journals` with its state, as `load` reads it.
    pub(crate) async fn load_all<F, Loading>(journals: &'a [Journal], load: F) -> Result<Vec<Self>>
    where
        F: Fn(&'a Journal) -> Loading,
        Loading: std::future::Future<Output = Result<S>>,
    {
        let mut shared = Vec::with_capacity(journals.len());
        for journal in journals {
            shared.push(Sharer {
                journal,
                state: load(journal).await?,
            });
        }
        Ok(shared)
    }
}

/// Parses the `journal` setting: `s3://bucket/prefix` or `file:///absolute/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Location {
    pub fn parse(text: &str) -> Result<Location> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("journal {text:?} names no bucket; expected s3://bucket/prefix");
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(path) = text.strip_prefix("file://") {
            if !path.starts_with('/') {
                bail!("journal {text:?} is not an absolute path; expected file:///absolute/path");
            }
            return Ok(Location::File(PathBuf::from(path)));
        }
        bail!("journal {text:?} is neither s3://bucket/prefix nor file:///absolute/path")
    }

    /// The location `path` (relative, `/`-separated) below this one.
    pub fn join(&self, path: &str) -> Location {
        match self {
            Location::File(root) => Location::File(root.join(path)),
            Location::S3 { bucket, prefix } => Location::S3 {
                bucket: bucket.clone(),
                prefix: join(prefix, path),
            },
        }
    }

    /// The URI `parse` reads back into this location.
    pub fn uri(&self) -> String {
        match self {
            Location::File(dir) => format!("file://{}", dir.display()),
            Location::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}/{rest}")
    }
}

impl Journal {
    /// Opens the journal of one resource, `resource` being its path below `location`,
    /// writing nothing (previews open it too). `target` gives the target side's buckets,
    /// which only an `s3://` journal uses.
    pub async fn open(
        location: &Location,
        target: &dyn Buckets,
        resource: &str,
    ) -> Result<Journal> {
        Journal::open_at(&location.join(resource), target).await
    }

    /// Opens the journal whose folder is exactly `location` (as a resource's state names
    /// it), writing nothing.
    pub async fn open_at(location: &Location, target: &dyn Buckets) -> Result<Journal> {
        Journal::open_with(location, target, None).await
    }

    /// The journal in folder `dir`, for tests: no bucket is ever reached.
    #[cfg(test)]
    pub(crate) async fn in_folder(dir: PathBuf) -> Journal {
        let unused = crate::connection::SideClients::new("target", Default::default());
        Journal::open_at(&Location::File(dir), &unused)
            .await
            .expect("journal")
    }

    /// Opens the journal of one resource in the default journal bucket, which is made
    /// before the first write when it does not exist yet.
    pub async fn open_provisioned(
        location: &Location,
        target: &dyn Buckets,
        resource: &str,
        provision: Provision,
    ) -> Result<Journal> {
        Journal::open_with(&location.join(resource), target, Some(provision)).await
    }

    /// Opens the folder `location`, made (when `provision` says how) before its first
    /// write.
    pub(crate) async fn open_with(
        location: &Location,
        target: &dyn Buckets,
        provision: Option<Provision>,
    ) -> Result<Journal> {
        let folder = folder::open(location, target).await?;
        let missing_bucket = provision.is_some() && folder.bucket_to_make().await?;
        let journal = Journal {
            folder,
            uri: location.uri(),
            next_segment: AtomicU64::new(0),
            retired: Default::default(),
            writable: Default::default(),
            first_note: Default::default(),
            provision: provision.filter(|_| missing_bucket),
            before_first_write: Default::default(),
        };
        if missing_bucket {
            return Ok(journal);
        }
        if let Some(body) = journal.read_note(RETIRED_NOTE).await? {
            let retired: Retired = serde_json::from_slice(&body).with_context(|| {
                format!(
                    "{RETIRED_NOTE} in the journal at {} is corrupt",
                    journal.uri
                )
            })?;
            *journal.retired.lock().expect("not poisoned") = Some(retired.segments);
            return Ok(journal);
        }
        let existing = journal.segments().await?;
        let next = existing.last().map(|(seq, _)| seq + 1).unwrap_or(0);
        journal.next_segment.store(next, Ordering::SeqCst);
        Ok(journal)
    }

    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// Segments in write order, as (sequence, name); none in a retired journal.
    async fn segments(&self) -> Result<Vec<(u64, String)>> {
        if self.retired().is_some() || self.bucket_missing() {
            return Ok(Vec::new());
        }
        let mut segments: Vec<(u64, String)> = self
            .folder
            .list("records")
            .await?
            .into_iter()
            .filter_map(|name| {
                let seq = name
                    .strip_suffix(".jsonl")?
                    .split('-')
                    .next()?
                    .parse()
                    .ok()?;
                Some((seq, name))
            })
            .collect();
        // Another resource's segment (a rollback's hand-over) after this one's own of
        // the same number.
        segments.sort_by(|(a, a_name), (b, b_name)| {
            (a, a_name.contains('-'), a_name).cmp(&(b, b_name.contains('-'), b_name))
        });
        Ok(segments)
    }

    /// Whether any run has recorded a write here (a write may have happened).
    pub(crate) async fn has_records(&self) -> Result<bool> {
        Ok(!self.segments().await?.is_empty())
    }

    /// How many segments the journal holds now: what a resource's state records, so that
    /// a later rollback can tell the journal it finds from the one that was written.
    pub(crate) async fn segment_count(&self) -> Result<u64> {
        Ok(self.segments().await?.len() as u64)
    }

    /// Whether this journal accounts for the `expected` segments a state recorded: it
    /// holds at least as many, or a rollback retired at least as many. Counted, not
    /// numbered: a segment whose write failed leaves a gap in the numbers.
    pub(crate) async fn accounts_for(&self, expected: u64) -> Result<Accounted> {
        if let Some(retired) = self.retired() {
            return Ok(if retired >= expected {
                Accounted::RolledBack
            } else {
                Accounted::Short { found: 0 }
            });
        }
        let found = self.segment_count().await?;
        Ok(if found >= expected {
            Accounted::Whole
        } else {
            Accounted::Short { found }
        })
    }

    /// The bucket is still to be made (before the first write): nothing to read yet.
    fn bucket_missing(&self) -> bool {
        self.provision.is_some() && !self.writable.initialized()
    }

    fn retired(&self) -> Option<u64> {
        *self.retired.lock().expect("not poisoned")
    }

    /// Before the first write: the default journal's bucket is made if it is missing; a
    /// retired journal's leftovers (a cleanup killed midway) and then its retirement note
    /// are removed, so a new run starts from an empty one.
    async fn make_writable(&self) -> Result<()> {
        self.writable
            .get_or_try_init(|| async {
                if let Some(provision) = &self.provision {
                    self.folder.make_bucket(provision).await?;
                }
                if self.retired().is_some() {
                    self.folder.remove_all(RETIRED_NOTE).await?;
                    *self.retired.lock().expect("not poisoned") = None;
                }
                let notes =
                    std::mem::take(&mut *self.before_first_write.lock().expect("not poisoned"));
                for before in notes {
                    // Boxed: that journal's first write may itself be made ready first.
                    Box::pin(before.elsewhere.write_note(&before.name, before.body)).await?;
                    if let Some((name, body)) = before.here {
                        self.store_note(&name, body).await?;
                    }
                }
                anyhow::Ok(())
            })
            .await?;
        Ok(())
    }

    /// Has `before` done just before this journal's first write.
    pub(crate) fn before_first_write(self, before: BeforeFirstWrite) -> Self {
        self.before_first_write
            .lock()
            .expect("not poisoned")
            .push(before);
        self
    }

    /// Removes this folder when nothing is left in it (a file journal's claim folder).
    pub(crate) async fn remove_if_empty(&self) {
        self.folder.remove_if_empty().await;
    }

    /// Stores the note `name` before the first record this journal appends.
    pub(crate) fn note_before_first_record(self, name: &str, body: Vec<u8>) -> Self {
        *self.first_note.try_lock().expect("not yet shared") = Some((name.to_string(), body));
        self
    }

    /// Durably records `records` as one segment. Returns once they are stored.
    pub(crate) async fn append<T: Serialize>(&self, records: &[T]) -> Result<()> {
        self.append_segment(records, None).await
    }

    /// `append` by the rollback of another resource (`from`), which may run while this
    /// journal's own resource appends too: its segment's name carries `from`'s mark
    /// after the sequence number, so two segments numbered alike never replace each
    /// other.
    pub(crate) async fn append_from<T: Serialize>(
        &self,
        records: &[T],
        from: &Journal,
    ) -> Result<()> {
        let mark = hex::encode(&Sha256::digest(from.uri.as_bytes())[..8]);
        self.append_segment(records, Some(&mark)).await
    }

    async fn append_segment<T: Serialize>(&self, records: &[T], mark: Option<&str>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.make_writable().await?;
        {
            let mut first_note = self.first_note.lock().await;
            if let Some((name, body)) = first_note.take() {
                self.write_note(&name, body).await?;
            }
        }
        let mut body = Vec::new();
        for record in records {
            serde_json::to_writer(&mut body, record)?;
            body.push(b'\n');
        }
        let seq = self.next_segment.fetch_add(1, Ordering::SeqCst);
        let name = match mark {
            None => format!("{seq:012}.jsonl"),
            Some(mark) => format!("{seq:012}-{mark}.jsonl"),
        };
        self.folder
            .write(&format!("records/{name}"), body)
            .await
            .with_context(|| format!("writing the journal at {}", self.uri))
    }

    /// Calls `apply` with each segment's sequence number and records, in the order they
    /// were written, one segment in memory at a time.
    pub(crate) async fn replay<T: DeserializeOwned>(
        &self,
        mut apply: impl FnMut(u64, Vec<T>) -> Result<()>,
    ) -> Result<()> {
        for (seq, name) in self.segments().await? {
            let body = self.folder.read(&format!("records/{name}")).await?;
            let records = body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|line| {
                    serde_json::from_slice(line).with_context(|| {
                        format!("journal segment {name} at {} is corrupt", self.uri)
                    })
                })
                .collect::<Result<Vec<T>>>()?;
            apply(seq, records)?;
        }
        Ok(())
    }

    /// Saves the current content of `object` in `target` under `name`, before it is
    /// overwritten or deleted.
    pub(crate) async fn backup(
        &self,
        name: &str,
        target: &Bucket,
        object: &ObjectInfo,
    ) -> Result<()> {
        self.make_writable().await?;
        self.folder.save_backup(name, target, object).await
    }

    /// Copies the backup `name` into `other` (a journal beside this one) as `as_name`.
    pub(crate) async fn copy_backup(
        &self,
        name: &str,
        other: &Journal,
        as_name: &str,
    ) -> Result<()> {
        if !self
            .folder
            .copy_backup(name, &*other.folder, as_name)
            .await?
        {
            bail!(
                "the journals at {} and {} are in different kinds of store: a backup cannot go from one to the other",
                self.uri,
                other.uri
            );
        }
        Ok(())
    }

    /// Writes the backup `name` back to `key` in `target`, with the headers it had.
    pub(crate) async fn restore(
        &self,
        name: &str,
        headers: &Headers,
        target: &Bucket,
        key: &str,
    ) -> Result<Written> {
        self.folder.restore(name, headers, target, key).await
    }

    /// Stores a small named document beside the records, replacing any before it.
    pub(crate) async fn write_note(&self, name: &str, body: Vec<u8>) -> Result<()> {
        self.make_writable().await?;
        self.store_note(name, body).await
    }

    async fn store_note(&self, name: &str, body: Vec<u8>) -> Result<()> {
        self.folder
            .write(name, body)
            .await
            .with_context(|| format!("writing {name} in the journal at {}", self.uri))
    }

    /// The names of the documents `write_note` stored, in no particular order.
    pub(crate) async fn notes(&self) -> Result<Vec<String>> {
        if self.bucket_missing() {
            return Ok(Vec::new());
        }
        let mut names = self.folder.list("").await?;
        names.retain(|name| !name.ends_with(".partial"));
        Ok(names)
    }

    /// Removes a document `write_note` stored; none there is fine.
    pub(crate) async fn delete_note(&self, name: &str) -> Result<()> {
        self.folder.delete(name).await
    }

    /// A document `write_note` stored, or None.
    pub(crate) async fn read_note(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.folder.read_if_present(name).await
    }

    /// Removes the whole journal of this resource once its rollback is done. It is
    /// retired first, so a kill at any point leaves either the whole journal or one that
    /// reads as rolled back (whose leftovers the next clear or run removes).
    pub(crate) async fn clear(&self) -> Result<()> {
        if self.retired().is_none() {
            let segments = self.segment_count().await?;
            self.store_note(RETIRED_NOTE, serde_json::to_vec(&Retired { segments })?)
                .await?;
            *self.retired.lock().expect("not poisoned") = Some(segments);
        }
        self.folder.remove_all(RETIRED_NOTE).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::connection::SideClients;
    use crate::copy::s3;
    use crate::copy::store::memory_objects::MemoryObjects;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Rec {
        key: String,
    }

    /// A file journal never builds the side's S3 client.
    fn unused_clients() -> SideClients {
        SideClients::new("target", Default::default())
    }

    /// A journal's folder: `j` in a fresh temporary directory.
    struct Folder {
        root: tempfile::TempDir,
    }

    impl Folder {
        fn new() -> Folder {
            Folder {
                root: tempfile::tempdir().unwrap(),
            }
        }

        /// The journal as a run opens it (again).
        async fn open(&self) -> Journal {
            Journal::in_folder(self.root.path().join("j")).await
        }
    }

    #[tokio::test]
    async fn notes_are_replaced_read_back_and_cleared_with_the_journal() {
        let root = tempfile::tempdir().unwrap();
        let location = Location::parse(&format!("file://{}", root.path().display())).unwrap();
        let journal = Journal::open(&location, &unused_clients(), "res")
            .await
            .unwrap();
        assert_eq!(journal.read_note("n.json").await.unwrap(), None);
        journal.write_note("n.json", b"1".to_vec()).await.unwrap();
        journal.write_note("n.json", b"2".to_vec()).await.unwrap();
        assert_eq!(
            journal.read_note("n.json").await.unwrap(),
            Some(b"2".to_vec())
        );
        assert!(records(&journal).await.is_empty(), "a note is not a record");
        journal.clear().await.unwrap();
        assert_eq!(journal.read_note("n.json").await.unwrap(), None);
    }

    #[tokio::test]
    async fn file_journal_replays_in_order_across_reopen_and_clears() {
        let root = tempfile::tempdir().unwrap();
        let location = Location::parse(&format!("file://{}", root.path().display())).unwrap();
        let clients = unused_clients();
        let journal = Journal::open(&location, &clients, "proj/stack/res")
            .await
            .unwrap();
        journal
            .append(&[Rec { key: "a".into() }, Rec { key: "b".into() }])
            .await
            .unwrap();
        let reopened = Journal::open(&location, &clients, "proj/stack/res")
            .await
            .unwrap();
        reopened.append(&[Rec { key: "c".into() }]).await.unwrap();
        assert_eq!(records(&reopened).await, ["a", "b", "c"]);
        reopened.clear().await.unwrap();
        assert!(!root.path().join("proj/stack/res").exists());
    }

    /// The buckets of an in-memory store.
    struct InMemory(Arc<MemoryObjects>);

    #[async_trait::async_trait]
    impl Buckets for InMemory {
        async fn bucket(&self, name: &str) -> Result<Bucket> {
            Ok(Bucket {
                store: self.0.clone(),
                name: name.to_string(),
                expected_owner: None,
            })
        }
    }

    #[tokio::test]
    async fn bucket_journal_replays_keeps_notes_and_backups_and_clears_to_nothing() {
        let store = MemoryObjects::new();
        store.create("journals");
        store.create("prod");
        store.put_object("prod", "k", b"old", Headers::default());
        let buckets = InMemory(store.clone());
        let prod = buckets.bucket("prod").await.unwrap();
        let location = Location::parse("s3://journals/root").unwrap();
        let opened = || Journal::open(&location, &buckets, "p/s/res");
        let journal = opened().await.unwrap();
        for key in ["a", "b"] {
            journal.append(&rec(key)).await.unwrap();
        }
        journal.write_note("n.json", b"1".to_vec()).await.unwrap();
        let (old, _) = s3::head(&prod, "k").await.unwrap().unwrap();
        journal.backup("k", &prod, &old).await.unwrap();
        store.put_object("prod", "k", b"new", Headers::default());

        let reopened = opened().await.unwrap();
        reopened.append(&rec("c")).await.unwrap();
        assert_eq!(records(&reopened).await, ["a", "b", "c"]);
        assert_eq!(reopened.notes().await.unwrap(), ["n.json"]);
        assert_eq!(
            reopened.read_note("n.json").await.unwrap(),
            Some(b"1".to_vec())
        );
        reopened
            .restore("k", &Headers::default(), &prod, "k")
            .await
            .unwrap();
        assert_eq!(s3::get_bytes(&prod, "k").await.unwrap(), b"old");

        reopened.clear().await.unwrap();
        assert!(store.objects("journals").is_empty());
        assert!(records(&reopened).await.is_empty());
    }

    async fn records(journal: &Journal) -> Vec<String> {
        let mut seen = Vec::new();
        journal
            .replay(|_, segment: Vec<Rec>| {
                seen.extend(segment.into_iter().map(|r| r.key));
                Ok(())
            })
            .await
            .unwrap();
        seen
    }

    fn rec(key: &str) -> [Rec; 1] {
        [Rec { key: key.into() }]
    }

    #[tokio::test]
    async fn another_resources_segment_numbered_like_this_ones_replaces_nothing() {
        let folder = Folder::new();
        let (own, by_other) = (folder.open().await, folder.open().await);
        let other = Journal::in_folder(folder.root.path().join("other")).await;
        // Both handles were opened at segment 0: the numbers meet, the names do not.
        own.append(&rec("own")).await.unwrap();
        by_other.append_from(&rec("handed"), &other).await.unwrap();
        let mut keys = Vec::new();
        folder
            .open()
            .await
            .replay(|_, records: Vec<Rec>| {
                keys.extend(records.into_iter().map(|r| r.key));
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(keys, ["own", "handed"]);
        assert_eq!(folder.open().await.segment_count().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_journal_accounts_for_the_segments_a_state_recorded() {
        let folder = Folder::new();
        let journal = folder.open().await;
        assert_eq!(journal.accounts_for(0).await.unwrap(), Accounted::Whole);
        journal.append(&rec("a")).await.unwrap();
        journal.append(&rec("b")).await.unwrap();
        assert_eq!(journal.segment_count().await.unwrap(), 2);
        assert_eq!(journal.accounts_for(2).await.unwrap(), Accounted::Whole);
        assert_eq!(
            journal.accounts_for(3).await.unwrap(),
            Accounted::Short { found: 2 }
        );
        // Another machine's empty folder in its place, or a segment lost.
        let elsewhere = Journal::in_folder(folder.root.path().join("other")).await;
        assert_eq!(
            elsewhere.accounts_for(2).await.unwrap(),
            Accounted::Short { found: 0 }
        );
        std::fs::remove_file(folder.root.path().join("j/records/000000000000.jsonl")).unwrap();
        let reopened = folder.open().await;
        assert_eq!(
            reopened.accounts_for(2).await.unwrap(),
            Accounted::Short { found: 1 }
        );
        reopened.clear().await.unwrap();
        assert!(!folder.root.path().join("j").exists());
    }

    #[tokio::test]
    async fn a_gap_left_by_a_killed_run_still_accounts_for_what_was_written() {
        // Concurrent appends take numbers in order but may land out of order: a kill
        // can leave segment 1 unwritten while 2 is there.
        let folder = Folder::new();
        let journal = folder.open().await;
        for key in ["a", "b", "c"] {
            journal.append(&rec(key)).await.unwrap();
        }
        std::fs::remove_file(folder.root.path().join("j/records/000000000001.jsonl")).unwrap();
        let after_kill = folder.open().await;
        let recorded = after_kill.segment_count().await.unwrap();
        assert_eq!(recorded, 2, "what the next run's state records");
        after_kill.append(&rec("d")).await.unwrap();
        let later = folder.open().await;
        assert_eq!(
            later.accounts_for(recorded).await.unwrap(),
            Accounted::Whole
        );
        assert_eq!(later.accounts_for(3).await.unwrap(), Accounted::Whole);
        assert_eq!(
            later.accounts_for(4).await.unwrap(),
            Accounted::Short { found: 3 }
        );
    }

    #[tokio::test]
    async fn a_cleanup_killed_midway_leaves_a_journal_that_reads_as_rolled_back() {
        let folder = Folder::new();
        let journal = folder.open().await;
        journal
            .write_note("inputs.json", b"{}".to_vec())
            .await
            .unwrap();
        for key in ["a", "b", "c"] {
            journal.append(&rec(key)).await.unwrap();
        }
        // The kill: retired, then only part of the journal deleted.
        journal
            .store_note(
                RETIRED_NOTE,
                serde_json::to_vec(&Retired { segments: 3 }).unwrap(),
            )
            .await
            .unwrap();
        std::fs::remove_file(folder.root.path().join("j/records/000000000001.jsonl")).unwrap();

        let after_kill = folder.open().await;
        assert!(
            records(&after_kill).await.is_empty(),
            "nothing left to undo"
        );
        assert!(!after_kill.has_records().await.unwrap());
        assert_eq!(
            after_kill.accounts_for(3).await.unwrap(),
            Accounted::RolledBack
        );
        assert_eq!(
            after_kill.accounts_for(4).await.unwrap(),
            Accounted::Short { found: 0 }
        );

        // A new run starts from an empty journal, the leftovers gone.
        after_kill.append(&rec("new")).await.unwrap();
        let reopened = folder.open().await;
        assert_eq!(records(&reopened).await, ["new"]);
        assert_eq!(reopened.read_note("inputs.json").await.unwrap(), None);
        assert_eq!(reopened.read_note(RETIRED_NOTE).await.unwrap(), None);

        // A finished cleanup leaves nothing, and a second one is harmless.
        reopened.clear().await.unwrap();
        assert!(!folder.root.path().join("j").exists());
        reopened.clear().await.unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn journal_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let location = Location::File(root.path().join("journal"));
        let journal = Journal::open(&location, &unused_clients(), "p/s/T/r")
            .await
            .unwrap();
        journal.append(&rec("a")).await.unwrap();
        journal
            .write_note("inputs.json", b"{}".to_vec())
            .await
            .unwrap();
        let mut checked = 0;
        for entry in walk(&root.path().join("journal")) {
            let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
            let expected = if entry.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, expected, "{}", entry.display());
            checked += 1;
        }
        assert_eq!(
            checked, 8,
            "journal, p, s, T, r, records, a segment, a note"
        );
    }

    fn walk(path: &Path) -> Vec<PathBuf> {
        let mut all = vec![path.to_path_buf()];
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                all.extend(walk(&entry.unwrap().path()));
            }
        }
        all
    }

    #[test]
    fn locations_parse_or_say_what_is_expected() {
        assert!(
            matches!(Location::parse("s3://b/p/q").unwrap(), Location::S3 { bucket, prefix } if bucket == "b" && prefix == "p/q")
        );
        assert!(
            matches!(Location::parse("file:///tmp/j").unwrap(), Location::File(p) if p == Path::new("/tmp/j"))
        );
        for uri in ["s3://b/p/q", "file:///tmp/j"] {
            assert_eq!(Location::parse(uri).unwrap().uri(), uri);
        }
        assert_eq!(
            Location::parse("s3://b/p").unwrap().join("x/y").uri(),
            "s3://b/p/x/y"
        );
        let err = Location::parse("ftp://x").err().unwrap().to_string();
        assert!(err.contains("s3://bucket/prefix"), "{err}");
        let err = Location::parse("file://relative")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("absolute"), "{err}");
    }
}
