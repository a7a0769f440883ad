//! Versioned buckets: whether a bucket keeps versions, a key's versions, and removing one.

use anyhow::Result;

use super::Bucket;

/// Removes one version (or delete marker) of `key` for good.
pub(crate) async fn delete_version(bucket: &Bucket, key: &str, version: &str) -> Result<()> {
    bucket.store.delete_version(bucket.at(key), version).await
}

/// Whether the bucket keeps versions: then a write's version ID is enough to undo it,
/// and no backup is needed.
pub(crate) async fn versioning_enabled(bucket: &Bucket) -> Result<bool> {
    bucket.store.versioning_enabled(&bucket.name).await
}

/// One version (or delete marker) of a key, newest first in `versions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    pub id: String,
    /// Empty for a delete marker.
    pub etag: String,
    pub delete_marker: bool,
}

/// Every version and delete marker of exactly `key`, newest first.
pub(crate) async fn versions(bucket: &Bucket, key: &str) -> Result<Vec<Version>> {
    bucket.store.versions(bucket.at(key)).await
}
