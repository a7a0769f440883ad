//! Where a journal's files are kept: a local folder or a prefix of a bucket. `Journal`
//! decides what is stored and in which order; a `JournalFolder` only knows how its kind
//! of storage reads, writes and removes. Paths are relative and `/`-separated: notes at
//! the top, `records/<seq>.jsonl`, `backups/<name>`.

use std::any::Any;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{join, Location, Provision};
use crate::copy::s3::{self, Bucket, Buckets, Headers, ObjectInfo, WriteOptions, Written};
use crate::copy::store::NewObject;

/// The storage of one journal's folder.
#[async_trait::async_trait]
pub(super) trait JournalFolder: Any + Send + Sync {
    /// Whether the folder's bucket does not exist yet (a local folder has none to make).
    async fn bucket_to_make(&self) -> Result<bool>;

    /// Makes the folder's bucket, once `bucket_to_make` said so, as `provision` says.
    async fn make_bucket(&self, provision: &Provision) -> Result<()>;

    /// The names of the files directly in `sub` ("" for the folder itself), in no
    /// particular order; what sits in a folder below is passed over.
    async fn list(&self, sub: &str) -> Result<Vec<String>>;

    /// The file at `path`, which is there (just listed), read in one request.
    async fn read(&self, path: &str) -> Result<Vec<u8>>;

    /// The file at `path`, or None when there is none.
    async fn read_if_present(&self, path: &str) -> Result<Option<Vec<u8>>>;

    /// Stores `body` whole at `path`, replacing any file there: a reader finds the old
    /// file or the new one, never part of one.
    async fn write(&self, path: &str, body: Vec<u8>) -> Result<()>;

    /// Deletes the file at `path`; none there is fine.
    async fn delete(&self, path: &str) -> Result<()>;

    /// Removes everything in the folder, the file `last` after all else, then the
    /// folder itself where it is a directory.
    async fn remove_all(&self, last: &str) -> Result<()>;

    /// Removes the folder when nothing is left in it.
    async fn remove_if_empty(&self);

    /// Saves the current content of `object` in `target` as the backup `name`.
    async fn save_backup(&self, name: &str, target: &Bucket, object: &ObjectInfo) -> Result<()>;

    /// Writes the backup `name` to `key` in `to`, with `headers` (those the object had)
    /// where the folder kept only its bytes.
    async fn restore(
        &self,
        name: &str,
        headers: &Headers,
        to: &Bucket,
        key: &str,
    ) -> Result<Written>;

    /// Copies the backup `name` into `to` as `as_name`; false, copying nothing, when
    /// `to` is another kind of folder.
    async fn copy_backup(&self, name: &str, to: &dyn JournalFolder, as_name: &str) -> Result<bool>;
}

/// The folder `location` names; an `s3://` one is in a bucket of `target`.
pub(super) async fn open(
    location: &Location,
    target: &dyn Buckets,
) -> Result<Box<dyn JournalFolder>> {
    Ok(match location {
        Location::File(dir) => Box::new(LocalFolder { dir: dir.clone() }),
        Location::S3 { bucket, prefix } => Box::new(BucketFolder {
            bucket: target.bucket(bucket).await?,
            prefix: prefix.clone(),
        }),
    })
}

/// A folder on this machine: folders 0700, files 0600 (they hold prod's data), each
/// file written beside its place and renamed into it once synced.
struct LocalFolder {
    dir: PathBuf,
}

impl LocalFolder {
    fn backup(&self, name: &str) -> PathBuf {
        self.dir.join("backups").join(name)
    }
}

#[async_trait::async_trait]
impl JournalFolder for LocalFolder {
    async fn bucket_to_make(&self) -> Result<bool> {
        Ok(false)
    }

    async fn make_bucket(&self, _: &Provision) -> Result<()> {
        Ok(())
    }

    async fn list(&self, sub: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut entries = match tokio::fs::read_dir(self.dir.join(sub)).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            entries => entries?,
        };
        while let Some(entry) = entries.next_entry().await? {
            if entry.file_type().await?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    async fn read(&self, path: &str) -> Result<Vec<u8>> {
        Ok(tokio::fs::read(self.dir.join(path)).await?)
    }

    async fn read_if_present(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match tokio::fs::read(self.dir.join(path)).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            read => Ok(Some(read?)),
        }
    }

    async fn write(&self, path: &str, body: Vec<u8>) -> Result<()> {
        write_file_durably(&self.dir.join(path), &body[..]).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match tokio::fs::remove_file(self.dir.join(path)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn remove_all(&self, last: &str) -> Result<()> {
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            entries => entries?,
        };
        while let Some(entry) = entries.next_entry().await? {
            if entry.file_name() == last {
                continue;
            }
            if entry.file_type().await?.is_dir() {
                tokio::fs::remove_dir_all(entry.path()).await?;
            } else {
                tokio::fs::remove_file(entry.path()).await?;
            }
        }
        for removed in [
            tokio::fs::remove_file(self.dir.join(last)).await,
            tokio::fs::remove_dir(&self.dir).await,
        ] {
            match removed {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    async fn remove_if_empty(&self) {
        // Not empty, or already gone: either way nothing to do.
        let _ = tokio::fs::remove_dir(&self.dir).await;
    }

    async fn save_backup(&self, name: &str, target: &Bucket, object: &ObjectInfo) -> Result<()> {
        let out = s3::open(target, &object.key, None)
            .await
            .context("backing it up")?;
        write_file_durably(&self.backup(name), out.body).await
    }

    async fn restore(
        &self,
        name: &str,
        headers: &Headers,
        to: &Bucket,
        key: &str,
    ) -> Result<Written> {
        let path = self.backup(name);
        let mut file = tokio::fs::File::open(&path).await.with_context(|| {
            format!(
                "the journal's backup of {key} is missing at {}",
                path.display()
            )
        })?;
        let size = file.metadata().await?.len();
        let new = NewObject {
            headers,
            options: &WriteOptions::default(),
        };
        let (written, _) =
            s3::upload_stream(&mut file, size, new, to, key, None, s3::EtagMd5::Never).await?;
        Ok(written)
    }

    async fn copy_backup(&self, name: &str, to: &dyn JournalFolder, as_name: &str) -> Result<bool> {
        let Some(to) = (to as &dyn Any).downcast_ref::<LocalFolder>() else {
            return Ok(false);
        };
        let backup = tokio::fs::File::open(self.backup(name)).await?;
        write_file_durably(&to.backup(as_name), backup).await?;
        Ok(true)
    }
}

/// The keys below a prefix of a bucket on the target connection, read and written
/// through the `s3` helpers; backups are copied server side.
struct BucketFolder {
    bucket: Bucket,
    prefix: String,
}

impl BucketFolder {
    fn key(&self, path: &str) -> String {
        join(&self.prefix, path)
    }

    /// The start of the keys of the files in `sub` ("" for the folder itself).
    fn keys_in(&self, sub: &str) -> String {
        match sub {
            "" => format!("{}/", self.prefix),
            sub => self.key(&format!("{sub}/")),
        }
    }

    fn backup(&self, name: &str) -> String {
        self.key(&format!("backups/{name}"))
    }

    /// The backup `name` as stored, or None when it is missing.
    async fn head_backup(&self, name: &str) -> Result<Option<ObjectInfo>> {
        Ok(s3::head(&self.bucket, &self.backup(name))
            .await?
            .map(|(info, _)| info))
    }

    /// The folder's address, as `Location::uri` writes it.
    fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket.name, self.prefix)
    }
}

#[async_trait::async_trait]
impl JournalFolder for BucketFolder {
    async fn bucket_to_make(&self) -> Result<bool> {
        Ok(!s3::provision::exists(&self.bucket).await?)
    }

    async fn make_bucket(&self, provision: &Provision) -> Result<()> {
        s3::provision::create_private(&self.bucket, provision.region.as_deref(), provision.strict)
            .await
            .with_context(|| {
                format!(
                    "creating the journal bucket {:?}; {}",
                    self.bucket.name, provision.advice
                )
            })?;
        Ok(())
    }

    async fn list(&self, sub: &str) -> Result<Vec<String>> {
        let listed = self.keys_in(sub);
        let mut names = Vec::new();
        let mut lister = s3::Lister::new(&self.bucket, &listed);
        while let Some(object) = lister.next().await? {
            let name = &object.key[listed.len()..];
            if !name.contains('/') {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    async fn read(&self, path: &str) -> Result<Vec<u8>> {
        s3::get_bytes(&self.bucket, &self.key(path)).await
    }

    async fn read_if_present(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(path);
        match s3::head(&self.bucket, &key).await? {
            Some(_) => Ok(Some(s3::get_bytes(&self.bucket, &key).await?)),
            None => Ok(None),
        }
    }

    async fn write(&self, path: &str, body: Vec<u8>) -> Result<()> {
        s3::put_bytes(&self.bucket, &self.key(path), body).await?;
        Ok(())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        s3::delete(&self.bucket, &self.key(path)).await?;
        Ok(())
    }

    async fn remove_all(&self, last: &str) -> Result<()> {
        let all = self.keys_in("");
        let last = self.key(last);
        let mut lister = s3::Lister::new(&self.bucket, &all);
        while let Some(object) = lister.next().await? {
            if object.key != last {
                s3::delete(&self.bucket, &object.key).await?;
            }
        }
        s3::delete(&self.bucket, &last).await?;
        Ok(())
    }

    /// A prefix is gone with its last key.
    async fn remove_if_empty(&self) {}

    async fn save_backup(&self, name: &str, target: &Bucket, object: &ObjectInfo) -> Result<()> {
        s3::server_side_copy(
            target,
            object,
            &self.bucket,
            &self.backup(name),
            &WriteOptions::default(),
        )
        .await?;
        Ok(())
    }

    async fn restore(&self, name: &str, _: &Headers, to: &Bucket, key: &str) -> Result<Written> {
        let Some(info) = self.head_backup(name).await? else {
            bail!("the journal's backup of {key} is missing at {}", self.uri());
        };
        // A restored object takes the target bucket's default storage class and
        // encryption, not necessarily those it had.
        s3::server_side_copy(&self.bucket, &info, to, key, &WriteOptions::default()).await
    }

    async fn copy_backup(&self, name: &str, to: &dyn JournalFolder, as_name: &str) -> Result<bool> {
        let Some(to) = (to as &dyn Any).downcast_ref::<BucketFolder>() else {
            return Ok(false);
        };
        let Some(info) = self.head_backup(name).await? else {
            bail!("the journal's backup {name} is missing at {}", self.uri());
        };
        let to_key = to.backup(as_name);
        s3::server_side_copy(
            &self.bucket,
            &info,
            &to.bucket,
            &to_key,
            &WriteOptions::default(),
        )
        .await?;
        Ok(true)
    }
}

/// Creates `dir` and its missing parents readable by their owner only: a journal holds
/// backups of prod's data.
async fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder
        .create(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))
}

/// Creates (or truncates) `path` readable and writable by its owner only.
async fn create_private_file(path: &Path) -> Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options
        .open(path)
        .await
        .with_context(|| format!("creating {}", path.display()))
}

/// Writes `body` to `path` through a `.partial` file beside it, synced before it is
/// renamed into place: a crash leaves the old file or the whole new one.
async fn write_file_durably(
    path: &Path,
    mut body: impl tokio::io::AsyncRead + Unpin,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir).await?;
    }
    let tmp = path.with_extension("partial");
    let mut file = create_private_file(&tmp).await?;
    tokio::io::copy(&mut body, &mut file).await?;
    file.sync_all().await?;
    tokio::fs::rename(&tmp, path).await?;
    Ok(())
}
