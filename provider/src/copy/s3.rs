//! S3 building blocks: listing, object headers, and copying one object either server
//! side (same endpoint and identity) or streamed through this process in bounded memory
//! (different endpoints or credentials, for example MinIO to AWS).

use std::collections::{HashMap, VecDeque};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use aws_sdk_s3::Client;
use md5::{Digest, Md5};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::aws_error;

/// Objects up to this size are streamed with one PUT; larger ones in parts of this size.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// The largest object S3's CopyObject accepts; beyond it, multipart copy.
const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// Part size for server-side multipart copies (no bytes pass through this process).
const COPY_PART_SIZE: u64 = 512 * 1024 * 1024;

/// A bucket on one side of a migration.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub client: Client,
    pub name: String,
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
    };
}

/// Fails with a message naming the bucket and the endpoint when the bucket cannot be
/// reached, so bad names stop at preview.
pub async fn check_bucket(bucket: &Bucket, role: &str, endpoint: &str) -> Result<()> {
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
                (_, Some(403)) => bail!(
                    "{role} bucket {:?} at {endpoint}: access denied; check the {role} connection's credentials",
                    bucket.name
                ),
                _ => Err(aws_error(err)).with_context(|| {
                    format!("{role} bucket {:?} at {endpoint} cannot be reached", bucket.name)
                }),
            }
        }
    }
}

/// Pages through a prefix in key order, holding one page at a time.
pub struct Lister<'a> {
    bucket: &'a Bucket,
    prefix: &'a str,
    page: VecDeque<ObjectInfo>,
    token: Option<String>,
    done: bool,
}

impl<'a> Lister<'a> {
    pub fn new(bucket: &'a Bucket, prefix: &'a str) -> Self {
        Lister {
            bucket,
            prefix,
            page: VecDeque::new(),
            token: None,
            done: false,
        }
    }

    async fn fill(&mut self) -> Result<()> {
        while self.page.is_empty() && !self.done {
            let out = self
                .bucket
                .client
                .list_objects_v2()
                .bucket(&self.bucket.name)
                .prefix(self.prefix)
                .set_continuation_token(self.token.take())
                .send()
                .await
                .map_err(aws_error)
                .with_context(|| format!("listing s3://{}/{}", self.bucket.name, self.prefix))?;
            for object in out.contents() {
                self.page.push_back(ObjectInfo {
                    key: object.key().unwrap_or_default().to_string(),
                    size: object.size().unwrap_or_default().max(0) as u64,
                    etag: object.e_tag().unwrap_or_default().to_string(),
                    modified: object.last_modified().map(|t| t.secs()).unwrap_or_default(),
                });
            }
            self.token = out.next_continuation_token().map(str::to_owned);
            self.done = self.token.is_none();
        }
        Ok(())
    }

    pub async fn peek(&mut self) -> Result<Option<&ObjectInfo>> {
        self.fill().await?;
        Ok(self.page.front())
    }

    pub async fn next(&mut self) -> Result<Option<ObjectInfo>> {
        self.fill().await?;
        Ok(self.page.pop_front())
    }
}

/// The current state of one object, or None when it does not exist.
pub async fn head(bucket: &Bucket, key: &str) -> Result<Option<(ObjectInfo, Headers)>> {
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
            };
            let headers = headers_of!(out);
            Ok(Some((info, headers)))
        }
        Err(err)
            if err
                .raw_response()
                .is_some_and(|r| r.status().as_u16() == 404) =>
        {
            Ok(None)
        }
        Err(err) => {
            Err(aws_error(err)).with_context(|| format!("reading s3://{}/{key}", bucket.name))
        }
    }
}

pub async fn delete(bucket: &Bucket, key: &str) -> Result<()> {
    bucket
        .client
        .delete_object()
        .bucket(&bucket.name)
        .key(key)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("deleting s3://{}/{key}", bucket.name))?;
    Ok(())
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

pub async fn get_bytes(bucket: &Bucket, key: &str) -> Result<Vec<u8>> {
    get(bucket, key, None).await
}

/// Bytes `start..end` (end exclusive) of an object.
pub async fn get_range(bucket: &Bucket, key: &str, start: u64, end: u64) -> Result<Vec<u8>> {
    get(
        bucket,
        key,
        Some(format!("bytes={start}-{}", end.saturating_sub(1))),
    )
    .await
}

/// A GetObject response, its body not yet read: all or `range` (an HTTP Range value).
pub async fn open(bucket: &Bucket, key: &str, range: Option<String>) -> Result<GetObjectOutput> {
    bucket
        .client
        .get_object()
        .bucket(&bucket.name)
        .key(key)
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
pub async fn download(bucket: &Bucket, key: &str, path: &std::path::Path) -> Result<String> {
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

/// An object written by a copy: its ETag as the target reports it and the bytes moved.
#[derive(Debug, Clone)]
pub struct Written {
    pub etag: String,
    pub bytes: u64,
}

/// Characters escaped in the `x-amz-copy-source` header: all but unreserved and `/`.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn copy_source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{}", utf8_percent_encode(key, COPY_SOURCE))
}

/// Copies inside one S3 service: no bytes pass through this process. Headers and
/// metadata are copied by the service.
pub async fn server_side_copy(
    source: &Bucket,
    source_object: &ObjectInfo,
    target: &Bucket,
    target_key: &str,
) -> Result<Written> {
    let size = source_object.size;
    let from = copy_source(&source.name, &source_object.key);
    if size <= MAX_SINGLE_COPY {
        let out = target
            .client
            .copy_object()
            .copy_source(&from)
            .bucket(&target.name)
            .key(target_key)
            .metadata_directive(MetadataDirective::Copy)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("copying {from} to s3://{}/{target_key}", target.name))?;
        let etag = out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default()
            .to_string();
        return Ok(Written { etag, bytes: size });
    }
    let (_, headers) = head(source, &source_object.key)
        .await?
        .ok_or_else(|| anyhow!("source object {from} vanished during the copy"))?;
    let upload = Multipart::start(target, target_key, &headers).await?;
    let result = async {
        let mut start = 0;
        let mut number = 1;
        while start < size {
            let end = (start + COPY_PART_SIZE).min(size) - 1;
            let out = target
                .client
                .upload_part_copy()
                .bucket(&target.name)
                .key(target_key)
                .upload_id(&upload.id)
                .part_number(number)
                .copy_source(&from)
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await
                .map_err(aws_error)
                .with_context(|| format!("copying part {number} of {from}"))?;
            let etag = out
                .copy_part_result()
                .and_then(|r| r.e_tag())
                .unwrap_or_default();
            upload.parts_push(number, etag);
            start = end + 1;
            number += 1;
        }
        upload.complete().await
    }
    .await;
    finish(upload_result(result, &upload).await, size)
}

/// Streams an object from one S3 service to another. Memory: one part at a time.
/// The ETag the target must report is computed on the way, so the caller can verify.
pub async fn streamed_copy(
    source: &Bucket,
    source_object: &ObjectInfo,
    target: &Bucket,
    target_key: &str,
) -> Result<(Written, String)> {
    let out = open(source, &source_object.key, None).await?;
    let headers = headers_of!(out);
    let size = out.content_length().unwrap_or_default().max(0) as u64;
    let mut body = out.body.into_async_read();
    upload_stream(&mut body, size, &headers, target, target_key).await
}

/// Uploads `size` bytes read from `body` with the given headers: one PUT for small
/// objects, multipart beyond PART_SIZE. Returns what was written and the ETag expected
/// from the content (MD5, or MD5 of the part MD5s with the part count).
pub async fn upload_stream<R: tokio::io::AsyncRead + Unpin>(
    body: &mut R,
    size: u64,
    headers: &Headers,
    target: &Bucket,
    key: &str,
) -> Result<(Written, String)> {
    if size <= PART_SIZE {
        let mut buffer = Vec::with_capacity(size as usize);
        body.read_to_end(&mut buffer)
            .await
            .context("reading the source object")?;
        if buffer.len() as u64 != size {
            bail!(
                "source object changed during the copy: expected {size} bytes, read {}",
                buffer.len()
            );
        }
        let expected = format!("\"{}\"", hex::encode(Md5::digest(&buffer)));
        let mut put = target
            .client
            .put_object()
            .bucket(&target.name)
            .key(key)
            .body(ByteStream::from(buffer));
        put = with_headers!(put, headers);
        let out = put
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("writing s3://{}/{key}", target.name))?;
        let written = Written {
            etag: out.e_tag().unwrap_or_default().to_string(),
            bytes: size,
        };
        return Ok((written, expected));
    }
    let upload = Multipart::start(target, key, headers).await?;
    let result = async {
        let mut part_digests = Vec::new();
        let mut total = 0u64;
        let mut number = 1;
        loop {
            let mut part = Vec::with_capacity(PART_SIZE as usize);
            (&mut *body)
                .take(PART_SIZE)
                .read_to_end(&mut part)
                .await
                .context("reading the source object")?;
            if part.is_empty() {
                break;
            }
            total += part.len() as u64;
            let digest = Md5::digest(&part);
            part_digests.extend_from_slice(&digest);
            let out = target
                .client
                .upload_part()
                .bucket(&target.name)
                .key(key)
                .upload_id(&upload.id)
                .part_number(number)
                .body(ByteStream::from(part))
                .send()
                .await
                .map_err(aws_error)
                .with_context(|| format!("writing part {number} of s3://{}/{key}", target.name))?;
            upload.parts_push(number, out.e_tag().unwrap_or_default());
            number += 1;
        }
        if total != size {
            bail!("source object changed during the copy: expected {size} bytes, read {total}");
        }
        let expected = format!(
            "\"{}-{}\"",
            hex::encode(Md5::digest(&part_digests)),
            number - 1
        );
        Ok((upload.complete().await?, expected))
    }
    .await;
    let (etag, expected) = upload_result(result, &upload).await?;
    Ok((Written { etag, bytes: size }, expected))
}

fn parse_expires(expires: &Option<String>) -> Option<DateTime> {
    expires
        .as_deref()
        .and_then(|s| DateTime::from_str(s, DateTimeFormat::HttpDate).ok())
}

fn finish(etag: Result<String>, bytes: u64) -> Result<Written> {
    etag.map(|etag| Written { etag, bytes })
}

/// Aborts the upload when the parts could not be written, so no orphan parts are left
/// billing storage in the target.
async fn upload_result<T>(result: Result<T>, upload: &Multipart<'_>) -> Result<T> {
    if result.is_err() {
        let _ = upload
            .target
            .client
            .abort_multipart_upload()
            .bucket(&upload.target.name)
            .key(upload.key)
            .upload_id(&upload.id)
            .send()
            .await;
    }
    result
}

struct Multipart<'a> {
    target: &'a Bucket,
    key: &'a str,
    id: String,
    parts: std::sync::Mutex<Vec<CompletedPart>>,
}

impl<'a> Multipart<'a> {
    async fn start(target: &'a Bucket, key: &'a str, headers: &Headers) -> Result<Multipart<'a>> {
        let create = target
            .client
            .create_multipart_upload()
            .bucket(&target.name)
            .key(key);
        let out = with_headers!(create, headers)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| {
                format!("starting a multipart upload to s3://{}/{key}", target.name)
            })?;
        Ok(Multipart {
            target,
            key,
            id: out.upload_id().unwrap_or_default().to_string(),
            parts: Default::default(),
        })
    }

    fn parts_push(&self, number: i32, etag: &str) {
        let part = CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .build();
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(part);
    }

    async fn complete(&self) -> Result<String> {
        let mut parts = std::mem::take(&mut *self.parts.lock().unwrap_or_else(|e| e.into_inner()));
        parts.sort_by_key(|p| p.part_number());
        let out = self
            .target
            .client
            .complete_multipart_upload()
            .bucket(&self.target.name)
            .key(self.key)
            .upload_id(&self.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| {
                format!(
                    "completing the upload of s3://{}/{}",
                    self.target.name, self.key
                )
            })?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_escapes_all_but_slashes() {
        assert_eq!(
            copy_source("b", "a b/c+d#é.png"),
            "b/a%20b/c%2Bd%23%C3%A9.png"
        );
    }

    #[test]
    fn expires_round_trips_http_dates() {
        let parsed = parse_expires(&Some("Wed, 21 Oct 2015 07:28:00 GMT".into())).unwrap();
        assert_eq!(parsed.secs(), 1445412480);
        assert!(parse_expires(&Some("not a date".into())).is_none());
    }
}
