//! Versioned buckets: whether a bucket keeps versions, a key's versions, and removing one.

use anyhow::{Context, Result};
use aws_sdk_s3::types::BucketVersioningStatus;

use super::Bucket;
use crate::copy::aws_error;

/// Removes one version (or delete marker) of `key` for good.
pub(crate) async fn delete_version(bucket: &Bucket, key: &str, version: &str) -> Result<()> {
    bucket
        .client
        .delete_object()
        .bucket(&bucket.name)
        .key(key)
        .version_id(version)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("deleting version {version} of s3://{}/{key}", bucket.name))?;
    Ok(())
}

/// Whether the bucket keeps versions: then a write's version ID is enough to undo it,
/// and no backup is needed.
pub(crate) async fn versioning_enabled(bucket: &Bucket) -> Result<bool> {
    let out = bucket
        .client
        .get_bucket_versioning()
        .bucket(&bucket.name)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("reading the versioning of s3://{}", bucket.name))?;
    Ok(out.status() == Some(&BucketVersioningStatus::Enabled))
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
    let mut found: Vec<(i64, bool, Version)> = Vec::new();
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        let page = bucket
            .client
            .list_object_versions()
            .bucket(&bucket.name)
            .prefix(key)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("listing the versions of s3://{}/{key}", bucket.name))?;
        for v in page.versions().iter().filter(|v| v.key() == Some(key)) {
            let version = Version {
                id: v.version_id().unwrap_or("null").to_string(),
                etag: v.e_tag().unwrap_or_default().to_string(),
                delete_marker: false,
            };
            let when = v
                .last_modified()
                .map(|t| t.as_nanos() as i64)
                .unwrap_or_default();
            found.push((when, v.is_latest() == Some(true), version));
        }
        for m in page
            .delete_markers()
            .iter()
            .filter(|m| m.key() == Some(key))
        {
            let marker = Version {
                id: m.version_id().unwrap_or("null").to_string(),
                etag: String::new(),
                delete_marker: true,
            };
            let when = m
                .last_modified()
                .map(|t| t.as_nanos() as i64)
                .unwrap_or_default();
            found.push((when, m.is_latest() == Some(true), marker));
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        version_marker = page.next_version_id_marker().map(str::to_owned);
    }
    // The latest first, then by time: listings order each key's versions newest first,
    // but versions and markers come in separate lists.
    found.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    Ok(found.into_iter().map(|(_, _, v)| v).collect())
}
