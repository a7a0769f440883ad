//! Maps too large for memory at ten million entries (a target's key hashes, the keys a
//! journal names): each lives in a temporary SQLite file whose page cache is all that
//! stays in memory, so the provider's size does not grow with the table's. The file is
//! removed when the map is dropped. A queue (`SpillQueue`) keeps values in order in a
//! plain file the same way.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};

/// Page cache of one map, in KiB: pages beyond it are written to the file (no fsync)
/// and read back through the kernel's cache.
const CACHE_KIB: i64 = 8 * 1024;

/// How a key or value is stored: keys compare as their bytes.
pub trait Stored: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self>;
}

impl Stored for u128 {
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        Ok(u128::from_be_bytes(
            bytes.try_into().context("a stored hash is 16 bytes")?,
        ))
    }
}

impl Stored for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        Ok(String::from_utf8(bytes.to_vec())?)
    }
}

impl Stored for Vec<u8> {
    fn encode(&self) -> Vec<u8> {
        self.clone()
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        Ok(bytes.to_vec())
    }
}

impl Stored for () {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(_: &[u8]) -> Result<Self> {
        Ok(())
    }
}

/// Stores a serde type as JSON.
macro_rules! stored_as_json {
    ($type:ty) => {
        impl $crate::copy::spill::Stored for $type {
            fn encode(&self) -> Vec<u8> {
                serde_json::to_vec(self).expect("JSON serializes")
            }
            fn decode(bytes: &[u8]) -> anyhow::Result<Self> {
                Ok(serde_json::from_slice(bytes)?)
            }
        }
    };
}
pub(crate) use stored_as_json;

/// A scratch folder readable by its owner only: what goes in it comes from prod.
pub(crate) fn private_scratch() -> std::io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("stackmigrate-");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
    builder.tempdir()
}

pub struct SpillMap<K, V> {
    db: Mutex<Connection>,
    _dir: tempfile::TempDir,
    types: PhantomData<(K, V)>,
}

impl<K: Stored, V: Stored> SpillMap<K, V> {
    pub fn new() -> Result<Self> {
        let dir = private_scratch()
            .context("creating a temporary directory for the provider's key index")?;
        let db = Connection::open(dir.path().join("map.sqlite"))?;
        // A scratch file: losing it on a crash loses nothing, so no rollback journal and
        // no fsync.
        db.execute_batch(&format!(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
             PRAGMA locking_mode = EXCLUSIVE; PRAGMA temp_store = FILE; \
             PRAGMA cache_size = -{CACHE_KIB}; \
             CREATE TABLE map (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;"
        ))?;
        Ok(SpillMap {
            db: Mutex::new(db),
            _dir: dir,
            types: PhantomData,
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().expect("no SQLite call panicked")
    }

    /// Sets every entry, replacing what a key held, in one transaction.
    pub fn insert_all<'a>(&self, entries: impl IntoIterator<Item = (&'a K, &'a V)>) -> Result<()>
    where
        K: 'a,
        V: 'a,
    {
        let mut db = self.db();
        let tx = db.transaction()?;
        {
            let mut insert =
                tx.prepare_cached("INSERT OR REPLACE INTO map (k, v) VALUES (?, ?)")?;
            for (key, value) in entries {
                insert.execute(params![key.encode(), value.encode()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn get(&self, key: &K) -> Result<Option<V>> {
        Ok(self.get_all([key])?.pop().flatten())
    }

    /// The values of `keys`, in their order (None: absent), under one lock.
    pub fn get_all<'a>(&self, keys: impl IntoIterator<Item = &'a K>) -> Result<Vec<Option<V>>>
    where
        K: 'a,
    {
        let db = self.db();
        let mut select = db.prepare_cached("SELECT v FROM map WHERE k = ?")?;
        keys.into_iter()
            .map(|key| {
                select
                    .query_row([key.encode()], |row| row.get::<_, Vec<u8>>(0))
                    .optional()?
                    .map(|bytes| V::decode(&bytes))
                    .transpose()
            })
            .collect()
    }

    pub(crate) fn contains(&self, key: &K) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Folds `updates` into the map in one transaction: `apply` gets a key's current
    /// value (None: absent) and returns the new one.
    pub(crate) fn update_all<U>(
        &self,
        updates: impl IntoIterator<Item = (K, U)>,
        mut apply: impl FnMut(Option<V>, U) -> V,
    ) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        {
            let mut select = tx.prepare_cached("SELECT v FROM map WHERE k = ?")?;
            let mut insert =
                tx.prepare_cached("INSERT OR REPLACE INTO map (k, v) VALUES (?, ?)")?;
            for (key, update) in updates {
                let key = key.encode();
                let current = select
                    .query_row([&key], |row| row.get::<_, Vec<u8>>(0))
                    .optional()?
                    .map(|bytes| V::decode(&bytes))
                    .transpose()?;
                insert.execute(params![key, apply(current, update).encode()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn len(&self) -> Result<u64> {
        let count: i64 = self
            .db()
            .query_row("SELECT count(*) FROM map", [], |row| row.get(0))?;
        Ok(count as u64)
    }

    /// Up to `limit` entries in key order after `after` (None: from the first), or before
    /// it going backwards when `backwards`: a page at a time, whatever the map's size.
    pub(crate) fn page(
        &self,
        after: Option<&K>,
        limit: usize,
        backwards: bool,
    ) -> Result<Vec<(K, V)>> {
        let sql = match (after.is_some(), backwards) {
            (false, false) => "SELECT k, v FROM map ORDER BY k LIMIT ?1",
            (true, false) => "SELECT k, v FROM map WHERE k > ?2 ORDER BY k LIMIT ?1",
            (false, true) => "SELECT k, v FROM map ORDER BY k DESC LIMIT ?1",
            (true, true) => "SELECT k, v FROM map WHERE k < ?2 ORDER BY k DESC LIMIT ?1",
        };
        let db = self.db();
        let mut select = db.prepare_cached(sql)?;
        let limit = limit as i64;
        let rows = match after {
            Some(after) => select.query(params![limit, after.encode()])?,
            None => select.query(params![limit])?,
        };
        rows.mapped(|row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?)))
            .map(|row| {
                let (key, value) = row?;
                Ok((K::decode(&key)?, V::decode(&value)?))
            })
            .collect()
    }
}

/// Values written once, then read back in order as often as needed (the writes a plan
/// decided, which the run replays instead of scanning the source a second time): one
/// private temporary file of length-prefixed encodings, so memory holds one value at a
/// time whatever their number.
pub struct SpillQueue<T> {
    writer: Mutex<BufWriter<File>>,
    path: PathBuf,
    _dir: tempfile::TempDir,
    types: PhantomData<T>,
}

impl<T: Stored> SpillQueue<T> {
    pub fn new() -> Result<Self> {
        let dir = private_scratch()
            .context("creating a temporary directory for the provider's planned writes")?;
        let path = dir.path().join("queue");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path)?;
        Ok(SpillQueue {
            writer: Mutex::new(BufWriter::new(file)),
            path,
            _dir: dir,
            types: PhantomData,
        })
    }

    pub fn push(&self, value: &T) -> Result<()> {
        let bytes = value.encode();
        let mut writer = self.writer.lock().expect("no write panicked");
        writer.write_all(&u32::try_from(bytes.len())?.to_le_bytes())?;
        writer.write_all(&bytes)?;
        Ok(())
    }

    /// Everything pushed so far, in the order it was pushed.
    pub fn read(&self) -> Result<impl Iterator<Item = Result<T>>> {
        self.writer.lock().expect("no write panicked").flush()?;
        let mut reader = BufReader::new(File::open(&self.path)?);
        Ok(std::iter::from_fn(move || {
            let mut length = [0u8; 4];
            match reader.read_exact(&mut length) {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
                Err(e) => return Some(Err(e.into())),
                Ok(()) => {}
            }
            let mut bytes = vec![0u8; u32::from_le_bytes(length) as usize];
            Some(
                reader
                    .read_exact(&mut bytes)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| T::decode(&bytes)),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn scratch_folders_are_their_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let scratch = private_scratch().unwrap();
        let mode = std::fs::metadata(scratch.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_queue_reads_back_what_was_pushed_in_order_as_often_as_asked() {
        let queue: SpillQueue<String> = SpillQueue::new().unwrap();
        let values: Vec<String> = (0..5000).map(|i| "v".repeat(i % 97)).collect();
        for value in &values {
            queue.push(value).unwrap();
        }
        for _ in 0..2 {
            let read: Vec<String> = queue.read().unwrap().collect::<Result<_>>().unwrap();
            assert_eq!(read, values);
        }
        queue.push(&"after".to_string()).unwrap();
        assert_eq!(queue.read().unwrap().count(), 5001);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&queue.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "planned writes hold prod's items");
        }
    }

    #[test]
    fn keeps_the_last_value_of_a_key_and_pages_in_key_order_both_ways() {
        let map: SpillMap<u128, u128> = SpillMap::new().unwrap();
        let entries: Vec<(u128, u128)> = (0..1000u128).map(|i| (i * 7919 % 1000, i)).collect();
        map.insert_all(entries.iter().map(|(k, v)| (k, v))).unwrap();
        map.insert_all([(&5, &42)]).unwrap();
        assert_eq!(map.len().unwrap(), 1000);
        assert_eq!(map.get(&5).unwrap(), Some(42));
        assert_eq!(map.get(&1000).unwrap(), None);
        assert_eq!(
            map.get_all([&1, &2000, &5]).unwrap(),
            vec![
                Some(entries.iter().find(|(k, _)| *k == 1).unwrap().1),
                None,
                Some(42)
            ]
        );

        let mut forwards = Vec::new();
        let mut after = None;
        while let Some((last, _)) = {
            let page = map.page(after.as_ref(), 64, false).unwrap();
            forwards.extend(page.iter().map(|(k, _)| *k));
            page.last().copied()
        } {
            after = Some(last);
        }
        assert_eq!(forwards, (0..1000).collect::<Vec<u128>>());
        let backwards: Vec<u128> = map
            .page(Some(&10), 100, true)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(backwards, (0..10).rev().collect::<Vec<u128>>());
    }

    #[test]
    fn updates_see_the_current_value() {
        let map: SpillMap<String, u128> = SpillMap::new().unwrap();
        let updates = [("a", 1), ("b", 2), ("a", 3)].map(|(k, n)| (k.to_string(), n));
        map.update_all(updates, |current, n| current.unwrap_or(0) * 10 + n)
            .unwrap();
        assert_eq!(map.get(&"a".to_string()).unwrap(), Some(13));
        assert_eq!(map.get(&"b".to_string()).unwrap(), Some(2));
        assert!(!map.contains(&"c".to_string()).unwrap());
    }
}
