//! The rollback journal: before each write, a record of what is about to be created or
//! overwritten (with a backup of the old content) goes to durable storage, `s3://` on
//! the target connection or `file://`. Destroy and resume replay it. Pulumi state holds
//! only the journal's address, so it stays small whatever the size of the copy.
//!
//! Layout under `<location>/<resource path>/`: `records/<seq>.jsonl` segments, each
//! written whole before the writes it describes, and `backups/<name>` holding old
//! content. A segment is never rewritten, so a crash leaves at worst a complete segment
//! whose writes did not all happen, which replay tolerates.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use serde::{de::DeserializeOwned, Serialize};

use super::connection::SideClients;
use super::s3::{self, Bucket, Headers, ObjectInfo, WriteOptions, Written};

enum Store {
    File(PathBuf),
    S3 { bucket: Bucket, prefix: String },
}

pub struct Journal {
    store: Store,
    uri: String,
    next_segment: AtomicU64,
    /// A note stored just before the first record: what describes a run is kept only
    /// once the run writes.
    first_note: tokio::sync::Mutex<Option<(String, Vec<u8>)>>,
}

/// Parses the `journal` setting: `s3://bucket/prefix` or `file:///absolute/path`.
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
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}/{rest}")
    }
}

impl Journal {
    /// Opens the journal of one resource, writing nothing (previews open it too).
    /// `target` is the target side, whose S3 client only an `s3://` journal uses.
    pub async fn open(
        location: &Location,
        target: &SideClients,
        resource: &str,
    ) -> Result<Journal> {
        let (store, uri) = match location {
            Location::File(root) => {
                let dir = root.join(resource);
                let uri = format!("file://{}", dir.display());
                (Store::File(dir), uri)
            }
            Location::S3 { bucket, prefix } => {
                let bucket = target.bucket(bucket).await?;
                let prefix = join(prefix, resource);
                let uri = format!("s3://{}/{prefix}", bucket.name);
                (Store::S3 { bucket, prefix }, uri)
            }
        };
        let journal = Journal {
            store,
            uri,
            next_segment: AtomicU64::new(0),
            first_note: Default::default(),
        };
        let existing = journal.segments().await?;
        let next = existing.last().map(|(seq, _)| seq + 1).unwrap_or(0);
        journal.next_segment.store(next, Ordering::SeqCst);
        Ok(journal)
    }

    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// Segments in write order, as (sequence, name).
    async fn segments(&self) -> Result<Vec<(u64, String)>> {
        let mut names = Vec::new();
        match &self.store {
            Store::File(dir) => {
                let mut entries = match tokio::fs::read_dir(dir.join("records")).await {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    entries => entries?,
                };
                while let Some(entry) = entries.next_entry().await? {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            Store::S3 { bucket, prefix } => {
                let records = join(prefix, "records/");
                let mut lister = s3::Lister::new(bucket, &records);
                while let Some(object) = lister.next().await? {
                    names.push(object.key[records.len()..].to_string());
                }
            }
        }
        let mut segments: Vec<(u64, String)> = names
            .into_iter()
            .filter_map(|name| Some((name.strip_suffix(".jsonl")?.parse().ok()?, name)))
            .collect();
        segments.sort();
        Ok(segments)
    }

    /// Whether any run has recorded a write here (a write may have happened).
    pub(crate) async fn has_records(&self) -> Result<bool> {
        Ok(!self.segments().await?.is_empty())
    }

    /// Stores the note `name` before the first record this journal appends.
    pub(crate) fn note_before_first_record(self, name: &str, body: Vec<u8>) -> Self {
        *self.first_note.try_lock().expect("not yet shared") = Some((name.to_string(), body));
        self
    }

    /// Durably records `records` as one segment. Returns once they are stored.
    pub(crate) async fn append<T: Serialize>(&self, records: &[T]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
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
        let name = format!("{seq:012}.jsonl");
        match &self.store {
            Store::File(dir) => write_file_durably(&dir.join("records").join(&name), &body).await,
            Store::S3 { bucket, prefix } => {
                s3::put_bytes(bucket, &join(prefix, &format!("records/{name}")), body).await?;
                Ok(())
            }
        }
        .with_context(|| format!("writing the journal at {}", self.uri))
    }

    /// Calls `apply` with each segment's sequence number and records, in the order they
    /// were written, one segment in memory at a time.
    pub(crate) async fn replay<T: DeserializeOwned>(
        &self,
        mut apply: impl FnMut(u64, Vec<T>) -> Result<()>,
    ) -> Result<()> {
        for (seq, name) in self.segments().await? {
            let body = match &self.store {
                Store::File(dir) => tokio::fs::read(dir.join("records").join(&name)).await?,
                Store::S3 { bucket, prefix } => {
                    s3::get_bytes(bucket, &join(prefix, &format!("records/{name}"))).await?
                }
            };
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
        match &self.store {
            Store::S3 { bucket, prefix } => {
                s3::server_side_copy(
                    target,
                    object,
                    bucket,
                    &join(prefix, &format!("backups/{name}")),
                    &WriteOptions::default(),
                )
                .await?;
            }
            Store::File(dir) => {
                let out = s3::open(target, &object.key, None)
                    .await
                    .context("backing it up")?;
                let path = dir.join("backups").join(name);
                tokio::fs::create_dir_all(dir.join("backups")).await?;
                let tmp = path.with_extension("partial");
                let mut file = tokio::fs::File::create(&tmp).await?;
                let mut body = out.body.into_async_read();
                tokio::io::copy(&mut body, &mut file).await?;
                file.sync_all().await?;
                tokio::fs::rename(&tmp, &path).await?;
            }
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
        match &self.store {
            Store::S3 { bucket, prefix } => {
                let backup_key = join(prefix, &format!("backups/{name}"));
                let Some((info, _)) = s3::head(bucket, &backup_key).await? else {
                    bail!("the journal's backup of {key} is missing at {}", self.uri);
                };
                // A restored object takes the target bucket's default storage class and
                // encryption, not necessarily those it had.
                s3::server_side_copy(bucket, &info, target, key, &WriteOptions::default()).await
            }
            Store::File(dir) => {
                let path = dir.join("backups").join(name);
                let mut file = tokio::fs::File::open(&path).await.with_context(|| {
                    format!(
                        "the journal's backup of {key} is missing at {}",
                        path.display()
                    )
                })?;
                let size = file.metadata().await?.len();
                let (written, _) = s3::upload_stream(
                    &mut file,
                    size,
                    headers,
                    target,
                    key,
                    &WriteOptions::default(),
                    None,
                )
                .await?;
                Ok(written)
            }
        }
    }

    /// Removes the whole journal of this resource, once its rollback is done.
    /// Stores a small named document beside the records, replacing any before it.
    pub(crate) async fn write_note(&self, name: &str, body: Vec<u8>) -> Result<()> {
        match &self.store {
            Store::File(dir) => write_file_durably(&dir.join(name), &body).await,
            Store::S3 { bucket, prefix } => {
                s3::put_bytes(bucket, &join(prefix, name), body).await?;
                Ok(())
            }
        }
        .with_context(|| format!("writing {name} in the journal at {}", self.uri))
    }

    /// A document `write_note` stored, or None.
    pub(crate) async fn read_note(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match &self.store {
            Store::File(dir) => match tokio::fs::read(dir.join(name)).await {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                read => Ok(Some(read?)),
            },
            Store::S3 { bucket, prefix } => {
                let key = join(prefix, name);
                match s3::head(bucket, &key).await? {
                    Some(_) => Ok(Some(s3::get_bytes(bucket, &key).await?)),
                    None => Ok(None),
                }
            }
        }
    }

    pub(crate) async fn clear(&self) -> Result<()> {
        match &self.store {
            Store::File(dir) => match tokio::fs::remove_dir_all(dir).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
            Store::S3 { bucket, prefix } => {
                let all = format!("{prefix}/");
                let mut lister = s3::Lister::new(bucket, &all);
                while let Some(object) = lister.next().await? {
                    s3::delete(bucket, &object.key).await?;
                }
                Ok(())
            }
        }
    }
}

async fn write_file_durably(path: &Path, body: &[u8]) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension("partial");
    let mut file = tokio::fs::File::create(&tmp).await?;
    file.write_all(body).await?;
    file.sync_all().await?;
    tokio::fs::rename(&tmp, path).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Rec {
        key: String,
    }

    /// A file journal never builds the side's S3 client.
    fn unused_clients() -> SideClients {
        SideClients::new("target", Default::default())
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
        let mut records = 0;
        journal
            .replay(|_, segment: Vec<Rec>| {
                records += segment.len();
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(records, 0, "a note is not a record");
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
        let mut seen = Vec::new();
        reopened
            .replay(|_, segment: Vec<Rec>| {
                seen.extend(segment.into_iter().map(|r| r.key));
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(seen, vec!["a", "b", "c"]);
        reopened.clear().await.unwrap();
        assert!(!root.path().join("proj/stack/res").exists());
    }

    #[test]
    fn locations_parse_or_say_what_is_expected() {
        assert!(
            matches!(Location::parse("s3://b/p/q").unwrap(), Location::S3 { bucket, prefix } if bucket == "b" && prefix == "p/q")
        );
        assert!(
            matches!(Location::parse("file:///tmp/j").unwrap(), Location::File(p) if p == Path::new("/tmp/j"))
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
