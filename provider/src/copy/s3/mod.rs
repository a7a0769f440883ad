//! S3 building blocks: listing (`list`), object headers and tags, copying one object
//! either server side (same endpoint and identity) or streamed through this process in
//! bounded memory (different endpoints or credentials, for example MinIO to AWS;
//! `transfer`), checksums (`checksum`) and versions (`versions`).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ServerSideEncryption, StorageClass};
use aws_sdk_s3::Client;
use md5::{Digest, Md5};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::aws_error;

/// Objects up to this size are streamed with one PUT; larger ones in parts of this size.
pub(crate) const PART_SIZE: u64 = 8 * 1024 * 1024;
/// The largest object S3's CopyObject accepts; beyond it, multipart copy.
const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// Part size for server-side multipart copies (no bytes pass through this process).
const COPY_PART_SIZE: u64 = 512 * 1024 * 1024;

/// A bucket on one side of a migration.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub client: Client,
    pub name: String,
    /// The account that must own it; the client sends it with every request, and a
    /// copy from this bucket names it as the source's expected owner.
    pub expected_owner: Option<String>,
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

/// The headers of a HeadObject or GetObject response (different types, same getters).
macro_rules! headers_of {
    ($out:expr) => {
        Headers {
            content_type: $out.content_type().map(str::to_owned),
            cache_control: $out.cache_control().map(str::to_owned),
            content_disposition: $out.content_disposition().map(str::to_owned),
            content_encoding: $out.content_encoding().map(str::to_owned),
            content_language: $out.content_language().map(str::to_owned),
            expires: $out.expires_string().map(str::to_owned),
            metadata: $out.metadata().cloned().unwrap_or_default(),
            tagging: None,
        }
    };
}

/// Sets the headers on a PutObject or CreateMultipartUpload request builder.
macro_rules! with_headers {
    ($builder:expr, $headers:expr) => {
        $builder
            .set_content_type($headers.content_type.clone())
            .set_cache_control($headers.cache_control.clone())
            .set_content_disposition($headers.content_disposition.clone())
            .set_content_encoding($headers.content_encoding.clone())
            .set_content_language($headers.content_language.clone())
            .set_expires(parse_expires(&$headers.expires))
            .set_metadata(Some($headers.metadata.clone()).filter(|m| !m.is_empty()))
            .set_tagging($headers.tagging.clone())
    };
}

/// How the objects a copy writes are stored: unset fields leave it to the target
/// bucket (its default encryption, STANDARD), never to the source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    pub storage_class: Option<StorageClass>,
    pub server_side_encryption: Option<ServerSideEncryption>,
    pub sse_kms_key_id: Option<String>,
}

/// The base64 checksum of `$algorithm` (a `types::ChecksumAlgorithm`) that a response
/// or result carries, if any (the types differ, the getters are the same).
macro_rules! checksum_in {
    ($out:expr, $algorithm:expr) => {
        match $algorithm {
            aws_sdk_s3::types::ChecksumAlgorithm::Crc32 => $out.checksum_crc32(),
            aws_sdk_s3::types::ChecksumAlgorithm::Crc32C => $out.checksum_crc32_c(),
            aws_sdk_s3::types::ChecksumAlgorithm::Crc64Nvme => $out.checksum_crc64_nvme(),
            aws_sdk_s3::types::ChecksumAlgorithm::Sha1 => $out.checksum_sha1(),
            aws_sdk_s3::types::ChecksumAlgorithm::Sha256 => $out.checksum_sha256(),
            _ => None,
        }
        .map(str::to_owned)
    };
}

/// Sets the write options on a PutObject, CopyObject or CreateMultipartUpload builder.
macro_rules! with_write_options {
    ($builder:expr, $options:expr) => {
        $builder
            .set_storage_class($options.storage_class.clone())
            .set_server_side_encryption($options.server_side_encryption.clone())
            .set_ssekms_key_id($options.sse_kms_key_id.clone())
    };
}

mod checksum;
mod list;
pub(crate) mod provision;
mod transfer;
mod versions;

pub use list::Lister;
pub(crate) use transfer::Streamed;
pub use transfer::{server_side_copy, Written};
pub(crate) use transfer::{streamed_copy, upload_stream};
pub(crate) use versions::{delete_version, versioning_enabled, versions, Version};

/// Fails with a message naming the bucket and the endpoint when the bucket cannot be
/// reached, so bad names stop at preview.
pub(crate) async fn check_bucket(bucket: &Bucket, role: &str, endpoint: &str) -> Result<()> {
    match bucket
        .client
        .head_bucket()
        .bucket(&bucket.name)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(err) => {
            let code = err
                .as_service_error()
                .and_then(|e| e.code())
                .map(str::to_owned);
            let status = err.raw_response().map(|r| r.status().as_u16());
            match (code.as_deref(), status) {
                (_, Some(404)) | (Some("NotFound" | "NoSuchBucket"), _) => bail!(
                    "{role} bucket {:?} does not exist at {endpoint}; check the bucket name or the stack output that names it",
                    bucket.name
                ),
                (_, Some(403)) => match &bucket.expected_owner {
                    Some(owner) => bail!(
                        "{role} bucket {:?} at {endpoint}: access denied; check that account {owner} (the {role} connection's expectedBucketOwner) owns it, and the {role} connection's credentials",
                        bucket.name
                    ),
                    None => bail!(
                        "{role} bucket {:?} at {endpoint}: access denied; check the {role} connection's credentials",
                        bucket.name
                    ),
                },
                _ => Err(aws_error(err)).with_context(|| {
                    format!("{role} bucket {:?} at {endpoint} cannot be reached", bucket.name)
                }),
            }
        }
    }
}

/// Whether S3 answered 404: the object or bucket is not there.
pub(crate) fn not_found<E>(err: &aws_sdk_s3::error::SdkError<E>) -> bool {
    err.raw_response()
        .is_some_and(|r| r.status().as_u16() == 404)
}

/// The current state of one object, or None when it does not exist.
pub(crate) async fn head(bucket: &Bucket, key: &str) -> Result<Option<(ObjectInfo, Headers)>> {
    match bucket
        .client
        .head_object()
        .bucket(&bucket.name)
        .key(key)
        .send()
        .await
    {
        Ok(out) => {
            let info = ObjectInfo {
                key: key.to_string(),
                size: out.content_length().unwrap_or_default().max(0) as u64,
                etag: out.e_tag().unwrap_or_default().to_string(),
                modified: out.last_modified().map(|t| t.secs()).unwrap_or_default(),
                archived: None,
                checksum_algorithm: None,
            };
            let headers = headers_of!(out);
            Ok(Some((info, headers)))
        }
        Err(err) if not_found(&err) => Ok(None),
        Err(err) => {
            Err(aws_error(err)).with_context(|| format!("reading s3://{}/{key}", bucket.name))
        }
    }
}

/// The checksum S3 stores for the whole of an object in `algorithm`, or None when it
/// stores none in that algorithm, or only one of its parts' checksums (a composite
/// checksum of a multipart upload, which says nothing about a copy made in one piece).
pub(crate) async fn stored_checksum(
    bucket: &Bucket,
    key: &str,
    algorithm: &ChecksumAlgorithm,
) -> Result<Option<String>> {
    let out = bucket
        .client
        .head_object()
        .bucket(&bucket.name)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("reading the checksum of s3://{}/{key}", bucket.name))?;
    let composite = checksum::is_composite(out.checksum_type(), out.e_tag());
    Ok(checksum_in!(out, algorithm).filter(|value| !composite && !value.contains('-')))
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
    headers.tagging = tagging(bucket, key).await?;
    Ok(Some((info, headers)))
}

/// An object's tags as the `x-amz-tagging` header takes them, or None when it has none.
pub(crate) async fn tagging(bucket: &Bucket, key: &str) -> Result<Option<String>> {
    let out = bucket
        .client
        .get_object_tagging()
        .bucket(&bucket.name)
        .key(key)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("reading the tags of s3://{}/{key}", bucket.name))?;
    Ok(encode_tags(
        out.tag_set().iter().map(|t| (t.key(), t.value())),
    ))
}

/// Characters kept as they are in a URL query: unreserved ones.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode_tags<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>) -> Option<String> {
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
    let out = bucket
        .client
        .delete_object()
        .bucket(&bucket.name)
        .key(key)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("deleting s3://{}/{key}", bucket.name))?;
    Ok(out.version_id().map(str::to_owned))
}

/// Writes a small object (journal segments, pointers) from memory.
pub async fn put_bytes(bucket: &Bucket, key: &str, body: Vec<u8>) -> Result<String> {
    let out = bucket
        .client
        .put_object()
        .bucket(&bucket.name)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("writing s3://{}/{key}", bucket.name))?;
    Ok(out.e_tag().unwrap_or_default().to_string())
}

pub(crate) async fn get_bytes(bucket: &Bucket, key: &str) -> Result<Vec<u8>> {
    get(bucket, key, None).await
}

/// Bytes `start..end` (end exclusive) of an object.
pub(crate) async fn get_range(bucket: &Bucket, key: &str, start: u64, end: u64) -> Result<Vec<u8>> {
    get(
        bucket,
        key,
        Some(format!("bytes={start}-{}", end.saturating_sub(1))),
    )
    .await
}

/// A GetObject response, its body not yet read: all or `range` (an HTTP Range value).
pub(crate) async fn open(
    bucket: &Bucket,
    key: &str,
    range: Option<String>,
) -> Result<GetObjectOutput> {
    bucket
        .client
        .get_object()
        .bucket(&bucket.name)
        .key(key)
        // Whole-object reads come with the stored checksum, which the SDK checks the
        // body against (a range cannot be checked).
        .set_checksum_mode(range.is_none().then_some(ChecksumMode::Enabled))
        .set_range(range)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("reading s3://{}/{key}", bucket.name))
}

async fn get(bucket: &Bucket, key: &str, range: Option<String>) -> Result<Vec<u8>> {
    let out = open(bucket, key, range).await?;
    let data = out.body.collect().await.context("reading object body")?;
    Ok(data.into_bytes().to_vec())
}

/// Downloads an object to a file, in bounded memory; returns the MD5 of its bytes.
pub(crate) async fn download(bucket: &Bucket, key: &str, path: &std::path::Path) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let out = open(bucket, key, None).await?;
    let mut body = out.body.into_async_read();
    let mut file = tokio::fs::File::create(path).await?;
    let mut md5 = Md5::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = body
            .read(&mut buffer)
            .await
            .with_context(|| format!("reading s3://{}/{key}", bucket.name))?;
        if read == 0 {
            break;
        }
        md5.update(&buffer[..read]);
        file.write_all(&buffer[..read]).await?;
    }
    file.flush().await?;
    Ok(hex::encode(md5.finalize()))
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
