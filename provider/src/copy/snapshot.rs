//! ChromaDB snapshots in S3: the latest pointer, the compactor's lock in DynamoDB, a
//! snapshot's completeness (hash file, Chroma database inside), and the number of
//! embeddings its SQLite database holds.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::date_time::{DateTime, Format};

use super::dynamodb::{self, Table};
use super::item::Item;
use super::progress::Progress;
use super::s3::{self, Bucket, Lister};
use super::store::Condition;

/// What a pointer names, and the ETag it had when read: moving it is conditional on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    pub version: String,
    pub etag: String,
}

/// The pointer, or None when it does not exist.
pub async fn read_pointer(bucket: &Bucket, key: &str) -> Result<Option<Pointer>> {
    let Some((info, _)) = s3::head(bucket, key).await? else {
        return Ok(None);
    };
    let body = s3::get_bytes(bucket, key).await?;
    Ok(Some(Pointer {
        version: String::from_utf8_lossy(&body).trim().to_string(),
        etag: info.etag,
    }))
}

/// The entity type of the compactor's lock items (PORTFOLIO_DATA.md).
const LOCK_TYPE: &str = "COMPACTION_LOCK";

/// A lock as the compactor writes it: an item with `owner` and an ISO-8601 `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub owner: String,
    pub expires: String,
}

/// Seconds since the epoch of an ISO-8601 time as Python writes it (`...+00:00`, `...Z`,
/// or no zone, which the compactor means as UTC).
fn parse_iso(text: &str) -> Option<f64> {
    let utc = text
        .strip_suffix("+00:00")
        .unwrap_or(text)
        .trim_end_matches('Z');
    DateTime::from_str(&format!("{utc}Z"), Format::DateTime)
        .ok()
        .map(|t| t.as_secs_f64())
}

fn now() -> f64 {
    DateTime::from(std::time::SystemTime::now()).as_secs_f64()
}

/// The lock on `key` when it is held now (exists and has not expired).
pub async fn held_lock(table: &Table, key: &[(String, String)]) -> Result<Option<Lock>> {
    let key: Item = key
        .iter()
        .map(|(k, v)| (k.clone(), AttributeValue::S(v.clone())))
        .collect();
    let found = dynamodb::batch_get(table, vec![key])
        .await
        .with_context(|| format!("reading the compactor's lock in table {:?}", table.name))?;
    let Some(item) = found.first() else {
        return Ok(None);
    };
    let text = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    let lock = Lock {
        owner: text("owner"),
        expires: text("expires"),
    };
    // An expiry that cannot be read is treated as held: better to wait than to race.
    let held = parse_iso(&lock.expires).is_none_or(|expires| expires > now());
    Ok(held.then_some(lock))
}

/// Waits while the lock is held, up to `wait`; then fails naming its holder.
pub async fn wait_for_lock(
    table: &Table,
    key: &[(String, String)],
    wait: Duration,
    progress: &dyn Progress,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let Some(lock) = held_lock(table, key).await? else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the compactor's lock {} in table {:?} is held by {} until {}; waited {} s. Run again once it is released, or wait longer",
                key.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
                table.name,
                lock.owner,
                lock.expires,
                wait.as_secs()
            );
        }
        progress.status(&format!(
            "waiting for the compactor's lock in {} (held by {} until {})",
            table.name, lock.owner, lock.expires
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// How long a lock this provider takes lasts, and how often it is renewed, as the
/// compactor's own.
const LEASE: Duration = Duration::from_secs(180);
const RENEW_EVERY: Duration = Duration::from_secs(30);

/// An ISO-8601 UTC time as the compactor writes it (`2025-11-20T15:30:00.123456+00:00`):
/// one fixed width, so the lock's condition compares them as strings.
fn iso(at: std::time::SystemTime) -> String {
    let text = DateTime::from(at).fmt(Format::DateTime).unwrap_or_default();
    let text = text.trim_end_matches('Z');
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    format!("{seconds}.{:0<6.6}+00:00", fraction)
}

/// The compactor's lock, taken by this run: renewed in the background until released.
pub struct HeldLock {
    table: Table,
    key: Item,
    owner: String,
    /// Set when a renewal found the lock no longer ours.
    lost: Arc<AtomicBool>,
    renewal: tokio::task::JoinHandle<()>,
}

impl HeldLock {
    /// Whether every renewal so far found the lock still ours.
    pub fn still_held(&self) -> bool {
        !self.lost.load(Ordering::SeqCst)
    }

    /// Releases the lock (a delete conditioned on being its owner).
    pub async fn release(self) -> Result<()> {
        self.renewal.abort();
        let ours = Condition::Equals {
            attribute: "owner".into(),
            value: self.owner.clone(),
        };
        self.table
            .store
            .delete_if(&self.table.name, self.key.clone(), &ours)
            .await?;
        Ok(())
    }
}

impl Drop for HeldLock {
    /// A run that stops without releasing stops renewing: the lock expires on its own.
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// The lock item as the compactor writes it, entity type included: every item in the
/// table carries its `TYPE`, and a DynamoCopy that excludes `COMPACTION_LOCK` (as the
/// seeds do) must not see a held lock as data to mirror or delete.
fn lock_item(key: &Item, owner: &str) -> Item {
    let now = std::time::SystemTime::now();
    let mut item = key.clone();
    for (name, value) in [
        ("TYPE", LOCK_TYPE.to_string()),
        ("owner", owner.to_string()),
        ("expires", iso(now + LEASE)),
        ("heartbeat", iso(now)),
    ] {
        item.insert(name.into(), AttributeValue::S(value));
    }
    item
}

/// Takes the compactor's lock on `key` as the compactor does (a conditional put that
/// succeeds when no lock exists or the last one expired), waiting up to `wait` while
/// another holder has it; then renews it until released.
pub async fn take_lock(
    table: &Table,
    key: &[(String, String)],
    owner: &str,
    wait: Duration,
    progress: &dyn Progress,
) -> Result<HeldLock> {
    let key_item: Item = key
        .iter()
        .map(|(k, v)| (k.clone(), AttributeValue::S(v.clone())))
        .collect();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let free = Condition::AbsentOrBefore {
            attribute: "expires".into(),
            value: iso(std::time::SystemTime::now()),
        };
        let taken = table
            .store
            .put_if(&table.name, lock_item(&key_item, owner), &free)
            .await
            .with_context(|| format!("taking the compactor's lock in table {:?}", table.name))?;
        if taken {
            break;
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            bail!(
                "the compactor's lock in table {:?} could not be taken in {} s: another holder keeps renewing it; nothing was promoted",
                table.name,
                wait.as_secs()
            );
        }
        wait_for_lock(table, key, remaining, progress).await?;
        // Free by its expiry but taken again first: try once more, not in a tight loop.
        tokio::time::sleep(Duration::from_secs(1).min(remaining)).await;
    }
    let lost = Arc::new(AtomicBool::new(false));
    let renewal = tokio::spawn({
        let (table, key_item, owner, lost) = (
            table.clone(),
            key_item.clone(),
            owner.to_string(),
            lost.clone(),
        );
        async move {
            let ours = Condition::Equals {
                attribute: "owner".into(),
                value: owner.clone(),
            };
            let mut renewed_at = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let renewed = table
                    .store
                    .put_if(&table.name, lock_item(&key_item, &owner), &ours)
                    .await;
                // A failed request is tried again at the next renewal, unless the lease
                // could lapse before it; an answer that the lock is someone else's
                // loses it at once.
                match renewed {
                    Ok(true) => renewed_at = tokio::time::Instant::now(),
                    Err(_) if renewed_at.elapsed() + RENEW_EVERY < LEASE => {}
                    Ok(false) | Err(_) => {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }
    });
    Ok(HeldLock {
        table: table.clone(),
        key: key_item,
        owner: owner.to_string(),
        lost,
        renewal,
    })
}

pub const TARBALL: &str = "snapshot.tar.gz";
pub const HASH_FILE: &str = ".snapshot_hash";
pub const DATABASE: &str = "chroma.sqlite3";

/// A snapshot directory that passed its checks.
#[derive(Debug)]
pub struct Snapshot {
    pub embeddings: u64,
}

/// Lists a snapshot, checks it is complete (hash file present and, for a tarball,
/// matching its MD5; the Chroma database present), opens its database read-only and
/// counts the embeddings. Downloads to a temporary directory, not memory.
pub async fn inspect(bucket: &Bucket, prefix: &str) -> Result<Snapshot> {
    let mut files = Vec::new();
    let mut lister = Lister::new(bucket, prefix);
    while let Some(object) = lister.next().await? {
        files.push(object);
    }
    let location = format!("s3://{}/{prefix}", bucket.name);
    let has = |name: &str| files.iter().any(|f| f.key[prefix.len()..] == *name);
    if files.is_empty() {
        bail!("no snapshot at {location}");
    }
    if !has(HASH_FILE) {
        bail!("the snapshot at {location} is incomplete: {HASH_FILE} is missing (the compactor may still be writing it)");
    }
    let hash =
        String::from_utf8_lossy(&s3::get_bytes(bucket, &format!("{prefix}{HASH_FILE}")).await?)
            .trim()
            .to_string();
    let scratch = super::spill::private_scratch().context("creating a scratch directory")?;
    let database = scratch.path().join(DATABASE);
    if has(TARBALL) {
        let tarball = scratch.path().join(TARBALL);
        let md5 = s3::download(bucket, &format!("{prefix}{TARBALL}"), &tarball).await?;
        let expected = hash.strip_prefix("md5:").ok_or_else(|| {
            anyhow!("{location}{HASH_FILE} holds {hash:?}; a tarball snapshot's hash is md5:<hex>")
        })?;
        if expected != md5 {
            bail!("the snapshot at {location} does not match its hash: {HASH_FILE} says md5:{expected}, {TARBALL} is md5:{md5}");
        }
        let (from, to) = (tarball.clone(), database.clone());
        let found = tokio::task::spawn_blocking(move || extract_database(&from, &to)).await??;
        if !found {
            bail!("the snapshot at {location} is incomplete: {TARBALL} holds no {DATABASE}");
        }
    } else {
        if !hash.starts_with("sha256:") {
            bail!(
                "{location}{HASH_FILE} holds {hash:?}; a directory snapshot's hash is sha256:<hex>"
            );
        }
        if !has(DATABASE) {
            bail!("the snapshot at {location} is incomplete: {DATABASE} is missing");
        }
        s3::download(bucket, &format!("{prefix}{DATABASE}"), &database).await?;
        let path = database.clone();
        let segments = tokio::task::spawn_blocking(move || vector_segments(&path))
            .await?
            .with_context(|| format!("the Chroma database of the snapshot at {location}"))?;
        let size_of = |name: &str| {
            files
                .iter()
                .find(|f| f.key[prefix.len()..] == *name)
                .map(|f| f.size)
        };
        for segment in segments {
            for (file, may_be_empty) in HNSW_FILES {
                match size_of(&format!("{segment}/{file}")) {
                    None => bail!("the snapshot at {location} is incomplete: {DATABASE} names the vector segment {segment}, but {segment}/{file} is missing"),
                    Some(0) if !may_be_empty => bail!("the snapshot at {location} is incomplete: {segment}/{file} is empty"),
                    Some(_) => {}
                }
            }
        }
    }
    let path = database.clone();
    let embeddings = tokio::task::spawn_blocking(move || count_embeddings(&path))
        .await?
        .with_context(|| format!("the Chroma database of the snapshot at {location}"))?;
    Ok(Snapshot { embeddings })
}

/// Writes the tarball's `chroma.sqlite3` (at any depth) to `to`; false when absent.
fn extract_database(tarball: &Path, to: &Path) -> Result<bool> {
    let file = std::fs::File::open(tarball)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries().context("reading the snapshot tarball")? {
        let mut entry = entry.context("reading the snapshot tarball")?;
        let is_database = entry.path()?.file_name().is_some_and(|n| n == DATABASE);
        if is_database {
            let mut out = std::fs::File::create(to)?;
            std::io::copy(&mut entry, &mut out)?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Opens the database read-only, checks it is intact, and counts its embeddings.
/// The files of a persisted HNSW segment, and whether each may be empty (an index
/// whose nodes have no links yet has empty link lists).
const HNSW_FILES: [(&str, bool); 4] = [
    ("header.bin", false),
    ("data_level0.bin", false),
    ("length.bin", false),
    ("link_lists.bin", true),
];

/// The vector segments a Chroma database names: each is a folder of HNSW files.
fn vector_segments(path: &Path) -> Result<Vec<String>> {
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .context("opening SQLite")?;
    let mut query = db
        .prepare("SELECT id FROM segments WHERE scope = 'VECTOR' ORDER BY id")
        .context("reading the segments table")?;
    let ids = query
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

pub fn count_embeddings(path: &Path) -> Result<u64> {
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .context("opening SQLite")?;
    let check: String = db
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .context("checking SQLite")?;
    if check != "ok" {
        bail!("SQLite reports the database damaged: {check}");
    }
    let count: i64 = db
        .query_row("SELECT COUNT(*) FROM embeddings", [], |row| row.get(0))
        .context("counting the embeddings table")?;
    Ok(count as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::progress::Silent;
    use crate::copy::store::memory::MemoryItems;

    const LOCK: [(&str, &str); 2] = [("PK", "LOCK#lines#chroma-lines-compaction"), ("SK", "LOCK")];

    fn lock_table() -> (Arc<MemoryItems>, Table, Vec<(String, String)>) {
        let store = MemoryItems::new();
        store.create("locks", &["PK", "SK"]);
        let table = Table {
            store: store.clone(),
            name: "locks".into(),
        };
        let key = LOCK
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (store, table, key)
    }

    fn compactors_lock(expires: std::time::SystemTime) -> Item {
        [
            ("PK", LOCK[0].1.to_string()),
            ("SK", "LOCK".to_string()),
            ("owner", "compactor-7f3a".to_string()),
            ("expires", iso(expires)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), AttributeValue::S(v)))
        .collect()
    }

    fn owner_of(store: &MemoryItems) -> Option<String> {
        let items = store.items("locks");
        let lock = items.values().next()?;
        Some(lock["owner"].as_s().unwrap().clone())
    }

    #[test]
    fn lock_times_have_one_width_and_sort_as_times() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_763_652_600);
        assert_eq!(iso(at), "2025-11-20T15:30:00.000000+00:00");
        let later = iso(at + Duration::from_micros(1_500_123));
        assert_eq!(later, "2025-11-20T15:30:01.500123+00:00");
        assert!(iso(at) < later);
    }

    #[tokio::test(start_paused = true)]
    async fn the_lock_is_taken_renewed_and_released_as_the_compactor_does() {
        let (store, table, key) = lock_table();
        let held = take_lock(&table, &key, "stackmigrate run", Duration::ZERO, &Silent)
            .await
            .unwrap();
        assert_eq!(owner_of(&store).as_deref(), Some("stackmigrate run"));
        let lock = store.items("locks").into_values().next().unwrap();
        assert_eq!(lock["TYPE"].as_s().unwrap(), "COMPACTION_LOCK");
        // The compactor's own conditional put is refused while the lock is held.
        let free = Condition::AbsentOrBefore {
            attribute: "expires".into(),
            value: iso(std::time::SystemTime::now()),
        };
        assert!(!table
            .store
            .put_if(
                "locks",
                compactors_lock(std::time::SystemTime::now()),
                &free
            )
            .await
            .unwrap());
        let first = store.items("locks").into_values().next().unwrap()["heartbeat"].clone();
        tokio::time::sleep(RENEW_EVERY + Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        assert!(held.still_held());
        let renewed = store.items("locks").into_values().next().unwrap()["heartbeat"].clone();
        assert_ne!(first, renewed, "the heartbeat was not renewed");
        held.release().await.unwrap();
        assert!(store.items("locks").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_the_compactor_holds_is_waited_for_and_an_expired_one_taken() {
        let (store, table, key) = lock_table();
        let soon = std::time::SystemTime::now() + Duration::from_secs(3600);
        store.put("locks", compactors_lock(soon));
        let err = take_lock(
            &table,
            &key,
            "stackmigrate run",
            Duration::from_secs(5),
            &Silent,
        )
        .await
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("held by compactor-7f3a"), "{err}");
        assert_eq!(owner_of(&store).as_deref(), Some("compactor-7f3a"));

        let past = std::time::SystemTime::now() - Duration::from_secs(60);
        store.put("locks", compactors_lock(past));
        let held = take_lock(&table, &key, "stackmigrate run", Duration::ZERO, &Silent)
            .await
            .unwrap();
        assert_eq!(owner_of(&store).as_deref(), Some("stackmigrate run"));
        // The compactor takes it over (say, ours lapsed): the next renewal sees it lost,
        // and releasing leaves the compactor's lock alone.
        store.put("locks", compactors_lock(soon));
        tokio::time::sleep(RENEW_EVERY + Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        assert!(!held.still_held());
        held.release().await.unwrap();
        assert_eq!(owner_of(&store).as_deref(), Some("compactor-7f3a"));
    }

    #[test]
    fn iso_times_as_python_writes_them() {
        let utc = parse_iso("2025-11-20T15:30:00.123456+00:00").unwrap();
        assert_eq!(parse_iso("2025-11-20T15:30:00.123456Z").unwrap(), utc);
        assert_eq!(parse_iso("2025-11-20T15:30:00.123456").unwrap(), utc);
        assert!((utc - 1763652600.123456).abs() < 1e-3);
        assert!(parse_iso("tomorrow").is_none());
    }

    #[test]
    fn embeddings_are_counted_in_a_real_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE);
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("CREATE TABLE embeddings (id INTEGER PRIMARY KEY, embedding_id TEXT); INSERT INTO embeddings (embedding_id) VALUES ('a'), ('b'), ('c');").unwrap();
        drop(db);
        assert_eq!(count_embeddings(&path).unwrap(), 3);
        std::fs::write(&path, b"not a database").unwrap();
        assert!(count_embeddings(&path).is_err());
    }
}
