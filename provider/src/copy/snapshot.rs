//! ChromaDB snapshots in S3: the latest pointer, the compactor's lock in DynamoDB, a
//! snapshot's completeness (hash file, Chroma database inside), and the number of
//! embeddings its SQLite database holds.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::date_time::{DateTime, Format};

use super::dynamodb::{self, Table};
use super::item::Item;
use super::progress::Progress;
use super::s3::{self, Bucket, Lister};

/// The pointer's version, or None when the pointer does not exist.
pub async fn read_pointer(bucket: &Bucket, key: &str) -> Result<Option<String>> {
    if s3::head(bucket, key).await?.is_none() {
        return Ok(None);
    }
    let body = s3::get_bytes(bucket, key).await?;
    Ok(Some(String::from_utf8_lossy(&body).trim().to_string()))
}

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
                "the compactor's lock {} in table {:?} is held by {} until {}; waited {} s. Run again once it is released, or raise lockWaitSeconds",
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
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
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
