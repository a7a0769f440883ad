//! Bucket building blocks: listing (`list`), object headers and tags, copying one
//! object either server side (same endpoint and identity) or streamed through this
//! process in bounded memory (different endpoints or credentials, for example MinIO to
//! AWS; `transfer`), checksums (`checksum`) and versions (`versions`). The bucket itself
//! is behind `copy::store`.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use aws_sdk_s3::types::{ChecksumAlgorithm, ServerSideEncryption, StorageClass};
use md5::{Digest, Md5};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::store::{Body, Download, NewObject, ObjectAt, ObjectStore};

/// Objects up to this size are streamed with one PUT; larger ones in parts of this size.
pub(crate) const PART_SIZE: u64 = 8 * 1024 * 1024;

/// A bucket on one side of a migration.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub name: String,
    /// The account that must own it; the client sends it with every request, and a
    /// copy from this bucket names it as the source's expected owner.
    pub expected_owner: Option<String>,
}

impl Bucket {
    /// The object at `key` in this bucket.
    pub(crate) fn at<'a>(&'a self, key: &'a str) -> ObjectAt<'a> {
        ObjectAt {
            bucket: &self.name,
            key,
        }
    }
}

/// Where buckets come from: a side's S3 connection, which the provider configures.
#[async_trait::async_trait]
pub trait Buckets: Send + Sync {
    async fn bucket(&self, name: &str) -> Result<Bucket>;
}

/// What a listing says about an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: String,
    /// Last modified, in epoch seconds.
    #[serde(default)]
    pub modified: i64,
    /// The archive the object sits in (`GLACIER`, `DEEP_ARCHIVE`, or an
    /// Intelligent-Tiering archive tier) when it cannot be read until restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<String>,
    /// The checksum algorithm S3 stores for the object (`CRC64NVME`, `CRC32`, ...), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<String>,
}

/// The headers that travel with an object's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Headers {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// The object's tags, URL-encoded as the `x-amz-tagging` header takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tagging: Option<String>,
}

/// How the objects a copy writes are stored: unset fields leave it to the target
/// bucket (its default encryption, STANDARD), never to the source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    pub storage_class: Option<StorageClass>,
    pub server_side_encryption: Option<ServerSideEncryption>,
    pub sse_kms_key_id: Option<String>,
}

mod checksum;
mod list;
pub(crate) mod provision;
mod transfer;
mod versions;

pub(crate) use checksum::RunningChecksum;
pub use list::Lister;
pub(crate) use transfer::Streamed;
pub use transfer::{server_side_copy, Written};
pub(crate) use transfer::{streamed_copy, upload_stream, EtagMd5};
pub(crate) use versions::{delete_version, versioning_enabled, versions, Version};

/// The current state of one object, or None when it does not exist.
pub(crate) async fn head(bucket: &Bucket, key: &str) -> Result<Option<(ObjectInfo, Headers)>> {
    let head = bucket.store.head(bucket.at(key), None).await?;
    Ok(head.map(|head| (head.info, head.headers)))
}

/// The checksum S3 stores for the whole of an object in `algorithm`, or None when it
/// stores none in that algorithm, or only one of its parts' checksums (a composite
/// checksum of a multipart upload, which says nothing about a copy made in one piece).
pub(crate) async fn stored_checksum(
    bucket: &Bucket,
    key: &str,
    algorithm: &ChecksumAlgorithm,
) -> Result<Option<String>> {
    let head = bucket
        .store
        .head(bucket.at(key), Some(algorithm))
        .await
        .with_context(|| format!("reading the checksum of s3://{}/{key}", bucket.name))?;
    Ok(head.and_then(|head| head.checksum).map(|(_, value)| value))
}

/// The headers of an object with its tags, for writes that cannot copy them server side
/// (a multipart copy, a restore from a file backup).
pub(crate) async fn head_with_tags(
    bucket: &Bucket,
    key: &str,
) -> Result<Option<(ObjectInfo, Headers)>> {
    let Some((info, mut headers)) = head(bucket, key).await? else {
        return Ok(None);
    };
    headers.tagging = bucket.store.tagging(bucket.at(key)).await?;
    Ok(Some((info, headers)))
}

/// Characters kept as they are in a URL query: unreserved ones.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Tags as the `x-amz-tagging` header takes them, or None when there are none.
pub(crate) fn encode_tags<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>) -> Option<String> {
    let encoded: Vec<String> = tags
        .map(|(key, value)| {
            format!(
                "{}={}",
                utf8_percent_encode(key, QUERY_VALUE),
                utf8_percent_encode(value, QUERY_VALUE)
            )
        })
        .collect();
    (!encoded.is_empty()).then(|| encoded.join("&"))
}

/// Deletes the current object at `key`; on a versioned bucket the answer is the ID of
/// the delete marker that hides it.
pub(crate) async fn delete(bucket: &Bucket, key: &str) -> Result<Option<String>> {
    bucket.store.delete(bucket.at(key)).await
}

/// Writes a small object (journal segments, pointers) from memory.
pub async fn put_bytes(bucket: &Bucket, key: &str, body: Vec<u8>) -> Result<String> {
    let written = bucket
        .store
        .put(
            bucket.at(key),
            Body {
                bytes: body,
                checksum: None,
            },
            NewObject {
                headers: &Headers::default(),
                options: &WriteOptions::default(),
            },
        )
        .await?;
    Ok(written.etag)
}

pub(crate) async fn get_bytes(bucket: &Bucket, key: &str) -> Result<Vec<u8>> {
    read_all(open(bucket, key, None).await?, bucket, key).await
}

/// Bytes `start..end` (end exclusive) of an object.
pub(crate) async fn get_range(bucket: &Bucket, key: &str, start: u64, end: u64) -> Result<Vec<u8>> {
    read_all(open(bucket, key, Some((start, end))).await?, bucket, key).await
}

/// An object being read: all, or bytes `start..end` of it.
pub(crate) async fn open(
    bucket: &Bucket,
    key: &str,
    range: Option<(u64, u64)>,
) -> Result<Download> {
    bucket.store.get(bucket.at(key), range).await
}

async fn read_all(mut download: Download, bucket: &Bucket, key: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    download
        .body
        .read_to_end(&mut bytes)
        .await
        .with_context(|| format!("reading s3://{}/{key}", bucket.name))?;
    Ok(bytes)
}

/// Downloads an object to a file, in bounded memory; returns the MD5 of its bytes.
pub(crate) async fn download(bucket: &Bucket, key: &str, path: &std::path::Path) -> Result<String> {
    let mut file = tokio::fs::File::create(path).await?;
    let mut md5 = Md5::new();
    read_through(bucket, key, Some(&mut file), |bytes| md5.update(bytes)).await?;
    tokio::io::AsyncWriteExt::flush(&mut file).await?;
    Ok(hex::encode(md5.finalize()))
}

/// The MD5 of an object's bytes, read in bounded memory.
pub(crate) async fn content_md5(bucket: &Bucket, key: &str) -> Result<String> {
    let mut md5 = Md5::new();
    read_through(bucket, key, None::<&mut tokio::fs::File>, |bytes| {
        md5.update(bytes)
    })
    .await?;
    Ok(hex::encode(md5.finalize()))
}

/// The checksum in `algorithm` of an object's bytes, read in bounded memory.
pub(crate) async fn content_checksum(
    bucket: &Bucket,
    key: &str,
    algorithm: &ChecksumAlgorithm,
) -> Result<String> {
    let mut checksum = RunningChecksum::new(algorithm);
    read_through(bucket, key, None::<&mut tokio::fs::File>, |bytes| {
        checksum.update(bytes)
    })
    .await?;
    Ok(checksum.base64())
}

/// Reads an object a megabyte at a time, into `to` when given, and each piece to `seen`.
async fn read_through<W: tokio::io::AsyncWrite + Unpin>(
    bucket: &Bucket,
    key: &str,
    mut to: Option<&mut W>,
    mut seen: impl FnMut(&[u8]),
) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut body = open(bucket, key, None).await?.body;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = body
            .read(&mut buffer)
            .await
            .with_context(|| format!("reading s3://{}/{key}", bucket.name))?;
        if read == 0 {
            return Ok(());
        }
        seen(&buffer[..read]);
        if let Some(to) = to.as_mut() {
            to.write_all(&buffer[..read]).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_encoded_as_a_query() {
        assert_eq!(
            encode_tags([("team", "ml ops"), ("a&b", "x=y/é")].into_iter()),
            Some("team=ml%20ops&a%26b=x%3Dy%2F%C3%A9".to_string())
        );
        assert_eq!(encode_tags(std::iter::empty()), None);
    }
}
